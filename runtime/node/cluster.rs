//! A node's cluster membership on chitchat (gossip with scuttlebutt reconciliation and
//! phi-accrual failure detection; quickwit's engine): the node publishes its session
//! address, its named actors and the kinds it spawns in its gossip state, and keeps a
//! [`View`] of every member, from which lookups resolve names and subscribed actors
//! hear [`ClusterEvent`]s.
//!
//! ```text
//! chitchat (its own task: UDP gossip every interval, failure detector)
//!   └── tracker task: on every live-set change or tick, gossip state -> View;
//!       the events between two views go to subscribers, the view to lookups
//! seed resolver task (--seed-dns): resolves names again every period, gossips to
//!   addresses not yet up
//! ```
//!
//! Every gossip datagram is authenticated with the cluster's secret (`transport`).

mod transport;

use std::collections::{BTreeMap, HashSet};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chitchat::{
    Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
    spawn_chitchat,
};
use ractor::ActorRef;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::actor::mailbox::FromCluster;
use crate::auth::{GossipKey, Secret};
use crate::config::ClusterConfig;
use crate::error::{LookupError, NodeError, SpawnError};
use crate::handles::remote_ref::Protocol;
use crate::log_budget::LogBudget;
use crate::members::{
    ClusterEvent, KEY_ENTITIES, KEY_GRPC, KEY_INCARNATION, KEY_LEAVING, Member, MemberKey,
    NodeRecord, PREFIX_ENTITY, PREFIX_KIND, PREFIX_NAME, PREFIX_SETTLED, View,
};
use crate::sync::lock;
use crate::wire::NodeIdentity;

use self::transport::{GossipTraffic, SealedUdp};

/// A change to this node's gossip state, applied by the tracker task in order.
#[derive(Debug)]
enum Change {
    Set(String, String),
    Delete(String),
}

/// Where cluster events go: a subscribed actor's mailbox.
trait ClusterSink: Send + Sync + 'static {
    /// Delivers `event`; `Err` once the actor is gone.
    fn deliver(&self, event: ClusterEvent) -> Result<(), ()>;
}

impl ClusterSink for mpsc::UnboundedSender<ClusterEvent> {
    fn deliver(&self, event: ClusterEvent) -> Result<(), ()> {
        self.send(event).map_err(drop)
    }
}

impl<M: FromCluster> ClusterSink for ActorRef<M> {
    fn deliver(&self, event: ClusterEvent) -> Result<(), ()> {
        self.send_message(M::from_cluster(event)).map_err(drop)
    }
}

/// A node's membership: its gossip engine, its view of the cluster, its subscribers.
pub(crate) struct Membership {
    config: ClusterConfig,
    /// The gossip address other nodes reach this one at.
    gossip_addr: SocketAddr,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    /// Dropping it stops the engine; taken by [`Membership::leave`].
    handle: Mutex<Option<ChitchatHandle>>,
    changes: mpsc::UnboundedSender<Change>,
    view: watch::Sender<Arc<View>>,
    /// Locked while a view is published and its events delivered, so that a new
    /// subscriber's `Current` and the events after it neither overlap nor leave a gap.
    subscribers: Mutex<Vec<Box<dyn ClusterSink>>>,
    /// Set once the node leaves politely: the engine then outlives the tracker until
    /// peers heard it.
    leaving: std::sync::atomic::AtomicBool,
    /// Why the gossip engine stopped, when it stopped without the node leaving.
    stopped: std::sync::OnceLock<String>,
    /// Grows with every change of the view.
    version: std::sync::atomic::AtomicU64,
    /// Changes sent to the tracker and not yet in the gossip state, and since when the
    /// oldest of them waits.
    unpublished: Mutex<(usize, Option<Instant>)>,
    /// Actors this node placed on "any node that offers the kind" that the view may not
    /// show yet: counted when the next one is placed, so that a burst spreads.
    placed: Mutex<Vec<Placement>>,
    /// The bytes of its gossip datagrams.
    traffic: Arc<GossipTraffic>,
    /// Bytes of its own gossip state (keys and values), as of the last change.
    own_state_bytes: std::sync::atomic::AtomicU64,
}

