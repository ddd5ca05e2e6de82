//! What one fuzz input is, as [`arbitrary`] builds it from bytes: a frame's bytes, a
//! corrupted encoding, a protobuf frame with any field values, or a scenario between two
//! sessions with the fuzzer on the wire between them. The edits are protobuf-level, so
//! they can say what a domain frame cannot (a nonce of the wrong length, an enum value
//! that is not defined, no `kind` at all).

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::wire::pb;

/// One generated input.
#[derive(Debug)]
pub(crate) enum Input {
    /// Bytes off the wire, as they come, into the decoder.
    Raw(Vec<u8>),
    /// A frame's encoding, corrupted, into the decoder.
    Corrupted {
        frame: FrameSpec,
        mutations: Vec<ByteMutation>,
    },
    /// A protobuf frame with any values in its fields, into `Frame::try_from`.
    Structured(FrameSpec),
    /// Two sessions (and the acceptor's resume gates), the fuzzer on the wire.
    Scenario(Box<Scenario>),
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // Decoding is cheap and shallow; most inputs go to the sessions.
        Ok(match u.int_in_range(0..=9u8)? {
            0 | 1 => Self::Raw(u.bytes(u.len())?.to_vec()),
            2 => Self::Corrupted {
                frame: u.arbitrary()?,
                mutations: up_to::<4, _>(u)?,
            },
            3 => Self::Structured(u.arbitrary()?),
            _ => Self::Scenario(u.arbitrary()?),
        })
    }
}

/// Two sessions, where they start, and what happens to them.
#[derive(Arbitrary, Debug)]
pub(crate) struct Scenario {
    pub(crate) start: Start,
    pub(crate) initiator: ConfigSpec,
    pub(crate) acceptor: ConfigSpec,
    pub(crate) tls: TlsSpec,
    pub(crate) owners: Owners,
    #[arbitrary(with = up_to::<48, Step>)]
    pub(crate) steps: Vec<Step>,
}

/// One to `N` values (`arbitrary`'s own `Vec` stops after each element with even odds).
pub(crate) fn up_to<'a, const N: usize, T: Arbitrary<'a>>(
    u: &mut Unstructured<'a>,
) -> arbitrary::Result<Vec<T>> {
    let len = u.int_in_range(1..=N)?;
    (0..len).map(|_| u.arbitrary()).collect()
}

/// An index into `weights`, each as likely as its weight.
fn weighted(u: &mut Unstructured<'_>, weights: &[u32]) -> arbitrary::Result<usize> {
    let total: u32 = weights.iter().sum();
    let mut pick = u.int_in_range(0..=total - 1)?;
    for (i, &weight) in weights.iter().enumerate() {
        if pick < weight {
            return Ok(i);
        }
        pick -= weight;
    }
    Ok(weights.len() - 1)
}

/// Where a scenario starts.
#[derive(Arbitrary, Debug)]
pub(crate) enum Start {
    /// Nothing exchanged: the initiator's `Hello` is on the wire.
    Greeting,
    /// Established, `delivered` messages each way delivered and acknowledged, and
    /// `in_flight` more each way on the wire.
    Established { delivered: u8, in_flight: u8 },
    /// Established, then the stream broke with `lost` messages each way on it.
    Interrupted { lost: u8 },
    /// Interrupted, and the initiator's resume `Hello`, with `edits`, opened a new stream
    /// at the acceptor (a gate, or a new session if it is no resume `Hello`).
    Resuming {
        lost: u8,
        #[arbitrary(with = maybe_edits)]
        edits: Vec<FieldEdit>,
    },
    /// Established, and one side finished.
    Finishing { initiator: bool, in_flight: u8 },
}

/// A session's settings: the defaults, or small limits that inputs reach.
#[derive(Arbitrary, Debug)]
pub(crate) enum ConfigSpec {
    Default,
    Tight {
        credit_window: u8,
        replay_max_messages: u8,
        max_message_bytes: u8,
        ack_every: u8,
        max_batch_messages: u8,
        watermarks: bool,
    },
}

/// Whether the proofs are bound to a TLS certificate, and to which.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TlsSpec {
    Plaintext,
    /// The initiator verified the certificate the acceptor serves.
    Bound,
    /// The initiator verified another certificate than the acceptor serves.
    OtherCertificate,
    /// The initiator binds, the acceptor serves plaintext.
    InitiatorOnly,
    /// The acceptor serves TLS, the initiator does not bind.
    AcceptorOnly,
}

