//! A hostile client of a duologue node, for the admission tests and the `hostile` bench:
//! raw HTTP/2 streams to the node's `Converse` method (as a client that ignores
//! `docs/protocol.md`), and a chat room node to attack, started under a descriptor limit
//! when asked.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::{ChildGuard, ClusterError, NodeProcess, SecretDir};

/// Upper bound of any single wait.
const WAIT: Duration = Duration::from_secs(10);

/// The path of duologue's one gRPC method.
pub const CONVERSE: &str = "/duologue.v1.Duologue/Converse";

/// gRPC's `UNAVAILABLE`.
pub const UNAVAILABLE: i32 = 14;

/// A `duologue node` (`exe` is the `duologue` binary) hosting room `lobby`, with `extra`
/// flags.
///
/// # Panics
/// When it does not start listening within 10 s.
pub async fn room_node(exe: &Path, secrets: &SecretDir, extra: &[&str]) -> NodeProcess {
    let mut args = vec![
        "--secret-file".to_owned(),
        secrets.secret().display().to_string(),
        "--actor".to_owned(),
        "chat-room:lobby".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    NodeProcess::start(exe, "target", &args, WAIT)
        .await
        .unwrap()
}

/// One raw HTTP/2 connection to the node, as a client that ignores `docs/protocol.md`.
///
/// # Panics
/// When the connection or its HTTP/2 handshake fails.
pub async fn h2_connection(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// Opens a `Converse` stream and leaves its request body open.
///
/// # Panics
/// When the connection does not take a stream within 10 s.
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

/// The `grpc-status` a stream ended with (from its headers or trailers), within 10 s.
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

/// A `duologue node` (`exe` is the `duologue` binary) hosting room `lobby` with `extra`
/// flags, started through `prlimit` with `nofile` (`SOFT:HARD`) when given: the process,
/// its session address and its admin address (when `--metrics` is among `extra`).
///
/// # Errors
/// [`ClusterError`] when it does not start or say its addresses within 10 s.
pub async fn limited_node(
    exe: &Path,
    secrets: &SecretDir,
    nofile: Option<&str>,
    extra: &[&str],
) -> Result<(ChildGuard, SocketAddr, Option<SocketAddr>), ClusterError> {
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
            let mut limited = vec![format!("--nofile={nofile}"), exe.display().to_string()];
            limited.append(&mut args);
            ChildGuard::spawn("target", Path::new("prlimit"), &limited)?
        }
        None => ChildGuard::spawn("target", exe, &args)?,
    };
    let (addr, admin) = addresses(&mut child, extra.contains(&"--metrics")).await?;
    Ok((child, addr, admin))
}

/// The `listening on ADDR` line and, with an admin address, the `metrics on` one.
///
/// # Errors
/// [`ClusterError`] when `child` says something else or nothing within 10 s.
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
