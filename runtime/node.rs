//! A node: one process's presence in the cluster. It has a name, an incarnation, a
//! shared secret, a registry of named local actors, one gRPC server, and one link per
//! peer it dials. Sessions hang off the node, never off a request.
//!
//! ```text
//! Node (name, incarnation, secret)
//! ├── server task (tonic, one HTTP/2 connection per peer that dials us)
//! │   ├── per accepted session: Driver task ──> registered actor's mailbox
//! │   └── health and reflection (standard gRPC services), up until the drain is over
//! ├── links (one HTTP/2 connection per peer we dial)
//! │   └── per opened session:   Driver task ──> owner actor's mailbox
//! └── Shutdown (cancellation token + task tracker): every driver selects on the token,
//!     sends its farewell, and ends its own stream; shutdown waits with a bound.
//! ```
//!
//! Actors stay under their own ractor supervisors; the node never owns them. A session
//! tells its owner about its life through [`crate::SessionSignal`]s in the owner's mailbox.

mod admin;
mod admission;
mod cluster;
mod control;
mod kinds;
mod link;
mod metrics;
mod pre_auth;
mod service;
mod standard;
mod status;
mod stop_reasons;
mod watcher;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Instant;

use ractor::{ActorCell, ActorId, ActorRef};
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tonic::transport::Server;

use crate::actor::mailbox::{
    Batched, Deliver, FromSession, InboundBatch, Lost, Serving, SessionSignal,
};
use crate::auth::{Secret, TlsBinding};
use crate::budget::{BudgetConfig, Budgets};
use crate::config::{NodeConfig, SessionPolicy};
use crate::driver::transport::stubs::duologue_server::DuologueServer;
use crate::driver::{
    Attach, Closed, Context, Dialer, Driver, DriverConfig, NodeHooks, Restart, backoff,
};
use crate::error::LostReason;
use crate::error::{CloseReason, ConnectError, NodeError};
use crate::handles::remote_ref::{Protocol, RemoteRef, SessionSlot};
use crate::handles::session_ref::SessionRef;
use crate::handles::state::Shared;
use crate::log_budget;
use crate::session::{Role, Session, SessionConfig};
use crate::shutdown::Shutdown;
use crate::tls::{ClientTls, ServerTls, TlsAccept, TlsRefusedByPort, is_tls_failure, serves_tls};
use crate::wire::{GoodbyeReason, NodeIdentity, Refusal, RefuseReason, SessionId};

pub use self::cluster::Located;
pub use self::control::{CONTROL_ACTOR, MembersAt, SpawnOn, Spawned};
pub(crate) use self::kinds::Kinds;
pub use self::kinds::{ActorSpec, Hosted};
pub use self::status::{ClusterStatus, NodeStatus, Rate, RatePoint, SessionState, SessionStatus};

use self::admission::{Admission, Descriptors, Port};
use self::cluster::Membership;
use self::control::{ControlActor, WeakNode};
use self::link::{Idle, Links};
use self::metrics::NodeMetrics;
use self::pre_auth::{PreAuthLayer, StandardPlaces};
use self::service::Service;
use self::standard::Standard;
use self::status::SessionTable;
use self::stop_reasons::StopReasons;

/// Something that happened to a session of this node, for monitoring and tests.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// A session completed its handshake.
    SessionOpened {
        /// Its id.
        session: SessionId,
        /// The peer node.
        peer: NodeIdentity,
        /// The actor on the acceptor's side.
        actor: String,
    },
    /// A session ended during its handshake: a wrong secret, an unknown actor, a
    /// malformed greeting.
    SessionRejected {
        /// Where it came from, when known.
        remote_addr: Option<SocketAddr>,
        /// Why.
        reason: CloseReason,
    },
    /// An established session closed.
    SessionClosed {
        /// Its id.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
    /// The node's server stopped after its last handle was dropped without
    /// [`Node::shutdown`]: its listening socket is closed and the port free.
    ServerStopped,
}

/// Builds and starts a [`Node`].
#[derive(Debug, Default)]
pub struct NodeBuilder {
    config: NodeConfig,
    secret: Option<Result<Secret, NodeError>>,
    kinds: Kinds,
}

