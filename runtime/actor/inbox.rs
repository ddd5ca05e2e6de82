//! [`InboxReceiver`]: a session's messages and signals read as a typed stream, without an
//! actor of one's own; credit follows the reader.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::actor::mailbox::{
    Deliver, Inbound, InboundBatch, Lost, ReplyPort, SessionMsg, SessionSignal, Unconfirmed,
};
use crate::error::{CloseReason, DecodeError};
use crate::handles::remote_ref::{Protocol, RemoteRef};
use crate::wire::{Fault, Goodbye, GoodbyeReason};

/// What an [`InboxReceiver`] yields: the peer's messages, decoded, and the session's
/// signals, in the order the session delivered them.
#[derive(Debug)]
pub enum InboxEvent<R> {
    /// A one-way message from the peer.
    Message(R),
    /// A call from the peer: answer through `reply` (dropping it answers `no_reply`).
    Call {
        /// The request.
        request: R,
        /// The obligation to answer.
        reply: ReplyPort,
    },
    /// A message that is not an `R`: the peer speaks another protocol or sent bad
    /// bytes. It is consumed (the peer gets credit) and reported, never skipped silently.
    Undecodable {
        /// Its type URL.
        type_url: String,
        /// Why it does not decode.
        error: DecodeError,
    },
    /// A change in the life of the session (interrupted, resumed, lost, closed, ...).
    Signal(SessionSignal),
}

/// Why [`InboxReceiver::next_message`] has no message to give.
#[derive(Debug, thiserror::Error)]
pub enum NoMessage {
    /// The peer finished politely: it sends nothing more (this side may still send).
    #[error("the peer finished ({:?}: {})", .0.reason, .0.detail)]
    PeerFinished(Goodbye),
    /// The session is over.
    #[error("the session closed: {reason}")]
    Closed {
        /// Why.
        reason: CloseReason,
        /// What this side sent that the peer never confirmed.
        unconfirmed: Vec<Unconfirmed>,
    },
    /// The session was lost (what this side sent that the peer never confirmed is in it).
    #[error("the session was lost: {}", .0.reason)]
    Lost(Lost),
    /// The peer sent a message of another type, or bytes that do not decode. It is
    /// consumed; the session goes on, and the next call may return a message.
    #[error("the peer sent a {type_url} that does not decode: {error}")]
    Undecodable {
        /// Its type URL.
        type_url: String,
        /// Why it does not decode.
        error: DecodeError,
    },
    /// The peer sent a message of the protocol, but not the kind the reader asked for
    /// ([`InboxReceiver::next_as`]). It is consumed; the session goes on.
    #[error("the peer sent a message that is not a {expected}")]
    Unexpected {
        /// The Rust type the reader asked for.
        expected: &'static str,
    },
    /// The peer called, and a reader of messages takes no calls: the caller was answered
    /// with an `unexpected_call` fault. The session goes on.
    #[error("the peer called with a {type_url}; a reader of messages takes no calls")]
    Called {
        /// The request's type URL.
        type_url: String,
    },
}

/// The receiving half of a session opened with [`Connect::inbox`](crate::Connect::inbox):
/// the session's owner.
///
/// A client that only wants to hear what a remote actor sends (a chat member, a watcher
/// of a reconcile loop) does not need a forwarding actor. [`Connect::inbox`](crate::Connect::inbox) opens a
/// session whose deliveries go into an [`InboxReceiver`], and every message stays an
/// unconsumed [`Inbound`] until the application takes it with [`InboxReceiver::recv`]:
/// only then does the peer get credit for another. A reader that falls behind thus holds
/// its peer back through the session's credit window instead of buffering without bound:
/// what waits in the inbox is at most one window of messages (the receiving node's
/// `SessionConfig::credit_window`) plus the session's signals: a few per interruption,
/// and at most 64 unread `Flow` signals (the flow state stays readable through
/// [`crate::SessionRef::flow`]). Unread messages count against the node's inbound
/// budgets ([`crate::settings::BudgetConfig`]) like those waiting in an actor's mailbox.
///
/// ```no_run
/// # async fn run<ChatRoom: duologue::Protocol>(node: duologue::Node) -> Result<(), Box<dyn std::error::Error>> {
/// use duologue::mailbox::InboxEvent;
///
/// // `ChatRoom`: the room's `Protocol` (duologue-actors has one).
/// let (room, mut inbox) = node.connect::<ChatRoom>(("127.0.0.1:7000", "general")).inbox().await?;
/// while let Some(event) = inbox.recv().await {
///     match event {
///         InboxEvent::Message(message) => println!("{} bytes", prost::Message::encoded_len(&message)),
///         InboxEvent::Signal(signal) => println!("{signal:?}"),
///         _ => {}
///     }
/// }
/// # drop(room); Ok(()) }
/// ```
///
/// Dropping it ends the session with a farewell (`ActorStopped`, "the inbox receiver was
/// dropped"), as an owner actor that stops would: nobody is left to read.
pub struct InboxReceiver<P: Protocol> {
    rx: mpsc::UnboundedReceiver<Delivery>,
    /// The rest of the run of messages taken last, in order.
    run: std::collections::VecDeque<Inbound>,
    /// Messages and signals in the channel (a run counts each of its messages).
    queued: Arc<AtomicUsize>,
    remote: RemoteRef<P>,
    flow_waiting: Arc<AtomicUsize>,
}

