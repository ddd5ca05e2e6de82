//! A scenario: an initiator and an acceptor session, the fuzzer on the wire between them,
//! driven the way the driver and the node's service drive them (and no other way): frames
//! arrive only on a stream; the acceptor's end of a new stream is read by whatever its
//! first frame calls for (a resume `Hello` opens a [`ResumeGate`], anything else a new
//! acceptor session); a proven gate attaches the stream to the session; a side that gave
//! its stream up (its generation moved) drops it without a word to the other, as over a
//! half-open connection; a closed side ends its half once it has written everything.
//!
//! Every call goes through [`Watched::call`] or [`WatchedGate::call`], which check it.
//! When the steps are done the network goes silent and the clock runs from deadline to
//! deadline: every session must end up established (it may then idle) or closed, and
//! every gate decided, within a bounded number of deadlines.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use uuid::Uuid;

use super::check::{Cause, Tally, Violation, Watched, WatchedGate, frame_error, send_error};
use super::input::{
    BodySpec, ConfigSpec, Context, OwnerAction, Owners, Scenario, Side, SignalSpec, Start, Step,
    TYPE_URL, TlsSpec, Wait, edit_fields, mutate,
};
use crate::auth::{CertDigest, Secret, TlsBinding};
use crate::error::ProtocolError;
use crate::session::{GateVerdict, Phase, ResumeGate, Session, SessionConfig};
use crate::signal::FlowSignal;
use crate::wire::{
    Body, BodyKind, Fault, Frame, FrameError, GoodbyeReason, NONCE_LEN, NodeIdentity, Refusal,
    RefuseReason, SessionId, TypeUrl, pb,
};

/// Steps of a scenario past these are left out; edits and mutations likewise.
const MAX_STEPS: usize = 48;
const MAX_EDITS: usize = 8;
/// Frames that arrived at each side, kept for replaying.
const HISTORY: usize = 16;
/// Most frames a `Settle` step moves: a pair that talks longer talks without end.
const SETTLE_FRAMES: usize = 4096;
/// Most deadlines the silent network runs through at the end.
const FINAL_DEADLINES: usize = 256;

/// Runs `scenario`; `Err` on the first broken invariant.
pub(crate) fn run(scenario: &Scenario, tally: &mut Tally) -> Result<(), Violation> {
    let mut world = World::new(scenario, tally)?;
    world.start(&scenario.start, scenario.owners)?;
    for step in scenario.steps.iter().take(MAX_STEPS) {
        world.step(step)?;
        world.tidy()?;
    }
    world.fall_silent()
}

/// A frame as it reaches a side: as written, as protobuf, or as bytes.
enum Item {
    Frame(Frame),
    Pb(pb::Frame),
    Bytes(Vec<u8>),
}

/// What reads the acceptor's end of the current stream.
#[derive(Debug)]
enum Reader {
    /// Nothing yet: the first frame decides. On the scenario's first stream, a frame that
    /// is no resume `Hello` goes to the acceptor session; on later ones, to a new one.
    Fresh {
        first: bool,
    },
    Session,
    Stray(usize),
    Gate(Box<WatchedGate>),
    /// Nothing reads: a gate refused, or the stream ended before a first frame.
    Gone,
}

/// The current stream.
#[derive(Debug)]
struct Stream {
    /// Frames on the wire towards each side (by [`at`]).
    wire: [VecDeque<Frame>; 2],
    /// Whether each side's inbound half has ended.
    ended: [bool; 2],
    reader: Reader,
    /// The sessions' generations when they took this stream.
    initiator_generation: u64,
    acceptor_generation: Option<u64>,
}

impl Stream {
    fn new(first: bool, initiator_generation: u64) -> Self {
        Self {
            wire: [VecDeque::new(), VecDeque::new()],
            ended: [false, false],
            reader: Reader::Fresh { first },
            initiator_generation,
            acceptor_generation: None,
        }
    }
}

/// The index of `side` in per-side arrays.
fn at(side: Side) -> usize {
    match side {
        Side::Initiator => 0,
        Side::Acceptor => 1,
    }
}

struct World<'t> {
    now: Instant,
    tally: &'t mut Tally,
    secret: Secret,
    acceptor_config: SessionConfig,
    acceptor_tls: TlsBinding,
    initiator: Watched,
    acceptor: Watched,
    /// Acceptor sessions opened by later streams whose first frame was no resume `Hello`.
    strays: Vec<Watched>,
    stream: Option<Stream>,
    /// Frames that arrived at each side, the latest last.
    history: [VecDeque<Frame>; 2],
    nonce: u8,
}

