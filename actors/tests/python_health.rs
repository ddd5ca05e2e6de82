//! A node's standard gRPC services, seen from Python with grpcio's own clients
//! (`tests/python/health_check.py`): `grpc.health.v1` says `SERVING` while a real
//! `duologue node` process is up and `NOT_SERVING` while it drains (on a new connection,
//! too: the server keeps answering through the drain), and `grpc.reflection` lists
//! `duologue.v1.Duologue` and `grpc.health.v1.Health` and resolves our messages.
//!
//! The drain is made long enough to watch: a `duologue chat` member is joined to a room on
//! the node and stopped (SIGSTOP) just before the node gets SIGTERM, so its session's
//! farewell goes unanswered until the node's close linger (30 s here, so the window is
//! wide on a loaded machine) runs out; the test wakes the member (SIGCONT) once the
//! script saw NOT_SERVING, so the drain then ends at once. The node's HTTP/2
//! keepalive is set long, or its unanswered pings would end that session sooner.
//!
//! The Python environment is `tests/support/python.rs`'s. Every wait is bounded; every
//! child is killed when its guard drops.

mod support;

use duologue_testkit::{ChildGuard, NodeProcess, SecretDir, Signal};
use support::python::{python_env, script};
use support::*;

/// What the script prints, line by line, up to the point where it waits for the drain.
async fn stdout_line(child: &mut ChildGuard) -> String {
    match child.stdout_line(WAIT).await {
        Ok(Some(line)) => line,
        outcome => {
            let mut said = Vec::new();
            while let Ok(Some(line)) = child.stderr_line(std::time::Duration::from_secs(1)).await {
                said.push(line);
            }
            panic!(
                "{}: {outcome:?} instead of a line on stdout; its stderr: {said:#?}",
                child.name()
            )
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sees_serving_then_not_serving_while_the_node_drains_and_reflects_our_protos() {
    let env = python_env().await;
    let secrets = SecretDir::create().unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--actor",
        "chat-room:lobby",
        "--keepalive-interval",
        "60s",
        "--keepalive-timeout",
        "60s",
        "--shutdown-drain",
        "60s",
        "--close-linger",
        "30s",
        "--secret-file",
    ]
    .map(String::from)
    .into_iter()
    .chain([secrets.secret().display().to_string()])
    .collect::<Vec<_>>();
    let mut node = NodeProcess::start(&duologue_exe(), "hub", &args, WAIT)
        .await
        .expect("node starts");
    let addr = node.addr.to_string();

    let member_args = ["chat", "--peer", &addr, "--room", "lobby", "--user", "ann"]
        .map(String::from)
        .into_iter()
        .chain([
            "--secret-file".into(),
            secrets.secret().display().to_string(),
        ])
        .collect::<Vec<_>>();
    let mut member = ChildGuard::spawn("ann", &duologue_exe(), &member_args).unwrap();
    member.stderr_until("joined lobby", WAIT).await.unwrap();

    let script_args = vec![
        "-u".to_owned(),
        script("health_check.py").display().to_string(),
        "--addr".into(),
        addr.clone(),
        "--timeout".into(),
        WAIT.as_secs().to_string(),
    ];
    let mut py = ChildGuard::spawn("health_check.py", &env.python, &script_args).unwrap();
    assert_eq!(stdout_line(&mut py).await, "serving");
    let services = stdout_line(&mut py).await;
    for service in ["duologue.v1.Duologue", "grpc.health.v1.Health"] {
        assert!(services.contains(service), "{service} not in {services:?}");
    }
    assert!(services.contains("grpc.reflection.v1alpha"), "{services}");
    assert_eq!(
        stdout_line(&mut py).await,
        "method: duologue.v1.Duologue.Converse(stream duologue.v1.Frame) \
         returns (stream duologue.v1.Frame)"
    );
    let hello = stdout_line(&mut py).await;
    assert!(
        hello.starts_with("message duologue.v1.Hello: session_id, from, target,"),
        "{hello}"
    );
    let members = stdout_line(&mut py).await;
    assert!(
        members.starts_with("message duologue.v1.MemberList: "),
        "{members}"
    );
    assert_eq!(stdout_line(&mut py).await, "watching");

    // The member stops answering; the node is told to shut down and drains.
    member.signal(Signal::SIGSTOP).unwrap();
    node.child.signal(Signal::SIGTERM).unwrap();
    assert_eq!(stdout_line(&mut py).await, "draining: NOT_SERVING");
    member.signal(Signal::SIGCONT).unwrap();
    assert_eq!(stdout_line(&mut py).await, "watch ended: OK");
    assert_eq!(stdout_line(&mut py).await, "stopped: UNAVAILABLE");
    assert_eq!(py.wait(WAIT).await.unwrap(), Some(0), "the script exits 0");
    assert_eq!(
        node.child.wait(WAIT).await.unwrap(),
        Some(0),
        "the node exits 0"
    );
}
