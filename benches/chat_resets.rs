//! The chat transfer of issue 11 at full size, as a new user would run it: a room in a
//! `duologue node` process, a reader `duologue chat` connected directly, and a writer
//! `duologue chat` sending every stdin line through a [`FaultProxy`] that resets (RST)
//! every connection at random moments 100-300 ms apart.
//!
//! ```text
//! cargo bench --bench chat_resets                  # 1 000 000 lines at 20 000/s: ~250 resets
//! cargo bench --bench chat_resets -- --lines 200000 --rate 0 --min-ms 100 --max-ms 300
//! ```
//!
//! `--rate` paces the writer's stdin (lines per second; 0: as fast as it reads), so the
//! transfer lasts long enough for hundreds of resets: unpaced, a release build moves a
//! million lines in about 3 s, through about a dozen.
//!
//! ```text
//! ```
//!
//! Prints one line in the baseline's `label key=value` shape:
//! `duologue chat_resets lines=... resets=... elapsed_s=... received=... lost=...
//! duplicated=... reordered=... writer_exit=... interrupted=... resumed=...`
//! and exits non-zero when anything was lost, doubled or reordered, or the writer did
//! not finish. On stderr: a bar of the lines received (at a terminal; elsewhere a line
//! every 5 s) and a summary.

#[path = "args.rs"]
mod args;
use args::option;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use duologue_actors::progress::{self, Summary};
use duologue_testkit::{ChildGuard, FaultProxy, NodeProcess, SecretDir};
use rand::Rng;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::oneshot;

/// How the reader's stdout went: every line `writer: N` checked against the one before.
#[derive(Debug, Default)]
struct Received {
    lines: u64,
    last: u64,
    duplicated: u64,
    reordered: u64,
}

/// A `duologue chat` member in a child process; `joined` once it said so.
async fn member(
    exe: &std::path::Path,
    secrets: &SecretDir,
    peer: String,
    user: &str,
) -> anyhow::Result<ChildGuard> {
    let args = [
        "chat",
        "--peer",
        &peer,
        "--room",
        "general",
        "--user",
        user,
        "--timeout",
        "300s",
        "--secret-file",
        &secrets.secret().display().to_string(),
    ]
    .map(str::to_owned);
    let mut child = ChildGuard::spawn(user, exe, &args)?;
    child
        .stderr_until("joined", Duration::from_secs(30))
        .await?;
    Ok(child)
}

