//! Memory budgets that sessions share ([`BudgetConfig`]): bytes sent and not yet
//! acknowledged (replay buffers), and bytes delivered into owners' mailboxes and not yet
//! handled, summed per peer node and over the whole node, where a session's own bounds
//! stop at the session.
//!
//! Plain atomics and one short lock, no runtime: a session core charges its [`Account`]
//! directly. A budget that falls back within its bound wakes the sessions whose grant of
//! credit waits on it, through the callback their driver installed
//! ([`Account::on_freed`]).
//!
//! Replay bytes are reserved before they are taken, so a replay pool never holds more than
//! its budget. Inbound bytes cannot be refused (they arrived on credit already granted):
//! an inbound pool may go past its budget, and while it is past, no session charging it
//! grants the peer more credit.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use crate::error::ReplayLimit;
use crate::wire::NodeIdentity;

/// Byte budgets a node's sessions share ([`crate::NodeConfig::budget`]).
///
/// A session's own bounds ([`crate::SessionConfig::replay_max_bytes`], its credit window)
/// stop at the session; these stop a peer that opens many sessions, and many peers
/// together, from holding a node's memory. Peers are told apart by the identity they
/// proved the secret with (name and incarnation): a peer that claims many identities
/// is held by the node budgets alone.
///
/// - *Replay* bytes: payloads sent and not yet acknowledged by the peer. A send past a
///   budget is refused with [`crate::SendError::Full`] naming it; while a session is
///   interrupted, the session is lost instead ([`crate::LostReason::ReplayFull`]).
/// - *Inbound* bytes: payloads delivered into an owner's mailbox (or an inbox) and not
///   yet handled (their [`crate::Inbound`] or [`crate::Credit`] not yet dropped). While
///   more than a budget waits, the sessions it covers grant their peers no more credit,
///   so the peers' sends wait as they do for a slow actor. Credit counts messages, and
///   what a peer was granted before still arrives: past a budget, each session may still
///   receive what its outstanding credit allows, at most
///   [`crate::SessionConfig::credit_window`] messages of up to `max_message_bytes`. Lower
///   those where a peer that sends the largest messages without pause is a concern.
///
/// The defaults keep a node's replay buffers under 512 MiB whatever its peers do, while
/// one peer alone may use as much as one session could before budgets existed
/// (`replay_max_bytes`, 256 MiB) and never more than half the node's; and they stop
/// renewing credit once 256 MiB wait in mailboxes (128 MiB from one peer, 64 MiB from
/// one session): 768 MiB in all, under the 1 GiB a node should stay within.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Replay bytes of all sessions of the node: 512 MiB by default, two peers' worth.
    pub node_replay_bytes: usize,
    /// Replay bytes of all sessions with one peer: 256 MiB by default, one session's
    /// window, so one peer that never acknowledges leaves half the node's budget to the
    /// others.
    pub peer_replay_bytes: usize,
    /// Inbound bytes waiting in the owners' mailboxes, all sessions of the node: 256 MiB
    /// by default (64 messages of the largest default size).
    pub node_inbound_bytes: usize,
    /// Inbound bytes waiting from one peer, all its sessions: 128 MiB by default, half
    /// the node's.
    pub peer_inbound_bytes: usize,
    /// Inbound bytes waiting from one session: 64 MiB by default (16 messages of the
    /// largest default size).
    pub session_inbound_bytes: usize,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        const MIB: usize = 1024 * 1024;
        Self {
            node_replay_bytes: 512 * MIB,
            peer_replay_bytes: 256 * MIB,
            node_inbound_bytes: 256 * MIB,
            peer_inbound_bytes: 128 * MIB,
            session_inbound_bytes: 64 * MIB,
        }
    }
}

/// The `waiting` flag of an account registered with its peer's waiters.
const PEER: usize = 0;
/// The `waiting` flag of an account registered with the node's waiters.
const NODE: usize = 1;

/// Which inbound budget holds back a grant of credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InboundLimit {
    /// The session's own (`session_inbound_bytes`).
    Session,
    /// Its peer's (`peer_inbound_bytes`).
    Peer,
    /// The node's (`node_inbound_bytes`).
    Node,
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
    inbound: Pool,
    /// Accounts whose grant of credit waits for `inbound` to fall within its budget.
    waiters: Waiters,
    /// Which of an account's `waiting` flags stands for these waiters.
    slot: usize,
}

/// Bytes in use against a limit.
#[derive(Debug)]
struct Pool {
    used: AtomicUsize,
    limit: usize,
}

#[derive(Debug, Default)]
struct Waiters {
    list: Mutex<Vec<Weak<Account>>>,
    /// Whether `list` may be non-empty: lets a release skip the lock.
    any: AtomicBool,
}

