//! Resume, replay and loss, driven deterministically: two sessions, a wire per direction
//! that holds frames until the test delivers them, cuts that drop whatever is on the
//! wire, and a synthetic clock. The property test runs thousands of random schedules.

use std::time::Duration;

use proptest::prelude::*;
use uuid::Uuid;

use super::harness::*;
use super::*;
use crate::auth::NONCE_LEN;
use crate::wire::FlowSignal;

#[test]
fn a_cut_mid_transfer_resumes_with_every_message_once() {
    let mut h = Harness::new(SessionConfig::default());
    for _ in 0..100 {
        assert!(h.a.send(h.now));
        assert!(h.b.send(h.now));
    }
    // Half of the first batch's frames never arrive.
    h.deliver(true, 1);
    h.cut();
    assert_eq!((h.a.interrupted, h.b.interrupted), (1, 1));
    assert_eq!(h.a.session.state(), &State::Interrupted);
    // Messages sent while interrupted wait in the replay buffer.
    for _ in 0..50 {
        assert!(h.a.send(h.now));
    }
    h.reconnect();
    h.settle();
    assert_eq!((h.a.resumed, h.b.resumed), (1, 1));
    assert_eq!(h.b.delivered, numbers(150));
    assert_eq!(h.a.delivered, numbers(100));
    h.advance(Duration::from_millis(10));
    h.settle();
    assert_eq!(h.a.session.unacked() + h.b.session.unacked(), 0);
}

#[test]
fn a_failed_resume_attempt_can_be_retried() {
    let mut h = Harness::new(SessionConfig::default());
    for _ in 0..10 {
        h.a.send(h.now);
    }
    h.cut();
    h.reconnect();
    h.deliver(true, 1); // the resume Hello arrives, then the new stream breaks too
    h.cut();
    assert_eq!(
        h.a.interrupted, 1,
        "a failed attempt is not a new interruption"
    );
    h.reconnect();
    h.settle();
    assert_eq!(h.b.delivered, numbers(10));
}

#[test]
fn no_resume_before_the_deadline_loses_the_session_with_the_unconfirmed() {
    let config = SessionConfig::default();
    let mut h = Harness::new(config.clone());
    for _ in 0..5 {
        h.a.send(h.now);
    }
    h.deliver(true, usize::MAX);
    h.advance(config.ack_delay);
    h.deliver(false, usize::MAX); // acks for 1..=5
    for _ in 0..3 {
        h.a.send(h.now);
    }
    h.cut();
    h.advance(config.resume_timeout);
    let (reason, unconfirmed) = h.a.closed.clone().expect("lost");
    assert!(
        matches!(reason, CloseReason::Lost(LostReason::ResumeDeadline { .. })),
        "{reason:?}"
    );
    assert_eq!(unconfirmed, vec![6, 7, 8]);
    assert!(matches!(
        h.b.closed,
        Some((CloseReason::Lost(LostReason::ResumeDeadline { .. }), _))
    ));
}

#[test]
fn a_restarted_peer_loses_the_session_with_the_unconfirmed() {
    let config = SessionConfig::default();
    let mut h = Harness::new(config.clone());
    for _ in 0..4 {
        h.a.send(h.now);
    }
    h.cut();
    // The peer restarted: a new process, new incarnation, no memory of the session.
    let fresh = Session::acceptor(
        config,
        Secret::new(SECRET).unwrap(),
        node("b", 99),
        [5; NONCE_LEN],
        h.now,
    );
    h.b = End::new(fresh);
    h.a.session.begin_resume([9; NONCE_LEN], h.now);
    h.settle();
    let (reason, unconfirmed) = h.a.closed.clone().expect("lost");
    assert_eq!(
        reason,
        CloseReason::Lost(LostReason::PeerRestarted {
            previous: Uuid::from_u128(2),
            current: Uuid::from_u128(99)
        })
    );
    assert_eq!(unconfirmed, numbers(4));
    assert!(
        h.b.delivered.is_empty(),
        "nothing reached the new incarnation"
    );
}

