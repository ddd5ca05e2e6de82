//! A node's host of one entity kind: the actor registered as `$entities/KIND`. It takes
//! envelopes from the carriers of other nodes and messages from this one, starts an
//! entity with its first message, hands it each message in order, and stops it
//! (drains it: what it received is handled first) when it is idle past
//! [`EntityConfig::idle_after`], when the kind has [`EntityConfig::max_active`] active
//! and another must start, or when the cluster's view gives its shard to another member.
//! Messages for an entity that is stopping wait here, in order, and start it again once
//! it stopped. An envelope for a shard this node does not own in its view is forwarded
//! to the owner, inline, so that one sender's messages keep their order.
//!
//! [`EntityConfig::idle_after`]: crate::settings::EntityConfig::idle_after
//! [`EntityConfig::max_active`]: crate::settings::EntityConfig::max_active

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, MessagingErr, SupervisionEvent};

use super::message::{Entity, EntityReply, Item, ToHost};
use super::router::{HostMailbox, Place, Router, decode_answer};
use crate::actor::mailbox::{Credit, Mailbox, Reply};
use crate::error::{CallError, EntityError};
use crate::handles::remote_ref::Protocol;
use crate::handles::session_ref::CallInFlight;
use crate::wire::Fault;
use crate::wire::pb::{EntityAnswer, EntityEnvelope};

/// Forwards past this many are refused (`unplaced`): views that disagree for longer
/// than a gossip round are not followed around.
const MAX_HOPS: u32 = 2;

/// How long a call from this node forwarded to a new owner waits for its answer: the
/// caller's own timeout ends its wait first.
const FORWARDED_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// How long an entity stopped to make room may take to handle what it has.
const EVICT_WITHIN: Duration = Duration::from_secs(10);

/// Starts the entity with the given id: the kind's constructor.
pub(crate) type StartFn<P, L> =
    dyn Fn(String) -> BoxFuture<'static, Result<ActorRef<Entity<P, L>>, String>> + Send + Sync;

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
    /// Envelopes forwarded to the member that owns their shard.
    pub(crate) forwarded: AtomicU64,
    /// Messages waiting for an entity that is stopping.
    pub(crate) waiting: AtomicUsize,
    /// Entities whose constructor failed.
    pub(crate) start_failures: AtomicU64,
}

/// The host actor of a kind speaking `P`, whose entities take local messages `L`.
pub(crate) struct Host<P, L>(std::marker::PhantomData<fn() -> (P, L)>);

/// What a host starts with.
pub(crate) struct HostArgs<P: Protocol, L> {
    pub(crate) kind: String,
    pub(crate) start: Arc<StartFn<P, L>>,
    pub(crate) router: Arc<Router>,
    pub(crate) counters: Arc<HostCounters>,
}

/// One entity the host started.
enum Activation<P: Protocol, L> {
    Running {
        actor: ActorRef<Entity<P, L>>,
        /// Its key in the host's recency order.
        used: u64,
        last: Instant,
    },
    /// Drained: messages wait here until it stopped.
    Stopping { waiting: VecDeque<Item<P>> },
}

/// A host's state.
pub(crate) struct HostState<P: Protocol, L> {
    kind: String,
    start: Arc<StartFn<P, L>>,
    router: Arc<Router>,
    counters: Arc<HostCounters>,
    active: HashMap<Arc<str>, Activation<P, L>>,
    /// Which entity each started actor is.
    ids: HashMap<ActorId, Arc<str>>,
    /// Running entities from the least recently used.
    recency: BTreeMap<u64, Arc<str>>,
    clock: u64,
    ticks: Option<tokio::task::JoinHandle<()>>,
}

