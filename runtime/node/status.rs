//! What a node is doing, for whoever looks: its sessions with their state, credit,
//! backlog and rates, what they carried, and five minutes of message rates.
//!
//! [`SessionTable`] tracks each established session from its opening to its close (the
//! node's hooks call it), and keeps what closed sessions carried in a running total.
//! Its sampler, once a second, turns counters into rates; [`Node::status`] reads it all.
//! The same snapshot feeds the metrics, `duologue status` and the status page.
//!
//! [`Node::status`]: crate::Node::status

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::handles::session_ref::SessionRef;
use crate::handles::state::Shared;
use crate::members::Member;
use crate::session::{FlowState, Phase, Role, Session, SessionCounters};
use crate::wire::{NodeIdentity, SessionId};

/// How often the sampler turns counters into rates.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How many samples of the node's rates it keeps (five minutes).
const HISTORY: usize = 300;

/// A node's state at one moment, from [`crate::Node::status`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's name and incarnation.
    pub identity: NodeIdentity,
    /// Where it accepts sessions, if it listens.
    pub addr: Option<SocketAddr>,
    /// How long it has been up.
    pub uptime: Duration,
    /// Whether it is shutting down (draining its sessions).
    pub draining: bool,
    /// Its established sessions, by peer then actor.
    pub sessions: Vec<SessionStatus>,
    /// The cluster's members as it sees them (empty outside a cluster, and in the
    /// snapshots the metrics sampler takes).
    pub members: Vec<Member>,
    /// The cluster in figures, in a cluster.
    pub cluster: Option<ClusterStatus>,
    /// The TLS handshakes its ports refused since it started, by port and reason (every
    /// reason of both ports, zeros included; empty in a status asked over the wire).
    pub tls_refused: Vec<crate::tls::TlsRefused>,
    /// What every session carried since the node started, the closed ones too.
    pub totals: SessionCounters,
    /// How long the senders of every session waited for credit, in all.
    pub credit_waited: Duration,
    /// Sessions opened since the node started.
    pub sessions_opened: u64,
    /// The node's message rates, one point a second, oldest first (up to five minutes).
    pub history: Vec<RatePoint>,
    /// The entity kinds it hosts, in figures.
    pub entities: Vec<EntityKindStatus>,
}

/// One entity kind a node hosts, in figures, as [`NodeStatus`] shows it. The counts are
/// since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntityKindStatus {
    /// The kind.
    pub kind: String,
    /// The shards this node owns in its view (all of them outside a cluster).
    pub shards: u32,
    /// Its entities active now.
    pub active: usize,
    /// Entities started.
    pub started: u64,
    /// Entities stopped for being idle, or to stay under the bound.
    pub passivated: u64,
    /// Entities stopped because their shard moved to another member.
    pub handed_off: u64,
    /// Messages forwarded to the member that owns their shard.
    pub forwarded: u64,
    /// Messages waiting now: for an entity that stops, a shard's hand-off, or the
    /// members' views to agree.
    pub waiting: usize,
    /// Messages refused (no member serves their shard, or the views disagreed past the
    /// bound).
    pub refused: u64,
    /// Entities whose constructor failed.
    pub start_failures: u64,
    /// Shards claimed in the state store now (a kind that keeps state).
    pub claims: usize,
    /// Entities stopped because their shard's claim was lost (fenced by a newer claim,
    /// or a lease lapsed or taken over).
    pub fenced: u64,
}

/// A node's cluster in figures, as [`NodeStatus`] shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// Members up, leaving and unreachable, as this node sees them.
    pub members: [usize; 3],
    /// Names registered on every member, as this node sees them.
    pub names: usize,
    /// Changes to this node's own names (registered, withdrawn) not yet in its gossip
    /// state: what its peers cannot have yet.
    pub names_unpublished: usize,
    /// How long the oldest of them has waited (zero when none waits).
    pub publish_lag: Duration,
    /// Bytes of this node's own gossip state (its keys and values): what every peer holds
    /// of it. Per-node facts only; it does not grow with the entities the node hosts.
    pub own_state_bytes: u64,
    /// Bytes of gossip datagrams sent since the node started.
    pub gossip_bytes_sent: u64,
    /// Bytes of gossip datagrams received since the node started.
    pub gossip_bytes_received: u64,
}

/// One established session, as [`NodeStatus`] shows it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionStatus {
    /// Its id.
    pub id: SessionId,
    /// Which end this node is.
    pub role: Role,
    /// The peer node.
    pub peer: NodeIdentity,
    /// The actor on the acceptor's side.
    pub actor: String,
    /// The peer's address when the session opened, when known (a resume may come over
    /// another connection).
    pub remote_addr: Option<SocketAddr>,
    /// Where it is in its life.
    pub state: SessionState,
    /// Its flow state: credit left, the peer's signal, this side's backlog.
    pub flow: FlowState,
    /// Messages this side sent that the peer has not acknowledged.
    pub unacked: usize,
    /// What it carried.
    pub counters: SessionCounters,
    /// How long its senders waited for credit, in all.
    pub credit_waited: Duration,
    /// Messages in and out per second over the last sample.
    pub rate: Rate,
    /// How long it has been open.
    pub age: Duration,
}