/// An actor placed on a node by this one ([`Membership::place`]).
#[derive(Debug)]
struct Placement {
    node: String,
    name: String,
    at: Instant,
}

/// Where [`Membership::place`] sends a spawn.
#[derive(Debug)]
pub(crate) struct Placed {
    /// The member's name.
    pub(crate) node: String,
    /// Where it accepts sessions.
    pub(crate) addr: String,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("gossip_addr", &self.gossip_addr)
            .field("cluster_id", &self.config.cluster_id)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Starts gossiping as `identity`, publishing `addr` (where peers open sessions),
    /// `kinds` (names and descriptions) and the entity kinds it will host; stops when
    /// `stop` is cancelled (unless leaving politely).
    pub(crate) async fn start(
        identity: &NodeIdentity,
        config: &ClusterConfig,
        listen: Option<SocketAddr>,
        kinds: &[(String, String)],
        entity_kinds: &[String],
        secret: &Secret,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, NodeError> {
        if config.gossip_interval.is_zero() || config.seed_dns_every.is_zero() {
            return Err(NodeError::Cluster(
                "the gossip interval and the DNS seed period must be above zero".into(),
            ));
        }
        if !(config.phi_threshold.is_finite() && config.phi_threshold > 0.0) {
            return Err(NodeError::Cluster(format!(
                "the phi threshold must be a positive number, not {}",
                config.phi_threshold
            )));
        }
        let socket = tokio::net::UdpSocket::bind(config.gossip_listen)
            .await
            .map_err(|e| {
                NodeError::Cluster(format!(
                    "cannot bind gossip address {}: {e}",
                    config.gossip_listen
                ))
            })?;
        let bound = socket
            .local_addr()
            .map_err(|e| NodeError::Cluster(e.to_string()))?;
        let gossip_addr = config.gossip_advertise.unwrap_or(bound);
        if gossip_addr.ip().is_unspecified() {
            return Err(NodeError::GossipUnspecified { addr: gossip_addr });
        }
        let addr = match (&config.advertise, listen) {
            (Some(addr), _) => Some(addr.clone()),
            (None, Some(listen)) if listen.ip().is_unspecified() => {
                return Err(NodeError::Cluster(format!(
                    "listen address {listen} is unspecified: give --advertise the HOST:PORT \
                     other nodes open sessions to"
                )));
            }
            (None, listen) => listen.map(|a| a.to_string()),
        };
        let mut initial = vec![(KEY_INCARNATION.to_owned(), identity.incarnation.to_string())];
        if let Some(addr) = addr {
            initial.push((KEY_GRPC.to_owned(), addr));
        }
        for (kind, about) in kinds {
            initial.push((format!("{PREFIX_KIND}{kind}"), about.clone()));
        }
        initial.push((KEY_ENTITIES.to_owned(), entity_kinds.join(",")));
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(identity.name.clone(), generation(), gossip_addr),
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: bound,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                // As quickwit sets it: intervals longer than this are outliers, not data.
                max_interval: (config.gossip_interval * 10).max(Duration::from_secs(10)),
                initial_interval: config.gossip_interval,
                dead_node_grace_period: config.dead_grace,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: config.dead_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
            // Compressed digests: every node of a duologue cluster runs chitchat 0.13.
            protocol_version: ProtocolVersion::V1,
        };
        let traffic = Arc::new(GossipTraffic::of(chitchat_config.chitchat_id.clone()));
        let transport = SealedUdp::new(
            GossipKey::new(secret, &config.cluster_id),
            socket,
            traffic.clone(),
        );
        let handle = spawn_chitchat(chitchat_config, initial, &transport)
            .await
            .map_err(|e| NodeError::Cluster(format!("cannot start gossip on {bound}: {e:#}")))?;
        let chitchat = handle.chitchat();
        let (live, own_state_bytes) = {
            let mut chitchat = chitchat.lock().await;
            (
                chitchat.live_nodes_watcher(),
                state_bytes(chitchat.self_node_state()),
            )
        };
        let (changes, changed) = mpsc::unbounded_channel();
        let membership = Arc::new(Self {
            config: config.clone(),
            gossip_addr,
            chitchat,
            handle: Mutex::new(Some(handle)),
            changes,
            view: watch::channel(Arc::new(View::default())).0,
            subscribers: Mutex::new(Vec::new()),
            leaving: std::sync::atomic::AtomicBool::new(false),
            stopped: std::sync::OnceLock::new(),
            version: std::sync::atomic::AtomicU64::new(0),
            unpublished: Mutex::new((0, None)),
            placed: Mutex::new(Vec::new()),
            traffic,
            own_state_bytes: own_state_bytes.into(),
        });
        membership.refresh().await;
        tokio::spawn(membership.clone().track(live, changed, stop.clone()));
        if !config.seed_dns.is_empty() {
            tokio::spawn(membership.clone().resolve_seeds(stop));
        }
        Ok(membership)
    }

