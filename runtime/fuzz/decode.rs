//! The decoder's inputs: bytes into prost, then [`Frame::try_from`], as the driver reads
//! a frame. A refusal is a [`FrameError`], counted by its kind; a frame that parses must
//! come back the same through `pb::Frame::from`, its encoding and the decoder again.

use prost::Message;

use super::check::{Tally, Violation, frame_error};
use crate::wire::{Frame, FrameError, pb};

/// `bytes` as a frame from the wire.
pub(crate) fn bytes(bytes: &[u8], tally: &mut Tally) -> Result<(), Violation> {
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

/// A parsed frame is written and read back unchanged.
fn round_trip(frame: Frame) -> Result<(), Violation> {
    let encoded = pb::Frame::from(frame.clone()).encode_to_vec();
    let again = pb::Frame::decode(encoded.as_slice())
        .map_err(|e| FrameError::Undecodable(e.to_string()))
        .and_then(Frame::try_from);
    if again.as_ref() == Ok(&frame) {
        Ok(())
    } else {
        Err(format!(
            "a parsed frame does not survive encoding: {frame:?} came back as {again:?}"
        ))
    }
}