impl NodeBuilder {
    /// The node's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Accept sessions on `addr` (port 0 picks a free port; see [`Node::local_addr`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = Some(addr);
        self
    }

    /// The cluster's shared secret.
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secret = Some(Ok(secret));
        self
    }

    /// Reads the shared secret from a file.
    pub fn secret_file(mut self, path: impl AsRef<Path>) -> Self {
        self.secret = Some(Secret::from_file(path).map_err(NodeError::from));
        self
    }

    /// The connect deadline ([`NodeConfig::connect_timeout`]).
    pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Per-session settings.
    pub fn session_config(mut self, session: SessionConfig) -> Self {
        self.config.session = session;
        self
    }

    /// The memory budgets the node's sessions share ([`NodeConfig::budget`]).
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.config.budget = budget;
        self
    }

    /// Serves TLS ([`NodeConfig::tls`]): sessions are accepted only over TLS, and, when
    /// `tls` has a client CA, only from clients with a certificate from it.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Dials peers over TLS ([`NodeConfig::peer_tls`]), trusting the CA of `tls` and
    /// presenting its client certificate, if it has one, to peers that require one.
    pub fn peer_tls(mut self, tls: ClientTls) -> Self {
        self.config.peer_tls = Some(tls);
        self
    }

    /// Lets the node serve plaintext on an address off the loopback interface
    /// ([`NodeConfig::insecure_plaintext`]): for a network you trust, or TLS terminated
    /// in front of the node.
    pub fn insecure_plaintext(mut self) -> Self {
        self.config.insecure_plaintext = true;
        self
    }

    /// Serves metrics, status JSON and the status page on `addr`
    /// ([`NodeConfig::admin`]; port 0 picks a free one, [`Node::admin_addr`] tells it).
    pub fn admin(mut self, addr: SocketAddr) -> Self {
        self.config.admin = Some(addr);
        self
    }

    /// Who may read the admin address, and how ([`NodeConfig::admin_access`]): a token,
    /// TLS, the `Host` names it answers.
    pub fn admin_access(mut self, access: crate::config::AdminAccess) -> Self {
        self.config.admin_access = access;
        self
    }

    /// Replaces the whole configuration (name and listen address included).
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// Hosts actors of `kind` on request ([`Node::host`], and peers' [`Node::spawn`]):
    /// `host` gets the node and the [`ActorSpec`], spawns the actor, registers it under
    /// `spec.name` and returns its cell. A node in a cluster publishes its kinds, so
    /// that [`SpawnOn::AnyOffering`] finds it.
    ///
    /// # Panics
    /// When `kind` was registered already (a programming error).
    pub fn kind<F, Fut>(mut self, kind: &str, about: &str, host: F) -> Self
    where
        F: Fn(Node, ActorSpec) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<ActorCell, String>> + Send + 'static,
    {
        self.kinds.add(kind, about, host);
        self
    }

    /// Hosts the kinds of a node binary ([`crate::cli::NodeMain`]).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) fn with_kinds(mut self, kinds: Kinds) -> Self {
        self.kinds = kinds;
        self
    }

    /// Starts the node: binds its listener (if any) and serves.
    ///
    /// # Errors
    /// [`NodeError::NoSecret`] or [`NodeError::Secret`] without a usable secret,
    /// [`NodeError::PlaintextListen`] for plaintext off the loopback interface without
    /// [`NodeBuilder::insecure_plaintext`], [`NodeError::Tls`] when the certificate
    /// cannot be served, [`NodeError::Bind`] when the address cannot be bound.
    pub async fn start(self) -> Result<Node, NodeError> {
        let secret = self.secret.ok_or(NodeError::NoSecret)??;
        let config = self.config;
        let kinds = self.kinds;
        if let Some(addr) = config.listen
            && config.tls.is_none()
            && !config.insecure_plaintext
            && !addr.ip().is_loopback()
        {
            return Err(NodeError::PlaintextListen { addr });
        }
        admin::check_exposure(&config)?;
        let session_tls = config
            .tls
            .as_ref()
            .map(|tls| tls.session_config())
            .transpose()?;
        let listener =
            match config.listen {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    NodeError::Bind {
                        addr: addr.to_string(),
                        reason: e.to_string(),
                    }
                })?),
                None => None,
            };
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let bookkeeping_changed = Arc::new(Notify::new());
        let inner = Arc::new(NodeInner {
            resumable: Mutex::new(HashMap::new()),
            owned: Mutex::new(HashMap::new()),
            stop_reasons: StopReasons::default(),
            failed_handshakes: log_budget::LogBudget::new(),
            bookkeeping_changed: bookkeeping_changed.clone(),
            standard_places: StandardPlaces::new(
                config.admission.max_standard_streams,
                bookkeeping_changed,
            ),
            watcher: OnceLock::new(),
            identity: NodeIdentity {
                name: config.name.clone(),
                incarnation: uuid::Uuid::new_v4(),
            },
            secret,
            budgets: Budgets::new(config.budget.clone()),
            registry: RwLock::new(HashMap::new()),
            links: Arc::new(Links::default()),
            shutdown: Shutdown::default(),
            events: broadcast::channel(1024).0,
            local_addr,
            kinds,
            hosted: Mutex::new(Vec::new()),
            hosting: std::sync::atomic::AtomicUsize::new(0),
            spawn_refusals: crate::log_budget::LogBudget::new(),
            tls_refused: TlsRefusedByPort::default(),
            membership: OnceLock::new(),
            sessions: SessionTable::default(),
            started: Instant::now(),
            metrics: config.admin.map(|_| NodeMetrics::new()),
            admin_addr: OnceLock::new(),
            admin_task: Mutex::new(None),
            admin_stop: tokio_util::sync::CancellationToken::new(),
            config,
        });
        // One descriptor budget for every port that accepts connections.
        let descriptors = Descriptors::new(&inner.config);
        if let Some(addr) = inner.config.admin {
            let (bound, task) =
                admin::start(&inner, addr, descriptors.clone(), inner.admin_stop.clone()).await?;
            let _ = inner.admin_addr.set(bound);
            *lock(&inner.admin_task) = Some(task);
        }
        tokio::spawn(sample_sessions(Arc::downgrade(&inner)));
        let watcher = watcher::Watcher::start(Arc::downgrade(&inner)).await?;
        let _ = inner.watcher.set(watcher);
        if let Some(cluster) = &inner.config.cluster {
            let membership = Membership::start(
                &inner.identity,
                cluster,
                local_addr,
                &inner.kinds,
                &inner.secret,
                inner.shutdown.token().clone(),
            )
            .await?;
            let _ = inner.membership.set(membership);
        }
        let listening = listener.is_some();
        let standard = Standard::new().await;
        let server = listener.map(|listener| {
            // The TLS handshake of a stranger is bounded as the session handshake is.
            let tls = session_tls.map(|config| {
                TlsAccept::new(
                    config,
                    inner.config.session.handshake_timeout,
                    "session",
                    inner.tls_refused.session.clone(),
                )
            });
            let serving = serve(inner.clone(), listener, descriptors, tls, standard.clone());
            tokio::spawn(serving)
        });
        let handles = Arc::new(Handles {
            server: std::sync::Mutex::new(server),
            standard,
            shutdown: inner.shutdown.clone(),
            events: inner.events.clone(),
            control: std::sync::Mutex::new(None),
            admin_stop: inner.admin_stop.clone(),
        });
        let node = Node { inner, handles };
        if listening {
            let control = ControlActor::start(WeakNode {
                inner: Arc::downgrade(&node.inner),
                handles: Arc::downgrade(&node.handles),
            })
            .await?;
            node.register(CONTROL_ACTOR, &control)?;
            *lock(&node.handles.control) = Some(control.get_cell());
        }
        Ok(node)
    }
}

/// Serves sessions and the standard services until `standard` says the drain is over:
/// through the drain the server still answers (health with `NOT_SERVING`, new sessions
/// with a refusal), so that peers and probes learn the node is going rather than find
/// its port closed.
async fn serve(
    node: Arc<NodeInner>,
    listener: tokio::net::TcpListener,
    descriptors: Arc<Descriptors>,
    tls: Option<TlsAccept>,
    standard: Standard,
) {
    let config = &node.config;
    let incoming = Admission::new(
        listener,
        Port::Session,
        config.admission.connection_idle_timeout,
        descriptors,
    );
    let service = DuologueServer::new(Service { node: node.clone() })
        .max_decoding_message_size(config.frame_limit())
        .max_encoding_message_size(config.frame_limit());
    let router = Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .initial_stream_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .http2_adaptive_window(Some(false))
        .max_frame_size(config.max_frame_size)
        .max_concurrent_streams(config.max_sessions_per_peer)
        .layer(PreAuthLayer::new(
            config.admission.clone(),
            node.standard_places.clone(),
        ))
        .add_service(service);
    let router = standard.add_to(router);
    let result = match tls {
        None => {
            router
                .serve_with_incoming_shutdown(incoming, standard.stopped())
                .await
        }
        // Handshakes done here, not in tonic, so that refusals are counted and said.
        Some(tls) => {
            let at_once = config.admission.max_connections;
            let incoming = tls.incoming(incoming, at_once, |conn| Some(conn.info().remote));
            router
                .serve_with_incoming_shutdown(incoming, standard.stopped())
                .await
        }
    };
    if let Err(error) = result {
        tracing::error!(%error, "server stopped");
    }
}

