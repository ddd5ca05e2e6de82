//! The control actor every listening node registers as `$node`
//! (`proto/duologue/v1/control.proto`): it spawns actors of the node's kinds for peers,
//! and tells the node's view of its cluster and its status. It asks the node through
//! [`Controlled`], which the node implements. Its clients (`spawn_at`, `spawn`,
//! `members_changed_at`, `status_at`: [`crate::Node::spawn_at`] and the rest) speak to it
//! over an authenticated session like any other.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

use super::cluster::Membership;
use super::hosting::ActorSpec;
use super::sessions::Sessions;
use super::status::{
    ClusterStatus, EntityKindStatus, NodeStatus, Rate, SessionState, SessionStatus,
};
use crate::actor::mailbox::Mailbox;
use crate::error::{NodeError, SpawnError};
use crate::handles::remote_ref::Protocol;
use crate::log_budget::LogBudget;
use crate::members::{HostedKind, Member, MemberState, NamedActor};
use crate::session::{FlowState, Role, SessionCounters};
use crate::wire::NodeIdentity;
use crate::wire::SessionId;
use crate::wire::pb::{
    ActorInfo, ActorPage, ActorsRequest, ClusterFigures, ControlReply, ControlRequest,
    EntityKindFigures, MemberInfo, MemberList, MembersRequest, NodeStatusInfo, SessionStatusInfo,
    SpawnRefused, SpawnRequest, Spawned as SpawnedPb, StatusRequest, control_reply,
    control_request, spawn_refused,
};

/// The name the control actor is registered under on every listening node.
pub const CONTROL_ACTOR: &str = "$node";

/// How long a control call may take: a spawn runs the kind's constructor.
const CONTROL_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a member list request waits for a change (within the call timeout).
const MAX_MEMBERS_WAIT: Duration = Duration::from_secs(25);

/// The most bytes of actor names and protocols one member list carries, whatever is
/// asked: well under a session's message bound (4 MiB by default) at any cluster size.
const MEMBER_LIST_NAME_BYTES: usize = 1024 * 1024;

/// The most actors one page of [`ActorsRequest`] carries (at 255-byte names and
/// 1 024-byte protocols, 1.3 MB).
const ACTOR_PAGE: usize = 1000;

/// The control protocol: requests to `$node`, and its replies.
#[derive(Debug)]
pub(crate) struct Control;

impl Protocol for Control {
    type Request = ControlRequest;
    type Response = ControlReply;
}

/// Where [`Node::spawn`](crate::Node::spawn) starts an actor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpawnOn {
    /// On the member of this name.
    Node(String),
    /// On a member that offers the kind: the one with the fewest named actors, counting
    /// those this node placed there that the view does not show yet (then the lowest
    /// name). Refused `NameTaken` when a member of the view holds the name.
    AnyOffering,
}

/// An actor started on request ([`Node::spawn`](crate::Node::spawn), [`Node::spawn_at`](crate::Node::spawn_at)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spawned {
    /// The node that started it.
    pub node: String,
    /// The name it is registered under.
    pub name: String,
    /// Where that node accepts sessions.
    pub addr: String,
}

/// A node's members as it saw them, with its view's version ([`Node::members_changed_at`](crate::Node::members_changed_at)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembersAt {
    /// The version of that node's view: pass it back to wait for the next change.
    pub version: u64,
    /// Its members.
    pub members: Vec<Member>,
}

/// What the `$node` actor asks of the node that hosts it. The node implements it on a
/// weak handle: the control actor must not keep the node alive.
pub(crate) trait Controlled: Send + Sync + 'static {
    /// The node's name, for answers.
    fn name(&self) -> String;

    /// Where the node accepts sessions, as peers reach it.
    fn advertised_addr(&self) -> Option<String>;

    /// Starts an actor as `spec` says ([`crate::Node::host`]); `None` once the node is gone.
    fn host(&self, spec: ActorSpec) -> Option<BoxFuture<'static, Result<ActorCell, SpawnError>>>;

    /// The node's cluster, in one.
    fn cluster(&self) -> Option<Arc<Membership>>;

    /// The node's status without its members (they come as a member list); `None` once
    /// the node is gone.
    fn status(&self) -> Option<NodeStatus>;
}

/// The `$node` actor.
#[derive(Debug)]
pub(crate) struct ControlActor;

