//! A broken stream is a state: real node processes on 127.0.0.1, a fault-injecting proxy
//! cutting connections mid-transfer, a peer frozen with SIGSTOP, a peer killed and
//! restarted, and a target actor that stops. The sequence checker on the far node counts
//! every tick it receives, so "exactly once, in order" is checked where it matters.

mod support;

use std::time::{Duration, Instant};

use duologue::LostReason;
use duologue::SessionPolicy;
use duologue::{Node, RemoteRef, SessionSignal, wire::GoodbyeReason};
use duologue_actors::seq_check::SeqCheck;
use duologue_actors::seq_check::proto::{
    CheckReply, CheckRequest, Report, ReportRequest, StopRequest, Tick, check_reply, check_request,
};
use duologue_testkit::FaultProxy;
use duologue_testkit::Signal;
use duologue_testkit::{NodeProcess, SecretDir};
use support::*;

/// Starts a node process hosting the sequence checker `check`.
async fn checker(secrets: &SecretDir, listen: &str) -> NodeProcess {
    checker_with(secrets, listen, &[]).await
}

/// Starts a node process hosting the sequence checker `check`, with more node flags.
async fn checker_with(secrets: &SecretDir, listen: &str, flags: &[&str]) -> NodeProcess {
    let mut args = vec![
        "--listen".into(),
        listen.into(),
        "--secret-file".into(),
        secrets.secret().display().to_string(),
    ];
    if !flags.contains(&"--actor") {
        args.extend(["--actor".into(), "seq-check:check".into()]);
    }
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    NodeProcess::start(&duologue_exe(), "far", &args, WAIT)
        .await
        .expect("checker node starts")
}

/// A node in this process that shares the secret.
async fn near(secrets: &SecretDir) -> Node {
    let secret = std::fs::read_to_string(secrets.secret()).unwrap();
    dialling_node("near", &secret).await
}

/// A checker node process, and a session to its checker from this process.
struct Checked {
    far: NodeProcess,
    _node: Node,
    heard: tokio::sync::mpsc::UnboundedReceiver<(Instant, Heard)>,
    check: RemoteRef<SeqCheck>,
}

/// Starts a checker and connects to it, through `via` when given.
async fn checked(secrets: &SecretDir, via: impl FnOnce(std::net::SocketAddr) -> String) -> Checked {
    let far = checker(secrets, "127.0.0.1:0").await;
    let node = near(secrets).await;
    let (owner, heard) = recorder().await;
    let check = node
        .connect((&via(far.addr), "check"))
        .owner(&owner)
        .await
        .unwrap();
    Checked {
        far,
        _node: node,
        heard,
        check,
    }
}

/// A fault proxy in front of `far`, and a session to its checker through it.
async fn through_proxy(secrets: &SecretDir, far: NodeProcess) -> (FaultProxy, Checked) {
    let proxy = FaultProxy::start(far.addr).await.unwrap();
    let node = near(secrets).await;
    let (owner, heard) = recorder().await;
    let check = node
        .connect((&proxy.addr().to_string(), "check"))
        .owner(&owner)
        .await
        .unwrap();
    let checked = Checked {
        far,
        _node: node,
        heard,
        check,
    };
    (proxy, checked)
}

fn tick(n: u64) -> Tick {
    Tick {
        n,
        filler: bytes::Bytes::from_static(&[0x5a; 32]),
    }
}

async fn report(check: &RemoteRef<SeqCheck>) -> Report {
    match check.call(ReportRequest {}, Duration::from_secs(60)).await {
        Ok(CheckReply {
            kind: Some(check_reply::Kind::Report(report)),
        }) => report,
        other => panic!("no report: {other:?}"),
    }
}

