//! The thin async layer around one [`Session`]: it moves frames between the session core
//! and gRPC streams, and events from the core into the owner's mailbox. One driver task
//! lives as long as its session, across any number of streams.
//!
//! The core sits behind a short `std::sync::Mutex` ([`Shared`]), never held across an
//! await. Sending is a lock and a push on the caller's task. The outgoing half of each
//! stream is an [`OutboundFrames`], a `Stream` that tonic's encoder pulls: each poll takes
//! the next frame the core has ready, so everything queued since the last write leaves as
//! one batch. Each stream has an epoch; an `OutboundFrames` of an older epoch ends, so two
//! streams never carry the same session at once. The incoming half is [`Driver::run`]:
//! it reads frames, feeds the core, delivers what it yields straight into the owner's
//! ractor mailbox, and when a stream breaks, gets the next one: the initiator redials with
//! capped, jittered exponential backoff; the acceptor waits for the node to route the
//! peer's resume stream to it.

use std::collections::HashMap;
use std::future::Future;
use std::mem;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use futures::{Stream, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

mod alarm;

use crate::config::SessionPolicy;
use crate::error::{CallError, CloseReason, LostReason, ProtocolError, SendError};
use crate::mailbox::{
    Deliver, Escalation, HeldBack, Inbound, Lost, ReplyPort, Resumption, SessionSignal,
};
use crate::node::{GaveUp, NodeInner, Retry};
use crate::remote_ref::SessionSlot;
use crate::session::{Event, Role, Session};
use crate::session_ref::{SessionInfo, SessionRef};
use crate::wire::pb::duologue_client::DuologueClient;
use crate::wire::{Body, BodyKind, Envelope, Frame, FrameError, GoodbyeReason, pb};
use alarm::Alarm;

/// What a pending call is completed with: the reply's type URL and payload, or why not.
pub(crate) type CallOutcome = Result<(crate::wire::TypeUrl, Bytes), CallError>;

/// A session core shared by its driver, its outbound streams and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    core: Mutex<Core>,
    wake_driver: Notify,
    /// Credit arrived, a pause ended, or the session closed: senders may try again.
    flow_changed: Notify,
    /// Messages the owner consumed (dropped); the driver tells the core. On a cache line of
    /// its own: the owner's thread bumps it for every message, while the driver's thread
    /// works the lock beside it.
    consumed: CachePadded<AtomicU64>,
    /// What the driver last told the core.
    consumed_synced: AtomicU64,
    /// Consumption that makes it worth waking the driver (an eighth of the window).
    consumed_step: u64,
    calls: Mutex<HashMap<u64, oneshot::Sender<CallOutcome>>>,
    next_call: AtomicU64,
    closed: watch::Sender<Option<CloseReason>>,
}

#[derive(Debug)]
struct Core {
    session: Session,
    /// The current stream's outgoing half, waiting for something to write.
    tx_waker: Option<Waker>,
    /// Outgoing halves of streams the driver has yet to attach, waiting for their epoch.
    /// Apart from `tx_waker`: one slot for both let a new stream's waker be overwritten by
    /// the old stream's, and the new stream never wrote.
    attach_wakers: Vec<Waker>,
    /// The stream epoch whose `OutboundFrames` may write.
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
        let mut wakers = mem::take(&mut self.attach_wakers);
        wakers.extend(self.tx_waker.take());
        wakers
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
            consumed: CachePadded::new(AtomicU64::new(0)),
            consumed_synced: AtomicU64::new(0),
            consumed_step: (credit_window / 8).max(1),
            core: Mutex::new(Core {
                session,
                tx_waker: None,
                attach_wakers: Vec::new(),
                epoch: 0,
                abandoned: false,
                alarm: None,
            }),
            wake_driver: Notify::new(),
            calls: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
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
            core.tx_waker.take()
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