/// The `$node` actor's state: the node it serves, and its log budget for refused spawns.
pub(crate) struct ControlState {
    node: Box<dyn Controlled>,
    /// Spawns refused (a name it does not take, a bound reached): a peer can ask for
    /// these at will, so a few log lines per window.
    refusals: Arc<LogBudget>,
}

impl ControlActor {
    /// Starts the control actor of `node` (not yet registered).
    pub(crate) async fn start(
        node: Box<dyn Controlled>,
    ) -> Result<ActorRef<Mailbox<Control>>, NodeError> {
        let state = ControlState {
            node,
            refusals: Arc::new(LogBudget::new()),
        };
        let (actor, _) = Actor::spawn(None, Self, state)
            .await
            .map_err(|e| NodeError::Watcher(format!("control actor: {e}")))?;
        Ok(actor)
    }
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for ControlActor {
    type Msg = Mailbox<Control>;
    type State = ControlState;
    type Arguments = ControlState;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        state: ControlState,
    ) -> Result<ControlState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut ControlState,
    ) -> Result<(), ActorProcessingErr> {
        let Mailbox::Call { request, reply, .. } = message else {
            return Ok(());
        };
        let node = &state.node;
        let answer = match request.kind {
            Some(control_request::Kind::Spawn(spawn)) => {
                let spec = ActorSpec {
                    kind: spawn.kind,
                    name: spawn.name,
                    arg: spawn.arg,
                };
                let Some(hosting) = node.host(spec.clone()) else {
                    myself.stop(None);
                    return Ok(());
                };
                let (name, addr) = (node.name(), node.advertised_addr().unwrap_or_default());
                let refusals = state.refusals.clone();
                // A constructor may take its time: the actor keeps answering others.
                tokio::spawn(async move {
                    let answer = spawned(hosting.await, name, addr, spec, &refusals);
                    let _ = reply.send(ControlReply { kind: Some(answer) });
                });
                return Ok(());
            }
            Some(control_request::Kind::Members(MembersRequest {
                after_version,
                wait_ms,
                actors_per_member,
            })) => {
                let per_member = match actors_per_member {
                    0 => usize::MAX,
                    n => usize::try_from(n).unwrap_or(usize::MAX),
                };
                let cluster = node.cluster();
                if after_version == 0 {
                    control_reply::Kind::Members(member_list(cluster.as_ref(), per_member))
                } else {
                    let within = Duration::from_millis(wait_ms.into()).min(MAX_MEMBERS_WAIT);
                    tokio::spawn(async move {
                        let list =
                            member_list_after(cluster.as_ref(), after_version, within, per_member)
                                .await;
                        let answer = control_reply::Kind::Members(list);
                        let _ = reply.send(ControlReply { kind: Some(answer) });
                    });
                    return Ok(());
                }
            }
            Some(control_request::Kind::Actors(request)) => {
                control_reply::Kind::Actors(actor_page(node.cluster().as_ref(), &request))
            }
            Some(control_request::Kind::Status(_)) => {
                let Some(status) = node.status() else {
                    myself.stop(None);
                    return Ok(());
                };
                let members = member_list(node.cluster().as_ref(), usize::MAX);
                control_reply::Kind::Status(status_info(&status, members))
            }
            None => control_reply::Kind::Refused(SpawnRefused {
                reason: spawn_refused::Reason::Unspecified.into(),
                detail: "an empty control request".into(),
                known_kinds: Vec::new(),
            }),
        };
        let _ = reply.send(ControlReply { kind: Some(answer) });
        Ok(())
    }
}

