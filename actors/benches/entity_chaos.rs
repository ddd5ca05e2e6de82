//! At most one activation per id while members come and go: node processes (this binary
//! again, in its child mode) host an entity kind `ledger` whose every activation writes
//! its start, each message it handles and its stop to a record file of its own process (an
//! independent record: written by the entity, read by nothing in the runtime). This
//! process, outside the cluster, calls `--ids` ids at random through random live nodes for
//! `--seconds`, while every few seconds a node joins, leaves politely (SIGTERM) or is
//! killed (SIGKILL), keeping 2 to 5 alive. Then it reads every record and fails on:
//!
//! - a message acknowledged (its call answered) that no activation, or two, handled;
//! - any message handled twice;
//! - two activations of one id overlapping in time, where neither was on a process killed
//!   before the other started (a killed process's activations end at its kill).
//!
//! ```text
//! cargo bench --bench entity_chaos -- [--seconds 60] [--ids 10000] [--seed N]
//! ```
//!
//! Figures in `benches/README.md` ("entity_chaos"). Every child is killed on every way out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use duologue::settings::ClusterConfig;
use duologue::{Entity, Node, NodeConfig, Secret};
use duologue_testkit::probe::{Ping, PingPong, Pong};
use duologue_testkit::{ChildGuard, Signal, args};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::{Rng, SeedableRng};

const SECRET: &str = "entity chaos bench secret, 32 b!";
const WAIT: Duration = Duration::from_secs(30);
const KIND: &str = "ledger";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// A record file, shared by a process's entities.
type Record = Arc<Mutex<std::fs::File>>;

fn write(record: &Record, line: &str) {
    let mut file = record.lock().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(file, "{} {line}", now_ns());
}

struct Ledger;

struct LedgerState {
    id: String,
    record: Record,
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Ledger {
    type Msg = Entity<PingPong>;
    type State = LedgerState;
    type Arguments = LedgerState;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        state: LedgerState,
    ) -> Result<LedgerState, ActorProcessingErr> {
        write(&state.record, &format!("start {}", state.id));
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut LedgerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Entity::Call { request, reply, .. } = message {
            write(&state.record, &format!("got {} {}", state.id, request.n));
            let _ = reply.send(Pong {
                n: request.n,
                deadline_left_ms: 0,
            });
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut LedgerState,
    ) -> Result<(), ActorProcessingErr> {
        write(&state.record, &format!("stop {}", state.id));
        Ok(())
    }
}

/// Child mode: node `name` hosting ledgers, recording into `dir`, until SIGTERM.
async fn child(name: &str, seed: Option<&str>, dir: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}-{}.log", std::process::id())))?;
    let record: Record = Arc::new(Mutex::new(file));
    let mut cluster = ClusterConfig::new("127.0.0.1:0".parse()?);
    cluster.gossip_interval = Duration::from_millis(100);
    cluster.leave_linger = Duration::from_millis(500);
    cluster.seeds = seed.into_iter().map(str::to_owned).collect();
    let node = Node::builder()
        .config(NodeConfig {
            name: name.into(),
            listen: Some("127.0.0.1:0".parse()?),
            cluster: Some(cluster),
            ..NodeConfig::default()
        })
        .secret(Secret::new(SECRET)?)
        .entity(KIND, move |_node: Node, id: String| {
            let record = record.clone();
            async move {
                let (ledger, _) = Actor::spawn(None, Ledger, LedgerState { id, record })
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(ledger)
            }
        })
        .start()
        .await?;
    println!("listening on {}", node.local_addr().expect("listens"));
    println!("gossip on {}", node.gossip_addr().expect("clustered"));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    node.shutdown().await;
    Ok(())
}

/// A node process of the bench.
struct Member {
    name: String,
    child: ChildGuard,
    addr: String,
}

