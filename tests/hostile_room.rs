//! A hostile member cannot make a chat room un-joinable (issue 13, attack 4): the room
//! keeps its history, and so its Welcome, bounded in bytes whatever the texts' sizes, and
//! refuses user names that would bloat every Welcome. A legitimate member alongside joins
//! and talks.

mod support;

use duologue_actors::chat::proto::Text;
use duologue_actors::chat::{
    ChatEvent, ChatRoom, HISTORY_BYTES, JoinError, Joined, MAX_USER_BYTES, RoomConfig, join,
};
use ractor::Actor;
use support::*;

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
    let hub = listening_node("hub", SECRET).await;
    let (room, _) = Actor::spawn(None, ChatRoom, RoomConfig::from("lobby"))
        .await
        .unwrap();
    hub.register_serving::<ChatRoom, _>("lobby", &room).unwrap();
    let members = dialling_node("members", SECRET).await;
    let addr = addr(&hub);

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
