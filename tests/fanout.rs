//! Fan-out without silent loss, through the chat room: a member that stops reading holds
//! the room back only through its own outbox, is let go with a typed notice after
//! everything queued for it, and the members who keep talking lose nothing. A member
//! whose stream broke costs the room its outbox's lag at most: it is let go once that
//! fills, or gets everything in order when it resumes first.

mod support;

use std::time::Duration;

use duologue::LostReason;
use duologue::{CloseReason, FanoutConfig, GoodbyeReason, Node, NodeConfig, SessionConfig};
use duologue_actors::chat::proto::{Relay, Text};
use duologue_actors::chat::{ChatEvent, ChatRoom, Joined, RoomConfig, join};
use duologue_testkit::FaultProxy;
use ractor::Actor;
use support::*;

/// The members' credit window: what an unread member's inbox may hold.
const WINDOW: u64 = 16;
/// The room's lag bound: room enough for members who read as they talk.
const LAG: usize = 256;
/// Texts each talking member sends.
const TEXTS: u64 = 600;
/// Texts a talking member has sent and not seen acked, at most.
const OUTSTANDING: u64 = 8;

/// A hub hosting room `lobby`, and a node for the members with a small credit window.
async fn room(farewell_timeout: Duration) -> (Node, Node, String) {
    room_with(FanoutConfig {
        max_lag: LAG,
        farewell_timeout,
        ..FanoutConfig::default()
    })
    .await
}

