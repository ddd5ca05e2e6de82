//! The session core driven by a deterministic harness: two sessions back to back,
//! a synthetic clock, no sockets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use super::*;
use crate::error::{AuthError, LostReason};
use crate::wire::NONCE_LEN;
use crate::wire::{Batch, BodyKind};

const SECRET: &str = "a test secret of enough bytes";

fn node(name: &str, n: u128) -> NodeIdentity {
    NodeIdentity {
        name: name.into(),
        incarnation: Uuid::from_u128(n),
    }
}

fn cast(text: &str) -> Body {
    Body {
        kind: BodyKind::Cast,
        type_url: "type.googleapis.com/test.Text".into(),
        payload: Bytes::copy_from_slice(text.as_bytes()),
    }
}

/// Two sessions wired back to back; the acceptor admits every authenticated peer.
struct Pair {
    initiator: Session,
    acceptor: Session,
    now: Instant,
    /// Messages each side delivered, as text: (initiator's, acceptor's).
    delivered: (Vec<String>, Vec<String>),
    closed: (Option<CloseReason>, Option<CloseReason>),
    peer_finished: (bool, bool),
    frames: usize,
    admit: bool,
}

impl Pair {
    fn new() -> Self {
        Self::with_secrets(SECRET, SECRET)
    }

    fn with_secrets(initiator: &str, acceptor: &str) -> Self {
        let now = Instant::now();
        let config = SessionConfig::default();
        Self {
            initiator: Session::initiator(
                config.clone(),
                Secret::new(initiator).unwrap(),
                node("a", 1),
                SessionId(Uuid::from_u128(42)),
                "room".into(),
                [1; NONCE_LEN],
                now,
            ),
            acceptor: Session::acceptor(
                config,
                Secret::new(acceptor).unwrap(),
                node("b", 2),
                [2; NONCE_LEN],
                now,
            ),
            now,
            delivered: Default::default(),
            closed: Default::default(),
            peer_finished: Default::default(),
            frames: 0,
            admit: true,
        }
    }

    /// Moves frames and events until nothing changes.
    fn drive(&mut self) {
        loop {
            let mut progress = false;
            while let Some(frame) = self.initiator.poll_transmit(self.now) {
                self.frames += 1;
                self.acceptor.handle_frame(frame, self.now);
                progress = true;
            }
            while let Some(frame) = self.acceptor.poll_transmit(self.now) {
                self.frames += 1;
                self.initiator.handle_frame(frame, self.now);
                progress = true;
            }
            progress |= self.drain_events();
            if !progress {
                return;
            }
        }
    }

    fn drain_events(&mut self) -> bool {
        let mut progress = false;
        for initiator in [true, false] {
            let now = self.now;
            let (session, delivered, closed, finished) = if initiator {
                (
                    &mut self.initiator,
                    &mut self.delivered.0,
                    &mut self.closed.0,
                    &mut self.peer_finished.0,
                )
            } else {
                (
                    &mut self.acceptor,
                    &mut self.delivered.1,
                    &mut self.closed.1,
                    &mut self.peer_finished.1,
                )
            };
            while let Some(event) = session.poll_event() {
                progress = true;
                match event {
                    Event::Authenticated { target, .. } => {
                        assert_eq!(target, "room");
                        if self.admit {
                            session.accept();
                        } else {
                            session.refuse(Refusal {
                                reason: RefuseReason::UnknownActor,
                                detail: "no such actor".into(),
                            });
                        }
                    }
                    Event::Established => {}
                    Event::Message(envelope) => {
                        delivered.push(String::from_utf8(envelope.body.payload.to_vec()).unwrap());
                        session.confirm_delivered(envelope.seq, now);
                        let bytes = delivered.iter().map(|d| d.len() as u64).sum();
                        session.consumed(envelope.seq, bytes);
                    }
                    Event::PeerFinished(_) => *finished = true,
                    Event::Closed(reason, _) => *closed = Some(reason),
                    Event::Interrupted(_)
                    | Event::Resumed { .. }
                    | Event::Flow(_)
                    | Event::CanSend
                    | Event::HeldBack { .. } => {}
                }
            }
        }
        progress
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.initiator.handle_timeout(self.now);
        self.acceptor.handle_timeout(self.now);
        self.drive();
    }

