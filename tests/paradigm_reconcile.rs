//! The control-plane reconcile paradigm across processes: a `duologue node` process hosts
//! the reconciler `deploy`, the client runs in this process. A declaration is reported
//! step by step until it converges; a new one mid-way changes course from where the
//! world stands; a connection cut mid-way loses and repeats no report. A watcher that
//! stops reading is told it fell behind, after every report it was sent, while another
//! keeps getting all of its own.

mod support;

use std::time::Duration;

use duologue::{CloseReason, FanoutConfig, Node, NodeConfig, SessionConfig};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_told_it_fell_behind_and_the_others_miss_nothing() {
    // A reconciler in this process, stepping fast, letting a client lag by few reports.
    let server = listening_node("control", SECRET).await;
    let config = ReconcilerConfig {
        name: "deploy".into(),
        step: Duration::from_millis(2),
        fanout: FanoutConfig {
            max_lag: MAX_LAG,
            farewell_timeout: WAIT,
            ..FanoutConfig::default()
        },
    };
    let (reconciler, _) = Actor::spawn(None, Reconciler, config).await.unwrap();
    server.register("deploy", &reconciler).unwrap();
    // Its clients let it run only a couple of reports ahead of their reading.
    let client = node_with(NodeConfig {
        name: "client".into(),
        session: SessionConfig {
            credit_window: WINDOW,
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
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
