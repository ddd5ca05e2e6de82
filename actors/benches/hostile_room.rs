//! Issue 13's attacks on a chat room, against a real `duologue node` process: what a
//! hostile crowd costs the room's node in memory, whether the node gives it back, what
//! state it keeps, and whether a legitimate member alongside keeps talking.
//!
//! ```text
//! cargo bench --bench hostile_room                          # both attacks, default sizes
//! cargo bench --bench hostile_room -- --attack presence --members 600
//! cargo bench --bench hostile_room -- --attack killed --members 740 --procs 20 --seconds 60 --after 45
//! cargo bench --bench hostile_room -- --attack killed --room before=/tmp/duologue-before --room now
//! ```
//!
//! - `presence`: `--members` members join from `--procs` member processes (this
//!   executable, run as `hostile_room member ...`, each member on its own node, its own
//!   connection), one process after another; each process is stopped (SIGSTOP) once its
//!   members joined, so they never read again. Then the bench waits `--after` seconds.
//! - `killed`: `--members` members in `--procs` member processes join, each says `--texts`
//!   texts of `--text-bytes` bytes a second apart while reading, and the processes are
//!   killed with SIGKILL one after another over `--seconds`. Then the bench waits
//!   `--after` seconds (past the 30 s resume deadline) and looks again.
//!
//! In both, a legitimate member (`alice`, on its own node in this process) joins before
//! the attack and says a line every half second throughout, reading everything; after the
//! attack another (`bob`) joins late. Their outcomes are reported.
//!
//! The room node's resident memory (`VmRSS`, and `VmHWM` for the peak) is sampled every
//! 100 ms. Its state is read twice: the node's bookkeeping (`duologue node` prints it on
//! SIGUSR1: sessions a peer may resume, connections, session owners) and the room's
//! member count (the late joiner's `Welcome`).
//!
//! `--room LABEL[=PATH][,KEY=VALUE...]` (repeatable) runs each attack against each room
//! binary in turn, in one run, with the given environment (say
//! `--room arena2=target/release/duologue,MALLOC_ARENA_MAX=2`); without it, the
//! `duologue` binary this bench was built with.
//!
//! Prints one line per attack and room in the baseline's `label key=value` shape:
//! `duologue hostile_room attack=... room=... members=... joined=... rejected=...
//! room_peak_rss_mib=... room_rss_after_mib=... resumable_after=... members_after=...
//! alice=... bob=...`; the RSS timeline and the room's own lines go to stderr, with a bar
//! of each attack's member processes and seconds (at a terminal) and a summary. Every
//! wait is bounded; every child is killed on every exit path (its guard's drop).

use duologue_testkit::args::option;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use duologue::{Node, SendError};
use duologue_actors::chat::proto::Text;
use duologue_actors::chat::{ChatEvent, JoinError, Joined, join};
use duologue_testkit::progress::{self, ProgressBar, Summary};
use duologue_testkit::{ChildGuard, Memory, SecretDir, Signal};
use tokio::sync::{mpsc, watch};

/// The room every attack is on.
const ROOM: &str = "general";
/// Bound on one join (the call and the session's opening).
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the room node printing its address, or its bookkeeping.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a member process joining all its members.
const PROCESS_JOIN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a legitimate member waits for the acks of what it said.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the room's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A member process stops by itself after this long, should nobody kill it.
const MEMBER_LIFETIME: Duration = Duration::from_secs(900);

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The string after `flag` in `args`, if any.
fn text_option<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).map(String::as_str)
}

/// A room binary to attack: a label, the program, its environment.
#[derive(Clone, Debug)]
struct RoomSpec {
    label: String,
    exe: PathBuf,
    env: Vec<(String, String)>,
}

