//! The flags of a node process, shared by every node binary built with
//! [`super::NodeMain`] (`duologue node` among them): the one definition of each setting,
//! which its environment variable and config-file key follow (`settings.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::budget::BudgetConfig;
use crate::config::{
    AdminAccess, AdminToken, AdmissionConfig, ClusterConfig, NodeConfig, SessionPolicy,
};
use crate::error::NodeError;
use crate::node::ActorSpec;
use crate::tls::{ClientTls, ServerTls};

/// The flags of a node process: its name, address, secret, TLS, session timings and the
/// actors it hosts.
#[derive(Clone, Debug, Args)]
pub struct NodeArgs {
    /// The node's name.
    #[arg(long)]
    pub name: String,
    /// Address to accept sessions on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// File holding the cluster's shared secret (16 bytes or more, random: make one with
    /// `duologue secret new FILE`).
    #[arg(long)]
    pub secret_file: PathBuf,
    /// Start even with a guessable text secret (anyone who can reach the node can test
    /// guesses of it offline).
    #[arg(long)]
    pub allow_weak_secret: bool,
    /// TLS for the sessions the node accepts.
    #[command(flatten)]
    pub tls: ServeTlsArgs,
    /// TLS for the sessions the node opens to peers.
    #[command(flatten)]
    pub peer_tls: DialTlsArgs,
    /// Session timings and policy.
    #[command(flatten)]
    pub timing: Timing,
    /// Limits on what unauthenticated peers may cost the node.
    #[command(flatten)]
    pub admission: AdmissionArgs,
    /// Memory budgets shared by the node's sessions.
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// Cluster membership by gossip.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where entities that keep state keep it.
    #[command(flatten)]
    pub state: StateArgs,
    /// Serve the node's metrics (`/metrics`, Prometheus), status as JSON (`/status.json`)
    /// and status page (`/`) over HTTP on this address (port 0 picks a free one). Off the
    /// loopback interface it needs --metrics-token-file (and --metrics-tls or
    /// --insecure-plaintext), or --insecure-metrics. The node prints
    /// `metrics on http://ADDR` (https with --metrics-tls) once it listens.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Who may read the --metrics address.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// An actor to host, as KIND:NAME or KIND:NAME@ARG. Repeatable; also a
    /// comma-separated list (so an ARG holds no comma).
    #[arg(
        long = "actor",
        value_name = "KIND:NAME[@ARG]",
        value_parser = ActorSpec::parse,
        value_delimiter = ','
    )]
    pub actors: Vec<ActorSpec>,
}

/// TLS for the sessions a node accepts: `--tls-cert`, `--tls-key`, `--tls-client-ca`, and
/// `--insecure-plaintext` for plaintext off the loopback interface.
#[derive(Clone, Debug, Default, Args)]
pub struct ServeTlsArgs {
    /// PEM certificate chain (leaf first) to serve TLS with, with --tls-key: the node then
    /// accepts only TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that clients' certificates must chain to: clients without one are refused
    /// (mutual TLS). Needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plaintext on a --listen address off the loopback interface (refused
    /// otherwise): for a trusted network, or TLS terminated in front of the node.
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_plaintext: bool,
}

impl ServeTlsArgs {
    /// The TLS these flags describe, files read and checked; `None` without `--tls-cert`.
    ///
    /// # Errors
    /// [`NodeError::Tls`] naming the file that cannot be read or used.
    pub fn load(&self) -> Result<Option<ServerTls>, NodeError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let tls = ServerTls::from_files(cert, key)?;
        match &self.tls_client_ca {
            Some(ca) => tls.client_ca_file(ca).map(Some),
            None => Ok(Some(tls)),
        }
    }

    /// Writes these flags into `config`.
    ///
    /// # Errors
    /// As [`ServeTlsArgs::load`].
    pub fn apply(&self, config: &mut NodeConfig) -> Result<(), NodeError> {
        config.tls = self.load()?;
        config.insecure_plaintext = self.insecure_plaintext;
        Ok(())
    }
}

