//! A node's settings, with defaults chosen for a LAN or loopback.

mod cluster;

pub use self::cluster::ClusterConfig;

use std::net::SocketAddr;
use std::time::Duration;

use crate::budget::BudgetConfig;
use crate::session::SessionConfig;
use crate::tls::{ClientTls, ServerTls};

/// What a session does when its stream breaks, chosen per session (the node's
/// [`NodeConfig::policy`] by default). Every policy but `Stop` first tries to resume until
/// the session's resume deadline; they differ in what follows a loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionPolicy {
    /// Resume until the deadline; if that fails, the owner gets `Lost` and the session is
    /// over.
    #[default]
    Resume,
    /// As `Resume`, then after a loss open a new session to the same actor (greeting the
    /// peer again, whatever its incarnation) and move typed handles onto it. Initiators
    /// only; an acceptor cannot dial back and behaves as `Resume`.
    Restart,
    /// As `Resume`, then after a loss stop the owner actor (once it has handled `Lost`)
    /// with a reason naming the loss, so its ractor supervisor decides.
    Escalate,
    /// Do not resume: a broken stream loses the session at once.
    Stop,
}

impl std::str::FromStr for SessionPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "resume" => Ok(Self::Resume),
            "restart" => Ok(Self::Restart),
            "escalate" => Ok(Self::Escalate),
            "stop" => Ok(Self::Stop),
            other => Err(format!(
                "{other:?}: expected resume, restart, escalate or stop"
            )),
        }
    }
}

/// The tokio runtime a node process runs on (the `--runtime` of the `duologue` command and
/// the benches). The library itself runs on whichever runtime it is called from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuntimeFlavor {
    /// tokio's work-stealing runtime, one worker per core.
    #[default]
    MultiThread,
    /// One thread for actors and network alike: about half the call latency on a small
    /// machine, some bulk throughput lost (benches/README.md).
    CurrentThread,
}

impl RuntimeFlavor {
    /// Its name on a command line: `multi-thread` or `current-thread`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MultiThread => "multi-thread",
            Self::CurrentThread => "current-thread",
        }
    }

    /// A runtime of this flavor, with I/O and timers enabled.
    ///
    /// # Errors
    /// When the operating system refuses tokio its threads or its I/O driver.
    pub fn build(self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            Self::MultiThread => tokio::runtime::Builder::new_multi_thread(),
            Self::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        }
        .enable_all()
        .build()
    }
}

impl std::str::FromStr for RuntimeFlavor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "multi-thread" => Ok(Self::MultiThread),
            "current-thread" => Ok(Self::CurrentThread),
            other => Err(format!(
                "unknown runtime {other}; use multi-thread or current-thread"
            )),
        }
    }
}

/// Everything a node can be told. Build one with [`crate::Node::builder`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's name, shown to peers.
    pub name: String,
    /// Where to accept sessions; `None` for a node that only dials out.
    pub listen: Option<SocketAddr>,
    /// Per-session protocol settings (batching, acks, message size limit, replay window,
    /// resume deadline).
    pub session: SessionConfig,
    /// Byte budgets all sessions of the node share, per peer and in all: replay buffers,
    /// and what waits unhandled in owners' mailboxes (see [`BudgetConfig`]).
    pub budget: BudgetConfig,
    /// What sessions do when their stream breaks, unless chosen per session.
    pub policy: SessionPolicy,
    /// First delay between reconnect attempts; doubles per attempt, with jitter.
    pub reconnect_base: Duration,
    /// Longest delay between reconnect attempts.
    pub reconnect_max: Duration,
    /// The connect deadline: how long [`crate::Node::connect`] keeps trying to open a
    /// session when the peer's connection is refused, reset or broken during the
    /// handshake (retried with the reconnect backoff). A typed refusal (wrong secret,
    /// unknown actor) is never retried. Each attempt, the TCP connect included, is
    /// bounded by the session's handshake timeout; no attempt starts after the deadline,
    /// so an error comes at most one handshake timeout after it.
    pub connect_timeout: Duration,
    /// Under [`SessionPolicy::Restart`]: how long a lost session keeps trying to open its
    /// replacement before the owner gets
    /// a final [`crate::SessionSignal::Lost`] with
    /// [`LostReason::RestartGaveUp`](crate::error::LostReason::RestartGaveUp).
    pub restart_timeout: Duration,
    /// How long a connection to a peer with no session left stays open for the next
    /// session before it is closed. A connection that failed is dropped at once.
    pub link_idle_timeout: Duration,
    /// HTTP/2 keepalive ping interval, on both client and server connections.
    pub keepalive_interval: Duration,
    /// A connection whose ping is not answered within this is considered dead.
    pub keepalive_timeout: Duration,
    /// HTTP/2 stream window, in bytes (per session).
    pub stream_window: u32,
    /// HTTP/2 connection window, in bytes (all sessions to one peer).
    pub connection_window: u32,
    /// Largest HTTP/2 frame this node accepts, in bytes (16 KiB to 16 MiB).
    pub max_frame_size: u32,
    /// Most concurrent sessions one peer connection may open to this node.
    pub max_sessions_per_peer: u32,
    /// How long a closed session waits for the peer to end its stream.
    pub close_linger: Duration,
    /// How long [`crate::Node::shutdown`] lets sessions drain before cancelling them.
    pub shutdown_drain: Duration,
    /// TLS for the sessions this node accepts: with it, the node accepts only TLS (and,
    /// with a client CA, only clients with a certificate from it). `None`: plaintext.
    pub tls: Option<ServerTls>,
    /// TLS for the sessions this node opens: every peer is dialled over TLS and must
    /// present a certificate from this CA. `None`: peers are dialled in plaintext.
    pub peer_tls: Option<ClientTls>,
    /// Accept plaintext sessions on an address off the loopback interface. Without it,
    /// such a node refuses to start ([`crate::NodeError::PlaintextListen`]); loopback
    /// addresses may always serve plaintext.
    pub insecure_plaintext: bool,
    /// What a peer may cost this node before it has proven the secret: connections,
    /// unauthenticated streams, bytes, time.
    pub admission: AdmissionConfig,
    /// Cluster membership by gossip: `None` for a node that only opens sessions to
    /// addresses it is given.
    pub cluster: Option<ClusterConfig>,
    /// Where to serve the node's metrics (`/metrics`, Prometheus' text format), its
    /// status as JSON (`/status.json`) and its status page (`/`), over plain HTTP/1 and
    /// without authentication: a loopback or otherwise private address. `None`: no
    /// admin server, and no metrics recorded.
    pub admin: Option<SocketAddr>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "node".into(),
            listen: None,
            session: SessionConfig::default(),
            budget: BudgetConfig::default(),
            policy: SessionPolicy::Resume,
            reconnect_base: Duration::from_millis(25),
            reconnect_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            restart_timeout: Duration::from_secs(300),
            link_idle_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            stream_window: 2 * 1024 * 1024,
            connection_window: 8 * 1024 * 1024,
            max_frame_size: 64 * 1024,
            max_sessions_per_peer: 16 * 1024,
            close_linger: Duration::from_secs(2),
            shutdown_drain: Duration::from_secs(5),
            tls: None,
            peer_tls: None,
            insecure_plaintext: false,
            admission: AdmissionConfig::default(),
            cluster: None,
            admin: None,
        }
    }
}

