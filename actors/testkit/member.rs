//! A legitimate chat member that checks a node under attack still serves, for the
//! `hostile_admission` and `hostile_admin` tests and the `hostile` bench.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use duologue::{Node, Secret};
use duologue_actors::chat::proto::Text;
use duologue_actors::chat::{ChatEvent, join};

/// Upper bound of any single wait.
const WAIT: Duration = Duration::from_secs(10);

/// A member that knows the secret joins `lobby` at `addr` and gets a text acknowledged.
///
/// # Panics
/// When it does not ([`try_legitimate_member`] says why).
pub async fn legitimate_member_talks(addr: SocketAddr, secret: &Path) {
    try_legitimate_member(addr, secret).await.unwrap();
}

/// As [`legitimate_member_talks`], saying what failed instead of panicking.
///
/// # Errors
/// What failed: the secret file, the member's node, the join, the text or its ack.
pub async fn try_legitimate_member(addr: SocketAddr, secret: &Path) -> Result<(), String> {
    let secret = Secret::from_file(secret).map_err(|e| e.to_string())?;
    let node = Node::builder()
        .name("alice-node")
        .secret(secret)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let outcome = member_talks(&node, addr).await;
    node.shutdown().await;
    outcome
}

async fn member_talks(node: &Node, addr: SocketAddr) -> Result<(), String> {
    let mut alice = join(node, &addr.to_string(), "lobby", "alice", WAIT)
        .await
        .map_err(|e| format!("join: {e}"))?;
    alice
        .room
        .cast(Text {
            client_seq: 1,
            text: "hello".into(),
        })
        .await
        .map_err(|e| format!("cast: {e}"))?;
    loop {
        let event = tokio::time::timeout(WAIT, alice.events.recv())
            .await
            .map_err(|_| "no event in time".to_owned())?
            .ok_or_else(|| "the session ended".to_owned())?;
        match event {
            ChatEvent::Presence(_) => {}
            ChatEvent::Acked(ack) if ack.client_seq == 1 => return Ok(()),
            other => return Err(format!("expected an ack, got {other:?}")),
        }
    }
}