fn secret() -> Secret {
    static SECRET: OnceLock<Secret> = OnceLock::new();
    SECRET
        .get_or_init(|| Secret::new("the fuzz's secret, long enough").expect("a valid secret"))
        .clone()
}

fn node(name: &str, n: u128) -> NodeIdentity {
    NodeIdentity {
        name: name.into(),
        incarnation: Uuid::from_u128(n),
    }
}

impl ConfigSpec {
    fn config(&self) -> SessionConfig {
        let mut config = SessionConfig::default();
        if let Self::Tight {
            credit_window,
            replay_max_messages,
            max_message_bytes,
            ack_every,
            max_batch_messages,
            watermarks,
        } = *self
        {
            config.credit_window = 1 + u64::from(credit_window % 32);
            config.replay_max_messages = 1 + usize::from(replay_max_messages % 32);
            config.max_message_bytes = 1 + u64::from(max_message_bytes);
            config.ack_every = 1 + u64::from(ack_every % 8);
            config.max_batch_messages = 1 + usize::from(max_batch_messages % 8);
            if !watermarks {
                config.flow_high_watermark = None;
            }
        }
        config
    }
}

impl TlsSpec {
    /// The bindings of the initiator and of the acceptor.
    fn bindings(self) -> (TlsBinding, TlsBinding) {
        let cert = |der: &[u8]| CertDigest::of(der);
        let verified = |der: &[u8]| TlsBinding::Verified(Some(cert(der)));
        match self {
            Self::Plaintext => (TlsBinding::Plaintext, TlsBinding::Plaintext),
            Self::Bound => (verified(b"b"), TlsBinding::Served(cert(b"b"))),
            Self::OtherCertificate => (verified(b"proxy"), TlsBinding::Served(cert(b"b"))),
            Self::InitiatorOnly => (verified(b"b"), TlsBinding::Plaintext),
            Self::AcceptorOnly => (TlsBinding::Plaintext, TlsBinding::Served(cert(b"b"))),
        }
    }
}

impl BodySpec {
    fn body(self, limit: u64) -> Body {
        let named = TypeUrl::from(TYPE_URL);
        let small = Bytes::from_static(b"fuzz");
        let (kind, type_url, payload) = match self {
            Self::Cast { len } => (
                BodyKind::Cast,
                named,
                Bytes::from(vec![0xA5; usize::from(len % 32)]),
            ),
            Self::Call { id, timeout_ms } => (
                BodyKind::Call {
                    id: u64::from(id),
                    timeout_ms: u64::from(timeout_ms),
                },
                named,
                small,
            ),
            Self::Reply { to, fault: false } => (
                BodyKind::Reply {
                    to: u64::from(to),
                    fault: None,
                },
                named,
                small,
            ),
            Self::Reply { to, fault: true } => (
                BodyKind::Reply {
                    to: u64::from(to),
                    fault: Some(Box::new(Fault {
                        code: "handler".into(),
                        message: "fuzz".into(),
                    })),
                },
                TypeUrl::empty(),
                Bytes::new(),
            ),
            Self::Unnamed => (BodyKind::Cast, TypeUrl::empty(), small),
            // Over a small limit only: a default one is 4 MiB.
            Self::TooLarge if limit < 1 << 16 => (
                BodyKind::Cast,
                named,
                Bytes::from(vec![0; limit as usize + 1]),
            ),
            Self::TooLarge => (BodyKind::Cast, named, small),
        };
        Body {
            kind,
            type_url,
            payload,
        }
    }
}

impl SignalSpec {
    /// The signal as an owner may give it (`SessionRef::signal` takes a throttle in (0, 1] only).
    fn domain(self) -> Option<FlowSignal> {
        match self {
            Self::Pause => Some(FlowSignal::Pause),
            Self::Resume => Some(FlowSignal::Resume),
            Self::PauseForMs(ms) => {
                Some(FlowSignal::PauseFor(Duration::from_millis(ms.apply(250))))
            }
            Self::Throttle(_) => match self.pb() {
                pb::flow::Signal::Throttle(rate) if rate > 0.0 && rate <= 1.0 => {
                    Some(FlowSignal::Throttle(rate))
                }
                _ => None,
            },
        }
    }
}

