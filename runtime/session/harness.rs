//! The deterministic two-session harness the core's tests share: a wire per direction
//! that holds frames until the test delivers them, cuts that drop whatever is on the wire
//! (frames already taken from `poll_transmit`, grants and signals among them), a
//! synthetic clock, and owners that consume what they were delivered at once or only
//! when the test says so.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use super::*;
use crate::wire::BodyKind;
use crate::wire::NONCE_LEN;

pub(super) const SECRET: &str = "a test secret of enough bytes";

pub(super) fn node(name: &str, n: u128) -> NodeIdentity {
    NodeIdentity {
        name: name.into(),
        incarnation: Uuid::from_u128(n),
    }
}

pub(super) fn body(n: u64) -> Body {
    Body {
        kind: BodyKind::Cast,
        type_url: "type.googleapis.com/test.N".into(),
        payload: Bytes::copy_from_slice(&n.to_be_bytes()),
    }
}

/// Message `n` with `pad` more bytes of payload.
pub(super) fn padded_body(n: u64, pad: usize) -> Body {
    let mut payload = n.to_be_bytes().to_vec();
    payload.resize(8 + pad, 0);
    Body {
        payload: payload.into(),
        ..body(n)
    }
}

pub(super) fn number(envelope: &Envelope) -> u64 {
    u64::from_be_bytes(envelope.body.payload[..8].try_into().unwrap())
}

pub(super) fn numbers(up_to: u64) -> Vec<u64> {
    (1..=up_to).collect()
}

/// One side of the harness: its session, what it delivered, and how it ended.
pub(super) struct End {
    pub(super) session: Session,
    /// The numbers delivered to "the mailbox", in order.
    pub(super) delivered: Vec<u64>,
    /// How many delivered messages the owner consumed (dropped).
    pub(super) consumed: u64,
    /// Whether the owner consumes each message as it is delivered.
    pub(super) consume_at_once: bool,
    /// How many numbers it sent.
    pub(super) sent: u64,
    /// Numbers the owner wants to send and the session has not taken yet: its waiting
    /// senders.
    pub(super) waiting: u64,
    pub(super) closed: Option<(CloseReason, Vec<u64>)>,
    pub(super) interrupted: u32,
    pub(super) resumed: u32,
    /// How often the owner was told the peer holds its sender back.
    pub(super) held_back: u32,
    /// Frames sent towards the other end and not yet delivered.
    pub(super) wire: VecDeque<Frame>,
    /// Bytes each message sent pads its number with.
    pub(super) pad: usize,
    /// Payload sizes of what was delivered, in order: what consuming reports.
    pub(super) delivered_bytes: Vec<usize>,
    /// Acceptor: the gate a resume stream waits at, as the node's service keeps it.
    pub(super) gate: Option<ResumeGate>,
    /// How resume streams ended at this side's gates, in order.
    pub(super) gate_verdicts: Vec<GateVerdict>,
}

impl End {
    pub(super) fn new(session: Session) -> Self {
        Self {
            session,
            delivered: Vec::new(),
            consumed: 0,
            consume_at_once: true,
            sent: 0,
            waiting: 0,
            closed: None,
            interrupted: 0,
            resumed: 0,
            held_back: 0,
            wire: VecDeque::new(),
            pad: 0,
            delivered_bytes: Vec::new(),
            gate: None,
            gate_verdicts: Vec::new(),
        }
    }

    /// Takes one frame from the peer as a node does: a resume greeting opens a gate, the
    /// gate gets what follows until it decides, and the session gets the rest.
    pub(super) fn receive(&mut self, frame: Frame, now: Instant) {
        if let Frame::Hello(hello) = &frame
            && hello.resume.is_some()
            && self.session.role() == Role::Acceptor
        {
            let nonce = [hello.nonce[0].wrapping_add(1); NONCE_LEN];
            let gate = ResumeGate::new(
                &self.session.config,
                &self.session.secret,
                self.session.local.clone(),
                nonce,
                hello.clone(),
                now,
            )
            .with_tls_binding(self.session.tls.clone());
            self.gate = Some(gate);
        } else if let Some(gate) = &mut self.gate {
            let session = &self.session;
            gate.handle_frame(frame, |id| {
                session.resume_ticket().filter(|_| session.id() == id)
            });
        } else {
            self.session.handle_frame(frame, now);
            return;
        }
        self.step_gate(now);
    }

    /// Writes what the gate has to say; once it decided, attaches or drops the stream.
    pub(super) fn step_gate(&mut self, now: Instant) {
        let Some(gate) = &mut self.gate else {
            return;
        };
        while let Some(frame) = gate.poll_transmit() {
            self.wire.push_back(frame);
        }
        let verdict = gate.verdict().clone();
        match &verdict {
            GateVerdict::Pending => return,
            GateVerdict::Proven(proven) => self.session.resume_proven(proven, now),
            GateVerdict::Refused(_) => {}
        }
        self.gate = None;
        self.gate_verdicts.push(verdict);
    }

