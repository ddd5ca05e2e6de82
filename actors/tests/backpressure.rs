//! A fast sender against a slow consumer in another process: the receiver's backlog and
//! the sender's unacknowledged messages both stay under their bounds for the whole run,
//! nothing is lost, and the sender feels the back-pressure (casts handed back by
//! `try_cast`, the receiver's `Pause` and `Resume`); and a slow consumer holds back only
//! its own session, not the others on the same connection.

mod support;

use duologue::FlowSignal;
use duologue::SessionSignal;
use duologue::{RemoteRef, SendError, settings::SessionConfig};
use duologue_actors::seq_check::SeqCheck;
use duologue_actors::seq_check::proto::{CheckReply, ReportRequest, Tick, check_reply};
use duologue_testkit::{NodeProcess, SecretDir};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_bounds_both_sides_and_loses_nothing() {
    const WINDOW: u64 = 2_000;
    const TICKS: u64 = 30_000;
    let secrets = SecretDir::create().unwrap();
    // The consumer takes 20 000 ticks a second; the sender could do far more.
    let (_far, addr, near) = far_and_near(&secrets, WINDOW, &["seq-check:slow@20000"]).await;
    let (owner, mut heard) = recorder().await;
    let check: RemoteRef<SeqCheck> = near.connect((&addr, "slow")).owner(&owner).await.unwrap();

    let (mut handed_back, mut most_unacked) = (0, 0);
    for n in 1..=TICKS {
        let tick = Tick {
            n,
            filler: bytes::Bytes::from_static(&[7; 64]),
        };
        if let Err(SendError::HeldBack { message: held, .. }) = check.try_cast(tick) {
            handed_back += 1;
            check.cast(held).await.unwrap();
        }
        most_unacked = most_unacked.max(check.session().unacked());
    }
    let report = report_of(&check).await;

    eprintln!(
        "{TICKS} ticks: {handed_back} handed back by try_cast, sender held at most {most_unacked}, \
         receiver backlog at most {}",
        report.max_backlog
    );
    assert_eq!(
        (report.received, report.duplicates, report.gaps),
        (TICKS, 0, 0)
    );
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
    assert!(handed_back > 0, "the sender never felt back-pressure");
    let (mut pauses, mut resumes) = (0, 0);
    while let Ok((_, item)) = heard.try_recv() {
        match item {
            Heard::Signal(SessionSignal::Flow(_, FlowSignal::Pause)) => pauses += 1,
            Heard::Signal(SessionSignal::Flow(_, FlowSignal::Resume)) => resumes += 1,
            _ => {}
        }
    }
    assert!(
        pauses > 0 && resumes > 0,
        "{pauses} pauses, {resumes} resumes"
    );
}

/// A `duologue node` process with a credit window of `window` hosting `actors`, its
/// session address, and a node of this process to talk to it.
async fn far_and_near(
    secrets: &SecretDir,
    window: u64,
    actors: &[&str],
) -> (NodeProcess, String, duologue::Node) {
    let mut args = vec![
        "--secret-file".to_owned(),
        secrets.secret().display().to_string(),
        "--credit-window".to_owned(),
        window.to_string(),
    ];
    for actor in actors {
        args.extend(["--actor".to_owned(), (*actor).to_owned()]);
    }
    let far = NodeProcess::start(&duologue_exe(), "far", &args, WAIT)
        .await
        .unwrap();
    let secret = std::fs::read_to_string(secrets.secret()).unwrap();
    let near = dialling_node("near", &secret).await;
    let addr = far.addr.to_string();
    (far, addr, near)
}

/// The report of a sequence checker.
async fn report_of(check: &RemoteRef<SeqCheck>) -> duologue_actors::seq_check::proto::Report {
    match check.call(ReportRequest {}, WAIT * 3).await.unwrap() {
        CheckReply {
            kind: Some(check_reply::Kind::Report(report)),
        } => report,
        other => panic!("no report: {other:?}"),
    }
}

fn tick(n: u64) -> Tick {
    Tick {
        n,
        filler: bytes::Bytes::from_static(&[7; 1024]),
    }
}

/// Two sessions on one connection: the one whose consumer takes 10 messages a second
/// holds its own sender back, and the other goes on at full speed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_does_not_slow_another_session_on_the_same_connection() {
    const FAST_TICKS: u64 = 5_000;
    let secrets = SecretDir::create().unwrap();
    let (_far, addr, near) =
        far_and_near(&secrets, 200, &["seq-check:slow@10", "seq-check:fast"]).await;
    let (owner, _heard) = recorder().await;
    let slow: RemoteRef<SeqCheck> = near.connect((&addr, "slow")).owner(&owner).await.unwrap();
    let fast: RemoteRef<SeqCheck> = near.connect((&addr, "fast")).owner(&owner).await.unwrap();
    assert_eq!(
        near.bookkeeping().links,
        1,
        "both sessions share one connection"
    );

    // The slow session takes casts until its peer holds it back.
    let mut n = 0;
    loop {
        n += 1;
        match slow.try_cast(tick(n)) {
            Ok(()) => {}
            Err(SendError::HeldBack { .. }) => break,
            Err(other) => panic!("{other}"),
        }
    }
    // Meanwhile the other session delivers everything, each in its order.
    for n in 1..=FAST_TICKS {
        fast.cast(tick(n)).await.unwrap();
    }
    let report = report_of(&fast).await;
    assert_eq!(
        (report.received, report.duplicates, report.gaps),
        (FAST_TICKS, 0, 0)
    );
    assert!(n > 1, "the slow session took casts before it was held back");
}
