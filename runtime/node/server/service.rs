//! The gRPC service: each `Converse` call is a stream. Its first frame decides what it
//! is: a new session, whose driver then runs on the node's task tracker (not on the
//! request), or a resume, held at a [`ResumeGate`] until it proves the session's resume
//! key and only then routed to the session it names.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};

use super::pre_auth::{StreamTicket, conn_info};
use crate::driver::transport::WireFrame;
use crate::driver::{Attach, Driver, OnAuthenticated, OutboundFrames, StreamStart};
use crate::handles::state::Shared;
use crate::node::sessions::{Resumable, Sessions};
use crate::session::{GateRefusal, GateVerdict, ResumeGate, Session};
use crate::wire::{Frame, Hello};

/// The `duologue.v1.Duologue` service of one node: its sessions part.
#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) sessions: Arc<Sessions>,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<WireFrame, Status>> + Send>>;

#[tonic::async_trait]
impl crate::driver::transport::stubs::duologue_server::Duologue for Service {
    type ConverseStream = FrameStream;

    async fn converse(
        &self,
        request: Request<Streaming<WireFrame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let sessions = &self.sessions;
        if sessions.shutting_down() {
            return Err(Status::unavailable(crate::driver::SHUTTING_DOWN));
        }
        // One handshake deadline for the stream, from its arrival.
        let arrived = Instant::now();
        let remote_addr = conn_info(request.extensions()).map(|c| c.remote);
        let ticket = request.extensions().get::<StreamTicket>().cloned();
        let mut inbound = request.into_inner();
        // The initiator speaks first; a peer that says nothing meets the handshake
        // deadline here or in its session.
        let timeout = sessions.config().session.handshake_timeout;
        let first = tokio::time::timeout(timeout, inbound.message()).await.ok();
        if let Some(Ok(Some(frame))) = &first
            && let Some(hello) = resume_hello(frame)
        {
            let (gate, body) = GateStream::new();
            let stream = GateInput {
                hello,
                inbound,
                remote_addr,
                arrived,
                ticket,
            };
            sessions
                .shutdown()
                .spawn(gate_resume(sessions.clone(), stream, gate));
            return Ok(Response::new(body));
        }
        let session = sessions.acceptor_session(arrived);
        let shared = Shared::new(session, sessions.config().session.credit_window);
        let outbound = OutboundFrames::current(shared.clone());
        let driver = Driver::acceptor(
            shared,
            sessions.driver_context(),
            sessions.config().policy,
            remote_addr,
            ticket.map(|t| -> OnAuthenticated { Box::new(move || t.authenticated()) }),
        );
        let peeked = match first {
            Some(Ok(Some(frame))) => Some(Ok(frame)),
            Some(Err(status)) => Some(Err(status)),
            // The stream ended at once, or the peer stayed silent.
            Some(Ok(None)) | None => None,
        };
        sessions
            .shutdown()
            .spawn(driver.run(Some(StreamStart { inbound, peeked })));
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// The first frame as a resume greeting, if it is a well-formed one. (A malformed one
/// goes to a new session, which refuses it as any malformed greeting.)
fn resume_hello(frame: &WireFrame) -> Option<Hello> {
    match &frame.0 {
        Ok(Frame::Hello(hello)) if hello.resume.is_some() => Some(hello.clone()),
        _ => None,
    }
}

/// The outgoing half of a resume stream: what its gate says, then, once the stream
/// proved the session's key, the session's frames.
struct GateStream {
    frames: mpsc::Sender<Result<WireFrame, Status>>,
    then: oneshot::Sender<OutboundFrames>,
}

impl GateStream {
    fn new() -> (Self, FrameStream) {
        // A gate writes at most a challenge and a refusal.
        let (frames, prelude) = mpsc::channel(2);
        let (then, session) = oneshot::channel();
        let session = futures::stream::once(session)
            .filter_map(|outbound| std::future::ready(outbound.ok()))
            .flatten();
        (Self { frames, then }, Box::pin(prelude.chain(session)))
    }
}

/// A resume stream as it reached its gate.
struct GateInput {
    hello: Hello,
    inbound: Streaming<WireFrame>,
    remote_addr: Option<SocketAddr>,
    arrived: Instant,
    ticket: Option<StreamTicket>,
}

/// Holds a resume stream at its gate until it proves the session's resume key, then
/// routes it to the session's driver. Until then nothing reaches any session: a stranger
/// that parks, sends junk or a wrong proof costs this task, bounded by the handshake
/// timeout, and gets the same answers whether or not the session it names exists.
async fn gate_resume(sessions: Arc<Sessions>, stream: GateInput, mut out: GateStream) {
    let GateInput {
        hello,
        mut inbound,
        remote_addr,
        arrived,
        ticket,
    } = stream;
    let mut gate = sessions.resume_gate(hello, arrived);
    let cancel = sessions.shutdown().token().clone();
    let mut found: Option<Resumable> = None;
    loop {
        while let Some(frame) = gate.poll_transmit() {
            if out.frames.send(Ok(frame.into())).await.is_err() {
                return;
            }
        }
        match gate.verdict().clone() {
            GateVerdict::Pending => {}
            GateVerdict::Refused(why) => {
                log_refusal(&gate, &why, remote_addr);
                return;
            }
            GateVerdict::Proven(proven) => {
                let Some(Resumable { shared, attach }) = found else {
                    return;
                };
                tracing::debug!(id = %proven.session, ?remote_addr, "resume proven");
                if let Some(ticket) = &ticket {
                    ticket.authenticated();
                }
                let (outbound, stream) = OutboundFrames::pending(shared);
                drop(out.frames);
                let _ = out.then.send(outbound);
                let attach_stream = Attach {
                    proven,
                    inbound,
                    stream,
                    remote_addr,
                };
                // A driver gone meanwhile abandons its core: the stream ends by itself.
                let _ = attach.send(Box::new(attach_stream)).await;
                return;
            }
        }
        let deadline = gate.poll_timeout().unwrap_or_else(Instant::now);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(deadline.into()) => gate.handle_timeout(Instant::now()),
            item = inbound.message() => match item {
                Ok(Some(WireFrame(parsed))) => match parsed {
                    Ok(frame) => gate.handle_frame(frame, |id| {
                        found = sessions.resumable(id);
                        found.as_ref().and_then(|r| r.shared.read(Session::resume_ticket))
                    }),
                    Err(error) => gate.handle_malformed(error),
                },
                // The peer left before proving anything.
                Ok(None) | Err(_) => return,
            },
        }
    }
}

fn log_refusal(gate: &ResumeGate, why: &GateRefusal, remote_addr: Option<SocketAddr>) {
    tracing::debug!(id = %gate.session_id(), ?remote_addr, ?why, "resume refused at the gate");
}
