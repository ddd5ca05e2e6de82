//! Entities across a cluster of node processes: `--nodes` (3) node processes (this binary
//! again, in its child mode) on 127.0.0.1 form one cluster (the first is the seed of the
//! others), each hosting an entity kind `echo`; the first also hosts, for comparison, a
//! named actor `echo` of the same protocol. This process, outside the cluster, reaches the
//! entities through each node in turn (`Node::entity_via`: the node routes a message on
//! to the owner of its id's shard) and the named actor directly (`Node::connect`), with
//! `--concurrency` calls in flight; it reads each node's figures over the wire
//! (`Node::status_at`), its view of the members on its stdin (a member list asked over
//! the wire does not carry their `settled` digests) and its memory and CPU time from
//! `/proc`. Before anything it waits until every node's view shows all of them serving
//! the kind, settled on one digest. Measures:
//!
//! - activations: after the ids `e0`..`e999` started first (for the gossip figure
//!   below), one call to each of the other ids up to `--entities` (the call starts the
//!   entity), the id `e{i}` through node `i % nodes`: activations per second overall and per node (the `started`
//!   count of each node over the wall time), first-message latency p50 and p99;
//! - with each kind of call, the CPU time per call of this process and of the nodes in
//!   all (from `/proc`, in 10 ms ticks);
//! - each node's resident memory per active entity (its RSS after the activations less
//!   before, over the entities it holds; an echo entity holds 8 bytes of state), the
//!   median over nodes;
//! - later messages: `--calls` calls to 10 000 started entities, spread over the nodes as
//!   the activations are (two in three are forwarded to their owner), then each sent
//!   through its owner (learned from the activations' answers: an echo entity answers
//!   with its node's index), against the same calls to the named actor: calls per second
//!   (the ratio), latency p50 and p99;
//! - the sessions between each pair of nodes, as each of the two counts them;
//! - gossip: each node's own gossip state in bytes and the gossip bytes it sends and
//!   receives per second over an idle window of `--idle-s`, at 1 000 entities and at
//!   `--entities`: the state must be the same size;
//! - a polite leave: SIGTERM to the last node (never the seed) with every entity active,
//!   and the time from the signal until (a) the others' views no longer show it serving
//!   (leaving, or unreachable),
//!   (b) its shards are handed over: every member hosting the kind that is not declared
//!   unreachable, in the views of both others, settled on one new set of members (the
//!   rule a member follows before it serves a shard it took over) and the others own
//!   every shard between them, (c) its process exited, (d) the others declared it
//!   unreachable (bounded: `--leave-wait-s`).
//!
//! ```text
//! cargo bench --bench entities -- [--entities 100000] [--calls 100000] [--concurrency 64]
//!     [--nodes 3] [--gossip-ms 1000] [--idle-s 10] [--drain-s 5] [--leave-wait-s 60]
//! ```
//!
//! `--gossip-ms` and `--drain-s` set the nodes' gossip interval and shutdown drain (the
//! runtime's defaults by default); `--nodes 1` skips the leave. Figures in
//! `benches/README.md` ("entities"). Every child is killed on every way out (their
//! guards), and every wait is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duologue::settings::{ClusterConfig, EntityConfig};
use duologue::status::{EntityKindStatus, NodeStatus};
use duologue::{Entity, Mailbox, Node, NodeConfig, RemoteRef, Secret};
use duologue_testkit::probe::{Ping, PingPong, Pong};
use duologue_testkit::{ChildGuard, Memory, Signal, args, cpu_time, load, median};
use ractor::{Actor, ActorProcessingErr, ActorRef};

const SECRET: &str = "entities bench secret, 32 bytes!";
const WAIT: Duration = Duration::from_secs(60);
const KIND: &str = "echo";
const CHILD_FLAG: &str = "--child";
/// How many entities the first gossip figure is taken at.
const FEW: u64 = 1_000;
/// How many of the started entities the later messages go to.
const LATER_IDS: u64 = 10_000;