    fn established() -> Self {
        let mut pair = Self::new();
        pair.drive();
        assert_eq!(pair.initiator.phase(), Phase::Active);
        assert_eq!(pair.acceptor.phase(), Phase::Active);
        pair
    }
}

#[test]
fn handshake_establishes_both_sides_in_four_frames() {
    let mut pair = Pair::new();
    pair.drive();
    assert_eq!(pair.frames, 4, "Hello, Challenge, Proof, Welcome");
    assert_eq!(pair.initiator.phase(), Phase::Active);
    assert_eq!(pair.acceptor.phase(), Phase::Active);
    assert_eq!(pair.acceptor.id(), SessionId(Uuid::from_u128(42)));
    assert_eq!(pair.acceptor.peer(), Some(&node("a", 1)));
    assert_eq!(pair.initiator.peer(), Some(&node("b", 2)));
    assert_eq!(
        pair.initiator.poll_timeout(),
        None,
        "handshake deadline cleared"
    );
}

#[test]
fn wrong_secret_is_an_auth_error_on_both_sides() {
    let mut pair = Pair::with_secrets(SECRET, "another secret, also long");
    pair.drive();
    assert_eq!(
        pair.closed.0,
        Some(CloseReason::Auth(AuthError::ProofMismatch))
    );
    let acceptor = pair.closed.1.expect("acceptor closed");
    assert_eq!(acceptor.auth_error(), Some(AuthError::PeerRejectedProof));
    assert!(pair.delivered.1.is_empty());
}

#[test]
fn no_data_is_accepted_before_authentication() {
    let mut pair = Pair::new();
    // Skip the handshake: hand the acceptor a batch right away.
    pair.acceptor.handle_frame(
        Frame::Batch(Batch {
            ack: 0,
            envelopes: vec![Envelope {
                seq: 1,
                body: cast("sneaky"),
            }],
        }),
        pair.now,
    );
    assert!(matches!(
        pair.acceptor.phase(),
        Phase::Closed(CloseReason::Protocol(ProtocolError::UnexpectedFrame {
            frame: "Batch",
            ..
        }))
    ));
    let events: Vec<_> = std::iter::from_fn(|| pair.acceptor.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(e, Event::Closed(..))),
        "{events:?}"
    );
    assert!(matches!(
        pair.acceptor.poll_transmit(pair.now),
        Some(Frame::Refuse(_))
    ));
}

#[test]
fn refused_target_closes_the_initiator_with_the_reason() {
    let mut pair = Pair::new();
    pair.admit = false;
    pair.drive();
    match pair.closed.0 {
        Some(CloseReason::RefusedByPeer(r)) => assert_eq!(r.reason, RefuseReason::UnknownActor),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        pair.closed.1,
        Some(CloseReason::RefusedLocally(_))
    ));
}

#[test]
fn messages_arrive_in_order_both_ways_and_acks_empty_the_buffers() {
    let mut pair = Pair::established();
    for i in 0..500 {
        pair.initiator
            .send(cast(&format!("i{i}")), || pair.now)
            .unwrap();
        pair.acceptor
            .send(cast(&format!("a{i}")), || pair.now)
            .unwrap();
    }
    pair.drive();
    let expect = |p: &str| (0..500).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    assert_eq!(pair.delivered.1, expect("i"));
    assert_eq!(pair.delivered.0, expect("a"));
    // Acks not yet due are sent when the delay passes.
    pair.advance(Duration::from_millis(10));
    assert_eq!(pair.initiator.unacked(), 0);
    assert_eq!(pair.acceptor.unacked(), 0);
}

#[test]
fn ready_messages_share_one_batch_frame() {
    let mut pair = Pair::established();
    let before = pair.frames;
    for i in 0..100 {
        pair.initiator
            .send(cast(&i.to_string()), || pair.now)
            .unwrap();
    }
    match pair.initiator.poll_transmit(pair.now) {
        Some(Frame::Batch(b)) => assert_eq!(b.envelopes.len(), 100),
        other => panic!("expected a batch, got {other:?}"),
    }
    assert_eq!(pair.frames, before);
}

