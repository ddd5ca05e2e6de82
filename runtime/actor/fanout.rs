//! [`Fanout`]: one actor sending to many sessions, when some of them cannot keep up.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prost::{Message, Name};
use tokio::sync::{Notify, mpsc};

use crate::error::{ReplayLimit, SendError};
use crate::handles::session_ref::SessionRef;
use crate::log_budget::LogBudget;
use crate::wire::{GoodbyeReason, SessionId};

/// How far a member may fall behind before the fan-out holds its senders back, and when a
/// member counts as stuck and is let go. See [`Fanout`] for the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FanoutConfig {
    /// The soft bound, in messages: while a member that keeps taking what it is sent has
    /// this many waiting in its outbox, the fan-out holds its feeders back (pauses the
    /// sessions that feed it), until that outbox is down to half of it. At least 1.
    pub hold_lag: usize,
    /// The soft bound in bytes (encoded): the same, for a few large messages.
    pub hold_lag_bytes: usize,
    /// A member that took nothing for this long no longer holds the feeders back (it
    /// holds them again once it takes something): one reader that stopped slows the
    /// fan-out for at most this long at a time.
    pub hold_at_most: Duration,
    /// A member with messages waiting that took none of them for this long, its session
    /// up, is stuck: it is let go (its session ended, `LimitExceeded`). An interrupted
    /// session's time does not count: its resume deadline bounds it.
    pub stuck_after: Duration,
    /// The hard bound, in messages: a member whose outbox holds this many is let go at
    /// once, whatever its progress (but not while its session is interrupted: then what
    /// the member is owed is bounded by the replay budgets, as a session's replay is).
    pub max_lag: usize,
    /// The hard bound in bytes (encoded). A message is always taken into an outbox holding
    /// less than this, so one larger message still reaches a member that keeps up.
    pub max_lag_bytes: usize,
    /// How long a member that was let go, or leaves, gets to take what its outbox still
    /// holds and its notice, and to finish its side of the session; then the session is
    /// ended.
    pub farewell_timeout: Duration,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            hold_lag: 1024,
            hold_lag_bytes: 1024 * 1024,
            hold_at_most: Duration::from_secs(1),
            stuck_after: Duration::from_secs(10),
            max_lag: 256 * 1024,
            max_lag_bytes: 64 * 1024 * 1024,
            farewell_timeout: Duration::from_secs(30),
        }
    }
}

