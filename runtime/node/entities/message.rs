//! What an entity's actor receives: [`Entity`], typed by the kind's protocol, and the
//! obligation to answer a call, [`EntityReply`], whether the caller is on this node or
//! another.

use std::fmt;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::actor::mailbox::{Credit, NoLocal, Reply};
use crate::error::SendError;
use crate::handles::remote_ref::Protocol;
use crate::wire::Fault;
use crate::wire::pb::EntityAnswer;

/// The message type of an entity's actor, for a kind that speaks the protocol `P` and
/// takes local messages `L` of its own: `type Msg = Entity<P, L>`.
///
/// An entity is started by its kind's constructor ([`crate::NodeBuilder::entity`]) when
/// the first message for its id reaches the node that owns its shard, and stopped
/// (drained: what it has received is handled first, and `post_stop` runs) when it is idle
/// or the node passivates it to stay under its bound. Messages from one sender to one
/// entity arrive in the order they were sent.
pub enum Entity<P: Protocol, L = NoLocal> {
    /// A one-way message.
    Cast {
        /// The message.
        message: P::Request,
        /// Its share of the sending node's credit, granted back when dropped (none for a
        /// message sent from this node).
        credit: Credit,
    },
    /// A request that awaits a reply.
    Call {
        /// The request.
        request: P::Request,
        /// The obligation to answer; dropping it unanswered answers `no_reply`.
        reply: EntityReply<P::Response>,
        /// Its share of the sending node's credit.
        credit: Credit,
    },
    /// One of the actor's own messages.
    Local(L),
}

// With ractor's `cluster` feature, ractor implements `Message` only for types that say so.
#[cfg(feature = "ractor-cluster")]
impl<P: Protocol, L: Send + 'static> ractor::Message for Entity<P, L> {}

impl<P: Protocol, L: fmt::Debug> fmt::Debug for Entity<P, L>
where
    P::Request: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cast { message, .. } => f.debug_tuple("Cast").field(message).finish(),
            Self::Call { request, .. } => f.debug_tuple("Call").field(request).finish(),
            Self::Local(local) => f.debug_tuple("Local").field(local).finish(),
        }
    }
}

/// The obligation to answer one call to an entity with a `T`. Dropping it unanswered
/// answers the caller with a `no_reply` fault, so a caller never waits for a reply that
/// will not come.
pub struct EntityReply<T>(Answer<T>);

enum Answer<T> {
    /// A caller on another node: the answer goes back on the carrier session.
    Remote(Reply<EntityAnswer>),
    /// A caller on this node.
    Local(oneshot::Sender<Result<T, Fault>>),
}

impl<T: prost::Message + prost::Name + 'static> EntityReply<T> {
    pub(crate) fn remote(reply: Reply<EntityAnswer>) -> Self {
        Self(Answer::Remote(reply))
    }

    pub(crate) fn local(reply: oneshot::Sender<Result<T, Fault>>) -> Self {
        Self(Answer::Local(reply))
    }

    /// The reply port of a caller on another node.
    pub(crate) fn into_remote(self) -> Option<Reply<EntityAnswer>> {
        match self.0 {
            Answer::Remote(port) => Some(port),
            Answer::Local(_) => None,
        }
    }

    /// The caller's deadline on this process's clock, for a caller on another node that
    /// set one.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        match &self.0 {
            Answer::Remote(port) => port.deadline(),
            Answer::Local(_) => None,
        }
    }

    /// Sends the reply.
    ///
    /// # Errors
    /// The reply comes back in a [`SendError`] when it cannot reach the caller (its
    /// session closed, or the caller stopped waiting).
    pub fn send(self, reply: impl Into<T>) -> Result<(), SendError<T>> {
        let reply = reply.into();
        match self.0 {
            Answer::Remote(port) => {
                let answer = EntityAnswer {
                    type_url: crate::wire::TypeUrl::of::<T>().as_str().to_owned(),
                    payload: reply.encode_to_vec().into(),
                };
                port.send(answer).map_err(|error| error.map(|_| reply))
            }
            Answer::Local(tx) => tx.send(Ok(reply)).map_err(|answer| match answer {
                Ok(reply) => SendError::Closed {
                    reason: None,
                    message: reply,
                },
                Err(_) => unreachable!("what comes back is what was sent"),
            }),
        }
    }

    /// Answers with a fault instead of a reply.
    ///
    /// # Errors
    /// [`SendError::Closed`] when the caller is gone.
    pub fn fail(self, fault: Fault) -> Result<(), SendError<()>> {
        match self.0 {
            Answer::Remote(port) => port.fail(fault),
            Answer::Local(tx) => tx.send(Err(fault)).map_err(|_| SendError::Closed {
                reason: None,
                message: (),
            }),
        }
    }
}

impl<T> fmt::Debug for EntityReply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Answer::Remote(port) => f.debug_tuple("EntityReply").field(port).finish(),
            Answer::Local(_) => f.debug_tuple("EntityReply").field(&"local").finish(),
        }
    }
}

/// A message for an entity before it reaches the entity: its host's concern.
pub(crate) enum Item<P: Protocol> {
    Cast(P::Request, Credit),
    Call(P::Request, EntityReply<P::Response>, Credit),
}

impl<P: Protocol> Item<P> {
    /// The entity's message.
    pub(crate) fn into_entity<L>(self) -> Entity<P, L> {
        match self {
            Self::Cast(message, credit) => Entity::Cast { message, credit },
            Self::Call(request, reply, credit) => Entity::Call {
                request,
                reply,
                credit,
            },
        }
    }

    /// Back from an entity's message that was not taken (its actor had stopped).
    pub(crate) fn from_entity<L>(entity: Entity<P, L>) -> Option<Self> {
        match entity {
            Entity::Cast { message, credit } => Some(Self::Cast(message, credit)),
            Entity::Call {
                request,
                reply,
                credit,
            } => Some(Self::Call(request, reply, credit)),
            Entity::Local(_) => None,
        }
    }
}

/// What a node's host of a kind is told from within the node.
pub(crate) enum ToHost<P: Protocol> {
    /// A message for the entity `id`, from this node.
    Deliver { id: Arc<str>, item: Item<P> },
    /// Time to stop the entities idle past the bound, and to look at held messages.
    Tick,
    /// The cluster's view changed.
    ViewChanged,
    /// The node leaves: hand every shard over, then say so.
    Leave(tokio::sync::oneshot::Sender<()>),
    /// The store answered the claim of `shard` asked at `sent` (`None`: another node
    /// holds its lease).
    Claimed {
        shard: u32,
        sent: std::time::Instant,
        result: Result<Option<crate::store::Claim>, crate::store::StateError>,
    },
    /// The store answered the renewal of the leases asked at `sent`.
    Renewed {
        sent: std::time::Instant,
        result: Result<Vec<(u32, crate::store::Claim)>, crate::store::StateError>,
    },
    /// An entity's write under `epoch` of `shard` was fenced: another node claimed it.
    Fenced { shard: u32, epoch: u64 },
}
