//! [`OutboundFrames`]: the outgoing half of one stream of a session, as the `Stream`
//! tonic's encoder pulls. Each poll takes the next frame the core has ready, so
//! everything queued since the last write leaves as one batch. Each outgoing half waits
//! in a waker slot of its own, so a stalled one never holds up the current one; one of an
//! older epoch ends, telling its peer it was superseded.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tonic::Status;

use crate::driver::transport::WireFrame;
use crate::handles::state::{Shared, StreamKey, Transmit};

/// The outgoing half of one stream of a session, as the `Stream` tonic writes from.
#[derive(Debug)]
pub(crate) struct OutboundFrames {
    shared: Arc<Shared>,
    /// This half's waker slot.
    key: StreamKey,
    /// Set once this stream may write; a later epoch supersedes it.
    epoch: Arc<OnceLock<u64>>,
    ended: bool,
}

/// The outgoing half of a stream the driver has yet to attach: what the driver needs to
/// let it write ([`Shared::open_epoch`]).
#[derive(Debug)]
pub(crate) struct PendingStream {
    pub(crate) epoch: Arc<OnceLock<u64>>,
    pub(crate) key: StreamKey,
}

impl OutboundFrames {
    /// The outgoing half of the session's current stream.
    pub(crate) fn current(shared: Arc<Shared>) -> Self {
        let key = shared.new_stream_key();
        let epoch = shared.new_epoch(key);
        Self {
            shared,
            key,
            epoch: Arc::new(OnceLock::from(epoch)),
            ended: false,
        }
    }

    /// The outgoing half of a stream the driver has yet to attach.
    pub(crate) fn pending(shared: Arc<Shared>) -> (Self, PendingStream) {
        let epoch = Arc::new(OnceLock::new());
        let key = shared.new_stream_key();
        let pending = PendingStream {
            epoch: epoch.clone(),
            key,
        };
        let outbound = Self {
            shared,
            key,
            epoch,
            ended: false,
        };
        (outbound, pending)
    }

    /// The frames alone, ending where a superseded stream would say so: what a request
    /// stream (the initiator's half) carries.
    pub(crate) fn requests(self) -> impl Stream<Item = WireFrame> + Send + 'static {
        self.take_while(|item| std::future::ready(item.is_ok()))
            .filter_map(|item| std::future::ready(item.ok()))
    }
}

impl Stream for OutboundFrames {
    type Item = Result<WireFrame, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<WireFrame, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let transmit = std::task::ready!(self.shared.poll_transmit(&self.epoch, self.key, cx));
        Poll::Ready(match transmit {
            Transmit::Frame(frame) => Some(Ok(frame.into())),
            Transmit::Superseded => {
                self.ended = true;
                Some(Err(Status::aborted(
                    "superseded: the session continues on a newer stream",
                )))
            }
            Transmit::Done => {
                self.ended = true;
                None
            }
        })
    }
}

impl Drop for OutboundFrames {
    fn drop(&mut self) {
        self.shared.forget_stream(self.key);
    }
}
