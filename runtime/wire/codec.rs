//! The gRPC codec of the session protocol: prost's, with small initial buffers.
//!
//! tonic gives every stream an 8 KiB encode and an 8 KiB decode buffer up front; with ten
//! thousand idle sessions that is most of their memory. The buffers grow on demand (a
//! full batch is at most 64 KiB), so starting small costs a busy session one growth and
//! saves an idle one 14 KiB.

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::wire::pb;

/// Initial encode and decode buffer of a stream.
const INITIAL_BUFFER: usize = 1024;
/// How much the encoder gathers before it yields a chunk to the transport (tonic's own).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Encodes and decodes [`pb::Frame`]s (the codec the generated service and client use).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FrameCodec;

impl Codec for FrameCodec {
    type Encode = pb::Frame;
    type Decode = pb::Frame;
    type Encoder = ProstEncoder<pb::Frame>;
    type Decoder = ProstDecoder<pb::Frame>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD))
    }
}