fn refusal(n: u8) -> Refusal {
    let reason = match n % 9 {
        0 => RefuseReason::UnknownActor,
        1 => RefuseReason::AuthFailed,
        2 => RefuseReason::UnsupportedVersion { speaks: 5 },
        3 => RefuseReason::ShuttingDown,
        4 => RefuseReason::LimitExceeded,
        5 => RefuseReason::ProtocolError,
        6 => RefuseReason::UnknownSession,
        7 => RefuseReason::ResumeMismatch,
        _ => RefuseReason::ProtocolMismatch {
            acceptor: "fuzz.Req->fuzz.Resp".into(),
        },
    };
    Refusal {
        reason,
        detail: "refused by the fuzz's owner".into(),
    }
}

fn goodbye_reason(n: u8) -> GoodbyeReason {
    match n % 6 {
        0 => GoodbyeReason::Finished,
        1 => GoodbyeReason::ActorStopped,
        2 => GoodbyeReason::NodeShutdown,
        3 => GoodbyeReason::ProtocolError,
        4 => GoodbyeReason::Aborted,
        _ => GoodbyeReason::LimitExceeded,
    }
}

/// The frame `item` parses to, as the driver reads it.
fn parse(item: Item) -> Result<Frame, FrameError> {
    match item {
        Item::Frame(frame) => Ok(frame),
        Item::Pb(frame) => Frame::try_from(frame),
        Item::Bytes(bytes) => crate::wire::codec::decode(bytes.into())
            .map_err(|e| FrameError::Undecodable(e.to_string()))
            .and_then(|parsed| parsed),
    }
}

/// What reaches a session from its stream, as the driver tells it.
enum Arrival {
    Frame(Frame),
    Malformed(FrameError),
    /// A frame over the transport's size limit (tonic's `OutOfRange`).
    TooLarge(ProtocolError),
}

/// `arrival` reaches the session `watched`; returns what it writes.
fn feed(
    watched: &mut Watched,
    now: Instant,
    tally: &mut Tally,
    arrival: Arrival,
) -> Result<Vec<Frame>, Violation> {
    match arrival {
        Arrival::Frame(frame) => {
            let kind = frame.kind();
            watched.call(now, tally, Cause::Frame(kind), |s| {
                s.handle_frame(frame, now)
            })
        }
        Arrival::Malformed(error) => {
            watched.call(now, tally, Cause::Malformed(&error.clone()), |s| {
                s.handle_malformed(error)
            })
        }
        Arrival::TooLarge(error) => watched.call(now, tally, Cause::Broken(&error.clone()), |s| {
            s.handle_protocol_error(error)
        }),
    }
}

impl<'t> World<'t> {
    fn new(scenario: &Scenario, tally: &'t mut Tally) -> Result<Self, Violation> {
        let now = Instant::now();
        let secret = secret();
        let (initiator_tls, acceptor_tls) = scenario.tls.bindings();
        let acceptor_config = scenario.acceptor.config();
        let initiator = Session::initiator(
            scenario.initiator.config(),
            secret.clone(),
            node("a", 1),
            SessionId(Uuid::from_u128(7)),
            "t".into(),
            [1; NONCE_LEN],
            now,
        )
        .with_tls_binding(initiator_tls);
        let acceptor = Session::acceptor(
            acceptor_config.clone(),
            secret.clone(),
            node("b", 2),
            [2; NONCE_LEN],
            now,
        )
        .with_tls_binding(acceptor_tls.clone());
        let mut world = Self {
            now,
            tally,
            secret,
            acceptor_config,
            acceptor_tls,
            initiator: Watched::new("initiator", initiator, scenario.owners),
            acceptor: Watched::new("acceptor", acceptor, scenario.owners),
            strays: Vec::new(),
            stream: Some(Stream::new(true, 0)),
            history: [VecDeque::new(), VecDeque::new()],
            nonce: 3,
        };
        // The initiator's `Hello` goes on the wire.
        world.initiator_call(Cause::Other, |_| {})?;
        Ok(world)
    }

    fn start(&mut self, start: &Start, owners: Owners) -> Result<(), Violation> {
        match start {
            Start::Greeting => Ok(()),
            Start::Established {
                delivered,
                in_flight,
            } => self.establish(*delivered, *in_flight, owners),
            Start::Interrupted { lost } => {
                self.establish(2, *lost, owners)?;
                self.cut()
            }
            Start::Resuming { lost, edits } => {
                self.establish(2, *lost, owners)?;
                self.cut()?;
                self.resume()?;
                let Some(hello) = self.pop(Side::Acceptor) else {
                    return Ok(());
                };
                let mut hello = pb::Frame::from(hello);
                edit_fields(&mut hello, edits);
                self.deliver(Side::Acceptor, Item::Pb(hello))
            }
            Start::Finishing {
                initiator,
                in_flight,
            } => {
                self.establish(1, *in_flight, owners)?;
                let side = if *initiator {
                    Side::Initiator
                } else {
                    Side::Acceptor
                };
                self.owner(side, &OwnerAction::Finish)
            }
        }
    }