/// What a session puts in an inbox's channel: one message or signal, or a run of
/// messages that arrived together (one channel operation for all of them).
enum Delivery {
    One(SessionMsg),
    Run(InboundBatch),
}

impl<P: Protocol> InboxReceiver<P> {
    /// The next event, waiting for one. Taking a message consumes it: that is what grants
    /// the peer credit for another.
    ///
    /// Returns `None` only once the node has dropped every session that delivered here
    /// (after the last one closed); a reader usually stops at
    /// [`SessionSignal::Closed`] or a final [`SessionSignal::Lost`].
    pub async fn recv(&mut self) -> Option<InboxEvent<P::Response>> {
        self.recv_raw().await.map(decode)
    }

    /// The peer's next message, waiting for one: for a reader that only wants messages.
    /// Signals that need nothing from a reader (interrupted, resumed, flow, held back,
    /// restarted) are passed over; everything else that is not a message comes back as
    /// a typed [`NoMessage`] saying why.
    ///
    /// # Errors
    /// [`NoMessage`]: the peer sends no more (it finished; the session closes once this
    /// side finishes too, which a further call then reports), the session closed or was
    /// lost, or the peer sent something that is not a message of the protocol.
    pub async fn next_message(&mut self) -> Result<P::Response, NoMessage> {
        loop {
            let Some(event) = self.recv().await else {
                return Err(NoMessage::Closed {
                    reason: self.remote.session().closed().await,
                    unconfirmed: Vec::new(),
                });
            };
            match event {
                InboxEvent::Message(message) => return Ok(message),
                InboxEvent::Call { request, reply } => {
                    let type_url = <P::Response as prost::Name>::type_url();
                    drop(request);
                    let _ = reply.fail(Fault {
                        code: "unexpected_call".into(),
                        message: "this side reads messages and takes no calls".into(),
                    });
                    return Err(NoMessage::Called { type_url });
                }
                InboxEvent::Undecodable { type_url, error } => {
                    return Err(NoMessage::Undecodable { type_url, error });
                }
                InboxEvent::Signal(signal) => match signal {
                    SessionSignal::PeerFinished(_, goodbye) => {
                        return Err(NoMessage::PeerFinished(goodbye));
                    }
                    SessionSignal::Closed {
                        reason,
                        unconfirmed,
                        ..
                    } => {
                        return Err(NoMessage::Closed {
                            reason,
                            unconfirmed,
                        });
                    }
                    SessionSignal::Lost(lost) => return Err(NoMessage::Lost(lost)),
                    other => tracing::debug!(signal = ?other, "inbox: passed over"),
                },
            }
        }
    }

    /// As [`InboxReceiver::next_message`], for a message of one kind: `V` is one variant
    /// of the protocol's response (with the `TryFrom` that [`crate::oneof!`] writes).
    ///
    /// # Errors
    /// As [`InboxReceiver::next_message`], and [`NoMessage::Unexpected`] for a message of
    /// another kind.
    pub async fn next_as<V: TryFrom<P::Response>>(&mut self) -> Result<V, NoMessage> {
        let message = self.next_message().await?;
        V::try_from(message).map_err(|_| NoMessage::Unexpected {
            expected: std::any::type_name::<V>(),
        })
    }

    /// The next event if one is waiting now.
    pub fn try_recv(&mut self) -> Option<InboxEvent<P::Response>> {
        if let Some(inbound) = self.run.pop_front() {
            return Some(decode(SessionMsg::Inbound(inbound)));
        }
        let delivery = self.rx.try_recv().ok()?;
        Some(decode(self.taken(delivery)))
    }

    /// The next delivery as the session made it, undecoded: the [`Inbound`] keeps the
    /// peer's credit until it is dropped, for readers that hold messages for a while.
    pub async fn recv_raw(&mut self) -> Option<SessionMsg> {
        if let Some(inbound) = self.run.pop_front() {
            return Some(SessionMsg::Inbound(inbound));
        }
        let delivery = self.rx.recv().await?;
        Some(self.taken(delivery))
    }

    /// The first of what the channel gave; the rest of a run waits in `run`.
    fn taken(&mut self, delivery: Delivery) -> SessionMsg {
        match delivery {
            Delivery::One(message) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                if let SessionMsg::Signal(SessionSignal::Flow(..)) = message {
                    self.flow_waiting.fetch_sub(1, Ordering::AcqRel);
                }
                message
            }
            Delivery::Run(batch) => {
                self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
                let mut run = batch.into_iter();
                let first = run.next().expect("a run is never empty");
                self.run.extend(run);
                SessionMsg::Inbound(first)
            }
        }
    }

    /// Deliveries waiting to be read: messages (each holding one credit) and signals.
    pub fn len(&self) -> usize {
        self.run.len() + self.queued.load(Ordering::Acquire)
    }

    /// Whether nothing waits to be read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The typed handle to the peer actor this inbox hears from.
    pub fn remote(&self) -> &RemoteRef<P> {
        &self.remote
    }
}

