//! duologue: an actor runtime on [`ractor`] whose nodes talk over gRPC bidirectional
//! streams. Each conversation between two actors is a **session**: one HTTP/2 stream
//! whose state advances with every exchange (greeting, work, farewell), many of them
//! multiplexed on one connection per pair of nodes, all of an actor's sessions feeding
//! its one ractor mailbox.
//!
//! # Layout
//!
//! - [`wire`]: the protocol's frames as domain types; the one place a malformed frame
//!   becomes a typed error. The generated protobuf types stay private.
//! - [`auth`]: the shared secret and the HMAC challenge-response proofs.
//! - [`session`]: one session's state machine, pure (no tokio, no tonic, no clock).
//! - `driver`: the thin async layer moving frames between a session and its gRPC
//!   stream, and events into the owner's mailbox.
//! - [`mailbox`]: what sessions deliver into an actor's mailbox ([`Inbound`],
//!   [`SessionSignal`]).
//! - [`inbox`]: a session read as a typed stream without an actor ([`InboxReceiver`]);
//!   credit follows the reader.
//! - [`fanout`]: sending to many sessions when some cannot keep up ([`Fanout`]): every
//!   member gets everything in order, or is told it fell behind.
//! - `session_ref` / `remote_ref`: handles to a session ([`SessionRef`]) and typed
//!   handles to a remote actor ([`RemoteRef`]).
//! - [`node`]: the node: registry of named actors, gRPC server, links to peers,
//!   shutdown.
//! - [`local_cluster`]: starting node processes on this machine (demo, tests, benches).
//! - [`config`]: the node's settings; [`error`]: the typed errors of every boundary.
//! - [`actors`]: ready-made actors built only on this public API (the chat room).
//!
//! # Example
//!
//! ```no_run
//! # async fn run(room: ractor::ActorRef<duologue::SessionMsg>) -> Result<(), Box<dyn std::error::Error>> {
//! use duologue::{Node, Secret};
//!
//! let node = Node::builder()
//!     .name("hub")
//!     .listen("127.0.0.1:0".parse()?)
//!     .secret(Secret::new("a shared secret of 16+ bytes")?)
//!     .start()
//!     .await?;
//! node.register("general", &room)?;
//! println!("listening on {}", node.local_addr().unwrap());
//! # Ok(()) }
//! ```

// Ready-made actors use `duologue::` paths, exactly as code outside the crate would.
extern crate self as duologue;

pub mod auth;
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_api;
pub mod config;
mod driver;
pub mod error;
pub mod fanout;
pub mod inbox;
pub mod local_cluster;
pub mod mailbox;
pub mod node;
mod remote_ref;
pub mod session;
mod session_ref;
mod shutdown;
pub mod wire;

#[path = "../actors/actors.rs"]
pub mod actors;

pub use auth::Secret;
pub use config::NodeConfig;
pub use error::{
    AuthError, CallError, CloseReason, ConnectError, DecodeError, NodeError, ProtocolError,
    SendError,
};
pub use fanout::{Behind, Fanout, FanoutConfig};
pub use inbox::{InboxEvent, InboxReceiver};
pub use mailbox::{Inbound, ReplyPort, SessionMsg, SessionSignal};
pub use node::{Node, NodeBuilder, NodeEvent};
pub use remote_ref::{Protocol, RemoteRef};
pub use session::SessionConfig;
pub use session_ref::SessionRef;
pub use wire::{
    Fault, Goodbye, GoodbyeReason, NodeIdentity, Refusal, RefuseReason, SessionId, TypeUrl,
};