    /// Completes the handshake with willing owners, exchanges `delivered` messages each
    /// way, then puts `in_flight` more each way on the wire; the scenario's owners take
    /// over.
    fn establish(&mut self, delivered: u8, in_flight: u8, owners: Owners) -> Result<(), Violation> {
        let willing = Owners {
            accept: true,
            confirm: true,
            consume: true,
        };
        self.initiator.owners = willing;
        self.acceptor.owners = willing;
        self.settle()?;
        // (`Send { count }` sends `count % 8 + 1`.)
        if !delivered.is_multiple_of(8) {
            let cast = OwnerAction::Send {
                count: delivered % 8 - 1,
                body: BodySpec::Cast { len: 8 },
            };
            self.owner(Side::Initiator, &cast)?;
            self.owner(Side::Acceptor, &cast)?;
            self.settle()?;
            // The lone acks go out.
            self.advance(Wait::Millis(10))?;
            self.settle()?;
        }
        self.initiator.owners = owners;
        self.acceptor.owners = owners;
        if !in_flight.is_multiple_of(8) {
            let cast = OwnerAction::Send {
                count: in_flight % 8 - 1,
                body: BodySpec::Cast { len: 8 },
            };
            self.owner(Side::Initiator, &cast)?;
            self.owner(Side::Acceptor, &cast)?;
        }
        self.tidy()
    }

    fn step(&mut self, step: &Step) -> Result<(), Violation> {
        match step {
            Step::Deliver { to, frames } => {
                for _ in 0..=frames % 4 {
                    let Some(frame) = self.pop(*to) else { break };
                    self.deliver(*to, Item::Frame(frame))?;
                }
                Ok(())
            }
            Step::Settle => self.settle(),
            Step::Drop(to) => {
                self.pop(*to);
                Ok(())
            }
            Step::Duplicate(to) => {
                let Some(frame) = self.pop(*to) else {
                    return Ok(());
                };
                self.deliver(*to, Item::Frame(frame.clone()))?;
                self.deliver(*to, Item::Frame(frame))
            }
            Step::Swap(to) => {
                if let Some(wire) = self.wire(*to)
                    && wire.len() >= 2
                {
                    wire.swap(0, 1);
                }
                match self.pop(*to) {
                    Some(frame) => self.deliver(*to, Item::Frame(frame)),
                    None => Ok(()),
                }
            }
            Step::Tamper { to, edits } => {
                let Some(frame) = self.pop(*to) else {
                    return Ok(());
                };
                let mut frame = pb::Frame::from(frame);
                edit_fields(&mut frame, edits);
                self.deliver(*to, Item::Pb(frame))
            }
            Step::Corrupt { to, mutations } => {
                let Some(frame) = self.pop(*to) else {
                    return Ok(());
                };
                let mut bytes = pb::Frame::from(frame).encode_to_vec();
                let context = self.context(*to);
                mutate(
                    &mut bytes,
                    &mutations[..mutations.len().min(MAX_EDITS)],
                    &context,
                );
                self.deliver(*to, Item::Bytes(bytes))
            }
            Step::Inject { to, frame } => {
                let mut frame = frame.clone();
                frame.edits.truncate(MAX_EDITS);
                let frame = frame.build(&self.context(*to));
                self.deliver(*to, Item::Pb(frame))
            }
            Step::Replay { to, back } => {
                let history = &self.history[at(*to)];
                if history.is_empty() {
                    return Ok(());
                }
                let frame = history[history.len() - 1 - usize::from(*back) % history.len()].clone();
                self.deliver(*to, Item::Frame(frame))
            }
            Step::Owner { side, action } => self.owner(*side, action),
            Step::Advance(wait) => self.advance(*wait),
            Step::Cut => self.cut(),
            Step::StreamEnd(to) => self.stream_end(*to),
            Step::Resume => self.resume(),
            Step::TooLarge(to) => {
                if self.wire(*to).is_none() {
                    return Ok(());
                }
                let error = ProtocolError::FrameTooLarge(
                    "the frame exceeds the decoder's limit of 65536 bytes".into(),
                );
                self.arrive(*to, Arrival::TooLarge(error))
            }
        }
    }

