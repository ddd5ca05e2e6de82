//! `duologue members --peer ADDR` and `duologue spawn --peer ADDR KIND:NAME`: an
//! operator's view of a cluster and its hand on it, through any one node. Both open an
//! authenticated session to the node's `$node` control actor, as any peer does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use duologue::cli::{DialTlsArgs, duration};
use duologue::{
    Node, Secret,
    cluster::{ActorSpec, Member, SpawnError, printable},
};

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
    /// List every named actor, one a line (NODE, ACTOR, PROTOCOL), instead of the
    /// members' table (which shows the first few of each member's).
    #[arg(long)]
    actors: bool,
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
        let members = members.map_err(failure)?;
        if args.actors {
            print!("{}", actor_lines(&members));
        } else {
            print!("{}", table(&members));
        }
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
/// ([`duologue::cluster::spawn_candidates`], as `SpawnOn::AnyOffering` chooses).
fn choose(members: &[Member], on: Option<&str>, kind: &str) -> Result<String, (u8, String)> {
    let chosen = match on {
        Some(name) => members
            .iter()
            .filter(|m| m.serves() && m.identity.name == name)
            .max_by_key(|m| m.generation),
        None => duologue::cluster::spawn_candidates(members, kind)
            .first()
            .copied(),
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

/// How many of a member's actors its line in the table shows; `--actors` lists all.
const ACTORS_SHOWN: usize = 5;

/// The longest a name or address is shown in a table, in characters.
const CELL_CHARS: usize = 80;

/// The members as a table: one line each, ordered by name, with the first of their
/// actors and how many more there are. Names come from peers: shown escaped, and cut.
pub(crate) fn table(members: &[Member]) -> String {
    let rows: Vec<[String; 5]> = members
        .iter()
        .map(|m| {
            let mut actors: Vec<String> = m
                .actors
                .iter()
                .take(ACTORS_SHOWN)
                .map(|a| {
                    let name = printable(&a.name, CELL_CHARS);
                    if a.protocol.is_empty() {
                        name
                    } else {
                        format!("{name} ({})", printable(&a.protocol, CELL_CHARS))
                    }
                })
                .collect();
            if let Some(more) = m.actors.len().checked_sub(ACTORS_SHOWN).filter(|n| *n > 0) {
                actors.push(format!("… and {more} more"));
            }
            [
                printable(&m.identity.name, CELL_CHARS),
                m.state.to_string(),
                m.addr
                    .as_deref()
                    .map_or_else(|| "-".into(), |a| printable(a, CELL_CHARS)),
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

/// Every member's actors, one a line, escaped but whole.
fn actor_lines(members: &[Member]) -> String {
    let rows = members
        .iter()
        .flat_map(|m| {
            m.actors.iter().map(|a| {
                [
                    printable(&m.identity.name, usize::MAX),
                    printable(&a.name, usize::MAX),
                    if a.protocol.is_empty() {
                        "-".into()
                    } else {
                        printable(&a.protocol, usize::MAX)
                    },
                ]
            })
        })
        .collect();
    columns(["NODE", "ACTOR", "PROTOCOL"], rows)
}

/// `header` and `rows` in left-aligned columns two spaces apart, a line each. The last
/// column is not padded, so a long cell there widens nothing.
pub(crate) fn columns<const N: usize>(header: [&str; N], rows: Vec<[String; N]>) -> String {
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row).take(N.saturating_sub(1)) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        let mut line = String::new();
        for (at, (cell, width)) in row.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if at + 1 < N {
                // Padded by hand: `format!` refuses widths above 65 535.
                let pad = width.saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use duologue::{
        cluster::{MemberState, NamedActor},
        wire::NodeIdentity,
    };

    fn member(name: &str, actors: usize) -> Member {
        Member {
            identity: NodeIdentity {
                name: name.into(),
                incarnation: uuid::Uuid::nil(),
            },
            generation: 1,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            addr: Some("127.0.0.1:2".into()),
            state: MemberState::Up,
            actors: (0..actors)
                .map(|i| NamedActor {
                    name: format!("cart-{i:06}"),
                    protocol: "shop.v1.Cart".into(),
                })
                .collect(),
            kinds: Vec::new(),
            entity_kinds: Vec::new(),
            declared_entity_kinds: None,
        }
    }

    #[test]
    fn a_table_of_members_with_a_hundred_thousand_actors_stays_readable() {
        let members = [member("alpha", 100_000), member("beta\nevil", 3)];
        let table = table(&members);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[1].ends_with("… and 99995 more"), "{}", lines[1]);
        assert!(lines[2].starts_with("beta\\u{a}evil"), "{}", lines[2]);
        assert!(lines.iter().all(|l| l.chars().count() < 1000));
        let listed = actor_lines(&members);
        assert_eq!(listed.lines().count(), 1 + 100_003);
    }

    #[test]
    fn a_last_column_wider_than_a_format_width_is_printed_whole() {
        let wide = "x".repeat(70_000);
        let out = columns(["A", "B"], vec![["a".into(), wide.clone()]]);
        assert_eq!(out, format!("A  B\na  {wide}\n"));
    }
}
