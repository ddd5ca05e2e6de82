//! Memory budgets that sessions share ([`BudgetConfig`]): bytes sent and not yet
//! acknowledged (replay buffers), summed per peer node and over the whole node, where a
//! session's own bounds stop at the session.
//!
//! Plain atomics and one short lock, no runtime: a session core charges its [`Account`]
//! directly. Replay bytes are reserved before they are taken, so a pool never holds more
//! than its budget.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::error::ReplayLimit;
use crate::wire::NodeIdentity;

/// Byte budgets a node's sessions share ([`crate::NodeConfig::budget`]).
///
/// A session's own bounds ([`crate::SessionConfig::replay_max_bytes`], its credit window)
/// stop at the session; these stop a peer that opens many sessions, and many peers
/// together, from holding a node's memory. Peers are told apart by the identity they
/// proved the secret with (name and incarnation): a peer that claims many identities
/// is held by the node budget alone.
///
/// *Replay* bytes are payloads sent and not yet acknowledged by the peer. A send past a
/// budget is refused with [`crate::SendError::Full`] naming it; while a session is
/// interrupted, the session is lost instead ([`crate::LostReason::ReplayFull`]).
///
/// The defaults keep the replay bytes of a node at most 512 MiB whatever its peers do,
/// while one peer alone may use as much as one session could before budgets existed
/// (`replay_max_bytes`, 256 MiB), never more than half the node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Replay bytes of all sessions of the node: 512 MiB by default, two peers' worth.
    pub node_replay_bytes: usize,
    /// Replay bytes of all sessions with one peer: 256 MiB by default, one session's
    /// window, so one peer that never acknowledges leaves half the node's budget to the
    /// others.
    pub peer_replay_bytes: usize,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        const MIB: usize = 1024 * 1024;
        Self {
            node_replay_bytes: 512 * MIB,
            peer_replay_bytes: 256 * MIB,
        }
    }
}

/// A node's budgets: its own pools, and one set per peer with a live session.
#[derive(Debug)]
pub(crate) struct Budgets {
    config: BudgetConfig,
    node: Pools,
    /// Every peer with a live account; an entry goes with the peer's last account.
    peers: Mutex<HashMap<NodeIdentity, Weak<Peer>>>,
}

/// One peer's pools.
#[derive(Debug)]
struct Peer {
    identity: NodeIdentity,
    pools: Pools,
}

/// The pools of one level (a peer, or the node).
#[derive(Debug)]
struct Pools {
    replay: Pool,
}

/// Bytes in use against a limit.
#[derive(Debug)]
struct Pool {
    used: AtomicUsize,
    limit: usize,
}

/// One session's charges against its peer's and its node's budgets. Dropping it gives
/// back whatever it still holds.
pub(crate) struct Account {
    budgets: Arc<Budgets>,
    peer: Arc<Peer>,
    /// Replay bytes charged to the pools.
    replay: AtomicUsize,
}

impl Budgets {
    pub(crate) fn new(config: BudgetConfig) -> Arc<Self> {
        Arc::new(Self {
            node: Pools::new(config.node_replay_bytes),
            peers: Mutex::new(HashMap::new()),
            config,
        })
    }

    /// The account of a new session with `peer`.
    pub(crate) fn account(self: &Arc<Self>, peer: &NodeIdentity) -> Arc<Account> {
        let mut peers = lock(&self.peers);
        let pools = match peers.get(peer).and_then(Weak::upgrade) {
            Some(pools) => pools,
            None => {
                let pools = Arc::new(Peer {
                    identity: peer.clone(),
                    pools: Pools::new(self.config.peer_replay_bytes),
                });
                peers.insert(peer.clone(), Arc::downgrade(&pools));
                pools
            }
        };
        drop(peers);
        Arc::new(Account {
            budgets: self.clone(),
            peer: pools,
            replay: AtomicUsize::new(0),
        })
    }

    /// Replay bytes held by every session of the node.
    #[cfg(test)]
    pub(crate) fn replay_bytes(&self) -> usize {
        self.node.replay.used()
    }

    /// Peers with a live account.
    #[cfg(test)]
    pub(crate) fn peers(&self) -> usize {
        lock(&self.peers).len()
    }
}

