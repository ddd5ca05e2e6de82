//! Who a session delivers into: [`Owner`], the one value [`crate::Node::register`] and
//! [`crate::Connect::owner`] take, whatever kind of mailbox the actor has.

use std::sync::Arc;

use ractor::ActorRef;

use crate::actor::mailbox::{Deliver, FromSession, Inbound, InboundBatch, SessionSignal};
use crate::handles::remote_ref::Protocol;

/// The owner of sessions: an actor whose mailbox takes what the sessions deliver, and how
/// it takes it.
///
/// An `&ActorRef<M>` is an owner as it is (`node.register("room", &room)`); the
/// constructors say more:
///
/// - [`Owner::batched`]: the actor takes a run of messages that arrived together as one
///   mailbox message ([`crate::mailbox::InboundBatch`]): one mailbox operation per run
///   instead of one per message. A message that arrives alone still comes as an
///   [`Inbound`].
/// - [`Owner::serving`]: an untyped mailbox (`SessionMsg`, or an enum of its own) that
///   serves the protocol `P`: a session that names another protocol is refused in the
///   handshake, before any message. A typed [`crate::Mailbox`] names its protocol itself.
#[derive(Clone)]
pub struct Owner {
    deliver: Arc<dyn Deliver>,
}

impl Owner {
    /// The actor, each message one mailbox message.
    pub fn actor<M: FromSession>(actor: &ActorRef<M>) -> Self {
        Self {
            deliver: Arc::new(actor.clone()),
        }
    }

    /// The actor, taking runs of messages as one [`InboundBatch`].
    pub fn batched<M: FromSession + From<InboundBatch>>(actor: &ActorRef<M>) -> Self {
        Self {
            deliver: Arc::new(Batched(actor.clone())),
        }
    }

    /// This owner, serving the protocol `P`: only sessions that name it (or none) are
    /// let in.
    pub fn serving<P: Protocol>(self) -> Self {
        Self {
            deliver: Arc::new(Serving {
                inner: self.deliver,
                protocol: P::name(),
            }),
        }
    }

    /// The owner of a session: an [`InboxReceiver`](crate::InboxReceiver)'s sending half.
    pub(crate) fn from_deliver(deliver: Arc<dyn Deliver>) -> Self {
        Self { deliver }
    }

    pub(crate) fn into_deliver(self) -> Arc<dyn Deliver> {
        self.deliver
    }
}

impl<M: FromSession> From<&ActorRef<M>> for Owner {
    fn from(actor: &ActorRef<M>) -> Self {
        Self::actor(actor)
    }
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("batches", &self.deliver.takes_batches())
            .field("protocol", &self.deliver.protocol())
            .finish()
    }
}

/// An owner that takes runs of messages as one [`InboundBatch`].
struct Batched<M: FromSession + From<InboundBatch>>(ActorRef<M>);

impl<M: FromSession + From<InboundBatch>> Deliver for Batched<M> {
    fn inbound(&self, inbound: Inbound) -> Result<(), ()> {
        self.0.inbound(inbound)
    }

    fn takes_batches(&self) -> bool {
        true
    }

    fn batch(&self, batch: InboundBatch) -> Result<(), ()> {
        self.0.send_message(M::from(batch)).map_err(drop)
    }

    fn signal(&self, signal: SessionSignal) -> Result<(), ()> {
        self.0.signal(signal)
    }

    fn is_alive(&self) -> bool {
        self.0.is_alive()
    }

    fn cell(&self) -> Option<ractor::ActorCell> {
        Deliver::cell(&self.0)
    }

    fn protocol(&self) -> Option<String> {
        Deliver::protocol(&self.0)
    }
}

/// An owner that names the protocol the handshake checks: delivers as the owner it
/// wraps does.
struct Serving {
    inner: Arc<dyn Deliver>,
    protocol: String,
}

impl Deliver for Serving {
    fn inbound(&self, inbound: Inbound) -> Result<(), ()> {
        self.inner.inbound(inbound)
    }

    fn takes_batches(&self) -> bool {
        self.inner.takes_batches()
    }

    fn batch(&self, batch: InboundBatch) -> Result<(), ()> {
        self.inner.batch(batch)
    }

    fn signal(&self, signal: SessionSignal) -> Result<(), ()> {
        self.inner.signal(signal)
    }

    fn is_alive(&self) -> bool {
        self.inner.is_alive()
    }

    fn cell(&self) -> Option<ractor::ActorCell> {
        self.inner.cell()
    }

    fn gone_reason(&self) -> Option<String> {
        self.inner.gone_reason()
    }

    fn protocol(&self) -> Option<String> {
        Some(self.protocol.clone())
    }
}
