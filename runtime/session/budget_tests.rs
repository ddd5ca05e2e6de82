//! The memory budgets sessions share (`crate::budget`), driven deterministically: pairs
//! of sessions from the harness, each side charged to an account of one set of budgets,
//! wires that hold frames until the test delivers them (a peer that never acknowledges
//! is one whose wire is never delivered), and a synthetic clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::testing::harness::*;
use super::*;
use crate::budget::{BudgetConfig, Budgets};
use crate::error::HeldBy;
use crate::wire::BodyKind;

/// Every message of these tests: its number and 92 bytes more.
const PAD: usize = 92;
const SIZE: usize = 8 + PAD;

fn budgets(config: BudgetConfig) -> Arc<Budgets> {
    Budgets::new(config)
}

fn unlimited() -> BudgetConfig {
    BudgetConfig {
        node_replay_bytes: usize::MAX,
        peer_replay_bytes: usize::MAX,
        node_inbound_bytes: usize::MAX,
        peer_inbound_bytes: usize::MAX,
        session_inbound_bytes: usize::MAX,
    }
}

/// A pair whose initiator `a` sends padded messages, charged to an account with `peer`.
fn sender(budgets: &Arc<Budgets>, peer: &NodeIdentity) -> Harness {
    let mut h = Harness::new(SessionConfig::default());
    h.a.pad = PAD;
    h.a.session.set_account(budgets.account(peer));
    h
}

/// Sends from `a` until the session refuses; returns how many it took and the refusal.
fn fill(h: &mut Harness) -> (u64, SendError<Body>) {
    let mut taken = 0;
    loop {
        match h.a.session.send(padded_body(h.a.sent + 1, PAD), || h.now) {
            Ok(_) => {
                h.a.sent += 1;
                taken += 1;
            }
            Err(error) => return (taken, error),
        }
        assert!(taken < 10_000, "the session never refused");
    }
}

/// Delivers everything both ways, acks included (a lone ack waits for `ack_delay`).
fn acknowledge(h: &mut Harness) {
    h.settle();
    h.advance(SessionConfig::default().ack_delay);
    h.settle();
}

fn full_limit(error: &SendError<Body>) -> ReplayLimit {
    match error {
        SendError::Full { limit, .. } => *limit,
        other => panic!("expected Full, got {other}"),
    }
}

#[test]
fn a_peers_sessions_that_never_ack_stop_together_at_the_peer_budget() {
    let budgets = budgets(BudgetConfig {
        peer_replay_bytes: 10 * SIZE,
        ..unlimited()
    });
    let mallory = node("mallory", 9);
    let mut first = sender(&budgets, &mallory);
    let mut second = sender(&budgets, &mallory);
    // Nothing `a` sends is delivered: no ack ever comes back.
    let (taken, refused) = fill(&mut first);
    assert_eq!(taken, 10);
    assert_eq!(full_limit(&refused), ReplayLimit::Peer { bytes: 10 * SIZE });
    let (taken, refused) = fill(&mut second);
    assert_eq!(taken, 0, "the peer's budget is spent, whichever session");
    assert!(matches!(full_limit(&refused), ReplayLimit::Peer { .. }));
    assert_eq!(budgets.replay_bytes(), 10 * SIZE);

    // Another peer's session has a budget of its own, and gets it back as its peer acks.
    let mut alice = sender(&budgets, &node("alice", 10));
    for _ in 0..3 {
        assert_eq!(fill(&mut alice).0, 10);
        acknowledge(&mut alice);
    }
    assert_eq!(alice.b.delivered, numbers(30));
    assert_eq!(
        budgets.replay_bytes(),
        10 * SIZE,
        "alice's were acknowledged"
    );

    // Once the first session's peer acknowledges, the second may send.
    acknowledge(&mut first);
    assert_eq!(first.b.delivered, numbers(10));
    let (taken, _) = fill(&mut second);
    assert_eq!(taken, 10);
}

