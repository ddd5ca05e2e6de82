//! What sessions put in an actor's mailbox: the merged mailbox.
//!
//! Every session's receive loop delivers straight into its owner's ractor mailbox, in
//! order, each item tagged with the [`SessionRef`] it came from. An actor with sessions
//! to many peers thus sees one ordered stream per session, merged into one mailbox: a
//! `select` across processes.
//!
//! An actor that serves one [`crate::Protocol`] takes [`Mailbox<P, L>`] as its message
//! type: the runtime decodes each message as a `P::Request` before delivery, and `L`
//! carries the actor's own local messages. An untyped actor's message type accepts both
//! kinds of item, undecoded (as [`SessionMsg`] does):
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

use ractor::ActorRef;

use crate::members::ClusterEvent;

mod messages;
mod typed;

pub(crate) use self::messages::Escalation;
pub use self::messages::{
    HeldBack, Inbound, InboundBatch, Lost, ReplyPort, Resumption, SessionSignal, Unconfirmed,
};
pub use self::typed::{BatchedMailbox, Credit, Mailbox, NoLocal, Reply, Undecodable};

/// A message type sessions can deliver into: what [`crate::Node::register`] and
/// [`crate::Node::connect`] ask of an actor's `Msg`.
///
/// Implemented for [`Mailbox<P, L>`] (typed: decoded before delivery, and naming its
/// protocol to the handshake) and for every type with `From<Inbound>` and
/// `From<SessionSignal>` (untyped, as [`SessionMsg`]); there is rarely a reason to
/// implement it by hand.
#[diagnostic::on_unimplemented(
    message = "sessions cannot deliver into `{Self}`",
    label = "not a session mailbox",
    note = "make the actor's `type Msg` a `duologue::Mailbox<P>` (or `Mailbox<P, L>` with local messages `L`), or a type with `From<duologue::Inbound>` and `From<duologue::SessionSignal>` such as `duologue::SessionMsg`"
)]
pub trait FromSession: ractor::Message {
    /// The name of the protocol the actor serves ([`crate::Protocol::name`]), checked
    /// in the handshake of every session opened to it; `None` accepts any.
    fn protocol() -> Option<String> {
        None
    }

    /// A message from a peer, as the owner takes it.
    fn from_inbound(inbound: Inbound) -> Self;

    /// A session signal, as the owner takes it.
    fn from_signal(signal: SessionSignal) -> Self;
}

impl<M> FromSession for M
where
    M: ractor::Message + From<Inbound> + From<SessionSignal>,
{
    fn from_inbound(inbound: Inbound) -> Self {
        Self::from(inbound)
    }

    fn from_signal(signal: SessionSignal) -> Self {
        Self::from(signal)
    }
}

/// A message type cluster events can be delivered into: what
/// [`crate::Node::subscribe_cluster`] asks of an actor's `Msg`. Implemented for
/// [`Mailbox<P, L>`] (as [`Mailbox::Cluster`]) and for every type with
/// `From<ClusterEvent>`.
#[diagnostic::on_unimplemented(
    message = "cluster events cannot be delivered into `{Self}`",
    label = "not a cluster event mailbox",
    note = "make the actor's `type Msg` a `duologue::Mailbox<P>` (events arrive as `Mailbox::Cluster`), or give it `From<duologue::cluster::ClusterEvent>`"
)]
pub trait FromCluster: ractor::Message {
    /// A cluster event, as the subscriber takes it.
    fn from_cluster(event: ClusterEvent) -> Self;
}

impl<M> FromCluster for M
where
    M: ractor::Message + From<ClusterEvent>,
{
    fn from_cluster(event: ClusterEvent) -> Self {
        Self::from(event)
    }
}

/// The untyped message type of an actor that talks only through sessions: everything
/// its sessions deliver, undecoded. An actor with messages of its own defines its own
/// enum with `From<Inbound>` and `From<SessionSignal>`, as the
/// [crate doc](crate#the-merged-mailbox) shows; a typed actor uses [`Mailbox<P, L>`]
/// instead.
#[derive(Debug)]
pub enum SessionMsg {
    /// A message from a peer.
    Inbound(Inbound),
    /// A change in the life of one of its sessions.
    Signal(SessionSignal),
}

