//! Where a message to an entity goes: the node's [`Router`] computes the owner of the
//! id's shard from the cluster's view ([`ShardTable`]), hands messages for entities this
//! node owns to its host of the kind, and carries the others on one session per owner
//! and kind (the *carrier*, to `$entities/KIND` there), opened on first use and kept.
//! [`EntityRef`] is the typed handle users hold.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorRef};
use tokio::sync::{OnceCell, broadcast, oneshot};

use super::message::{EntityReply, Item, ToHost};
use super::placement::{ShardTable, shard_of};
use crate::actor::inbox::InboxEvent;
use crate::actor::mailbox::{Credit, Mailbox, SessionSignal, Unconfirmed};
use crate::config::{EntityConfig, SessionPolicy};
use crate::error::{CallError, EntityError, SendError};
use crate::handles::remote_ref::{Protocol, RemoteRef};
use crate::handles::session_ref::CallInFlight;
use crate::members::View;
use crate::node::cluster::Membership;
use crate::node::connect::{Connect, Target};
use crate::node::sessions::Sessions;
use crate::node::status::EntityKindStatus;
use crate::sync::lock;
use crate::wire::Fault;
use crate::wire::pb::{EntityAnswer, EntityEnvelope};

/// The prefix of the name a node registers its host of an entity kind under.
pub(crate) const CARRIER_PREFIX: &str = "$entities/";

/// How long a message waits for some member to host its kind (a node starting, a
/// cluster forming) before [`EntityError::NoHost`].
const FIND_HOST_WITHIN: Duration = Duration::from_secs(10);

/// The name `$entities/KIND` a node hosts `kind` under.
pub(crate) fn carrier_name(kind: &str) -> String {
    format!("{CARRIER_PREFIX}{kind}")
}

/// The protocol of the sessions that carry entity traffic between two nodes
/// (`proto/duologue/v1/entity.proto`).
#[derive(Debug)]
pub(crate) struct Carrier;

impl Protocol for Carrier {
    type Request = EntityEnvelope;
    type Response = EntityAnswer;
}

/// The mailbox of a node's host of one kind: envelopes from carriers, messages from this
/// node, ticks and the cluster's changes.
pub(crate) type HostMailbox<P> = Mailbox<Carrier, ToHost<P>>;

/// Where the entities of one shard live now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// On this node.
    Here,
    /// On another node, which accepts sessions at `addr`.
    There {
        /// Its name.
        node: String,
        /// Where it accepts sessions.
        addr: String,
    },
    /// No member hosts the kind.
    Nobody,
}

/// What a host counts, for status and metrics.
#[derive(Debug, Default)]
pub(crate) struct HostCounters {
    /// Entities active now.
    pub(crate) active: AtomicUsize,
    /// Entities started, since the node started.
    pub(crate) started: AtomicU64,
    /// Entities stopped for being idle or for the bound.
    pub(crate) passivated: AtomicU64,
    /// Entities stopped because their shard moved to another member.
    pub(crate) handed_off: AtomicU64,
    /// Messages forwarded to the member that owns their shard.
    pub(crate) forwarded: AtomicU64,
    /// Messages waiting: for an entity that is stopping, or for a shard's hand-off.
    pub(crate) waiting: AtomicUsize,
    /// Entities whose constructor failed.
    pub(crate) start_failures: AtomicU64,
    /// Messages refused: no member serves their shard, or the views disagreed on its
    /// owner past the bound.
    pub(crate) refused: AtomicU64,
    /// Shards claimed in the state store now (a kind that keeps state).
    pub(crate) claims: AtomicUsize,
    /// Entities stopped because their shard's claim was lost: fenced by a newer one, or
    /// its lease lapsed or went to another node.
    pub(crate) fenced: AtomicU64,
}

/// The node's host of one kind.
struct HostEntry {
    /// The protocol of the kind.
    protocol: String,
    /// Its `ActorRef<HostMailbox<P>>`.
    host: Arc<dyn Any + Send + Sync>,
    cell: ActorCell,
    /// Tells it the node leaves; `false` once it stopped.
    leave: Box<dyn Fn(oneshot::Sender<()>) -> bool + Send + Sync>,
    counters: Arc<HostCounters>,
}

