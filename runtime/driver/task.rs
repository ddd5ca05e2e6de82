//! [`Driver`]: the task of one session, its receive loop across streams.
//!
//! It reads frames, feeds the core, hands what the core yields to `events`, and when a
//! stream breaks, gets the next one: the initiator redials (`dial`); the acceptor waits
//! for the node to route the peer's resume stream to it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status, Streaming};
use tracing::Instrument;

use super::alarm::Alarm;
use super::cause::{self, At};
use super::{Attach, Context, Dialer, Link, StreamStart};
use crate::actor::mailbox::Deliver;
use crate::config::SessionPolicy;
use crate::driver::transport::WireFrame;
use crate::error::{CloseReason, InterruptCause, ProtocolError};
use crate::handles::session_ref::SessionRef;
use crate::handles::state::Shared;
use crate::session::Session;
use crate::wire::{FrameError, GoodbyeReason};

/// The life of one session: its receive loop, across streams.
pub(crate) struct Driver {
    pub(super) shared: Arc<Shared>,
    pub(super) cx: Context,
    pub(super) policy: SessionPolicy,
    pub(super) link: Link,
    /// Acceptor: where the node routes the peer's resume streams.
    pub(super) attach_rx: Option<mpsc::Receiver<Box<Attach>>>,
    pub(super) owner: Option<Arc<dyn Deliver>>,
    pub(super) remote_addr: Option<SocketAddr>,
    /// Initiator: told once the first handshake ends, either way.
    pub(super) established: Option<oneshot::Sender<Result<SessionRef, CloseReason>>>,
    pub(super) session_ref: Option<SessionRef>,
    pub(super) shutdown_seen: bool,
    pub(super) interrupted_at: Option<Instant>,
    /// Set when the session was lost and the policy asks for a restart.
    pub(super) restart_after: bool,
    /// Reconnect attempts since the last successful resume (for the backoff).
    pub(super) attempt: u32,
    /// Acceptor: called once the peer has proven the secret (the node then stops
    /// counting the stream as unauthenticated).
    pub(super) on_authenticated: Option<OnAuthenticated>,
    /// Every line the session logs is in it: its id, role, peer and actor.
    pub(super) span: tracing::Span,
}

