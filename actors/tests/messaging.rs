//! Typed casts and calls between nodes, the merged mailbox, size limits, and the
//! half-close that lets final messages through.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use duologue::LostReason;
use duologue::{
    CallError, CloseReason, Node, RemoteRef, Secret, SendError, SessionSignal,
    settings::SessionConfig, wire::GoodbyeReason,
};
use support::*;
use tokio::sync::mpsc::UnboundedReceiver;

/// A probe served on one node, and a session to it from another node's probe.
/// A session between two nodes. Both nodes live as long as the pair's bindings: a
/// dropped `Node` ends its sessions, so a test keeps `server` and `_client` bound.
struct Pair {
    server: Served,
    owner_seen: UnboundedReceiver<Seen>,
    remote: RemoteRef<PingPong>,
    _client: Node,
}

async fn pair_with(server: Node) -> Pair {
    let server = served_probe(server).await;
    let Dialled {
        node,
        owner_seen,
        result,
    } = dial(
        dialling_node("client", SECRET).await,
        &addr(&server.node),
        "probe",
    )
    .await;
    Pair {
        server,
        owner_seen,
        remote: result.unwrap(),
        _client: node,
    }
}

async fn pair() -> Pair {
    pair_with(listening_node("server", SECRET).await).await
}

fn ping(n: u64) -> Ping {
    Ping { n, body: vec![] }
}

#[tokio::test]
async fn casts_arrive_in_order() {
    let Pair {
        mut server,
        remote,
        _client,
        ..
    } = pair().await;
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
        assert_eq!(next_ping(&mut server.seen).await.0, n);
    }
}

#[tokio::test]
async fn call_returns_the_typed_reply_and_the_callee_reads_the_deadline() {
    let Pair {
        remote,
        server: _server,
        _client,
        ..
    } = pair().await;
    let pong = remote.call(ping(5), Duration::from_secs(5)).await.unwrap();
    assert_eq!(pong.n, 5);
    assert!(
        pong.deadline_left_ms > 0 && pong.deadline_left_ms <= 5000,
        "callee saw {} ms left",
        pong.deadline_left_ms
    );
}

#[tokio::test]
async fn unanswered_call_times_out_with_a_typed_error() {
    let Pair {
        remote,
        server: _server,
        _client,
        ..
    } = pair().await;
    let error = remote
        .call(ping(HOLD), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::Timeout(_)), "{error:?}");
}

#[tokio::test]
async fn a_call_whose_future_is_dropped_leaves_nothing_behind() {
    let Pair {
        mut server,
        remote,
        _client,
        ..
    } = pair().await;
    let session = remote.session();
    {
        let call = remote.call(ping(HOLD), WAIT);
        tokio::pin!(call);
        // Poll the call until the callee holds it, then drop the future.
        tokio::select! {
            _ = &mut call => panic!("a held call cannot complete"),
            () = async {
                while !matches!(next(&mut server.seen).await, Seen::Ping { n: HOLD, .. }) {}
            } => {}
        }
        assert_eq!(session.pending_calls(), 1);
    }
    assert_eq!(
        session.pending_calls(),
        0,
        "the dropped call left its entry"
    );
    // Timed-out and answered calls leave nothing either.
    let _ = remote.call(ping(HOLD), Duration::from_millis(50)).await;
    remote.call(ping(3), WAIT).await.unwrap();
    assert_eq!(session.pending_calls(), 0);
}

#[tokio::test]
async fn dropped_call_fails_at_once_with_a_fault() {
    let Pair {
        remote,
        server: _server,
        _client,
        ..
    } = pair().await;
    let error = remote.call(ping(DROP), WAIT).await.unwrap_err();
    assert!(
        matches!(&error, CallError::Fault(f) if f.code == "no_reply"),
        "{error:?}"
    );
}

