//! The greeting: mutual authentication, unknown actors and unreachable peers each end in
//! a typed error on both sides, and nothing reaches an actor unauthenticated.

mod support;

use std::time::Duration;

use duologue::{
    AuthError, CloseReason, ConnectError, Node, Secret, SessionSignal, settings::SessionConfig,
    wire::RefuseReason,
};
use support::*;

#[tokio::test]
async fn connect_returns_typed_session_after_mutual_auth() {
    let (mut server, client) = probe_session().await;

    let remote = client.result.unwrap();

    assert_eq!(remote.session().peer(), server.node.identity());
    assert_eq!(remote.session().actor(), "probe");
    match next_signal(&mut server.seen).await {
        SessionSignal::Opened(session) => assert_eq!(session.peer(), client.node.identity()),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn wrong_secret_is_an_auth_error_on_both_sides() {
    let mut server = served_probe(listening_node("server", SECRET).await).await;
    let mut server_events = server.node.events();
    let other_secret = "a different secret of 32 bytes!";

    let client = dial(
        dialling_node("client", other_secret).await,
        &addr(&server.node),
        "probe",
    )
    .await;

    let error = client.result.unwrap_err();
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
    let reason = rejection(&mut server_events).await;
    assert_eq!(
        reason.auth_error(),
        Some(AuthError::PeerRejectedProof),
        "server sees {reason:?}"
    );
    assert!(server.seen.try_recv().is_err(), "nothing reached the actor");
}

#[tokio::test]
async fn unknown_actor_is_a_typed_refusal() {
    let server = listening_node("server", SECRET).await;
    let mut server_events = server.events();

    let client = dial(
        dialling_node("client", SECRET).await,
        &addr(&server),
        "nobody",
    )
    .await;

    let error = client.result.unwrap_err();
    assert!(
        matches!(&error, ConnectError::UnknownActor { actor, .. } if actor == "nobody"),
        "client sees {error:?}"
    );
    let reason = rejection(&mut server_events).await;
    assert!(
        matches!(&reason, CloseReason::RefusedLocally(r) if r.reason == RefuseReason::UnknownActor),
        "server sees {reason:?}"
    );
}

#[tokio::test]
async fn stopped_actor_is_refused_like_an_unknown_one() {
    let server = served_probe(listening_node("server", SECRET).await).await;
    server
        .target
        .stop_and_wait(None, Some(WAIT))
        .await
        .expect("actor stops");

    let client = dial(
        dialling_node("client", SECRET).await,
        &addr(&server.node),
        "probe",
    )
    .await;

    let error = client.result.unwrap_err();
    assert!(
        matches!(error, ConnectError::UnknownActor { .. }),
        "client sees {error:?}"
    );
}

#[tokio::test]
async fn unreachable_peer_is_a_typed_error() {
    let peer = format!("127.0.0.1:{}", closed_port());

    let client = dial(dialling_node("client", SECRET).await, &peer, "probe").await;

    let error = client.result.unwrap_err();
    assert!(
        matches!(error, ConnectError::Unreachable { .. }),
        "client sees {error:?}"
    );
}

#[tokio::test]
async fn address_with_a_scheme_is_rejected() {
    let client = dial(
        dialling_node("client", SECRET).await,
        "http://127.0.0.1:1",
        "probe",
    )
    .await;

    let error = client.result.unwrap_err();
    assert!(
        matches!(error, ConnectError::InvalidAddress { .. }),
        "client sees {error:?}"
    );
}

#[tokio::test]
async fn silent_peer_fails_the_handshake_within_its_timeout() {
    // Accepts TCP connections but never speaks HTTP/2.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = silent.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let node = Node::builder()
        .name("client")
        .secret(Secret::new(SECRET).unwrap())
        .session_config(SessionConfig {
            handshake_timeout: Duration::from_millis(300),
            ..SessionConfig::default()
        })
        .start()
        .await
        .unwrap();

    let client = tokio::time::timeout(WAIT, dial(node, &peer, "probe"))
        .await
        .expect("connect ends by itself");

    let error = client.result.unwrap_err();
    assert!(
        matches!(error, ConnectError::Unreachable { .. }),
        "client sees {error:?}"
    );
    hold.abort();
}