/// An established acceptor session a peer may resume, and where its stream goes.
#[derive(Clone, Debug)]
pub(crate) struct Resumable {
    pub(crate) shared: Arc<Shared>,
    pub(crate) attach: mpsc::Sender<Attach>,
}

/// A running node. Cheap to clone; all clones are the same node. Dropping the last clone
/// without [`Node::shutdown`] ends every session at once (no drain) and stops the server,
/// freeing its port.
#[derive(Clone, Debug)]
pub struct Node {
    inner: Arc<NodeInner>,
    handles: Arc<Handles>,
}

/// What the `Node` handles share: the server task, and what dropping the last handle does.
#[derive(Debug)]
struct Handles {
    server: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The health it reports, and what stops the server.
    standard: Standard,
    shutdown: Shutdown,
    events: broadcast::Sender<NodeEvent>,
    /// The `$node` control actor, stopped with the node.
    control: std::sync::Mutex<Option<ActorCell>>,
    /// Stops the admin server when the last handle goes without a shutdown.
    admin_stop: tokio_util::sync::CancellationToken,
}

/// The last `Node` handle dropped without [`Node::shutdown`]: nobody can wait for a
/// drain, so every session and task is told to end now, and the server stops, which
/// frees its port.
impl Drop for Handles {
    fn drop(&mut self) {
        self.admin_stop.cancel();
        self.shutdown.token().cancel();
        self.standard.stop_now();
        if let Some(control) = lock(&self.control).take() {
            control.stop(None);
        }
        let server = self
            .server
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(server) = server {
            server.abort();
            // The socket closes once the aborted task is dropped: say when, for whoever
            // listens (the port can then be bound again).
            let events = self.events.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = server.await;
                    let _ = events.send(NodeEvent::ServerStopped);
                });
            }
        }
    }
}

/// The node's state shared with its service and drivers.
#[derive(Debug)]
pub(crate) struct NodeInner {
    pub(crate) identity: NodeIdentity,
    pub(crate) config: NodeConfig,
    pub(crate) secret: Secret,
    /// The memory budgets all its sessions share.
    budgets: Arc<Budgets>,
    registry: RwLock<HashMap<String, Arc<dyn Deliver>>>,
    links: Arc<Links>,
    pub(crate) shutdown: Shutdown,
    events: broadcast::Sender<NodeEvent>,
    local_addr: Option<SocketAddr>,
    /// Established acceptor sessions a peer may resume, and where to route its stream.
    resumable: Mutex<HashMap<SessionId, Resumable>>,
    /// Sessions by the actor that owns them, to end them when it stops.
    owned: Mutex<HashMap<ActorId, Vec<Weak<Shared>>>>,
    /// Stop reasons of watched actors, for the farewell of their sessions.
    stop_reasons: StopReasons,
    /// Lines a peer can cause by failing handshakes: a few per window, the rest counted.
    failed_handshakes: log_budget::LogBudget,
    /// Places of the standard services' streams (health, reflection) before
    /// authentication; those in use are in [`Node::bookkeeping`].
    standard_places: StandardPlaces,
    /// Told whenever a count of [`Node::bookkeeping`] may have changed.
    bookkeeping_changed: Arc<Notify>,
    /// Watches registered actors and session owners.
    watcher: OnceLock<ActorCell>,
    /// The kinds of actor it starts on request.
    kinds: Kinds,
    /// The actors it started on request, stopped by [`Node::stop_hosted`].
    hosted: Mutex<Vec<ActorCell>>,
    /// Spawns under way: they hold a place under `max_hosted` while their actor starts.
    hosting: std::sync::atomic::AtomicUsize,
    /// Spawns refused (a name it does not take, a bound reached): a peer can ask for
    /// these at will, so a few log lines per window.
    spawn_refusals: crate::log_budget::LogBudget,
    /// The TLS handshakes its ports refused.
    pub(crate) tls_refused: TlsRefusedByPort,
    /// Its cluster membership, when it has a cluster config.
    membership: OnceLock<Arc<Membership>>,
    /// Its established sessions, for [`Node::status`].
    sessions: SessionTable,
    /// When it started.
    started: Instant,
    /// Its metrics, when it has an admin address.
    metrics: Option<NodeMetrics>,
    /// Where its admin server listens, once bound.
    admin_addr: OnceLock<SocketAddr>,
    /// The admin server's task, awaited (bounded) at the end of [`Node::shutdown`].
    admin_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Stops the admin server: at the end of [`Node::shutdown`], or when the node is gone.
    admin_stop: tokio_util::sync::CancellationToken,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        self.admin_stop.cancel();
    }
}

/// Samples the node's sessions into rates, once a second, until its shutdown is over
/// (through the drain, which the admin server shows) or it is gone.
async fn sample_sessions(node: Weak<NodeInner>) {
    let Some(cancel) = node.upgrade().map(|n| n.admin_stop.clone()) else {
        return;
    };
    let mut every = tokio::time::interval(status::SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        node.sessions.sample();
        if let Some(metrics) = &node.metrics {
            // The members' names are not needed for figures: not copied every second.
            metrics.publish(&node.status_with(false), false);
        }
    }
}

impl std::fmt::Debug for dyn Deliver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<mailbox>")
    }
}

impl Node {
    /// A builder with default settings.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This node's name and incarnation.
    pub fn identity(&self) -> &NodeIdentity {
        &self.inner.identity
    }

    /// The address the node accepts sessions on, if it listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Makes `actor` reachable by peers under `name`. Sessions opened to `name` deliver
    /// into its mailbox. A typed mailbox ([`crate::Mailbox`]) names its protocol, and a
    /// session that names another is refused in the handshake; an untyped one accepts
    /// any (see [`Node::register_serving`]).
    ///
    /// # Errors
    /// [`NodeError::NameTaken`] when a live actor holds the name;
    /// [`NodeError::InvalidName`] for a name (or protocol) a node does not take
    /// ([`crate::MAX_NAME_BYTES`]); [`NodeError::TooManyNames`] past
    /// [`NodeConfig::max_names`].
    pub fn register<M>(&self, name: impl Into<String>, actor: &ActorRef<M>) -> Result<(), NodeError>
    where
        M: FromSession,
    {
        self.register_deliver(name.into(), Arc::new(actor.clone()), actor.get_cell())
    }

