//! The standard gRPC services on a node's own port (runtime/node/server/standard.rs), from
//! tonic-health's and tonic-reflection's generated clients: health says `SERVING` while
//! the node is up and `NOT_SERVING` through its drain, during which the server still
//! answers; it stops when the drain is over. Health and reflection streams have a cap of
//! their own, apart from the unauthenticated streams of sessions (a flood of either
//! leaves the other alone), and the message limits of unauthenticated streams.
//!
//! The drain is held open by a peer that falls silent (a `FaultProxy` blackhole between
//! it and the node), with the node's close linger and keepalive set long, and ended by
//! cutting that peer off.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use duologue::NodeConfig;
use duologue_testkit::FaultProxy;
use duologue_testkit::hostile::{UNAVAILABLE, grpc_status, h2_connection, open_stream};
use duologue_testkit::raw_peer::RawCodec;
use support::*;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const DUOLOGUE: &str = "duologue.v1.Duologue";

/// A node config listening on a free loopback port.
fn listening() -> NodeConfig {
    NodeConfig {
        name: "server".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..NodeConfig::default()
    }
}

/// A new connection to `addr`.
async fn channel(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    tokio::time::timeout(WAIT, endpoint.connect())
        .await
        .expect("connecting ends in time")
}

/// A health client on a new connection to `addr`.
async fn health(addr: SocketAddr) -> HealthClient<Channel> {
    HealthClient::new(channel(addr).await.expect("the node accepts a connection"))
}

fn asking(service: &str) -> Request<HealthCheckRequest> {
    Request::new(HealthCheckRequest {
        service: service.into(),
    })
}

/// What `Check(service)` says.
async fn check(client: &mut HealthClient<Channel>, service: &str) -> Result<ServingStatus, Code> {
    tokio::time::timeout(WAIT, client.check(asking(service)))
        .await
        .expect("Check answers in time")
        .map(|r| r.into_inner().status())
        .map_err(|status| status.code())
}

/// A `Watch(service)` stream, or its refusal.
async fn watch(
    client: &mut HealthClient<Channel>,
    service: &str,
) -> Result<Streaming<HealthCheckResponse>, tonic::Status> {
    tokio::time::timeout(WAIT, client.watch(asking(service)))
        .await
        .expect("Watch answers in time")
        .map(tonic::Response::into_inner)
}

/// The next status a `Watch` stream says (`None`: it ended).
async fn next_status(stream: &mut Streaming<HealthCheckResponse>) -> Option<ServingStatus> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the Watch stream says something in time")
        .expect("the Watch stream does not fail")
        .map(|r| r.status())
}

/// How a `Converse` call that sends nothing is answered: its status, if refused.
async fn converse_refusal(addr: SocketAddr) -> Option<tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await.unwrap());
    tokio::time::timeout(WAIT, grpc.ready())
        .await
        .unwrap()
        .unwrap();
    let path = http::uri::PathAndQuery::from_static("/duologue.v1.Duologue/Converse");
    let outbound = futures::stream::pending::<Bytes>();
    let call = grpc.streaming(Request::new(outbound), path, RawCodec);
    // A refusal comes at once; an accepted stream waits for a greeting, so the bound
    // only ends that wait (and is wide, for a loaded machine).
    match tokio::time::timeout(WAIT, call).await {
        Ok(Err(status)) => Some(status),
        // Accepted (and waiting for a greeting), or answered: not refused.
        Ok(Ok(_)) | Err(_) => None,
    }
}

/// The services `grpc.reflection.v1` lists at `addr`.
async fn listed_services(addr: SocketAddr) -> Result<Vec<String>, tonic::Status> {
    let reply = reflect(addr, MessageRequest::ListServices(String::new())).await?;
    let Some(MessageResponse::ListServicesResponse(list)) = reply else {
        panic!("expected a service list, got {reply:?}");
    };
    Ok(list.service.into_iter().map(|s| s.name).collect())
}

