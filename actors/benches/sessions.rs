//! Sessions at scale, between two OS processes on 127.0.0.1: a `duologue node` child
//! process is node A, this process is node B with its own `Node`.
//!
//! ```text
//! cargo bench --bench sessions
//! CI=1 cargo bench --bench sessions      # smaller sizes: 1 000 sessions, fewer casts
//! ```
//!
//! 1. **Opening**: 10 000 sessions from B to one checker on A, `IN_FLIGHT` handshakes
//!    at a time, all over the one HTTP/2 connection B keeps to A.
//! 2. **Idle memory**: both processes' resident memory before opening and with every
//!    session open and idle; the difference per session.
//! 3. **Concurrency**: the cast rate of one session alone (64-byte payload, counted at
//!    the receiver: a `Report` call after the casts answers once they all arrived)
//!    against the aggregate of 100 sessions casting at once, each to its own checker.
//! 4. **Stall**: the same 100 sessions but the first, alone (`others`), and beside a
//!    session to a checker taking one tick a second (`others_with_one_stalled`), its
//!    credit used up before the clock starts and its sender casting on through the round,
//!    held back at its reader's pace. The two rounds alternate three times, each with a new
//!    stalled session, after one round alone that warms up; the figures are the medians,
//!    and each round's rate is printed too. For reference, the 99 within the 100 of
//!    phase 3: `others_among_100`.
//!
//! Prints one line per figure in the baseline's `label key=value` shape:
//!
//! ```text
//! duologue sessions sessions_opened_per_s=... n=10000 ...
//! duologue sessions idle_memory node_a_rss_mib=... node_b_rss_mib=... per_session_kib_a=... per_session_kib_b=... sessions=10000 ...
//! duologue sessions concurrency single_session_msgs_per_s=... aggregate_100_sessions_msgs_per_s=... ratio=... ...
//! duologue sessions stall others_msgs_per_s=... others_with_one_stalled_msgs_per_s=... ratio=... ...
//! ```
//!
//! Details (timings of each step, memory before and after) go to stderr, with a bar of the
//! phases (at a terminal) and a summary. Every wait is bounded; node A is killed on every
//! exit path (its guard's drop).

use duologue_testkit::IgnoringOwner;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use bytes::Bytes;
use duologue::{Node, RemoteRef, SendError, SessionMsg};
use duologue_actors::seq_check::SeqCheck;
use duologue_actors::seq_check::proto::{Report, ReportRequest, Tick, check_reply};
use duologue_testkit::progress::{self, ProgressBar, Summary};
use duologue_testkit::{Memory, NodeProcess, SecretDir, median};
use futures::StreamExt;
use ractor::{Actor, ActorRef};
use tokio::task::JoinSet;

/// How long node A may take to print its address.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one session's handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on opening all the sessions of a phase.
const OPEN_ALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on one `Report` call (it waits behind every cast before it).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on one round of concurrent casting, all sessions together.
const ROUND_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on the stalled session's pre-filled messages reaching node A's mailbox.
const FILL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on node B's shutdown (its own drain bound is 5 s, plus the server's linger).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Handshakes in flight at once while opening.
const IN_FLIGHT: usize = 256;
/// Sessions casting concurrently in phases 3 and 4.
const CONCURRENT: usize = 100;
/// Size of each tick's filler.
const PAYLOAD: usize = 64;
/// The checker the idle sessions talk to.
const IDLE: &str = "idle";
/// The checker of the single-session rate.
const SINGLE: &str = "single";
/// Rounds of the 99 others alone and beside a stalled session, alternated.
const STALL_PAIRS: usize = 3;
/// The phases the bar counts: sessions opened, idle memory read, one session alone, the
/// 100 opened and warmed, the 100 at once, the 99 alone to warm up, the 99 alone and
/// beside a stalled one in turn.
const PHASES: u64 = 7;

/// How much to do; smaller with `CI` set.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Sessions opened and held idle (phases 1 and 2).
    sessions: usize,
    /// Casts on the lone session (phase 3).
    single_casts: u64,
    /// Casts per session when 100 cast at once (phases 3 and 4).
    per_session_casts: u64,
    /// Casts in the unreported warm-ups: on the lone session, and per concurrent session.
    warmup_casts: u64,
}

