//! A cluster of three nodes in one process on 127.0.0.1, gossiping every 100 ms:
//! membership converges, cluster events reach a subscribed actor, names resolve
//! wherever they live (typed, with conflicts resolved by the documented rule), a node
//! that leaves or dies takes its names with it, and actors are spawned by kind on
//! another node. The cross-host version, on network namespaces with latency and loss,
//! is `tests/cluster_netns.rs`.

use std::time::{Duration, Instant};

use duologue::{
    Node, NodeConfig, Secret,
    cluster::{ActorSpec, ClusterEvent, LookupError, SpawnError, SpawnOn},
    settings::ClusterConfig,
};
use duologue_actors::chat::ChatRoom;
use duologue_actors::seq_check::proto::{Report, ReportRequest};
use duologue_actors::seq_check::{CheckConfig, SeqCheck};
use duologue_actors_testkit::cluster_lab;
use duologue_testkit::{IgnoringOwner, cluster};
use ractor::Actor;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

const SECRET: &str = "cluster test secret, 32 bytes!!";

fn secret() -> Secret {
    Secret::new(SECRET).unwrap()
}

async fn node(name: &str, seeds: &[std::net::SocketAddr]) -> Node {
    cluster_lab::seq_check_node(name, seeds, secret(), |_| {}).await
}

async fn next_event<T>(
    events: &mut mpsc::UnboundedReceiver<ClusterEvent>,
    pick: impl FnMut(&ClusterEvent) -> Option<T>,
) -> T {
    cluster::next_event(events, WAIT, pick).await
}

