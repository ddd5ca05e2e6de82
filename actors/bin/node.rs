//! `duologue node`: one node process hosting the ready-made actor kinds, built with
//! [`duologue::cli::NodeMain`] exactly as a user's own node binary is.

use duologue::cli::NodeMain;
use ractor::Actor;

use duologue_actors::chat::{ChatRoom, RoomConfig};
use duologue_actors::seq_check::{CheckConfig, SeqCheck};
use duologue_actors::{edit, pipeline, reconcile};

/// The ready-made kinds `duologue node --actor KIND:NAME` hosts, and the shopping carts
/// (examples/carts) as entities: their lines kept in the node's store when it has one
/// (`with_store`: `--state` was given), in memory otherwise.
pub(crate) fn ready_made(with_store: bool) -> NodeMain {
    let main = NodeMain::new("duologue")
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
        );
    // Entities: a shopping cart per id (examples/carts), placed by the cluster. A node
    // without a store still hosts them (a durable kind would make `--state` a must for
    // every `duologue node`), their lines gone with the node.
    if with_store {
        main.durable_entity(carts::KIND, carts::start)
    } else {
        main.entity(carts::KIND, carts::start_in_memory)
    }
}
