//! The chat transfer through resets at full size, as a new user would run it: a room in a
//! `duologue node` process, a reader `duologue chat` connected directly, and a writer
//! `duologue chat` sending every stdin line through a [`FaultProxy`] that resets (RST)
//! every connection at random moments 100-300 ms apart (`duologue_testkit::ChatTransfer`,
//! which `tests/chat_resets.rs` runs smaller).
//!
//! ```text
//! cargo bench --bench chat_resets                        # 1 000 000 lines at 20 000/s: ~250 resets
//! cargo bench --bench chat_resets -- --full-speed        # 10 000 000 lines as fast as the writer reads them
//! cargo bench --bench chat_resets -- --lines 200000 --rate 0 --min-ms 100 --max-ms 300
//! ```
//!
//! `--rate` paces the writer's stdin (lines per second; 0: as fast as it reads), so the
//! transfer lasts long enough for hundreds of resets; `--full-speed` is `--lines 10000000
//! --rate 0`.
//!
//! Prints one line in the baseline's `label key=value` shape:
//! `duologue chat_resets lines=... rate=... resets=... elapsed_s=... received=... lost=...
//! duplicated=... reordered=... writer_exit=... let_go=... interrupted=... resumed=...
//! room_peak_rss_mib=... writer_peak_rss_mib=... reader_peak_rss_mib=...`
//! and exits non-zero when anything was lost, doubled or reordered, a member was let go,
//! or the writer did not finish. On stderr: a bar of the lines received (at a terminal;
//! elsewhere a line every 5 s) and a summary.
//!
//! [`FaultProxy`]: duologue_testkit::FaultProxy

use duologue_testkit::args::option;
use std::cell::Cell;
use std::time::{Duration, Instant};

use anyhow::bail;
use duologue_testkit::ChatTransfer;
use duologue_testkit::progress::{self, Summary};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full_speed = args.iter().any(|a| a == "--full-speed");
    let (lines, rate) = if full_speed {
        (10_000_000, 0)
    } else {
        (
            option(&args, "--lines", 1_000_000)?,
            option(&args, "--rate", 20_000)?,
        )
    };
    let min_ms = option(&args, "--min-ms", 100)?;
    let max_ms = option(&args, "--max-ms", 300)?.max(min_ms);
    let exe: &std::path::Path = env!("CARGO_BIN_EXE_duologue").as_ref();

    let transfer = ChatTransfer {
        lines: Some(lines),
        rate,
        reset_ms: (min_ms, max_ms),
        stall: Duration::from_secs(60),
        ..ChatTransfer::default()
    };
    let bar = progress::bar("chat_resets", lines);
    bar.set_message("lines read through the resetting proxy");
    let (started, last_report) = (Instant::now(), Cell::new(Instant::now()));
    let report = transfer
        .run(exe, |last| {
            if last % 1000 == 0 {
                bar.set_position(last);
            }
            if bar.is_hidden() && last_report.get().elapsed() >= Duration::from_secs(5) {
                last_report.set(Instant::now());
                eprintln!("{last} of {lines} lines after {:.0?}", started.elapsed());
            }
        })
        .await?;
    bar.finish_and_clear();
    let [room, writer, reader] = report.peak_rss;
    println!(
        "duologue chat_resets lines={lines} rate={rate} resets={} elapsed_s={:.2} received={} lost={} \
         duplicated={} reordered={} writer_exit={} let_go={} interrupted={} resumed={} \
         room_peak_rss_mib={:.1} writer_peak_rss_mib={:.1} reader_peak_rss_mib={:.1}",
        report.resets,
        report.elapsed.as_secs_f64(),
        report.received,
        report.lost,
        report.duplicated,
        report.reordered,
        report.writer_exit.map_or("none".into(), |c| c.to_string()),
        report.let_go,
        report.interrupted,
        report.resumed,
        mib(room),
        mib(writer),
        mib(reader),
    );
    let mut summary = Summary::new("chat_resets");
    summary
        .figure(format_args!(
            "{lines} lines, {}, through {} resets in {:.1} s",
            if rate == 0 {
                "as fast as the writer reads them".to_owned()
            } else {
                format!("paced at {rate}/s")
            },
            report.resets,
            report.elapsed.as_secs_f64()
        ))
        .figure(format_args!(
            "{} received: {} lost, {} duplicated, {} reordered; {} let go; the writer resumed {} times",
            report.received,
            report.lost,
            report.duplicated,
            report.reordered,
            report.let_go,
            report.resumed
        ))
        .figure(format_args!(
            "peak resident memory: room {:.1} MiB, writer {:.1} MiB, reader {:.1} MiB",
            mib(room),
            mib(writer),
            mib(reader)
        ));
    if !report.clean() {
        let why = "the transfer did not arrive exactly once, in order, to a finished writer, with nobody let go";
        progress::eprintln(summary.failed(why));
        bail!(why);
    }
    progress::eprintln(summary.ok());
    Ok(())
}
