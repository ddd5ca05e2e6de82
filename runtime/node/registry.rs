//! The node's named actors: what peers open sessions to. A name is checked
//! ([`crate::names`]) and bounded ([`crate::NodeConfig::max_names`]), its actor watched,
//! and the name published to the cluster when the node is in one; it goes (and is
//! withdrawn) when its actor stops or is unregistered.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ractor::{ActorCell, ActorId};

use super::cluster::Membership;
use crate::actor::mailbox::Deliver;
use crate::error::NodeError;

/// The names registered on one node.
#[derive(Debug)]
pub(crate) struct Registry {
    names: RwLock<HashMap<String, Arc<dyn Deliver>>>,
    max_names: usize,
    /// Where names are published, in a cluster.
    cluster: Option<Arc<Membership>>,
    /// Monitors the actors that hold names (and own sessions): [`super::watcher`].
    watcher: ActorCell,
}

impl Registry {
    /// An empty registry of at most `max_names`, publishing to `cluster`, watching
    /// through `watcher`.
    pub(crate) fn new(
        max_names: usize,
        cluster: Option<Arc<Membership>>,
        watcher: ActorCell,
    ) -> Self {
        Self {
            names: RwLock::new(HashMap::new()),
            max_names,
            cluster,
            watcher,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<dyn Deliver>>> {
        self.names.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Arc<dyn Deliver>>> {
        self.names.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `deliver` (the actor `cell`) under `name`, watches it, and publishes
    /// the name.
    pub(crate) fn register(
        &self,
        name: String,
        deliver: Arc<dyn Deliver>,
        cell: ActorCell,
    ) -> Result<(), NodeError> {
        let protocol = deliver.protocol().unwrap_or_default();
        if let Err(reason) =
            crate::names::check_name(&name).and_then(|()| crate::names::check_protocol(&protocol))
        {
            return Err(NodeError::InvalidName {
                name: crate::names::printable(&name, 80),
                reason,
            });
        }
        let mut names = self.write();
        if names.get(&name).is_some_and(|d| d.is_alive()) {
            return Err(NodeError::NameTaken(name));
        }
        if names.len() >= self.max_names {
            // Names of actors that stopped leave as new ones come.
            names.retain(|_, deliver| deliver.is_alive());
            if names.len() >= self.max_names {
                return Err(NodeError::TooManyNames {
                    limit: self.max_names,
                });
            }
        }
        names.insert(name.clone(), deliver);
        drop(names);
        self.watch(cell);
        if let Some(cluster) = &self.cluster
            && !name.starts_with('$')
        {
            cluster.publish(&name, &protocol);
        }
        Ok(())
    }

    /// Removes `name`, and withdraws it.
    pub(crate) fn unregister(&self, name: &str) {
        self.write().remove(name);
        if let Some(cluster) = &self.cluster {
            cluster.unpublish(name);
        }
    }

    /// What is registered under `name`, live or not.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn Deliver>> {
        self.read().get(name).cloned()
    }

    /// Whether a live actor holds `name`.
    pub(crate) fn holds(&self, name: &str) -> bool {
        self.read().get(name).is_some_and(|d| d.is_alive())
    }

    /// How many live actors hold a name.
    pub(crate) fn held(&self) -> usize {
        self.read().values().filter(|d| d.is_alive()).count()
    }

    /// Removes the names the stopped `actor` held, and withdraws them.
    pub(crate) fn forget_names_of(&self, actor: ActorId) {
        let mut names = self.write();
        let gone: Vec<String> = names
            .iter()
            .filter(|(_, d)| d.cell().is_some_and(|c| c.get_id() == actor))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            names.remove(name);
        }
        drop(names);
        if let Some(cluster) = &self.cluster {
            for name in &gone {
                cluster.unpublish(name);
            }
        }
    }

    /// Watches `actor`: when it stops, the watcher says so.
    pub(crate) fn watch(&self, actor: ActorCell) {
        self.watcher.monitor(actor);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.watcher.stop(None);
    }
}
