//! The session core driven by the deterministic harness (`testing::harness`): two
//! sessions back to back, a synthetic clock, no sockets.

use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use super::testing::harness::*;
use super::*;
use crate::error::{AuthError, LostReason};
use crate::wire::Batch;

/// A pair that has not started its handshake, both sides on the defaults.
fn unsettled() -> Harness {
    Harness::unsettled(Side::default(), Side::default())
}

/// A pair whose handshake has completed.
fn established() -> Harness {
    let h = Harness::new(SessionConfig::default());
    assert_eq!(h.b.session.phase(), Phase::Active);
    h
}

/// A message of `len` bytes of payload, not numbered: for frames made by hand.
fn sized(len: usize) -> Body {
    Body {
        payload: Bytes::from(vec![b'x'; len]),
        ..body(0)
    }
}

#[test]
fn handshake_establishes_both_sides_in_four_frames() {
    let mut h = unsettled();
    h.settle();
    assert_eq!(h.frames, 4, "Hello, Challenge, Proof, Welcome");
    assert_eq!(h.a.session.phase(), Phase::Active);
    assert_eq!(h.b.session.phase(), Phase::Active);
    assert_eq!(h.b.session.id(), SessionId(Uuid::from_u128(7)));
    assert_eq!(h.b.session.peer(), Some(&node("a", 1)));
    assert_eq!(h.a.session.peer(), Some(&node("b", 2)));
    assert_eq!(
        h.a.session.poll_timeout(),
        None,
        "handshake deadline cleared"
    );
}

#[test]
fn wrong_secret_is_an_auth_error_on_both_sides() {
    let b = Side {
        secret: "another secret, also long",
        ..Side::default()
    };
    let mut h = Harness::unsettled(Side::default(), b);
    h.settle();
    assert_eq!(
        h.a.close_reason(),
        Some(&CloseReason::Auth(AuthError::ProofMismatch))
    );
    let acceptor = h.b.close_reason().expect("acceptor closed");
    assert_eq!(acceptor.auth_error(), Some(AuthError::PeerRejectedProof));
    assert!(h.b.delivered.is_empty());
}

#[test]
fn no_data_is_accepted_before_authentication() {
    let mut h = unsettled();
    // Skip the handshake: hand the acceptor a batch right away.
    h.b.session.handle_frame(
        Frame::Batch(Batch {
            ack: 0,
            envelopes: vec![Envelope {
                seq: 1,
                body: body(1),
            }],
        }),
        h.now,
    );
    assert!(matches!(
        h.b.session.phase(),
        Phase::Closed(CloseReason::Protocol(ProtocolError::UnexpectedFrame {
            frame: "Batch",
            ..
        }))
    ));
    let events: Vec<_> = std::iter::from_fn(|| h.b.session.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(e, Event::Closed(..))),
        "{events:?}"
    );
    assert!(matches!(
        h.b.session.poll_transmit(h.now),
        Some(Frame::Refuse(_))
    ));
}

#[test]
fn refused_target_closes_the_initiator_with_the_reason() {
    let mut h = unsettled();
    h.b.admit = false;
    h.settle();
    match h.a.close_reason() {
        Some(CloseReason::RefusedByPeer(r)) => assert_eq!(r.reason, RefuseReason::UnknownActor),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        h.b.close_reason(),
        Some(CloseReason::RefusedLocally(_))
    ));
}

#[test]
fn messages_arrive_in_order_both_ways_and_acks_empty_the_buffers() {
    let mut h = established();
    for _ in 0..500 {
        assert!(h.a.send(h.now));
        assert!(h.b.send(h.now));
    }
    h.settle();
    assert_eq!(h.b.delivered, numbers(500));
    assert_eq!(h.a.delivered, numbers(500));
    // Acks not yet due are sent when the delay passes.
    h.advance(Duration::from_millis(10));
    h.settle();
    assert_eq!(h.a.session.unacked(), 0);
    assert_eq!(h.b.session.unacked(), 0);
}

#[test]
fn ready_messages_share_one_batch_frame() {
    let mut h = established();
    let before = h.frames;
    for _ in 0..100 {
        assert!(h.a.send(h.now));
    }
    match h.a.session.poll_transmit(h.now) {
        Some(Frame::Batch(b)) => assert_eq!(b.envelopes.len(), 100),
        other => panic!("expected a batch, got {other:?}"),
    }
    assert_eq!(h.frames, before);
}

#[test]
fn lone_ack_waits_for_the_delay() {
    let mut h = established();
    assert!(h.a.send(h.now));
    h.settle();
    assert_eq!(h.a.session.unacked(), 1, "ack not sent before its delay");
    let due = h.b.session.poll_timeout().expect("ack timer armed");
    assert_eq!(due, h.now + SessionConfig::default().ack_delay);
    h.advance(SessionConfig::default().ack_delay);
    h.settle();
    assert_eq!(h.a.session.unacked(), 0);
}

