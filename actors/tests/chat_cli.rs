//! The chat CLI across real processes: a node process hosting a room, members each in
//! their own process, on 127.0.0.1 with ports chosen at run time. Children are killed
//! when their guards drop, on every exit path.

mod support;

use duologue_testkit::Signal;
use duologue_testkit::{ChildGuard, NodeProcess, SecretDir};
use support::*;
use tokio::io::AsyncWriteExt;

async fn room_node(secrets: &SecretDir) -> NodeProcess {
    room_node_on(secrets, "127.0.0.1:0").await
}

async fn room_node_on(secrets: &SecretDir, listen: &str) -> NodeProcess {
    room_node_with(secrets, listen, "multi-thread").await
}

async fn room_node_with(secrets: &SecretDir, listen: &str, runtime: &str) -> NodeProcess {
    NodeProcess::start(
        &duologue_exe(),
        "hub",
        &[
            "--listen".into(),
            listen.into(),
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--actor".into(),
            "chat-room:lobby".into(),
            "--runtime".into(),
            runtime.into(),
        ],
        WAIT,
    )
    .await
    .expect("node starts")
}

fn member(user: &str, peer: &str, room: &str, secret: &std::path::Path) -> ChildGuard {
    let args = [
        "chat",
        "--peer",
        peer,
        "--room",
        room,
        "--user",
        user,
        "--secret-file",
    ]
    .map(String::from)
    .into_iter()
    .chain([secret.display().to_string()])
    .collect::<Vec<_>>();
    ChildGuard::spawn(user, &duologue_exe(), &args).expect("chat starts")
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
    member
        .stdout_line(WAIT)
        .await
        .unwrap()
        .expect("member still running")
}

/// All of a failed member's stderr, and its exit code.
async fn failure(mut member: ChildGuard) -> (Option<i32>, Vec<String>) {
    let code = member.wait(WAIT).await.unwrap();
    let mut lines = Vec::new();
    while let Some(line) = member.stderr_line(WAIT).await.unwrap() {
        lines.push(line);
    }
    (code, lines)
}

#[tokio::test]
async fn three_members_converse_and_leave_after_their_last_acks() {
    converse_on("multi-thread").await;
}

#[tokio::test]
async fn a_room_node_on_a_current_thread_runtime_converses_alike() {
    converse_on("current-thread").await;
}

#[tokio::test]
async fn a_room_node_on_a_thread_per_core_runtime_converses_alike() {
    converse_on("thread-per-core").await;
}

async fn converse_on(runtime: &str) {
    let secrets = SecretDir::create().unwrap();
    let hub = room_node_with(&secrets, "127.0.0.1:0", runtime).await;
    let peer = hub.addr.to_string();
    let mut members = Vec::new();
    for user in ["ann", "ben", "cat"] {
        let mut m = member(user, &peer, "lobby", secrets.secret());
        let joined = m.stderr_until("joined", WAIT).await.unwrap();
        assert!(joined.contains(user), "{joined}");
        members.push(m);
    }

    say(&mut members[0], "hello from ann").await;
    assert_eq!(hears(&mut members[1]).await, "ann: hello from ann");
    assert_eq!(hears(&mut members[2]).await, "ann: hello from ann");
    say(&mut members[2], "cat here").await;
    say(&mut members[2], "twice").await;
    for i in [0, 1] {
        assert_eq!(hears(&mut members[i]).await, "cat: cat here");
        assert_eq!(hears(&mut members[i]).await, "cat: twice");
    }

    for m in &mut members {
        m.close_stdin();
    }
    for (m, sent) in members.iter_mut().zip([1, 0, 2]) {
        let left = m.stderr_until("messages sent", WAIT).await.unwrap();
        assert!(
            left.contains(&format!("{sent} messages sent, {sent} acked")),
            "{left}"
        );
        assert_eq!(m.wait(WAIT).await.unwrap(), Some(0), "{} exits 0", m.name());
    }
}

