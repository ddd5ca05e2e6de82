//! The thin async layer around one session core: it moves frames between the core and
//! gRPC streams, and events from the core into the owner's mailbox. One driver task lives
//! as long as its session, across any number of streams.
//!
//! - `task`: the per-session task ([`Driver::run`]): reads each stream, feeds the core,
//!   and gets the next stream when one breaks.
//! - `events`: what the core's events become: mailbox items for the owner, reports to
//!   the node.
//! - `dial`: the initiator's way back to its peer: dialing, with capped, jittered
//!   exponential backoff ([`backoff`]).
//! - `outbound`: the outgoing half of each stream ([`OutboundFrames`]), the `Stream`
//!   tonic's encoder pulls: each poll takes the next frame the core has ready.
//! - `alarm`: the task's one timer.
//!
//! The core and its wakers live in [`crate::handles::state`], which handles use too. The driver
//! never reaches up into the node: it reports through [`NodeHooks`], which the node
//! implements, and the node decides (quinn's connection reports `EndpointEvent`s to its
//! endpoint the same way).

mod alarm;
mod cause;
mod dial;
mod events;
mod outbound;
mod task;
pub(crate) mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorCell;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::actor::mailbox::Deliver;
use crate::budget::Budgets;
use crate::config::SessionPolicy;
use crate::driver::transport::WireFrame;
use crate::driver::transport::stubs::duologue_client::DuologueClient;
use crate::error::CloseReason;
use crate::handles::remote_ref::SessionSlot;
use crate::handles::session_ref::SessionRef;
use crate::handles::state::Shared;
use crate::session::{ProvenResume, Role};
use crate::wire::{Refusal, SessionId};

pub(crate) use cause::SHUTTING_DOWN;
pub(crate) use dial::backoff;
pub(crate) use outbound::{OutboundFrames, PendingStream};
pub(crate) use task::{Driver, OnAuthenticated};

/// What a driver tells its node, and the few answers it needs from it. The node
/// implements it; a driver holds it as a trait object, so this module never names the
/// node's types.
pub(crate) trait NodeHooks: Send + Sync + 'static {
    /// Acceptor: the mailbox of the actor registered as `target`, or why the session is
    /// refused. A typed actor takes only sessions that speak its protocol or leave it
    /// unspecified (`protocol` empty).
    fn admit(&self, target: &str, protocol: &str) -> Result<Arc<dyn Deliver>, Refusal>;

    /// The stop reason of a session owner that no longer takes messages.
    fn stop_reason(&self, owner: Option<&dyn Deliver>) -> String;

    /// A session completed its handshake; `owner` is the actor that owns it, if one does.
    fn session_opened(&self, session: &SessionRef, shared: &Arc<Shared>, owner: Option<ActorCell>);

    /// Makes an established acceptor session resumable; returns where the node will route
    /// its resume streams.
    fn remember_resumable(
        &self,
        session: &SessionRef,
        shared: &Arc<Shared>,
    ) -> mpsc::Receiver<Attach>;

    /// The session is over.
    fn session_closed(&self, closed: Closed<'_>);

    /// The session's task is ending: no resume stream can reach it any more.
    fn forget_resumable(&self, session: SessionId);

    /// `Restart` policy: the session was lost; greet the peer again with a new session
    /// and tell the owner how that went (`Restarted`, or a second `Lost`).
    fn restart(self: Arc<Self>, lost: Restart);
}

/// A closed session, as [`NodeHooks::session_closed`] reports it.
#[derive(Debug)]
pub(crate) struct Closed<'a> {
    pub(crate) session: SessionId,
    /// Whether the handshake had completed.
    pub(crate) established: bool,
    pub(crate) role: Role,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) reason: &'a CloseReason,
}

/// A lost session whose policy asks for a restart, as [`NodeHooks::restart`] gets it.
#[derive(Debug)]
pub(crate) struct Restart {
    /// Where the lost session went.
    pub(crate) addr: String,
    pub(crate) actor: String,
    pub(crate) owner: Arc<dyn Deliver>,
    pub(crate) policy: SessionPolicy,
    /// Typed handles follow this slot onto the new session.
    pub(crate) slot: Arc<SessionSlot>,
    /// The lost session.
    pub(crate) previous: SessionRef,
}

/// What every driver of one node shares: where it reports, its settings, the node's
/// shutdown token, the node's memory budgets.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) node: Arc<dyn NodeHooks>,
    pub(crate) config: DriverConfig,
    pub(crate) cancel: CancellationToken,
    /// Each established session opens an account with them, under its peer's identity.
    pub(crate) budgets: Arc<Budgets>,
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
    /// receiver [`NodeHooks::remember_resumable`] returned).
    Accept,
}

/// How an initiator reaches its peer again.
pub(crate) struct Dialer {
    pub(crate) client: DuologueClient<Channel>,
    pub(crate) addr: String,
    pub(crate) actor: String,
    /// Typed handles follow this slot across a restart.
    pub(crate) slot: Arc<SessionSlot>,
}

/// A failed gRPC call, with the chain of its causes.
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