#[test]
fn the_node_budget_holds_every_peer_together() {
    let budgets = budgets(BudgetConfig {
        node_replay_bytes: 15 * SIZE,
        peer_replay_bytes: 10 * SIZE,
        ..unlimited()
    });
    let mut mallory = sender(&budgets, &node("mallory", 9));
    let mut trudy = sender(&budgets, &node("trudy", 11));
    let (taken, refused) = fill(&mut mallory);
    assert_eq!(taken, 10);
    assert!(matches!(full_limit(&refused), ReplayLimit::Peer { .. }));
    let (taken, refused) = fill(&mut trudy);
    assert_eq!(taken, 5, "what the node has left");
    assert_eq!(full_limit(&refused), ReplayLimit::Node { bytes: 15 * SIZE });
    assert_eq!(
        refused.to_string(),
        format!(
            "the node's replay budget ({} bytes over all sessions) is full: the peer has not \
             acknowledged enough of what was sent",
            15 * SIZE
        )
    );
    // A refusal by the node's budget takes nothing from the peer's.
    acknowledge(&mut mallory);
    let (taken, _) = fill(&mut trudy);
    assert_eq!(
        taken, 5,
        "trudy's peer budget still had room; the node's is back"
    );
}

#[test]
fn the_sessions_own_window_is_named_when_it_is_the_one_full() {
    let budgets = budgets(unlimited());
    let mut h = Harness::new(SessionConfig {
        replay_max_bytes: 3 * SIZE,
        ..SessionConfig::default()
    });
    h.a.pad = PAD;
    h.a.session.set_account(budgets.account(&node("b", 2)));
    let (taken, refused) = fill(&mut h);
    assert_eq!(taken, 3);
    assert!(matches!(
        full_limit(&refused),
        ReplayLimit::Session { bytes, .. } if bytes == 3 * SIZE
    ));
}

#[test]
fn a_budget_overflow_while_interrupted_loses_the_session_naming_it() {
    let budgets = budgets(BudgetConfig {
        peer_replay_bytes: 4 * SIZE,
        ..unlimited()
    });
    let mut h = sender(&budgets, &node("b", 2));
    for _ in 0..4 {
        assert!(h.a.send(h.now));
    }
    h.cut();
    assert!(!h.a.send(h.now), "the fifth overflows the peer's budget");
    h.a.events(h.now);
    let (reason, unconfirmed) = h.a.closed.clone().expect("lost");
    assert_eq!(
        reason,
        CloseReason::Lost(LostReason::ReplayFull(ReplayLimit::Peer {
            bytes: 4 * SIZE
        }))
    );
    assert_eq!(unconfirmed, numbers(4), "what was sent comes back");
    assert_eq!(budgets.replay_bytes(), 0, "and the budget has it back");
}

#[test]
fn acks_and_closes_give_the_replay_budget_back() {
    let budgets = budgets(unlimited());
    let mut h = sender(&budgets, &node("b", 2));
    for _ in 0..20 {
        assert!(h.a.send(h.now));
    }
    assert_eq!(budgets.replay_bytes(), 20 * SIZE);
    acknowledge(&mut h);
    assert_eq!(budgets.replay_bytes(), 0, "acknowledged");
    for _ in 0..5 {
        assert!(h.a.send(h.now));
    }
    h.a.session.abort("test".into());
    assert_eq!(
        budgets.replay_bytes(),
        0,
        "handed back to the owner at the close"
    );
    assert_eq!(budgets.peers(), 1);
    drop(h);
    assert_eq!(
        budgets.peers(),
        0,
        "the peer's entry goes with its last session"
    );
}

#[test]
fn replies_are_refused_by_a_full_budget_but_never_held_back_by_credit() {
    let budgets = budgets(BudgetConfig {
        peer_replay_bytes: 2 * SIZE,
        ..unlimited()
    });
    let mut h = Harness::new(SessionConfig {
        credit_window: 1,
        ..SessionConfig::default()
    });
    h.a.session.set_account(budgets.account(&node("b", 2)));
    let reply = |n| Body {
        kind: BodyKind::Reply { to: n, fault: None },
        ..padded_body(n, PAD)
    };
    assert!(h.a.session.send(padded_body(1, PAD), || h.now).is_ok());
    assert!(matches!(
        h.a.session.send(padded_body(2, PAD), || h.now),
        Err(SendError::HeldBack {
            by: HeldBy::NoCredit,
            ..
        })
    ));
    assert!(
        h.a.session.send(reply(2), || h.now).is_ok(),
        "no credit needed"
    );
    assert!(matches!(
        h.a.session.send(reply(3), || h.now),
        Err(SendError::Full {
            limit: ReplayLimit::Peer { .. },
            ..
        })
    ));
}

