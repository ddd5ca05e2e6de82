//! The decoder's inputs: bytes into the session codec ([`codec::decode`]), as the driver
//! reads a frame, which must agree exactly with prost then [`Frame::try_from`]. A refusal
//! is a [`FrameError`], counted by its kind; a frame that parses must come back the same
//! through the codec's encoding, byte for byte prost's, and the decoder again.

use bytes::Bytes;
use prost::Message;

use super::check::{Tally, Violation, frame_error};
use crate::wire::codec;
use crate::wire::{Frame, FrameError, pb};

/// `bytes` as a frame from the wire.
pub(crate) fn bytes(bytes: &[u8], tally: &mut Tally) -> Result<(), Violation> {
    let by_codec = codec::decode(Bytes::copy_from_slice(bytes)).map_err(|e| e.to_string());
    let by_prost = pb::Frame::decode(bytes)
        .map(Frame::try_from)
        .map_err(|e| e.to_string());
    if by_codec != by_prost {
        return Err(format!(
            "the session codec and prost disagree on {bytes:?}: {by_codec:?}, {by_prost:?}"
        ));
    }
    match pb::Frame::decode(bytes) {
        Ok(frame) => structured(frame, tally),
        Err(error) => {
            tally.refused(frame_error(&FrameError::Undecodable(error.to_string())));
            Ok(())
        }
    }
}

/// `frame`, as prost decoded it, through [`Frame::try_from`].
pub(crate) fn structured(frame: pb::Frame, tally: &mut Tally) -> Result<(), Violation> {
    match Frame::try_from(frame) {
        Ok(frame) => {
            tally.parsed += 1;
            round_trip(frame)
        }
        Err(error) => {
            tally.refused(frame_error(&error));
            Ok(())
        }
    }
}

/// A parsed frame is written (by the session codec, as prost writes it) and read back
/// unchanged.
fn round_trip(frame: Frame) -> Result<(), Violation> {
    let encoded = pb::Frame::from(frame.clone()).encode_to_vec();
    let mut direct = Vec::new();
    codec::encode(frame.clone(), &mut direct).map_err(|e| e.to_string())?;
    if direct != encoded {
        return Err(format!(
            "the session codec writes {frame:?} as {direct:?}, prost as {encoded:?}"
        ));
    }
    let again = codec::decode(Bytes::from(encoded))
        .map_err(|e| FrameError::Undecodable(e.to_string()))
        .and_then(|parsed| parsed);
    if again.as_ref() == Ok(&frame) {
        Ok(())
    } else {
        Err(format!(
            "a parsed frame does not survive encoding: {frame:?} came back as {again:?}"
        ))
    }
}
