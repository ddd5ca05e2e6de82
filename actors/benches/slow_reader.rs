//! Credit follows the reader, across processes: a room in a `duologue node` process, a
//! writer `duologue chat` sending lines as fast as the room takes them, and a reader in
//! this process that reads 1 000 events a second through [`duologue_actors::chat::join`].
//!
//! The reader's memory must stay bounded (its inbox holds at most one credit window), and
//! the room must feel the slow reader without letting it go: a reader that keeps reading
//! holds the writer back (its outbox past the room's soft bound pauses the writer's
//! session), so the writer sends about as fast as the reader reads, and the reader loses
//! nothing. Every relay the reader reads follows the one before it on its session; a gap
//! not announced by `FellBehind` counts as `unannounced_gaps`. The run fails on such a gap,
//! on the reader being let go (it then rejoins, and is counted), or on an inbox past the
//! window.
//!
//! ```text
//! cargo bench --bench slow_reader                       # 20 s, reading 1 000/s, window 4 096
//! cargo bench --bench slow_reader -- --seconds 60 --read-rate 1000 --window 65536
//! ```
//!
//! `--window` is the reader node's credit window: what its inbox may hold. A reader let
//! go at the room's hard bound gets `FellBehind` (counted as `fell_behind`); one whose
//! session the room ends (`LimitExceeded`: stuck, or its farewell not finished in time)
//! is counted as `ended`; either rejoins.
//!
//! Prints one line in the baseline's `label key=value` shape:
//! `duologue slow_reader seconds=... read_rate=... window=... relays_read=... fell_behind=...
//! ended=... unannounced_gaps=... peak_inbox=... reader_peak_rss_mib=... room_peak_rss_mib=...
//! writer_lines=...`; on stderr, a bar of the seconds read (at a terminal) and a summary.

use duologue_testkit::args::option;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use duologue::LostReason;
use duologue::{Node, Secret, settings::SessionConfig, wire::GoodbyeReason};
use duologue_actors::chat::{ChatEvent, Joined, join};
use duologue_testkit::progress::{self, Summary};
use duologue_testkit::{ChildGuard, Memory, NodeProcess, SecretDir};
use tokio::io::{AsyncWriteExt, BufWriter};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

const WAIT: Duration = Duration::from_secs(30);

/// What the reader saw.
#[derive(Debug, Default)]
struct Reading {
    relays: u64,
    fell_behind: u64,
    ended: u64,
    unannounced_gaps: u64,
    peak_inbox: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds = option(&args, "--seconds", 20)?;
    let read_rate = option(&args, "--read-rate", 1_000)?.max(100);
    let window = option(&args, "--window", 4_096)?;
    let exe: &std::path::Path = env!("CARGO_BIN_EXE_duologue").as_ref();

    let secrets = SecretDir::create()?;
    let room = NodeProcess::chat_room(exe, &secrets, "general").await?;
    let addr = room.addr.to_string();
    let node = Node::builder()
        .name("reader")
        .secret(Secret::from_file(secrets.secret())?)
        .session_config(SessionConfig {
            credit_window: window,
            ..SessionConfig::default()
        })
        .start()
        .await?;
    let mut reader = join(&node, &addr, "general", "reader", WAIT).await?;

