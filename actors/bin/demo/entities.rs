//! `duologue demo entities`: three node processes on 127.0.0.1 host shopping carts as
//! entities (`examples/carts`), keeping their lines in one SQLite file in the demo's
//! temporary folder (`--state sqlite:PATH`, removed at the end); this process, outside the
//! cluster, fills twelve carts through the first node, shows where each lives, kills the
//! node holding the most, and shows every cart answering again with its items once the
//! cluster declared it dead (those of the dead node from a survivor, read from the
//! store). Every child is killed on every exit path.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use carts::proto::{Add, CartRequest, Get, cart_reply};
use carts::{Carts, KIND, describe};
use duologue::Node;
use duologue::cluster::MemberState;
use duologue_testkit::progress::{self, Summary};
use duologue_testkit::{ClusterError, NodeProcess, SecretDir, Signal};

use super::STEP;
use super::cluster::{
    command, gossip_line, node_args, operator, print_node, stop_nodes, unexpected, wait_members,
};

const CARTS: usize = 12;
const ITEMS: [&str; 4] = ["apple", "bread", "cheese", "dates"];

/// The steps the bar counts: three nodes, the view converged, the carts filled, a node
/// killed and declared dead, the carts asked again, two nodes stopped.
const STEPS: u64 = 3 + 1 + 1 + 1 + 1 + 2;

pub(crate) async fn run() -> Result<Summary, ClusterError> {
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let secrets = SecretDir::create()?;
    let secret = secrets.secret().display().to_string();
    // Beside the secret, in the folder removed when `secrets` drops: no set-up, nothing left.
    let store = format!(
        "sqlite:{}",
        secrets.secret().with_file_name("carts.db").display()
    );
    let node_args = |seed: Option<&str>| {
        let mut args = node_args(&secret, seed, None);
        args.extend(["--state".to_owned(), store.clone()]);
        args
    };
    let steps = progress::bar("demo entities", STEPS);
    say!("duologue demo: entities");
    say!("  three node processes hosting shopping carts (kind {KIND:?}), one cart per id,");
    say!("  keeping the carts' items in one SQLite file (--state {store})\n");
    let mut first = NodeProcess::start(&exe, "n1", &node_args(None), STEP).await?;
    let seed = gossip_line(&mut first.child).await?;
    print_node(&first, "the seed");
    steps.inc(1);
    let mut nodes = vec![first];
    for name in ["n2", "n3"] {
        let node = NodeProcess::start(&exe, name, &node_args(Some(&seed)), STEP).await?;
        print_node(&node, "hosting carts too");
        nodes.push(node);
        steps.inc(1);
    }
    let via = nodes[0].addr.to_string();
    let client = operator(&secret).await?;
    wait_members(&client, &via, &steps, "all three hosting carts", |m| {
        m.iter()
            .filter(|m| m.state == MemberState::Up && m.hosts(KIND))
            .count()
            == 3
    })
    .await?;
    steps.inc(1);

    say!("\n  this process is not a member; it reaches every cart through n1 ({via}):");
    let mut home = BTreeMap::new();
    for n in 0..CARTS {
        let cart = format!("cart-{n:02}");
        let item = ITEMS[n % ITEMS.len()];
        let contents = ask(
            &client,
            &via,
            &cart,
            Add {
                item: item.into(),
                quantity: n as u32 + 1,
            }
            .into(),
        )
        .await?;
        say!("    add {item} x{:<2} -> {}", n + 1, describe(&contents));
        home.insert(cart, (contents.node, contents.lines));
    }
    steps.inc(1);
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (node, _) in home.values() {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    say!("  carts per node: {per_node:?} (no coordinator: every node computes the same owner)");
    say!("\n  `duologue shards --peer {via}`:");
    for line in command(&exe, &["shards", "--peer", &via, "--secret-file", &secret]).await? {
        say!("    {line}");
    }

    // The node holding the most carts, other than the one this process talks through.
    let victim_name = per_node
        .iter()
        .filter(|(node, _)| **node != "n1")
        .max_by_key(|(_, carts)| **carts)
        .map(|(node, _)| (*node).to_owned())
        .unwrap_or_else(|| "n2".to_owned());
    let at = nodes
        .iter()
        .position(|n| n.child.name() == victim_name)
        .ok_or_else(|| unexpected(format!("no node {victim_name}")))?;
    let victim = nodes.remove(at);
    let killed = Instant::now();
    victim.child.signal(Signal::SIGKILL)?;
    say!(
        "\n  killed {victim_name} (pid {}) without a farewell",
        victim.child.pid().unwrap_or(0)
    );
    wait_members(
        &client,
        &via,
        &steps,
        &format!("{victim_name} declared dead"),
        |m| {
            m.iter()
                .any(|m| m.identity.name == victim_name && m.state == MemberState::Unreachable)
        },
    )
    .await?;
    let declared = killed.elapsed();
    drop(victim);
    say!("  the cluster declared {victim_name} dead after {declared:.1?}; its shards moved");
    steps.inc(1);

    say!("\n  every cart answers again, with its items:");
    let mut moved = 0;
    for (cart, (node, lines)) in &home {
        let contents = ask(&client, &via, cart, Get {}.into()).await?;
        if contents.lines != *lines {
            return Err(unexpected(format!(
                "{cart} lost its items: it held {lines:?}, it answered {}",
                describe(&contents)
            )));
        }
        let note = if *node == victim_name {
            moved += 1;
            "  (was on the dead node: its items read back from the store)"
        } else {
            ""
        };
        say!("    get {cart} -> {}{note}", describe(&contents));
    }
    let back = killed.elapsed();
    steps.inc(1);

    stop_nodes(nodes, &steps).await?;
    steps.finish_and_clear();
    say!();
    let mut summary = Summary::new("demo entities");
    summary
        .figure(format_args!("{CARTS} carts over 3 nodes: {per_node:?}"))
        .figure(format_args!(
            "{victim_name} killed: declared dead after {declared:.1?}, every cart answering after \
             {back:.1?}, its {moved} carts with their items"
        ))
        .figure(format_args!("{:.1?} in all", started.elapsed()));
    Ok(summary)
}

/// Calls the cart `cart` through the node at `via`; its contents.
async fn ask(
    client: &Node,
    via: &str,
    cart: &str,
    request: CartRequest,
) -> Result<carts::proto::Contents, ClusterError> {
    let entity = client
        .entity_via::<Carts>(via, KIND, cart)
        .map_err(unexpected)?;
    let reply = entity
        .call(request, Duration::from_secs(10))
        .await
        .map_err(unexpected)?;
    match reply.kind {
        Some(cart_reply::Kind::Contents(contents)) => Ok(contents),
        other => Err(unexpected(format!("{cart} answered {other:?}"))),
    }
}