#[test]
fn a_peer_that_forgot_the_session_refuses_the_resume() {
    let config = SessionConfig::default();
    let mut h = Harness::new(config.clone());
    h.a.send(h.now);
    h.cut();
    // Same incarnation, but the session is gone (it gave up on it).
    let fresh = Session::acceptor(
        config,
        Secret::new(SECRET).unwrap(),
        node("b", 2),
        [5; NONCE_LEN],
        h.now,
    );
    h.b = End::new(fresh);
    h.a.session.begin_resume([9; NONCE_LEN], h.now);
    h.settle();
    match h.a.closed.clone() {
        Some((CloseReason::Lost(LostReason::ResumeRefused(r)), unconfirmed)) => {
            assert_eq!(r.reason, RefuseReason::UnknownSession);
            assert_eq!(unconfirmed, vec![1]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_full_window_refuses_while_up_and_loses_while_interrupted() {
    let config = SessionConfig {
        replay_max_messages: 8,
        ..SessionConfig::default()
    };
    let mut h = Harness::new(config);
    for _ in 0..8 {
        assert!(h.a.send(h.now));
    }
    assert!(matches!(
        h.a.session.send(body(9), || h.now),
        Err(SendError::Full(_))
    ));
    h.cut();
    assert!(
        !h.a.send(h.now),
        "the ninth overflows the window while interrupted"
    );
    h.a.events(h.now);
    let (reason, unconfirmed) = h.a.closed.clone().expect("lost");
    assert!(matches!(
        reason,
        CloseReason::Lost(LostReason::WindowExceeded { messages: 8, .. })
    ));
    assert_eq!(unconfirmed, numbers(8));
}

#[test]
fn a_silent_peer_interrupts_a_session_with_data_outstanding() {
    let config = SessionConfig::default();
    let mut h = Harness::new(config.clone());
    h.a.send(h.now);
    h.a.flush(h.now); // sent, but the peer never answers
    h.advance(config.silence_timeout);
    assert_eq!(h.a.session.state(), &State::Interrupted);
    assert_eq!(h.a.interrupted, 1);
}

#[test]
fn an_idle_session_is_not_interrupted_by_silence() {
    let config = SessionConfig::default();
    let mut h = Harness::new(config.clone());
    h.advance(config.silence_timeout * 10);
    assert_eq!(h.a.session.state(), &State::Active);
}

#[test]
fn finishing_survives_a_cut() {
    let mut h = Harness::new(SessionConfig::default());
    h.a.send(h.now);
    h.a.session.finish();
    h.a.flush(h.now);
    h.cut();
    h.reconnect();
    h.settle();
    h.b.session.finish();
    h.settle();
    h.advance(Duration::from_millis(10));
    h.settle();
    assert_eq!(h.b.delivered, vec![1]);
    assert_eq!(
        h.a.closed.as_ref().map(|c| &c.0),
        Some(&CloseReason::Finished)
    );
    assert_eq!(
        h.b.closed.as_ref().map(|c| &c.0),
        Some(&CloseReason::Finished)
    );
}

#[test]
fn a_signal_sent_while_interrupted_reaches_the_peer_after_the_resume() {
    let mut h = Harness::new(SessionConfig::default());
    h.cut();
    h.b.session.signal_peer(FlowSignal::Throttle(0.5));
    h.reconnect();
    h.settle();
    assert_eq!(
        h.a.session.flow(h.now).peer_signal,
        Some(FlowSignal::Throttle(0.5))
    );
}

#[test]
fn a_signal_queued_when_the_stream_broke_is_sent_again() {
    let mut h = Harness::new(SessionConfig::default());
    h.b.session.signal_peer(FlowSignal::Pause);
    h.deliver(false, usize::MAX);
    assert!(h.a.session.flow(h.now).send_blocked, "paused");
    h.b.session.signal_peer(FlowSignal::Resume); // queued, lost with the stream
    h.cut();
    h.reconnect();
    h.settle();
    assert_eq!(
        h.a.session.flow(h.now).peer_signal,
        None,
        "the Resume arrived"
    );
    assert!(!h.a.session.flow(h.now).send_blocked);
}

/// One step of a random schedule.
#[derive(Clone, Debug)]
enum Step {
    Send { from_a: bool, count: u8 },
    Deliver { to_b: bool, frames: u8 },
    Advance { millis: u8 },
    Cut,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<bool>(), 1..20u8).prop_map(|(from_a, count)| Step::Send { from_a, count }),
        4 => (any::<bool>(), 1..4u8).prop_map(|(to_b, frames)| Step::Deliver { to_b, frames }),
        2 => (1..20u8).prop_map(|millis| Step::Advance { millis }),
        1 => Just(Step::Cut),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if std::env::var_os("CI").is_some() { 2000 } else { 4000 }))]

    /// Whatever the schedule of sends, partial deliveries, delays and cuts, each side
    /// delivers exactly the numbers the other sent, once each, in order.
    #[test]
    fn every_message_is_delivered_exactly_once_in_order(steps in prop::collection::vec(step(), 1..60)) {
        let mut h = Harness::new(SessionConfig::default());
        for step in steps {
            match step {
                Step::Send { from_a, count } => {
                    for _ in 0..count {
                        if from_a { h.a.send(h.now); } else { h.b.send(h.now); }
                    }
                }
                Step::Deliver { to_b, frames } => h.deliver(to_b, frames.into()),
                Step::Advance { millis } => h.advance(Duration::from_millis(millis.into())),
                Step::Cut => {
                    h.cut();
                    h.reconnect();
                }
            }
            // Never a duplicate or a reordering, at any moment.
            prop_assert_eq!(&h.b.delivered, &numbers(h.b.delivered.len() as u64));
            prop_assert_eq!(&h.a.delivered, &numbers(h.a.delivered.len() as u64));
        }
        h.settle();
        h.advance(Duration::from_millis(10));
        h.settle();
        prop_assert!(h.a.closed.is_none() && h.b.closed.is_none());
        prop_assert_eq!(&h.b.delivered, &numbers(h.a.sent));
        prop_assert_eq!(&h.a.delivered, &numbers(h.b.sent));
        prop_assert_eq!(h.a.session.unacked() + h.b.session.unacked(), 0);
    }

    /// A session lost to a restarted peer or an overflowing window hands back exactly
    /// the messages the peer never acknowledged.
    #[test]
    fn a_lost_session_hands_back_exactly_the_unacknowledged(
        acked in 0..40u64,
        more in 1..40u64,
        restart in any::<bool>(),
    ) {
        let window = more as usize;
        let config = SessionConfig { replay_max_messages: window, ..SessionConfig::default() };
        let mut h = Harness::new(config.clone());
        for _ in 0..acked {
            prop_assert!(h.a.send(h.now));
            h.settle();
            h.advance(config.ack_delay);
            h.settle();
        }
        prop_assert_eq!(h.a.session.unacked(), 0);
        for _ in 0..more { prop_assert!(h.a.send(h.now)); }
        h.a.flush(h.now);
        h.cut();
        if restart {
            let fresh = Session::acceptor(config, Secret::new(SECRET).unwrap(), node("b", 77), [5; NONCE_LEN], h.now);
            h.b = End::new(fresh);
            h.a.session.begin_resume([9; NONCE_LEN], h.now);
            h.settle();
        } else {
            h.a.send(h.now); // one past the window, while interrupted
            h.a.events(h.now);
        }
        let (reason, unconfirmed) = h.a.closed.clone().expect("lost");
        if restart {
            prop_assert!(matches!(reason, CloseReason::Lost(LostReason::PeerRestarted { .. })), "{:?}", reason);
        } else {
            prop_assert!(matches!(reason, CloseReason::Lost(LostReason::WindowExceeded { .. })), "{:?}", reason);
        }
        prop_assert_eq!(unconfirmed, (acked + 1..=acked + more).collect::<Vec<_>>());
    }
}