impl RoomSpec {
    /// `LABEL[=PATH][,KEY=VALUE...]`.
    fn parse(spec: &str, default_exe: &Path) -> anyhow::Result<Self> {
        let mut parts = spec.split(',');
        let head = parts.next().context("an empty --room")?;
        let (label, exe) = match head.split_once('=') {
            Some((label, path)) => (label.to_owned(), PathBuf::from(path)),
            None => (head.to_owned(), default_exe.to_owned()),
        };
        let env = parts
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .with_context(|| format!("--room {spec}: {pair} is not KEY=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { label, exe, env })
    }
}

/// The room's node process, its lines counted.
struct RoomNode {
    child: ChildGuard,
    addr: String,
    pid: u32,
    /// Lines it wrote on stderr (but its bookkeeping), and how many were warnings.
    lines: Arc<AtomicU64>,
    warnings: Arc<AtomicU64>,
    /// Its `bookkeeping` lines, answering SIGUSR1.
    bookkeeping: mpsc::UnboundedReceiver<String>,
}

impl RoomNode {
    async fn start(spec: &RoomSpec, secrets: &SecretDir) -> anyhow::Result<Self> {
        let mut args: Vec<String> = Vec::new();
        let program: PathBuf = if spec.env.is_empty() {
            spec.exe.clone()
        } else {
            // `env` execs the node: the pid is the node's.
            args.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
            args.push(spec.exe.display().to_string());
            PathBuf::from("/usr/bin/env")
        };
        args.extend(
            [
                "node",
                "--name",
                "room",
                "--listen",
                "127.0.0.1:0",
                "--secret-file",
                &secrets.secret().display().to_string(),
                "--actor",
                &format!("chat-room:{ROOM}"),
            ]
            .map(str::to_owned),
        );
        let mut child = ChildGuard::spawn("room", &program, &args)?;
        let pid = child.pid().context("the room's pid")?;
        let line = child
            .stdout_line(READY_TIMEOUT)
            .await?
            .context("the room exited before listening")?;
        let addr = line
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow!("the room said {line:?}"))?
            .trim()
            .to_owned();
        let lines = Arc::new(AtomicU64::new(0));
        let warnings = Arc::new(AtomicU64::new(0));
        let (tx, bookkeeping) = mpsc::unbounded_channel();
        let mut stderr = child.stderr.take().context("the room's stderr")?;
        tokio::spawn({
            let (lines, warnings) = (lines.clone(), warnings.clone());
            async move {
                while let Ok(Some(line)) = stderr.next_line().await {
                    // The answers to SIGUSR1 are ours, not the room's.
                    if line.contains("bookkeeping") {
                        let _ = tx.send(line);
                        continue;
                    }
                    let n = lines.fetch_add(1, Ordering::Relaxed);
                    if line.contains("WARN") {
                        warnings.fetch_add(1, Ordering::Relaxed);
                    }
                    if n < 20 {
                        progress::eprintln(format_args!("room: {line}"));
                    }
                }
            }
        });
        Ok(Self {
            child,
            addr,
            pid,
            lines,
            warnings,
            bookkeeping,
        })
    }

    /// The room node's bookkeeping now (SIGUSR1), as `key=value` pairs.
    async fn bookkeeping(&mut self) -> anyhow::Result<BTreeMap<String, u64>> {
        self.child.signal(Signal::SIGUSR1)?;
        let line = tokio::time::timeout(READY_TIMEOUT, self.bookkeeping.recv())
            .await
            .context("no bookkeeping line in time")?
            .context("the room's stderr ended")?;
        Ok(line
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect())
    }
}

/// The room's resident memory, sampled every [`SAMPLE_EVERY`] by a task.
struct Sampler {
    pid: u32,
    peak_seen: Arc<AtomicU64>,
    timeline: Arc<Mutex<Vec<(f64, u64)>>>,
    stop: watch::Sender<bool>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let peak_seen = Arc::new(AtomicU64::new(0));
        let timeline = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn({
            let (peak_seen, timeline) = (peak_seen.clone(), timeline.clone());
            async move {
                let started = Instant::now();
                let mut ticks = tokio::time::interval(SAMPLE_EVERY);
                let mut next_mark = Duration::ZERO;
                loop {
                    tokio::select! {
                        _ = ticks.tick() => {}
                        _ = stopped.changed() => return,
                    }
                    let Some(memory) = Memory::of(Some(pid)) else {
                        return;
                    };
                    peak_seen.fetch_max(memory.now, Ordering::Relaxed);
                    if started.elapsed() >= next_mark {
                        next_mark += Duration::from_secs(5);
                        timeline
                            .lock()
                            .unwrap()
                            .push((started.elapsed().as_secs_f64(), memory.now));
                    }
                }
            }
        });
        Self {
            pid,
            peak_seen,
            timeline,
            stop,
        }
    }

    fn now(&self) -> u64 {
        Memory::of(Some(self.pid)).map_or(0, |m| m.now)
    }

