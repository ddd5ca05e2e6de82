//! At most one activation per id while members come and go, checked from an independent
//! record. Node processes (the calling binary again, in its child mode: [`child`]) host
//! an entity kind `ledger` whose every activation writes its start, each call it handles
//! and its stop to a record file of its own process: written by the entity, read by
//! nothing in the runtime. [`run`] calls random ids through random live nodes from a
//! process outside the cluster while, every so many calls, a node joins, leaves politely
//! (SIGTERM) or is killed (SIGKILL), keeping 2 to 5 alive; then it reads every record and
//! reports ([`Report`]):
//!
//! - a call acknowledged (answered) that no activation handled;
//! - any call handled twice;
//! - two activations of one id overlapping in time, where neither was on a process killed
//!   before the other started (a killed process's activations end at its kill: the
//!   window between a kill and the verdict is one where its activations are gone but not
//!   yet known gone, and messages to its shards wait for the verdict).
//!
//! The bench `entity_chaos` runs it at full size; the test `entity_chaos` in CI. Every
//! child is killed on every way out (their guards), and the records are removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::probe::{Ping, PingPong, Pong};
use crate::{ChildGuard, Signal};
use duologue::{Entity, Node, NodeConfig, Secret};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::{Rng, SeedableRng};

const SECRET: &str = "entity chaos bench secret, 32 b!";
const WAIT: Duration = Duration::from_secs(30);
const KIND: &str = "ledger";

/// The longest wait between two actions when the calls stall (every id in flight waits
/// for a shard held by a dead owner, say): the next action comes all the same.
pub const MOST_BETWEEN_ACTIONS: Duration = Duration::from_secs(5);

/// The first argument of the calling binary's child mode: `--child NAME --dir DIR
/// [--seed ADDR]`. A binary that runs [`run`] hands these to [`child`].
pub const CHILD_FLAG: &str = "--child";

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

/// Child mode, from the arguments after the program's name: a node hosting ledgers,
/// recording into the directory given, until SIGTERM. It prints its session address,
/// then its gossip address, one line each.
///
/// # Errors
/// Missing arguments, or the node failing to start.
pub async fn child(argv: &[String]) -> anyhow::Result<()> {
    let value = |flag: &str| crate::flag_value(argv, flag);
    let name = value(CHILD_FLAG).ok_or_else(|| anyhow::anyhow!("{CHILD_FLAG} NAME"))?;
    let dir = PathBuf::from(value("--dir").ok_or_else(|| anyhow::anyhow!("--dir DIR"))?);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}-{}.log", std::process::id())))?;
    let record: Record = Arc::new(Mutex::new(file));
    let cluster = crate::quick_cluster("127.0.0.1:0".parse()?, value("--seed"));
    let node = Node::builder()
        .config(NodeConfig {
            name,
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
    crate::announce_until_sigterm(node).await
}

/// A node process of the run.
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
        CHILD_FLAG.to_owned(),
        name.to_owned(),
        "--dir".into(),
        dir.display().to_string(),
    ];
    if let Some(seed) = seed {
        args.extend(["--seed".to_owned(), seed.to_owned()]);
    }
    let (child, addr, gossip) = crate::start_announcing(name, exe, &args, WAIT).await?;
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

/// How long and how hard a run is.
#[derive(Clone, Debug)]
pub struct Chaos {
    /// How long the calls and the joins, leaves and kills go on.
    pub seconds: u64,
    /// How many ids the calls pick from.
    pub ids: u64,
    /// How many tasks call at once.
    pub callers: u64,
    /// About how many calls end (answered or failed) between two joins, leaves or kills:
    /// each gap is drawn between half and one and a half times this, and is cut short
    /// after [`MOST_BETWEEN_ACTIONS`] if the calls stall.
    pub calls_between: u64,
    /// What the random choices grow from.
    pub seed: u64,
}

