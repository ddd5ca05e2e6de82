//! Logs cannot be used as a weapon (issue 13, attack 6): a flood of failed handshakes
//! costs the node a few log lines per window, not one each, and the failures are counted.

mod support;

use duologue::{ConnectError, Node, Secret};
use duologue_testkit::{NodeProcess, SecretDir, Signal};
use support::*;

/// Failed handshakes the hostile client makes.
const ATTEMPTS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_cost_a_few_log_lines() {
    let secrets = SecretDir::create().unwrap();
    let args = [
        "--secret-file".to_owned(),
        secrets.secret().display().to_string(),
        "--actor".to_owned(),
        "chat-room:lobby".to_owned(),
    ];
    let mut node = NodeProcess::start(&duologue_exe(), "target", &args, WAIT)
        .await
        .unwrap();
    let hostile = Node::builder()
        .name("hostile")
        .secret(Secret::new("not the cluster's secret, 32 b.").unwrap())
        .start()
        .await
        .unwrap();
    for _ in 0..ATTEMPTS {
        match hostile
            .connect_inbox::<PingPong>(&node.addr.to_string(), "lobby")
            .await
        {
            Err(ConnectError::Auth { .. }) => {}
            other => panic!("expected an auth failure, got {:?}", other.map(drop)),
        }
    }
    node.child.signal(Signal::SIGTERM).unwrap();
    let mut lines = 0;
    while let Some(line) = node.child.stderr_line(WAIT).await.unwrap() {
        if line.contains("failed during its handshake") {
            lines += 1;
        }
    }
    assert_eq!(node.child.wait(WAIT).await.unwrap(), Some(0));
    // Five a window (10 s); the attempts take a window or two.
    assert!(
        (1..=15).contains(&lines),
        "{lines} lines for {ATTEMPTS} failures"
    );
}