/// Sends to many sessions, each in order, under the policy below. `K` names a member (a
/// user name, a session id); `M` is what the sender sends (its protocol's `Response`,
/// usually a `oneof`).
///
/// It spawns tokio tasks (one per member that had to wait for credit), so it is used
/// from within a tokio runtime, as actors are.
///
/// # The policy: slow is not stuck
///
/// Every member either receives everything sent to it, in order, or is told that it was
/// let go. Nothing is skipped in between.
///
/// - A message goes straight into the member's session while its peer grants credit
///   (also while the session is interrupted: it then waits in the session's replay
///   buffer, as any message does). When the peer grants none, it waits in the member's
///   **outbox**, an ordered queue drained by one task per member (never one per
///   message) as credit returns.
/// - **Slow holds the senders back.** The fan-out has **feeders**: the sessions whose
///   messages make it publish (every member's, by default, and any added with
///   [`Fanout::feed_from`]). While a member's outbox holds [`FanoutConfig::hold_lag`]
///   messages or [`FanoutConfig::hold_lag_bytes`] bytes and the member keeps taking from
///   it, the fan-out pauses its feeders (a `Pause` flow signal, which their runtimes
///   obey), and lets them go on once that outbox is down to half. So the fan-out runs at
///   the pace of its slowest reader that keeps reading, and that reader loses nothing.
/// - **Stopped does not freeze the others.** A member that took nothing for
///   [`FanoutConfig::hold_at_most`] no longer holds the feeders back: the others go on,
///   and its outbox grows. A member whose outbox has messages waiting and that took none
///   for [`FanoutConfig::stuck_after`] is **stuck**: its session is ended with a
///   `LimitExceeded` farewell saying so, which its owner receives as a typed close
///   reason; the sender's owner sees the session close.
/// - **A hard memory bound.** A member whose outbox reaches [`FanoutConfig::max_lag`]
///   messages or [`FanoutConfig::max_lag_bytes`] bytes, or whose outbox the replay
///   budgets of its peer or of the node cannot take ([`crate::settings::BudgetConfig`]: an outbox is
///   what its peer is owed, charged as a session's replay buffer is), **is let go** at
///   once: it leaves the fan-out and comes back to the caller as a [`Behind`]. The caller
///   names what happens next in a typed notice ([`Behind::farewell`]): the notice follows
///   what the outbox still holds, then the session is finished. A member that takes it
///   all and finishes its side within [`FanoutConfig::farewell_timeout`] has every
///   message up to the point it was let go, then the notice; otherwise its session is
///   ended with a `LimitExceeded` farewell.
/// - **An interruption is not falling behind.** While a member's session is interrupted
///   (its owner learns it from [`crate::SessionSignal::Interrupted`] and says so with
///   [`Fanout::interrupted`], then [`Fanout::resumed`]), it holds no one back, its stuck
///   clock stops, and the message bounds do not apply to it: what it is owed waits in its
///   session's replay buffer and its outbox, under its peer's and the node's replay
///   budgets, for as long as its session may resume. One that resumes gets everything in
///   order; one that does not is lost when its resume deadline passes.
/// - A member leaving politely ([`Fanout::finish`]) gets what its outbox holds before the
///   farewell, within the same timeout.
///
/// Why this policy: letting a member go at a small lag (what this fan-out did before)
/// dropped healthy readers and writers for being briefly slower than a burst, or for an
/// interruption of their own stream; waiting for the slowest member with no limit lets a
/// reader that stopped freeze everyone; an outbox without a bound moves a stopped
/// reader's backlog into the sender's memory; dropping messages leaves silent gaps. Here a
/// reader that keeps reading slows the fan-out to its pace and loses nothing, a stopped
/// one slows it for at most `hold_at_most` at a time and is let go after `stuck_after`,
/// and memory stays within `max_lag`/`max_lag_bytes` per member and the replay budgets
/// per peer and per node.
pub struct Fanout<K, M> {
    members: HashMap<K, Outbox<M>>,
    /// Members that were let go, until [`Fanout::remove`]: their farewell finishes them.
    let_go: HashSet<K>,
    config: FanoutConfig,
    lines: Arc<FanoutLines>,
    holds: Arc<Holds>,
    next_id: u64,
}

/// The fan-out's log lines that members can cause, shared with its outboxes' tasks: a
/// budget for each kind (a few lines per window, the rest counted).
#[derive(Debug, Default)]
struct FanoutLines {
    /// Members let go: fell behind, stuck, or did not finish their farewell (info).
    let_go: LogBudget,
    /// Messages too large for a member's session (warn).
    too_large: LogBudget,
}