/// What an acceptor does once its peer has proven the secret.
pub(crate) type OnAuthenticated = Box<dyn FnOnce() + Send>;

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
    /// The driver of a session a peer opened on the stream it arrived on.
    pub(crate) fn acceptor(
        shared: Arc<Shared>,
        cx: Context,
        policy: SessionPolicy,
        remote_addr: Option<SocketAddr>,
        on_authenticated: Option<OnAuthenticated>,
    ) -> Self {
        let mut driver = Self::new(shared, cx, policy, Link::Accept, None, remote_addr);
        driver.on_authenticated = on_authenticated;
        driver
    }

    /// The driver of a session this node opens for `owner`; `established` hears how the
    /// first handshake ended.
    pub(crate) fn initiator(
        shared: Arc<Shared>,
        cx: Context,
        policy: SessionPolicy,
        dialer: Dialer,
        owner: Arc<dyn Deliver>,
        established: oneshot::Sender<Result<SessionRef, CloseReason>>,
    ) -> Self {
        let remote_addr = dialer.addr.parse().ok();
        let (id, actor) = shared.read(|s| (s.id(), s.target().to_owned()));
        let mut driver = Self::new(
            shared,
            cx,
            policy,
            Link::Dial(Box::new(dialer)),
            Some(owner),
            remote_addr,
        );
        driver.established = Some(established);
        driver.span.record("id", tracing::field::display(id));
        driver.span.record("actor", actor);
        driver
    }

    fn new(
        shared: Arc<Shared>,
        cx: Context,
        policy: SessionPolicy,
        link: Link,
        owner: Option<Arc<dyn Deliver>>,
        remote_addr: Option<SocketAddr>,
    ) -> Self {
        let role = shared.read(Session::role);
        let span = tracing::info_span!(
            "session",
            ?role,
            id = tracing::field::Empty,
            peer = tracing::field::Empty,
            actor = tracing::field::Empty,
            remote = remote_addr.map(tracing::field::display),
        );
        Self {
            span,
            shared,
            cx,
            policy,
            link,
            attach_rx: None,
            owner,
            remote_addr,
            established: None,
            session_ref: None,
            shutdown_seen: false,
            interrupted_at: None,
            restart_after: false,
            attempt: 0,
            on_authenticated: None,
        }
    }

    /// Runs the session until it is over, from its first stream (`first`: for an
    /// acceptor, the stream it arrived on with its already-read first item).
    pub(crate) async fn run(self, first: Option<StreamStart>) {
        let span = self.span.clone();
        self.run_streams(first).instrument(span).await;
    }

    async fn run_streams(mut self, mut first: Option<StreamStart>) {
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
            if self.shared.read(Session::is_closed) {
                break;
            }
        }
        self.handle_events();
        self.shared.abandon();
        if let Some(id) = self.session_ref.as_ref().map(SessionRef::id) {
            self.cx.node.forget_resumable(id);
        }
        if self.restart_after {
            self.request_restart();
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
                received.flatten().map(|attach| self.attach(*attach))
            }
            Link::Dial(dialer) => {
                let client = dialer.client.clone();
                let verified = dialer.verified.clone();
                self.redial(client, verified).await
            }
        }
    }

    /// Acceptor: takes over a stream the node routed here once it proved the session's
    /// resume key. The stream still up, if any, is superseded; `Welcome{resumed}` and the
    /// replay go out on the new one, which no other stream can write from then on.
    fn attach(&mut self, attach: Attach) -> StreamStart {
        self.remote_addr = attach.remote_addr.or(self.remote_addr);
        let Attach {
            proven,
            inbound,
            stream,
            ..
        } = attach;
        self.shared.open_epoch(&stream.epoch, stream.key, |s| {
            s.resume_proven(&proven, Instant::now());
        });
        StreamStart {
            inbound,
            peeked: None,
        }
    }

    /// Waits for `future` while keeping the session alive: its timers, its events, node
    /// shutdown. `None` when the session is over first.
    pub(super) async fn drive_until<F: Future>(&mut self, future: F) -> Option<F::Output> {
        tokio::pin!(future);
        let (shared, cancel) = (self.shared.clone(), self.cx.cancel.clone());
        let mut alarm = Alarm::new();
        loop {
            self.handle_events();
            if shared.read(Session::is_closed) {
                return None;
            }
            shared.set_alarm(|timeout| {
                alarm.want(timeout);
                alarm.set_for()
            });
            tokio::select! {
                output = &mut future => return Some(output),
                () = cancel.cancelled(), if !self.shutdown_seen => self.on_shutdown(),
                () = alarm.ring() => {
                    shared.with(|s| s.handle_timeout(Instant::now()));
                }
                () = shared.driver_woken() => {}
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
        inbound: Streaming<WireFrame>,
        peeked: Option<Result<WireFrame, Status>>,
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
        mut inbound: Streaming<WireFrame>,
        mut peeked: Option<Result<WireFrame, Status>>,
        attach_rx: &mut Option<mpsc::Receiver<Box<Attach>>>,
    ) -> StreamEnd {
        let (shared, cancel) = (self.shared.clone(), self.cx.cancel.clone());
        let generation = self.shared.read(Session::generation);
        let mut inbound_done = false;
        let mut linger_until: Option<Instant> = None;
        let mut alarm = Alarm::new();
        loop {
            if let Some(item) = peeked.take() {
                self.on_item(Some(item), &mut inbound_done);
            }
            self.handle_events();
            // A first stream installs the receiver when it is established: from then on a
            // proven resume stream supersedes this one.
            if attach_rx.is_none() {
                *attach_rx = self.attach_rx.take();
            }
            let (closed, transmit_done, current) = self.shared.read(|s| {
                (
                    s.is_closed(),
                    s.is_transmit_done(),
                    s.generation() == generation,
                )
            });
            if closed {
                if transmit_done && inbound_done {
                    return StreamEnd::Over;
                }
                let linger = self.cx.config.close_linger;
                let until = *linger_until.get_or_insert_with(|| Instant::now() + linger);
                if Instant::now() >= until {
                    return StreamEnd::Over;
                }
            } else if !current || inbound_done {
                // The core gave this stream up (silence, or it broke).
                if current {
                    self.shared.with(|s| {
                        s.stream_broken(InterruptCause::EndedWithoutGoodbye, Instant::now())
                    });
                    self.handle_events();
                }
                return StreamEnd::Broken;
            }
            shared.set_alarm(|timeout| {
                alarm.want(timeout);
                alarm.want(linger_until);
                alarm.set_for()
            });
            tokio::select! {
                biased;
                () = cancel.cancelled(), if !self.shutdown_seen => self.on_shutdown(),
                item = inbound.next(), if !inbound_done => self.on_item(item, &mut inbound_done),
                () = alarm.ring() => {
                    shared.with(|s| s.handle_timeout(Instant::now()));
                }
                () = shared.driver_woken() => {}
                Some(next) = recv_attach(attach_rx.as_mut()), if !closed => {
                    return StreamEnd::Superseded(next);
                }
            }
        }
    }

    fn on_item(&mut self, item: Option<Result<WireFrame, Status>>, inbound_done: &mut bool) {
        let now = Instant::now();
        match item {
            Some(Ok(WireFrame(Ok(frame)))) => self.shared.with(|s| s.handle_frame(frame, now)),
            Some(Ok(WireFrame(Err(error)))) => self.shared.with(|s| s.handle_malformed(error)),
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
}

async fn recv_attach(attach: Option<&mut mpsc::Receiver<Box<Attach>>>) -> Option<Box<Attach>> {
    match attach {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether the stream failed because a frame could not be decoded.
fn is_undecodable(status: &Status) -> bool {
    std::error::Error::source(status).is_some_and(|e| e.is::<prost::DecodeError>())
}

/// Turns a failed gRPC stream into the session's input.
fn stream_failed(session: &mut Session, status: &Status, now: Instant) {
    match status.code() {
        // The codec (`transport::FrameCodec`) puts the prost error under an undecodable
        // frame, and tonic reports one over the decode limit as `OutOfRange`; both are the
        // peer's fault, not the network's.
        _ if is_undecodable(status) => {
            session.handle_malformed(FrameError::Undecodable(status.message().to_owned()));
        }
        Code::OutOfRange | Code::ResourceExhausted => {
            session.handle_protocol_error(ProtocolError::FrameTooLarge(status.message().to_owned()))
        }
        _ => session.stream_broken(cause::broken(status, At::Stream), now),
    }
}
