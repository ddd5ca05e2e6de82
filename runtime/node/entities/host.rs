//! A node's host of one entity kind: the actor registered as `$entities/KIND`. It takes
//! envelopes from the carriers of other nodes and messages from this one, starts an
//! entity with its first message, hands it each message in order, and stops it
//! (drains it: what it received is handled first) when it is idle past
//! [`EntityConfig::idle_after`], when the kind has [`EntityConfig::max_active`] active
//! and another must start, or when its shard moves to another member.
//!
//! Shards move as the view changes ([`Handoff`]): the host stops the entities of the
//! shards it gave up, and once none is left it publishes that it settled on the new
//! members (`settled:KIND` in gossip). Messages for a shard it took over wait here, in
//! order, until the shard's previous owner settled on the same members (or is declared
//! unreachable, or [`HANDOFF_WAIT`] passed). Messages for an entity that is stopping wait
//! until it stopped, then go where its shard is. Whatever arrives for a shard another
//! member owns is forwarded there, inline, so that one sender's messages keep their
//! order.
//!
//! [`EntityConfig::idle_after`]: crate::settings::EntityConfig::idle_after
//! [`EntityConfig::max_active`]: crate::settings::EntityConfig::max_active

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, MessagingErr, SupervisionEvent};

use tokio::sync::oneshot;

use super::claims::{Claims, ClaimsArgs};
use super::directory::Directory;
use super::durable::Fence;
use super::handoff::Handoff;
use super::message::{Entity, EntityReply, Item, ToHost};
use super::router::{HostCounters, HostMailbox, Router, decode_answer};
use crate::actor::mailbox::{Credit, Mailbox, Reply};
use crate::error::{CallError, SendError};
use crate::handles::remote_ref::Protocol;
use crate::handles::session_ref::CallInFlight;
use crate::members::MemberState;
use crate::wire::Fault;
use crate::wire::pb::{EntityAnswer, EntityEnvelope};

/// Forwards past this many are refused (`unplaced`): views that disagree for longer
/// than a gossip round are not followed around.
const MAX_HOPS: u32 = 2;

/// How long a call from this node forwarded to a new owner waits for its answer: the
/// caller's own timeout ends its wait first.
const FORWARDED_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a host waits for a session to the owner it forwards to before the message
/// waits for the view to change instead (the owner may be dead, not yet declared so here).
const FORWARD_CONNECT_WITHIN: Duration = Duration::from_secs(1);

/// How long an entity stopped to make room may take to handle what it has.
const EVICT_WITHIN: Duration = Duration::from_secs(10);

/// The longest a shard taken over waits for its previous owner to say it settled; past
/// it the shard is served all the same (`docs/semantics.md`, "Entities").
pub(crate) const HANDOFF_WAIT: Duration = Duration::from_secs(10);

/// How long messages for a shard wait for its claim (the store unreachable, or another
/// node's lease not expired) before they are refused (`state_unavailable`).
const CLAIM_WAIT: Duration = Duration::from_secs(30);

/// Starts the entity with the given id (under the claim of its shard, for a kind that
/// keeps state): the kind's constructor.
pub(crate) type StartFn<P, L> = dyn Fn(String, Option<Fence>) -> BoxFuture<'static, Result<ActorRef<Entity<P, L>>, String>>
    + Send
    + Sync;

/// The host actor of a kind speaking `P`, whose entities take local messages `L`.
pub(crate) struct Host<P, L>(std::marker::PhantomData<fn() -> (P, L)>);