/// An entity that answers a call with its request's `n` and counts what it got. Its
/// answer's `deadline_left_ms` carries the index of its node instead: how the bench
/// learns which node owns an id.
struct EchoEntity;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for EchoEntity {
    type Msg = Entity<PingPong>;
    /// Its node's index, and how many messages it got.
    type State = (u64, u64);
    type Arguments = u64;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        node: u64,
    ) -> Result<(u64, u64), ActorProcessingErr> {
        Ok((node, 0))
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        (node, got): &mut (u64, u64),
    ) -> Result<(), ActorProcessingErr> {
        *got += 1;
        if let Entity::Call { request, reply, .. } = message {
            let _ = reply.send(Pong {
                n: request.n,
                deadline_left_ms: *node,
            });
        }
        Ok(())
    }
}

/// The named actor of the same protocol.
struct EchoNamed;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for EchoNamed {
    type Msg = Mailbox<PingPong>;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, (): ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        got: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *got += 1;
        if let Mailbox::Call { request, reply, .. } = message {
            let _ = reply.send(Pong {
                n: request.n,
                deadline_left_ms: 0,
            });
        }
        Ok(())
    }
}

/// Child mode (`--child NAME --index I [--seed GOSSIP] [--named]` and the bench's own flags): a
/// clustered node hosting `echo` entities (and the named `echo` with `--named`). It
/// prints its session address, then its gossip address, one line each; it leaves on
/// SIGTERM, or when its standard input closes.
async fn child(argv: &[String]) -> anyhow::Result<()> {
    let name = duologue_testkit::flag_value(argv, CHILD_FLAG)
        .ok_or_else(|| anyhow::anyhow!("{CHILD_FLAG} NAME"))?;
    let entities = args::option(argv, "--entities", 100_000)?;
    let index = args::option(argv, "--index", 0)?;
    let mut cluster = ClusterConfig::new("127.0.0.1:0".parse()?);
    if let Some(ms) = duologue_testkit::flag_value(argv, "--gossip-ms") {
        cluster.gossip_interval = Duration::from_millis(ms.parse()?);
    }
    cluster.seeds = duologue_testkit::flag_value(argv, "--seed")
        .into_iter()
        .collect();
    let mut config = EntityConfig::default();
    // Every entity stays active: none is stopped to stay under the bound.
    config.max_active = usize::try_from(entities)? + 1;
    let defaults = NodeConfig::default();
    let shutdown_drain = match duologue_testkit::flag_value(argv, "--drain-s") {
        Some(s) => Duration::from_secs(s.parse()?),
        None => defaults.shutdown_drain,
    };
    let node = Node::builder()
        .config(NodeConfig {
            name,
            listen: Some("127.0.0.1:0".parse()?),
            cluster: Some(cluster),
            shutdown_drain,
            ..defaults
        })
        .secret(Secret::new(SECRET)?)
        .entities(config)
        .entity(KIND, move |_node: Node, _id: String| async move {
            let (echo, _) = Actor::spawn(None, EchoEntity, index)
                .await
                .map_err(|e| e.to_string())?;
            Ok(echo)
        })
        .start()
        .await?;
    let _named = if argv.iter().any(|a| a == "--named") {
        let (named, handle) = Actor::spawn(None, EchoNamed, ()).await?;
        node.register(KIND, &named)?;
        Some((named, handle))
    } else {
        None
    };
    println!("listening on {}", node.local_addr().expect("listens"));
    println!("gossip on {}", node.gossip_addr().expect("clustered"));
    // Each line on stdin asks for this node's view of the hosts of the kind (the settled
    // digests are not in a member list asked over the wire); SIGTERM or the end of stdin
    // make it leave.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
            if lines_tx.send(()).is_err() {
                break;
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            line = lines.recv() => {
                if line.is_none() {
                    break;
                }
                let view: Vec<String> = node
                    .members()?
                    .iter()
                    .filter(|m| m.hosts(KIND))
                    .map(|m| {
                        format!(
                            "{},{},{},{}",
                            m.identity.name,
                            m.state,
                            u8::from(m.serves()),
                            m.settled(KIND).unwrap_or("-")
                        )
                    })
                    .collect();
                println!("view {}", view.join(" "));
            }
        }
    }
    node.shutdown().await;
    Ok(())
}

