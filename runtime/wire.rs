//! The session protocol's frames as domain types, and the one place where a frame
//! from the wire is parsed into them.
//!
//! The generated protobuf types (`pb`) stay private to the crate. `Frame::try_from`
//! turns a `pb::Frame` into a `Frame` or a typed [`FrameError`]; nothing past this
//! module sees an unchecked frame.

use crate::signal::FlowSignal;
use bytes::Bytes;
use uuid::Uuid;

mod batch;
pub(crate) mod codec;
mod type_url;

pub use type_url::{INTERN_LIMIT, TypeUrl};

/// Generated protobuf types of `proto/duologue/v1` (the gRPC stubs are the driver's).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod pb {
    include!(concat!(env!("OUT_DIR"), "/duologue.v1.rs"));
}

/// Length of a handshake nonce, in bytes.
pub const NONCE_LEN: usize = 32;

/// Length of a handshake proof (an HMAC-SHA256 tag), in bytes.
pub const PROOF_LEN: usize = 32;

/// A random per-session handshake nonce.
pub(crate) type Nonce = [u8; NONCE_LEN];

/// The protocol version this crate speaks.
/// Version 2 names a type once per run of envelopes of that type in a batch; version 3
/// restates flow state (`FlowQuery`); version 4 resumes only with a proof of the
/// session's resume key, derived from its first handshake (`docs/protocol.md`, "Resume"),
/// and lets an initiator over TLS bind every proof of the session, resumes too, to the
/// acceptor's certificate (`Hello.bind_tls_certificate`; "Binding to TLS"); version 5
/// grants credit in bytes as well as in messages (`credit_window_bytes`,
/// `Flow.credit_bytes`, `FlowQuery.needed_bytes`; "Credit").
pub const PROTOCOL_VERSION: u32 = 5;

/// Identifies one session; chosen by the initiator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub Uuid);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The id's 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Identity of a node process: its name and the incarnation chosen when it started.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    /// The node's name.
    pub name: String,
    /// Random per process start: a restarted node has a new incarnation.
    pub incarnation: Uuid,
}

impl std::fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}#{}",
            self.name,
            &self.incarnation.simple().to_string()[..8]
        )
    }
}

/// A frame of the session protocol, parsed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Frame {
    Hello(Hello),
    Challenge(Challenge),
    Proof([u8; PROOF_LEN]),
    /// `Some(last_received)` when the session was resumed.
    Welcome(Option<u64>),
    Refuse(Refusal),
    Batch(Batch),
    Ack(u64),
    Goodbye(Goodbye),
    Flow(Flow),
    /// The peer waits to send this sequence number: restate the grant and signal.
    FlowQuery(FlowQuery),
}

impl Frame {
    /// The frame's kind, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "Hello",
            Self::Challenge(_) => "Challenge",
            Self::Proof(_) => "Proof",
            Self::Welcome(_) => "Welcome",
            Self::Refuse(_) => "Refuse",
            Self::Batch(_) => "Batch",
            Self::Ack(_) => "Ack",
            Self::Goodbye(_) => "Goodbye",
            Self::Flow(_) => "Flow",
            Self::FlowQuery(_) => "FlowQuery",
        }
    }
}

/// The initiator's greeting.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Hello {
    pub(crate) session_id: SessionId,
    pub(crate) from: NodeIdentity,
    pub(crate) target: String,
    pub(crate) protocol_version: u32,
    pub(crate) nonce: Nonce,
    pub(crate) max_message_bytes: u64,
    pub(crate) resume: Option<ResumeRequest>,
    pub(crate) credit_window: u64,
    /// The initial byte credit the initiator grants the acceptor.
    pub(crate) credit_window_bytes: u64,
    /// The protocol the initiator speaks to `target`; empty: unspecified.
    pub(crate) protocol: String,
    /// The initiator binds the proofs to the acceptor's TLS certificate.
    pub(crate) bind_tls_certificate: bool,
}

