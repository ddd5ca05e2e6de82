//! Liveness under cuts: grants, signals and acks lost on broken streams never leave a
//! sender waiting for good. The owners here consume late (not at delivery), so credit
//! and the watermarks' pause and resume are really exercised, and a cut drops whatever
//! was already taken from `poll_transmit`.

use std::time::Duration;

use proptest::prelude::*;

use super::testing::harness::*;
use super::*;

/// A small window, so credit binds within a few dozen messages.
fn small_window(window: u64) -> SessionConfig {
    SessionConfig {
        credit_window: window,
        ack_every: 4,
        ..SessionConfig::default()
    }
}

fn late_consumers(config: SessionConfig) -> Harness {
    let mut h = Harness::new(config);
    h.a.consume_at_once = false;
    h.b.consume_at_once = false;
    h
}

/// `a` wants to send `wanted` to `b`, whose 16-message window it fills; `b`'s owner
/// reads nothing yet.
fn filling_b(wanted: u64) -> Harness {
    let mut h = late_consumers(small_window(16));
    h.a.waiting = wanted;
    h.a.send_waiting(h.now);
    h.settle();
    h
}

/// After the cuts stop: both owners read everything, senders retry when told, streams
/// that the core gave up (silence) are replaced, time moves. Returns how many rounds it
/// took, or `None` if the pair never finished.
fn run_to_completion(h: &mut Harness) -> Option<u32> {
    for round in 0..2_000 {
        if h.a.session.is_interrupted() || h.b.session.is_interrupted() {
            h.cut();
            h.reconnect();
        }
        h.settle();
        h.a.consume(u64::MAX);
        h.b.consume(u64::MAX);
        h.a.send_waiting(h.now);
        h.b.send_waiting(h.now);
        h.settle();
        let done =
            |from: &End, to: &End| from.waiting == 0 && to.delivered.len() as u64 == from.sent;
        if done(&h.a, &h.b) && done(&h.b, &h.a) {
            return Some(round);
        }
        h.advance(Duration::from_millis(5));
    }
    None
}

#[test]
fn a_resume_lost_with_its_stream_does_not_leave_the_peer_paused() {
    let mut h = filling_b(16);
    assert_eq!(h.b.delivered.len(), 16);
    assert!(
        h.a.session.flow(h.now).send_blocked,
        "paused and out of credit"
    );
    h.a.waiting = 10;
    // b reads everything: its grant and its Resume leave in one frame...
    h.b.consume(u64::MAX);
    h.b.flush(h.now);
    assert!(!h.b.wire.is_empty());
    // ...which the broken stream loses.
    h.cut();
    h.reconnect();
    h.settle();
    assert!(
        !h.a.session.flow(h.now).send_blocked,
        "the resume restated the whole flow state"
    );
    assert_eq!(h.a.waiting, 0, "the waiting sender went on");
    assert_eq!(h.b.delivered, numbers(26));
}

#[test]
fn a_pause_still_in_effect_is_restated_after_a_resume() {
    let mut h = filling_b(16);
    h.cut();
    h.reconnect();
    h.settle();
    // b has read nothing: its grant stays where it was and a stays paused.
    assert_eq!(h.a.session.flow(h.now).peer_signal, Some(FlowSignal::Pause));
    h.b.consume(u64::MAX);
    h.settle();
    assert_eq!(h.a.session.flow(h.now).peer_signal, None);
}

#[test]
fn a_restated_throttle_is_not_applied_twice() {
    let mut h = Harness::new(SessionConfig::default());
    // a sends 1000/s for half a second, then b throttles it to half.
    for _ in 0..500 {
        h.a.send(h.now);
        h.settle();
        h.advance(Duration::from_millis(1));
    }
    h.b.session.signal_peer(FlowSignal::Throttle(0.5));
    h.settle();
    let before = h.a.session.flow(h.now).throttled_to.expect("throttled");
    h.cut();
    h.reconnect();
    h.settle();
    let after =
        h.a.session
            .flow(h.now)
            .throttled_to
            .expect("still throttled");
    assert!(
        (after - before).abs() < f64::EPSILON,
        "{before} then {after}"
    );
}

