//! [`Shared`]: one session core as its driver task, its outgoing streams and its handles
//! share it.
//!
//! The core ([`Session`]) sits behind a short `std::sync::Mutex`, never held across an
//! await, with the wakers of whoever waits on it beside it (quinn's `ConnectionInner`:
//! one `Mutex<State>` plus wakers). Sending is a lock and a push on the caller's task;
//! every change wakes whoever has new work: the outgoing stream when there is something
//! to write, the driver when there are events or a sooner deadline, senders when credit
//! arrived. Handles ([`crate::SessionRef`]) and the driver both use this module; neither
//! uses the other's.
//!
//! Each stream of a session has an epoch: only the outgoing half of the current epoch
//! writes, so two streams never carry the same session at once. Each outgoing half has a
//! waker slot of its own, keyed by [`StreamKey`]: a parked or stalled stream can never
//! take the place of the current stream's waker, so it cannot stall the session's
//! traffic. A stream superseded by a newer one is told so ([`Transmit::Superseded`]).

use std::collections::{HashMap, VecDeque};
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, oneshot, watch};

use crate::budget::Account;
use crate::error::{CallError, CloseReason, SendError};
use crate::session::{Event, FlowState, Session};
use crate::wire::{Body, Frame, TypeUrl};

/// What a pending call is completed with: the reply's type URL and payload, or why not.
pub(crate) type CallOutcome = Result<(TypeUrl, Bytes), CallError>;

/// A session core shared by its driver, its outbound streams and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    core: Mutex<Core>,
    wake_driver: Notify,
    /// Credit arrived, a pause ended, or the session closed: senders may try again.
    flow_changed: Notify,
    /// What the owner consumed (dropped); the driver tells the core. On a cache line of
    /// its own: the owner's thread bumps it for every message, while the driver's thread
    /// works the lock beside it.
    consumed: CachePadded<Consumed>,
    /// What the driver last told the core: messages, payload bytes.
    consumed_synced: (AtomicU64, AtomicU64),
    /// Consumption that makes it worth waking the driver (an eighth of the window).
    consumed_step: u64,
    /// Consumed bytes that make it worth waking the driver: an eighth of what the byte
    /// grant keeps open, set by the driver as it grows.
    consumed_bytes_step: AtomicU64,
    /// The session's charges against the memory budgets, once established: what the
    /// owner's handling of a delivery gives back.
    account: OnceLock<Arc<Account>>,
    calls: Mutex<HashMap<u64, oneshot::Sender<CallOutcome>>>,
    /// How long senders waited for credit, a resume or a pause's end, in nanoseconds.
    credit_waited: AtomicU64,
    /// Where calls record how long their reply took, when the node keeps metrics.
    call_latency: OnceLock<metrics::Histogram>,
    next_call: AtomicU64,
    next_stream: AtomicU64,
    closed: watch::Sender<Option<CloseReason>>,
}

/// Messages and their payload bytes the owner consumed, in all.
#[derive(Debug, Default)]
struct Consumed {
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// A sender waiting to be let send; its wait joins the session's total when it ends.
struct CreditWait<'a> {
    shared: &'a Shared,
    started: Instant,
}

impl Drop for CreditWait<'_> {
    fn drop(&mut self) {
        let waited = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.shared
            .credit_waited
            .fetch_add(waited, Ordering::Relaxed);
    }
}

/// Names one outgoing half of a session's streams, for its waker slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamKey(u64);

/// What the outgoing half of a stream does next ([`Shared::poll_transmit`]).
#[derive(Debug)]
pub(crate) enum Transmit {
    /// Write this frame.
    Frame(Frame),
    /// A newer stream of the session took over: this one ends, and says why.
    Superseded,
    /// The session is over and everything is written (or the driver is gone): end.
    Done,
}

#[derive(Debug)]
struct Core {
    session: Session,
    /// One slot per outgoing half waiting to be polled (the current stream's, and those
    /// of streams not attached yet or superseded), so none overwrites another's.
    wakers: Vec<(StreamKey, Waker)>,
    /// The outgoing half of the current epoch, whose waker new work wakes.
    writer: Option<StreamKey>,
    /// The stream epoch whose outgoing half may write.
    epoch: u64,
    /// The driver is gone: every outgoing stream ends now.
    abandoned: bool,
    /// The deadline the driver's alarm is set for: a deadline sooner than this must wake
    /// the driver, any later one need not.
    alarm: Option<Instant>,
}

