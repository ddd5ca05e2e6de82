//! A fast sender against a slow consumer in another process: the receiver's backlog and
//! the sender's unacknowledged messages both stay under their bounds for the whole run,
//! nothing is lost, and the sender feels the back-pressure (casts handed back by
//! `try_cast`, the receiver's `Pause` and `Resume`).

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
    let far = NodeProcess::start(
        &duologue_exe(),
        "far",
        &[
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--credit-window".into(),
            WINDOW.to_string(),
            "--actor".into(),
            "seq-check:slow@20000".into(),
        ],
        WAIT,
    )
    .await
    .unwrap();
    let secret = std::fs::read_to_string(secrets.secret()).unwrap();
    let near = dialling_node("near", &secret).await;
    let (owner, mut heard) = recorder().await;
    let check: RemoteRef<SeqCheck> = near
        .connect((&far.addr.to_string(), "slow"))
        .owner(&owner)
        .await
        .unwrap();

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
    let report = match check.call(ReportRequest {}, WAIT * 3).await.unwrap() {
        CheckReply {
            kind: Some(check_reply::Kind::Report(report)),
        } => report,
        other => panic!("no report: {other:?}"),
    };

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