impl Sizes {
    /// The sizes for this run.
    fn get() -> Self {
        if std::env::var_os("CI").is_some() {
            Self {
                sessions: 1_000,
                single_casts: 50_000,
                per_session_casts: 1_000,
                warmup_casts: 200,
            }
        } else {
            Self {
                sessions: 10_000,
                single_casts: 500_000,
                per_session_casts: 10_000,
                warmup_casts: 1_000,
            }
        }
    }
}

/// Bytes in mebibytes.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A duration in milliseconds.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `n` messages over `d`, per second.
fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// The name of concurrent checker `i`.
fn checker(i: usize) -> String {
    format!("c{i}")
}

/// The name of the checker taking one tick a second in stall pair `pair`.
fn stalled_checker(pair: usize) -> String {
    format!("stalled{pair}")
}

/// Starts node A hosting `actors` (`KIND:NAME` specs), relaying its stderr.
async fn start_node_a(secret: &Path, actors: &[String]) -> anyhow::Result<NodeProcess> {
    let mut args = vec!["--secret-file".to_owned(), secret.display().to_string()];
    for actor in actors {
        args.push("--actor".into());
        args.push(actor.clone());
    }
    let mut node = NodeProcess::start(
        env!("CARGO_BIN_EXE_duologue").as_ref(),
        "node_a",
        &args,
        READY_TIMEOUT,
    )
    .await
    .context("starting node A")?;
    // Relay node A's stderr, so a full pipe never blocks it.
    if let Some(mut lines) = node.child.stderr.take() {
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                progress::eprintln(format_args!("node A: {line}"));
            }
        });
    }
    Ok(node)
}

/// Starts node B (this process) and its sessions' owner.
async fn start_node_b(secret: &Path) -> anyhow::Result<(Node, ActorRef<SessionMsg>)> {
    let node = Node::builder()
        .name("node_b")
        .secret_file(secret)
        .start()
        .await?;
    let (owner, _) = Actor::spawn(None, IgnoringOwner, ()).await?;
    Ok((node, owner))
}

/// Shuts node B down within a bound, then stops the owner.
async fn stop_node_b(node: &Node, owner: &ActorRef<SessionMsg>) {
    let start = Instant::now();
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, node.shutdown()).await {
        Ok(drained) => progress::eprintln(format_args!(
            "node B shut down in {:.0} ms (drained: {drained})",
            millis(start.elapsed())
        )),
        Err(_) => progress::eprintln(format_args!(
            "node B did not shut down within {SHUTDOWN_TIMEOUT:?}"
        )),
    }
    owner.stop(None);
}

