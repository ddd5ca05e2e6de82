//! A client of a store: `kv ADDR[/STORE] SECRET_FILE get KEY | put KEY VALUE | watch KEY N`
//! (`watch` prints the value now, then its next N changes; STORE defaults to `store`).
//!
//! A `put` waits while a slow watcher of the key holds the writers back. A `watch` gets
//! every change in order; if the store let it go (it stopped reading, see the `kv` crate
//! doc), it prints the changes it had, then fails with the session's loss, whose goodbye
//! (`LimitExceeded`) says why.

use std::time::Duration;

use duologue::{Node, Secret};
use kv::proto::{Changed, Get, KvRequest, Put, Value, Watch};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, secret, op, key, rest @ ..] = &args[..] else {
        return Err("usage: kv ADDR[/STORE] SECRET_FILE (get K | put K V | watch K N)".into());
    };
    let (peer, store) = target.split_once('/').unwrap_or((target, "store"));
    let (request, changes): (KvRequest, usize) = match (op.as_str(), rest) {
        ("get", []) => (Get { key: key.clone() }.into(), 0),
        ("put", [value]) => (Put { key: key.clone(), value: value.clone().into() }.into(), 0),
        ("watch", [n]) => (Watch { key: key.clone() }.into(), n.parse()?),
        _ => return Err(format!("cannot {op} with {rest:?}").into()),
    };
    let node = Node::builder().name("kv-client").secret(Secret::from_file(secret)?).start().await?;
    let (store, mut pushed) = node.connect::<kv::Kv>((peer, store)).inbox().await?;
    let now: Value = store.call_as(request, Duration::from_secs(10)).await?;
    let value = now.value.as_deref().map_or("(none)".into(), String::from_utf8_lossy);
    println!("{} = {value}", now.key);
    for _ in 0..changes {
        let change: Changed = pushed.next_as().await?;
        println!("{} -> {}", change.key, String::from_utf8_lossy(&change.value));
    }
    // Ends the session politely (the store forgets this watcher) and drains it.
    node.shutdown().await;
    Ok(())
}