    /// Sends the next number; `false` when the session refused it.
    pub(super) fn send(&mut self, now: Instant) -> bool {
        match self
            .session
            .send(padded_body(self.sent + 1, self.pad), || now)
        {
            Ok(_) => {
                self.sent += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Lets the waiting senders send what the session takes now.
    pub(super) fn send_waiting(&mut self, now: Instant) {
        while self.waiting > 0 && self.send(now) {
            self.waiting -= 1;
        }
    }

    /// The owner consumes up to `n` more of what it was delivered.
    pub(super) fn consume(&mut self, n: u64) {
        self.consumed = self
            .consumed
            .saturating_add(n)
            .min(self.delivered.len() as u64);
        let bytes = self.delivered_bytes[..self.consumed as usize]
            .iter()
            .map(|&b| b as u64)
            .sum();
        self.session.consumed(self.consumed, bytes);
    }

    pub(super) fn flush(&mut self, now: Instant) {
        while let Some(frame) = self.session.poll_transmit(now) {
            self.wire.push_back(frame);
        }
    }

    pub(super) fn events(&mut self, now: Instant) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Authenticated { .. } => self.session.accept(),
                Event::Message(envelope) => {
                    self.delivered.push(number(&envelope));
                    self.delivered_bytes.push(envelope.body.payload.len());
                    self.session.confirm_delivered(envelope.seq, now);
                    if self.consume_at_once {
                        self.consume(1);
                    }
                }
                Event::Interrupted(_) => self.interrupted += 1,
                Event::Resumed { .. } => self.resumed += 1,
                Event::Closed(reason, unconfirmed) => {
                    self.closed = Some((reason, unconfirmed.iter().map(number).collect()));
                }
                Event::CanSend => self.send_waiting(now),
                Event::HeldBack { .. } => self.held_back += 1,
                Event::Established | Event::PeerFinished(_) | Event::Flow(_) => {}
            }
        }
    }
}

pub(super) struct Harness {
    pub(super) a: End,
    pub(super) b: End,
    pub(super) now: Instant,
    nonce: u8,
}

impl Harness {
    pub(super) fn new(config: SessionConfig) -> Self {
        Self::with_tls(config, TlsBinding::Plaintext, TlsBinding::Plaintext)
    }

    /// A pair whose sessions (and `b`'s gates) bind their proofs to TLS as given.
    pub(super) fn with_tls(config: SessionConfig, a_tls: TlsBinding, b_tls: TlsBinding) -> Self {
        let now = Instant::now();
        let secret = Secret::new(SECRET).unwrap();
        let a = Session::initiator(
            config.clone(),
            secret.clone(),
            node("a", 1),
            SessionId(Uuid::from_u128(7)),
            "t".into(),
            [1; NONCE_LEN],
            now,
        )
        .with_tls_binding(a_tls);
        let b = Session::acceptor(config, secret, node("b", 2), [2; NONCE_LEN], now)
            .with_tls_binding(b_tls);
        let mut h = Self {
            a: End::new(a),
            b: End::new(b),
            now,
            nonce: 3,
        };
        h.settle();
        assert_eq!(h.a.session.phase(), Phase::Active);
        h
    }

    /// Delivers up to `n` frames from `a` to `b` (or `b` to `a`).
    pub(super) fn deliver(&mut self, a_to_b: bool, n: usize) {
        let (from, to) = if a_to_b {
            (&mut self.a, &mut self.b)
        } else {
            (&mut self.b, &mut self.a)
        };
        from.flush(self.now);
        for _ in 0..n {
            let Some(frame) = from.wire.pop_front() else {
                break;
            };
            to.receive(frame, self.now);
        }
        self.a.events(self.now);
        self.b.events(self.now);
    }

    /// Moves every frame and event until nothing changes.
    pub(super) fn settle(&mut self) {
        for _ in 0..10_000 {
            self.a.flush(self.now);
            self.b.flush(self.now);
            if self.a.wire.is_empty() && self.b.wire.is_empty() {
                self.a.events(self.now);
                self.b.events(self.now);
                self.a.flush(self.now);
                self.b.flush(self.now);
                if self.a.wire.is_empty() && self.b.wire.is_empty() {
                    return;
                }
            }
            self.deliver(true, usize::MAX);
            self.deliver(false, usize::MAX);
        }
        panic!("the pair did not settle");
    }

    /// Cuts the stream: frames on the wire are lost, both sides learn it.
    pub(super) fn cut(&mut self) {
        self.a.wire.clear();
        self.b.wire.clear();
        self.a.gate = None;
        self.b.gate = None;
        self.a
            .session
            .stream_broken(crate::error::InterruptCause::ConnectionLost, self.now);
        self.b
            .session
            .stream_broken(crate::error::InterruptCause::ConnectionLost, self.now);
        self.a.events(self.now);
        self.b.events(self.now);
    }

    /// Opens a new stream and resumes on it (the acceptor's gate opens when the resume
    /// greeting arrives).
    pub(super) fn reconnect(&mut self) {
        self.nonce = self.nonce.wrapping_add(2);
        self.a
            .session
            .begin_resume([self.nonce; NONCE_LEN], self.now);
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.a.session.handle_timeout(self.now);
        self.b.session.handle_timeout(self.now);
        for end in [&mut self.a, &mut self.b] {
            if let Some(gate) = &mut end.gate {
                gate.handle_timeout(self.now);
            }
            end.step_gate(self.now);
        }
        self.a.events(self.now);
        self.b.events(self.now);
    }
}
