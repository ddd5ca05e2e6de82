//! The node's watcher: an actor that monitors registered actors and session owners, so
//! that when one stops, its sessions end with a farewell that carries the stop reason,
//! after the messages it had already sent.

use std::sync::Weak;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::error::NodeError;
use crate::node::NodeInner;

/// Monitors actors on behalf of one node.
#[derive(Debug)]
pub(crate) struct Watcher;

impl Watcher {
    /// Starts the watcher of `node`.
    pub(crate) async fn start(node: Weak<NodeInner>) -> Result<ActorCell, NodeError> {
        let (watcher, _) = Actor::spawn(None, Self, node)
            .await
            .map_err(|e| NodeError::Watcher(e.to_string()))?;
        Ok(watcher.get_cell())
    }
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Watcher {
    type Msg = ();
    type State = Weak<NodeInner>;
    type Arguments = Weak<NodeInner>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        node: Weak<NodeInner>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(node)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        node: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(node) = node.upgrade() else {
            myself.stop(None);
            return Ok(());
        };
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                node.actor_stopped(cell.get_id(), reason);
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                node.actor_stopped(cell.get_id(), Some(format!("failed: {error}")));
            }
            _ => {}
        }
        Ok(())
    }
}
