//! A hostile member cannot make a chat room un-joinable (issue 13, attack 4): the room
//! keeps its history, and so its Welcome, bounded in bytes whatever the texts' sizes, and
//! refuses user names that would bloat every Welcome. A legitimate member alongside joins
//! and talks.
//!
//! Nor make it costly (issue 13, "each join sends the whole member list to every
//! member"): a presence names who came or went and the count, never the list; a full room
//! refuses joins with a reason while its members keep talking; a text past the room's
//! limit is refused, neither recorded nor relayed. `benches/hostile_room.rs` measures the
//! memory these bounds keep.

mod support;

use duologue::Node;
use duologue_actors::chat::proto::Text;
use duologue_actors::chat::{
    ChatEvent, ChatRoom, HISTORY_BYTES, JoinError, Joined, MAX_USER_BYTES, RoomConfig, join,
};
use ractor::Actor;
use support::*;

/// A hub hosting room `lobby` set up as `config` says, and a node for the members.
async fn lobby(config: RoomConfig) -> (Node, Node, String) {
    let hub = listening_node("hub", SECRET).await;
    let (room, _) = Actor::spawn(None, ChatRoom, config).await.unwrap();
    hub.register("lobby", &room).unwrap();
    let members = dialling_node("members", SECRET).await;
    let at = addr(&hub);
    (hub, members, at)
}

/// The next event of `member`, within [`WAIT`].
async fn any_event(member: &mut Joined) -> ChatEvent {
    tokio::time::timeout(WAIT, member.events.recv())
        .await
        .expect("an event in time")
        .expect("the session delivers")
}

