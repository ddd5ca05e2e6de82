//! Entity state in a store (issue 28, point 8): what a durable write costs a node, what
//! keeping leases costs the store, and how long an entity whose node was SIGKILLed takes
//! to answer from another node with its state. Each figure is taken `--runs` times (3) on
//! SQLite (one file in a temporary folder) and on PostgreSQL (a server of the bench's own
//! on 127.0.0.1, `duologue_testkit::postgres`, `fsync` and `synchronous_commit` on); the
//! median is printed beside the runs. SQLite commits with `PRAGMA synchronous = FULL`
//! (the store's setting): each commit is on disk when it returns, as PostgreSQL's is.
//!
//! - **Writes per node** (a, b): one node in this process (no cluster: it owns every
//!   shard; leases of `--lease-ms`, 2 000 by default, 0 for none) hosts the durable kind
//!   `counter` (`Durable<Ping>`: a call with `n > 0` adds `n` and is answered once the
//!   write committed, one write per call; a call with `n = 0` answers the total and writes
//!   nothing). First one call to each of `--entities` ids (1 000; each starts its entity:
//!   the shard's claim and a load), then `--calls` (20 000) writing calls from
//!   `--concurrency` (64) callers over those ids (`Node::entity`, in-process), then as
//!   many calls that write nothing; then `--sequential` (1 000) calls one at a time,
//!   writing and not writing in turn. Calls/s and latency p50 / p99 of each. Then the
//!   store is read (a `StateStore` of its own): every acknowledged write must be there.
//! - **Lease renewals** (c): `StateStore::claim` of 1 024 shards of a kind for one owner
//!   with a 60 s lease, then `--renewals` (50) calls of `StateStore::renew` one after
//!   the other, each renewing all 1 024 in one transaction: renewals/s and shards/s.
//! - **From a SIGKILL to the state answering elsewhere** (d), on PostgreSQL: three node
//!   processes (this binary again, in its child mode) on 127.0.0.1 in one cluster
//!   (gossip every `--gossip-ms`, 100 by default, as the bank's), hosting `failover` (the
//!   same entity; its answer carries its node's index). A call writes a known total
//!   through the first node; calls through each node must agree on who answers (the
//!   owner) and with what. Then the owner is SIGKILLed, and from then on a read call
//!   goes through a survivor every 20 ms (each waiting up to 5 s) until one is answered,
//!   by another node, with the total: the time from the kill; beside it, the time until
//!   the survivor's view (asked over the wire) shows the killed node unreachable. With
//!   leases of `--lease-ms` and without leases; each with every node serving entities
//!   of the kind before the kill (more ids written through the first node until each
//!   node answered one: a cluster in use) and with the one entity alone (the nodes that
//!   take its shard over never served the kind: their hosts wait the 10 s hand-over
//!   bound, see `benches/README.md`).
//!
//! ```text
//! cargo bench -p duologue-actors --bench entity_state -- [--runs 3] [--entities 1000]
//!     [--calls 20000] [--concurrency 64] [--sequential 1000] [--renewals 50]
//!     [--lease-ms 2000] [--gossip-ms 100] [--no-sqlite] [--no-postgres] [--no-failover]
//! ```
//!
//! Figures in `benches/README.md` ("entity_state"). Every child is killed on every way
//! out (their guards), the PostgreSQL server and the SQLite folder are removed, and every
//! wait is bounded.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duologue::cluster::MemberState;
use duologue::state::{Durable, StateConfig, StateStore};
use duologue::wire::Fault;
use duologue::{Entity, Node, NodeConfig, Secret};
use duologue_testkit::postgres::Postgres;
use duologue_testkit::probe::{Ping, PingPong, Pong};
use duologue_testkit::{ChildGuard, Signal, args, load, median};
use ractor::{Actor, ActorProcessingErr, ActorRef};

