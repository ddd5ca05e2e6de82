//! The demos run real clusters and exit 0: `duologue demo chat` (the README's first
//! command), `all`, `cluster` and `entities`.

mod support;

use std::time::Duration;

use duologue_testkit::ChildGuard;
use support::duologue_exe;

/// Plays `duologue demo PARADIGM` (every line read within `within`); what it printed,
/// once it exited 0.
async fn play(paradigm: &str, within: Duration) -> Vec<String> {
    let args = ["demo".to_owned(), paradigm.to_owned()];
    let mut demo = ChildGuard::spawn("demo", &duologue_exe(), &args).unwrap();
    let mut out = Vec::new();
    while let Some(line) = demo.stdout_line(within).await.unwrap() {
        out.push(line);
    }
    assert_eq!(
        demo.wait(Duration::from_secs(10)).await.unwrap(),
        Some(0),
        "{out:#?}"
    );
    out
}

#[tokio::test]
async fn demo_chat_plays_the_conversation_and_exits_zero() {
    let out = play("chat", Duration::from_secs(60)).await;
    assert_eq!(out.last().map(String::as_str), Some("demo chat: ok"));
    assert_eq!(
        out.iter().filter(|l| l.contains("heard by")).count(),
        5,
        "{out:#?}"
    );
}

#[tokio::test]
async fn demo_all_plays_every_paradigm_and_exits_zero() {
    let out = play("all", Duration::from_secs(120)).await;
    for paradigm in ["chat", "edit", "reconcile", "pipeline"] {
        let done = format!("demo {paradigm}: ok");
        assert!(out.contains(&done), "no {done:?} in {out:#?}");
    }
}

#[tokio::test]
async fn demo_cluster_finds_the_room_by_name_and_brings_it_back_after_its_node_dies() {
    let out = play("cluster", Duration::from_secs(90)).await;
    assert_eq!(out.last().map(String::as_str), Some("demo cluster: ok"));
    let has = |needle: &str| out.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(has("the seed sees all four members up"), 1, "{out:#?}");
    assert_eq!(has("the cluster declared n2 dead"), 1, "{out:#?}");
    assert_eq!(has("rejoined general"), 2, "{out:#?}");
    assert_eq!(has("bob heard"), 2, "{out:#?}");
    // The room came back on a surviving node, which the last member table shows.
    assert!(
        out.iter()
            .any(|l| l.contains("spawned general on n") && !l.contains("on n2")),
        "{out:#?}"
    );
}

#[tokio::test]
async fn demo_entities_places_carts_and_every_cart_answers_again_after_a_node_dies() {
    let out = play("entities", Duration::from_secs(90)).await;
    assert_eq!(out.last().map(String::as_str), Some("demo entities: ok"));
    let has = |needle: &str| out.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(has("    add "), 12, "{out:#?}");
    assert_eq!(has("    get cart-"), 12, "{out:#?}");
    // Every cart answered again with the item it was given (the demo compares them and
    // fails otherwise); those of the dead node from a survivor, read from the store.
    let killed = out
        .iter()
        .find_map(|l| l.strip_prefix("  killed ")?.split(' ').next())
        .unwrap_or_else(|| panic!("no node killed: {out:#?}"));
    // `    add apple x1  -> cart-00@n1 apple x1`, `    get cart-00 -> cart-00@n3 apple x1  (...)`:
    // the cart and its items.
    let held = |prefix: &str| -> std::collections::BTreeMap<String, String> {
        out.iter()
            .filter(|l| l.starts_with(prefix))
            .map(|l| {
                let answer = l.split_once("-> ").unwrap().1.split("  (").next().unwrap();
                let (cart, items) = answer.split_once(' ').unwrap();
                (cart.split('@').next().unwrap().to_owned(), items.to_owned())
            })
            .collect()
    };
    let (added, got) = (held("    add "), held("    get cart-"));
    assert_eq!(added.len(), 12, "{out:#?}");
    assert_eq!(got, added, "{out:#?}");
    let gets: Vec<&String> = out.iter().filter(|l| l.contains("    get cart-")).collect();
    assert!(
        gets.iter().all(|l| !l.contains(&format!("@{killed} "))),
        "{out:#?}"
    );
    assert!(has("its items read back from the store") >= 1, "{out:#?}");
    // `duologue shards` shows the three nodes sharing the kind's 1 024 shards.
    let shard_rows: Vec<&String> = out
        .iter()
        .filter(|l| l.starts_with("    n") && l.split_whitespace().nth(1) == Some("cart"))
        .collect();
    assert_eq!(shard_rows.len(), 3, "{out:#?}");
    let owned: u32 = shard_rows
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<u32>().unwrap())
        .sum();
    assert_eq!(owned, 1024, "{out:#?}");
}