    /// Whether this node's view can be taken as the cluster's: it has no seeds (it founds
    /// the cluster), or it has heard of another member and knows the gossip state of every
    /// member it heard of (a member is heard of before its state arrives; its session
    /// address is part of that state).
    pub(crate) fn knows_the_cluster(&self) -> bool {
        if self.config.seeds.is_empty() && self.config.seed_dns.is_empty() {
            return true;
        }
        let view = self.view();
        view.len() > 1 && view.each().all(|m| m.addr.is_some())
    }

    /// Where this node gossips.
    pub(crate) fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// Publishes that this node serves `name` with `protocol` ("" for any).
    pub(crate) fn publish(&self, name: &str, protocol: &str) {
        self.change(Change::Set(
            format!("{PREFIX_NAME}{name}"),
            protocol.to_owned(),
        ));
    }

    /// Publishes that this node's host of `kind` settled on the members of `digest`.
    pub(crate) fn publish_settled(&self, kind: &str, digest: &str) {
        self.change(Change::Set(
            format!("{PREFIX_SETTLED}{kind}"),
            digest.to_owned(),
        ));
    }

    /// Says this node leaves (its gossip state says `leaving`), without stopping yet:
    /// members stop routing to it, and its entity hosts hand their shards over.
    pub(crate) async fn announce_leaving(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.chitchat
            .lock()
            .await
            .self_node_state()
            .set(KEY_LEAVING, "1");
    }

    /// Publishes that this node hosts entities of `kind`, speaking `protocol`.
    pub(crate) fn publish_entity_kind(&self, kind: &str, protocol: &str) {
        self.change(Change::Set(
            format!("{PREFIX_ENTITY}{kind}"),
            protocol.to_owned(),
        ));
    }

    /// Withdraws `name`.
    pub(crate) fn unpublish(&self, name: &str) {
        self.change(Change::Delete(format!("{PREFIX_NAME}{name}")));
    }

    fn change(&self, change: Change) {
        let mut unpublished = lock(&self.unpublished);
        if self.changes.send(change).is_ok() {
            unpublished.0 += 1;
            unpublished.1.get_or_insert_with(Instant::now);
        }
    }

    /// The cluster in figures: members by state, names, and what of this node's own
    /// names is not published yet.
    pub(crate) fn figures(&self) -> super::status::ClusterStatus {
        let view = self.view();
        let (names_unpublished, since) = *lock(&self.unpublished);
        let mut status = super::status::ClusterStatus {
            names: view.names(),
            names_unpublished,
            publish_lag: since.map_or(Duration::ZERO, |since| since.elapsed()),
            own_state_bytes: self
                .own_state_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            gossip_bytes_sent: self.traffic.sent.load(std::sync::atomic::Ordering::Relaxed),
            gossip_bytes_received: self
                .traffic
                .received
                .load(std::sync::atomic::Ordering::Relaxed),
            ..Default::default()
        };
        for state in view.states() {
            let at = match state {
                crate::members::MemberState::Up => 0,
                crate::members::MemberState::Leaving => 1,
                crate::members::MemberState::Unreachable => 2,
            };
            status.members[at] += 1;
        }
        status
    }