    /// Sends without waiting; `SendError::Full` when credit or the peer's signals hold it.
    ///
    /// The hot path: one lock, and a wake-up only for a sleeping outbound stream. (Sending
    /// moves no timer: the silence deadline starts when a batch goes out.)
    pub(crate) fn send(&self, body: Body) -> Result<u64, SendError<Body>> {
        let mut core = self.lock();
        let result = core.session.send(body, Instant::now);
        let waker = if result.is_ok() {
            core.tx_waker.take()
        } else {
            None
        };
        // A refusal can start the held-back watch, whose deadline the driver sleeps on.
        let events = core.session.has_events() || (result.is_err() && core.needs_alarm());
        drop(core);
        if let Some(waker) = waker {
            waker.wake();
        }
        if events {
            self.wake_driver.notify_one();
        }
        result
    }

    /// Sends, waiting for credit, a resume or the end of a resume-after or throttle delay.
    pub(crate) async fn send_waiting(&self, body: Body) -> Result<u64, SendError<Body>> {
        // Most sends find credit: try before registering to be told of more.
        let mut body = match self.send(body) {
            Err(SendError::Full(body)) => body,
            other => return other,
        };
        loop {
            let changed = self.flow_changed.notified();
            tokio::pin!(changed);
            // Registered before trying, so a grant between the try and the wait is seen.
            changed.as_mut().enable();
            let now = Instant::now();
            let attempt = self.with(|s| match s.send(body, || now) {
                Err(SendError::Full(body)) => Err((body, s.send_blocked(now))),
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

    /// The owner consumed one message (dropped an `Inbound`, or a reply reached its
    /// caller): what lets the peer send more.
    pub(crate) fn consumed_one(&self) {
        let consumed = self.consumed.fetch_add(1, Ordering::Relaxed) + 1;
        let synced = self.consumed_synced.load(Ordering::Relaxed);
        if consumed.saturating_sub(synced) >= self.consumed_step {
            self.wake_driver.notify_one();
        }
    }

    /// Tells the core what the owner consumed since the last time.
    fn sync_consumed(&self) {
        let consumed = self.consumed.load(Ordering::Relaxed);
        if consumed > self.consumed_synced.swap(consumed, Ordering::Relaxed) {
            self.with(|s| s.consumed(consumed));
        }
    }

    /// The flow state of the session.
    pub(crate) fn flow(&self) -> crate::session::FlowState {
        self.lock().session.flow(Instant::now())
    }

    pub(crate) fn next_call_id(&self) -> u64 {
        self.next_call.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn register_call(&self, id: u64) -> oneshot::Receiver<CallOutcome> {
        let (tx, rx) = oneshot::channel();
        self.calls_lock().insert(id, tx);
        rx
    }

    pub(crate) fn forget_call(&self, id: u64) {
        self.calls_lock().remove(&id);
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

    /// Waits until the session closes.
    pub(crate) async fn closed(&self) -> CloseReason {
        let mut rx = self.closed.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return CloseReason::Transport("session driver gone".into());
            }
        }
    }

    /// Starts a new stream epoch: the previous stream's `OutboundFrames` ends.
    fn new_epoch(&self) -> u64 {
        let mut core = self.lock();
        core.epoch += 1;
        let epoch = core.epoch;
        let wakers = core.take_stream_wakers();
        drop(core);
        wakers.into_iter().for_each(Waker::wake);
        epoch
    }

    /// Lets a stream whose `OutboundFrames` waits for its epoch start writing.
    fn open_epoch(&self, slot: &OnceLock<u64>) {
        let mut core = self.lock();
        core.epoch += 1;
        let _ = slot.set(core.epoch);
        let wakers = core.take_stream_wakers();
        drop(core);
        wakers.into_iter().for_each(Waker::wake);
    }

    fn abandon(&self) {
        let mut core = self.lock();
        core.abandoned = true;
        let wakers = core.take_stream_wakers();
        drop(core);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Sets `alarm` for the session's next deadline, or `also` if sooner.
    fn set_alarm(&self, alarm: &mut Alarm, also: Option<Instant>) {
        let mut core = self.lock();
        alarm.want(core.session.poll_timeout());
        alarm.want(also);
        core.alarm = alarm.set_for();
    }
}

/// The outgoing half of one stream of a session, as the `Stream` tonic writes from.
#[derive(Debug)]
pub(crate) struct OutboundFrames {
    shared: Arc<Shared>,
    /// Set once this stream may write; a later epoch ends it.
    epoch: Arc<OnceLock<u64>>,
}

impl OutboundFrames {
    /// The outgoing half of the session's current stream.
    pub(crate) fn current(shared: Arc<Shared>) -> Self {
        let epoch = shared.new_epoch();
        Self {
            shared,
            epoch: Arc::new(OnceLock::from(epoch)),
        }
    }

    /// The outgoing half of a stream the driver has yet to attach.
    pub(crate) fn pending(shared: Arc<Shared>) -> (Self, Arc<OnceLock<u64>>) {
        let epoch = Arc::new(OnceLock::new());
        (
            Self {
                shared,
                epoch: epoch.clone(),
            },
            epoch,
        )
    }
}

impl Stream for OutboundFrames {
    type Item = pb::Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<pb::Frame>> {
        let mut core = self.shared.lock();
        let Some(&epoch) = self.epoch.get() else {
            // Not attached yet (checked under the lock the driver sets it under).
            if core.abandoned {
                return Poll::Ready(None);
            }
            if !core.attach_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                core.attach_wakers.push(cx.waker().clone());
            }
            return Poll::Pending;
        };
        if core.abandoned || core.epoch != epoch {
            return Poll::Ready(None);
        }
        if let Some(frame) = core.session.poll_transmit(Instant::now()) {
            // Sending can arm a timer (the silence deadline) the driver must sleep on.
            let rearmed = core.needs_alarm();
            let events = core.session.has_events();
            drop(core);
            if events || rearmed {
                self.shared.wake_driver.notify_one();
            }
            return Poll::Ready(Some(frame.into()));
        }
        if core.session.is_transmit_done() {
            return Poll::Ready(None);
        }
        core.tx_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A new stream for an interrupted acceptor session, routed by the node.
#[derive(Debug)]
pub(crate) struct Attach {
    /// The stream's first frame (the resume `Hello`), already read.
    pub(crate) hello: pb::Frame,
    /// The rest of the stream.
    pub(crate) inbound: Streaming<pb::Frame>,
    /// The stream's outgoing half waits for this epoch.
    pub(crate) epoch: Arc<OnceLock<u64>>,
    /// The peer's address on this connection.
    pub(crate) remote_addr: Option<SocketAddr>,
}

/// How an initiator reaches its peer again.
pub(crate) struct Dialer {
    pub(crate) client: DuologueClient<Channel>,
    pub(crate) addr: String,
    pub(crate) actor: String,
    /// Typed handles follow this slot across a restart.
    pub(crate) slot: Arc<SessionSlot>,
}

/// A stream to pump: its incoming half, and its first item if already read.
pub(crate) struct StreamStart {
    pub(crate) inbound: Streaming<pb::Frame>,
    pub(crate) peeked: Option<Result<pb::Frame, Status>>,
}

/// Where a driver gets its next stream.
pub(crate) enum Link {
    /// Initiator: dial the peer.
    Dial(Box<Dialer>),
    /// Acceptor: wait for the node to route the peer's resume stream here (through
    /// [`Driver::attach_rx`]).
    Accept,
}

/// Node-level settings a driver needs.
#[derive(Clone, Debug)]
pub(crate) struct DriverConfig {
    /// How long a closed session waits for the peer to end its stream.
    pub(crate) close_linger: Duration,
    pub(crate) reconnect_base: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) handshake_timeout: Duration,
}

/// The life of one session: its receive loop, across streams.
pub(crate) struct Driver {
    pub(crate) shared: Arc<Shared>,
    pub(crate) node: Arc<NodeInner>,
    pub(crate) config: DriverConfig,
    pub(crate) policy: SessionPolicy,
    pub(crate) link: Link,
    /// Acceptor: where the node routes the peer's resume streams.
    pub(crate) attach_rx: Option<mpsc::Receiver<Attach>>,
    pub(crate) owner: Option<Arc<dyn Deliver>>,
    pub(crate) remote_addr: Option<SocketAddr>,
    /// Initiator: told once the first handshake ends, either way.
    pub(crate) established: Option<oneshot::Sender<Result<SessionRef, CloseReason>>>,
    pub(crate) session_ref: Option<SessionRef>,
    pub(crate) cancel: CancellationToken,
    pub(crate) shutdown_seen: bool,
    pub(crate) interrupted_at: Option<Instant>,
    /// Set when the session was lost and the policy asks for a restart.
    pub(crate) restart_after: bool,
    /// Reconnect attempts since the last successful resume (for the backoff).
    pub(crate) attempt: u32,
}

/// How pumping one stream ended.
enum StreamEnd {
    /// The session is over (and its last frames are out, or the linger ran out).
    Over,
    /// The stream is gone; the session waits for another.
    Broken,
    /// Acceptor: a new stream superseded this one.
    Superseded(Box<Attach>),
}

impl Driver {
    /// Runs the session until it is over, from its first stream (`first`: for an
    /// acceptor, the stream it arrived on with its already-read first item).
    pub(crate) async fn run(mut self, mut first: Option<StreamStart>) {
        loop {
            let next = match first.take() {
                Some(stream) => Some(stream),
                None => self.next_stream().await,
            };
            let Some(StreamStart { inbound, peeked }) = next else {
                break;
            };
            match self.pump(inbound, peeked).await {
                StreamEnd::Over => break,
                StreamEnd::Broken => {}
                StreamEnd::Superseded(attach) => {
                    first = Some(self.attach(*attach));
                }
            }
            if self.shared.lock().session.is_closed() {
                break;
            }
        }
        self.handle_events();
        self.shared.abandon();
        if let Some(id) = self.session_ref.as_ref().map(SessionRef::id) {
            self.node.forget_resumable(id);
        }
        if self.restart_after {
            self.restart().await;
        }
    }

    /// The next stream for an interrupted session, or `None` when the session is over.
    async fn next_stream(&mut self) -> Option<StreamStart> {
        if self.policy == SessionPolicy::Stop && self.session_ref.is_some() {
            self.shared
                .with(|s| s.give_up("the session's policy is Stop".into()));
            self.handle_events();
            return None;
        }
        match &self.link {
            Link::Accept => {
                let mut attach_rx = self.attach_rx.take()?;
                let received = self.drive_until(attach_rx.recv()).await;
                self.attach_rx = Some(attach_rx);
                received.flatten().map(|attach| self.attach(attach))
            }
            Link::Dial(dialer) => {
                let client = dialer.client.clone();
                loop {
                    let first = self.session_ref.is_none();
                    if !first {
                        let delay = backoff(self.attempt, &self.config);
                        self.attempt = self.attempt.saturating_add(1);
                        self.drive_until(tokio::time::sleep(delay)).await?;
                        self.shared
                            .with(|s| s.begin_resume(rand::random(), Instant::now()));
                    }
                    match self.dial(client.clone()).await? {
                        Ok(inbound) => {
                            return Some(StreamStart {
                                inbound,
                                peeked: None,
                            });
                        }
                        Err(cause) => {
                            self.shared.with(|s| s.stream_broken(cause, Instant::now()));
                            self.handle_events();
                            if first || self.shared.lock().session.is_closed() {
                                return None;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Opens one stream to the peer; `None` when the session ended meanwhile.
    async fn dial(
        &mut self,
        mut client: DuologueClient<Channel>,
    ) -> Option<Result<Streaming<pb::Frame>, String>> {
        let outbound = OutboundFrames::current(self.shared.clone());
        let timeout = self.config.handshake_timeout;
        // The core's handshake timer only starts mattering once frames flow; until the
        // peer's response headers arrive, this bound stands in for it.
        let opened = tokio::time::timeout(timeout, client.converse(outbound));
        match self.drive_until(opened).await? {
            Ok(Ok(response)) => Some(Ok(response.into_inner())),
            Ok(Err(status)) => Some(Err(describe(&status))),
            Err(_) => Some(Err(format!("no answer to the greeting within {timeout:?}"))),
        }
    }

    /// Acceptor: takes over a stream the node routed here.
    fn attach(&mut self, attach: Attach) -> StreamStart {
        self.remote_addr = attach.remote_addr.or(self.remote_addr);
        self.shared.with(|s| {
            if !s.is_interrupted() {
                s.stream_broken("superseded by the peer's new stream".into(), Instant::now());
            }
            s.attach_stream(rand::random(), Instant::now());
        });
        self.shared.open_epoch(&attach.epoch);
        StreamStart {
            inbound: attach.inbound,
            peeked: Some(Ok(attach.hello)),
        }
    }

    /// Waits for `future` while keeping the session alive: its timers, its events, node
    /// shutdown. `None` when the session is over first.
    async fn drive_until<F: Future>(&mut self, future: F) -> Option<F::Output> {
        tokio::pin!(future);
        let (shared, cancel) = (self.shared.clone(), self.cancel.clone());
        let mut alarm = Alarm::new();
        loop {
            self.handle_events();
            if shared.lock().session.is_closed() {
                return None;
            }
            shared.set_alarm(&mut alarm, None);
            tokio::select! {
                output = &mut future => return Some(output),
                () = cancel.cancelled(), if !self.shutdown_seen => self.on_shutdown(),
                () = alarm.ring() => {
                    shared.with(|s| s.handle_timeout(Instant::now()));
                }
                () = shared.wake_driver.notified() => {}
            }
        }
    }

    fn on_shutdown(&mut self) {
        self.shutdown_seen = true;
        self.restart_after = false;
        self.shared
            .with(|s| s.end(GoodbyeReason::NodeShutdown, "node shutting down".into()));
    }

    /// Reads one stream until it is gone or the session is over.
    async fn pump(
        &mut self,
        inbound: Streaming<pb::Frame>,
        peeked: Option<Result<pb::Frame, Status>>,
    ) -> StreamEnd {
        let mut attach_rx = self.attach_rx.take();
        let end = self.pump_with(inbound, peeked, &mut attach_rx).await;
        // A first stream installs the receiver while it runs (at establishment).
        if attach_rx.is_some() {
            self.attach_rx = attach_rx;
        }
        end
    }

    async fn pump_with(
        &mut self,
        mut inbound: Streaming<pb::Frame>,
        mut peeked: Option<Result<pb::Frame, Status>>,
        attach_rx: &mut Option<mpsc::Receiver<Attach>>,
    ) -> StreamEnd {
        let (shared, cancel) = (self.shared.clone(), self.cancel.clone());
        let generation = self.shared.lock().session.generation();
        let mut inbound_done = false;
        let mut linger_until: Option<Instant> = None;
        let mut alarm = Alarm::new();
        loop {
            if let Some(item) = peeked.take() {
                self.on_item(Some(item), &mut inbound_done);
            }
            self.handle_events();
            let (closed, transmit_done, current) = {
                let core = self.shared.lock();
                (
                    core.session.is_closed(),
                    core.session.is_transmit_done(),
                    core.session.generation() == generation,
                )
            };
            if closed {
                if transmit_done && inbound_done {
                    return StreamEnd::Over;
                }
                let until =
                    *linger_until.get_or_insert_with(|| Instant::now() + self.config.close_linger);
                if Instant::now() >= until {
                    return StreamEnd::Over;
                }
            } else if !current || inbound_done {
                // The core gave this stream up (silence, or it broke).
                if current {
                    self.shared
                        .with(|s| s.stream_broken("the stream ended".into(), Instant::now()));
                    self.handle_events();
                }
                return StreamEnd::Broken;
            }
            shared.set_alarm(&mut alarm, linger_until);
            tokio::select! {
                biased;
                () = cancel.cancelled(), if !self.shutdown_seen => self.on_shutdown(),
                item = inbound.next(), if !inbound_done => self.on_item(item, &mut inbound_done),
                () = alarm.ring() => {
                    shared.with(|s| s.handle_timeout(Instant::now()));
                }
                () = shared.wake_driver.notified() => {}
                Some(next) = recv_attach(attach_rx.as_mut()), if !closed => {
                    return StreamEnd::Superseded(Box::new(next));
                }
            }
        }
    }

    fn on_item(&mut self, item: Option<Result<pb::Frame, Status>>, inbound_done: &mut bool) {
        let now = Instant::now();
        match item {
            Some(Ok(frame)) => match Frame::try_from(frame) {
                Ok(frame) => self.shared.with(|s| s.handle_frame(frame, now)),
                Err(error) => self.shared.with(|s| s.handle_malformed(error)),
            },
            Some(Err(status)) => {
                *inbound_done = true;
                self.shared.with(|s| stream_failed(s, &status, now));
            }
            None => {
                *inbound_done = true;
                self.shared.with(|s| s.handle_stream_end(now));
            }
        }
    }

    fn handle_events(&mut self) {
        self.shared.sync_consumed();
        loop {
            let events: Vec<Event> = {
                let mut core = self.shared.lock();
                std::iter::from_fn(|| core.session.poll_event()).collect()
            };
            if events.is_empty() {
                return;
            }
            let mut delivered = None;
            let mut owner_gone = false;
            for event in events {
                match event {
                    Event::Authenticated { peer, target } => self.admit(peer, target),
                    Event::Established => self.on_established(),
                    Event::Message(envelope) if !owner_gone => {
                        let seq = envelope.seq;
                        if self.deliver(envelope.body) {
                            delivered = Some(seq);
                        } else {
                            owner_gone = true;
                            let reason = self.node.stop_reason(self.owner.as_deref());
                            self.shared
                                .with(|s| s.end(GoodbyeReason::ActorStopped, reason));
                        }
                    }
                    // After the owner stopped, later messages stay unacknowledged.
                    Event::Message(_) => {}
                    Event::PeerFinished(goodbye) => {
                        self.signal(|s| SessionSignal::PeerFinished(s, goodbye));
                    }
                    Event::Interrupted(cause) => {
                        tracing::info!(session = ?self.session_ref, %cause, "session interrupted");
                        self.interrupted_at = Some(Instant::now());
                        self.signal(|s| SessionSignal::Interrupted(s, cause));
                    }
                    Event::Resumed { replayed } => {
                        self.attempt = 0;
                        let interrupted_for = self
                            .interrupted_at
                            .take()
                            .map_or(Duration::ZERO, |at| at.elapsed());
                        tracing::info!(session = ?self.session_ref, replayed, ?interrupted_for, "session resumed");
                        let resumption = Resumption {
                            replayed,
                            interrupted_for,
                        };
                        self.signal(|s| SessionSignal::Resumed(s, resumption));
                    }
                    Event::Closed(reason, unconfirmed) => self.on_closed(reason, unconfirmed),
                    Event::Flow(signal) => self.signal(|s| SessionSignal::Flow(s, signal)),
                    Event::CanSend => self.shared.flow_changed.notify_waiters(),
                    Event::HeldBack {
                        waited,
                        credit_left,
                        peer_signal,
                    } => {
                        tracing::warn!(session = ?self.session_ref, ?waited, credit_left, ?peer_signal, "sender held back by the peer");
                        let held = HeldBack {
                            waited,
                            credit_left,
                            peer_signal,
                        };
                        self.signal(|s| SessionSignal::HeldBack(s, held));
                    }
                }
            }
            if let Some(seq) = delivered {
                self.shared
                    .with(|s| s.confirm_delivered(seq, Instant::now()));
            }
        }
    }

    fn signal(&self, make: impl FnOnce(SessionRef) -> SessionSignal) {
        if let (Some(owner), Some(session)) = (&self.owner, &self.session_ref) {
            // An owner that stopped learns nothing more; its sessions end through
            // the failed deliveries of their messages.
            let _ = owner.signal(make(session.clone()));
        }
    }

    fn admit(&mut self, peer: crate::wire::NodeIdentity, target: String) {
        match self.node.admit(&target) {
            Ok(owner) => {
                self.owner = Some(owner);
                self.shared.with(Session::accept);
            }
            Err(refusal) => {
                tracing::info!(%peer, %target, %refusal, "session refused");
                self.shared.with(|s| s.refuse(refusal));
            }
        }
    }

    fn on_established(&mut self) {
        let info = {
            let core = self.shared.lock();
            SessionInfo {
                id: core.session.id(),
                role: core.session.role(),
                peer: core
                    .session
                    .peer()
                    .cloned()
                    .expect("peer known once established"),
                actor: core.session.target().to_owned(),
                remote_addr: self.remote_addr,
            }
        };
        let session = SessionRef::new(self.shared.clone(), info);
        self.node.session_opened(&session);
        if let Some(cell) = self.owner.as_ref().and_then(|o| o.cell()) {
            self.node.owns(&cell, &self.shared);
        }
        self.session_ref = Some(session.clone());
        match (session.role(), self.established.take()) {
            (Role::Initiator, Some(tx)) => {
                let _ = tx.send(Ok(session));
            }
            _ => {
                if let Link::Accept = self.link {
                    self.attach_rx = Some(self.node.remember_resumable(&session, &self.shared));
                }
                self.signal(SessionSignal::Opened);
            }
        }
    }

    /// Delivers one message; `false` when the owner no longer takes messages.
    fn deliver(&mut self, body: Body) -> bool {
        let (Some(owner), Some(session)) = (&self.owner, &self.session_ref) else {
            return false;
        };
        let reply = match body.kind {
            BodyKind::Reply { to, fault } => {
                self.shared.consumed_one();
                let waiter = self.shared.calls_lock().remove(&to);
                match waiter {
                    Some(tx) => {
                        let outcome = match fault {
                            Some(fault) => Err(CallError::Fault(*fault)),
                            None => Ok((body.type_url, body.payload)),
                        };
                        let _ = tx.send(outcome);
                    }
                    None => tracing::debug!(call = to, "reply after the caller gave up"),
                }
                return true;
            }
            BodyKind::Call { id, timeout_ms } => Some(ReplyPort {
                session: session.clone(),
                call_id: id,
                deadline: (timeout_ms > 0)
                    .then(|| Instant::now() + Duration::from_millis(timeout_ms)),
                answered: false,
            }),
            BodyKind::Cast => None,
        };
        let inbound = Inbound {
            session: session.clone(),
            type_url: body.type_url,
            payload: body.payload,
            reply,
        };
        owner.inbound(inbound).is_ok()
    }

    fn on_closed(&mut self, reason: CloseReason, unconfirmed: Vec<Envelope>) {
        let waiters: Vec<_> = self.shared.calls_lock().drain().collect();
        for (_, tx) in waiters {
            let _ = tx.send(Err(CallError::SessionClosed(reason.clone())));
        }
        let (session_id, role) = {
            let core = self.shared.lock();
            (core.session.id(), core.session.role())
        };
        let established = self.session_ref.is_some();
        self.node
            .session_closed(session_id, established, role, self.remote_addr, &reason);
        let unconfirmed = unconfirmed.into_iter().map(Into::into).collect();
        if let Some(tx) = self.established.take() {
            let _ = tx.send(Err(reason.clone()));
        } else if let CloseReason::Lost(lost) = &reason {
            let escalation = (self.policy == SessionPolicy::Escalate)
                .then(|| self.owner.as_ref().and_then(|o| o.cell()))
                .flatten()
                .map(|owner| Escalation {
                    owner,
                    reason: format!("session lost: {lost}"),
                });
            self.restart_after = self.policy == SessionPolicy::Restart
                && matches!(self.link, Link::Dial(_))
                && !self.shutdown_seen;
            let lost = lost.clone();
            self.signal(|session| {
                SessionSignal::Lost(Lost {
                    session,
                    reason: lost,
                    unconfirmed,
                    escalation,
                })
            });
        } else {
            let reason = reason.clone();
            self.signal(|session| SessionSignal::Closed {
                session,
                reason,
                unconfirmed,
            });
        }
        self.shared.closed.send_replace(Some(reason));
    }

    /// `Restart`: greet the peer again with a new session and move typed handles onto it,
    /// retrying with backoff until the restart deadline; the owner hears either
    /// `Restarted` or a second `Lost` with `LostReason::RestartGaveUp`. Stops early when the owner stops or the node shuts
    /// down.
    async fn restart(self) {
        let Link::Dial(dialer) = &self.link else {
            return;
        };
        let Dialer {
            addr, actor, slot, ..
        } = dialer.as_ref();
        let (Some(owner), Some(previous)) = (self.owner.clone(), self.session_ref.clone()) else {
            return;
        };
        let retry = Retry {
            deadline: Instant::now() + self.node.config.restart_timeout,
            restart: true,
        };
        let opened = self
            .node
            .open_session(
                addr,
                actor,
                owner.clone(),
                self.policy,
                Some(slot.clone()),
                retry,
            )
            .await;
        let signal = match opened {
            Ok((session, _)) => {
                tracing::info!(old = %previous.id(), new = %session.id(), "session restarted");
                SessionSignal::Restarted { previous, session }
            }
            Err(GaveUp { error, attempts }) => {
                tracing::warn!(old = %previous.id(), %error, attempts, "restart gave up");
                SessionSignal::Lost(Lost {
                    session: previous,
                    reason: LostReason::RestartGaveUp {
                        attempts,
                        last_error: Box::new(error),
                    },
                    unconfirmed: Vec::new(),
                    escalation: None,
                })
            }
        };
        let _ = owner.signal(signal);
    }
}

async fn recv_attach(attach: Option<&mut mpsc::Receiver<Attach>>) -> Option<Attach> {
    match attach {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Capped exponential backoff with equal jitter: never a tight loop, never in lockstep.
pub(crate) fn backoff(attempt: u32, config: &DriverConfig) -> Duration {
    let ceiling = config
        .reconnect_base
        .saturating_mul(1 << attempt.min(16))
        .min(config.reconnect_max);
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn describe(status: &Status) -> String {
    use std::error::Error;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = status.source();
    while let Some(error) = source {
        text.push_str(": ");
        text.push_str(&error.to_string());
        source = error.source();
    }
    text
}

/// Turns a failed gRPC stream into the session's input.
fn stream_failed(session: &mut Session, status: &Status, now: Instant) {
    match status.code() {
        // tonic reports an undecodable message as `Internal`, and one over the decode
        // limit as `OutOfRange`; both are the peer's fault, not the network's.
        Code::Internal if status.message().contains("decode") => {
            session.handle_malformed(FrameError::Undecodable(status.message().to_owned()));
        }
        Code::OutOfRange | Code::ResourceExhausted => {
            session.handle_protocol_error(ProtocolError::FrameTooLarge(status.message().to_owned()))
        }
        _ => session.stream_broken(describe(status), now),
    }
}