impl<'a> Arbitrary<'a> for TlsSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // Most pairs can complete their handshake.
        Ok(match weighted(u, &[12, 5, 1, 1, 1])? {
            0 => Self::Plaintext,
            1 => Self::Bound,
            2 => Self::OtherCertificate,
            3 => Self::InitiatorOnly,
            _ => Self::AcceptorOnly,
        })
    }
}

/// What the owners do by themselves with their sessions' events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owners {
    /// The acceptor's node admits an authenticated peer at once.
    pub(crate) accept: bool,
    /// Each message is confirmed delivered as it arrives.
    pub(crate) confirm: bool,
    /// Each message is consumed as it arrives.
    pub(crate) consume: bool,
}

impl<'a> Arbitrary<'a> for Owners {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // Mostly willing: an owner that never admits or confirms stops a scenario early.
        let mut likely = || Ok::<_, arbitrary::Error>(u.int_in_range(0..=7u8)? > 0);
        Ok(Self {
            accept: likely()?,
            confirm: likely()?,
            consume: likely()?,
        })
    }
}

/// A side of the scenario: as a recipient of frames, or as the owner acting.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Initiator,
    Acceptor,
}

/// One thing that happens in a scenario.
#[derive(Debug)]
pub(crate) enum Step {
    /// The next frames on the wire towards `to` arrive (1 to 4).
    Deliver { to: Side, frames: u8 },
    /// Every frame arrives, both ways, until the wire is quiet.
    Settle,
    /// The next frame towards `to` is lost.
    Drop(Side),
    /// The next frame towards `to` arrives twice.
    Duplicate(Side),
    /// The next two frames towards `to` arrive in the other order.
    Swap(Side),
    /// The next frame towards `to` arrives with protobuf-level edits.
    Tamper { to: Side, edits: Vec<FieldEdit> },
    /// The next frame towards `to` arrives with its bytes corrupted.
    Corrupt {
        to: Side,
        mutations: Vec<ByteMutation>,
    },
    /// A frame the network made up arrives at `to`.
    Inject { to: Side, frame: FrameSpec },
    /// A frame that arrived at `to` before arrives again (`back` frames ago).
    Replay { to: Side, back: u8 },
    /// The owner of one side acts.
    Owner { side: Side, action: OwnerAction },
    /// Time passes.
    Advance(Wait),
    /// The stream breaks: what is on the wire is lost, both sides learn it.
    Cut,
    /// The stream ends cleanly towards `to`: its peer's half-close (no error).
    StreamEnd(Side),
    /// The initiator opens a new stream and resumes on it.
    Resume,
    /// A frame over the transport's size limit arrives at `to` (the driver is told so,
    /// not given the frame).
    TooLarge(Side),
}

impl<'a> Arbitrary<'a> for Step {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // Weighted so that conversations go on between the tampering.
        Ok(
            match weighted(u, &[24, 10, 3, 2, 2, 12, 5, 8, 4, 15, 9, 2, 1, 3, 1])? {
                0 => Self::Deliver {
                    to: u.arbitrary()?,
                    frames: u.arbitrary()?,
                },
                1 => Self::Settle,
                2 => Self::Drop(u.arbitrary()?),
                3 => Self::Duplicate(u.arbitrary()?),
                4 => Self::Swap(u.arbitrary()?),
                5 => Self::Tamper {
                    to: u.arbitrary()?,
                    edits: up_to::<3, _>(u)?,
                },
                6 => Self::Corrupt {
                    to: u.arbitrary()?,
                    mutations: up_to::<3, _>(u)?,
                },
                7 => Self::Inject {
                    to: u.arbitrary()?,
                    frame: u.arbitrary()?,
                },
                8 => Self::Replay {
                    to: u.arbitrary()?,
                    back: u.arbitrary()?,
                },
                9 => Self::Owner {
                    side: u.arbitrary()?,
                    action: u.arbitrary()?,
                },
                10 => Self::Advance(u.arbitrary()?),
                11 => Self::Cut,
                12 => Self::StreamEnd(u.arbitrary()?),
                13 => Self::Resume,
                _ => Self::TooLarge(u.arbitrary()?),
            },
        )
    }
}

/// How much time passes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Until the soonest deadline of either side.
    NextDeadline,
    Millis(u16),
    Seconds(u8),
    /// Past every deadline.
    Hour,
}

impl<'a> Arbitrary<'a> for Wait {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match weighted(u, &[6, 10, 3, 1])? {
            0 => Self::NextDeadline,
            1 => Self::Millis(u.arbitrary()?),
            2 => Self::Seconds(u.arbitrary()?),
            _ => Self::Hour,
        })
    }
}