#[test]
fn lone_ack_waits_for_the_delay() {
    let mut pair = Pair::established();
    pair.initiator.send(cast("x"), || pair.now).unwrap();
    pair.drive();
    assert_eq!(pair.initiator.unacked(), 1, "ack not sent before its delay");
    let due = pair.acceptor.poll_timeout().expect("ack timer armed");
    assert_eq!(due, pair.now + SessionConfig::default().ack_delay);
    pair.advance(SessionConfig::default().ack_delay);
    assert_eq!(pair.initiator.unacked(), 0);
}

#[test]
fn only_delivered_messages_are_acknowledged() {
    let mut pair = Pair::established();
    pair.initiator.send(cast("x"), || pair.now).unwrap();
    let frame = pair.initiator.poll_transmit(pair.now).unwrap();
    pair.acceptor.handle_frame(frame, pair.now);
    // The event is taken but the driver has not confirmed delivery.
    assert!(matches!(
        pair.acceptor.poll_event(),
        Some(Event::Message(_))
    ));
    pair.acceptor
        .handle_timeout(pair.now + Duration::from_secs(1));
    assert!(
        pair.acceptor.poll_transmit(pair.now).is_none(),
        "nothing to ack yet"
    );
}

#[test]
fn finish_lets_the_peer_send_final_messages_then_both_close() {
    let mut pair = Pair::established();
    pair.initiator
        .send(cast("last words"), || pair.now)
        .unwrap();
    pair.initiator.finish();
    assert!(matches!(
        pair.initiator.send(cast("late"), || pair.now),
        Err(SendError::Closed(_))
    ));
    pair.drive();
    assert!(pair.peer_finished.1, "acceptor saw the half-close");
    assert_eq!(pair.acceptor.phase(), Phase::Active);
    // The acceptor still talks after the member finished.
    pair.acceptor.send(cast("final ack"), || pair.now).unwrap();
    pair.acceptor.finish();
    pair.drive();
    assert_eq!(pair.delivered.1, vec!["last words"]);
    assert_eq!(pair.delivered.0, vec!["final ack"]);
    assert_eq!(
        pair.closed,
        (Some(CloseReason::Finished), Some(CloseReason::Finished))
    );
    assert_eq!(pair.initiator.unacked() + pair.acceptor.unacked(), 0);
    assert!(pair.initiator.is_transmit_done() && pair.acceptor.is_transmit_done());
}