async fn wait_members(node: &Node, up: usize) {
    cluster::wait_members(node, up, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_find_names_hear_events_and_spawn_by_kind() {
    let a = node("a", &[]).await;
    let seed = a.gossip_addr().unwrap();
    let mut events = cluster::listen(&a).await;
    let current = next_event(&mut events, |e| match e {
        ClusterEvent::Current(members) => Some(members.len()),
        _ => None,
    })
    .await;
    assert_eq!(current, 1, "a sees itself first");

    let started = Instant::now();
    let b = node("b", &[seed]).await;
    let c = node("c", &[seed]).await;
    let mut joined = Vec::new();
    while joined.len() < 2 {
        joined.push(
            next_event(&mut events, |e| match e {
                ClusterEvent::Joined(m) => Some(m.identity.name.clone()),
                _ => None,
            })
            .await,
        );
    }
    joined.sort();
    assert_eq!(joined, ["b", "c"]);
    wait_members(&b, 3).await;
    wait_members(&c, 3).await;
    eprintln!("converged in {:?}", started.elapsed());
    // The members carry the incarnation each node gossips.
    let seen_c = a.members().unwrap();
    let seen_c = seen_c.iter().find(|m| m.identity.name == "c").unwrap();
    assert_eq!(seen_c.identity, *c.identity());

    // A name registered on c resolves from a, typed; a call answers.
    let (check, _) = Actor::spawn(None, SeqCheck, CheckConfig::from("ticks"))
        .await
        .unwrap();
    c.register("ticks", &check).unwrap();
    let started = Instant::now();
    let located = a.lookup::<SeqCheck>("ticks", WAIT).await.unwrap();
    eprintln!("lookup of a new name took {:?}", started.elapsed());
    assert_eq!(located.node.name, "c");
    let (owner, _) = Actor::spawn(None, IgnoringOwner, ()).await.unwrap();
    let remote = a
        .connect::<SeqCheck>(duologue::Target::named("ticks", WAIT))
        .owner(&owner)
        .await
        .unwrap();
    let report: Report = remote
        .call_as(ReportRequest::default(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(report.received, 0);

    // Typed: looked up with another protocol, the name is refused, not connected to.
    let mismatch = a.lookup::<ChatRoom>("ticks", WAIT).await.unwrap_err();
    assert!(
        matches!(mismatch, LookupError::ProtocolMismatch { ref node, .. } if node == "c"),
        "{mismatch:?}"
    );
    // A name nobody serves: a typed error once the bound passed.
    let missing = a
        .lookup::<SeqCheck>("nobody", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, LookupError::NotFound { .. }),
        "{missing:?}"
    );

    // The same name on b: a conflict, told once, resolved to the longest running node
    // (b started before c).
    let (other, _) = Actor::spawn(None, SeqCheck, CheckConfig::from("ticks"))
        .await
        .unwrap();
    b.register("ticks", &other).unwrap();
    let (winner, others) = next_event(&mut events, |e| match e {
        ClusterEvent::NameConflict {
            name,
            winner,
            others,
        } if name == "ticks" => Some((winner.name.clone(), others.len())),
        _ => None,
    })
    .await;
    assert_eq!((winner.as_str(), others), ("b", 1));
    let located = a.lookup::<SeqCheck>("ticks", WAIT).await.unwrap();
    assert_eq!(located.node.name, "b");
    assert_eq!(located.others.len(), 1);
    // The actor on b stops: its name goes, and the name resolves to c again.
    other.stop(None);
    tokio::time::timeout(WAIT, async {
        loop {
            let changed = a.members_changed();
            if a.lookup::<SeqCheck>("ticks", WAIT).await.unwrap().node.name == "c" {
                return;
            }
            changed.await;
        }
    })
    .await
    .expect("the name never went back to c");

    // Spawn by kind: on a chosen node, on any that offers it, and an unknown kind.
    let spawned = a
        .spawn(
            SpawnOn::Node("b".into()),
            ActorSpec::new("seq-check", "counter"),
        )
        .await
        .unwrap();
    assert_eq!(spawned.node, "b");
    assert_eq!(
        a.lookup::<SeqCheck>("counter", WAIT)
            .await
            .unwrap()
            .node
            .name,
        "b"
    );
    let anywhere = a
        .spawn(
            SpawnOn::AnyOffering,
            ActorSpec::new("seq-check", "anywhere"),
        )
        .await
        .unwrap();
    // b holds one name now; a and c hold none but a sorts first... c has "ticks".
    assert_eq!(
        anywhere.node, "a",
        "the node with the fewest names: {anywhere:?}"
    );
    let taken = a
        .spawn(
            SpawnOn::Node("b".into()),
            ActorSpec::new("seq-check", "counter"),
        )
        .await
        .unwrap_err();
    assert!(matches!(taken, SpawnError::NameTaken { .. }), "{taken:?}");
    let unknown = a
        .spawn(
            SpawnOn::Node("c".into()),
            ActorSpec::new("no-such-kind", "x"),
        )
        .await
        .unwrap_err();
    match unknown {
        SpawnError::UnknownKind { node, known, .. } => {
            assert_eq!(node, "c");
            assert_eq!(known, ["seq-check"]);
        }
        other => panic!("{other:?}"),
    }
    let nowhere = a
        .spawn(SpawnOn::AnyOffering, ActorSpec::new("no-such-kind", "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(nowhere, SpawnError::NoNodeOffers { .. }),
        "{nowhere:?}"
    );

    // c leaves politely: a hears `Left`, and c's name goes with it.
    c.shutdown().await;
    next_event(&mut events, |e| match e {
        ClusterEvent::Left(m) if m.identity.name == "c" => Some(()),
        _ => None,
    })
    .await;
    let gone = a
        .lookup::<SeqCheck>("ticks", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(gone, LookupError::NotFound { .. }), "{gone:?}");

    // b dies (every handle dropped, no farewell): declared unreachable, its names gone.
    let died = Instant::now();
    drop(b);
    next_event(&mut events, |e| match e {
        ClusterEvent::Unreachable(m) if m.identity.name == "b" => Some(()),
        _ => None,
    })
    .await;
    eprintln!("b declared dead after {:?}", died.elapsed());
    assert!(
        a.lookup::<SeqCheck>("counter", Duration::from_millis(300))
            .await
            .is_err()
    );
    a.shutdown().await;
}

#[tokio::test]
async fn a_node_without_a_cluster_says_so() {
    let config = NodeConfig {
        name: "alone".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..NodeConfig::default()
    };
    let node = Node::builder()
        .config(config)
        .secret(secret())
        .start()
        .await
        .unwrap();
    assert!(matches!(
        node.lookup::<SeqCheck>("x", Duration::ZERO).await,
        Err(LookupError::NotClustered)
    ));
    assert!(node.members().is_err());
    // Asked over the wire, it says it is not in a cluster; spawning by address works.
    let addr = node.local_addr().unwrap().to_string();
    let client = Node::builder().secret(secret()).start().await.unwrap();
    assert!(matches!(
        client.members_at(&addr).await,
        Err(SpawnError::NotClustered)
    ));
    let unknown = client
        .spawn_at(&addr, ActorSpec::new("seq-check", "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, SpawnError::UnknownKind { ref known, .. } if known.is_empty()),
        "{unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_secret_is_not_heard() {
    let a = node("a", &[]).await;
    let seed = a.gossip_addr().unwrap();
    // The intruder gossips to the seed first, with another secret.
    let mut cluster = ClusterConfig::new("127.0.0.1:0".parse().unwrap());
    cluster.gossip_interval = Duration::from_millis(100);
    cluster.seeds = vec![seed.to_string()];
    let intruder = Node::builder()
        .config(NodeConfig {
            name: "intruder".into(),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            cluster: Some(cluster),
            ..NodeConfig::default()
        })
        .secret(Secret::new("another secret, also 32 bytes!!!").unwrap())
        .start()
        .await
        .unwrap();
    // A legitimate node joins after it: once the seed and it see each other, the
    // intruder has had as many rounds as it needed, and was not heard.
    let b = node("b", &[seed]).await;
    wait_members(&a, 2).await;
    wait_members(&b, 2).await;
    let names = |node: &Node| -> Vec<String> {
        node.members()
            .unwrap()
            .into_iter()
            .map(|m| m.identity.name)
            .collect()
    };
    assert_eq!(names(&a), ["a", "b"]);
    assert_eq!(names(&b), ["a", "b"]);
    assert_eq!(names(&intruder), ["intruder"]);
}

/// `duologue members` and `duologue spawn`, the operator's commands, against a node.
async fn operator(args: &[&str]) -> (Option<i32>, Vec<String>, String) {
    let secrets = duologue_testkit::SecretDir::create().unwrap();
    let file = secrets.write("cluster.secret", SECRET).unwrap();
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend(["--secret-file".to_owned(), file.display().to_string()]);
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_duologue"));
    let mut child = duologue_testkit::ChildGuard::spawn("operator", exe, &all).unwrap();
    let mut out = Vec::new();
    while let Some(line) = child.stdout_line(WAIT).await.unwrap() {
        out.push(line);
    }
    let err = child.stderr_line(WAIT).await.unwrap().unwrap_or_default();
    (child.wait(WAIT).await.unwrap(), out, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duologue_members_and_spawn_work_through_any_node() {
    let a = node("a", &[]).await;
    let b = node("b", &[a.gossip_addr().unwrap()]).await;
    wait_members(&a, 2).await;
    let a_addr = a.local_addr().unwrap().to_string();
    let (code, out, _) =
        operator(&["spawn", "--peer", &a_addr, "--on", "b", "seq-check:counter"]).await;
    assert_eq!(code, Some(0), "{out:?}");
    assert_eq!(
        out,
        [format!(
            "spawned counter on b at {}",
            b.local_addr().unwrap()
        )]
    );
    a.lookup::<SeqCheck>("counter", WAIT).await.unwrap();
    let (code, out, _) = operator(&["members", "--peer", &a_addr]).await;
    assert_eq!(code, Some(0), "{out:?}");
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(out[0].starts_with("NODE") && out[0].contains("STATE") && out[0].contains("ACTORS"));
    assert!(
        out[1].starts_with("a ") && out[1].contains(" up "),
        "{out:?}"
    );
    assert!(
        out[2].starts_with("b ")
            && out[2].contains(" up ")
            && out[2].contains("counter (duologue.diag.v1"),
        "{out:?}"
    );
    // A kind nobody has: a typed refusal, exit 8, the known kinds named.
    let (code, _, err) = operator(&["spawn", "--peer", &a_addr, "--any", "no-such-kind:x"]).await;
    assert_eq!(code, Some(8), "{err}");
    assert!(
        err.contains("no member up offers actor kind \"no-such-kind\""),
        "{err}"
    );
    let (code, _, err) = operator(&["spawn", "--peer", &a_addr, "no-such-kind:x"]).await;
    assert_eq!(code, Some(8), "{err}");
    assert!(err.contains("(it has: seq-check)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_member_list_can_be_awaited_until_it_changes() {
    let a = node("a", &[]).await;
    let addr = a.local_addr().unwrap().to_string();
    let client = Node::builder().secret(secret()).start().await.unwrap();
    let first = client.members_changed_at(&addr, 0, WAIT).await.unwrap();
    assert_eq!(first.members.len(), 1);
    // Nothing changes: answered once the bound passed, with the same version.
    let same = client
        .members_changed_at(&addr, first.version, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(same.version, first.version);
    // A node joins while the question waits: it is answered with the change.
    let seeds = [a.gossip_addr().unwrap()];
    let (changed, _b) = tokio::join!(
        client.members_changed_at(&addr, first.version, WAIT),
        node("b", &seeds)
    );
    let changed = changed.unwrap();
    assert!(changed.version > first.version);
    assert!(
        changed.members.iter().any(|m| m.identity.name == "b"),
        "{changed:?}"
    );
}
