//! The gRPC codec of the session protocol: domain frames in and out, batches through
//! [`super::batch`] and every other frame through prost, with small initial buffers.
//!
//! tonic gives every stream an 8 KiB encode and an 8 KiB decode buffer up front; with ten
//! thousand idle sessions that is most of their memory. The buffers grow on demand (a
//! full batch is at most 64 KiB), so starting small costs a busy session one growth and
//! saves an idle one 14 KiB.

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::{Frame, FrameError, batch, pb};

/// Initial encode and decode buffer of a stream.
const INITIAL_BUFFER: usize = 1024;
/// How much the encoder gathers before it yields a chunk to the transport (tonic's own).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// One frame as the session's gRPC stream carries it: a frame to send, or one received,
/// parsed (a frame that decodes as protobuf but breaks the protocol is kept as its
/// [`FrameError`], for the session to answer).
#[derive(Debug)]
pub(crate) struct WireFrame(pub(crate) Result<Frame, FrameError>);

impl From<Frame> for WireFrame {
    fn from(frame: Frame) -> Self {
        Self(Ok(frame))
    }
}

/// Encodes and decodes [`WireFrame`]s (the codec of the `Converse` stubs build.rs writes).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FrameCodec;

impl Codec for FrameCodec {
    type Encode = WireFrame;
    type Decode = WireFrame;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self::Encoder {
        Self
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self
    }
}

impl Encoder for FrameCodec {
    type Item = WireFrame;
    type Error = Status;

    fn encode(&mut self, item: WireFrame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item.0 {
            Ok(frame) => {
                encode(frame, dst).map_err(|e| Status::internal(format!("encoding a frame: {e}")))
            }
            Err(error) => Err(Status::internal(format!(
                "a frame that did not parse is never sent: {error}"
            ))),
        }
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
    }
}

impl Decoder for FrameCodec {
    type Item = WireFrame;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<WireFrame>, Status> {
        Ok(Some(WireFrame(decode(src.copy_to_bytes(src.remaining()))?)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
    }
}

/// Writes one frame's bytes: a batch directly, any other frame through prost.
///
/// # Errors
/// Only when `dst` has no room left (a growable buffer always has).
pub(crate) fn encode(frame: Frame, dst: &mut impl bytes::BufMut) -> Result<(), prost::EncodeError> {
    match frame {
        Frame::Batch(frame) => {
            batch::encode(&frame, dst);
            Ok(())
        }
        frame => pb::Frame::from(frame).encode(dst),
    }
}

/// Parses one frame's bytes: `Err` when they are not a protobuf `Frame` at all (as
/// tonic's prost codec reports it: `Internal`, "failed to decode ..."), otherwise the
/// frame or why it breaks the protocol.
pub(crate) fn decode(bytes: bytes::Bytes) -> Result<Result<Frame, FrameError>, Status> {
    if let Some(parsed) = batch::decode(&bytes) {
        return Ok(parsed);
    }
    let frame = pb::Frame::decode(bytes).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Frame::try_from(frame))
}