    /// The peak: the kernel's high-water mark (`VmHWM`, which the kernel updates lazily),
    /// or the highest `VmRSS` sampled if that is higher.
    fn peak(&self) -> u64 {
        let seen = self.peak_seen.load(Ordering::Relaxed);
        Memory::of(Some(self.pid)).map_or(seen, |m| m.peak.max(seen))
    }

    fn timeline(&self) -> String {
        self.timeline
            .lock()
            .unwrap()
            .iter()
            .map(|(t, rss)| format!("{t:.0}s:{:.0}", mib(*rss)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A dial-only node for one member.
async fn member_node(name: &str, secret: &Path) -> anyhow::Result<Node> {
    Ok(Node::builder()
        .name(name)
        .secret_file(secret)
        .start()
        .await?)
}

/// What a legitimate member saw.
#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    acked: u64,
    relays: u64,
    max_ack: Duration,
    trouble: Option<String>,
}

/// A legitimate member that says a line every half second and reads everything, until
/// told to stop; then it waits for its last acks.
struct Legit {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Outcome>,
    _node: Node,
}

impl Legit {
    async fn join(name: &str, addr: &str, secret: &Path) -> anyhow::Result<Self> {
        let node = member_node(name, secret).await?;
        let member = join(&node, addr, ROOM, name, JOIN_TIMEOUT).await?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(talk_and_read(member, stopped));
        Ok(Self {
            stop,
            task,
            _node: node,
        })
    }

    async fn finish(self) -> anyhow::Result<Outcome> {
        let _ = self.stop.send(true);
        Ok(self.task.await?)
    }
}

async fn talk_and_read(mut member: Joined, mut stopped: watch::Receiver<bool>) -> Outcome {
    let mut outcome = Outcome::default();
    let mut sent_at = std::collections::VecDeque::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    let mut stopping: Option<tokio::time::Instant> = None;
    loop {
        if stopping.is_some() && sent_at.is_empty() {
            return outcome;
        }
        let deadline = stopping.unwrap_or_else(|| tokio::time::Instant::now() + MEMBER_LIFETIME);
        tokio::select! {
            _ = ticks.tick(), if stopping.is_none() => {
                outcome.sent += 1;
                let text = Text { client_seq: outcome.sent, text: format!("alice says {}", outcome.sent) };
                match member.room.cast(text).await {
                    Ok(()) => sent_at.push_back((outcome.sent, Instant::now())),
                    Err(error) => {
                        outcome.trouble = Some(format!("cast failed: {error}"));
                        return outcome;
                    }
                }
            }
            _ = stopped.changed(), if stopping.is_none() => {
                stopping = Some(tokio::time::Instant::now() + ACK_TIMEOUT);
            }
            () = tokio::time::sleep_until(deadline) => {
                outcome.trouble = Some(format!("{} texts unacknowledged after {ACK_TIMEOUT:?}", sent_at.len()));
                return outcome;
            }
            event = member.events.recv() => match event {
                Some(ChatEvent::Acked(ack)) => {
                    while let Some((seq, at)) = sent_at.front().copied() && seq <= ack.client_seq {
                        sent_at.pop_front();
                        outcome.max_ack = outcome.max_ack.max(at.elapsed());
                    }
                    outcome.acked += 1;
                }
                Some(ChatEvent::Relay(_)) => outcome.relays += 1,
                Some(ChatEvent::Presence(_) | ChatEvent::HeldBack(_) | ChatEvent::Interrupted(_) | ChatEvent::Resumed(_)) => {}
                Some(other) => {
                    outcome.trouble = Some(format!("{other:?}"));
                    return outcome;
                }
                None => {
                    outcome.trouble = Some("the session ended".into());
                    return outcome;
                }
            },
        }
    }
}

impl Outcome {
    fn summary(&self) -> String {
        match &self.trouble {
            None => format!(
                "ok(sent={},acked={},relays={},max_ack_ms={})",
                self.sent,
                self.acked,
                self.relays,
                self.max_ack.as_millis()
            ),
            Some(trouble) => format!(
                "FAILED(sent={},acked={}:{})",
                self.sent,
                self.acked,
                trouble.replace(' ', "_")
            ),
        }
    }
}

/// A late joiner: the room's member count, or why it could not join.
async fn late_join(addr: &str, secret: &Path) -> (String, Option<usize>) {
    let node = match member_node("bob", secret).await {
        Ok(node) => node,
        Err(error) => return (format!("FAILED({error})"), None),
    };
    let result = match join(&node, addr, ROOM, "bob", JOIN_TIMEOUT).await {
        Ok(joined) => {
            let count = joined.welcome.members.len();
            let text = Text {
                client_seq: 1,
                text: "bob is here".into(),
            };
            let outcome = match joined.room.cast(text).await {
                Ok(()) => acked(joined).await,
                Err(error) => format!("FAILED(cast:{error})"),
            };
            (outcome, Some(count))
        }
        Err(JoinError::Rejected(reason)) => {
            (format!("rejected({})", reason.replace(' ', "_")), None)
        }
        Err(error) => (
            format!("FAILED({})", error.to_string().replace(' ', "_")),
            None,
        ),
    };
    let _ = tokio::time::timeout(READY_TIMEOUT, node.shutdown()).await;
    result
}

/// Waits for the ack of text 1.
async fn acked(mut member: Joined) -> String {
    let started = Instant::now();
    let waited = tokio::time::timeout(ACK_TIMEOUT, async {
        loop {
            match member.events.recv().await {
                Some(ChatEvent::Acked(_)) => return Ok(()),
                Some(ChatEvent::Relay(_) | ChatEvent::Presence(_) | ChatEvent::HeldBack(_)) => {}
                other => return Err(format!("{other:?}")),
            }
        }
    })
    .await;
    match waited {
        Ok(Ok(())) => format!("ok(ack_ms={})", started.elapsed().as_millis()),
        Ok(Err(other)) => format!("FAILED({})", other.replace(' ', "_")),
        Err(_) => "FAILED(no_ack)".into(),
    }
}

/// The settings of a run.
#[derive(Clone, Debug)]
struct Options {
    members: u64,
    procs: u64,
    texts: u64,
    text_bytes: u64,
    seconds: u64,
    after: u64,
}

/// One attack's figures.
#[derive(Debug, Default)]
struct Figures {
    joined: u64,
    rejected: u64,
    failed: u64,
    attack_s: f64,
    rss_before: u64,
    rss_at_end_of_attack: u64,
    rss_after: u64,
    peak: u64,
    bookkeeping_during: BTreeMap<String, u64>,
    bookkeeping_after: BTreeMap<String, u64>,
    members_after: Option<usize>,
    alice: String,
    bob: String,
    lines: u64,
    warnings: u64,
    timeline: String,
}

impl Figures {
    fn print(&self, attack: &str, room: &str, options: &Options) {
        let count = |map: &BTreeMap<String, u64>, key: &str| {
            map.get(key).map_or("?".to_owned(), u64::to_string)
        };
        println!(
            "duologue hostile_room attack={attack} room={room} members={} joined={} rejected={} \
             failed={} attack_s={:.1} room_rss_before_mib={:.1} room_rss_end_of_attack_mib={:.1} \
             room_peak_rss_mib={:.1} room_rss_after_mib={:.1} resumable_during={} \
             resumable_after={} links_after={} owners_after={} members_after={} \
             room_log_lines={} room_warnings={} alice={} bob={}",
            options.members,
            self.joined,
            self.rejected,
            self.failed,
            self.attack_s,
            mib(self.rss_before),
            mib(self.rss_at_end_of_attack),
            mib(self.peak),
            mib(self.rss_after),
            count(&self.bookkeeping_during, "resumable"),
            count(&self.bookkeeping_after, "resumable"),
            count(&self.bookkeeping_after, "links"),
            count(&self.bookkeeping_after, "owners"),
            self.members_after.map_or("?".to_owned(), |n| n.to_string()),
            self.lines,
            self.warnings,
            self.alice,
            self.bob,
        );
        progress::eprintln(format_args!("  room RSS MiB every 5 s: {}", self.timeline));
    }

    /// The attack's key figures, for the summary; whether both legitimate members fared
    /// well.
    fn figure(&self, attack: &str, room: &str) -> (String, bool) {
        let figure = format!(
            "{attack} on {room}: {} joined; room peak {:.1} MiB, {:.1} MiB after (from {:.1}); \
             alice {}, bob {}",
            self.joined,
            mib(self.peak),
            mib(self.rss_after),
            mib(self.rss_before),
            self.alice,
            self.bob
        );
        let fared_well = self.alice.starts_with("ok") && self.bob.starts_with("ok");
        (figure, fared_well)
    }
}

/// What every attack measures once it is over: `after` seconds later, the room's memory
/// and bookkeeping, how the legitimate member fared, whether a newcomer can join, and
/// the peak and timeline of the whole run.
async fn after_the_attack(
    figures: &mut Figures,
    sampler: &Sampler,
    room: &mut RoomNode,
    alice: Legit,
    secret: &Path,
    after: u64,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    bar.set_length(after);
    bar.set_position(0);
    bar.set_message("seconds after the attack");
    let over = tokio::time::Instant::now();
    for second in 1..=after {
        tokio::time::sleep_until(over + Duration::from_secs(second)).await;
        bar.set_position(second);
    }
    bar.set_message("alice's last acks; a late joiner");
    figures.rss_after = sampler.now();
    figures.bookkeeping_after = room.bookkeeping().await?;
    figures.alice = alice.finish().await?.summary();
    let (bob, members) = late_join(&room.addr, secret).await;
    figures.bob = bob;
    figures.members_after = members;
    figures.peak = sampler.peak();
    figures.timeline = sampler.timeline();
    Ok(())
}

/// Attack A: members join, a member process after another, and never read again: each
/// process is stopped (SIGSTOP) once its members joined, so the room's sends to them pile
/// up wherever the room keeps them.
async fn presence(
    room: &mut RoomNode,
    secret: &Path,
    options: &Options,
    bar: &ProgressBar,
) -> anyhow::Result<Figures> {
    let sampler = Sampler::start(room.pid);
    let mut figures = Figures {
        rss_before: sampler.now(),
        ..Figures::default()
    };
    let alice = Legit::join("alice", &room.addr, secret).await?;
    let started = Instant::now();
    let procs = options.procs.max(1);
    let silent = Options {
        texts: 0,
        ..options.clone()
    };
    let mut stopped = Vec::new();
    bar.set_length(procs);
    bar.set_message("member processes joined, then stopped");
    for index in 0..procs {
        let count = options.members / procs + u64::from(index < options.members % procs);
        let child = start_member_process(index, count, &room.addr, secret, &silent).await?;
        let process = joined_line(child).await?;
        process.child.signal(Signal::SIGSTOP)?;
        figures.joined += process.joined;
        figures.rejected += process.rejected;
        figures.failed += process.failed;
        stopped.push(process);
        progress::eprintln(format_args!(
            "  {} joined, {} rejected after {:.1?}: room RSS {:.0} MiB",
            figures.joined,
            figures.rejected,
            started.elapsed(),
            mib(sampler.now())
        ));
        bar.inc(1);
    }
    figures.attack_s = started.elapsed().as_secs_f64();
    figures.rss_at_end_of_attack = sampler.now();
    figures.bookkeeping_during = room.bookkeeping().await?;
    progress::eprintln(format_args!(
        "  all joined after {:.1?}: room RSS {:.0} MiB; waiting {} s",
        started.elapsed(),
        mib(figures.rss_at_end_of_attack),
        options.after
    ));
    let after = options.after;
    after_the_attack(&mut figures, &sampler, room, alice, secret, after, bar).await?;
    // Their guards kill the stopped processes.
    drop(stopped);
    Ok(figures)
}

/// A member process: `--count` members, each on its own node.
struct MemberProcess {
    child: ChildGuard,
    joined: u64,
    rejected: u64,
    failed: u64,
}

async fn start_member_process(
    index: u64,
    count: u64,
    addr: &str,
    secret: &Path,
    options: &Options,
) -> anyhow::Result<ChildGuard> {
    let args = [
        "member".to_owned(),
        "--addr".to_owned(),
        addr.to_owned(),
        "--secret".to_owned(),
        secret.display().to_string(),
        "--prefix".to_owned(),
        format!("p{index}"),
        "--count".to_owned(),
        count.to_string(),
        "--texts".to_owned(),
        options.texts.to_string(),
        "--text-bytes".to_owned(),
        options.text_bytes.to_string(),
    ];
    let mut child = ChildGuard::spawn(
        &format!("members {index}"),
        &std::env::current_exe()?,
        &args,
    )?;
    if let Some(mut lines) = child.stderr.take() {
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                progress::eprintln(format_args!("members {index}: {line}"));
            }
        });
    }
    Ok(child)
}