async fn send_ticks(check: &RemoteRef<SeqCheck>, numbers: std::ops::RangeInclusive<u64>) {
    for n in numbers {
        if let Err(error) = check.cast(tick(n)).await {
            let reason = check.closed().await;
            panic!("tick {n} refused ({error}): the session closed: {reason}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_through_repeated_cuts_arrives_exactly_once_in_order() {
    const TICKS: u64 = 100_000;
    let secrets = SecretDir::create().unwrap();
    let far = checker(&secrets, "127.0.0.1:0").await;
    // The checker process and the near node live as long as `checked`.
    let (proxy, mut checked) = through_proxy(&secrets, far).await;
    let (check, heard) = (checked.check.clone(), &mut checked.heard);
    // About 5 MB cross the proxy: that is a cut every few thousand ticks.
    proxy.cut_every(256 * 1024);

    send_ticks(&check, 1..=TICKS).await;
    let report = report(&check).await;

    assert_eq!(
        (report.received, report.last, report.duplicates, report.gaps),
        (TICKS, TICKS, 0, 0),
        "{report:?}"
    );
    let cuts = proxy.cuts();
    let (mut interrupted, mut resumed) = (0, 0);
    while let Ok((_, item)) = heard.try_recv() {
        match item {
            Heard::Signal(SessionSignal::Interrupted(..)) => interrupted += 1,
            Heard::Signal(SessionSignal::Resumed(..)) => resumed += 1,
            Heard::Signal(other) => panic!("unexpected {other:?}"),
            Heard::Message { .. } => {}
        }
    }
    eprintln!("{TICKS} ticks, {cuts} cuts, {interrupted} interruptions, {resumed} resumes");
    assert!(cuts >= 10, "only {cuts} cuts");
    assert!(
        interrupted >= 1 && resumed == interrupted,
        "{interrupted} / {resumed}"
    );
}

/// Resets (RST) every connection at random moments 100-300 ms apart while ticks flow
/// without a pause, until `resets` connections were reset; stops resetting; returns how
/// many ticks were sent. Every cast must be taken within `WAIT`: a sender that stops
/// making progress fails here, not in a silent hang.
async fn send_through_resets(
    check: &RemoteRef<SeqCheck>,
    proxy: &FaultProxy,
    resets: usize,
) -> u64 {
    use rand::Rng;
    let mut next_reset = tokio::time::Instant::now();
    let mut done = 0;
    let mut n = 0;
    while done < resets {
        n += 1;
        let sent = tokio::time::timeout(WAIT, check.cast(tick(n))).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("tick {n} refused: {error}: {}", check.closed().await),
            Err(_) => {
                panic!("tick {n} waited over {WAIT:?} after {done} resets: the sender stalled")
            }
        }
        if tokio::time::Instant::now() >= next_reset {
            done += proxy.reset_all();
            next_reset += Duration::from_millis(rand::rng().random_range(100..=300));
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_through_resets_at_random_moments_arrives_exactly_once_and_finishes() {
    let secrets = SecretDir::create().unwrap();
    // A small window and a consumer slower than the sender: the sender is paused and
    // resumed, and waits for grants, all the time, so a reset always finds some of it
    // in flight.
    let flags = ["--credit-window", "256", "--actor", "seq-check:check@20000"];
    let far = checker_with(&secrets, "127.0.0.1:0", &flags).await;
    // The checker process and the near node live as long as `checked`.
    let (proxy, mut checked) = through_proxy(&secrets, far).await;
    let (check, heard) = (checked.check.clone(), &mut checked.heard);

    let ticks = send_through_resets(&check, &proxy, 30).await;
    let report = tokio::time::timeout(3 * WAIT, report(&check))
        .await
        .expect("the report within the bound");

    assert_eq!(
        (report.received, report.last, report.duplicates, report.gaps),
        (ticks, ticks, 0, 0),
        "{report:?}"
    );
    // Every interruption was followed by a resume (the last one's signal may still be on
    // its way through the recorder's mailbox: wait for it, bounded).
    let (mut interrupted, mut resumed) = (0, 0);
    while let Ok(Some((_, item))) = tokio::time::timeout(
        if interrupted > 0 && resumed == interrupted {
            Duration::ZERO
        } else {
            WAIT
        },
        heard.recv(),
    )
    .await
    {
        match item {
            Heard::Signal(SessionSignal::Interrupted(..)) => interrupted += 1,
            Heard::Signal(SessionSignal::Resumed(..)) => resumed += 1,
            Heard::Signal(SessionSignal::Flow(..)) | Heard::Message { .. } => {}
            Heard::Signal(other) => panic!("unexpected {other:?}"),
        }
    }
    eprintln!(
        "{ticks} ticks through {} resets: {interrupted} interruptions, {resumed} resumes",
        proxy.cuts()
    );
    assert!(
        interrupted >= 1 && resumed == interrupted,
        "{interrupted} / {resumed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peer_interrupts_then_resumes_with_nothing_lost() {
    let secrets = SecretDir::create().unwrap();
    let Checked {
        far,
        _node,
        mut heard,
        check,
    } = checked(&secrets, |a| a.to_string()).await;
    send_ticks(&check, 1..=1000).await;
    assert_eq!(report(&check).await.received, 1000);

    far.child.signal(Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    // Sent while the peer is frozen: they wait for credit the frozen peer may not have
    // granted yet, so the sender runs beside the freeze, not before it.
    let sending = {
        let check = check.clone();
        tokio::spawn(async move { send_ticks(&check, 1001..=2000).await })
    };
    let (at, _) = signal_where(&mut heard, WAIT, |s| {
        matches!(s, SessionSignal::Interrupted(..)).then_some(())
    })
    .await;
    let detected = at - frozen;
    far.child.signal(Signal::SIGCONT).unwrap();
    let (_, resumption) = signal_where(&mut heard, 3 * WAIT, |s| match s {
        SessionSignal::Resumed(_, resumption) => Some(resumption),
        _ => None,
    })
    .await;
    tokio::time::timeout(3 * WAIT, sending)
        .await
        .expect("the ticks sent during the freeze go once it resumed")
        .unwrap();

    eprintln!(
        "detected in {detected:?}; resumed after {:?}",
        resumption.interrupted_for
    );
    // The defaults promise about 3 s; the bound leaves room for a loaded machine.
    assert!(
        detected < Duration::from_secs(6),
        "detected after {detected:?}"
    );
    let report = report(&check).await;
    assert_eq!(
        (report.received, report.duplicates, report.gaps),
        (2000, 0, 0),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_loses_the_session_then_restart_greets_the_new_one() {
    let secrets = SecretDir::create().unwrap();
    let mut far = checker(&secrets, "127.0.0.1:0").await;
    let addr = far.addr.to_string();
    let node = near(&secrets).await;
    let (owner, mut heard) = recorder().await;
    let check: RemoteRef<SeqCheck> = node
        .connect((&addr, "check"))
        .policy(SessionPolicy::Restart)
        .owner(&owner)
        .await
        .unwrap();
    let first = check.session();
    send_ticks(&check, 1..=100).await;
    assert_eq!(report(&check).await.received, 100);

    far.child.signal(Signal::SIGKILL).unwrap();
    far.child.wait(WAIT).await.unwrap();
    signal_where(&mut heard, WAIT, |s| {
        matches!(s, SessionSignal::Interrupted(..)).then_some(())
    })
    .await;
    send_ticks(&check, 101..=150).await;
    let _far = checker(&secrets, &addr).await;

    let (_, (reason, unconfirmed)) = signal_where(&mut heard, WAIT, |s| match s {
        SessionSignal::Lost(lost) => Some((lost.reason.clone(), lost.unconfirmed.clone())),
        _ => None,
    })
    .await;
    assert!(
        matches!(reason, LostReason::PeerRestarted { .. }),
        "{reason:?}"
    );
    let numbers: Vec<u64> = unconfirmed
        .iter()
        .map(|u| match u.decode::<CheckRequest>().unwrap().kind {
            Some(check_request::Kind::Tick(t)) => t.n,
            other => panic!("not a tick: {other:?}"),
        })
        .collect();
    assert_eq!(numbers.last(), Some(&150), "{numbers:?}");
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    assert!(
        numbers.first().is_some_and(|&n| n <= 101),
        "ticks sent after the kill come back"
    );

    signal_where(&mut heard, WAIT, |s| {
        matches!(s, SessionSignal::Restarted { .. }).then_some(())
    })
    .await;
    let second = check.session();
    assert_ne!(second.id(), first.id());
    assert_ne!(second.peer().incarnation, first.peer().incarnation);
    assert_eq!(
        report(&check).await.received,
        0,
        "a fresh checker behind the same handle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_target_says_why_after_its_last_messages() {
    let secrets = SecretDir::create().unwrap();
    let Checked {
        far: _far,
        _node,
        mut heard,
        check,
    } = checked(&secrets, |a| a.to_string()).await;
    send_ticks(&check, 1..=10).await;

    check
        .cast(StopRequest {
            reason: "maintenance window".into(),
        })
        .await
        .unwrap();

    let (_, last) = tokio::time::timeout(WAIT, heard.recv())
        .await
        .unwrap()
        .unwrap();
    match last {
        Heard::Message { type_url, payload } => {
            assert_eq!(type_url, <CheckReply as prost::Name>::type_url());
            let reply = <CheckReply as prost::Message>::decode(payload).unwrap();
            let Some(check_reply::Kind::Report(report)) = reply.kind else {
                panic!("not a report")
            };
            assert!(report.r#final && report.received == 10, "{report:?}");
        }
        Heard::Signal(signal) => panic!("the final report must come first, got {signal:?}"),
    }
    let (_, reason) = signal_where(&mut heard, WAIT, |s| match s {
        SessionSignal::Lost(lost) => Some(lost.reason.clone()),
        _ => None,
    })
    .await;
    match reason {
        LostReason::PeerEnded(goodbye) => {
            assert_eq!(goodbye.reason, GoodbyeReason::ActorStopped);
            assert_eq!(goodbye.detail, "maintenance window");
        }
        other => panic!("unexpected {other:?}"),
    }
}