impl<K, M> Fanout<K, M>
where
    K: Hash + Eq + Clone + fmt::Debug,
    M: Message + Name + Clone + 'static,
{
    /// An empty fan-out.
    ///
    /// # Panics
    /// If `config.hold_lag` is 0, or a hard bound is below its soft one.
    pub fn new(config: FanoutConfig) -> Self {
        assert!(config.hold_lag > 0, "a fan-out's hold_lag is at least 1");
        assert!(
            config.max_lag >= config.hold_lag && config.max_lag_bytes >= config.hold_lag_bytes,
            "a fan-out's hard bounds are at least its soft ones"
        );
        Self {
            members: HashMap::new(),
            let_go: HashSet::new(),
            config,
            lines: Arc::default(),
            holds: Arc::default(),
            next_id: 0,
        }
    }

    /// Adds a member reached through `session` (replacing one with the same key, whose
    /// outbox still drains). Its session feeds the fan-out too: it is held back with the
    /// others while a member is slow.
    pub fn insert(&mut self, key: K, session: SessionRef) {
        self.next_id += 1;
        self.holds.add_feeder(&session);
        let outbox = Outbox::new(
            self.next_id,
            session,
            self.lines.clone(),
            self.holds.clone(),
            self.config,
        );
        if let Some(replaced) = self.members.insert(key, outbox) {
            replaced.leave();
        }
    }

    /// `session` feeds the fan-out without being a member (say, a writer whose messages
    /// are published to watchers): it is held back while a member is slow.
    pub fn feed_from(&mut self, session: &SessionRef) {
        self.holds.add_feeder(session);
    }

    /// `session` no longer feeds the fan-out; a hold on it ends.
    pub fn stop_feeding(&mut self, session: SessionId) {
        self.holds.remove_feeder(session);
    }

    /// Whether the fan-out holds its feeders back now (a member is slow).
    pub fn holding(&self) -> bool {
        self.holds.holding()
    }

    /// Whether `key` is a member.
    pub fn contains(&self, key: &K) -> bool {
        self.members.contains_key(key)
    }

    /// The members' count.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The session of member `key`.
    pub fn session(&self, key: &K) -> Option<&SessionRef> {
        self.members.get(key).map(|outbox| &outbox.session)
    }

    /// Messages waiting in member `key`'s outbox.
    pub fn lag(&self, key: &K) -> Option<usize> {
        self.members.get(key).map(Outbox::lag)
    }

    /// Bytes (encoded) waiting in member `key`'s outbox.
    pub fn lag_bytes(&self, key: &K) -> Option<usize> {
        self.members.get(key).map(Outbox::lag_bytes)
    }

    /// Sends `message` to member `key`, after what it already waits for.
    ///
    /// # Errors
    /// [`Refused::Behind`] when the member was let go with this message (it is no longer
    /// a member; act on it with [`Behind::farewell`]). [`Refused::NotMember`] (the
    /// message back) when `key` is not a member, or its session has closed: its owner
    /// hears of that from the session itself.
    pub fn send(&mut self, key: &K, message: M) -> Result<(), Refused<K, M>> {
        let Some(outbox) = self.members.get_mut(key) else {
            return Err(Refused::NotMember(message));
        };
        match outbox.push(message) {
            Pushed::Sent => Ok(()),
            Pushed::Closed(message) => {
                self.remove(key);
                Err(Refused::NotMember(message))
            }
            Pushed::Behind(cause) => Err(Refused::Behind(self.fell_behind(key, cause))),
        }
    }

    /// Sends `message` to every member but `except`. Returns the members that were let go
    /// with it (no longer members; each is told through [`Behind::farewell`], or by its
    /// session's end if the caller drops it). Members whose session has closed leave
    /// quietly: their owner hears of that from the session itself.
    pub fn publish(&mut self, message: &M, except: Option<&K>) -> Vec<Behind<K, M>> {
        let mut behind = Vec::new();
        let mut closed = Vec::new();
        for (key, outbox) in &mut self.members {
            if Some(key) == except {
                continue;
            }
            match outbox.push(message.clone()) {
                Pushed::Sent => {}
                Pushed::Closed(_) => closed.push(key.clone()),
                Pushed::Behind(cause) => behind.push((key.clone(), cause)),
            }
        }
        for key in closed {
            self.remove(&key);
        }
        behind
            .into_iter()
            .map(|(key, cause)| self.fell_behind(&key, cause))
            .collect()
    }

    /// Whether `key` was let go and not removed since: its farewell is under way.
    pub fn fell_behind_since(&self, key: &K) -> bool {
        self.let_go.contains(key)
    }

    /// Member `key`'s session is interrupted: it holds no one back, its stuck clock
    /// stops, and the message bounds do not apply to it until [`Fanout::resumed`]. Nothing
    /// happens when `key` is not a member.
    pub fn interrupted(&mut self, key: &K) {
        if let Some(outbox) = self.members.get(key) {
            outbox.state.set_interrupted(true);
            self.holds.review(&outbox.state, &self.config);
        }
    }

    /// Member `key`'s session resumed: its stuck clock starts again from now.
    pub fn resumed(&mut self, key: &K) {
        if let Some(outbox) = self.members.get(key) {
            outbox.state.set_interrupted(false);
            self.holds.review(&outbox.state, &self.config);
        }
    }

    /// Removes member `key` at once: what its outbox holds is still sent while its session
    /// takes it; nothing new is. Returns its session. Call it when the member's session
    /// is over, for a member that was let go too (to forget it).
    pub fn remove(&mut self, key: &K) -> Option<SessionRef> {
        self.let_go.remove(key);
        let outbox = self.members.remove(key)?;
        self.holds.remove_feeder(outbox.session.id());
        outbox.leave();
        Some(outbox.session.clone())
    }

    /// Removes member `key` politely: its session is finished (half-closed) after what
    /// its outbox holds, which the member has [`FanoutConfig::farewell_timeout`] to take;
    /// then the session is ended. Returns whether the fan-out finishes the session: `key`
    /// was a member, or was let go (its farewell finishes it). When `false`, the caller
    /// finishes the session itself.
    pub fn finish(&mut self, key: &K) -> bool {
        match self.members.remove(key) {
            Some(outbox) => {
                self.holds.remove_feeder(outbox.session.id());
                outbox.finish(None);
                true
            }
            None => self.let_go.contains(key),
        }
    }

    fn fell_behind(&mut self, key: &K, cause: LetGo) -> Behind<K, M> {
        let outbox = self
            .members
            .remove(key)
            .expect("a member that fell behind is in the fan-out");
        self.holds.remove_feeder(outbox.session.id());
        outbox.state.leaving.store(true, Ordering::SeqCst);
        self.holds.review(&outbox.state, &self.config);
        self.lines.let_go.log(|suppressed| {
            tracing::info!(
                member = ?key,
                session = %outbox.session.id(),
                lag = outbox.lag(),
                lag_bytes = outbox.lag_bytes(),
                %cause,
                not_logged_since_last_line = suppressed,
                "member let go"
            );
        });
        self.let_go.insert(key.clone());
        Behind {
            key: key.clone(),
            cause,
            outbox: Some(Box::new(outbox)),
        }
    }
}