/// Waits for a member process's `joined J rejected R failed F` line.
async fn joined_line(mut child: ChildGuard) -> anyhow::Result<MemberProcess> {
    let line = child
        .stdout_line(PROCESS_JOIN_TIMEOUT)
        .await?
        .with_context(|| format!("{} ended before joining", child.name()))?;
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    let [joined, rejected, failed] = numbers[..] else {
        bail!("{} said {line:?}", child.name());
    };
    Ok(MemberProcess {
        child,
        joined,
        rejected,
        failed,
    })
}

/// Attack C: members join, talk, and their processes are killed with SIGKILL.
async fn killed(
    room: &mut RoomNode,
    secret: &Path,
    options: &Options,
    bar: &ProgressBar,
) -> anyhow::Result<Figures> {
    let sampler = Sampler::start(room.pid);
    let mut figures = Figures {
        rss_before: sampler.now(),
        ..Figures::default()
    };
    let alice = Legit::join("alice", &room.addr, secret).await?;
    let started = Instant::now();
    let procs = options.procs.max(1);
    let mut children = Vec::new();
    for index in 0..procs {
        let count = options.members / procs + u64::from(index < options.members % procs);
        children.push(start_member_process(index, count, &room.addr, secret, options).await?);
    }
    let mut processes = Vec::new();
    bar.set_length(procs);
    bar.set_message("member processes joined");
    for child in children {
        let process = joined_line(child).await?;
        figures.joined += process.joined;
        figures.rejected += process.rejected;
        figures.failed += process.failed;
        processes.push(process);
        bar.inc(1);
    }
    progress::eprintln(format_args!(
        "  {} members joined in {:.1?} ({} rejected, {} failed): room RSS {:.0} MiB",
        figures.joined,
        started.elapsed(),
        figures.rejected,
        figures.failed,
        mib(sampler.now())
    ));
    figures.bookkeeping_during = room.bookkeeping().await?;
    // Kill one process after another over `seconds`.
    let kills_started = tokio::time::Instant::now();
    let step = Duration::from_secs(options.seconds) / u32::try_from(procs).unwrap_or(u32::MAX);
    bar.set_position(0);
    bar.set_message("member processes killed (SIGKILL)");
    for (i, mut process) in processes.into_iter().enumerate() {
        tokio::time::sleep_until(kills_started + step * u32::try_from(i + 1).unwrap_or(0)).await;
        process.child.signal(Signal::SIGKILL)?;
        process.child.wait(READY_TIMEOUT).await?;
        bar.inc(1);
    }
    figures.attack_s = started.elapsed().as_secs_f64();
    figures.rss_at_end_of_attack = sampler.now();
    progress::eprintln(format_args!(
        "  last member process killed after {:.1?}: room RSS {:.0} MiB; waiting {} s",
        started.elapsed(),
        mib(figures.rss_at_end_of_attack),
        options.after
    ));
    let after = options.after;
    after_the_attack(&mut figures, &sampler, room, alice, secret, after, bar).await?;
    Ok(figures)
}