/// One session's charges against its peer's and its node's budgets, shared by the
/// session core (replay) and the handles of what it delivered (inbound). Dropping it
/// gives back whatever it still holds.
pub(crate) struct Account {
    budgets: Arc<Budgets>,
    peer: Arc<Peer>,
    /// Replay bytes charged to the pools.
    replay: AtomicUsize,
    /// Inbound bytes delivered and not yet handled.
    inbound: AtomicUsize,
    /// A grant of credit waits for an inbound budget: handling a message must have the
    /// session look again.
    withheld: AtomicBool,
    /// Registered with the peer's (`[PEER]`) and the node's (`[NODE]`) waiters.
    waiting: [AtomicBool; 2],
    /// Wakes the session's driver when a budget it waits on frees up.
    on_freed: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Budgets {
    pub(crate) fn new(config: BudgetConfig) -> Arc<Self> {
        Arc::new(Self {
            node: Pools::new(config.node_replay_bytes, config.node_inbound_bytes, NODE),
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
                    pools: Pools::new(
                        self.config.peer_replay_bytes,
                        self.config.peer_inbound_bytes,
                        PEER,
                    ),
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
            inbound: AtomicUsize::new(0),
            withheld: AtomicBool::new(false),
            waiting: [AtomicBool::new(false), AtomicBool::new(false)],
            on_freed: OnceLock::new(),
        })
    }

    /// Replay bytes held by every session of the node.
    #[cfg(test)]
    pub(crate) fn replay_bytes(&self) -> usize {
        self.node.replay.used()
    }

    /// Inbound bytes waiting in the node's mailboxes.
    #[cfg(test)]
    pub(crate) fn inbound_bytes(&self) -> usize {
        self.node.inbound.used()
    }

    /// Peers with a live account.
    #[cfg(test)]
    pub(crate) fn peers(&self) -> usize {
        lock(&self.peers).len()
    }
}

impl Pools {
    fn new(replay: usize, inbound: usize, slot: usize) -> Self {
        Self {
            replay: Pool::new(replay),
            inbound: Pool::new(inbound),
            waiters: Waiters::default(),
            slot,
        }
    }

