//! Resume, replay and loss, driven deterministically: two sessions, a wire per direction
//! that holds frames until the test delivers them, cuts that drop whatever is on the
//! wire, and a synthetic clock. The property test runs thousands of random schedules.

use std::time::Duration;

use proptest::prelude::*;
use uuid::Uuid;

use super::gate::ResumeTicket;
use super::testing::harness::*;
use super::*;
use crate::error::AuthError;
use crate::signal::FlowSignal;
use crate::wire::NONCE_LEN;
use crate::wire::{Challenge, Hello};

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
    assert_eq!(h.a.session.phase(), Phase::Interrupted);
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
        Err(SendError::Full {
            limit: ReplayLimit::Session { messages: 8, .. },
            ..
        })
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
        CloseReason::Lost(LostReason::ReplayFull(ReplayLimit::Session {
            messages: 8,
            ..
        }))
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
    assert_eq!(h.a.session.phase(), Phase::Interrupted);
    assert_eq!(h.a.interrupted, 1);
}

#[test]
fn an_idle_session_is_not_interrupted_by_silence() {
    let config = SessionConfig::default();
    let mut h = Harness::new(config.clone());
    h.advance(config.silence_timeout * 10);
    assert_eq!(h.a.session.phase(), Phase::Active);
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
            prop_assert!(matches!(reason, CloseReason::Lost(LostReason::ReplayFull(_))), "{:?}", reason);
        }
        prop_assert_eq!(unconfirmed, (acked + 1..=acked + more).collect::<Vec<_>>());
    }
}

/// A resume greeting for the harness's session, as `from` would send it.
fn resume_hello(h: &Harness, from: NodeIdentity, nonce: u8) -> Hello {
    Hello {
        session_id: h.b.session.id(),
        from,
        target: "t".into(),
        protocol_version: crate::wire::PROTOCOL_VERSION,
        nonce: [nonce; NONCE_LEN],
        max_message_bytes: 1 << 20,
        resume: Some(crate::wire::ResumeRequest {
            last_received: 0,
            acceptor_incarnation: Uuid::from_u128(2),
        }),
        credit_window: 0,
        credit_window_bytes: 0,
        protocol: String::new(),
        bind_tls_certificate: false,
    }
}

/// A gate at `b` for `hello`, past its challenge.
fn gate_at_b(h: &Harness, hello: Hello) -> (ResumeGate, Challenge) {
    let b = &h.b.session;
    let mut gate = ResumeGate::new(
        &b.config,
        &b.secret,
        b.local.clone(),
        [42; NONCE_LEN],
        hello,
        h.now,
    );
    let Some(Frame::Challenge(challenge)) = gate.poll_transmit() else {
        panic!("a gate challenges first");
    };
    (gate, challenge)
}

/// Moves frames between a fresh initiator and acceptor until their handshake is done.
fn first_handshake(a: &mut Session, b: &mut Session, now: Instant) {
    for _ in 0..10 {
        while let Some(frame) = a.poll_transmit(now) {
            b.handle_frame(frame, now);
        }
        while let Some(event) = b.poll_event() {
            if let Event::Authenticated { .. } = event {
                b.accept();
            }
        }
        while let Some(frame) = b.poll_transmit(now) {
            a.handle_frame(frame, now);
        }
    }
    assert_eq!(a.phase(), Phase::Active);
}

#[test]
fn a_wrong_proof_is_refused_at_the_gate_and_the_live_stream_goes_on() {
    let mut h = Harness::new(SessionConfig::default());
    for _ in 0..5 {
        h.a.send(h.now);
    }
    // A stranger without the secret, copying the initiator's identity: it gets the same
    // challenge as anyone, and its proof is checked against the session's resume key.
    let (mut gate, _) = gate_at_b(&h, resume_hello(&h, node("a", 1), 9));
    gate.handle_frame(Frame::Proof([7; 32]), |_| h.b.session.resume_ticket());
    assert_eq!(
        gate.verdict(),
        &GateVerdict::Refused(GateRefusal::NotResumable { known: true })
    );
    assert!(matches!(gate.poll_transmit(), Some(Frame::Refuse(_))));
    // Nothing of the session was touched.
    assert_eq!(h.b.session.phase(), Phase::Active);
    h.settle();
    for _ in 0..5 {
        h.a.send(h.now);
    }
    h.settle();
    assert_eq!(h.b.delivered, numbers(10));
    assert_eq!((h.a.interrupted, h.b.interrupted), (0, 0));
}