/// `hostile_room member ...`: joins `--count` members, each on its own node, prints
/// `joined J rejected R failed F`, then each says `--texts` texts a second apart while
/// reading, until the process is killed (or its stdin closes, or [`MEMBER_LIFETIME`]).
async fn member_process(args: &[String]) -> anyhow::Result<()> {
    let addr = text_option(args, "--addr").context("--addr")?.to_owned();
    let secret = PathBuf::from(text_option(args, "--secret").context("--secret")?);
    let prefix = text_option(args, "--prefix")
        .context("--prefix")?
        .to_owned();
    let count = option(args, "--count", 1)?;
    let texts = option(args, "--texts", 5)?;
    let text_bytes = usize::try_from(option(args, "--text-bytes", 100)?)?;
    let (mut joined, mut rejected, mut failed) = (0, 0, 0);
    let mut members = Vec::new();
    let mut reasons = BTreeMap::<String, u64>::new();
    for n in 0..count {
        let name = format!("{prefix}-{n}");
        let node = member_node(&name, &secret).await?;
        match join(&node, &addr, ROOM, &name, JOIN_TIMEOUT).await {
            Ok(member) => {
                joined += 1;
                members.push((node, member));
            }
            Err(JoinError::Rejected(reason)) => {
                rejected += 1;
                *reasons.entry(reason).or_default() += 1;
            }
            Err(error) => {
                failed += 1;
                *reasons.entry(error.to_string()).or_default() += 1;
            }
        }
    }
    // On stderr, which the bench relays: the refusals' reasons.
    for (reason, n) in reasons {
        eprintln!("{n} joins refused or failed: {reason}");
    }
    println!("joined {joined} rejected {rejected} failed {failed}");
    let mut talking = tokio::task::JoinSet::new();
    for (n, (node, mut member)) in members.into_iter().enumerate() {
        let filler = "x".repeat(text_bytes);
        talking.spawn(async move {
            let _node = node;
            // Spread the members' texts over the second.
            tokio::time::sleep(Duration::from_millis((n as u64 * 37) % 1000)).await;
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            let mut said = 0;
            loop {
                tokio::select! {
                    _ = ticks.tick(), if said < texts => {
                        said += 1;
                        let text = Text { client_seq: said, text: format!("{said} {filler}") };
                        if let Err(SendError::Closed { .. }) = member.room.try_cast(text) {
                            return;
                        }
                    }
                    event = member.events.recv() => if event.is_none() { return },
                }
            }
        });
    }
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        MEMBER_LIFETIME,
        tokio::io::AsyncReadExt::read_to_end(&mut stdin, &mut sink),
    )
    .await;
    talking.abort_all();
    Ok(())
}

