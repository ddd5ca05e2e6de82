//! Where a driver gets its next stream: an initiator dials its peer again
//! ([`Link::Dial`]), an acceptor waits for the node to route the peer's resume stream to
//! it ([`Attach`]).

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::outbound::PendingStream;
use crate::auth::VerifiedCert;
use crate::driver::transport::WireFrame;
use crate::driver::transport::stubs::duologue_client::DuologueClient;
use crate::handles::remote_ref::SessionSlot;
use crate::session::ProvenResume;

/// A new stream for an acceptor session, routed by the node once it proved the
/// session's resume key at its gate (`session::ResumeGate`).
#[derive(Debug)]
pub(crate) struct Attach {
    /// What the stream proved.
    pub(crate) proven: ProvenResume,
    /// The rest of the stream (its `Hello` and `Proof` were read at the gate).
    pub(crate) inbound: Streaming<WireFrame>,
    /// The stream's outgoing half, waiting to be let write.
    pub(crate) stream: PendingStream,
    /// The peer's address on this connection.
    pub(crate) remote_addr: Option<SocketAddr>,
}

/// A stream to pump: its incoming half, and its first item if already read.
pub(crate) struct StreamStart {
    pub(crate) inbound: Streaming<WireFrame>,
    pub(crate) peeked: Option<Result<WireFrame, Status>>,
}

/// Where a driver gets its next stream.
pub(crate) enum Link {
    /// Initiator: dial the peer.
    Dial(Box<Dialer>),
    /// Acceptor: wait for the node to route the peer's resume stream here (through the
    /// receiver [`NodeHooks::remember_resumable`](super::NodeHooks::remember_resumable) returned).
    Accept,
}

/// How an initiator reaches its peer again.
pub(crate) struct Dialer {
    pub(crate) client: DuologueClient<Channel>,
    pub(crate) addr: String,
    pub(crate) actor: String,
    /// Typed handles follow this slot across a restart.
    pub(crate) slot: Arc<SessionSlot>,
    /// Over TLS, the certificate the link's verifier accepted the peer by: the session
    /// is told it each time a stream opens.
    pub(crate) verified: Option<VerifiedCert>,
}
