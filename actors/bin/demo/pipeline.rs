//! `duologue demo pipeline`: an adaptive pipeline across processes. A stage on one node
//! process works through frames at a fixed capacity; a producer in this process aims
//! faster. The stage throttles the producer when it falls behind and resumes it once it
//! caught up, with the session's own signals; the producer's rate, drawn every window,
//! follows. Then every frame is checked to have been processed once, in order.

use std::time::Instant;

use duologue::FlowSignal;
use duologue::{CloseReason, Node};
use duologue_actors::pipeline::{Producer, ProducerConfig, ProducerEvent, RateWindow, StageConfig};
use duologue_testkit::Signal;
use duologue_testkit::progress::Summary;
use duologue_testkit::{ClusterError, NodeProcess, SecretDir};

use super::STEP;

const STAGE: &str = "stage";
/// Windows drawn after the first resume.
const AFTER: usize = 5;
/// Characters of bar for the producer's target rate.
const WIDTH: f64 = 40.0;

pub(crate) async fn run() -> Result<Summary, ClusterError> {
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let secrets = SecretDir::create()?;
    let stage = StageConfig::default();
    let config = ProducerConfig::default();
    let target = config.rate.unwrap_or(stage.capacity);

    say!("duologue demo: pipeline");
    say!(
        "  a stage on a node process takes {} frames/s; {} ms behind, it throttles its producer",
        stage.capacity,
        stage.high.as_millis()
    );
    say!(
        "  (x{}); under {} ms, it resumes it. The producer, in this process, aims at {target}/s.",
        stage.factor,
        stage.low.as_millis()
    );
    let mut far = NodeProcess::start(
        &exe,
        STAGE,
        &[
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--actor".into(),
            format!("pipeline:{STAGE}"),
        ],
        STEP,
    )
    .await?;
    say!(
        "  node stage  pid {:<7} listening on {}\n",
        far.child.pid().unwrap_or(0),
        far.addr
    );
    let node = Node::builder()
        .name("producer")
        .secret_file(secrets.secret())
        .start()
        .await
        .map_err(unexpected)?;
    let mut producer = Producer::start(&node, &far.addr.to_string(), STAGE, config)
        .await
        .map_err(unexpected)?;

    say!(
        "  the producer's rate every 100 ms (█ within the stage's capacity, ▒ beyond, ┆ capacity)"
    );
    tokio::time::timeout(STEP, draw(&mut producer, stage.capacity, target))
        .await
        .map_err(|_| ClusterError::Timeout {
            what: "no throttle and resume".into(),
            timeout: STEP,
        })??;

    let sent = producer.stop().await.map_err(unexpected)?;
    let report = producer.report(STEP).await.map_err(unexpected)?;
    say!(
        "\n  sent {sent} frames; the stage processed {}, the last numbered {}, {} out of sequence;",
        report.processed,
        report.last_seq,
        report.out_of_sequence
    );
    say!(
        "  it throttled {} time(s) and resumed {} time(s), running at most {} ms behind",
        report.throttles,
        report.resumes,
        report.max_latency_micros / 1000
    );
    if (report.processed, report.last_seq, report.out_of_sequence) != (sent, sent, 0) {
        return Err(ClusterError::Unexpected("the stage lost frames".into()));
    }
    let closed = producer.close(STEP).await;
    if closed != CloseReason::Finished {
        return Err(ClusterError::Unexpected(format!("session ended: {closed}")));
    }
    far.child.signal(Signal::SIGTERM)?;
    let code = far.child.wait(STEP).await?;
    if code != Some(0) {
        return Err(ClusterError::Unexpected(format!(
            "node stage exited with {code:?}"
        )));
    }
    say!("  session finished; node stage stopped on SIGTERM, exit 0\n");
    let mut summary = Summary::new("demo pipeline");
    summary.figure(format_args!(
        "{sent} frames, each processed once and in order; {} throttle(s), {} resume(s); \
         {:.2} s in all",
        report.throttles,
        report.resumes,
        started.elapsed().as_secs_f64()
    ));
    Ok(summary)
}

/// Draws each window as it ends, and each signal as it arrives, until the producer was
/// throttled, resumed, and sent [`AFTER`] more windows.
async fn draw(producer: &mut Producer, capacity: u32, target: u32) -> Result<(), ClusterError> {
    let (mut throttled, mut resumed, mut after) = (false, false, 0);
    while after < AFTER {
        let event = producer
            .next_event()
            .await
            .ok_or_else(|| ClusterError::Unexpected("the producer stopped".into()))?;
        match event {
            ProducerEvent::Window(window) => {
                say!("{}", bar(&window, capacity, target));
                after += usize::from(resumed);
            }
            ProducerEvent::Flow {
                at,
                signal,
                throttled_to,
            } => {
                let what = match (signal, throttled_to) {
                    (FlowSignal::Throttle(f), Some(limit)) => {
                        throttled = true;
                        format!("Throttle({f}) from the stage: casts now paced at {limit:.0}/s")
                    }
                    (FlowSignal::Resume, _) if throttled => {
                        resumed = true;
                        "Resume from the stage: full rate again".into()
                    }
                    (other, _) => format!("{other:?} from the stage"),
                };
                say!("  {:>5.2} s  ◀ {what}", at.as_secs_f64());
            }
            ProducerEvent::Interrupted { at, cause } => {
                say!("  {:>5.2} s  ◀ stream broken: {cause}", at.as_secs_f64());
            }
            ProducerEvent::Resumed { at, .. } => {
                say!("  {:>5.2} s  ◀ session resumed", at.as_secs_f64());
            }
            ProducerEvent::Ended { reason, .. } => {
                return Err(ClusterError::Unexpected(format!("session ended: {reason}")));
            }
        }
    }
    Ok(())
}

/// One line of the chart: `  1.20 s  ██████████████████┆        1500/s`.
fn bar(window: &RateWindow, capacity: u32, target: u32) -> String {
    let per_char = f64::from(target) / WIDTH;
    let filled = (window.rate() / per_char).round() as usize;
    let limit = (f64::from(capacity) / per_char).round() as usize;
    let columns = (WIDTH as usize + 2).max(filled);
    let bar: String = (0..columns)
        .map(|i| match i {
            i if i < filled.min(limit) => '█',
            i if i < filled => '▒',
            i if i == limit => '┆',
            _ => ' ',
        })
        .collect();
    format!(
        "  {:>5.2} s  {bar} {:>5.0}/s",
        window.end.as_secs_f64(),
        window.rate()
    )
}

fn unexpected(error: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unexpected(error.to_string())
}
