//! Entities in this process: started by their first message, one activation per id,
//! messages in order, answered calls, passivation when idle and at the bound (drained:
//! nothing lost, `post_stop` runs, the next message starts it again), a constructor that
//! fails answering calls with a typed fault, and two clustered nodes sharing the shards
//! over one carrier session each way.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use duologue::settings::{ClusterConfig, EntityConfig};
use duologue::{CallError, Entity, EntityError, Node, NodeBuilder, Secret};
use duologue_testkit::probe::{Ping, PingPong, Pong, SECRET, WAIT};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

/// What the test entities tell: (node, id, event).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Life {
    Started,
    Got(u64),
    Stopped,
}

type Told = mpsc::UnboundedSender<(String, String, Life)>;

/// An entity that tells every start, message and stop; it answers a call with its `n`.
struct Tracked;

struct TrackedState {
    node: String,
    id: String,
    told: Told,
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Tracked {
    type Msg = Entity<PingPong>;
    type State = TrackedState;
    type Arguments = TrackedState;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        state: TrackedState,
    ) -> Result<TrackedState, ActorProcessingErr> {
        let _ = state
            .told
            .send((state.node.clone(), state.id.clone(), Life::Started));
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut TrackedState,
    ) -> Result<(), ActorProcessingErr> {
        let n = match message {
            Entity::Cast { message, .. } => message.n,
            Entity::Call { request, reply, .. } => {
                let _ = reply.send(Pong {
                    n: request.n,
                    deadline_left_ms: 0,
                });
                request.n
            }
            Entity::Local(never) => match never {},
        };
        let _ = state
            .told
            .send((state.node.clone(), state.id.clone(), Life::Got(n)));
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut TrackedState,
    ) -> Result<(), ActorProcessingErr> {
        let _ = state
            .told
            .send((state.node.clone(), state.id.clone(), Life::Stopped));
        Ok(())
    }
}

