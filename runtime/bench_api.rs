//! Crate-private pieces of the session core, exposed for `benches/session_core.rs` and
//! `benches/fuzz.rs` only (feature `bench-internals`). Not part of the API.
//!
//! Frames stay opaque ([`WireFrame`]); two sessions run back to back in a [`Pair`], the
//! way `session/resume_tests.rs` drives them, with the wall clock read once per step.
//! [`fuzz`] runs the inputs of `runtime/fuzz.rs`, as its test does, in any number.

use std::time::Instant;

use bytes::Bytes;
use uuid::Uuid;

use crate::auth::Secret;
use crate::session::{Event, GateVerdict, Phase, ResumeGate, Session, SessionConfig};
use crate::wire::NONCE_LEN;
use crate::wire::codec;
use crate::wire::{Batch, Body, BodyKind, Envelope, Frame, NodeIdentity, SessionId, TypeUrl};

const TYPE_URL: &str = "type.googleapis.com/bench.Payload";

fn cast(payload: &Bytes) -> Body {
    static URL: std::sync::OnceLock<TypeUrl> = std::sync::OnceLock::new();
    Body {
        kind: BodyKind::Cast,
        type_url: URL.get_or_init(|| TYPE_URL.into()).clone(),
        payload: payload.clone(),
    }
}

/// A parsed protocol frame, opaque.
#[derive(Clone, Debug)]
pub struct WireFrame(Frame);

impl WireFrame {
    /// Envelopes the frame carries (0 unless it is a batch).
    pub fn envelopes(&self) -> usize {
        match &self.0 {
            Frame::Batch(batch) => batch.envelopes.len(),
            _ => 0,
        }
    }
}

/// A `Batch` frame of `messages` casts (sequence numbers from 1) with
/// `payload_bytes`-byte payloads.
pub fn batch_frame(messages: usize, payload_bytes: usize) -> WireFrame {
    let payload = Bytes::from(vec![0xA5; payload_bytes]);
    let envelopes = (1..=messages as u64)
        .map(|seq| Envelope {
            seq,
            body: cast(&payload),
        })
        .collect();
    WireFrame(Frame::Batch(Batch { ack: 0, envelopes }))
}

/// What the driver does to send a frame: the session codec's encoding, into `buf`
/// (cleared first), reused from frame to frame as tonic's encoder reuses its buffer.
/// Takes the frame by value, as the driver does.
pub fn encode_frame(frame: WireFrame, buf: &mut Vec<u8>) {
    buf.clear();
    codec::encode(frame.0, buf).expect("a Vec has room");
}

/// What the driver does with bytes from the wire: the session codec's decoding. Takes
/// `Bytes`, as tonic hands the codec a shared buffer: payloads are not copied.
///
/// # Panics
/// If the bytes are not a valid frame.
pub fn decode_frame(bytes: Bytes) -> WireFrame {
    let frame = codec::decode(bytes).expect("the frame decodes");
    WireFrame(frame.expect("a valid frame"))
}

/// Two established sessions back to back (the initiator sends, the acceptor receives),
/// with every frame moved by hand. No sockets, no runtime.
#[derive(Debug)]
pub struct Pair {
    initiator: Session,
    acceptor: Session,
    payload: Bytes,
    nonce: u8,
    /// What the acceptor's node checks resumes with: its config, secret and identity.
    gate_keys: (SessionConfig, Secret, NodeIdentity),
}