/// Counts the `session interrupted` / `session resumed` lines a member prints on stderr
/// (and keeps its stderr pipe drained, so it never blocks on it).
fn watch_stderr(child: &mut ChildGuard, interrupted: Arc<AtomicU64>, resumed: Arc<AtomicU64>) {
    let Some(mut lines) = child.stderr.take() else {
        return;
    };
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("session interrupted") {
                interrupted.fetch_add(1, Ordering::Relaxed);
            } else if line.contains("session resumed") {
                resumed.fetch_add(1, Ordering::Relaxed);
            } else if !line.contains("(history)") {
                progress::eprintln(format_args!("writer: {line}"));
            }
        }
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lines = option(&args, "--lines", 1_000_000)?;
    let min_ms = option(&args, "--min-ms", 100)?;
    let max_ms = option(&args, "--max-ms", 300)?.max(min_ms);
    let rate = option(&args, "--rate", 20_000)?;
    let exe: &std::path::Path = env!("CARGO_BIN_EXE_duologue").as_ref();

    let secrets = SecretDir::create()?;
    let room = NodeProcess::start(
        exe,
        "room",
        &[
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--actor".into(),
            "chat-room:general".into(),
        ],
        Duration::from_secs(10),
    )
    .await?;
    let proxy = Arc::new(FaultProxy::start(room.addr).await?);
    let mut reader = member(exe, &secrets, room.addr.to_string(), "reader").await?;
    let mut writer = member(exe, &secrets, proxy.addr().to_string(), "writer").await?;
    let (interrupted, resumed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    watch_stderr(&mut writer, interrupted.clone(), resumed.clone());
    watch_stderr(&mut reader, Arc::default(), Arc::default());

    let started = Instant::now();
    let mut stdin = BufWriter::new(writer.stdin.take().context("writer stdin")?);
    let feed = tokio::spawn(async move {
        const TICK: Duration = Duration::from_millis(10);
        let per_tick = if rate == 0 {
            lines
        } else {
            (rate / 100).max(1)
        };
        let mut ticks = tokio::time::interval(TICK);
        let mut n = 0;
        while n < lines {
            ticks.tick().await;
            for _ in 0..per_tick.min(lines - n) {
                n += 1;
                stdin.write_all(format!("{n}\n").as_bytes()).await?;
            }
            stdin.flush().await?;
        }
        stdin.flush().await?;
        anyhow::Ok(())
    });
    let (stop_resets, mut stopped) = oneshot::channel::<()>();
    let resetter = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            let mut resets = 0;
            loop {
                let pause = Duration::from_millis(rand::rng().random_range(min_ms..=max_ms));
                tokio::select! {
                    () = tokio::time::sleep(pause) => resets += proxy.reset_all(),
                    _ = &mut stopped => return resets,
                }
            }
        }
    });

    let mut stdout = reader.stdout.take().context("reader stdout")?;
    let mut received = Received::default();
    let bar = progress::bar("chat_resets", lines);
    bar.set_message("lines read through the resetting proxy");
    let mut last_report = Instant::now();
    while received.last < lines {
        // A stall shows as silence: give up after a minute without a line.
        let line = match tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => bail!("the reader ended after {received:?}"),
            Err(_) => {
                progress::eprintln(format_args!("no line for 60 s after {received:?}: stalled"));
                break;
            }
        };
        let Some(n) = line
            .strip_prefix("writer: ")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        received.lines += 1;
        if n <= received.last {
            received.duplicated += 1;
        } else {
            if n != received.last + 1 {
                received.reordered += 1;
            }
            received.last = n;
        }
        if received.lines % 1000 == 0 {
            bar.set_position(received.last);
            bar.set_message(format!(
                "lines read, {} interruptions",
                interrupted.load(Ordering::Relaxed)
            ));
        }
        if bar.is_hidden() && last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "{} of {lines} lines after {:.0?}, {} interruptions",
                received.last,
                started.elapsed(),
                interrupted.load(Ordering::Relaxed)
            );
        }
    }
    bar.finish_and_clear();
    let _ = stop_resets.send(());
    let resets = resetter.await?;
    feed.await??;
    let writer_exit = writer.wait(Duration::from_secs(120)).await?;
    let elapsed = started.elapsed();
    let lost = lines.saturating_sub(received.lines - received.duplicated);
    println!(
        "duologue chat_resets lines={lines} rate={rate} resets={resets} elapsed_s={:.2} received={} lost={lost} \
         duplicated={} reordered={} writer_exit={} interrupted={} resumed={}",
        elapsed.as_secs_f64(),
        received.lines,
        received.duplicated,
        received.reordered,
        writer_exit.map_or("signal".into(), |c| c.to_string()),
        interrupted.load(Ordering::Relaxed),
        resumed.load(Ordering::Relaxed),
    );
    let mut summary = Summary::new("chat_resets");
    summary
        .figure(format_args!(
            "{lines} lines, paced at {rate}/s, through {resets} resets in {:.1} s",
            elapsed.as_secs_f64()
        ))
        .figure(format_args!(
            "{} received: {lost} lost, {} duplicated, {} reordered; the writer resumed {} times",
            received.lines,
            received.duplicated,
            received.reordered,
            resumed.load(Ordering::Relaxed)
        ));
    if lost > 0 || received.duplicated > 0 || received.reordered > 0 || writer_exit != Some(0) {
        let why = "the transfer did not arrive exactly once, in order, to a finished writer";
        progress::eprintln(summary.failed(why));
        bail!(why);
    }
    progress::eprintln(summary.ok());
    Ok(())
}