/// Who may read a node's `--metrics` address: `--metrics-token-file`, `--metrics-tls`,
/// `--metrics-allow-host`, `--insecure-metrics` (see [`AdminAccess`]).
#[derive(Clone, Debug, Default, Args)]
pub struct AdminArgs {
    /// File holding the token every request to --metrics must carry (`Authorization:
    /// Bearer TOKEN`, or HTTP Basic with the token as password, as a browser asks):
    /// 16 printable characters or more (`openssl rand -hex 32`).
    #[arg(long, value_name = "FILE", requires = "metrics")]
    pub metrics_token_file: Option<PathBuf>,
    /// Serve --metrics over TLS, with the node's certificate (--tls-cert, --tls-key).
    #[arg(long, requires_all = ["metrics", "tls_cert"])]
    pub metrics_tls: bool,
    /// A name (or address) requests to --metrics may carry in `Host`, beside the
    /// address itself and localhost; others are refused (421), so no web page can read
    /// the node through DNS rebinding. Repeatable; also a comma-separated list.
    #[arg(
        long = "metrics-allow-host",
        value_name = "NAME",
        requires = "metrics",
        value_delimiter = ','
    )]
    pub metrics_allowed_hosts: Vec<String>,
    /// Serve --metrics off the loopback interface without a token, or with one in
    /// plaintext (refused otherwise): for a trusted network.
    #[arg(long, requires = "metrics")]
    pub insecure_metrics: bool,
}

impl AdminArgs {
    /// The access these flags describe, the token file read and, with --metrics-tls,
    /// the certificate of `tls` loaded for the admin address.
    ///
    /// # Errors
    /// [`NodeError::Secret`] for a token file that cannot be read or used,
    /// [`NodeError::Tls`] for the certificate.
    pub fn load(&self, tls: &ServeTlsArgs) -> Result<AdminAccess, NodeError> {
        let token = self
            .metrics_token_file
            .as_ref()
            .map(AdminToken::from_file)
            .transpose()?;
        let tls = match (&tls.tls_cert, &tls.tls_key) {
            (Some(cert), Some(key)) if self.metrics_tls => Some(ServerTls::from_files(cert, key)?),
            _ => None,
        };
        Ok(AdminAccess {
            token,
            tls,
            allowed_hosts: self.metrics_allowed_hosts.clone(),
            insecure: self.insecure_metrics,
        })
    }
}

/// TLS for the sessions a process opens: `--tls-ca`, and for peers that require mutual
/// TLS, `--tls-client-cert` and `--tls-client-key`. Used by node binaries to dial their
/// peers, and by clients such as `duologue chat`.
#[derive(Clone, Debug, Default, Args)]
pub struct DialTlsArgs {
    /// PEM CA that peers' certificates must chain to: peers are then dialled over TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (leaf first) for peers that require one (mutual TLS), with
    /// --tls-client-key. Needs --tls-ca.
    #[arg(long, value_name = "FILE", requires_all = ["tls_client_key", "tls_ca"])]
    pub tls_client_cert: Option<PathBuf>,
    /// PEM private key of --tls-client-cert.
    #[arg(long, value_name = "FILE", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
    /// The name peers' certificates must carry, instead of the host dialled. Needs
    /// --tls-ca.
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_domain: Option<String>,
}

impl DialTlsArgs {
    /// The TLS these flags describe, files read and checked; `None` without `--tls-ca`.
    ///
    /// # Errors
    /// [`NodeError::Tls`] naming the file that cannot be read or used.
    pub fn load(&self) -> Result<Option<ClientTls>, NodeError> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let mut tls = ClientTls::from_ca_file(ca)?;
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            tls = tls.identity_files(cert, key)?;
        }
        if let Some(domain) = &self.tls_domain {
            tls = tls.domain(domain.clone());
        }
        Ok(Some(tls))
    }
}