/// What an owner does with its session.
#[derive(Debug)]
pub(crate) enum OwnerAction {
    Send {
        count: u8,
        body: BodySpec,
    },
    /// Confirms every message that arrived.
    Confirm,
    Consume(u8),
    Accept,
    Refuse(u8),
    Finish,
    Abort,
    End(u8),
    Signal(SignalSpec),
    GiveUp,
}

impl<'a> Arbitrary<'a> for OwnerAction {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // Mostly sending: the rest ends or stalls a session.
        Ok(match weighted(u, &[12, 3, 3, 1, 1, 1, 1, 1, 2, 1])? {
            0 => Self::Send {
                count: u.arbitrary()?,
                body: u.arbitrary()?,
            },
            1 => Self::Confirm,
            2 => Self::Consume(u.arbitrary()?),
            3 => Self::Accept,
            4 => Self::Refuse(u.arbitrary()?),
            5 => Self::Finish,
            6 => Self::Abort,
            7 => Self::End(u.arbitrary()?),
            8 => Self::Signal(u.arbitrary()?),
            _ => Self::GiveUp,
        })
    }
}

/// A message an owner sends.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(crate) enum BodySpec {
    Cast {
        len: u8,
    },
    Call {
        id: u8,
        timeout_ms: u16,
    },
    Reply {
        to: u8,
        fault: bool,
    },
    /// A cast whose type URL is empty.
    Unnamed,
    /// A cast one byte over the session's limit.
    TooLarge,
}

/// A back-pressure signal, valid or not (a throttle outside (0, 1] does not parse).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(crate) enum SignalSpec {
    Pause,
    Resume,
    PauseForMs(NumSpec),
    Throttle(RateSpec),
}

/// A throttle's fraction.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(crate) enum RateSpec {
    Half,
    One,
    Tiny,
    Zero,
    Negative,
    AboveOne,
    NaN,
    Infinite,
    Any(f64),
}

/// A number field's new value, relative to the value it had.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(crate) enum NumSpec {
    Keep,
    Zero,
    One,
    Max,
    Plus(u8),
    Minus(u8),
    Double,
    FlipBit(u8),
    Set(u64),
}

/// A bytes field's new value: of the right length or not.
#[derive(Arbitrary, Debug, Clone)]
pub(crate) enum BytesSpec {
    Keep,
    Empty,
    Truncate(u8),
    Extend(u8),
    /// The right length, one bit flipped.
    FlipBit {
        index: u8,
        bit: u8,
    },
    /// The right length, other bytes (this byte repeated).
    Other(u8),
    Set(Vec<u8>),
}

/// A string field's new value.
#[derive(Arbitrary, Debug, Clone)]
pub(crate) enum TextSpec {
    Keep,
    Empty,
    Append(String),
    Set(String),
    /// This many bytes of `x` (times 64).
    Long(u8),
}

/// One protobuf-level edit of a frame; an edit of a field the frame does not have
/// changes nothing.
#[derive(Arbitrary, Debug, Clone)]
pub(crate) enum Edit {
    /// No `kind`: what an unknown `oneof` field decodes to.
    ClearKind,
    SessionId(BytesSpec),
    Nonce(BytesSpec),
    Proof(BytesSpec),
    /// `from` absent.
    DropFrom,
    FromName(TextSpec),
    FromIncarnation(BytesSpec),
    Target(TextSpec),
    Protocol(TextSpec),
    Version(NumSpec),
    MaxMessageBytes(NumSpec),
    CreditWindow(NumSpec),
    BindTls(bool),
    DropResume,
    /// A resume request, added if absent.
    ResumeLastReceived(NumSpec),
    ResumeIncarnation(BytesSpec),
    /// `Batch.ack` or `Ack.seq`.
    Ack(NumSpec),
    Seq {
        index: u8,
        value: NumSpec,
    },
    CallId {
        index: u8,
        value: NumSpec,
    },
    ReplyTo {
        index: u8,
        value: NumSpec,
    },
    TimeoutMs {
        index: u8,
        value: NumSpec,
    },
    Fault {
        index: u8,
        fault: bool,
    },
    TypeUrl {
        index: u8,
        text: TextSpec,
    },
    Payload {
        index: u8,
        len: u16,
    },
    RemoveEnvelope(u8),
    DuplicateEnvelope(u8),
    SwapEnvelopes(u8),
    WelcomeResumed(Option<NumSpec>),
    RefuseReason(i32),
    GoodbyeReason(i32),
    LastSeq(NumSpec),
    Credit(NumSpec),
    Signal(Option<SignalSpec>),
    NextSeq(NumSpec),
}