/// As [`room`], with the room's fan-out set up as `fanout` says.
async fn room_with(fanout: FanoutConfig) -> (Node, Node, String) {
    let hub = listening_node("hub", SECRET).await;
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

/// Sends `TEXTS` texts and reads until every one is acked and `TEXTS` relays from
/// `other` arrived; returns those relays' texts and whether `gone` was seen leaving.
async fn talk(mut me: Joined, user: &str, other: &str, gone: &str) -> (Joined, Vec<String>, bool) {
    let (mut acked, mut heard, mut saw_leave) = (0, Vec::new(), false);
    let mut next = 1;
    while acked < TEXTS || (heard.len() as u64) < TEXTS {
        // Talk only a little ahead of the acks, and read whatever came in between.
        if next <= TEXTS && next - 1 - acked < OUTSTANDING {
            let text = Text {
                client_seq: next,
                text: format!("{user} {next}"),
            };
            me.room.cast(text).await.expect("the room takes texts");
            next += 1;
            continue;
        }
        let event = event(&mut me).await;
        match event {
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

fn texts(user: &str) -> Vec<String> {
    (1..=TEXTS).map(|n| format!("{user} {n}")).collect()
}

/// Reads `member`'s relays, which must run 1, 2, 3, ... in room order, up to the
/// first event that is not a relay (or a presence); returns them and that event.
async fn relays_then(member: &mut Joined) -> (Vec<u64>, ChatEvent) {
    let mut seqs = Vec::new();
    loop {
        match event(member).await {
            ChatEvent::Relay(relay) => {
                assert_eq!(relay.room_seq, seqs.len() as u64 + 1, "no gap, no repeat");
                seqs.push(relay.room_seq);
            }
            ChatEvent::Presence(_) => {}
            other => return (seqs, other),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_reading_is_let_go_in_order_while_two_others_keep_talking() {
    let (_hub, members, addr) = room(Duration::from_secs(60)).await;
    let mut cat = member(&members, &addr, "cat").await;
    let ann = member(&members, &addr, "ann").await;
    let bob = member(&members, &addr, "bob").await;

    let ((ann, ann_heard, ann_saw), (bob, bob_heard, bob_saw)) = tokio::join!(
        talk(ann, "ann", "bob", "cat"),
        talk(bob, "bob", "ann", "cat")
    );
    assert_eq!(
        ann_heard,
        texts("bob"),
        "ann heard every one of bob's lines, in order"
    );
    assert_eq!(
        bob_heard,
        texts("ann"),
        "bob heard every one of ann's lines, in order"
    );
    assert!(ann_saw && bob_saw, "both saw cat leave");

    // Cat read nothing: its inbox holds at most its credit window (and a few signals).
    assert!(
        cat.events.len() <= WINDOW as usize + 4,
        "an unread inbox stays within the window: {}",
        cat.events.len()
    );
    let (seqs, notice) = relays_then(&mut cat).await;
    let ChatEvent::FellBehind(behind) = notice else {
        panic!("cat is told it fell behind, after its relays: {notice:?}");
    };
    assert_eq!(
        behind.missed_from,
        seqs.len() as u64 + 1,
        "the notice says where the gap starts: {behind:?}"
    );
    assert!(seqs.len() >= LAG, "cat got what was queued for it");
    assert_eq!(behind.last_client_seq, 0, "cat said nothing");
    assert_eq!(event(&mut cat).await, ChatEvent::RoomFinished);
    cat.room.finish();
    assert_eq!(
        event(&mut cat).await,
        ChatEvent::Closed(CloseReason::Finished)
    );

    // Cat may join again, and hears the recent history in its welcome.
    let again = member(&members, &addr, "cat").await;
    let history: Vec<_> = again.welcome.history.iter().map(|r| r.room_seq).collect();
    assert_eq!(
        history.last(),
        Some(&(2 * TEXTS)),
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
async fn a_member_that_never_reads_its_farewell_is_ended_with_limit_exceeded() {
    let (_hub, members, addr) = room(Duration::from_millis(300)).await;
    let mut cat = member(&members, &addr, "cat").await;
    let ann = member(&members, &addr, "ann").await;
    let bob = member(&members, &addr, "bob").await;
    let ((ann, _, ann_saw), (bob, _, _)) = tokio::join!(
        talk(ann, "ann", "bob", "cat"),
        talk(bob, "bob", "ann", "cat")
    );
    assert!(ann_saw, "ann saw cat leave");

    let reason = tokio::time::timeout(WAIT, cat.room.closed())
        .await
        .expect("cat's session ends within the farewell timeout");
    assert!(
        matches!(&reason, CloseReason::Lost(LostReason::PeerEnded(g)) if g.reason == GoodbyeReason::LimitExceeded),
        "{reason:?}"
    );
    // What reached cat before the end is still there, in order, then the reason.
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
async fn a_member_behind_by_bytes_is_let_go_long_before_its_message_count() {
    const TEXT_BYTES: usize = 4096;
    const MAX_LAG_BYTES: usize = 4 * TEXT_BYTES;
    let (_hub, members, addr) = room_with(FanoutConfig {
        max_lag: LAG,
        max_lag_bytes: MAX_LAG_BYTES,
        farewell_timeout: Duration::from_secs(60),
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
        panic!("cat is told it fell behind, after its relays: {notice:?}");
    };
    assert_eq!(behind.missed_from, seqs.len() as u64 + 1, "{behind:?}");
    // Its window's worth went into its session; its outbox took what fits in the bytes.
    assert!(
        (1..=5).contains(&behind.queued),
        "fell behind by bytes, not after {LAG} messages: {behind:?}"
    );
    assert!((seqs.len() as u64) < texts, "{} relays", seqs.len());
}

#[tokio::test]
async fn dropping_a_members_events_ends_its_session_and_the_room_says_so() {
    let (_hub, members, addr) = room(Duration::from_secs(60)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_stream_broke_is_let_go_once_its_lag_fills_not_its_credit() {
    let (_hub, members, addr) = room(Duration::from_secs(60)).await;
    let mut ann = member(&members, &addr, "ann").await;
    // Cat comes through a proxy, with the default credit window: far more than the lag.
    let proxy = FaultProxy::start(addr.parse().unwrap()).await.unwrap();
    let cat_node = dialling_node("cat", SECRET).await;
    let mut cat = member(&cat_node, &proxy.addr().to_string(), "cat").await;
    proxy.set_blackhole(true);
    assert!(proxy.cut_all() > 0);
    interrupted(&mut cat).await;

    // Ann talks until the room lets cat go; it must within a few lags, long before cat's
    // session would run out of credit.
    let limit = 4 * LAG as u64;
    let mut acked = 0;
    let mut sent = 0;
    loop {
        if sent < limit && sent - acked < OUTSTANDING {
            sent += 1;
            let text = Text {
                client_seq: sent,
                text: format!("ann {sent}"),
            };
            ann.room.cast(text).await.expect("the room takes texts");
            continue;
        }
        match event(&mut ann).await {
            ChatEvent::Acked(ack) => acked = ack.client_seq,
            ChatEvent::Presence(p) if p.user == "cat" && !p.joined => break,
            ChatEvent::Presence(_) | ChatEvent::HeldBack(_) => {}
            other => panic!("ann got {other:?}"),
        }
        assert!(acked < limit, "cat still in the room after {acked} texts");
    }
    drop(cat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_stream_broke_gets_everything_in_order_when_it_resumes() {
    let (_hub, members, addr) = room(Duration::from_secs(60)).await;
    let mut ann = member(&members, &addr, "ann").await;
    let proxy = FaultProxy::start(addr.parse().unwrap()).await.unwrap();
    let cat_node = dialling_node("cat", SECRET).await;
    let mut cat = member(&cat_node, &proxy.addr().to_string(), "cat").await;
    proxy.set_blackhole(true);
    assert!(proxy.cut_all() > 0);
    interrupted(&mut cat).await;

    // Fewer texts than the lag while cat is away: all wait for it.
    let texts = LAG as u64 / 2;
    for client_seq in 1..=texts {
        let text = Text {
            client_seq,
            text: format!("ann {client_seq}"),
        };
        ann.room.cast(text).await.expect("the room takes texts");
    }
    let mut acked = 0;
    while acked < texts {
        match event(&mut ann).await {
            ChatEvent::Acked(ack) => acked = ack.client_seq,
            ChatEvent::Presence(p) => assert!(p.joined, "cat was let go: {p:?}"),
            ChatEvent::HeldBack(_) => {}
            other => panic!("ann got {other:?}"),
        }
    }
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