    /// The cluster now.
    pub(crate) fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// Subscribes `sink`: it gets the members now, then every change.
    /// The cluster's events for a part of this node (the sessions follow the verdicts):
    /// the members now, then every change, until the receiver is dropped.
    pub(crate) fn events(&self) -> mpsc::UnboundedReceiver<ClusterEvent> {
        let (events, receiver) = mpsc::unbounded_channel();
        self.subscribe(Box::new(events));
        receiver
    }

    fn subscribe(&self, sink: Box<dyn ClusterSink>) {
        let mut subscribers = lock(&self.subscribers);
        if sink
            .deliver(ClusterEvent::Current(self.view().members()))
            .is_ok()
        {
            subscribers.push(sink);
        }
    }

    /// Says this node leaves, keeps gossiping it for the linger (bounded by `within`),
    /// then stops the engine.
    pub(crate) async fn leave(&self, within: Duration) {
        self.announce_leaving().await;
        let version = self.chitchat.lock().await.self_node_state().max_version();
        // The linger (peers' views and routers move off this node meanwhile, while what
        // still arrives is forwarded), and until every member up in its view has the leave
        // (it said so in a digest), within the drain: then it hears a leave, not a death.
        let linger = tokio::time::sleep(self.config.leave_linger.min(within));
        let heard = tokio::time::timeout(within, async {
            loop {
                let heard_more = self.traffic.heard_more();
                tokio::pin!(heard_more);
                // Registered before looking, so that a digest in between is not missed.
                heard_more.as_mut().enable();
                let view = self.view();
                // Members leaving too are not waited for: they may be gone already.
                let mut peers = view.each().filter(|m| {
                    m.gossip_addr != self.gossip_addr && m.state == crate::members::MemberState::Up
                });
                if peers.all(|peer| self.traffic.has(peer.gossip_addr, version)) {
                    return;
                }
                heard_more.await;
            }
        });
        let (_, _) = tokio::join!(linger, heard);
        let handle = lock(&self.handle).take();
        if let Some(handle) = handle {
            let _ = handle.shutdown().await;
        }
    }