#[test]
fn only_delivered_messages_are_acknowledged() {
    let mut h = established();
    assert!(h.a.send(h.now));
    let frame = h.a.session.poll_transmit(h.now).unwrap();
    h.b.session.handle_frame(frame, h.now);
    // The event is taken but the driver has not confirmed delivery.
    assert!(matches!(h.b.session.poll_event(), Some(Event::Message(_))));
    h.b.session.handle_timeout(h.now + Duration::from_secs(1));
    assert!(
        h.b.session.poll_transmit(h.now).is_none(),
        "nothing to ack yet"
    );
}

#[test]
fn finish_lets_the_peer_send_final_messages_then_both_close() {
    let mut h = established();
    // The last words.
    assert!(h.a.send(h.now));
    h.a.session.finish();
    assert!(matches!(
        h.a.session.send(body(2), || h.now),
        Err(SendError::Closed { .. })
    ));
    h.settle();
    assert!(h.b.peer_finished, "acceptor saw the half-close");
    assert_eq!(h.b.session.phase(), Phase::Active);
    // The acceptor still talks after the member finished: its final ack.
    assert!(h.b.send(h.now));
    h.b.session.finish();
    h.settle();
    assert_eq!(h.b.delivered, vec![1]);
    assert_eq!(h.a.delivered, vec![1]);
    assert_eq!(
        (h.a.close_reason(), h.b.close_reason()),
        (Some(&CloseReason::Finished), Some(&CloseReason::Finished))
    );
    assert_eq!(h.a.session.unacked() + h.b.session.unacked(), 0);
    assert!(h.a.session.is_transmit_done() && h.b.session.is_transmit_done());
}

