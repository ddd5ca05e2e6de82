//! [`Fanout`]: one actor sending to many sessions, when some of them cannot keep up.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost::{Message, Name};
use tokio::sync::{mpsc, watch};

use crate::error::SendError;
use crate::log_budget::LogBudget;
use crate::session_ref::SessionRef;
use crate::wire::GoodbyeReason;

/// How far a member may fall behind, and how long it gets to read its farewell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FanoutConfig {
    /// Messages a member's outbox may hold (beyond what its session's credit took) before
    /// the member counts as fallen behind. At least 1.
    pub max_lag: usize,
    /// Bytes (encoded) a member's outbox may hold before the member counts as fallen
    /// behind, whatever the count: a few large messages weigh as much as many small ones.
    /// A message is always taken into an outbox holding less than this, so one larger
    /// message still reaches a member that keeps up.
    pub max_lag_bytes: usize,
    /// How long a member that fell behind, or leaves, gets to read what its outbox still
    /// holds and its notice; then its session is ended.
    pub farewell_timeout: Duration,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            max_lag: 1024,
            max_lag_bytes: 4 * 1024 * 1024,
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
/// # The policy
///
/// Every member either receives everything sent to it, in order, or is told that it fell
/// behind. Nothing is skipped in between.
///
/// - A message goes straight into the member's session while its peer grants credit.
///   When the peer grants none, it waits in the member's **outbox**, an ordered queue
///   drained by one task per member (never one per message) as credit returns.
/// - A member whose outbox already holds [`FanoutConfig::max_lag`] messages, or
///   [`FanoutConfig::max_lag_bytes`] bytes, **fell behind**. It leaves the fan-out at
///   once (it gets nothing more) and comes back to the caller as a [`Behind`]. The caller
///   names what happens next in a typed notice ([`Behind::farewell`]): the notice follows
///   what the outbox still holds, then the session is finished. A peer that reads it all
///   within [`FanoutConfig::farewell_timeout`] has every message up to the point it fell
///   behind, then the notice. Otherwise the session ends there with a farewell
///   (`LimitExceeded`, "fell behind ...") that its owner receives as a typed close reason.
///   So the peer is told either way.
/// - A member leaving politely ([`Fanout::finish`]) gets what its outbox holds before the
///   farewell, within the same timeout.
/// - A member whose session is interrupted (its stream broke; the session may resume),
///   as its owner learns from [`crate::SessionSignal::Interrupted`] and says with
///   [`Fanout::interrupted`], gets nothing more straight into its session: everything
///   waits in its outbox, under the same lag, until [`Fanout::resumed`]. A member that
///   vanished (a killed process, a pulled cable) thus costs the sender at most its lag,
///   and falls behind once that fills, instead of filling its session's replay buffer
///   for as long as the session waits to resume.
///
/// Why this policy: holding back the whole fan-out for its slowest member (waiting for
/// credit before each publish) lets one reader that stopped freeze everyone, and an
/// outbox without a bound grows the sender's memory with it. A bounded lag keeps the
/// sender's memory at most `max_lag` messages, and about `max_lag_bytes` bytes, per
/// member (so at most the members' count times that in all: bound the members too). It
/// gives a slow reader room to catch up after a burst. And it turns a reader that cannot
/// keep up into an explicit event that the application can act on (remove and let rejoin
/// with history, resync from a snapshot), instead of a silent gap.
pub struct Fanout<K, M> {
    members: HashMap<K, Outbox<M>>,
    /// Members that fell behind, until [`Fanout::remove`]: their farewell finishes them.
    let_go: HashSet<K>,
    config: FanoutConfig,
    lines: Arc<FanoutLines>,
}

/// The fan-out's log lines that members can cause, shared with its outboxes' tasks: a
/// budget for each kind (a few lines per window, the rest counted).
#[derive(Debug, Default)]
struct FanoutLines {
    /// Members that fell behind, or did not read their farewell in time (info).
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
    /// If `config.max_lag` is 0.
    pub fn new(config: FanoutConfig) -> Self {
        assert!(config.max_lag > 0, "a fan-out's max_lag is at least 1");
        Self {
            members: HashMap::new(),
            let_go: HashSet::new(),
            config,
            lines: Arc::default(),
        }
    }

