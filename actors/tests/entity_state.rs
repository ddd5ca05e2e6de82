//! Entities that keep state in a store (SQLite files here; `state_postgres.rs` on a real
//! PostgreSQL server): state loaded when an entity starts, written before a call that
//! changed it is answered, a stale activation fenced and stopped with nothing it wrote
//! lost, leases that keep a shard until released, and typed refusals for a node without
//! a store.

use std::time::Duration;

use duologue::state::{Durable, StateConfig, StateError};
use duologue::wire::Fault;
use duologue::{CallError, Entity, EntityError, Node, NodeError, Secret};
use duologue_testkit::probe::{Ping, PingPong, Pong, SECRET, WAIT};
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// An entity whose state is a running total (`Ping::n`): a message adds its `n`, a call
/// is answered with the total once it is written.
struct Adder;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Adder {
    type Msg = Entity<PingPong>;
    type State = Durable<Ping>;
    type Arguments = Durable<Ping>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        state: Durable<Ping>,
    ) -> Result<Durable<Ping>, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        total: &mut Durable<Ping>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Entity::Cast { message, .. } => {
                let _ = total.update(|t| t.n += message.n).await;
            }
            Entity::Call { request, reply, .. } => match total.update(|t| t.n += request.n).await {
                Ok(()) => {
                    let _ = reply.send(Pong {
                        n: total.get().n,
                        deadline_left_ms: 0,
                    });
                }
                Err(error) => {
                    let _ = reply.fail(Fault {
                        code: "state".into(),
                        message: error.to_string(),
                    });
                }
            },
            Entity::Local(never) => match never {},
        }
        Ok(())
    }
}

async fn start_adder(
    _: Node,
    _: String,
    total: Durable<Ping>,
) -> Result<ActorRef<Entity<PingPong>>, String> {
    let (adder, _) = Actor::spawn(None, Adder, total)
        .await
        .map_err(|e| e.to_string())?;
    Ok(adder)
}

/// A node `name` (no cluster) hosting adders in the store `state`.
async fn node(name: &str, state: StateConfig) -> Node {
    Node::builder()
        .name(name)
        .listen("127.0.0.1:0".parse().unwrap())
        .secret(Secret::new(SECRET).unwrap())
        .state(state)
        .durable_entity("adder", start_adder)
        .start()
        .await
        .expect("the node starts")
}

async fn add(node: &Node, id: &str, n: u64) -> Result<u64, EntityError> {
    node.entity::<PingPong>("adder", id)
        .unwrap()
        .call(Ping { n, body: vec![] }, WAIT)
        .await
        .map(|pong| pong.n)
}

fn sqlite(folder: &tempfile::TempDir) -> StateConfig {
    StateConfig::new(format!(
        "sqlite:{}",
        folder.path().join("state.db").display()
    ))
}

#[tokio::test]
async fn what_a_call_acknowledged_is_there_for_the_next_activation_on_another_node() {
    let folder = tempfile::tempdir().unwrap();
    let a = node("a", sqlite(&folder)).await;
    assert_eq!(add(&a, "x", 5).await.unwrap(), 5);
    assert_eq!(add(&a, "x", 7).await.unwrap(), 12);
    assert_eq!(add(&a, "y", 1).await.unwrap(), 1);
    // The node goes away without a word (no drain): what was acknowledged is committed.
    drop(a);
    let b = node("b", sqlite(&folder)).await;
    assert_eq!(add(&b, "x", 1).await.unwrap(), 13);
    assert_eq!(add(&b, "y", 1).await.unwrap(), 2);
    b.shutdown().await;
}

#[tokio::test]
async fn a_stale_activation_is_fenced_stopped_and_loses_nothing_acknowledged() {
    let folder = tempfile::tempdir().unwrap();
    // Two nodes that both believe they own every shard (no cluster), on one store.
    let a = node("a", sqlite(&folder)).await;
    let b = node("b", sqlite(&folder)).await;
    assert_eq!(add(&a, "x", 1).await.unwrap(), 1);
    // b claims the shard: a newer epoch; it reads what a committed.
    assert_eq!(add(&b, "x", 10).await.unwrap(), 11);
    // a's activation still runs under the old epoch: its write is refused, typed.
    match add(&a, "x", 100).await {
        Err(EntityError::Call(CallError::Fault(fault))) => {
            assert_eq!(fault.code, "state");
            assert!(fault.message.contains("fenced"), "{}", fault.message);
        }
        other => panic!("a stale write must be fenced, got {other:?}"),
    }
    // a's host stopped it; a's next message claims the shard again and reads b's write.
    let fenced = tokio::time::timeout(WAIT, async {
        loop {
            let status = a.status();
            if status.entities[0].fenced >= 1 && status.entities[0].active == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        fenced.is_ok(),
        "a's fenced entity stops: {:?}",
        a.status().entities
    );
    assert_eq!(add(&a, "x", 100).await.unwrap(), 111);
    assert!(matches!(
        add(&b, "x", 1).await,
        Err(EntityError::Call(CallError::Fault(_)))
    ));
    assert_eq!(add(&b, "x", 1000).await.unwrap(), 1111);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_shard_leased_by_another_node_waits_until_it_is_released() {
    let folder = tempfile::tempdir().unwrap();
    let leased = sqlite(&folder).with_lease(Duration::from_secs(60));
    let a = node("a", leased.clone()).await;
    let b = node("b", leased).await;
    assert_eq!(add(&a, "x", 1).await.unwrap(), 1);
    // b cannot claim the shard a leases (renewed, far from expiry): its call waits.
    let b_call = {
        let b = b.clone();
        tokio::spawn(async move { add(&b, "x", 2).await })
    };
    let waiting = tokio::time::timeout(WAIT, async {
        loop {
            if b.status().entities[0].waiting == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(waiting.is_ok(), "{:?}", b.status().entities);
    assert!(!b_call.is_finished());
    // a leaves politely: its leases go back to the store, and b's call goes through.
    a.shutdown().await;
    let total = tokio::time::timeout(WAIT, b_call)
        .await
        .expect("b is served once a released the lease")
        .unwrap()
        .unwrap();
    assert_eq!(total, 3);
    b.shutdown().await;
}

#[tokio::test]
async fn a_node_without_a_store_does_not_start_a_kind_that_keeps_state() {
    let started = Node::builder()
        .name("a")
        .listen("127.0.0.1:0".parse().unwrap())
        .secret(Secret::new(SECRET).unwrap())
        .durable_entity("adder", start_adder)
        .start()
        .await;
    match started {
        Err(NodeError::NoStateStore { kind }) => assert_eq!(kind, "adder"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let unreachable = Node::builder()
        .name("a")
        .secret(Secret::new(SECRET).unwrap())
        .state(StateConfig::new("mysql://nowhere/db"))
        .durable_entity("adder", start_adder)
        .start()
        .await;
    assert!(matches!(
        unreachable,
        Err(NodeError::State(StateError::Url { .. }))
    ));
}
