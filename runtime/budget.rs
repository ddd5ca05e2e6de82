//! Memory budgets that sessions share ([`BudgetConfig`]): bytes sent and not yet
//! acknowledged (replay buffers), and bytes granted to peers as credit and not yet
//! consumed by the owners (inbound: in flight towards a mailbox, or in it), summed per
//! peer node and over the whole node, where a session's own bounds stop at the session.
//!
//! Plain atomics and one short lock, no runtime: a session core charges its [`Account`]
//! directly. A budget that has room again wakes the sessions whose grant of credit waits
//! on it, through the callback their driver installed ([`Account::on_freed`]).
//!
//! Both kinds are reserved before they are taken: replay bytes before a message is
//! queued, inbound bytes before credit for them is granted (`session::flow`). So a pool
//! never holds more than its budget, except for the small byte credit each session
//! grants in its handshake, before its peer is known ([`Account::charge_inbound`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::error::ReplayLimit;
use crate::sync::lock;
use crate::wire::NodeIdentity;

/// Byte budgets a node's sessions share ([`crate::NodeConfig::budget`]).
///
/// A session's own bounds ([`crate::settings::SessionConfig::replay_max_bytes`], its credit window)
/// stop at the session; these stop a peer that opens many sessions, and many peers
/// together, from holding a node's memory. Peers are told apart by the identity they
/// proved the secret with (name and incarnation): a peer that claims many identities
/// is held by the node budgets alone.
///
/// - *Replay* bytes: payloads sent and not yet acknowledged by the peer. A send past a
///   budget is refused with [`crate::SendError::Full`] naming it; while a session is
///   interrupted, the session is lost instead ([`crate::LostReason::ReplayFull`]).
/// - *Inbound* bytes: byte credit granted to peers and not yet consumed by the owners
///   (their [`crate::Inbound`] or [`crate::flow::Credit`] not yet dropped): payloads in flight
///   towards a mailbox (or an inbox), or waiting in it. Credit in bytes is reserved here
///   before it is granted, so what peers may send never exceeds a budget: a grant the
///   budgets cannot cover waits until they can, and the peers' sends wait meanwhile, as
///   for a slow actor. The one exception is the small byte credit each session grants in
///   its handshake ([`crate::settings::SessionConfig::initial_credit_bytes`], 8 KiB), taken whatever
///   the budgets hold, so that every session can carry small messages.
///
/// The defaults keep a node's replay buffers under 512 MiB whatever its peers do, while
/// one peer alone may use as much as one session could before budgets existed
/// (`replay_max_bytes`, 256 MiB) and never more than half the node's; and never let more
/// than 256 MiB be in flight towards the node's mailboxes (128 MiB from one peer, 64 MiB
/// towards one session): 768 MiB in all, under the 1 GiB a node should stay within.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Replay bytes of all sessions of the node: 512 MiB by default, two peers' worth.
    pub node_replay_bytes: usize,
    /// Replay bytes of all sessions with one peer: 256 MiB by default, one session's
    /// window, so one peer that never acknowledges leaves half the node's budget to the
    /// others.
    pub peer_replay_bytes: usize,
    /// Inbound bytes (granted, not yet consumed), all sessions of the node: 256 MiB by
    /// default (64 messages of the largest default size).
    pub node_inbound_bytes: usize,
    /// Inbound bytes from one peer, all its sessions: 128 MiB by default, half the
    /// node's.
    pub peer_inbound_bytes: usize,
    /// Inbound bytes from one session: 64 MiB by default (16 messages of the largest
    /// default size). It caps the session's byte window
    /// ([`crate::settings::SessionConfig::credit_window_bytes`]), never below the largest message
    /// the session accepts.
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
    /// Accounts whose grant of credit waits for `inbound` to have room.
    waiters: Waiters,
    /// Accounts holding inbound bytes: while some wait, each holder may hold at most an
    /// even share of the budget, so the bytes a busy session gives back go to the waiting
    /// ones instead of straight back to it.
    holders: AtomicUsize,
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
    /// Inbound bytes charged to the pools: credit granted and not yet consumed.
    inbound: AtomicUsize,
    /// Bytes a fan-out holds for this session's peer in its outbox (owed, not yet in the
    /// session): charged to the replay pools, as the session's replay buffer is.
    outbox: AtomicUsize,
    /// A grant of credit waits (for an inbound budget, or for what a waiting peer needs):
    /// every message handled must have the session look again.
    withheld: AtomicBool,
    /// Registered with the peer's (`[PEER]`) and the node's (`[NODE]`) waiters.
    waiting: [AtomicBool; 2],
    /// Bytes of the exact reservation the session waits for (a message its peer waits
    /// to send); 0 while it waits for none.
    needs: AtomicUsize,
    /// The peer has had all the credit it was granted: consumption should be reported
    /// in small steps.
    peer_waits: AtomicBool,
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
            outbox: AtomicUsize::new(0),
            withheld: AtomicBool::new(false),
            waiting: [AtomicBool::new(false), AtomicBool::new(false)],
            needs: AtomicUsize::new(0),
            peer_waits: AtomicBool::new(false),
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
            holders: AtomicUsize::new(0),
            slot,
        }
    }

    /// What one account holding `held` may still take while others wait: its even share,
    /// less what it holds; no bound while none wait.
    fn share_left(&self, held: usize) -> usize {
        if !self.waiters.any.load(Ordering::SeqCst) {
            return usize::MAX;
        }
        let holders = self.holders.load(Ordering::SeqCst).max(1);
        (self.inbound.limit / holders).saturating_sub(held)
    }

    /// Whether an account other than `me` waits for an exact reservation that the room
    /// these pools have now would cover: one it should let go first.
    fn serves_another(&self, me: &Account) -> bool {
        if !self.waiters.any.load(Ordering::SeqCst) {
            return false;
        }
        let room = self.inbound.room();
        lock(&self.waiters.list).iter().any(|waiting| {
            !std::ptr::eq(waiting.as_ptr(), me)
                && waiting.upgrade().is_some_and(|other| {
                    let needs = other.needs.load(Ordering::SeqCst);
                    needs > 0 && needs <= room
                })
        })
    }

    /// Gives back `bytes` of inbound taken a moment ago, and wakes whoever waits: one
    /// that looked at the room meanwhile saw it short and may have gone to sleep.
    fn give_back(&self, bytes: usize) {
        self.inbound.give(bytes);
        self.wake_inbound_waiters();
    }

    /// Wakes the accounts waiting for inbound room, if there is some.
    fn wake_inbound_waiters(&self) {
        if !self.inbound.full() {
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

    /// Takes as much of `bytes` as stays within the limit; returns how much.
    fn take_up_to(&self, bytes: usize) -> usize {
        let mut taken = 0;
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                taken = bytes.min(self.limit.saturating_sub(used));
                (taken > 0).then(|| used + taken)
            });
        taken
    }

    /// Whether the limit leaves no room.
    fn full(&self) -> bool {
        self.used() >= self.limit
    }

    /// Bytes that may still be taken.
    fn room(&self) -> usize {
        self.limit.saturating_sub(self.used())
    }

    /// Bytes that may be taken before `mark` is reached.
    fn room_below(&self, mark: usize) -> usize {
        mark.saturating_sub(self.used())
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

    /// Reserves `bytes` of replay buffer from the peer's and the node's budgets.
    ///
    /// # Errors
    /// The budget that cannot take them; then nothing is reserved.
    pub(crate) fn reserve_replay(&self, bytes: usize) -> Result<(), ReplayLimit> {
        self.take_replay_pools(bytes)?;
        self.replay.fetch_add(bytes, Ordering::SeqCst);
        Ok(())
    }

    /// Reserves `bytes` that a fan-out holds for this session's peer (its outbox) in the
    /// peer's and the node's replay budgets: owed to the peer as much as what the session
    /// holds for replay.
    ///
    /// # Errors
    /// The budget that cannot take them; then nothing is reserved.
    pub(crate) fn reserve_outbox(&self, bytes: usize) -> Result<(), ReplayLimit> {
        self.take_replay_pools(bytes)?;
        self.outbox.fetch_add(bytes, Ordering::SeqCst);
        Ok(())
    }

    /// Takes `bytes` from the peer's and the node's replay pools, or nothing.
    fn take_replay_pools(&self, bytes: usize) -> Result<(), ReplayLimit> {
        let (peer, node) = (&self.peer.pools.replay, &self.budgets.node.replay);
        if !peer.try_take(bytes) {
            return Err(ReplayLimit::Peer { bytes: peer.limit });
        }
        if !node.try_take(bytes) {
            peer.give(bytes);
            return Err(ReplayLimit::Node { bytes: node.limit });
        }
        Ok(())
    }

    /// Gives back `bytes` of [`Account::reserve_outbox`].
    pub(crate) fn release_outbox(&self, bytes: usize) {
        self.outbox.fetch_sub(bytes, Ordering::SeqCst);
        self.peer.pools.replay.give(bytes);
        self.budgets.node.replay.give(bytes);
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

    /// The session's own inbound budget: what its byte window is capped at.
    pub(crate) fn session_inbound_bytes(&self) -> u64 {
        self.budgets.config.session_inbound_bytes as u64
    }

    /// Charges `bytes` of credit already granted whatever the budgets hold (the
    /// handshake's, granted before the peer was known).
    pub(crate) fn charge_inbound(&self, bytes: u64) {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        if bytes > 0 {
            self.peer.pools.inbound.take(bytes);
            self.budgets.node.inbound.take(bytes);
            self.add_inbound(bytes);
        }
    }

    /// Counts `bytes` more inbound held by this account (a holder from its first).
    fn add_inbound(&self, bytes: usize) {
        if bytes > 0 && self.inbound.fetch_add(bytes, Ordering::SeqCst) == 0 {
            self.peer.pools.holders.fetch_add(1, Ordering::SeqCst);
            self.budgets.node.holders.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Counts `bytes` less inbound held by this account (no holder once it holds none).
    fn sub_inbound(&self, bytes: usize) {
        if bytes > 0 && self.inbound.fetch_sub(bytes, Ordering::SeqCst) == bytes {
            self.peer.pools.holders.fetch_sub(1, Ordering::SeqCst);
            self.budgets.node.holders.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Reserves up to `bytes` of credit to grant ahead of need (a window kept open for a
    /// peer that streams) from the peer's and the node's inbound budgets; returns how much
    /// it could. Such grants fill a budget only up to half: credit granted ahead and never
    /// used stays reserved (it cannot be taken back), and the other half is kept for what
    /// peers actually wait to send ([`Account::reserve_inbound_exact`]). While other
    /// sessions wait for room, it takes no more than an even share of each budget. It
    /// never waits: a peer that needs more asks.
    pub(crate) fn reserve_inbound(&self, bytes: u64) -> u64 {
        let want = usize::try_from(bytes).unwrap_or(usize::MAX);
        let (peer, node) = (&self.peer.pools, &self.budgets.node);
        let held = self.inbound.load(Ordering::SeqCst);
        let fair = want
            .min(peer.share_left(held))
            .min(node.share_left(held))
            .min(peer.inbound.room_below(peer.inbound.limit / 2))
            .min(node.inbound.room_below(node.inbound.limit / 2));
        self.take_inbound(fair) as u64
    }

    /// Reserves exactly `bytes` of credit to grant, or nothing: what a peer waiting to
    /// send a message needs (a part of it would be held for nothing, and sessions each
    /// holding a part of what they need could wait on one another for ever). Not held to
    /// an even share: the message is what the share is for. Short of room, the account is
    /// registered to be woken when a budget has room for it. A session that holds its
    /// even share already (or more) lets another waiting session go first when the room
    /// there is covers what that one needs; it waits behind it, and is woken once it took
    /// its reservation. It never waits behind sessions the room cannot serve, nor behind
    /// itself.
    pub(crate) fn reserve_inbound_exact(self: &Arc<Self>, bytes: u64) -> bool {
        let Ok(want) = usize::try_from(bytes) else {
            return false;
        };
        self.needs.store(want, Ordering::SeqCst);
        let held = self.inbound.load(Ordering::SeqCst);
        let mut behind_another = false;
        for pools in [&self.peer.pools, &self.budgets.node] {
            if pools.share_left(held) == 0 && pools.serves_another(self) {
                behind_another = true;
                if !self.waiting[pools.slot].swap(true, Ordering::SeqCst) {
                    pools.waiters.register(Arc::downgrade(self));
                }
            }
        }
        if behind_another {
            return false;
        }
        if self.take_inbound_exact(want) {
            self.needs.store(0, Ordering::SeqCst);
            // Whoever let this session go first, or waits for what is left, looks again.
            self.wake_inbound_waiters();
            return true;
        }
        self.wait_for_inbound(want);
        false
    }

    /// Takes up to `bytes` from the peer's and the node's inbound pools; returns how much.
    fn take_inbound(&self, bytes: usize) -> usize {
        let (peer, node) = (&self.peer.pools, &self.budgets.node);
        let from_peer = peer.inbound.take_up_to(bytes);
        let got = node.inbound.take_up_to(from_peer);
        if got < from_peer {
            peer.give_back(from_peer - got);
        }
        self.add_inbound(got);
        got
    }

    /// Takes exactly `bytes` from the peer's and the node's inbound pools, or nothing.
    /// The peer's is not touched while the node's looks short: a take given back is room
    /// another session may have looked at in between and gone to sleep without.
    fn take_inbound_exact(&self, bytes: usize) -> bool {
        let (peer, node) = (&self.peer.pools, &self.budgets.node);
        if node.inbound.room() < bytes || !peer.inbound.try_take(bytes) {
            return false;
        }
        if !node.inbound.try_take(bytes) {
            peer.give_back(bytes);
            return false;
        }
        self.add_inbound(bytes);
        true
    }

    /// Registers to be woken by each pool with less than `room` free; wakes the session
    /// at once if none is short by now (released in between, by a session that found
    /// nobody to wake).
    fn wait_for_inbound(self: &Arc<Self>, room: usize) {
        let mut short = false;
        for pools in [&self.peer.pools, &self.budgets.node] {
            if pools.inbound.room() >= room {
                continue;
            }
            if !self.waiting[pools.slot].swap(true, Ordering::SeqCst) {
                pools.waiters.register(Arc::downgrade(self));
            }
            // Registered before looking again: a release in between finds the
            // registration, or this look finds the room.
            short |= pools.inbound.room() < room;
        }
        if !short {
            self.wake();
        }
    }

    /// Gives back `bytes` of inbound credit reserved before (consumed by the owner).
    /// The sessions waiting for room are woken by [`Account::wake_inbound_waiters`],
    /// once this session has taken what its share allows.
    pub(crate) fn release_inbound(&self, bytes: u64) {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        if bytes > 0 {
            self.sub_inbound(bytes);
            self.peer.pools.inbound.give(bytes);
            self.budgets.node.inbound.give(bytes);
        }
    }

    /// Wakes the sessions waiting for inbound room, where there is some.
    pub(crate) fn wake_inbound_waiters(&self) {
        self.peer.pools.wake_inbound_waiters();
        self.budgets.node.wake_inbound_waiters();
    }

    /// Records whether the session withholds a grant of credit.
    pub(crate) fn set_withheld(&self, withheld: bool) {
        self.withheld.store(withheld, Ordering::SeqCst);
    }

    /// Whether the session withholds a grant of credit.
    pub(crate) fn is_withheld(&self) -> bool {
        self.withheld.load(Ordering::SeqCst)
    }

    /// Records whether the peer has had all the credit it was granted.
    pub(crate) fn set_peer_waits(&self, waits: bool) {
        if self.peer_waits.load(Ordering::Relaxed) != waits {
            self.peer_waits.store(waits, Ordering::Relaxed);
        }
    }

    /// Whether the peer has had all the credit it was granted.
    pub(crate) fn peer_waits(&self) -> bool {
        self.peer_waits.load(Ordering::Relaxed)
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let replay = *self.replay.get_mut();
        self.release_replay(replay);
        let outbox = *self.outbox.get_mut();
        self.release_outbox(outbox);
        let inbound = *self.inbound.get_mut();
        self.release_inbound(inbound as u64);
        self.wake_inbound_waiters();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts how often `account` is woken.
    fn wakes_of(account: &Account) -> Arc<AtomicUsize> {
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = woken.clone();
        account.on_freed(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        woken
    }

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
        assert_eq!(account.reserve_inbound(300), 300);
        account.charge_inbound(8);
        let other = budgets.account(&identity("p"));
        other.reserve_replay(10).unwrap();
        assert_eq!(
            (budgets.replay_bytes(), budgets.inbound_bytes()),
            (1010, 308)
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
    fn inbound_reservations_never_pass_the_peer_or_the_node_budget() {
        let budgets = Budgets::new(BudgetConfig {
            peer_inbound_bytes: 100,
            node_inbound_bytes: 150,
            ..BudgetConfig::default()
        });
        let p = budgets.account(&identity("p"));
        let p2 = budgets.account(&identity("p"));
        let q = budgets.account(&identity("q"));
        // Ahead of need: up to half of each budget.
        assert_eq!(p.reserve_inbound(70), 50, "half the peer's");
        assert_eq!(p2.reserve_inbound(70), 0, "the peer's half is taken");
        assert_eq!(q.reserve_inbound(70), 25, "what is left of the node's half");
        // For a message a peer waits to send: whole, up to the full budgets, or nothing.
        assert!(p2.reserve_inbound_exact(40));
        assert!(!p2.reserve_inbound_exact(20), "the peer's budget is 100");
        assert!(q.reserve_inbound_exact(35));
        assert!(!q.reserve_inbound_exact(1), "the node's budget is 150");
        assert_eq!(budgets.inbound_bytes(), 150);
        p.release_inbound(50);
        assert!(p2.reserve_inbound_exact(10));
        assert_eq!(budgets.inbound_bytes(), 110);
    }

    #[test]
    fn waiters_that_end_while_their_budget_stays_full_do_not_pile_up() {
        let budgets = Budgets::new(BudgetConfig {
            node_inbound_bytes: 100,
            ..BudgetConfig::default()
        });
        let holder = budgets.account(&identity("p"));
        assert!(holder.reserve_inbound_exact(100));
        for _ in 0..1000 {
            let waiter = budgets.account(&identity("q"));
            assert!(!waiter.reserve_inbound_exact(10));
        }
        let waiting = lock(&budgets.node.waiters.list).len();
        assert!(waiting <= 128, "{waiting} entries for no live waiter");
    }

    #[test]
    fn waiters_are_woken_once_their_budget_has_room() {
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
        holder.charge_inbound(150);
        assert!(!waiter.reserve_inbound_exact(10));
        assert!(
            !waiter.reserve_inbound_exact(10),
            "looking again registers nothing more"
        );
        holder.release_inbound(20);
        holder.wake_inbound_waiters();
        assert_eq!(
            woken.load(Ordering::SeqCst),
            0,
            "130 bytes held: still full"
        );
        holder.release_inbound(40);
        holder.wake_inbound_waiters();
        assert_eq!(woken.load(Ordering::SeqCst), 1, "90 bytes: room again");
        holder.release_inbound(90);
        holder.wake_inbound_waiters();
        assert_eq!(
            woken.load(Ordering::SeqCst),
            1,
            "woken once per registration"
        );
        assert!(waiter.reserve_inbound_exact(10));
    }

    #[test]
    fn while_others_wait_a_session_holding_its_share_waits_behind_them() {
        let budgets = Budgets::new(BudgetConfig {
            node_inbound_bytes: 100,
            ..BudgetConfig::default()
        });
        let hog = budgets.account(&identity("p"));
        let small = budgets.account(&identity("q"));
        assert!(hog.reserve_inbound_exact(90));
        small.charge_inbound(5);
        assert!(!small.reserve_inbound_exact(10), "5 bytes of room");
        // The hog gives 20 back and wants them again: two hold, so its share is 50, and
        // it holds 70: the waiting session goes first.
        hog.release_inbound(20);
        assert!(!hog.reserve_inbound_exact(20));
        assert!(small.reserve_inbound_exact(10));
    }

    #[test]
    fn a_session_over_its_share_never_waits_behind_itself_or_a_need_that_does_not_fit() {
        let budgets = Budgets::new(BudgetConfig {
            node_inbound_bytes: 100,
            ..BudgetConfig::default()
        });
        let hog = budgets.account(&identity("p"));
        let woken = wakes_of(&hog);
        let (idle, other, big) = (
            budgets.account(&identity("q")),
            budgets.account(&identity("r")),
            budgets.account(&identity("s")),
        );
        // Credit granted ahead and never used: two more holders, so the share is 33.
        idle.charge_inbound(10);
        other.charge_inbound(10);
        assert!(hog.reserve_inbound_exact(40));
        let held = budgets.account(&identity("t"));
        assert!(held.reserve_inbound_exact(40));
        // The hog waits for 40 more; then the 40 held elsewhere are consumed.
        assert!(!hog.reserve_inbound_exact(40));
        held.release_inbound(40);
        held.wake_inbound_waiters();
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        // It holds 40, past its share, and the only waiter is itself: it takes them.
        assert!(hog.reserve_inbound_exact(40), "it waited behind itself");
        hog.release_inbound(40);
        // Another waits for more than the room: the hog does not wait behind it.
        assert!(!big.reserve_inbound_exact(70));
        assert!(
            hog.reserve_inbound_exact(20),
            "it waited behind a need that cannot fit"
        );
    }

    #[test]
    fn a_session_that_let_another_go_first_looks_again_once_it_did() {
        let budgets = Budgets::new(BudgetConfig {
            node_inbound_bytes: 100,
            ..BudgetConfig::default()
        });
        let hog = budgets.account(&identity("p"));
        let woken = wakes_of(&hog);
        let small = budgets.account(&identity("q"));
        assert!(hog.reserve_inbound_exact(90));
        small.charge_inbound(5);
        assert!(!small.reserve_inbound_exact(10));
        hog.release_inbound(40);
        assert!(!hog.reserve_inbound_exact(20), "the small one goes first");
        assert!(small.reserve_inbound_exact(10));
        assert_eq!(woken.load(Ordering::SeqCst), 1, "the hog looks again");
        assert!(hog.reserve_inbound_exact(20));
    }

    /// Six sessions on threads, each waiting for exact grants of one message at a time
    /// while a reader consumes them, over a peer budget that covers two: however their
    /// looks, takes and releases interleave, every waiter is woken once there is room.
    /// (A session whose take failed just before another released, and found nobody
    /// registered to wake, used to see the room and sleep without registering.)
    #[test]
    fn sessions_racing_for_exact_grants_never_all_wait_with_room_free() {
        race(
            BudgetConfig {
                peer_inbound_bytes: 10 * 1024,
                ..BudgetConfig::default()
            },
            &["p"; 6],
            Race {
                in_flight: 1,
                ahead: 0,
            },
        );
    }

    /// As above, with two peers whose sessions together pass the node's budget, each
    /// session holding two messages unconsumed and asking for the next (so the even
    /// share holds them back), and taking credit ahead of need as it consumes: nobody
    /// waits for ever behind a share, a give-back or the other pool.
    #[test]
    fn sessions_of_two_peers_racing_over_both_budgets_never_all_wait() {
        race(
            BudgetConfig {
                peer_inbound_bytes: 10 * 1024,
                node_inbound_bytes: 14 * 1024,
                ..BudgetConfig::default()
            },
            &["p", "p", "p", "q", "q", "q"],
            Race {
                in_flight: 2,
                ahead: 512,
            },
        );
    }

    /// How the sessions of [`race`] behave.
    struct Race {
        /// Messages a session may have granted and not yet consumed.
        in_flight: usize,
        /// Credit a session takes ahead of need each time a message is consumed (given
        /// back at the next).
        ahead: u64,
    }

    /// Sessions of `peers` (one thread each) ask for exact grants of 4 KiB messages, up
    /// to `race.in_flight` at once, while one reader consumes every message as it comes;
    /// fails when a session hears nothing (no wake, no consumption) for ten seconds while
    /// it still has messages to send.
    fn race(config: BudgetConfig, peers: &[&str], race: Race) {
        use std::sync::mpsc;
        use std::time::Duration;
        const MESSAGE: u64 = 4 * 1024;
        const ROUNDS: usize = 3_000;
        enum Heard {
            Woken,
            Consumed,
        }
        let budgets = Budgets::new(config);
        let (held_tx, held_rx) = mpsc::channel::<usize>();
        let mut consumed_txs = Vec::new();
        let mut sessions = Vec::new();
        for (s, peer) in peers.iter().enumerate() {
            let account = budgets.account(&identity(peer));
            account.charge_inbound(8);
            let (heard_tx, heard_rx) = mpsc::channel();
            let woken_tx = heard_tx.clone();
            account.on_freed(move || {
                let _ = woken_tx.send(Heard::Woken);
            });
            consumed_txs.push(heard_tx);
            let held_tx = held_tx.clone();
            let Race { in_flight, ahead } = race;
            sessions.push(std::thread::spawn(move || -> Result<(), String> {
                let (mut granted, mut consumed, mut ahead_held) = (0, 0, 0);
                while consumed < ROUNDS {
                    if granted < ROUNDS
                        && granted - consumed < in_flight
                        && account.reserve_inbound_exact(MESSAGE)
                    {
                        granted += 1;
                        held_tx.send(s).unwrap();
                        continue;
                    }
                    let heard = heard_rx.recv_timeout(Duration::from_secs(10)).map_err(|_| {
                        format!(
                            "session {s}: {granted} granted, {consumed} consumed, nothing heard; \
                             room: peer {}, node {}",
                            account.peer.pools.inbound.room(),
                            account.budgets.node.inbound.room(),
                        )
                    })?;
                    if let Heard::Consumed = heard {
                        // As a session core does: give back what the owner consumed (and
                        // the credit it granted ahead), grant ahead again, tell the waiters.
                        consumed += 1;
                        account.release_inbound(MESSAGE + ahead_held);
                        ahead_held = account.reserve_inbound(ahead);
                        account.wake_inbound_waiters();
                    }
                }
                Ok(())
            }));
        }
        drop(held_tx);
        let reader = std::thread::spawn(move || {
            while let Ok(s) = held_rx.recv() {
                let _ = consumed_txs[s].send(Heard::Consumed);
            }
        });
        let results: Vec<_> = sessions.into_iter().map(|t| t.join().unwrap()).collect();
        reader.join().unwrap();
        for result in results {
            result.unwrap();
        }
        assert_eq!(
            budgets.inbound_bytes(),
            0,
            "the ended sessions gave all back"
        );
    }
}