/// The answer to a peer's spawn, from what hosting `spec` on the node `node` (which
/// accepts sessions at `addr`) gave; refusals a peer can cause at will are logged
/// within `refusals`.
fn spawned(
    hosted: Result<ActorCell, SpawnError>,
    node: String,
    addr: String,
    spec: ActorSpec,
    refusals: &LogBudget,
) -> control_reply::Kind {
    match hosted {
        Ok(_) => control_reply::Kind::Spawned(SpawnedPb {
            node,
            name: spec.name,
            addr,
        }),
        Err(error) => {
            if matches!(
                error,
                SpawnError::InvalidName { .. } | SpawnError::LimitReached { .. }
            ) {
                refusals.log(|suppressed| {
                    tracing::warn!(%error, not_logged_since_last_line = suppressed, "refused a spawn");
                });
            }
            let (reason, known_kinds) = match &error {
                SpawnError::UnknownKind { known, .. } => {
                    (spawn_refused::Reason::UnknownKind, known.clone())
                }
                SpawnError::NameTaken { .. } => (spawn_refused::Reason::NameTaken, Vec::new()),
                SpawnError::InvalidName { .. } => (spawn_refused::Reason::InvalidName, Vec::new()),
                SpawnError::LimitReached { .. } => {
                    (spawn_refused::Reason::LimitReached, Vec::new())
                }
                SpawnError::ShuttingDown { .. } => {
                    (spawn_refused::Reason::ShuttingDown, Vec::new())
                }
                _ => (spawn_refused::Reason::Failed, Vec::new()),
            };
            control_reply::Kind::Refused(SpawnRefused {
                reason: reason.into(),
                detail: error.to_string(),
                known_kinds,
            })
        }
    }
}

/// The member list once the view's version is above `after`, or after `within`.
async fn member_list_after(
    cluster: Option<&Arc<Membership>>,
    after: u64,
    within: Duration,
    per_member: usize,
) -> MemberList {
    let Some(membership) = cluster else {
        return member_list(None, per_member);
    };
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let changed = membership.changed();
        if membership.version() > after || tokio::time::timeout_at(deadline, changed).await.is_err()
        {
            return member_list(cluster, per_member);
        }
    }
}

/// The node's members, each with up to `per_member` of its actors, and with
/// [`MEMBER_LIST_NAME_BYTES`] of actors in all.
fn member_list(cluster: Option<&Arc<Membership>>, per_member: usize) -> MemberList {
    let Some(membership) = cluster else {
        return MemberList::default();
    };
    let version = membership.version();
    if let Some(reason) = membership.stopped() {
        return MemberList {
            clustered: true,
            gossip_stopped: reason.to_owned(),
            version,
            ..MemberList::default()
        };
    }
    let view = membership.view();
    let mut budget = MEMBER_LIST_NAME_BYTES;
    MemberList {
        clustered: true,
        members: view
            .each()
            .map(|member| member_info(member, per_member, &mut budget))
            .collect(),
        gossip_stopped: String::new(),
        version,
    }
}

/// `member` with its first actors: up to `most`, and while `budget` (bytes of names and
/// protocols) lasts.
fn member_info(member: &Member, most: usize, budget: &mut usize) -> MemberInfo {
    MemberInfo {
        name: member.identity.name.clone(),
        incarnation: member.identity.incarnation.to_string(),
        generation: member.generation,
        gossip_addr: member.gossip_addr.to_string(),
        addr: member.addr.clone().unwrap_or_default(),
        state: member.state.as_str().to_owned(),
        actors: actor_infos(&member.actors, most, budget),
        kinds: member.kinds.clone(),
        actor_count: member.actors.len() as u64,
        entity_kinds: member
            .entity_kinds
            .iter()
            .map(|k| ActorInfo {
                name: k.kind.clone(),
                protocol: k.protocol.clone(),
            })
            .collect(),
        entity_settled: member
            .entity_kinds
            .iter()
            .map(|k| k.settled.clone())
            .collect(),
    }
}

/// The first of `actors`: up to `most`, and while `budget` lasts.
fn actor_infos(actors: &[NamedActor], most: usize, budget: &mut usize) -> Vec<ActorInfo> {
    actors
        .iter()
        .take(most)
        .map_while(|a| {
            let size = a.name.len() + a.protocol.len();
            *budget = budget.checked_sub(size)?;
            Some(ActorInfo {
                name: a.name.clone(),
                protocol: a.protocol.clone(),
            })
        })
        .collect()
}

/// One page of a member's actors, in name order after `request.after_name`.
fn actor_page(cluster: Option<&Arc<Membership>>, request: &ActorsRequest) -> ActorPage {
    let view = match cluster {
        Some(membership) if membership.stopped().is_none() => membership.view(),
        _ => return ActorPage::default(),
    };
    let Some(member) = view.each().find(|m| {
        m.identity.name == request.member
            && m.identity.incarnation.to_string() == request.incarnation
    }) else {
        return ActorPage::default();
    };
    let from = member
        .actors
        .partition_point(|a| a.name.as_str() <= request.after_name.as_str());
    let rest = member.actors.get(from..).unwrap_or_default();
    let limit = match usize::try_from(request.limit).unwrap_or(ACTOR_PAGE) {
        0 => ACTOR_PAGE,
        n => n.min(ACTOR_PAGE),
    };
    let mut unbounded = usize::MAX;
    let actors = actor_infos(rest, limit, &mut unbounded);
    ActorPage {
        found: true,
        more: actors.len() < rest.len(),
        actors,
    }
}