async fn run(args: &[String]) -> anyhow::Result<()> {
    let attack = text_option(args, "--attack").unwrap_or("all").to_owned();
    let attacks: Vec<&str> = match attack.as_str() {
        "all" => vec!["presence", "killed"],
        "presence" | "killed" => vec![attack.as_str()],
        other => bail!("unknown --attack {other}: presence, killed or all"),
    };
    let default_exe: &Path = env!("CARGO_BIN_EXE_duologue").as_ref();
    let mut rooms: Vec<RoomSpec> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "--room")
        .map(|(i, _)| {
            let spec = args
                .get(i + 1)
                .context("--room needs LABEL[=PATH][,K=V...]")?;
            RoomSpec::parse(spec, default_exe)
        })
        .collect::<anyhow::Result<_>>()?;
    if rooms.is_empty() {
        rooms.push(RoomSpec {
            label: "current".into(),
            exe: default_exe.to_owned(),
            env: Vec::new(),
        });
    }
    let mut summary = Summary::new("hostile_room");
    let mut failed = Vec::new();
    for attack in attacks {
        let options = Options {
            members: option(
                args,
                "--members",
                if attack == "presence" { 600 } else { 740 },
            )?,
            procs: option(args, "--procs", 20)?,
            texts: option(args, "--texts", 5)?,
            text_bytes: option(args, "--text-bytes", 100)?,
            seconds: option(args, "--seconds", 60)?,
            after: option(args, "--after", 45)?,
        };
        for spec in &rooms {
            progress::eprintln(format_args!(
                "attack {attack} on room {} ({options:?})",
                spec.label
            ));
            let secrets = SecretDir::create()?;
            let mut room = RoomNode::start(spec, &secrets).await?;
            let bar = progress::bar(format!("{attack} on {}", spec.label), options.procs);
            let mut figures = match attack {
                "presence" => presence(&mut room, secrets.secret(), &options, &bar).await?,
                _ => killed(&mut room, secrets.secret(), &options, &bar).await?,
            };
            bar.finish_and_clear();
            figures.lines = room.lines.load(Ordering::Relaxed);
            figures.warnings = room.warnings.load(Ordering::Relaxed);
            figures.print(attack, &spec.label, &options);
            let (figure, fared_well) = figures.figure(attack, &spec.label);
            summary.figure(figure);
            if !fared_well {
                failed.push(format!("{attack} on {}", spec.label));
            }
            room.child.signal(Signal::SIGTERM)?;
            if let Err(error) = room.child.wait(Duration::from_secs(20)).await {
                progress::eprintln(format_args!("{error}; killing the room"));
            }
        }
    }
    // Told, not enforced: the exit status stays that of a run that measured.
    progress::eprintln(if failed.is_empty() {
        summary.ok()
    } else {
        summary.failed(format_args!(
            "a legitimate member did not fare well in {}",
            failed.join(", ")
        ))
    });
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // cargo adds `--bench`; it means nothing here.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match args.first().map(String::as_str) {
            Some("member") => member_process(&args[1..]).await,
            _ => run(&args).await,
        }
    });
    runtime.shutdown_background();
    result
}
