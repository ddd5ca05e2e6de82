//! Bookkeeping shrinks: links to peers with no session left are dropped after the idle
//! grace (at once when the connection failed), and stop reasons of stopped actors are
//! dropped once their sessions have closed. Counted through `Node::bookkeeping`.

mod support;

use std::time::Duration;

use duologue::status::Bookkeeping;
use duologue::{Node, NodeConfig, RemoteRef};
use support::*;

const PEERS: usize = 4;

/// A dialling node whose idle links are dropped after `grace`.
async fn dialling(grace: Duration) -> Node {
    node_with(NodeConfig {
        name: "client".into(),
        link_idle_timeout: grace,
        connect_timeout: Duration::from_millis(300),
        ..NodeConfig::default()
    })
    .await
}

/// Waits, within [`WAIT`], until `node`'s bookkeeping is `wanted`; returns the last seen.
async fn settles(node: &Node, wanted: Bookkeeping) -> Bookkeeping {
    let polled = tokio::time::timeout(WAIT, async {
        loop {
            let changed = node.bookkeeping_changed();
            if node.bookkeeping() == wanted {
                break;
            }
            changed.await;
        }
    })
    .await;
    let seen = node.bookkeeping();
    assert!(
        polled.is_ok(),
        "bookkeeping stays at {seen:?}, not {wanted:?}"
    );
    seen
}

/// `PEERS` listening nodes, each with a probe.
async fn peers() -> Vec<Served> {
    let mut peers = Vec::new();
    for n in 0..PEERS {
        peers.push(served_probe(listening_node(&format!("peer-{n}"), SECRET).await).await);
    }
    peers
}

#[tokio::test]
async fn links_to_peers_without_sessions_are_dropped_after_the_idle_grace() {
    let peers = peers().await;
    let client = dialling(Duration::from_millis(200)).await;
    let (owner, _) = probe().await;
    let mut remotes: Vec<RemoteRef<PingPong>> = Vec::new();
    for peer in &peers {
        remotes.push(
            client
                .connect((&addr(&peer.node), "probe"))
                .owner(&owner)
                .await
                .unwrap(),
        );
    }
    assert_eq!(client.bookkeeping().links, PEERS);

    for remote in &remotes {
        remote.session().abort();
        tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    }

    let settled = settles(
        &client,
        Bookkeeping {
            owners: 1,
            ..Bookkeeping::default()
        },
    )
    .await;
    assert_eq!(settled.links, 0);
}

/// The address the next session to `seen`'s probe came from.
async fn opened_from(
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
) -> std::net::SocketAddr {
    loop {
        if let duologue::SessionSignal::Opened(session) = next_signal(seen).await {
            return session
                .remote_addr()
                .expect("an accepted session knows its peer");
        }
    }
}

#[tokio::test]
async fn a_link_taken_up_again_within_the_grace_keeps_its_connection() {
    let mut peer = served_probe(listening_node("peer", SECRET).await).await;
    let client = dialling(WAIT * 2).await;
    let (owner, _) = probe().await;
    let first: RemoteRef<PingPong> = client
        .connect((&addr(&peer.node), "probe"))
        .owner(&owner)
        .await
        .unwrap();
    let first_from = opened_from(&mut peer.seen).await;
    first.session().abort();
    tokio::time::timeout(WAIT, first.closed()).await.unwrap();

    let second: RemoteRef<PingPong> = client
        .connect((&addr(&peer.node), "probe"))
        .owner(&owner)
        .await
        .unwrap();

    assert_eq!(
        opened_from(&mut peer.seen).await,
        first_from,
        "the same connection"
    );
    assert_eq!(client.bookkeeping().links, 1);
    let pong = second
        .call(Ping { n: 3, body: vec![] }, WAIT)
        .await
        .unwrap();
    assert_eq!(pong.n, 3);
}

#[tokio::test]
async fn a_link_whose_connection_failed_is_dropped_at_once() {
    let client = dialling(WAIT * 2).await;
    let (owner, _) = probe().await;
    for _ in 0..PEERS {
        let target = format!("127.0.0.1:{}", closed_port());
        let result = client
            .connect::<PingPong>((&target, "probe"))
            .owner(&owner)
            .await;
        assert!(result.is_err(), "nothing listens on {target}");
    }

    assert_eq!(client.bookkeeping().links, 0);
}

#[tokio::test]
async fn stop_reasons_are_dropped_once_the_sessions_closed() {
    let server = listening_node("server", SECRET).await;
    let client = dialling(Duration::from_millis(200)).await;
    let (owner, _) = probe().await;
    let mut targets = Vec::new();
    let mut seen = Vec::new();
    let mut remotes: Vec<RemoteRef<PingPong>> = Vec::new();
    for n in 0..PEERS {
        let (target, target_seen) = probe().await;
        seen.push(target_seen);
        let name = format!("probe-{n}");
        server.register(name.clone(), &target).unwrap();
        remotes.push(
            client
                .connect((&addr(&server), &name))
                .owner(&owner)
                .await
                .unwrap(),
        );
        targets.push(target);
    }

    for target in &targets {
        target.stop(Some("maintenance".into()));
    }
    for remote in &remotes {
        tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    }

    settles(&server, Bookkeeping::default()).await;
}

/// An owner leaves the node's bookkeeping once its actor stopped, with its sessions.
#[tokio::test]
async fn an_owner_leaves_the_bookkeeping_when_its_actor_stops() {
    let peers = peers().await;
    let client = dialling(Duration::from_millis(200)).await;
    let (owner, _) = probe().await;
    let remote: RemoteRef<PingPong> = client
        .connect((&addr(&peers[0].node), "probe"))
        .owner(&owner)
        .await
        .unwrap();
    assert_eq!(client.bookkeeping().owners, 1);
    owner.stop_and_wait(None, None).await.unwrap();
    tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    let settled = settles(&client, Bookkeeping::default()).await;
    assert_eq!(settled.owners, 0);
}
