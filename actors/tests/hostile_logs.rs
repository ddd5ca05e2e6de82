//! Logs cannot be used as a weapon (issue 13, attack 6): a flood of failed handshakes
//! costs the node a few log lines per window, not one each, and the failures are counted;
//! so does a flood of messages a room cannot read, each counted in the lines that are
//! logged or in the room's summary when it stops.

mod support;

use duologue::{ConnectError, Node, Secret, status::LOG_LINES_PER_WINDOW};
use duologue_actors::chat::ChatRoom;
use duologue_actors::chat::proto::{Join, MemberMessage, room_message};
use duologue_testkit::hostile::room_node;
use duologue_testkit::{SecretDir, Signal};
use support::*;

/// Failed handshakes the hostile client makes.
const ATTEMPTS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_cost_a_few_log_lines() {
    let secrets = SecretDir::create().unwrap();
    let mut node = room_node(&duologue_exe(), &secrets, &[]).await;
    let hostile = Node::builder()
        .name("hostile")
        .secret(Secret::new("not the cluster's secret, 32 b.").unwrap())
        .start()
        .await
        .unwrap();
    for _ in 0..ATTEMPTS {
        match hostile
            .connect::<PingPong>((&node.addr.to_string(), "lobby"))
            .inbox()
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

/// Messages of each unreadable kind the hostile member sends.
const FLOOD: u64 = 400;

/// The number after `key=` in `line`, if any.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)? + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unreadable_messages_costs_a_few_lines_and_every_one_is_counted() {
    let secrets = SecretDir::create().unwrap();
    let mut node = room_node(&duologue_exe(), &secrets, &[]).await;
    let hostile = Node::builder()
        .name("hostile")
        .secret(Secret::from_file(secrets.secret()).unwrap())
        .start()
        .await
        .unwrap();
    let (room, _events) = hostile
        .connect::<ChatRoom>((&node.addr.to_string(), "lobby"))
        .inbox()
        .await
        .unwrap();
    let session = room.session();
    for n in 0..FLOOD {
        // A message of another protocol: undecodable as a member's.
        session
            .cast(Ping {
                n,
                body: Vec::new(),
            })
            .await
            .unwrap();
        // A member's message with nothing in it.
        room.cast(MemberMessage::default()).await.unwrap();
    }
    // The room reads one session in order: the answer to a join comes after the flood.
    let reply = room
        .call(
            Join {
                user: "mallory".into(),
                seen_room_seq: 0,
            },
            WAIT,
        )
        .await
        .expect("the room still answers");
    assert!(
        matches!(reply.kind, Some(room_message::Kind::Welcome(_))),
        "{reply:?}"
    );

    node.child.signal(Signal::SIGTERM).unwrap();
    let (mut lines, mut reported, mut summaries) = (0, 0, 0);
    while let Some(line) = node.child.stderr_line(WAIT).await.unwrap() {
        if line.contains("unreadable member message") {
            lines += 1;
            reported += 1 + field(&line, "not_logged_since_last_line=").unwrap_or(0);
        } else if line.contains("lines not logged") && line.contains("unreadable message") {
            summaries += 1;
            reported += field(&line, " not_logged=").expect("the summary counts");
        }
    }
    assert_eq!(node.child.wait(WAIT).await.unwrap(), Some(0));
    // Five a window (10 s); the flood takes a window or two.
    assert!(
        (1..=2 * LOG_LINES_PER_WINDOW).contains(&lines),
        "{lines} lines for {} unreadable messages",
        2 * FLOOD
    );
    assert_eq!(
        summaries, 1,
        "the room says what it did not log as it stops"
    );
    assert_eq!(
        reported,
        2 * FLOOD,
        "every unreadable message is counted once"
    );
}