    /// What a made-up frame towards `to` is made from.
    fn context(&self, to: Side) -> Context {
        let recipient = match to {
            Side::Initiator => &self.initiator,
            Side::Acceptor => &self.acceptor,
        };
        Context {
            session_id: *self.initiator.session.id().as_bytes(),
            initiator: node("a", 1).into(),
            acceptor: node("b", 2).into(),
            target: "t".into(),
            next_seq: recipient.arrived + 1,
            recipient_sent: recipient.sent,
        }
    }

    /// The wire towards `to`, while its inbound half is open. A stream a side gave up is
    /// gone: its driver reads and writes it no more.
    fn wire(&mut self, to: Side) -> Option<&mut VecDeque<Frame>> {
        if self.stale() {
            self.stream = None;
        }
        let stream = self.stream.as_mut()?;
        (!stream.ended[at(to)]).then(|| &mut stream.wire[at(to)])
    }

    /// Whether a side gave the current stream up (its generation moved since it took it).
    fn stale(&self) -> bool {
        let Some(stream) = &self.stream else {
            return false;
        };
        let acceptor_gave_up = matches!(stream.reader, Reader::Session)
            && stream
                .acceptor_generation
                .is_some_and(|g| g != self.acceptor.session.generation());
        acceptor_gave_up || self.initiator.session.generation() != stream.initiator_generation
    }

    fn pop(&mut self, to: Side) -> Option<Frame> {
        self.wire(to)?.pop_front()
    }

    /// Frames `from` wrote go on the wire towards the other side, if a stream is up.
    fn emit(&mut self, from: Side, frames: Vec<Frame>) {
        let to = match from {
            Side::Initiator => Side::Acceptor,
            Side::Acceptor => Side::Initiator,
        };
        if let Some(wire) = self.wire(to) {
            wire.extend(frames);
        }
    }

    fn initiator_call(
        &mut self,
        cause: Cause<'_>,
        call: impl FnOnce(&mut Session),
    ) -> Result<(), Violation> {
        let frames = self.initiator.call(self.now, self.tally, cause, call)?;
        self.emit(Side::Initiator, frames);
        Ok(())
    }

    /// A call on the acceptor session; what it writes goes out if it reads the stream.
    fn acceptor_call(
        &mut self,
        cause: Cause<'_>,
        call: impl FnOnce(&mut Session),
    ) -> Result<(), Violation> {
        let frames = self.acceptor.call(self.now, self.tally, cause, call)?;
        if matches!(
            self.stream,
            Some(Stream {
                reader: Reader::Session,
                ..
            })
        ) {
            self.emit(Side::Acceptor, frames);
        }
        Ok(())
    }

    fn stray_call(
        &mut self,
        i: usize,
        cause: Cause<'_>,
        call: impl FnOnce(&mut Session),
    ) -> Result<(), Violation> {
        let frames = self.strays[i].call(self.now, self.tally, cause, call)?;
        if matches!(self.stream, Some(Stream { reader: Reader::Stray(j), .. }) if j == i) {
            self.emit(Side::Acceptor, frames);
        }
        Ok(())
    }

    /// A frame reaches `to` as the driver reads it: parsed, then to whatever reads.
    fn deliver(&mut self, to: Side, item: Item) -> Result<(), Violation> {
        if self.wire(to).is_none() {
            return Ok(());
        }
        let from_wire = !matches!(item, Item::Frame(_));
        let arrival = match parse(item) {
            Ok(frame) => {
                self.tally.parsed += u64::from(from_wire);
                let history = &mut self.history[at(to)];
                if history.len() == HISTORY {
                    history.pop_front();
                }
                history.push_back(frame.clone());
                Arrival::Frame(frame)
            }
            Err(error) => {
                self.tally.refused(frame_error(&error));
                Arrival::Malformed(error)
            }
        };
        self.arrive(to, arrival)
    }

    /// What arrived reaches whatever reads the stream at `to`.
    fn arrive(&mut self, to: Side, arrival: Arrival) -> Result<(), Violation> {
        match to {
            Side::Initiator => {
                let frames = feed(&mut self.initiator, self.now, self.tally, arrival)?;
                self.emit(Side::Initiator, frames);
                Ok(())
            }
            Side::Acceptor => self.at_acceptor(arrival),
        }
    }

