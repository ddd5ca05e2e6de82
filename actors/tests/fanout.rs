//! The fan-out's policy, "slow is not stuck", through the chat room (in process, real
//! sessions on loopback):
//!
//! - a member that reads slowly but keeps reading holds the writers back and loses
//!   nothing, where the same room without the hold would have had to let it go;
//! - a member whose reader stops holds the others back only briefly: they go on, and it
//!   still gets everything if it comes back within the bounds; one that takes nothing
//!   for the stuck bound is let go with a typed farewell;
//! - a member past the hard bound is let go in order, with a notice, and may join again;
//! - an interrupted member is never let go for being interrupted: it gets everything in
//!   order when it resumes, and one that vanished is lost at its resume deadline;
//! - a member joining again from the same node takes over its place.

mod support;

use std::time::{Duration, Instant};

use duologue::LostReason;
use duologue::{
    CloseReason, Node, NodeConfig, flow::FanoutConfig, settings::SessionConfig, wire::GoodbyeReason,
};
use duologue_actors::chat::proto::{Relay, Text};
use duologue_actors::chat::{ChatEvent, ChatRoom, Joined, RoomConfig, join};
use duologue_testkit::FaultProxy;
use ractor::Actor;
use support::*;

/// The members' credit window: what an unread member's inbox may hold.
const WINDOW: u64 = 16;
/// The room's soft bound: past it, a member that reads holds the writers back.
const HOLD_LAG: usize = 32;
/// The room's hard bound, where the tests want one.
const LAG: usize = 256;
/// Texts each talking member sends.
const TEXTS: u64 = 600;
/// Texts a talking member has sent and not seen acked, at most.
const OUTSTANDING: u64 = 8;

/// A fan-out with small bounds, letting a stopped member go only at the hard bound.
fn config() -> FanoutConfig {
    FanoutConfig {
        hold_lag: HOLD_LAG,
        hold_lag_bytes: 1 << 20,
        hold_at_most: Duration::from_millis(300),
        stuck_after: Duration::from_secs(600),
        max_lag: LAG,
        max_lag_bytes: 64 << 20,
        farewell_timeout: Duration::from_secs(60),
    }
}