#[tokio::test]
async fn node_stops_cleanly_on_sigterm() {
    let secrets = SecretDir::create().unwrap();
    let mut hub = room_node(&secrets).await;
    let mut m = member("dan", &hub.addr.to_string(), "lobby", secrets.secret());
    m.stderr_until("joined", WAIT).await.unwrap();

    hub.child.signal(Signal::SIGTERM).unwrap();

    assert_eq!(hub.child.wait(WAIT).await.unwrap(), Some(0));
    // The member learns why its session ended, and fails with that reason.
    let (code, lines) = failure(m).await;
    assert_eq!(code, Some(1));
    assert!(
        lines.iter().any(|l| l.contains("NodeShutdown")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn wrong_secret_exits_nonzero_with_one_clear_line() {
    let secrets = SecretDir::create().unwrap();
    let hub = room_node(&secrets).await;
    let wrong = secrets
        .write("wrong", "not the cluster's secret at all")
        .unwrap();

    let (code, lines) = failure(member("eve", &hub.addr.to_string(), "lobby", &wrong)).await;

    assert_eq!(code, Some(3));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("authentication") && lines[0].contains("secrets differ"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn unknown_room_exits_nonzero_with_one_clear_line() {
    let secrets = SecretDir::create().unwrap();
    let hub = room_node(&secrets).await;

    let (code, lines) = failure(member(
        "fay",
        &hub.addr.to_string(),
        "attic",
        secrets.secret(),
    ))
    .await;

    assert_eq!(code, Some(4));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("attic"), "{lines:?}");
}

#[tokio::test]
async fn unreachable_peer_exits_nonzero_with_one_clear_line() {
    let secrets = SecretDir::create().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let (code, lines) = failure(member(
        "gus",
        &format!("127.0.0.1:{port}"),
        "lobby",
        secrets.secret(),
    ))
    .await;

    assert_eq!(code, Some(5));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("cannot reach"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_prints_interruptions_and_resumes_and_loses_nothing() {
    let secrets = SecretDir::create().unwrap();
    let hub = room_node(&secrets).await;
    let proxy = duologue_testkit::FaultProxy::start(hub.addr).await.unwrap();
    let mut ann = member("ann", &proxy.addr().to_string(), "lobby", secrets.secret());
    ann.stderr_until("joined", WAIT).await.unwrap();
    let mut ben = member("ben", &hub.addr.to_string(), "lobby", secrets.secret());
    ben.stderr_until("joined", WAIT).await.unwrap();
    say(&mut ann, "before the cut").await;
    assert_eq!(hears(&mut ben).await, "ann: before the cut");

    proxy.cut_all();

    ann.stderr_until("session interrupted", WAIT).await.unwrap();
    ann.stderr_until("session resumed", WAIT).await.unwrap();
    say(&mut ann, "after the cut").await;
    assert_eq!(hears(&mut ben).await, "ann: after the cut");
    ann.close_stdin();
    let left = ann.stderr_until("messages sent", WAIT).await.unwrap();
    assert!(left.contains("2 messages sent, 2 acked"), "{left}");
    assert_eq!(ann.wait(WAIT).await.unwrap(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_exits_nonzero_unless_asked_to_rejoin() {
    let secrets = SecretDir::create().unwrap();
    let mut hub = room_node(&secrets).await;
    let addr = hub.addr.to_string();
    let mut ann = member("ann", &addr, "lobby", secrets.secret());
    ann.stderr_until("joined", WAIT).await.unwrap();
    let mut cat = ChildGuard::spawn(
        "cat",
        &duologue_exe(),
        &[
            "chat",
            "--peer",
            &addr,
            "--room",
            "lobby",
            "--user",
            "cat",
            "--rejoin",
            "--secret-file",
        ]
        .map(String::from)
        .into_iter()
        .chain([secrets.secret().display().to_string()])
        .collect::<Vec<_>>(),
    )
    .unwrap();
    cat.stderr_until("joined", WAIT).await.unwrap();

    // The room's node dies and comes back on the same address: a new incarnation.
    hub.child.signal(Signal::SIGKILL).unwrap();
    hub.child.wait(WAIT).await.unwrap();
    let _hub = room_node_on(&secrets, &addr).await;

    let lost = ann.stderr_until("session lost", WAIT).await.unwrap();
    assert!(lost.contains("restarted"), "{lost}");
    assert_eq!(ann.wait(WAIT).await.unwrap(), Some(1));
    cat.stderr_until("session lost", WAIT).await.unwrap();
    cat.stderr_until("rejoined lobby", WAIT).await.unwrap();
    say(&mut cat, "back again").await;
    cat.close_stdin();
    let left = cat.stderr_until("messages sent", WAIT).await.unwrap();
    assert!(left.contains("1 messages sent, 1 acked"), "{left}");
    assert_eq!(cat.wait(WAIT).await.unwrap(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_member_gets_the_history_and_everyone_sees_who_comes_and_goes() {
    let secrets = SecretDir::create().unwrap();
    let hub = room_node(&secrets).await;
    let peer = hub.addr.to_string();
    let mut ann = member("ann", &peer, "lobby", secrets.secret());
    ann.stderr_until("joined", WAIT).await.unwrap();
    let mut ben = member("ben", &peer, "lobby", secrets.secret());
    ben.stderr_until("joined", WAIT).await.unwrap();
    say(&mut ann, "said before cat came").await;
    assert_eq!(hears(&mut ben).await, "ann: said before cat came");

    let mut cat = member("cat", &peer, "lobby", secrets.secret());
    let joined = cat.stderr_until("joined", WAIT).await.unwrap();
    assert!(joined.contains("ann, ben, cat"), "{joined}");
    let history = cat.stderr_until("(history)", WAIT).await.unwrap();
    assert_eq!(history, "(history) ann: said before cat came");
    let seen = ann.stderr_until("* cat joined", WAIT).await.unwrap();
    assert!(seen.contains("members: ann, ben, cat"), "{seen}");

    cat.close_stdin();
    assert_eq!(cat.wait(WAIT).await.unwrap(), Some(0));
    let gone = ben.stderr_until("* cat left", WAIT).await.unwrap();
    assert!(gone.contains("members: ann, ben"), "{gone}");
}
