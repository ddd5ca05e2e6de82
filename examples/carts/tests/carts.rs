//! The carts across five processes: three `carts-node` members gossiping on 127.0.0.1 and
//! keeping the carts' lines in one SQLite file, and a `carts` client outside the cluster
//! that knows one node. The carts spread over the members and are filled; one member is
//! killed; once the cluster declared it dead, every cart answers again with its lines
//! (those it held start again on a survivor, from the store). Then, in this process: a
//! cart whose write the store refuses answers a fault, not a success, and a node without
//! a store refuses to start. Every wait is bounded; every child is killed when its guard
//! drops.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use carts::proto::{Add, CartReply, Get, cart_reply};
use carts::{Carts, KIND, describe};
use duologue::cluster::MemberState;
use duologue::state::StateConfig;
use duologue::{CallError, EntityError, Node, Secret};
use duologue_testkit::{ChildGuard, NodeProcess, SecretDir, Signal};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(30);
const CARTS: usize = 30;

fn node_args(secrets: &SecretDir, state: &str, seed: Option<&str>) -> Vec<String> {
    let mut args = duologue_testkit::cluster_flags(secrets.secret(), "100ms", seed);
    args.extend(["--state".to_owned(), state.to_owned()]);
    args
}

/// Sends `requests` to a `carts` client of the node at `addr`; its answers, in order.
async fn ask(addr: &str, secrets: &SecretDir, requests: &[String]) -> Vec<String> {
    let args = [addr.to_owned(), secrets.secret().display().to_string()];
    let mut client =
        ChildGuard::spawn("carts", Path::new(env!("CARGO_BIN_EXE_carts")), &args).unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut text = requests.join("\n");
    text.push('\n');
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let mut answers = Vec::new();
    while let Some(line) = client.stdout_line(WAIT).await.unwrap() {
        answers.push(line);
    }
    assert_eq!(client.wait(WAIT).await.unwrap(), Some(0), "the client exits 0");
    assert_eq!(answers.len(), requests.len(), "{answers:?}");
    answers
}

/// `cart-N@NODE ...` -> (cart-N, NODE, rest).
fn parse(answer: &str) -> (String, String, String) {
    let (head, rest) = answer.split_once(' ').unwrap_or((answer, ""));
    let (cart, node) =
        head.split_once('@').unwrap_or_else(|| panic!("not a cart's answer: {answer}"));
    (cart.to_owned(), node.to_owned(), rest.to_owned())
}

