//! What an entity of a kind that keeps state holds: its state as the store had it when
//! the entity started, and the right to write it under its shard's epoch.

use std::fmt;
use std::sync::Arc;

use crate::store::{StateError, StateStore};

/// Where and under which claim an activation writes its state.
#[derive(Clone)]
pub(crate) struct Fence {
    pub(crate) store: Arc<StateStore>,
    pub(crate) kind: Arc<str>,
    pub(crate) shard: u32,
    pub(crate) epoch: u64,
    /// With a lease: when the host stops serving the shard. A load still waiting then
    /// fails, so that the host is never held past it.
    pub(crate) until: Option<std::time::Instant>,
    /// Told when a write is fenced: the host stops the shard's entities.
    pub(crate) fenced: Arc<dyn Fn(u32, u64) + Send + Sync>,
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("kind", &self.kind)
            .field("shard", &self.shard)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// An entity's state kept in the node's store ([`crate::NodeBuilder::durable_entity`]):
/// loaded before the entity's constructor runs, written when the entity says it changed
/// ([`Durable::update`], [`Durable::set`]), each write committed before it returns.
///
/// Answer a call whose handling changed the state only once its write returned `Ok`: an
/// acknowledged change then survives the death of the node that made it.
///
/// Every write carries the epoch under which this node serves the entity's shard, and the
/// revision it was read at: the store refuses it when another node claimed the shard
/// since ([`StateError::Fenced`]; the node then stops this entity and the others of its
/// shard) or another write came first ([`StateError::Conflict`]). A refused write changes
/// nothing here either.
pub struct Durable<S> {
    id: Arc<str>,
    value: S,
    revision: u64,
    fence: Fence,
}

impl<S: fmt::Debug> fmt::Debug for Durable<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Durable")
            .field("id", &self.id)
            .field("value", &self.value)
            .field("revision", &self.revision)
            .field("epoch", &self.fence.epoch)
            .finish()
    }
}

impl<S: prost::Message + Default + Clone> Durable<S> {
    /// Loads the state of entity `id` under `fence` (the default state when it was never
    /// written).
    pub(crate) async fn load(id: Arc<str>, fence: Fence) -> Result<Self, StateError> {
        let load = fence.store.load(&fence.kind, &id);
        let stored = match fence.until {
            Some(until) => tokio::time::timeout_at(until.into(), load)
                .await
                .map_err(|_| StateError::Unavailable {
                    reason: "the shard's lease lapsed before the state was read".into(),
                })??,
            None => load.await?,
        };
        let value = if stored.revision == 0 {
            S::default()
        } else {
            S::decode(stored.bytes.as_slice()).map_err(|e| StateError::Decode {
                reason: e.to_string(),
            })?
        };
        Ok(Self {
            id,
            value,
            revision: stored.revision,
            fence,
        })
    }

    /// The state.
    pub fn get(&self) -> &S {
        &self.value
    }

    /// The entity's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many writes the state has had (0: never written).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The epoch of its shard this activation writes under.
    pub fn epoch(&self) -> u64 {
        self.fence.epoch
    }

    /// Writes `value` as the state, and keeps it once committed.
    ///
    /// # Errors
    /// [`StateError::Fenced`] (the entity is being stopped), [`StateError::Conflict`],
    /// [`StateError::Unavailable`]: the state stays as it was.
    pub async fn set(&mut self, value: S) -> Result<(), StateError> {
        let fence = &self.fence;
        let written = fence
            .store
            .save(
                &fence.kind,
                &self.id,
                fence.shard,
                fence.epoch,
                self.revision,
                &value.encode_to_vec(),
            )
            .await;
        match written {
            Ok(revision) => {
                self.value = value;
                self.revision = revision;
                Ok(())
            }
            Err(error) => {
                if let StateError::Fenced { shard, epoch, .. } = &error {
                    (fence.fenced)(*shard, *epoch);
                }
                Err(error)
            }
        }
    }

    /// Changes a copy of the state with `change`, writes it, and keeps it once
    /// committed; returns what `change` returned.
    ///
    /// # Errors
    /// As [`Durable::set`].
    pub async fn update<R>(&mut self, change: impl FnOnce(&mut S) -> R) -> Result<R, StateError> {
        let mut value = self.value.clone();
        let result = change(&mut value);
        self.set(value).await?;
        Ok(result)
    }
}