/// A frame made up from nothing: a plausible one of `kind`, then `edits`.
#[derive(Arbitrary, Debug, Clone)]
pub(crate) struct FrameSpec {
    pub(crate) kind: KindSpec,
    #[arbitrary(with = up_to::<3, Edit>)]
    pub(crate) edits: Vec<Edit>,
}

/// The kind of a made-up frame.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(crate) enum KindSpec {
    Hello { resume: bool },
    Challenge,
    Proof,
    Welcome { resumed: bool },
    Refuse(i32),
    Batch { envelopes: u8 },
    Ack,
    Goodbye(i32),
    Flow,
    FlowQuery,
    Empty,
}

/// One change to an encoding. Offsets wrap around its length.
#[derive(Arbitrary, Debug, Clone)]
pub(crate) enum ByteMutation {
    FlipBit {
        at: u16,
        bit: u8,
    },
    Set {
        at: u16,
        value: u8,
    },
    Insert {
        at: u16,
        bytes: Vec<u8>,
    },
    Remove {
        at: u16,
        len: u8,
    },
    Truncate {
        at: u16,
    },
    Repeat {
        at: u16,
        len: u8,
    },
    /// Ten `0xFF` bytes: a varint longer than any.
    LongVarint {
        at: u16,
    },
    /// A field number the message does not define (the frame's reserved ones among them).
    UnknownField {
        number: u8,
        wire_type: u8,
        value: Vec<u8>,
    },
    /// Another frame's encoding after this one (protobuf merges them).
    Append(FrameSpec),
}

/// An edit of whatever frame is next on the wire: `field` picks one of its fields (and
/// `envelope` an envelope of a batch); the specs say how it changes.
#[derive(Arbitrary, Debug, Clone)]
pub(crate) struct FieldEdit {
    pub(crate) field: u8,
    pub(crate) envelope: u8,
    pub(crate) num: NumSpec,
    pub(crate) bytes: BytesSpec,
    pub(crate) text: TextSpec,
    pub(crate) signal: Option<SignalSpec>,
}