/// What a host starts with.
pub(crate) struct HostArgs<P: Protocol, L> {
    pub(crate) kind: String,
    pub(crate) start: Arc<StartFn<P, L>>,
    pub(crate) router: Arc<Router>,
    pub(crate) counters: Arc<HostCounters>,
    /// The entities carrier messages may reach without passing through the host.
    pub(crate) directory: Arc<Directory<P, L>>,
    /// For a kind that keeps state: the store its shards are claimed in.
    pub(crate) claims: Option<ClaimsArgs>,
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

/// A message the host holds: until its shard may be served here, or (disputed) until
/// this node's view changes.
struct Held<P: Protocol> {
    id: Arc<str>,
    item: Item<P>,
    /// How many nodes forwarded it.
    hops: u32,
    /// The node that forwarded it here.
    from: Option<Arc<str>>,
    since: Instant,
}

impl<P: Protocol> Held<P> {
    fn new(id: Arc<str>, item: Item<P>, hops: u32, from: Option<Arc<str>>) -> Self {
        Self {
            id,
            item,
            hops,
            from,
            since: Instant::now(),
        }
    }
}

/// A host's state.
pub(crate) struct HostState<P: Protocol, L> {
    kind: String,
    start: Arc<StartFn<P, L>>,
    router: Arc<Router>,
    counters: Arc<HostCounters>,
    /// Opened to an entity once it runs and no carrier message for it is on its way
    /// here; closed before it drains or stops.
    directory: Arc<Directory<P, L>>,
    active: HashMap<Arc<str>, Activation<P, L>>,
    /// Which entity each started actor is.
    ids: HashMap<ActorId, Arc<str>>,
    /// Running entities from the least recently used.
    recency: BTreeMap<u64, Arc<str>>,
    clock: u64,
    /// The shards it owns and those it waits to serve.
    handoff: Handoff,
    /// Entities stopping because their shard moved: settled once none is left.
    handing_off: HashSet<Arc<str>>,
    /// The digest it last said it settled on.
    settled: Option<String>,
    /// Messages for shards taken over, in arrival order per shard.
    held: BTreeMap<u32, VecDeque<Held<P>>>,
    /// Messages forwarded here for a shard this node's view gives to the node that
    /// forwarded them (or forwarded too often): they wait for the views to agree.
    disputed: VecDeque<Held<P>>,
    /// Members this host saw up: one declared unreachable since is not waited for.
    seen_up: HashSet<String>,
    /// Told once the node left: every entity stopped and the shards handed over.
    left: Vec<oneshot::Sender<()>>,
    /// For a kind that keeps state: the shards claimed in the store. A shard is served
    /// only under a claim.
    claims: Option<Claims>,
    /// When the leases were last renewed.
    renewed: Instant,
    /// The host itself, for the store's answers.
    myself: ActorRef<HostMailbox<P>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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

/// Sends `host` a tick every `period` while it runs.
fn ticks<P: Protocol>(
    host: ActorRef<HostMailbox<P>>,
    period: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if host.send_message(Mailbox::Local(ToHost::Tick)).is_err() {
                break;
            }
        }
    })
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
        let mut period = (args.router.config().idle_after / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        if let Some(lease) = args.claims.as_ref().and_then(|c| c.lease) {
            // Leases are renewed every quarter of their length, and served until three
            // quarters: ticks come at least twice as often.
            period = period.min(lease / 8).max(Duration::from_millis(10));
        }
        let mut tasks = vec![ticks(myself.clone(), period)];
        if let Some(cluster) = args.router.cluster() {
            // Every change of the view, members' settled digests included.
            let (cluster, host) = (cluster.clone(), myself.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let changed = cluster.changed();
                    if host
                        .send_message(Mailbox::Local(ToHost::ViewChanged))
                        .is_err()
                    {
                        break;
                    }
                    changed.await;
                }
            }));
        }
        Ok(HostState {
            handoff: Handoff::new(args.router.me(), &args.kind),
            kind: args.kind,
            start: args.start,
            router: args.router,
            counters: args.counters,
            directory: args.directory,
            active: HashMap::new(),
            ids: HashMap::new(),
            recency: BTreeMap::new(),
            clock: 0,
            handing_off: HashSet::new(),
            settled: None,
            held: BTreeMap::new(),
            disputed: VecDeque::new(),
            seen_up: HashSet::new(),
            left: Vec::new(),
            claims: args.claims.map(Claims::new),
            renewed: Instant::now(),
            myself,
            tasks,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for task in state.tasks.drain(..) {
            task.abort();
        }
        // Nothing held is dropped unannounced.
        let held: Vec<Held<P>> = std::mem::take(&mut state.held)
            .into_values()
            .flatten()
            .chain(std::mem::take(&mut state.disputed))
            .collect();
        for held in held {
            let detail = format!("the node stopped before {} could be served", held.id);
            state.refuse_item(&held.id, held.item, detail);
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
                session,
                message,
                credit,
            } => {
                let id = message.id.clone();
                state
                    .envelope(&myself, &session, message, None, credit)
                    .await;
                state.handled(&id);
            }
            Mailbox::Call {
                session,
                request,
                reply,
                credit,
            } => {
                let id = request.id.clone();
                state
                    .envelope(&myself, &session, request, Some(reply), credit)
                    .await;
                state.handled(&id);
            }
            Mailbox::Local(ToHost::Deliver { id, item }) => {
                state.route(&myself, Held::new(id, item, 0, None)).await;
            }
            Mailbox::Local(ToHost::Tick) => {
                state.passivate_idle();
                state.keep_claims();
                state.release_held(&myself).await;
                state.refuse_disputed_past_bound();
                state.refuse_unclaimed_past_bound();
            }
            Mailbox::Local(ToHost::Claimed {
                shard,
                sent,
                result,
            }) => {
                state.claimed(shard, sent, result);
                state.release_held(&myself).await;
            }
            Mailbox::Local(ToHost::Renewed { sent, result }) => state.renewed(sent, result),
            Mailbox::Local(ToHost::Fenced { shard, epoch }) => {
                if state
                    .claims
                    .as_mut()
                    .is_some_and(|c| c.fenced(shard, epoch))
                {
                    tracing::warn!(kind = %state.kind, shard, epoch, "another node claimed the shard: its entities here stop");
                    state.stop_shards(&[shard]);
                }
            }
            Mailbox::Local(ToHost::ViewChanged) => state.view_changed(&myself).await,
            Mailbox::Local(ToHost::Leave(done)) => state.leave(&myself, done).await,
            Mailbox::Cluster(_) | Mailbox::Signal(_) | Mailbox::Undecodable(_) => {}
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
    /// A carrier message for `id` that took the long way was handled: the entity may be
    /// reached the short way from now on if it runs here in a shard served here.
    fn handled(&mut self, id: &str) {
        let shard = self.router.shard_of(id);
        let open = self.handoff.owns(shard) && !self.held.contains_key(&shard);
        let running = match self.active.get(id) {
            Some(Activation::Running { actor, .. }) if open => Some(actor),
            _ => None,
        };
        self.directory.handled(id, running);
    }

    /// An envelope from another node's carrier.
    async fn envelope(
        &mut self,
        myself: &ActorRef<HostMailbox<P>>,
        session: &crate::handles::session_ref::SessionRef,
        envelope: EntityEnvelope,
        reply: Option<Reply<EntityAnswer>>,
        credit: Credit,
    ) {
        if let Err(reason) = crate::names::check_name(&envelope.id) {
            refuse(reply, "invalid_id", reason.to_owned());
            return;
        }
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
        let from = (envelope.hops > 0).then(|| Arc::from(session.peer().name.as_str()));
        self.route(
            myself,
            Held::new(envelope.id.into(), item, envelope.hops, from),
        )
        .await;
    }

    /// Where a message goes: to the shard's owner if another member owns it, held while
    /// its shard is handed over to this node (or while the views disagree on its owner),
    /// or to the entity.
    async fn route(&mut self, myself: &ActorRef<HostMailbox<P>>, held: Held<P>) {
        self.follow_view();
        let shard = self.router.shard_of(&held.id);
        if !self.handoff.owns(shard) {
            self.forward(held, shard).await;
            return;
        }
        if let Some(queue) = self.held.get_mut(&shard) {
            queue.push_back(held);
            self.counters.waiting.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !self.ready(shard) {
            self.held.entry(shard).or_default().push_back(held);
            self.counters.waiting.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.deliver(myself, held.id, held.item).await;
    }

    /// Whether `shard`, owned here, may be served now: every other member, up or leaving,
    /// that hosts the kind (or said it would, or has not said yet) settled on the members
    /// this node's table spreads the shards over, and for a kind that keeps state, this
    /// node holds a claim of it in the store. A member declared unreachable after this
    /// host saw it up cannot say it and is not waited for; one not heard alive yet (a node
    /// that just joined sees the others so until their heartbeats arrive) is.
    fn ready(&mut self, shard: u32) -> bool {
        self.handed_over(shard) && self.claimed_here(shard)
    }

    /// Whether `shard` is claimed here for a kind that keeps state (or the kind keeps
    /// none); asks the store for it when not.
    fn claimed_here(&mut self, shard: u32) -> bool {
        let Some(claims) = &mut self.claims else {
            return true;
        };
        let now = Instant::now();
        if claims.serving(shard, now).is_some() {
            return true;
        }
        if claims.ask(shard, now) {
            let (store, owner, lease) = (
                claims.store().clone(),
                claims.owner().to_owned(),
                claims.lease(),
            );
            let (kind, host) = (self.kind.clone(), self.myself.clone());
            tokio::spawn(async move {
                let result = store.claim(&kind, shard, &owner, lease).await;
                let _ = host.send_message(Mailbox::Local(ToHost::Claimed {
                    shard,
                    sent: now,
                    result,
                }));
            });
        }
        false
    }

    /// Whether `shard` was handed over to this node (see [`HostState::ready`]).
    fn handed_over(&mut self, shard: u32) -> bool {
        let Some(cluster) = self.router.cluster() else {
            return true;
        };
        let view = cluster.view();
        let knows = cluster.knows_the_cluster();
        note_seen_up(&mut self.seen_up, &view);
        let (kind, me, seen_up) = (self.kind.as_str(), self.router.me(), &self.seen_up);
        self.handoff
            .ready(shard, Instant::now(), HANDOFF_WAIT, knows, |digest| {
                view.each()
                    .filter(|m| m.identity.name != me)
                    .filter(|m| {
                        m.state != MemberState::Unreachable || !seen_up.contains(&m.identity.name)
                    })
                    .all(|m| match &m.declared_entity_kinds {
                        None => false,
                        Some(kinds) if !kinds.iter().any(|k| k == kind) => true,
                        Some(_) => m.settled(kind) == Some(digest),
                    })
            })
    }

    /// Hands on the held messages of shards that may be served now (or that moved on).
    async fn release_held(&mut self, myself: &ActorRef<HostMailbox<P>>) {
        let shards: Vec<u32> = self.held.keys().copied().collect();
        for shard in shards {
            if self.handoff.owns(shard) && !self.ready(shard) {
                continue;
            }
            let Some(held) = self.held.remove(&shard) else {
                continue;
            };
            self.counters
                .waiting
                .fetch_sub(held.len(), Ordering::Relaxed);
            for held in held {
                self.route(myself, held).await;
            }
        }
    }

    /// Routes the disputed messages again (the view changed).
    async fn retry_disputed(&mut self, myself: &ActorRef<HostMailbox<P>>) {
        let disputed = std::mem::take(&mut self.disputed);
        self.counters
            .waiting
            .fetch_sub(disputed.len(), Ordering::Relaxed);
        for held in disputed {
            self.route(myself, held).await;
        }
    }

    /// Refuses the disputed messages that waited past [`HANDOFF_WAIT`].
    fn refuse_disputed_past_bound(&mut self) {
        while self
            .disputed
            .front()
            .is_some_and(|held| held.since.elapsed() >= HANDOFF_WAIT)
        {
            let Some(held) = self.disputed.pop_front() else {
                break;
            };
            self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
            let detail = format!(
                "the nodes' views disagreed on the owner of {} for {HANDOFF_WAIT:?}",
                held.id
            );
            self.refuse_item(&held.id, held.item, detail);
        }
    }

    /// Refuses the messages held for a shard that was handed over but could not be
    /// claimed in the store within [`CLAIM_WAIT`] (`state_unavailable`).
    fn refuse_unclaimed_past_bound(&mut self) {
        if self.claims.is_none() {
            return;
        }
        let stale: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, queue)| {
                queue
                    .front()
                    .is_some_and(|held| held.since.elapsed() >= CLAIM_WAIT)
            })
            .map(|(shard, _)| *shard)
            .collect();
        for shard in stale {
            if !self.handed_over(shard) {
                continue;
            }
            let Some(queue) = self.held.remove(&shard) else {
                continue;
            };
            self.counters
                .waiting
                .fetch_sub(queue.len(), Ordering::Relaxed);
            for held in queue {
                let detail = format!(
                    "the shard of {} could not be claimed in the state store within {CLAIM_WAIT:?}",
                    held.id
                );
                self.refuse_with(&held.id, held.item, "state_unavailable", detail);
            }
        }
    }

    /// Renews the leases when due, and stops the entities of shards whose lease lapsed.
    fn keep_claims(&mut self) {
        let Some(claims) = &mut self.claims else {
            return;
        };
        let lapsed = claims.lapse(Instant::now());
        if let Some(every) = claims.renew_every()
            && self.renewed.elapsed() >= every
            && claims.ask_renewal()
        {
            self.renewed = Instant::now();
            let (store, owner, lease) = (
                claims.store().clone(),
                claims.owner().to_owned(),
                claims.lease().unwrap_or(every),
            );
            let (kind, host, sent) = (self.kind.clone(), self.myself.clone(), self.renewed);
            tokio::spawn(async move {
                let result = store.renew(&kind, &owner, lease).await;
                let _ = host.send_message(Mailbox::Local(ToHost::Renewed { sent, result }));
            });
        }
        if !lapsed.is_empty() {
            tracing::warn!(kind = %self.kind, shards = lapsed.len(), "leases lapsed unrenewed: their entities here stop");
            self.stop_shards(&lapsed);
        }
    }

    /// The store answered a claim.
    fn claimed(
        &mut self,
        shard: u32,
        sent: Instant,
        result: Result<Option<crate::store::Claim>, crate::store::StateError>,
    ) {
        let Some(claims) = &mut self.claims else {
            return;
        };
        match result {
            Ok(claim) => {
                if claim.is_none() {
                    tracing::debug!(kind = %self.kind, shard, "another node holds the shard's lease; its messages wait");
                }
                claims.claimed(shard, sent, claim);
            }
            Err(error) => {
                tracing::warn!(kind = %self.kind, shard, %error, "the shard could not be claimed; its messages wait");
                claims.not_claimed(shard);
            }
        }
        self.counters.claims.store(claims.len(), Ordering::Relaxed);
    }

    /// The store answered a renewal of the leases.
    fn renewed(
        &mut self,
        sent: Instant,
        result: Result<Vec<(u32, crate::store::Claim)>, crate::store::StateError>,
    ) {
        let Some(claims) = &mut self.claims else {
            return;
        };
        let lost = match &result {
            Ok(renewed) => claims.renewed(sent, Some(renewed)),
            Err(error) => {
                tracing::warn!(kind = %self.kind, %error, "the leases could not be renewed");
                claims.renewed(sent, None)
            }
        };
        self.counters.claims.store(claims.len(), Ordering::Relaxed);
        if !lost.is_empty() {
            tracing::warn!(kind = %self.kind, shards = lost.len(), "leases lost to other nodes: their entities here stop");
            self.stop_shards(&lost);
        }
    }

    /// Drains the running entities of `shards`: their claims are gone.
    fn stop_shards(&mut self, shards: &[u32]) {
        let shards: HashSet<u32> = shards.iter().copied().collect();
        let ids: Vec<Arc<str>> = self
            .recency
            .values()
            .filter(|id| shards.contains(&self.router.shard_of(id)))
            .cloned()
            .collect();
        for id in ids {
            self.drain(&id);
            self.counters.fenced.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refuses `item`: a call gets an `unplaced` fault; a cast is logged and counted.
    fn refuse_item(&self, id: &str, item: Item<P>, detail: String) {
        self.refuse_with(id, item, "unplaced", detail);
    }

    /// Refuses `item` with `code`: a call gets the fault; a cast is logged and counted.
    fn refuse_with(&self, id: &str, item: Item<P>, code: &str, detail: String) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        match item {
            Item::Call(_, reply, _) => {
                let _ = reply.fail(Fault {
                    code: code.into(),
                    message: detail,
                });
            }
            Item::Cast(..) => {
                tracing::warn!(kind = %self.kind, %id, %detail, "a message for an entity was refused; it is lost");
            }
        }
    }

    /// The view changed: shards this node gave up have their entities stopped, shards it
    /// took over wait for their previous owner, and held messages go on where they can.
    async fn view_changed(&mut self, myself: &ActorRef<HostMailbox<P>>) {
        // On every view, not only when it serves a shard of its own: a node that only
        // forwarded must not wait for a member it saw up and that died since. (Once per
        // view, not per message routed.)
        if let Some(cluster) = self.router.cluster() {
            note_seen_up(&mut self.seen_up, &cluster.view());
        }
        self.follow_view();
        self.settle();
        self.release_held(myself).await;
        self.retry_disputed(myself).await;
    }

    /// Follows the cluster's view as it is now (at once when it has not changed): every
    /// message is routed by the newest view, whatever the order the host hears of views
    /// in.
    fn follow_view(&mut self) {
        let Some(cluster) = self.router.cluster() else {
            return;
        };
        let table = self.router.table(&self.kind, &cluster.view());
        if self.handoff.follow(table, Instant::now()) {
            self.hand_off_moved();
            self.settle();
        }
    }

    /// Stops the running entities whose shard this node no longer owns.
    fn hand_off_moved(&mut self) {
        let moved: Vec<Arc<str>> = self
            .recency
            .values()
            .filter(|id| !self.handoff.owns(self.router.shard_of(id)))
            .cloned()
            .collect();
        for id in moved {
            self.drain(&id);
            self.handing_off.insert(id);
            self.counters.handed_off.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The node leaves: every shard is handed over (without a cluster, every entity is
    /// stopped); `done` is told once no entity is left.
    async fn leave(&mut self, myself: &ActorRef<HostMailbox<P>>, done: oneshot::Sender<()>) {
        self.left.push(done);
        self.handoff.leave();
        if self.router.cluster().is_none() {
            let running: Vec<Arc<str>> = self.recency.values().cloned().collect();
            for id in running {
                self.drain(&id);
                self.handing_off.insert(id);
            }
        } else {
            self.hand_off_moved();
        }
        self.view_changed(myself).await;
    }

    /// Once no entity of a shard given up is left, says so in gossip (and tells whoever
    /// waits for the node to leave).
    fn settle(&mut self) {
        if !self.handing_off.is_empty() {
            return;
        }
        // The claims of the shards given up go back to the store first, so that their
        // new owners need not wait for the leases to expire: the node says it settled,
        // and that it left, only once they are back.
        let release = self.give_up_claims();
        let publish = match (self.handoff.digest(), self.router.cluster()) {
            (Some(digest), cluster) if self.settled.as_ref() != Some(&digest) => {
                self.settled = Some(digest.clone());
                cluster.map(|cluster| (cluster.clone(), self.kind.clone(), digest))
            }
            _ => None,
        };
        let left: Vec<oneshot::Sender<()>> = if self.handoff.leaving() && self.active.is_empty() {
            self.left.drain(..).collect()
        } else {
            Vec::new()
        };
        let announce = move || {
            if let Some((cluster, kind, digest)) = publish {
                cluster.publish_settled(&kind, &digest);
            }
            for done in left {
                let _ = done.send(());
            }
        };
        match release {
            Some(release) => {
                tokio::spawn(async move {
                    release.await;
                    announce();
                });
            }
            None => announce(),
        }
    }

    /// Drops the claims of the shards this node gave up (all of them once it leaves), and
    /// with leases, what gives their leases back to the store.
    fn give_up_claims(&mut self) -> Option<impl Future<Output = ()> + use<P, L>> {
        let claims = self.claims.as_mut()?;
        let handoff = &self.handoff;
        let given = claims.give_up(|shard| handoff.leaving() || !handoff.owns(shard));
        self.counters.claims.store(claims.len(), Ordering::Relaxed);
        if given.is_empty() || claims.lease().is_none() {
            return None;
        }
        let (store, owner, kind) = (
            claims.store().clone(),
            claims.owner().to_owned(),
            self.kind.clone(),
        );
        Some(async move {
            if let Err(error) = store.release(&kind, &owner, &given).await {
                tracing::warn!(%kind, %error, "leases given up could not be released; they expire");
            }
        })
    }

    /// Holds a message, disputed, until this node's view changes.
    fn dispute(&mut self, held: Held<P>) {
        self.disputed.push_back(held);
        self.counters.waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends a message on to the member that owns `shard`: a cast once it is sent, a
    /// call's answer relayed from a task once it comes. It is never sent back to the node
    /// that forwarded it, nor forwarded past [`MAX_HOPS`]: it waits, disputed, for this
    /// node's view to change.
    async fn forward(&mut self, held: Held<P>, shard: u32) {
        let Some(owner) = self.handoff.table().and_then(|t| t.owner(shard)) else {
            let detail = format!(
                "no member hosts the shard of {} in this node's view",
                held.id
            );
            self.refuse_item(&held.id, held.item, detail);
            return;
        };
        let owner = owner.to_owned();
        // The view may have moved on since the table was made (another thread publishes
        // it): an owner that no longer serves is one the next view change routes around.
        let addr = self
            .router
            .cluster()
            .and_then(|c| c.view().serving(&owner).and_then(|m| m.addr.clone()));
        let Some(addr) = addr else {
            self.dispute(held);
            return;
        };
        let node = owner;
        // A node that leaves knows better than the others that it owns nothing: it sends
        // back what was forwarded to it (the other holds it until its view catches up).
        let bounces = held.from.as_deref() == Some(node.as_str()) && !self.handoff.leaving();
        if held.hops >= MAX_HOPS || bounces {
            self.dispute(held);
            return;
        }
        // An owner that cannot be reached is one this node's view is about to give up
        // (its death not detected here yet): the message waits for the view to change.
        let opened = tokio::time::timeout(
            FORWARD_CONNECT_WITHIN,
            self.router.carrier(&node, &addr, &self.kind),
        )
        .await
        .map_err(|_| format!("no session within {FORWARD_CONNECT_WITHIN:?}"))
        .and_then(|opened| opened.map_err(|e| e.to_string()));
        let carrier = match opened {
            Ok(carrier) => carrier,
            Err(error) => {
                tracing::debug!(kind = %self.kind, id = %held.id, %node, %error, "the owner cannot be reached; the message waits for the view to change");
                self.dispute(held);
                return;
            }
        };
        let Held {
            id,
            item,
            hops,
            from,
            since,
        } = held;
        let hops = hops + 1;
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let envelope = |message: &P::Request| EntityEnvelope {
            id: id.to_string(),
            type_url: crate::wire::TypeUrl::of::<P::Request>().as_str().to_owned(),
            payload: prost::Message::encode_to_vec(message).into(),
            hops,
        };
        match item {
            Item::Cast(message, credit) => {
                // Sent, it is the carrier's: confirmed by the owner, or told undelivered.
                match carrier.cast(envelope(&message)).await {
                    Ok(()) => {}
                    // The cluster gave the owner up since the table was made: the next
                    // view places the shard elsewhere.
                    Err(SendError::PeerUnreachable { .. }) => self.dispute(Held {
                        id,
                        item: Item::Cast(message, credit),
                        hops: hops - 1,
                        from,
                        since,
                    }),
                    Err(error) => {
                        tracing::warn!(kind = %self.kind, %id, %node, %error, "a message for an entity could not be forwarded to its owner; it is lost");
                    }
                }
            }
            Item::Call(request, reply, credit) => {
                let timeout = reply.deadline().map_or(FORWARDED_CALL_TIMEOUT, |d| {
                    d.saturating_duration_since(Instant::now())
                });
                match carrier
                    .session()
                    .start_call(&envelope(&request), timeout)
                    .await
                {
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
                    Err(CallError::PeerUnreachable) => self.dispute(Held {
                        id,
                        item: Item::Call(request, reply, credit),
                        hops: hops - 1,
                        from,
                        since,
                    }),
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
            && let Some((oldest, _)) = self.least_recent()
        {
            self.evict(&oldest).await;
        }
        let fence = match &self.claims {
            Some(claims) => {
                let shard = self.router.shard_of(id);
                let Some(held) = claims.serving(shard, Instant::now()) else {
                    return Err(format!("shard {shard} is not claimed here"));
                };
                let host = self.myself.clone();
                Some(Fence {
                    store: claims.store().clone(),
                    kind: Arc::from(self.kind.as_str()),
                    shard,
                    epoch: held.epoch,
                    until: held.until,
                    fenced: Arc::new(move |shard, epoch| {
                        let _ = host.send_message(Mailbox::Local(ToHost::Fenced { shard, epoch }));
                    }),
                })
            }
            None => None,
        };
        match (self.start)(id.to_string(), fence).await {
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
        self.directory.close(id);
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
            self.directory.close(id);
            let _ = actor.get_cell().drain();
            *activation = Activation::Stopping {
                waiting: VecDeque::new(),
            };
        }
    }

    /// Forgets the actor `actor` that stopped; returns what waited for it.
    fn forget(&mut self, actor: ActorId) -> Option<(Arc<str>, VecDeque<Item<P>>)> {
        let id = self.ids.remove(&actor)?;
        self.directory.close(&id);
        self.counters
            .active
            .store(self.ids.len(), Ordering::Relaxed);
        self.handing_off.remove(&id);
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

    /// An entity's actor stopped: what waited for it goes where its shard is now (and
    /// starts it again, if that is here), in order.
    async fn stopped(&mut self, myself: &ActorRef<HostMailbox<P>>, actor: ActorId) {
        let Some((id, waiting)) = self.forget(actor) else {
            return;
        };
        self.counters
            .waiting
            .fetch_sub(waiting.len(), Ordering::Relaxed);
        for item in waiting {
            self.route(myself, Held::new(id.clone(), item, 0, None))
                .await;
        }
        self.settle();
    }

    /// Stops the entities idle past the bound.
    fn passivate_idle(&mut self) {
        let idle_after = self.router.config().idle_after;
        while let Some((id, last)) = self.least_recent() {
            if last.is_some_and(|last| last.elapsed() < idle_after) {
                break;
            }
            self.drain(&id);
            self.counters.passivated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The least recently used entity in the recency order and when it was last used
    /// (`None`: it does not run), counting what the short way delivered to it: an entity
    /// the short way used since the host last did moves to the back, and the next is
    /// looked at.
    fn least_recent(&mut self) -> Option<(Arc<str>, Option<Instant>)> {
        loop {
            let id = self.recency.first_key_value()?.1.clone();
            let direct = self.directory.used(&id);
            let clock = self.next_clock();
            let Some(Activation::Running { used, last, .. }) = self.active.get_mut(&id) else {
                return Some((id, None));
            };
            match direct.filter(|direct| *direct > *last) {
                Some(direct) => {
                    self.recency.remove(used);
                    *used = clock;
                    *last = direct;
                    self.recency.insert(clock, id);
                }
                None => return Some((id, Some(*last))),
            }
        }
    }
}

/// Adds the members up in `view` to those a host saw up.
fn note_seen_up(seen_up: &mut HashSet<String>, view: &crate::members::View) {
    for member in view.each().filter(|m| m.state == MemberState::Up) {
        if !seen_up.contains(&member.identity.name) {
            seen_up.insert(member.identity.name.clone());
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

/// Answers a call with a fault.
fn refuse(reply: Option<Reply<EntityAnswer>>, code: &str, message: String) {
    if let Some(reply) = reply {
        let _ = reply.fail(Fault {
            code: code.into(),
            message,
        });
    }
}