fn status_info(status: &NodeStatus, members: MemberList) -> NodeStatusInfo {
    NodeStatusInfo {
        node: status.identity.name.clone(),
        incarnation: status.identity.incarnation.to_string(),
        addr: status.addr.map(|a| a.to_string()).unwrap_or_default(),
        uptime_secs: status.uptime.as_secs_f64(),
        draining: status.draining,
        sessions_opened: status.sessions_opened,
        sessions: status.sessions.iter().map(session_info).collect(),
        members: Some(members),
        cluster: status.cluster.as_ref().map(|c| ClusterFigures {
            members_up: c.members[0] as u64,
            members_leaving: c.members[1] as u64,
            members_unreachable: c.members[2] as u64,
            names: c.names as u64,
            names_unpublished: c.names_unpublished as u64,
            publish_lag_secs: c.publish_lag.as_secs_f64(),
            own_state_bytes: c.own_state_bytes,
            gossip_bytes_sent: c.gossip_bytes_sent,
            gossip_bytes_received: c.gossip_bytes_received,
        }),
        entities: status
            .entities
            .iter()
            .map(|e| EntityKindFigures {
                kind: e.kind.clone(),
                shards: e.shards,
                active: e.active as u64,
                started: e.started,
                passivated: e.passivated,
                handed_off: e.handed_off,
                forwarded: e.forwarded,
                waiting: e.waiting as u64,
                refused: e.refused,
                start_failures: e.start_failures,
                claims: e.claims as u64,
                fenced: e.fenced,
            })
            .collect(),
    }
}

fn session_info(s: &SessionStatus) -> SessionStatusInfo {
    SessionStatusInfo {
        id: s.id.to_string(),
        role: match s.role {
            Role::Initiator => "initiator",
            Role::Acceptor => "acceptor",
        }
        .into(),
        peer: s.peer.name.clone(),
        peer_incarnation: s.peer.incarnation.to_string(),
        actor: s.actor.clone(),
        state: s.state.as_str().into(),
        credit: s.flow.credit,
        backlog: s.backlog(),
        unacked: s.unacked as u64,
        messages_in_per_sec: s.rate.messages_in,
        messages_out_per_sec: s.rate.messages_out,
        messages_in: s.counters.messages_in,
        messages_out: s.counters.messages_out,
        bytes_in: s.counters.bytes_in,
        bytes_out: s.counters.bytes_out,
        interruptions: s.counters.interruptions,
        resumes: s.counters.resumes,
        replayed: s.counters.replayed,
        send_blocked: s.flow.send_blocked,
        credit_waited_secs: s.credit_waited.as_secs_f64(),
        age_secs: s.age.as_secs_f64(),
    }
}

/// A session from a peer's status; `None` when it does not parse (a newer peer's state).
fn session_of(info: SessionStatusInfo) -> Option<SessionStatus> {
    let state = SessionState::ALL
        .into_iter()
        .find(|s| s.as_str() == info.state)?;
    let role = match info.role.as_str() {
        "initiator" => Role::Initiator,
        "acceptor" => Role::Acceptor,
        _ => return None,
    };
    let secs = |s: f64| Duration::try_from_secs_f64(s).unwrap_or_default();
    Some(SessionStatus {
        id: SessionId(info.id.parse().ok()?),
        role,
        peer: NodeIdentity {
            name: info.peer,
            incarnation: info.peer_incarnation.parse().unwrap_or_default(),
        },
        actor: info.actor,
        remote_addr: None,
        state,
        flow: FlowState {
            credit: info.credit,
            send_blocked: info.send_blocked,
            inbound_waiting: info.backlog,
            ..FlowState::default()
        },
        unacked: usize::try_from(info.unacked).unwrap_or(usize::MAX),
        counters: SessionCounters {
            messages_out: info.messages_out,
            bytes_out: info.bytes_out,
            messages_in: info.messages_in,
            bytes_in: info.bytes_in,
            interruptions: info.interruptions,
            resumes: info.resumes,
            replayed: info.replayed,
        },
        credit_waited: secs(info.credit_waited_secs),
        rate: Rate {
            messages_in: info.messages_in_per_sec,
            messages_out: info.messages_out_per_sec,
            ..Rate::default()
        },
        age: secs(info.age_secs),
    })
}