/// Opens a session to `actor` on `addr`, within [`CONNECT_TIMEOUT`].
async fn connect(
    node: &Node,
    addr: &str,
    actor: &str,
    owner: &ActorRef<SessionMsg>,
) -> anyhow::Result<RemoteRef<SeqCheck>> {
    tokio::time::timeout(CONNECT_TIMEOUT, node.connect((addr, actor)).owner(owner))
        .await
        .map_err(|_| anyhow!("no handshake with {actor} within {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("connecting to {actor}"))
}

/// Asks a checker for its counts.
async fn report(check: &RemoteRef<SeqCheck>) -> anyhow::Result<Report> {
    let reply = check
        .call(ReportRequest {}, CALL_TIMEOUT)
        .await
        .context("Report call")?;
    match reply.kind {
        Some(check_reply::Kind::Report(report)) => Ok(report),
        None => bail!("a checker replied without a report"),
    }
}

/// Casts ticks `from..=to` with `filler`, then waits for the checker's report and
/// checks that it holds exactly ticks 1..=to, in order.
async fn cast_ticks(
    check: &RemoteRef<SeqCheck>,
    from: u64,
    to: u64,
    filler: &Bytes,
) -> anyhow::Result<()> {
    for n in from..=to {
        check
            .cast(Tick {
                n,
                filler: filler.clone(),
            })
            .await
            .map_err(|e| anyhow!("cast of tick {n}: {e}"))?;
    }
    let report = report(check).await?;
    ensure!(
        report.received == to && report.last == to && report.duplicates == 0 && report.gaps == 0,
        "checker {} counted {report:?}, expected {to} ticks in order",
        check.session().actor()
    );
    Ok(())
}

/// Phases 1 and 2: opens `sessions` sessions to one checker, then reads both processes'
/// memory with all of them open and idle.
async fn open_and_idle(
    secrets: &SecretDir,
    sizes: Sizes,
    phases: &ProgressBar,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let node_a = start_node_a(secrets.secret(), &[format!("seq-check:{IDLE}")]).await?;
    let pid_a = node_a.child.pid().context("node A has no pid")?;
    let addr = node_a.addr.to_string();
    let (node_b, owner) = start_node_b(secrets.secret()).await?;
    let result = async {
        phases.set_message(format!("opening {} sessions", sizes.sessions));
        // Settle: let both processes finish starting before the baseline.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before_a = Memory::of(Some(pid_a)).context("no /proc for node A")?;
        let before_b = Memory::of(None).context("no /proc for this process")?;

        let n = sizes.sessions;
        let start = Instant::now();
        let mut opened = 0;
        let opening = futures::stream::iter(0..n)
            .map(|_| connect(&node_b, &addr, IDLE, &owner))
            .buffer_unordered(IN_FLIGHT)
            .inspect(|_| {
                opened += 1;
                if opened % 100 == 0 {
                    phases.set_message(format!("opening sessions: {opened} of {n}"));
                }
            })
            .collect::<Vec<_>>();
        let results = tokio::time::timeout(OPEN_ALL_TIMEOUT, opening)
            .await
            .map_err(|_| anyhow!("{n} sessions not open within {OPEN_ALL_TIMEOUT:?}"))?;
        let wall = start.elapsed();
        let mut sessions = Vec::with_capacity(n);
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(session) => sessions.push(session),
                Err(error) => failures.push(error),
            }
        }
        if let Some(first) = failures.first() {
            bail!(
                "{} of {n} sessions failed to open ({} opened in {:.0} ms); first error: {first:#}",
                failures.len(),
                sessions.len(),
                millis(wall)
            );
        }
        progress::println(format_args!(
            "duologue sessions sessions_opened_per_s={:.0} n={n} in_flight={IN_FLIGHT} wall_ms={:.0}",
            rate(n as u64, wall),
            millis(wall)
        ));
        summary.figure(format_args!(
            "{n} sessions opened at {:.0}/s",
            rate(n as u64, wall)
        ));
        phases.inc(1);
        phases.set_message(format!("{n} sessions idle: reading memory"));

        // Every session is live: the first and last answer a call, and none was ticked.
        for check in [sessions.first(), sessions.last()].into_iter().flatten() {
            let counts = report(check).await?;
            ensure!(counts.received == 0, "the idle checker was ticked: {counts:?}");
        }
        let closed = sessions.iter().filter(|s| s.session().is_closed()).count();
        ensure!(closed == 0, "{closed} of {n} sessions closed while idle");

        // Settle: let both sides finish their per-session work before reading memory.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after_a = Memory::of(Some(pid_a)).context("no /proc for node A")?;
        let after_b = Memory::of(None).context("no /proc for this process")?;
        let per_session_kib = |before: Memory, after: Memory| {
            after.now.saturating_sub(before.now) as f64 / 1024.0 / n as f64
        };
        progress::eprintln(format_args!(
            "node A resident: before {:.1} MiB (peak {:.1}), with {n} sessions {:.1} MiB (peak {:.1})",
            mib(before_a.now),
            mib(before_a.peak),
            mib(after_a.now),
            mib(after_a.peak)
        ));
        progress::eprintln(format_args!(
            "node B resident: before {:.1} MiB (peak {:.1}), with {n} sessions {:.1} MiB (peak {:.1})",
            mib(before_b.now),
            mib(before_b.peak),
            mib(after_b.now),
            mib(after_b.peak)
        ));
        progress::println(format_args!(
            "duologue sessions idle_memory node_a_rss_mib={:.1} node_b_rss_mib={:.1} \
             per_session_kib_a={:.2} per_session_kib_b={:.2} node_a_peak_rss_mib={:.1} \
             node_b_peak_rss_mib={:.1} node_a_base_rss_mib={:.1} node_b_base_rss_mib={:.1} \
             sessions={n}",
            mib(after_a.now),
            mib(after_b.now),
            per_session_kib(before_a, after_a),
            per_session_kib(before_b, after_b),
            mib(after_a.peak),
            mib(after_b.peak),
            mib(before_a.now),
            mib(before_b.now)
        ));
        summary.figure(format_args!(
            "with all {n} idle: node A {:.1} MiB, node B {:.1} MiB resident ({:.1} and {:.1} \
             KiB a session)",
            mib(after_a.now),
            mib(after_b.now),
            per_session_kib(before_a, after_a),
            per_session_kib(before_b, after_b)
        ));
        phases.inc(1);
        anyhow::Ok(())
    }
    .await;
    stop_node_b(&node_b, &owner).await;
    result
}