    /// What arrived reaches the acceptor's end of the stream.
    fn at_acceptor(&mut self, arrival: Arrival) -> Result<(), Violation> {
        let now = self.now;
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        if let Reader::Fresh { first } = stream.reader {
            if let Arrival::Frame(Frame::Hello(hello)) = &arrival
                && hello.resume.is_some()
            {
                self.nonce = self.nonce.wrapping_add(1);
                let gate = ResumeGate::new(
                    &self.acceptor_config,
                    &self.secret,
                    node("b", 2),
                    [self.nonce; NONCE_LEN],
                    hello.clone(),
                    now,
                )
                .with_tls_binding(self.acceptor_tls.clone());
                let (gate, frames) = WatchedGate::open(gate, self.tally)?;
                stream.reader = Reader::Gate(Box::new(gate));
                self.emit(Side::Acceptor, frames);
                return self.gate_decided();
            }
            if first {
                stream.reader = Reader::Session;
                stream.acceptor_generation = Some(self.acceptor.session.generation());
            } else {
                self.nonce = self.nonce.wrapping_add(1);
                let session = Session::acceptor(
                    self.acceptor_config.clone(),
                    self.secret.clone(),
                    node("b", 2),
                    [self.nonce; NONCE_LEN],
                    now,
                )
                .with_tls_binding(self.acceptor_tls.clone());
                let owners = self.acceptor.owners;
                self.strays
                    .push(Watched::new("stray acceptor", session, owners));
                stream.reader = Reader::Stray(self.strays.len() - 1);
            }
        }
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        match &mut stream.reader {
            Reader::Session => {
                let frames = feed(&mut self.acceptor, now, self.tally, arrival)?;
                self.emit(Side::Acceptor, frames);
                Ok(())
            }
            Reader::Stray(i) => {
                let frames = feed(&mut self.strays[*i], now, self.tally, arrival)?;
                self.emit(Side::Acceptor, frames);
                Ok(())
            }
            Reader::Gate(gate) => {
                let acceptor = &self.acceptor.session;
                let frames = match arrival {
                    Arrival::Frame(frame) => {
                        let kind = frame.kind();
                        gate.call(self.tally, Cause::Frame(kind), |g| {
                            g.handle_frame(frame, |id| {
                                acceptor.resume_ticket().filter(|_| acceptor.id() == id)
                            })
                        })?
                    }
                    Arrival::Malformed(error) => {
                        gate.call(self.tally, Cause::Malformed(&error.clone()), |g| {
                            g.handle_malformed(error)
                        })?
                    }
                    // The node's service ends a gate's stream on a transport error.
                    Arrival::TooLarge(_) => {
                        stream.reader = Reader::Gone;
                        stream.ended[at(Side::Acceptor)] = true;
                        return Ok(());
                    }
                };
                self.emit(Side::Acceptor, frames);
                self.gate_decided()
            }
            Reader::Fresh { .. } | Reader::Gone => Ok(()),
        }
    }

    /// Once the stream's gate decided: a proven stream goes to the session; a refused
    /// one is read no further (its refusal is on the wire).
    fn gate_decided(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        let Reader::Gate(gate) = &stream.reader else {
            return Ok(());
        };
        match gate.gate.verdict().clone() {
            GateVerdict::Pending => Ok(()),
            GateVerdict::Refused(_) => {
                stream.reader = Reader::Gone;
                stream.ended[at(Side::Acceptor)] = true;
                Ok(())
            }
            GateVerdict::Proven(proven) => {
                stream.reader = Reader::Session;
                self.acceptor_call(Cause::Other, |s| s.resume_proven(&proven, now))?;
                let generation = self.acceptor.session.generation();
                if let Some(stream) = &mut self.stream {
                    stream.acceptor_generation = Some(generation);
                }
                Ok(())
            }
        }
    }

    fn owner(&mut self, side: Side, action: &OwnerAction) -> Result<(), Violation> {
        let now = self.now;
        let watched = match side {
            Side::Initiator => &mut self.initiator,
            Side::Acceptor => &mut self.acceptor,
        };
        let mut refused = Vec::new();
        let call = |s: &mut Session| match action {
            OwnerAction::Send { count, body } => {
                for _ in 0..=count % 8 {
                    if let Err(error) = s.send(body.body(s.send_limit()), || now) {
                        refused.push(send_error(&error));
                    }
                }
            }
            OwnerAction::Confirm | OwnerAction::Consume(_) => {}
            OwnerAction::Accept => s.accept(),
            OwnerAction::Refuse(n) => s.refuse(refusal(*n)),
            OwnerAction::Finish => s.finish(),
            OwnerAction::Abort => s.abort("aborted by the fuzz".into()),
            OwnerAction::End(n) => s.end(goodbye_reason(*n), "ended by the fuzz".into()),
            OwnerAction::Signal(signal) => {
                if let Some(signal) = signal.domain() {
                    s.signal_peer(signal);
                }
            }
            OwnerAction::GiveUp => s.give_up("given up by the fuzz".into()),
        };
        match action {
            OwnerAction::Confirm => watched.confirm(now),
            OwnerAction::Consume(n) => watched.consume(u64::from(n % 16) + 1),
            _ => {}
        }
        let frames = watched.call(now, self.tally, Cause::Other, call)?;
        for reason in refused {
            self.tally.refused(reason);
        }
        match side {
            Side::Initiator => self.emit(Side::Initiator, frames),
            Side::Acceptor => {
                if matches!(
                    self.stream,
                    Some(Stream {
                        reader: Reader::Session,
                        ..
                    })
                ) {
                    self.emit(Side::Acceptor, frames);
                }
            }
        }
        Ok(())
    }