// With ractor's `cluster` feature, ractor implements `Message` only for types that say so.
#[cfg(feature = "ractor-cluster")]
impl ractor::Message for SessionMsg {}

impl From<Inbound> for SessionMsg {
    fn from(inbound: Inbound) -> Self {
        Self::Inbound(inbound)
    }
}

impl From<SessionSignal> for SessionMsg {
    fn from(signal: SessionSignal) -> Self {
        Self::Signal(signal)
    }
}

/// The untyped message type of an actor that takes batches ([`crate::Owner::batched`]):
/// [`SessionMsg`] with a variant for them. An actor
/// with messages of its own writes its enum with the same three `From`s.
#[derive(Debug)]
pub enum BatchedSessionMsg {
    /// A message from a peer that arrived alone.
    Inbound(Inbound),
    /// Messages from a peer that arrived together.
    Batch(InboundBatch),
    /// A change in the life of one of its sessions.
    Signal(SessionSignal),
}

#[cfg(feature = "ractor-cluster")]
impl ractor::Message for BatchedSessionMsg {}

impl From<Inbound> for BatchedSessionMsg {
    fn from(inbound: Inbound) -> Self {
        Self::Inbound(inbound)
    }
}

impl From<InboundBatch> for BatchedSessionMsg {
    fn from(batch: InboundBatch) -> Self {
        Self::Batch(batch)
    }
}

impl From<SessionSignal> for BatchedSessionMsg {
    fn from(signal: SessionSignal) -> Self {
        Self::Signal(signal)
    }
}

/// A mailbox that sessions can deliver into.
pub(crate) trait Deliver: Send + Sync + 'static {
    /// Delivers a message; `Err` when the actor no longer takes messages.
    fn inbound(&self, inbound: Inbound) -> Result<(), ()>;
    /// Whether the owner takes a run of messages as one [`InboundBatch`].
    fn takes_batches(&self) -> bool {
        false
    }
    /// Delivers a run of messages as one mailbox message (only asked of an owner that
    /// [takes batches](Deliver::takes_batches)); `Err` when the actor no longer takes
    /// messages, and then none of the batch was delivered.
    fn batch(&self, batch: InboundBatch) -> Result<(), ()> {
        let _ = batch;
        Err(())
    }
    /// Delivers a signal; `Err` when the actor no longer takes messages.
    fn signal(&self, signal: SessionSignal) -> Result<(), ()>;
    /// Whether the actor (or receiving handle) still takes messages.
    fn is_alive(&self) -> bool;
    /// The actor's cell, to stop or watch it; `None` for an owner that is not an actor
    /// (an [`crate::actor::inbox::InboxReceiver`]).
    fn cell(&self) -> Option<ractor::ActorCell>;
    /// Why the owner no longer takes messages, when it knows better than the node's
    /// record of actor stop reasons.
    fn gone_reason(&self) -> Option<String> {
        None
    }

    /// The protocol the owner serves, when it is typed ([`FromSession::protocol`]).
    fn protocol(&self) -> Option<String> {
        None
    }
}

impl<M: FromSession> Deliver for ActorRef<M> {
    fn inbound(&self, inbound: Inbound) -> Result<(), ()> {
        self.send_message(M::from_inbound(inbound)).map_err(drop)
    }

    fn signal(&self, signal: SessionSignal) -> Result<(), ()> {
        self.send_message(M::from_signal(signal)).map_err(drop)
    }

    fn cell(&self) -> Option<ractor::ActorCell> {
        Some(self.get_cell())
    }

    fn protocol(&self) -> Option<String> {
        M::protocol()
    }

    fn is_alive(&self) -> bool {
        !matches!(
            self.get_status(),
            ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped
        )
    }
}

impl std::fmt::Debug for dyn Deliver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<mailbox>")
    }
}
