//! A node's settings, with defaults chosen for a LAN or loopback.

mod cluster;

pub use self::cluster::ClusterConfig;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::budget::BudgetConfig;
use crate::cores::NodeRuntime;
use crate::error::AuthError;
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
    /// One current-thread runtime per core, none stealing another's work: each connection
    /// lives on one core with its sessions' drivers, in turn over the cores; actors run
    /// where they were spawned.
    ThreadPerCore,
}

impl RuntimeFlavor {
    /// Its name on a command line: `multi-thread`, `current-thread` or `thread-per-core`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MultiThread => "multi-thread",
            Self::CurrentThread => "current-thread",
            Self::ThreadPerCore => "thread-per-core",
        }
    }

    /// A runtime of this flavor, with I/O and timers enabled.
    ///
    /// # Errors
    /// When the operating system refuses tokio its threads or its I/O driver.
    pub fn build(self) -> std::io::Result<NodeRuntime> {
        let mut builder = match self {
            Self::MultiThread => tokio::runtime::Builder::new_multi_thread(),
            Self::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Self::ThreadPerCore => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                return NodeRuntime::per_core(cores);
            }
        };
        let runtime = builder.enable_all().build()?;
        Ok(NodeRuntime::single(runtime))
    }
}

impl std::str::FromStr for RuntimeFlavor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "multi-thread" => Ok(Self::MultiThread),
            "current-thread" => Ok(Self::CurrentThread),
            "thread-per-core" => Ok(Self::ThreadPerCore),
            other => Err(format!(
                "unknown runtime {other}; use multi-thread, current-thread or thread-per-core"
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
    /// Most named actors the node holds at once (its `$node` actor included): each is a
    /// key that gossip carries to every member. Past it, registering is refused
    /// ([`crate::NodeError::TooManyNames`]).
    pub max_names: usize,
    /// Most actors the node hosts at once on request (peers' spawns, `--actor`): past
    /// it, a spawn is refused ([`crate::cluster::SpawnError::LimitReached`]).
    pub max_hosted: usize,
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
    /// status as JSON (`/status.json`) and its status page (`/`), over HTTP/1. A
    /// loopback address serves anyone on the host; any other is refused
    /// ([`NodeError::Bind`](crate::NodeError::Bind)) unless [`NodeConfig::admin_access`]
    /// gives it a token (and TLS, or [`NodeConfig::insecure_plaintext`]) or says
    /// [`AdminAccess::insecure`]. Its connections are admitted as the session port's are
    /// ([`AdmissionConfig`]). `None`: no admin server, and no metrics recorded.
    pub admin: Option<SocketAddr>,
    /// Who may read the admin address, and how: token, TLS, the `Host` names it answers.
    pub admin_access: AdminAccess,
    /// How the node places, keeps and stops the entities of the kinds it hosts
    /// ([`crate::NodeBuilder::entity`]).
    pub entities: EntityConfig,
    /// Where entities that keep state keep it ([`crate::NodeBuilder::durable_entity`]);
    /// `None`: no store, and no such kind may be hosted.
    pub state: Option<crate::store::StateConfig>,
}

/// How entities are placed, kept and stopped. Every member of a cluster must use the same
/// `shards`: it is part of the placement rule.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntityConfig {
    /// How many shards the ids of each kind map to (1 024 by default). Shards are what
    /// move between members, so there should be many more of them than members; they
    /// cost nothing until one of their entities starts.
    pub shards: u32,
    /// An entity that received nothing for this long is stopped (passivated): 120 s by
    /// default, as Akka's. Its next message starts it again.
    pub idle_after: Duration,
    /// The most entities of one kind active on the node at once (100 000 by default):
    /// past it, starting another stops the least recently used.
    pub max_active: usize,
}

impl Default for EntityConfig {
    fn default() -> Self {
        Self {
            shards: 1024,
            idle_after: Duration::from_secs(120),
            max_active: 100_000,
        }
    }
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
            max_names: 10_000,
            max_hosted: 10_000,
            close_linger: Duration::from_secs(2),
            shutdown_drain: Duration::from_secs(5),
            tls: None,
            peer_tls: None,
            insecure_plaintext: false,
            admission: AdmissionConfig::default(),
            cluster: None,
            admin: None,
            admin_access: AdminAccess::default(),
            entities: EntityConfig::default(),
            state: None,
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
    /// Most TCP connections open at once, on the session port and the admin port
    /// together: one descriptor budget. The node never holds more than its open-file
    /// limit allows either: it keeps a quarter of its soft `RLIMIT_NOFILE` (at least
    /// 32 descriptors) for its own sockets, files and outgoing connections, and caps
    /// this at the rest, with a warning at start when that is lower (a node binary
    /// first raises its soft limit to the hard one). At the limit, a new connection
    /// takes the place of the one that has carried no stream (no request, on the admin
    /// port) for longest; when every connection carries one, the new one is closed as
    /// soon as it is accepted (and counted in a rate-limited warning). An admin
    /// connection only ever takes the place of another admin connection.
    pub max_connections: usize,
    /// A connection with no stream on it for this long is closed: from its accept (a
    /// silent socket, a missing HTTP/2 preface, a stalled TLS handshake) or since its
    /// last stream ended. Longer than [`NodeConfig::link_idle_timeout`], so a dialling
    /// node usually closes its idle connection first.
    pub connection_idle_timeout: Duration,
    /// Most unauthenticated streams on the whole node. A stream past it is refused at
    /// once with `UNAVAILABLE`, which a dialling duologue node retries with backoff.
    pub max_unauthenticated_streams: usize,
    /// Most unauthenticated streams on one connection (refused as above). A dialling
    /// node takes its own value for its peers': it keeps at most this many first
    /// handshakes in flight on a connection it dialled, and further sessions wait for a
    /// place (up to a handshake timeout) instead of being refused and retried.
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
    /// Most connections open at once on the admin address, within
    /// [`AdmissionConfig::max_connections`] (and at most a quarter of what the node
    /// can hold): silent or slow admin clients cannot take the sessions' places. At
    /// the limit a new admin connection takes the place of the admin connection idle
    /// for longest, or is closed.
    pub max_admin_connections: usize,
    /// How long the admin server waits for a request's head: from the connection's
    /// accept (its TLS handshake included) or the end of the previous response on a
    /// kept-alive connection. A client that sends nothing, or one header line every
    /// few seconds, is closed then. A connection with no request in flight for
    /// [`AdmissionConfig::connection_idle_timeout`] is closed in any case.
    pub admin_header_timeout: Duration,
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
            max_admin_connections: 32,
            admin_header_timeout: Duration::from_secs(5),
        }
    }
}

