//! The deterministic two-session harness: an initiator (`a`) and an acceptor (`b`)
//! session back to back, a wire per direction that holds frames until the test delivers
//! them, cuts that drop whatever is on the wire (frames already taken from
//! `poll_transmit`, grants and signals among them), a synthetic clock, owners that
//! consume what they were delivered at once or only when the test says so, and the
//! acceptor's resume gates opened as the node's service opens them.
//!
//! The core's tests drive it through its crate-visible fields and methods. The bench's
//! hot path ([`Harness::cast`], [`Harness::transmit`], [`Harness::take_delivered`],
//! [`Harness::ack`], [`Harness::cut_and_resume`]) moves frames straight from one session
//! to the other and records nothing, with the wall clock read once per step.

// A bench build uses the hot path only; the rest is the tests'.
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use crate::auth::{Secret, TlsBinding};
use crate::error::CloseReason;
use crate::session::{Event, GateVerdict, Phase, ResumeGate, Role, Session, SessionConfig};
use crate::wire::NONCE_LEN;
use crate::wire::{
    Body, BodyKind, Envelope, Frame, NodeIdentity, Refusal, RefuseReason, SessionId, TypeUrl,
};

pub(crate) const SECRET: &str = "a test secret of enough bytes";

pub(crate) fn node(name: &str, n: u128) -> NodeIdentity {
    NodeIdentity {
        name: name.into(),
        incarnation: Uuid::from_u128(n),
    }
}

pub(crate) fn body(n: u64) -> Body {
    Body {
        kind: BodyKind::Cast,
        type_url: "type.googleapis.com/test.N".into(),
        payload: Bytes::copy_from_slice(&n.to_be_bytes()),
    }
}

/// Message `n` with `pad` more bytes of payload.
pub(crate) fn padded_body(n: u64, pad: usize) -> Body {
    let mut payload = n.to_be_bytes().to_vec();
    payload.resize(8 + pad, 0);
    Body {
        payload: payload.into(),
        ..body(n)
    }
}

/// A cast of `payload` (shared, not copied), as the benches send.
pub(crate) fn cast(payload: &Bytes) -> Body {
    static URL: OnceLock<TypeUrl> = OnceLock::new();
    Body {
        kind: BodyKind::Cast,
        type_url: URL
            .get_or_init(|| "type.googleapis.com/bench.Payload".into())
            .clone(),
        payload: payload.clone(),
    }
}

pub(crate) fn number(envelope: &Envelope) -> u64 {
    u64::from_be_bytes(envelope.body.payload[..8].try_into().unwrap())
}

pub(crate) fn numbers(up_to: u64) -> Vec<u64> {
    (1..=up_to).collect()
}

/// One side of the harness: its session, what it delivered, and how it ended.
#[derive(Debug)]
pub(crate) struct End {
    pub(crate) session: Session,
    /// The numbers delivered to "the mailbox", in order.
    pub(crate) delivered: Vec<u64>,
    /// How many delivered messages the owner consumed (dropped).
    pub(crate) consumed: u64,
    /// Whether the owner consumes each message as it is delivered.
    pub(crate) consume_at_once: bool,
    /// How many numbers it sent.
    pub(crate) sent: u64,
    /// Numbers the owner wants to send and the session has not taken yet: its waiting
    /// senders.
    pub(crate) waiting: u64,
    pub(crate) closed: Option<(CloseReason, Vec<u64>)>,
    /// Whether the peer finished its half of the conversation.
    pub(crate) peer_finished: bool,
    /// Whether the owner admits an authenticated peer (else it refuses it as an unknown
    /// actor).
    pub(crate) admit: bool,
    pub(crate) interrupted: u32,
    pub(crate) resumed: u32,
    /// How often the owner was told the peer holds its sender back.
    pub(crate) held_back: u32,
    /// Frames sent towards the other end and not yet delivered.
    pub(crate) wire: VecDeque<Frame>,
    /// Bytes each message sent pads its number with.
    pub(crate) pad: usize,
    /// Payload sizes of what was delivered, in order: what consuming reports.
    pub(crate) delivered_bytes: Vec<usize>,
    /// Acceptor: the gate a resume stream waits at, as the node's service keeps it.
    pub(crate) gate: Option<ResumeGate>,
    /// How resume streams ended at this side's gates, in order.
    pub(crate) gate_verdicts: Vec<GateVerdict>,
}

