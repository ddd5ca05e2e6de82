//! The wire protocol is not Rust-only: a chat member written in Python on `grpcio`
//! (`tests/python/chat_client.py`, nothing of duologue's) joins a room on a real
//! `duologue node` process and talks with a Rust member (`duologue chat`) in its own
//! process.
//!
//! Setup, all in a throwaway directory removed at the end (`tests/support/python.rs`): a
//! virtualenv with `grpcio` from PyPI, and Python stubs generated from `proto/`, so the
//! client always speaks the protos of this tree. No Python, no venv or no PyPI is a
//! failure with a message saying which, never a silent skip. Every wait is bounded; every
//! child is killed when its guard drops.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use duologue_testkit::{ChildGuard, FaultProxy, NodeProcess, SecretDir};
use support::python::{PythonEnv, python_env, script};
use support::*;
use tokio::io::AsyncWriteExt;

fn client_script() -> PathBuf {
    script("chat_client.py")
}

/// A node hosting `chat-room:lobby`, with `extra` options.
async fn room_node(secrets: &SecretDir, extra: &[&str]) -> NodeProcess {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--actor",
        "chat-room:lobby",
        "--secret-file",
    ]
    .map(String::from)
    .into_iter()
    .chain([secrets.secret().display().to_string()])
    .chain(extra.iter().map(|s| s.to_string()))
    .collect::<Vec<_>>();
    NodeProcess::start(&duologue_exe(), "hub", &args, WAIT)
        .await
        .expect("node starts")
}

/// A Rust member: `duologue chat`.
fn rust_member(user: &str, peer: &str, secret: &Path) -> ChildGuard {
    rust_member_with(user, peer, secret, &[])
}

/// A Rust member with `extra` options.
fn rust_member_with(user: &str, peer: &str, secret: &Path, extra: &[String]) -> ChildGuard {
    let args = ["chat", "--peer", peer, "--room", "lobby", "--user", user]
        .map(String::from)
        .into_iter()
        .chain(["--secret-file".into(), secret.display().to_string()])
        .chain(extra.iter().cloned())
        .collect::<Vec<_>>();
    ChildGuard::spawn(user, &duologue_exe(), &args).expect("duologue chat starts")
}

/// A Python member: `chat_client.py`, unbuffered.
fn python_member(env: &PythonEnv, user: &str, peer: &str, room: &str, secret: &Path) -> ChildGuard {
    python_member_with(env, user, peer, room, secret, &[])
}

/// A Python member with `extra` options.
fn python_member_with(
    env: &PythonEnv,
    user: &str,
    peer: &str,
    room: &str,
    secret: &Path,
    extra: &[String],
) -> ChildGuard {
    let mut args = vec![
        "-u".into(),
        client_script().display().to_string(),
        "--peer".into(),
        peer.into(),
        "--room".into(),
        room.into(),
        "--user".into(),
        user.into(),
        "--secret-file".into(),
        secret.display().to_string(),
        "--stubs".into(),
        env.stubs.display().to_string(),
    ];
    args.extend_from_slice(extra);
    ChildGuard::spawn(user, &env.python, &args).expect("the Python client starts")
}

async fn say(member: &mut ChildGuard, text: &str) {
    let stdin = member.stdin.as_mut().expect("stdin open");
    stdin
        .write_all(format!("{text}\n").as_bytes())
        .await
        .unwrap();
    stdin.flush().await.unwrap();
}

async fn hears(member: &mut ChildGuard) -> String {
    let problem = match member.stdout_line(WAIT).await {
        Ok(Some(line)) => return line,
        Ok(None) => "ended its stdout".to_owned(),
        Err(e) => e.to_string(),
    };
    let name = member.name().to_owned();
    panic!("{name}: {problem}; its stderr: {:#?}", rest(member).await)
}

/// Reads stderr up to a line containing `needle` (bounded by `WAIT`); on failure, panics
/// with every stderr line seen, so a failing client explains itself.
async fn stderr_until(member: &mut ChildGuard, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match member.stderr_line(left).await {
            Ok(Some(line)) if line.contains(needle) => return line,
            Ok(Some(line)) => seen.push(line),
            Ok(None) => panic!(
                "{} ended its stderr before saying {needle:?}: {seen:#?}",
                member.name()
            ),
            Err(e) => panic!(
                "{} did not say {needle:?}: {e}; it said {seen:#?}",
                member.name()
            ),
        }
    }
}