    let writer_args = [
        "chat",
        "--peer",
        &addr,
        "--room",
        "general",
        "--user",
        "writer",
        "--timeout",
        "60s",
        "--secret-file",
        &secrets.secret().display().to_string(),
    ]
    .map(str::to_owned);
    let mut writer = ChildGuard::spawn("writer", exe, &writer_args)?;
    writer.stderr_until("joined", WAIT).await?;
    if let Some(mut lines) = writer.stderr.take() {
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                progress::eprintln(format_args!("writer: {line}"));
            }
        });
    }
    let mut stdin = BufWriter::new(writer.stdin.take().context("writer stdin")?);
    let feed = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            n += 1;
            if stdin.write_all(format!("{n}\n").as_bytes()).await.is_err() {
                return n - 1;
            }
        }
    });

    let started = Instant::now();
    let mut reading = Reading::default();
    let mut last_seq = reader.welcome.room_seq;
    // Read in 10 ms steps of read_rate / 100 events.
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let per_tick = read_rate / 100;
    let bar = progress::bar("slow_reader", seconds);
    bar.set_message(format!("seconds of reading at {read_rate}/s"));
    while started.elapsed() < Duration::from_secs(seconds) {
        ticks.tick().await;
        bar.set_position(started.elapsed().as_secs());
        reading.peak_inbox = reading.peak_inbox.max(reader.events.len());
        for _ in 0..per_tick {
            let Some(event) = reader.events.try_recv() else {
                break;
            };
            match event {
                ChatEvent::Relay(relay) => {
                    if relay.room_seq != last_seq + 1 {
                        reading.unannounced_gaps += 1;
                    }
                    last_seq = relay.room_seq;
                    reading.relays += 1;
                }
                ChatEvent::FellBehind(behind) => {
                    if behind.missed_from != last_seq + 1 {
                        reading.unannounced_gaps += 1;
                    }
                    reading.fell_behind += 1;
                    bar.set_message(format!(
                        "seconds of reading at {read_rate}/s; let go {} time(s)",
                        reading.fell_behind + reading.ended
                    ));
                    reader = rejoin(&node, &addr).await?;
                    last_seq = reader.welcome.room_seq;
                    break;
                }
                ChatEvent::Lost {
                    reason: LostReason::PeerEnded(goodbye),
                    ..
                } if goodbye.reason == GoodbyeReason::LimitExceeded => {
                    reading.ended += 1;
                    bar.set_message(format!(
                        "seconds of reading at {read_rate}/s; let go {} time(s)",
                        reading.fell_behind + reading.ended
                    ));
                    reader = rejoin(&node, &addr).await?;
                    last_seq = reader.welcome.room_seq;
                    break;
                }
                ChatEvent::Presence(_) | ChatEvent::HeldBack(_) => {}
                other => bail!("the reader got {other:?}"),
            }
        }
    }
    bar.finish_and_clear();
    let reader_memory = Memory::of(None).context("reader memory")?;
    let room_memory = Memory::of(room.child.pid()).context("room memory")?;
    drop(writer);
    let writer_lines = feed.await?;
    println!(
        "duologue slow_reader seconds={seconds} read_rate={read_rate} window={window} \
         relays_read={} fell_behind={} ended={} unannounced_gaps={} peak_inbox={} \
         reader_peak_rss_mib={:.1} room_peak_rss_mib={:.1} writer_lines={writer_lines}",
        reading.relays,
        reading.fell_behind,
        reading.ended,
        reading.unannounced_gaps,
        reading.peak_inbox,
        mib(reader_memory.peak),
        mib(room_memory.peak),
    );
    let mut summary = Summary::new("slow_reader");
    summary
        .figure(format_args!(
            "{seconds} s reading {read_rate}/s behind a writer that sent {writer_lines} lines: \
             {} relays read",
            reading.relays
        ))
        .figure(format_args!(
            "let go {} time(s) (fell behind {}, ended {}), inbox at most {} of {window}",
            reading.fell_behind + reading.ended,
            reading.fell_behind,
            reading.ended,
            reading.peak_inbox
        ))
        .figure(format_args!(
            "peak resident memory: reader {:.1} MiB, room {:.1} MiB; {} unannounced gaps",
            mib(reader_memory.peak),
            mib(room_memory.peak),
            reading.unannounced_gaps
        ));
    let failure = if reading.unannounced_gaps > 0 {
        Some("the reader missed relays without being told")
    } else if reading.fell_behind + reading.ended > 0 {
        Some("a reader that kept reading was let go")
    } else if reading.peak_inbox > window as usize + 16 {
        Some("the reader's inbox held more than its window")
    } else {
        None
    };
    if let Some(why) = failure {
        progress::eprintln(summary.failed(why));
        bail!(why);
    }
    progress::eprintln(summary.ok());
    Ok(())
}

/// Joins again after being let go; the old session finishes as the events are dropped.
async fn rejoin(node: &Node, addr: &str) -> anyhow::Result<Joined> {
    let deadline = Instant::now() + WAIT;
    loop {
        match join(node, addr, "general", "reader", WAIT).await {
            Ok(joined) => return Ok(joined),
            // The room may not have let the old member's name go yet.
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "rejoin failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}