/// Limits on the work a node does for peers that have not proven the secret yet, so
/// that strangers cannot exhaust its memory, file descriptors or time. The defaults keep
/// pre-authentication state under about 64 MiB (benches/README.md, `hostile`).
///
/// A stream counts as unauthenticated from its arrival until its first handshake (or its
/// resume proof) succeeds; the handshake has one deadline from arrival
/// ([`SessionConfig::handshake_timeout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Most TCP connections open at once. At the limit, a new connection takes the
    /// place of the one that has carried no stream for longest; when every connection
    /// carries a stream, the new one is closed as soon as it is accepted (and counted in
    /// a rate-limited warning).
    pub max_connections: usize,
    /// A connection with no stream on it for this long is closed: from its accept (a
    /// silent socket, a missing HTTP/2 preface, a stalled TLS handshake) or since its
    /// last stream ended. Longer than [`NodeConfig::link_idle_timeout`], so a dialling
    /// node usually closes its idle connection first.
    pub connection_idle_timeout: Duration,
    /// Most unauthenticated streams on the whole node. A stream past it is refused at
    /// once with `UNAVAILABLE`, which a dialling duologue node retries with backoff.
    pub max_unauthenticated_streams: usize,
    /// Most unauthenticated streams on one connection (refused as above).
    pub max_unauthenticated_streams_per_connection: usize,
    /// Most connections carrying unauthenticated streams at once (a stream that would
    /// make one more is refused as above). Each may have up to
    /// [`NodeConfig::connection_window`] of data in flight before the node reads it,
    /// so this bounds that memory: 4 x 8 MiB by default (8 let 64 connections take a
    /// node 74 MiB above its baseline, 4 keep it under 45 MiB: benches/README.md). Handshakes take milliseconds,
    /// so legitimate peers rarely meet it; when they do, they retry.
    pub max_unauthenticated_connections: usize,
    /// Largest gRPC message a stream may send before it is authenticated, in bytes: far
    /// below the message limit, as greetings are small. Larger is refused with
    /// `RESOURCE_EXHAUSTED` as soon as its length prefix arrives.
    pub max_unauthenticated_message_bytes: u32,
    /// Most bytes a stream may send before it is authenticated (refused as above).
    pub max_unauthenticated_bytes: u32,
    /// Most streams open at once on the node's standard gRPC services,
    /// `grpc.health.v1.Health` and `grpc.reflection`, which never authenticate. A cap of
    /// their own, apart from [`AdmissionConfig::max_unauthenticated_streams`]: health
    /// watchers cannot take the places of sessions' handshakes, nor a crowd of handshakes
    /// starve the health checks. A stream past it is refused at once with `UNAVAILABLE`.
    /// Their messages are bounded as any unauthenticated stream's.
    pub max_standard_streams: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            connection_idle_timeout: Duration::from_secs(20),
            max_unauthenticated_streams: 256,
            max_unauthenticated_streams_per_connection: 64,
            max_unauthenticated_connections: 4,
            max_unauthenticated_message_bytes: 16 * 1024,
            max_unauthenticated_bytes: 32 * 1024,
            max_standard_streams: 32,
        }
    }
}

impl NodeConfig {
    /// The largest gRPC message this node encodes or decodes: one batch frame holding
    /// one maximal envelope, plus room for the frame's own fields.
    pub(crate) fn frame_limit(&self) -> usize {
        let message = usize::try_from(self.session.max_message_bytes).unwrap_or(usize::MAX);
        message
            .max(self.session.max_batch_bytes)
            .saturating_add(64 * 1024)
    }
}
