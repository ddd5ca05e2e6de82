//! What the fuzz checks after every call into a session or a gate, and how it counts
//! refusals: each by its typed reason, under a stable name.
//!
//! A refusal is typed when it is a [`FrameError`], a [`CloseReason`] (with its
//! [`ProtocolError`], [`AuthError`](crate::AuthError) or [`LostReason`]), a
//! [`GateRefusal`] or a [`SendError`]; what the checks add is that it is also *given*:
//! a malformed frame closes the session with `Protocol(Malformed(that error))`, a session
//! that refuses tells its peer (a `Refuse` or a `Goodbye`), a gate's verdict matches the
//! refusal it sent, exactly one `Closed` event names the reason the phase says, and a
//! session still in a handshake or interrupted always has a deadline, so it cannot wait
//! without end.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use crate::error::{CloseReason, LostReason, ProtocolError, SendError};
use crate::session::{Event, GateRefusal, GateVerdict, Phase, ResumeGate, Session};
use crate::wire::{Frame, FrameError, RefuseReason};

use super::input::Owners;

/// A broken invariant, described.
pub(crate) type Violation = String;

/// Refusals counted by reason, and a few counts that show how deep inputs went.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    pub(crate) refusals: BTreeMap<&'static str, u64>,
    /// Inputs by kind (and a scenario's by where it starts).
    pub(crate) inputs: BTreeMap<&'static str, u64>,
    /// Frames that parsed (from the decoder inputs and the wire alike).
    pub(crate) parsed: u64,
    /// Sessions that completed a first handshake.
    pub(crate) established: u64,
    /// Resume streams that proved a session at a gate.
    pub(crate) resumed: u64,
}

impl Tally {
    pub(crate) fn refused(&mut self, reason: &'static str) {
        *self.refusals.entry(reason).or_default() += 1;
    }

    pub(crate) fn input(&mut self, kind: &'static str) {
        *self.inputs.entry(kind).or_default() += 1;
    }

    /// Adds `other`'s counts to these.
    pub(crate) fn merge(&mut self, other: &Self) {
        for (reason, n) in &other.refusals {
            *self.refusals.entry(reason).or_default() += n;
        }
        for (kind, n) in &other.inputs {
            *self.inputs.entry(kind).or_default() += n;
        }
        self.parsed += other.parsed;
        self.established += other.established;
        self.resumed += other.resumed;
    }

    /// All refusals.
    pub(crate) fn total(&self) -> u64 {
        self.refusals.values().sum()
    }
}

/// Counts by name, shown as `{name=n,...}`.
pub(crate) struct Counts<'a>(pub(crate) &'a BTreeMap<&'static str, u64>);

impl fmt::Display for Counts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, n)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{name}={n}")?;
        }
        f.write_str("}")
    }
}

/// The name a frame error is counted under.
pub(crate) fn frame_error(error: &FrameError) -> &'static str {
    match error {
        FrameError::Undecodable(_) => "frame.undecodable",
        FrameError::Empty => "frame.empty",
        FrameError::MissingField(_) => "frame.missing_field",
        FrameError::BadLength { .. } => "frame.bad_length",
        FrameError::BadEnum { .. } => "frame.bad_enum",
        FrameError::OutOfRange { .. } => "frame.out_of_range",
        FrameError::BadEnvelope { .. } => "frame.bad_envelope",
    }
}

