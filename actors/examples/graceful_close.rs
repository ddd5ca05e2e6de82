//! Closing politely: a member finishes (half-close), the room still sends its final
//! acks, then its own farewell, and both sides close with `Finished`; `close(timeout)`
//! against a peer that never finishes ends with an abort; and a node shutdown ends every
//! session with a farewell its peers can read.
//!
//! ```text
//! cargo run --example graceful_close
//! ```

use duologue_testkit::IgnoringOwner;
use std::time::{Duration, Instant};

use duologue::{CloseReason, Node, RemoteRef, Secret};
use duologue_actors::chat::proto::Text;
use duologue_actors::chat::{ChatEvent, ChatRoom, RoomConfig, join};
use duologue_actors::seq_check::{SeqCheck, proto::Tick};
use ractor::Actor;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = Secret::new("example secret, at least 16 bytes")?;
    let hub = Node::builder()
        .name("hub")
        .listen("127.0.0.1:0".parse()?)
        .secret(secret.clone())
        .start()
        .await?;
    let (room, _) = Actor::spawn(None, ChatRoom, RoomConfig::from("lobby")).await?;
    hub.register("lobby", &room)?;
    let (check, _) = Actor::spawn(None, SeqCheck, "check".into()).await?;
    hub.register("check", &check)?;
    let addr = hub.local_addr().expect("hub listens").to_string();
    let laptop = Node::builder()
        .name("laptop")
        .secret(secret)
        .start()
        .await?;

    println!("1. finish: the half-close lets the room's final acks through");
    let mut ann = join(&laptop, &addr, "lobby", "ann", Duration::from_secs(5)).await?;
    for (n, text) in ["one", "two", "three"].into_iter().enumerate() {
        ann.room
            .cast(Text {
                client_seq: n as u64 + 1,
                text: text.into(),
            })
            .await?;
    }
    ann.room.finish();
    println!("   ann finished (Goodbye sent); the room may still talk:");
    while let Some(event) = ann.events.recv().await {
        match event {
            ChatEvent::Acked(ack) => println!(
                "   final ack for text {} (room #{})",
                ack.client_seq, ack.room_seq
            ),
            ChatEvent::RoomFinished => println!("   the room finished too (its Goodbye)"),
            ChatEvent::Closed(reason) => {
                println!("   session closed: {reason}");
                anyhow::ensure!(reason == CloseReason::Finished, "not a polite end");
                break;
            }
            other => println!("   {other:?}"),
        }
    }

    println!("\n2. close(timeout) against a peer that never finishes: drain, then abort");
    let (quiet, _) = Actor::spawn(None, IgnoringOwner, ()).await?;
    let checker: RemoteRef<SeqCheck> = laptop.connect((&addr, "check")).owner(&quiet).await?;
    checker
        .cast(Tick {
            n: 1,
            filler: Default::default(),
        })
        .await?;
    let started = Instant::now();
    let reason = checker.session().close(Duration::from_millis(300)).await;
    println!(
        "   after {:.0} ms: {reason}",
        started.elapsed().as_secs_f64() * 1e3
    );

    println!("\n3. node shutdown: every session gets a farewell, within one bounded drain");
    let bob = join(&laptop, &addr, "lobby", "bob", Duration::from_secs(5)).await?;
    let started = Instant::now();
    let drained = hub.shutdown().await;
    println!(
        "   hub shut down in {:.0} ms ({})",
        started.elapsed().as_secs_f64() * 1e3,
        if drained {
            "every session drained"
        } else {
            "some sessions were cancelled"
        }
    );
    let reason = bob.room.closed().await;
    println!("   bob's session: {reason}");
    laptop.shutdown().await;
    Ok(())
}
