//! A frame's bytes on the session's stream: a batch written and read directly
//! ([`super::batch`], byte for byte prost's encoding without its intermediate structs),
//! every other frame through prost. Pure: the gRPC codec that carries these bytes is the
//! driver's (`driver/transport.rs`).

use prost::Message;

use super::{Frame, FrameError, batch, pb};

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

/// Parses one frame's bytes: `Err` when they are not a protobuf `Frame` at all,
/// otherwise the frame or why it breaks the protocol.
pub(crate) fn decode(bytes: bytes::Bytes) -> Result<Result<Frame, FrameError>, prost::DecodeError> {
    if let Some(parsed) = batch::decode(&bytes) {
        return Ok(parsed);
    }
    let frame = pb::Frame::decode(bytes)?;
    Ok(Frame::try_from(frame))
}