/// An initiator's request to continue a session on a new stream.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ResumeRequest {
    pub(crate) last_received: u64,
    pub(crate) acceptor_incarnation: Uuid,
}

/// The acceptor's challenge and proof.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Challenge {
    pub(crate) from: NodeIdentity,
    pub(crate) nonce: Nonce,
    pub(crate) proof: [u8; PROOF_LEN],
    pub(crate) max_message_bytes: u64,
    pub(crate) credit_window: u64,
    /// The initial byte credit the acceptor grants the initiator.
    pub(crate) credit_window_bytes: u64,
}

/// The credit window a peer that sends 0 gets.
pub(crate) const DEFAULT_CREDIT_WINDOW: u64 = 64 * 1024;

/// The initial byte credit a peer that sends 0 grants.
pub(crate) const DEFAULT_CREDIT_WINDOW_BYTES: u64 = 8 * 1024;

/// Credit and back-pressure signals for the other direction.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Flow {
    /// Cumulative credit in messages (sequence numbers); 0: no change.
    pub(crate) credit: u64,
    /// Cumulative credit in payload bytes; 0: no change.
    pub(crate) credit_bytes: u64,
    pub(crate) signal: Option<FlowSignal>,
}

/// A sender held back asks the peer to restate its flow state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlowQuery {
    /// The sequence number it waits to send.
    pub(crate) next_seq: u64,
    /// The payload bytes of the envelope it waits to send, when byte credit holds it
    /// back (0: not known).
    pub(crate) needed_bytes: u64,
}

/// Why a session was refused during its handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// No actor of that name is registered on the node.
    UnknownActor,
    /// The proof did not match the shared secret.
    AuthFailed,
    /// The protocol versions differ.
    UnsupportedVersion {
        /// The version the refusing node speaks (0: it did not say).
        speaks: u32,
    },
    /// The node is shutting down.
    ShuttingDown,
    /// A limit of the node was exceeded.
    LimitExceeded,
    /// The handshake broke the protocol.
    ProtocolError,
    /// A resume did not prove a session of the node: none with that id, or a wrong
    /// resume proof, initiator, target or incarnation (one refusal for all).
    UnknownSession,
    /// Not sent since protocol version 4 (it told a stranger that a session id existed);
    /// kept so that an older peer's refusal still parses.
    ResumeMismatch,
    /// The target actor serves another protocol than the initiator named.
    ProtocolMismatch {
        /// The protocol the target actor serves.
        acceptor: String,
    },
}

/// A typed refusal with its human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason:?}: {detail}")]
pub struct Refusal {
    /// The typed reason.
    pub reason: RefuseReason,
    /// Detail for people and logs.
    pub detail: String,
}

/// Data envelopes with a piggybacked cumulative ack.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Batch {
    pub(crate) ack: u64,
    pub(crate) envelopes: Vec<Envelope>,
}

/// One sequenced user message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Envelope {
    pub(crate) seq: u64,
    pub(crate) body: Body,
}

/// A user message before it is given a sequence number.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Body {
    pub(crate) kind: BodyKind,
    pub(crate) type_url: TypeUrl,
    pub(crate) payload: Bytes,
}

impl Body {
    /// Bytes this body adds to a batch, near enough for batching decisions.
    pub(crate) fn wire_len(&self) -> usize {
        self.payload.len() + self.type_url.as_str().len() + 24
    }
}

/// Whether a message is one-way, expects a reply, or is one.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum BodyKind {
    Cast,
    Call {
        id: u64,
        timeout_ms: u64,
    },
    /// The fault is boxed: rare, and it would double the size of every message.
    Reply {
        to: u64,
        fault: Option<Box<Fault>>,
    },
}

impl BodyKind {
    /// Whether this is a failed call's answer: it carries no payload, so it names no type.
    pub(crate) fn is_fault(&self) -> bool {
        matches!(self, Self::Reply { fault: Some(_), .. })
    }
}