/// A pair whose acceptor `b` delivers into an owner that consumes only when told, its
/// grants reserved in an account with `peer`; `a` sends padded messages. `b` grants one
/// message's worth of bytes at first, and up to `window` messages' worth.
fn receiver(budgets: &Arc<Budgets>, peer: &NodeIdentity, window: u64) -> Harness {
    let mut h = Harness::new(SessionConfig {
        credit_window: 1 << 20,
        credit_window_bytes: window * SIZE as u64,
        initial_credit_bytes: SIZE as u64,
        max_message_bytes: SIZE as u64,
        flow_high_watermark: None,
        ..SessionConfig::default()
    });
    h.a.pad = PAD;
    h.b.consume_at_once = false;
    h.b.session.set_account(budgets.account(peer));
    h
}

/// Sends from `a` all its credit allows, and delivers it to `b`'s owner (questions for
/// byte credit and their answers included); returns how many it sent.
fn send_all_credit(h: &mut Harness) -> u64 {
    let mut sent = 0;
    loop {
        h.settle();
        let before = sent;
        while h.a.send(h.now) {
            sent += 1;
        }
        h.settle();
        if sent == before {
            return sent;
        }
    }
}

/// Bytes `b`'s owner was delivered and has not consumed.
fn waiting_bytes(h: &Harness) -> u64 {
    h.b.session.flow(h.now).inbound_waiting_bytes
}

#[test]
fn what_is_in_flight_towards_an_owner_never_passes_its_sessions_window() {
    let budgets = budgets(unlimited());
    let mut h = receiver(&budgets, &node("a", 1), 8);
    // The owner consumes nothing: the sender gets exactly the window, asking for it as
    // its first grant runs out.
    assert_eq!(send_all_credit(&mut h), 8);
    assert_eq!(waiting_bytes(&h), 8 * SIZE as u64);
    assert_eq!(budgets.inbound_bytes(), 8 * SIZE);
    // Each message consumed lets one more in, never more.
    for round in 1..=5 {
        h.b.consume(2);
        h.settle();
        assert_eq!(send_all_credit(&mut h), 2, "round {round}");
        assert_eq!(waiting_bytes(&h), 8 * SIZE as u64);
    }
    assert_eq!(h.b.delivered, numbers(18));
}

#[test]
fn the_session_budget_caps_the_window() {
    let budgets = budgets(BudgetConfig {
        session_inbound_bytes: 3 * SIZE,
        ..unlimited()
    });
    let mut h = receiver(&budgets, &node("a", 1), 8);
    assert_eq!(send_all_credit(&mut h), 3);
    assert!(waiting_bytes(&h) <= 3 * SIZE as u64);
}