/// The name a session's end is counted under.
pub(crate) fn close_reason(reason: &CloseReason) -> &'static str {
    match reason {
        CloseReason::Finished => "close.finished",
        CloseReason::Lost(lost) => match lost {
            LostReason::PeerEnded(_) => "close.lost.peer_ended",
            LostReason::ResumeDeadline { .. } => "close.lost.resume_deadline",
            LostReason::PeerRestarted { .. } => "close.lost.peer_restarted",
            LostReason::ReplayFull(_) => "close.lost.replay_full",
            LostReason::ResumeRefused(_) => "close.lost.resume_refused",
            LostReason::ResumeAuth(_) => "close.lost.resume_auth",
            LostReason::NotResumed(_) => "close.lost.not_resumed",
            LostReason::RestartGaveUp { .. } => "close.lost.restart_gave_up",
        },
        CloseReason::Ended { .. } => "close.ended",
        CloseReason::RefusedByPeer(_) => "close.refused_by_peer",
        CloseReason::RefusedLocally(_) => "close.refused_locally",
        CloseReason::Auth(_) => "close.auth",
        CloseReason::Protocol(error) => match error {
            ProtocolError::Malformed(_) => "close.protocol.malformed",
            ProtocolError::UnexpectedFrame { .. } => "close.protocol.unexpected_frame",
            ProtocolError::UnsupportedVersion(_) => "close.protocol.unsupported_version",
            ProtocolError::SequenceGap { .. } => "close.protocol.sequence_gap",
            ProtocolError::AckBeyondSent { .. } => "close.protocol.ack_beyond_sent",
            ProtocolError::MessageTooLarge { .. } => "close.protocol.message_too_large",
            ProtocolError::FrameTooLarge(_) => "close.protocol.frame_too_large",
            ProtocolError::CreditExceeded { .. } => "close.protocol.credit_exceeded",
            ProtocolError::ByteCreditExceeded { .. } => "close.protocol.byte_credit_exceeded",
            ProtocolError::DataAfterGoodbye => "close.protocol.data_after_goodbye",
            ProtocolError::GoodbyeMismatch { .. } => "close.protocol.goodbye_mismatch",
        },
        CloseReason::HandshakeTimeout => "close.handshake_timeout",
        CloseReason::Transport { .. } => "close.transport",
    }
}

/// The name a gate's refusal is counted under.
pub(crate) fn gate_refusal(refusal: &GateRefusal) -> &'static str {
    match refusal {
        GateRefusal::UnsupportedVersion(_) => "gate.unsupported_version",
        GateRefusal::PlaintextBinding => "gate.plaintext_binding",
        GateRefusal::NotResumable { known: true } => "gate.not_resumable.known",
        GateRefusal::NotResumable { known: false } => "gate.not_resumable.unknown",
        GateRefusal::Protocol(_) => "gate.protocol",
        GateRefusal::TimedOut => "gate.timed_out",
    }
}

/// The name a refused send is counted under.
pub(crate) fn send_error<T>(error: &SendError<T>) -> &'static str {
    match error {
        SendError::Closed { .. } => "send.closed",
        SendError::NotReady(_) => "send.not_ready",
        SendError::Full { .. } => "send.full",
        SendError::HeldBack { .. } => "send.held_back",
        SendError::TooLarge { .. } => "send.too_large",
        SendError::PeerUnreachable { .. } => "send.peer_unreachable",
    }
}

