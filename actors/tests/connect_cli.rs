//! `--connect-timeout` across real processes: `duologue chat` outlasts a connection reset
//! during its first handshake and a node that starts after it, and gives up (exit 5) once
//! its connect deadline passed. Children are killed when their guards drop.

mod support;

use std::time::{Duration, Instant};

use duologue_testkit::{ChildGuard, NodeProcess, SecretDir};
use support::*;

/// `duologue chat` as `user` in room `lobby` at `peer`, with `--connect-timeout`.
fn member(user: &str, peer: &str, secrets: &SecretDir, connect_timeout: &str) -> ChildGuard {
    let args = [
        "chat",
        "--peer",
        peer,
        "--room",
        "lobby",
        "--user",
        user,
        "--connect-timeout",
        connect_timeout,
        "--secret-file",
    ]
    .map(String::from)
    .into_iter()
    .chain([secrets.secret().display().to_string()])
    .collect::<Vec<_>>();
    ChildGuard::spawn(user, &duologue_exe(), &args).expect("chat starts")
}

#[tokio::test]
async fn chat_outlasts_a_reset_and_a_node_that_starts_after_it() {
    let secrets = SecretDir::create().unwrap();
    // The port answers TCP but resets the first connection, as a node going down would.
    let holder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen = holder.local_addr().unwrap().to_string();
    let mut ann = member("ann", &listen, &secrets, "20s");
    let (socket, _) = tokio::time::timeout(WAIT, holder.accept())
        .await
        .expect("chat dials within the wait bound")
        .unwrap();
    socket.set_zero_linger().unwrap();
    drop(socket);
    drop(holder);

    let _hub = NodeProcess::start(
        &duologue_exe(),
        "hub",
        &[
            "--listen".into(),
            listen,
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--actor".into(),
            "chat-room:lobby".into(),
            "--connect-timeout".into(),
            "2s".into(),
            "--restart-timeout".into(),
            "5s".into(),
        ],
        WAIT,
    )
    .await
    .expect("node starts on the same port");

    let joined = ann.stderr_until("joined", WAIT).await.unwrap();
    assert!(joined.contains("lobby"), "{joined}");
    ann.close_stdin();
    assert_eq!(ann.wait(WAIT).await.unwrap(), Some(0));
}

#[tokio::test]
async fn chat_gives_up_once_its_connect_timeout_passed() {
    let secrets = SecretDir::create().unwrap();
    let peer = format!("127.0.0.1:{}", closed_port());
    let started = Instant::now();
    let mut gus = member("gus", &peer, &secrets, "500ms");

    let code = gus.wait(WAIT).await.unwrap();

    assert_eq!(code, Some(5));
    let line = gus.stderr_line(WAIT).await.unwrap().unwrap_or_default();
    assert!(line.contains("cannot reach"), "{line}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