/// Why a call produced no reply payload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Fault {
    /// Short machine-readable code (`no_reply`, `decode`, `handler`, ...).
    pub code: String,
    /// Detail for people.
    pub message: String,
}

/// Why a side ended its half of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoodbyeReason {
    /// The owner finished politely; the other side may still send.
    Finished,
    /// The actor the session talked to stopped.
    ActorStopped,
    /// The node is shutting down.
    NodeShutdown,
    /// The other side broke the protocol.
    ProtocolError,
    /// The session was aborted without a drain.
    Aborted,
    /// The other side exceeded a limit.
    LimitExceeded,
}

/// A side's farewell: it sends no more data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goodbye {
    /// The typed reason.
    pub reason: GoodbyeReason,
    /// Detail (for `ActorStopped`, the actor's stop reason).
    pub detail: String,
    /// Sequence number of the sender's last envelope.
    pub last_seq: u64,
}

/// A frame from the wire that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes are not a protobuf `Frame` at all.
    #[error("undecodable frame: {0}")]
    Undecodable(String),
    /// The frame's `kind` is not set (or is a kind this version does not know).
    #[error("frame has no kind")]
    Empty,
    /// A required field is absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A fixed-length field has the wrong length.
    #[error("field {field} has {got} bytes, expected {expected}")]
    BadLength {
        /// The field.
        field: &'static str,
        /// Its required length.
        expected: usize,
        /// Its length on the wire.
        got: usize,
    },
    /// An enum field holds a value this version does not define, or is unspecified.
    #[error("field {field} has invalid value {value}")]
    BadEnum {
        /// The field.
        field: &'static str,
        /// The value on the wire.
        value: i32,
    },
    /// A number field is out of its range.
    #[error("field {field} is out of range")]
    OutOfRange {
        /// The field.
        field: &'static str,
    },
    /// An envelope is both a call and a reply, or has sequence number 0.
    #[error("envelope {seq}: {problem}")]
    BadEnvelope {
        /// The envelope's sequence number.
        seq: u64,
        /// What is wrong.
        problem: &'static str,
    },
}

fn fixed<const N: usize>(field: &'static str, bytes: &[u8]) -> Result<[u8; N], FrameError> {
    bytes.try_into().map_err(|_| FrameError::BadLength {
        field,
        expected: N,
        got: bytes.len(),
    })
}

fn node_identity(field: &'static str, id: Option<pb::NodeId>) -> Result<NodeIdentity, FrameError> {
    let id = id.ok_or(FrameError::MissingField(field))?;
    Ok(NodeIdentity {
        name: id.name,
        incarnation: Uuid::from_bytes(fixed("incarnation", &id.incarnation)?),
    })
}

impl From<NodeIdentity> for pb::NodeId {
    fn from(id: NodeIdentity) -> Self {
        Self {
            name: id.name,
            incarnation: Bytes::copy_from_slice(id.incarnation.as_bytes()),
        }
    }
}

impl TryFrom<pb::Frame> for Frame {
    type Error = FrameError;

