//! A duologue cluster on a network lab (`duologue_testkit::Lab`), run by the
//! `cluster_netns` test (once, with assertions) and the `cluster` bench (several times,
//! for medians), and a cluster node of this process that spawns sequence checkers
//! ([`seq_check_node`], for the `cluster` and `cluster_names` tests).
//!
//! Hosts 0 to 3 run `duologue node` processes `n0` to `n3`, each hosting a sequence
//! checker `s0` to `s3`; host 4 runs the observer, a node of this process that joins the
//! cluster and hears its events. Host 2's link has 20 ms latency and 1 % loss each way.
//! `n3` starts first and finds its seeds through a DNS name (`seeds.duologue.test`, two A
//! records in its hosts file) that resolves to nodes not started yet.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use duologue::{
    Node, NodeConfig, Secret,
    cluster::{ActorSpec, ClusterEvent, LookupError, MemberState, SpawnOn},
    settings::ClusterConfig,
};
use duologue_actors::seq_check::SeqCheck;
use duologue_actors::seq_check::proto::{Report, ReportRequest};
use duologue_testkit::cluster::{count_up, listen, next_event};
use duologue_testkit::{IgnoringOwner, Lab, NodeProcess, SecretDir, Signal};
use ractor::Actor;
use tokio::sync::mpsc;

/// The host the observer runs on.
pub const OBSERVER: usize = 4;
/// The impaired host.
pub const SLOW: usize = 2;
/// Every node gossips on this port of its own address (each namespace has its own ports,
/// and a DNS seed names one port, as a Kubernetes headless Service does).
pub const GOSSIP_PORT: u16 = 7001;
/// The DNS name of the seeds in `n3`'s hosts file.
pub const SEED_NAME: &str = "seeds.duologue.test";
/// Bound of every wait.
pub const STEP: Duration = Duration::from_secs(60);

/// A node of a cluster in this process on 127.0.0.1, gossiping every 100 ms, that
/// spawns `seq-check` actors on request; `tweak` adjusts its configuration.
///
/// # Panics
/// When the node does not start.
pub async fn seq_check_node(
    name: &str,
    seeds: &[SocketAddr],
    secret: Secret,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Node {
    let mut cluster = ClusterConfig::new("127.0.0.1:0".parse().unwrap());
    cluster.gossip_interval = Duration::from_millis(100);
    cluster.leave_linger = Duration::from_millis(500);
    cluster.seeds = seeds.iter().map(ToString::to_string).collect();
    let mut config = NodeConfig {
        name: name.into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        cluster: Some(cluster),
        ..NodeConfig::default()
    };
    tweak(&mut config);
    Node::builder()
        .config(config)
        .secret(secret)
        .kind("seq-check", "counts ticks", |node, spec| async move {
            let config = duologue_actors::seq_check::CheckConfig::from(spec.name.as_str());
            let (check, _) = Actor::spawn(None, SeqCheck, config)
                .await
                .map_err(|e| e.to_string())?;
            node.register(spec.name, &check)
                .map_err(|e| e.to_string())?;
            Ok(check.get_cell())
        })
        .start()
        .await
        .unwrap()
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// From the last node's start until every node and the observer see five members up.
    pub converged: Duration,
    /// From `n3`'s start (before its seeds) until the observer sees it up.
    pub dns_joined: Duration,
    /// A lookup of a name the observer already knows.
    pub lookup: Duration,
    /// That lookup, the connect and a call through it.
    pub lookup_and_call: Duration,
    /// A remote spawn on the slow host, until its answer.
    pub spawn_answer: Duration,
    /// From a remote spawn's answer until the observer's lookup resolves the new name.
    pub name_spread: Duration,
    /// From cutting `n1` off until the observer declares it unreachable.
    pub partition_detected: Duration,
    /// From healing until the observer hears it again, and until its name resolves.
    pub heal_detected: Duration,
    /// From SIGKILL of `n3` until the observer declares it dead.
    pub death_detected: Duration,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1e3);
        writeln!(f, "converged={}", ms(self.converged))?;
        writeln!(f, "dns_seed_join={}", ms(self.dns_joined))?;
        writeln!(
            f,
            "lookup={} lookup_connect_call={}",
            ms(self.lookup),
            ms(self.lookup_and_call)
        )?;
        writeln!(
            f,
            "spawn_on_slow_host={} new_name_seen_after={}",
            ms(self.spawn_answer),
            ms(self.name_spread)
        )?;
        writeln!(
            f,
            "partition_detected={} heal_detected={}",
            ms(self.partition_detected),
            ms(self.heal_detected)
        )?;
        write!(f, "killed_node_declared_dead={}", ms(self.death_detected))
    }
}