/// How long each session of a round took to have all its ticks counted.
#[derive(Debug)]
struct Round {
    /// Per session, in the order given: from the round's start to its report.
    finished: Vec<Duration>,
}

impl Round {
    /// The time until the last of sessions `range` was done.
    fn until_all(&self, range: std::ops::Range<usize>) -> Duration {
        self.finished[range]
            .iter()
            .copied()
            .max()
            .unwrap_or_default()
    }
}

/// Every session in `sessions` casts its next `casts` ticks at once (its checker has
/// counted `counted[i]` so far, updated here), each then waiting for its report; `phases`
/// tells how many are done with `what`.
async fn round(
    sessions: &[RemoteRef<SeqCheck>],
    counted: &mut [u64],
    casts: u64,
    filler: &Bytes,
    phases: &ProgressBar,
    what: &str,
) -> anyhow::Result<Round> {
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for (i, (check, done)) in sessions.iter().zip(counted.iter()).enumerate() {
        let (check, filler, from) = (check.clone(), filler.clone(), done + 1);
        tasks.spawn(async move {
            cast_ticks(&check, from, from + casts - 1, &filler).await?;
            anyhow::Ok((i, start.elapsed()))
        });
    }
    let mut finished = vec![Duration::ZERO; sessions.len()];
    let joined = tokio::time::timeout(ROUND_TIMEOUT, async {
        let mut done = 0;
        while let Some(joined) = tasks.join_next().await {
            let (i, elapsed) = joined??;
            finished[i] = elapsed;
            done += 1;
            phases.set_message(format!(
                "{what}: {done} of {} sessions done",
                sessions.len()
            ));
        }
        anyhow::Ok(())
    })
    .await;
    joined.map_err(|_| anyhow!("a round of {casts} casts not done within {ROUND_TIMEOUT:?}"))??;
    for done in counted.iter_mut() {
        *done += casts;
    }
    Ok(Round { finished })
}