/// What a run did and what its records show.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The run.
    pub seconds: u64,
    /// How many ids.
    pub ids: u64,
    /// Its seed.
    pub seed: u64,
    /// Calls answered.
    pub acknowledged: usize,
    /// Calls that failed (a typed error; allowed).
    pub failed: u64,
    /// Activations in the records.
    pub activations: usize,
    /// The joins, leaves and kills, with when.
    pub actions: Vec<String>,
    /// Calls answered that no activation handled (up to 10).
    pub lost: Vec<(String, u64)>,
    /// Calls handled more than once, with how often (up to 10).
    pub twice: Vec<((String, u64), usize)>,
    /// Two activations of one id at once (up to 10), and how many in all.
    pub overlaps: Vec<String>,
    /// How many overlaps in all.
    pub overlap_count: usize,
}

impl Report {
    /// Whether the records show no violation.
    pub fn holds(&self) -> bool {
        self.lost.is_empty() && self.twice.is_empty() && self.overlap_count == 0
    }

    /// How many joins, leaves and kills the run made.
    pub fn count(&self, what: &str) -> usize {
        self.actions.iter().filter(|a| a.contains(what)).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "entity_chaos: {} s, {} ids, seed {}: {} calls acknowledged, {} failed (typed), {} activations; {} actions",
            self.seconds,
            self.ids,
            self.seed,
            self.acknowledged,
            self.failed,
            self.activations,
            self.actions.len()
        )?;
        for action in &self.actions {
            writeln!(f, "  {action}")?;
        }
        write!(
            f,
            "entity_chaos: acknowledged but not handled: {}; handled twice: {}; overlapping activations: {}",
            self.lost.len(),
            self.twice.len(),
            self.overlap_count
        )?;
        if !self.holds() {
            write!(
                f,
                "\n  lost: {:?}\n  twice: {:?}\n  overlaps: {:?}",
                self.lost, self.twice, self.overlaps
            )?;
        }
        Ok(())
    }
}

/// Runs `chaos` with node processes started as `exe` (a binary whose child mode is
/// [`child`], given the arguments after [`CHILD_FLAG`]), and checks the records.
///
/// # Errors
/// A node that does not start or does not leave within 30 s, or a record that cannot
/// be read; a violation is in the [`Report`], not an error.
pub async fn run(exe: &Path, chaos: &Chaos) -> anyhow::Result<Report> {
    let dir = std::env::temp_dir().join(format!(
        "duologue-entity-chaos-{}-{}",
        std::process::id(),
        chaos.seed
    ));
    std::fs::create_dir_all(&dir)?;
    let report = run_in(exe, chaos, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    report
}

async fn run_in(exe: &Path, chaos: &Chaos, dir: &Path) -> anyhow::Result<Report> {
    let Chaos {
        seconds,
        ids,
        callers,
        calls_between,
        seed,
    } = chaos.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (first, gossip) = start_member(exe, "m0", None, dir).await?;
    let mut live = vec![first];
    for i in 1..3 {
        live.push(
            start_member(exe, &format!("m{i}"), Some(&gossip), dir)
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
    let failed = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Calls ended, answered or failed: the actions are paced by the calls, not a clock.
    let (ended, mut ended_seen) = tokio::sync::watch::channel(0u64);
    let ended = Arc::new(ended);
    let mut senders = Vec::new();
    for task in 0..callers {
        let (client, addrs, acked, failed, counter, stop, ended) = (
            client.clone(),
            addrs.clone(),
            acked.clone(),
            failed.clone(),
            counter.clone(),
            stop.clone(),
            ended.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ task);
            while !stop.load(Ordering::Relaxed) {
                let id = format!("l{}", rng.random_range(0..ids));
                let via = {
                    let addrs = addrs.lock().unwrap_or_else(|p| p.into_inner());
                    addrs[rng.random_range(0..addrs.len())].clone()
                };
                let n = counter.fetch_add(1, Ordering::Relaxed);
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
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                ended.send_modify(|n| *n += 1);
            }
        }));
    }

    let mut kills: HashMap<String, u128> = HashMap::new();
    let mut actions = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        // The chaos schedule: an action once the callers ended some more calls.
        let gap = rng.random_range(calls_between / 2..=calls_between * 3 / 2);
        let target = *ended_seen.borrow_and_update() + gap;
        let _ =
            tokio::time::timeout(MOST_BETWEEN_ACTIONS, ended_seen.wait_for(|n| *n >= target)).await;
        let roll = rng.random_range(0..3);
        if (roll == 0 || live.len() <= 2) && live.len() < 5 {
            let name = format!("m{next_name}");
            next_name += 1;
            let (member, _) = start_member(exe, &name, Some(&gossip), dir).await?;
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
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await?;
    }
    for mut member in live {
        member.child.signal(Signal::SIGTERM)?;
        member.child.wait(WAIT).await?;
    }
    client.shutdown().await;
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut report = check(&records(dir)?, &kills, &acked);
    report.seconds = seconds;
    report.ids = ids;
    report.seed = seed;
    report.failed = failed.load(Ordering::Relaxed);
    report.actions = actions;
    Ok(report)
}