/// The node's timing options (defaults as in [`NodeConfig`]).
#[derive(Clone, Debug, Args)]
pub struct Timing {
    /// What a session does when its stream breaks: resume, restart, escalate or stop.
    #[arg(long, default_value = "resume")]
    pub policy: SessionPolicy,
    /// How long an interrupted session may take to resume before it is lost.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub resume_timeout: Duration,
    /// HTTP/2 keepalive ping interval.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub keepalive_interval: Duration,
    /// A ping unanswered this long means the connection is dead.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub keepalive_timeout: Duration,
    /// With messages unacknowledged, a peer silent this long interrupts the session.
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub silence_timeout: Duration,
    /// How long to keep trying to open a session when the peer's connection is refused
    /// or reset before the session is established.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Under the restart policy, how long a lost session tries to open its replacement.
    #[arg(long, default_value = "300s", value_parser = duration)]
    pub restart_timeout: Duration,
    /// A handshake must complete within this.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,
    /// Sessions still draining this long after SIGTERM are cancelled.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub shutdown_drain: Duration,
    /// How long a closed session waits for its peer to end its stream (a silent peer
    /// holds a drain this long at most).
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub close_linger: Duration,
    /// How many messages a peer may send ahead of this node's actor consuming them.
    #[arg(long, default_value_t = 65536)]
    pub credit_window: u64,
}

impl Timing {
    /// Writes these timings into `config`.
    pub fn apply(&self, config: &mut NodeConfig) {
        config.policy = self.policy;
        config.session.resume_timeout = self.resume_timeout;
        config.keepalive_interval = self.keepalive_interval;
        config.keepalive_timeout = self.keepalive_timeout;
        config.session.silence_timeout = self.silence_timeout;
        config.session.handshake_timeout = self.handshake_timeout;
        config.connect_timeout = self.connect_timeout;
        config.restart_timeout = self.restart_timeout;
        config.shutdown_drain = self.shutdown_drain;
        config.close_linger = self.close_linger;
        config.session.credit_window = self.credit_window;
    }
}

/// The node's pre-authentication limits (defaults as in [`AdmissionConfig`]).
#[derive(Clone, Debug, Args)]
pub struct AdmissionArgs {
    /// Most TCP connections open at once, the session and --metrics ports together
    /// (never more than the open-file limit allows); past it a new one takes the place
    /// of the idlest, or is closed.
    #[arg(long, default_value_t = AdmissionConfig::default().max_connections)]
    pub max_connections: usize,
    /// Most connections open at once on the --metrics address, within --max-connections.
    #[arg(long, default_value_t = AdmissionConfig::default().max_admin_connections)]
    pub max_admin_connections: usize,
    /// How long the --metrics address waits for a request's head (and a TLS handshake)
    /// before it closes the connection [default: 5s].
    #[arg(long, value_parser = duration)]
    pub admin_header_timeout: Option<Duration>,
    /// A connection with no stream for this long is closed [default: 20s].
    #[arg(long, value_parser = duration)]
    pub connection_idle_timeout: Option<Duration>,
    /// Most unauthenticated streams on the node; more are refused (UNAVAILABLE).
    #[arg(long, default_value_t = AdmissionConfig::default().max_unauthenticated_streams)]
    pub max_unauthenticated_streams: usize,
    /// Most unauthenticated streams on one connection.
    #[arg(
        long,
        default_value_t = AdmissionConfig::default().max_unauthenticated_streams_per_connection
    )]
    pub max_unauthenticated_streams_per_connection: usize,
    /// Most connections carrying unauthenticated streams at once.
    #[arg(long, default_value_t = AdmissionConfig::default().max_unauthenticated_connections)]
    pub max_unauthenticated_connections: usize,
    /// Largest message, in bytes, a stream may send before it authenticates.
    #[arg(long, default_value_t = AdmissionConfig::default().max_unauthenticated_message_bytes)]
    pub max_unauthenticated_message_bytes: u32,
    /// Most bytes a stream may send before it authenticates.
    #[arg(long, default_value_t = AdmissionConfig::default().max_unauthenticated_bytes)]
    pub max_unauthenticated_bytes: u32,
    /// Most actors the node hosts at once (its --actor ones and peers' spawns); a spawn
    /// past it is refused (LIMIT_REACHED).
    #[arg(long, default_value_t = NodeConfig::default().max_hosted)]
    pub max_hosted: usize,
    /// Most names registered on the node at once, every one gossiped to every member;
    /// a registration or spawn past it is refused.
    #[arg(long, default_value_t = NodeConfig::default().max_names)]
    pub max_names: usize,
}

