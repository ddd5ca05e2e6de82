//! Closing politely, and less politely: `close(timeout)` finishes and drains, then aborts
//! what is left; `abort()` ends at once and the peer learns `Aborted`; a node with a
//! thousand open sessions shuts down within its drain bound and its peers learn why; a
//! node that does not listen does not wait for a listener.

mod support;

use std::time::{Duration, Instant};

use duologue::LostReason;
use duologue::{CloseReason, RemoteRef, SessionSignal, wire::GoodbyeReason};
use duologue_actors::chat::join;
use duologue_testkit::Signal;
use duologue_testkit::{NodeProcess, SecretDir};
use ractor::Actor;
use support::*;

#[tokio::test]
async fn abort_ends_at_once_and_the_peer_learns_aborted() {
    let (mut server, client) = probe_session().await;
    let remote = client.result.unwrap();
    remote.cast(Ping { n: 1, body: vec![] }).await.unwrap();
    next_ping(&mut server.seen).await;

    remote.session().abort();

    let reason = tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    assert!(
        matches!(
            reason,
            CloseReason::Ended {
                reason: GoodbyeReason::Aborted,
                ..
            }
        ),
        "{reason:?}"
    );
    let lost = loop {
        if let SessionSignal::Lost(lost) = next_signal(&mut server.seen).await {
            break lost.reason;
        }
    };
    assert!(
        matches!(&lost, LostReason::PeerEnded(g) if g.reason == GoodbyeReason::Aborted),
        "{lost:?}"
    );
}

#[tokio::test]
async fn close_finishes_when_the_peer_finishes_too() {
    let hub = listening_node("hub", SECRET).await;
    let (room, _) = Actor::spawn(None, duologue_actors::chat::ChatRoom, "lobby".into())
        .await
        .unwrap();
    hub.register("lobby", &room).unwrap();
    let member = dialling_node("member", SECRET).await;
    let joined = join(&member, &addr(&hub), "lobby", "ann", WAIT)
        .await
        .unwrap();

    let reason = joined.room.session().close(WAIT).await;

    assert_eq!(reason, CloseReason::Finished);
}

#[tokio::test]
async fn close_aborts_when_the_peer_does_not_finish_in_time() {
    let (mut server, client) = probe_session().await;
    let remote = client.result.unwrap();

    let started = Instant::now();
    let reason = remote.session().close(Duration::from_millis(200)).await;

    assert!(
        matches!(
            reason,
            CloseReason::Ended {
                reason: GoodbyeReason::Aborted,
                ..
            }
        ),
        "{reason:?}"
    );
    assert!(started.elapsed() < WAIT);
    // The probe saw the half-close, then the abort.
    let mut saw_finish = false;
    loop {
        match next_signal(&mut server.seen).await {
            SessionSignal::PeerFinished(..) => saw_finish = true,
            SessionSignal::Lost(lost) => {
                assert!(
                    matches!(&lost.reason, LostReason::PeerEnded(g) if g.reason == GoodbyeReason::Aborted)
                );
                break;
            }
            _ => {}
        }
    }
    assert!(saw_finish);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_thousand_sessions_shuts_down_within_its_drain_bound() {
    const SESSIONS: usize = 1000;
    let drain = Duration::from_secs(3);
    let secrets = SecretDir::create().unwrap();
    let mut far = NodeProcess::start(
        &duologue_exe(),
        "far",
        &[
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--shutdown-drain".into(),
            "3s".into(),
            "--actor".into(),
            "seq-check:check".into(),
        ],
        WAIT,
    )
    .await
    .unwrap();
    let secret = std::fs::read_to_string(secrets.secret()).unwrap();
    let near = dialling_node("near", &secret).await;
    let (owner, _heard) = recorder().await;
    let mut sessions = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let check: RemoteRef<duologue_actors::seq_check::SeqCheck> = near
            .connect((&far.addr.to_string(), "check"))
            .owner(&owner)
            .await
            .unwrap();
        sessions.push(check.session());
    }

    let started = Instant::now();
    far.child.signal(Signal::SIGTERM).unwrap();
    let code = far.child.wait(WAIT).await.unwrap();
    let took = started.elapsed();

    assert_eq!(code, Some(0));
    assert!(
        took < drain + Duration::from_secs(2),
        "shutdown took {took:?}"
    );
    for session in sessions {
        let reason = tokio::time::timeout(WAIT, session.closed()).await.unwrap();
        assert!(
            matches!(&reason, CloseReason::Lost(LostReason::PeerEnded(g)) if g.reason == GoodbyeReason::NodeShutdown),
            "{reason:?}"
        );
    }
    eprintln!("{SESSIONS} sessions: shutdown took {took:?}");
}

#[tokio::test]
async fn a_node_that_does_not_listen_shuts_down_without_waiting_for_a_listener() {
    // The linger bounds how long a listening node waits for its listener to close; a node
    // that only dials has none, and must not wait it out.
    let config = duologue::NodeConfig {
        close_linger: Duration::from_secs(3600),
        ..Default::default()
    };
    let server = served_probe(listening_node("server", SECRET).await).await;
    let near = duologue::Node::builder()
        .name("near")
        .config(config)
        .secret(duologue::Secret::new(SECRET).unwrap())
        .start()
        .await
        .unwrap();
    let (owner, _) = probe().await;
    let remote: RemoteRef<PingPong> = near
        .connect((&addr(&server.node), "probe"))
        .owner(&owner)
        .await
        .unwrap();
    remote
        .call(Ping { n: 1, body: vec![] }, WAIT)
        .await
        .unwrap();

    let drained = tokio::time::timeout(WAIT, near.shutdown())
        .await
        .expect("the shutdown ends within the wait bound, far inside the linger");
    assert!(drained);
}