/// The next event of `member` that is not presence, within [`WAIT`].
async fn next_event(member: &mut Joined) -> ChatEvent {
    loop {
        let event = tokio::time::timeout(WAIT, member.events.recv())
            .await
            .expect("an event in time")
            .expect("the session delivers");
        if !matches!(event, ChatEvent::Presence(_)) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_texts_do_not_make_the_room_unjoinable() {
    // A room that takes texts as large as a session carries.
    let (_hub, members, addr) = lobby(RoomConfig {
        max_text_bytes: 4 << 20,
        ..RoomConfig::from("lobby")
    })
    .await;

    // Mallory fills the history with texts of 3 MiB (under the 4 MiB message limit).
    let mut mallory = join(&members, &addr, "lobby", "mallory", WAIT)
        .await
        .expect("joins");
    for client_seq in 1..=3 {
        let text = Text {
            client_seq,
            text: "x".repeat(3 << 20),
        };
        mallory.room.cast(text).await.expect("sent");
        match next_event(&mut mallory).await {
            ChatEvent::Acked(ack) => assert_eq!(ack.client_seq, client_seq),
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    // ... and with many small ones, past the byte bound.
    for client_seq in 4..=40 {
        let text = Text {
            client_seq,
            text: "y".repeat(16 << 10),
        };
        mallory.room.cast(text).await.expect("sent");
    }
    loop {
        if let ChatEvent::Acked(ack) = next_event(&mut mallory).await
            && ack.client_seq == 40
        {
            break;
        }
    }

    // Alice still joins, with a Welcome bounded in bytes, and talks.
    let mut alice = join(&members, &addr, "lobby", "alice", WAIT)
        .await
        .expect("alice joins");
    let kept: usize = alice
        .welcome
        .history
        .iter()
        .map(|r| r.text.len() + r.from.len())
        .sum();
    assert!(kept <= HISTORY_BYTES, "history of {kept} bytes");
    assert!(
        !alice.welcome.history.is_empty(),
        "recent small texts are kept"
    );
    assert!(
        alice.welcome.history.iter().all(|r| r.text.len() < 1 << 20),
        "no 3 MiB text is kept"
    );
    alice
        .room
        .cast(Text {
            client_seq: 1,
            text: "hello".into(),
        })
        .await
        .unwrap();
    match next_event(&mut alice).await {
        ChatEvent::Acked(ack) => assert_eq!(ack.client_seq, 1),
        other => panic!("expected an ack, got {other:?}"),
    }

    // A name that would bloat every Welcome is refused, with the reason.
    let long = "z".repeat(MAX_USER_BYTES + 1);
    match join(&members, &addr, "lobby", &long, WAIT).await {
        Err(JoinError::Rejected(reason)) => assert!(reason.contains("user name"), "{reason}"),
        other => panic!("expected a rejection, got {:?}", other.map(|j| j.welcome)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_names_who_and_counts_without_the_list() {
    let (_hub, members, at) = lobby(RoomConfig::from("lobby")).await;
    let mut ann = join(&members, &at, "lobby", "ann", WAIT).await.unwrap();
    assert_eq!(ann.welcome.members, ["ann"]);
    assert_eq!(ann.welcome.member_count, 1);
    let ben = join(&members, &at, "lobby", "ben", WAIT).await.unwrap();
    assert_eq!(ben.welcome.members, ["ann", "ben"]);
    assert_eq!(ben.welcome.member_count, 2);
    match any_event(&mut ann).await {
        ChatEvent::Presence(p) => {
            assert_eq!(
                (p.user.as_str(), p.joined, p.member_count),
                ("ben", true, 2)
            );
        }
        other => panic!("expected ben's presence, got {other:?}"),
    }
    drop(ben);
    match any_event(&mut ann).await {
        ChatEvent::Presence(p) => {
            assert_eq!(
                (p.user.as_str(), p.joined, p.member_count),
                ("ben", false, 1)
            );
        }
        other => panic!("expected ben leaving, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_refuses_joins_with_a_reason_and_its_members_keep_talking() {
    let (_hub, members, at) = lobby(RoomConfig {
        max_members: 2,
        ..RoomConfig::from("lobby")
    })
    .await;
    let mut ann = join(&members, &at, "lobby", "ann", WAIT).await.unwrap();
    let mut ben = join(&members, &at, "lobby", "ben", WAIT).await.unwrap();
    for name in ["cat", "dan"] {
        match join(&members, &at, "lobby", name, WAIT).await {
            Err(JoinError::Rejected(reason)) => assert!(reason.contains("full"), "{reason}"),
            other => panic!("expected a refusal, got {:?}", other.map(|j| j.welcome)),
        }
    }
    ann.room
        .cast(Text {
            client_seq: 1,
            text: "still here".into(),
        })
        .await
        .unwrap();
    match next_event(&mut ann).await {
        ChatEvent::Acked(ack) => assert_eq!(ack.client_seq, 1),
        other => panic!("expected an ack, got {other:?}"),
    }
    match next_event(&mut ben).await {
        ChatEvent::Relay(relay) => assert_eq!(
            (relay.from.as_str(), relay.text.as_str()),
            ("ann", "still here")
        ),
        other => panic!("expected ann's relay, got {other:?}"),
    }
    // A place freed is a place taken.
    drop(ben);
    loop {
        if let ChatEvent::Presence(p) = any_event(&mut ann).await
            && !p.joined
        {
            break;
        }
    }
    let cat = join(&members, &at, "lobby", "cat", WAIT)
        .await
        .expect("cat joins");
    assert_eq!(cat.welcome.member_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_past_the_limit_is_refused_neither_recorded_nor_relayed() {
    const LIMIT: usize = 1024;
    let (_hub, members, at) = lobby(RoomConfig {
        max_text_bytes: LIMIT,
        ..RoomConfig::from("lobby")
    })
    .await;
    let mut ann = join(&members, &at, "lobby", "ann", WAIT).await.unwrap();
    let mut ben = join(&members, &at, "lobby", "ben", WAIT).await.unwrap();
    for (client_seq, text) in [(1, "x".repeat(LIMIT + 1)), (2, "small".to_owned())] {
        ann.room.cast(Text { client_seq, text }).await.unwrap();
    }
    match next_event(&mut ann).await {
        ChatEvent::Rejected(reason) => {
            assert!(reason.contains(&format!("at most {LIMIT}")), "{reason}")
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    match next_event(&mut ann).await {
        ChatEvent::Acked(ack) => assert_eq!((ack.client_seq, ack.room_seq), (2, 1)),
        other => panic!("expected the ack of the small text, got {other:?}"),
    }
    match next_event(&mut ben).await {
        ChatEvent::Relay(relay) => assert_eq!((relay.room_seq, relay.text.as_str()), (1, "small")),
        other => panic!("expected the small text only, got {other:?}"),
    }
    let late = join(&members, &at, "lobby", "cat", WAIT).await.unwrap();
    assert_eq!(
        late.welcome.history.len(),
        1,
        "only the small text is recorded"
    );
}