#[test]
fn end_tells_the_peer_why() {
    let mut pair = Pair::established();
    pair.acceptor.send(cast("before"), || pair.now).unwrap();
    pair.acceptor
        .end(GoodbyeReason::ActorStopped, "room closed".into());
    pair.drive();
    assert_eq!(
        pair.delivered.0,
        vec!["before"],
        "messages sent before the goodbye arrive"
    );
    match &pair.closed.0 {
        Some(CloseReason::Lost(LostReason::PeerEnded(g))) => {
            assert_eq!(g.reason, GoodbyeReason::ActorStopped);
            assert_eq!(g.detail, "room closed");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn sequence_gap_is_a_protocol_error_reported_to_the_peer() {
    let mut pair = Pair::established();
    pair.acceptor.handle_frame(
        Frame::Batch(Batch {
            ack: 0,
            envelopes: vec![Envelope {
                seq: 2,
                body: cast("skipped one"),
            }],
        }),
        pair.now,
    );
    pair.drive();
    assert_eq!(
        pair.closed.1,
        Some(CloseReason::Protocol(ProtocolError::SequenceGap {
            expected: 1,
            got: 2
        }))
    );
    assert!(matches!(
        &pair.closed.0,
        Some(CloseReason::Lost(LostReason::PeerEnded(g))) if g.reason == GoodbyeReason::ProtocolError
    ));
}

#[test]
fn ack_for_unsent_messages_is_a_protocol_error() {
    let mut pair = Pair::established();
    pair.initiator.handle_frame(Frame::Ack(5), pair.now);
    assert_eq!(
        pair.initiator.phase(),
        Phase::Closed(CloseReason::Protocol(ProtocolError::AckBeyondSent {
            ack: 5,
            sent: 0
        }))
    );
}

#[test]
fn oversized_message_comes_back_to_the_sender() {
    let mut pair = Pair::established();
    let limit = pair.initiator.send_limit();
    let big = Body {
        payload: Bytes::from(vec![0; limit as usize + 1]),
        ..cast("")
    };
    match pair.initiator.send(big, || pair.now) {
        Err(SendError::TooLarge {
            size,
            limit: l,
            message,
        }) => {
            assert_eq!((size, l), (limit + 1, limit));
            assert_eq!(message.payload.len() as u64, limit + 1);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_smaller_limit_of_both_sides_applies() {
    let now = Instant::now();
    let small = SessionConfig {
        max_message_bytes: 100,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new();
    pair.acceptor = Session::acceptor(
        small,
        Secret::new(SECRET).unwrap(),
        node("b", 2),
        [2; NONCE_LEN],
        now,
    );
    pair.drive();
    assert_eq!(pair.initiator.send_limit(), 100);
    assert!(matches!(
        pair.initiator.send(
            Body {
                payload: Bytes::from(vec![0; 101]),
                ..cast("")
            },
            || pair.now
        ),
        Err(SendError::TooLarge { .. })
    ));
}

#[test]
fn handshake_times_out() {
    let mut pair = Pair::new();
    let _hello = pair.initiator.poll_transmit(pair.now);
    pair.now += SessionConfig::default().handshake_timeout;
    pair.initiator.handle_timeout(pair.now);
    assert_eq!(
        pair.initiator.phase(),
        Phase::Closed(CloseReason::HandshakeTimeout)
    );
}

#[test]
fn unsupported_version_is_refused() {
    let mut pair = Pair::new();
    let Some(Frame::Hello(mut hello)) = pair.initiator.poll_transmit(pair.now) else {
        panic!("first frame is the Hello")
    };
    hello.protocol_version = 99;
    pair.acceptor.handle_frame(Frame::Hello(hello), pair.now);
    assert_eq!(
        pair.acceptor.phase(),
        Phase::Closed(CloseReason::Protocol(ProtocolError::UnsupportedVersion(99)))
    );
    assert!(matches!(
        pair.acceptor.poll_transmit(pair.now),
        Some(Frame::Refuse(Refusal {
            reason: RefuseReason::UnsupportedVersion {
                speaks: crate::wire::PROTOCOL_VERSION
            },
            ..
        }))
    ));
}

#[test]
fn stream_end_without_goodbye_interrupts_an_established_session() {
    let mut pair = Pair::established();
    pair.initiator.handle_stream_end(pair.now);
    assert_eq!(pair.initiator.phase(), Phase::Interrupted);
}

#[test]
fn stream_end_during_the_first_handshake_is_a_transport_error() {
    let mut pair = Pair::new();
    pair.initiator.handle_stream_end(pair.now);
    assert!(matches!(
        pair.initiator.phase(),
        Phase::Closed(CloseReason::Transport { .. })
    ));
}

#[test]
fn a_peer_that_ignores_credit_breaks_the_protocol() {
    let mut pair = Pair::established();
    let window = SessionConfig::default().credit_window;
    // Hand-made batch: one envelope past the acceptor's grant (empty ones: byte credit
    // has nothing to say about them).
    let envelopes = (1..=window + 1)
        .map(|seq| Envelope {
            seq,
            body: cast(""),
        })
        .collect();
    pair.acceptor
        .handle_frame(Frame::Batch(Batch { ack: 0, envelopes }), pair.now);
    assert_eq!(
        pair.acceptor.phase(),
        Phase::Closed(CloseReason::Protocol(ProtocolError::CreditExceeded {
            seq: window + 1,
            granted: window
        }))
    );
}

#[test]
fn a_peer_that_ignores_byte_credit_breaks_the_protocol() {
    let mut pair = Pair::established();
    let granted = SessionConfig::default().initial_credit_bytes;
    // Two envelopes: the first takes all the byte credit granted, the second one more.
    let envelopes = vec![
        Envelope {
            seq: 1,
            body: cast(&"x".repeat(granted as usize)),
        },
        Envelope {
            seq: 2,
            body: cast("y"),
        },
    ];
    pair.acceptor
        .handle_frame(Frame::Batch(Batch { ack: 0, envelopes }), pair.now);
    assert_eq!(
        pair.acceptor.phase(),
        Phase::Closed(CloseReason::Protocol(ProtocolError::ByteCreditExceeded {
            seq: 2,
            granted
        }))
    );
}

#[test]
fn a_message_naming_no_type_never_follows_one_that_named_a_type_in_a_batch() {
    let mut pair = Pair::established();
    let unnamed = Body {
        type_url: crate::wire::TypeUrl::empty(),
        ..cast("unnamed")
    };
    for body in [cast("a"), unnamed, cast("b")] {
        pair.initiator.send(body, || pair.now).unwrap();
    }
    let mut batches = Vec::new();
    while let Some(frame) = pair.initiator.poll_transmit(pair.now) {
        if let Frame::Batch(batch) = frame {
            batches.push(
                batch
                    .envelopes
                    .iter()
                    .map(|e| e.body.type_url.to_string())
                    .collect::<Vec<_>>(),
            );
        }
    }
    let text = "type.googleapis.com/test.Text".to_owned();
    assert_eq!(batches, [vec![text.clone()], vec![String::new(), text]]);
}

/// A pair whose sessions bind their proofs to TLS as given.
fn with_tls(initiator: TlsBinding, acceptor: TlsBinding) -> Pair {
    let mut pair = Pair::new();
    let config = SessionConfig::default();
    pair.initiator = Session::initiator(
        config.clone(),
        Secret::new(SECRET).unwrap(),
        node("a", 1),
        SessionId(Uuid::from_u128(42)),
        "room".into(),
        [1; NONCE_LEN],
        pair.now,
    )
    .with_tls_binding(initiator);
    pair.acceptor = Session::acceptor(
        config,
        Secret::new(SECRET).unwrap(),
        node("b", 2),
        [2; NONCE_LEN],
        pair.now,
    )
    .with_tls_binding(acceptor);
    pair
}

fn verified(certificate: &[u8]) -> TlsBinding {
    TlsBinding::Verified(Some(crate::auth::CertDigest::of(certificate)))
}

#[test]
fn a_tls_bound_handshake_completes_when_both_name_the_same_certificate() {
    let served = TlsBinding::Served(crate::auth::CertDigest::of(b"the acceptor's"));
    let mut pair = with_tls(verified(b"the acceptor's"), served);
    pair.drive();
    assert_eq!(pair.initiator.phase(), Phase::Active);
    assert_eq!(pair.acceptor.phase(), Phase::Active);
}

#[test]
fn a_relay_with_another_certificate_fails_the_bound_handshake() {
    // The initiator verified a relay's certificate; the acceptor binds its own.
    let served = TlsBinding::Served(crate::auth::CertDigest::of(b"the acceptor's"));
    let mut pair = with_tls(verified(b"a relay's, from the same CA"), served);
    pair.drive();
    assert_eq!(
        pair.closed.0,
        Some(CloseReason::Auth(AuthError::ProofMismatch))
    );
    assert!(pair.delivered.1.is_empty());
}

#[test]
fn an_unbound_initiator_meets_a_tls_acceptor_with_the_plaintext_transcript() {
    // A client that cannot see the certificate (the Python one) does not ask to bind.
    let served = TlsBinding::Served(crate::auth::CertDigest::of(b"the acceptor's"));
    let mut pair = with_tls(TlsBinding::Plaintext, served);
    pair.drive();
    assert_eq!(pair.initiator.phase(), Phase::Active);
    assert_eq!(pair.acceptor.phase(), Phase::Active);
}

#[test]
fn a_plaintext_acceptor_refuses_a_bound_hello() {
    let mut pair = with_tls(verified(b"a proxy's"), TlsBinding::Plaintext);
    pair.drive();
    let refused = pair.closed.0.expect("the initiator was refused");
    assert_eq!(refused.auth_error(), Some(AuthError::PeerRejectedProof));
    assert!(
        refused.to_string().contains("serves plaintext"),
        "{refused}"
    );
}