/// `a` fills `b`'s window and waits to send 4 more; `b`'s owner reads nothing.
fn held_back_pair() -> Harness {
    let h = filling_b(20);
    assert_eq!((h.a.sent, h.a.waiting), (16, 4));
    h
}

/// Whether `end`'s wire holds a frame `pick` accepts.
fn on_wire(end: &End, pick: impl Fn(&Frame) -> bool) -> bool {
    end.wire.iter().any(pick)
}

#[test]
fn a_sender_held_back_past_the_silence_timeout_asks_then_tells_its_owner_once() {
    let silence = SessionConfig::default().silence_timeout;
    let mut h = held_back_pair();
    h.advance(silence);
    h.a.flush(h.now);
    assert!(
        on_wire(
            &h.a,
            |f| matches!(f, Frame::FlowQuery(q) if q.next_seq == 17)
        ),
        "asked for seq 17"
    );
    h.settle(); // b answers with its grant and its pause
    assert_eq!(h.a.session.phase(), Phase::Active);
    h.advance(silence);
    assert_eq!(h.a.held_back, 1, "told once the answer confirmed the wait");
    h.advance(silence * 3);
    h.settle();
    assert_eq!(h.a.held_back, 1, "once per wait");
    // b reads: a goes on, and a new wait would start a new episode.
    h.b.consume(u64::MAX);
    h.settle();
    assert_eq!((h.a.sent, h.a.waiting), (20, 0));
}

#[test]
fn a_grant_lost_on_a_live_stream_is_restated_when_asked() {
    let silence = SessionConfig::default().silence_timeout;
    let mut h = held_back_pair();
    h.b.consume(u64::MAX);
    h.b.flush(h.now);
    // The grant and the resume never arrive, though the stream stays up.
    h.b.wire.retain(|f| !matches!(f, Frame::Flow(_)));
    h.settle();
    assert_eq!(h.a.waiting, 4, "still held back");
    h.advance(silence);
    h.settle();
    assert_eq!(
        (h.a.sent, h.a.waiting),
        (20, 0),
        "the restated grant let it go on"
    );
    assert_eq!(h.a.held_back, 0);
    assert_eq!(h.b.delivered, numbers(20));
}

#[test]
fn a_peer_that_never_answers_the_query_loses_the_stream_and_the_resume_restates() {
    let silence = SessionConfig::default().silence_timeout;
    let mut h = held_back_pair();
    h.advance(silence);
    h.a.flush(h.now);
    h.a.wire.clear(); // the query is lost
    h.b.consume(u64::MAX);
    h.b.flush(h.now);
    h.b.wire.clear(); // and so is the grant
    h.advance(silence);
    assert_eq!(h.a.session.phase(), Phase::Interrupted);
    h.cut();
    h.reconnect();
    h.settle();
    assert_eq!((h.a.sent, h.a.waiting), (20, 0));
    assert_eq!(h.b.delivered, numbers(20));
}

/// Found by the fuzz (`session/testing/fuzz.rs`): a session closed by a protocol error mid-batch
/// delivered the messages before the bad one; its owner confirmed them after the close,
/// which armed the ack timer. `handle_timeout` does nothing once closed, so that deadline
/// stayed due for good: the driver's alarm rang and rang until the close linger ran out.
#[test]
fn a_closed_session_has_no_deadline_even_when_its_owner_confirms_late() {
    let mut h = Harness::new(SessionConfig::default());
    let envelope = |seq| Envelope {
        seq,
        body: body(seq),
    };
    let gap = Frame::Batch(crate::wire::Batch {
        ack: 0,
        envelopes: vec![envelope(1), envelope(3)],
    });
    h.b.session.handle_frame(gap, h.now);
    // The owner confirms message 1 (at `events`), after the session closed.
    h.b.events(h.now);
    assert_eq!(h.b.delivered, [1]);
    let (reason, _) = h.b.closed.clone().expect("closed for the gap");
    assert!(
        matches!(
            reason,
            CloseReason::Protocol(ProtocolError::SequenceGap {
                expected: 2,
                got: 3
            })
        ),
        "{reason:?}"
    );
    assert_eq!(h.b.session.poll_timeout(), None);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.b.session.poll_timeout(), None);
}

