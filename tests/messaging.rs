//! Typed casts and calls between nodes, the merged mailbox, size limits, and the
//! half-close that lets final messages through.

mod support;

use std::time::Duration;

use duologue::{CallError, CloseReason, Node, RemoteRef, SendError, SessionConfig, SessionSignal};
use support::*;

async fn pair() -> (
    Node,
    Node,
    tokio::sync::mpsc::UnboundedReceiver<Seen>,
    RemoteRef<PingPong>,
) {
    let server = listening_node("server", SECRET).await;
    let (target, seen) = probe().await;
    server.register("probe", &target).unwrap();
    let client = dialling_node("client", SECRET).await;
    let (owner, _) = probe().await;
    let remote = client
        .connect(&addr(&server), "probe", &owner)
        .await
        .unwrap();
    (server, client, seen, remote)
}

#[tokio::test]
async fn casts_arrive_in_order() {
    let (_server, _client, mut seen, remote) = pair().await;
    for n in 0..2000 {
        remote
            .cast(Ping {
                n,
                body: vec![7; 64],
            })
            .await
            .unwrap();
    }
    for n in 0..2000 {
        assert_eq!(next_ping(&mut seen).await.0, n);
    }
}

#[tokio::test]
async fn call_returns_the_typed_reply_and_the_callee_reads_the_deadline() {
    let (_server, _client, _seen, remote) = pair().await;
    let pong = remote
        .call(Ping { n: 5, body: vec![] }, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(pong.n, 5);
    assert!(
        pong.deadline_left_ms > 0 && pong.deadline_left_ms <= 5000,
        "callee saw {} ms left",
        pong.deadline_left_ms
    );
}

#[tokio::test]
async fn unanswered_call_times_out_with_a_typed_error() {
    let (_server, _client, _seen, remote) = pair().await;
    let error = remote
        .call(
            Ping {
                n: HOLD,
                body: vec![],
            },
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::Timeout(_)), "{error:?}");
}

#[tokio::test]
async fn dropped_call_fails_at_once_with_a_fault() {
    let (_server, _client, _seen, remote) = pair().await;
    let error = remote
        .call(
            Ping {
                n: DROP,
                body: vec![],
            },
            WAIT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CallError::Fault(f) if f.code == "no_reply"),
        "{error:?}"
    );
}

#[tokio::test]
async fn one_mailbox_merges_ordered_streams_from_two_peers() {
    let server = listening_node("server", SECRET).await;
    let (target, mut seen) = probe().await;
    server.register("probe", &target).unwrap();
    let mut remotes = Vec::new();
    for name in ["left", "right"] {
        let client = dialling_node(name, SECRET).await;
        let (owner, _) = probe().await;
        let remote: RemoteRef<PingPong> = client
            .connect(&addr(&server), "probe", &owner)
            .await
            .unwrap();
        remotes.push((client, remote));
    }
    for n in 0..500 {
        for (i, (_, remote)) in remotes.iter().enumerate() {
            remote
                .cast(Ping {
                    n: n * 2 + i as u64,
                    body: vec![],
                })
                .await
                .unwrap();
        }
    }
    let mut last = [None::<u64>; 2];
    for _ in 0..1000 {
        let (n, session) = next_ping(&mut seen).await;
        let from = usize::from(session.peer().name == "right");
        assert_eq!(n % 2, from as u64, "tagged with the session it came from");
        assert!(
            last[from].is_none_or(|prev| n > prev),
            "each peer's stream stays in order"
        );
        last[from] = Some(n);
    }
    assert_eq!(last, [Some(998), Some(999)]);
}

#[tokio::test]
async fn sessions_to_one_peer_share_one_connection() {
    let server = listening_node("server", SECRET).await;
    let (target, mut seen) = probe().await;
    server.register("probe", &target).unwrap();
    let client = dialling_node("client", SECRET).await;
    let (owner, _) = probe().await;
    let mut remotes = Vec::new();
    for _ in 0..8 {
        let remote: RemoteRef<PingPong> = client
            .connect(&addr(&server), "probe", &owner)
            .await
            .unwrap();
        remotes.push(remote);
    }
    let mut remote_addrs = std::collections::HashSet::new();
    for remote in &remotes {
        remote.cast(Ping { n: 1, body: vec![] }).await.unwrap();
        let (_, session) = next_ping(&mut seen).await;
        remote_addrs.insert(
            session
                .remote_addr()
                .expect("acceptor knows the peer address"),
        );
    }
    assert_eq!(
        remote_addrs.len(),
        1,
        "one TCP connection: {remote_addrs:?}"
    );
}