#[test]
fn a_known_id_and_an_unknown_id_are_refused_alike() {
    let h = Harness::new(SessionConfig::default());
    let refusal = |ticket: Option<ResumeTicket>| {
        let (mut gate, challenge) = gate_at_b(&h, resume_hello(&h, node("z", 5), 9));
        gate.handle_frame(Frame::Proof([7; 32]), |_| ticket);
        (challenge.from, gate.poll_transmit(), gate.poll_transmit())
    };
    let known = refusal(h.b.session.resume_ticket());
    let unknown = refusal(None);
    assert!(matches!(known.1, Some(Frame::Refuse(_))), "{known:?}");
    assert_eq!(known, unknown);
    // Junk instead of a proof, and a silent peer: refused the same way whatever the id.
    let (mut gate, _) = gate_at_b(&h, resume_hello(&h, node("a", 1), 9));
    gate.handle_frame(Frame::Ack(1), |_| panic!("no lookup before a proof"));
    assert!(matches!(
        gate.verdict(),
        GateVerdict::Refused(GateRefusal::Protocol(_))
    ));
    let (mut gate, _) = gate_at_b(&h, resume_hello(&h, node("a", 1), 9));
    gate.handle_timeout(h.now + SessionConfig::default().handshake_timeout);
    assert_eq!(gate.verdict(), &GateVerdict::Refused(GateRefusal::TimedOut));
}

#[test]
fn a_secret_holder_copying_the_initiator_cannot_resume_its_session() {
    let config = SessionConfig::default();
    let mut h = Harness::new(config.clone());
    h.a.send(h.now);
    h.settle();
    // Mallory holds the secret and copies a's identity, the session id and the target,
    // but was not in the session's first handshake: its own has other nonces.
    let secret = Secret::new(SECRET).unwrap();
    let id = h.a.session.id();
    let mut mallory = Session::initiator(
        config.clone(),
        secret.clone(),
        node("a", 1),
        id,
        "t".into(),
        [11; NONCE_LEN],
        h.now,
    );
    let mut decoy = Session::acceptor(config, secret, node("b", 2), [12; NONCE_LEN], h.now);
    first_handshake(&mut mallory, &mut decoy, h.now);
    mallory.stream_broken(crate::error::InterruptCause::ConnectionLost, h.now);
    mallory.begin_resume([13; NONCE_LEN], h.now);
    let Some(Frame::Hello(hello)) = mallory.poll_transmit(h.now) else {
        panic!("a resume greeting");
    };
    let (mut gate, challenge) = gate_at_b(&h, hello);
    mallory.handle_frame(Frame::Challenge(challenge), h.now);
    let Some(proof) = mallory.poll_transmit(h.now) else {
        panic!("mallory proves what it can");
    };
    gate.handle_frame(proof, |_| h.b.session.resume_ticket());
    assert_eq!(
        gate.verdict(),
        &GateVerdict::Refused(GateRefusal::NotResumable { known: true })
    );
    assert_eq!(h.b.session.phase(), Phase::Active);
    h.a.send(h.now);
    h.settle();
    assert_eq!(h.b.delivered, numbers(2));
}

#[test]
fn a_resume_point_changed_on_the_wire_is_refused() {
    let mut h = Harness::new(SessionConfig::default());
    for _ in 0..3 {
        h.b.send(h.now);
    }
    h.settle();
    h.cut();
    h.reconnect();
    h.a.flush(h.now);
    let Some(Frame::Hello(mut hello)) = h.a.wire.pop_front() else {
        panic!("a resume greeting");
    };
    hello.resume.as_mut().unwrap().last_received = 1; // b would replay 2 and 3 again
    h.b.receive(Frame::Hello(hello), h.now);
    h.settle();
    assert_eq!(
        h.b.gate_verdicts,
        vec![GateVerdict::Refused(GateRefusal::NotResumable {
            known: true
        })]
    );
    assert!(matches!(
        h.a.closed,
        Some((CloseReason::Lost(LostReason::ResumeRefused(_)), _))
    ));
}

#[test]
fn a_proven_resume_supersedes_a_stream_the_acceptor_still_thinks_up() {
    let mut h = Harness::new(SessionConfig::default());
    for _ in 0..20 {
        h.a.send(h.now);
        h.b.send(h.now);
    }
    h.deliver(true, 1);
    // Only the initiator saw the stream break; it resumes on a new one.
    h.a.wire.clear();
    h.b.wire.clear();
    h.a.session
        .stream_broken(crate::error::InterruptCause::ConnectionLost, h.now);
    assert_eq!(h.b.session.phase(), Phase::Active);
    h.reconnect();
    h.deliver(true, 1); // the resume Hello reaches b's gate
    let challenge = h.b.wire.pop_front().expect("the gate's challenge");
    // What b still writes goes to the old stream, which the initiator no longer reads.
    while h.b.session.poll_transmit(h.now).is_some() {}
    h.b.wire.clear();
    assert_eq!(h.b.session.phase(), Phase::Active);
    h.a.receive(challenge, h.now);
    h.deliver(true, 1); // the proof: b's gate lets the stream through
    h.settle();
    assert!(matches!(
        h.b.gate_verdicts.as_slice(),
        [GateVerdict::Proven(_)]
    ));
    assert_eq!((h.a.resumed, h.b.resumed), (1, 1));
    assert_eq!(h.b.delivered, numbers(20));
    assert_eq!(h.a.delivered, numbers(20));
}

