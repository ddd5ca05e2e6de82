//! The gRPC service: each `Converse` call becomes an accepting session whose driver runs
//! on the node's task tracker, not on the request.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::driver::{Driver, OutboundFrames, Shared};
use crate::node::NodeInner;
use crate::session::Session;
use crate::wire::pb;

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
        let session = Session::acceptor(
            node.config.session.clone(),
            node.secret.clone(),
            node.identity.clone(),
            rand::random(),
            Instant::now(),
        );
        let shared = Shared::new(session);
        let driver = Driver {
            shared: shared.clone(),
            inbound: request.into_inner(),
            node: node.clone(),
            config: node.driver_config(),
            owner: None,
            remote_addr,
            established: None,
            session_ref: None,
        };
        let token = node.shutdown.token().clone();
        node.shutdown.spawn(driver.run(token));
        let outbound: FrameStream = Box::pin(OutboundFrames::new(shared).map(Ok));
        Ok(Response::new(outbound))
    }
}