    /// As [`Node::register`], for an actor with an untyped mailbox (`SessionMsg`, or an
    /// enum of its own) that serves the protocol `P`: a session that names another
    /// protocol is refused in the handshake, before any message, with
    /// [`ConnectError::ProtocolMismatch`] at the initiator.
    ///
    /// # Errors
    /// [`NodeError::NameTaken`] when a live actor holds the name.
    pub fn register_serving<P, M>(
        &self,
        name: impl Into<String>,
        actor: &ActorRef<M>,
    ) -> Result<(), NodeError>
    where
        P: Protocol,
        M: FromSession,
    {
        let serving = Serving {
            actor: actor.clone(),
            protocol: P::name(),
        };
        self.register_deliver(name.into(), Arc::new(serving), actor.get_cell())
    }

    /// As [`Node::register`], for an actor that takes a run of messages that arrived
    /// together as one mailbox message ([`InboundBatch`]): one
    /// mailbox operation per run instead of one per message, for an actor that handles
    /// many small messages. A message that arrives alone still comes as an `Inbound`.
    ///
    /// # Errors
    /// [`NodeError::NameTaken`] when a live actor holds the name.
    pub fn register_batched<M>(
        &self,
        name: impl Into<String>,
        actor: &ActorRef<M>,
    ) -> Result<(), NodeError>
    where
        M: FromSession + From<InboundBatch>,
    {
        self.register_deliver(
            name.into(),
            Arc::new(Batched(actor.clone())),
            actor.get_cell(),
        )
    }

    fn register_deliver(
        &self,
        name: String,
        deliver: Arc<dyn Deliver>,
        cell: ActorCell,
    ) -> Result<(), NodeError> {
        let protocol = deliver.protocol().unwrap_or_default();
        if let Err(reason) =
            crate::names::check_name(&name).and_then(|()| crate::names::check_protocol(&protocol))
        {
            return Err(NodeError::InvalidName {
                name: crate::names::printable(&name, 80),
                reason,
            });
        }
        let mut registry = self
            .inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if registry.get(&name).is_some_and(|d| d.is_alive()) {
            return Err(NodeError::NameTaken(name));
        }
        let limit = self.inner.config.max_names;
        if registry.len() >= limit {
            // Names of actors that stopped leave as new ones come.
            registry.retain(|_, deliver| deliver.is_alive());
            if registry.len() >= limit {
                return Err(NodeError::TooManyNames { limit });
            }
        }
        registry.insert(name.clone(), deliver);
        drop(registry);
        self.inner.watch(cell);
        self.inner.publish(&name, &protocol);
        Ok(())
    }