impl End {
    pub(crate) fn new(session: Session) -> Self {
        Self {
            session,
            delivered: Vec::new(),
            consumed: 0,
            consume_at_once: true,
            sent: 0,
            waiting: 0,
            closed: None,
            peer_finished: false,
            admit: true,
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
    pub(crate) fn receive(&mut self, frame: Frame, now: Instant) {
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
    pub(crate) fn step_gate(&mut self, now: Instant) {
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
    pub(crate) fn send(&mut self, now: Instant) -> bool {
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
    pub(crate) fn send_waiting(&mut self, now: Instant) {
        while self.waiting > 0 && self.send(now) {
            self.waiting -= 1;
        }
    }

    /// The owner consumes up to `n` more of what it was delivered.
    pub(crate) fn consume(&mut self, n: u64) {
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

    pub(crate) fn flush(&mut self, now: Instant) {
        while let Some(frame) = self.session.poll_transmit(now) {
            self.wire.push_back(frame);
        }
    }

    /// Why the session closed, once it has.
    pub(crate) fn close_reason(&self) -> Option<&CloseReason> {
        self.closed.as_ref().map(|(reason, _)| reason)
    }

    pub(crate) fn events(&mut self, now: Instant) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Authenticated { .. } if self.admit => self.session.accept(),
                Event::Authenticated { .. } => self.session.refuse(Refusal {
                    reason: RefuseReason::UnknownActor,
                    detail: "no such actor".into(),
                }),
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
                Event::PeerFinished(_) => self.peer_finished = true,
                Event::Established | Event::Flow(_) => {}
            }
        }
    }
}

/// Two sessions back to back, an initiator (`a`) and an acceptor (`b`), with every
/// frame moved by hand. No sockets, no runtime.
#[derive(Debug)]
pub struct Harness {
    pub(crate) a: End,
    pub(crate) b: End,
    pub(crate) now: Instant,
    /// Frames delivered from one side to the other.
    pub(crate) frames: usize,
    nonce: u8,
    /// The payload of the bench's casts.
    payload: Bytes,
}

/// How each side of an unsettled [`Harness`] starts: its config, secret and TLS binding.
#[derive(Clone, Debug)]
pub(crate) struct Side {
    pub(crate) config: SessionConfig,
    pub(crate) secret: &'static str,
    pub(crate) tls: TlsBinding,
}

impl Default for Side {
    fn default() -> Self {
        Self {
            config: SessionConfig::default(),
            secret: SECRET,
            tls: TlsBinding::Plaintext,
        }
    }
}

impl Harness {
    pub(crate) fn new(config: SessionConfig) -> Self {
        Self::with_tls(config, TlsBinding::Plaintext, TlsBinding::Plaintext)
    }

    /// A pair whose sessions (and `b`'s gates) bind their proofs to TLS as given.
    pub(crate) fn with_tls(config: SessionConfig, a_tls: TlsBinding, b_tls: TlsBinding) -> Self {
        let side = |tls| Side {
            config: config.clone(),
            tls,
            ..Side::default()
        };
        let mut h = Self::unsettled(side(a_tls), side(b_tls));
        h.settle();
        assert_eq!(h.a.session.phase(), Phase::Active);
        h
    }

    /// A pair that has not started its handshake: nothing is on the wire yet.
    pub(crate) fn unsettled(a: Side, b: Side) -> Self {
        let now = Instant::now();
        let initiator = Session::initiator(
            a.config,
            Secret::new(a.secret).unwrap(),
            node("a", 1),
            SessionId(Uuid::from_u128(7)),
            "t".into(),
            [1; NONCE_LEN],
            now,
        )
        .with_tls_binding(a.tls);
        let acceptor = Session::acceptor(
            b.config,
            Secret::new(b.secret).unwrap(),
            node("b", 2),
            [2; NONCE_LEN],
            now,
        )
        .with_tls_binding(b.tls);
        Self {
            a: End::new(initiator),
            b: End::new(acceptor),
            now,
            frames: 0,
            nonce: 3,
            payload: Bytes::new(),
        }
    }

    /// Delivers up to `n` frames from `a` to `b` (or `b` to `a`).
    pub(crate) fn deliver(&mut self, a_to_b: bool, n: usize) {
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
            self.frames += 1;
            to.receive(frame, self.now);
        }
        self.a.events(self.now);
        self.b.events(self.now);
    }

    /// Moves every frame and event until nothing changes.
    pub(crate) fn settle(&mut self) {
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
    pub(crate) fn cut(&mut self) {
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
    pub(crate) fn reconnect(&mut self) {
        self.nonce = self.nonce.wrapping_add(2);
        self.a
            .session
            .begin_resume([self.nonce; NONCE_LEN], self.now);
    }

    pub(crate) fn advance(&mut self, by: Duration) {
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

/// The benches' hot path: frames go straight from one session to the other, nothing is
/// recorded, and the wall clock is read once per step.
impl Harness {
    /// Two established sessions (the initiator sends, the acceptor receives) whose casts
    /// carry `payload_bytes` bytes. The acceptor grants its whole byte window in the
    /// handshake (`initial_credit_bytes` = `credit_window_bytes`, 4 MiB): a round of
    /// casts sent at once measures the hot path, not the window opening from its 8 KiB
    /// start (which held the bench's first 1 024 casts back).
    ///
    /// # Panics
    /// If the handshake does not establish both sessions.
    pub fn established(payload_bytes: usize) -> Self {
        let defaults = SessionConfig::default();
        let mut h = Self::new(SessionConfig {
            initial_credit_bytes: defaults.credit_window_bytes,
            ..defaults
        });
        assert_eq!(h.b.session.phase(), Phase::Active);
        h.payload = Bytes::from(vec![0xA5; payload_bytes]);
        h
    }

    /// The initiator casts `n` messages.
    ///
    /// # Panics
    /// If the session refuses one (no credit, replay window or budget full).
    pub fn cast(&mut self, n: usize) {
        let now = Instant::now();
        for _ in 0..n {
            self.a
                .session
                .send(cast(&self.payload), || now)
                .expect("the session takes the cast");
        }
    }

    /// Every frame the initiator has to write goes to the acceptor; returns how many.
    pub fn transmit(&mut self) -> usize {
        let now = Instant::now();
        let mut frames = 0;
        while let Some(frame) = self.a.session.poll_transmit(now) {
            self.b.session.handle_frame(frame, now);
            frames += 1;
        }
        frames
    }

    /// The acceptor's owner takes every message: drains the events, then confirms the
    /// last one delivered and consumed (as the driver does, once per drain). Returns the
    /// messages taken.
    pub fn take_delivered(&mut self) -> u64 {
        let mut messages = 0;
        let mut last = None;
        while let Some(event) = self.b.session.poll_event() {
            if let Event::Message(envelope) = event {
                messages += 1;
                last = Some(envelope.seq);
            }
        }
        if let Some(seq) = last {
            self.b.session.confirm_delivered(seq, Instant::now());
            // Every message carries the bench's payload.
            self.b
                .session
                .consumed(seq, seq * self.payload.len() as u64);
        }
        messages
    }

    /// Every frame the acceptor has to write (acks, grants) goes to the initiator, whose
    /// events are drained; returns how many frames.
    pub fn ack(&mut self) -> usize {
        let frames = self.flush_acceptor();
        while self.a.session.poll_event().is_some() {}
        frames
    }

    fn flush_acceptor(&mut self) -> usize {
        let now = Instant::now();
        let mut frames = 0;
        while let Some(frame) = self.b.session.poll_transmit(now) {
            self.a.session.handle_frame(frame, now);
            frames += 1;
        }
        frames
    }

    /// Messages the initiator sent that the acceptor has not acknowledged.
    pub fn unacked(&self) -> usize {
        self.a.session.unacked()
    }

    /// The initiator casts `n` messages and writes them, but they are lost on the wire:
    /// they wait in its replay buffer.
    pub fn cast_lost(&mut self, n: usize) {
        self.cast(n);
        let now = Instant::now();
        while self.a.session.poll_transmit(now).is_some() {}
    }

    /// Cuts the stream (`stream_broken` on both), resumes on a new one (`begin_resume`,
    /// the acceptor's `ResumeGate`, `resume_proven`) and runs until the replay is
    /// delivered and acknowledged. Returns how many messages the initiator replayed.
    ///
    /// # Panics
    /// If the pair does not come back to `Active`.
    pub fn cut_and_resume(&mut self) -> u64 {
        let now = Instant::now();
        for session in [&mut self.a.session, &mut self.b.session] {
            session.stream_broken(crate::error::InterruptCause::ConnectionLost, now);
        }
        self.nonce = self.nonce.wrapping_add(2);
        self.a.session.begin_resume([self.nonce; NONCE_LEN], now);
        let Some(Frame::Hello(hello)) = self.a.session.poll_transmit(now) else {
            panic!("the initiator greets the new stream first");
        };
        let acceptor = &self.b.session;
        let nonce = [self.nonce.wrapping_add(1); NONCE_LEN];
        let mut gate = ResumeGate::new(
            &acceptor.config,
            &acceptor.secret,
            acceptor.local.clone(),
            nonce,
            hello,
            now,
        );
        while let Some(frame) = gate.poll_transmit() {
            self.a.session.handle_frame(frame, now);
        }
        let Some(proof) = self.a.session.poll_transmit(now) else {
            panic!("the initiator proves the session's resume key");
        };
        gate.handle_frame(proof, |_| acceptor.resume_ticket());
        let GateVerdict::Proven(proven) = gate.verdict().clone() else {
            panic!("the gate lets the genuine resume through");
        };
        self.b.session.resume_proven(&proven, now);
        let replayed = self.settle_direct();
        assert_eq!(self.a.session.phase(), Phase::Active);
        replayed
    }

    /// Moves frames both ways and handles events until nothing changes; returns the
    /// messages the initiator replayed, if it resumed.
    fn settle_direct(&mut self) -> u64 {
        let mut replayed = 0;
        loop {
            let mut progress = self.transmit() + self.flush_acceptor() > 0;
            while let Some(event) = self.a.session.poll_event() {
                progress = true;
                if let Event::Resumed { replayed: n } = event {
                    replayed = n;
                }
            }
            let mut last = None;
            while let Some(event) = self.b.session.poll_event() {
                progress = true;
                match event {
                    Event::Authenticated { .. } => self.b.session.accept(),
                    Event::Message(envelope) => last = Some(envelope.seq),
                    _ => {}
                }
            }
            if let Some(seq) = last {
                self.b.session.confirm_delivered(seq, Instant::now());
                // Every message carries the bench's payload.
                self.b
                    .session
                    .consumed(seq, seq * self.payload.len() as u64);
            }
            if !progress {
                return replayed;
            }
        }
    }
}