/// What cart `n` holds once filled: every fifth was checked out.
fn lines_of(n: usize) -> String {
    if n.is_multiple_of(5) { "(empty)".to_owned() } else { format!("item-{n} x{}, pear x1", n + 1) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_spread_over_three_nodes_and_answer_again_after_one_is_killed() {
    let secrets = SecretDir::create().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let state = format!("sqlite:{}", folder.path().join("carts.db").display());
    let exe = Path::new(env!("CARGO_BIN_EXE_carts-node"));
    let mut first = NodeProcess::start_binary(exe, "a", &node_args(&secrets, &state, None), WAIT)
        .await
        .unwrap();
    let gossip = first.child.stdout_line(WAIT).await.unwrap().unwrap();
    let seed = gossip.strip_prefix("gossip on ").unwrap_or_else(|| panic!("{gossip}")).to_owned();
    let mut nodes = vec![first];
    for name in ["b", "c"] {
        nodes.push(
            NodeProcess::start_binary(exe, name, &node_args(&secrets, &state, Some(&seed)), WAIT)
                .await
                .unwrap(),
        );
    }
    let via = nodes[0].addr.to_string();
    let operator = Node::builder()
        .name("operator")
        .secret(Secret::from_file(secrets.secret()).unwrap())
        .start()
        .await
        .unwrap();
    duologue_testkit::cluster::wait_members_at(&operator, &via, WAIT, |m| {
        m.iter().filter(|m| m.state == MemberState::Up && m.hosts("cart")).count() == 3
    })
    .await;

    // Each cart: an item, two pears, one pear back; every fifth is checked out.
    let mut fill = Vec::new();
    for n in 0..CARTS {
        fill.push(format!("add cart-{n} item-{n} {}", n + 1));
        fill.push(format!("add cart-{n} pear 2"));
        fill.push(format!("remove cart-{n} pear 1"));
        if n.is_multiple_of(5) {
            fill.push(format!("checkout cart-{n}"));
        }
    }
    for answer in ask(&via, &secrets, &fill).await {
        parse(&answer);
    }
    let gets: Vec<String> = (0..CARTS).map(|n| format!("get cart-{n}")).collect();
    let mut home = BTreeMap::new();
    for (n, answer) in ask(&via, &secrets, &gets).await.iter().enumerate() {
        let (cart, node, rest) = parse(answer);
        assert_eq!(rest, lines_of(n), "{answer}");
        home.insert(cart, node);
    }
    for node in ["a", "b", "c"] {
        assert!(home.values().any(|n| n == node), "no cart on {node}: {home:?}");
    }
    let moving =
        (0..CARTS).filter(|n| home[&format!("cart-{n}")] == "b" && !n.is_multiple_of(5)).count();
    assert!(moving > 0, "b holds no cart with lines: {home:?}");

    // Kill b, which holds some carts; the client goes on through a.
    let victim = nodes.remove(1);
    victim.child.signal(Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    duologue_testkit::cluster::wait_members_at(&operator, &via, WAIT, |m| {
        m.iter().any(|m| m.identity.name == "b" && m.state == MemberState::Unreachable)
    })
    .await;
    println!("b declared dead {:.1?} after its SIGKILL", killed.elapsed());
    drop(victim);

    let again = ask(&via, &secrets, &gets).await;
    for (n, answer) in again.iter().enumerate() {
        let (cart, node, rest) = parse(answer);
        assert_ne!(node, "b", "{answer}");
        if home[&cart] != "b" {
            assert_eq!(node, home[&cart], "a cart of a survivor stays: {answer}");
        }
        assert_eq!(rest, lines_of(n), "every cart answers with its lines: {answer}");
    }
    println!(
        "every cart answered, the {moving} of b that held lines with them, {:.1?} after its SIGKILL",
        killed.elapsed()
    );

    for mut node in nodes {
        node.child.signal(Signal::SIGTERM).unwrap();
        assert_eq!(node.child.wait(WAIT).await.unwrap(), Some(0));
    }
}

/// A node in this process, alone (it owns every shard), hosting carts in `folder`'s store.
async fn node(name: &str, folder: &tempfile::TempDir) -> Node {
    let state = format!("sqlite:{}", folder.path().join("carts.db").display());
    Node::builder()
        .name(name)
        .listen("127.0.0.1:0".parse().unwrap())
        .secret(Secret::new(duologue_testkit::probe::SECRET).unwrap())
        .state(StateConfig::new(state))
        .durable_entity(KIND, carts::start)
        .start()
        .await
        .unwrap()
}

async fn call(
    node: &Node,
    request: impl Into<carts::proto::CartRequest>,
) -> Result<CartReply, EntityError> {
    node.entity::<Carts>(KIND, "cart-1").unwrap().call(request.into(), WAIT).await
}

fn shown(reply: CartReply) -> String {
    match reply.kind {
        Some(cart_reply::Kind::Contents(contents)) => describe(&contents),
        other => panic!("contents expected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_store_refuses_is_answered_with_a_fault_and_not_kept() {
    let folder = tempfile::tempdir().unwrap();
    // Two nodes that both believe they own every shard (no cluster), on one store: the
    // second to write to a shard claims it, and the first's writes to it are fenced.
    let a = node("a", &folder).await;
    let b = node("b", &folder).await;
    let fig = || Add { item: "fig".into(), quantity: 1 };
    assert_eq!(shown(call(&a, fig()).await.unwrap()), "cart-1@a fig x1");
    assert_eq!(shown(call(&b, fig()).await.unwrap()), "cart-1@b fig x2");
    match call(&a, fig()).await {
        Err(EntityError::Call(CallError::Fault(fault))) => {
            assert_eq!(fault.code, "state");
            assert!(fault.message.contains("fenced"), "{}", fault.message);
        }
        other => panic!("a fenced write must not answer a success: {other:?}"),
    }
    // A read writes nothing: b still serves the cart, as the store has it.
    assert_eq!(shown(call(&b, Get {}).await.unwrap()), "cart-1@b fig x2");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_carts_node_without_a_store_says_so_and_exits() {
    let secrets = SecretDir::create().unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_carts-node"));
    let args = ["--name".to_owned(), "a".to_owned(), "--secret-file".to_owned()]
        .into_iter()
        .chain([secrets.secret().display().to_string()])
        .collect::<Vec<_>>();
    let mut node = ChildGuard::spawn("carts-node", exe, &args).unwrap();
    let said = node.stderr_until("keeps state", WAIT).await.unwrap();
    assert!(said.contains("--state sqlite:PATH"), "{said}");
    assert_eq!(node.wait(WAIT).await.unwrap(), Some(1));
}