    /// How many live actors hold a name on this node.
    pub(crate) fn names_held(&self) -> usize {
        let registry = self
            .inner
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner());
        registry.values().filter(|d| d.is_alive()).count()
    }

    /// Whether a live actor holds `name` on this node.
    pub(crate) fn is_registered(&self, name: &str) -> bool {
        let registry = self
            .inner
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner());
        registry.get(name).is_some_and(|d| d.is_alive())
    }

    /// The address peers open sessions to: the cluster's advertised one, or the listen
    /// address.
    pub(crate) fn advertised_addr(&self) -> Option<String> {
        self.inner
            .config
            .cluster
            .as_ref()
            .and_then(|c| c.advertise.clone())
            .or_else(|| self.local_addr().map(|a| a.to_string()))
    }

    /// Removes a name; sessions already open stay open.
    pub fn unregister(&self, name: &str) {
        let mut registry = self
            .inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner());
        registry.remove(name);
        drop(registry);
        if let Some(membership) = self.inner.membership.get() {
            membership.unpublish(name);
        }
    }

    /// Opens a session to the actor `actor` on the node at `addr` (`host:port`), owned by
    /// the local actor `owner`: the remote actor's messages and the session's signals go
    /// into `owner`'s mailbox. Returns once the handshake completed. The session follows
    /// the node's default [`SessionPolicy`].
    ///
    /// A connection refused or reset, or a stream broken before the handshake completed,
    /// is retried with the reconnect backoff until the connect deadline
    /// ([`NodeConfig::connect_timeout`]); a refusal by the peer is not.
    ///
    /// # Errors
    /// [`ConnectError::Unreachable`] (with the last attempt's cause) once the connect
    /// deadline passed or when the peer did not complete a handshake in time,
    /// [`ConnectError::UnknownActor`], [`ConnectError::Auth`] (the secrets differ),
    /// [`ConnectError::Closed`] for any other failed handshake,
    /// [`ConnectError::ShuttingDown`], [`ConnectError::OwnerStopped`].
    pub async fn connect<P, M>(
        &self,
        addr: &str,
        actor: &str,
        owner: &ActorRef<M>,
    ) -> Result<RemoteRef<P>, ConnectError>
    where
        P: Protocol,
        M: FromSession,
    {
        self.connect_with(addr, actor, owner, self.inner.config.policy)
            .await
    }

    /// As [`Node::connect`], with the session's own [`SessionPolicy`].
    ///
    /// # Errors
    /// As [`Node::connect`].
    pub async fn connect_with<P, M>(
        &self,
        addr: &str,
        actor: &str,
        owner: &ActorRef<M>,
        policy: SessionPolicy,
    ) -> Result<RemoteRef<P>, ConnectError>
    where
        P: Protocol,
        M: FromSession,
    {
        self.connect_owner(addr, actor, Arc::new(owner.clone()), policy)
            .await
    }

    /// As [`Node::connect_with`], for an owner that takes a run of messages that arrived
    /// together as one mailbox message ([`InboundBatch`]; see [`Node::register_batched`]).
    ///
    /// # Errors
    /// As [`Node::connect`].
    pub async fn connect_batched<P, M>(
        &self,
        addr: &str,
        actor: &str,
        owner: &ActorRef<M>,
        policy: SessionPolicy,
    ) -> Result<RemoteRef<P>, ConnectError>
    where
        P: Protocol,
        M: FromSession + From<InboundBatch>,
    {
        self.connect_owner(addr, actor, Arc::new(Batched(owner.clone())), policy)
            .await
    }

    /// Opens a session to the actor `actor` on the node at `addr`, owned by an
    /// [`InboxReceiver`] instead of a local actor: send through the [`RemoteRef`], read
    /// what the peer sends (and the session's signals) from the receiver. Connecting
    /// retries transient faults as [`Node::connect`] does; the node's default
    /// [`SessionPolicy`] applies (`Escalate` acts as `Resume`: there is no actor to stop).
    ///
    /// # Errors
    /// As [`Node::connect`].
    pub async fn connect_inbox<P: Protocol>(
        &self,
        addr: &str,
        actor: &str,
    ) -> Result<(RemoteRef<P>, crate::actor::inbox::InboxReceiver<P>), ConnectError> {
        self.connect_inbox_with(addr, actor, self.config().policy)
            .await
    }

    /// As [`Node::connect_inbox`], with the session's own [`SessionPolicy`].
    ///
    /// # Errors
    /// As [`Node::connect`].
    pub async fn connect_inbox_with<P: Protocol>(
        &self,
        addr: &str,
        actor: &str,
        policy: SessionPolicy,
    ) -> Result<(RemoteRef<P>, crate::actor::inbox::InboxReceiver<P>), ConnectError> {
        let (owner, inbox) = crate::actor::inbox::new_inbox();
        let remote = self.connect_owner(addr, actor, owner, policy).await?;
        Ok((remote.clone(), inbox.receiver(remote)))
    }

    /// Opens a session delivering into `owner`, as [`Node::connect_with`] describes.
    pub(crate) async fn connect_owner<P: Protocol>(
        &self,
        addr: &str,
        actor: &str,
        owner: Arc<dyn Deliver>,
        policy: SessionPolicy,
    ) -> Result<RemoteRef<P>, ConnectError> {
        let retry = Retry {
            deadline: Instant::now() + self.inner.config.connect_timeout,
            restart: false,
        };
        let (_, slot) = self
            .inner
            .open_session(
                addr,
                actor,
                owner,
                policy,
                SessionSlot::speaking::<P>(),
                retry,
            )
            .await
            .map_err(|gave_up| gave_up.error)?;
        Ok(RemoteRef::new(slot))
    }

    /// How much per-peer and per-actor state the node holds now: for monitoring, and for
    /// tests that check nothing accumulates.
    pub fn bookkeeping(&self) -> Bookkeeping {
        let inner = &self.inner;
        Bookkeeping {
            links: inner.links.len(),
            stop_reasons: inner.stop_reasons.len(),
            resumable: lock(&inner.resumable).len(),
            owners: lock(&inner.owned).len(),
            standard_streams: inner.standard_places.in_use(),
        }
    }

    /// Resolves at the next change of [`Node::bookkeeping`]'s counts (and now and then
    /// without one): for waiting until they settle instead of polling. Create it before
    /// reading the counts, so that a change in between is not missed:
    ///
    /// ```no_run
    /// # async fn f(node: duologue::Node, wanted: duologue::Bookkeeping) {
    /// loop {
    ///     let changed = node.bookkeeping_changed();
    ///     if node.bookkeeping() == wanted {
    ///         break;
    ///     }
    ///     changed.await;
    /// }
    /// # }
    /// ```
    pub fn bookkeeping_changed(&self) -> Notified<'_> {
        self.inner.bookkeeping_changed.notified()
    }

    /// What the node is doing now: its sessions (state, credit, backlog, rates), its
    /// cluster's members, what its sessions carried, and five minutes of its rates.
    pub fn status(&self) -> NodeStatus {
        self.inner.status()
    }

    /// Where the node serves its metrics and status page ([`NodeConfig::admin`]), once
    /// bound.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr.get().copied()
    }

    /// Subscribes to this node's [`NodeEvent`]s from now on.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// Shuts down: health says `NOT_SERVING`, new sessions are refused, every session ends
    /// with a farewell; waits up to the configured drain for their streams to finish,
    /// then cancels what is left and stops the server. Returns whether everything ended
    /// within the drain.
    ///
    /// The server answers until the drain is over (health checks, refusals), then stops
    /// accepting; it is given [`NodeConfig::close_linger`] more for its connections to
    /// close before they are dropped.
    pub async fn shutdown(&self) -> bool {
        // Before the token: no health check answers `SERVING` once sessions are refused.
        self.handles.standard.draining().await;
        let drain = self.inner.config.shutdown_drain;
        let leave = async {
            if let Some(membership) = self.inner.membership.get() {
                membership.leave(drain).await;
            }
        };
        let (drained, ()) = tokio::join!(self.inner.shutdown.run(drain), leave);
        self.handles.standard.stop().await;
        if let Some(control) = lock(&self.handles.control).take() {
            control.stop(None);
        }
        // tonic's graceful shutdown waits for connections without a bound; ours is over.
        let server = self
            .handles
            .server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut server) = server
            && tokio::time::timeout(self.inner.config.close_linger, &mut server)
                .await
                .is_err()
        {
            server.abort();
            let _ = server.await;
        }
        self.inner.admin_stop.cancel();
        // axum's graceful shutdown waits for open connections without a bound.
        let admin = lock(&self.inner.admin_task).take();
        if let Some(mut admin) = admin
            && tokio::time::timeout(self.inner.config.close_linger, &mut admin)
                .await
                .is_err()
        {
            admin.abort();
        }
        drained
    }
}

/// Counts of a node's bookkeeping, from [`Node::bookkeeping`]. Each returns to zero once
/// the sessions are over (links after [`NodeConfig::link_idle_timeout`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bookkeeping {
    /// Connections to peers this node dialled.
    pub links: usize,
    /// Stop reasons kept for sessions of stopped actors that are still open.
    pub stop_reasons: usize,
    /// Accepted sessions a peer may resume.
    pub resumable: usize,
    /// Live actors owning sessions (or having owned one).
    pub owners: usize,
    /// Open streams of the standard services (health, reflection), each holding a place
    /// of [`crate::AdmissionConfig::max_standard_streams`].
    pub standard_streams: usize,
}

/// How hard [`NodeInner::open_session`] tries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry {
    /// No attempt starts after this (one under way may take up to the handshake timeout).
    pub(crate) deadline: Instant,
    /// A restart also retries what a returning peer may outgrow: an actor not yet
    /// registered, a peer shutting down, a handshake timeout. Otherwise only a refused,
    /// reset or broken connection is retried.
    pub(crate) restart: bool,
}

/// Opening a session failed for good.
#[derive(Debug)]
pub(crate) struct GaveUp {
    /// Why the last attempt failed.
    pub(crate) error: ConnectError,
    /// How many attempts were made.
    pub(crate) attempts: u32,
}

