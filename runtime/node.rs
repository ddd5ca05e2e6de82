//! A node: one process's presence in the cluster. It has a name, an incarnation, a
//! shared secret, named local actors, one gRPC server, and one link per peer it dials.
//! Sessions hang off the node, never off a request.
//!
//! [`Node`] is the sum of parts, each owning its state in a file of its own, each handed
//! the parts it uses (never the node):
//!
//! ```text
//! Node
//! ├── registry   (registry.rs)  named actors -> their mailboxes; watched; published
//! ├── sessions   (sessions.rs)  accepted and dialled sessions, their owners, what their
//! │   │                         drivers report (NodeHooks); dial.rs opens them, link.rs
//! │   │                         holds one HTTP/2 connection per peer dialled
//! │   └── per session: Driver task ──> owner actor's mailbox
//! ├── server     (server.rs)    tonic: admission, pre-authentication limits, the session
//! │                             service, health and reflection, TLS handshakes
//! ├── cluster    (cluster.rs)   gossip membership and names, when in a cluster
//! ├── hosting    (hosting.rs)   actors started by kind; `$node` (control.rs) on request
//! ├── entities   (entities.rs)  an actor per id of a kind: placement, hosts, carriers
//! ├── ops        (ops.rs)       status and metrics; the admin address (admin.rs)
//! └── Shutdown (cancellation token + task tracker): every driver selects on the token,
//!     sends its farewell, and ends its own stream; shutdown waits with a bound.
//! ```
//!
//! Actors stay under their own ractor supervisors; the node never owns them. A session
//! tells its owner about its life through [`crate::SessionSignal`]s in the owner's mailbox.

mod admin;
mod cluster;
mod connect;
mod control;
mod dial;
mod entities;
mod hosting;
mod link;
mod metrics;
mod ops;
mod registry;
mod server;
mod sessions;
mod status;
mod stop_reasons;
mod watcher;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{ActorCell, ActorRef};
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::actor::mailbox::FromCluster;
use crate::actor::owner::Owner;
use crate::auth::Secret;
use crate::budget::{BudgetConfig, Budgets};
use crate::config::{ClusterConfig, NodeConfig};
use crate::cores::Cores;
use crate::error::{EntityError, LookupError, NodeError, SpawnError};
use crate::handles::remote_ref::Protocol;
use crate::members::Member;
use crate::session::SessionConfig;
use crate::shutdown::Shutdown;
use crate::store::{StateConfig, StateStore};
use crate::sync::lock;
use crate::tls::{ClientTls, ServerTls, TlsAccept, TlsRefusedByPort};
use crate::wire::NodeIdentity;

pub use self::cluster::Located;
pub use self::connect::{Connect, Target};
pub use self::control::{CONTROL_ACTOR, MembersAt, SpawnOn, Spawned};
pub(crate) use self::entities::EntityKinds;
pub use self::entities::{Durable, Entity, EntityRef, EntityReply, Undelivered};
pub(crate) use self::hosting::Kinds;
pub use self::hosting::{ActorSpec, Hosted};
pub use self::sessions::NodeEvent;
pub use self::status::{
    ClusterStatus, EntityKindStatus, NodeStatus, Rate, RatePoint, SessionState, SessionStatus,
};

use self::cluster::Membership;
use self::control::{ControlActor, Controlled};
use self::dial::Dial;
use self::entities::{
    ClaimsArgs, Directory, Host, HostArgs, HostCounters, Router, ShortWay, StartFn, carrier_name,
};
use self::hosting::Hosting;
use self::link::Links;
use self::metrics::NodeMetrics;
use self::ops::Ops;
use self::registry::Registry;
use self::server::Serving;
use self::server::admission::Descriptors;
use self::server::pre_auth::StandardPlaces;
use self::server::standard::Standard;
use self::sessions::{Sessions, SessionsParts};
use self::watcher::Watcher;

/// Builds and starts a [`Node`].
#[derive(Debug, Default)]
pub struct NodeBuilder {
    config: NodeConfig,
    secret: Option<Result<Secret, NodeError>>,
    kinds: Kinds<Node>,
    entity_kinds: EntityKinds<Node>,
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

