//! The control-plane reconcile paradigm across processes: a `duologue node` process hosts
//! the reconciler `deploy`, the client runs in this process. A declaration is reported
//! step by step until it converges; a new one mid-way changes course from where the
//! world stands; a connection cut mid-way loses and repeats no report. With the
//! reconciler in this process and small fan-out bounds: a watcher that reads slowly slows
//! its own deployment down and misses nothing, while another's goes on at full pace; one
//! that stops reading is let go once stuck (its session ended), or told it fell behind at
//! the hard bound, after every report it was sent, while another keeps getting all of its
//! own.

mod support;

use std::time::{Duration, Instant};

use duologue::{
    CloseReason, LostReason, Node, NodeConfig, flow::FanoutConfig, settings::SessionConfig,
    wire::GoodbyeReason,
};
use duologue_actors::reconcile::proto::{Phase, StatusReport};
use duologue_actors::reconcile::{
    ReconcileEvent, Reconciler, ReconcilerConfig, Trail, Watch, watch,
};
use duologue_testkit::{FaultProxy, NodeProcess, SecretDir};
use ractor::Actor;
use support::*;

/// A reconciler node process and a client node in this process.
struct Control {
    process: NodeProcess,
    node: Node,
    _secrets: SecretDir,
}

/// Starts a `duologue node` process hosting the reconciler `deploy`, and a client node.
async fn control() -> Control {
    let secrets = SecretDir::create().unwrap();
    let process = NodeProcess::start(
        &duologue_exe(),
        "control",
        &[
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--actor".into(),
            "reconcile:deploy".into(),
        ],
        WAIT,
    )
    .await
    .expect("reconciler node starts");
    let secret = std::fs::read_to_string(secrets.secret()).unwrap();
    let node = dialling_node("client", &secret).await;
    Control {
        process,
        node,
        _secrets: secrets,
    }
}

impl Control {
    /// A session to `deploy`, dialled at `addr` (the node itself, or a proxy before it).
    async fn watch(&self, addr: &str) -> Watch {
        watch(&self.node, addr, "deploy")
            .await
            .expect("a session to the reconciler")
    }
}

/// Everything the watcher hears up to and including the first report that `last` picks,
/// within [`WAIT`] in all.
async fn events_until(
    watch: &mut Watch,
    last: impl Fn(&StatusReport) -> bool,
) -> Vec<ReconcileEvent> {
    tokio::time::timeout(WAIT, async {
        let mut heard = Vec::new();
        loop {
            let event = watch.next_event().await.expect("the session is open");
            let done = matches!(&event, ReconcileEvent::Report(r) if last(r));
            let closed = matches!(&event, ReconcileEvent::Lost(_) | ReconcileEvent::Closed(_));
            heard.push(event);
            if done {
                return heard;
            }
            assert!(!closed, "the session ended first: {heard:?}");
        }
    })
    .await
    .expect("the awaited report within the wait bound")
}

/// Everything up to the report converged on `generation`.
async fn until_converged(watch: &mut Watch, generation: u64) -> Vec<ReconcileEvent> {
    events_until(watch, |r| {
        r.generation == generation && r.phase() == Phase::Converged
    })
    .await
}