    /// Gives back `bytes` of inbound; wakes the waiters once within budget.
    fn inbound_handled(&self, bytes: usize) {
        if self.inbound.give(bytes) <= self.inbound.limit {
            self.waiters.wake(self.slot);
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

    /// Whether more than the limit is used.
    fn exceeded(&self) -> bool {
        self.used() > self.limit
    }
}

impl Waiters {
    fn register(&self, account: Weak<Account>) {
        let mut list = lock(&self.list);
        // While the pool stays past its budget, sessions that end leave their entries:
        // prune them as the list doubles, so it holds about as many as are waiting.
        if list.len() >= 64 && list.len().is_power_of_two() {
            list.retain(|waiting| waiting.strong_count() > 0);
        }
        list.push(account);
        self.any.store(true, Ordering::SeqCst);
    }

    /// Wakes every waiting account (`slot`: which of its flags to clear).
    fn wake(&self, slot: usize) {
        if !self.any.load(Ordering::SeqCst) {
            return;
        }
        let waiting = {
            let mut list = lock(&self.list);
            self.any.store(false, Ordering::SeqCst);
            std::mem::take(&mut *list)
        };
        for account in waiting.iter().filter_map(Weak::upgrade) {
            account.waiting[slot].store(false, Ordering::SeqCst);
            account.wake();
        }
    }
}

impl Account {
    /// Installs what wakes the session's driver when a budget it waits on frees up.
    pub(crate) fn on_freed(&self, wake: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_freed.set(Box::new(wake));
    }

    fn wake(&self) {
        if let Some(wake) = self.on_freed.get() {
            wake();
        }
    }

    /// The pools of each level above the session.
    fn levels(&self) -> [(InboundLimit, &Pools); 2] {
        [
            (InboundLimit::Peer, &self.peer.pools),
            (InboundLimit::Node, &self.budgets.node),
        ]
    }

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

    /// `bytes` were delivered into the owner's mailbox.
    pub(crate) fn inbound_delivered(&self, bytes: usize) {
        // As `inbound_handled`: an empty message touches no shared counter.
        if bytes > 0 {
            self.inbound.fetch_add(bytes, Ordering::SeqCst);
            self.peer.pools.inbound.take(bytes);
            self.budgets.node.inbound.take(bytes);
        }
    }

    /// The owner handled a delivery of `bytes`. Returns whether the session withholds a
    /// grant of credit, and so should look again.
    pub(crate) fn inbound_handled(&self, bytes: usize) -> bool {
        if bytes > 0 {
            self.inbound.fetch_sub(bytes, Ordering::SeqCst);
            self.peer.pools.inbound_handled(bytes);
            self.budgets.node.inbound_handled(bytes);
        }
        self.withheld.load(Ordering::SeqCst)
    }

    /// Inbound bytes of this session delivered and not yet handled.
    pub(crate) fn inbound_waiting(&self) -> usize {
        self.inbound.load(Ordering::SeqCst)
    }

    /// Which inbound budget is exceeded, if one is. When it is the peer's or the node's,
    /// the account is registered to be woken ([`Account::on_freed`]) once it falls within
    /// its budget.
    pub(crate) fn inbound_exceeded(self: &Arc<Self>) -> Option<InboundLimit> {
        if self.inbound_waiting() > self.budgets.config.session_inbound_bytes {
            return Some(InboundLimit::Session);
        }
        for (limit, pools) in self.levels() {
            if !pools.inbound.exceeded() {
                continue;
            }
            if !self.waiting[pools.slot].swap(true, Ordering::SeqCst) {
                pools.waiters.register(Arc::downgrade(self));
            }
            // Registered before looking again: a release in between finds the
            // registration, or this look finds the release.
            if pools.inbound.exceeded() {
                return Some(limit);
            }
        }
        None
    }

    /// Records whether the session withholds a grant of credit.
    pub(crate) fn set_withheld(&self, withheld: bool) {
        self.withheld.store(withheld, Ordering::SeqCst);
    }

    /// Whether the session withholds a grant of credit.
    pub(crate) fn is_withheld(&self) -> bool {
        self.withheld.load(Ordering::SeqCst)
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let replay = *self.replay.get_mut();
        self.release_replay(replay);
        let inbound = *self.inbound.get_mut();
        if inbound > 0 {
            self.inbound_handled(inbound);
        }
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
            .field("inbound", &self.inbound)
            .field("withheld", &self.withheld)
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
        account.inbound_delivered(300);
        let other = budgets.account(&identity("p"));
        other.reserve_replay(10).unwrap();
        assert_eq!(
            (budgets.replay_bytes(), budgets.inbound_bytes()),
            (1010, 300)
        );
        drop(account);
        assert_eq!((budgets.replay_bytes(), budgets.inbound_bytes()), (10, 0));
        assert_eq!(budgets.peers(), 1);
        drop(other);
        assert_eq!((budgets.replay_bytes(), budgets.peers()), (0, 0));
    }

    #[test]
    fn a_replay_budget_never_takes_more_than_its_bound() {
        let budgets = Budgets::new(BudgetConfig {
            peer_replay_bytes: 100,
            node_replay_bytes: 150,
            ..BudgetConfig::default()
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

    #[test]
    fn waiters_that_end_while_their_budget_stays_past_do_not_pile_up() {
        let budgets = Budgets::new(BudgetConfig {
            node_inbound_bytes: 100,
            ..BudgetConfig::default()
        });
        let holder = budgets.account(&identity("p"));
        holder.inbound_delivered(150);
        for _ in 0..1000 {
            let waiter = budgets.account(&identity("q"));
            assert_eq!(waiter.inbound_exceeded(), Some(InboundLimit::Node));
        }
        let waiting = lock(&budgets.node.waiters.list).len();
        assert!(waiting <= 128, "{waiting} entries for no live waiter");
    }

    #[test]
    fn waiters_are_woken_once_their_budget_falls_back_within_it() {
        let budgets = Budgets::new(BudgetConfig {
            node_inbound_bytes: 100,
            ..BudgetConfig::default()
        });
        let holder = budgets.account(&identity("p"));
        let waiter = budgets.account(&identity("q"));
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = woken.clone();
        waiter.on_freed(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        holder.inbound_delivered(150);
        assert_eq!(waiter.inbound_exceeded(), Some(InboundLimit::Node));
        assert_eq!(
            waiter.inbound_exceeded(),
            Some(InboundLimit::Node),
            "looking again registers nothing more"
        );
        holder.inbound_handled(20);
        assert_eq!(
            woken.load(Ordering::SeqCst),
            0,
            "130 bytes wait: still past"
        );
        holder.inbound_handled(30);
        assert_eq!(
            woken.load(Ordering::SeqCst),
            1,
            "100 bytes: within the budget"
        );
        holder.inbound_handled(100);
        assert_eq!(
            woken.load(Ordering::SeqCst),
            1,
            "woken once per registration"
        );
        assert_eq!(waiter.inbound_exceeded(), None);
    }
}