/// A hub hosting room `lobby` with the default session settings but `session`, and a
/// node for the members with a small credit window.
async fn room_with(fanout: FanoutConfig, session: SessionConfig) -> (Node, Node, String) {
    let hub = node_with(NodeConfig {
        name: "hub".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        session,
        ..NodeConfig::default()
    })
    .await;
    let config = RoomConfig {
        name: "lobby".into(),
        fanout,
        ..RoomConfig::from("lobby")
    };
    let (room, _) = Actor::spawn(None, ChatRoom, config).await.unwrap();
    hub.register("lobby", &room).unwrap();
    let members = node_with(NodeConfig {
        name: "members".into(),
        session: SessionConfig {
            credit_window: WINDOW,
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    let addr = addr(&hub);
    (hub, members, addr)
}

async fn room(fanout: FanoutConfig) -> (Node, Node, String) {
    room_with(fanout, SessionConfig::default()).await
}

async fn member(node: &Node, addr: &str, user: &str) -> Joined {
    join(node, addr, "lobby", user, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{user} joins: {e}"))
}

/// The next event of `member`, within [`WAIT`].
async fn event(member: &mut Joined) -> ChatEvent {
    tokio::time::timeout(WAIT, member.events.recv())
        .await
        .expect("an event in time")
        .expect("the session delivers")
}

/// Sends `texts` texts and reads until every one is acked and `texts` relays from
/// `other` arrived; returns those relays' texts and whether `gone` was seen leaving.
async fn talk(
    mut me: Joined,
    user: &str,
    other: &str,
    gone: &str,
    texts: u64,
) -> (Joined, Vec<String>, bool) {
    let (mut acked, mut heard, mut saw_leave) = (0, Vec::new(), false);
    let mut next = 1;
    while acked < texts || (heard.len() as u64) < texts {
        // Talk only a little ahead of the acks, and read whatever came in between.
        if next <= texts && next - 1 - acked < OUTSTANDING {
            let text = Text {
                client_seq: next,
                text: format!("{user} {next}"),
            };
            me.room.cast(text).await.expect("the room takes texts");
            next += 1;
            continue;
        }
        match event(&mut me).await {
            ChatEvent::Acked(ack) => {
                assert_eq!(ack.client_seq, acked + 1, "{user}'s acks in order");
                acked = ack.client_seq;
            }
            ChatEvent::Relay(Relay { from, text, .. }) => {
                assert_eq!(from, other);
                heard.push(text);
            }
            ChatEvent::Presence(p) if p.user == gone && !p.joined => saw_leave = true,
            ChatEvent::Presence(_) | ChatEvent::HeldBack(_) => {}
            other => panic!("{user} got {other:?}"),
        }
    }
    (me, heard, saw_leave)
}

fn texts(user: &str, n: u64) -> Vec<String> {
    (1..=n).map(|n| format!("{user} {n}")).collect()
}

/// Reads `member`'s relays, which must run 1, 2, 3, ... in room order, up to the
/// first event that is not a relay (or a presence); returns them and that event.
async fn relays_then(member: &mut Joined) -> (Vec<u64>, ChatEvent) {
    relays_from_then(member, 1).await
}

/// As [`relays_then`], the relays running `first`, `first + 1`, ...
async fn relays_from_then(member: &mut Joined, first: u64) -> (Vec<u64>, ChatEvent) {
    let mut seqs = Vec::new();
    loop {
        match event(member).await {
            ChatEvent::Relay(relay) => {
                assert_eq!(
                    relay.room_seq,
                    seqs.len() as u64 + first,
                    "no gap, no repeat"
                );
                seqs.push(relay.room_seq);
            }
            ChatEvent::Presence(_) => {}
            other => return (seqs, other),
        }
    }
}

/// Reads `n` relays of `member`, slowly (a pause every few), checking they run 1..=n.
async fn read_slowly(member: &mut Joined, n: u64, pause: Duration) {
    let mut seen = 0;
    while seen < n {
        match event(member).await {
            ChatEvent::Relay(relay) => {
                seen += 1;
                assert_eq!(relay.room_seq, seen, "no gap, no repeat");
                if seen % 4 == 0 {
                    tokio::time::sleep(pause).await;
                }
            }
            ChatEvent::Presence(_) | ChatEvent::HeldBack(_) => {}
            other => panic!("the slow reader got {other:?} after {seen} relays"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_reads_slowly_holds_the_writers_back_and_loses_nothing() {
    // Without the hold, cat (reading about 2 000 relays a second) would pass the hard
    // bound while ann and bob exchange 1 200 lines, and be let go.
    let (_hub, members, addr) = room(config()).await;
    let mut cat = member(&members, &addr, "cat").await;
    let ann = member(&members, &addr, "ann").await;
    let bob = member(&members, &addr, "bob").await;
    let reader = tokio::spawn(async move {
        read_slowly(&mut cat, 2 * TEXTS, Duration::from_millis(2)).await;
        cat
    });
    let ((ann, ann_heard, _), (bob, bob_heard, _)) = tokio::join!(
        talk(ann, "ann", "bob", "cat", TEXTS),
        talk(bob, "bob", "ann", "cat", TEXTS)
    );
    assert_eq!(ann_heard, texts("bob", TEXTS));
    assert_eq!(bob_heard, texts("ann", TEXTS));
    let cat = tokio::time::timeout(4 * WAIT, reader)
        .await
        .expect("cat reads every relay")
        .unwrap();
    for joined in [ann, bob, cat] {
        assert_eq!(
            joined.room.session().close(WAIT).await,
            CloseReason::Finished,
            "nobody was let go"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_reader_stops_does_not_stop_the_others_and_loses_nothing_within_the_bounds()
{
    let (_hub, members, addr) = room(FanoutConfig {
        max_lag: 4 * TEXTS as usize,
        ..config()
    })
    .await;
    let mut cat = member(&members, &addr, "cat").await;
    let ann = member(&members, &addr, "ann").await;
    let bob = member(&members, &addr, "bob").await;
    // Cat reads nothing while ann and bob talk: they are held back a moment at a time
    // (hold_at_most), never for good, and finish.
    let ((ann, ann_heard, ann_saw), (bob, bob_heard, _)) = tokio::join!(
        talk(ann, "ann", "bob", "cat", TEXTS),
        talk(bob, "bob", "ann", "cat", TEXTS)
    );
    assert_eq!(ann_heard, texts("bob", TEXTS));
    assert_eq!(bob_heard, texts("ann", TEXTS));
    assert!(!ann_saw, "cat is still in the room");
    // Cat's inbox holds its window of messages at most; the rest waited in its outbox.
    let waiting = cat.room.session().flow().inbound_waiting;
    assert!(waiting <= WINDOW, "{waiting} messages in cat's inbox");
    read_slowly(&mut cat, 2 * TEXTS, Duration::ZERO).await;
    for joined in [ann, bob, cat] {
        assert_eq!(
            joined.room.session().close(WAIT).await,
            CloseReason::Finished
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_takes_nothing_for_the_stuck_bound_is_let_go_with_a_typed_farewell() {
    let stuck_after = Duration::from_secs(1);
    let (_hub, members, addr) = room(FanoutConfig {
        stuck_after,
        ..config()
    })
    .await;
    let mut cat = member(&members, &addr, "cat").await;
    let mut ann = member(&members, &addr, "ann").await;
    // More than cat's window: the rest waits in its outbox, and its stuck clock runs.
    let texts = 2 * WINDOW;
    for client_seq in 1..=texts {
        let text = Text {
            client_seq,
            text: format!("ann {client_seq}"),
        };
        ann.room.cast(text).await.expect("the room takes texts");
    }
    let started = Instant::now();
    loop {
        match event(&mut ann).await {
            ChatEvent::Presence(p) if p.user == "cat" && !p.joined => break,
            ChatEvent::Acked(_) | ChatEvent::Presence(_) | ChatEvent::HeldBack(_) => {}
            other => panic!("ann got {other:?}"),
        }
    }
    assert!(
        started.elapsed() >= stuck_after,
        "let go after {:?}, before the stuck bound",
        started.elapsed()
    );
    let reason = tokio::time::timeout(WAIT, cat.room.closed()).await.unwrap();
    assert!(
        matches!(&reason, CloseReason::Lost(LostReason::PeerEnded(g))
            if g.reason == GoodbyeReason::LimitExceeded && g.detail.contains("stuck")),
        "{reason:?}"
    );
    // What reached cat before the end is there, in order, then the typed reason.
    let (_, last) = relays_then(&mut cat).await;
    assert!(
        matches!(&last, ChatEvent::Lost { reason: LostReason::PeerEnded(g), .. } if g.reason == GoodbyeReason::LimitExceeded),
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_past_the_hard_bound_is_let_go_in_order_and_may_join_again_knowing_its_texts() {
    let (_hub, members, addr) = room(config()).await;
    let mut cat = member(&members, &addr, "cat").await;
    // Cat says something first: its notice says it was recorded.
    cat.room
        .cast(Text {
            client_seq: 1,
            text: "cat 1".into(),
        })
        .await
        .unwrap();
    loop {
        if let ChatEvent::Acked(ack) = event(&mut cat).await {
            assert_eq!(ack.client_seq, 1);
            break;
        }
    }
    let ann = member(&members, &addr, "ann").await;
    let bob = member(&members, &addr, "bob").await;

    let ((ann, ann_heard, ann_saw), (bob, bob_heard, bob_saw)) = tokio::join!(
        talk(ann, "ann", "bob", "cat", TEXTS),
        talk(bob, "bob", "ann", "cat", TEXTS)
    );
    assert_eq!(ann_heard, texts("bob", TEXTS), "ann heard all of bob's");
    assert_eq!(bob_heard, texts("ann", TEXTS), "bob heard all of ann's");
    assert!(ann_saw && bob_saw, "both saw cat leave");

    let (seqs, notice) = relays_from_then(&mut cat, 2).await;
    let ChatEvent::FellBehind(behind) = notice else {
        panic!("cat is told it was let go, after its relays: {notice:?}");
    };
    // Its own line was 1; the relays it got run on from 2.
    assert_eq!(behind.missed_from, seqs.len() as u64 + 2, "{behind:?}");
    assert!(seqs.len() >= LAG, "cat got what was queued for it");
    assert_eq!(behind.last_client_seq, 1, "its one text was recorded");
    assert_eq!(event(&mut cat).await, ChatEvent::RoomFinished);
    cat.room.finish();
    assert_eq!(
        event(&mut cat).await,
        ChatEvent::Closed(CloseReason::Finished)
    );

    // Cat joins again from the same node: the room remembers its texts.
    let again = member(&members, &addr, "cat").await;
    assert!(again.welcome.known && !again.welcome.took_over);
    assert_eq!(again.welcome.last_client_seq, 1);
    assert_eq!(
        again.welcome.history.last().map(|r| r.room_seq),
        Some(2 * TEXTS + 1),
        "the history ends at the last line"
    );
    for joined in [ann, bob, again] {
        assert_eq!(
            joined.room.session().close(WAIT).await,
            CloseReason::Finished
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_finishes_its_farewell_is_ended_with_limit_exceeded() {
    let (_hub, members, addr) = room(FanoutConfig {
        farewell_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let mut cat = member(&members, &addr, "cat").await;
    let ann = member(&members, &addr, "ann").await;
    let bob = member(&members, &addr, "bob").await;
    let ((ann, _, ann_saw), (bob, _, _)) = tokio::join!(
        talk(ann, "ann", "bob", "cat", TEXTS),
        talk(bob, "bob", "ann", "cat", TEXTS)
    );
    assert!(ann_saw, "ann saw cat leave");

    let reason = tokio::time::timeout(WAIT, cat.room.closed())
        .await
        .expect("cat's session ends within the farewell timeout");
    assert!(
        matches!(&reason, CloseReason::Lost(LostReason::PeerEnded(g)) if g.reason == GoodbyeReason::LimitExceeded),
        "{reason:?}"
    );
    let (_, last) = relays_then(&mut cat).await;
    let last = match last {
        ChatEvent::FellBehind(_) => event(&mut cat).await,
        other => other,
    };
    assert!(
        matches!(&last, ChatEvent::Lost { reason: LostReason::PeerEnded(g), .. } if g.reason == GoodbyeReason::LimitExceeded),
        "{last:?}"
    );
    drop((ann, bob));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_past_the_hard_bound_in_bytes_is_let_go_long_before_its_message_count() {
    const TEXT_BYTES: usize = 4096;
    const MAX_LAG_BYTES: usize = 4 * TEXT_BYTES;
    let (_hub, members, addr) = room(FanoutConfig {
        hold_lag_bytes: 2 * TEXT_BYTES,
        max_lag_bytes: MAX_LAG_BYTES,
        ..config()
    })
    .await;
    let mut cat = member(&members, &addr, "cat").await;
    let mut ann = member(&members, &addr, "ann").await;
    // Cat reads nothing while ann says many large lines (reading her acks).
    let texts = 2 * WINDOW + 20;
    for client_seq in 1..=texts {
        let text = Text {
            client_seq,
            text: format!("{client_seq} {}", "x".repeat(TEXT_BYTES)),
        };
        ann.room.cast(text).await.expect("the room takes texts");
    }
    let mut acked = 0;
    while acked < texts {
        match event(&mut ann).await {
            ChatEvent::Acked(ack) => acked = ack.client_seq,
            ChatEvent::Presence(_) | ChatEvent::HeldBack(_) => {}
            other => panic!("ann got {other:?}"),
        }
    }
    let (seqs, notice) = relays_then(&mut cat).await;
    let ChatEvent::FellBehind(behind) = notice else {
        panic!("cat is told it was let go, after its relays: {notice:?}");
    };
    assert_eq!(behind.missed_from, seqs.len() as u64 + 1, "{behind:?}");
    assert!(
        (1..=5).contains(&behind.queued),
        "let go by bytes, not after {LAG} messages: {behind:?}"
    );
    assert!((seqs.len() as u64) < texts, "{} relays", seqs.len());
}

#[tokio::test]
async fn dropping_a_members_events_ends_its_session_and_the_room_says_so() {
    let (_hub, members, addr) = room(config()).await;
    let mut ann = member(&members, &addr, "ann").await;
    let bob = member(&members, &addr, "bob").await;
    let bob_session = bob.room.session();
    drop(bob.events);
    let reason = tokio::time::timeout(WAIT, bob_session.closed())
        .await
        .expect("bob's session ends");
    assert!(
        matches!(
            &reason,
            CloseReason::Ended {
                reason: GoodbyeReason::ActorStopped,
                ..
            }
        ),
        "{reason:?}"
    );
    loop {
        match event(&mut ann).await {
            ChatEvent::Presence(p) if p.user == "bob" && !p.joined => break,
            ChatEvent::Presence(_) => {}
            other => panic!("ann got {other:?}"),
        }
    }
}

/// Waits for `member` to see its session interrupted (everything before is presence).
async fn interrupted(member: &mut Joined) {
    loop {
        match event(member).await {
            ChatEvent::Interrupted(_) => return,
            ChatEvent::Presence(_) | ChatEvent::HeldBack(_) => {}
            other => panic!("expected an interruption, got {other:?}"),
        }
    }
}

/// Ann says `n` lines, a few ahead of her acks, which she reads as they come (a writer
/// that does not read its acks is a reader that stopped).
async fn say(ann: &mut Joined, n: u64) {
    let (mut next, mut acked) = (1, 0);
    while acked < n {
        if next <= n && next - 1 - acked < OUTSTANDING {
            let text = Text {
                client_seq: next,
                text: format!("ann {next}"),
            };
            ann.room.cast(text).await.expect("the room takes texts");
            next += 1;
            continue;
        }
        match event(ann).await {
            ChatEvent::Acked(ack) => acked = ack.client_seq,
            ChatEvent::Presence(p) => assert!(p.joined, "someone was let go: {p:?}"),
            ChatEvent::HeldBack(_) => {}
            other => panic!("ann got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_member_is_never_let_go_for_it_and_gets_everything_when_it_resumes() {
    let (_hub, members, addr) = room(config()).await;
    let mut ann = member(&members, &addr, "ann").await;
    let proxy = FaultProxy::start(addr.parse().unwrap()).await.unwrap();
    let cat_node = dialling_node("cat", SECRET).await;
    let mut cat = member(&cat_node, &proxy.addr().to_string(), "cat").await;
    proxy.set_blackhole(true);
    assert!(proxy.cut_all() > 0);
    interrupted(&mut cat).await;

    // Twice the hard bound while cat is away: all of it waits for cat, and ann is not
    // held back by a member that cannot read.
    let texts = 2 * LAG as u64;
    say(&mut ann, texts).await;
    proxy.set_blackhole(false);
    let mut heard = Vec::new();
    while (heard.len() as u64) < texts {
        match event(&mut cat).await {
            ChatEvent::Relay(relay) => heard.push(relay.room_seq),
            ChatEvent::Resumed(_)
            | ChatEvent::Interrupted(_)
            | ChatEvent::Presence(_)
            | ChatEvent::HeldBack(_) => {}
            other => panic!("cat got {other:?} after {} relays", heard.len()),
        }
    }
    assert_eq!(
        heard,
        (1..=texts).collect::<Vec<_>>(),
        "every relay once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_vanished_leaves_at_its_resume_deadline() {
    let (_hub, members, addr) = room_with(
        config(),
        SessionConfig {
            resume_timeout: Duration::from_secs(2),
            ..SessionConfig::default()
        },
    )
    .await;
    let mut ann = member(&members, &addr, "ann").await;
    let proxy = FaultProxy::start(addr.parse().unwrap()).await.unwrap();
    let cat_node = dialling_node("cat", SECRET).await;
    let cat = member(&cat_node, &proxy.addr().to_string(), "cat").await;
    proxy.set_blackhole(true);
    assert!(proxy.cut_all() > 0);
    say(&mut ann, 2 * LAG as u64).await;
    loop {
        match event(&mut ann).await {
            ChatEvent::Presence(p) if p.user == "cat" && !p.joined => break,
            ChatEvent::Presence(_) | ChatEvent::HeldBack(_) => {}
            other => panic!("ann got {other:?}"),
        }
    }
    drop(cat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_again_from_the_same_node_takes_over_the_place_of_an_interrupted_session() {
    let (_hub, members, addr) = room(config()).await;
    let mut bob = member(&members, &addr, "bob").await;
    let proxy = FaultProxy::start(addr.parse().unwrap()).await.unwrap();
    let ann_node = dialling_node("ann", SECRET).await;
    let mut ann = member(&ann_node, &proxy.addr().to_string(), "ann").await;
    for client_seq in 1..=3 {
        let text = Text {
            client_seq,
            text: format!("ann {client_seq}"),
        };
        ann.room.cast(text).await.unwrap();
    }
    let mut acked = 0;
    while acked < 3 {
        if let ChatEvent::Acked(ack) = event(&mut ann).await {
            acked = ack.client_seq;
        }
    }
    proxy.set_blackhole(true);
    assert!(proxy.cut_all() > 0);
    interrupted(&mut ann).await;

    // Another node may not take the name while the room holds ann's session.
    let other = dialling_node("impostor", SECRET).await;
    let refused = join(&other, &addr, "lobby", "ann", WAIT).await;
    assert!(
        matches!(&refused, Err(duologue_actors::chat::JoinError::Rejected(r)) if r.contains("taken")),
        "{refused:?}"
    );
    // Ann's own node, on a new session: it takes the place over.
    let again = member(&ann_node, &addr, "ann").await;
    assert!(again.welcome.took_over && again.welcome.known);
    assert_eq!(again.welcome.last_client_seq, 3);
    // The earlier session, trying to resume, learns the room gave it up.
    proxy.set_blackhole(false);
    let reason = tokio::time::timeout(WAIT, ann.room.closed()).await.unwrap();
    assert!(
        matches!(&reason, CloseReason::Lost(_) | CloseReason::Ended { .. }),
        "the earlier session ends: {reason:?}"
    );
    // Bob saw ann join (once), her three lines, and nothing of the takeover; ann's new
    // session relays.
    let mut heard = 0;
    let mut joins = 0;
    while heard < 3 {
        match event(&mut bob).await {
            ChatEvent::Relay(r) => {
                heard += 1;
                assert_eq!(r.from, "ann");
            }
            ChatEvent::Presence(p) if p.user == "ann" && p.joined && joins == 0 => joins += 1,
            other => panic!("bob got {other:?}"),
        }
    }
    bob.room
        .cast(Text {
            client_seq: 1,
            text: "welcome back".into(),
        })
        .await
        .unwrap();
    let mut again = again;
    loop {
        match event(&mut again).await {
            ChatEvent::Relay(r) if r.text == "welcome back" => break,
            ChatEvent::Relay(_) | ChatEvent::Presence(_) => {}
            other => panic!("ann got {other:?}"),
        }
    }
    assert!(
        matches!(bob.events.try_recv(), None | Some(ChatEvent::Acked(_))),
        "bob saw no leave and no join"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_whose_inbox_pauses_the_room_still_holds_the_writer_to_its_pace() {
    // The slow_reader bench's reader: a window of 4 096 in its inbox, 1 000 events a
    // second. Its inbox pauses the room between three quarters and a quarter full (two
    // seconds at that pace, longer than `hold_at_most`); the credit it keeps granting
    // meanwhile tells the room it reads.
    const READER_WINDOW: u64 = 4096;
    let fanout = FanoutConfig::default();
    let (_hub, _members, addr) = room(fanout).await;
    let reader_node = node_with(NodeConfig {
        name: "reader".into(),
        session: SessionConfig {
            credit_window: READER_WINDOW,
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    let writer_node = dialling_node("writer", SECRET).await;
    let mut reader = member(&reader_node, &addr, "reader").await;
    let mut writer = member(&writer_node, &addr, "writer").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writing = tokio::spawn(async move {
        let (mut next, mut acked) = (1u64, 0u64);
        while !*stopped.borrow() {
            if next - 1 - acked < 64 {
                let text = Text {
                    client_seq: next,
                    text: next.to_string(),
                };
                let mut stopped = stopped.clone();
                tokio::select! {
                    sent = writer.room.cast(text) => sent.expect("the room takes texts"),
                    _ = stopped.wait_for(|stop| *stop) => break,
                }
                next += 1;
                continue;
            }
            let mut stopped = stopped.clone();
            tokio::select! {
                event = writer.events.recv() => match event {
                    Some(ChatEvent::Acked(ack)) => acked = ack.client_seq,
                    Some(ChatEvent::Presence(_) | ChatEvent::HeldBack(_)) => {}
                    other => panic!("the writer got {other:?}"),
                },
                _ = stopped.wait_for(|stop| *stop) => break,
            }
        }
        acked
    });
    let mut read = 0u64;
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..400 {
        ticks.tick().await;
        for _ in 0..10 {
            match reader.events.try_recv() {
                Some(ChatEvent::Relay(relay)) => {
                    read += 1;
                    assert_eq!(relay.room_seq, read, "no gap");
                }
                Some(ChatEvent::Presence(_)) => {}
                Some(other) => panic!("the reader got {other:?}"),
                None => break,
            }
        }
    }
    stop.send(true).unwrap();
    let acked = tokio::time::timeout(WAIT, writing).await.unwrap().unwrap();
    // The room records what the reader's window, the soft bound and what was in flight
    // when the pause came can hold beyond what it read: nothing like a free writer's
    // hundreds of thousands.
    let bound = read + READER_WINDOW + fanout.hold_lag as u64 + 4096;
    assert!(
        acked <= bound,
        "the writer was not held back: {acked} acked, {read} read"
    );
}

/// Dropping a `Behind` without its farewell ends the member's session at once, with a
/// `LimitExceeded` farewell naming the bound: the member is told in any case.
#[tokio::test]
async fn a_dropped_behind_ends_the_members_session_at_once_and_says_why() {
    use duologue::flow::{Fanout, FanoutConfig, LetGo};
    let member = unread_member(listening_node("server", SECRET).await).await;
    let mut fanout: Fanout<&str, Pong> = Fanout::new(FanoutConfig {
        hold_lag: 4,
        max_lag: 8,
        ..FanoutConfig::default()
    });
    fanout.insert("member", member.session.clone());
    let pong = Pong {
        n: 1,
        deadline_left_ms: 0,
    };
    let behind = loop {
        if let Some(behind) = fanout.publish(&pong, None).pop() {
            break behind;
        }
    };
    assert!(matches!(behind.cause(), LetGo::Messages(_)), "{behind:?}");
    drop(behind);
    member.ended_by_the_fanout("fell behind").await;
}

/// A member leaving politely (`Fanout::finish`) that does not take what its outbox holds
/// within the farewell timeout has its session ended, `LimitExceeded`.
#[tokio::test]
async fn a_member_that_does_not_take_its_outbox_after_finish_is_ended_at_the_farewell_timeout() {
    use duologue::flow::{Fanout, FanoutConfig};
    let member = unread_member(listening_node("server", SECRET).await).await;
    let farewell_timeout = Duration::from_millis(300);
    let mut fanout: Fanout<&str, Pong> = Fanout::new(FanoutConfig {
        farewell_timeout,
        ..FanoutConfig::default()
    });
    fanout.insert("member", member.session.clone());
    let pong = Pong {
        n: 1,
        deadline_left_ms: 0,
    };
    for _ in 0..16 {
        assert!(fanout.publish(&pong, None).is_empty());
    }
    let finished = Instant::now();
    assert!(fanout.finish(&"member"));
    member.ended_by_the_fanout("").await;
    assert!(
        finished.elapsed() >= farewell_timeout,
        "ended before its timeout"
    );
}

/// A fan-out's outboxes are charged to the replay budgets, as a member's replay buffer
/// is: a member whose outbox its peer's budget cannot take is let go, naming the budget.
#[tokio::test]
async fn a_member_whose_outbox_the_replay_budget_cannot_take_is_let_go() {
    use duologue::flow::{Fanout, FanoutConfig, LetGo};
    let member = unread_member(
        node_with(duologue::NodeConfig {
            name: "server".into(),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            budget: duologue::settings::BudgetConfig {
                peer_replay_bytes: 64 * 1024,
                node_replay_bytes: 128 * 1024,
                ..Default::default()
            },
            ..Default::default()
        })
        .await,
    )
    .await;
    // The message bounds are far away: only the budget can let the member go.
    let mut fanout: Fanout<&str, Ping> = Fanout::new(FanoutConfig::default());
    fanout.insert("member", member.session.clone());
    let ping = Ping {
        n: 1,
        body: vec![7; 1024],
    };
    let mut published = 0;
    let behind = loop {
        if let Some(behind) = fanout.publish(&ping, None).pop() {
            break behind;
        }
        published += 1;
        assert!(published < 1_000, "1 000 KiB queued past a 64 KiB budget");
    };
    assert!(matches!(behind.cause(), LetGo::Budget(_)), "{behind:?}");
    drop(behind);
    member.ended_by_the_fanout("budget").await;
}

/// A member on a node of its own that never reads (its credit window is 4 messages), with
/// a session to `server`'s probe: what a fan-out sends it waits in its outbox.
struct Member {
    /// The session at the server's end, to fan out to.
    session: duologue::SessionRef,
    /// The member's handle.
    remote: duologue::RemoteRef<PingPong>,
    /// Held: dropping it would end the session.
    _inbox: duologue::InboxReceiver<PingPong>,
    _node: duologue::Node,
    /// The server's node, held for the same reason.
    _server: duologue::Node,
}

impl Member {
    /// Waits for the member's session to end, and checks that the fan-out ended it:
    /// `LimitExceeded`, with `detail` in its farewell's detail.
    async fn ended_by_the_fanout(&self, detail: &str) {
        let reason = tokio::time::timeout(WAIT, self.remote.closed())
            .await
            .expect("the member's session ends within the wait bound");
        assert!(
            matches!(&reason, CloseReason::Lost(LostReason::PeerEnded(g))
                if g.reason == GoodbyeReason::LimitExceeded && g.detail.contains(detail)),
            "{reason:?}"
        );
    }
}

async fn unread_member(server: duologue::Node) -> Member {
    let server = served_probe(server).await;
    let node = node_with(duologue::NodeConfig {
        name: "member".into(),
        session: duologue::settings::SessionConfig {
            credit_window: 4,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (remote, inbox) = node
        .connect::<PingPong>((addr(&server.node), "probe"))
        .inbox()
        .await
        .unwrap();
    let Served {
        node: server,
        mut seen,
        ..
    } = server;
    let session = loop {
        if let duologue::SessionSignal::Opened(session) = next_signal(&mut seen).await {
            break session;
        }
    };
    Member {
        session,
        remote,
        _inbox: inbox,
        _node: node,
        _server: server,
    }
}