impl SessionStatus {
    /// Messages from the peer waiting in its actor's mailbox: the session's backlog.
    pub fn backlog(&self) -> u64 {
        self.flow.inbound_waiting
    }
}

/// An established session's state, as observers name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionState {
    /// Data flows both ways.
    Active,
    /// This side finished; waiting for the peer's last messages and farewell.
    Finishing,
    /// The stream broke; waiting for a new one.
    Interrupted,
    /// A new stream is re-authenticating to resume it.
    Resuming,
    /// Over (and about to leave the table).
    Closed,
}

impl SessionState {
    /// Every state, in the order of a session's life.
    pub const ALL: [Self; 5] = [
        Self::Active,
        Self::Finishing,
        Self::Interrupted,
        Self::Resuming,
        Self::Closed,
    ];

    /// `active`, `finishing`, `interrupted`, `resuming` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Finishing => "finishing",
            Self::Interrupted => "interrupted",
            Self::Resuming => "resuming",
            Self::Closed => "closed",
        }
    }

    fn of(phase: &Phase) -> Self {
        match phase {
            Phase::Finishing => Self::Finishing,
            Phase::Interrupted => Self::Interrupted,
            Phase::Resuming => Self::Resuming,
            Phase::Closed(_) => Self::Closed,
            // Established sessions only are tracked: the greeting phases do not occur.
            Phase::Init | Phase::AwaitingPeer | Phase::Authenticated | Phase::Active => {
                Self::Active
            }
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Messages and payload bytes per second, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    /// Messages received per second.
    pub messages_in: f64,
    /// Messages sent per second.
    pub messages_out: f64,
    /// Payload bytes received per second.
    pub bytes_in: f64,
    /// Payload bytes sent per second.
    pub bytes_out: f64,
}

impl Rate {
    fn between(before: SessionCounters, after: SessionCounters, over: Duration) -> Self {
        let secs = over.as_secs_f64();
        if secs <= 0.0 {
            return Self::default();
        }
        let per_sec = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        Self {
            messages_in: per_sec(before.messages_in, after.messages_in),
            messages_out: per_sec(before.messages_out, after.messages_out),
            bytes_in: per_sec(before.bytes_in, after.bytes_in),
            bytes_out: per_sec(before.bytes_out, after.bytes_out),
        }
    }
}

/// The node's rates at one moment of its history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatePoint {
    /// When, as wall-clock time.
    pub at: SystemTime,
    /// The node's rates over the second before.
    pub rate: Rate,
    /// Its established sessions then.
    pub sessions: usize,
}

/// The node's established sessions and what they carried (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct SessionTable {
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    /// By id and role: a node talking to itself holds both ends of one session.
    live: HashMap<(SessionId, Role), Tracked>,
    /// What closed sessions carried.
    closed: SessionCounters,
    /// How long closed sessions' senders waited for credit.
    closed_credit_waited: Duration,
    opened: u64,
    history: VecDeque<RatePoint>,
    /// The node's totals at the last sample.
    last_totals: Option<(Instant, SessionCounters)>,
}

#[derive(Debug)]
struct Tracked {
    role: Role,
    peer: NodeIdentity,
    actor: String,
    remote_addr: Option<SocketAddr>,
    shared: Weak<Shared>,
    opened_at: Instant,
    /// Counters at the last sample, and the rate since the one before.
    sampled: (Instant, SessionCounters),
    rate: Rate,
}

/// What [`SessionTable::snapshot`] reads.
pub(crate) struct Snapshot {
    pub(crate) sessions: Vec<SessionStatus>,
    pub(crate) totals: SessionCounters,
    pub(crate) credit_waited: Duration,
    pub(crate) opened: u64,
    pub(crate) history: Vec<RatePoint>,
}

/// A tracked session read under the core's lock.
struct Reading {
    state: SessionState,
    flow: FlowState,
    unacked: usize,
    counters: SessionCounters,
}

fn read(shared: &Shared, now: Instant) -> Reading {
    shared.read(|s: &Session| Reading {
        state: SessionState::of(&s.phase()),
        flow: s.flow(now),
        unacked: s.unacked(),
        counters: s.counters(),
    })
}