/// A kind's shard table, and the view it was computed for.
type ViewTable = (Arc<View>, Arc<ShardTable>);

/// A carrier to (address, kind), opened once.
type CarrierSlot = Arc<OnceCell<RemoteRef<Carrier>>>;

/// The node's router: its hosts, the carriers it opened, the shard tables of its view.
pub(crate) struct Router {
    me: String,
    config: EntityConfig,
    cluster: Option<Arc<Membership>>,
    sessions: Arc<Sessions>,
    policy: SessionPolicy,
    /// The node's host of each kind it hosts: an `ActorRef<HostMailbox<P>>`.
    hosts: RwLock<HashMap<String, HostEntry>>,
    /// Carrier sessions by (address, kind): opened once, dropped when they close.
    /// By address, then kind: found without allocating, once per message.
    carriers: Mutex<HashMap<String, HashMap<String, CarrierSlot>>>,
    /// The shard table of each kind for the last view it was computed for.
    tables: Mutex<HashMap<String, ViewTable>>,
    /// Where casts never confirmed are told.
    undelivered: broadcast::Sender<Undelivered>,
}

/// A cast to an entity that the node owning it never confirmed: its session to that
/// node was lost (the node died, or stayed unreachable past the resume deadline) or
/// closed first. It may or may not have reached the entity; it will not be delivered
/// after this. From [`crate::Node::subscribe_undelivered`].
#[derive(Clone, Debug, PartialEq)]
pub struct Undelivered {
    /// The entity's kind.
    pub kind: String,
    /// The entity's id.
    pub id: String,
    /// The message's type URL.
    pub type_url: String,
    /// The encoded message.
    pub payload: bytes::Bytes,
    /// Why its session ended.
    pub reason: String,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("me", &self.me)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// The router of the node `me`, placing by `cluster`'s view (everything here without
    /// one), opening carriers through `sessions` with `policy`.
    pub(crate) fn new(
        me: String,
        config: EntityConfig,
        cluster: Option<Arc<Membership>>,
        sessions: Arc<Sessions>,
        policy: SessionPolicy,
    ) -> Arc<Self> {
        Arc::new(Self {
            me,
            config,
            cluster,
            sessions,
            policy,
            hosts: RwLock::new(HashMap::new()),
            carriers: Mutex::new(HashMap::new()),
            tables: Mutex::new(HashMap::new()),
            undelivered: broadcast::channel(1024).0,
        })
    }

    /// This node's name.
    pub(crate) fn me(&self) -> &str {
        &self.me
    }