    /// Keeps the view current until `stop`: on every change of the live set, every
    /// half gossip interval (deaths do not change the live-set watch of every engine
    /// version alike), and after every change of this node's own state.
    async fn track(
        self: Arc<Self>,
        mut live: watch::Receiver<BTreeMap<ChitchatId, chitchat::NodeState>>,
        mut changes: mpsc::UnboundedReceiver<Change>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.config.gossip_interval / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let terminated = lock(&self.handle)
            .as_ref()
            .map(ChitchatHandle::termination_watcher);
        let mut terminated = std::pin::pin!(async move {
            match terminated {
                Some(terminated) => terminated.await,
                None => std::future::pending().await,
            }
        });
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                ended = &mut terminated => {
                    if !self.leaving.load(std::sync::atomic::Ordering::SeqCst) {
                        self.engine_stopped(ended);
                    }
                    return;
                }
                changed = live.changed() => if changed.is_err() { break },
                _ = tick.tick() => {}
                Some(change) = changes.recv() => {
                    let mut chitchat = self.chitchat.lock().await;
                    let state = chitchat.self_node_state();
                    let mut next = Some(change);
                    let mut applied = 0;
                    while let Some(change) = next {
                        match change {
                            Change::Set(key, value) => state.set(key, value),
                            Change::Delete(key) => state.delete(&key),
                        }
                        applied += 1;
                        next = changes.try_recv().ok();
                    }
                    self.own_state_bytes
                        .store(state_bytes(state), std::sync::atomic::Ordering::Relaxed);
                    let mut unpublished = lock(&self.unpublished);
                    unpublished.0 = unpublished.0.saturating_sub(applied);
                    if unpublished.0 == 0 {
                        unpublished.1 = None;
                    }
                }
            }
            self.refresh().await;
        }
        if !self.leaving.load(std::sync::atomic::Ordering::SeqCst) {
            let handle = lock(&self.handle).take();
            if let Some(handle) = handle {
                let _ = handle.initiate_shutdown();
            }
        }
    }

    /// The gossip engine ended without this node leaving (it failed: chitchat's task
    /// panics past its datagram wall, `docs/scale.md`). The view would freeze with every
    /// member up; instead lookups and member lists fail from now on, subscribers are
    /// told, and the error is logged.
    fn engine_stopped(&self, ended: anyhow::Result<()>) {
        let reason = match ended {
            Ok(()) => "the gossip engine stopped".to_owned(),
            Err(error) => format!("the gossip engine failed: {error:#}"),
        };
        tracing::error!(
            %reason,
            "cluster membership stopped: this node's view of the cluster no longer changes; \
             restart the node"
        );
        let _ = self.stopped.set(reason.clone());
        let mut subscribers = lock(&self.subscribers);
        subscribers.retain(|s| {
            s.deliver(ClusterEvent::GossipStopped {
                reason: reason.clone(),
            })
            .is_ok()
        });
        subscribers.clear();
    }

    /// The view's version: it grows with every change of the members.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Chooses the member an actor of `kind` named `name` is spawned on, when any member
    /// that offers the kind will do: the one with the fewest named actors, counting those
    /// this node placed there that the view does not show yet (its figures lag a gossip
    /// round), then the lowest name. The placement counts until the view shows it, the
    /// spawn fails ([`Membership::unplace`]), or ten gossip rounds pass.
    ///
    /// # Errors
    /// [`SpawnError::NameTaken`] when a member of the view holds `name`, or this node
    /// placed it a moment ago; [`SpawnError::NoNodeOffers`] when no member serves `kind`.
    pub(crate) fn place(&self, kind: &str, name: &str) -> Result<Placed, SpawnError> {
        let view = self.view();
        let taken = |node: &str| SpawnError::NameTaken {
            node: node.to_owned(),
            name: name.to_owned(),
        };
        if let Some(holder) = view.holders(name).first() {
            return Err(taken(&holder.identity.name));
        }
        let mut placed = lock(&self.placed);
        let horizon = self.config.gossip_interval * 10;
        placed.retain(|p| p.at.elapsed() < horizon && view.holders(&p.name).is_empty());
        if let Some(earlier) = placed.iter().find(|p| p.name == name) {
            return Err(taken(&earlier.node));
        }
        let pending = |node: &str| placed.iter().filter(|p| p.node == node).count();
        let chosen = view
            .offering(kind)
            .into_iter()
            .filter(|m| m.addr.is_some())
            .min_by_key(|m| {
                let load = m.actors.len() + pending(&m.identity.name);
                (load, m.identity.name.clone())
            })
            .ok_or_else(|| SpawnError::NoNodeOffers {
                kind: kind.to_owned(),
            })?;
        let chosen = Placed {
            node: chosen.identity.name.clone(),
            addr: chosen.addr.clone().unwrap_or_default(),
        };
        placed.push(Placement {
            node: chosen.node.clone(),
            name: name.to_owned(),
            at: Instant::now(),
        });
        Ok(chosen)
    }

    /// Forgets the placement of `name`: its spawn failed.
    pub(crate) fn unplace(&self, name: &str) {
        lock(&self.placed).retain(|p| p.name != name);
    }

    /// Why the gossip engine stopped, if it failed.
    pub(crate) fn stopped(&self) -> Option<&str> {
        self.stopped.get().map(String::as_str)
    }

    /// Brings the view to the gossip state, publishes it and tells subscribers what
    /// changed. Only the members whose gossip state changed since the last look are read
    /// again: an idle cluster costs a look at each member's version.
    async fn refresh(&self) {
        let (present, changed) = {
            let chitchat = self.chitchat.lock().await;
            let view = self.view.borrow();
            changes(&chitchat, &view)
        };
        if changed.is_empty() && present.len() == self.view.borrow().len() {
            return;
        }
        let mut subscribers = lock(&self.subscribers);
        let mut events = Vec::new();
        let mut modified = false;
        self.view.send_if_modified(|view| {
            // Cloned only if a reader holds the view right now.
            let view = Arc::make_mut(view);
            let members = view.len();
            modified = !changed.is_empty() || members != present.len();
            events = view.update(&present, changed);
            modified
        });
        if modified {
            self.version
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        for event in events {
            subscribers.retain(|s| s.deliver(event.clone()).is_ok());
        }
    }

    /// Resolves the DNS seeds now and every period, and gossips to each address that is
    /// not a member up already (a node that starts before its seeds joins when they
    /// appear; a new pod behind the name is found).
    async fn resolve_seeds(self: Arc<Self>, stop: CancellationToken) {
        let failures = LogBudget::new();
        loop {
            let view = self.view();
            let up: HashSet<SocketAddr> = view
                .members()
                .iter()
                .filter(|m| m.state == crate::members::MemberState::Up)
                .map(|m| m.gossip_addr)
                .collect();
            for name in &self.config.seed_dns {
                match tokio::net::lookup_host(name.as_str()).await {
                    Ok(addrs) => {
                        for addr in addrs {
                            if addr != self.gossip_addr && !up.contains(&addr) {
                                self.gossip_to(addr);
                            }
                        }
                    }
                    Err(error) => failures.log(|unreported| {
                        tracing::warn!(
                            seed = %name, %error, unreported,
                            "cannot resolve a DNS seed; trying again"
                        );
                    }),
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.config.seed_dns_every) => {}
            }
        }
    }

    fn gossip_to(&self, addr: SocketAddr) {
        if let Some(handle) = lock(&self.handle).as_ref() {
            let _ = handle.gossip(addr);
        }
    }
}