/// Who may read a node's admin address ([`NodeConfig::admin`]) and how. The default
/// suits a loopback address: no token, no TLS, `Host` checked.
///
/// Every request's `Host` must name the admin address itself, the address the
/// connection reached, `localhost`, or one of [`AdminAccess::allowed_hosts`]; any
/// other is refused with 421 before anything else is looked at, so a page on another
/// origin cannot read the node through DNS rebinding. With a token, a request without
/// it gets 401. Refusals are logged a few lines per window (the log budget) and
/// counted in `duologue_admin_refused_total`.
#[derive(Clone, Debug, Default)]
pub struct AdminAccess {
    /// Every request must carry this token: `Authorization: Bearer TOKEN`, or HTTP
    /// Basic with any user name and the token as password (what a browser asks for on
    /// the status page). Needed to serve off the loopback interface.
    pub token: Option<AdminToken>,
    /// Serves the admin address over TLS with this certificate (the node's own, as
    /// `--metrics-tls` does): the token and the status do not cross the network in the
    /// clear. HTTP/1.1; a client CA it has is not asked for here (the token
    /// authenticates).
    pub tls: Option<ServerTls>,
    /// Names or addresses a request's `Host` may carry besides the admin address, the
    /// address the connection reached and `localhost`: the DNS names (or a proxy's)
    /// operators reach the node by. The port in `Host` is not compared (a port forward
    /// changes it).
    pub allowed_hosts: Vec<String>,
    /// Serve an admin address off the loopback interface without a token, or with one
    /// in plaintext: for a trusted network. Refused at start otherwise.
    pub insecure: bool,
}

/// The shortest admin token accepted, in bytes.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The token an admin address asks every request for ([`AdminAccess::token`]): 16
/// printable ASCII characters or more (it travels in an HTTP header; make one with
/// `openssl rand -hex 32`). Only a keyed hash of it is kept, and a presented token is
/// compared in constant time; `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken {
    /// A random key of this process: the hashes of two tokens compare in time that
    /// says nothing of where the tokens differ, nor of the token's length.
    key: [u8; 32],
    /// HMAC-SHA256 of the token under `key`.
    tag: [u8; 32],
}

impl AdminToken {
    /// A token given in memory.
    ///
    /// # Errors
    /// [`AuthError::SecretFile`] when it is shorter than 16 bytes or not printable
    /// ASCII.
    pub fn new(token: impl AsRef<[u8]>) -> Result<Self, AuthError> {
        Self::checked(token.as_ref(), "the admin token (in memory)")
    }

    /// Reads a token from a file, ignoring one trailing newline. A file that users
    /// other than its owner can read is taken, with a warning to `chmod 600` it.
    ///
    /// # Errors
    /// [`AuthError::SecretFile`] naming the file, when it cannot be read or holds no
    /// usable token.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        #[cfg(unix)]
        if let Ok(metadata) = std::fs::metadata(path)
            && let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions())
            && mode & 0o077 != 0
        {
            tracing::warn!(
                path = %source,
                mode = format!("{:o}", mode & 0o777),
                "the admin token file can be read by other users: chmod 600 it"
            );
        }
        let bytes = std::fs::read(path).map_err(|e| AuthError::SecretFile {
            path: source.clone(),
            reason: e.to_string(),
        })?;
        let token = bytes
            .strip_suffix(b"\r\n")
            .or_else(|| bytes.strip_suffix(b"\n"))
            .unwrap_or(&bytes);
        Self::checked(token, &source)
    }

    fn checked(token: &[u8], source: &str) -> Result<Self, AuthError> {
        let refuse = |reason: String| AuthError::SecretFile {
            path: source.to_owned(),
            reason,
        };
        if token.len() < MIN_ADMIN_TOKEN_LEN {
            return Err(refuse(format!(
                "an admin token of {} bytes; at least {MIN_ADMIN_TOKEN_LEN} are required \
                 (make one with `openssl rand -hex 32`)",
                token.len()
            )));
        }
        if !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(refuse(
                "an admin token is printable ASCII without spaces: it travels in an HTTP \
                 header (make one with `openssl rand -hex 32`)"
                    .into(),
            ));
        }
        let key: [u8; 32] = rand::random();
        let tag = Self::mac(&key, token).finalize().into_bytes().into();
        Ok(Self { key, tag })
    }

    fn mac(key: &[u8; 32], token: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
        mac.update(token);
        mac
    }

    /// Whether `presented` is the token, in time that does not depend on where they
    /// differ (the MAC's own constant-time comparison).
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        Self::mac(&self.key, presented)
            .verify_slice(&self.tag)
            .is_ok()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
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