    fn try_from(frame: pb::Frame) -> Result<Self, FrameError> {
        use pb::frame::Kind;
        Ok(match frame.kind.ok_or(FrameError::Empty)? {
            Kind::Hello(h) => Self::Hello(Hello {
                session_id: SessionId(Uuid::from_bytes(fixed("session_id", &h.session_id)?)),
                from: node_identity("from", h.from)?,
                target: h.target,
                protocol_version: h.protocol_version,
                nonce: fixed::<NONCE_LEN>("nonce", &h.nonce)?,
                max_message_bytes: message_limit(h.max_message_bytes),
                resume: h
                    .resume
                    .map(|r| -> Result<_, FrameError> {
                        Ok(ResumeRequest {
                            last_received: r.last_received,
                            acceptor_incarnation: Uuid::from_bytes(fixed(
                                "acceptor_incarnation",
                                &r.acceptor_incarnation,
                            )?),
                        })
                    })
                    .transpose()?,
                credit_window: window(h.credit_window),
                credit_window_bytes: byte_window(h.credit_window_bytes),
                protocol: h.protocol,
                bind_tls_certificate: h.bind_tls_certificate,
            }),
            Kind::Challenge(c) => Self::Challenge(Challenge {
                from: node_identity("from", c.from)?,
                nonce: fixed::<NONCE_LEN>("nonce", &c.nonce)?,
                proof: fixed::<PROOF_LEN>("proof", &c.proof)?,
                max_message_bytes: message_limit(c.max_message_bytes),
                credit_window: window(c.credit_window),
                credit_window_bytes: byte_window(c.credit_window_bytes),
            }),
            Kind::Proof(p) => Self::Proof(fixed::<PROOF_LEN>("proof", &p.proof)?),
            Kind::Welcome(w) => Self::Welcome(w.resumed.map(|r| r.last_received)),
            Kind::Refuse(r) => Self::Refuse(Refusal {
                reason: refuse_reason(r.reason, r.protocol, r.protocol_version)?,
                detail: r.detail,
            }),
            Kind::Batch(b) => {
                let mut named = TypeUrl::empty();
                Self::Batch(Batch {
                    ack: b.ack,
                    envelopes: b
                        .envelopes
                        .into_iter()
                        .map(|e| Envelope::from_pb(e, &mut named))
                        .collect::<Result<_, _>>()?,
                })
            }
            Kind::Ack(a) => Self::Ack(a.seq),
            Kind::Goodbye(g) => Self::Goodbye(Goodbye {
                reason: goodbye_reason(g.reason)?,
                detail: g.detail,
                last_seq: g.last_seq,
            }),
            Kind::Flow(f) => {
                use pb::flow::Signal;
                let signal = match f.signal {
                    None => None,
                    Some(Signal::Pause(_)) => Some(FlowSignal::Pause),
                    Some(Signal::Resume(_)) => Some(FlowSignal::Resume),
                    Some(Signal::ResumeAfterMs(ms)) => {
                        Some(FlowSignal::PauseFor(std::time::Duration::from_millis(ms)))
                    }
                    Some(Signal::Throttle(rate)) if rate > 0.0 && rate <= 1.0 => {
                        Some(FlowSignal::Throttle(rate))
                    }
                    Some(Signal::Throttle(_)) => {
                        return Err(FrameError::OutOfRange {
                            field: "flow.throttle",
                        });
                    }
                };
                Self::Flow(Flow {
                    credit: f.credit,
                    credit_bytes: f.credit_bytes,
                    signal,
                })
            }
            Kind::FlowQuery(q) => Self::FlowQuery(FlowQuery {
                next_seq: q.next_seq,
                needed_bytes: q.needed_bytes,
            }),
        })
    }
}

/// The message size limit a peer that sends 0 gets.
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: u64 = 4 * 1024 * 1024;

fn message_limit(advertised: u64) -> u64 {
    if advertised == 0 {
        DEFAULT_MAX_MESSAGE_BYTES
    } else {
        advertised
    }
}

fn window(advertised: u64) -> u64 {
    if advertised == 0 {
        DEFAULT_CREDIT_WINDOW
    } else {
        advertised
    }
}

fn byte_window(advertised: u64) -> u64 {
    if advertised == 0 {
        DEFAULT_CREDIT_WINDOW_BYTES
    } else {
        advertised
    }
}