/// What is left on a member's stderr, for a failure message (bounded).
async fn rest(member: &mut ChildGuard) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(Some(line)) = member.stderr_line(Duration::from_millis(500)).await {
        lines.push(line);
    }
    lines
}

/// The run: one throwaway Python environment, then each scenario with its own node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_member_speaks_the_protocol_with_rust_members() {
    let env = python_env().await;
    converse_join_and_half_close(&env).await;
    refusals_exit_with_their_codes(&env).await;
    resume_after_a_cut(&env).await;
    sending_waits_for_credit(&env).await;
}

/// Joins (the call), texts both ways (casts, relayed), half-closes after the room acked
/// every text, exits 0.
async fn converse_join_and_half_close(env: &PythonEnv) {
    let secrets = SecretDir::create().unwrap();
    let hub = room_node(&secrets, &[]).await;
    let peer = hub.addr.to_string();
    let mut ann = rust_member("ann", &peer, secrets.secret());
    stderr_until(&mut ann, "joined lobby").await;

    let mut py = python_member(env, "py", &peer, "lobby", secrets.secret());
    let joined = stderr_until(&mut py, "joined").await;
    assert_eq!(joined, "joined lobby as py (members: ann, py)");
    stderr_until(&mut ann, "* py joined").await;

    say(&mut py, "hello from python").await;
    assert_eq!(hears(&mut ann).await, "py: hello from python");
    say(&mut ann, "hello from rust").await;
    assert_eq!(hears(&mut py).await, "ann: hello from rust");
    say(&mut py, "and goodbye").await;
    assert_eq!(hears(&mut ann).await, "py: and goodbye");

    // The half-close: Goodbye(FINISHED), the room's last acks and its own Goodbye.
    py.close_stdin();
    let left = stderr_until(&mut py, "messages sent").await;
    assert_eq!(left, "left lobby: 2 messages sent, 2 acked");
    assert_eq!(
        py.wait(WAIT).await.unwrap(),
        Some(0),
        "the Python client exits 0"
    );
    stderr_until(&mut ann, "* py left").await;

    // The room goes on for the Rust member.
    ann.close_stdin();
    let left = stderr_until(&mut ann, "messages sent").await;
    assert!(left.contains("1 messages sent, 1 acked"), "{left}");
    assert_eq!(ann.wait(WAIT).await.unwrap(), Some(0));
}

/// A wrong secret and an unknown room fail the handshake with the CLI's exit codes.
async fn refusals_exit_with_their_codes(env: &PythonEnv) {
    let secrets = SecretDir::create().unwrap();
    let hub = room_node(&secrets, &[]).await;
    let peer = hub.addr.to_string();

    let wrong = secrets
        .write("wrong", "not the cluster's secret at all")
        .unwrap();
    let mut eve = python_member(env, "eve", &peer, "lobby", &wrong);
    let said = stderr_until(&mut eve, "authentication").await;
    assert!(said.contains("secrets differ"), "{said}");
    assert_eq!(eve.wait(WAIT).await.unwrap(), Some(3));

    let mut fay = python_member(env, "fay", &peer, "attic", secrets.secret());
    let said = stderr_until(&mut fay, "attic").await;
    assert!(said.contains("no room"), "{said}");
    assert_eq!(fay.wait(WAIT).await.unwrap(), Some(4));
}

/// Resume from Python: the connection is cut, the client re-authenticates with
/// `Hello.resume`, both sides replay, nothing is lost or doubled.
async fn resume_after_a_cut(env: &PythonEnv) {
    let secrets = SecretDir::create().unwrap();
    let hub = room_node(&secrets, &[]).await;
    let peer = hub.addr.to_string();
    let proxy = FaultProxy::start(hub.addr).await.unwrap();
    let mut ann = rust_member("ann", &peer, secrets.secret());
    stderr_until(&mut ann, "joined lobby").await;
    let mut py = python_member(
        env,
        "py",
        &proxy.addr().to_string(),
        "lobby",
        secrets.secret(),
    );
    stderr_until(&mut py, "joined lobby").await;
    say(&mut py, "before the cut").await;
    assert_eq!(hears(&mut ann).await, "py: before the cut");

    proxy.cut_all();

    stderr_until(&mut py, "session interrupted").await;
    stderr_until(&mut py, "session resumed").await;
    say(&mut py, "after the cut").await;
    assert_eq!(hears(&mut ann).await, "py: after the cut");
    say(&mut ann, "heard you").await;
    assert_eq!(hears(&mut py).await, "ann: heard you");
    py.close_stdin();
    let left = stderr_until(&mut py, "messages sent").await;
    assert_eq!(left, "left lobby: 2 messages sent, 2 acked");
    assert_eq!(py.wait(WAIT).await.unwrap(), Some(0));
}

