//! What an operator sees of a node: its status (sessions, cluster, TLS refusals, rates)
//! assembled from the parts that own each figure, sampled once a second into rates and
//! metrics. The admin address (`admin.rs`), `$node`'s status request and
//! [`crate::Node::status`] all read it here.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::cluster::Membership;
use super::entities::Router;
use super::metrics::NodeMetrics;
use super::sessions::Sessions;
use super::status::{NodeStatus, SAMPLE_EVERY};
use crate::shutdown::Shutdown;
use crate::tls::TlsRefusedByPort;
use crate::wire::NodeIdentity;

/// The figures of one node, read from its parts.
#[derive(Debug)]
pub(crate) struct Ops {
    pub(crate) identity: NodeIdentity,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) started: Instant,
    pub(crate) shutdown: Shutdown,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) cluster: Option<Arc<Membership>>,
    /// The TLS handshakes its ports refused.
    pub(crate) tls_refused: Arc<TlsRefusedByPort>,
    /// Its metrics, when it has an admin address.
    pub(crate) metrics: Option<Arc<NodeMetrics>>,
    /// Its entity kinds, for their figures.
    pub(crate) entities: Arc<Router>,
}

impl Ops {
    /// The node's status, its members listed only `with_members` (the metrics need the
    /// figures, not a copy of every name).
    pub(crate) fn status(&self, with_members: bool) -> NodeStatus {
        let snapshot = self.sessions.table().snapshot();
        let live = self.cluster.as_ref().filter(|m| m.stopped().is_none());
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
            entities: self.entities.figures(),
        }
    }
}

/// Samples the node's sessions into rates (and its metrics), once a second, until
/// `cancel` (the end of its shutdown, through the drain, which the admin server shows) or
/// the node is gone.
pub(crate) async fn sample(ops: Weak<Ops>, cancel: CancellationToken) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(ops) = ops.upgrade() else {
            return;
        };
        ops.sessions.table().sample();
        if let Some(metrics) = &ops.metrics {
            metrics.publish(&ops.status(false), false);
        }
    }
}