    /// Has every host hand its shards over (the node leaves), and waits until each
    /// stopped its entities and said so, up to `within`.
    pub(crate) async fn leave(&self, within: Duration) {
        let mut done = Vec::new();
        for entry in self
            .hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let (tx, rx) = oneshot::channel();
            if (entry.leave)(tx) {
                done.push(rx);
            }
        }
        let _ = tokio::time::timeout(within, futures::future::join_all(done)).await;
    }

    /// The entity settings.
    pub(crate) fn config(&self) -> &EntityConfig {
        &self.config
    }

    /// The node's membership, in a cluster.
    pub(crate) fn cluster(&self) -> Option<&Arc<Membership>> {
        self.cluster.as_ref()
    }

    /// Records the node's host of `kind`, speaking `P`.
    pub(crate) fn add_host<P: Protocol>(
        &self,
        kind: &str,
        host: ActorRef<HostMailbox<P>>,
        counters: Arc<HostCounters>,
    ) {
        if let Some(cluster) = &self.cluster {
            cluster.publish_entity_kind(kind, &P::name());
        }
        let entry = HostEntry {
            protocol: P::name(),
            cell: host.get_cell(),
            leave: Box::new({
                let host = host.clone();
                move |done| {
                    host.send_message(Mailbox::Local(ToHost::Leave(done)))
                        .is_ok()
                }
            }),
            host: Arc::new(host),
            counters,
        };
        self.hosts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind.to_owned(), entry);
    }

    /// The figures of every kind the node hosts, by kind.
    pub(crate) fn figures(&self) -> Vec<EntityKindStatus> {
        let hosts = self.hosts.read().unwrap_or_else(|p| p.into_inner());
        let mut figures: Vec<EntityKindStatus> = hosts
            .iter()
            .map(|(kind, entry)| {
                let c = &entry.counters;
                let shards = match &self.cluster {
                    Some(cluster) => {
                        let table = self.table(kind, &cluster.view());
                        (0..table.shards())
                            .filter(|s| table.owner(*s) == Some(self.me.as_str()))
                            .count() as u32
                    }
                    None => self.config.shards,
                };
                EntityKindStatus {
                    kind: kind.clone(),
                    shards,
                    active: c.active.load(Ordering::Relaxed),
                    started: c.started.load(Ordering::Relaxed),
                    passivated: c.passivated.load(Ordering::Relaxed),
                    handed_off: c.handed_off.load(Ordering::Relaxed),
                    forwarded: c.forwarded.load(Ordering::Relaxed),
                    waiting: c.waiting.load(Ordering::Relaxed),
                    refused: c.refused.load(Ordering::Relaxed),
                    start_failures: c.start_failures.load(Ordering::Relaxed),
                    claims: c.claims.load(Ordering::Relaxed),
                    fenced: c.fenced.load(Ordering::Relaxed),
                }
            })
            .collect();
        figures.sort_by(|a, b| a.kind.cmp(&b.kind));
        figures
    }

    /// Whether the node hosts any entity kind.
    pub(crate) fn hosts_any(&self) -> bool {
        !self
            .hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Forgets every host, for the node to stop them.
    pub(crate) fn take_hosts(&self) -> Vec<ActorCell> {
        self.hosts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, entry)| entry.cell)
            .collect()
    }

    /// The node's host of `kind`, if it hosts it with the protocol `P`.
    fn host<P: Protocol>(&self, kind: &str) -> Result<ActorRef<HostMailbox<P>>, EntityError> {
        let hosts = self.hosts.read().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = hosts.get(kind) else {
            return Err(EntityError::NoHost { kind: kind.into() });
        };
        entry
            .host
            .downcast_ref::<ActorRef<HostMailbox<P>>>()
            .cloned()
            .ok_or_else(|| EntityError::ProtocolMismatch {
                kind: kind.into(),
                registered: entry.protocol.clone(),
                asked: P::name(),
            })
    }

    /// The shard of `id`.
    pub(crate) fn shard_of(&self, id: &str) -> u32 {
        shard_of(id, self.config.shards)
    }

    /// Where `shard` of `kind` lives in this node's view.
    pub(crate) fn place(&self, kind: &str, shard: u32) -> Place {
        let Some(cluster) = &self.cluster else {
            let hosted = self
                .hosts
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(kind);
            return if hosted { Place::Here } else { Place::Nobody };
        };
        let view = cluster.view();
        let table = self.table(kind, &view);
        match table.owner(shard) {
            None => Place::Nobody,
            Some(owner) if owner == self.me => Place::Here,
            Some(owner) => match view.serving(owner).and_then(|m| m.addr.clone()) {
                Some(addr) => Place::There {
                    node: owner.to_owned(),
                    addr,
                },
                None => Place::Nobody,
            },
        }
    }

    /// The shard table of `kind` in `view`, computed once per view.
    pub(crate) fn table(&self, kind: &str, view: &Arc<View>) -> Arc<ShardTable> {
        let mut tables = lock(&self.tables);
        if let Some((seen, table)) = tables.get(kind)
            && Arc::ptr_eq(seen, view)
        {
            return table.clone();
        }
        let hosts = view
            .each()
            .filter(|m| m.serves() && m.hosts(kind))
            .map(|m| m.identity.name.clone());
        let table = Arc::new(ShardTable::new(kind, self.config.shards, hosts));
        tables.insert(kind.to_owned(), (view.clone(), table.clone()));
        table
    }

    /// Where `shard` of `kind` lives, waiting up to `within` for a member to host the
    /// kind.
    async fn find(&self, kind: &str, shard: u32, within: Duration) -> Result<Place, EntityError> {
        let deadline = Instant::now() + within;
        loop {
            let changed = self.cluster.as_ref().map(|c| c.changed());
            let place = self.place(kind, shard);
            if place != Place::Nobody {
                return Ok(place);
            }
            let Some(changed) = changed else {
                return Err(EntityError::NoHost { kind: kind.into() });
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, changed).await.is_err() {
                return Err(EntityError::NoHost { kind: kind.into() });
            }
        }
    }

    /// The carrier session of `kind` to the node at `addr`, opened on first use.
    pub(crate) async fn carrier(
        self: &Arc<Self>,
        node: &str,
        addr: &str,
        kind: &str,
    ) -> Result<RemoteRef<Carrier>, EntityError> {
        let cell = self.carrier_slot(addr, kind);
        if let Some(carrier) = cell.get() {
            return Ok(carrier.clone());
        }
        let key = (addr.to_owned(), kind.to_owned());
        let opened = cell
            .get_or_try_init(|| async {
                let (remote, mut inbox) = Connect::<Carrier>::new(
                    self.sessions.clone(),
                    None,
                    Target::at(addr, carrier_name(kind)),
                    self.policy,
                )
                .inbox()
                .await?;
                // The host never sends on a carrier but answers; once the session is
                // over, what it never confirmed is told, and the next message opens
                // another.
                let router = Arc::downgrade(self);
                let this = cell.clone();
                let kind = kind.to_owned();
                tokio::spawn(async move {
                    while let Some(event) = inbox.recv().await {
                        let (unconfirmed, reason) = match event {
                            // The peer leaves: this side finishes too (what it carried is
                            // confirmed), and the next message opens another session.
                            InboxEvent::Signal(SessionSignal::PeerFinished(session, _)) => {
                                session.finish();
                                if let Some(router) = router.upgrade() {
                                    router.forget_carrier(&key, &this);
                                }
                                continue;
                            }
                            InboxEvent::Signal(SessionSignal::Lost(lost)) => {
                                (lost.unconfirmed.clone(), lost.reason.to_string())
                            }
                            InboxEvent::Signal(SessionSignal::Closed {
                                unconfirmed,
                                reason,
                                ..
                            }) => (unconfirmed, reason.to_string()),
                            _ => continue,
                        };
                        if let Some(router) = router.upgrade() {
                            router.undelivered(&kind, unconfirmed, &reason);
                        }
                    }
                    if let Some(router) = router.upgrade() {
                        router.forget_carrier(&key, &this);
                    }
                });
                Ok(remote)
            })
            .await;
        opened.cloned().map_err(|source| EntityError::Connect {
            node: node.to_owned(),
            source: Box::new(source),
        })
    }

    /// The slot of the carrier of `kind` to `addr`, made empty on first use.
    fn carrier_slot(&self, addr: &str, kind: &str) -> CarrierSlot {
        let mut carriers = lock(&self.carriers);
        if let Some(slot) = carriers.get(addr).and_then(|kinds| kinds.get(kind)) {
            return slot.clone();
        }
        carriers
            .entry(addr.to_owned())
            .or_default()
            .entry(kind.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets the carrier `slot` of (address, kind) `key`, if it is still the one kept.
    fn forget_carrier(&self, key: &(String, String), slot: &CarrierSlot) {
        let mut carriers = lock(&self.carriers);
        let (addr, kind) = key;
        if let Some(kinds) = carriers.get_mut(addr) {
            if kinds.get(kind).is_some_and(|c| Arc::ptr_eq(c, slot)) {
                kinds.remove(kind);
            }
            if kinds.is_empty() {
                carriers.remove(addr);
            }
        }
    }

    /// Tells whoever listens of the casts a carrier of `kind` sent that its peer never
    /// confirmed (calls among them have failed already, typed).
    fn undelivered(&self, kind: &str, unconfirmed: Vec<Unconfirmed>, reason: &str) {
        for message in unconfirmed.into_iter().filter(|m| !m.was_call) {
            let Ok(envelope) = message.decode::<EntityEnvelope>() else {
                continue;
            };
            tracing::warn!(%kind, id = %envelope.id, %reason, "a message for an entity was never confirmed by its owner's node");
            let _ = self.undelivered.send(Undelivered {
                kind: kind.to_owned(),
                id: envelope.id,
                type_url: envelope.type_url,
                payload: envelope.payload,
                reason: reason.to_owned(),
            });
        }
    }

    /// Casts to entities that their owner's node never confirmed, from now on.
    pub(crate) fn subscribe_undelivered(&self) -> broadcast::Receiver<Undelivered> {
        self.undelivered.subscribe()
    }

    /// Sends `envelope` as a cast on the carrier of `kind` to `node` at `addr`, waiting
    /// for its credit.
    pub(crate) async fn cast_to(
        self: &Arc<Self>,
        node: &str,
        addr: &str,
        kind: &str,
        envelope: EntityEnvelope,
    ) -> Result<(), EntityError> {
        let carrier = self.carrier(node, addr, kind).await?;
        carrier
            .cast(envelope)
            .await
            .map_err(|error| EntityError::Send(error.map(drop)))
    }

    /// Sends `envelope` as a call on the carrier of `kind` to `node` at `addr`; what
    /// waits for the answer.
    pub(crate) async fn call_to(
        self: &Arc<Self>,
        node: &str,
        addr: &str,
        kind: &str,
        envelope: EntityEnvelope,
        timeout: Duration,
    ) -> Result<CallInFlight, EntityError> {
        let carrier = self.carrier(node, addr, kind).await?;
        Ok(carrier.session().start_call(&envelope, timeout).await?)
    }
}

/// A typed handle to the entity `id` of a kind that speaks `P`, wherever it lives: the
/// first message starts it, and the handle stays valid while it moves. Cheap to clone.
/// From [`crate::Node::entity`] (routed by this node's view of the cluster) or
/// [`crate::Node::entity_via`] (through a node the process knows).
pub struct EntityRef<P> {
    kind: Arc<str>,
    id: Arc<str>,
    shard: u32,
    router: Arc<Router>,
    /// The node that routes for a process outside the cluster.
    via: Option<Arc<str>>,
    protocol: PhantomData<fn() -> P>,
}

impl<P> Clone for EntityRef<P> {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind.clone(),
            id: self.id.clone(),
            shard: self.shard,
            router: self.router.clone(),
            via: self.via.clone(),
            protocol: PhantomData,
        }
    }
}

