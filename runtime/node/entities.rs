//! Entities: an actor per id of a kind, placed on the members that host the kind,
//! started by its first message, stopped when idle, moved when members come and go.
//!
//! ```text
//! EntityRef<P> ── Router (router.rs): shard of the id, owner in this node's view
//!   │              (placement.rs: rendezvous hashing, pure)
//!   ├── owner is this node ──> Host of the kind (host.rs) ──> the entity's actor
//!   └── owner is another  ──> carrier session to `$entities/KIND` there (one per
//!                              owner and kind) ──> its Host ──> the entity's actor
//! ```
//!
//! Gossip carries one name per kind a node hosts (`$entities/KIND`), never anything per
//! entity. See `docs/semantics.md`, "Entities", for what holds while members change.

mod claims;
mod directory;
mod durable;
mod handoff;
mod host;
mod message;
mod placement;
mod router;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::error::NodeError;

pub(crate) use self::claims::ClaimsArgs;
pub(crate) use self::directory::{Directory, ShortWay};
pub use self::durable::Durable;
pub(crate) use self::host::{Host, HostArgs, StartFn};
pub use self::message::{Entity, EntityReply};
pub use self::router::{EntityRef, Undelivered};
pub(crate) use self::router::{HostCounters, Router, carrier_name};

/// Starts a node's host of one kind, once the node (`N`) is up.
type StartHost<N> = dyn Fn(N) -> BoxFuture<'static, Result<(), NodeError>> + Send + Sync;

/// The entity kinds a node hosts, in registration order, each with whether it keeps
/// state.
pub(crate) struct EntityKinds<N>(Vec<(String, bool, Arc<StartHost<N>>)>);

impl<N> Default for EntityKinds<N> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<N> Clone for EntityKinds<N> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<N> std::fmt::Debug for EntityKinds<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(kind, _, _)| kind))
            .finish()
    }
}

impl<N> EntityKinds<N> {
    /// Adds `kind` (`durable`: it keeps state in the node's store), whose host `start`
    /// starts.
    ///
    /// # Panics
    /// When `kind` was added already, or is not a name a node takes (programming
    /// errors).
    pub(crate) fn add(
        &mut self,
        kind: &str,
        durable: bool,
        start: impl Fn(N) -> BoxFuture<'static, Result<(), NodeError>> + Send + Sync + 'static,
    ) {
        assert!(
            self.0.iter().all(|(k, _, _)| k != kind),
            "entity kind {kind:?} registered twice"
        );
        if let Err(reason) = crate::names::check_name(&carrier_name(kind)) {
            panic!("entity kind {kind:?}: {reason}");
        }
        self.0.push((kind.to_owned(), durable, Arc::new(start)));
    }

    /// The kinds, in registration order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(kind, _, _)| kind.as_str())
    }

    /// The kinds that keep state.
    pub(crate) fn durable(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(|(_, durable, _)| *durable)
            .map(|(kind, _, _)| kind.as_str())
    }

    /// Starts every kind's host on `node`.
    pub(crate) async fn start(&self, node: &N) -> Result<(), NodeError>
    where
        N: Clone,
    {
        for (_, _, start) in &self.0 {
            start(node.clone()).await?;
        }
        Ok(())
    }
}