/// A node process of the run.
struct Host {
    name: String,
    child: ChildGuard,
    addr: String,
}

/// Starts node `name` (seeded with `seed`), with the bench's flags passed on.
async fn start_member(
    exe: &std::path::Path,
    (name, index): (&str, usize),
    seed: Option<&str>,
    named: bool,
    pass: &[String],
) -> anyhow::Result<(Host, String)> {
    let mut args = vec![CHILD_FLAG.to_owned(), name.to_owned()];
    args.extend(["--index".to_owned(), index.to_string()]);
    if let Some(seed) = seed {
        args.extend(["--seed".to_owned(), seed.to_owned()]);
    }
    if named {
        args.push("--named".into());
    }
    args.extend(pass.iter().cloned());
    let (child, addr, gossip) = duologue_testkit::start_announcing(name, exe, &args, WAIT).await?;
    Ok((
        Host {
            name: name.to_owned(),
            child,
            addr,
        },
        gossip,
    ))
}

/// The `echo` figures of a status (zeros when it has none).
fn echo(status: &NodeStatus) -> EntityKindStatus {
    status
        .entities
        .iter()
        .find(|k| k.kind == KIND)
        .cloned()
        .unwrap_or_default()
}

/// Each node's status, asked over the wire.
async fn statuses(client: &Node, members: &[Host]) -> anyhow::Result<Vec<NodeStatus>> {
    let mut all = Vec::new();
    for member in members {
        let status = tokio::time::timeout(WAIT, client.status_at(&member.addr))
            .await
            .map_err(|_| anyhow::anyhow!("{}: no status within {WAIT:?}", member.name))??;
        all.push(status);
    }
    Ok(all)
}

/// A host of the kind in a node's view of the cluster.
#[derive(Debug)]
struct Seen {
    name: String,
    /// `up`, `leaving` or `unreachable`.
    state: String,
    serves: bool,
    settled: Option<String>,
}

/// `host`'s view of the hosts of the kind, asked on its stdin.
async fn view(host: &mut Host) -> anyhow::Result<Vec<Seen>> {
    use tokio::io::AsyncWriteExt;
    let stdin = host.child.stdin.as_mut().expect("piped");
    stdin.write_all(b"view\n").await?;
    stdin.flush().await?;
    let line = host.child.stdout_line(WAIT).await?.unwrap_or_default();
    let entries = line
        .strip_prefix("view")
        .ok_or_else(|| anyhow::anyhow!("{} said {line:?}", host.name))?;
    Ok(entries
        .split_whitespace()
        .filter_map(|entry| {
            let mut fields = entry.split(',');
            let (name, state, serves, settled) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            Some(Seen {
                name: name.to_owned(),
                state: state.to_owned(),
                serves: serves == "1",
                settled: (settled != "-").then(|| settled.to_owned()),
            })
        })
        .collect())
}

/// The digest every host of the kind in `view` not declared unreachable settled on, if
/// they all settled on one and their names are `names`.
fn settled_on(view: &[Seen], names: &[&str]) -> Option<String> {
    let hosts: Vec<&Seen> = view.iter().filter(|m| m.state != "unreachable").collect();
    let mut seen: Vec<&str> = hosts.iter().map(|m| m.name.as_str()).collect();
    seen.sort_unstable();
    let mut wanted = names.to_vec();
    wanted.sort_unstable();
    let digest = hosts.first()?.settled.as_ref()?;
    (seen == wanted && hosts.iter().all(|m| m.settled.as_ref() == Some(digest)))
        .then(|| digest.clone())
}