/// One request on a `grpc.reflection.v1` stream; its answer.
async fn reflect(
    addr: SocketAddr,
    request: MessageRequest,
) -> Result<Option<MessageResponse>, tonic::Status> {
    let mut client = ServerReflectionClient::new(channel(addr).await.unwrap());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut replies = tokio::time::timeout(
        WAIT,
        client.server_reflection_info(futures::stream::iter([request])),
    )
    .await
    .expect("reflection answers in time")?
    .into_inner();
    let reply = tokio::time::timeout(WAIT, replies.message())
        .await
        .expect("reflection answers in time")?
        .expect("one answer");
    Ok(reply.message_response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_through_the_drain_and_the_server_stops_after_it() {
    // Long enough that only the silent peer going away ends the drain.
    let long = 3 * WAIT;
    let server = served_probe(
        node_with(NodeConfig {
            shutdown_drain: long,
            close_linger: long,
            // Unanswered pings would end the silent peer's session sooner.
            keepalive_interval: long,
            keepalive_timeout: long,
            ..listening()
        })
        .await,
    )
    .await;
    let addr = server.node.local_addr().unwrap();
    let proxy = FaultProxy::start(addr).await.unwrap();
    let client = dial(
        dialling_node("client", SECRET).await,
        &proxy.addr().to_string(),
        "probe",
    )
    .await;
    client.result.as_ref().expect("the session opens");

    let mut up = health(addr).await;
    assert_eq!(check(&mut up, "").await, Ok(ServingStatus::Serving));
    assert_eq!(check(&mut up, DUOLOGUE).await, Ok(ServingStatus::Serving));
    assert_eq!(check(&mut up, "no.such.Service").await, Err(Code::NotFound));
    let mut watching = watch(&mut up, "").await.unwrap();
    assert_eq!(
        next_status(&mut watching).await,
        Some(ServingStatus::Serving)
    );

    // The peer falls silent: the session's farewell goes unanswered, the drain waits.
    proxy.set_blackhole(true);
    let node = server.node.clone();
    let shutdown = tokio::spawn(async move { node.shutdown().await });
    assert_eq!(
        next_status(&mut watching).await,
        Some(ServingStatus::NotServing)
    );
    // The server still answers, on new connections too: health says so, sessions are
    // refused with a status instead of a closed port.
    let mut draining = health(addr).await;
    assert_eq!(
        check(&mut draining, "").await,
        Ok(ServingStatus::NotServing)
    );
    assert_eq!(
        check(&mut draining, DUOLOGUE).await,
        Ok(ServingStatus::NotServing)
    );
    let refusal = converse_refusal(addr)
        .await
        .expect("a new session is refused");
    assert_eq!(refusal.code(), Code::Unavailable, "{refusal:?}");
    assert!(refusal.message().contains("shutting down"), "{refusal:?}");
    assert!(
        !shutdown.is_finished(),
        "the drain waits for the silent peer"
    );

    // The peer goes: the drain is over, and the server stops.
    proxy.cut_all();
    let drained = tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown ends once the peer is gone")
        .unwrap();
    assert!(drained, "every session ended within the drain");
    assert_eq!(
        next_status(&mut watching).await,
        None,
        "the Watch stream ends"
    );
    assert!(
        channel(addr).await.is_err(),
        "the port is closed after the drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watchers_past_their_cap_are_refused_and_sessions_still_open() {
    let mut config = listening();
    config.admission.max_standard_streams = 4;
    let server = served_probe(node_with(config).await).await;
    let addr = server.node.local_addr().unwrap();
    let mut client = health(addr).await;
    let mut watchers = Vec::new();
    for _ in 0..4 {
        let mut watcher = watch(&mut client, "").await.expect("within the cap");
        assert_eq!(
            next_status(&mut watcher).await,
            Some(ServingStatus::Serving)
        );
        watchers.push(watcher);
    }

    let refused = watch(&mut client, "").await.expect_err("past the cap");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("too many health and reflection streams"),
        "{refused:?}"
    );
    assert_eq!(check(&mut client, "").await, Err(Code::Unavailable));
    let refused = listed_services(addr)
        .await
        .expect_err("reflection shares the cap");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Sessions have places of their own.
    let dialled = dial(
        dialling_node("client", SECRET).await,
        &addr.to_string(),
        "probe",
    )
    .await;
    let remote = dialled
        .result
        .expect("a session opens while the watchers hold the cap");
    let pong = tokio::time::timeout(WAIT, remote.call(Ping { n: 7, body: vec![] }, WAIT))
        .await
        .expect("the call is answered in time")
        .unwrap();
    assert_eq!(pong.n, 7);

    // A watcher that leaves gives its place back.
    let held = server.node.bookkeeping().standard_streams;
    drop(watchers.pop());
    tokio::time::timeout(WAIT, async {
        loop {
            let changed = server.node.bookkeeping_changed();
            if server.node.bookkeeping().standard_streams < held {
                return;
            }
            changed.await;
        }
    })
    .await
    .expect("a place frees when a watcher leaves");
    assert_eq!(
        check(&mut client, "").await,
        Ok(ServingStatus::Serving),
        "the freed place takes a new health check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_streams_at_their_cap_leave_health_and_reflection_answering() {
    let mut config = listening();
    config.admission.max_unauthenticated_streams = 4;
    // The silent streams hold their places until the test is over.
    config.session.handshake_timeout = 3 * WAIT;
    let server = served_probe(node_with(config).await).await;
    let addr = server.node.local_addr().unwrap();
    // Five silent Converse streams: four take every place, one is refused (which one
    // depends on the order their calls run on the node).
    let mut connection = h2_connection(addr).await;
    let mut bodies = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (response, body) = open_stream(&mut connection, addr).await;
        bodies.push(body);
        statuses.push(Box::pin(grpc_status(response)));
    }
    let (first, _, held) = futures::future::select_all(statuses).await;
    assert_eq!(
        first,
        Some(UNAVAILABLE),
        "the first to end is the refused one"
    );

    let mut client = health(addr).await;
    assert_eq!(check(&mut client, "").await, Ok(ServingStatus::Serving));
    let mut watcher = watch(&mut client, DUOLOGUE).await.unwrap();
    assert_eq!(
        next_status(&mut watcher).await,
        Some(ServingStatus::Serving)
    );

    // Their messages are bounded as any unauthenticated stream's.
    let long_name = "x".repeat(64 * 1024);
    assert_eq!(
        check(&mut client, &long_name).await,
        Err(Code::ResourceExhausted)
    );

    let services = listed_services(addr).await.unwrap();
    for service in [
        DUOLOGUE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.iter().any(|s| s == service),
            "{service} not in {services:?}"
        );
    }
    let reply = reflect(
        addr,
        MessageRequest::FileContainingSymbol("duologue.v1.Hello".into()),
    )
    .await
    .unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply else {
        panic!("expected a file descriptor, got {reply:?}");
    };
    let named = |name: &[u8]| {
        files
            .file_descriptor_proto
            .iter()
            .any(|f| f.windows(name.len()).any(|w| w == name))
    };
    assert!(named(b"duologue/v1/session.proto"), "{files:?}");
    drop((held, bodies));
}
