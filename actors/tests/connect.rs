//! Connecting survives transient faults: a connection reset during the first handshake or
//! refused because the peer is not listening yet is retried within the connect deadline;
//! a peer that never comes is a typed error soon after that deadline; a typed refusal
//! fails at once. Also: a call on a just-established session survives a broken stream.

mod support;

use std::time::{Duration, Instant};

use duologue::{AuthError, ConnectError, Node, NodeConfig, RemoteRef};
use duologue_testkit::FaultProxy;
use support::*;

/// A dialling node whose connect deadline is `deadline`.
async fn dialling(deadline: Duration, secret: &str) -> Node {
    Node::builder()
        .name("client")
        .connect_timeout(deadline)
        .secret(duologue::Secret::new(secret).unwrap())
        .start()
        .await
        .expect("node starts")
}

/// A served probe, and a fault proxy in front of its node.
async fn proxied_probe() -> (Served, FaultProxy) {
    let server = served_probe(listening_node("server", SECRET).await).await;
    let proxy = FaultProxy::start(server.node.local_addr().unwrap())
        .await
        .unwrap();
    (server, proxy)
}

/// Connects `client`'s `owner` to the probe at `target` in a task of its own.
fn connect_in_background(
    client: &Node,
    target: String,
    owner: ractor::ActorRef<duologue::SessionMsg>,
) -> tokio::task::JoinHandle<Result<RemoteRef<PingPong>, ConnectError>> {
    let client = client.clone();
    tokio::spawn(async move { client.connect((&target, "probe")).owner(&owner).await })
}

/// The session `connecting` opened, proven by a call through it.
async fn answers_calls(
    connecting: tokio::task::JoinHandle<Result<RemoteRef<PingPong>, ConnectError>>,
) -> RemoteRef<PingPong> {
    let remote = tokio::time::timeout(WAIT, connecting)
        .await
        .expect("connect ends within the wait bound")
        .unwrap()
        .expect("connect succeeds");
    let pong = remote
        .call(Ping { n: 5, body: vec![] }, WAIT)
        .await
        .unwrap();
    assert_eq!(pong.n, 5);
    remote
}

#[tokio::test]
async fn connect_survives_resets_during_the_first_handshake() {
    let (_server, proxy) = proxied_probe().await;
    let client = dialling(WAIT, SECRET).await;
    let (owner, _) = probe().await;
    // Connections reach the proxy but not the server: the handshake cannot complete.
    proxy.set_blackhole(true);
    let connecting = connect_in_background(&client, proxy.addr().to_string(), owner);

    for attempt in 1..=3 {
        tokio::time::timeout(WAIT, proxy.accepted(attempt))
            .await
            .expect("the retry reaches the proxy within the wait bound");
        proxy.cut_all();
    }
    proxy.set_blackhole(false);

    answers_calls(connecting).await;
    assert_eq!(proxy.cuts(), 3);
}

#[tokio::test]
async fn connect_waits_for_a_peer_that_starts_listening_late() {
    let port = closed_port();
    let client = dialling(WAIT, SECRET).await;
    let (owner, _) = probe().await;
    let mut events = client.events();
    let connecting = connect_in_background(&client, format!("127.0.0.1:{port}"), owner);
    // At least one attempt was refused before the server exists.
    rejection(&mut events).await;

    let config = NodeConfig {
        name: "late".into(),
        listen: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        ..NodeConfig::default()
    };
    let _server = served_probe(node_with(config).await).await;

    answers_calls(connecting).await;
}