/// Waits until every node sees all of them serving the kind, settled on one digest;
/// that digest.
async fn settle(members: &mut [Host]) -> anyhow::Result<String> {
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut digests = Vec::new();
        for member in members.iter_mut() {
            let view = view(member).await?;
            let serving = view.iter().filter(|m| m.serves).count();
            digests.push(settled_on(&view, &names).filter(|_| serving == names.len()));
        }
        if let Some(Some(digest)) = digests.first()
            && digests.iter().all(|d| d.as_ref() == Some(digest))
        {
            return Ok(digest.clone());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the nodes did not settle within {WAIT:?}: {digests:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// p50 and p99 of `latencies`, in microseconds.
fn percentiles(latencies: &mut [u32]) -> (u32, u32) {
    if latencies.is_empty() {
        return (0, 0);
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    (at(0.50), at(0.99))
}

/// One call to each id `e{from}`..`e{to}`, the id `e{i}` through node `i % nodes`; the
/// index of the node that answered for each id below `owners.len()` is kept there.
async fn activate(
    client: &Node,
    addrs: &Arc<Vec<String>>,
    (from, to): (u64, u64),
    concurrency: u64,
    owners: &Arc<Vec<AtomicU64>>,
) -> anyhow::Result<(Duration, Vec<u32>)> {
    let (client, addrs, owners) = (client.clone(), addrs.clone(), owners.clone());
    load::calls(to - from, concurrency, move |i| {
        let id = from + i;
        let via = &addrs[(id % addrs.len() as u64) as usize];
        let entity = client.entity_via::<PingPong>(via, KIND, &format!("e{id}"));
        let owners = owners.clone();
        async move {
            let pong = entity?
                .call(
                    Ping {
                        n: id,
                        body: vec![],
                    },
                    WAIT / 2,
                )
                .await?;
            anyhow::ensure!(pong.n == id, "e{id} answered {}", pong.n);
            if let Some(owner) = usize::try_from(id).ok().and_then(|id| owners.get(id)) {
                owner.store(pong.deadline_left_ms, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await
}

/// CPU time used so far by this process and by each node.
fn cpu(members: &[Host]) -> (Duration, Vec<Duration>) {
    (
        cpu_time(None).unwrap_or_default(),
        members
            .iter()
            .map(|m| cpu_time(m.child.pid()).unwrap_or_default())
            .collect(),
    )
}

/// The CPU time per call from `before` to now, in microseconds: this process's, and the
/// nodes' in all.
fn cpu_per_call(members: &[Host], before: &(Duration, Vec<Duration>), calls: u64) -> String {
    let now = cpu(members);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / calls.max(1) as f64;
    let nodes: Duration = now.1.iter().zip(&before.1).map(|(a, b)| *a - *b).sum();
    format!(
        "CPU per call: client {:.0} us, nodes {:.0} us",
        per(now.0 - before.0),
        per(nodes)
    )
}

/// Each node's resident memory now.
fn rss(members: &[Host]) -> Vec<u64> {
    members
        .iter()
        .map(|m| Memory::of(m.child.pid()).map_or(0, |m| m.now))
        .collect()
}

/// Each node's gossip over an idle window: (own state bytes, sent/s, received/s).
async fn gossip(
    client: &Node,
    members: &[Host],
    window: Duration,
) -> anyhow::Result<Vec<(u64, f64, f64)>> {
    let before = statuses(client, members).await?;
    tokio::time::sleep(window).await;
    let after = statuses(client, members).await?;
    Ok(before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            let (b, a) = (
                b.cluster.clone().unwrap_or_default(),
                a.cluster.clone().unwrap_or_default(),
            );
            let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / window.as_secs_f64();
            (
                a.own_state_bytes,
                per_s(b.gossip_bytes_sent, a.gossip_bytes_sent),
                per_s(b.gossip_bytes_received, a.gossip_bytes_received),
            )
        })
        .collect())
}

fn print_gossip(members: &[Host], at: u64, figures: &[(u64, f64, f64)]) {
    let each: Vec<String> = members
        .iter()
        .zip(figures)
        .map(|(m, (own, sent, received))| {
            format!(
                "{} own state {own} B, sent {sent:.0} B/s, received {received:.0} B/s",
                m.name
            )
        })
        .collect();
    println!("entities: gossip at {at} entities: {}", each.join("; "));
}

/// When each step of a polite leave was first seen, from the signal.
#[derive(Debug, Default)]
struct Leave {
    not_serving: Option<Duration>,
    handed_over: Option<Duration>,
    unreachable: Option<Duration>,
    exited: Option<Duration>,
    /// Whether the leaver's own settled digest was seen on the new members.
    leaver_said_settled: bool,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "not seen".to_owned(),
        |d| format!("{} ms", d.as_millis()),
    )
}

/// SIGTERMs `leaver` and watches the others (`stay`) until it is handed over, gone and
/// declared unreachable, or `bound` passed.
async fn leave(
    client: &Node,
    stay: &mut [Host],
    leaver: &mut Host,
    before: &str,
    shards: u32,
    bound: Duration,
) -> anyhow::Result<Leave> {
    let names: Vec<String> = stay.iter().map(|m| m.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let leaver_name = leaver.name.clone();
    let signalled = Instant::now();
    leaver.child.signal(Signal::SIGTERM)?;
    let exited = async {
        let code = leaver.child.wait(bound).await;
        (signalled.elapsed(), code)
    };
    let watch = async {
        let mut seen = Leave::default();
        while signalled.elapsed() < bound
            && (seen.handed_over.is_none() || seen.unreachable.is_none())
        {
            let mut serving = false;
            let mut unreachable = true;
            let mut digests = Vec::new();
            for member in stay.iter_mut() {
                let view = view(member).await?;
                let it = view.iter().find(|m| m.name == leaver_name);
                serving |= it.is_some_and(|m| m.serves);
                unreachable &= it.is_none_or(|m| m.state == "unreachable");
                // The leaver counts while it is not declared unreachable, as it does
                // for the members taking its shards over.
                let mut counted = names.clone();
                if it.is_some_and(|m| m.state != "unreachable") {
                    counted.push(&leaver_name);
                }
                let digest = settled_on(&view, &counted).filter(|d| d != before);
                if digest.is_some() && counted.len() > names.len() {
                    seen.leaver_said_settled = true;
                }
                digests.push(digest);
            }
            let at = signalled.elapsed();
            let owned: u32 = statuses(client, stay)
                .await?
                .iter()
                .map(|s| echo(s).shards)
                .sum();
            if !serving && seen.not_serving.is_none() {
                seen.not_serving = Some(at);
            }
            if seen.handed_over.is_none()
                && owned == shards
                && digests.first().is_some_and(Option::is_some)
                && digests.iter().all(|d| *d == digests[0])
            {
                seen.handed_over = Some(at);
            }
            if unreachable && seen.unreachable.is_none() {
                seen.unreachable = Some(at);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::Ok(seen)
    };
    let ((at, code), seen) = tokio::join!(exited, watch);
    let mut seen = seen?;
    if let Ok(code) = code {
        anyhow::ensure!(code == Some(0), "{leaver_name} exited with {code:?}");
        seen.exited = Some(at);
    }
    Ok(seen)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As every duologue binary does first: without a subscriber h2's spans also go through
    // `log` (benches/README.md, instructions.sh).
    duologue::cli::log_to_stderr(duologue::cli::LogFormat::Text);
    let argv: Vec<String> = std::env::args().collect();
    if argv.iter().any(|a| a == CHILD_FLAG) {
        return child(&argv).await;
    }
    let entities = args::option(&argv, "--entities", 100_000)?.max(FEW + 1);
    let total_calls = args::option(&argv, "--calls", 100_000)?;
    let concurrency = args::option(&argv, "--concurrency", 64)?;
    let nodes = args::option(&argv, "--nodes", 3)?.max(1);
    let idle = Duration::from_secs(args::option(&argv, "--idle-s", 10)?);
    let leave_wait = Duration::from_secs(args::option(&argv, "--leave-wait-s", 60)?);
    let mut pass = vec!["--entities".to_owned(), entities.to_string()];
    for flag in ["--gossip-ms", "--drain-s"] {
        if let Some(v) = duologue_testkit::flag_value(&argv, flag) {
            pass.extend([flag.to_owned(), v]);
        }
    }
    let exe = std::env::current_exe()?;

    let setup = Instant::now();
    let (first, seed) = start_member(&exe, ("n0", 0), None, true, &pass).await?;
    let mut members = vec![first];
    for i in 1..usize::try_from(nodes)? {
        let (member, _) =
            start_member(&exe, (&format!("n{i}"), i), Some(&seed), false, &pass).await?;
        members.push(member);
    }
    let client = Node::builder()
        .name("client")
        .secret(Secret::new(SECRET)?)
        .start()
        .await?;
    let digest = settle(&mut members).await?;
    println!(
        "entities: {nodes} nodes up and settled in {} ms",
        setup.elapsed().as_millis()
    );
    let addrs: Arc<Vec<String>> = Arc::new(members.iter().map(|m| m.addr.clone()).collect());

    // Gossip at a few entities.
    let rss_before = rss(&members);
    let owners: Arc<Vec<AtomicU64>> = Arc::new(
        (0..entities.min(LATER_IDS))
            .map(|_| AtomicU64::new(u64::MAX))
            .collect(),
    );
    activate(&client, &addrs, (0, FEW), concurrency, &owners).await?;
    let gossip_few = gossip(&client, &members, idle).await?;
    print_gossip(&members, FEW, &gossip_few);

    // Activations.
    let before = statuses(&client, &members).await?;
    let cpu_before = cpu(&members);
    let (took, mut first) =
        activate(&client, &addrs, (FEW, entities), concurrency, &owners).await?;
    let activations_cpu = cpu_per_call(&members, &cpu_before, entities - FEW);
    let after = statuses(&client, &members).await?;
    let rss_after = rss(&members);
    let activations = entities - FEW;
    let (first_p50, first_p99) = percentiles(&mut first);
    let mut per_node = Vec::new();
    let mut per_entity = Vec::new();
    for (i, member) in members.iter().enumerate() {
        let (b, a) = (echo(&before[i]), echo(&after[i]));
        let started = a.started - b.started;
        per_node.push(format!(
            "{} {started} started ({:.0}/s), {} forwarded",
            member.name,
            started as f64 / took.as_secs_f64(),
            a.forwarded - b.forwarded
        ));
        let grown = rss_after[i].saturating_sub(rss_before[i]) as f64;
        per_entity.push(grown / a.active.max(1) as f64);
        println!(
            "entities: {} RSS {:.1} -> {:.1} MiB holding {} entities: {:.0} B per active entity",
            member.name,
            rss_before[i] as f64 / 1_048_576.0,
            rss_after[i] as f64 / 1_048_576.0,
            a.active,
            grown / a.active.max(1) as f64
        );
    }
    println!(
        "entities: {activations} activations at {:.0}/s (first message p50 {first_p50} us, p99 \
         {first_p99} us; {activations_cpu}); by node: {}",
        activations as f64 / took.as_secs_f64(),
        per_node.join("; ")
    );
    println!(
        "entities: memory per active entity, median over nodes: {:.0} B",
        median(&per_entity)
    );

    // Later messages: started entities (through each node in turn, then through each
    // one's owner) against the named actor.
    let started_ids = entities.min(LATER_IDS);
    anyhow::ensure!(
        owners
            .iter()
            .all(|o| (o.load(Ordering::Relaxed) as usize) < addrs.len()),
        "an entity's owner not learned"
    );
    let mut later = Vec::new();
    for by_owner in [false, true] {
        let (client, addrs, owners) = (client.clone(), addrs.clone(), owners.clone());
        let cpu_before = cpu(&members);
        let (took, mut latencies) = load::calls(total_calls, concurrency, move |i| {
            let id = i % started_ids;
            let node = if by_owner {
                owners[id as usize].load(Ordering::Relaxed)
            } else {
                i % addrs.len() as u64
            };
            let entity =
                client.entity_via::<PingPong>(&addrs[node as usize], KIND, &format!("e{id}"));
            async move {
                entity?.call(Ping { n: i, body: vec![] }, WAIT / 2).await?;
                Ok(())
            }
        })
        .await?;
        let spent = cpu_per_call(&members, &cpu_before, total_calls);
        later.push((
            total_calls as f64 / took.as_secs_f64(),
            percentiles(&mut latencies),
            spent,
        ));
    }
    // The inbox kept: dropping it would end the session.
    let (named, _inbox): (RemoteRef<PingPong>, _) = client
        .connect::<PingPong>((addrs[0].as_str(), KIND))
        .inbox()
        .await?;
    let cpu_before = cpu(&members);
    let (took, mut named_latencies) = load::calls(total_calls, concurrency, move |i| {
        let named = named.clone();
        async move {
            named.call(Ping { n: i, body: vec![] }, WAIT / 2).await?;
            Ok(())
        }
    })
    .await?;
    let named_cpu = cpu_per_call(&members, &cpu_before, total_calls);
    let named_rate = total_calls as f64 / took.as_secs_f64();
    let (named_p50, named_p99) = percentiles(&mut named_latencies);
    for ((rate, (p50, p99), spent), how) in later.iter().zip([
        format!("through the {nodes} nodes in turn"),
        "through each one's owner".to_owned(),
    ]) {
        println!(
            "entities: {total_calls} calls to {started_ids} started entities {how} at {rate:.0}/s \
             (p50 {p50} us, p99 {p99} us; {spent}): ratio to the named actor {:.2}",
            rate / named_rate
        );
    }
    println!(
        "entities: {total_calls} calls to one named actor at {named_rate:.0}/s (p50 {named_p50} \
         us, p99 {named_p99} us; {named_cpu})"
    );

    // Sessions between each pair of nodes, as each end counts them.
    let now = statuses(&client, &members).await?;
    let count = |of: usize, peer: &str| {
        now[of]
            .sessions
            .iter()
            .filter(|s| s.peer.name == peer)
            .count()
    };
    let mut pairs = Vec::new();
    for a in 0..members.len() {
        for b in a + 1..members.len() {
            pairs.push(format!(
                "{}-{}: {} / {}",
                members[a].name,
                members[b].name,
                count(a, &members[b].name),
                count(b, &members[a].name)
            ));
        }
    }
    println!(
        "entities: sessions between nodes (as each end counts them): {}",
        pairs.join("; ")
    );

    // Gossip at every entity.
    let gossip_all = gossip(&client, &members, idle).await?;
    print_gossip(&members, entities, &gossip_all);
    let same = gossip_few
        .iter()
        .zip(&gossip_all)
        .all(|(few, all)| few.0 == all.0);
    println!(
        "entities: own gossip state at {FEW} and at {entities} entities the same: {}",
        if same { "yes" } else { "NO" }
    );

    // A polite leave with every entity active.
    if members.len() > 1 {
        let shards: u32 = now.iter().map(|s| echo(s).shards).sum();
        let mut leaver = members.pop().expect("more than one");
        let held = echo(&now[members.len()]).active;
        let seen = leave(
            &client,
            &mut members,
            &mut leaver,
            &digest,
            shards,
            leave_wait,
        )
        .await?;
        println!(
            "entities: {} leaves politely holding {held} of {} active entities: from SIGTERM, \
             not serving in the others' views {}, every shard handed over {} (its own settled \
             digest seen: {}), process exited {}, declared unreachable {}",
            leaver.name,
            now.iter().map(|s| echo(s).active).sum::<usize>(),
            ms(seen.not_serving),
            ms(seen.handed_over),
            if seen.leaver_said_settled {
                "yes"
            } else {
                "no"
            },
            ms(seen.exited),
            ms(seen.unreachable)
        );
    }
    client.shutdown().await;
    // The nodes left are killed (their guards).
    drop(members);
    Ok(())
}
