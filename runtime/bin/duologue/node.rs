//! `duologue node`: one node process hosting named actors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use duologue::Node;
use duologue::actors::chat::ChatRoom;
use ractor::Actor;
use tokio::signal::unix::{SignalKind, signal};

/// Options of `duologue node`.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The node's name.
    #[arg(long)]
    name: String,
    /// Address to accept sessions on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// File holding the cluster's shared secret (16 bytes or more).
    #[arg(long)]
    secret_file: PathBuf,
    /// An actor to host, as KIND:NAME (kinds: chat-room). Repeatable.
    #[arg(long = "actor", value_name = "KIND:NAME")]
    actors: Vec<String>,
}

pub(crate) async fn run(args: NodeArgs) -> ExitCode {
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("duologue node: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: NodeArgs) -> Result<(), String> {
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let node = Node::builder()
        .name(&args.name)
        .listen(args.listen)
        .secret_file(&args.secret_file)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let mut hosted = Vec::new();
    for spec in &args.actors {
        let (kind, name) = spec
            .split_once(':')
            .ok_or_else(|| format!("--actor {spec:?}: expected KIND:NAME"))?;
        match kind {
            "chat-room" => {
                let (room, _) = Actor::spawn(None, ChatRoom, name.to_owned())
                    .await
                    .map_err(|e| format!("cannot start chat room {name}: {e}"))?;
                node.register(name, &room).map_err(|e| e.to_string())?;
                hosted.push(room.get_cell());
            }
            other => {
                return Err(format!(
                    "--actor {spec:?}: unknown kind {other:?} (known: chat-room)"
                ));
            }
        }
    }
    let addr = node.local_addr().ok_or("the node has no listen address")?;
    // The first stdout line is the contract with whoever started us.
    println!("listening on {addr}");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    let drained = node.shutdown().await;
    for actor in hosted {
        actor.stop(Some("node shutdown".into()));
    }
    if !drained {
        eprintln!("duologue node: some sessions did not drain in time and were cancelled");
    }
    Ok(())
}