/// An initiator over TLS whose link verified `certificate`, and an acceptor serving the
/// certificate `served`.
fn tls_bound(certificate: &[u8], served: &[u8]) -> Harness {
    use crate::auth::CertDigest;
    Harness::with_tls(
        SessionConfig::default(),
        TlsBinding::Verified(Some(CertDigest::of(certificate))),
        TlsBinding::Served(CertDigest::of(served)),
    )
}

#[test]
fn a_tls_bound_session_resumes_with_its_binding_asked_again() {
    let mut h = tls_bound(b"b's certificate", b"b's certificate");
    for _ in 0..10 {
        h.a.send(h.now);
    }
    h.cut();
    h.reconnect();
    h.a.flush(h.now);
    let Some(Frame::Hello(hello)) = h.a.wire.front() else {
        panic!("a resume greeting");
    };
    assert!(hello.resume.is_some() && hello.bind_tls_certificate);
    h.settle();
    assert!(matches!(
        h.b.gate_verdicts.as_slice(),
        [GateVerdict::Proven(_)]
    ));
    assert_eq!((h.a.resumed, h.b.resumed), (1, 1));
    assert_eq!(h.b.delivered, numbers(10));
}

#[test]
fn a_resume_through_a_relay_with_another_certificate_never_reaches_the_session() {
    let mut h = tls_bound(b"b's certificate", b"b's certificate");
    for _ in 0..10 {
        h.a.send(h.now);
    }
    h.cut();
    // The new connection ends at a relay whose certificate the initiator also trusts.
    h.a.session.tls_verified(Some(crate::auth::CertDigest::of(
        b"a relay's, from the same CA",
    )));
    h.reconnect();
    h.settle();
    // The gate's proof (bound to b's own certificate) does not match: a gives up on the
    // session rather than prove anything through the relay.
    assert!(
        matches!(
            h.a.closed,
            Some((
                CloseReason::Lost(LostReason::ResumeAuth(AuthError::ProofMismatch)),
                _
            ))
        ),
        "{:?}",
        h.a.closed
    );
    assert!(
        !h.b.gate_verdicts
            .iter()
            .any(|v| matches!(v, GateVerdict::Proven(_)))
    );
    assert_eq!(h.b.resumed, 0);
    assert!(h.b.delivered.is_empty());
}

#[test]
fn a_resume_proof_made_for_another_certificate_is_refused_at_the_gate() {
    let h = tls_bound(b"b's certificate", b"b's certificate");
    let b = &h.b.session;
    let mut hello = resume_hello(&h, node("a", 1), 9);
    hello.bind_tls_certificate = true;
    let mut gate = ResumeGate::new(
        &b.config,
        &b.secret,
        b.local.clone(),
        [42; NONCE_LEN],
        hello.clone(),
        h.now,
    )
    .with_tls_binding(b.tls.clone());
    let Some(Frame::Challenge(challenge)) = gate.poll_transmit() else {
        panic!("a gate challenges first");
    };
    // The initiator's resume key, but a transcript bound to a relay's certificate.
    let key = h.a.session.resume_key.clone().expect("established");
    let relay = crate::auth::CertDigest::of(b"a relay's");
    let transcript = crate::auth::Transcript {
        session_id: hello.session_id,
        initiator: &hello.from,
        acceptor: &challenge.from,
        target: &hello.target,
        initiator_nonce: &hello.nonce,
        acceptor_nonce: &challenge.nonce,
        tls_certificate: Some(Some(relay)),
    };
    let last_received = hello.resume.as_ref().unwrap().last_received;
    let proof = transcript.prove_resume(&key, last_received);
    gate.handle_frame(Frame::Proof(proof), |_| b.resume_ticket());
    assert_eq!(
        gate.verdict(),
        &GateVerdict::Refused(GateRefusal::NotResumable { known: true })
    );
    // The same key over the certificate b serves passes.
    let mut gate = ResumeGate::new(
        &b.config,
        &b.secret,
        b.local.clone(),
        [42; NONCE_LEN],
        hello.clone(),
        h.now,
    )
    .with_tls_binding(b.tls.clone());
    gate.poll_transmit();
    let TlsBinding::Served(own) = &b.tls else {
        panic!("b serves TLS");
    };
    let transcript = crate::auth::Transcript {
        tls_certificate: Some(Some(*own)),
        ..transcript
    };
    let proof = transcript.prove_resume(&key, last_received);
    gate.handle_frame(Frame::Proof(proof), |_| b.resume_ticket());
    assert!(matches!(gate.verdict(), GateVerdict::Proven(_)));
}

