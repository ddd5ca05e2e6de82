//! Frames as the driver encodes and decodes them, for `benches/session_core.rs`'s codec
//! groups: a batch of casts, the session codec's encoding into a reused buffer, and its
//! decoding from shared bytes. Frames stay opaque ([`WireFrame`]).

use bytes::Bytes;

use super::harness::cast;
use crate::wire::codec;
use crate::wire::{Batch, Envelope, Frame};

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