/// This process's gossip generation: its start time in milliseconds, so that a
/// restarted node is a newer generation and the longest running node has the lowest.
fn generation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Every member's key in `chitchat`'s state now, and the records of the nodes whose
/// state or liveness changed since `view` read them.
fn changes(chitchat: &Chitchat, view: &View) -> (Vec<MemberKey>, Vec<NodeRecord>) {
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let mut present = Vec::new();
    let mut changed = Vec::new();
    for (id, state) in chitchat.node_states() {
        let key = (
            id.node_id.to_string(),
            id.generation_id,
            id.gossip_advertise_addr,
        );
        let live = live.contains(id);
        if view.stale(&key, state.max_version(), live) {
            changed.push(NodeRecord {
                node_id: key.0.clone(),
                generation: key.1,
                gossip_addr: key.2,
                live,
                version: state.max_version(),
                keys: state
                    .key_values()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            });
        }
        present.push(key);
    }
    (present, changed)
}

/// A named actor found in the cluster ([`crate::Node::lookup`]): where it lives, typed by the
/// protocol it was looked up with.
#[derive(Debug)]
pub struct Located<P> {
    /// Its name.
    pub name: String,
    /// The node it lives on.
    pub node: NodeIdentity,
    /// Where that node accepts sessions.
    pub addr: String,
    /// Other nodes that registered the same name (the rule chose `node`; see
    /// [`ClusterEvent::NameConflict`]).
    pub others: Vec<NodeIdentity>,
    protocol: PhantomData<fn() -> P>,
}

impl Membership {
    /// The members as this node sees them now, itself included.
    ///
    /// # Errors
    /// [`NodeError::Cluster`] once its gossip engine failed
    /// ([`ClusterEvent::GossipStopped`]).
    pub(crate) fn members(&self) -> Result<Vec<Member>, NodeError> {
        if let Some(reason) = self.stopped() {
            return Err(NodeError::Cluster(reason.to_owned()));
        }
        Ok(self.view().members())
    }

    /// Resolves at the next change of the view. Create it before reading the members,
    /// so that a change in between is not missed.
    pub(crate) fn changed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut changes = self.view.subscribe();
        async move {
            let _ = changes.changed().await;
        }
    }

    /// Sends `actor` the cluster's events: first [`ClusterEvent::Current`], then every
    /// change, until it stops.
    pub(crate) fn subscribe_actor<M: FromCluster>(&self, actor: &ActorRef<M>) {
        self.subscribe(Box::new(actor.clone()));
    }

    /// The actor named `name` on whichever member serves it, waiting up to `within` for
    /// it to appear ([`crate::Node::lookup`]).
    pub(crate) async fn lookup<P: Protocol>(
        &self,
        name: &str,
        within: Duration,
    ) -> Result<Located<P>, LookupError> {
        let started = Instant::now();
        let mut changes = self.view.subscribe();
        loop {
            if let Some(reason) = self.stopped() {
                return Err(LookupError::GossipStopped {
                    reason: reason.to_owned(),
                });
            }
            let view = changes.borrow_and_update().clone();
            if let Some(found) = locate::<P>(&view, name)? {
                return Ok(found);
            }
            let left = within.saturating_sub(started.elapsed());
            if left.is_zero() || tokio::time::timeout(left, changes.changed()).await.is_err() {
                return Err(LookupError::NotFound {
                    name: name.to_owned(),
                    waited: within,
                });
            }
        }
    }
}