fn reports(events: &[ReconcileEvent]) -> Vec<StatusReport> {
    events
        .iter()
        .filter_map(|e| match e {
            ReconcileEvent::Report(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn seqs(reports: &[StatusReport]) -> Vec<u64> {
    reports.iter().map(|r| r.report_seq).collect()
}

/// Half-closes and expects the session to end politely, with nothing else heard first.
async fn finish(mut watch: Watch) {
    watch.reconciler.finish();
    let event = tokio::time::timeout(WAIT, watch.next_event()).await;
    match event.expect("an event within the wait bound") {
        Some(ReconcileEvent::Closed(CloseReason::Finished)) => {}
        other => panic!("expected a polite close and nothing before it, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_state_is_reported_step_by_step_until_converged() {
    let control = control().await;
    let mut watch = control.watch(&control.process.addr.to_string()).await;

    watch.declare(1, 4, "v1").await.unwrap();
    let heard = until_converged(&mut watch, 1).await;

    let reports = reports(&heard);
    assert_eq!(heard.len(), reports.len(), "only reports: {heard:?}");
    let phases: Vec<Phase> = reports.iter().map(StatusReport::phase).collect();
    assert_eq!(
        phases,
        [
            Phase::Pending,
            Phase::Progressing,
            Phase::Progressing,
            Phase::Progressing,
            Phase::Converged
        ]
    );
    assert_eq!(seqs(&reports), [1, 2, 3, 4, 5]);
    let ready: Vec<u32> = reports.iter().map(|r| r.ready_replicas).collect();
    assert_eq!(ready, [0, 1, 2, 3, 4], "one replica started per step");
    let progress: Vec<u32> = reports.iter().map(|r| r.progress_percent).collect();
    assert_eq!(progress, [0, 25, 50, 75, 100]);
    assert!(
        reports
            .iter()
            .all(|r| r.generation == 1 && r.desired_replicas == 4 && r.desired_image == "v1"),
        "{reports:?}"
    );
    let last = reports.last().unwrap();
    assert_eq!(
        (
            last.ready_replicas,
            last.updated_replicas,
            last.current_image.as_str()
        ),
        (4, 4, "v1"),
        "{last:?}"
    );
    // Converged means no further report: the next thing heard is the polite close.
    finish(watch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_desired_state_mid_way_changes_course_from_where_the_world_stands() {
    let control = control().await;
    let mut watch = control.watch(&control.process.addr.to_string()).await;

    // Eight replicas take eight steps; change course after two.
    watch.declare(1, 8, "v1").await.unwrap();
    let mut heard = events_until(&mut watch, |r| r.ready_replicas == 2).await;
    watch.declare(2, 3, "v2").await.unwrap();
    heard.extend(until_converged(&mut watch, 2).await);

    let reports = reports(&heard);
    assert_eq!(heard.len(), reports.len(), "only reports: {heard:?}");
    let expected: Vec<u64> = (1..=reports.len() as u64).collect();
    assert_eq!(seqs(&reports), expected, "no gap, no repeat");
    let at = reports
        .iter()
        .position(|r| r.generation == 2)
        .expect("reports of generation 2");
    let (first, second) = reports.split_at(at);
    assert!(
        first
            .iter()
            .all(|r| r.generation == 1 && r.phase() != Phase::Converged),
        "generation 1 never converged: {first:?}"
    );
    assert!(
        second.iter().all(|r| r.generation == 2),
        "generations never go back: {second:?}"
    );
    // Generation 2 starts from where generation 1 stood, not from scratch.
    let stood = first.last().unwrap().ready_replicas;
    assert!((2..8).contains(&stood), "{first:?}");
    let start = &second[0];
    assert_eq!(
        (start.phase(), start.ready_replicas, start.progress_percent),
        (Phase::Pending, stood, 0),
        "{start:?}"
    );
    // Every running replica runs v1 and needs one step (an update or a stop); missing
    // ones one more each.
    assert_eq!(second.len() as u32 - 1, stood.max(3), "{second:?}");
    let last = second.last().unwrap();
    assert_eq!(
        (
            last.phase(),
            last.ready_replicas,
            last.updated_replicas,
            last.current_image.as_str(),
            last.progress_percent
        ),
        (Phase::Converged, 3, 3, "v2", 100),
        "{last:?}"
    );
    finish(watch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_mid_way_loses_and_repeats_no_report_and_still_converges() {
    const REPLICAS: u32 = 40;
    let control = control().await;
    let proxy = FaultProxy::start(control.process.addr).await.unwrap();
    let mut watch = control.watch(&proxy.addr().to_string()).await;

    watch.declare(1, REPLICAS, "v1").await.unwrap();
    let mut heard = events_until(&mut watch, |r| r.report_seq == 5).await;
    assert!(proxy.cut_all() >= 1, "a connection to cut");
    heard.extend(until_converged(&mut watch, 1).await);

    let interrupted = heard
        .iter()
        .position(|e| matches!(e, ReconcileEvent::Interrupted(_)))
        .unwrap_or_else(|| panic!("the cut interrupted the session: {heard:?}"));
    let resumed = heard
        .iter()
        .position(|e| matches!(e, ReconcileEvent::Resumed(_)))
        .unwrap_or_else(|| panic!("the session resumed: {heard:?}"));
    assert!(interrupted < resumed);
    assert!(
        heard[resumed + 1..]
            .iter()
            .any(|e| matches!(e, ReconcileEvent::Report(_))),
        "reports kept coming after the resume: {heard:?}"
    );
    let reports = reports(&heard);
    let expected: Vec<u64> = (1..=u64::from(REPLICAS) + 1).collect();
    assert_eq!(
        seqs(&reports),
        expected,
        "every report exactly once, in order"
    );
    let ready: Vec<u32> = reports.iter().map(|r| r.ready_replicas).collect();
    let steps: Vec<u32> = (0..=REPLICAS).collect();
    assert_eq!(ready, steps, "one report per step, none skipped");
    let last = reports.last().unwrap();
    assert_eq!(
        (
            last.phase(),
            last.ready_replicas,
            last.updated_replicas,
            last.current_image.as_str()
        ),
        (Phase::Converged, REPLICAS, REPLICAS, "v1"),
        "{last:?}"
    );
    finish(watch).await;
}

/// Reports a watcher may leave unread before the reconciler stops sending (its session's
/// credit window).
const WINDOW: u64 = 2;
/// Reports the reconciler then keeps waiting for it before it counts as fallen behind.
const MAX_LAG: usize = 4;

/// A reconciler in this process stepping every 2 ms under `fanout`, and a client node
/// whose sessions let it run only `WINDOW` reports ahead of their reading.
async fn fast_reconciler(fanout: FanoutConfig) -> (Node, Node) {
    let server = listening_node("control", SECRET).await;
    let config = ReconcilerConfig {
        name: "deploy".into(),
        step: Duration::from_millis(2),
        fanout,
    };
    let (reconciler, _) = Actor::spawn(None, Reconciler, config).await.unwrap();
    server.register("deploy", &reconciler).unwrap();
    let client = node_with(NodeConfig {
        name: "client".into(),
        session: SessionConfig {
            credit_window: WINDOW,
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_told_it_fell_behind_and_the_others_miss_nothing() {
    // Letting a client lag by few reports: its deployment waits for it only briefly, and
    // it is not judged stuck within the test, so the hard bound is what lets it go.
    let (server, client) = fast_reconciler(FanoutConfig {
        hold_lag: 2,
        hold_at_most: Duration::from_millis(100),
        stuck_after: 3 * WAIT,
        max_lag: MAX_LAG,
        farewell_timeout: WAIT,
        ..FanoutConfig::default()
    })
    .await;
    let mut slow = watch(&client, &addr(&server), "deploy").await.unwrap();
    let mut fast = watch(&client, &addr(&server), "deploy").await.unwrap();

    // Both deployments step at the same pace; the slow watcher reads nothing meanwhile.
    // Its deployment never converges: 1000 replicas take 1000 steps.
    slow.declare(1, 1000, "v1").await.unwrap();
    fast.declare(1, 40, "v1").await.unwrap();
    let heard = until_converged(&mut fast, 1).await;
    let fast_reports = reports(&heard);
    assert_eq!(heard.len(), fast_reports.len(), "only reports: {heard:?}");
    let expected: Vec<u64> = (1..=41).collect();
    assert_eq!(seqs(&fast_reports), expected, "every report, in order");
    finish(fast).await;

    // Forty steps on, the slow watcher holds no more than its window (and no signal).
    let waiting = slow.waiting();
    assert!(waiting as u64 <= WINDOW, "{waiting} waiting");

    // Now it reads: every report it was sent, in order, then the notice, then the end.
    let mut trail = Trail::default();
    let notice = tokio::time::timeout(WAIT, async {
        loop {
            match slow.next_event().await.expect("the session is open") {
                ReconcileEvent::Report(report) => trail.check(&report).unwrap(),
                ReconcileEvent::FellBehind(notice) => return notice,
                other => panic!("expected reports, then FellBehind; got {other:?}"),
            }
        }
    })
    .await
    .expect("the notice within the wait bound");
    eprintln!("{waiting} waiting; {notice:?}");
    assert_eq!(
        notice.last_report_seq, trail.last_seq,
        "the notice follows every report sent: {notice:?}"
    );
    assert!(
        (1..40).contains(&trail.last_seq),
        "it fell behind long before the fast watcher's deployment converged: {notice:?}"
    );
    assert_eq!(notice.queued as usize, MAX_LAG, "{notice:?}");
    let latest = notice.latest.as_ref().expect("the latest state");
    assert_eq!(latest.report_seq, 0, "unnumbered: {latest:?}");
    assert!(latest.ready_replicas as u64 >= trail.last_seq, "{latest:?}");
    let event = tokio::time::timeout(WAIT, slow.next_event()).await;
    assert_eq!(
        event.expect("the close within the wait bound"),
        Some(ReconcileEvent::Closed(CloseReason::Finished)),
        "the reconciler finished the session after the notice"
    );
    assert_eq!(slow.next_event().await, None);
}

/// Reads `watch`'s reports until one converged on generation 1, one every `pace`; checks
/// each with a [`Trail`] and that nothing else comes. Returns them.
async fn read_all_at(watch: &mut Watch, pace: Duration) -> Vec<StatusReport> {
    let mut trail = Trail::default();
    let mut reports = Vec::new();
    let read = tokio::time::timeout(2 * WAIT, async {
        loop {
            match watch.next_event().await.expect("the session is open") {
                ReconcileEvent::Report(report) => {
                    trail.check(&report).unwrap();
                    let done = report.phase() == Phase::Converged;
                    reports.push(report);
                    if done {
                        return;
                    }
                }
                other => panic!("only reports, got {other:?} after {reports:?}"),
            }
            tokio::time::sleep(pace).await;
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "still reading after {} reports",
        reports.len()
    );
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_reads_slowly_slows_its_own_deployment_and_misses_nothing() {
    const REPLICAS: u32 = 40;
    /// Reports waiting for a client that hold its deployment's steps.
    const HOLD_LAG: usize = 4;
    let (server, client) = fast_reconciler(FanoutConfig {
        hold_lag: HOLD_LAG,
        // The hard bound, far below the steps: the slow watcher would reach it if its
        // deployment did not wait for it.
        max_lag: 2 * HOLD_LAG,
        // It never stops reading for this long (the fast watcher's whole run included).
        hold_at_most: WAIT,
        stuck_after: 2 * WAIT,
        farewell_timeout: WAIT,
        ..FanoutConfig::default()
    })
    .await;
    let mut slow = watch(&client, &addr(&server), "deploy").await.unwrap();
    let mut fast = watch(&client, &addr(&server), "deploy").await.unwrap();

    // Both deployments take REPLICAS steps at the same timer pace. The slow watcher reads
    // nothing while the fast one reads its whole run: its deployment waits for it, the
    // fast one's does not.
    slow.declare(1, REPLICAS, "v1").await.unwrap();
    fast.declare(1, REPLICAS, "v1").await.unwrap();
    let fast_reports = read_all_at(&mut fast, Duration::ZERO).await;
    let steps: Vec<u32> = (0..=REPLICAS).collect();
    let ready = |reports: &[StatusReport]| -> Vec<u32> {
        reports.iter().map(|r| r.ready_replicas).collect()
    };
    assert_eq!(ready(&fast_reports), steps, "every step reported, in order");
    finish(fast).await;
    let waiting = slow.waiting();
    assert!(waiting as u64 <= WINDOW, "{waiting} waiting");

    // Now it reads, slower than the deployment steps: every report, one per step, in
    // order, and never a notice: it was not let go, though REPLICAS steps are far more
    // than the hard bound.
    let slow_reports = read_all_at(&mut slow, Duration::from_millis(5)).await;
    assert_eq!(ready(&slow_reports), steps, "every step reported, in order");
    let last = slow_reports.last().unwrap();
    assert_eq!(
        (
            last.ready_replicas,
            last.updated_replicas,
            last.current_image.as_str()
        ),
        (REPLICAS, REPLICAS, "v1"),
        "{last:?}"
    );
    finish(slow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_let_go_once_stuck_while_another_converges() {
    const STUCK_AFTER: Duration = Duration::from_millis(1500);
    /// How late after `STUCK_AFTER` the end may come on a loaded machine.
    const LATE: Duration = Duration::from_secs(5);
    let (server, client) = fast_reconciler(FanoutConfig {
        hold_lag: 2,
        hold_at_most: Duration::from_millis(200),
        stuck_after: STUCK_AFTER,
        // Far beyond what piles up within the test: being stuck is what lets it go.
        max_lag: 100_000,
        farewell_timeout: WAIT,
        ..FanoutConfig::default()
    })
    .await;
    let mut slow = watch(&client, &addr(&server), "deploy").await.unwrap();
    let mut fast = watch(&client, &addr(&server), "deploy").await.unwrap();

    // The slow watcher reads nothing; its deployment never converges within the test.
    let started = Instant::now();
    slow.declare(1, 100_000, "v1").await.unwrap();
    fast.declare(1, 40, "v1").await.unwrap();
    let heard = until_converged(&mut fast, 1).await;
    let fast_reports = reports(&heard);
    assert_eq!(heard.len(), fast_reports.len(), "only reports: {heard:?}");
    let expected: Vec<u64> = (1..=41).collect();
    assert_eq!(seqs(&fast_reports), expected, "every report, in order");

    // The slow watcher's session is ended once it took nothing for `stuck_after` with
    // reports waiting (the first waited after `started`), not long after.
    let session = slow.reconciler.session();
    let reason = tokio::time::timeout(STUCK_AFTER + LATE, session.closed())
        .await
        .expect("the slow watcher's session ends soon after stuck_after");
    let elapsed = started.elapsed();
    // (Timer granularity aside.)
    assert!(
        elapsed + Duration::from_millis(20) >= STUCK_AFTER,
        "ended after {elapsed:?}, before stuck_after"
    );
    let CloseReason::Lost(LostReason::PeerEnded(goodbye)) = &reason else {
        panic!("the reconciler ended the slow watcher's session: {reason:?}");
    };
    assert_eq!(goodbye.reason, GoodbyeReason::LimitExceeded, "{goodbye:?}");
    assert!(goodbye.detail.contains("stuck"), "{goodbye:?}");

    // The fast watcher goes on: a new declaration is reported to convergence.
    fast.declare(2, 3, "v2").await.unwrap();
    let heard = until_converged(&mut fast, 2).await;
    assert_eq!(
        heard.len(),
        reports(&heard).len(),
        "only reports: {heard:?}"
    );
    finish(fast).await;

    // When the slow watcher reads: the reports its session had taken, in order, then the
    // loss.
    let mut trail = Trail::default();
    let lost = tokio::time::timeout(WAIT, async {
        loop {
            match slow.next_event().await.expect("the session's end is told") {
                ReconcileEvent::Report(report) => trail.check(&report).unwrap(),
                ReconcileEvent::Lost(lost) => return lost,
                other => panic!("expected reports, then Lost; got {other:?}"),
            }
        }
    })
    .await
    .expect("the loss within the wait bound");
    assert!(
        matches!(&lost, LostReason::PeerEnded(g) if g.reason == GoodbyeReason::LimitExceeded),
        "{lost:?}"
    );
    assert!(
        (1..=WINDOW).contains(&trail.last_seq),
        "what its session had taken: {trail:?}"
    );
}