impl Core {
    /// Every outgoing half waiting to be polled: after an epoch change or the driver's end,
    /// each must look again (to end, or to start writing).
    fn take_stream_wakers(&mut self) -> Vec<Waker> {
        mem::take(&mut self.wakers)
            .into_iter()
            .map(|(_, waker)| waker)
            .collect()
    }

    /// The current stream's waker, if it waits for something to write.
    fn take_writer_waker(&mut self) -> Option<Waker> {
        let writer = self.writer?;
        let at = self.wakers.iter().position(|(key, _)| *key == writer)?;
        Some(self.wakers.swap_remove(at).1)
    }

    /// Files `waker` in `key`'s own slot.
    fn park(&mut self, key: StreamKey, waker: &Waker) {
        match self.wakers.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => slot.clone_from(waker),
            None => self.wakers.push((key, waker.clone())),
        }
    }

    /// Whether the session now has a deadline sooner than the driver's alarm.
    fn needs_alarm(&self) -> bool {
        self.session
            .poll_timeout()
            .is_some_and(|t| self.alarm.is_none_or(|set| t < set))
    }
}

impl Shared {
    pub(crate) fn new(session: Session, credit_window: u64) -> Arc<Self> {
        Arc::new(Self {
            flow_changed: Notify::new(),
            consumed: CachePadded::new(Consumed::default()),
            consumed_synced: (AtomicU64::new(0), AtomicU64::new(0)),
            consumed_step: (credit_window / 8).max(1),
            consumed_bytes_step: AtomicU64::new(1),
            account: OnceLock::new(),
            core: Mutex::new(Core {
                session,
                wakers: Vec::new(),
                writer: None,
                epoch: 0,
                abandoned: false,
                alarm: None,
            }),
            wake_driver: Notify::new(),
            calls: Mutex::new(HashMap::new()),
            credit_waited: AtomicU64::new(0),
            call_latency: OnceLock::new(),
            next_call: AtomicU64::new(1),
            next_stream: AtomicU64::new(1),
            closed: watch::channel(None).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding this lock is a bug in the core; keep serving the others.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the core, then wakes whoever has new work: the outbound stream when
    /// there is something to write, the driver when there are events.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        let mut core = self.lock();
        let result = f(&mut core.session);
        let rearmed = core.needs_alarm();
        let waker = if core.session.wants_transmit() || core.session.is_transmit_done() {
            core.take_writer_waker()
        } else {
            None
        };
        let events = core.session.has_events();
        drop(core);
        if let Some(waker) = waker {
            waker.wake();
        }
        if events || rearmed {
            self.wake_driver.notify_one();
        }
        result
    }

    /// Reads the core without changing it (so without waking anyone).
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Session) -> R) -> R {
        f(&self.lock().session)
    }

    /// Sends without waiting; `SendError::HeldBack` when credit or the peer's signals
    /// hold it, `SendError::Full` when the replay window or a replay budget is full.
    ///
    /// The hot path: one lock, and a wake-up only for a sleeping outbound stream. (Sending
    /// moves no timer: the silence deadline starts when a batch goes out.)
    pub(crate) fn send(&self, body: Body) -> Result<u64, SendError<Body>> {
        let mut core = self.lock();
        let result = core.session.send(body, Instant::now);
        self.after_sending(core, result.is_ok(), result.is_err());
        result
    }

    /// Lets go of the core after sends, then wakes the writer if anything was sent and
    /// the driver if the core has events (a refusal can start the held-back watch, whose
    /// deadline the driver sleeps on).
    fn after_sending(&self, mut core: MutexGuard<'_, Core>, sent: bool, refused: bool) {
        // A refusal for byte credit queues a question for the peer.
        let waker = if sent || (refused && core.session.wants_transmit()) {
            core.take_writer_waker()
        } else {
            None
        };
        let events = core.session.has_events() || (refused && core.needs_alarm());
        drop(core);
        if let Some(waker) = waker {
            waker.wake();
        }
        if events {
            self.wake_driver.notify_one();
        }
    }