/// The member `view` resolves `name` to, typed `P`.
fn locate<P: Protocol>(view: &View, name: &str) -> Result<Option<Located<P>>, LookupError> {
    let holders = view.holders(name);
    let Some(winner) = holders.first() else {
        return Ok(None);
    };
    let serves = winner
        .actor(name)
        .map(|a| a.protocol.clone())
        .unwrap_or_default();
    let wanted = P::name();
    if !serves.is_empty() && serves != wanted {
        return Err(LookupError::ProtocolMismatch {
            name: name.to_owned(),
            node: winner.identity.name.clone(),
            serves,
            wanted,
        });
    }
    Ok(Some(Located {
        name: name.to_owned(),
        node: winner.identity.clone(),
        addr: winner.addr.clone().unwrap_or_default(),
        others: holders[1..].iter().map(|m| m.identity.clone()).collect(),
        protocol: PhantomData,
    }))
}

/// Bytes of a node's gossip state: its keys and values.
fn state_bytes(state: &chitchat::NodeState) -> u64 {
    state
        .key_values()
        .map(|(key, value)| (key.len() + value.len()) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr};

    use super::*;
    use crate::Node;
    use crate::config::NodeConfig;
    use crate::node::control::Control;

    /// Forwards the cluster events it gets.
    struct Events;

    #[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
    impl Actor for Events {
        type Msg = ClusterEvent;
        type State = mpsc::UnboundedSender<ClusterEvent>;
        type Arguments = mpsc::UnboundedSender<ClusterEvent>;

        async fn pre_start(
            &self,
            _: ActorRef<ClusterEvent>,
            events: Self::State,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(events)
        }

        async fn handle(
            &self,
            _: ActorRef<ClusterEvent>,
            event: ClusterEvent,
            events: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            let _ = events.send(event);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_gossip_engine_that_stops_without_a_leave_is_told_not_left_frozen() {
        let config = NodeConfig {
            name: "a".into(),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            cluster: Some(ClusterConfig::new("127.0.0.1:0".parse().unwrap())),
            ..NodeConfig::default()
        };
        let node = Node::builder()
            .config(config)
            .secret(Secret::new("cluster unit test secret, 32 b!!").unwrap())
            .start()
            .await
            .unwrap();
        let (tx, mut events) = mpsc::unbounded_channel();
        let (listener, _) = Actor::spawn(None, Events, tx).await.unwrap();
        node.subscribe_cluster(&listener).unwrap();
        let within = Duration::from_secs(10);
        let first = tokio::time::timeout(within, events.recv()).await.unwrap();
        assert!(matches!(first, Some(ClusterEvent::Current(_))), "{first:?}");
        assert_eq!(node.members().unwrap().len(), 1);

        // The engine ends as it does when it fails: not through a leave.
        let handle = lock(&node.membership().unwrap().handle).take().unwrap();
        handle.shutdown().await.unwrap();
        let told = tokio::time::timeout(within, events.recv()).await.unwrap();
        assert!(
            matches!(told, Some(ClusterEvent::GossipStopped { .. })),
            "{told:?}"
        );
        assert!(matches!(node.members(), Err(NodeError::Cluster(_))));
        assert!(matches!(
            node.lookup::<Control>("anything", within).await,
            Err(LookupError::GossipStopped { .. })
        ));
        // Asked over the wire, it says so too.
        let client = Node::builder()
            .secret(Secret::new("cluster unit test secret, 32 b!!").unwrap())
            .start()
            .await
            .unwrap();
        let addr = node.local_addr().unwrap().to_string();
        assert!(matches!(
            client.members_at(&addr).await,
            Err(crate::error::SpawnError::GossipStopped { .. })
        ));
        listener.stop(None);
    }
}