#[test]
fn a_peers_sessions_together_never_pass_the_peer_budget_and_wait_for_room() {
    let budgets = budgets(BudgetConfig {
        peer_inbound_bytes: 6 * SIZE,
        ..unlimited()
    });
    let mallory = node("mallory", 9);
    let mut first = receiver(&budgets, &mallory, 8);
    let mut second = receiver(&budgets, &mallory, 8);
    let woken = Arc::new(AtomicUsize::new(0));
    let counter = woken.clone();
    second
        .b
        .session
        .account
        .as_ref()
        .unwrap()
        .on_freed(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    let taken = send_all_credit(&mut first) + send_all_credit(&mut second);
    assert_eq!(taken, 6, "the peer's budget, whichever session");
    assert_eq!(budgets.inbound_bytes(), 6 * SIZE);
    assert!(waiting_bytes(&first) + waiting_bytes(&second) <= 6 * SIZE as u64);
    assert!(second.b.session.flow(second.now).credit_withheld);

    // Another peer's sessions have a budget of their own.
    let mut alice = receiver(&budgets, &node("alice", 10), 8);
    assert_eq!(send_all_credit(&mut alice), 6);

    // The first session's owner consumes two: the waiting session is woken, and its
    // driver's next look grants what it can now.
    first.b.consume(2);
    assert_eq!(woken.load(Ordering::SeqCst), 1);
    second.b.consume(0);
    second.settle();
    assert_eq!(send_all_credit(&mut second), 2);
    assert_eq!(
        budgets.inbound_bytes() - 6 * SIZE,
        6 * SIZE,
        "alice's aside"
    );
}

#[test]
fn the_node_inbound_budget_holds_every_peer_together() {
    let budgets = budgets(BudgetConfig {
        node_inbound_bytes: 5 * SIZE,
        ..unlimited()
    });
    let mut mallory = receiver(&budgets, &node("mallory", 9), 8);
    let mut alice = receiver(&budgets, &node("alice", 10), 8);
    let sent = send_all_credit(&mut mallory) + send_all_credit(&mut alice);
    assert_eq!(sent, 5);
    assert_eq!(budgets.inbound_bytes(), 5 * SIZE);
    assert!(alice.b.session.flow(alice.now).credit_withheld);
    mallory.b.consume(1);
    alice.b.consume(0);
    alice.settle();
    assert_eq!(
        send_all_credit(&mut alice) + send_all_credit(&mut mallory),
        1
    );
    assert_eq!(budgets.inbound_bytes(), 5 * SIZE);
}

#[test]
fn replies_reach_a_caller_whatever_its_byte_credit() {
    let budgets = budgets(BudgetConfig {
        node_inbound_bytes: SIZE,
        ..unlimited()
    });
    let mut h = receiver(&budgets, &node("a", 1), 4);
    assert_eq!(send_all_credit(&mut h), 1);
    // `b` called `a`; `a`'s reply needs no credit, so the caller is never stuck behind
    // its own budget.
    let reply = Body {
        kind: BodyKind::Reply { to: 1, fault: None },
        ..padded_body(2, PAD)
    };
    assert!(h.a.session.send(reply, || h.now).is_ok());
    h.settle();
    assert_eq!(h.b.delivered, numbers(2));
}

#[test]
fn a_message_larger_than_the_grant_is_asked_for_and_sent() {
    let budgets = budgets(unlimited());
    let mut h = Harness::new(SessionConfig {
        initial_credit_bytes: 100,
        credit_window_bytes: 10_000,
        max_message_bytes: 10_000,
        ..SessionConfig::default()
    });
    h.b.session.set_account(budgets.account(&node("a", 1)));
    h.a.pad = 5000;
    assert!(!h.a.send(h.now), "5008 bytes do not fit a grant of 100");
    assert!(
        h.a.session.flow(h.now).send_blocked,
        "held back for bytes is blocked, as for messages"
    );
    h.a.waiting = 1;
    h.a.flush(h.now);
    assert!(
        h.a.wire
            .iter()
            .any(|f| matches!(f, Frame::FlowQuery(q) if q.needed_bytes == 5008)),
        "the peer is told what waits"
    );
    h.settle();
    assert_eq!(h.b.delivered, numbers(1), "granted and sent");
    assert!(!h.a.session.flow(h.now).send_blocked);
}

#[test]
fn a_grant_that_must_wait_never_wakes_its_own_session() {
    let budgets = budgets(BudgetConfig {
        node_inbound_bytes: 3 * SIZE,
        ..unlimited()
    });
    let mut holder = receiver(&budgets, &node("mallory", 9), 8);
    let mut waiter = receiver(&budgets, &node("alice", 10), 8);
    let woken = Arc::new(AtomicUsize::new(0));
    let counter = woken.clone();
    waiter
        .b
        .session
        .account
        .as_ref()
        .unwrap()
        .on_freed(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    send_all_credit(&mut holder);
    send_all_credit(&mut waiter);
    assert!(waiter.b.session.flow(waiter.now).credit_withheld);
    // Its driver looks again and again (as it does on every wake-up): nothing it does
    // wakes it, so it sleeps until another session gives bytes back.
    for _ in 0..10 {
        waiter.b.consume(0);
        waiter.settle();
    }
    assert_eq!(woken.load(Ordering::SeqCst), 0);
    // The holder's owner consumes two: it takes one message's worth again for itself
    // (its share), and the room left wakes the waiter.
    holder.b.consume(2);
    assert_eq!(woken.load(Ordering::SeqCst), 1);
}