/// An empty fan-out with the default [`FanoutConfig`].
impl<K, M> Default for Fanout<K, M>
where
    K: Hash + Eq + Clone + fmt::Debug,
    M: Message + Name + Clone + 'static,
{
    fn default() -> Self {
        Self::new(FanoutConfig::default())
    }
}

/// Lets its feeders go, and reports the counts of log lines no line reported.
impl<K, M> Drop for Fanout<K, M> {
    fn drop(&mut self) {
        self.holds.close();
        let lines = &self.lines;
        let let_go = "member let go, or did not finish its farewell in time";
        lines
            .let_go
            .report_unreported(tracing::Level::INFO, "fan-out", let_go);
        lines.too_large.report_unreported(
            tracing::Level::WARN,
            "fan-out",
            "fan-out message too large",
        );
    }
}

impl<K: fmt::Debug, M> fmt::Debug for Fanout<K, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanout")
            .field("members", &self.members.keys().collect::<Vec<_>>())
            .field("holding", &self.holds.holding())
            .field("config", &self.config)
            .finish()
    }
}

/// Why [`Fanout::send`] did not take a message.
#[derive(Debug)]
pub enum Refused<K, M> {
    /// The member was let go with it.
    Behind(Behind<K, M>),
    /// Not a member (or its session closed); the message back.
    NotMember(M),
}

/// Which hard bound a member that was let go reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LetGo {
    /// Its outbox held [`FanoutConfig::max_lag`] messages.
    Messages(usize),
    /// Its outbox held [`FanoutConfig::max_lag_bytes`] bytes.
    Bytes(usize),
    /// Its peer's or the node's replay budget could not take more for it.
    Budget(ReplayLimit),
}

impl fmt::Display for LetGo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Messages(n) => write!(f, "{n} messages waited for it"),
            Self::Bytes(n) => write!(f, "{n} bytes waited for it"),
            Self::Budget(limit) => write!(f, "the replay budget is full ({limit})"),
        }
    }
}

/// A member that was let go: it is out of the fan-out and its session awaits its notice.
/// Dropping this without [`Behind::farewell`] ends the session at once with a
/// `LimitExceeded` farewell, so the member is told in any case.
pub struct Behind<K, M> {
    /// The member.
    pub key: K,
    cause: LetGo,
    outbox: Option<Box<Outbox<M>>>,
}

impl<K, M> Behind<K, M> {
    /// Its session.
    pub fn session(&self) -> &SessionRef {
        &self.outbox().session
    }

    /// Messages its outbox still holds: they reach it before the notice.
    pub fn queued(&self) -> usize {
        self.outbox().lag()
    }

    /// The bound it reached.
    pub fn cause(&self) -> LetGo {
        self.cause
    }