/// Four node processes and the observer, on a lab.
#[derive(Debug)]
pub struct ClusterLab {
    nodes: Vec<Option<NodeProcess>>,
    observer: Node,
    events: mpsc::UnboundedReceiver<ClusterEvent>,
    dns_started: Instant,
    last_started: Instant,
    _secrets: SecretDir,
}

impl ClusterLab {
    /// Impairs host [`SLOW`], starts `n3` (seeds by DNS, not yet up), then `n0` to `n2`
    /// (seed: `n0`) as `duologue node` processes (`exe` is the `duologue` binary), then
    /// the observer. Must run on a thread in host [`OBSERVER`]'s namespace
    /// ([`Lab::run_in`]), so that the observer's sockets are there.
    ///
    /// # Panics
    /// When the lab or a node fails.
    pub async fn start(lab: &Lab, exe: &Path, interval: Duration) -> Self {
        lab.impair(SLOW, Duration::from_millis(20), 0.01).unwrap();
        let seed = SocketAddr::new(lab.ip(0), GOSSIP_PORT);
        lab.hosts_file(3, &[(SEED_NAME, lab.ip(0)), (SEED_NAME, lab.ip(1))])
            .unwrap();
        let secrets = SecretDir::create().unwrap();
        let secret = secrets.secret().display().to_string();
        let args = |i: usize, seed: Vec<String>| -> Vec<String> {
            let ip = lab.ip(i);
            let mut args: Vec<String> = vec![
                "--listen".into(),
                format!("{ip}:0"),
                "--insecure-plaintext".into(),
                "--secret-file".into(),
                secret.clone(),
                "--gossip-listen".into(),
                format!("{ip}:{GOSSIP_PORT}"),
                "--gossip-interval".into(),
                format!("{}ms", interval.as_millis()),
                "--actor".into(),
                format!("seq-check:s{i}"),
            ];
            args.extend(seed);
            args
        };
        let mut nodes: Vec<Option<NodeProcess>> = (0..4).map(|_| None).collect();
        let dns_started = Instant::now();
        let dns = vec![
            "--seed-dns".into(),
            format!("{SEED_NAME}:{GOSSIP_PORT}"),
            "--seed-dns-every".into(),
            "1s".into(),
        ];
        nodes[3] = Some(
            lab.start_node(3, exe, "n3", &args(3, dns), STEP)
                .await
                .unwrap(),
        );
        for (i, slot) in nodes.iter_mut().enumerate().take(3) {
            let seeds = if i == 0 {
                Vec::new()
            } else {
                vec!["--seed".into(), seed.to_string()]
            };
            let name = format!("n{i}");
            *slot = Some(
                lab.start_node(i, exe, &name, &args(i, seeds), STEP)
                    .await
                    .unwrap(),
            );
        }
        let last_started = Instant::now();
        let mut cluster = ClusterConfig::new(SocketAddr::new(lab.ip(OBSERVER), 0));
        cluster.gossip_interval = interval;
        cluster.seeds = vec![seed.to_string()];
        let observer = Node::builder()
            .config(NodeConfig {
                name: "observer".into(),
                listen: Some(SocketAddr::new(lab.ip(OBSERVER), 0)),
                insecure_plaintext: true,
                cluster: Some(cluster),
                ..NodeConfig::default()
            })
            .secret(Secret::from_file(secrets.secret()).unwrap())
            .start()
            .await
            .unwrap();
        let events = listen(&observer).await;
        Self {
            nodes,
            observer,
            events,
            dns_started,
            last_started,
            _secrets: secrets,
        }
    }

    fn addr(&self, i: usize) -> String {
        self.nodes[i].as_ref().unwrap().addr.to_string()
    }

