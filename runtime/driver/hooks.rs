//! What a driver shares with its node: the hooks it reports through ([`NodeHooks`]),
//! what it reports ([`Closed`], [`Restart`]) and what every driver of one node holds
//! ([`Context`], [`DriverConfig`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorCell;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::Attach;
use crate::actor::mailbox::Deliver;
use crate::budget::Budgets;
use crate::config::SessionPolicy;
use crate::error::CloseReason;
use crate::handles::remote_ref::SessionSlot;
use crate::handles::session_ref::SessionRef;
use crate::handles::state::Shared;
use crate::session::Role;
use crate::wire::{Refusal, SessionId};

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
    ) -> mpsc::Receiver<Box<Attach>>;

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
