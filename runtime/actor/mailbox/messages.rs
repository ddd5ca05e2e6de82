//! What a session hands its owner: one message ([`Inbound`], answered through its
//! [`ReplyPort`]), a run of them ([`InboundBatch`]), or a change of the session's state
//! ([`SessionSignal`] and what it carries).

use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use prost::{Message, Name};

use crate::error::{CloseReason, DecodeError, InterruptCause, LostReason, SendError};
use crate::handles::session_ref::{SessionRef, decode_payload};
use crate::signal::FlowSignal;
use crate::wire::{Fault, Goodbye, TypeUrl};

/// Two or more messages from one session that arrived together, handed to the owner as
/// one mailbox message: one mailbox operation for the run instead of one per message.
///
/// Only an owner that asked for batches gets them ([`crate::Owner::batched`]), whose
/// message type has `From<InboundBatch>` beside `From<Inbound>` and `From<SessionSignal>`,
/// as [`BatchedSessionMsg`](crate::mailbox::BatchedSessionMsg) has; a message
/// that arrives alone still comes as an [`Inbound`].
///
/// The messages are in the session's order, and each is what it would have been alone: a call in a batch is answered through its own [`Inbound::reply`], and
/// dropping a message is consuming it, as ever. A batch is delivered whole or not at all:
/// the session counts it delivered only once the owner's mailbox took it.
pub struct InboundBatch {
    /// Never empty; all from one session.
    messages: Vec<Inbound>,
}

impl InboundBatch {
    /// A batch of `messages`, which come from one session; `None` for none.
    pub(crate) fn new(messages: Vec<Inbound>) -> Option<Self> {
        (!messages.is_empty()).then_some(Self { messages })
    }

    /// The session the messages came from.
    pub fn session(&self) -> &SessionRef {
        &self.messages[0].session
    }

    /// How many messages the batch holds (at least one).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Always `false`: a batch holds at least one message.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The messages, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Inbound> {
        self.messages.iter()
    }

    /// The messages, in order, to take apart.
    pub fn into_vec(self) -> Vec<Inbound> {
        self.messages
    }
}

impl IntoIterator for InboundBatch {
    type Item = Inbound;
    type IntoIter = std::vec::IntoIter<Inbound>;

    fn into_iter(self) -> Self::IntoIter {
        self.messages.into_iter()
    }
}

impl<'a> IntoIterator for &'a InboundBatch {
    type Item = &'a Inbound;
    type IntoIter = std::slice::Iter<'a, Inbound>;

    fn into_iter(self) -> Self::IntoIter {
        self.messages.iter()
    }
}

impl fmt::Debug for InboundBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundBatch")
            .field("session", &self.session().id())
            .field("len", &self.messages.len())
            .finish()
    }
}

/// One message from a peer, delivered into the owner's mailbox.
pub struct Inbound {
    pub(crate) session: SessionRef,
    pub(crate) type_url: TypeUrl,
    pub(crate) payload: Bytes,
    pub(crate) reply: Option<ReplyPort>,
    /// Bytes charged to the inbound budgets until it is dropped.
    pub(crate) charge: usize,
}

impl Inbound {
    /// The session it came from; reply or send more on it.
    pub fn session(&self) -> &SessionRef {
        &self.session
    }

    /// The payload's type URL.
    pub fn type_url(&self) -> &str {
        self.type_url.as_str()
    }

    /// The encoded payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Whether the payload is an `M`.
    pub fn is<M: Name + 'static>(&self) -> bool {
        self.type_url == TypeUrl::of::<M>()
    }

    /// Decodes the payload as an `M`.
    ///
    /// # Errors
    /// [`DecodeError::WrongType`] when the type URL names another type,
    /// [`DecodeError::Invalid`] when the bytes do not decode.
    pub fn decode<M: Message + Name + Default + 'static>(&self) -> Result<M, DecodeError> {
        decode_payload(&self.type_url, &self.payload)
    }

    /// Whether the sender awaits a reply (the message is a call).
    pub fn is_call(&self) -> bool {
        self.reply.is_some()
    }

    /// The caller's deadline, translated to this process's clock, for a call that has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.reply.as_ref().and_then(ReplyPort::deadline)
    }

    /// Takes the obligation to reply, to answer later (or from another task).
    pub fn take_reply(&mut self) -> Option<ReplyPort> {
        self.reply.take()
    }

    /// Answers the call with `reply`.
    ///
    /// # Errors
    /// [`SendError::Closed`] when the session closed; `NotReady` when the message was
    /// not a call (there is no one to answer).
    pub fn reply<M: Message + Name + 'static>(mut self, reply: &M) -> Result<(), SendError<()>> {
        match self.reply.take() {
            Some(port) => port.send(reply),
            None => Err(SendError::NotReady(())),
        }
    }
}