#[tokio::test]
async fn one_mailbox_merges_ordered_streams_from_two_peers() {
    let mut server = served_probe(listening_node("server", SECRET).await).await;
    let mut clients = Vec::new();
    for name in ["left", "right"] {
        clients.push(
            dial(
                dialling_node(name, SECRET).await,
                &addr(&server.node),
                "probe",
            )
            .await,
        );
    }
    let remotes: Vec<_> = clients.iter().map(|c| c.result.as_ref().unwrap()).collect();
    for n in 0..500 {
        for (i, remote) in remotes.iter().enumerate() {
            remote.cast(ping(n * 2 + i as u64)).await.unwrap();
        }
    }
    let mut last = [None::<u64>; 2];
    for _ in 0..1000 {
        let (n, session) = next_ping(&mut server.seen).await;
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
    let mut server = served_probe(listening_node("server", SECRET).await).await;
    let client = dialling_node("client", SECRET).await;
    let mut remote_addrs = HashSet::new();
    for _ in 0..8 {
        let dialled = dial(client.clone(), &addr(&server.node), "probe").await;
        dialled.result.unwrap().cast(ping(1)).await.unwrap();
        let (_, session) = next_ping(&mut server.seen).await;
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
    let Pair {
        remote,
        server: _server,
        _client,
        ..
    } = pair().await;
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
    assert_eq!(remote.call(ping(2), WAIT).await.unwrap().n, 2);
}

#[tokio::test]
async fn the_peers_smaller_limit_applies_to_the_sender() {
    let server = Node::builder()
        .name("server")
        .listen("127.0.0.1:0".parse().unwrap())
        .secret(Secret::new(SECRET).unwrap())
        .session_config(SessionConfig {
            max_message_bytes: 1024,
            ..SessionConfig::default()
        })
        .start()
        .await
        .unwrap();
    let Pair {
        remote,
        server: _server,
        _client,
        ..
    } = pair_with(server).await;

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
    let Pair {
        mut server,
        mut owner_seen,
        remote,
        _client,
        ..
    } = pair().await;
    remote.cast(ping(1)).await.unwrap();

    remote.finish();

    let (_, server_session) = next_ping(&mut server.seen).await;
    let finished = loop {
        if let SessionSignal::PeerFinished(session, _) = next_signal(&mut server.seen).await {
            break session;
        }
    };
    assert_eq!(finished, server_session);
    server_session.cast(ping(99)).await.unwrap();
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
    let Pair {
        mut server,
        remote,
        _client,
        ..
    } = pair().await;
    remote.cast(ping(1)).await.unwrap();
    next_ping(&mut server.seen).await;

    server
        .target
        .stop_and_wait(None, Some(WAIT))
        .await
        .expect("actor stops");
    // The next delivery finds the mailbox gone.
    let _ = remote.cast(ping(2)).await;

    let reason = tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    assert!(
        matches!(&reason, CloseReason::Lost(LostReason::PeerEnded(g)) if g.reason == GoodbyeReason::ActorStopped),
        "{reason:?}"
    );
}

#[tokio::test]
async fn node_shutdown_says_goodbye_to_peers() {
    let Pair {
        server,
        remote,
        _client,
        ..
    } = pair().await;
    assert!(server.node.shutdown().await, "drained within the bound");
    let reason = tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    assert!(
        matches!(&reason, CloseReason::Lost(LostReason::PeerEnded(g)) if g.reason == GoodbyeReason::NodeShutdown),
        "{reason:?}"
    );
}

/// Dropping the last handle of a node without `shutdown` (issue 13: "Drop cleans up")
/// ends its sessions, which its peers hear of, and frees its port.
#[tokio::test]
async fn dropping_a_node_ends_its_sessions_and_frees_its_port() {
    let Pair {
        server,
        remote,
        _client,
        ..
    } = pair().await;
    let addr = server.node.local_addr().expect("listening");
    let mut events = server.node.events();
    drop(server);
    let reason = tokio::time::timeout(WAIT, remote.closed())
        .await
        .expect("the peer hears of it");
    assert!(
        !matches!(reason, CloseReason::Finished),
        "ended, not finished: {reason:?}"
    );
    node_event(&mut events, |e| {
        matches!(e, duologue::status::NodeEvent::ServerStopped).then_some(())
    })
    .await;
    std::net::TcpListener::bind(addr).expect("the port is free again");
}

/// A call waiting for its reply when its session closes fails at once, with the reason
/// the session closed, not at its own timeout.
#[tokio::test]
async fn a_pending_call_fails_at_once_when_its_session_closes() {
    let Pair {
        mut server,
        remote,
        _client,
        ..
    } = pair().await;
    let calling = {
        let remote = remote.clone();
        tokio::spawn(async move { remote.call(ping(HOLD), Duration::from_secs(3600)).await })
    };
    // The probe holds the call: it is pending at the caller.
    assert_eq!(next_ping(&mut server.seen).await.0, HOLD);
    remote.session().abort();
    let result = tokio::time::timeout(WAIT, calling)
        .await
        .expect("the pending call ends within the wait bound, not at its hour")
        .unwrap();
    assert!(
        matches!(result, Err(CallError::SessionClosed(_))),
        "{result:?}"
    );
}

/// An owner that stopped before its session opened fails the connect, typed.
#[tokio::test]
async fn connecting_for_an_owner_that_stopped_fails_with_owner_stopped() {
    let server = served_probe(listening_node("server", SECRET).await).await;
    let client = dialling_node("client", SECRET).await;
    let (owner, _seen) = probe().await;
    owner.stop_and_wait(None, None).await.unwrap();
    let result = client
        .connect::<PingPong>((addr(&server.node), "probe"))
        .owner(&owner)
        .await;
    assert!(
        matches!(result, Err(duologue::ConnectError::OwnerStopped)),
        "{result:?}"
    );
}

/// A call on a session that is already over says why it is over, not only that it is
/// closed.
#[tokio::test]
async fn a_call_on_a_closed_session_names_why_it_closed() {
    let Pair {
        remote,
        server: _server,
        _client,
        ..
    } = pair().await;
    remote.session().abort();
    let reason = tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    let error = remote.call(ping(1), WAIT).await.unwrap_err();
    assert!(
        matches!(&error, CallError::SessionClosed(closed) if *closed == reason),
        "{error:?}"
    );
}
