//! A `Batch` frame straight between its wire bytes and the domain types.
//!
//! Batches are nearly every frame a busy session carries. Going through prost's structs
//! built a `pb::Envelope` per message and a `Vec` of them each way, then converted it:
//! most of a small message's copies and allocations. This module writes exactly the
//! bytes prost writes for the same batch (a test holds it to that), and reads the bytes
//! prost would read into the same envelopes, with the same checks
//! ([`Envelope::from_pb`]). Anything it does not expect (another frame kind, unknown or
//! repeated fields, anything malformed) it leaves to prost, so errors stay prost's.

use bytes::{BufMut, Bytes};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::{Batch, BodyKind, Envelope, Frame, FrameError, TypeUrl, pb};

/// `Frame.batch`'s field number.
const FRAME_BATCH: u32 = 6;
const BATCH_ACK: u32 = 1;
const BATCH_ENVELOPES: u32 = 2;
const ENVELOPE_SEQ: u32 = 1;
const ENVELOPE_TYPE_URL: u32 = 2;
const ENVELOPE_PAYLOAD: u32 = 3;
const ENVELOPE_CALL_ID: u32 = 4;
const ENVELOPE_REPLY_TO: u32 = 5;
const ENVELOPE_TIMEOUT_MS: u32 = 6;
const ENVELOPE_FAULT: u32 = 7;
const FAULT_CODE: u32 = 1;
const FAULT_MESSAGE: u32 = 2;

/// Writes `batch` as a `Frame`, byte for byte as prost writes the same frame.
pub(crate) fn encode(batch: &Batch, dst: &mut impl BufMut) {
    encode_key(FRAME_BATCH, WireType::LengthDelimited, dst);
    encode_varint(batch_len(batch) as u64, dst);
    if batch.ack != 0 {
        encode_key(BATCH_ACK, WireType::Varint, dst);
        encode_varint(batch.ack, dst);
    }
    let mut named = TypeUrl::empty();
    for envelope in &batch.envelopes {
        let fields = Fields::of(envelope, &mut named);
        encode_key(BATCH_ENVELOPES, WireType::LengthDelimited, dst);
        encode_varint(fields.len() as u64, dst);
        fields.encode(dst);
    }
}

/// The length of the `Batch` message inside the frame.
fn batch_len(batch: &Batch) -> usize {
    let ack = if batch.ack != 0 {
        key_len(BATCH_ACK) + encoded_len_varint(batch.ack)
    } else {
        0
    };
    let mut named = TypeUrl::empty();
    let envelopes: usize = batch
        .envelopes
        .iter()
        .map(|envelope| {
            let len = Fields::of(envelope, &mut named).len();
            key_len(BATCH_ENVELOPES) + encoded_len_varint(len as u64) + len
        })
        .sum();
    ack + envelopes
}

/// One envelope's fields as they go on the wire.
struct Fields<'a> {
    seq: u64,
    /// Empty when the batch named the type already (or the envelope is a fault).
    type_url: &'a str,
    payload: &'a Bytes,
    call_id: u64,
    reply_to: u64,
    timeout_ms: u64,
    fault: Option<(&'a str, &'a str)>,
}

impl<'a> Fields<'a> {
    /// The fields of `envelope`, naming its type only when it differs from `named`, the
    /// type the batch named last (as [`Envelope::into_pb`] does).
    fn of(envelope: &'a Envelope, named: &mut TypeUrl) -> Self {
        let body = &envelope.body;
        let (call_id, timeout_ms, reply_to, fault) = match &body.kind {
            BodyKind::Cast => (0, 0, 0, None),
            BodyKind::Call { id, timeout_ms } => (*id, *timeout_ms, 0, None),
            BodyKind::Reply { to, fault } => (
                0,
                0,
                *to,
                fault
                    .as_ref()
                    .map(|f| (f.code.as_str(), f.message.as_str())),
            ),
        };
        let type_url = if fault.is_some() || body.type_url == *named {
            ""
        } else {
            *named = body.type_url.clone();
            body.type_url.as_str()
        };
        Self {
            seq: envelope.seq,
            type_url,
            payload: &body.payload,
            call_id,
            reply_to,
            timeout_ms,
            fault,
        }
    }