impl AdmissionArgs {
    /// Writes these limits into `config`.
    pub fn apply(&self, config: &mut NodeConfig) {
        let admission = &mut config.admission;
        admission.max_connections = self.max_connections;
        admission.max_admin_connections = self.max_admin_connections;
        if let Some(timeout) = self.admin_header_timeout {
            admission.admin_header_timeout = timeout;
        }
        if let Some(idle) = self.connection_idle_timeout {
            admission.connection_idle_timeout = idle;
        }
        admission.max_unauthenticated_streams = self.max_unauthenticated_streams;
        admission.max_unauthenticated_streams_per_connection =
            self.max_unauthenticated_streams_per_connection;
        admission.max_unauthenticated_connections = self.max_unauthenticated_connections;
        admission.max_unauthenticated_message_bytes = self.max_unauthenticated_message_bytes;
        admission.max_unauthenticated_bytes = self.max_unauthenticated_bytes;
        config.max_hosted = self.max_hosted;
        config.max_names = self.max_names;
    }
}

/// The node's memory budgets, in bytes (defaults as in [`BudgetConfig`]).
#[derive(Clone, Debug, Args)]
pub struct BudgetArgs {
    /// Bytes sent and not yet acknowledged, all sessions of the node.
    #[arg(long, default_value_t = BudgetConfig::default().node_replay_bytes)]
    pub node_replay_bytes: usize,
    /// Bytes sent and not yet acknowledged, all sessions with one peer.
    #[arg(long, default_value_t = BudgetConfig::default().peer_replay_bytes)]
    pub peer_replay_bytes: usize,
    /// Bytes delivered and not yet handled, all sessions of the node.
    #[arg(long, default_value_t = BudgetConfig::default().node_inbound_bytes)]
    pub node_inbound_bytes: usize,
    /// Bytes delivered and not yet handled, all sessions with one peer.
    #[arg(long, default_value_t = BudgetConfig::default().peer_inbound_bytes)]
    pub peer_inbound_bytes: usize,
    /// Bytes delivered and not yet handled, one session.
    #[arg(long, default_value_t = BudgetConfig::default().session_inbound_bytes)]
    pub session_inbound_bytes: usize,
}

impl BudgetArgs {
    /// Writes these budgets into `config`.
    pub fn apply(&self, config: &mut NodeConfig) {
        config.budget = BudgetConfig {
            node_replay_bytes: self.node_replay_bytes,
            peer_replay_bytes: self.peer_replay_bytes,
            node_inbound_bytes: self.node_inbound_bytes,
            peer_inbound_bytes: self.peer_inbound_bytes,
            session_inbound_bytes: self.session_inbound_bytes,
        };
    }
}

/// Cluster membership: `--gossip-listen` turns it on; the rest as in [`ClusterConfig`].
#[derive(Clone, Debug, Args)]
pub struct ClusterArgs {
    /// UDP address to gossip on (port 0 picks one): joins the node to a cluster.
    #[arg(long, value_name = "ADDR")]
    pub gossip_listen: Option<SocketAddr>,
    /// Gossip address other nodes reach this one at [default: the bound address].
    #[arg(long, value_name = "ADDR", requires = "gossip_listen")]
    pub gossip_advertise: Option<SocketAddr>,
    /// Address other nodes open sessions to, as HOST:PORT [default: --listen's address].
    #[arg(long, value_name = "HOST:PORT", requires = "gossip_listen")]
    pub advertise: Option<String>,
    /// Gossip address of a node to ask first (HOST:PORT). Repeatable; also a
    /// comma-separated list. A node that starts before its seeds keeps trying them.
    #[arg(
        long = "seed",
        value_name = "HOST:PORT",
        requires = "gossip_listen",
        value_delimiter = ','
    )]
    pub seeds: Vec<String>,
    /// DNS name whose every address is a seed (NAME:PORT), resolved again every
    /// --seed-dns-every. Repeatable; also a comma-separated list.
    #[arg(
        long = "seed-dns",
        value_name = "NAME:PORT",
        requires = "gossip_listen",
        value_delimiter = ','
    )]
    pub seed_dns: Vec<String>,
    /// How often --seed-dns names are resolved again.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub seed_dns_every: Duration,
    /// Nodes gossip only with nodes of the same cluster id.
    #[arg(long, default_value = "duologue")]
    pub cluster_id: String,
    /// How often the node gossips and beats its heart.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub gossip_interval: Duration,
    /// Failure detector threshold: a node whose phi passes it is declared dead.
    #[arg(long, default_value_t = 8.0)]
    pub phi_threshold: f64,
    /// How long a dead node's state is kept before it is forgotten.
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub dead_grace: Duration,
}