async fn start_member(
    exe: &Path,
    name: &str,
    seed: Option<&str>,
    dir: &Path,
) -> anyhow::Result<(Member, String)> {
    let mut args = vec![
        "--child".to_owned(),
        name.to_owned(),
        "--dir".into(),
        dir.display().to_string(),
    ];
    if let Some(seed) = seed {
        args.extend(["--seed".to_owned(), seed.to_owned()]);
    }
    let mut child = ChildGuard::spawn(name, exe, &args)?;
    let listening = child.stdout_line(WAIT).await?.unwrap_or_default();
    let gossip = child.stdout_line(WAIT).await?.unwrap_or_default();
    let addr = listening
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow::anyhow!("{name} said {listening:?}"))?
        .to_owned();
    let gossip = gossip
        .strip_prefix("gossip on ")
        .unwrap_or_default()
        .to_owned();
    Ok((
        Member {
            name: name.to_owned(),
            child,
            addr,
        },
        gossip,
    ))
}

/// One line of a record: (process, time, what, id, n).
type Line = (String, u128, String, String, Option<u64>);

/// Every line of every record in `dir`.
fn records(dir: &Path) -> anyhow::Result<Vec<Line>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let process = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for line in std::fs::read_to_string(&path)?.lines() {
            let mut words = line.split(' ');
            let (Some(at), Some(what), Some(id)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let n = words.next().and_then(|n| n.parse().ok());
            all.push((
                process.clone(),
                at.parse()?,
                what.to_owned(),
                id.to_owned(),
                n,
            ));
        }
    }
    Ok(all)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    if let Some(at) = argv.iter().position(|a| a == "--child") {
        let name = argv.get(at + 1).cloned().unwrap_or_default();
        let dir = PathBuf::from(value("--dir").unwrap_or_default());
        return child(&name, value("--seed").as_deref(), &dir).await;
    }
    let seconds = args::option(&argv, "--seconds", 60)?;
    let ids = args::option(&argv, "--ids", 10_000)?;
    let seed = args::option(&argv, "--seed", u64::from(std::process::id()))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = std::env::temp_dir().join(format!("duologue-entity-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;

    let (first, gossip) = start_member(&exe, "m0", None, &dir).await?;
    let mut live = vec![first];
    for i in 1..3 {
        live.push(
            start_member(&exe, &format!("m{i}"), Some(&gossip), &dir)
                .await?
                .0,
        );
    }
    let mut next_name = 3;
    let client = Node::builder()
        .name("chaos-client")
        .secret(Secret::new(SECRET)?)
        .start()
        .await?;
    // The client's view of who is up: the addresses it may send through.
    let addrs: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(live.iter().map(|m| m.addr.clone()).collect()));
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for task in 0..32u64 {
        let (client, addrs, acked, failed, counter, stop) = (
            client.clone(),
            addrs.clone(),
            acked.clone(),
            failed.clone(),
            counter.clone(),
            stop.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ task);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("l{}", rng.random_range(0..ids));
                let via = {
                    let addrs = addrs.lock().unwrap_or_else(|p| p.into_inner());
                    addrs[rng.random_range(0..addrs.len())].clone()
                };
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Ok(entity) = client.entity_via::<PingPong>(&via, KIND, &id) else {
                    continue;
                };
                match entity
                    .call(Ping { n, body: vec![] }, Duration::from_secs(5))
                    .await
                {
                    Ok(pong) if pong.n == n => acked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((id, n)),
                    _ => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let mut kills: HashMap<String, u128> = HashMap::new();
    let mut actions = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..5_000))).await;
        let roll = rng.random_range(0..3);
        if (roll == 0 || live.len() <= 2) && live.len() < 5 {
            let name = format!("m{next_name}");
            next_name += 1;
            let (member, _) = start_member(&exe, &name, Some(&gossip), &dir).await?;
            addrs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(member.addr.clone());
            actions.push(format!(
                "{:.1}s {name} joins",
                started.elapsed().as_secs_f64()
            ));
            live.push(member);
            continue;
        }
        // Never the seed: it is how others join.
        let at = rng.random_range(1..live.len());
        let mut member = live.remove(at);
        addrs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|a| *a != member.addr);
        if roll == 1 {
            member.child.signal(Signal::SIGTERM)?;
            let code = member.child.wait(WAIT).await?;
            actions.push(format!(
                "{:.1}s {} leaves politely (exit {code:?})",
                started.elapsed().as_secs_f64(),
                member.name
            ));
        } else {
            let pid = member.child.pid().unwrap_or(0);
            kills.insert(format!("{}-{pid}", member.name), now_ns());
            member.child.signal(Signal::SIGKILL)?;
            actions.push(format!(
                "{:.1}s {} killed",
                started.elapsed().as_secs_f64(),
                member.name
            ));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sender in senders {
        sender.await?;
    }
    for mut member in live {
        member.child.signal(Signal::SIGTERM)?;
        member.child.wait(WAIT).await?;
    }
    client.shutdown().await;

    // The checks, on the records alone.
    let records = records(&dir)?;
    let mut handled: HashMap<(String, u64), usize> = HashMap::new();
    let mut lives: BTreeMap<String, Vec<(u128, u128, String)>> = BTreeMap::new();
    let mut open: HashMap<(String, String), u128> = HashMap::new();
    let mut sorted = records;
    sorted.sort_by_key(|r| r.1);
    let end = now_ns();
    for (process, at, what, id, n) in &sorted {
        match what.as_str() {
            "start" => {
                open.insert((process.clone(), id.clone()), *at);
            }
            "stop" => {
                if let Some(from) = open.remove(&(process.clone(), id.clone())) {
                    lives
                        .entry(id.clone())
                        .or_default()
                        .push((from, *at, process.clone()));
                }
            }
            "got" => {
                *handled
                    .entry((id.clone(), n.unwrap_or(u64::MAX)))
                    .or_default() += 1
            }
            _ => {}
        }
    }
    for ((process, id), from) in open {
        let until = kills.get(&process).copied().unwrap_or(end);
        lives.entry(id).or_default().push((from, until, process));
    }
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let acked_set: HashSet<(String, u64)> = acked.iter().cloned().collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|k| !handled.contains_key(*k))
        .take(10)
        .collect();
    let twice: Vec<_> = handled
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| (k.clone(), *n))
        .take(10)
        .collect();
    let mut overlaps = Vec::new();
    let mut activations = 0;
    for (id, mut spans) in lives {
        activations += spans.len();
        spans.sort();
        for pair in spans.windows(2) {
            let ((_, a_end, a), (b_start, _, b)) = (&pair[0], &pair[1]);
            if b_start < a_end {
                overlaps.push(format!("{id}: {a} until {a_end}, {b} from {b_start}"));
            }
        }
    }
    println!(
        "entity_chaos: {seconds} s, {ids} ids, seed {seed}: {} calls acknowledged, {} failed (typed), {} activations; {} actions",
        acked_set.len(),
        failed.load(std::sync::atomic::Ordering::Relaxed),
        activations,
        actions.len()
    );
    for action in &actions {
        println!("  {action}");
    }
    println!(
        "entity_chaos: acknowledged but not handled: {}; handled twice: {}; overlapping activations: {}",
        lost.len(),
        twice.len(),
        overlaps.len()
    );
    if lost.is_empty() && twice.is_empty() && overlaps.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("entity_chaos: the records are kept in {}", dir.display());
    }
    anyhow::ensure!(lost.is_empty(), "acknowledged but never handled: {lost:?}");
    anyhow::ensure!(twice.is_empty(), "handled twice: {twice:?}");
    anyhow::ensure!(
        overlaps.is_empty(),
        "two activations at once: {:?}",
        &overlaps[..overlaps.len().min(10)]
    );
    println!("entity_chaos: ok");
    Ok(())
}