/// One failed attempt to open a session.
struct Failure {
    error: ConnectError,
    /// The connection failed (refused, reset, broken): another attempt may succeed.
    transient: bool,
}

impl Failure {
    fn worth_retrying(&self, retry: Retry) -> bool {
        self.transient
            || (retry.restart
                && !matches!(
                    self.error,
                    ConnectError::Auth { .. }
                        | ConnectError::InvalidAddress { .. }
                        | ConnectError::ShuttingDown
                        | ConnectError::OwnerStopped
                ))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a session is opened to, and for whom.
struct Target {
    addr: String,
    actor: String,
    owner: Arc<dyn Deliver>,
    policy: SessionPolicy,
    /// Where the established session goes, with the protocol its `Hello` names (a
    /// restart passes the lost session's slot).
    slot: Arc<SessionSlot>,
}

/// `error`, counting `attempts` when it says the peer was unreachable.
fn with_attempts(error: ConnectError, attempts: u32) -> ConnectError {
    match error {
        ConnectError::Unreachable { addr, reason, .. } => ConnectError::Unreachable {
            addr,
            reason,
            attempts,
        },
        other => other,
    }
}

fn connect_error(addr: String, actor: &str, protocol: &str, reason: CloseReason) -> ConnectError {
    if let Some(error) = reason.auth_error() {
        return ConnectError::Auth { addr, error };
    }
    match reason {
        CloseReason::RefusedByPeer(Refusal {
            reason: RefuseReason::UnknownActor,
            ..
        }) => ConnectError::UnknownActor {
            addr,
            actor: actor.to_owned(),
        },
        CloseReason::RefusedByPeer(Refusal {
            reason: RefuseReason::ProtocolMismatch { acceptor },
            ..
        }) => ConnectError::ProtocolMismatch {
            addr,
            actor: actor.to_owned(),
            ours: protocol.to_owned(),
            theirs: acceptor,
        },
        CloseReason::Transport(reason) if is_tls_failure(&reason) => ConnectError::Tls {
            reason: tls_hint(&reason, &addr),
            addr,
        },
        CloseReason::Transport(reason) => ConnectError::Unreachable {
            addr,
            reason,
            attempts: 1,
        },
        CloseReason::HandshakeTimeout => ConnectError::Unreachable {
            addr,
            reason: "the peer did not complete the handshake in time".into(),
            attempts: 1,
        },
        reason => ConnectError::Closed { addr, reason },
    }
}

/// How long a dial that broke waits to learn whether TLS was the cause.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// rustls' words for a failed TLS handshake, with what to do about the usual causes.
fn tls_hint(reason: &str, addr: &str) -> String {
    let hint = if reason.contains("CertificateRequired") || reason.contains("no certificates") {
        "the peer requires a client certificate (mutual TLS): give this node one \
         (--tls-client-cert FILE --tls-client-key FILE, or ClientTls::identity_files)"
    } else if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
        "the peer's certificate is not from the CA this node trusts (--tls-ca)"
    } else if reason.contains("UnknownCA") || reason.contains("BadCertificate") {
        "the peer does not trust this node's client certificate"
    } else if reason.contains("NotValidForName") {
        "the peer's certificate does not name the host dialled (ClientTls::domain)"
    } else if reason.contains("corrupt message") {
        "the peer does not seem to speak TLS"
    } else {
        return reason.to_owned();
    };
    format!("{hint} ({addr}: {reason})")
}

impl NodeInner {
    /// See [`Node::status`].
    pub(crate) fn status(&self) -> NodeStatus {
        self.status_with(true)
    }

    /// The node's status, its members listed only `with_members`.
    pub(crate) fn status_with(&self, with_members: bool) -> NodeStatus {
        let snapshot = self.sessions.snapshot();
        let live = self.membership.get().filter(|m| m.stopped().is_none());
        let members = match live {
            Some(membership) if with_members => membership.view().members(),
            _ => Vec::new(),
        };
        let cluster = live.map(|membership| membership.figures());
        NodeStatus {
            identity: self.identity.clone(),
            addr: self.local_addr,
            uptime: self.started.elapsed(),
            draining: self.shutdown.is_triggered(),
            sessions: snapshot.sessions,
            members,
            cluster,
            tls_refused: self.tls_refused.all(),
            totals: snapshot.totals,
            credit_waited: snapshot.credit_waited,
            sessions_opened: snapshot.opened,
            history: snapshot.history,
        }
    }

    /// What the node's drivers share: this node to report to, settings, shutdown.
    pub(crate) fn driver_context(self: &Arc<Self>) -> Context {
        Context {
            node: self.clone(),
            config: self.driver_config(),
            cancel: self.shutdown.token().clone(),
            budgets: self.budgets.clone(),
        }
    }

    fn driver_config(&self) -> DriverConfig {
        DriverConfig {
            close_linger: self.config.close_linger,
            reconnect_base: self.config.reconnect_base,
            reconnect_max: self.config.reconnect_max,
            handshake_timeout: self.config.session.handshake_timeout,
        }
    }

    /// Opens a session and waits for its handshake, retrying as `retry` allows. The
    /// session greets the peer with `slot`'s protocol and goes into `slot`, replacing
    /// the one there (a restart). Stops trying when `owner` stops or the node shuts down.
    ///
    /// The future is boxed and `Send` by declaration: a restart opens a session from a
    /// task a session's driver asked for, and that recursion defeats `Send` inference.
    pub(crate) fn open_session(
        self: &Arc<Self>,
        addr: &str,
        actor: &str,
        owner: Arc<dyn Deliver>,
        policy: SessionPolicy,
        slot: Arc<SessionSlot>,
        retry: Retry,
    ) -> futures::future::BoxFuture<'static, Result<(SessionRef, Arc<SessionSlot>), GaveUp>> {
        let node = self.clone();
        let target = Target {
            addr: addr.to_owned(),
            actor: actor.to_owned(),
            owner,
            policy,
            slot,
        };
        Box::pin(async move { node.open_retrying(&target, retry).await })
    }

