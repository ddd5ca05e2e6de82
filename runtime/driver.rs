//! The thin async layer around one [`Session`]: it moves frames between the session core
//! and a gRPC stream, and events from the core into the owner's mailbox.
//!
//! The core sits behind a short `std::sync::Mutex` ([`Shared`]), never held across an
//! await. Sending is a lock and a push on the caller's task. The outgoing half is
//! [`OutboundFrames`], a `Stream` that tonic's encoder pulls: each poll takes the next
//! frame the core has ready, so everything queued since the last write leaves as one
//! batch. The incoming half is [`Driver::run`], one task per session that reads frames,
//! feeds the core and delivers what it yields straight into the owner's ractor mailbox.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::error::{CallError, CloseReason, ProtocolError, SendError};
use crate::mailbox::{Deliver, Inbound, ReplyPort, SessionSignal};
use crate::node::NodeInner;
use crate::session::{Event, Role, Session};
use crate::session_ref::{SessionInfo, SessionRef};
use crate::wire::{Body, BodyKind, Frame, FrameError, GoodbyeReason, pb};

/// What a pending call is completed with: the reply's type URL and payload, or why not.
pub(crate) type CallOutcome = Result<(String, Bytes), CallError>;

/// A session core shared by its driver, its outbound stream and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    core: Mutex<Core>,
    wake_driver: Notify,
    calls: Mutex<HashMap<u64, oneshot::Sender<CallOutcome>>>,
    next_call: AtomicU64,
    closed: watch::Sender<Option<CloseReason>>,
}

#[derive(Debug)]
struct Core {
    session: Session,
    tx_waker: Option<Waker>,
    /// The driver gave up on the stream: end the outgoing half now.
    abandoned: bool,
}

