//! `duologue node`: one node process hosting the ready-made actor kinds, built with
//! [`duologue::cli::NodeMain`] exactly as a user's own node binary is.

use duologue::cli::NodeMain;
use ractor::Actor;

use duologue_actors::chat::{ChatRoom, RoomConfig};
use duologue_actors::seq_check::{CheckConfig, SeqCheck};
use duologue_actors::{edit, pipeline, reconcile};

/// The ready-made kinds `duologue node --actor KIND:NAME` hosts.
pub(crate) fn ready_made() -> NodeMain {
    NodeMain::new("duologue")
        .kind(
            "chat-room",
            "a chat room (JOIN, WELCOME, TEXT, ACK)",
            |node, spec| async move {
                let (room, _) = Actor::spawn(None, ChatRoom, RoomConfig::from(spec.name.as_str()))
                    .await
                    .map_err(|e| format!("cannot start chat room {}: {e}", spec.name))?;
                // Its mailbox (`Mailbox<ChatRoom>`) names its protocol to the node.
                if let Err(error) = node.register(spec.name, &room) {
                    room.stop(None);
                    return Err(error.to_string());
                }
                Ok(room.get_cell())
            },
        )
        .kind(
            "seq-check",
            "counts numbered ticks; seq-check:NAME@RATE takes at most RATE a second",
            |node, spec| async move {
                let per_second = spec
                    .arg
                    .as_deref()
                    .map(|rate| {
                        rate.parse()
                            .map_err(|_| "RATE is ticks per second".to_owned())
                    })
                    .transpose()?;
                let config = CheckConfig {
                    name: spec.name.clone(),
                    per_second,
                };
                let (check, _) = Actor::spawn(None, SeqCheck, config)
                    .await
                    .map_err(|e| format!("cannot start sequence checker {}: {e}", spec.name))?;
                if let Err(error) = node.register(spec.name, &check) {
                    check.stop(None);
                    return Err(error.to_string());
                }
                Ok(check.get_cell())
            },
        )
        .kind(
            "edit",
            "a collaboratively edited document (yrs CRDT)",
            |node, spec| async move { edit::host(&node, &spec.name).await },
        )
        .kind(
            "reconcile",
            "a reconcile loop: declared state in, status reports out",
            |node, spec| async move { reconcile::host(&node, &spec.name).await },
        )
        .kind(
            "pipeline",
            "a pipeline stage that throttles its producer by latency",
            |node, spec| async move { pipeline::host(&node, &spec.name).await },
        )
        // Entities: a shopping cart per id (examples/carts), placed by the cluster.
        .entity(carts::KIND, carts::start)
}