impl<P: Protocol, L: Send + 'static> Host<P, L> {
    /// Starts a host.
    pub(crate) async fn start(
        args: HostArgs<P, L>,
    ) -> Result<ActorRef<HostMailbox<P>>, ractor::SpawnErr> {
        let (host, _) = Actor::spawn(None, Self(std::marker::PhantomData), args).await?;
        Ok(host)
    }
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl<P: Protocol, L: Send + 'static> Actor for Host<P, L> {
    type Msg = HostMailbox<P>;
    type State = HostState<P, L>;
    type Arguments = HostArgs<P, L>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: HostArgs<P, L>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let period = (args.router.config().idle_after / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(10));
        let ticker = myself.clone();
        let ticks = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if ticker.send_message(Mailbox::Local(ToHost::Tick)).is_err() {
                    break;
                }
            }
        });
        if let Some(cluster) = args.router.cluster() {
            cluster.subscribe_actor(&myself);
        }
        Ok(HostState {
            kind: args.kind,
            start: args.start,
            router: args.router,
            counters: args.counters,
            active: HashMap::new(),
            ids: HashMap::new(),
            recency: BTreeMap::new(),
            clock: 0,
            ticks: Some(ticks),
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticks) = state.ticks.take() {
            ticks.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Mailbox::Cast {
                message, credit, ..
            } => state.envelope(&myself, message, None, credit).await,
            Mailbox::Call {
                request,
                reply,
                credit,
                ..
            } => state.envelope(&myself, request, Some(reply), credit).await,
            Mailbox::Local(ToHost::Deliver { id, item }) => state.local(&myself, id, item).await,
            Mailbox::Local(ToHost::Tick) => state.passivate_idle(),
            Mailbox::Cluster(_) => state.hand_off_moved(),
            Mailbox::Signal(_) | Mailbox::Undecodable(_) => {}
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let stopped = match &event {
            SupervisionEvent::ActorTerminated(cell, _, _) => Some(cell.get_id()),
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::warn!(kind = %state.kind, %error, "an entity failed");
                Some(cell.get_id())
            }
            _ => None,
        };
        if let Some(actor) = stopped {
            state.stopped(&myself, actor).await;
        }
        Ok(())
    }
}