/// A member from a peer's list; `None` when it does not parse (a newer peer's state).
fn member_of(info: MemberInfo) -> Option<Member> {
    let state = match info.state.as_str() {
        "up" => MemberState::Up,
        "leaving" => MemberState::Leaving,
        "unreachable" => MemberState::Unreachable,
        _ => return None,
    };
    Some(Member {
        identity: NodeIdentity {
            name: info.name,
            incarnation: info.incarnation.parse().unwrap_or_default(),
        },
        generation: info.generation,
        gossip_addr: info.gossip_addr.parse().ok()?,
        addr: (!info.addr.is_empty()).then_some(info.addr),
        state,
        actors: info
            .actors
            .into_iter()
            .map(|a| NamedActor {
                name: a.name,
                protocol: a.protocol,
            })
            .collect(),
        kinds: info.kinds,
        entity_kinds: info
            .entity_kinds
            .into_iter()
            .zip(
                info.entity_settled
                    .into_iter()
                    .chain(std::iter::repeat(String::new())),
            )
            .map(|(k, settled)| HostedKind {
                kind: k.name,
                protocol: k.protocol,
                settled,
            })
            .collect(),
        declared_entity_kinds: None,
    })
}

/// Asks the node at `addr` (`host:port`) to start an actor as `spec` says.
///
/// # Errors
/// [`SpawnError::UnknownKind`] (with the kinds it has), [`SpawnError::NameTaken`],
/// [`SpawnError::Failed`], [`SpawnError::ShuttingDown`] from the node;
/// [`SpawnError::Connect`] or [`SpawnError::Call`] when it cannot be asked.
pub(crate) async fn spawn_at(
    sessions: &Arc<Sessions>,
    addr: &str,
    spec: ActorSpec,
) -> Result<Spawned, SpawnError> {
    let request = ControlRequest {
        kind: Some(control_request::Kind::Spawn(SpawnRequest {
            kind: spec.kind.clone(),
            name: spec.name.clone(),
            arg: spec.arg.clone(),
        })),
    };
    let (peer, reply) = control_call(sessions, addr, request).await?;
    match reply.kind {
        Some(control_reply::Kind::Spawned(spawned)) => Ok(Spawned {
            addr: if spawned.addr.is_empty() {
                addr.to_owned()
            } else {
                spawned.addr
            },
            node: spawned.node,
            name: spawned.name,
        }),
        Some(control_reply::Kind::Refused(refused)) => Err(refusal(peer, spec, refused)),
        _ => Err(SpawnError::Failed {
            node: peer,
            reason: "the node answered a spawn with something else".into(),
        }),
    }
}

/// Asks a member of the cluster to start an actor as `spec` says: the member named
/// in `on`, or any that offers the kind.
///
/// # Errors
/// [`SpawnError::NoSuchNode`] when no member of that name is up,
/// [`SpawnError::NoNodeOffers`] when none offers the kind,
/// [`SpawnError::NotClustered`], [`SpawnError::GossipStopped`]; otherwise as
/// [`Node::spawn_at`](crate::Node::spawn_at).
pub(crate) async fn spawn(
    sessions: &Arc<Sessions>,
    cluster: Option<&Arc<Membership>>,
    on: SpawnOn,
    spec: ActorSpec,
) -> Result<Spawned, SpawnError> {
    let membership = cluster.ok_or(SpawnError::NotClustered)?;
    if let Some(reason) = membership.stopped() {
        return Err(SpawnError::GossipStopped {
            reason: reason.to_owned(),
        });
    }
    match &on {
        SpawnOn::Node(name) => {
            let addr = membership
                .view()
                .serving(name)
                .ok_or_else(|| SpawnError::NoSuchNode { node: name.clone() })?
                .addr
                .clone()
                .unwrap_or_default();
            spawn_at(sessions, &addr, spec).await
        }
        SpawnOn::AnyOffering => {
            let placed = membership.place(&spec.kind, &spec.name)?;
            let name = spec.name.clone();
            let spawned = spawn_at(sessions, &placed.addr, spec).await;
            if spawned.is_err() {
                membership.unplace(&name);
            }
            spawned
        }
    }
}