/// No edits, or one to three.
fn maybe_edits(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<FieldEdit>> {
    if u.arbitrary()? {
        up_to::<3, _>(u)
    } else {
        Ok(Vec::new())
    }
}

impl FieldEdit {
    /// The edit of one of `frame`'s fields.
    fn edit(&self, frame: &pb::Frame) -> Edit {
        use pb::frame::Kind;
        let (num, index) = (self.num, self.envelope);
        let bytes = || self.bytes.clone();
        let text = || self.text.clone();
        let mut edits: Vec<Edit> = match &frame.kind {
            None => Vec::new(),
            Some(Kind::Hello(_)) => vec![
                Edit::SessionId(bytes()),
                Edit::Nonce(bytes()),
                Edit::DropFrom,
                Edit::FromName(text()),
                Edit::FromIncarnation(bytes()),
                Edit::Target(text()),
                Edit::Version(num),
                Edit::MaxMessageBytes(num),
                Edit::CreditWindow(num),
                Edit::BindTls(self.field.is_multiple_of(2)),
                Edit::DropResume,
                Edit::ResumeLastReceived(num),
                Edit::ResumeIncarnation(bytes()),
                Edit::Protocol(text()),
            ],
            Some(Kind::Challenge(_)) => vec![
                Edit::DropFrom,
                Edit::FromName(text()),
                Edit::FromIncarnation(bytes()),
                Edit::Nonce(bytes()),
                Edit::Proof(bytes()),
                Edit::MaxMessageBytes(num),
                Edit::CreditWindow(num),
            ],
            Some(Kind::Proof(_)) => vec![Edit::Proof(bytes())],
            Some(Kind::Welcome(_)) => {
                vec![Edit::WelcomeResumed(Some(num)), Edit::WelcomeResumed(None)]
            }
            Some(Kind::Refuse(r)) => vec![
                Edit::RefuseReason(num.apply(r.reason as u64) as i32),
                Edit::Protocol(text()),
            ],
            Some(Kind::Batch(_)) => vec![
                Edit::Ack(num),
                Edit::Seq { index, value: num },
                Edit::Seq { index, value: num },
                Edit::CallId { index, value: num },
                Edit::ReplyTo { index, value: num },
                Edit::TimeoutMs { index, value: num },
                Edit::Fault {
                    index,
                    fault: self.field.is_multiple_of(2),
                },
                Edit::TypeUrl {
                    index,
                    text: text(),
                },
                Edit::Payload {
                    index,
                    len: u16::try_from(num.apply(4)).unwrap_or(u16::MAX),
                },
                Edit::RemoveEnvelope(index),
                Edit::DuplicateEnvelope(index),
                Edit::SwapEnvelopes(index),
            ],
            Some(Kind::Ack(_)) => vec![Edit::Ack(num)],
            Some(Kind::Goodbye(g)) => vec![
                Edit::GoodbyeReason(num.apply(g.reason as u64) as i32),
                Edit::LastSeq(num),
            ],
            Some(Kind::Flow(_)) => vec![Edit::Credit(num), Edit::Signal(self.signal)],
            Some(Kind::FlowQuery(_)) => vec![Edit::NextSeq(num)],
        };
        // Now and then the frame loses its kind altogether.
        if self.field == u8::MAX || edits.is_empty() {
            return Edit::ClearKind;
        }
        edits.swap_remove(usize::from(self.field) % edits.len())
    }
}

/// Applies `edits` to whatever frame `frame` is, in order.
pub(crate) fn edit_fields(frame: &mut pb::Frame, edits: &[FieldEdit]) {
    for e in edits {
        let edit = e.edit(frame);
        apply(frame, &edit);
    }
}

/// What a made-up frame is made from: the session as the fuzzer saw it on the wire.
#[derive(Clone, Debug)]
pub(crate) struct Context {
    pub(crate) session_id: [u8; 16],
    pub(crate) initiator: pb::NodeId,
    pub(crate) acceptor: pb::NodeId,
    pub(crate) target: String,
    /// The next sequence number the recipient expects.
    pub(crate) next_seq: u64,
    /// The highest sequence number the recipient sent.
    pub(crate) recipient_sent: u64,
}

impl Default for Context {
    fn default() -> Self {
        let id = |name: &str, n: u8| pb::NodeId {
            name: name.into(),
            incarnation: Bytes::from(vec![n; 16]),
        };
        Self {
            session_id: [7; 16],
            initiator: id("a", 1),
            acceptor: id("b", 2),
            target: "t".into(),
            next_seq: 1,
            recipient_sent: 0,
        }
    }
}

/// A type URL of the fuzz's made-up messages.
pub(crate) const TYPE_URL: &str = "type.googleapis.com/fuzz.Payload";

impl FrameSpec {
    /// The frame: a plausible one of its kind, in `context`, with the edits applied.
    pub(crate) fn build(&self, context: &Context) -> pb::Frame {
        let mut frame = self.kind.plausible(context);
        edit(&mut frame, &self.edits);
        frame
    }
}

impl KindSpec {
    fn plausible(self, cx: &Context) -> pb::Frame {
        use pb::frame::Kind;
        let nonce = Bytes::from(vec![0x5A; crate::wire::NONCE_LEN]);
        let proof = Bytes::from(vec![0xC3; crate::wire::PROOF_LEN]);
        let kind = match self {
            Self::Hello { resume } => Some(Kind::Hello(pb::Hello {
                session_id: Bytes::copy_from_slice(&cx.session_id),
                from: Some(cx.initiator.clone()),
                target: cx.target.clone(),
                protocol_version: crate::wire::PROTOCOL_VERSION,
                nonce,
                max_message_bytes: 0,
                resume: resume.then(|| pb::ResumeRequest {
                    last_received: cx.recipient_sent,
                    acceptor_incarnation: cx.acceptor.incarnation.clone(),
                }),
                credit_window: 0,
                credit_window_bytes: 0,
                protocol: String::new(),
                bind_tls_certificate: false,
            })),
            Self::Challenge => Some(Kind::Challenge(pb::Challenge {
                from: Some(cx.acceptor.clone()),
                nonce,
                proof,
                max_message_bytes: 0,
                credit_window: 0,
                credit_window_bytes: 0,
            })),
            Self::Proof => Some(Kind::Proof(pb::Proof { proof })),
            Self::Welcome { resumed } => Some(Kind::Welcome(pb::Welcome {
                resumed: resumed.then_some(pb::ResumePoint {
                    last_received: cx.recipient_sent,
                }),
            })),
            Self::Refuse(reason) => Some(Kind::Refuse(pb::Refuse {
                reason: reason.rem_euclid(11),
                detail: "made up".into(),
                protocol: String::new(),
                protocol_version: 0,
            })),
            Self::Batch { envelopes } => Some(Kind::Batch(pb::Batch {
                ack: cx.recipient_sent,
                envelopes: (0..u64::from(envelopes % 5))
                    .map(|i| pb::Envelope {
                        seq: cx.next_seq + i,
                        type_url: if i == 0 {
                            TYPE_URL.into()
                        } else {
                            String::new()
                        },
                        payload: Bytes::from_static(b"fuzz"),
                        ..Default::default()
                    })
                    .collect(),
            })),
            Self::Ack => Some(Kind::Ack(pb::Ack {
                seq: cx.recipient_sent,
            })),
            Self::Goodbye(reason) => Some(Kind::Goodbye(pb::Goodbye {
                reason: reason.rem_euclid(8),
                detail: String::new(),
                last_seq: cx.next_seq.saturating_sub(1),
            })),
            Self::Flow => Some(Kind::Flow(pb::Flow {
                credit: cx.next_seq + 64,
                credit_bytes: 64 * 1024,
                signal: None,
            })),
            Self::FlowQuery => Some(Kind::FlowQuery(pb::FlowQuery {
                next_seq: cx.recipient_sent + 1,
                needed_bytes: 0,
            })),
            Self::Empty => None,
        };
        pb::Frame { kind }
    }
}

impl NumSpec {
    pub(crate) fn apply(self, value: u64) -> u64 {
        match self {
            Self::Keep => value,
            Self::Zero => 0,
            Self::One => 1,
            Self::Max => u64::MAX,
            Self::Plus(n) => value.saturating_add(u64::from(n % 4) + 1),
            Self::Minus(n) => value.saturating_sub(u64::from(n % 4) + 1),
            Self::Double => value.saturating_mul(2),
            Self::FlipBit(bit) => value ^ (1 << (bit % 64)),
            Self::Set(n) => n,
        }
    }

    fn apply_u32(self, value: u32) -> u32 {
        let wide = self.apply(u64::from(value));
        u32::try_from(wide).unwrap_or(wide as u32)
    }
}

impl BytesSpec {
    fn apply(&self, value: &mut Bytes) {
        let mut bytes = value.to_vec();
        match self {
            Self::Keep => return,
            Self::Empty => bytes.clear(),
            Self::Truncate(n) => bytes.truncate(bytes.len().saturating_sub(usize::from(*n) + 1)),
            Self::Extend(n) => bytes.extend(std::iter::repeat_n(0xEE, usize::from(*n) + 1)),
            Self::FlipBit { index, bit } => {
                if !bytes.is_empty() {
                    let at = usize::from(*index) % bytes.len();
                    bytes[at] ^= 1 << (bit % 8);
                }
            }
            Self::Other(byte) => bytes.fill(*byte),
            Self::Set(new) => bytes.clone_from(new),
        }
        *value = Bytes::from(bytes);
    }
}

impl TextSpec {
    fn apply(&self, value: &mut String) {
        match self {
            Self::Keep => {}
            Self::Empty => value.clear(),
            Self::Append(more) => value.push_str(more),
            Self::Set(new) => value.clone_from(new),
            Self::Long(n) => *value = "x".repeat(usize::from(*n) * 64),
        }
    }
}

impl RateSpec {
    fn value(self) -> f64 {
        match self {
            Self::Half => 0.5,
            Self::One => 1.0,
            Self::Tiny => f64::MIN_POSITIVE,
            Self::Zero => 0.0,
            Self::Negative => -0.5,
            Self::AboveOne => 1.5,
            Self::NaN => f64::NAN,
            Self::Infinite => f64::INFINITY,
            Self::Any(rate) => rate,
        }
    }
}

impl SignalSpec {
    pub(crate) fn pb(self) -> pb::flow::Signal {
        use pb::flow::Signal;
        match self {
            Self::Pause => Signal::Pause(pb::Pause {}),
            Self::Resume => Signal::Resume(pb::Resume {}),
            Self::PauseForMs(ms) => Signal::ResumeAfterMs(ms.apply(250)),
            Self::Throttle(rate) => Signal::Throttle(rate.value()),
        }
    }
}

/// Applies `edits` to `frame`, in order.
pub(crate) fn edit(frame: &mut pb::Frame, edits: &[Edit]) {
    for e in edits {
        apply(frame, e);
    }
}

fn apply(frame: &mut pb::Frame, edit: &Edit) {
    use pb::frame::Kind;
    let Some(kind) = &mut frame.kind else {
        return;
    };
    match (edit, kind) {
        (Edit::ClearKind, _) => frame.kind = None,
        (Edit::SessionId(spec), Kind::Hello(h)) => spec.apply(&mut h.session_id),
        (Edit::Nonce(spec), Kind::Hello(h)) => spec.apply(&mut h.nonce),
        (Edit::Nonce(spec), Kind::Challenge(c)) => spec.apply(&mut c.nonce),
        (Edit::Proof(spec), Kind::Challenge(c)) => spec.apply(&mut c.proof),
        (Edit::Proof(spec), Kind::Proof(p)) => spec.apply(&mut p.proof),
        (Edit::DropFrom, Kind::Hello(pb::Hello { from, .. }))
        | (Edit::DropFrom, Kind::Challenge(pb::Challenge { from, .. })) => *from = None,
        (Edit::FromName(spec), Kind::Hello(pb::Hello { from: Some(id), .. }))
        | (Edit::FromName(spec), Kind::Challenge(pb::Challenge { from: Some(id), .. })) => {
            spec.apply(&mut id.name)
        }
        (Edit::FromIncarnation(spec), Kind::Hello(pb::Hello { from: Some(id), .. }))
        | (Edit::FromIncarnation(spec), Kind::Challenge(pb::Challenge { from: Some(id), .. })) => {
            spec.apply(&mut id.incarnation)
        }
        (Edit::Target(spec), Kind::Hello(h)) => spec.apply(&mut h.target),
        (Edit::Protocol(spec), Kind::Hello(h)) => spec.apply(&mut h.protocol),
        (Edit::Protocol(spec), Kind::Refuse(r)) => spec.apply(&mut r.protocol),
        (Edit::Version(spec), Kind::Hello(h)) => {
            h.protocol_version = spec.apply_u32(h.protocol_version)
        }
        (Edit::MaxMessageBytes(spec), Kind::Hello(h)) => {
            h.max_message_bytes = spec.apply(h.max_message_bytes)
        }
        (Edit::MaxMessageBytes(spec), Kind::Challenge(c)) => {
            c.max_message_bytes = spec.apply(c.max_message_bytes)
        }
        (Edit::CreditWindow(spec), Kind::Hello(h)) => h.credit_window = spec.apply(h.credit_window),
        (Edit::CreditWindow(spec), Kind::Challenge(c)) => {
            c.credit_window = spec.apply(c.credit_window)
        }
        (Edit::BindTls(bind), Kind::Hello(h)) => h.bind_tls_certificate = *bind,
        (Edit::DropResume, Kind::Hello(h)) => h.resume = None,
        (Edit::ResumeLastReceived(spec), Kind::Hello(h)) => {
            let resume = h.resume.get_or_insert_with(|| pb::ResumeRequest {
                last_received: 0,
                acceptor_incarnation: Bytes::from(vec![2; 16]),
            });
            resume.last_received = spec.apply(resume.last_received);
        }
        (
            Edit::ResumeIncarnation(spec),
            Kind::Hello(pb::Hello {
                resume: Some(r), ..
            }),
        ) => spec.apply(&mut r.acceptor_incarnation),
        (Edit::Ack(spec), Kind::Batch(b)) => b.ack = spec.apply(b.ack),
        (Edit::Ack(spec), Kind::Ack(a)) => a.seq = spec.apply(a.seq),
        (Edit::Seq { index, value }, Kind::Batch(b)) => {
            if let Some(e) = envelope(b, *index) {
                e.seq = value.apply(e.seq);
            }
        }
        (Edit::CallId { index, value }, Kind::Batch(b)) => {
            if let Some(e) = envelope(b, *index) {
                e.call_id = value.apply(e.call_id);
            }
        }
        (Edit::ReplyTo { index, value }, Kind::Batch(b)) => {
            if let Some(e) = envelope(b, *index) {
                e.reply_to = value.apply(e.reply_to);
            }
        }
        (Edit::TimeoutMs { index, value }, Kind::Batch(b)) => {
            if let Some(e) = envelope(b, *index) {
                e.timeout_ms = value.apply(e.timeout_ms);
            }
        }
        (Edit::Fault { index, fault }, Kind::Batch(b)) => {
            if let Some(e) = envelope(b, *index) {
                e.fault = fault.then(|| pb::Fault {
                    code: "handler".into(),
                    message: "made up".into(),
                });
            }
        }
        (Edit::TypeUrl { index, text }, Kind::Batch(b)) => {
            if let Some(e) = envelope(b, *index) {
                text.apply(&mut e.type_url);
            }
        }
        (Edit::Payload { index, len }, Kind::Batch(b)) => {
            if let Some(e) = envelope(b, *index) {
                e.payload = Bytes::from(vec![0xA5; usize::from(*len)]);
            }
        }
        (Edit::RemoveEnvelope(index), Kind::Batch(b)) if !b.envelopes.is_empty() => {
            let at = usize::from(*index) % b.envelopes.len();
            b.envelopes.remove(at);
        }
        (Edit::DuplicateEnvelope(index), Kind::Batch(b)) => {
            if let Some(e) = envelope(b, *index).cloned() {
                b.envelopes.push(e);
            }
        }
        (Edit::SwapEnvelopes(index), Kind::Batch(b)) if b.envelopes.len() >= 2 => {
            let at = usize::from(*index) % (b.envelopes.len() - 1);
            b.envelopes.swap(at, at + 1);
        }
        (Edit::WelcomeResumed(spec), Kind::Welcome(w)) => {
            w.resumed = spec.map(|spec| pb::ResumePoint {
                last_received: spec.apply(w.resumed.as_ref().map_or(0, |r| r.last_received)),
            });
        }
        (Edit::RefuseReason(reason), Kind::Refuse(r)) => r.reason = *reason,
        (Edit::GoodbyeReason(reason), Kind::Goodbye(g)) => g.reason = *reason,
        (Edit::LastSeq(spec), Kind::Goodbye(g)) => g.last_seq = spec.apply(g.last_seq),
        (Edit::Credit(spec), Kind::Flow(f)) => f.credit = spec.apply(f.credit),
        (Edit::Signal(signal), Kind::Flow(f)) => f.signal = signal.map(SignalSpec::pb),
        (Edit::NextSeq(spec), Kind::FlowQuery(q)) => q.next_seq = spec.apply(q.next_seq),
        _ => {}
    }
}

fn envelope(batch: &mut pb::Batch, index: u8) -> Option<&mut pb::Envelope> {
    let len = batch.envelopes.len();
    (len > 0).then(|| &mut batch.envelopes[usize::from(index) % len])
}

/// Applies `mutations` to `bytes`, in order; `context` makes up appended frames.
pub(crate) fn mutate(bytes: &mut Vec<u8>, mutations: &[ByteMutation], context: &Context) {
    for m in mutations {
        let at = |at: u16, len: usize| usize::from(at) % len.max(1);
        match m {
            ByteMutation::FlipBit { at: i, bit } => {
                if !bytes.is_empty() {
                    let i = at(*i, bytes.len());
                    bytes[i] ^= 1 << (bit % 8);
                }
            }
            ByteMutation::Set { at: i, value } => {
                if !bytes.is_empty() {
                    let i = at(*i, bytes.len());
                    bytes[i] = *value;
                }
            }
            ByteMutation::Insert { at: i, bytes: more } => {
                let i = at(*i, bytes.len() + 1);
                bytes.splice(i..i, more.iter().copied());
            }
            ByteMutation::Remove { at: i, len } => {
                if !bytes.is_empty() {
                    let i = at(*i, bytes.len());
                    let end = (i + usize::from(*len) + 1).min(bytes.len());
                    bytes.drain(i..end);
                }
            }
            ByteMutation::Truncate { at: i } => {
                let i = at(*i, bytes.len());
                bytes.truncate(i);
            }
            ByteMutation::Repeat { at: i, len } => {
                if !bytes.is_empty() {
                    let i = at(*i, bytes.len());
                    let end = (i + usize::from(*len) + 1).min(bytes.len());
                    let slice = bytes[i..end].to_vec();
                    bytes.splice(end..end, slice);
                }
            }
            ByteMutation::LongVarint { at: i } => {
                let i = at(*i, bytes.len() + 1);
                bytes.splice(i..i, [0xFF; 10]);
            }
            ByteMutation::UnknownField {
                number,
                wire_type,
                value,
            } => {
                // Field numbers 11 and up: the frame's reserved ones, and beyond.
                let number = 11 + u64::from(*number % 32);
                let wire_type = u64::from(*wire_type % 6);
                prost::encoding::encode_varint(number << 3 | wire_type, bytes);
                match wire_type {
                    0 => prost::encoding::encode_varint(value.len() as u64, bytes),
                    2 => {
                        prost::encoding::encode_varint(value.len() as u64, bytes);
                        bytes.extend_from_slice(value);
                    }
                    // Fixed-width (1, 5) or groups (3, 4): whatever follows.
                    _ => bytes.extend_from_slice(value),
                }
            }
            ByteMutation::Append(frame) => {
                let more = prost::Message::encode_to_vec(&frame.build(context));
                bytes.extend_from_slice(&more);
            }
        }
    }
}
