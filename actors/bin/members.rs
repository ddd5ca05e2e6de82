//! `duologue members --peer ADDR` and `duologue spawn --peer ADDR KIND:NAME`: an
//! operator's view of a cluster and its hand on it, through any one node. Both open an
//! authenticated session to the node's `$node` control actor, as any peer does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use duologue::cli::{DialTlsArgs, duration};
use duologue::{ActorSpec, Member, Node, Secret, SpawnError};

/// How to reach one node of the cluster.
#[derive(Debug, Args)]
pub(crate) struct PeerArgs {
    /// A node of the cluster (`host:port`, its session address).
    #[arg(long)]
    pub(crate) peer: String,
    /// File holding the cluster's shared secret.
    #[arg(long)]
    secret_file: PathBuf,
    /// TLS for the session to the node.
    #[command(flatten)]
    tls: DialTlsArgs,
    /// How long to keep trying to reach the node.
    #[arg(long, default_value = "5s", value_parser = duration)]
    connect_timeout: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct MembersArgs {
    #[command(flatten)]
    peer: PeerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SpawnArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// Start it on the member of this name [default: the node --peer names].
    #[arg(long, conflicts_with = "any")]
    on: Option<String>,
    /// Start it on any member that offers the kind (the one with the fewest named
    /// actors).
    #[arg(long)]
    any: bool,
    /// What to start, as KIND:NAME or KIND:NAME@ARG.
    #[arg(value_parser = ActorSpec::parse)]
    actor: ActorSpec,
}

/// Exit codes beyond 1 (any other failure): 5 unreachable, 7 not in a cluster, 8 the
/// spawn was refused, 9 the node's gossip engine failed.
mod exit {
    pub(super) const UNREACHABLE: u8 = 5;
    pub(super) const NOT_CLUSTERED: u8 = 7;
    pub(super) const REFUSED: u8 = 8;
    pub(super) const GOSSIP_STOPPED: u8 = 9;
}

pub(crate) async fn members(args: MembersArgs) -> ExitCode {
    let result = async {
        let node = client(&args.peer).await?;
        let members = node.members_at(&args.peer.peer).await;
        // Politely: the peer sees the control session finish, not a lost connection.
        node.shutdown().await;
        print!("{}", table(&members.map_err(failure)?));
        Ok(())
    };
    finish("members", result.await)
}

pub(crate) async fn spawn(args: SpawnArgs) -> ExitCode {
    let result = async {
        let node = client(&args.peer).await?;
        let spawned = async {
            if args.any || args.on.is_some() {
                // The member list comes from the peer; the spawn goes to the member chosen.
                let members = node.members_at(&args.peer.peer).await.map_err(failure)?;
                let addr = choose(&members, args.on.as_deref(), &args.actor.kind)?;
                node.spawn_at(&addr, args.actor.clone()).await
            } else {
                node.spawn_at(&args.peer.peer, args.actor.clone()).await
            }
            .map_err(failure)
        }
        .await;
        node.shutdown().await;
        let spawned = spawned?;
        println!(
            "spawned {} on {} at {}",
            spawned.name, spawned.node, spawned.addr
        );
        Ok(())
    };
    finish("spawn", result.await)
}

/// The session address of the member `on` names, or of the first that offers `kind`
/// ([`duologue::spawn_candidates`], as `SpawnOn::AnyOffering` chooses).
fn choose(members: &[Member], on: Option<&str>, kind: &str) -> Result<String, (u8, String)> {
    let chosen = match on {
        Some(name) => members
            .iter()
            .filter(|m| m.serves() && m.identity.name == name)
            .max_by_key(|m| m.generation),
        None => duologue::spawn_candidates(members, kind).first().copied(),
    };
    chosen.and_then(|m| m.addr.clone()).ok_or_else(|| {
        let why = match on {
            Some(name) => format!("no member named {name:?} is up"),
            None => format!("no member up offers actor kind {kind:?}"),
        };
        (exit::REFUSED, why)
    })
}

pub(crate) async fn client(peer: &PeerArgs) -> Result<Node, (u8, String)> {
    let fail = |m: String| (1, m);
    let secret = Secret::from_file(&peer.secret_file).map_err(|e| fail(e.to_string()))?;
    let mut builder = Node::builder()
        .name(format!("operator-{}", std::process::id()))
        .secret(secret)
        .connect_timeout(peer.connect_timeout);
    if let Some(tls) = peer.tls.load().map_err(|e| fail(e.to_string()))? {
        builder = builder.peer_tls(tls);
    }
    builder.start().await.map_err(|e| fail(e.to_string()))
}

pub(crate) fn failure(error: SpawnError) -> (u8, String) {
    let code = match &error {
        SpawnError::Connect(_) | SpawnError::Call(_) => exit::UNREACHABLE,
        SpawnError::NotClustered => exit::NOT_CLUSTERED,
        SpawnError::GossipStopped { .. } => exit::GOSSIP_STOPPED,
        _ => exit::REFUSED,
    };
    (code, error.to_string())
}

pub(crate) fn finish(command: &str, result: Result<(), (u8, String)>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("duologue {command}: {message}");
            ExitCode::from(code)
        }
    }
}

/// The members as a table: one line each, ordered by name.
pub(crate) fn table(members: &[Member]) -> String {
    let rows: Vec<[String; 5]> = members
        .iter()
        .map(|m| {
            let actors: Vec<String> = m
                .actors
                .iter()
                .map(|a| {
                    if a.protocol.is_empty() {
                        a.name.clone()
                    } else {
                        format!("{} ({})", a.name, a.protocol)
                    }
                })
                .collect();
            [
                m.identity.name.clone(),
                m.state.to_string(),
                m.addr.clone().unwrap_or_else(|| "-".into()),
                m.gossip_addr.to_string(),
                if actors.is_empty() {
                    "-".into()
                } else {
                    actors.join(", ")
                },
            ]
        })
        .collect();
    columns(["NODE", "STATE", "ADDR", "GOSSIP", "ACTORS"], rows)
}

/// `header` and `rows` in left-aligned columns two spaces apart, a line each.
pub(crate) fn columns<const N: usize>(header: [&str; N], rows: Vec<[String; N]>) -> String {
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