/// The members of the cluster of the node at `addr`, as it sees them.
///
/// # Errors
/// [`SpawnError::NotClustered`] when that node is not in a cluster,
/// [`SpawnError::GossipStopped`] when its gossip engine failed;
/// [`SpawnError::Connect`] or [`SpawnError::Call`] when it cannot be asked.
pub(crate) async fn members_at(
    sessions: &Arc<Sessions>,
    addr: &str,
) -> Result<Vec<Member>, SpawnError> {
    Ok(members_changed_at(sessions, addr, 0, Duration::ZERO)
        .await?
        .members)
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
pub(crate) async fn members_changed_at(
    sessions: &Arc<Sessions>,
    addr: &str,
    since: u64,
    within: Duration,
) -> Result<MembersAt, SpawnError> {
    let request = ControlRequest {
        kind: Some(control_request::Kind::Members(MembersRequest {
            after_version: since,
            wait_ms: u32::try_from(within.as_millis()).unwrap_or(u32::MAX),
            actors_per_member: 0,
        })),
    };
    let control = ControlSession::open(sessions, addr).await?;
    let answer = async {
        let reply = control.call(request).await?;
        match reply.kind {
            Some(control_reply::Kind::Members(list)) if !list.gossip_stopped.is_empty() => {
                Err(SpawnError::GossipStopped {
                    reason: format!("on node {}: {}", control.peer, list.gossip_stopped),
                })
            }
            Some(control_reply::Kind::Members(list)) if list.clustered => Ok(MembersAt {
                version: list.version,
                members: control.complete(list.members).await?,
            }),
            Some(control_reply::Kind::Members(_)) => Err(SpawnError::NotClustered),
            _ => Err(control.unexpected("a member list request")),
        }
    }
    .await;
    control.finish();
    answer
}

/// What the node at `addr` is doing: its sessions (the one asking included) and its
/// cluster's members, as [`Node::status`] tells it there. Carried over the wire:
/// each session's flow state has its credit, backlog and whether a send would wait;
/// its rate, messages only; no remote addresses, totals or history.
///
/// # Errors
/// [`SpawnError::Connect`] or [`SpawnError::Call`] when it cannot be asked;
/// [`SpawnError::Failed`] when it answers with something else.
pub(crate) async fn status_at(
    sessions: &Arc<Sessions>,
    addr: &str,
) -> Result<NodeStatus, SpawnError> {
    let request = ControlRequest {
        kind: Some(control_request::Kind::Status(StatusRequest {})),
    };
    let control = ControlSession::open(sessions, addr).await?;
    let answer = async {
        let reply = control.call(request).await?;
        let Some(control_reply::Kind::Status(info)) = reply.kind else {
            return Err(control.unexpected("a status request"));
        };
        let members = match info.members.clone() {
            Some(list) if list.clustered && list.gossip_stopped.is_empty() => {
                control.complete(list.members).await?
            }
            _ => Vec::new(),
        };
        Ok((info, members))
    }
    .await;
    control.finish();
    let (info, members) = answer?;
    let cluster = info.cluster.map(|c| {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        ClusterStatus {
            members: [
                count(c.members_up),
                count(c.members_leaving),
                count(c.members_unreachable),
            ],
            names: count(c.names),
            names_unpublished: count(c.names_unpublished),
            publish_lag: Duration::try_from_secs_f64(c.publish_lag_secs).unwrap_or_default(),
            own_state_bytes: c.own_state_bytes,
            gossip_bytes_sent: c.gossip_bytes_sent,
            gossip_bytes_received: c.gossip_bytes_received,
        }
    });
    Ok(NodeStatus {
        entities: info
            .entities
            .into_iter()
            .map(|e| EntityKindStatus {
                kind: e.kind,
                shards: e.shards,
                active: usize::try_from(e.active).unwrap_or(usize::MAX),
                started: e.started,
                passivated: e.passivated,
                handed_off: e.handed_off,
                forwarded: e.forwarded,
                waiting: usize::try_from(e.waiting).unwrap_or(usize::MAX),
                refused: e.refused,
                start_failures: e.start_failures,
                claims: usize::try_from(e.claims).unwrap_or(usize::MAX),
                fenced: e.fenced,
            })
            .collect(),
        identity: NodeIdentity {
            name: info.node,
            incarnation: info.incarnation.parse().unwrap_or_default(),
        },
        addr: info.addr.parse().ok(),
        uptime: Duration::try_from_secs_f64(info.uptime_secs).unwrap_or_default(),
        draining: info.draining,
        sessions: info.sessions.into_iter().filter_map(session_of).collect(),
        members,
        cluster,
        tls_refused: Vec::new(),
        totals: SessionCounters::default(),
        credit_waited: Duration::ZERO,
        sessions_opened: info.sessions_opened,
        history: Vec::new(),
    })
}

/// One call to `$node` at `addr` on a session of its own, closed after.
async fn control_call(
    sessions: &Arc<Sessions>,
    addr: &str,
    request: ControlRequest,
) -> Result<(String, ControlReply), SpawnError> {
    let control = ControlSession::open(sessions, addr).await?;
    let reply = control.call(request).await;
    control.finish();
    Ok((control.peer, reply?))
}

/// A session to a node's `$node`, for one or more calls.
struct ControlSession {
    remote: crate::handles::remote_ref::RemoteRef<Control>,
    /// The session's owner (its inbox), held and never read: dropped, it would end
    /// the session.
    _owner: Box<dyn Send + Sync>,
    peer: String,
}

impl ControlSession {
    async fn open(sessions: &Arc<Sessions>, addr: &str) -> Result<Self, SpawnError> {
        let (owner, inbox) = crate::actor::inbox::new_inbox();
        let policy = sessions.config().policy;
        let remote = sessions
            .connect::<Control>(addr, CONTROL_ACTOR, owner, policy)
            .await?;
        let inbox = inbox.receiver(remote.clone());
        let peer = remote.session().peer().name.clone();
        Ok(Self {
            remote,
            _owner: Box::new(inbox),
            peer,
        })
    }

    async fn call(&self, request: ControlRequest) -> Result<ControlReply, SpawnError> {
        Ok(self.remote.call(request, CONTROL_CALL_TIMEOUT).await?)
    }

    fn finish(&self) {
        self.remote.finish();
    }

    fn unexpected(&self, what: &str) -> SpawnError {
        SpawnError::Failed {
            node: self.peer.clone(),
            reason: format!("the node answered {what} with something else"),
        }
    }

    /// The members of a bounded list, each with all its actors: those the list left
    /// out are asked for a page at a time. A member that left meanwhile keeps those
    /// the list had.
    async fn complete(&self, infos: Vec<MemberInfo>) -> Result<Vec<Member>, SpawnError> {
        let mut members = Vec::with_capacity(infos.len());
        for mut info in infos {
            let count = usize::try_from(info.actor_count).unwrap_or(usize::MAX);
            while info.actors.len() < count {
                let request = ControlRequest {
                    kind: Some(control_request::Kind::Actors(ActorsRequest {
                        member: info.name.clone(),
                        incarnation: info.incarnation.clone(),
                        after_name: info
                            .actors
                            .last()
                            .map(|a| a.name.clone())
                            .unwrap_or_default(),
                        limit: 0,
                    })),
                };
                let Some(control_reply::Kind::Actors(page)) = self.call(request).await?.kind else {
                    return Err(self.unexpected("an actor page request"));
                };
                let more = page.more && !page.actors.is_empty();
                info.actors.extend(page.actors);
                if !page.found || !more {
                    break;
                }
            }
            members.extend(member_of(info));
        }
        Ok(members)
    }
}

fn refusal(node: String, spec: ActorSpec, refused: SpawnRefused) -> SpawnError {
    match refused.reason() {
        spawn_refused::Reason::UnknownKind => SpawnError::UnknownKind {
            node,
            kind: spec.kind,
            known: refused.known_kinds,
        },
        spawn_refused::Reason::NameTaken => SpawnError::NameTaken {
            node,
            name: spec.name,
        },
        spawn_refused::Reason::ShuttingDown => SpawnError::ShuttingDown { node },
        spawn_refused::Reason::InvalidName => SpawnError::InvalidName {
            node,
            name: crate::names::printable(&spec.name, 80),
            reason: refused.detail,
        },
        spawn_refused::Reason::LimitReached => SpawnError::LimitReached {
            node,
            detail: refused.detail,
        },
        spawn_refused::Reason::Failed | spawn_refused::Reason::Unspecified => SpawnError::Failed {
            node,
            reason: refused.detail,
        },
    }
}