/// Fills the stalled checker's session until its sender is held back by node A's slow
/// reader: node A grants byte credit up to its byte window of what its actor has not
/// consumed, opening it in growing steps as this side asks, so the first refusal is not
/// the end. Fills, and fills again, until a cast waits `HELD` for credit (the grant
/// answers an ask within a round trip; past the window, only the reader's one tick a
/// second frees any). Returns how many ticks it took.
async fn stall(check: &RemoteRef<SeqCheck>, filler: &Bytes) -> anyhow::Result<u64> {
    /// A cast held back this long waits for the reader, not for the grant to grow.
    const HELD: Duration = Duration::from_millis(500);
    let deadline = Instant::now() + FILL_TIMEOUT;
    let tick = |n| Tick {
        n,
        filler: filler.clone(),
    };
    let mut sent = 0;
    loop {
        loop {
            match check.try_cast(tick(sent + 1)) {
                Ok(()) => sent += 1,
                Err(SendError::HeldBack { .. }) => break,
                Err(error) => bail!("filling the stalled session: {error}"),
            }
            if sent % 1024 == 0 {
                // Let the driver move what is queued.
                tokio::task::yield_now().await;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "the stalled session still took ticks after {sent} and {FILL_TIMEOUT:?}: {:?}",
            check.session().flow()
        );
        // Cancel safe: a cast dropped before it completes was never sent.
        match tokio::time::timeout(HELD, check.cast(tick(sent + 1))).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(error)) => bail!("filling the stalled session: {error}"),
            Err(_) => break,
        }
    }
    while check.session().unacked() > 0 {
        ensure!(
            Instant::now() < deadline,
            "the stalled session's {sent} ticks not delivered within {FILL_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(sent)
}

/// Phases 3 and 4: one session's cast rate, 100 sessions' aggregate, and the 99 others
/// with one of the 100 stalled.
async fn concurrency(
    secrets: &SecretDir,
    sizes: Sizes,
    phases: &ProgressBar,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut actors = vec![format!("seq-check:{SINGLE}")];
    actors.extend((0..STALL_PAIRS).map(|pair| format!("seq-check:{}@1", stalled_checker(pair))));
    actors.extend((0..CONCURRENT).map(|i| format!("seq-check:{}", checker(i))));
    let node_a = start_node_a(secrets.secret(), &actors).await?;
    let addr = node_a.addr.to_string();
    let (node_b, owner) = start_node_b(secrets.secret()).await?;
    let result = async {
        let filler = Bytes::from(vec![0xa5; PAYLOAD]);

        // One session alone.
        phases.set_message(format!("one session casting {}", sizes.single_casts));
        let single = connect(&node_b, &addr, SINGLE, &owner).await?;
        let warm = sizes.warmup_casts * 10;
        cast_ticks(&single, 1, warm, &filler).await?;
        let n = sizes.single_casts;
        let start = Instant::now();
        cast_ticks(&single, warm + 1, warm + n, &filler).await?;
        let single_wall = start.elapsed();
        progress::eprintln(format_args!(
            "single session: {n} casts in {:.0} ms",
            millis(single_wall)
        ));
        phases.inc(1);

        // 100 sessions, each to its own checker, casting at once.
        phases.set_message(format!("opening and warming {CONCURRENT} sessions"));
        let names: Vec<String> = (0..CONCURRENT).map(checker).collect();
        let opening = futures::stream::iter(&names)
            .map(|name| connect(&node_b, &addr, name, &owner))
            .buffered(IN_FLIGHT);
        let sessions: Vec<RemoteRef<SeqCheck>> =
            tokio::time::timeout(OPEN_ALL_TIMEOUT, opening.collect::<Vec<_>>())
                .await
                .map_err(|_| anyhow!("{CONCURRENT} sessions not open in {OPEN_ALL_TIMEOUT:?}"))?
                .into_iter()
                .collect::<anyhow::Result<_>>()?;
        let mut counted = vec![0; CONCURRENT];
        let (warmup, what) = (sizes.warmup_casts, "warming up");
        round(&sessions, &mut counted, warmup, &filler, phases, what).await?;
        phases.inc(1);
        let m = sizes.per_session_casts;
        let what = "all casting at once";
        let all = round(&sessions, &mut counted, m, &filler, phases, what).await?;
        let all_wall = all.until_all(0..CONCURRENT);
        let others_wall = all.until_all(1..CONCURRENT);
        let single_rate = rate(n, single_wall);
        let aggregate_rate = rate(m * CONCURRENT as u64, all_wall);
        progress::eprintln(format_args!(
            "{CONCURRENT} sessions: {m} casts each in {:.0} ms (the first done at {:.0} ms)",
            millis(all_wall),
            millis(all.finished.iter().copied().min().unwrap_or_default())
        ));
        progress::println(format_args!(
            "duologue sessions concurrency single_session_msgs_per_s={single_rate:.0} \
             aggregate_{CONCURRENT}_sessions_msgs_per_s={aggregate_rate:.0} ratio={:.2} \
             single_casts={n} casts_per_session={m} payload_bytes={PAYLOAD}",
            aggregate_rate / single_rate
        ));
        summary.figure(format_args!(
            "one session {single_rate:.0} casts/s; {CONCURRENT} at once {aggregate_rate:.0}/s \
             together ({:.2}x)",
            aggregate_rate / single_rate
        ));
        phases.inc(1);

        // The other 99 alone, then beside a stalled session, alternated STALL_PAIRS times
        // so that the machine's drift falls on both; each stalled session is a new one to a
        // checker of its own, aborted after its round. The first round alone warms up.
        let what = "the 99 others alone";
        round(&sessions[1..], &mut counted[1..], m, &filler, phases, what).await?;
        phases.inc(1);
        let (mut alone_walls, mut stalled_walls) = (Vec::new(), Vec::new());
        let (mut stalled_sent, mut trickled) = (Vec::new(), 0);
        for pair in 0..STALL_PAIRS {
            let what = "the 99 others alone";
            let alone = round(&sessions[1..], &mut counted[1..], m, &filler, phases, what).await?;
            alone_walls.push(alone.until_all(0..CONCURRENT - 1));

            phases.set_message("stalling one session");
            let stalled = connect(&node_b, &addr, &stalled_checker(pair), &owner).await?;
            let sent = stall(&stalled, &filler).await?;
            progress::eprintln(format_args!(
                "stalled session {pair}: out of credit after {sent} ticks"
            ));
            stalled_sent.push(sent.to_string());
            // Its sender goes on casting through the round, held back at its reader's pace.
            let pushed = Arc::new(AtomicU64::new(0));
            let pushing = {
                let (check, tick_filler, pushed) =
                    (stalled.clone(), filler.clone(), pushed.clone());
                tokio::spawn(async move {
                    for n in sent + 1.. {
                        let tick = Tick {
                            n,
                            filler: tick_filler.clone(),
                        };
                        if check.cast(tick).await.is_err() {
                            break;
                        }
                        pushed.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            let what = "the 99 others beside a stalled one";
            let with_stalled =
                round(&sessions[1..], &mut counted[1..], m, &filler, phases, what).await?;
            stalled_walls.push(with_stalled.until_all(0..CONCURRENT - 1));
            trickled += pushed.load(Ordering::Relaxed);
            pushing.abort();
            stalled.session().abort();
        }
        phases.inc(1);
        let others = CONCURRENT as u64 - 1;
        let rates = |walls: &[Duration]| -> Vec<f64> {
            walls.iter().map(|wall| rate(m * others, *wall)).collect()
        };
        let (alone_rates, stalled_rates) = (rates(&alone_walls), rates(&stalled_walls));
        let (others_rate, stalled_rate) = (median(&alone_rates), median(&stalled_rates));
        let each = |rates: &[f64]| {
            let each: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
            each.join(",")
        };
        progress::println(format_args!(
            "duologue sessions stall others_msgs_per_s={others_rate:.0} \
             others_with_one_stalled_msgs_per_s={stalled_rate:.0} ratio={:.2} \
             others_among_{CONCURRENT}_msgs_per_s={:.0} others={others} casts_per_session={m} \
             pairs={STALL_PAIRS} alone_each={} stalled_each={} stalled_sent={} \
             stalled_sent_during_rounds={trickled}",
            stalled_rate / others_rate,
            rate(m * others, others_wall),
            each(&alone_rates),
            each(&stalled_rates),
            stalled_sent.join(","),
        ));
        summary.figure(format_args!(
            "the 99 others {others_rate:.0} casts/s alone, {stalled_rate:.0}/s beside a stalled \
             session ({:.2}x, medians of {STALL_PAIRS} alternated pairs)",
            stalled_rate / others_rate
        ));
        phases.inc(1);
        anyhow::Ok(())
    }
    .await;
    stop_node_b(&node_b, &owner).await;
    result
}

/// Runs the four measurements, each pair against a fresh node A.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As every duologue binary does first: without a subscriber h2's spans also go through
    // `log` (benches/README.md, instructions.sh).
    duologue::cli::log_to_stderr(duologue::cli::LogFormat::Text);
    let sizes = Sizes::get();
    eprintln!("sizes: {sizes:?}");
    let secrets = SecretDir::create()?;
    let phases = progress::bar("sessions", PHASES);
    let mut summary = Summary::new("sessions");
    open_and_idle(&secrets, sizes, &phases, &mut summary).await?;
    concurrency(&secrets, sizes, &phases, &mut summary).await?;
    phases.finish_and_clear();
    progress::eprintln(summary.ok());
    Ok(())
}