/// A builder for node `name` hosting `tracked` entities that tell `told`; ids starting
/// with `broken` fail to start, ids starting with `slow` take 50 ms to.
fn hosting(name: &str, told: &Told, entities: EntityConfig) -> NodeBuilder {
    let told = told.clone();
    let node_name = name.to_owned();
    Node::builder()
        .name(name)
        .listen("127.0.0.1:0".parse().unwrap())
        .secret(Secret::new(SECRET).unwrap())
        .entities(entities)
        .entity("tracked", move |_node: Node, id: String| {
            let state = TrackedState {
                node: node_name.clone(),
                id: id.clone(),
                told: told.clone(),
            };
            async move {
                if id.starts_with("broken") {
                    return Err(format!("{id} cannot start"));
                }
                if id.starts_with("slow") {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let (actor, _) = Actor::spawn(None, Tracked, state)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(actor)
            }
        })
}

fn quick() -> EntityConfig {
    let mut config = EntityConfig::default();
    config.idle_after = Duration::from_secs(3600);
    config
}

async fn next(
    told: &mut mpsc::UnboundedReceiver<(String, String, Life)>,
) -> (String, String, Life) {
    tokio::time::timeout(WAIT, told.recv())
        .await
        .expect("an entity event within the wait bound")
        .expect("told")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_message_starts_one_entity_per_id_and_each_gets_its_messages_in_order() {
    let (tx, mut told) = mpsc::unbounded_channel();
    let node = hosting("solo", &tx, quick()).start().await.unwrap();
    const IDS: u64 = 50;
    const EACH: u64 = 40;
    for n in 0..EACH {
        for id in 0..IDS {
            let cart = node
                .entity::<PingPong>("tracked", &format!("e{id}"))
                .unwrap();
            cart.cast(Ping { n, body: vec![] }).await.unwrap();
        }
    }
    let mut started = HashMap::new();
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    while got.values().map(Vec::len).sum::<usize>() < (IDS * EACH) as usize {
        match next(&mut told).await {
            (_, id, Life::Started) => *started.entry(id).or_insert(0) += 1,
            (_, id, Life::Got(n)) => got.entry(id).or_default().push(n),
            (_, id, Life::Stopped) => panic!("{id} stopped"),
        }
    }
    assert_eq!(started.len(), IDS as usize);
    assert!(
        started.values().all(|&n| n == 1),
        "one activation each: {started:?}"
    );
    for (id, seen) in &got {
        assert_eq!(seen, &(0..EACH).collect::<Vec<_>>(), "{id} in order");
    }
    let entity = node.entity::<PingPong>("tracked", "e7").unwrap();
    let pong = entity
        .call(
            Ping {
                n: 99,
                body: vec![],
            },
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(pong.n, 99);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_entity_is_drained_and_its_next_message_starts_it_again() {
    let (tx, mut told) = mpsc::unbounded_channel();
    let mut config = quick();
    config.idle_after = Duration::from_millis(200);
    let node = hosting("idle", &tx, config).start().await.unwrap();
    let entity = node.entity::<PingPong>("tracked", "sleepy").unwrap();
    for n in 0..3 {
        entity.cast(Ping { n, body: vec![] }).await.unwrap();
    }
    let mut events = Vec::new();
    while events.last() != Some(&Life::Stopped) {
        events.push(next(&mut told).await.2);
    }
    assert_eq!(
        events,
        [
            Life::Started,
            Life::Got(0),
            Life::Got(1),
            Life::Got(2),
            Life::Stopped
        ],
        "drained: what it had was handled, then post_stop"
    );
    let pong = entity
        .call(Ping { n: 7, body: vec![] }, WAIT)
        .await
        .unwrap();
    assert_eq!(pong.n, 7);
    assert_eq!(next(&mut told).await.2, Life::Started);
    assert_eq!(next(&mut told).await.2, Life::Got(7));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_the_least_recently_used_entity_stops_and_nothing_sent_to_it_is_lost() {
    let (tx, mut told) = mpsc::unbounded_channel();
    let mut config = quick();
    config.max_active = 4;
    let node = hosting("bounded", &tx, config).start().await.unwrap();
    // 12 ids, each sent to in turn, three rounds: every start past the fourth stops the
    // least recently used; every message still arrives.
    for round in 0..3 {
        for id in 0..12 {
            let entity = node
                .entity::<PingPong>("tracked", &format!("b{id}"))
                .unwrap();
            entity
                .cast(Ping {
                    n: round,
                    body: vec![],
                })
                .await
                .unwrap();
        }
    }
    let mut running: HashMap<String, bool> = HashMap::new();
    let mut got = 0;
    let mut most = 0;
    while got < 36 {
        let (_, id, life) = next(&mut told).await;
        match life {
            Life::Started => {
                assert!(!running.get(&id).copied().unwrap_or(false), "{id} twice");
                running.insert(id, true);
            }
            Life::Stopped => {
                running.insert(id, false);
            }
            Life::Got(_) => got += 1,
        }
        most = most.max(running.values().filter(|r| **r).count());
    }
    assert!(most <= 4, "{most} active at once past a bound of 4");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constructor_that_fails_answers_the_call_with_a_typed_fault() {
    let (tx, _told) = mpsc::unbounded_channel();
    let node = hosting("failing", &tx, quick()).start().await.unwrap();
    let broken = node.entity::<PingPong>("tracked", "broken-1").unwrap();
    match broken.call(Ping { n: 1, body: vec![] }, WAIT).await {
        Err(EntityError::Call(CallError::Fault(fault))) => {
            assert_eq!(fault.code, "entity_start");
            assert!(fault.message.contains("broken-1 cannot start"), "{fault:?}");
        }
        other => panic!("expected an entity_start fault, got {other:?}"),
    }
    assert!(matches!(
        node.entity::<PingPong>("tracked", ""),
        Err(EntityError::InvalidId { .. })
    ));
    assert!(matches!(
        node.entity::<PingPong>("nothing-hosts-this", "x")
            .unwrap()
            .cast(Ping::default())
            .await,
        Err(EntityError::NoHost { .. })
    ));
    node.shutdown().await;
}

/// A clustered builder gossiping every 100 ms.
fn clustered(builder: NodeBuilder, seeds: &[SocketAddr]) -> NodeBuilder {
    let mut cluster = ClusterConfig::new("127.0.0.1:0".parse().unwrap());
    cluster.gossip_interval = Duration::from_millis(100);
    cluster.leave_linger = Duration::from_millis(500);
    cluster.seeds = seeds.iter().map(ToString::to_string).collect();
    builder.cluster(cluster)
}

/// Waits until `node` sees `hosts` members hosting `kind`.
async fn hosts_seen(node: &Node, kind: &str, hosts: usize) {
    tokio::time::timeout(WAIT, async {
        loop {
            let changed = node.members_changed();
            let members = node.members().unwrap();
            let seen = members
                .iter()
                .filter(|m| m.serves() && m.hosts(kind))
                .count();
            if seen >= hosts {
                return;
            }
            changed.await;
        }
    })
    .await
    .expect("the hosts are seen within the wait bound");
}

/// Waits until `node` sees `hosts` members hosting `kind`, all settled on one digest.
async fn settled_on(node: &Node, kind: &str, hosts: usize) {
    tokio::time::timeout(WAIT, async {
        loop {
            let changed = node.members_changed();
            let members = node.members().unwrap();
            let digests: Vec<Option<&str>> = members
                .iter()
                .filter(|m| m.serves() && m.hosts(kind))
                .map(|m| m.settled(kind))
                .collect();
            if digests.len() == hosts
                && digests[0].is_some()
                && digests.iter().all(|d| *d == digests[0])
            {
                return;
            }
            changed.await;
        }
    })
    .await
    .expect("the hosts settle within the wait bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_share_the_shards_and_reach_each_others_entities_over_one_session_each_way() {
    let (tx, mut told) = mpsc::unbounded_channel();
    let a = clustered(hosting("a", &tx, quick()), &[])
        .start()
        .await
        .unwrap();
    let b = clustered(hosting("b", &tx, quick()), &[a.gossip_addr().unwrap()])
        .start()
        .await
        .unwrap();
    hosts_seen(&a, "tracked", 2).await;
    hosts_seen(&b, "tracked", 2).await;
    settled_on(&a, "tracked", 2).await;
    // What a's peers hold of it: per-node facts, whatever the number of entities.
    let own_state = || a.status().cluster.expect("clustered").own_state_bytes;
    let state_before = own_state();
    assert!(state_before > 0);
    // A process outside the cluster sees the same settled digests through a member.
    let outside = client().await;
    let seen = outside
        .members_at(&a.local_addr().unwrap().to_string())
        .await
        .unwrap();
    let digests: Vec<Option<&str>> = seen.iter().map(|m| m.settled("tracked")).collect();
    assert_eq!(digests.len(), 2);
    assert!(
        digests[0].is_some() && digests[0] == digests[1],
        "{digests:?}"
    );
    outside.shutdown().await;
    const IDS: u64 = 200;
    for id in 0..IDS {
        let from = if id % 2 == 0 { &a } else { &b };
        let entity = from
            .entity::<PingPong>("tracked", &format!("c{id}"))
            .unwrap();
        let pong = entity
            .call(
                Ping {
                    n: id,
                    body: vec![],
                },
                WAIT,
            )
            .await
            .unwrap();
        assert_eq!(pong.n, id);
        // Cast from the other node too: the same activation gets it.
        let other = if id % 2 == 0 { &b } else { &a };
        let entity = other
            .entity::<PingPong>("tracked", &format!("c{id}"))
            .unwrap();
        entity
            .cast(Ping {
                n: id,
                body: vec![],
            })
            .await
            .unwrap();
    }
    let mut lives: HashMap<String, (String, usize, usize)> = HashMap::new();
    let mut got = 0;
    while got < 2 * IDS {
        let (node, id, life) = next(&mut told).await;
        let entry = lives.entry(id.clone()).or_insert((node.clone(), 0, 0));
        assert_eq!(entry.0, node, "{id} lives on one node");
        match life {
            Life::Started => entry.1 += 1,
            Life::Got(_) => {
                entry.2 += 1;
                got += 1;
            }
            Life::Stopped => panic!("{id} stopped"),
        }
    }
    assert!(lives.values().all(|(_, starts, _)| *starts == 1));
    assert_eq!(
        own_state(),
        state_before,
        "a's gossip state grew with its entities"
    );
    let on_a = lives.values().filter(|(node, _, _)| node == "a").count();
    assert!(
        (40..160).contains(&on_a),
        "{on_a} of {IDS} on a: the shards spread"
    );
    // One carrier each way, whatever the number of entities.
    let sessions: Vec<String> = a
        .status()
        .sessions
        .iter()
        .map(|s| format!("{:?} {} {}", s.role, s.peer.name, s.actor))
        .collect();
    assert_eq!(
        sessions.len(),
        2,
        "a's sessions for {IDS} entities: {sessions:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_and_one_leaving_move_shards_with_one_activation_at_a_time_and_nothing_lost()
 {
    const IDS: u64 = 60;
    const ROUNDS: u64 = 60;
    let (tx, mut told) = mpsc::unbounded_channel();
    let a = clustered(hosting("a", &tx, quick()), &[])
        .start()
        .await
        .unwrap();
    let seed = a.gossip_addr().unwrap();
    let b = clustered(hosting("b", &tx, quick()), &[seed])
        .start()
        .await
        .unwrap();
    // Both settled on the two of them: each serves its own shards from the first message
    // (otherwise a's could still wait for b when c joins, and a would hold nothing).
    settled_on(&a, "tracked", 2).await;
    settled_on(&b, "tracked", 2).await;
    let mut undelivered = b.subscribe_undelivered();
    // b sends every round to every id; after round 15 the test has c join and waits until
    // b sees it host the kind; after round 35 it has a leave (and the sender goes on).
    let (round_tx, mut rounds) = mpsc::unbounded_channel();
    let (go_tx, mut go) = mpsc::unbounded_channel::<()>();
    let sender = {
        let b = b.clone();
        tokio::spawn(async move {
            for n in 0..ROUNDS {
                for id in 0..IDS {
                    let entity = b.entity::<PingPong>("tracked", &format!("m{id}")).unwrap();
                    entity
                        .cast(Ping { n, body: vec![] })
                        .await
                        .expect("b casts");
                }
                let _ = round_tx.send(n);
                if n == 15 {
                    go.recv().await.expect("the test lets the sender go on");
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut c = None;
    let mut left = None;
    let mut live: HashMap<String, String> = HashMap::new();
    let mut got: HashMap<(String, u64), usize> = HashMap::new();
    let mut overlaps = Vec::new();
    let mut by_node: std::collections::BTreeMap<(String, u64), usize> = Default::default();
    let mut lost = 0usize;
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() + lost < (IDS * ROUNDS) as usize {
        tokio::select! {
            Some(n) = rounds.recv() => {
                sent = n + 1;
                if n == 15 && c.is_none() {
                    let joined = clustered(hosting("c", &tx, quick()), &[seed]).start().await.unwrap();
                    hosts_seen(&b, "tracked", 3).await;
                    c = Some(joined);
                    go_tx.send(()).unwrap();
                }
                if n == 35 && left.is_none() {
                    let a = a.clone();
                    left = Some(tokio::spawn(async move { a.shutdown().await }));
                }
            }
            event = told.recv() => {
                let (node, id, life) = event.expect("told");
                match life {
                    Life::Started => {
                        if let Some(other) = live.insert(id.clone(), node.clone()) {
                            overlaps.push(format!("{id} started on {node} while live on {other}"));
                        }
                    }
                    Life::Stopped => {
                        live.remove(&id);
                    }
                    Life::Got(n) => {
                        *got.entry((id, n)).or_default() += 1;
                        *by_node.entry((node, n)).or_default() += 1;
                    }
                }
            }
            Ok(_) = undelivered.recv() => lost += 1,
            () = tokio::time::sleep_until(deadline) => {
                let mut missing: Vec<_> = (0..IDS).flat_map(|id| (0..ROUNDS).map(move |n| (format!("m{id}"), n))).filter(|k| !got.contains_key(k)).collect();
                missing.sort();
                eprintln!("missing: {:?}", &missing[..missing.len().min(40)]);
                eprintln!("live: {live:?}");
                for node in [&a, &b] {
                    eprintln!("{}: {:?}", node.identity().name, node.status().entities);
                }
                if let Some(c) = &c {
                    eprintln!("c: {:?}", c.status().entities);
                }
                eprintln!("overlaps: {overlaps:?}");
                panic!("{} of {} messages accounted for after 60 s (sent {sent} rounds)", got.len() + lost, IDS * ROUNDS)
            }
        }
    }
    sender.await.unwrap();
    left.expect("a left").await.unwrap();
    assert!(overlaps.is_empty(), "two activations at once: {overlaps:?}");
    let doubled: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "delivered twice: {doubled:?}");
    assert_eq!(lost, 0, "a polite leave hands everything over");
    // Each member had its turn: a until it left, c once it joined.
    for node in ["a", "b", "c"] {
        assert!(
            by_node.keys().any(|(n, _)| n == node),
            "{node} handled nothing: {by_node:?}"
        );
    }
    b.shutdown().await;
    c.expect("c joined").shutdown().await;
}

/// A node outside the cluster, reaching entities through `via`.
async fn client() -> Node {
    Node::builder()
        .name("client")
        .secret(Secret::new(SECRET).unwrap())
        .start()
        .await
        .unwrap()
}

/// Messages from another node reach a running entity without passing through its host
/// (the short way), and take the long way while it starts, stops or is evicted: one
/// sender's messages to each entity still arrive once each and in order, while the bound
/// keeps evicting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_senders_messages_keep_their_order_between_the_short_way_and_the_host() {
    let (tx, mut told) = mpsc::unbounded_channel();
    let mut config = quick();
    config.max_active = 4;
    let host = hosting("host", &tx, config).start().await.unwrap();
    let via = host.local_addr().unwrap().to_string();
    let client = client().await;
    // Entities slow to start, and bursts long enough that the later messages of one
    // arrive while earlier ones still wait in the host's mailbox behind the start.
    const IDS: u64 = 6;
    const ROUNDS: u64 = 3;
    const BURST: u64 = 2_000;
    for round in 0..ROUNDS {
        for i in 0..IDS {
            // Another order each round, so that evictions fall everywhere.
            let id = (i * 5 + round * 7) % IDS;
            let entity = client
                .entity_via::<PingPong>(&via, "tracked", &format!("slow{id}"))
                .unwrap();
            for k in 0..BURST {
                let n = round * BURST + k;
                entity.cast(Ping { n, body: vec![] }).await.unwrap();
            }
        }
    }
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut running: HashMap<String, bool> = HashMap::new();
    let mut most = 0;
    let mut starts = 0;
    while got.values().map(Vec::len).sum::<usize>() < (IDS * ROUNDS * BURST) as usize {
        match next(&mut told).await {
            (_, id, Life::Started) => {
                assert!(!running.get(&id).copied().unwrap_or(false), "{id} twice");
                running.insert(id, true);
                starts += 1;
            }
            (_, id, Life::Stopped) => {
                running.insert(id, false);
            }
            (_, id, Life::Got(n)) => got.entry(id).or_default().push(n),
        }
        most = most.max(running.values().filter(|r| **r).count());
    }
    assert!(most <= 4, "{most} active at once past a bound of 4");
    assert!(starts > IDS, "the bound evicted ({starts} starts)");
    for (id, seen) in &got {
        assert_eq!(
            seen,
            &(0..ROUNDS * BURST).collect::<Vec<_>>(),
            "{id}: once each, in order"
        );
    }
    client.shutdown().await;
    host.shutdown().await;
}

/// An entity busy with messages that take the short way is not idle: the host counts
/// what the short way delivered before passivating it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_reached_the_short_way_is_not_passivated_while_it_is_busy() {
    let (tx, mut told) = mpsc::unbounded_channel();
    let mut config = quick();
    config.idle_after = Duration::from_secs(1);
    let host = hosting("host", &tx, config).start().await.unwrap();
    let via = host.local_addr().unwrap().to_string();
    let client = client().await;
    let entity = client
        .entity_via::<PingPong>(&via, "tracked", "busy")
        .unwrap();
    let started = std::time::Instant::now();
    let mut n = 0;
    // Three idle bounds of calls, each answered before the next.
    while started.elapsed() < Duration::from_secs(3) {
        let pong = entity.call(Ping { n, body: vec![] }, WAIT).await.unwrap();
        assert_eq!(pong.n, n);
        n += 1;
    }
    let mut starts = 0;
    for _ in 0..=n {
        match next(&mut told).await {
            (_, _, Life::Started) => starts += 1,
            (_, id, Life::Stopped) => panic!("{id} was passivated while busy"),
            (_, _, Life::Got(_)) => {}
        }
    }
    assert_eq!(starts, 1);
    // Idle now: it is passivated.
    assert_eq!(next(&mut told).await.2, Life::Stopped);
    client.shutdown().await;
    host.shutdown().await;
}