impl Envelope {
    /// Parses one envelope of a batch. `named` is the type URL the batch named last: an
    /// envelope that names none (and carries no fault) has that type.
    fn from_pb(e: pb::Envelope, named: &mut TypeUrl) -> Result<Self, FrameError> {
        let bad = |problem| FrameError::BadEnvelope {
            seq: e.seq,
            problem,
        };
        if e.seq == 0 {
            return Err(bad("sequence number 0"));
        }
        let kind = match (e.call_id, e.reply_to) {
            (0, 0) if e.fault.is_none() => BodyKind::Cast,
            (0, 0) => return Err(bad("fault on an envelope that is not a reply")),
            (id, 0) if e.fault.is_none() => BodyKind::Call {
                id,
                timeout_ms: e.timeout_ms,
            },
            (_, 0) => return Err(bad("fault on a call")),
            (0, to) => BodyKind::Reply {
                to,
                fault: e.fault.map(|f| {
                    Box::new(Fault {
                        code: f.code,
                        message: f.message,
                    })
                }),
            },
            _ => return Err(bad("both a call and a reply")),
        };
        let type_url = if kind.is_fault() {
            TypeUrl::empty()
        } else if e.type_url.is_empty() || *named == *e.type_url {
            named.clone()
        } else {
            *named = TypeUrl::new(&e.type_url);
            named.clone()
        };
        Ok(Self {
            seq: e.seq,
            body: Body {
                kind,
                type_url,
                payload: e.payload,
            },
        })
    }

    /// The envelope for the wire, leaving out its type URL when it is `named`, the one the
    /// batch named last (most batches carry one type, whose name would otherwise be most of
    /// a small message's bytes).
    fn into_pb(self, named: &mut TypeUrl) -> pb::Envelope {
        let (call_id, timeout_ms, reply_to, fault) = match self.body.kind {
            BodyKind::Cast => (0, 0, 0, None),
            BodyKind::Call { id, timeout_ms } => (id, timeout_ms, 0, None),
            BodyKind::Reply { to, fault } => (
                0,
                0,
                to,
                fault.map(|f| pb::Fault {
                    code: f.code,
                    message: f.message,
                }),
            ),
        };
        let type_url = if fault.is_some() || self.body.type_url == *named {
            String::new()
        } else {
            let text = self.body.type_url.as_str().to_owned();
            *named = self.body.type_url;
            text
        };
        pb::Envelope {
            seq: self.seq,
            type_url,
            payload: self.body.payload,
            call_id,
            reply_to,
            timeout_ms,
            fault,
        }
    }
}

fn refuse_reason(value: i32, protocol: String, speaks: u32) -> Result<RefuseReason, FrameError> {
    use pb::RefuseReason as P;
    Ok(match P::try_from(value) {
        Ok(P::UnknownActor) => RefuseReason::UnknownActor,
        Ok(P::AuthFailed) => RefuseReason::AuthFailed,
        Ok(P::UnsupportedVersion) => RefuseReason::UnsupportedVersion { speaks },
        Ok(P::ShuttingDown) => RefuseReason::ShuttingDown,
        Ok(P::LimitExceeded) => RefuseReason::LimitExceeded,
        Ok(P::ProtocolError) => RefuseReason::ProtocolError,
        Ok(P::UnknownSession) => RefuseReason::UnknownSession,
        Ok(P::ResumeMismatch) => RefuseReason::ResumeMismatch,
        Ok(P::ProtocolMismatch) => RefuseReason::ProtocolMismatch { acceptor: protocol },
        Ok(P::Unspecified) | Err(_) => {
            return Err(FrameError::BadEnum {
                field: "refuse.reason",
                value,
            });
        }
    })
}

fn goodbye_reason(value: i32) -> Result<GoodbyeReason, FrameError> {
    use pb::GoodbyeReason as P;
    Ok(match P::try_from(value) {
        Ok(P::Finished) => GoodbyeReason::Finished,
        Ok(P::ActorStopped) => GoodbyeReason::ActorStopped,
        Ok(P::NodeShutdown) => GoodbyeReason::NodeShutdown,
        Ok(P::ProtocolError) => GoodbyeReason::ProtocolError,
        Ok(P::Aborted) => GoodbyeReason::Aborted,
        Ok(P::LimitExceeded) => GoodbyeReason::LimitExceeded,
        Ok(P::Unspecified) | Err(_) => {
            return Err(FrameError::BadEnum {
                field: "goodbye.reason",
                value,
            });
        }
    })
}