/// The checks, on the records alone (and the kill times of the killed processes).
fn check(records: &[Line], kills: &HashMap<String, u128>, acked: &[(String, u64)]) -> Report {
    let mut handled: HashMap<(String, u64), usize> = HashMap::new();
    let mut lives: BTreeMap<String, Vec<(u128, u128, String)>> = BTreeMap::new();
    let mut open: HashMap<(String, String), u128> = HashMap::new();
    let mut sorted = records.to_vec();
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
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    for ((process, id), from) in open {
        let until = kills.get(&process).copied().unwrap_or(end);
        lives.entry(id).or_default().push((from, until, process));
    }
    let acked_set: HashSet<&(String, u64)> = acked.iter().collect();
    let lost = acked
        .iter()
        .filter(|k| !handled.contains_key(*k))
        .take(10)
        .cloned()
        .collect();
    let twice = handled
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
    Report {
        acknowledged: acked_set.len(),
        activations,
        lost,
        twice,
        overlap_count: overlaps.len(),
        overlaps: overlaps.into_iter().take(10).collect(),
        ..Report::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(process: &str, at: u128, what: &str, id: &str, n: Option<u64>) -> Line {
        (process.into(), at, what.into(), id.into(), n)
    }

    #[test]
    fn the_check_sees_a_lost_call_a_double_and_an_overlap_and_forgives_a_killed_process() {
        let records = vec![
            line("a-1", 10, "start", "x", None),
            line("a-1", 11, "got", "x", Some(1)),
            line("a-1", 12, "got", "x", Some(2)),
            line("a-1", 20, "stop", "x", None),
            // Overlaps a-1's activation of x.
            line("b-2", 15, "start", "x", None),
            line("b-2", 16, "got", "x", Some(2)),
            line("b-2", 30, "stop", "x", None),
            // Killed at 40: its activation of y ends there, before c-3's.
            line("k-4", 35, "start", "y", None),
            line("c-3", 41, "start", "y", None),
            line("c-3", 42, "got", "y", Some(3)),
        ];
        let kills = HashMap::from([("k-4".to_owned(), 40)]);
        let acked = vec![
            ("x".into(), 1),
            ("x".into(), 2),
            ("y".into(), 3),
            ("y".into(), 4),
        ];
        let report = check(&records, &kills, &acked);
        assert!(!report.holds());
        assert_eq!(report.lost, vec![("y".to_owned(), 4)]);
        assert_eq!(report.twice, vec![(("x".to_owned(), 2), 2)]);
        assert_eq!(report.overlap_count, 1, "{:?}", report.overlaps);
        assert_eq!(report.activations, 4);
        assert_eq!(report.acknowledged, 4);
    }
}