#[tokio::test]
async fn oversized_message_comes_back_to_the_sender() {
    let (_server, _client, _seen, remote) = pair().await;
    let limit = SessionConfig::default().max_message_bytes as usize;
    let big = Ping {
        n: 1,
        body: vec![0; limit + 1],
    };
    match remote.cast(big.clone()).await {
        Err(SendError::TooLarge {
            message, limit: l, ..
        }) => {
            assert_eq!(message, big);
            assert_eq!(l as usize, limit);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The session is still usable.
    let pong = remote
        .call(Ping { n: 2, body: vec![] }, WAIT)
        .await
        .unwrap();
    assert_eq!(pong.n, 2);
}

#[tokio::test]
async fn the_peers_smaller_limit_applies_to_the_sender() {
    let server = Node::builder()
        .name("server")
        .listen("127.0.0.1:0".parse().unwrap())
        .secret(duologue::Secret::new(SECRET).unwrap())
        .session_config(SessionConfig {
            max_message_bytes: 1024,
            ..SessionConfig::default()
        })
        .start()
        .await
        .unwrap();
    let (target, _seen) = probe().await;
    server.register("probe", &target).unwrap();
    let client = dialling_node("client", SECRET).await;
    let (owner, _) = probe().await;
    let remote: RemoteRef<PingPong> = client
        .connect(&addr(&server), "probe", &owner)
        .await
        .unwrap();

    let result = remote
        .cast(Ping {
            n: 1,
            body: vec![0; 2048],
        })
        .await;

    assert!(
        matches!(result, Err(SendError::TooLarge { limit: 1024, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn half_close_lets_the_peer_send_final_messages_then_both_close() {
    let server = listening_node("server", SECRET).await;
    let (target, mut seen) = probe().await;
    server.register("probe", &target).unwrap();
    let client = dialling_node("client", SECRET).await;
    let (owner, mut owner_seen) = probe().await;
    let remote: RemoteRef<PingPong> = client
        .connect(&addr(&server), "probe", &owner)
        .await
        .unwrap();
    remote.cast(Ping { n: 1, body: vec![] }).await.unwrap();

    remote.finish();

    let (_, server_session) = next_ping(&mut seen).await;
    let finished = loop {
        if let SessionSignal::PeerFinished(session, _) = next_signal(&mut seen).await {
            break session;
        }
    };
    assert_eq!(finished, server_session);
    server_session
        .cast(Ping {
            n: 99,
            body: vec![],
        })
        .await
        .unwrap();
    server_session.finish();
    assert_eq!(
        next_ping(&mut owner_seen).await.0,
        99,
        "the final message reached the finisher"
    );
    let reason = tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    assert_eq!(reason, CloseReason::Finished);
    let reason = tokio::time::timeout(WAIT, server_session.closed())
        .await
        .unwrap();
    assert_eq!(reason, CloseReason::Finished);
    assert_eq!(remote.session().unacked() + server_session.unacked(), 0);
}

#[tokio::test]
async fn stopped_target_ends_the_session_with_its_reason() {
    let server = listening_node("server", SECRET).await;
    let (target, mut seen) = probe().await;
    server.register("probe", &target).unwrap();
    let client = dialling_node("client", SECRET).await;
    let (owner, _) = probe().await;
    let remote: RemoteRef<PingPong> = client
        .connect(&addr(&server), "probe", &owner)
        .await
        .unwrap();
    remote.cast(Ping { n: 1, body: vec![] }).await.unwrap();
    next_ping(&mut seen).await;

    target
        .stop_and_wait(None, Some(WAIT))
        .await
        .expect("actor stops");
    // The next delivery finds the mailbox gone.
    let _ = remote.cast(Ping { n: 2, body: vec![] }).await;

    let reason = tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    assert!(
        matches!(&reason, CloseReason::PeerEnded(g) if g.reason == duologue::GoodbyeReason::ActorStopped),
        "{reason:?}"
    );
}

#[tokio::test]
async fn node_shutdown_says_goodbye_to_peers() {
    let (server, _client, _seen, remote) = pair().await;
    assert!(server.shutdown().await, "drained within the bound");
    let reason = tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    assert!(
        matches!(&reason, CloseReason::PeerEnded(g) if g.reason == duologue::GoodbyeReason::NodeShutdown),
        "{reason:?}"
    );
}
