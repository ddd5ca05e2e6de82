//! The gRPC service: each `Converse` call is a stream. Its first frame decides what it
//! is: a new session, whose driver then runs on the node's task tracker (not on the
//! request), or a resume, routed to the interrupted session it names.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::driver::{Attach, Driver, Link, OutboundFrames, Shared, StreamStart};
use crate::node::{NodeInner, Resumable};
use crate::session::Session;
use crate::wire::{SessionId, pb};

/// The `duologue.v1.Duologue` service of one node.
#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) node: Arc<NodeInner>,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::Frame, Status>> + Send>>;

#[tonic::async_trait]
impl pb::duologue_server::Duologue for Service {
    type ConverseStream = FrameStream;

    async fn converse(
        &self,
        request: Request<Streaming<pb::Frame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let node = &self.node;
        if node.shutdown.is_triggered() {
            return Err(Status::unavailable("node is shutting down"));
        }
        let remote_addr = request.remote_addr();
        let mut inbound = request.into_inner();
        // The initiator speaks first; a peer that says nothing meets the new session's
        // handshake timeout instead.
        let timeout = node.config.session.handshake_timeout;
        let first = tokio::time::timeout(timeout, inbound.message()).await.ok();
        if let Some(Ok(Some(hello))) = &first
            && let Some(id) = resumed_session(hello)
            && let Some(Resumable { shared, attach }) = node.resumable(id)
        {
            let (outbound, epoch) = OutboundFrames::pending(shared);
            let hello = hello.clone();
            let routed = attach
                .send(Attach {
                    hello,
                    inbound,
                    epoch,
                    remote_addr,
                })
                .await;
            if routed.is_err() {
                return Err(Status::unavailable("the session is ending"));
            }
            return Ok(Response::new(Box::pin(outbound.map(Ok))));
        }
        let session = Session::acceptor(
            node.config.session.clone(),
            node.secret.clone(),
            node.identity.clone(),
            rand::random(),
            Instant::now(),
        );
        let shared = Shared::new(session, node.config.session.credit_window);
        let outbound = OutboundFrames::current(shared.clone());
        let driver = Driver {
            shared,
            node: node.clone(),
            config: node.driver_config(),
            policy: node.config.policy,
            link: Link::Accept,
            attach_rx: None,
            owner: None,
            remote_addr,
            established: None,
            session_ref: None,
            cancel: node.shutdown.token().clone(),
            shutdown_seen: false,
            interrupted_at: None,
            restart_after: false,
            attempt: 0,
        };
        let peeked = match first {
            Some(Ok(Some(frame))) => Some(Ok(frame)),
            Some(Err(status)) => Some(Err(status)),
            // The stream ended at once, or the peer stayed silent.
            Some(Ok(None)) | None => None,
        };
        node.shutdown
            .spawn(driver.run(Some(StreamStart { inbound, peeked })));
        Ok(Response::new(Box::pin(outbound.map(Ok))))
    }
}

/// The session a resume greeting names, if it is one.
fn resumed_session(frame: &pb::Frame) -> Option<SessionId> {
    match &frame.kind {
        Some(pb::frame::Kind::Hello(hello)) if hello.resume.is_some() => {
            let bytes: [u8; 16] = hello.session_id.as_ref().try_into().ok()?;
            Some(SessionId(uuid::Uuid::from_bytes(bytes)))
        }
        _ => None,
    }
}