const SECRET: &str = "entity state bench secret, 32 b!";
const WAIT: Duration = Duration::from_secs(60);
/// The kind of the writes per node.
const COUNTER: &str = "counter";
/// The kind of the lease renewals (with the run's number).
const RENEWALS: &str = "renewals";
/// The kind of the failover.
const FAILOVER: &str = "failover";
const CHILD_FLAG: &str = "--child";
/// Shards the renewals claim (the runtime's default count per kind).
const SHARDS: u32 = 1024;
/// The renewals' lease: long enough that none expires during the loop.
const RENEWAL_LEASE: Duration = Duration::from_secs(60);
/// How often the failover sends a read through a survivor, and how long each waits.
const PROBE_EVERY: Duration = Duration::from_millis(20);
const PROBE_WAIT: Duration = Duration::from_secs(5);
/// The total the failover writes before the kill.
const KNOWN: u64 = 4_242;
/// The failover's nodes.
const NODES: usize = 3;

/// A running total kept in the store (`Ping::n`): a call with `n > 0` adds it and is
/// answered once written, a call with `n = 0` is answered with the total and writes
/// nothing. Answers carry the node's index in `deadline_left_ms`.
struct Counter;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Counter {
    type Msg = Entity<PingPong>;
    type State = (Durable<Ping>, u64);
    type Arguments = (Durable<Ping>, u64);

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        state: (Durable<Ping>, u64),
    ) -> Result<(Durable<Ping>, u64), ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        (total, node): &mut (Durable<Ping>, u64),
    ) -> Result<(), ActorProcessingErr> {
        let Entity::Call { request, reply, .. } = message else {
            return Ok(());
        };
        let written = if request.n == 0 {
            Ok(())
        } else {
            total.update(|t| t.n += request.n).await
        };
        match written {
            Ok(()) => {
                let _ = reply.send(Pong {
                    n: total.get().n,
                    deadline_left_ms: *node,
                });
            }
            Err(error) => {
                let _ = reply.fail(Fault {
                    code: "state".into(),
                    message: error.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Starts a counter entity of node `index`.
async fn start_counter(
    index: u64,
    total: Durable<Ping>,
) -> Result<ActorRef<Entity<PingPong>>, String> {
    let (counter, _) = Actor::spawn(None, Counter, (total, index))
        .await
        .map_err(|e| e.to_string())?;
    Ok(counter)
}

/// The store's settings: `url`, with leases of `lease_ms` unless 0.
fn state_config(url: &str, lease_ms: u64) -> StateConfig {
    let config = StateConfig::new(url);
    if lease_ms == 0 {
        config
    } else {
        config.with_lease(Duration::from_millis(lease_ms))
    }
}

/// Child mode (`--child NAME --index I --state URL --lease-ms MS --gossip-ms MS [--seed
/// GOSSIP]`): a clustered node on 127.0.0.1 hosting `failover` counters. It prints its
/// session address, then its gossip address, one line each; it leaves on SIGTERM, or when
/// its standard input closes (the bench is gone).
async fn child(argv: &[String]) -> anyhow::Result<()> {
    let name = duologue_testkit::flag_value(argv, CHILD_FLAG)
        .ok_or_else(|| anyhow::anyhow!("{CHILD_FLAG} NAME"))?;
    let index = args::option(argv, "--index", 0)?;
    let url = duologue_testkit::flag_value(argv, "--state")
        .ok_or_else(|| anyhow::anyhow!("--state URL"))?;
    let lease_ms = args::option(argv, "--lease-ms", 2_000)?;
    let mut cluster = duologue_testkit::quick_cluster(
        "127.0.0.1:0".parse()?,
        duologue_testkit::flag_value(argv, "--seed"),
    );
    cluster.gossip_interval = Duration::from_millis(args::option(argv, "--gossip-ms", 100)?);
    let node = Node::builder()
        .config(NodeConfig {
            name,
            listen: Some("127.0.0.1:0".parse()?),
            cluster: Some(cluster),
            ..NodeConfig::default()
        })
        .secret(Secret::new(SECRET)?)
        .state(state_config(&url, lease_ms))
        .durable_entity(FAILOVER, move |_node: Node, _id: String, total| {
            start_counter(index, total)
        })
        .start()
        .await?;
    println!("listening on {}", node.local_addr().expect("listens"));
    println!("gossip on {}", node.gossip_addr().expect("clustered"));
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
        let _ = closed_tx.send(());
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = closed => {}
    }
    node.shutdown().await;
    Ok(())
}

/// p50 and p99 of `latencies`, in microseconds.
fn percentiles(latencies: &mut [u32]) -> (f64, f64) {
    if latencies.is_empty() {
        return (0.0, 0.0);
    }
    latencies.sort_unstable();
    let at = |q: f64| f64::from(latencies[((latencies.len() as f64 - 1.0) * q) as usize]);
    (at(0.50), at(0.99))
}

fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}

/// Rows of figures, one value per run, in the order first added.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Vec<f64>)>,
}

impl Table {
    fn add(&mut self, figure: &str, value: f64) {
        match self.rows.iter_mut().find(|(name, _)| name == figure) {
            Some((_, values)) => values.push(value),
            None => self.rows.push((figure.to_owned(), vec![value])),
        }
    }

    /// A Markdown table: the runs and their median.
    fn print(&self, title: &str) {
        let runs = self.rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        println!("\n{title}\n");
        let heads: Vec<String> = (1..=runs).map(|r| format!("run {r}")).collect();
        println!("| figure | {} | median |", heads.join(" | "));
        println!("|---|{}---|", "---|".repeat(runs));
        for (name, values) in &self.rows {
            let cells: Vec<String> = values.iter().map(|v| number(*v)).collect();
            println!(
                "| {name} | {} | **{}** |",
                cells.join(" | "),
                number(median(values))
            );
        }
    }
}

/// `value` rounded, its thousands set apart by spaces (one decimal below 10).
fn number(value: f64) -> String {
    if value.abs() < 10.0 && value.fract() != 0.0 {
        return format!("{value:.1}");
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    if value < 0.0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// How hard the writes per node push.
#[derive(Clone, Copy, Debug)]
struct Load {
    entities: u64,
    calls: u64,
    concurrency: u64,
    sequential: u64,
    renewals: u64,
    lease_ms: u64,
}

/// One call of `n` to counter `id` on `node`: its answer's total.
async fn add(node: &Node, id: &str, n: u64) -> anyhow::Result<u64> {
    let pong = node
        .entity::<PingPong>(COUNTER, id)?
        .call(Ping { n, body: vec![] }, WAIT / 2)
        .await?;
    Ok(pong.n)
}

/// The writes per node (a, b) and the renewals (c) on the store at `url`, run `run`:
/// their figures added to `table`.
async fn store_run(url: &str, run: u64, load: Load, table: &mut Table) -> anyhow::Result<()> {
    let node = Node::builder()
        .name(format!("bench-r{run}"))
        .secret(Secret::new(SECRET)?)
        .state(state_config(url, load.lease_ms))
        .durable_entity(COUNTER, |_node: Node, _id: String, total| {
            start_counter(0, total)
        })
        .start()
        .await?;
    let ids: Arc<Vec<String>> =
        Arc::new((0..load.entities).map(|i| format!("r{run}-{i}")).collect());
    let id = {
        let ids = ids.clone();
        move |i: u64| ids[usize::try_from(i % ids.len() as u64).unwrap_or_default()].clone()
    };
    let phase = |n: u64, total: u64| {
        let (node, id) = (node.clone(), id.clone());
        load::calls(total, load.concurrency, move |i| {
            let (node, id) = (node.clone(), id(i));
            async move {
                add(&node, &id, n).await?;
                Ok(())
            }
        })
    };

    // Activations: one call (writing nothing) to each id.
    let (took, mut first) = phase(0, load.entities).await?;
    let (p50, p99) = percentiles(&mut first);
    let activations = load.entities as f64 / took.as_secs_f64();
    table.add("activations/s (first call: claim + load)", activations);
    table.add("first call p50 us", p50);
    table.add("first call p99 us", p99);
    println!(
        "  activations: {} at {activations:.0}/s (p50 {p50} us, p99 {p99} us)",
        load.entities
    );

    // Under load: writes, then calls that write nothing.
    for (n, what) in [(1, "writing"), (0, "not writing")] {
        let (took, mut latencies) = phase(n, load.calls).await?;
        let rate = load.calls as f64 / took.as_secs_f64();
        let (p50, p99) = percentiles(&mut latencies);
        table.add(
            &format!("calls/s {what}, {} in flight", load.concurrency),
            rate,
        );
        table.add(&format!("  {what} p50 us, under load"), p50);
        table.add(&format!("  {what} p99 us, under load"), p99);
        println!(
            "  {} calls {what}, {} in flight: {rate:.0}/s (p50 {p50} us, p99 {p99} us)",
            load.calls, load.concurrency
        );
    }

    // One at a time, writing and not writing in turn.
    let (mut writing, mut reading) = (Vec::new(), Vec::new());
    let began = Instant::now();
    for i in 0..load.sequential {
        let (n, into) = if i % 2 == 0 {
            (1, &mut writing)
        } else {
            (0, &mut reading)
        };
        let sent = Instant::now();
        add(&node, &id(i), n).await?;
        into.push(micros(sent.elapsed()));
    }
    let sequential_rate = load.sequential as f64 / began.elapsed().as_secs_f64();
    let (w50, w99) = percentiles(&mut writing);
    let (r50, r99) = percentiles(&mut reading);
    table.add("one at a time: writing p50 us", w50);
    table.add("one at a time: writing p99 us", w99);
    table.add("one at a time: not writing p50 us", r50);
    table.add("one at a time: not writing p99 us", r99);
    println!(
        "  {} calls one at a time ({sequential_rate:.0}/s): writing p50 {w50} us, p99 {w99} us; \
         not writing p50 {r50} us, p99 {r99} us",
        load.sequential
    );
    node.shutdown().await;

    // Every acknowledged write is in the store.
    let written = load.calls + load.sequential.div_ceil(2);
    let store = StateStore::open(url).await?;
    let mut found = 0;
    for i in 0..load.entities {
        let stored = store.load(COUNTER, &id(i)).await?;
        if stored.revision > 0 {
            found += <Ping as prost::Message>::decode(stored.bytes.as_slice())?.n;
        }
    }
    anyhow::ensure!(
        found == written,
        "the store holds {found} of the {written} acknowledged writes"
    );
    println!("  the store holds all {written} acknowledged writes");

    // Lease renewals: 1 024 shards of one owner, each renewal all of them at once.
    let kind = format!("{RENEWALS}-r{run}");
    let owner = format!("bench/r{run}");
    let began = Instant::now();
    for shard in 0..SHARDS {
        let claim = store
            .claim(&kind, shard, &owner, Some(RENEWAL_LEASE))
            .await?;
        anyhow::ensure!(claim.is_some(), "shard {shard} not claimed");
    }
    let claims = f64::from(SHARDS) / began.elapsed().as_secs_f64();
    let began = Instant::now();
    for _ in 0..load.renewals {
        let renewed = store.renew(&kind, &owner, RENEWAL_LEASE).await?;
        anyhow::ensure!(
            renewed.len() == SHARDS as usize,
            "a renewal renewed {} of {SHARDS} shards",
            renewed.len()
        );
    }
    let took = began.elapsed();
    let renewals = load.renewals as f64 / took.as_secs_f64();
    table.add("claims/s (one shard each, one after another)", claims);
    table.add(
        "renewals/s of 1 024 shards (one transaction each)",
        renewals,
    );
    table.add("  shards renewed/s", renewals * f64::from(SHARDS));
    table.add(
        "  ms per renewal",
        took.as_secs_f64() * 1e3 / load.renewals.max(1) as f64,
    );
    println!(
        "  {SHARDS} claims at {claims:.0}/s; {} renewals of {SHARDS} shards at {renewals:.1}/s \
         ({:.0} shards/s)",
        load.renewals,
        renewals * f64::from(SHARDS)
    );
    store.close().await;
    Ok(())
}

/// A node process of the failover.
struct Member {
    child: ChildGuard,
    addr: String,
}

async fn start_member(
    exe: &Path,
    index: usize,
    url: &str,
    lease_ms: u64,
    gossip_ms: u64,
    seed: Option<&str>,
) -> anyhow::Result<(Member, String)> {
    let name = format!("n{index}");
    let mut args = vec![
        CHILD_FLAG.to_owned(),
        name.clone(),
        "--index".into(),
        index.to_string(),
        "--state".into(),
        url.to_owned(),
        "--lease-ms".into(),
        lease_ms.to_string(),
        "--gossip-ms".into(),
        gossip_ms.to_string(),
    ];
    if let Some(seed) = seed {
        args.extend(["--seed".to_owned(), seed.to_owned()]);
    }
    let (child, addr, gossip) = duologue_testkit::start_announcing(&name, exe, &args, WAIT).await?;
    Ok((Member { child, addr }, gossip))
}

/// One read (or write of `n`) of `id` through the node at `addr`: (total, node index).
async fn call_via(
    client: &Node,
    addr: &str,
    id: &str,
    n: u64,
    wait: Duration,
) -> anyhow::Result<(u64, u64)> {
    let pong = client
        .entity_via::<PingPong>(addr, FAILOVER, id)?
        .call(Ping { n, body: vec![] }, wait)
        .await?;
    Ok((pong.n, pong.deadline_left_ms))
}

/// What one failover saw.
struct Failover {
    /// From the SIGKILL to the first read answered with the state by another node.
    took: Duration,
    /// Reads sent through the survivor until then.
    attempts: u64,
    /// Reads that failed meanwhile (timeouts, typed errors), and the first error.
    failed: u64,
    first_error: Option<String>,
    /// From the SIGKILL to the survivor's view showing the killed node unreachable.
    declared: Option<Duration>,
}

/// Three nodes on the store at `url` (with every node serving entities first when
/// `warm`); the owner of a written entity SIGKILLed; the time until a survivor answers
/// with its state.
async fn failover(
    exe: &Path,
    url: &str,
    (lease_ms, gossip_ms): (u64, u64),
    id: &str,
    warm: bool,
) -> anyhow::Result<Failover> {
    let (first, seed) = start_member(exe, 0, url, lease_ms, gossip_ms, None).await?;
    let mut members = vec![first];
    for index in 1..NODES {
        let (member, _) = start_member(exe, index, url, lease_ms, gossip_ms, Some(&seed)).await?;
        members.push(member);
    }
    let client = Node::builder()
        .name("bench-client")
        .secret(Secret::new(SECRET)?)
        .start()
        .await?;
    for member in &members {
        duologue_testkit::cluster::wait_members_at(&client, &member.addr, WAIT, |m| {
            duologue_testkit::cluster::count_up(m) == NODES
        })
        .await;
    }
    // The known state, written through the first node (retried while the cluster
    // settles: a refused write changed nothing).
    let deadline = Instant::now() + WAIT;
    loop {
        match call_via(&client, &members[0].addr, id, KNOWN, PROBE_WAIT).await {
            Ok((total, _)) => {
                anyhow::ensure!(total == KNOWN, "{id} answered {total} to its first write");
                break;
            }
            Err(error) => {
                anyhow::ensure!(Instant::now() < deadline, "{id} not written: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if warm {
        // Every node serves entities of the kind before the kill (a cluster in use).
        let mut served = [false; NODES];
        for k in 0.. {
            let (_, by) = call_via(
                &client,
                &members[0].addr,
                &format!("{id}-warm-{k}"),
                1,
                PROBE_WAIT,
            )
            .await?;
            served[usize::try_from(by)?] = true;
            if served.iter().all(|s| *s) {
                break;
            }
            anyhow::ensure!(k < 1_000, "not every node served: {served:?}");
        }
    }
    // Its owner: the node that answers through every node, twice in a row 500 ms apart.
    let mut owners = Vec::new();
    let owner = loop {
        let mut seen = Vec::new();
        for member in &members {
            seen.push(call_via(&client, &member.addr, id, 0, PROBE_WAIT).await?);
        }
        anyhow::ensure!(
            seen.iter().all(|(total, _)| *total == KNOWN),
            "{id} answered {seen:?}, not {KNOWN}"
        );
        owners.push(seen[0].1);
        if seen.iter().all(|(_, o)| *o == seen[0].1) && owners.len() >= 2 {
            let [.., a, b] = owners[..] else {
                unreachable!("two at least")
            };
            if a == b {
                break b;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the nodes never agreed on {id}'s owner: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let killed = usize::try_from(owner)?;
    let survivor = members[(killed + 1) % NODES].addr.clone();

    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let killed_at = Instant::now();
    members[killed].child.signal(Signal::SIGKILL)?;
    // When the survivor's view declares the killed node dead (asked over the wire).
    let declared = {
        let (client, survivor, name) = (client.clone(), survivor.clone(), format!("n{killed}"));
        tokio::spawn(async move {
            let mut since = 0;
            while killed_at.elapsed() < WAIT {
                let now = client
                    .members_changed_at(&survivor, since, Duration::from_secs(5))
                    .await
                    .ok()?;
                if now
                    .members
                    .iter()
                    .any(|m| m.identity.name == name && m.state == MemberState::Unreachable)
                {
                    return Some(killed_at.elapsed());
                }
                since = now.version;
            }
            None
        })
    };
    let mut every = tokio::time::interval(PROBE_EVERY);
    let (mut attempts, mut failed, mut first_error) = (0u64, 0u64, None);
    let took = loop {
        tokio::select! {
            _ = every.tick() => {
                anyhow::ensure!(
                    killed_at.elapsed() < WAIT,
                    "no survivor answered for {id} within {WAIT:?} of the kill ({attempts} reads, {failed} failed)"
                );
                attempts += 1;
                let (client, survivor, id, answers) =
                    (client.clone(), survivor.clone(), id.to_owned(), answers.clone());
                tokio::spawn(async move {
                    let answer = call_via(&client, &survivor, &id, 0, PROBE_WAIT).await;
                    let _ = answers.send((answer.map_err(|e| e.to_string()), killed_at.elapsed()));
                });
            }
            Some((answer, at)) = answered.recv() => match answer {
                Ok((total, by)) => {
                    anyhow::ensure!(
                        total == KNOWN && by != owner,
                        "after the kill {id} answered {total} from n{by}: {KNOWN} from another node expected"
                    );
                    break at;
                }
                Err(error) => {
                    failed += 1;
                    first_error.get_or_insert(error);
                }
            },
        }
    };
    let declared = tokio::time::timeout(WAIT, declared)
        .await
        .ok()
        .and_then(|d| d.ok().flatten());
    // The survivors leave politely (their leases go back to the store).
    for member in &mut members {
        if member.child.pid().is_some() {
            let _ = member.child.signal(Signal::SIGTERM);
        }
    }
    for member in &mut members {
        let _ = member.child.wait(WAIT).await;
    }
    client.shutdown().await;
    Ok(Failover {
        took,
        attempts,
        failed,
        first_error,
        declared,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.iter().any(|a| a == CHILD_FLAG) {
        return child(&argv).await;
    }
    let runs = args::option(&argv, "--runs", 3)?.max(1);
    let load = Load {
        entities: args::option(&argv, "--entities", 1_000)?.max(1),
        calls: args::option(&argv, "--calls", 20_000)?,
        concurrency: args::option(&argv, "--concurrency", 64)?.max(1),
        sequential: args::option(&argv, "--sequential", 1_000)?,
        renewals: args::option(&argv, "--renewals", 50)?.max(1),
        lease_ms: args::option(&argv, "--lease-ms", 2_000)?,
    };
    let gossip_ms = args::option(&argv, "--gossip-ms", 100)?;
    let flag = |f: &str| argv.iter().any(|a| a == f);
    let lease = if load.lease_ms == 0 {
        "no lease".to_owned()
    } else {
        format!("lease {} ms", load.lease_ms)
    };
    println!(
        "entity_state: {runs} runs; {} entities, {} calls, {} in flight, {} one at a time, \
         {} renewals; the node's {lease}",
        load.entities, load.calls, load.concurrency, load.sequential, load.renewals
    );
    let postgres = if flag("--no-postgres") && flag("--no-failover") {
        None
    } else {
        let server = tokio::task::spawn_blocking(Postgres::start).await??;
        Some(server)
    };
    let folder = tempfile::tempdir()?;
    let sqlite = format!("sqlite:{}", folder.path().join("state.db").display());
    let mut stores = Vec::new();
    if !flag("--no-sqlite") {
        stores.push(("SQLite (synchronous = FULL)", sqlite));
    }
    if let (false, Some(server)) = (flag("--no-postgres"), &postgres) {
        stores.push(("PostgreSQL (fsync on)", server.url()));
    }
    let mut tables = Vec::new();
    for (name, url) in &stores {
        let mut table = Table::default();
        for run in 1..=runs {
            println!("entity_state: {name}, run {run}");
            store_run(url, run, load, &mut table).await?;
        }
        tables.push((name, table));
    }

    let mut failovers = Table::default();
    if let (false, Some(server)) = (flag("--no-failover"), &postgres) {
        let exe = std::env::current_exe()?;
        let url = server.url();
        let mut modes = Vec::new();
        for lease_ms in [load.lease_ms, 0] {
            for warm in [true, false] {
                if !modes.contains(&(lease_ms, warm)) {
                    modes.push((lease_ms, warm));
                }
            }
        }
        for (lease_ms, warm) in modes {
            let what = format!(
                "{}, {}",
                if lease_ms == 0 {
                    "no lease".to_owned()
                } else {
                    format!("lease {lease_ms} ms")
                },
                if warm {
                    "every node serving"
                } else {
                    "one entity"
                }
            );
            for run in 1..=runs {
                let id = format!("l{lease_ms}-w{}-{run}", u8::from(warm));
                let seen = failover(&exe, &url, (lease_ms, gossip_ms), &id, warm).await?;
                println!(
                    "entity_state: failover, {what}, run {run}: answered with its state {} ms \
                     after the SIGKILL, declared unreachable by the survivor after {} ms ({} \
                     reads, {} failed, the first: {})",
                    seen.took.as_millis(),
                    seen.declared.map_or(-1, |d| d.as_millis() as i64),
                    seen.attempts,
                    seen.failed,
                    seen.first_error.as_deref().unwrap_or("none")
                );
                failovers.add(
                    &format!("{what}: to the survivor's view saying unreachable, ms"),
                    seen.declared.map_or(-1.0, |d| d.as_secs_f64() * 1e3),
                );
                failovers.add(
                    &format!("{what}: **to the state answered elsewhere, ms**"),
                    seen.took.as_secs_f64() * 1e3,
                );
            }
        }
    }

    for (name, table) in &tables {
        table.print(&format!(
            "entity_state: {name}, {} entities, {} in flight, the node's {lease}",
            load.entities, load.concurrency
        ));
    }
    if !failovers.rows.is_empty() {
        failovers.print(&format!(
            "entity_state: failover on PostgreSQL, 3 node processes, gossip every {gossip_ms} ms"
        ));
    }
    drop(postgres);
    Ok(())
}