impl SessionTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An established session, tracked until [`SessionTable::closed`].
    pub(crate) fn opened(&self, session: &SessionRef, shared: &Arc<Shared>) {
        let now = Instant::now();
        let mut table = self.lock();
        table.opened += 1;
        table.live.insert(
            (session.id(), session.role()),
            Tracked {
                role: session.role(),
                peer: session.peer().clone(),
                actor: session.actor().to_owned(),
                remote_addr: session.remote_addr(),
                shared: Arc::downgrade(shared),
                opened_at: now,
                sampled: (now, SessionCounters::default()),
                rate: Rate::default(),
            },
        );
    }

    /// The cores of the established sessions with `peer`: its name, and its incarnation
    /// unless that is not known (nil).
    pub(crate) fn of_peer(&self, peer: &crate::wire::NodeIdentity) -> Vec<Arc<Shared>> {
        self.lock()
            .live
            .values()
            .filter(|tracked| {
                tracked.peer.name == peer.name
                    && (peer.incarnation.is_nil() || tracked.peer.incarnation == peer.incarnation)
            })
            .filter_map(|tracked| tracked.shared.upgrade())
            .collect()
    }

    /// The live sessions to another incarnation of the node named as `peer` is.
    pub(crate) fn of_earlier_incarnation(
        &self,
        peer: &crate::wire::NodeIdentity,
    ) -> Vec<Arc<Shared>> {
        self.lock()
            .live
            .values()
            .filter(|tracked| {
                tracked.peer.name == peer.name
                    && !tracked.peer.incarnation.is_nil()
                    && tracked.peer.incarnation != peer.incarnation
            })
            .filter_map(|tracked| tracked.shared.upgrade())
            .collect()
    }

    /// The session is over: what it carried joins the closed sessions' total.
    pub(crate) fn closed(&self, session: SessionId, role: Role) {
        let mut table = self.lock();
        if let Some(tracked) = table.live.remove(&(session, role)) {
            let (carried, waited) = tracked
                .shared
                .upgrade()
                .map_or((tracked.sampled.1, Duration::ZERO), |shared| {
                    (shared.read(Session::counters), shared.credit_waited())
                });
            table.closed = table.closed.plus(carried);
            table.closed_credit_waited += waited;
        }
    }

    /// Turns counters into rates: each session's, and a point of the node's history.
    pub(crate) fn sample(&self) {
        let now = Instant::now();
        let mut table = self.lock();
        let mut totals = table.closed;
        for tracked in table.live.values_mut() {
            let Some(shared) = tracked.shared.upgrade() else {
                continue;
            };
            let counters = shared.read(Session::counters);
            let (at, before) = tracked.sampled;
            tracked.rate = Rate::between(before, counters, now - at);
            tracked.sampled = (now, counters);
            totals = totals.plus(counters);
        }
        if let Some((at, before)) = table.last_totals {
            let point = RatePoint {
                at: SystemTime::now(),
                rate: Rate::between(before, totals, now - at),
                sessions: table.live.len(),
            };
            if table.history.len() == HISTORY {
                table.history.pop_front();
            }
            table.history.push_back(point);
        }
        table.last_totals = Some((now, totals));
    }

    /// The sessions now, what all of them carried, and the history.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let table = self.lock();
        let mut totals = table.closed;
        let mut credit_waited = table.closed_credit_waited;
        let mut sessions: Vec<SessionStatus> = table
            .live
            .iter()
            .filter_map(|((id, _), tracked)| {
                let shared = tracked.shared.upgrade()?;
                let reading = read(&shared, now);
                totals = totals.plus(reading.counters);
                credit_waited += shared.credit_waited();
                Some(SessionStatus {
                    id: *id,
                    role: tracked.role,
                    peer: tracked.peer.clone(),
                    actor: tracked.actor.clone(),
                    remote_addr: tracked.remote_addr,
                    state: reading.state,
                    flow: reading.flow,
                    unacked: reading.unacked,
                    counters: reading.counters,
                    credit_waited: shared.credit_waited(),
                    rate: tracked.rate,
                    age: now - tracked.opened_at,
                })
            })
            .collect();
        sessions.sort_by(|a, b| {
            (&a.peer.name, &a.actor, a.id.0).cmp(&(&b.peer.name, &b.actor, b.id.0))
        });
        Snapshot {
            sessions,
            totals,
            credit_waited,
            opened: table.opened,
            history: table.history.iter().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_counters_difference_over_the_interval() {
        let before = SessionCounters {
            messages_in: 100,
            bytes_out: 10,
            ..SessionCounters::default()
        };
        let after = SessionCounters {
            messages_in: 400,
            bytes_out: 1010,
            ..SessionCounters::default()
        };
        let rate = Rate::between(before, after, Duration::from_millis(500));
        assert_eq!(rate.messages_in, 600.0);
        assert_eq!(rate.bytes_out, 2000.0);
        assert_eq!(rate.messages_out, 0.0);
        assert_eq!(
            Rate::between(before, after, Duration::ZERO),
            Rate::default()
        );
    }
}
