//! The greeting: mutual authentication, unknown actors and unreachable peers each end in
//! a typed error on both sides, and nothing reaches an actor unauthenticated.

mod support;

use duologue::{AuthError, CloseReason, ConnectError, NodeEvent, RefuseReason, RemoteRef};
use support::*;

#[tokio::test]
async fn connect_returns_typed_session_after_mutual_auth() {
    let server = listening_node("server", SECRET).await;
    let (target, mut seen) = probe().await;
    server.register("probe", &target).unwrap();
    let client = dialling_node("client", SECRET).await;
    let (owner, _) = probe().await;

    let remote: RemoteRef<PingPong> = client
        .connect(&addr(&server), "probe", &owner)
        .await
        .unwrap();

    assert_eq!(remote.session().peer(), server.identity());
    assert_eq!(remote.session().actor(), "probe");
    match next_signal(&mut seen).await {
        duologue::SessionSignal::Opened(session) => assert_eq!(session.peer(), client.identity()),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn wrong_secret_is_an_auth_error_on_both_sides() {
    let server = listening_node("server", SECRET).await;
    let (target, mut seen) = probe().await;
    server.register("probe", &target).unwrap();
    let mut server_events = server.events();
    let client = dialling_node("client", "a different secret of 32 bytes!").await;
    let (owner, _) = probe().await;

    let error = client
        .connect::<PingPong, _>(&addr(&server), "probe", &owner)
        .await
        .unwrap_err();

    assert!(
        matches!(
            error,
            ConnectError::Auth {
                error: AuthError::ProofMismatch,
                ..
            }
        ),
        "client sees {error:?}"
    );
    let reason = node_event(&mut server_events, |e| match e {
        NodeEvent::SessionRejected { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(
        reason.auth_error(),
        Some(AuthError::PeerRejectedProof),
        "server sees {reason:?}"
    );
    assert!(seen.try_recv().is_err(), "nothing reached the actor");
}

#[tokio::test]
async fn unknown_actor_is_a_typed_refusal() {
    let server = listening_node("server", SECRET).await;
    let mut server_events = server.events();
    let client = dialling_node("client", SECRET).await;
    let (owner, _) = probe().await;

    let error = client
        .connect::<PingPong, _>(&addr(&server), "nobody", &owner)
        .await
        .unwrap_err();

    assert!(
        matches!(&error, ConnectError::UnknownActor { actor, .. } if actor == "nobody"),
        "client sees {error:?}"
    );
    let reason = node_event(&mut server_events, |e| match e {
        NodeEvent::SessionRejected { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert!(
        matches!(&reason, CloseReason::RefusedLocally(r) if r.reason == RefuseReason::UnknownActor),
        "server sees {reason:?}"
    );
}

#[tokio::test]
async fn stopped_actor_is_refused_like_an_unknown_one() {
    let server = listening_node("server", SECRET).await;
    let (target, _seen) = probe().await;
    server.register("probe", &target).unwrap();
    target
        .stop_and_wait(None, Some(WAIT))
        .await
        .expect("actor stops");
    let client = dialling_node("client", SECRET).await;
    let (owner, _) = probe().await;

    let error = client
        .connect::<PingPong, _>(&addr(&server), "probe", &owner)
        .await
        .unwrap_err();

    assert!(
        matches!(error, ConnectError::UnknownActor { .. }),
        "client sees {error:?}"
    );
}

#[tokio::test]
async fn unreachable_peer_is_a_typed_error() {
    // A port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = dialling_node("client", SECRET).await;
    let (owner, _) = probe().await;

    let error = client
        .connect::<PingPong, _>(&format!("127.0.0.1:{port}"), "probe", &owner)
        .await
        .unwrap_err();

    assert!(
        matches!(error, ConnectError::Unreachable { .. }),
        "client sees {error:?}"
    );
}

#[tokio::test]
async fn address_with_a_scheme_is_rejected() {
    let client = dialling_node("client", SECRET).await;
    let (owner, _) = probe().await;
    let error = client
        .connect::<PingPong, _>("http://127.0.0.1:1", "probe", &owner)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ConnectError::InvalidAddress { .. }),
        "client sees {error:?}"
    );
}

#[tokio::test]
async fn silent_peer_fails_the_handshake_within_its_timeout() {
    // Accepts TCP connections but never speaks HTTP/2.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let client = duologue::Node::builder()
        .name("client")
        .secret(duologue::Secret::new(SECRET).unwrap())
        .session_config(duologue::SessionConfig {
            handshake_timeout: std::time::Duration::from_millis(300),
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let (owner, _) = probe().await;

    let result = tokio::time::timeout(
        WAIT,
        client.connect::<PingPong, _>(&format!("127.0.0.1:{port}"), "probe", &owner),
    )
    .await
    .expect("connect ends by itself");

    assert!(
        matches!(result, Err(ConnectError::Unreachable { .. })),
        "{result:?}"
    );
    hold.abort();
}