impl<P: Protocol> Drop for InboxReceiver<P> {
    fn drop(&mut self) {
        self.rx.close();
        self.remote
            .session()
            .end(GoodbyeReason::ActorStopped, DROPPED);
    }
}

impl<P: Protocol> Stream for InboxReceiver<P> {
    type Item = InboxEvent<P::Response>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(inbound) = this.run.pop_front() {
            return Poll::Ready(Some(decode(SessionMsg::Inbound(inbound))));
        }
        this.rx
            .poll_recv(cx)
            .map(|next| next.map(|delivery| decode(this.taken(delivery))))
    }
}

impl<P: Protocol> fmt::Debug for InboxReceiver<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxReceiver")
            .field("session", &self.remote.session().id())
            .field("waiting", &self.len())
            .finish()
    }
}

const DROPPED: &str = "the inbox receiver was dropped";

fn decode<R: prost::Message + prost::Name + Default + 'static>(
    delivery: SessionMsg,
) -> InboxEvent<R> {
    match delivery {
        SessionMsg::Signal(signal) => InboxEvent::Signal(signal),
        SessionMsg::Inbound(mut inbound) => match inbound.decode::<R>() {
            Ok(request) => match inbound.take_reply() {
                Some(reply) => InboxEvent::Call { request, reply },
                None => InboxEvent::Message(request),
            },
            Err(error) => InboxEvent::Undecodable {
                type_url: inbound.type_url().to_owned(),
                error,
            },
        },
    }
}

/// Unread `Flow` signals an inbox keeps; past them, further ones are not queued.
///
/// Messages are bounded by credit, and every other signal by the session's life (a few
/// per interruption), but a peer may send flow signals at will. The flow state they
/// announce stays readable at any time through [`crate::SessionRef::flow`], so a reader
/// this far behind loses no state by missing some of them.
const FLOW_SIGNALS_KEPT: usize = 64;

/// Where a session delivers for an inbox: the channel's sending half.
struct InboxSender {
    tx: mpsc::UnboundedSender<Delivery>,
    queued: Arc<AtomicUsize>,
    flow_waiting: Arc<AtomicUsize>,
}

impl InboxSender {
    fn send(&self, delivery: Delivery, count: usize) -> Result<(), ()> {
        self.queued.fetch_add(count, Ordering::AcqRel);
        self.tx.send(delivery).map_err(|_| {
            self.queued.fetch_sub(count, Ordering::AcqRel);
        })
    }
}

impl Deliver for InboxSender {
    fn inbound(&self, inbound: Inbound) -> Result<(), ()> {
        self.send(Delivery::One(SessionMsg::Inbound(inbound)), 1)
    }

    fn takes_batches(&self) -> bool {
        true
    }

    fn batch(&self, batch: InboundBatch) -> Result<(), ()> {
        let count = batch.len();
        self.send(Delivery::Run(batch), count)
    }

    fn signal(&self, signal: SessionSignal) -> Result<(), ()> {
        if let SessionSignal::Flow(..) = signal {
            if self.flow_waiting.load(Ordering::Acquire) >= FLOW_SIGNALS_KEPT {
                return Ok(());
            }
            self.flow_waiting.fetch_add(1, Ordering::AcqRel);
        }
        self.send(Delivery::One(SessionMsg::Signal(signal)), 1)
    }

    fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    fn cell(&self) -> Option<ractor::ActorCell> {
        None
    }

    fn gone_reason(&self) -> Option<String> {
        Some(DROPPED.into())
    }
}

/// An inbox before its session exists: [`new_inbox`] gives the owner to open the session
/// with and this, which becomes the [`InboxReceiver`] once the session's handle is known.
pub(crate) struct PendingInbox {
    rx: mpsc::UnboundedReceiver<Delivery>,
    queued: Arc<AtomicUsize>,
    flow_waiting: Arc<AtomicUsize>,
}

impl PendingInbox {
    /// The receiver of the session `remote`.
    pub(crate) fn receiver<P: Protocol>(self, remote: RemoteRef<P>) -> InboxReceiver<P> {
        InboxReceiver {
            rx: self.rx,
            run: std::collections::VecDeque::new(),
            queued: self.queued,
            remote,
            flow_waiting: self.flow_waiting,
        }
    }
}

/// A new inbox: the session owner that feeds it, and its receiving end.
pub(crate) fn new_inbox() -> (Arc<dyn Deliver>, PendingInbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let flow_waiting = Arc::new(AtomicUsize::new(0));
    let queued = Arc::new(AtomicUsize::new(0));
    let sender = InboxSender {
        tx,
        queued: queued.clone(),
        flow_waiting: flow_waiting.clone(),
    };
    let pending = PendingInbox {
        rx,
        queued,
        flow_waiting,
    };
    (Arc::new(sender), pending)
}