    /// Every frame arrives, both ways, until the wire is quiet.
    fn settle(&mut self) -> Result<(), Violation> {
        let mut moved = 0;
        loop {
            let mut quiet = true;
            for to in [Side::Acceptor, Side::Initiator] {
                while let Some(frame) = self.pop(to) {
                    quiet = false;
                    moved += 1;
                    if moved > SETTLE_FRAMES {
                        return Err(format!("the pair wrote over {SETTLE_FRAMES} frames"));
                    }
                    self.deliver(to, Item::Frame(frame))?;
                }
            }
            self.tidy()?;
            if quiet {
                return Ok(());
            }
        }
    }

    /// The soonest deadline of anything still waiting.
    fn next_deadline(&self) -> Option<Instant> {
        let sessions = [&self.initiator, &self.acceptor]
            .into_iter()
            .chain(&self.strays)
            .filter_map(|w| w.session.poll_timeout());
        let gate = match &self.stream {
            Some(Stream {
                reader: Reader::Gate(gate),
                ..
            }) => gate.gate.poll_timeout(),
            _ => None,
        };
        sessions.chain(gate).min()
    }

    fn advance(&mut self, wait: Wait) -> Result<(), Violation> {
        let to = match wait {
            Wait::NextDeadline => self
                .next_deadline()
                .unwrap_or(self.now + Duration::from_millis(1)),
            Wait::Millis(ms) => self.now + Duration::from_millis(u64::from(ms)),
            Wait::Seconds(s) => self.now + Duration::from_secs(u64::from(s)),
            Wait::Hour => self.now + Duration::from_secs(3600),
        };
        self.now = self.now.max(to);
        self.timeouts()
    }

    /// Everything handles the time `now`.
    fn timeouts(&mut self) -> Result<(), Violation> {
        let now = self.now;
        self.initiator_call(Cause::Timeout(now), |s| s.handle_timeout(now))?;
        self.acceptor_call(Cause::Timeout(now), |s| s.handle_timeout(now))?;
        for i in 0..self.strays.len() {
            self.stray_call(i, Cause::Timeout(now), |s| s.handle_timeout(now))?;
        }
        if let Some(Stream {
            reader: Reader::Gate(gate),
            ..
        }) = &mut self.stream
        {
            let frames = gate.call(self.tally, Cause::Timeout(now), |g| g.handle_timeout(now))?;
            self.emit(Side::Acceptor, frames);
            self.gate_decided()?;
        }
        self.tidy()
    }

    /// The stream breaks: both ends learn it, what was on it is lost.
    fn cut(&mut self) -> Result<(), Violation> {
        let Some(stream) = self.stream.take() else {
            return Ok(());
        };
        let now = self.now;
        self.initiator_call(Cause::Other, |s| {
            s.stream_broken(crate::error::InterruptCause::ConnectionLost, now)
        })?;
        match stream.reader {
            Reader::Session => self.acceptor_call(Cause::Other, |s| {
                s.stream_broken(crate::error::InterruptCause::ConnectionLost, now)
            }),
            Reader::Stray(i) => self.stray_call(i, Cause::Other, |s| {
                s.stream_broken(crate::error::InterruptCause::ConnectionLost, now)
            }),
            Reader::Fresh { .. } | Reader::Gate(_) | Reader::Gone => Ok(()),
        }
    }

    /// The stream's half towards `to` ends cleanly, after what is on it arrived.
    fn stream_end(&mut self, to: Side) -> Result<(), Violation> {
        while let Some(frame) = self.pop(to) {
            self.deliver(to, Item::Frame(frame))?;
        }
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        if stream.ended[at(to)] {
            return Ok(());
        }
        stream.ended[at(to)] = true;
        let now = self.now;
        match to {
            Side::Initiator => self.initiator_call(Cause::Other, |s| s.handle_stream_end(now)),
            Side::Acceptor => match stream.reader {
                Reader::Session => self.acceptor_call(Cause::Other, |s| s.handle_stream_end(now)),
                Reader::Stray(i) => self.stray_call(i, Cause::Other, |s| s.handle_stream_end(now)),
                // The node's service stops there.
                Reader::Fresh { .. } | Reader::Gate(_) | Reader::Gone => {
                    stream.reader = Reader::Gone;
                    Ok(())
                }
            },
        }
    }

