//! The one way to open a session: [`crate::Node::connect`] gives a [`Connect`], which
//! says where (an address and an actor, or a name the cluster resolves), under which
//! [`SessionPolicy`], and who owns the session (an actor, a batched actor, or an inbox).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::cluster::{Located, Membership};
use super::sessions::Sessions;
use crate::actor::inbox::{InboxReceiver, new_inbox};
use crate::actor::owner::Owner;
use crate::config::SessionPolicy;
use crate::error::{ConnectError, LookupError};
use crate::handles::remote_ref::{Protocol, RemoteRef};

/// Where a session goes: an actor on a node at an address, or a name the cluster
/// resolves to one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The actor registered as `actor` on the node at `addr` (`host:port`).
    At {
        /// The node's session address.
        addr: String,
        /// The actor's name there.
        actor: String,
    },
    /// The actor the cluster knows as `name`, waiting up to `within` for a member that
    /// serves it to appear ([`crate::Node::lookup`]).
    Named {
        /// The name.
        name: String,
        /// How long to wait for it.
        within: Duration,
    },
}

impl Target {
    /// The actor `actor` on the node at `addr`.
    pub fn at(addr: impl Into<String>, actor: impl Into<String>) -> Self {
        Self::At {
            addr: addr.into(),
            actor: actor.into(),
        }
    }

    /// The actor the cluster knows as `name`, found within `within`.
    pub fn named(name: impl Into<String>, within: Duration) -> Self {
        Self::Named {
            name: name.into(),
            within,
        }
    }
}

impl<A: Into<String>, N: Into<String>> From<(A, N)> for Target {
    /// `(addr, actor)`.
    fn from((addr, actor): (A, N)) -> Self {
        Self::at(addr, actor)
    }
}

impl<P> From<&Located<P>> for Target {
    fn from(located: &Located<P>) -> Self {
        Self::at(located.addr.clone(), located.name.clone())
    }
}

/// A session about to be opened ([`crate::Node::connect`]): set its policy, then open it
/// with its owner ([`Connect::owner`]) or into an inbox ([`Connect::inbox`]).
///
/// Opening returns once the handshake completed. A connection refused or reset, or a
/// stream broken before the handshake completed, is retried with the reconnect backoff
/// until the connect deadline ([`crate::NodeConfig::connect_timeout`]); a refusal by the
/// peer is not.
///
/// # Errors
/// [`ConnectError::Unreachable`] (with the last attempt's cause) once the connect deadline
/// passed or when the peer did not complete a handshake in time,
/// [`ConnectError::UnknownActor`], [`ConnectError::ProtocolMismatch`],
/// [`ConnectError::Auth`] (the secrets differ), [`ConnectError::Tls`],
/// [`ConnectError::Closed`] for any other failed handshake, [`ConnectError::Lookup`] when
/// a name was not found, [`ConnectError::ShuttingDown`], [`ConnectError::OwnerStopped`].
#[must_use = "a Connect opens nothing until `owner` or `inbox` is awaited"]
pub struct Connect<P> {
    sessions: Arc<Sessions>,
    membership: Option<Arc<Membership>>,
    target: Target,
    policy: SessionPolicy,
    protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol> Connect<P> {
    pub(crate) fn new(
        sessions: Arc<Sessions>,
        membership: Option<Arc<Membership>>,
        target: Target,
        policy: SessionPolicy,
    ) -> Self {
        Self {
            sessions,
            membership,
            target,
            policy,
            protocol: PhantomData,
        }
    }

    /// The session's own policy for a lost session, instead of the node's default
    /// ([`crate::NodeConfig::policy`]).
    pub fn policy(mut self, policy: SessionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Opens the session owned by `owner`: the remote actor's messages and the session's
    /// signals go into its mailbox. An `&ActorRef<M>` is an owner; see [`Owner`] for one
    /// that takes batches.
    ///
    /// # Errors
    /// As [`Connect`] says.
    pub async fn owner(self, owner: impl Into<Owner>) -> Result<RemoteRef<P>, ConnectError> {
        let owner = owner.into();
        self.open(owner).await
    }

    /// Opens the session with an [`InboxReceiver`] as its owner instead of a local actor:
    /// send through the [`RemoteRef`], read what the peer sends (and the session's
    /// signals) from the receiver. `Escalate` acts as `Resume`: there is no actor to stop.
    ///
    /// # Errors
    /// As [`Connect`] says.
    pub async fn inbox(self) -> Result<(RemoteRef<P>, InboxReceiver<P>), ConnectError> {
        let (owner, inbox) = new_inbox();
        let remote = self.open(Owner::from_deliver(owner)).await?;
        Ok((remote.clone(), inbox.receiver(remote)))
    }

    async fn open(self, owner: Owner) -> Result<RemoteRef<P>, ConnectError> {
        let (addr, actor) = match self.target {
            Target::At { addr, actor } => (addr, actor),
            Target::Named { name, within } => {
                let membership = self
                    .membership
                    .ok_or(ConnectError::Lookup(LookupError::NotClustered))?;
                let located = membership.lookup::<P>(&name, within).await?;
                (located.addr, located.name)
            }
        };
        self.sessions
            .connect(&addr, &actor, owner.into_deliver(), self.policy)
            .await
    }
}

impl<P> std::fmt::Debug for Connect<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("target", &self.target)
            .field("policy", &self.policy)
            .finish()
    }
}
