//! The node's watcher: an actor that monitors registered actors and session owners and
//! says when one stops, so that its names go and its sessions end with a farewell that
//! carries the stop reason, after the messages it had already sent. It knows nothing of
//! the node: it reports into a channel, read by whoever ends the sessions.

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc;

use crate::error::NodeError;

/// A watched actor that stopped, and why.
#[derive(Debug)]
pub(crate) struct Stopped {
    pub(crate) actor: ActorId,
    pub(crate) reason: Option<String>,
}

/// Monitors actors on behalf of one node.
#[derive(Debug)]
pub(crate) struct Watcher;

impl Watcher {
    /// Starts a watcher: the cell to monitor actors with ([`ActorCell::monitor`]), and
    /// where it says which stopped. It stops itself once that receiver is gone.
    pub(crate) async fn start() -> Result<(ActorCell, mpsc::UnboundedReceiver<Stopped>), NodeError>
    {
        let (stopped, reports) = mpsc::unbounded_channel();
        let (watcher, _) = Actor::spawn(None, Self, stopped)
            .await
            .map_err(|e| NodeError::Watcher(e.to_string()))?;
        Ok((watcher.get_cell(), reports))
    }
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Watcher {
    type Msg = ();
    type State = mpsc::UnboundedSender<Stopped>;
    type Arguments = mpsc::UnboundedSender<Stopped>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        stopped: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(stopped)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        stopped: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let report = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => Stopped {
                actor: cell.get_id(),
                reason,
            },
            SupervisionEvent::ActorFailed(cell, error) => Stopped {
                actor: cell.get_id(),
                reason: Some(format!("failed: {error}")),
            },
            _ => return Ok(()),
        };
        if stopped.send(report).is_err() {
            myself.stop(None);
        }
        Ok(())
    }
}