    async fn open_retrying(
        self: &Arc<Self>,
        target: &Target,
        retry: Retry,
    ) -> Result<(SessionRef, Arc<SessionSlot>), GaveUp> {
        let mut attempts = 0;
        loop {
            if !target.owner.is_alive() {
                let error = ConnectError::OwnerStopped;
                return Err(GaveUp { error, attempts });
            }
            attempts += 1;
            let failure = match self.open(target).await {
                Ok(opened) => return Ok(opened),
                Err(failure) => failure,
            };
            let delay = backoff(attempts - 1, &self.driver_config());
            if !failure.worth_retrying(retry) || Instant::now() + delay >= retry.deadline {
                let error = with_attempts(failure.error, attempts);
                return Err(GaveUp { error, attempts });
            }
            tracing::debug!(addr = %target.addr, error = %failure.error, attempts, "opening a session failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.token().cancelled() => {
                    let error = ConnectError::ShuttingDown;
                    return Err(GaveUp { error, attempts });
                }
            }
        }
    }

    /// One attempt to open a session, over within the handshake timeout.
    async fn open(
        self: &Arc<Self>,
        target: &Target,
    ) -> Result<(SessionRef, Arc<SessionSlot>), Failure> {
        let permanent = |error| Failure {
            error,
            transient: false,
        };
        if self.shutdown.is_triggered() {
            return Err(permanent(ConnectError::ShuttingDown));
        }
        let Target {
            addr,
            actor,
            owner,
            policy,
            slot,
        } = target;
        let id = SessionId::random();
        let (client, tls) = self
            .links
            .client(addr, id, &self.config)
            .map_err(permanent)?;
        self.bookkeeping_changed.notify_waiters();
        // The handshake timeout is left whole: it also bounds the session's resumes.
        let session = Session::initiator(
            self.config.session.clone(),
            self.secret.clone(),
            self.identity.clone(),
            id,
            actor.to_owned(),
            rand::random(),
            Instant::now(),
        )
        .with_protocol(slot.protocol().to_owned())
        .with_tls_binding(tls);
        let shared = Shared::new(session, self.config.session.credit_window);
        let (established_tx, established_rx) = oneshot::channel();
        // Handles are handed out only once the slot holds the established session.
        let slot = slot.clone();
        let dialer = Dialer {
            client,
            addr: addr.to_owned(),
            actor: actor.to_owned(),
            slot: slot.clone(),
        };
        let driver = Driver::initiator(
            shared,
            self.driver_context(),
            *policy,
            dialer,
            owner.clone(),
            established_tx,
        );
        let run: futures::future::BoxFuture<'static, ()> = Box::pin(driver.run(None));
        self.shutdown.spawn(run);
        match established_rx.await {
            Ok(Ok(session)) => {
                slot.store(session.clone());
                Ok((session, slot))
            }
            Ok(Err(reason)) => {
                let broken = matches!(reason, CloseReason::Transport(_));
                if broken {
                    self.links.evict_if_unused(addr);
                    self.bookkeeping_changed.notify_waiters();
                }
                let mut error = connect_error(addr.to_owned(), actor, slot.protocol(), reason);
                // Only a connection that opened and then broke may have met TLS.
                if let ConnectError::Unreachable { reason, .. } = &error
                    && self.config.peer_tls.is_none()
                    && !["refused", "timed out", "dns error"]
                        .iter()
                        .any(|r| reason.contains(r))
                    && serves_tls(addr, PROBE_TIMEOUT.min(self.config.connect_timeout)).await
                {
                    error = ConnectError::Tls {
                        addr: addr.to_owned(),
                        reason: format!(
                            "the peer serves TLS, and this node dials it in plaintext: trust its \
                             CA (--tls-ca FILE, or NodeBuilder::peer_tls) ({reason})"
                        ),
                    };
                }
                if let ConnectError::Unreachable { reason, .. } = &error
                    && let Some(tls) = &self.config.peer_tls
                    && !["refused", "timed out", "dns error"]
                        .iter()
                        .any(|r| reason.contains(r))
                    && let Some(why) = tls.diagnose(addr, PROBE_TIMEOUT).await
                    && is_tls_failure(&why)
                {
                    error = ConnectError::Tls {
                        reason: tls_hint(&why, addr),
                        addr: addr.to_owned(),
                    };
                }
                // A failed TLS handshake does not heal by trying again.
                let transient = broken && !matches!(error, ConnectError::Tls { .. });
                Err(Failure { error, transient })
            }
            Err(_) => Err(permanent(ConnectError::ShuttingDown)),
        }
    }

    /// What the proofs of accepted sessions are bound to: this node's certificate, when it
    /// serves TLS.
    pub(crate) fn tls_binding(&self) -> TlsBinding {
        self.config
            .tls
            .as_ref()
            .map_or(TlsBinding::Plaintext, ServerTls::binding)
    }

    /// The session a resume stream names, if this node has it.
    pub(crate) fn resumable(&self, id: SessionId) -> Option<Resumable> {
        lock(&self.resumable).get(&id).cloned()
    }

    /// Publishes to the cluster, if any, that this node serves `name` with `protocol`.
    fn publish(&self, name: &str, protocol: &str) {
        if let Some(membership) = self.membership.get()
            && !name.starts_with('$')
        {
            membership.publish(name, protocol);
        }
    }

    /// Removes the names a stopped actor held, and withdraws them from the cluster.
    fn forget_names_of(&self, actor: ActorId) {
        let mut registry = self.registry.write().unwrap_or_else(|p| p.into_inner());
        let names: Vec<String> = registry
            .iter()
            .filter(|(_, d)| d.cell().is_some_and(|c| c.get_id() == actor))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &names {
            registry.remove(name);
        }
        drop(registry);
        if let Some(membership) = self.membership.get() {
            for name in &names {
                membership.unpublish(name);
            }
        }
    }

    /// Watches `actor`: when it stops, its sessions end with its stop reason.
    pub(crate) fn watch(&self, actor: ActorCell) {
        if let Some(watcher) = self.watcher.get() {
            watcher.monitor(actor);
        }
    }

    /// Records that `owner` owns the session `shared`.
    fn owns(&self, owner: &ActorCell, shared: &Arc<Shared>) {
        self.watch(owner.clone());
        let mut owned = lock(&self.owned);
        let sessions = owned.entry(owner.get_id()).or_default();
        sessions.retain(|s| s.strong_count() > 0);
        sessions.push(Arc::downgrade(shared));
        drop(owned);
        self.bookkeeping_changed.notify_waiters();
    }

    /// A watched actor stopped: end its sessions, after what they already queued, with a
    /// farewell that carries its stop reason.
    pub(crate) fn actor_stopped(&self, actor: ActorId, reason: Option<String>) {
        let reason = reason.unwrap_or_else(|| "the actor stopped".into());
        self.forget_names_of(actor);
        let sessions = lock(&self.owned).remove(&actor).unwrap_or_default();
        let mut open = Vec::with_capacity(sessions.len());
        for weak in sessions {
            if let Some(shared) = weak.upgrade() {
                let id = shared.with(|s| {
                    s.end(GoodbyeReason::ActorStopped, reason.clone());
                    s.id()
                });
                open.push((id, weak));
            }
        }
        self.stop_reasons.record(actor, reason, open);
        self.bookkeeping_changed.notify_waiters();
    }

    /// Drops the link of `idle` if no session takes it up within the idle grace.
    fn evict_when_idle(&self, idle: Idle) {
        let links = self.links.clone();
        let changed = self.bookkeeping_changed.clone();
        let grace = self.config.link_idle_timeout;
        let cancel = self.shutdown.token().clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(grace) => {
                    links.evict_if_idle(&idle);
                    changed.notify_waiters();
                }
                () = cancel.cancelled() => {}
            }
        });
    }

    /// `Restart`: opens a new session to where `lost` went, retrying with backoff until
    /// the restart deadline, and moves typed handles onto it; the owner hears either
    /// `Restarted` or a second `Lost` with `LostReason::RestartGaveUp`. Stops early when
    /// the owner stops or the node shuts down.
    async fn restart_session(self: Arc<Self>, lost: Restart) {
        let Restart {
            addr,
            actor,
            owner,
            policy,
            slot,
            previous,
        } = lost;
        let retry = Retry {
            deadline: Instant::now() + self.config.restart_timeout,
            restart: true,
        };
        let opened = self
            .open_session(&addr, &actor, owner.clone(), policy, slot, retry)
            .await;
        let signal = match opened {
            Ok((session, _)) => {
                tracing::info!(old = %previous.id(), new = %session.id(), "session restarted");
                SessionSignal::Restarted { previous, session }
            }
            Err(GaveUp { error, attempts }) => {
                tracing::warn!(old = %previous.id(), %error, attempts, "restart gave up");
                SessionSignal::Lost(Lost {
                    session: previous,
                    reason: LostReason::RestartGaveUp {
                        attempts,
                        last_error: Box::new(error),
                    },
                    unconfirmed: Vec::new(),
                    escalation: None,
                })
            }
        };
        let _ = owner.signal(signal);
    }
}

