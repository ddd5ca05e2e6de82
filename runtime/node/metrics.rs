//! The node's metrics, in Prometheus' text format on its admin address.
//!
//! Each node records into a [`PrometheusRecorder`] of its own rather than the
//! process-global one: two nodes in one process (tests, benches, an embedding
//! application) never mix their figures, and a node never takes the global slot from its
//! host. What the sessions carried is counted by each session's core as it goes, under
//! the lock it holds anyway; once a second the sampler publishes those counts here
//! ([`NodeMetrics::publish`]), so a message costs nothing more with metrics on. Events
//! too rare to matter (a lost session, a failed handshake, a reply's latency) are
//! recorded when they happen.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;

use super::status::{NodeStatus, SessionState};
use crate::error::{CloseReason, LostReason};
use crate::members::MemberState;
use crate::session::Role;

/// How long a per-session gauge outlives its session's last update: two samples.
const STALE_AFTER: Duration = Duration::from_secs(3);

/// Call latency buckets, in seconds: 50 µs to 10 s.
const CALL_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

const SESSIONS: &str = "duologue_sessions";
const SESSIONS_OPENED: &str = "duologue_sessions_opened_total";
const MESSAGES: &str = "duologue_messages_total";
const BYTES: &str = "duologue_payload_bytes_total";
const INTERRUPTIONS: &str = "duologue_interruptions_total";
const RESUMES: &str = "duologue_resumes_total";
const REPLAYED: &str = "duologue_replayed_messages_total";
const LOST: &str = "duologue_sessions_lost_total";
const HANDSHAKE_FAILURES: &str = "duologue_handshake_failures_total";
const CREDIT_WAIT: &str = "duologue_credit_waited_seconds";
const BACKLOG: &str = "duologue_session_backlog";
const CREDIT: &str = "duologue_session_credit";
const CALLS: &str = "duologue_call_duration_seconds";
const MEMBERS: &str = "duologue_cluster_members";
const NAMES: &str = "duologue_cluster_names";
const UNPUBLISHED: &str = "duologue_cluster_names_unpublished";
const PUBLISH_LAG: &str = "duologue_cluster_publish_lag_seconds";
const GOSSIP_STATE: &str = "duologue_gossip_state_bytes";
const GOSSIP_BYTES: &str = "duologue_gossip_bytes_total";
const TLS_REFUSED: &str = "duologue_tls_refused_total";
const ENTITIES_ACTIVE: &str = "duologue_entities_active";
const ENTITY_SHARDS: &str = "duologue_entity_shards";
const ENTITIES_WAITING: &str = "duologue_entity_messages_waiting";
const ENTITY_EVENTS: &str = "duologue_entity_events_total";

/// A node's metrics: its recorder and the handles it records through.
pub(crate) struct NodeMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    calls: Histogram,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeMetrics")
    }
}