    fn outbox(&self) -> &Outbox<M> {
        self.outbox.as_ref().expect("present until farewell")
    }
}

impl<K, M: Message + Name + 'static> Behind<K, M> {
    /// Sends `notice` after what the outbox holds, then finishes the session; ends it if
    /// the member has not taken it all and finished its side within the farewell timeout.
    pub fn farewell(mut self, notice: M) {
        if let Some(outbox) = self.outbox.take() {
            (*outbox).finish(Some(notice));
        }
    }
}

impl<K, M> Drop for Behind<K, M> {
    fn drop(&mut self) {
        if let Some(outbox) = self.outbox.take() {
            let detail = format!("fell behind: {}", self.cause);
            outbox.session.end(GoodbyeReason::LimitExceeded, detail);
        }
    }
}

impl<K: fmt::Debug, M> fmt::Debug for Behind<K, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Behind");
        out.field("key", &self.key).field("cause", &self.cause);
        if let Some(outbox) = &self.outbox {
            out.field("session", &outbox.session.id())
                .field("queued", &outbox.lag());
        }
        out.finish()
    }
}

/// The fan-out's holds on its feeders: which members hold them back now, and the
/// sessions held. One lock for both, under which every decision reads the outboxes'
/// counts, so the last decision made always sees the last counts.
#[derive(Debug, Default)]
struct Holds {
    state: Mutex<HoldState>,
}

#[derive(Debug, Default)]
struct HoldState {
    /// Members (by outbox id) holding the feeders back now, with their sessions.
    holding: HashMap<u64, SessionId>,
    /// The sessions that feed the fan-out, and whether each is held now.
    feeders: HashMap<SessionId, (SessionRef, bool)>,
    /// The fan-out is gone: nothing holds anyone any more.
    closed: bool,
}

impl HoldState {
    /// Holds every feeder that a member other than its own session holds back, and lets
    /// every other go: a member behind is not kept from sending by its own lag.
    fn apply(&mut self) {
        let holding = &self.holding;
        for (id, (feeder, held)) in &mut self.feeders {
            let hold = holding.values().any(|member| member != id);
            if hold != *held {
                *held = hold;
                if hold {
                    feeder.hold_peer();
                } else {
                    feeder.release_peer();
                }
            }
        }
    }
}

impl Holds {
    fn lock(&self) -> MutexGuard<'_, HoldState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn holding(&self) -> bool {
        !self.lock().holding.is_empty()
    }

    fn add_feeder(&self, session: &SessionRef) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        // Feeders whose session is over leave as others come.
        state.feeders.retain(|_, (feeder, _)| !feeder.is_closed());
        state
            .feeders
            .entry(session.id())
            .or_insert_with(|| (session.clone(), false));
        state.apply();
    }

    fn remove_feeder(&self, id: SessionId) {
        let mut state = self.lock();
        if let Some((feeder, true)) = state.feeders.remove(&id) {
            feeder.release_peer();
        }
    }

    /// Decides, from its counts now, whether the member of `outbox` holds the feeders back.
    fn review(&self, outbox: &OutboxState, config: &FanoutConfig) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        let (lag, bytes) = (outbox.lag(), outbox.lag_bytes());
        let eligible = !outbox.interrupted.load(Ordering::SeqCst)
            && !outbox.stalled.load(Ordering::SeqCst)
            && !outbox.leaving.load(Ordering::SeqCst);
        let over = lag >= config.hold_lag || bytes >= config.hold_lag_bytes;
        let under = lag <= config.hold_lag / 2 && bytes <= config.hold_lag_bytes / 2;
        let changed = if eligible && over {
            state.holding.insert(outbox.id, outbox.session).is_none()
        } else if !eligible || under {
            state.holding.remove(&outbox.id).is_some()
        } else {
            false
        };
        if changed {
            state.apply();
        }
    }

    /// The member of outbox `id` is gone: it holds nothing.
    fn forget(&self, id: u64) {
        let mut state = self.lock();
        if state.holding.remove(&id).is_some() {
            state.apply();
        }
    }

    /// The fan-out is gone: every hold ends.
    fn close(&self) {
        let mut state = self.lock();
        state.holding.clear();
        state.apply();
        state.feeders.clear();
        state.closed = true;
    }
}