    /// Puts the node in a cluster: it gossips on `cluster.gossip_listen`, joins through
    /// `cluster.seeds`, publishes its named actors and kinds, and can look names up
    /// ([`Node::lookup`]). As `--gossip-listen` and `--seed` do for a node binary.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use duologue::{Node, Secret, settings::ClusterConfig};
    ///
    /// let mut cluster = ClusterConfig::new("127.0.0.1:7001".parse()?);
    /// cluster.seeds = vec!["10.0.0.1:7001".into()];
    /// let node = Node::builder()
    ///     .name("b")
    ///     .listen("127.0.0.1:7000".parse()?)
    ///     .secret(Secret::new("a shared secret of 16+ bytes")?)
    ///     .cluster(cluster)
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster(mut self, cluster: ClusterConfig) -> Self {
        self.config.cluster = Some(cluster);
        self
    }

    /// Replaces the whole configuration (name and listen address included): call it
    /// first, then the setters above for what differs.
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
    pub(crate) fn with_kinds(mut self, kinds: Kinds<Node>, entities: EntityKinds<Node>) -> Self {
        self.kinds = kinds;
        self.entity_kinds = entities;
        self
    }

    /// Hosts entities of `kind`, which speak the protocol `P` (and take local messages
    /// `L`): an actor per id, started on the member that owns the id's shard when its
    /// first message arrives ([`Node::entity`]). `start` gets the node and the id, spawns
    /// the entity's actor (`type Msg = Entity<P, L>`) and returns it; the node links it
    /// to its host of the kind, which stops it when idle
    /// ([`crate::settings::EntityConfig`]). A node in a cluster publishes that it hosts
    /// the kind (one name, `$entities/KIND`), and the kind's shards spread over the
    /// members that do.
    ///
    /// # Panics
    /// When `kind` was registered already (a programming error).
    pub fn entity<P, L, F, Fut>(mut self, kind: &str, start: F) -> Self
    where
        P: Protocol,
        L: Send + 'static,
        F: Fn(Node, String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<ActorRef<Entity<P, L>>, String>> + Send + 'static,
    {
        add_entity_kind(&mut self.entity_kinds, kind, start);
        self
    }

    /// Hosts entities of `kind` that keep state `S` in the node's store
    /// ([`NodeBuilder::state`]), as [`NodeBuilder::entity`] does otherwise: before `start`
    /// runs, the node claims the id's shard in the store and loads the entity's state,
    /// and `start` gets it as a [`crate::state::Durable`] to keep in the actor's state
    /// and write through. Starting the node fails ([`NodeError::NoStateStore`]) without a
    /// store.
    ///
    /// # Panics
    /// When `kind` was registered already (a programming error).
    pub fn durable_entity<P, L, S, F, Fut>(mut self, kind: &str, start: F) -> Self
    where
        P: Protocol,
        L: Send + 'static,
        S: prost::Message + Default + Clone + 'static,
        F: Fn(Node, String, Durable<S>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<ActorRef<Entity<P, L>>, String>> + Send + 'static,
    {
        add_durable_entity_kind(&mut self.entity_kinds, kind, start);
        self
    }

    /// Where the node keeps the state of its entities ([`NodeBuilder::durable_entity`]),
    /// and whether it leases their shards.
    pub fn state(mut self, state: StateConfig) -> Self {
        self.config.state = Some(state);
        self
    }

    /// How the node places, keeps and stops entities.
    pub fn entities(mut self, entities: crate::config::EntityConfig) -> Self {
        self.config.entities = entities;
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
        if let Some(addr) = config.listen
            && config.tls.is_none()
            && !config.insecure_plaintext
            && !addr.ip().is_loopback()
        {
            return Err(NodeError::PlaintextListen { addr });
        }
        admin::check_exposure(&config)?;
        if config.state.is_none()
            && let Some(kind) = self.entity_kinds.durable().next()
        {
            return Err(NodeError::NoStateStore {
                kind: kind.to_owned(),
            });
        }
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
        let store = match &config.state {
            Some(state) => Some(Arc::new(StateStore::open(&state.url).await?)),
            None => None,
        };
        let config = Arc::new(config);
        let identity = NodeIdentity {
            name: config.name.clone(),
            incarnation: uuid::Uuid::new_v4(),
        };
        let shutdown = Shutdown::default();
        let cluster = match &config.cluster {
            Some(cluster) => {
                let kinds: Vec<(String, String)> = self
                    .kinds
                    .iter()
                    .map(|k| (k.name.clone(), k.about.clone()))
                    .collect();
                let token = shutdown.token().clone();
                let entity_kinds: Vec<String> =
                    self.entity_kinds.names().map(str::to_owned).collect();
                let membership = Membership::start(
                    &identity,
                    cluster,
                    local_addr,
                    &kinds,
                    &entity_kinds,
                    &secret,
                    token,
                )
                .await?;
                Some(membership)
            }
            None => None,
        };
        let (watcher, stopped) = Watcher::start().await?;
        let registry = Arc::new(Registry::new(config.max_names, cluster.clone(), watcher));
        let bookkeeping_changed = Arc::new(Notify::new());
        let dial = Arc::new(Dial {
            identity: identity.clone(),
            config: config.clone(),
            secret,
            links: Arc::new(Links::new(Cores::current())),
            shutdown: shutdown.clone(),
            bookkeeping_changed: bookkeeping_changed.clone(),
        });
        let metrics = config.admin.map(|_| Arc::new(NodeMetrics::new()));
        let sessions = Arc::new(Sessions::new(SessionsParts {
            registry: registry.clone(),
            dial: dial.clone(),
            budgets: Budgets::new(config.budget.clone()),
            events: broadcast::channel(1024).0,
            bookkeeping_changed: bookkeeping_changed.clone(),
            metrics: metrics.clone(),
        }));
        tokio::spawn(sessions::end_sessions_of_stopped(
            stopped,
            Arc::downgrade(&sessions),
        ));
        if let Some(membership) = &cluster {
            tokio::spawn(sessions::follow_the_cluster(
                membership.events(),
                Arc::downgrade(&sessions),
            ));
        }
        let entities = Router::new(
            identity.name.clone(),
            config.entities.clone(),
            cluster.clone(),
            sessions.clone(),
            config.policy,
        );
        let tls_refused = Arc::new(TlsRefusedByPort::default());
        let ops = Arc::new(Ops {
            entities: entities.clone(),
            identity: identity.clone(),
            local_addr,
            started: Instant::now(),
            shutdown: shutdown.clone(),
            sessions: sessions.clone(),
            cluster: cluster.clone(),
            tls_refused: tls_refused.clone(),
            metrics,
        });
        // One descriptor budget for every port that accepts connections.
        let descriptors = Descriptors::new(&config);
        let admin_stop = CancellationToken::new();
        let (admin_addr, admin_task) = match config.admin {
            Some(addr) => {
                let (bound, task) =
                    admin::start(&ops, &config, addr, descriptors.clone(), admin_stop.clone())
                        .await?;
                (Some(bound), Some(task))
            }
            None => (None, None),
        };
        tokio::spawn(ops::sample(Arc::downgrade(&ops), admin_stop.clone()));
        let standard_places = StandardPlaces::new(
            config.admission.max_standard_streams,
            bookkeeping_changed.clone(),
        );
        let hosting = Hosting::new(
            identity.name.clone(),
            self.kinds,
            config.max_hosted,
            config.max_names,
            registry.clone(),
        );
        let listening = listener.is_some();
        let standard = Standard::new().await;
        let server = listener.map(|listener| {
            // The TLS handshake of a stranger is bounded as the session handshake is.
            let tls = session_tls.map(|tls| {
                TlsAccept::new(
                    tls,
                    config.session.handshake_timeout,
                    "session",
                    tls_refused.session.clone(),
                )
            });
            tokio::spawn(server::serve(Serving {
                sessions: sessions.clone(),
                config: config.clone(),
                listener,
                descriptors,
                tls,
                standard: standard.clone(),
                standard_places: standard_places.clone(),
                cores: Cores::current(),
            }))
        });
        let inner = Arc::new(NodeInner {
            store,
            identity,
            local_addr,
            registry,
            entities,
            sessions,
            dial,
            ops,
            cluster,
            hosting,
            standard_places,
            bookkeeping_changed,
            admin_addr,
            admin_task: Mutex::new(admin_task),
            admin_stop: admin_stop.clone(),
            shutdown: shutdown.clone(),
            config,
        });
        let handles = Arc::new(Handles {
            server: Mutex::new(server),
            standard,
            shutdown,
            events: inner.sessions.events_sender(),
            control: Mutex::new(None),
            entities: inner.entities.clone(),
            admin_stop,
        });
        let node = Node { inner, handles };
        if listening {
            let control = ControlActor::start(Box::new(node.weak())).await?;
            node.register(CONTROL_ACTOR, &control)?;
            *lock(&node.handles.control) = Some(control.get_cell());
        }
        self.entity_kinds.start(&node).await?;
        Ok(node)
    }
}

/// Adds the entity `kind` to `kinds` (for [`NodeBuilder::entity`] and
/// [`crate::cli::NodeMain::entity`]).
pub(crate) fn add_entity_kind<P, L, F, Fut>(kinds: &mut EntityKinds<Node>, kind: &str, start: F)
where
    P: Protocol,
    L: Send + 'static,
    F: Fn(Node, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<ActorRef<Entity<P, L>>, String>> + Send + 'static,
{
    let start = Arc::new(start);
    let name = kind.to_owned();
    kinds.add(kind, false, move |node: Node| {
        let (start, kind) = (start.clone(), name.clone());
        Box::pin(async move {
            let weak = node.weak();
            let start: Arc<StartFn<P, L>> = Arc::new(move |id: String, _| match weak.upgrade() {
                Some(node) => Box::pin(start(node, id)),
                None => Box::pin(async { Err("the node stopped".to_owned()) }),
            });
            node.host_entities::<P, L>(kind, start, false).await
        })
    });
}

/// Adds the entity `kind`, which keeps state `S`, to `kinds` (for
/// [`NodeBuilder::durable_entity`] and [`crate::cli::NodeMain::durable_entity`]).
pub(crate) fn add_durable_entity_kind<P, L, S, F, Fut>(
    kinds: &mut EntityKinds<Node>,
    kind: &str,
    start: F,
) where
    P: Protocol,
    L: Send + 'static,
    S: prost::Message + Default + Clone + 'static,
    F: Fn(Node, String, Durable<S>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<ActorRef<Entity<P, L>>, String>> + Send + 'static,
{
    let start = Arc::new(start);
    let name = kind.to_owned();
    kinds.add(kind, true, move |node: Node| {
        let (start, kind) = (start.clone(), name.clone());
        Box::pin(async move {
            let weak = node.weak();
            let start: Arc<StartFn<P, L>> = Arc::new(move |id: String, fence| {
                let (start, node) = (start.clone(), weak.upgrade());
                Box::pin(async move {
                    let node = node.ok_or_else(|| "the node stopped".to_owned())?;
                    let fence = fence.ok_or_else(|| "no claim of the shard".to_owned())?;
                    let durable = Durable::<S>::load(Arc::from(id.as_str()), fence)
                        .await
                        .map_err(|error| format!("state of {id}: {error}"))?;
                    start(node, id, durable).await
                })
            });
            node.host_entities::<P, L>(kind, start, true).await
        })
    });
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
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The health it reports, and what stops the server.
    standard: Standard,
    shutdown: Shutdown,
    events: broadcast::Sender<NodeEvent>,
    /// The `$node` control actor, stopped with the node.
    control: Mutex<Option<ActorCell>>,
    /// Its entity hosts, stopped (with their entities) with the node.
    entities: Arc<Router>,
    /// Stops the admin server when the last handle goes without a shutdown.
    admin_stop: CancellationToken,
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
        for host in self.entities.take_hosts() {
            host.stop(None);
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

/// The node's parts.
#[derive(Debug)]
struct NodeInner {
    identity: NodeIdentity,
    config: Arc<NodeConfig>,
    local_addr: Option<SocketAddr>,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    dial: Arc<Dial>,
    ops: Arc<Ops>,
    /// Its cluster membership, when it has a cluster config.
    cluster: Option<Arc<Membership>>,
    hosting: Hosting<Node>,
    /// Where messages to entities go, and the hosts of the kinds this node hosts.
    entities: Arc<Router>,
    /// Where its entities keep their state, when it has a store.
    store: Option<Arc<StateStore>>,
    /// Places of the standard services' streams (health, reflection) before
    /// authentication; those in use are in [`Node::bookkeeping`].
    standard_places: StandardPlaces,
    /// Told whenever a count of [`Node::bookkeeping`] may have changed.
    bookkeeping_changed: Arc<Notify>,
    /// Where its admin server listens.
    admin_addr: Option<SocketAddr>,
    /// The admin server's task, awaited (bounded) at the end of [`Node::shutdown`].
    admin_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Stops the admin server: at the end of [`Node::shutdown`], or when the node is gone.
    admin_stop: CancellationToken,
    shutdown: Shutdown,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        self.admin_stop.cancel();
    }
}

/// A node without its `Node` handles' ownership, for its `$node` actor, which must not
/// keep the node alive (dropping the last handle ends it).
#[derive(Debug)]
struct WeakNode {
    inner: Weak<NodeInner>,
    handles: Weak<Handles>,
}

impl WeakNode {
    fn upgrade(&self) -> Option<Node> {
        Some(Node {
            inner: self.inner.upgrade()?,
            handles: self.handles.upgrade()?,
        })
    }
}

impl Controlled for WeakNode {
    fn name(&self) -> String {
        self.inner
            .upgrade()
            .map(|inner| inner.identity.name.clone())
            .unwrap_or_default()
    }

    fn advertised_addr(&self) -> Option<String> {
        self.upgrade()?.advertised_addr()
    }

    fn host(&self, spec: ActorSpec) -> Option<BoxFuture<'static, Result<ActorCell, SpawnError>>> {
        let node = self.upgrade()?;
        Some(Box::pin(async move { node.host(spec).await }))
    }

    fn cluster(&self) -> Option<Arc<Membership>> {
        self.inner.upgrade()?.cluster.clone()
    }

    fn status(&self) -> Option<NodeStatus> {
        Some(self.inner.upgrade()?.ops.status(false))
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

    /// Makes `owner` reachable by peers under `name`: sessions opened to `name` deliver
    /// into its mailbox. An `&ActorRef<M>` is an owner; [`Owner::batched`] takes runs of
    /// messages as one, [`Owner::serving`] names the protocol of an untyped mailbox. A
    /// typed mailbox ([`crate::Mailbox`]) names its protocol, and a session that names
    /// another is refused in the handshake ([`crate::ConnectError::ProtocolMismatch`] at the
    /// initiator); an untyped one accepts any.
    ///
    /// # Errors
    /// [`NodeError::NameTaken`] when a live actor holds the name;
    /// [`NodeError::InvalidName`] for a name (or protocol) a node does not take
    /// ([`crate::cluster::MAX_NAME_BYTES`]); [`NodeError::TooManyNames`] past
    /// [`NodeConfig::max_names`].
    pub fn register(
        &self,
        name: impl Into<String>,
        owner: impl Into<Owner>,
    ) -> Result<(), NodeError> {
        let deliver = owner.into().into_deliver();
        let Some(cell) = deliver.cell() else {
            unreachable!("an Owner a user can build is an actor");
        };
        self.inner.registry.register(name.into(), deliver, cell)
    }

    /// Removes a name; sessions already open stay open.
    pub fn unregister(&self, name: &str) {
        self.inner.registry.unregister(name);
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

    /// Opens a session of the protocol `P` to `target`: an actor on a node
    /// (`Target::at(addr, actor)`, or `(addr, actor)`) or a name the cluster resolves
    /// (`Target::named(name, within)`). The [`Connect`] it gives takes the session's policy
    /// (the node's default otherwise) and opens the session with its owner:
    ///
    /// ```no_run
    /// # async fn f(node: duologue::Node, me: ractor::ActorRef<duologue::SessionMsg>) -> Result<(), duologue::ConnectError> {
    /// # #[derive(Clone, PartialEq, prost::Message)] struct Ping {}
    /// # impl prost::Name for Ping { const NAME: &'static str = "Ping"; const PACKAGE: &'static str = "demo"; }
    /// # struct PingPong;
    /// # impl duologue::Protocol for PingPong { type Request = Ping; type Response = Ping; }
    /// let remote = node.connect::<PingPong>(("127.0.0.1:7000", "pong")).owner(&me).await?;
    /// let (remote, inbox) = node.connect::<PingPong>(("127.0.0.1:7000", "pong")).inbox().await?;
    /// # Ok(()) }
    /// ```
    pub fn connect<P: Protocol>(&self, target: impl Into<Target>) -> Connect<P> {
        Connect::new(
            self.inner.sessions.clone(),
            self.inner.cluster.clone(),
            target.into(),
            self.inner.config.policy,
        )
    }

    /// How much per-peer and per-actor state the node holds now: for monitoring, and for
    /// tests that check nothing accumulates.
    pub fn bookkeeping(&self) -> Bookkeeping {
        let inner = &self.inner;
        let (stop_reasons, resumable, owners) = inner.sessions.counts();
        Bookkeeping {
            links: inner.dial.links.len(),
            stop_reasons,
            resumable,
            owners,
            standard_streams: inner.standard_places.in_use(),
        }
    }

    /// Resolves at the next change of [`Node::bookkeeping`]'s counts (and now and then
    /// without one): for waiting until they settle instead of polling. Create it before
    /// reading the counts, so that a change in between is not missed:
    ///
    /// ```no_run
    /// # async fn f(node: duologue::Node, wanted: duologue::status::Bookkeeping) {
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
        self.inner.ops.status(true)
    }

    /// Where the node serves its metrics and status page ([`NodeConfig::admin`]).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr
    }

    /// Subscribes to this node's [`NodeEvent`]s from now on.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.sessions.events()
    }

    /// Starts an actor of a kind this node hosts, as `spec` says, and keeps it until
    /// [`Node::stop_hosted`]: what `--actor KIND:NAME` and a peer's spawn request do.
    ///
    /// # Errors
    /// [`SpawnError::UnknownKind`], [`SpawnError::NameTaken`] when a live actor holds
    /// the name, [`SpawnError::InvalidName`], [`SpawnError::LimitReached`] past
    /// [`NodeConfig::max_hosted`] or [`NodeConfig::max_names`],
    /// [`SpawnError::ShuttingDown`], [`SpawnError::Failed`] when the kind's constructor
    /// fails.
    pub async fn host(&self, spec: ActorSpec) -> Result<ActorCell, SpawnError> {
        if self.inner.shutdown.is_triggered() {
            let node = self.inner.identity.name.clone();
            return Err(SpawnError::ShuttingDown { node });
        }
        self.inner.hosting.host(self.clone(), spec).await
    }

    /// Stops every actor this node hosted ([`Node::host`]), each given `within` to run
    /// its `post_stop`; returns the names of those that did not stop in time.
    pub async fn stop_hosted(&self, within: Duration) -> Vec<String> {
        self.inner.hosting.stop_all(within).await
    }

    /// Asks the node at `addr` (`host:port`) to start an actor as `spec` says.
    ///
    /// # Errors
    /// [`SpawnError::UnknownKind`] (with the kinds it has), [`SpawnError::NameTaken`],
    /// [`SpawnError::Failed`], [`SpawnError::ShuttingDown`] from the node;
    /// [`SpawnError::Connect`] or [`SpawnError::Call`] when it cannot be asked.
    pub async fn spawn_at(&self, addr: &str, spec: ActorSpec) -> Result<Spawned, SpawnError> {
        control::spawn_at(&self.inner.sessions, addr, spec).await
    }

    /// Asks a member of the cluster to start an actor as `spec` says: the member named
    /// in `on`, or any that offers the kind.
    ///
    /// # Errors
    /// [`SpawnError::NoSuchNode`] when no member of that name is up,
    /// [`SpawnError::NoNodeOffers`] when none offers the kind,
    /// [`SpawnError::NotClustered`], [`SpawnError::GossipStopped`]; otherwise as
    /// [`Node::spawn_at`].
    pub async fn spawn(&self, on: SpawnOn, spec: ActorSpec) -> Result<Spawned, SpawnError> {
        let cluster = self.inner.cluster.as_ref();
        control::spawn(&self.inner.sessions, cluster, on, spec).await
    }

    /// The members of the cluster of the node at `addr`, as it sees them.
    ///
    /// # Errors
    /// [`SpawnError::NotClustered`] when that node is not in a cluster,
    /// [`SpawnError::GossipStopped`] when its gossip engine failed;
    /// [`SpawnError::Connect`] or [`SpawnError::Call`] when it cannot be asked.
    pub async fn members_at(&self, addr: &str) -> Result<Vec<Member>, SpawnError> {
        control::members_at(&self.inner.sessions, addr).await
    }

    /// The members of the cluster of the node at `addr` once its view has changed since
    /// `since` (the [`MembersAt::version`] of an earlier answer), or after `within` (at
    /// most 25 s) if it has not; `since` 0 answers at once. For waiting until a remote
    /// node sees the cluster as wanted, without asking again and again:
    ///
    /// ```no_run
    /// # async fn f(node: duologue::Node, addr: &str) -> Result<(), duologue::cluster::SpawnError> {
    /// let mut since = 0;
    /// loop {
    ///     let now = node.members_changed_at(addr, since, std::time::Duration::from_secs(5)).await?;
    ///     if now.members.len() >= 3 {
    ///         break;
    ///     }
    ///     since = now.version;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Node::members_at`].
    pub async fn members_changed_at(
        &self,
        addr: &str,
        since: u64,
        within: Duration,
    ) -> Result<MembersAt, SpawnError> {
        control::members_changed_at(&self.inner.sessions, addr, since, within).await
    }

    /// What the node at `addr` is doing: its sessions (the one asking included) and its
    /// cluster's members, as [`Node::status`] tells it there. Carried over the wire:
    /// each session's flow state has its credit, backlog and whether a send would wait;
    /// its rate, messages only; no remote addresses, totals or history.
    ///
    /// # Errors
    /// [`SpawnError::Connect`] or [`SpawnError::Call`] when it cannot be asked;
    /// [`SpawnError::Failed`] when it answers with something else.
    pub async fn status_at(&self, addr: &str) -> Result<NodeStatus, SpawnError> {
        control::status_at(&self.inner.sessions, addr).await
    }

    /// The members of this node's cluster as it sees them now, itself included.
    ///
    /// # Errors
    /// [`NodeError::NotClustered`] for a node started without
    /// [`crate::NodeConfig::cluster`]; [`NodeError::Cluster`] once its gossip engine
    /// failed ([`crate::cluster::ClusterEvent::GossipStopped`]).
    pub fn members(&self) -> Result<Vec<Member>, NodeError> {
        self.membership()?.members()
    }

    /// Resolves at the next change of [`Node::members`] (immediately for a node not in
    /// a cluster): for waiting until the cluster looks as wanted instead of polling.
    /// Create it before reading the members, so that a change in between is not missed.
    pub fn members_changed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let changed = self.inner.cluster.as_ref().map(|m| m.changed());
        async move {
            if let Some(changed) = changed {
                changed.await;
            }
        }
    }

    /// Where this node gossips, in a cluster.
    pub fn gossip_addr(&self) -> Option<SocketAddr> {
        self.inner.cluster.as_ref().map(|m| m.gossip_addr())
    }

    /// Sends `actor` the cluster's [`crate::cluster::ClusterEvent`]s in its mailbox, beside its
    /// session signals: first [`crate::cluster::ClusterEvent::Current`], then every change, until
    /// it stops.
    ///
    /// # Errors
    /// [`NodeError::NotClustered`].
    pub fn subscribe_cluster<M: FromCluster>(&self, actor: &ActorRef<M>) -> Result<(), NodeError> {
        self.membership()?.subscribe_actor(actor);
        Ok(())
    }

    /// Finds the actor named `name` on whichever member serves it, waiting up to
    /// `within` for it to appear. A name registered on several members resolves by the
    /// rule of [`crate::cluster::ClusterEvent::NameConflict`]; members leaving or unreachable do not
    /// count.
    ///
    /// # Errors
    /// [`LookupError::NotFound`] when no member serves it within `within`,
    /// [`LookupError::ProtocolMismatch`] when the chosen one serves another protocol
    /// than `P`, [`LookupError::NotClustered`], [`LookupError::GossipStopped`].
    pub async fn lookup<P: Protocol>(
        &self,
        name: &str,
        within: Duration,
    ) -> Result<Located<P>, LookupError> {
        let membership = self.membership().map_err(|_| LookupError::NotClustered)?;
        membership.lookup(name, within).await
    }

    /// A typed handle to the entity `id` of `kind`, routed by this node's view of the
    /// cluster: its messages go to the member that owns the id's shard (this node, or
    /// another over one carrier session per member and kind), and the first one starts
    /// the entity there. The handle stays valid while the entity moves. Without a
    /// cluster, entities live on this node.
    ///
    /// # Errors
    /// [`EntityError::InvalidId`] for an id a node does not take (empty, past 255
    /// bytes, control or invisible characters).
    pub fn entity<P: Protocol>(&self, kind: &str, id: &str) -> Result<EntityRef<P>, EntityError> {
        EntityRef::new(self.inner.entities.clone(), kind, id, None)
    }

    /// As [`Node::entity`], for a process outside the cluster: every message goes to the
    /// node at `addr`, which routes it on to the entity's owner.
    ///
    /// # Errors
    /// As [`Node::entity`].
    pub fn entity_via<P: Protocol>(
        &self,
        addr: &str,
        kind: &str,
        id: &str,
    ) -> Result<EntityRef<P>, EntityError> {
        EntityRef::new(self.inner.entities.clone(), kind, id, Some(addr))
    }

    /// Casts to entities on other nodes that those nodes never confirmed, from now on: a
    /// cast's `Ok` means it was handed to the owner's node; if that node dies (or stays
    /// unreachable past the resume deadline) before confirming it, it comes back here,
    /// typed, instead of being lost silently. A receiver that lags is told how many it
    /// missed (`RecvError::Lagged`).
    pub fn subscribe_undelivered(&self) -> broadcast::Receiver<Undelivered> {
        self.inner.entities.subscribe_undelivered()
    }

    /// Starts the node's host of the entity `kind` and registers it as `$entities/KIND`.
    async fn host_entities<P, L>(
        &self,
        kind: String,
        start: Arc<StartFn<P, L>>,
        durable: bool,
    ) -> Result<(), NodeError>
    where
        P: Protocol,
        L: Send + 'static,
    {
        let claims = match (durable, &self.inner.store) {
            (false, _) => None,
            (true, None) => return Err(NodeError::NoStateStore { kind }),
            (true, Some(store)) => Some(ClaimsArgs {
                store: store.clone(),
                lease: self.inner.config.state.as_ref().and_then(|s| s.lease),
                owner: format!(
                    "{}/{}",
                    self.inner.identity.name, self.inner.identity.incarnation
                ),
            }),
        };
        let router = self.inner.entities.clone();
        let counters = Arc::new(HostCounters::default());
        let directory = Arc::new(Directory::new());
        let host = Host::<P, L>::start(HostArgs {
            kind: kind.clone(),
            start,
            router: router.clone(),
            counters: counters.clone(),
            directory: directory.clone(),
            claims,
        })
        .await
        .map_err(|e| NodeError::Watcher(format!("entity host of {kind}: {e}")))?;
        // Carrier messages for an entity running here go straight into its mailbox.
        let short_way = ShortWay {
            host: host.clone(),
            directory,
        };
        if let Err(error) = self.register(
            carrier_name(&kind),
            Owner::from_deliver(Arc::new(short_way)),
        ) {
            host.stop(None);
            return Err(error);
        }
        router.add_host(&kind, host, counters);
        Ok(())
    }

    /// This node without ownership of it, for what must not keep it alive.
    fn weak(&self) -> WeakNode {
        WeakNode {
            inner: Arc::downgrade(&self.inner),
            handles: Arc::downgrade(&self.handles),
        }
    }

    fn membership(&self) -> Result<&Arc<Membership>, NodeError> {
        self.inner.cluster.as_ref().ok_or(NodeError::NotClustered)
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
        // Entities first, while sessions still carry what arrives for them on: members
        // stop routing here once they see the node leaving, and take its shards over once
        // it says it stopped their entities.
        // Hosts keep forwarding what still arrives through the leave's linger, while the
        // members learn the node leaves; then its sessions end (politely: what they
        // carried is confirmed) and the hosts stop.
        let hosts_entities = self.inner.entities.hosts_any();
        // Said before anything stops: the membership's tracker ends with the shutdown
        // below, and a tracker that ends while its node does not leave stops the gossip
        // engine at once (the peers would see a death, not a leave).
        if let Some(membership) = &self.inner.cluster {
            membership.announce_leaving().await;
        }
        if let Some(membership) = &self.inner.cluster
            && hosts_entities
        {
            self.inner.entities.leave(drain).await;
            membership.leave(drain).await;
        } else if hosts_entities {
            self.inner.entities.leave(drain).await;
        }
        let leave = async {
            if let Some(membership) = &self.inner.cluster
                && !hosts_entities
            {
                membership.leave(drain).await;
            }
        };
        let (drained, ()) = tokio::join!(self.inner.shutdown.run(drain), leave);
        for host in self.inner.entities.take_hosts() {
            host.stop(None);
        }
        // A node that does not listen has no listener to wait for.
        let listens = lock(&self.handles.server).is_some();
        let linger = if listens {
            self.inner.config.close_linger
        } else {
            Duration::ZERO
        };
        self.handles.standard.stop(linger).await;
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
    /// of [`crate::settings::AdmissionConfig::max_standard_streams`].
    pub standard_streams: usize,
}