/// A room whose node grants 4 messages of credit: the client stops at the credit, goes on
/// with each `Flow` grant, and all 20 texts arrive, in order, once.
async fn sending_waits_for_credit(env: &PythonEnv) {
    let secrets = SecretDir::create().unwrap();
    let hub = room_node(&secrets, &["--credit-window", "4"]).await;
    let peer = hub.addr.to_string();
    let mut ann = rust_member("ann", &peer, secrets.secret());
    stderr_until(&mut ann, "joined lobby").await;
    let mut py = python_member(env, "py", &peer, "lobby", secrets.secret());
    stderr_until(&mut py, "joined lobby").await;

    let lines: String = (1..=20).map(|i| format!("line {i}\n")).collect();
    let stdin = py.stdin.as_mut().expect("stdin open");
    stdin.write_all(lines.as_bytes()).await.unwrap();
    py.close_stdin();
    for i in 1..=20 {
        assert_eq!(hears(&mut ann).await, format!("py: line {i}"));
    }
    let left = stderr_until(&mut py, "messages sent").await;
    assert_eq!(left, "left lobby: 20 messages sent, 20 acked");
    let flow = stderr_until(&mut py, "flow:").await;
    // The join and 20 texts: seq 1..21, on credit granted beyond the first window.
    assert!(
        flow.starts_with("flow: sent seq 1..21 on credit up to "),
        "{flow}"
    );
    let stalls: u64 = flow
        .rsplit("stopped at the credit ")
        .next()
        .and_then(|t| t.strip_suffix(" times"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{flow}"));
    assert!(stalls > 0, "never stopped at a window of 4: {flow}");
    assert_eq!(py.wait(WAIT).await.unwrap(), Some(0));
}

/// The same protocol over TLS: `duologue certs` makes a CA and the node's certificate,
/// the node serves TLS only, and the Python member connects with `grpc.secure_channel`
/// trusting the CA (its proofs unbound to the certificate, the Rust member's bound), and
/// is refused when it dials in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_member_speaks_the_protocol_over_tls() {
    let env = python_env().await;
    let secrets = SecretDir::create().unwrap();
    let certs = secrets.secret().with_file_name("certs");
    let path = make_certs(&certs, &["hub"]).await;
    let (cert, key) = (path("hub.pem"), path("hub.key"));
    let hub = room_node(&secrets, &["--tls-cert", &cert, "--tls-key", &key]).await;
    let peer = hub.addr.to_string();
    let trust = ["--tls-ca".to_owned(), path("ca.pem")];

    let mut ann = rust_member_with("ann", &peer, secrets.secret(), &trust);
    stderr_until(&mut ann, "joined lobby").await;
    let mut py = python_member_with(&env, "py", &peer, "lobby", secrets.secret(), &trust);
    let joined = stderr_until(&mut py, "joined").await;
    assert_eq!(joined, "joined lobby as py (members: ann, py)");

    say(&mut py, "hello over tls").await;
    assert_eq!(hears(&mut ann).await, "py: hello over tls");
    say(&mut ann, "and back").await;
    assert_eq!(hears(&mut py).await, "ann: and back");
    py.close_stdin();
    let left = stderr_until(&mut py, "messages sent").await;
    assert_eq!(left, "left lobby: 1 messages sent, 1 acked");
    assert_eq!(py.wait(WAIT).await.unwrap(), Some(0));

    // Plaintext to a node that serves only TLS: the stream never opens.
    let mut plain = python_member_with(
        &env,
        "plain",
        &peer,
        "lobby",
        secrets.secret(),
        &["--timeout".into(), "3".into()],
    );
    let said = stderr_until(&mut plain, "chat_client.py:").await;
    assert!(said.contains("cannot reach"), "{said}");
    assert_eq!(plain.wait(WAIT).await.unwrap(), Some(5));
}