impl NodeHooks for NodeInner {
    fn admit(&self, target: &str, protocol: &str) -> Result<Arc<dyn Deliver>, Refusal> {
        if self.shutdown.is_triggered() {
            return Err(Refusal {
                reason: RefuseReason::ShuttingDown,
                detail: format!("node {} is shutting down", self.identity.name),
            });
        }
        let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
        match registry.get(target) {
            Some(owner) if owner.is_alive() => match owner.protocol() {
                Some(serves) if !protocol.is_empty() && serves != protocol => Err(Refusal {
                    detail: format!(
                        "actor {target:?} on node {} serves {serves}, not {protocol}",
                        self.identity.name
                    ),
                    reason: RefuseReason::ProtocolMismatch { acceptor: serves },
                }),
                _ => Ok(owner.clone()),
            },
            Some(_) => Err(Refusal {
                reason: RefuseReason::UnknownActor,
                detail: format!(
                    "actor {target:?} on node {} has stopped",
                    self.identity.name
                ),
            }),
            None => Err(Refusal {
                reason: RefuseReason::UnknownActor,
                detail: format!("no actor named {target:?} on node {}", self.identity.name),
            }),
        }
    }

    fn stop_reason(&self, owner: Option<&dyn Deliver>) -> String {
        owner
            .and_then(|o| {
                o.gone_reason()
                    .or_else(|| self.stop_reasons.get(o.cell()?.get_id()))
            })
            .unwrap_or_else(|| "the actor stopped".into())
    }

    fn session_opened(&self, session: &SessionRef, shared: &Arc<Shared>, owner: Option<ActorCell>) {
        tracing::debug!(id = %session.id(), peer = %session.peer(), actor = session.actor(), "session opened");
        let _ = self.events.send(NodeEvent::SessionOpened {
            session: session.id(),
            peer: session.peer().clone(),
            actor: session.actor().to_owned(),
        });
        self.sessions.opened(session, shared);
        if let Some(metrics) = &self.metrics {
            shared.record_calls_in(metrics.call_latency());
        }
        if let Some(owner) = owner {
            self.owns(&owner, shared);
        }
    }

    fn remember_resumable(
        &self,
        session: &SessionRef,
        shared: &Arc<Shared>,
    ) -> mpsc::Receiver<Attach> {
        let (tx, rx) = mpsc::channel(4);
        let entry = Resumable {
            shared: shared.clone(),
            attach: tx,
        };
        lock(&self.resumable).insert(session.id(), entry);
        self.bookkeeping_changed.notify_waiters();
        rx
    }

    fn session_closed(&self, closed: Closed<'_>) {
        let Closed {
            session,
            established,
            role,
            remote_addr,
            reason,
        } = closed;
        self.stop_reasons.session_closed(session);
        if let Some(idle) = self.links.release(session) {
            self.evict_when_idle(idle);
        }
        self.bookkeeping_changed.notify_waiters();
        if let Some(metrics) = &self.metrics {
            match reason {
                CloseReason::Lost(lost) if established => metrics.session_lost(lost),
                _ if !established => metrics.handshake_failed(role, reason),
                _ => {}
            }
        }
        let event = if established {
            self.sessions.closed(session, role);
            tracing::debug!(id = %session, %reason, "session closed");
            NodeEvent::SessionClosed {
                session,
                reason: reason.clone(),
            }
        } else {
            // A failed outgoing handshake is the caller's typed error; only a peer's
            // failed attempt on us has no one else to tell.
            if role == Role::Acceptor {
                // Anyone can fail handshakes at will: a few lines per window, then a count.
                if let log_budget::LogVerdict::Log { suppressed } =
                    self.failed_handshakes.admit(Instant::now())
                {
                    tracing::warn!(
                        ?remote_addr,
                        %reason,
                        not_logged_since_last_line = suppressed,
                        "incoming session failed during its handshake"
                    );
                }
            } else {
                tracing::debug!(?remote_addr, %reason, "outgoing session failed during its handshake");
            }
            NodeEvent::SessionRejected {
                remote_addr,
                reason: reason.clone(),
            }
        };
        let _ = self.events.send(event);
    }

    fn forget_resumable(&self, session: SessionId) {
        lock(&self.resumable).remove(&session);
        self.bookkeeping_changed.notify_waiters();
    }

    fn restart(self: Arc<Self>, lost: Restart) {
        // On the node's tracker, like the driver that asks: shutdown waits for it.
        let shutdown = self.shutdown.clone();
        let restart: futures::future::BoxFuture<'static, ()> = Box::pin(self.restart_session(lost));
        shutdown.spawn(restart);
    }
}