/// What an outbox and its pump task share.
#[derive(Debug)]
struct OutboxState {
    id: u64,
    /// The member's session.
    session: SessionId,
    /// Messages pushed and not yet taken by the session (queued, or being cast).
    pending: AtomicUsize,
    /// Their encoded bytes.
    pending_bytes: AtomicUsize,
    /// Milliseconds from `epoch` to when the member last took a message, or started to
    /// wait with an empty outbox, or its session resumed: what its stuck clock counts
    /// from.
    progress: AtomicU64,
    epoch: Instant,
    /// The member's session is interrupted.
    interrupted: AtomicBool,
    /// The member took nothing for `hold_at_most`: it holds no one back.
    stalled: AtomicBool,
    /// No longer a member (let go, leaving, removed): it holds no one back and is not
    /// judged stuck (its farewell has a timeout of its own).
    leaving: AtomicBool,
    /// The interruption state changed, or the member left: the pump looks again.
    changed: Notify,
}

impl OutboxState {
    fn new(id: u64, session: SessionId) -> Self {
        Self {
            id,
            session,
            pending: AtomicUsize::new(0),
            pending_bytes: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            epoch: Instant::now(),
            interrupted: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn lag(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    fn lag_bytes(&self) -> usize {
        self.pending_bytes.load(Ordering::SeqCst)
    }

    /// The stuck clock starts again now.
    fn progressed(&self) {
        let millis = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.progress.store(millis, Ordering::SeqCst);
        self.stalled.store(false, Ordering::SeqCst);
    }

    fn progressed_at(&self) -> Instant {
        self.epoch + Duration::from_millis(self.progress.load(Ordering::SeqCst))
    }

    fn set_interrupted(&self, interrupted: bool) {
        self.interrupted.store(interrupted, Ordering::SeqCst);
        if !interrupted {
            self.progressed();
        }
        self.changed.notify_one();
    }
}

/// One member's ordered way out: straight into the session while it has credit, else
/// through a queue that its pump task drains.
struct Outbox<M> {
    session: SessionRef,
    state: Arc<OutboxState>,
    /// The pump's queue, once the member first had to wait.
    queue: Option<mpsc::UnboundedSender<Item<M>>>,
    lines: Arc<FanoutLines>,
    holds: Arc<Holds>,
    config: FanoutConfig,
}

enum Item<M> {
    /// A message and its encoded size (charged to the replay budgets).
    Message(M, usize),
    /// Send the notice (if any), then finish the session.
    Finish(Option<M>),
}

enum Pushed<M> {
    Sent,
    Behind(LetGo),
    Closed(M),
}

impl<M> Outbox<M> {
    fn lag(&self) -> usize {
        self.state.lag()
    }

    fn lag_bytes(&self) -> usize {
        self.state.lag_bytes()
    }

    /// No longer a member: it holds no one back; what its outbox holds still drains.
    fn leave(&self) {
        self.state.leaving.store(true, Ordering::SeqCst);
        self.holds.forget(self.state.id);
        self.state.changed.notify_one();
    }
}

impl<M: Message + Name + 'static> Outbox<M> {
    fn new(
        id: u64,
        session: SessionRef,
        lines: Arc<FanoutLines>,
        holds: Arc<Holds>,
        config: FanoutConfig,
    ) -> Self {
        Self {
            state: Arc::new(OutboxState::new(id, session.id())),
            session,
            queue: None,
            lines,
            holds,
            config,
        }
    }

    fn push(&mut self, message: M) -> Pushed<M> {
        let lag = self.lag();
        // Only with nothing ahead of it may a message skip the queue.
        let message = if lag == 0 {
            match self.session.try_cast(message) {
                Ok(()) => return Pushed::Sent,
                // An unreachable member's queue waits, as an interrupted one's does.
                Err(
                    SendError::HeldBack { message, .. }
                    | SendError::NotReady(message)
                    | SendError::PeerUnreachable { message },
                ) => {
                    // The first message to wait: the stuck clock starts now.
                    self.state.progressed();
                    message
                }
                Err(SendError::Closed { message, .. }) => return Pushed::Closed(message),
                Err(error @ SendError::TooLarge { .. }) => {
                    end_too_large(&self.session, &error, &self.lines);
                    return Pushed::Closed(error.into_message());
                }
                Err(error @ SendError::Full { .. }) => {
                    end_full(&self.session, &error);
                    return Pushed::Closed(error.into_message());
                }
            }
        } else if self.session.is_closed() {
            return Pushed::Closed(message);
        } else {
            message
        };
        if lag > 0 && !self.state.interrupted.load(Ordering::SeqCst) {
            if lag >= self.config.max_lag {
                return Pushed::Behind(LetGo::Messages(lag));
            }
            if self.lag_bytes() >= self.config.max_lag_bytes {
                return Pushed::Behind(LetGo::Bytes(self.lag_bytes()));
            }
        }
        let size = message.encoded_len();
        if let Some(account) = self.session.account()
            && let Err(limit) = account.reserve_outbox(size)
        {
            return Pushed::Behind(LetGo::Budget(limit));
        }
        self.state.pending.fetch_add(1, Ordering::SeqCst);
        self.state.pending_bytes.fetch_add(size, Ordering::SeqCst);
        match self.queue().send(Item::Message(message, size)) {
            Ok(()) => {
                self.holds.review(&self.state, &self.config);
                Pushed::Sent
            }
            Err(mpsc::error::SendError(Item::Message(message, size))) => {
                took(&self.session, &self.state, size);
                Pushed::Closed(message)
            }
            Err(_) => unreachable!("a message was sent"),
        }
    }

    /// Sends `notice` (if any) after what is queued, then finishes the session; ends it
    /// after the farewell timeout unless it closed by then.
    fn finish(mut self, notice: Option<M>) {
        self.leave();
        if self.lag() == 0 && notice.is_none() {
            self.session.finish();
        } else {
            // The pump may have stopped with a closed session; then there is no one to tell.
            let _ = self.queue().send(Item::Finish(notice));
        }
        let (session, lines, timeout) = (self.session, self.lines, self.config.farewell_timeout);
        tokio::spawn(async move {
            if tokio::time::timeout(timeout, session.closed())
                .await
                .is_err()
            {
                lines.let_go.log(|suppressed| {
                    tracing::info!(session = %session.id(), not_logged_since_last_line = suppressed, "member did not finish its farewell in time");
                });
                session.end(
                    GoodbyeReason::LimitExceeded,
                    format!(
                        "let go: did not take its farewell and finish its side within {timeout:?}"
                    ),
                );
            }
        });
    }

    fn queue(&mut self) -> &mpsc::UnboundedSender<Item<M>> {
        self.queue.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(pump(
                self.session.clone(),
                rx,
                self.state.clone(),
                self.holds.clone(),
                self.config,
                self.lines.clone(),
            ));
            tx
        })
    }
}

