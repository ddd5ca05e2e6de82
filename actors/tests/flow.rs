//! Back-pressure between two nodes: credit that makes `cast` wait and `try_cast` hand the
//! message back, the receiver's automatic pause at its high watermark, and the signals
//! an actor sends itself (pause, resume, resume-after, throttle), obeyed by the sender's
//! runtime and seen by the sender's owner.

mod support;

use std::time::{Duration, Instant};

use duologue::FlowSignal;
use duologue::{
    Node, NodeConfig, RemoteRef, SendError, SessionSignal, flow::HeldBy, settings::SessionConfig,
};
use duologue_actors::seq_check::proto::{CheckReply, ReportRequest, Tick, check_reply};
use duologue_actors::seq_check::{CheckConfig, SeqCheck};
use ractor::Actor;
use support::*;

/// A node whose sessions let peers run `window` messages ahead.
async fn receiver(window: u64) -> Node {
    let config = NodeConfig {
        name: "receiver".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        session: SessionConfig {
            credit_window: window,
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    };
    node_with(config).await
}

/// A checker taking `per_second` ticks behind a `window`, and a session to it.
async fn slow_checker(
    window: u64,
    per_second: u32,
) -> (
    Node,
    Node,
    RemoteRef<SeqCheck>,
    tokio::sync::mpsc::UnboundedReceiver<(Instant, Heard)>,
) {
    let far = receiver(window).await;
    let config = CheckConfig {
        name: "slow".into(),
        per_second: Some(per_second),
    };
    let (check, _) = Actor::spawn(None, SeqCheck, config).await.unwrap();
    far.register("check", &check).unwrap();
    let near = dialling_node("sender", SECRET).await;
    let (owner, heard) = recorder().await;
    let remote = near
        .connect((&addr(&far), "check"))
        .owner(&owner)
        .await
        .unwrap();
    (far, near, remote, heard)
}

fn tick(n: u64) -> Tick {
    Tick {
        n,
        filler: bytes::Bytes::new(),
    }
}

async fn report(check: &RemoteRef<SeqCheck>) -> duologue_actors::seq_check::proto::Report {
    match check.call(ReportRequest {}, WAIT).await.unwrap() {
        CheckReply {
            kind: Some(check_reply::Kind::Report(report)),
        } => report,
        other => panic!("no report: {other:?}"),
    }
}

#[tokio::test]
async fn without_credit_try_cast_hands_back_and_cast_waits() {
    const WINDOW: u64 = 32;
    let (_far, _near, check, _heard) = slow_checker(WINDOW, 2000).await;
    let mut refused = 0;
    let mut most_unacked = 0;
    for n in 1..=600 {
        match check.try_cast(tick(n)) {
            Ok(()) => {}
            Err(SendError::HeldBack {
                by: HeldBy::NoCredit,
                message,
            }) => {
                refused += 1;
                assert_eq!(message, tick(n).into(), "the message comes back");
                check.cast(message).await.unwrap();
            }
            Err(other) => panic!("{other}"),
        }
        most_unacked = most_unacked.max(check.session().unacked());
    }
    let report = report(&check).await;
    assert_eq!(
        (report.received, report.duplicates, report.gaps),
        (600, 0, 0)
    );
    assert!(refused > 0, "the sender felt back-pressure");
    assert!(
        report.max_backlog <= WINDOW,
        "receiver backlog {}",
        report.max_backlog
    );
    let ack_lag = SessionConfig::default().ack_every as usize;
    assert!(
        most_unacked <= WINDOW as usize + ack_lag,
        "sender held {most_unacked}"
    );
}

#[tokio::test]
async fn a_backlog_past_the_high_watermark_pauses_the_sender_until_it_drains() {
    let (_far, _near, check, mut heard) = slow_checker(100, 1000).await;
    for n in 1..=300 {
        check.cast(tick(n)).await.unwrap();
    }
    let (paused, _) = signal_where(&mut heard, WAIT, |s| match s {
        SessionSignal::Flow(_, FlowSignal::Pause) => Some(()),
        _ => None,
    })
    .await;
    let (resumed, _) = signal_where(&mut heard, WAIT, |s| match s {
        SessionSignal::Flow(_, FlowSignal::Resume) => Some(()),
        _ => None,
    })
    .await;
    assert!(resumed > paused);
    assert_eq!(report(&check).await.received, 300);
}

/// A probe served on a node, a session to it, and the probe's end of that session.
async fn probed() -> (
    Served,
    Node,
    RemoteRef<PingPong>,
    duologue::SessionRef,
    tokio::sync::mpsc::UnboundedReceiver<(Instant, Heard)>,
) {
    let mut server = served_probe(listening_node("server", SECRET).await).await;
    let client = dialling_node("client", SECRET).await;
    let (owner, heard) = recorder().await;
    let remote: RemoteRef<PingPong> = client
        .connect((&addr(&server.node), "probe"))
        .owner(&owner)
        .await
        .unwrap();
    let far_end = match next_signal(&mut server.seen).await {
        SessionSignal::Opened(session) => session,
        other => panic!("unexpected {other:?}"),
    };
    (server, client, remote, far_end, heard)
}

#[tokio::test]
async fn a_pause_holds_the_sender_until_resume() {
    let (mut server, _client, remote, far_end, mut heard) = probed().await;

    far_end.signal(duologue::FlowSignal::Pause);
    signal_where(&mut heard, WAIT, |s| {
        matches!(s, SessionSignal::Flow(_, FlowSignal::Pause)).then_some(())
    })
    .await;

    let flow = remote.session().flow();
    assert!(
        flow.send_blocked && flow.peer_signal == Some(FlowSignal::Pause),
        "{flow:?}"
    );
    assert!(far_end.flow().pausing_peer);
    let held = remote.try_cast(Ping { n: 1, body: vec![] }).unwrap_err();
    assert!(
        matches!(
            held,
            SendError::HeldBack {
                by: HeldBy::Paused,
                ..
            }
        ),
        "{held}"
    );
    far_end.signal(duologue::FlowSignal::Resume);
    remote.cast(held.into_message()).await.unwrap();
    assert_eq!(next_ping(&mut server.seen).await.0, 1);
}

#[tokio::test]
async fn a_timed_pause_holds_the_sender_for_the_given_time() {
    let (mut server, _client, remote, far_end, mut heard) = probed().await;
    let pause = Duration::from_millis(300);

    far_end.signal(duologue::FlowSignal::PauseFor(pause));
    let (signalled, _) = signal_where(&mut heard, WAIT, |s| {
        matches!(s, SessionSignal::Flow(_, FlowSignal::PauseFor(_))).then_some(())
    })
    .await;
    remote.cast(Ping { n: 1, body: vec![] }).await.unwrap();
    let waited = signalled.elapsed();

    assert!(
        waited >= pause - Duration::from_millis(50),
        "waited only {waited:?}"
    );
    assert_eq!(next_ping(&mut server.seen).await.0, 1);
}

/// Sends pings paced every millisecond for `span`; returns the rate achieved.
async fn paced_rate(remote: &RemoteRef<PingPong>, span: Duration, first: u64) -> (f64, u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let start = Instant::now();
    let mut n = first;
    while start.elapsed() < span {
        tick.tick().await;
        remote.cast(Ping { n, body: vec![] }).await.unwrap();
        n += 1;
    }
    ((n - first) as f64 / start.elapsed().as_secs_f64(), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_halves_the_senders_rate() {
    let (_server, _client, remote, far_end, mut heard) = probed().await;
    let (before, next) = paced_rate(&remote, Duration::from_millis(800), 0).await;

    far_end.signal(duologue::FlowSignal::Throttle(0.5));
    signal_where(&mut heard, WAIT, |s| {
        matches!(s, SessionSignal::Flow(_, FlowSignal::Throttle(_))).then_some(())
    })
    .await;
    let (after, _) = paced_rate(&remote, Duration::from_millis(800), next).await;

    let ratio = after / before;
    eprintln!("{before:.0}/s before, {after:.0}/s after: {ratio:.2}");
    assert!(
        (0.3..=0.7).contains(&ratio),
        "{before:.0}/s then {after:.0}/s"
    );
    far_end.signal(duologue::FlowSignal::Resume);
}

/// A cast waiting for credit when the stream breaks, and the session does not resume:
/// at the resume deadline it fails with `SendError::Closed`, the message handed back.
#[tokio::test]
async fn a_send_waiting_for_credit_fails_closed_at_the_resume_deadline() {
    let far = receiver(8).await;
    let config = CheckConfig {
        name: "slow".into(),
        per_second: Some(1),
    };
    let (check, _) = Actor::spawn(None, SeqCheck, config).await.unwrap();
    far.register("check", &check).unwrap();
    let proxy = duologue_testkit::FaultProxy::start(far.local_addr().unwrap())
        .await
        .unwrap();
    let near = node_with(NodeConfig {
        name: "sender".into(),
        session: SessionConfig {
            resume_timeout: Duration::from_millis(500),
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    let (owner, _heard) = recorder().await;
    let remote: RemoteRef<SeqCheck> = near
        .connect((&proxy.addr().to_string(), "check"))
        .owner(&owner)
        .await
        .unwrap();
    let mut n = 0;
    loop {
        n += 1;
        match remote.try_cast(tick(n)) {
            Ok(()) => {}
            Err(SendError::HeldBack { .. }) => break,
            Err(other) => panic!("{other}"),
        }
    }
    let waiting = {
        let remote = remote.clone();
        tokio::spawn(async move { remote.cast(tick(n)).await })
    };
    proxy.set_blackhole(true);
    proxy.cut_all();
    let result = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the waiting cast ends within the wait bound")
        .unwrap();
    match result {
        Err(SendError::Closed { message, reason }) => {
            assert_eq!(message, tick(n).into());
            assert!(
                matches!(
                    reason.as_deref(),
                    Some(duologue::CloseReason::Lost(
                        duologue::LostReason::ResumeDeadline { .. }
                    ))
                ),
                "{reason:?}"
            );
        }
        other => panic!("expected SendError::Closed, got {other:?}"),
    }
}
