//! The settings of a node's cluster membership: where it gossips, whom it asks first,
//! and how fast it decides a peer is dead.

use std::net::SocketAddr;
use std::time::Duration;

/// How a node joins a cluster ([`super::NodeConfig::cluster`]). Membership, failure
/// detection and the names each node publishes travel by gossip over UDP (chitchat:
/// scuttlebutt reconciliation, phi-accrual failure detection); every datagram carries an
/// HMAC tag made with the cluster's shared secret, so a node without the secret can
/// neither join nor inject state (it can read the gossip: it is not encrypted).
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// The UDP address to gossip on; port 0 picks a free one.
    pub gossip_listen: SocketAddr,
    /// The gossip address other nodes reach this one at; the bound address by default
    /// (which must then not be unspecified, such as `0.0.0.0`).
    pub gossip_advertise: Option<SocketAddr>,
    /// The address other nodes open sessions to (`host:port`); the node's listen
    /// address by default (which must then not be unspecified).
    pub advertise: Option<String>,
    /// Gossip addresses of nodes to ask first (`host:port`). A node that starts before
    /// its seeds keeps gossiping to them every round and joins when one answers.
    pub seeds: Vec<String>,
    /// DNS names (`name:port`) whose every address is a seed, resolved again every
    /// [`ClusterConfig::seed_dns_every`]: one name with many A records, as a Kubernetes
    /// headless Service publishes its pods.
    pub seed_dns: Vec<String>,
    /// How often the DNS seeds are resolved again.
    pub seed_dns_every: Duration,
    /// Nodes gossip only with nodes of the same cluster id.
    pub cluster_id: String,
    /// How often the node gossips (with up to three random live nodes, and now and then
    /// a dead one and a seed) and beats its heart.
    pub gossip_interval: Duration,
    /// The failure detector's threshold: a node whose phi passes it is declared dead
    /// (unreachable). Higher is slower to declare and less often wrong.
    pub phi_threshold: f64,
    /// How long a dead node's state is kept (its events told, its gossip answered)
    /// before it is forgotten.
    pub dead_grace: Duration,
    /// At a polite shutdown, how long the node keeps gossiping that it leaves (and its
    /// entity hosts forward what still arrives) at least, while peers' views move off it;
    /// it goes on past that until every peer in its view has said, in its gossip digest,
    /// that it has the leave, within the shutdown drain.
    pub leave_linger: Duration,
}

impl ClusterConfig {
    /// A cluster config gossiping on `gossip_listen`, with the defaults.
    pub fn new(gossip_listen: SocketAddr) -> Self {
        Self {
            gossip_listen,
            gossip_advertise: None,
            advertise: None,
            seeds: Vec::new(),
            seed_dns: Vec::new(),
            seed_dns_every: Duration::from_secs(10),
            cluster_id: "duologue".into(),
            gossip_interval: Duration::from_secs(1),
            phi_threshold: 8.0,
            dead_grace: Duration::from_secs(3600),
            leave_linger: Duration::from_secs(2),
        }
    }
}