#[test]
fn end_tells_the_peer_why() {
    let mut h = established();
    assert!(h.b.send(h.now));
    h.b.session
        .end(GoodbyeReason::ActorStopped, "room closed".into());
    h.settle();
    assert_eq!(
        h.a.delivered,
        vec![1],
        "messages sent before the goodbye arrive"
    );
    match h.a.close_reason() {
        Some(CloseReason::Lost(LostReason::PeerEnded(g))) => {
            assert_eq!(g.reason, GoodbyeReason::ActorStopped);
            assert_eq!(g.detail, "room closed");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn sequence_gap_is_a_protocol_error_reported_to_the_peer() {
    let mut h = established();
    h.b.session.handle_frame(
        Frame::Batch(Batch {
            ack: 0,
            envelopes: vec![Envelope {
                seq: 2,
                body: body(2),
            }],
        }),
        h.now,
    );
    h.b.events(h.now);
    h.settle();
    assert_eq!(
        h.b.close_reason(),
        Some(&CloseReason::Protocol(ProtocolError::SequenceGap {
            expected: 1,
            got: 2
        }))
    );
    assert!(matches!(
        h.a.close_reason(),
        Some(CloseReason::Lost(LostReason::PeerEnded(g))) if g.reason == GoodbyeReason::ProtocolError
    ));
}

#[test]
fn ack_for_unsent_messages_is_a_protocol_error() {
    let mut h = established();
    h.a.session.handle_frame(Frame::Ack(5), h.now);
    assert_eq!(
        h.a.session.phase(),
        Phase::Closed(CloseReason::Protocol(ProtocolError::AckBeyondSent {
            ack: 5,
            sent: 0
        }))
    );
}

#[test]
fn oversized_message_comes_back_to_the_sender() {
    let mut h = established();
    let limit = h.a.session.send_limit();
    let big = sized(limit as usize + 1);
    match h.a.session.send(big, || h.now) {
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
    let small = Side {
        config: SessionConfig {
            max_message_bytes: 100,
            ..SessionConfig::default()
        },
        ..Side::default()
    };
    let mut h = Harness::unsettled(Side::default(), small);
    h.settle();
    assert_eq!(h.a.session.send_limit(), 100);
    assert!(matches!(
        h.a.session.send(sized(101), || h.now),
        Err(SendError::TooLarge { .. })
    ));
}

#[test]
fn handshake_times_out() {
    let mut h = unsettled();
    let _hello = h.a.session.poll_transmit(h.now);
    h.now += SessionConfig::default().handshake_timeout;
    h.a.session.handle_timeout(h.now);
    assert_eq!(
        h.a.session.phase(),
        Phase::Closed(CloseReason::HandshakeTimeout)
    );
}

#[test]
fn unsupported_version_is_refused() {
    let mut h = unsettled();
    let Some(Frame::Hello(mut hello)) = h.a.session.poll_transmit(h.now) else {
        panic!("first frame is the Hello")
    };
    hello.protocol_version = 99;
    h.b.session.handle_frame(Frame::Hello(hello), h.now);
    assert_eq!(
        h.b.session.phase(),
        Phase::Closed(CloseReason::Protocol(ProtocolError::UnsupportedVersion(99)))
    );
    assert!(matches!(
        h.b.session.poll_transmit(h.now),
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
    let mut h = established();
    h.a.session.handle_stream_end(h.now);
    assert_eq!(h.a.session.phase(), Phase::Interrupted);
}

#[test]
fn stream_end_during_the_first_handshake_is_a_transport_error() {
    let mut h = unsettled();
    h.a.session.handle_stream_end(h.now);
    assert!(matches!(
        h.a.session.phase(),
        Phase::Closed(CloseReason::Transport { .. })
    ));
}

#[test]
fn a_peer_that_ignores_credit_breaks_the_protocol() {
    let mut h = established();
    let window = SessionConfig::default().credit_window;
    // Hand-made batch: one envelope past the acceptor's grant (empty ones: byte credit
    // has nothing to say about them).
    let envelopes = (1..=window + 1)
        .map(|seq| Envelope {
            seq,
            body: sized(0),
        })
        .collect();
    h.b.session
        .handle_frame(Frame::Batch(Batch { ack: 0, envelopes }), h.now);
    assert_eq!(
        h.b.session.phase(),
        Phase::Closed(CloseReason::Protocol(ProtocolError::CreditExceeded {
            seq: window + 1,
            granted: window
        }))
    );
}

#[test]
fn a_peer_that_ignores_byte_credit_breaks_the_protocol() {
    let mut h = established();
    let granted = SessionConfig::default().initial_credit_bytes;
    // Two envelopes: the first takes all the byte credit granted, the second one more.
    let envelopes = vec![
        Envelope {
            seq: 1,
            body: sized(granted as usize),
        },
        Envelope {
            seq: 2,
            body: sized(1),
        },
    ];
    h.b.session
        .handle_frame(Frame::Batch(Batch { ack: 0, envelopes }), h.now);
    assert_eq!(
        h.b.session.phase(),
        Phase::Closed(CloseReason::Protocol(ProtocolError::ByteCreditExceeded {
            seq: 2,
            granted
        }))
    );
}

#[test]
fn a_message_naming_no_type_never_follows_one_that_named_a_type_in_a_batch() {
    let mut h = established();
    let unnamed = Body {
        type_url: crate::wire::TypeUrl::empty(),
        ..body(2)
    };
    for body in [body(1), unnamed, body(3)] {
        h.a.session.send(body, || h.now).unwrap();
    }
    let mut batches = Vec::new();
    while let Some(frame) = h.a.session.poll_transmit(h.now) {
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
    let named = body(1).type_url.to_string();
    assert_eq!(batches, [vec![named.clone()], vec![String::new(), named]]);
}

/// A pair whose sessions bind their proofs to TLS as given, its handshake not started.
fn with_tls(initiator: TlsBinding, acceptor: TlsBinding) -> Harness {
    let side = |tls| Side {
        tls,
        ..Side::default()
    };
    Harness::unsettled(side(initiator), side(acceptor))
}

fn verified(certificate: &[u8]) -> TlsBinding {
    TlsBinding::Verified(Some(crate::auth::CertDigest::of(certificate)))
}

#[test]
fn a_tls_bound_handshake_completes_when_both_name_the_same_certificate() {
    let served = TlsBinding::Served(crate::auth::CertDigest::of(b"the acceptor's"));
    let mut h = with_tls(verified(b"the acceptor's"), served);
    h.settle();
    assert_eq!(h.a.session.phase(), Phase::Active);
    assert_eq!(h.b.session.phase(), Phase::Active);
}

#[test]
fn a_relay_with_another_certificate_fails_the_bound_handshake() {
    // The initiator verified a relay's certificate; the acceptor binds its own.
    let served = TlsBinding::Served(crate::auth::CertDigest::of(b"the acceptor's"));
    let mut h = with_tls(verified(b"a relay's, from the same CA"), served);
    h.settle();
    assert_eq!(
        h.a.close_reason(),
        Some(&CloseReason::Auth(AuthError::ProofMismatch))
    );
    assert!(h.b.delivered.is_empty());
}

#[test]
fn an_unbound_initiator_meets_a_tls_acceptor_with_the_plaintext_transcript() {
    // A client that cannot see the certificate (the Python one) does not ask to bind.
    let served = TlsBinding::Served(crate::auth::CertDigest::of(b"the acceptor's"));
    let mut h = with_tls(TlsBinding::Plaintext, served);
    h.settle();
    assert_eq!(h.a.session.phase(), Phase::Active);
    assert_eq!(h.b.session.phase(), Phase::Active);
}

#[test]
fn a_plaintext_acceptor_refuses_a_bound_hello() {
    let mut h = with_tls(verified(b"a proxy's"), TlsBinding::Plaintext);
    h.settle();
    let refused = h.a.close_reason().expect("the initiator was refused");
    assert_eq!(refused.auth_error(), Some(AuthError::PeerRejectedProof));
    assert!(
        refused.to_string().contains("serves plaintext"),
        "{refused}"
    );
}
