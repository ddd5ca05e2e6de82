//! Two nodes in one process: a chat room on one, a member on the other, talking over a
//! real gRPC session on 127.0.0.1.
//!
//! ```text
//! cargo run --example chat
//! ```
//!
//! For the same across separate processes, run `cargo run --bin duologue -- demo chat`.

use std::time::Duration;

use duologue::{CloseReason, Node, Secret};
use duologue_actors::chat::proto::Text;
use duologue_actors::chat::{ChatEvent, ChatRoom, RoomConfig, join};
use ractor::Actor;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = Secret::new("example secret, at least 16 bytes")?;

    // Node A hosts the room under the name "general".
    let hub = Node::builder()
        .name("hub")
        .listen("127.0.0.1:0".parse()?)
        .secret(secret.clone())
        .start()
        .await?;
    let (room, _) = Actor::spawn(None, ChatRoom, RoomConfig::from("general")).await?;
    hub.register("general", &room)?;
    let addr = hub.local_addr().expect("hub listens").to_string();
    println!("hub listening on {addr}");

    // Node B dials out only; the member reads its session through `events`.
    let laptop = Node::builder()
        .name("laptop")
        .secret(secret)
        .start()
        .await?;
    let mut ann = join(&laptop, &addr, "general", "ann", Duration::from_secs(5)).await?;
    println!("ann joined; members: {:?}", ann.welcome.members);

    for (n, text) in ["hello", "anyone here?"].into_iter().enumerate() {
        let client_seq = n as u64 + 1;
        ann.room
            .cast(Text {
                client_seq,
                text: text.into(),
            })
            .await?;
    }
    // Half-close: the room's acks for both texts still arrive, then its farewell.
    ann.room.finish();
    while let Some(event) = ann.events.recv().await {
        match event {
            ChatEvent::Acked(ack) => {
                println!("room acked text {} as #{}", ack.client_seq, ack.room_seq)
            }
            ChatEvent::Closed(CloseReason::Finished) => break,
            ChatEvent::Closed(reason) => anyhow::bail!("session closed: {reason}"),
            other => println!("{other:?}"),
        }
    }
    println!("session finished politely");
    laptop.shutdown().await;
    hub.shutdown().await;
    Ok(())
}