/// Dropping a message is consuming it: that is what grants the peer credit to send more,
/// and gives its bytes back to the inbound budgets.
impl Drop for Inbound {
    fn drop(&mut self) {
        self.session.consumed_one(self.charge);
    }
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("session", &self.session.id())
            .field("type_url", &self.type_url)
            .field("len", &self.payload.len())
            .field("call", &self.reply.as_ref().map(|r| r.call_id))
            .finish()
    }
}

/// The obligation to answer one call. Dropping it unanswered answers the caller with a
/// `no_reply` fault, so a caller never waits for a reply that will not come.
pub struct ReplyPort {
    pub(crate) session: SessionRef,
    pub(crate) call_id: u64,
    pub(crate) deadline: Option<Instant>,
    pub(crate) answered: bool,
}

impl ReplyPort {
    /// The caller's deadline on this process's clock, if it set one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sends the reply. When the session cannot take it (too large, replay window or
    /// budget full), the caller is answered with a `reply_not_sent` fault saying why, so
    /// it does not wait.
    ///
    /// # Errors
    /// [`SendError`] when the session cannot take the reply (closed, too large, full).
    pub fn send<M: Message + Name + 'static>(mut self, reply: &M) -> Result<(), SendError<()>> {
        self.answered = true;
        let sent = self.session.send_reply(self.call_id, Ok(reply));
        if let Err(error) = &sent
            && !matches!(error, SendError::Closed { .. })
        {
            // The caller must not wait for a reply that cannot come: it gets a fault now.
            let fault = Fault {
                code: "reply_not_sent".into(),
                message: format!("the callee's reply could not be sent: {error}"),
            };
            let _ = self.session.send_reply::<()>(self.call_id, Err(fault));
        }
        sent
    }

    /// Answers with a fault instead of a reply.
    ///
    /// # Errors
    /// [`SendError::Closed`] when the session closed.
    pub fn fail(mut self, fault: Fault) -> Result<(), SendError<()>> {
        self.answered = true;
        self.session.send_reply::<()>(self.call_id, Err(fault))
    }
}

impl Drop for ReplyPort {
    fn drop(&mut self) {
        if !self.answered {
            let fault = Fault {
                code: "no_reply".into(),
                message: "the callee dropped the call without replying".into(),
            };
            // The session may be gone; then the caller learns it from the session.
            let _ = self.session.send_reply::<()>(self.call_id, Err(fault));
        }
    }
}

impl fmt::Debug for ReplyPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyPort")
            .field("session", &self.session.id())
            .field("call_id", &self.call_id)
            .finish()
    }
}

/// A change in the life of a session, delivered to its owner in order with its messages.
#[derive(Debug)]
pub enum SessionSignal {
    /// A peer opened a session to this actor (acceptor side).
    Opened(SessionRef),
    /// The peer finished politely: it sends nothing more, but still receives. Send any
    /// final messages, then [`SessionRef::finish`].
    PeerFinished(SessionRef, Goodbye),
    /// The stream broke; the session tries to resume (per its policy). Messages sent
    /// meanwhile wait in the replay buffer.
    Interrupted(SessionRef, InterruptCause),
    /// The session continues on a new stream, nothing lost or doubled.
    Resumed(SessionRef, Resumption),
    /// The peer sent a back-pressure signal; the runtime already obeys it (casts wait).
    Flow(SessionRef, FlowSignal),
    /// A send has waited for the peer (no credit, or paused) longer than the silence
    /// timeout twice over, and the peer, asked to restate its flow state, confirmed it:
    /// its actor is not consuming. Told once per wait; the session stays up and senders
    /// keep waiting. The owner decides: wait on, [`SessionRef::abort`], or route around.
    HeldBack(SessionRef, HeldBack),
    /// The session could not go on. Pending calls have failed; the messages the peer
    /// never confirmed come back here.
    Lost(Lost),
    /// Under the `Restart` policy: after a loss, a new session greeted the peer again.
    /// Typed handles ([`crate::RemoteRef`]) to the old session now use the new one.
    Restarted {
        /// The lost session.
        previous: SessionRef,
        /// The new one.
        session: SessionRef,
    },
    /// The session is over without a loss: finished politely, ended locally, refused, or
    /// broken by a protocol error. `unconfirmed` is usually empty.
    Closed {
        /// The session.
        session: SessionRef,
        /// Why.
        reason: CloseReason,
        /// Messages the peer never confirmed.
        unconfirmed: Vec<Unconfirmed>,
    },
}