    /// Adds a member reached through `session` (replacing one with the same key, whose
    /// outbox still drains).
    pub fn insert(&mut self, key: K, session: SessionRef) {
        let outbox = Outbox::new(session, self.lines.clone());
        self.members.insert(key, outbox);
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
    /// [`Refused::Behind`] when the member fell behind with this message (it is no longer
    /// a member; act on it with [`Behind::farewell`]). [`Refused::NotMember`] (the
    /// message back) when `key` is not a member, or its session has closed: its owner
    /// hears of that from the session itself.
    pub fn send(&mut self, key: &K, message: M) -> Result<(), Refused<K, M>> {
        let Some(outbox) = self.members.get_mut(key) else {
            return Err(Refused::NotMember(message));
        };
        match outbox.push(message, &self.config) {
            Pushed::Sent => Ok(()),
            Pushed::Closed(message) => {
                self.members.remove(key);
                Err(Refused::NotMember(message))
            }
            Pushed::Behind => Err(Refused::Behind(self.fell_behind(key))),
        }
    }

    /// Sends `message` to every member but `except`. Returns the members that fell
    /// behind with it (no longer members; each is told through [`Behind::farewell`], or
    /// by its session's end if the caller drops it). Members whose session has closed
    /// leave quietly: their owner hears of that from the session itself.
    pub fn publish(&mut self, message: &M, except: Option<&K>) -> Vec<Behind<K, M>> {
        let mut behind = Vec::new();
        let mut closed = Vec::new();
        for (key, outbox) in &mut self.members {
            if Some(key) == except {
                continue;
            }
            match outbox.push(message.clone(), &self.config) {
                Pushed::Sent => {}
                Pushed::Closed(_) => closed.push(key.clone()),
                Pushed::Behind => behind.push(key.clone()),
            }
        }
        for key in closed {
            self.members.remove(&key);
        }
        behind
            .into_iter()
            .map(|key| self.fell_behind(&key))
            .collect()
    }

    /// Whether `key` fell behind and was not removed since: its farewell is under way.
    pub fn fell_behind_since(&self, key: &K) -> bool {
        self.let_go.contains(key)
    }

    /// Member `key`'s session is interrupted: from now on what is sent to it waits in its
    /// outbox (and counts toward its lag) until [`Fanout::resumed`]. Nothing happens when
    /// `key` is not a member.
    pub fn interrupted(&mut self, key: &K) {
        if let Some(outbox) = self.members.get(key) {
            outbox.held.send_replace(true);
        }
    }

    /// Member `key`'s session resumed: its outbox drains into it again, in order.
    pub fn resumed(&mut self, key: &K) {
        if let Some(outbox) = self.members.get(key) {
            outbox.held.send_replace(false);
        }
    }

    /// Removes member `key` at once: what its outbox holds is still sent while its session
    /// takes it; nothing new is. Returns its session. Call it when the member's session
    /// is over, for a member that fell behind too (to forget it).
    pub fn remove(&mut self, key: &K) -> Option<SessionRef> {
        self.let_go.remove(key);
        self.members.remove(key).map(|outbox| outbox.session)
    }

    /// Removes member `key` politely: its session is finished (half-closed) after what
    /// its outbox holds, which the member has [`FanoutConfig::farewell_timeout`] to read;
    /// then the session is ended. Returns whether the fan-out finishes the session: `key`
    /// was a member, or fell behind (its farewell finishes it). When `false`, the caller
    /// finishes the session itself.
    pub fn finish(&mut self, key: &K) -> bool {
        match self.members.remove(key) {
            Some(outbox) => {
                outbox.finish(None, self.config.farewell_timeout);
                true
            }
            None => self.let_go.contains(key),
        }
    }

    fn fell_behind(&mut self, key: &K) -> Behind<K, M> {
        let outbox = self
            .members
            .remove(key)
            .expect("a member that fell behind is in the fan-out");
        self.lines.let_go.log(|suppressed| {
            tracing::info!(
                member = ?key,
                session = %outbox.session.id(),
                lag = outbox.lag(),
                lag_bytes = outbox.lag_bytes(),
                not_logged_since_last_line = suppressed,
                "member fell behind"
            );
        });
        self.let_go.insert(key.clone());
        Behind {
            key: key.clone(),
            outbox: Some(outbox),
            farewell_timeout: self.config.farewell_timeout,
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

/// Reports the counts of log lines no line reported.
impl<K, M> Drop for Fanout<K, M> {
    fn drop(&mut self) {
        let lines = &self.lines;
        let let_go = "member fell behind, or did not read its farewell in time";
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
            .field("config", &self.config)
            .finish()
    }
}

/// Why [`Fanout::send`] did not take a message.
#[derive(Debug)]
pub enum Refused<K, M> {
    /// The member fell behind with it.
    Behind(Behind<K, M>),
    /// Not a member (or its session closed); the message back.
    NotMember(M),
}

/// A member that fell behind: it is out of the fan-out and its session awaits its
/// notice. Dropping this without [`Behind::farewell`] ends the session at once with a
/// `LimitExceeded` farewell, so the member is told in any case.
pub struct Behind<K, M> {
    /// The member.
    pub key: K,
    outbox: Option<Outbox<M>>,
    farewell_timeout: Duration,
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

    fn outbox(&self) -> &Outbox<M> {
        self.outbox.as_ref().expect("present until farewell")
    }
}

impl<K, M: Message + Name + 'static> Behind<K, M> {
    /// Sends `notice` after what the outbox holds, then finishes the session; ends it if
    /// the member has not read it all within the farewell timeout.
    pub fn farewell(mut self, notice: M) {
        if let Some(outbox) = self.outbox.take() {
            outbox.finish(Some(notice), self.farewell_timeout);
        }
    }
}

impl<K, M> Drop for Behind<K, M> {
    fn drop(&mut self) {
        if let Some(outbox) = self.outbox.take() {
            let detail = format!("fell behind by {} messages", outbox.lag());
            outbox.session.end(GoodbyeReason::LimitExceeded, detail);
        }
    }
}

impl<K: fmt::Debug, M> fmt::Debug for Behind<K, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Behind");
        out.field("key", &self.key);
        if let Some(outbox) = &self.outbox {
            out.field("session", &outbox.session.id())
                .field("queued", &outbox.lag());
        }
        out.finish()
    }
}

/// One member's ordered way out: straight into the session while it has credit, else
/// through a queue that its pump task drains.
struct Outbox<M> {
    session: SessionRef,
    /// Messages pushed and not yet taken by the session (queued, or being cast).
    pending: Arc<AtomicUsize>,
    /// Their encoded bytes.
    pending_bytes: Arc<AtomicUsize>,
    /// The pump's queue, once the member first had to wait.
    queue: Option<mpsc::UnboundedSender<Item<M>>>,
    lines: Arc<FanoutLines>,
    /// `true` while the session is interrupted: nothing goes straight in, the pump waits.
    held: watch::Sender<bool>,
}

enum Item<M> {
    /// A message and its encoded size.
    Message(M, usize),
    /// Send the notice (if any), then finish the session.
    Finish(Option<M>),
}

enum Pushed<M> {
    Sent,
    Behind,
    Closed(M),
}

impl<M> Outbox<M> {
    fn lag(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    fn lag_bytes(&self) -> usize {
        self.pending_bytes.load(Ordering::Acquire)
    }
}

impl<M: Message + Name + 'static> Outbox<M> {
    fn new(session: SessionRef, lines: Arc<FanoutLines>) -> Self {
        Self {
            session,
            lines,
            pending: Arc::new(AtomicUsize::new(0)),
            pending_bytes: Arc::new(AtomicUsize::new(0)),
            queue: None,
            held: watch::Sender::new(false),
        }
    }