impl ClusterArgs {
    /// Writes these settings into `config` (no cluster without `--gossip-listen`).
    pub fn apply(&self, config: &mut NodeConfig) {
        let Some(gossip_listen) = self.gossip_listen else {
            config.cluster = None;
            return;
        };
        config.cluster = Some(ClusterConfig {
            gossip_advertise: self.gossip_advertise,
            advertise: self.advertise.clone(),
            seeds: self.seeds.clone(),
            seed_dns: self.seed_dns.clone(),
            seed_dns_every: self.seed_dns_every,
            cluster_id: self.cluster_id.clone(),
            gossip_interval: self.gossip_interval,
            phi_threshold: self.phi_threshold,
            dead_grace: self.dead_grace,
            ..ClusterConfig::new(gossip_listen)
        });
    }
}

/// Entity state: `--state` names the store, `--state-lease` turns shard leases on.
#[derive(Clone, Debug, Args)]
pub struct StateArgs {
    /// Where entities that keep state keep it: `sqlite:PATH` (one file, created if
    /// missing; several nodes on one host may share it) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`. The node creates its tables.
    #[arg(long = "state", value_name = "URL")]
    pub url: Option<String>,
    /// Serve a shard of such a kind only while holding its lease in the store, renewed
    /// every quarter of this: at most one activation of an id at any moment, partitions
    /// and pauses included; none starts while the store is unreachable.
    #[arg(long = "state-lease", value_name = "DURATION", value_parser = duration, requires = "url")]
    pub lease: Option<Duration>,
}

impl StateArgs {
    /// Writes these settings into `config`.
    pub fn apply(&self, config: &mut NodeConfig) {
        config.state = self.url.as_ref().map(|url| crate::store::StateConfig {
            url: url.clone(),
            lease: self.lease,
        });
    }
}

/// Parses a duration such as `500ms`, `30s` or `1m 30s` (humantime's syntax); negative,
/// NaN and infinite durations are refused, not panicked on.
///
/// # Errors
/// A message naming the text and the expected form.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{text:?} is not a duration like 10s, 500ms or 1m 30s: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_parsed_and_nonsense_is_refused() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1m 30s"), Ok(Duration::from_secs(90)));
        for bad in ["-1s", "nan", "inf", "NaNs", "1e400s", "", "10 parsecs"] {
            assert!(duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[derive(clap::Parser)]
    struct Limits {
        #[command(flatten)]
        admission: AdmissionArgs,
        #[command(flatten)]
        budget: BudgetArgs,
    }

    #[test]
    fn limit_flags_reach_the_config_and_defaults_stay_the_configs() {
        use clap::Parser;
        let mut config = NodeConfig::default();
        let defaults = Limits::try_parse_from(["node"]).unwrap();
        defaults.admission.apply(&mut config);
        defaults.budget.apply(&mut config);
        assert_eq!(config.admission, AdmissionConfig::default());
        assert_eq!(config.budget, BudgetConfig::default());
        let set = Limits::try_parse_from([
            "node",
            "--max-unauthenticated-connections",
            "2",
            "--connection-idle-timeout",
            "5s",
            "--peer-replay-bytes",
            "1000",
        ])
        .unwrap();
        set.admission.apply(&mut config);
        set.budget.apply(&mut config);
        assert_eq!(config.admission.max_unauthenticated_connections, 2);
        assert_eq!(
            config.admission.connection_idle_timeout,
            Duration::from_secs(5)
        );
        assert_eq!(config.budget.peer_replay_bytes, 1000);
    }
}