impl NodeMetrics {
    pub(crate) fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(CALLS.into()),
                CALL_BUCKETS,
            )
            .expect("the call latency buckets are not empty")
            // A closed session's gauges go once the sampler stops updating them.
            .idle_timeout(MetricKindMask::GAUGE, Some(STALE_AFTER))
            .build_recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let calls = recorder.register_histogram(&Key::from_name(CALLS), &metadata());
        Self {
            recorder,
            handle,
            calls,
        }
    }

    /// Everything, in Prometheus' text format.
    pub(crate) fn render(&self) -> String {
        self.handle.render()
    }

    /// Where callers record how long a call waited for its reply.
    pub(crate) fn call_latency(&self) -> Histogram {
        self.calls.clone()
    }

    /// Publishes a snapshot: what sessions carried, their states, members; with
    /// `per_session`, each session's backlog and credit too. Those gauges go from the
    /// exporter only as it renders (its idle timeout), so they are set only for a scrape:
    /// between scrapes nothing piles up for sessions that came and went.
    pub(crate) fn publish(&self, status: &NodeStatus, per_session: bool) {
        let totals = status.totals;
        self.counter(SESSIONS_OPENED, vec![])
            .absolute(status.sessions_opened);
        for (direction, messages, bytes) in [
            ("in", totals.messages_in, totals.bytes_in),
            ("out", totals.messages_out, totals.bytes_out),
        ] {
            let label = || vec![Label::new("direction", direction)];
            self.counter(MESSAGES, label()).absolute(messages);
            self.counter(BYTES, label()).absolute(bytes);
        }
        self.counter(INTERRUPTIONS, vec![])
            .absolute(totals.interruptions);
        self.counter(RESUMES, vec![]).absolute(totals.resumes);
        self.counter(REPLAYED, vec![]).absolute(totals.replayed);
        // Only ever grows, but in fractions of a second: the metrics crate's counters
        // are whole numbers.
        self.gauge(CREDIT_WAIT, vec![])
            .set(status.credit_waited.as_secs_f64());
        for state in SessionState::ALL {
            let count = status.sessions.iter().filter(|s| s.state == state).count();
            self.gauge(SESSIONS, vec![Label::new("state", state.as_str())])
                .set(count as f64);
        }
        for session in status.sessions.iter().filter(|_| per_session) {
            let labels = || {
                vec![
                    Label::new("session", session.id.to_string()),
                    Label::new("peer", session.peer.name.clone()),
                    Label::new("actor", session.actor.clone()),
                ]
            };
            self.gauge(BACKLOG, labels()).set(session.backlog() as f64);
            self.gauge(CREDIT, labels()).set(session.flow.credit as f64);
        }
        if let Some(cluster) = &status.cluster {
            for (state, count) in [
                MemberState::Up,
                MemberState::Leaving,
                MemberState::Unreachable,
            ]
            .into_iter()
            .zip(cluster.members)
            {
                self.gauge(MEMBERS, vec![Label::new("state", state.as_str())])
                    .set(count as f64);
            }
            self.gauge(NAMES, vec![]).set(cluster.names as f64);
            self.gauge(UNPUBLISHED, vec![])
                .set(cluster.names_unpublished as f64);
            self.gauge(PUBLISH_LAG, vec![])
                .set(cluster.publish_lag.as_secs_f64());
            self.gauge(GOSSIP_STATE, vec![])
                .set(cluster.own_state_bytes as f64);
            for (direction, bytes) in [
                ("sent", cluster.gossip_bytes_sent),
                ("received", cluster.gossip_bytes_received),
            ] {
                self.counter(GOSSIP_BYTES, vec![Label::new("direction", direction)])
                    .absolute(bytes);
            }
        }
        for kind in &status.entities {
            let label = || vec![Label::new("kind", kind.kind.clone())];
            self.gauge(ENTITIES_ACTIVE, label()).set(kind.active as f64);
            self.gauge(ENTITY_SHARDS, label())
                .set(f64::from(kind.shards));
            self.gauge(ENTITIES_WAITING, label())
                .set(kind.waiting as f64);
            for (event, count) in [
                ("started", kind.started),
                ("passivated", kind.passivated),
                ("handed_off", kind.handed_off),
                ("forwarded", kind.forwarded),
                ("refused", kind.refused),
                ("start_failed", kind.start_failures),
                ("fenced", kind.fenced),
            ] {
                let labels = vec![
                    Label::new("kind", kind.kind.clone()),
                    Label::new("event", event),
                ];
                self.counter(ENTITY_EVENTS, labels).absolute(count);
            }
        }
        for refused in &status.tls_refused {
            let labels = vec![
                Label::new("port", refused.port),
                Label::new("reason", refused.reason.as_str()),
            ];
            self.counter(TLS_REFUSED, labels).absolute(refused.count);
        }
        self.handle.run_upkeep();
    }

    /// An established session was lost.
    pub(crate) fn session_lost(&self, reason: &LostReason) {
        self.counter(LOST, vec![Label::new("reason", lost_label(reason))])
            .increment(1);
    }

    /// A session failed during its handshake: one a peer opened to this node
    /// (`role="acceptor"`), or one this node opened (`role="initiator"`).
    pub(crate) fn handshake_failed(&self, role: Role, reason: &CloseReason) {
        let role = match role {
            Role::Initiator => "initiator",
            Role::Acceptor => "acceptor",
        };
        self.counter(
            HANDSHAKE_FAILURES,
            vec![
                Label::new("role", role),
                Label::new("reason", handshake_label(reason)),
            ],
        )
        .increment(1);
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &metadata())
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &metadata())
    }
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