    fn push(&mut self, message: M, config: &FanoutConfig) -> Pushed<M> {
        let lag = self.lag();
        // Only with nothing ahead of it, into a session that is not interrupted, may a
        // message skip the queue.
        let message = if lag == 0 && !*self.held.borrow() {
            match self.session.try_cast(message) {
                Ok(()) => return Pushed::Sent,
                Err(SendError::HeldBack { message, .. } | SendError::NotReady(message)) => message,
                Err(SendError::Closed(message)) => return Pushed::Closed(message),
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
        } else if lag > 0 && (lag >= config.max_lag || self.lag_bytes() >= config.max_lag_bytes) {
            return Pushed::Behind;
        } else {
            message
        };
        let size = message.encoded_len();
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.pending_bytes.fetch_add(size, Ordering::AcqRel);
        match self.queue().send(Item::Message(message, size)) {
            Ok(()) => Pushed::Sent,
            Err(mpsc::error::SendError(Item::Message(message, size))) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.pending_bytes.fetch_sub(size, Ordering::AcqRel);
                Pushed::Closed(message)
            }
            Err(_) => unreachable!("a message was sent"),
        }
    }

    /// Sends `notice` (if any) after what is queued, then finishes the session; ends it
    /// after `timeout` unless it closed by then.
    fn finish(mut self, notice: Option<M>, timeout: Duration) {
        if self.lag() == 0 && notice.is_none() {
            self.session.finish();
        } else {
            // The pump may have stopped with a closed session; then there is no one to tell.
            let _ = self.queue().send(Item::Finish(notice));
        }
        let (session, lines, held) = (self.session, self.lines, self.held);
        tokio::spawn(async move {
            // Holds the pump while the session is interrupted, until the farewell is over.
            let _held = held;
            if tokio::time::timeout(timeout, session.closed())
                .await
                .is_err()
            {
                lines.let_go.log(|suppressed| {
                    tracing::info!(session = %session.id(), not_logged_since_last_line = suppressed, "member did not read its farewell in time");
                });
                session.end(
                    GoodbyeReason::LimitExceeded,
                    format!("fell behind: its farewell was not read within {timeout:?}"),
                );
            }
        });
    }

