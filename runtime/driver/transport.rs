//! The session protocol on gRPC: the `Converse` stubs build.rs writes ([`stubs`]) and
//! their codec, domain frames in and out through the wire's byte encoding
//! (`wire/codec.rs`), with small initial buffers.
//!
//! tonic gives every stream an 8 KiB encode and an 8 KiB decode buffer up front; with ten
//! thousand idle sessions that is most of their memory. The buffers grow on demand (a
//! full batch is at most 64 KiB), so starting small costs a busy session one growth and
//! saves an idle one 14 KiB.

use bytes::Buf;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::wire::codec::{decode, encode};
use crate::wire::{Frame, FrameError};

/// The `Duologue` service's client and server, written by build.rs.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod stubs {
    include!(concat!(env!("OUT_DIR"), "/duologue.v1.Duologue.rs"));
}

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
        let frame = decode(src.copy_to_bytes(src.remaining())).map_err(|e| {
            let mut status = Status::internal(format!("undecodable frame: {e}"));
            // The stream's reader tells the peer's fault from the network's by this type.
            status.set_source(std::sync::Arc::new(e));
            status
        })?;
        Ok(Some(WireFrame(frame)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
    }
}