/// Found by the fuzz (`session/testing/fuzz.rs`): a peer's `Flow` granting credit up to
/// `u64::MAX` (the protocol sets no bound) made the flow state, which an owner reads at any
/// time through `SessionRef::flow`, overflow.
#[test]
fn a_peer_granting_the_largest_credit_leaves_the_flow_state_readable() {
    let mut h = Harness::new(SessionConfig::default());
    let grant = Frame::Flow(Flow {
        credit: u64::MAX,
        credit_bytes: u64::MAX,
        signal: None,
    });
    h.a.session.handle_frame(grant, h.now);
    h.a.events(h.now);
    let flow = h.a.session.flow(h.now);
    assert_eq!(flow.credit, u64::MAX);
    assert!(!flow.send_blocked);
    assert!(h.a.send(h.now));
    assert_eq!(h.a.session.flow(h.now).credit, u64::MAX - 1);
}

/// One step of a random schedule.
#[derive(Clone, Debug)]
enum Step {
    /// The owner of one side wants to send `count` more.
    Want {
        from_a: bool,
        count: u8,
    },
    /// Up to `frames` frames travel one way.
    Deliver {
        to_b: bool,
        frames: u8,
    },
    /// The owner of one side reads `count` of what it was delivered.
    Consume {
        at_a: bool,
        count: u8,
    },
    Advance {
        millis: u8,
    },
    /// The stream breaks with whatever it carried; a new one resumes the session.
    Cut,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<bool>(), 1..40u8).prop_map(|(from_a, count)| Step::Want { from_a, count }),
        5 => (any::<bool>(), 1..4u8).prop_map(|(to_b, frames)| Step::Deliver { to_b, frames }),
        3 => (any::<bool>(), 1..40u8).prop_map(|(at_a, count)| Step::Consume { at_a, count }),
        2 => (1..20u8).prop_map(|millis| Step::Advance { millis }),
        2 => Just(Step::Cut),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if std::env::var_os("CI").is_some() { 2000 } else { 4000 }))]

    /// Whatever the schedule of sends, partial deliveries, late reads, delays and cuts
    /// (which lose grants, pauses, resumes and acks in flight), once the cuts stop every
    /// message is delivered exactly once in order and every waiting sender goes on.
    #[test]
    fn every_waiting_sender_goes_on_once_the_cuts_stop(
        window in 4..48u64,
        steps in prop::collection::vec(step(), 1..120),
    ) {
        let mut h = late_consumers(small_window(window));
        for step in steps {
            match step {
                Step::Want { from_a, count } => {
                    let end = if from_a { &mut h.a } else { &mut h.b };
                    end.waiting += u64::from(count);
                    end.send_waiting(h.now);
                }
                Step::Deliver { to_b, frames } => h.deliver(to_b, frames.into()),
                Step::Consume { at_a, count } => {
                    if at_a { h.a.consume(count.into()) } else { h.b.consume(count.into()) }
                }
                Step::Advance { millis } => h.advance(Duration::from_millis(millis.into())),
                Step::Cut => {
                    h.cut();
                    h.reconnect();
                }
            }
            prop_assert_eq!(&h.b.delivered, &numbers(h.b.delivered.len() as u64));
            prop_assert_eq!(&h.a.delivered, &numbers(h.a.delivered.len() as u64));
        }
        let rounds = run_to_completion(&mut h);
        prop_assert!(
            rounds.is_some(),
            "stalled: a sent {} waiting {} (flow {:?}); b sent {} waiting {} (flow {:?}); delivered {} / {}",
            h.a.sent, h.a.waiting, h.a.session.flow(h.now), h.b.sent, h.b.waiting,
            h.b.session.flow(h.now), h.b.delivered.len(), h.a.delivered.len()
        );
        prop_assert!(h.a.closed.is_none() && h.b.closed.is_none());
        prop_assert_eq!(&h.b.delivered, &numbers(h.a.sent));
        prop_assert_eq!(&h.a.delivered, &numbers(h.b.sent));
    }
}