/// What a call into a session or a gate was, for the checks after it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cause<'a> {
    /// A frame that parsed arrived: of this kind.
    Frame(&'static str),
    /// A frame that did not parse arrived.
    Malformed(&'a FrameError),
    /// The transport saw the peer break the protocol (`handle_protocol_error`).
    Broken(&'a ProtocolError),
    /// `handle_timeout` at this time.
    Timeout(Instant),
    /// Anything else: an owner's call, a stream breaking or ending, a resume.
    Other,
}

/// Most frames one call may make a session write: past this, it writes without end.
const MAX_FRAMES_PER_CALL: usize = 100_000;

/// One session, its owner, and what the fuzz saw of it.
#[derive(Debug)]
pub(crate) struct Watched {
    pub(crate) name: &'static str,
    pub(crate) session: Session,
    /// How its `Closed` event said it ended.
    pub(crate) closed: Option<CloseReason>,
    /// The highest sequence number that arrived.
    pub(crate) arrived: u64,
    /// Confirmed delivered, and consumed, up to.
    pub(crate) confirmed: u64,
    pub(crate) consumed: u64,
    /// Payload bytes of the messages that arrived, summed up to each (index `seq - 1`).
    pub(crate) arrived_bytes: Vec<u64>,
    /// The highest sequence number it wrote in a batch.
    pub(crate) sent: u64,
    pub(crate) owners: Owners,
}

impl Watched {
    pub(crate) fn new(name: &'static str, session: Session, owners: Owners) -> Self {
        Self {
            name,
            session,
            closed: None,
            arrived: 0,
            confirmed: 0,
            consumed: 0,
            arrived_bytes: Vec::new(),
            sent: 0,
            owners,
        }
    }

    /// Runs `call` on the session, then its owner handles the events, and the checks
    /// run. Returns the frames the session writes now.
    pub(crate) fn call(
        &mut self,
        now: Instant,
        tally: &mut Tally,
        cause: Cause<'_>,
        call: impl FnOnce(&mut Session),
    ) -> Result<Vec<Frame>, Violation> {
        let was_closed = self.closed.is_some();
        call(&mut self.session);
        self.after(now, tally, cause, was_closed)
    }

    fn after(
        &mut self,
        now: Instant,
        tally: &mut Tally,
        cause: Cause<'_>,
        was_closed: bool,
    ) -> Result<Vec<Frame>, Violation> {
        let name = self.name;
        // The owner takes the events and the driver writes the frames until neither has
        // more: writing the last farewell may close the session (one more event).
        let mut frames = Vec::new();
        loop {
            self.events(now, tally)?;
            let written = frames.len();
            while let Some(frame) = self.session.poll_transmit(now) {
                if let Frame::Batch(batch) = &frame
                    && let Some(last) = batch.envelopes.last()
                {
                    self.sent = self.sent.max(last.seq);
                }
                frames.push(frame);
                if frames.len() > MAX_FRAMES_PER_CALL {
                    return Err(format!("{name}: poll_transmit does not run dry"));
                }
            }
            if frames.len() == written && !self.session.has_events() {
                break;
            }
        }
        let phase = self.session.phase();
        match (&phase, &self.closed) {
            (Phase::Closed(reason), Some(said)) if reason == said => {}
            (Phase::Closed(reason), said) => {
                return Err(format!(
                    "{name}: phase Closed({reason:?}) but its Closed event said {said:?}"
                ));
            }
            (phase, Some(said)) => {
                return Err(format!(
                    "{name}: Closed({said:?}) event but the phase is {phase:?}"
                ));
            }
            _ => {}
        }
        // The owner may read the flow state whenever it likes.
        let _ = self.session.flow(now);
        let refused = match cause {
            Cause::Malformed(error) => Some(ProtocolError::Malformed(error.clone())),
            Cause::Broken(error) => Some(error.clone()),
            _ => None,
        };
        if let Some(error) = refused
            && !was_closed
        {
            let expected = CloseReason::Protocol(error);
            if self.closed.as_ref() != Some(&expected) {
                return Err(format!(
                    "{name}: {cause:?} left it {phase:?}, not closed with {expected:?}"
                ));
            }
        }
        if !was_closed && let Some(reason) = &self.closed {
            let tells = matches!(
                reason,
                CloseReason::Protocol(_)
                    | CloseReason::Auth(_)
                    | CloseReason::HandshakeTimeout
                    | CloseReason::RefusedLocally(_)
            );
            let told = frames
                .iter()
                .any(|f| matches!(f, Frame::Refuse(_) | Frame::Goodbye(_)));
            if tells && !told {
                return Err(format!(
                    "{name}: closed with {reason:?} without telling its peer (wrote {frames:?})"
                ));
            }
        }
        let deadline = self.session.poll_timeout();
        let waits = matches!(
            phase,
            Phase::Init
                | Phase::AwaitingPeer
                | Phase::Authenticated
                | Phase::Interrupted
                | Phase::Resuming
        );
        if waits && deadline.is_none() {
            return Err(format!(
                "{name}: {phase:?} with no deadline: it could wait forever"
            ));
        }
        if let Cause::Timeout(at) = cause
            && deadline.is_some_and(|d| d <= at)
        {
            return Err(format!(
                "{name}: after handle_timeout its next deadline has passed already ({phase:?})"
            ));
        }
        Ok(frames)
    }

    /// The owner takes the events: admits an authenticated peer, confirms and consumes
    /// messages, as `owners` says.
    fn events(&mut self, now: Instant, tally: &mut Tally) -> Result<(), Violation> {
        while let Some(event) = self.session.poll_event() {
            if self.closed.is_some() {
                return Err(format!("{}: {event:?} after its Closed event", self.name));
            }
            match event {
                Event::Authenticated { .. } if self.owners.accept => self.session.accept(),
                Event::Established => tally.established += 1,
                Event::Message(envelope) => {
                    if envelope.seq != self.arrived + 1 {
                        return Err(format!(
                            "{}: message {} arrived after {}",
                            self.name, envelope.seq, self.arrived
                        ));
                    }
                    self.arrived = envelope.seq;
                    let before = self.arrived_bytes.last().copied().unwrap_or(0);
                    self.arrived_bytes
                        .push(before + envelope.body.payload.len() as u64);
                    if self.owners.confirm {
                        self.confirm(now);
                    }
                    if self.owners.consume {
                        self.consume(1);
                    }
                }
                Event::Closed(reason, _) => {
                    tally.refused(close_reason(&reason));
                    self.closed = Some(reason);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The owner confirms every message that arrived.
    pub(crate) fn confirm(&mut self, now: Instant) {
        self.confirmed = self.arrived;
        self.session.confirm_delivered(self.arrived, now);
    }

    /// The owner consumes up to `n` more of the messages it confirmed.
    pub(crate) fn consume(&mut self, n: u64) {
        self.consumed = (self.consumed + n).min(self.confirmed);
        let bytes = match self.consumed {
            0 => 0,
            n => self.arrived_bytes[n as usize - 1],
        };
        self.session.consumed(self.consumed, bytes);
    }

    /// Whether the session is established (it may then idle without a deadline).
    pub(crate) fn settled(&self) -> bool {
        matches!(
            self.session.phase(),
            Phase::Active | Phase::Finishing | Phase::Closed(_)
        )
    }
}

/// A resume stream's gate and what the fuzz saw of it.
#[derive(Debug)]
pub(crate) struct WatchedGate {
    pub(crate) gate: ResumeGate,
}

impl WatchedGate {
    /// Watches a gate just made; returns it with the frames it writes first: its
    /// `Challenge`, or the refusal of the `Hello`.
    pub(crate) fn open(
        mut gate: ResumeGate,
        tally: &mut Tally,
    ) -> Result<(Self, Vec<Frame>), Violation> {
        let frames = drain(&mut gate)?;
        match gate.verdict() {
            GateVerdict::Pending => {
                if !matches!(frames.as_slice(), [Frame::Challenge(_)]) {
                    return Err(format!("gate: opened with {frames:?}, not a challenge"));
                }
            }
            GateVerdict::Refused(
                why @ (GateRefusal::UnsupportedVersion(_) | GateRefusal::PlaintextBinding),
            ) => {
                tally.refused(gate_refusal(why));
                refusal_sent(why, &frames)?;
            }
            verdict => return Err(format!("gate: opened {verdict:?}")),
        }
        let watched = Self { gate };
        watched.deadline_matches(None)?;
        Ok((watched, frames))
    }

    /// Runs `call` on the gate, then the checks. Returns the frames it writes now.
    pub(crate) fn call(
        &mut self,
        tally: &mut Tally,
        cause: Cause<'_>,
        call: impl FnOnce(&mut ResumeGate),
    ) -> Result<Vec<Frame>, Violation> {
        let was_pending = *self.gate.verdict() == GateVerdict::Pending;
        call(&mut self.gate);
        let frames = drain(&mut self.gate)?;
        let verdict = self.gate.verdict().clone();
        match &verdict {
            GateVerdict::Pending => {
                if matches!(cause, Cause::Malformed(_) | Cause::Frame(_)) {
                    return Err(format!("gate: {cause:?} left it pending"));
                }
            }
            GateVerdict::Proven(_) if was_pending => {
                tally.resumed += 1;
                if !matches!(cause, Cause::Frame("Proof")) {
                    return Err(format!("gate: proven by {cause:?}"));
                }
            }
            GateVerdict::Refused(why) if was_pending => {
                tally.refused(gate_refusal(why));
                refusal_sent(why, &frames)?;
                match (cause, why) {
                    (
                        Cause::Malformed(error),
                        GateRefusal::Protocol(ProtocolError::Malformed(e)),
                    ) if e == error => {}
                    (
                        Cause::Frame(kind),
                        GateRefusal::Protocol(ProtocolError::UnexpectedFrame { .. }),
                    ) if kind != "Proof" => {}
                    (Cause::Frame("Proof"), GateRefusal::NotResumable { .. })
                    | (Cause::Timeout(_), GateRefusal::TimedOut) => {}
                    (cause, why) => {
                        return Err(format!("gate: refused {why:?} after {cause:?}"));
                    }
                }
            }
            _ => {
                if !frames.is_empty() {
                    return Err(format!("gate: wrote {frames:?} after its verdict"));
                }
            }
        }
        self.deadline_matches(match cause {
            Cause::Timeout(at) => Some(at),
            _ => None,
        })?;
        Ok(frames)
    }

    /// A pending gate has a deadline (after `at`, the time of a `handle_timeout`); a
    /// decided one has none.
    fn deadline_matches(&self, at: Option<Instant>) -> Result<(), Violation> {
        let deadline = self.gate.poll_timeout();
        match self.gate.verdict() {
            GateVerdict::Pending => match (deadline, at) {
                (None, _) => Err("gate: pending with no deadline".into()),
                (Some(d), Some(at)) if d <= at => {
                    Err("gate: still pending past its deadline".into())
                }
                _ => Ok(()),
            },
            verdict => match deadline {
                Some(_) => Err(format!("gate: {verdict:?} with a deadline")),
                None => Ok(()),
            },
        }
    }
}

/// Everything the gate writes now (a challenge, a refusal: at most two frames).
fn drain(gate: &mut ResumeGate) -> Result<Vec<Frame>, Violation> {
    let mut frames = Vec::new();
    while let Some(frame) = gate.poll_transmit() {
        frames.push(frame);
        if frames.len() > 2 {
            return Err(format!(
                "gate: wrote more than a challenge and a refusal: {frames:?}"
            ));
        }
    }
    Ok(frames)
}

/// A gate that refused for `why` wrote, last, the refusal that says so.
fn refusal_sent(why: &GateRefusal, frames: &[Frame]) -> Result<(), Violation> {
    let expected = match why {
        GateRefusal::UnsupportedVersion(_) => RefuseReason::UnsupportedVersion {
            speaks: crate::wire::PROTOCOL_VERSION,
        },
        GateRefusal::PlaintextBinding => RefuseReason::AuthFailed,
        GateRefusal::NotResumable { .. } => RefuseReason::UnknownSession,
        GateRefusal::Protocol(_) | GateRefusal::TimedOut => RefuseReason::ProtocolError,
    };
    match frames.last() {
        Some(Frame::Refuse(refusal)) if refusal.reason == expected => Ok(()),
        last => Err(format!(
            "gate: refused ({why:?}) but its last frame is {last:?}"
        )),
    }
}