    fn len(&self) -> usize {
        uint64_len(ENVELOPE_SEQ, self.seq)
            + bytes_len(ENVELOPE_TYPE_URL, self.type_url.len())
            + bytes_len(ENVELOPE_PAYLOAD, self.payload.len())
            + uint64_len(ENVELOPE_CALL_ID, self.call_id)
            + uint64_len(ENVELOPE_REPLY_TO, self.reply_to)
            + uint64_len(ENVELOPE_TIMEOUT_MS, self.timeout_ms)
            + self.fault.map_or(0, |(code, message)| {
                let len = fault_len(code, message);
                key_len(ENVELOPE_FAULT) + encoded_len_varint(len as u64) + len
            })
    }

    /// Writes the fields in field-number order, skipping defaults, as prost does.
    fn encode(&self, dst: &mut impl BufMut) {
        encode_uint64(ENVELOPE_SEQ, self.seq, dst);
        encode_bytes(ENVELOPE_TYPE_URL, self.type_url.as_bytes(), dst);
        encode_bytes(ENVELOPE_PAYLOAD, self.payload, dst);
        encode_uint64(ENVELOPE_CALL_ID, self.call_id, dst);
        encode_uint64(ENVELOPE_REPLY_TO, self.reply_to, dst);
        encode_uint64(ENVELOPE_TIMEOUT_MS, self.timeout_ms, dst);
        if let Some((code, message)) = self.fault {
            encode_key(ENVELOPE_FAULT, WireType::LengthDelimited, dst);
            encode_varint(fault_len(code, message) as u64, dst);
            encode_bytes(FAULT_CODE, code.as_bytes(), dst);
            encode_bytes(FAULT_MESSAGE, message.as_bytes(), dst);
        }
    }
}

fn fault_len(code: &str, message: &str) -> usize {
    bytes_len(FAULT_CODE, code.len()) + bytes_len(FAULT_MESSAGE, message.len())
}

fn uint64_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn bytes_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }
}

fn encode_uint64(tag: u32, value: u64, dst: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, dst);
        encode_varint(value, dst);
    }
}

fn encode_bytes(tag: u32, value: &[u8], dst: &mut impl BufMut) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, dst);
        encode_varint(value.len() as u64, dst);
        dst.put_slice(value);
    }
}

/// Reads `frame` as a lone `Batch`: `None` when it is anything else, or anything this
/// reader does not expect, for prost to read instead; otherwise the batch, or the
/// [`FrameError`] prost's path would have given for its envelopes.
pub(crate) fn decode(frame: &Bytes) -> Option<Result<Frame, FrameError>> {
    let mut input = Reader::new(frame);
    let (tag, wire_type) = input.key()?;
    if tag != FRAME_BATCH || wire_type != WireType::LengthDelimited {
        return None;
    }
    let mut batch = input.nested()?;
    // A frame that is more than its one batch field is left to prost.
    if !input.is_done() {
        return None;
    }
    let mut ack = 0;
    let mut envelopes = Vec::new();
    let mut named = TypeUrl::empty();
    // The first envelope that breaks the protocol, as `Frame::try_from` finds it. The
    // rest is still read: prost decodes the whole frame before any check, so bytes
    // that do not decode further on are prost's error, not this one.
    let mut refused = None;
    while !batch.is_done() {
        match batch.key()? {
            (BATCH_ACK, WireType::Varint) => ack = batch.varint()?,
            (BATCH_ENVELOPES, WireType::LengthDelimited) => {
                let envelope = batch.nested()?.envelope()?;
                if refused.is_none() {
                    match Envelope::from_pb(envelope, &mut named) {
                        Ok(envelope) => envelopes.push(envelope),
                        Err(error) => refused = Some(error),
                    }
                }
            }
            _ => return None,
        }
    }
    Some(match refused {
        Some(error) => Err(error),
        None => Ok(Frame::Batch(Batch { ack, envelopes })),
    })
}