    /// Runs every step, asserting each outcome, and returns what it measured.
    ///
    /// # Panics
    /// When a step fails or times out.
    pub async fn run_scenario(mut self, lab: &Lab) -> Figures {
        let mut figures = Figures::default();
        let observer = self.observer.clone();

        // Membership converges, n3 included, though it started before its seeds.
        let mut dns_joined = None;
        tokio::time::timeout(STEP, async {
            loop {
                let changed = observer.members_changed();
                let members = observer.members().unwrap();
                if dns_joined.is_none()
                    && members
                        .iter()
                        .any(|m| m.identity.name == "n3" && m.state == MemberState::Up)
                {
                    dns_joined = Some(self.dns_started.elapsed());
                }
                if count_up(&members) == 5 {
                    return;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the observer never saw five members: {:?}",
                observer.members()
            )
        });
        figures.dns_joined = dns_joined.unwrap();
        // Every node sees the five, with every node's name where it is.
        for i in 0..4 {
            let addr = self.addr(i);
            let deadline = Instant::now() + STEP;
            let mut since = 0;
            loop {
                // Answered at once the first time, then when n{i}'s view changes.
                let now = observer
                    .members_changed_at(
                        &addr,
                        since,
                        deadline.saturating_duration_since(Instant::now()),
                    )
                    .await
                    .unwrap();
                since = now.version;
                let members = now.members;
                let names_right = (0..4).all(|j| {
                    members.iter().any(|m| {
                        m.identity.name == format!("n{j}")
                            && m.serves()
                            && m.actor(&format!("s{j}")).is_some()
                    })
                });
                if count_up(&members) == 5 && names_right {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "n{i} never converged: {members:?}"
                );
            }
        }
        figures.converged = self.last_started.elapsed();

        // A lookup from the observer finds the actor on every node; a call answers.
        let (owner, _) = Actor::spawn(None, IgnoringOwner, ()).await.unwrap();
        for i in 0..4 {
            let name = format!("s{i}");
            let started = Instant::now();
            let located = observer.lookup::<SeqCheck>(&name, STEP).await.unwrap();
            let looked_up = started.elapsed();
            assert_eq!(located.node.name, format!("n{i}"));
            let remote = observer
                .connect::<SeqCheck>((&located.addr, &located.name))
                .owner(&owner)
                .await
                .unwrap();
            let _: Report = remote
                .call_as(ReportRequest::default(), STEP)
                .await
                .unwrap();
            if i == SLOW {
                figures.lookup = looked_up;
                figures.lookup_and_call = started.elapsed();
            }
            remote.finish();
        }

        // A remote spawn lands where asked (the slow host), and its name spreads.
        let started = Instant::now();
        let spawned = observer
            .spawn(
                SpawnOn::Node("n2".into()),
                ActorSpec::new("seq-check", "spawned"),
            )
            .await
            .unwrap();
        figures.spawn_answer = started.elapsed();
        assert_eq!(spawned.node, "n2");
        assert_eq!(spawned.addr, self.addr(SLOW));
        let answered = Instant::now();
        let remote = observer
            .connect::<SeqCheck>(duologue::Target::named("spawned", STEP))
            .owner(&owner)
            .await
            .unwrap();
        figures.name_spread = answered.elapsed();
        assert_eq!(remote.session().peer().name, "n2");
        remote.finish();

        // A partition: n1 cut off is declared unreachable and its name goes; healed, it
        // is heard again and its name is back.
        let cut = Instant::now();
        lab.cut(1).unwrap();
        next_event(&mut self.events, STEP, |e| match e {
            ClusterEvent::Unreachable(m) if m.identity.name == "n1" => Some(()),
            _ => None,
        })
        .await;
        figures.partition_detected = cut.elapsed();
        assert!(matches!(
            observer.lookup::<SeqCheck>("s1", Duration::ZERO).await,
            Err(LookupError::NotFound { .. })
        ));
        let healed = Instant::now();
        lab.heal(1).unwrap();
        next_event(&mut self.events, STEP, |e| match e {
            ClusterEvent::Reachable(m) if m.identity.name == "n1" => Some(()),
            _ => None,
        })
        .await;
        figures.heal_detected = healed.elapsed();
        let back = observer.lookup::<SeqCheck>("s1", STEP).await.unwrap();
        assert_eq!(back.node.name, "n1");

        // A killed node is declared dead, and its name goes.
        let killed = Instant::now();
        let n3 = self.nodes[3].take().unwrap();
        n3.child.signal(Signal::SIGKILL).unwrap();
        next_event(&mut self.events, STEP, |e| match e {
            ClusterEvent::Unreachable(m) if m.identity.name == "n3" => Some(()),
            _ => None,
        })
        .await;
        figures.death_detected = killed.elapsed();
        assert!(matches!(
            observer.lookup::<SeqCheck>("s3", Duration::ZERO).await,
            Err(LookupError::NotFound { .. })
        ));
        drop(n3);

        observer.shutdown().await;
        for node in self.nodes.iter_mut().flatten() {
            let _ = node.child.signal(Signal::SIGTERM);
            node.child.wait(STEP).await.unwrap();
        }
        figures
    }
}