impl Pair {
    /// A pair whose handshake has completed; casts carry `payload_bytes` bytes.
    ///
    /// # Panics
    /// If the handshake does not establish both sessions.
    pub fn new(payload_bytes: usize) -> Self {
        let now = Instant::now();
        let config = SessionConfig::default();
        let secret = Secret::new("a bench secret of enough bytes").expect("long enough");
        let node = |name: &str, n| NodeIdentity {
            name: name.into(),
            incarnation: Uuid::from_u128(n),
        };
        let mut pair = Self {
            initiator: Session::initiator(
                config.clone(),
                secret.clone(),
                node("a", 1),
                SessionId(Uuid::from_u128(7)),
                "sink".into(),
                [1; NONCE_LEN],
                now,
            ),
            acceptor: Session::acceptor(
                config.clone(),
                secret.clone(),
                node("b", 2),
                [2; NONCE_LEN],
                now,
            ),
            payload: Bytes::from(vec![0xA5; payload_bytes]),
            nonce: 3,
            gate_keys: (config, secret, node("b", 2)),
        };
        pair.settle();
        assert_eq!(pair.initiator.phase(), Phase::Active);
        assert_eq!(pair.acceptor.phase(), Phase::Active);
        pair
    }

    /// The initiator casts `n` messages.
    ///
    /// # Panics
    /// If the session refuses one (no credit, replay window or budget full).
    pub fn send(&mut self, n: usize) {
        let now = Instant::now();
        for _ in 0..n {
            self.initiator
                .send(cast(&self.payload), || now)
                .expect("the session takes the cast");
        }
    }

    /// Every frame the initiator has to write goes to the acceptor; returns how many.
    pub fn transmit(&mut self) -> usize {
        let now = Instant::now();
        let mut frames = 0;
        while let Some(frame) = self.initiator.poll_transmit(now) {
            self.acceptor.handle_frame(frame, now);
            frames += 1;
        }
        frames
    }

    /// The acceptor's owner takes every message: drains the events, then confirms the
    /// last one delivered and consumed (as the driver does, once per drain). Returns the
    /// messages taken.
    pub fn deliver(&mut self) -> u64 {
        let mut messages = 0;
        let mut last = None;
        while let Some(event) = self.acceptor.poll_event() {
            if let Event::Message(envelope) = event {
                messages += 1;
                last = Some(envelope.seq);
            }
        }
        if let Some(seq) = last {
            self.acceptor.confirm_delivered(seq, Instant::now());
            // Every message carries the bench's payload.
            self.acceptor.consumed(seq, seq * self.payload.len() as u64);
        }
        messages
    }

    /// Every frame the acceptor has to write (acks, grants) goes to the initiator, whose
    /// events are drained; returns how many frames.
    pub fn ack(&mut self) -> usize {
        let frames = self.flush_acceptor();
        while self.initiator.poll_event().is_some() {}
        frames
    }

    fn flush_acceptor(&mut self) -> usize {
        let now = Instant::now();
        let mut frames = 0;
        while let Some(frame) = self.acceptor.poll_transmit(now) {
            self.initiator.handle_frame(frame, now);
            frames += 1;
        }
        frames
    }

    /// Messages the initiator sent that the acceptor has not acknowledged.
    pub fn unacked(&self) -> usize {
        self.initiator.unacked()
    }

    /// The initiator casts `n` messages and writes them, but they are lost on the wire:
    /// they wait in its replay buffer.
    pub fn send_lost(&mut self, n: usize) {
        self.send(n);
        let now = Instant::now();
        while self.initiator.poll_transmit(now).is_some() {}
    }