impl<P> fmt::Debug for EntityRef<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityRef")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("shard", &self.shard)
            .field("via", &self.via)
            .finish()
    }
}

impl<P: Protocol> EntityRef<P> {
    pub(crate) fn new(
        router: Arc<Router>,
        kind: &str,
        id: &str,
        via: Option<&str>,
    ) -> Result<Self, EntityError> {
        crate::names::check_name(id).map_err(|reason| EntityError::InvalidId {
            id: crate::names::printable(id, 80),
            reason,
        })?;
        Ok(Self {
            kind: kind.into(),
            id: id.into(),
            shard: router.shard_of(id),
            router,
            via: via.map(Into::into),
            protocol: PhantomData,
        })
    }

    /// The entity's kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The entity's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The shard its id maps to.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    async fn place(&self) -> Result<Place, EntityError> {
        self.router
            .find(&self.kind, self.shard, FIND_HOST_WITHIN)
            .await
    }

    fn envelope(&self, message: &P::Request) -> EntityEnvelope {
        EntityEnvelope {
            id: self.id.to_string(),
            type_url: crate::wire::TypeUrl::of::<P::Request>().as_str().to_owned(),
            payload: prost::Message::encode_to_vec(message).into(),
            hops: 0,
        }
    }

    /// Sends a one-way message, waiting for the carrier's credit when the entity lives
    /// on another node. `Ok` means the message was handed to the entity's node (or its
    /// host here), not that the entity handled it.
    ///
    /// # Errors
    /// [`EntityError::NoHost`] when no member hosts the kind within 10 s,
    /// [`EntityError::Connect`] or [`EntityError::Send`] when the owner cannot take it,
    /// [`EntityError::ShuttingDown`].
    pub async fn cast(&self, message: impl Into<P::Request>) -> Result<(), EntityError> {
        let message = message.into();
        if let Some(via) = &self.via {
            return self
                .router
                .cast_to(via, via, &self.kind, self.envelope(&message))
                .await;
        }
        match self.place().await? {
            Place::Here | Place::Nobody => self.deliver_here(Item::Cast(message, Credit::none())),
            Place::There { node, addr } => {
                self.router
                    .cast_to(&node, &addr, &self.kind, self.envelope(&message))
                    .await
            }
        }
    }

    /// Sends a request and waits up to `timeout` for the entity's reply.
    ///
    /// # Errors
    /// As [`EntityRef::cast`], and [`EntityError::Call`]: a timeout, the owner declared
    /// unreachable, a fault (`no_reply`, `entity_start`, `decode`, `unplaced`).
    pub async fn call(
        &self,
        request: impl Into<P::Request>,
        timeout: Duration,
    ) -> Result<P::Response, EntityError> {
        let request = request.into();
        if let Some(via) = &self.via {
            return self.call_there(via, via, &request, timeout).await;
        }
        match self.place().await? {
            Place::Here | Place::Nobody => {
                let (tx, rx) = oneshot::channel();
                let item = Item::Call(request, EntityReply::local(tx), Credit::none());
                self.deliver_here(item)?;
                match tokio::time::timeout(timeout, rx).await {
                    Err(_) => Err(CallError::Timeout(timeout).into()),
                    Ok(Err(_)) => Err(CallError::Fault(no_reply()).into()),
                    Ok(Ok(Err(fault))) => Err(CallError::Fault(fault).into()),
                    Ok(Ok(Ok(reply))) => Ok(reply),
                }
            }
            Place::There { node, addr } => self.call_there(&node, &addr, &request, timeout).await,
        }
    }

    /// A call to the entity through `node` at `addr`, within `timeout` in all: opening
    /// the session to a node that does not answer counts against it too.
    async fn call_there(
        &self,
        node: &str,
        addr: &str,
        request: &P::Request,
        timeout: Duration,
    ) -> Result<P::Response, EntityError> {
        tokio::time::timeout(
            timeout,
            self.call_there_unbounded(node, addr, request, timeout),
        )
        .await
        .unwrap_or(Err(CallError::Timeout(timeout).into()))
    }

    async fn call_there_unbounded(
        &self,
        node: &str,
        addr: &str,
        request: &P::Request,
        timeout: Duration,
    ) -> Result<P::Response, EntityError> {
        let envelope = self.envelope(request);
        let in_flight = self
            .router
            .call_to(node, addr, &self.kind, envelope, timeout)
            .await?;
        let (type_url, payload) = in_flight.answer().await?;
        let answer: EntityAnswer = crate::handles::session_ref::decode_payload(&type_url, &payload)
            .map_err(CallError::from)?;
        decode_answer::<P::Response>(&answer)
            .map_err(|fault| EntityError::Call(CallError::Fault(fault)))
    }

    fn deliver_here(&self, item: Item<P>) -> Result<(), EntityError> {
        let host = self.router.host::<P>(&self.kind)?;
        host.send_message(Mailbox::Local(ToHost::Deliver {
            id: self.id.clone(),
            item,
        }))
        .map_err(|_| EntityError::ShuttingDown)
    }
}

/// The fault a call gets when the entity dropped it unanswered.
pub(crate) fn no_reply() -> Fault {
    Fault {
        code: "no_reply".into(),
        message: "the entity dropped the call without replying".into(),
    }
}

/// An entity's answer as the reply type `R`, or the `decode` fault.
pub(crate) fn decode_answer<R: prost::Message + prost::Name + Default + 'static>(
    answer: &EntityAnswer,
) -> Result<R, Fault> {
    let type_url = crate::wire::TypeUrl::from(answer.type_url.as_str());
    crate::handles::session_ref::decode_payload(&type_url, &answer.payload).map_err(|error| Fault {
        code: "decode".into(),
        message: format!("the entity's reply: {error}"),
    })
}

impl From<SendError<()>> for EntityError {
    fn from(error: SendError<()>) -> Self {
        Self::Send(error)
    }
}
