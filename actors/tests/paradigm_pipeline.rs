//! The adaptive pipeline across processes: a stage in a `duologue node` process, a
//! producer in this one aiming at one and a half times the stage's capacity. The stage
//! throttles the producer when it falls behind and resumes it once caught up; the
//! producer's rate follows, and every frame arrives once and in order, through a cut
//! stream too.

mod support;

use std::time::Duration;

use duologue::FlowSignal;
use duologue::{CloseReason, Node};
use duologue_actors::pipeline::{Producer, ProducerConfig, ProducerEvent, RateWindow, mean_rate};
use duologue_testkit::{FaultProxy, NodeProcess, SecretDir};
use support::*;

/// Windows to see after the resume before stopping.
const AFTER: usize = 5;

/// Starts a node process hosting the stage `stage`.
async fn stage(secrets: &SecretDir) -> NodeProcess {
    NodeProcess::start(
        &duologue_exe(),
        "stage",
        &[
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--actor".into(),
            "pipeline:stage".into(),
        ],
        WAIT,
    )
    .await
    .expect("stage node starts")
}

/// A node in this process that shares the secret.
async fn near(secrets: &SecretDir) -> Node {
    let secret = std::fs::read_to_string(secrets.secret()).unwrap();
    dialling_node("producer", &secret).await
}

/// What a producer saw until it had been throttled and resumed.
#[derive(Debug, Default)]
struct Run {
    windows: Vec<RateWindow>,
    /// The first `Throttle`.
    throttled: Duration,
    /// The first `Resume` after it.
    resumed: Duration,
    /// The next `Throttle`, if one came.
    throttled_again: Option<Duration>,
    interruptions: usize,
    resumptions: usize,
}

impl Run {
    /// The mean rates before the throttle, while throttled, and after the resume.
    fn rates(&self) -> (f64, f64, f64) {
        let windows = &self.windows;
        // The first window holds the start; leave it out when there are others.
        let before = windows
            .first()
            .and_then(|w| mean_rate(windows, w.end, self.throttled))
            .or_else(|| mean_rate(windows, Duration::ZERO, self.throttled))
            .expect("a window before the throttle");
        let during = mean_rate(windows, self.throttled, self.resumed)
            .expect("a window between the throttle and the resume");
        let until = self.throttled_again.unwrap_or(Duration::MAX);
        let after = mean_rate(windows, self.resumed, until)
            .expect("a window after the resume, before any next throttle");
        (before, during, after)
    }

    fn chart(&self) -> String {
        let mut lines: Vec<String> = self
            .windows
            .iter()
            .map(|w| format!("{:>6.2} s {:>6.0}/s", w.end.as_secs_f64(), w.rate()))
            .collect();
        lines.push(format!(
            "throttled at {:?}, resumed at {:?}, throttled again at {:?}",
            self.throttled, self.resumed, self.throttled_again
        ));
        lines.join("\n")
    }
}

/// Reads the producer's events until it was throttled, resumed, and sent [`AFTER`] more
/// windows; `on_throttle` runs at the first throttle.
async fn throttle_and_recover(producer: &mut Producer, mut on_throttle: impl FnMut()) -> Run {
    let mut run = Run::default();
    let (mut throttled, mut resumed) = (None, None);
    let read = async {
        loop {
            let event = tokio::time::timeout(WAIT, producer.next_event())
                .await
                .expect("an event within the wait bound")
                .expect("the producer is running");
            match event {
                ProducerEvent::Window(window) => {
                    run.windows.push(window);
                    let after = resumed
                        .map_or(0, |at| run.windows.iter().filter(|w| w.start >= at).count());
                    if after >= AFTER {
                        break;
                    }
                }
                ProducerEvent::Flow {
                    at,
                    signal: FlowSignal::Throttle(_),
                    ..
                } => match (throttled, resumed) {
                    (None, _) => {
                        throttled = Some(at);
                        on_throttle();
                    }
                    (Some(_), Some(_)) if run.throttled_again.is_none() => {
                        run.throttled_again = Some(at);
                    }
                    _ => {}
                },
                ProducerEvent::Flow {
                    at,
                    signal: FlowSignal::Resume,
                    ..
                } => {
                    if throttled.is_some() && resumed.is_none() {
                        resumed = Some(at);
                    }
                }
                ProducerEvent::Flow { .. } => {}
                ProducerEvent::Interrupted { .. } => run.interruptions += 1,
                ProducerEvent::Resumed { .. } => run.resumptions += 1,
                ProducerEvent::Ended { reason, .. } => panic!("the session ended: {reason}"),
            }
        }
    };
    tokio::time::timeout(3 * WAIT, read)
        .await
        .expect("throttled and resumed within the wait bound");
    run.throttled = throttled.expect("throttled");
    run.resumed = resumed.expect("resumed");
    run
}

/// The producer's rate fell by a clear margin while throttled and rose again after.
fn assert_rate_followed(run: &Run) {
    let (before, during, after) = run.rates();
    let chart = run.chart();
    eprintln!("{chart}\n{before:.0}/s, throttled {during:.0}/s, resumed {after:.0}/s");
    assert!(
        during < 0.75 * before,
        "throttled {during:.0}/s vs {before:.0}/s before\n{chart}"
    );
    assert!(
        after > 1.3 * during,
        "resumed {after:.0}/s vs {during:.0}/s throttled\n{chart}"
    );
}

/// Stops the producer and checks the stage processed every frame once, in order.
async fn assert_nothing_lost(mut producer: Producer) {
    let sent = producer.stop().await.expect("every frame was taken");
    let report = producer.report(WAIT).await.expect("a report");
    eprintln!("sent {sent}; stage {report:?}");
    assert_eq!(
        (report.processed, report.last_seq, report.out_of_sequence),
        (sent, sent, 0),
        "{report:?}"
    );
    assert!(report.throttles >= 1 && report.resumes >= 1, "{report:?}");
    assert_eq!(producer.close(WAIT).await, CloseReason::Finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producers_rate_follows_the_stages_throttle_and_resume() {
    let secrets = SecretDir::create().unwrap();
    let far = stage(&secrets).await;
    let node = near(&secrets).await;
    let mut producer = Producer::start(
        &node,
        &far.addr.to_string(),
        "stage",
        ProducerConfig::default(),
    )
    .await
    .unwrap();

    let run = throttle_and_recover(&mut producer, || {}).await;

    assert_rate_followed(&run);
    assert_eq!((run.interruptions, run.resumptions), (0, 0));
    assert_nothing_lost(producer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_while_throttled_still_recovers_and_loses_nothing() {
    let secrets = SecretDir::create().unwrap();
    let far = stage(&secrets).await;
    let proxy = FaultProxy::start(far.addr).await.unwrap();
    let node = near(&secrets).await;
    let mut producer = Producer::start(
        &node,
        &proxy.addr().to_string(),
        "stage",
        ProducerConfig::default(),
    )
    .await
    .unwrap();

    let mut cut = 0;
    let run = throttle_and_recover(&mut producer, || cut = proxy.cut_all()).await;

    assert!(cut >= 1, "nothing to cut");
    assert!(
        run.interruptions >= 1 && run.resumptions == run.interruptions,
        "{} interruptions, {} resumptions",
        run.interruptions,
        run.resumptions
    );
    assert_rate_followed(&run);
    assert_nothing_lost(producer).await;
}