    /// Cuts the stream (`stream_broken` on both), resumes on a new one (`begin_resume`,
    /// the acceptor's `ResumeGate`, `resume_proven`) and runs until the replay is
    /// delivered and acknowledged. Returns how many messages the initiator replayed.
    ///
    /// # Panics
    /// If the pair does not come back to `Active`.
    pub fn cut_and_resume(&mut self) -> u64 {
        let now = Instant::now();
        self.initiator
            .stream_broken(crate::error::InterruptCause::ConnectionLost, now);
        self.acceptor
            .stream_broken(crate::error::InterruptCause::ConnectionLost, now);
        self.nonce = self.nonce.wrapping_add(2);
        self.initiator.begin_resume([self.nonce; NONCE_LEN], now);
        let Some(Frame::Hello(hello)) = self.initiator.poll_transmit(now) else {
            panic!("the initiator greets the new stream first");
        };
        let (config, secret, local) = &self.gate_keys;
        let nonce = [self.nonce.wrapping_add(1); NONCE_LEN];
        let mut gate = ResumeGate::new(config, secret, local.clone(), nonce, hello, now);
        while let Some(frame) = gate.poll_transmit() {
            self.initiator.handle_frame(frame, now);
        }
        let Some(proof) = self.initiator.poll_transmit(now) else {
            panic!("the initiator proves the session's resume key");
        };
        let acceptor = &self.acceptor;
        gate.handle_frame(proof, |_| acceptor.resume_ticket());
        let GateVerdict::Proven(proven) = gate.verdict().clone() else {
            panic!("the gate lets the genuine resume through");
        };
        self.acceptor.resume_proven(&proven, now);
        let replayed = self.settle();
        assert_eq!(self.initiator.phase(), Phase::Active);
        replayed
    }

    /// Moves frames both ways and handles events until nothing changes; returns the
    /// messages the initiator replayed, if it resumed.
    fn settle(&mut self) -> u64 {
        let mut replayed = 0;
        loop {
            let mut progress = self.transmit() + self.flush_acceptor() > 0;
            while let Some(event) = self.initiator.poll_event() {
                progress = true;
                if let Event::Resumed { replayed: n } = event {
                    replayed = n;
                }
            }
            let mut last = None;
            while let Some(event) = self.acceptor.poll_event() {
                progress = true;
                match event {
                    Event::Authenticated { .. } => self.acceptor.accept(),
                    Event::Message(envelope) => last = Some(envelope.seq),
                    _ => {}
                }
            }
            if let Some(seq) = last {
                self.acceptor.confirm_delivered(seq, Instant::now());
                // Every message carries the bench's payload.
                self.acceptor.consumed(seq, seq * self.payload.len() as u64);
            }
            if !progress {
                return replayed;
            }
        }
    }
}

/// What a fuzz run found (`benches/fuzz.rs`; the fuzz itself is `runtime/fuzz.rs`).
#[derive(Debug)]
pub struct FuzzSummary(crate::fuzz::Summary);

impl FuzzSummary {
    /// Inputs run.
    pub fn inputs(&self) -> u64 {
        self.0.inputs
    }

    /// Inputs that panicked.
    pub fn panics(&self) -> u64 {
        self.0.panics
    }

    /// Inputs after which a check failed: a refusal not given with its typed reason, a
    /// session or gate that could wait without end.
    pub fn violations(&self) -> u64 {
        self.0.violations
    }

    /// Whether no input panicked or broke a check.
    pub fn is_clean(&self) -> bool {
        self.0.is_clean()
    }

    /// Adds `other`'s inputs, counts and (the first few) failures to these.
    pub fn merge(&mut self, other: Self) {
        self.0.merge(other.0);
    }

    /// The first few failures, each with its seed and index, what went wrong, and the
    /// input (its bytes and what they make).
    pub fn failures(&self) -> Vec<String> {
        self.0.failures.iter().map(ToString::to_string).collect()
    }

    /// The indices of the failures kept, to replay them.
    pub fn failed_inputs(&self) -> Vec<u64> {
        self.0.failures.iter().map(|f| f.index).collect()
    }
}

impl std::fmt::Display for FuzzSummary {
    /// The summary line: `fuzz inputs=... panics=... untyped=... refusals_by_reason={...}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Runs inputs `inputs` (by index) of the fuzz run seeded `seed`: each through the frame
/// decoder or a pair of sessions with the fuzzer on the wire, panics caught.
pub fn fuzz(seed: u64, inputs: std::ops::Range<u64>) -> FuzzSummary {
    FuzzSummary(crate::fuzz::run(seed, inputs))
}

/// Input `index` of the fuzz run seeded `seed`: its bytes (hex) and what they make.
pub fn fuzz_input(seed: u64, index: u64) -> String {
    crate::fuzz::describe(seed, index)
}