/// A cursor over part of a frame's bytes; every read fails (`None`) rather than read
/// past its end or accept what prost would not.
struct Reader<'a> {
    frame: &'a Bytes,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(frame: &'a Bytes) -> Self {
        Self {
            frame,
            rest: frame.as_ref(),
        }
    }

    fn is_done(&self) -> bool {
        self.rest.is_empty()
    }

    fn varint(&mut self) -> Option<u64> {
        prost::encoding::decode_varint(&mut self.rest).ok()
    }

    fn key(&mut self) -> Option<(u32, WireType)> {
        let key = self.varint()?;
        let wire_type = WireType::try_from(key & 0x7).ok()?;
        let tag = u32::try_from(key >> 3).ok().filter(|tag| *tag > 0)?;
        Some((tag, wire_type))
    }

    /// The next length-delimited field's bytes.
    fn delimited(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.rest.len() {
            return None;
        }
        let (field, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(field)
    }

    /// The next length-delimited field, as a reader of its own.
    fn nested(&mut self) -> Option<Self> {
        let rest = self.delimited()?;
        Some(Reader {
            frame: self.frame,
            rest,
        })
    }

    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.delimited()?).ok()
    }

    /// The envelope's fields, as prost's struct (whose checks [`Envelope::from_pb`]
    /// makes). The type URL is allocated only when the envelope names one (the first of
    /// a run), and the payload shares the frame's buffer.
    fn envelope(mut self) -> Option<pb::Envelope> {
        let mut envelope = pb::Envelope::default();
        while !self.is_done() {
            match self.key()? {
                (ENVELOPE_SEQ, WireType::Varint) => envelope.seq = self.varint()?,
                (ENVELOPE_TYPE_URL, WireType::LengthDelimited) => {
                    envelope.type_url = self.string()?.to_owned();
                }
                (ENVELOPE_PAYLOAD, WireType::LengthDelimited) => {
                    envelope.payload = self.frame.slice_ref(self.delimited()?);
                }
                (ENVELOPE_CALL_ID, WireType::Varint) => envelope.call_id = self.varint()?,
                (ENVELOPE_REPLY_TO, WireType::Varint) => envelope.reply_to = self.varint()?,
                (ENVELOPE_TIMEOUT_MS, WireType::Varint) => envelope.timeout_ms = self.varint()?,
                // A second fault would merge into the first: prost's business.
                (ENVELOPE_FAULT, WireType::LengthDelimited) if envelope.fault.is_none() => {
                    envelope.fault = Some(self.nested()?.fault()?);
                }
                _ => return None,
            }
        }
        Some(envelope)
    }

    fn fault(mut self) -> Option<pb::Fault> {
        let mut fault = pb::Fault::default();
        while !self.is_done() {
            match self.key()? {
                (FAULT_CODE, WireType::LengthDelimited) => fault.code = self.string()?.to_owned(),
                (FAULT_MESSAGE, WireType::LengthDelimited) => {
                    fault.message = self.string()?.to_owned();
                }
                _ => return None,
            }
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::wire::{Body, Fault};

    fn body_kind() -> impl Strategy<Value = BodyKind> {
        prop_oneof![
            Just(BodyKind::Cast),
            (1..u64::MAX, any::<u64>())
                .prop_map(|(id, timeout_ms)| BodyKind::Call { id, timeout_ms }),
            (
                1..u64::MAX,
                proptest::option::of(("[a-z_]{0,8}", "\\PC{0,12}"))
            )
                .prop_map(|(to, fault)| BodyKind::Reply {
                    to,
                    fault: fault.map(|(code, message)| Box::new(Fault { code, message })),
                }),
        ]
    }

    fn batch() -> impl Strategy<Value = Batch> {
        let envelope = (
            body_kind(),
            // Every message but a fault names its type (an unnamed one would inherit the
            // run's, on either path).
            prop::sample::select(vec!["t.a/A", "t.a/B", "type.googleapis.com/x.Long"]),
            proptest::collection::vec(any::<u8>(), 0..40),
        );
        (
            any::<u64>(),
            1..u64::MAX / 2,
            proptest::collection::vec(envelope, 0..40),
        )
            .prop_map(|(ack, first, envelopes)| Batch {
                ack,
                envelopes: envelopes
                    .into_iter()
                    .zip(first..)
                    .map(|((kind, type_url, payload), seq)| Envelope {
                        seq,
                        body: Body {
                            type_url: if kind.is_fault() {
                                TypeUrl::empty()
                            } else {
                                TypeUrl::new(type_url)
                            },
                            kind,
                            payload: Bytes::from(payload),
                        },
                    })
                    .collect(),
            })
    }

    /// prost's path: what the codec must agree with.
    fn by_prost(bytes: &[u8]) -> Result<Result<Frame, FrameError>, String> {
        pb::Frame::decode(bytes)
            .map(Frame::try_from)
            .map_err(|e| e.to_string())
    }

    /// The codec's path.
    fn by_codec(bytes: &[u8]) -> Result<Result<Frame, FrameError>, String> {
        crate::wire::codec::decode(Bytes::copy_from_slice(bytes)).map_err(|e| e.to_string())
    }

    proptest! {
        #[test]
        fn a_batch_is_written_as_prost_writes_it_and_read_back(batch in batch()) {
            let frame = Frame::Batch(batch);
            let mut direct = Vec::new();
            encode(match &frame { Frame::Batch(b) => b, _ => unreachable!() }, &mut direct);
            prop_assert_eq!(&direct, &pb::Frame::from(frame.clone()).encode_to_vec());
            prop_assert_eq!(decode(&Bytes::from(direct)), Some(Ok(frame)));
        }

        #[test]
        fn damaged_batches_read_as_prost_reads_them(
            batch in batch(),
            cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            truncate in any::<Option<prop::sample::Index>>(),
        ) {
            let mut bytes = pb::Frame::from(Frame::Batch(batch)).encode_to_vec();
            for (at, value) in cuts {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
            if let Some(at) = truncate {
                bytes.truncate(at.index(bytes.len() + 1));
            }
            prop_assert_eq!(by_codec(&bytes), by_prost(&bytes));
        }
    }

    #[test]
    fn other_frames_and_extra_fields_are_left_to_prost() {
        // An ack frame, and a batch followed by a second frame field: prost merges.
        let ack = pb::Frame::from(Frame::Ack(9)).encode_to_vec();
        assert_eq!(decode(&Bytes::from(ack.clone())), None);
        let batch = Frame::Batch(Batch {
            ack: 1,
            envelopes: Vec::new(),
        });
        let mut both = pb::Frame::from(batch).encode_to_vec();
        both.extend_from_slice(&ack);
        assert_eq!(decode(&Bytes::from(both.clone())), None);
        assert_eq!(by_codec(&both), by_prost(&both));
        assert_eq!(by_codec(&both), Ok(Ok(Frame::Ack(9))));
    }

    #[test]
    fn bytes_that_do_not_decode_after_a_refused_envelope_are_prost_s_error() {
        let envelope = |seq| Envelope {
            seq,
            body: Body {
                kind: BodyKind::Cast,
                type_url: TypeUrl::new("t"),
                payload: Bytes::new(),
            },
        };
        let mut bytes = Vec::new();
        encode(
            &Batch {
                ack: 0,
                envelopes: vec![envelope(0), envelope(1)],
            },
            &mut bytes,
        );
        // The last envelope's length now claims more bytes than the frame has.
        let last_len = bytes.len() - 3;
        bytes[last_len] = 0x7f;
        let prost = by_prost(&bytes);
        assert!(prost.is_err(), "{prost:?}");
        assert_eq!(by_codec(&bytes), prost);
    }

    #[test]
    fn an_envelope_with_sequence_zero_is_refused_as_prost_s_path_refuses_it() {
        let mut bytes = Vec::new();
        encode(
            &Batch {
                ack: 0,
                envelopes: vec![Envelope {
                    seq: 0,
                    body: Body {
                        kind: BodyKind::Cast,
                        type_url: TypeUrl::new("t"),
                        payload: Bytes::new(),
                    },
                }],
            },
            &mut bytes,
        );
        let parsed = decode(&Bytes::from(bytes.clone()));
        assert!(
            matches!(parsed, Some(Err(FrameError::BadEnvelope { seq: 0, .. }))),
            "{parsed:?}"
        );
        assert_eq!(by_codec(&bytes), by_prost(&bytes));
    }
}