/// The member took (or will never take) one message of `size` bytes from its outbox.
fn took(session: &SessionRef, state: &OutboxState, size: usize) {
    state.pending.fetch_sub(1, Ordering::SeqCst);
    state.pending_bytes.fetch_sub(size, Ordering::SeqCst);
    if let Some(account) = session.account() {
        account.release_outbox(size);
    }
}

/// Drains one member's queue into its session, in order, waiting for credit; watches
/// how long the member takes nothing, and lets a stuck one go.
async fn pump<M: Message + Name + 'static>(
    session: SessionRef,
    mut queue: mpsc::UnboundedReceiver<Item<M>>,
    state: Arc<OutboxState>,
    holds: Arc<Holds>,
    config: FanoutConfig,
    lines: Arc<FanoutLines>,
) {
    while let Some(item) = queue.recv().await {
        match item {
            Item::Message(mut message, size) => {
                let sent = loop {
                    let Some(sent) = cast_watched(&session, message, &state, &holds, &config).await
                    else {
                        break None;
                    };
                    // The member's node was declared unreachable: its queue waits until
                    // it is heard from again (or its session is lost), as it does
                    // while interrupted.
                    match sent {
                        Err(SendError::PeerUnreachable { message: back }) => {
                            session.until_heard_again().await;
                            message = back;
                        }
                        sent => break Some(sent),
                    }
                };
                let Some(sent) = sent else {
                    end_stuck(&session, state.lag(), &config, &lines);
                    took(&session, &state, size);
                    break;
                };
                took(&session, &state, size);
                state.progressed();
                holds.review(&state, &config);
                match sent {
                    Ok(()) => {}
                    // Its owner hears of the close from the session.
                    Err(SendError::Closed { .. } | SendError::NotReady(_)) => break,
                    Err(error @ SendError::TooLarge { .. }) => {
                        end_too_large(&session, &error, &lines);
                        break;
                    }
                    // `cast` waits while held back: it returns no `HeldBack`; the loop
                    // above took `PeerUnreachable`.
                    Err(
                        error @ (SendError::Full { .. }
                        | SendError::HeldBack { .. }
                        | SendError::PeerUnreachable { .. }),
                    ) => {
                        end_full(&session, &error);
                        break;
                    }
                }
            }
            Item::Finish(notice) => {
                if let Some(notice) = notice {
                    let _ = session.cast(notice).await;
                }
                session.finish();
                break;
            }
        }
    }
    // What is left will never be sent: its budget goes back, and nothing waits on it.
    queue.close();
    while let Ok(item) = queue.try_recv() {
        if let Item::Message(_, size) = item {
            took(&session, &state, size);
        }
    }
    state.leaving.store(true, Ordering::SeqCst);
    holds.forget(state.id);
}

