//! `duologue status --peer ADDR`: what one node is doing, its sessions (peer, actor,
//! state, credit, backlog, rates) and its cluster's members, as tables. It asks the
//! node's `$node` control actor over an authenticated session, as any peer does.

use std::process::ExitCode;

use clap::Args;
use duologue::status::{NodeStatus, Role, SessionStatus};

use crate::members::{PeerArgs, client, columns, failure, finish, table};

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    peer: PeerArgs,
}

pub(crate) async fn run(args: StatusArgs) -> ExitCode {
    let result = async {
        let node = client(&args.peer).await?;
        let status = node.status_at(&args.peer.peer).await;
        // Politely: the peer sees the control session finish, not a lost connection.
        node.shutdown().await;
        print!("{}", report(&status.map_err(failure)?));
        Ok(())
    };
    finish("status", result.await)
}

/// The node's line, its sessions, then its members.
fn report(status: &NodeStatus) -> String {
    let mut out = format!(
        "node {} at {} (incarnation {}), up {}s{}; {} sessions now, {} opened since start\n\n",
        status.identity.name,
        status
            .addr
            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
        status.identity.incarnation,
        status.uptime.as_secs(),
        if status.draining { ", draining" } else { "" },
        status.sessions.len(),
        status.sessions_opened,
    );
    if let Some(cluster) = &status.cluster {
        let [up, leaving, unreachable] = cluster.members;
        out.push_str(&format!(
            "cluster: {up} up, {leaving} leaving, {unreachable} unreachable; {} names; \
             {} of this node's name changes not yet gossiped{}\n\n",
            cluster.names,
            cluster.names_unpublished,
            if cluster.names_unpublished > 0 {
                format!(
                    " (the oldest for {:.1}s)",
                    cluster.publish_lag.as_secs_f64()
                )
            } else {
                String::new()
            },
        ));
    }
    out.push_str(&sessions(&status.sessions));
    if !status.members.is_empty() {
        out.push('\n');
        out.push_str(&table(&status.members));
    }
    out
}

fn sessions(sessions: &[SessionStatus]) -> String {
    let rows = sessions
        .iter()
        .map(|s| {
            [
                s.peer.name.clone(),
                s.actor.clone(),
                match s.role {
                    Role::Initiator => "out",
                    Role::Acceptor => "in",
                }
                .into(),
                s.state.to_string(),
                if s.flow.send_blocked {
                    format!("{} (blocked)", s.flow.credit)
                } else {
                    s.flow.credit.to_string()
                },
                s.backlog().to_string(),
                s.unacked.to_string(),
                format!("{:.0}", s.rate.messages_in),
                format!("{:.0}", s.rate.messages_out),
                s.counters.messages_in.to_string(),
                s.counters.messages_out.to_string(),
                s.counters.resumes.to_string(),
            ]
        })
        .collect();
    columns(
        [
            "PEER", "ACTOR", "DIR", "STATE", "CREDIT", "BACKLOG", "UNACKED", "IN/S", "OUT/S", "IN",
            "OUT", "RESUMES",
        ],
        rows,
    )
}