    /// The initiator opens a new stream and resumes on it, if it is interrupted.
    fn resume(&mut self) -> Result<(), Violation> {
        let now = self.now;
        self.nonce = self.nonce.wrapping_add(1);
        let nonce = [self.nonce; NONCE_LEN];
        let frames = self.initiator.call(now, self.tally, Cause::Other, |s| {
            s.begin_resume(nonce, now)
        })?;
        if frames.is_empty() {
            return Ok(());
        }
        // The old stream, if the acceptor still holds it, is superseded when the new one
        // proves itself.
        let mut stream = Stream::new(false, self.initiator.session.generation());
        stream.wire[at(Side::Acceptor)].extend(frames);
        self.stream = Some(stream);
        Ok(())
    }

    /// What the driver does between steps: a side that gave its stream up drops it (the
    /// other is not told, as over a half-open connection); a closed side that has written
    /// everything ends its half, and the other reads the end.
    fn tidy(&mut self) -> Result<(), Violation> {
        let now = self.now;
        for _ in 0..4 {
            if self.stale() {
                self.stream = None;
            }
            let Some(stream) = &mut self.stream else {
                return Ok(());
            };
            let (to_initiator, to_acceptor) = (at(Side::Initiator), at(Side::Acceptor));
            if self.initiator.closed.is_some()
                && stream.wire[to_acceptor].is_empty()
                && !stream.ended[to_acceptor]
            {
                stream.ended[to_acceptor] = true;
                match stream.reader {
                    Reader::Session => {
                        self.acceptor_call(Cause::Other, |s| s.handle_stream_end(now))?
                    }
                    Reader::Stray(i) => {
                        self.stray_call(i, Cause::Other, |s| s.handle_stream_end(now))?
                    }
                    Reader::Fresh { .. } | Reader::Gate(_) | Reader::Gone => {
                        stream.reader = Reader::Gone;
                    }
                }
                continue;
            }
            let reader_done = match &stream.reader {
                Reader::Session => self.acceptor.closed.is_some(),
                Reader::Stray(i) => self.strays[*i].closed.is_some(),
                Reader::Gate(gate) => *gate.gate.verdict() != GateVerdict::Pending,
                Reader::Gone => true,
                Reader::Fresh { .. } => false,
            };
            if reader_done && stream.wire[to_initiator].is_empty() && !stream.ended[to_initiator] {
                stream.ended[to_initiator] = true;
                self.initiator_call(Cause::Other, |s| s.handle_stream_end(now))?;
                continue;
            }
            if stream.ended == [true, true] {
                self.stream = None;
            }
            return Ok(());
        }
        Ok(())
    }

    /// The network goes silent; the clock runs from deadline to deadline. Everything
    /// must end up established or closed, and no gate pending.
    fn fall_silent(&mut self) -> Result<(), Violation> {
        for _ in 0..FINAL_DEADLINES {
            let Some(deadline) = self.next_deadline() else {
                break;
            };
            self.now = self.now.max(deadline);
            self.timeouts()?;
        }
        if let Some(deadline) = self.next_deadline() {
            let after = deadline.saturating_duration_since(self.now);
            return Err(format!(
                "deadlines keep coming after {FINAL_DEADLINES} of them (the next in {after:?})"
            ));
        }
        for watched in [&self.initiator, &self.acceptor]
            .into_iter()
            .chain(&self.strays)
        {
            if !watched.settled() {
                let phase = watched.session.phase();
                return Err(format!("{}: left {phase:?} with no deadline", watched.name));
            }
        }
        if let Some(Stream {
            reader: Reader::Gate(gate),
            ..
        }) = &self.stream
            && *gate.gate.verdict() == GateVerdict::Pending
        {
            return Err("gate: left pending".into());
        }
        // The phases agree with what the owners were told, to the end.
        for watched in [&self.initiator, &self.acceptor]
            .into_iter()
            .chain(&self.strays)
        {
            if let (Phase::Closed(reason), None) = (watched.session.phase(), &watched.closed) {
                return Err(format!("{}: closed ({reason:?}) untold", watched.name));
            }
        }
        Ok(())
    }
}