impl SessionSignal {
    /// The session the signal is about.
    pub fn session(&self) -> &SessionRef {
        match self {
            Self::Opened(s)
            | Self::PeerFinished(s, _)
            | Self::Interrupted(s, _)
            | Self::Resumed(s, _)
            | Self::Flow(s, _)
            | Self::HeldBack(s, _)
            | Self::Lost(Lost { session: s, .. })
            | Self::Restarted { session: s, .. }
            | Self::Closed { session: s, .. } => s,
        }
    }
}

/// How a session resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resumption {
    /// Messages this side sent again because the peer had not received them.
    pub replayed: u64,
    /// How long the session was interrupted.
    pub interrupted_for: std::time::Duration,
}

/// How long and how a peer has held a sender back ([`SessionSignal::HeldBack`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeldBack {
    /// How long the first refused send has waited.
    pub waited: std::time::Duration,
    /// Messages the peer's credit still allows (0 when credit is what holds it back).
    pub credit_left: u64,
    /// The peer's signal in effect (a `Pause` when that is what holds it back).
    pub peer_signal: Option<FlowSignal>,
}

/// A lost session: why, and what the peer never confirmed.
///
/// Under the `Escalate` policy, dropping this (after handling it) stops the owner actor
/// with a reason naming the loss, so its ractor supervisor decides what happens next.
#[derive(Debug)]
pub struct Lost {
    /// The session.
    pub session: SessionRef,
    /// Why it was lost.
    pub reason: LostReason,
    /// Messages sent on it that the peer never confirmed, oldest first. Each may or may
    /// not have reached the peer's actor (it may have been delivered with its ack lost);
    /// none will be delivered after this signal.
    pub unconfirmed: Vec<Unconfirmed>,
    /// Never read: dropping it is what escalates.
    #[allow(dead_code)]
    pub(crate) escalation: Option<Escalation>,
}

/// A message a session sent that the peer never confirmed.
#[derive(Clone, Debug, PartialEq)]
pub struct Unconfirmed {
    /// Its sequence number on the session.
    pub seq: u64,
    /// Its payload's type URL.
    pub type_url: TypeUrl,
    /// Its encoded payload.
    pub payload: Bytes,
    /// Whether it was a call (whose caller has already failed).
    pub was_call: bool,
}

impl Unconfirmed {
    /// Decodes the payload as an `M`.
    ///
    /// # Errors
    /// As [`Inbound::decode`].
    pub fn decode<M: Message + Name + Default + 'static>(&self) -> Result<M, DecodeError> {
        decode_payload(&self.type_url, &self.payload)
    }
}

impl From<crate::wire::Envelope> for Unconfirmed {
    fn from(envelope: crate::wire::Envelope) -> Self {
        Self {
            seq: envelope.seq,
            was_call: matches!(envelope.body.kind, crate::wire::BodyKind::Call { .. }),
            type_url: envelope.body.type_url,
            payload: envelope.body.payload,
        }
    }
}

/// Stops the owner when dropped: how `Escalate` hands a loss to the owner's supervisor
/// after the owner has seen it (ractor processes a stop before queued messages, so
/// stopping at once would lose the signal).
pub(crate) struct Escalation {
    pub(crate) owner: ractor::ActorCell,
    pub(crate) reason: String,
}

impl Drop for Escalation {
    fn drop(&mut self) {
        self.owner.stop(Some(std::mem::take(&mut self.reason)));
    }
}

impl fmt::Debug for Escalation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Escalation")
            .field("reason", &self.reason)
            .finish()
    }
}