impl Shared {
    pub(crate) fn new(session: Session) -> Arc<Self> {
        Arc::new(Self {
            core: Mutex::new(Core {
                session,
                tx_waker: None,
                abandoned: false,
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
        if events {
            self.wake_driver.notify_one();
        }
        result
    }

    pub(crate) fn send(&self, body: Body) -> Result<u64, SendError<Body>> {
        self.with(|s| s.send(body))
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

    fn abandon(&self) {
        let mut core = self.lock();
        core.abandoned = true;
        let waker = core.tx_waker.take();
        drop(core);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The outgoing half of a session as the `Stream` tonic writes from.
#[derive(Debug)]
pub(crate) struct OutboundFrames {
    shared: Arc<Shared>,
}

impl OutboundFrames {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl Stream for OutboundFrames {
    type Item = pb::Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<pb::Frame>> {
        let mut core = self.shared.lock();
        if let Some(frame) = core.session.poll_transmit() {
            let events = core.session.has_events();
            drop(core);
            if events {
                self.shared.wake_driver.notify_one();
            }
            return Poll::Ready(Some(frame.into()));
        }
        if core.abandoned || core.session.is_transmit_done() {
            return Poll::Ready(None);
        }
        core.tx_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Node-level settings a driver needs.
#[derive(Clone, Debug)]
pub(crate) struct DriverConfig {
    /// How long a closed session waits for the peer to end its stream.
    pub(crate) close_linger: Duration,
}

/// The receive loop of one session.
pub(crate) struct Driver<S> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) inbound: S,
    pub(crate) node: Arc<NodeInner>,
    pub(crate) config: DriverConfig,
    pub(crate) owner: Option<Arc<dyn Deliver>>,
    pub(crate) remote_addr: Option<SocketAddr>,
    /// Initiator: told once the handshake ends, either way.
    pub(crate) established: Option<oneshot::Sender<Result<SessionRef, CloseReason>>>,
    pub(crate) session_ref: Option<SessionRef>,
}

impl<S> Driver<S>
where
    S: Stream<Item = Result<pb::Frame, Status>> + Unpin,
{
    /// Runs until the session is closed and its stream is done (or the linger ran out).
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut inbound_done = false;
        let mut shutdown_seen = false;
        let mut linger_until: Option<tokio::time::Instant> = None;
        loop {
            self.handle_events();
            let (closed, transmit_done, timeout) = {
                let core = self.shared.lock();
                (
                    core.session.is_closed(),
                    core.session.is_transmit_done(),
                    core.session.poll_timeout(),
                )
            };
            if closed {
                if transmit_done && inbound_done {
                    break;
                }
                let until = *linger_until
                    .get_or_insert_with(|| tokio::time::Instant::now() + self.config.close_linger);
                if tokio::time::Instant::now() >= until {
                    break;
                }
            }
            let timer = match (timeout.map(tokio::time::Instant::from_std), linger_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                () = cancel.cancelled(), if !shutdown_seen => {
                    shutdown_seen = true;
                    self.shared.with(|s| s.end(GoodbyeReason::NodeShutdown, "node shutting down".into()));
                }
                item = self.inbound.next(), if !inbound_done => match item {
                    Some(Ok(frame)) => match Frame::try_from(frame) {
                        Ok(frame) => self.shared.with(|s| s.handle_frame(frame)),
                        Err(error) => self.shared.with(|s| s.handle_malformed(error)),
                    },
                    Some(Err(status)) => {
                        inbound_done = true;
                        self.shared.with(|s| stream_failed(s, &status));
                    }
                    None => {
                        inbound_done = true;
                        self.shared.with(Session::handle_stream_end);
                    }
                },
                () = sleep_until(timer), if timer.is_some() => {
                    self.shared.with(|s| s.handle_timeout(Instant::now()));
                }
                () = self.shared.wake_driver.notified() => {}
            }
        }
        self.shared.abandon();
    }

    fn handle_events(&mut self) {
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
                            self.shared.with(|s| {
                                s.end(GoodbyeReason::ActorStopped, "the actor stopped".into())
                            });
                        }
                    }
                    // After the owner stopped, later messages stay unacknowledged.
                    Event::Message(_) => {}
                    Event::PeerFinished(goodbye) => {
                        if let (Some(owner), Some(session)) = (&self.owner, &self.session_ref) {
                            let _ =
                                owner.signal(SessionSignal::PeerFinished(session.clone(), goodbye));
                        }
                    }
                    Event::Closed(reason) => self.on_closed(reason),
                }
            }
            if let Some(seq) = delivered {
                self.shared
                    .with(|s| s.confirm_delivered(seq, Instant::now()));
            }
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
        self.session_ref = Some(session.clone());
        match (session.role(), self.established.take()) {
            (Role::Initiator, Some(tx)) => {
                let _ = tx.send(Ok(session));
            }
            _ => {
                if let Some(owner) = &self.owner {
                    let _ = owner.signal(SessionSignal::Opened(session));
                }
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

    fn on_closed(&mut self, reason: CloseReason) {
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
        if let Some(tx) = self.established.take() {
            let _ = tx.send(Err(reason.clone()));
        } else if let (Some(owner), Some(session)) = (&self.owner, &self.session_ref) {
            let _ = owner.signal(SessionSignal::Closed(session.clone(), reason.clone()));
        }
        self.shared.closed.send_replace(Some(reason));
    }
}

/// Turns a failed gRPC stream into the session's typed close reason.
fn stream_failed(session: &mut Session, status: &Status) {
    match status.code() {
        // tonic reports an undecodable message as `Internal`, and one over the decode
        // limit as `OutOfRange`; both are the peer's fault, not the network's.
        Code::Internal if status.message().contains("decode") => {
            session.handle_malformed(FrameError::Undecodable(status.message().to_owned()));
        }
        Code::OutOfRange | Code::ResourceExhausted => {
            session.handle_protocol_error(ProtocolError::FrameTooLarge(status.message().to_owned()))
        }
        _ => session.handle_transport_error(format!("{:?}: {}", status.code(), status.message())),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
