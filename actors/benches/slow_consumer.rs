//! Memory under back-pressure, across two processes: a sender pushes casts as fast as it
//! can at an actor in a `duologue node` process that takes a fixed number per second, and
//! both processes' peak resident memory is read from `/proc` at the end.
//!
//! ```text
//! cargo bench --bench slow_consumer                               # 1 000 000 casts at 50 000/s
//! cargo bench --bench slow_consumer -- --casts 200000 --rate 20000 --payload 64
//! ```
//!
//! Prints one line in the baseline's `label key=value` shape:
//! `duologue slow_consumer casts=... rate=... payload_bytes=... wall_s=... sender_peak_rss_mib=...
//! receiver_peak_rss_mib=... max_receiver_backlog=... max_sender_unacked=... lost=... duplicates=...`
//! On stderr: a bar of the casts sent (at a terminal) and a summary.

use duologue_testkit::IgnoringOwner;
use duologue_testkit::args::option;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use duologue::{Node, RemoteRef};
use duologue_actors::seq_check::SeqCheck;
use duologue_actors::seq_check::proto::{ReportRequest, Tick, check_reply};
use duologue_testkit::progress::{self, Summary};
use duologue_testkit::{Memory, NodeProcess, SecretDir};
use ractor::Actor;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As every duologue binary does first: without a subscriber h2's spans also go through
    // `log` (benches/README.md, instructions.sh).
    duologue::cli::log_to_stderr(duologue::cli::LogFormat::Text);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ci = std::env::var_os("CI").is_some();
    let casts = option(&args, "--casts", if ci { 100_000 } else { 1_000_000 })?;
    let rate = option(&args, "--rate", 50_000)?;
    let payload = usize::try_from(option(&args, "--payload", 64)?)?;

    let secrets = SecretDir::create()?;
    let far = NodeProcess::start(
        env!("CARGO_BIN_EXE_duologue").as_ref(),
        "far",
        &[
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--actor".into(),
            format!("seq-check:slow@{rate}"),
        ],
        Duration::from_secs(10),
    )
    .await?;
    let far_pid = far.child.pid();
    let secret = std::fs::read_to_string(secrets.secret())?;
    let near = Node::builder()
        .name("near")
        .secret(duologue::Secret::new(secret)?)
        .start()
        .await?;
    let (owner, _) = Actor::spawn(None, IgnoringOwner, ()).await?;
    let check: RemoteRef<SeqCheck> = near
        .connect((&far.addr.to_string(), "slow"))
        .owner(&owner)
        .await?;
    eprintln!("pushing {casts} casts of {payload} bytes at a consumer taking {rate}/s");

    let filler = bytes::Bytes::from(vec![0xa5; payload]);
    // A cast waits for credit, so the casts sent follow the consumer.
    let sent = progress::bar("slow_consumer", casts);
    sent.set_message("casts sent");
    let start = Instant::now();
    let mut max_unacked = 0;
    for n in 1..=casts {
        check
            .cast(Tick {
                n,
                filler: filler.clone(),
            })
            .await?;
        if n % 1024 == 0 {
            max_unacked = max_unacked.max(check.session().unacked());
            sent.set_position(n);
        }
    }
    sent.set_position(casts);
    sent.set_message("waiting for the consumer's report");
    let reply = check
        .call(ReportRequest {}, Duration::from_secs(600))
        .await?;
    let wall = start.elapsed();
    sent.finish_and_clear();
    let Some(check_reply::Kind::Report(report)) = reply.kind else {
        bail!("no report: {reply:?}");
    };
    let sender = Memory::of(None).context("no /proc for this process")?;
    let receiver = Memory::of(far_pid).context("no /proc for the node")?;
    println!(
        "duologue slow_consumer casts={casts} rate={rate} payload_bytes={payload} wall_s={:.1} \
         sender_peak_rss_mib={:.1} receiver_peak_rss_mib={:.1} max_receiver_backlog={} \
         max_sender_unacked={max_unacked} lost={} duplicates={}",
        wall.as_secs_f64(),
        mib(sender.peak),
        mib(receiver.peak),
        report.max_backlog,
        casts - report.received,
        report.duplicates
    );
    let mut summary = Summary::new("slow_consumer");
    summary
        .figure(format_args!(
            "{casts} casts of {payload} bytes at a consumer taking {rate}/s, in {:.1} s",
            wall.as_secs_f64()
        ))
        .figure(format_args!(
            "peak resident memory: sender {:.1} MiB, receiver {:.1} MiB",
            mib(sender.peak),
            mib(receiver.peak)
        ));
    let (lost, duplicates) = (casts - report.received, report.duplicates);
    summary.figure(format_args!("{lost} lost, {duplicates} duplicated"));
    // Told, not enforced: the exit status stays that of a run that measured.
    progress::eprintln(if lost + duplicates == 0 {
        summary.ok()
    } else {
        summary.failed("casts lost or duplicated")
    });
    near.shutdown().await;
    Ok(())
}