    fn queue(&mut self) -> &mpsc::UnboundedSender<Item<M>> {
        self.queue.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let pending = (self.pending.clone(), self.pending_bytes.clone());
            let held = self.held.subscribe();
            tokio::spawn(pump(
                self.session.clone(),
                rx,
                pending,
                held,
                self.lines.clone(),
            ));
            tx
        })
    }
}

/// Drains one member's queue into its session, in order, waiting for credit, and for the
/// session to resume while it is interrupted.
async fn pump<M: Message + Name + 'static>(
    session: SessionRef,
    mut queue: mpsc::UnboundedReceiver<Item<M>>,
    (pending, pending_bytes): (Arc<AtomicUsize>, Arc<AtomicUsize>),
    mut held: watch::Receiver<bool>,
    lines: Arc<FanoutLines>,
) {
    while let Some(item) = queue.recv().await {
        if !released(&session, &mut held).await {
            break;
        }
        match item {
            Item::Message(message, size) => {
                let sent = session.cast(message).await;
                pending.fetch_sub(1, Ordering::AcqRel);
                pending_bytes.fetch_sub(size, Ordering::AcqRel);
                match sent {
                    Ok(()) => {}
                    // Its owner hears of the close from the session.
                    Err(SendError::Closed(_) | SendError::NotReady(_)) => break,
                    Err(error @ SendError::TooLarge { .. }) => {
                        end_too_large(&session, &error, &lines);
                        break;
                    }
                    // `cast` waits while held back: it returns no `HeldBack`.
                    Err(error @ (SendError::Full { .. } | SendError::HeldBack { .. })) => {
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
}

/// Waits while the session is interrupted; `false` when it closed first, or when its
/// member was removed from the fan-out while interrupted (there is no one to send to).
async fn released(session: &SessionRef, held: &mut watch::Receiver<bool>) -> bool {
    if !*held.borrow() {
        return true;
    }
    tokio::select! {
        resumed = held.wait_for(|held| !*held) => resumed.is_ok(),
        _ = session.closed() => false,
    }
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
