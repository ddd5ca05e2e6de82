//! What sessions put in an actor's mailbox: the merged mailbox.
//!
//! Every session's receive loop delivers straight into its owner's ractor mailbox, in
//! order, each item tagged with the [`SessionRef`] it came from. An actor with sessions
//! to many peers thus sees one ordered stream per session, merged into one mailbox: a
//! `select` across processes. The owner's message type accepts both kinds of item:
//!
//! ```
//! use duologue::{Inbound, SessionSignal};
//!
//! enum RoomMsg {
//!     Inbound(Inbound),
//!     Session(SessionSignal),
//! }
//! impl From<Inbound> for RoomMsg {
//!     fn from(inbound: Inbound) -> Self {
//!         Self::Inbound(inbound)
//!     }
//! }
//! impl From<SessionSignal> for RoomMsg {
//!     fn from(signal: SessionSignal) -> Self {
//!         Self::Session(signal)
//!     }
//! }
//! ```

use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use prost::{Message, Name};
use ractor::ActorRef;

use crate::error::{CloseReason, DecodeError, SendError};
use crate::session_ref::SessionRef;
use crate::wire::{Fault, Goodbye};

/// One message from a peer, delivered into the owner's mailbox.
pub struct Inbound {
    pub(crate) session: SessionRef,
    pub(crate) type_url: String,
    pub(crate) payload: Bytes,
    pub(crate) reply: Option<ReplyPort>,
}

impl Inbound {
    /// The session it came from; reply or send more on it.
    pub fn session(&self) -> &SessionRef {
        &self.session
    }

    /// The payload's type URL.
    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    /// The encoded payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Whether the payload is an `M`.
    pub fn is<M: Name>(&self) -> bool {
        self.type_url == M::type_url()
    }

    /// Decodes the payload as an `M`.
    ///
    /// # Errors
    /// [`DecodeError::WrongType`] when the type URL names another type,
    /// [`DecodeError::Invalid`] when the bytes do not decode.
    pub fn decode<M: Message + Name + Default>(&self) -> Result<M, DecodeError> {
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
    pub fn reply<M: Message + Name>(mut self, reply: &M) -> Result<(), SendError<()>> {
        match self.reply.take() {
            Some(port) => port.send(reply),
            None => Err(SendError::NotReady(())),
        }
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

    /// Sends the reply.
    ///
    /// # Errors
    /// [`SendError`] when the session cannot take it (closed, too large).
    pub fn send<M: Message + Name>(mut self, reply: &M) -> Result<(), SendError<()>> {
        self.answered = true;
        self.session.send_reply(self.call_id, Ok(reply))
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
    /// The session is over.
    Closed(SessionRef, CloseReason),
}

impl SessionSignal {
    /// The session the signal is about.
    pub fn session(&self) -> &SessionRef {
        match self {
            Self::Opened(s) | Self::PeerFinished(s, _) | Self::Closed(s, _) => s,
        }
    }
}

/// A mailbox that sessions can deliver into.
pub(crate) trait Deliver: Send + Sync + 'static {
    /// Delivers a message; `Err` when the actor no longer takes messages.
    fn inbound(&self, inbound: Inbound) -> Result<(), ()>;
    /// Delivers a signal; `Err` when the actor no longer takes messages.
    fn signal(&self, signal: SessionSignal) -> Result<(), ()>;
    /// Whether the actor still runs.
    fn is_alive(&self) -> bool;
}

impl<M> Deliver for ActorRef<M>
where
    M: ractor::Message + From<Inbound> + From<SessionSignal>,
{
    fn inbound(&self, inbound: Inbound) -> Result<(), ()> {
        self.send_message(M::from(inbound)).map_err(drop)
    }

    fn signal(&self, signal: SessionSignal) -> Result<(), ()> {
        self.send_message(M::from(signal)).map_err(drop)
    }

    fn is_alive(&self) -> bool {
        !matches!(
            self.get_status(),
            ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped
        )
    }
}

/// Decodes `payload` as an `M` after checking its type URL.
pub(crate) fn decode_payload<M: Message + Name + Default>(
    type_url: &str,
    payload: &Bytes,
) -> Result<M, DecodeError> {
    let expected = M::type_url();
    if type_url != expected {
        return Err(DecodeError::WrongType {
            expected,
            got: type_url.to_owned(),
        });
    }
    M::decode(payload.clone()).map_err(|source| DecodeError::Invalid {
        type_url: expected,
        source,
    })
}