impl From<Frame> for pb::Frame {
    fn from(frame: Frame) -> Self {
        use pb::frame::Kind;
        let kind = match frame {
            Frame::Hello(h) => Kind::Hello(pb::Hello {
                session_id: Bytes::copy_from_slice(h.session_id.as_bytes()),
                from: Some(h.from.into()),
                target: h.target,
                protocol_version: h.protocol_version,
                nonce: Bytes::copy_from_slice(&h.nonce),
                max_message_bytes: message_limit(h.max_message_bytes),
                resume: h.resume.map(|r| pb::ResumeRequest {
                    last_received: r.last_received,
                    acceptor_incarnation: Bytes::copy_from_slice(r.acceptor_incarnation.as_bytes()),
                }),
                credit_window: h.credit_window,
                credit_window_bytes: h.credit_window_bytes,
                protocol: h.protocol,
                bind_tls_certificate: h.bind_tls_certificate,
            }),
            Frame::Challenge(c) => Kind::Challenge(pb::Challenge {
                from: Some(c.from.into()),
                nonce: Bytes::copy_from_slice(&c.nonce),
                proof: Bytes::copy_from_slice(&c.proof),
                max_message_bytes: c.max_message_bytes,
                credit_window: c.credit_window,
                credit_window_bytes: c.credit_window_bytes,
            }),
            Frame::Proof(p) => Kind::Proof(pb::Proof {
                proof: Bytes::copy_from_slice(&p),
            }),
            Frame::Welcome(resumed) => Kind::Welcome(pb::Welcome {
                resumed: resumed.map(|last_received| pb::ResumePoint { last_received }),
            }),
            Frame::Refuse(r) => {
                let mut protocol = String::new();
                let mut protocol_version = 0;
                let reason = match r.reason {
                    RefuseReason::UnknownActor => pb::RefuseReason::UnknownActor,
                    RefuseReason::AuthFailed => pb::RefuseReason::AuthFailed,
                    RefuseReason::UnsupportedVersion { speaks } => {
                        protocol_version = speaks;
                        pb::RefuseReason::UnsupportedVersion
                    }
                    RefuseReason::ShuttingDown => pb::RefuseReason::ShuttingDown,
                    RefuseReason::LimitExceeded => pb::RefuseReason::LimitExceeded,
                    RefuseReason::ProtocolError => pb::RefuseReason::ProtocolError,
                    RefuseReason::UnknownSession => pb::RefuseReason::UnknownSession,
                    RefuseReason::ResumeMismatch => pb::RefuseReason::ResumeMismatch,
                    RefuseReason::ProtocolMismatch { acceptor } => {
                        protocol = acceptor;
                        pb::RefuseReason::ProtocolMismatch
                    }
                };
                Kind::Refuse(pb::Refuse {
                    reason: reason as i32,
                    detail: r.detail,
                    protocol,
                    protocol_version,
                })
            }
            Frame::Batch(b) => {
                let mut named = TypeUrl::empty();
                Kind::Batch(pb::Batch {
                    ack: b.ack,
                    envelopes: b
                        .envelopes
                        .into_iter()
                        .map(|e| e.into_pb(&mut named))
                        .collect(),
                })
            }
            Frame::Ack(seq) => Kind::Ack(pb::Ack { seq }),
            Frame::Goodbye(g) => Kind::Goodbye(pb::Goodbye {
                reason: match g.reason {
                    GoodbyeReason::Finished => pb::GoodbyeReason::Finished,
                    GoodbyeReason::ActorStopped => pb::GoodbyeReason::ActorStopped,
                    GoodbyeReason::NodeShutdown => pb::GoodbyeReason::NodeShutdown,
                    GoodbyeReason::ProtocolError => pb::GoodbyeReason::ProtocolError,
                    GoodbyeReason::Aborted => pb::GoodbyeReason::Aborted,
                    GoodbyeReason::LimitExceeded => pb::GoodbyeReason::LimitExceeded,
                } as i32,
                detail: g.detail,
                last_seq: g.last_seq,
            }),
            Frame::Flow(f) => Kind::Flow(pb::Flow {
                credit: f.credit,
                credit_bytes: f.credit_bytes,
                signal: f.signal.map(|signal| match signal {
                    FlowSignal::Pause => pb::flow::Signal::Pause(pb::Pause {}),
                    FlowSignal::Resume => pb::flow::Signal::Resume(pb::Resume {}),
                    FlowSignal::PauseFor(d) => pb::flow::Signal::ResumeAfterMs(
                        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                    ),
                    FlowSignal::Throttle(rate) => pb::flow::Signal::Throttle(rate),
                }),
            }),
            Frame::FlowQuery(q) => Kind::FlowQuery(pb::FlowQuery {
                next_seq: q.next_seq,
                needed_bytes: q.needed_bytes,
            }),
        };
        Self { kind: Some(kind) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_without_kind_is_rejected() {
        assert_eq!(
            Frame::try_from(pb::Frame { kind: None }),
            Err(FrameError::Empty)
        );
    }

    #[test]
    fn hello_with_short_session_id_is_rejected() {
        let frame = pb::Frame {
            kind: Some(pb::frame::Kind::Hello(pb::Hello {
                session_id: Bytes::from_static(b"abc"),
                ..Default::default()
            })),
        };
        assert_eq!(
            Frame::try_from(frame),
            Err(FrameError::BadLength {
                field: "session_id",
                expected: 16,
                got: 3
            })
        );
    }

    #[test]
    fn a_batch_names_each_run_of_one_type_once() {
        let body = |type_url: &str, fault: bool| Body {
            kind: if fault {
                BodyKind::Reply {
                    to: 1,
                    fault: Some(Box::new(Fault {
                        code: "c".into(),
                        message: "m".into(),
                    })),
                }
            } else {
                BodyKind::Cast
            },
            type_url: TypeUrl::new(type_url),
            payload: Bytes::from_static(b"p"),
        };
        let types = ["t", "t", "u", "", "u", "t"];
        let batch = Frame::Batch(Batch {
            ack: 0,
            envelopes: types
                .iter()
                .zip(1..)
                .map(|(t, seq)| Envelope {
                    seq,
                    body: body(t, t.is_empty()),
                })
                .collect(),
        });
        let wire = pb::Frame::from(batch.clone());
        let Some(pb::frame::Kind::Batch(b)) = &wire.kind else {
            panic!("not a batch")
        };
        let sent: Vec<&str> = b.envelopes.iter().map(|e| e.type_url.as_str()).collect();
        assert_eq!(sent, ["t", "", "u", "", "", "t"]);
        assert_eq!(Frame::try_from(wire).unwrap(), batch);

        // A peer that repeats names in full, or leaves out the first, is understood too.
        let mut named = TypeUrl::empty();
        let full = pb::Envelope {
            seq: 1,
            type_url: "t".into(),
            ..Default::default()
        };
        let parsed = Envelope::from_pb(full.clone(), &mut named).unwrap();
        assert_eq!(parsed.body.type_url, "t");
        assert_eq!(
            Envelope::from_pb(full, &mut named).unwrap().body.type_url,
            "t"
        );
        let unnamed = pb::Envelope {
            seq: 1,
            ..Default::default()
        };
        let first = Envelope::from_pb(unnamed, &mut TypeUrl::empty()).unwrap();
        assert!(first.body.type_url.is_empty());
    }

    #[test]
    fn envelope_that_is_call_and_reply_is_rejected() {
        let e = pb::Envelope {
            seq: 4,
            call_id: 1,
            reply_to: 2,
            ..Default::default()
        };
        assert!(matches!(
            Envelope::from_pb(e, &mut TypeUrl::empty()),
            Err(FrameError::BadEnvelope { seq: 4, .. })
        ));
    }

    #[test]
    fn throttle_outside_zero_to_one_is_rejected() {
        let frame = pb::Frame {
            kind: Some(pb::frame::Kind::Flow(pb::Flow {
                signal: Some(pb::flow::Signal::Throttle(1.5)),
                ..Default::default()
            })),
        };
        assert_eq!(
            Frame::try_from(frame),
            Err(FrameError::OutOfRange {
                field: "flow.throttle"
            })
        );
    }

    #[test]
    fn unspecified_goodbye_reason_is_rejected() {
        let frame = pb::Frame {
            kind: Some(pb::frame::Kind::Goodbye(pb::Goodbye::default())),
        };
        assert!(matches!(
            Frame::try_from(frame),
            Err(FrameError::BadEnum {
                field: "goodbye.reason",
                value: 0
            })
        ));
    }

    #[test]
    fn every_frame_round_trips() {
        let id = NodeIdentity {
            name: "n".into(),
            incarnation: Uuid::from_u128(9),
        };
        let frames = [
            Frame::Hello(Hello {
                session_id: SessionId(Uuid::from_u128(1)),
                from: id.clone(),
                target: "room".into(),
                protocol_version: PROTOCOL_VERSION,
                nonce: [3; NONCE_LEN],
                max_message_bytes: 10,
                resume: Some(ResumeRequest {
                    last_received: 12,
                    acceptor_incarnation: Uuid::from_u128(13),
                }),
                credit_window: 99,
                credit_window_bytes: 97,
                protocol: "a.Req->a.Resp".into(),
                bind_tls_certificate: true,
            }),
            Frame::Challenge(Challenge {
                from: id,
                nonce: [4; NONCE_LEN],
                proof: [5; PROOF_LEN],
                max_message_bytes: 11,
                credit_window: 98,
                credit_window_bytes: 96,
            }),
            Frame::Proof([6; PROOF_LEN]),
            Frame::Welcome(None),
            Frame::Welcome(Some(14)),
            Frame::Refuse(Refusal {
                reason: RefuseReason::UnknownActor,
                detail: "x".into(),
            }),
            Frame::Refuse(Refusal {
                reason: RefuseReason::ProtocolMismatch {
                    acceptor: "b.Req->b.Resp".into(),
                },
                detail: "y".into(),
            }),
            Frame::Batch(Batch {
                ack: 3,
                envelopes: vec![
                    Envelope {
                        seq: 1,
                        body: Body {
                            kind: BodyKind::Call {
                                id: 7,
                                timeout_ms: 50,
                            },
                            type_url: "t".into(),
                            payload: Bytes::from_static(b"p"),
                        },
                    },
                    Envelope {
                        seq: 2,
                        body: Body {
                            kind: BodyKind::Reply {
                                to: 7,
                                fault: Some(Box::new(Fault {
                                    code: "c".into(),
                                    message: "m".into(),
                                })),
                            },
                            type_url: TypeUrl::empty(),
                            payload: Bytes::new(),
                        },
                    },
                ],
            }),
            Frame::Ack(8),
            Frame::Flow(Flow {
                credit: 300,
                credit_bytes: 4096,
                signal: Some(FlowSignal::Throttle(0.5)),
            }),
            Frame::Flow(Flow {
                credit: 0,
                credit_bytes: 0,
                signal: Some(FlowSignal::PauseFor(std::time::Duration::from_millis(250))),
            }),
            Frame::FlowQuery(FlowQuery {
                next_seq: 9,
                needed_bytes: 70_000,
            }),
            Frame::Refuse(Refusal {
                reason: RefuseReason::UnsupportedVersion { speaks: 5 },
                detail: "z".into(),
            }),
            Frame::Goodbye(Goodbye {
                reason: GoodbyeReason::ActorStopped,
                detail: "bye".into(),
                last_seq: 2,
            }),
        ];
        for frame in frames {
            let back = Frame::try_from(pb::Frame::from(frame.clone())).unwrap();
            assert_eq!(back, frame);
        }
    }
}
