//! The carts across five processes: three `carts-node` members gossiping on 127.0.0.1,
//! and a `carts` client outside the cluster that knows one node. The carts spread over
//! the members; one member is killed; once the cluster declared it dead, every cart
//! answers again (those it held start again, empty, on a survivor). Every wait is
//! bounded; every child is killed when its guard drops.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use duologue::cluster::MemberState;
use duologue::{Node, Secret};
use duologue_testkit::{ChildGuard, NodeProcess, SecretDir, Signal};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(30);
const CARTS: usize = 30;

fn node_args(secrets: &SecretDir, seed: Option<&str>) -> Vec<String> {
    duologue_testkit::cluster_flags(secrets.secret(), "100ms", seed)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_spread_over_three_nodes_and_answer_again_after_one_is_killed() {
    let secrets = SecretDir::create().unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_carts-node"));
    let mut first =
        NodeProcess::start_binary(exe, "a", &node_args(&secrets, None), WAIT).await.unwrap();
    let gossip = first.child.stdout_line(WAIT).await.unwrap().unwrap();
    let seed = gossip.strip_prefix("gossip on ").unwrap_or_else(|| panic!("{gossip}")).to_owned();
    let mut nodes = vec![first];
    for name in ["b", "c"] {
        nodes.push(
            NodeProcess::start_binary(exe, name, &node_args(&secrets, Some(&seed)), WAIT)
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

    let adds: Vec<String> =
        (0..CARTS).map(|n| format!("add cart-{n} item-{n} {}", n + 1)).collect();
    let placed = ask(&via, &secrets, &adds).await;
    let mut home = BTreeMap::new();
    for (n, answer) in placed.iter().enumerate() {
        let (cart, node, rest) = parse(answer);
        assert_eq!(rest, format!("item-{n} x{}", n + 1), "{answer}");
        home.insert(cart, node);
    }
    for node in ["a", "b", "c"] {
        assert!(home.values().any(|n| n == node), "no cart on {node}: {home:?}");
    }

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

    let gets: Vec<String> = (0..CARTS).map(|n| format!("get cart-{n}")).collect();
    let again = ask(&via, &secrets, &gets).await;
    for (n, answer) in again.iter().enumerate() {
        let (cart, node, rest) = parse(answer);
        assert_ne!(node, "b", "{answer}");
        if home[&cart] == "b" {
            assert_eq!(rest, "(empty)", "a cart of the dead node starts again, empty: {answer}");
        } else {
            assert_eq!(
                (node.as_str(), rest),
                (home[&cart].as_str(), format!("item-{n} x{}", n + 1)),
                "{answer}"
            );
        }
    }

    for mut node in nodes {
        node.child.signal(Signal::SIGTERM).unwrap();
        assert_eq!(node.child.wait(WAIT).await.unwrap(), Some(0));
    }
}