/// Casts `message`, watching the member's progress meanwhile: past `hold_at_most` with
/// nothing taken it stops holding the feeders back; past `stuck_after`, `None` (stuck).
/// A member whose peer keeps granting credit reads, whether or not it pauses this side
/// (a reader's inbox pauses its peer while it is three quarters full): that is progress
/// too. The clock stops while the session is interrupted and for a member that is
/// leaving.
async fn cast_watched<M: Message + Name + 'static>(
    session: &SessionRef,
    message: M,
    state: &OutboxState,
    holds: &Holds,
    config: &FanoutConfig,
) -> Option<Result<(), SendError<M>>> {
    let cast = session.cast(message);
    tokio::pin!(cast);
    let mut grant = session.peer_grant();
    loop {
        let watched =
            !state.interrupted.load(Ordering::SeqCst) && !state.leaving.load(Ordering::SeqCst);
        let deadline = watched.then(|| {
            let since = state.progressed_at();
            if state.stalled.load(Ordering::SeqCst) {
                since + config.stuck_after
            } else {
                since + config.hold_at_most
            }
        });
        let changed = state.changed.notified();
        tokio::select! {
            sent = &mut cast => return Some(sent),
            () = changed => {}
            () = sleep_until(deadline) => {
                let granted = session.peer_grant();
                if granted > grant {
                    grant = granted;
                    state.progressed();
                } else if state.stalled.load(Ordering::SeqCst) {
                    return None;
                } else {
                    state.stalled.store(true, Ordering::SeqCst);
                }
                holds.review(state, config);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// A member that took nothing for `stuck_after`: its session ends, saying so.
fn end_stuck(session: &SessionRef, waiting: usize, config: &FanoutConfig, lines: &FanoutLines) {
    lines.let_go.log(|suppressed| {
        tracing::info!(session = %session.id(), waiting, not_logged_since_last_line = suppressed, "member stuck; let go");
    });
    session.end(
        GoodbyeReason::LimitExceeded,
        format!(
            "let go: stuck, took nothing for {:?} with {waiting} messages waiting for it",
            config.stuck_after
        ),
    );
}

/// A message no member can take: the session ends with a farewell saying so, rather
/// than the member missing it unawares. One message can be too large for every member:
/// a few lines per window, then a count.
fn end_too_large<M>(session: &SessionRef, error: &SendError<M>, lines: &FanoutLines) {
    lines.too_large.log(|suppressed| {
        tracing::warn!(session = %session.id(), %error, not_logged_since_last_line = suppressed, "fan-out message too large");
    });
    session.end(GoodbyeReason::LimitExceeded, error.to_string());
}

/// The member's replay window or a replay budget is full: it has not acknowledged what
/// it was sent, so it fell behind; the farewell that ends its session says which bound.
fn end_full<M>(session: &SessionRef, error: &SendError<M>) {
    tracing::info!(session = %session.id(), %error, "fan-out member fell behind its acks");
    session.end(
        GoodbyeReason::LimitExceeded,
        format!("fell behind: {error}"),
    );
}
