//! `duologue shards --peer ADDR`: the entity kinds of a cluster, node by node (shards
//! owned, entities active, started, passivated, handed off; messages forwarded, waiting,
//! refused; for kinds that keep state, shards claimed in the store and entities stopped
//! because a claim was lost), as a table. It asks the node at ADDR for its members, then each member up
//! for its status, over authenticated sessions to their `$node` control actors.

use std::process::ExitCode;

use clap::Args;
use duologue::cluster::MemberState;
use duologue::status::EntityKindStatus;

use crate::members::{PeerArgs, client, columns, failure, finish};

#[derive(Debug, Args)]
pub(crate) struct ShardsArgs {
    #[command(flatten)]
    peer: PeerArgs,
}

pub(crate) async fn run(args: ShardsArgs) -> ExitCode {
    let result = async {
        let node = client(&args.peer).await?;
        let members = node.members_at(&args.peer.peer).await.map_err(failure);
        let mut rows = Vec::new();
        for member in members.as_deref().unwrap_or_default() {
            let (Some(addr), true) = (&member.addr, member.state == MemberState::Up) else {
                continue;
            };
            match node.status_at(addr).await {
                Ok(status) => rows.extend(
                    status
                        .entities
                        .iter()
                        .map(|kind| row(&member.identity.name, kind)),
                ),
                Err(error) => eprintln!("duologue shards: {}: {error}", member.identity.name),
            }
        }
        node.shutdown().await;
        members?;
        print!("{}", report(rows));
        Ok(())
    };
    finish("shards", result.await)
}

fn row(node: &str, kind: &EntityKindStatus) -> [String; 12] {
    [
        node.to_owned(),
        kind.kind.clone(),
        kind.shards.to_string(),
        kind.active.to_string(),
        kind.started.to_string(),
        kind.passivated.to_string(),
        kind.handed_off.to_string(),
        kind.forwarded.to_string(),
        kind.waiting.to_string(),
        kind.refused.to_string(),
        kind.claims.to_string(),
        kind.fenced.to_string(),
    ]
}

/// The table, by kind then node; or a line saying no member hosts entities.
fn report(mut rows: Vec<[String; 12]>) -> String {
    if rows.is_empty() {
        return "no member up hosts entities\n".to_owned();
    }
    rows.sort_by(|a, b| (&a[1], &a[0]).cmp(&(&b[1], &b[0])));
    columns(
        [
            "NODE",
            "KIND",
            "SHARDS",
            "ACTIVE",
            "STARTED",
            "PASSIVATED",
            "HANDED OFF",
            "FORWARDED",
            "WAITING",
            "REFUSED",
            "CLAIMED",
            "FENCED",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_by_kind_then_node() {
        let mut cart = EntityKindStatus::default();
        cart.kind = "cart".into();
        cart.shards = 512;
        cart.active = 3;
        let rows = vec![row("b", &cart), row("a", &cart)];
        let table = report(rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{table}");
        assert!(
            lines[1].starts_with("a ") && lines[2].starts_with("b "),
            "{table}"
        );
        assert_eq!(report(Vec::new()), "no member up hosts entities\n");
    }
}