#[tokio::test]
async fn a_peer_that_never_comes_is_unreachable_soon_after_the_deadline() {
    let deadline = Duration::from_millis(1500);
    let client = dialling(deadline, SECRET).await;
    let (owner, _) = probe().await;
    let target = format!("127.0.0.1:{}", closed_port());
    let started = Instant::now();

    let result = tokio::time::timeout(
        deadline + WAIT,
        client.connect::<PingPong>((&target, "probe")).owner(&owner),
    )
    .await
    .expect("connect ends by itself");

    let elapsed = started.elapsed();
    match result {
        Err(ConnectError::Unreachable { attempts, .. }) => {
            assert!(attempts >= 2, "retried: {attempts} attempts");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // The last backoff (at most `reconnect_max`, 1 s) is not waited out past the deadline.
    let margin = Duration::from_secs(1);
    assert!(
        elapsed + client.config().reconnect_max >= deadline,
        "gave up early: {elapsed:?}"
    );
    assert!(elapsed <= deadline + margin, "gave up late: {elapsed:?}");
}

#[tokio::test]
async fn a_wrong_secret_fails_at_once_without_retries() {
    let server = served_probe(listening_node("server", SECRET).await).await;
    let client = dialling(WAIT, "a different secret of 32 bytes!").await;
    let (owner, _) = probe().await;
    let started = Instant::now();

    let result = client
        .connect::<PingPong>((&addr(&server.node), "probe"))
        .owner(&owner)
        .await;

    assert!(
        matches!(
            result,
            Err(ConnectError::Auth {
                error: AuthError::ProofMismatch,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "no retries");
}

#[tokio::test]
async fn an_unknown_actor_fails_at_once_without_retries() {
    let server = served_probe(listening_node("server", SECRET).await).await;
    let client = dialling(WAIT, SECRET).await;
    let (owner, _) = probe().await;
    let started = Instant::now();

    let result = client
        .connect::<PingPong>((&addr(&server.node), "nobody"))
        .owner(&owner)
        .await;

    assert!(
        matches!(result, Err(ConnectError::UnknownActor { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "no retries");
}

#[tokio::test]
async fn a_call_on_a_just_established_session_survives_a_cut() {
    let (_server, proxy) = proxied_probe().await;
    let client = dialling(WAIT, SECRET).await;
    let (owner, _) = probe().await;
    let remote: RemoteRef<PingPong> = client
        .connect((&proxy.addr().to_string(), "probe"))
        .owner(&owner)
        .await
        .unwrap();

    // The call goes out into a proxy that forwards nothing, then the stream is cut.
    proxy.set_blackhole(true);
    let call = remote.call(
        Ping {
            n: 11,
            body: vec![],
        },
        WAIT,
    );
    let cut = async {
        proxy.cut_all();
        proxy.set_blackhole(false);
    };
    let (reply, ()) = tokio::join!(call, cut);

    assert_eq!(reply.unwrap().n, 11);
    assert_eq!(proxy.cuts(), 1);
}

/// A node admitting `per_connection` handshakes at a time on one connection, and dialling
/// so; a refused attempt would be retried only after a backoff past `deadline`.
async fn admitting(name: &str, per_connection: usize, deadline: Duration, listen: bool) -> Node {
    let mut config = NodeConfig::default();
    config.admission.max_unauthenticated_streams_per_connection = per_connection;
    config.reconnect_base = deadline * 4;
    config.reconnect_max = deadline * 4;
    let builder = Node::builder()
        .name(name)
        .config(config)
        .connect_timeout(deadline)
        .secret(duologue::Secret::new(SECRET).unwrap());
    let builder = if listen {
        builder.listen("127.0.0.1:0".parse().unwrap())
    } else {
        builder
    };
    builder.start().await.expect("node starts")
}

#[tokio::test]
async fn a_crowd_of_sessions_opened_at_once_waits_for_the_peers_handshake_places() {
    // The server refuses a fifth handshake in flight on a connection; the client, opening
    // 64 sessions at once over its one connection, keeps to four. A refusal would fail its
    // connect: the retry's backoff (4x the deadline) passes the connect deadline.
    let deadline = Duration::from_secs(5);
    let server = served_probe(admitting("server", 4, deadline, true).await).await;
    let client = admitting("client", 4, deadline, false).await;
    let (owner, _) = probe().await;
    let target = addr(&server.node);
    let connecting: Vec<_> = (0..64)
        .map(|_| connect_in_background(&client, target.clone(), owner.clone()))
        .collect();
    for connecting in connecting {
        answers_calls(connecting).await;
    }
}