fn describe(recorder: &PrometheusRecorder) {
    let counters: &[(&'static str, Option<Unit>, &'static str)] = &[
        (
            SESSIONS_OPENED,
            None,
            "Sessions established since the node started.",
        ),
        (
            MESSAGES,
            None,
            "Messages sessions carried, by direction (replays not counted).",
        ),
        (
            BYTES,
            Some(Unit::Bytes),
            "Payload bytes sessions carried, by direction.",
        ),
        (
            INTERRUPTIONS,
            None,
            "Times a stream broke under an established session.",
        ),
        (RESUMES, None, "Times a session resumed on a new stream."),
        (REPLAYED, None, "Messages sent again after a resume."),
        (LOST, None, "Established sessions lost, by reason."),
        (
            HANDSHAKE_FAILURES,
            None,
            "Sessions that failed during their handshake, by role and reason.",
        ),
        (
            TLS_REFUSED,
            None,
            "TLS handshakes refused, by port and reason.",
        ),
        (
            GOSSIP_BYTES,
            Some(Unit::Bytes),
            "Bytes of gossip datagrams, by direction (sent, received).",
        ),
        (
            ENTITY_EVENTS,
            None,
            "Entity events by kind: started, passivated, handed_off (stopped as their shard \
             moved), forwarded (messages sent on to their shard's owner), refused, \
             start_failed.",
        ),
    ];
    for (name, unit, help) in counters {
        recorder.describe_counter((*name).into(), *unit, (*help).into());
    }
    let gauges: &[(&'static str, Option<Unit>, &'static str)] = &[
        (SESSIONS, None, "Established sessions, by state."),
        (
            CREDIT_WAIT,
            Some(Unit::Seconds),
            "Time senders waited for credit, a resume or a pause's end, in all.",
        ),
        (
            BACKLOG,
            None,
            "Messages from the peer waiting in the session's actor's mailbox.",
        ),
        (
            CREDIT,
            None,
            "Messages the session may still send before it needs more credit.",
        ),
        (
            MEMBERS,
            None,
            "Cluster members as this node sees them, by state.",
        ),
        (
            NAMES,
            None,
            "Names registered on every member, as this node sees them.",
        ),
        (
            UNPUBLISHED,
            None,
            "Changes to this node's names not yet in its gossip state.",
        ),
        (
            PUBLISH_LAG,
            Some(Unit::Seconds),
            "How long the oldest change to this node's names has waited to be published.",
        ),
        (
            GOSSIP_STATE,
            Some(Unit::Bytes),
            "Bytes of this node's own gossip state (its keys and values): per-node facts only.",
        ),
        (
            ENTITIES_ACTIVE,
            None,
            "Entities active on this node, by kind.",
        ),
        (
            ENTITY_SHARDS,
            None,
            "Shards this node owns in its view, by kind.",
        ),
        (
            ENTITIES_WAITING,
            None,
            "Messages waiting for an entity that stops, a shard's hand-off or the members' views to agree, by kind.",
        ),
    ];
    for (name, unit, help) in gauges {
        recorder.describe_gauge((*name).into(), *unit, (*help).into());
    }
    recorder.describe_histogram(
        CALLS.into(),
        Some(Unit::Seconds),
        "Time from sending a call to its reply.".into(),
    );
}

fn lost_label(reason: &LostReason) -> &'static str {
    match reason {
        LostReason::PeerEnded(_) => "peer_ended",
        LostReason::ResumeDeadline { .. } => "resume_deadline",
        LostReason::PeerRestarted { .. } => "peer_restarted",
        LostReason::ReplayFull(_) => "replay_full",
        LostReason::ResumeRefused(_) => "resume_refused",
        LostReason::ResumeAuth(_) => "resume_auth",
        LostReason::NotResumed(_) => "not_resumed",
        LostReason::RestartGaveUp { .. } => "restart_gave_up",
    }
}

fn handshake_label(reason: &CloseReason) -> &'static str {
    match reason {
        CloseReason::RefusedByPeer(_) => "refused_by_peer",
        CloseReason::RefusedLocally(_) => "refused",
        CloseReason::Auth(_) => "auth",
        CloseReason::Protocol(_) => "protocol",
        CloseReason::HandshakeTimeout => "timeout",
        CloseReason::Transport { .. } => "transport",
        CloseReason::Ended { .. } => "ended",
        CloseReason::Lost(_) => "lost",
        CloseReason::Finished => "finished",
    }
}
