//! `duologue node`: one node process hosting named actors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use duologue::actors::chat::{ChatRoom, RoomConfig};
use duologue::actors::seq_check::{CheckConfig, SeqCheck};
use duologue::config::SessionPolicy;
use duologue::{Node, NodeConfig};
use ractor::Actor;
use tokio::signal::unix::{SignalKind, signal};

use crate::chat::duration;

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
    /// Session timings and policy.
    #[command(flatten)]
    timing: Timing,
    /// An actor to host, as KIND:NAME (kinds: chat-room, seq-check; a seq-check may be
    /// slowed to RATE ticks a second as seq-check:NAME@RATE). Repeatable.
    #[arg(long = "actor", value_name = "KIND:NAME")]
    actors: Vec<String>,
}

/// The node's timing options (defaults as in `duologue::NodeConfig`).
#[derive(Debug, Args)]
struct Timing {
    /// What a session does when its stream breaks: resume, restart, escalate or stop.
    #[arg(long, default_value = "resume", value_parser = policy)]
    policy: SessionPolicy,
    /// How long an interrupted session may take to resume before it is lost.
    #[arg(long, default_value = "30s", value_parser = duration)]
    resume_timeout: Duration,
    /// HTTP/2 keepalive ping interval.
    #[arg(long, default_value = "1s", value_parser = duration)]
    keepalive_interval: Duration,
    /// A ping unanswered this long means the connection is dead.
    #[arg(long, default_value = "1s", value_parser = duration)]
    keepalive_timeout: Duration,
    /// With messages unacknowledged, a peer silent this long interrupts the session.
    #[arg(long, default_value = "3s", value_parser = duration)]
    silence_timeout: Duration,
    /// How long to keep trying to open a session when the peer's connection is refused
    /// or reset before the session is established.
    #[arg(long, default_value = "10s", value_parser = duration)]
    connect_timeout: Duration,
    /// Under the restart policy, how long a lost session tries to open its replacement.
    #[arg(long, default_value = "300s", value_parser = duration)]
    restart_timeout: Duration,
    /// A handshake must complete within this.
    #[arg(long, default_value = "10s", value_parser = duration)]
    handshake_timeout: Duration,
    /// Sessions still draining this long after SIGTERM are cancelled.
    #[arg(long, default_value = "5s", value_parser = duration)]
    shutdown_drain: Duration,
    /// How many messages a peer may send ahead of this node's actor consuming them.
    #[arg(long, default_value_t = 65536)]
    credit_window: u64,
}

impl Timing {
    fn apply(&self, config: &mut NodeConfig) {
        config.policy = self.policy;
        config.session.resume_timeout = self.resume_timeout;
        config.keepalive_interval = self.keepalive_interval;
        config.keepalive_timeout = self.keepalive_timeout;
        config.session.silence_timeout = self.silence_timeout;
        config.session.handshake_timeout = self.handshake_timeout;
        config.connect_timeout = self.connect_timeout;
        config.restart_timeout = self.restart_timeout;
        config.shutdown_drain = self.shutdown_drain;
        config.session.credit_window = self.credit_window;
    }
}

fn policy(text: &str) -> Result<SessionPolicy, String> {
    match text {
        "resume" => Ok(SessionPolicy::Resume),
        "restart" => Ok(SessionPolicy::Restart),
        "escalate" => Ok(SessionPolicy::Escalate),
        "stop" => Ok(SessionPolicy::Stop),
        other => Err(format!(
            "{other:?}: expected resume, restart, escalate or stop"
        )),
    }
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
    let mut config = NodeConfig {
        name: args.name.clone(),
        listen: Some(args.listen),
        ..NodeConfig::default()
    };
    args.timing.apply(&mut config);
    let node = Node::builder()
        .config(config)
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
                let (room, _) = Actor::spawn(None, ChatRoom, RoomConfig::from(name))
                    .await
                    .map_err(|e| format!("cannot start chat room {name}: {e}"))?;
                node.register(name, &room).map_err(|e| e.to_string())?;
                hosted.push(room.get_cell());
            }
            "edit" | "reconcile" | "pipeline" => {
                let actor = match kind {
                    "edit" => duologue::actors::edit::host(&node, name).await,
                    "reconcile" => duologue::actors::reconcile::host(&node, name).await,
                    _ => duologue::actors::pipeline::host(&node, name).await,
                };
                hosted.push(actor.map_err(|e| format!("--actor {spec:?}: {e}"))?);
            }
            "seq-check" => {
                // NAME or NAME@RATE: a checker that takes at most RATE ticks a second.
                let (name, per_second) = match name.split_once('@') {
                    Some((name, rate)) => {
                        let rate = rate
                            .parse()
                            .map_err(|_| format!("--actor {spec:?}: RATE is ticks per second"))?;
                        (name, Some(rate))
                    }
                    None => (name, None),
                };
                let config = CheckConfig {
                    name: name.to_owned(),
                    per_second,
                };
                let (check, _) = Actor::spawn(None, SeqCheck, config)
                    .await
                    .map_err(|e| format!("cannot start sequence checker {name}: {e}"))?;
                node.register(name, &check).map_err(|e| e.to_string())?;
                hosted.push(check.get_cell());
            }
            other => {
                return Err(format!(
                    "--actor {spec:?}: unknown kind {other:?} (known: chat-room, seq-check, edit, reconcile, pipeline)"
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
