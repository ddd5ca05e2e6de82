//! A hostile client of a duologue node, shared by `tests/hostile_admission.rs` and
//! `benches/hostile.rs`: raw HTTP/2 streams to the node's `Converse` method (as a client
//! that ignores `docs/protocol.md`), a node started under a descriptor limit, and a legitimate chat member
//! that checks the node still serves.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use duologue::{Node, Secret};
use duologue_actors::chat::proto::Text;
use duologue_actors::chat::{ChatEvent, join};
use duologue_testkit::{ChildGuard, ClusterError, NodeProcess, SecretDir};
use tokio::net::TcpStream;

/// Upper bound of any single wait.
const WAIT: Duration = Duration::from_secs(10);

/// The path of duologue's one gRPC method.
pub const CONVERSE: &str = "/duologue.v1.Duologue/Converse";

/// gRPC's `UNAVAILABLE`.
pub const UNAVAILABLE: i32 = 14;

/// A `duologue node` hosting room `lobby`, with `extra` flags.
pub async fn room_node(secrets: &SecretDir, extra: &[&str]) -> NodeProcess {
    let mut args = vec![
        "--secret-file".to_owned(),
        secrets.secret().display().to_string(),
        "--actor".to_owned(),
        "chat-room:lobby".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    NodeProcess::start(
        env!("CARGO_BIN_EXE_duologue").as_ref(),
        "target",
        &args,
        WAIT,
    )
    .await
    .unwrap()
}

/// A member that knows the secret joins `lobby` at `addr` and gets a text acknowledged.
pub async fn legitimate_member_talks(addr: SocketAddr, secret: &Path) {
    try_legitimate_member(addr, secret).await.unwrap();
}

/// As [`legitimate_member_talks`], saying what failed instead of panicking.
pub async fn try_legitimate_member(addr: SocketAddr, secret: &Path) -> Result<(), String> {
    let secret = Secret::from_file(secret).map_err(|e| e.to_string())?;
    let node = Node::builder()
        .name("alice-node")
        .secret(secret)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let outcome = member_talks(&node, addr).await;
    node.shutdown().await;
    outcome
}

async fn member_talks(node: &Node, addr: SocketAddr) -> Result<(), String> {
    let mut alice = join(node, &addr.to_string(), "lobby", "alice", WAIT)
        .await
        .map_err(|e| format!("join: {e}"))?;
    alice
        .room
        .cast(Text {
            client_seq: 1,
            text: "hello".into(),
        })
        .await
        .map_err(|e| format!("cast: {e}"))?;
    loop {
        let event = tokio::time::timeout(WAIT, alice.events.recv())
            .await
            .map_err(|_| "no event in time".to_owned())?
            .ok_or_else(|| "the session ended".to_owned())?;
        match event {
            ChatEvent::Presence(_) => {}
            ChatEvent::Acked(ack) if ack.client_seq == 1 => return Ok(()),
            other => return Err(format!("expected an ack, got {other:?}")),
        }
    }
}

/// One raw HTTP/2 connection to the node, as a client that ignores `docs/protocol.md`.
pub async fn h2_connection(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// Opens a `Converse` stream and leaves its request body open.
pub async fn open_stream(
    send: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{CONVERSE}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut ready = tokio::time::timeout(WAIT, send.clone().ready())
        .await
        .expect("the connection takes a stream")
        .unwrap();
    let pair = ready.send_request(request, false).unwrap();
    *send = ready;
    pair
}

/// The `grpc-status` a stream ended with (from its headers or trailers), within [`WAIT`].
pub async fn grpc_status(response: h2::client::ResponseFuture) -> Option<i32> {
    let outcome = tokio::time::timeout(WAIT, async move {
        let response = response.await.ok()?;
        if let Some(status) = response.headers().get("grpc-status") {
            return status.to_str().ok()?.parse().ok();
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.ok()?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.ok()??;
        trailers.get("grpc-status")?.to_str().ok()?.parse().ok()
    })
    .await;
    outcome.expect("the stream ends in time")
}

/// A `duologue node` hosting room `lobby` with `extra` flags, started through `prlimit`
/// with `nofile` (`SOFT:HARD`) when given: the process, its session address and its admin
/// address (when `--metrics` is among `extra`).
pub async fn limited_node(
    secrets: &SecretDir,
    nofile: Option<&str>,
    extra: &[&str],
) -> Result<(ChildGuard, SocketAddr, Option<SocketAddr>), ClusterError> {
    let exe = env!("CARGO_BIN_EXE_duologue");
    let mut args = vec![
        "node".to_owned(),
        "--name".into(),
        "target".into(),
        "--secret-file".into(),
        secrets.secret().display().to_string(),
        "--actor".into(),
        "chat-room:lobby".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut child = match nofile {
        Some(nofile) => {
            let mut limited = vec![format!("--nofile={nofile}"), exe.to_owned()];
            limited.append(&mut args);
            ChildGuard::spawn("target", Path::new("prlimit"), &limited)?
        }
        None => ChildGuard::spawn("target", Path::new(exe), &args)?,
    };
    let (addr, admin) = addresses(&mut child, extra.contains(&"--metrics")).await?;
    Ok((child, addr, admin))
}

/// The `listening on ADDR` line and, with an admin address, the `metrics on` one.
pub async fn addresses(
    child: &mut ChildGuard,
    admin: bool,
) -> Result<(SocketAddr, Option<SocketAddr>), ClusterError> {
    let addr = address(child, &["listening on "]).await?;
    if !admin {
        return Ok((addr, None));
    }
    let admin = address(child, &["metrics on http://", "metrics on https://"]).await?;
    Ok((addr, Some(admin)))
}

/// The address on `child`'s next stdout line, after one of `prefixes`.
async fn address(child: &mut ChildGuard, prefixes: &[&str]) -> Result<SocketAddr, ClusterError> {
    let line = child
        .stdout_line(WAIT)
        .await?
        .ok_or_else(|| ClusterError::Unexpected(format!("{} exited", child.name())))?;
    prefixes
        .iter()
        .find_map(|p| line.strip_prefix(p))
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| ClusterError::Unexpected(format!("expected {prefixes:?}, got {line:?}")))
}