#[test]
fn a_plaintext_gate_refuses_a_resume_that_binds_tls_before_any_challenge() {
    let h = Harness::new(SessionConfig::default());
    let b = &h.b.session;
    let mut hello = resume_hello(&h, node("a", 1), 9);
    hello.bind_tls_certificate = true;
    let mut gate = ResumeGate::new(
        &b.config,
        &b.secret,
        b.local.clone(),
        [42; NONCE_LEN],
        hello,
        h.now,
    )
    .with_tls_binding(TlsBinding::Plaintext);
    match gate.poll_transmit() {
        Some(Frame::Refuse(refusal)) => {
            assert_eq!(refusal.reason, RefuseReason::AuthFailed);
            assert!(refusal.detail.contains("serves plaintext"), "{refusal:?}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        gate.verdict(),
        &GateVerdict::Refused(GateRefusal::PlaintextBinding)
    );
}

#[test]
fn the_clusters_unreachable_verdict_gives_the_stream_up_and_the_session_resumes() {
    let mut h = Harness::new(SessionConfig::default());
    for _ in 0..10 {
        assert!(h.a.send(h.now));
    }
    h.settle();
    assert!(h.a.session.peer_unreachable(h.now));
    assert_eq!(h.a.session.phase(), Phase::Interrupted);
    h.a.events(h.now);
    assert_eq!(h.a.interrupted, 1);
    assert!(
        !h.a.session.peer_unreachable(h.now),
        "a verdict already taken in changes nothing"
    );
    // The transport under it goes too; the peer comes back in time.
    h.cut();
    h.reconnect();
    h.settle();
    assert_eq!(h.a.resumed, 1);
    assert_eq!(h.b.delivered, numbers(10));
}

#[test]
fn while_the_cluster_holds_the_peer_unreachable_sends_fail_at_once_and_replies_wait() {
    let mut h = Harness::new(SessionConfig::default());
    for _ in 0..5 {
        assert!(h.a.send(h.now));
    }
    h.settle();
    // The transport broke first; the verdict comes later and is told again.
    h.cut();
    h.a.events(h.now);
    assert_eq!(h.a.interrupted, 1);
    assert!(h.a.session.peer_unreachable(h.now));
    match h.a.session.poll_event() {
        Some(Event::Interrupted(InterruptCause::PeerUnreachable)) => {}
        other => panic!("expected the verdict, got {other:?}"),
    }
    match h.a.session.send(body(6), || h.now) {
        Err(SendError::PeerUnreachable { message }) => assert_eq!(message, body(6)),
        other => panic!("expected PeerUnreachable, got {other:?}"),
    }
    let reply = Body {
        kind: BodyKind::Reply { to: 1, fault: None },
        ..body(1000)
    };
    assert!(
        h.a.session.send(reply, || h.now).is_ok(),
        "a reply waits for the resume"
    );
    // The peer is heard from again: sends wait in the replay buffer as before.
    h.a.session.peer_reachable();
    assert!(h.a.session.send(body(6), || h.now).is_ok());
    assert!(h.a.session.peer_unreachable(h.now));
    assert!(h.a.session.send(body(7), || h.now).is_err());
    // A resume lifts the verdict too.
    h.reconnect();
    h.settle();
    assert_eq!(h.a.resumed, 1);
    assert!(h.a.session.send(body(7), || h.now).is_ok());
    h.settle();
    let (replies, data): (Vec<u64>, Vec<u64>) = h.b.delivered.iter().partition(|n| **n == 1000);
    assert_eq!((replies, data), (vec![1000], numbers(7)));
}

#[test]
fn a_peer_the_cluster_knows_under_a_new_incarnation_loses_the_session_at_once() {
    let mut h = Harness::new(SessionConfig::default());
    for _ in 0..3 {
        assert!(h.a.send(h.now));
    }
    h.settle();
    // The acks go out on their timer.
    h.advance(Duration::from_millis(10));
    h.settle();
    h.cut();
    for _ in 0..2 {
        assert!(h.a.send(h.now));
    }
    let previous = Uuid::from_u128(2);
    assert!(
        !h.a.session.peer_restarted(previous),
        "the same incarnation is no restart"
    );
    assert!(h.a.session.peer_restarted(Uuid::from_u128(77)));
    h.a.events(h.now);
    let (reason, unconfirmed) = h.a.closed.clone().expect("lost");
    assert_eq!(
        reason,
        CloseReason::Lost(LostReason::PeerRestarted {
            previous,
            current: Uuid::from_u128(77)
        })
    );
    assert_eq!(
        unconfirmed,
        vec![4, 5],
        "what the peer never confirmed comes back"
    );
    assert!(!h.a.session.peer_restarted(Uuid::from_u128(78)));
}