impl Pools {
    fn new(replay: usize) -> Self {
        Self {
            replay: Pool::new(replay),
        }
    }
}

impl Pool {
    fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Takes `bytes` if that stays within the limit.
    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Takes `bytes` whatever the limit.
    fn take(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Gives back `bytes`; returns what is still used.
    fn give(&self, bytes: usize) -> usize {
        self.used.fetch_sub(bytes, Ordering::SeqCst) - bytes
    }
}

impl Account {
    /// Reserves `bytes` of replay buffer from the peer's and the node's budgets.
    ///
    /// # Errors
    /// The budget that cannot take them; then nothing is reserved.
    pub(crate) fn reserve_replay(&self, bytes: usize) -> Result<(), ReplayLimit> {
        let (peer, node) = (&self.peer.pools.replay, &self.budgets.node.replay);
        if !peer.try_take(bytes) {
            return Err(ReplayLimit::Peer { bytes: peer.limit });
        }
        if !node.try_take(bytes) {
            peer.give(bytes);
            return Err(ReplayLimit::Node { bytes: node.limit });
        }
        self.replay.fetch_add(bytes, Ordering::SeqCst);
        Ok(())
    }

    /// Charges `bytes` of replay buffer whatever the budgets (what a session held before
    /// it had an account).
    pub(crate) fn charge_replay(&self, bytes: usize) {
        self.peer.pools.replay.take(bytes);
        self.budgets.node.replay.take(bytes);
        self.replay.fetch_add(bytes, Ordering::SeqCst);
    }

    /// The session's replay buffer holds `unacked` bytes now: gives back what was charged
    /// beyond that.
    pub(crate) fn settle_replay(&self, unacked: usize) {
        let charged = self.replay.load(Ordering::SeqCst);
        if charged > unacked {
            self.release_replay(charged - unacked);
        }
    }

    fn release_replay(&self, bytes: usize) {
        self.replay.fetch_sub(bytes, Ordering::SeqCst);
        self.peer.pools.replay.give(bytes);
        self.budgets.node.replay.give(bytes);
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let replay = *self.replay.get_mut();
        self.release_replay(replay);
        // The peer's entry goes with its last account. Accounts get the peer's pools only
        // under this lock, so none can appear once the count is seen at one.
        let mut peers = lock(&self.budgets.peers);
        if Arc::strong_count(&self.peer) == 1 {
            peers.remove(&self.peer.identity);
        }
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("peer", &self.peer.identity)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str) -> NodeIdentity {
        NodeIdentity {
            name: name.into(),
            incarnation: uuid::Uuid::from_u128(1),
        }
    }

    #[test]
    fn a_dropped_account_gives_back_all_it_held() {
        let budgets = Budgets::new(BudgetConfig::default());
        let account = budgets.account(&identity("p"));
        account.reserve_replay(1000).unwrap();
        let other = budgets.account(&identity("p"));
        other.reserve_replay(10).unwrap();
        assert_eq!(budgets.replay_bytes(), 1010);
        drop(account);
        assert_eq!(budgets.replay_bytes(), 10);
        assert_eq!(budgets.peers(), 1);
        drop(other);
        assert_eq!((budgets.replay_bytes(), budgets.peers()), (0, 0));
    }

    #[test]
    fn a_replay_budget_never_takes_more_than_its_bound() {
        let budgets = Budgets::new(BudgetConfig {
            peer_replay_bytes: 100,
            node_replay_bytes: 150,
        });
        let p = budgets.account(&identity("p"));
        let q = budgets.account(&identity("q"));
        assert_eq!(p.reserve_replay(100), Ok(()));
        assert_eq!(p.reserve_replay(1), Err(ReplayLimit::Peer { bytes: 100 }));
        assert_eq!(q.reserve_replay(60), Err(ReplayLimit::Node { bytes: 150 }));
        assert_eq!(q.reserve_replay(50), Ok(()));
        assert_eq!(budgets.replay_bytes(), 150);
        p.settle_replay(40);
        assert_eq!(budgets.replay_bytes(), 90);
    }
}