    /// Sends the bodies at the front of `bodies` while the session takes them: one lock
    /// and one wake of the writer for the run. Stops at the first refusal, with that body
    /// back in the error and the rest left in `bodies`.
    fn send_run(&self, bodies: &mut VecDeque<Body>) -> Result<(), SendError<Body>> {
        let mut core = self.lock();
        let mut result = Ok(());
        let mut sent = false;
        while let Some(body) = bodies.pop_front() {
            match core.session.send(body, Instant::now) {
                Ok(_) => sent = true,
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        self.after_sending(core, sent, result.is_err());
        result
    }

    /// Sends every body of `bodies` in order, runs at a time, waiting for credit as
    /// [`Shared::send_waiting`] does. On a refusal that waiting does not end, the refused
    /// body comes back in the error and the ones after it stay in `bodies`.
    pub(crate) async fn send_all_waiting(
        &self,
        bodies: &mut VecDeque<Body>,
    ) -> Result<(), SendError<Body>> {
        loop {
            match self.send_run(bodies) {
                Ok(()) => return Ok(()),
                Err(SendError::HeldBack { message, .. }) => {
                    self.send_waiting(message).await?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Sends, waiting for credit, a resume or the end of a timed pause or throttle delay
    /// (never for acks: a full replay window or budget is refused at once).
    pub(crate) async fn send_waiting(&self, body: Body) -> Result<u64, SendError<Body>> {
        // Most sends find credit: try before registering to be told of more.
        let body = match self.send(body) {
            Err(SendError::HeldBack { message, .. }) => message,
            other => return other,
        };
        // Boxed: the wait's state is large and rarely needed, and a future holds the
        // state of its largest await, so every send would carry (and move) it.
        Box::pin(self.wait_then_send(body)).await
    }

    /// `send_waiting` once the first try was held back, counting the wait.
    async fn wait_then_send(&self, body: Body) -> Result<u64, SendError<Body>> {
        // Counted however the wait ends: sent, refused, or the send dropped.
        let _wait = CreditWait {
            shared: self,
            started: Instant::now(),
        };
        self.send_when_let(body).await
    }

    /// Calls on this session record how long their reply took in `histogram`.
    pub(crate) fn record_calls_in(&self, histogram: metrics::Histogram) {
        let _ = self.call_latency.set(histogram);
    }

    /// A call's reply arrived `after` it was sent.
    pub(crate) fn call_answered(&self, after: std::time::Duration) {
        if let Some(histogram) = self.call_latency.get() {
            histogram.record(after.as_secs_f64());
        }
    }

    /// How long senders of this session waited to be let send, in all.
    pub(crate) fn credit_waited(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.credit_waited.load(Ordering::Relaxed))
    }

    /// `send_waiting` once the first try was held back.
    async fn send_when_let(&self, mut body: Body) -> Result<u64, SendError<Body>> {
        loop {
            let changed = self.flow_changed.notified();
            tokio::pin!(changed);
            // Registered before trying, so a grant between the try and the wait is seen.
            changed.as_mut().enable();
            let now = Instant::now();
            let attempt = self.with(|s| match s.send(body, || now) {
                Err(SendError::HeldBack { message, .. }) => Err((message, s.send_blocked(now))),
                other => Ok(other),
            });
            match attempt {
                Ok(result) => return result,
                Err((held, until)) => {
                    body = held;
                    match until.flatten() {
                        Some(at) => {
                            tokio::select! {
                                () = &mut changed => {}
                                () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                            }
                        }
                        None => changed.await,
                    }
                }
            }
        }
    }

    /// Senders waiting for credit may try again.
    pub(crate) fn senders_may_retry(&self) {
        self.flow_changed.notify_waiters();
    }

    /// Charges this session's memory budgets to `account` from now on; a budget it
    /// waits on that frees up wakes the driver.
    pub(crate) fn set_account(self: &Arc<Self>, account: Arc<Account>) {
        let shared = Arc::downgrade(self);
        account.on_freed(move || {
            if let Some(shared) = shared.upgrade() {
                shared.wake_driver.notify_one();
            }
        });
        let _ = self.account.set(account.clone());
        self.with(|s| s.set_account(account));
    }

    /// The session's charges against the budgets, once established.
    pub(crate) fn account(&self) -> Option<&Arc<Account>> {
        self.account.get()
    }

    /// The owner consumed one message of `bytes` payload bytes (dropped an `Inbound`, or
    /// a reply reached its caller): what lets the peer send more, and gives the bytes back
    /// to the inbound budgets.
    pub(crate) fn consumed_one(&self, bytes: usize) {
        let consumed = self.consumed.messages.fetch_add(1, Ordering::Relaxed) + 1;
        let synced = self.consumed_synced.0.load(Ordering::Relaxed);
        let account = self.account.get();
        // While the peer waits for credit, in smaller steps: a slow reader's progress
        // reaches its peer a little at a time, not a quarter window at once.
        let step = if account.is_some_and(|a| a.peer_waits()) {
            (self.consumed_step / 32).max(1)
        } else {
            self.consumed_step
        };
        let mut due = consumed.saturating_sub(synced) >= step;
        if bytes > 0 {
            let bytes = self
                .consumed
                .bytes
                .fetch_add(bytes as u64, Ordering::Relaxed)
                + bytes as u64;
            let synced = self.consumed_synced.1.load(Ordering::Relaxed);
            due |= bytes.saturating_sub(synced) >= self.consumed_bytes_step.load(Ordering::Relaxed);
        }
        // A grant withheld (for a budget, or a peer waiting for bytes) is looked at again
        // after every message handled.
        if due || account.is_some_and(|account| account.is_withheld()) {
            self.wake_driver.notify_one();
        }
    }

    /// Tells the core what the owner consumed since the last time, and has it look again
    /// at a grant that was withheld.
    pub(crate) fn sync_consumed(&self) {
        let consumed = self.consumed.messages.load(Ordering::Relaxed);
        let bytes = self.consumed.bytes.load(Ordering::Relaxed);
        let withheld = self.account.get().is_some_and(|a| a.is_withheld());
        let more = consumed > self.consumed_synced.0.swap(consumed, Ordering::Relaxed);
        let more_bytes = bytes > self.consumed_synced.1.swap(bytes, Ordering::Relaxed);
        if more || more_bytes || withheld {
            let step = self.with(|s| {
                s.consumed(consumed, bytes);
                s.consumed_bytes_step()
            });
            self.consumed_bytes_step.store(step, Ordering::Relaxed);
        }
    }

    /// The events the core has for the owner, in order.
    pub(crate) fn take_events(&self) -> Vec<Event> {
        self.lock().session.take_events()
    }

    /// Resolves when the driver has something to do: events, a sooner deadline, enough
    /// consumption to report.
    pub(crate) fn driver_woken(&self) -> Notified<'_> {
        self.wake_driver.notified()
    }

    /// The flow state of the session.
    pub(crate) fn flow(&self) -> FlowState {
        self.lock().session.flow(Instant::now())
    }

    pub(crate) fn next_call_id(&self) -> u64 {
        self.next_call.fetch_add(1, Ordering::Relaxed)
    }

    /// The cluster declared the peer's node unreachable: the stream is given up (the
    /// driver, woken, dials or waits for a resume stream) and every call waiting for its
    /// reply fails now with [`CallError::PeerUnreachable`].
    pub(crate) fn peer_unreachable(&self) {
        self.with(|s| s.peer_unreachable(Instant::now()));
        let waiting: Vec<_> = self.calls_lock().drain().map(|(_, reply)| reply).collect();
        for reply in waiting {
            let _ = reply.send(Err(CallError::PeerUnreachable));
        }
        self.wake_driver.notify_one();
    }

    /// The cluster hears from the peer's node again: sends are queued for the resume
    /// again.
    pub(crate) fn peer_reachable(&self) {
        self.with(|s| s.peer_reachable());
        self.senders_may_retry();
    }

    /// Waits until the session takes sends again after the cluster declared its peer
    /// unreachable: the peer was heard from again, or the session closed.
    pub(crate) async fn until_heard_again(&self) {
        loop {
            let changed = self.flow_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.with(|s| s.refuses_unreachable()) {
                return;
            }
            changed.await;
        }
    }

    /// The cluster knows the peer's node under a new `incarnation`: the session is lost
    /// now ([`crate::LostReason::PeerRestarted`]) rather than at its resume deadline.
    pub(crate) fn peer_restarted(&self, incarnation: uuid::Uuid) {
        if self.with(|s| s.peer_restarted(incarnation)) {
            self.wake_driver.notify_one();
        }
    }

    pub(crate) fn register_call(&self, id: u64) -> oneshot::Receiver<CallOutcome> {
        let (tx, rx) = oneshot::channel();
        self.calls_lock().insert(id, tx);
        rx
    }

    pub(crate) fn forget_call(&self, id: u64) {
        self.calls_lock().remove(&id);
    }

    /// Completes call `id` with its reply; `false` when its caller gave up.
    pub(crate) fn complete_call(&self, id: u64, outcome: CallOutcome) -> bool {
        let waiter = self.calls_lock().remove(&id);
        waiter.is_some_and(|tx| {
            let _ = tx.send(outcome);
            true
        })
    }

    /// Fails every call still waiting, the session having closed for `reason`.
    pub(crate) fn fail_calls(&self, reason: &CloseReason) {
        let waiters: Vec<_> = self.calls_lock().drain().collect();
        for (_, tx) in waiters {
            let _ = tx.send(Err(CallError::SessionClosed(reason.clone())));
        }
    }

    /// Calls waiting for their reply.
    pub(crate) fn pending_calls(&self) -> usize {
        self.calls_lock().len()
    }

    fn calls_lock(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<CallOutcome>>> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Why the session closed, once it has.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.closed.borrow().clone()
    }

    /// Records why the session closed; [`Shared::closed`] waiters return.
    pub(crate) fn set_closed(&self, reason: CloseReason) {
        self.closed.send_replace(Some(reason));
    }

    /// Waits until the session closes.
    pub(crate) async fn closed(&self) -> CloseReason {
        let mut rx = self.closed.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return CloseReason::Transport {
                    cause: crate::error::InterruptCause::ConnectionLost,
                    detail: "session driver gone".into(),
                };
            }
        }
    }

    /// A key for a new outgoing half's waker slot.
    pub(crate) fn new_stream_key(&self) -> StreamKey {
        StreamKey(self.next_stream.fetch_add(1, Ordering::Relaxed))
    }

    /// Starts a new stream epoch written by `key`: the previous stream's outgoing half is
    /// superseded.
    pub(crate) fn new_epoch(&self, key: StreamKey) -> u64 {
        let mut core = self.lock();
        core.epoch += 1;
        core.writer = Some(key);
        let epoch = core.epoch;
        let wakers = core.take_stream_wakers();
        drop(core);
        wakers.into_iter().for_each(Waker::wake);
        epoch
    }

    /// Runs `f` on the core and, under the same lock, lets the stream whose outgoing half
    /// (`key`) waits for its epoch in `slot` write from now on: no other stream can take
    /// what `f` queued for it. The previous stream's outgoing half is superseded.
    pub(crate) fn open_epoch<R>(
        &self,
        slot: &OnceLock<u64>,
        key: StreamKey,
        f: impl FnOnce(&mut Session) -> R,
    ) -> R {
        let mut core = self.lock();
        let result = f(&mut core.session);
        core.epoch += 1;
        let _ = slot.set(core.epoch);
        core.writer = Some(key);
        let events = core.session.has_events() || core.needs_alarm();
        let wakers = core.take_stream_wakers();
        drop(core);
        wakers.into_iter().for_each(Waker::wake);
        if events {
            self.wake_driver.notify_one();
        }
        result
    }

    /// The outgoing half `key` is gone: its waker slot goes with it.
    pub(crate) fn forget_stream(&self, key: StreamKey) {
        let mut core = self.lock();
        core.wakers.retain(|(k, _)| *k != key);
        if core.writer == Some(key) {
            core.writer = None;
        }
    }

    /// The driver is gone: every outgoing half ends.
    pub(crate) fn abandon(&self) {
        let mut core = self.lock();
        core.abandoned = true;
        let wakers = core.take_stream_wakers();
        drop(core);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Sets the driver's alarm: `set` gets the session's next deadline and returns the
    /// one the alarm is now set for.
    pub(crate) fn set_alarm(&self, set: impl FnOnce(Option<Instant>) -> Option<Instant>) {
        let mut core = self.lock();
        core.alarm = set(core.session.poll_timeout());
    }

    /// What the outgoing half `key` of the stream whose epoch is in `slot` (unset: a stream
    /// not attached yet) does next, as `Stream::poll_next` wants it.
    pub(crate) fn poll_transmit(
        &self,
        slot: &OnceLock<u64>,
        key: StreamKey,
        cx: &mut Context<'_>,
    ) -> Poll<Transmit> {
        let mut core = self.lock();
        let Some(&epoch) = slot.get() else {
            // Not attached yet (checked under the lock the driver sets it under).
            if core.abandoned {
                return Poll::Ready(Transmit::Done);
            }
            core.park(key, cx.waker());
            return Poll::Pending;
        };
        if core.abandoned {
            return Poll::Ready(Transmit::Done);
        }
        if core.epoch != epoch {
            return Poll::Ready(Transmit::Superseded);
        }
        if let Some(frame) = core.session.poll_transmit(Instant::now()) {
            // Sending can arm a timer (the silence deadline) the driver must sleep on.
            let rearmed = core.needs_alarm();
            let events = core.session.has_events();
            drop(core);
            if events || rearmed {
                self.wake_driver.notify_one();
            }
            return Poll::Ready(Transmit::Frame(frame));
        }
        if core.session.is_transmit_done() {
            return Poll::Ready(Transmit::Done);
        }
        core.park(key, cx.waker());
        Poll::Pending
    }
}