impl<P: Protocol, L: Send + 'static> HostState<P, L> {
    /// An envelope from another node's carrier: hosted here, or forwarded to the owner.
    async fn envelope(
        &mut self,
        myself: &ActorRef<HostMailbox<P>>,
        mut envelope: EntityEnvelope,
        reply: Option<Reply<EntityAnswer>>,
        credit: Credit,
    ) {
        if let Err(reason) = crate::names::check_name(&envelope.id) {
            refuse(reply, "invalid_id", reason.to_owned());
            return;
        }
        let shard = self.router.shard_of(&envelope.id);
        if let Place::There { node, addr } = self.router.place(&self.kind, shard) {
            if envelope.hops >= MAX_HOPS {
                let detail = format!(
                    "{} forwarded {} times; the nodes' views disagree on its owner",
                    envelope.id, envelope.hops
                );
                refuse(reply, "unplaced", detail);
                return;
            }
            envelope.hops += 1;
            self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            self.forward(&node, &addr, envelope, reply).await;
            drop(credit);
            return;
        }
        // Here, or nobody in this node's view yet (it may not see itself): the sender's
        // view says this node owns it.
        let type_url = crate::wire::TypeUrl::from(envelope.type_url.as_str());
        let decoded: Result<P::Request, _> =
            crate::handles::session_ref::decode_payload(&type_url, &envelope.payload);
        let item = match (decoded, reply) {
            (Ok(message), None) => Item::Cast(message, credit),
            (Ok(request), Some(reply)) => Item::Call(request, EntityReply::remote(reply), credit),
            (Err(error), reply) => {
                tracing::warn!(kind = %self.kind, id = %envelope.id, %error, "an entity message does not decode");
                refuse(reply, "decode", error.to_string());
                return;
            }
        };
        self.deliver(myself, envelope.id.into(), item).await;
    }

    /// Sends `envelope` on to the node that owns its shard: a cast once it is sent, a
    /// call's answer relayed from a task once it comes.
    async fn forward(
        &self,
        node: &str,
        addr: &str,
        envelope: EntityEnvelope,
        reply: Option<Reply<EntityAnswer>>,
    ) {
        let id = envelope.id.clone();
        match reply {
            None => {
                if let Err(error) = self.router.cast_to(node, addr, &self.kind, envelope).await {
                    tracing::warn!(kind = %self.kind, %id, %node, %error, "a message for an entity could not be forwarded to its owner; it is lost");
                }
            }
            Some(reply) => {
                let deadline = reply.deadline();
                let timeout = deadline
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(30));
                match self
                    .router
                    .call_to(node, addr, &self.kind, envelope, timeout)
                    .await
                {
                    Ok(in_flight) => {
                        tokio::spawn(async move {
                            match answer_of(in_flight).await {
                                Ok(answer) => {
                                    let _ = reply.send(answer);
                                }
                                Err(fault) => {
                                    let _ = reply.fail(fault);
                                }
                            }
                        });
                    }
                    Err(EntityError::Call(CallError::Fault(fault))) => {
                        let _ = reply.fail(fault);
                    }
                    Err(error) => refuse(Some(reply), "forward_failed", error.to_string()),
                }
            }
        }
    }

    /// A message from this node, routed by a view that may have changed since: hosted
    /// here, or forwarded to the owner now.
    async fn local(&mut self, myself: &ActorRef<HostMailbox<P>>, id: Arc<str>, item: Item<P>) {
        let shard = self.router.shard_of(&id);
        let Place::There { node, addr } = self.router.place(&self.kind, shard) else {
            self.deliver(myself, id, item).await;
            return;
        };
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let envelope = |message: &P::Request| EntityEnvelope {
            id: id.to_string(),
            type_url: <P::Request as prost::Name>::type_url(),
            payload: prost::Message::encode_to_vec(message).into(),
            hops: 1,
        };
        match item {
            Item::Cast(message, _credit) => {
                if let Err(error) = self
                    .router
                    .cast_to(&node, &addr, &self.kind, envelope(&message))
                    .await
                {
                    tracing::warn!(kind = %self.kind, %id, %node, %error, "a message for an entity could not be forwarded to its owner; it is lost");
                }
            }
            Item::Call(request, reply, _credit) => {
                let sent = self
                    .router
                    .call_to(
                        &node,
                        &addr,
                        &self.kind,
                        envelope(&request),
                        FORWARDED_CALL_TIMEOUT,
                    )
                    .await;
                match sent {
                    Ok(in_flight) => {
                        tokio::spawn(async move {
                            let answer = match answer_of(in_flight).await {
                                Ok(answer) => decode_answer::<P::Response>(&answer),
                                Err(fault) => Err(fault),
                            };
                            let _ = match answer {
                                Ok(answer) => reply.send(answer).map_err(drop),
                                Err(fault) => reply.fail(fault).map_err(drop),
                            };
                        });
                    }
                    Err(error) => {
                        let _ = reply.fail(Fault {
                            code: "forward_failed".into(),
                            message: error.to_string(),
                        });
                    }
                }
            }
        }
    }

    /// Hands `item` to the entity `id`, starting it if it is not running.
    async fn deliver(&mut self, myself: &ActorRef<HostMailbox<P>>, id: Arc<str>, item: Item<P>) {
        if let Some(Activation::Stopping { waiting }) = self.active.get_mut(&id) {
            waiting.push_back(item);
            self.counters.waiting.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut item = item;
        // Twice at most: an actor that stopped by itself since is started again once.
        for _ in 0..2 {
            if !self.active.contains_key(&id)
                && let Err(reason) = self.activate(myself, &id).await
            {
                if let Item::Call(_, reply, _) = item {
                    let _ = reply.fail(Fault {
                        code: "entity_start".into(),
                        message: reason,
                    });
                }
                return;
            }
            let clock = self.next_clock();
            let Some(Activation::Running { actor, used, last }) = self.active.get_mut(&id) else {
                return;
            };
            self.recency.remove(used);
            *used = clock;
            *last = Instant::now();
            self.recency.insert(clock, id.clone());
            match actor.send_message(item.into_entity()) {
                Ok(()) => return,
                Err(MessagingErr::SendErr(entity)) => {
                    let actor = actor.get_id();
                    self.forget(actor);
                    match Item::from_entity(entity) {
                        Some(again) => item = again,
                        None => return,
                    }
                }
                Err(_) => return,
            }
        }
    }

    fn next_clock(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Starts the entity `id`, stopping the least recently used first at the bound.
    async fn activate(
        &mut self,
        myself: &ActorRef<HostMailbox<P>>,
        id: &Arc<str>,
    ) -> Result<(), String> {
        if self.recency.len() >= self.router.config().max_active.max(1)
            && let Some((_, oldest)) = self.recency.first_key_value()
        {
            let oldest = oldest.clone();
            self.evict(&oldest).await;
        }
        match (self.start)(id.to_string()).await {
            Ok(actor) => {
                actor.get_cell().link(myself.get_cell());
                self.ids.insert(actor.get_id(), id.clone());
                self.active.insert(
                    id.clone(),
                    Activation::Running {
                        actor,
                        used: 0,
                        last: Instant::now(),
                    },
                );
                self.counters
                    .active
                    .store(self.ids.len(), Ordering::Relaxed);
                self.counters.started.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(reason) => {
                self.counters.start_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(kind = %self.kind, %id, %reason, "an entity could not start; its message is refused");
                Err(reason)
            }
        }
    }

    /// Stops the running entity `id` to make room, and waits until it stopped (within
    /// [`EVICT_WITHIN`]; past it, it is stopped without handling the rest), so that the
    /// bound holds for actors alive, not only for those the host counts.
    async fn evict(&mut self, id: &Arc<str>) {
        let Some(Activation::Running { actor, used, .. }) = self.active.get(id) else {
            return;
        };
        let (actor, used) = (actor.clone(), *used);
        self.recency.remove(&used);
        if actor
            .get_cell()
            .drain_and_wait(Some(EVICT_WITHIN))
            .await
            .is_err()
        {
            tracing::warn!(kind = %self.kind, %id, "an entity stopped to make room did not drain in time; stopped without handling the rest");
            actor.stop(Some("passivated: did not drain in time".into()));
        }
        self.forget(actor.get_id());
        self.counters.passivated.fetch_add(1, Ordering::Relaxed);
    }

    /// Drains the running entity `id`: it handles what it has, then stops.
    fn drain(&mut self, id: &Arc<str>) {
        let Some(activation) = self.active.get_mut(id) else {
            return;
        };
        if let Activation::Running { actor, used, .. } = activation {
            self.recency.remove(used);
            let _ = actor.get_cell().drain();
            *activation = Activation::Stopping {
                waiting: VecDeque::new(),
            };
        }
    }

    /// Forgets the actor `actor` that stopped; returns what waited for it.
    fn forget(&mut self, actor: ActorId) -> Option<(Arc<str>, VecDeque<Item<P>>)> {
        let id = self.ids.remove(&actor)?;
        self.counters
            .active
            .store(self.ids.len(), Ordering::Relaxed);
        let waiting = match self.active.remove(&id) {
            Some(Activation::Running { used, .. }) => {
                self.recency.remove(&used);
                VecDeque::new()
            }
            Some(Activation::Stopping { waiting }) => waiting,
            None => VecDeque::new(),
        };
        Some((id, waiting))
    }

    /// An entity's actor stopped: what waited for it starts it again, in order.
    async fn stopped(&mut self, myself: &ActorRef<HostMailbox<P>>, actor: ActorId) {
        let Some((id, waiting)) = self.forget(actor) else {
            return;
        };
        self.counters
            .waiting
            .fetch_sub(waiting.len(), Ordering::Relaxed);
        for item in waiting {
            self.deliver(myself, id.clone(), item).await;
        }
    }

    /// Stops the entities idle past the bound.
    fn passivate_idle(&mut self) {
        let idle_after = self.router.config().idle_after;
        while let Some((_, id)) = self.recency.first_key_value() {
            let id = id.clone();
            let idle = match self.active.get(&id) {
                Some(Activation::Running { last, .. }) => last.elapsed() >= idle_after,
                _ => true,
            };
            if !idle {
                break;
            }
            self.drain(&id);
            self.counters.passivated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The view changed: entities whose shard another member owns now are stopped here;
    /// their next messages reach the new owner.
    fn hand_off_moved(&mut self) {
        let moved: Vec<Arc<str>> = self
            .active
            .iter()
            .filter(|(_, activation)| matches!(activation, Activation::Running { .. }))
            .map(|(id, _)| id.clone())
            .filter(|id| {
                let shard = self.router.shard_of(id);
                matches!(self.router.place(&self.kind, shard), Place::There { .. })
            })
            .collect();
        for id in moved {
            self.drain(&id);
            self.counters.handed_off.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The answer of a forwarded call, as the `EntityAnswer` it is on the wire, or the fault
/// to answer with.
async fn answer_of(in_flight: CallInFlight) -> Result<EntityAnswer, Fault> {
    let forward_failed = |message: String| Fault {
        code: "forward_failed".into(),
        message,
    };
    match in_flight.answer().await {
        Ok((type_url, payload)) => crate::handles::session_ref::decode_payload(&type_url, &payload)
            .map_err(|error| forward_failed(error.to_string())),
        Err(CallError::Fault(fault)) => Err(fault),
        Err(error) => Err(forward_failed(error.to_string())),
    }
}

/// Answers a call with a fault; a cast refused is logged by the caller of this.
fn refuse(reply: Option<Reply<EntityAnswer>>, code: &str, message: String) {
    if let Some(reply) = reply {
        let _ = reply.fail(Fault {
            code: code.into(),
            message,
        });
    }
}
