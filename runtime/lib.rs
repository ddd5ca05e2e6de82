//! duologue: an actor runtime on [`ractor`] whose nodes talk over gRPC bidirectional
//! streams. Each conversation between two actors is a **session**: one HTTP/2 stream
//! whose state advances with every exchange (greeting, work, farewell), many of them
//! multiplexed on one connection per pair of nodes, all of an actor's sessions feeding
//! its one ractor mailbox.
//!
//! # Layout
//!
//! Every public item is at the crate root; the modules behind them are private, each
//! with one job. From the bottom up:
//!
//! - `wire`: the protocol's frames as domain types ([`SessionId`], [`Goodbye`], ...); the
//!   one place a malformed frame becomes a typed error. A leaf: it uses no other module.
//! - `error`: the typed errors of every boundary ([`CloseReason`], [`ConnectError`], ...).
//! - `auth`: the shared secret ([`Secret`]) and the HMAC challenge-response proofs.
//! - `tls`: TLS and mutual TLS on both ends ([`ServerTls`], [`ClientTls`]), loaded and
//!   checked up front; the verifier that binds the handshake to the peer's certificate.
//! - `budget`: memory budgets the sessions of a node share, per peer and in all
//!   ([`BudgetConfig`]): replay buffers, and what waits unhandled in mailboxes.
//! - `session`: one session's state machine, pure (no tokio, no tonic, no clock), split by
//!   concern: handshake, resume, replay and acks, flow control, timers.
//! - `config`: the node's settings ([`NodeConfig`], [`SessionConfig`], [`SessionPolicy`]).
//! - `shared`: a session core behind its lock, shared by its task and its handles.
//! - `session_ref` / `remote_ref`: handles to a session ([`SessionRef`]) and typed handles
//!   to a remote actor ([`RemoteRef`]) speaking a [`Protocol`].
//! - `members`: the cluster as one node sees it, pure: members ([`Member`]), the
//!   [`ClusterEvent`]s between two views, and which node a contested name resolves to.
//! - `mailbox`: what sessions deliver into an actor's mailbox: typed by the protocol the
//!   actor serves ([`Mailbox<P, L>`], decoded before delivery, in `mailbox/typed`), or
//!   untyped ([`Inbound`], [`SessionSignal`]); see [the merged mailbox](#the-merged-mailbox).
//! - `oneof`: [`oneof!`], the `From`/`TryFrom` impls between a protobuf `oneof` wrapper
//!   and its variants.
//! - `driver`: the thin async layer: one task per session moving frames between its core
//!   and its gRPC streams, and events into the owner's mailbox. It reports to the node
//!   through a trait the node implements, and never names the node.
//! - `node`: the node ([`Node`]): registry of named actors, gRPC server, links to peers,
//!   shutdown; the kinds of actor it spawns on request and its `$node` control actor;
//!   its cluster membership on chitchat (lookup by name, cluster events).
//! - `inbox`: a session read as a typed stream without an actor ([`InboxReceiver`]);
//!   credit follows the reader.
//! - `fanout`: sending to many sessions when some cannot keep up ([`Fanout`]): a slow
//!   member holds the senders back, a stuck one is let go; every member gets everything
//!   in order, or is told it was let go.
//! - `log_budget`: log lines a peer can cause at will, a few per window and the rest
//!   counted ([`LogBudget`]); used by the node, the fan-out and the ready-made actors.
//! - `cli` (feature `cli`): a node binary for your own actor kinds in one call
//!   (`cli::NodeMain`). A public module: a namespace for the node-binary runner.
//!
//! The ready-made actors (chat, editing, reconcile, pipeline) and the `duologue` command
//! live in the `duologue-actors` crate, built only on this public API; the process
//! harness of the tests, demo and benches in `duologue-testkit`.
//!
//! No two modules depend on each other unless one is the other's ancestor:
//! `tests/module_graph.rs` checks it.
//!
//! # The merged mailbox
//!
//! Every session's receive loop delivers straight into its owner's ractor mailbox, in
//! order, each item tagged with the [`SessionRef`] it came from. An actor with sessions
//! to many peers thus sees one ordered stream per session, merged into one mailbox: a
//! `select` across processes.
//!
//! An actor that serves one [`Protocol`] takes [`Mailbox<P, L>`] as its message type: the
//! runtime decodes each message as a `P::Request` before delivery, and `L` carries the
//! actor's own local messages. An untyped actor's message type accepts both kinds of
//! item, undecoded ([`SessionMsg`] does, for an actor that talks only through sessions):
//!
//! ```
//! use duologue::{Inbound, SessionSignal};
//!
//! enum RoomMsg {
//!     Inbound(Inbound),
//!     Session(SessionSignal),
//! }
//! impl From<Inbound> for RoomMsg {
//!     fn from(inbound: Inbound) -> Self {
//!         Self::Inbound(inbound)
//!     }
//! }
//! impl From<SessionSignal> for RoomMsg {
//!     fn from(signal: SessionSignal) -> Self {
//!         Self::Session(signal)
//!     }
//! }
//! ```
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

// One public path per item: the modules are private, and the root re-exports every
// public item of theirs (quinn's way). `cli` is a namespace of its own.
mod actor;
mod auth;
mod budget;
#[cfg(feature = "cli")]
pub mod cli;
mod config;
mod driver;
mod error;
mod handles;
mod log_budget;
mod members;
mod names;
mod node;
mod oneof;
mod session;
mod shutdown;
mod sync;
mod tls;
mod wire;

pub use actor::fanout::{Behind, Fanout, FanoutConfig, LetGo, Refused};
pub use actor::inbox::{InboxEvent, InboxReceiver, NoMessage};
pub use actor::mailbox::{
    BatchedSessionMsg, Credit, FromCluster, FromSession, HeldBack, Inbound, InboundBatch, Lost,
    Mailbox, NoLocal, Reply, ReplyPort, Resumption, SessionMsg, SessionSignal, Unconfirmed,
    Undecodable,
};
pub use auth::{MIN_DISTINCT_BYTES, MIN_SECRET_LEN, Secret};
pub use budget::BudgetConfig;
pub use config::{
    AdminAccess, AdminToken, AdmissionConfig, ClusterConfig, NodeConfig, RuntimeFlavor,
    SessionPolicy,
};
pub use error::{
    AdminGuard, AuthError, CallError, CloseReason, ConnectError, DecodeError, HeldBy,
    InterruptCause, LookupError, LostReason, NodeError, ProtocolError, ReplayLimit, SendError,
    SpawnError, TlsFailure,
};
pub use handles::remote_ref::{Payload, Protocol, RemoteRef};
pub use handles::session_ref::SessionRef;
pub use log_budget::{LOG_LINES_PER_WINDOW, LOG_WINDOW, LogBudget, LogVerdict};
pub use members::{ClusterEvent, Member, MemberState, NamedActor, name_holders, spawn_candidates};
pub use names::{MAX_NAME_BYTES, MAX_PROTOCOL_BYTES, printable};
pub use node::{
    ActorSpec, Bookkeeping, CONTROL_ACTOR, ClusterStatus, Hosted, Located, MembersAt, Node,
    NodeBuilder, NodeEvent, NodeStatus, Rate, RatePoint, SessionState, SessionStatus, SpawnOn,
    Spawned,
};
pub use session::{FlowState, Role, SessionConfig, SessionCounters};
pub use tls::{ClientTls, ServerTls, TlsRefusal, TlsRefused};
pub use wire::{
    Fault, FlowSignal, FrameError, Goodbye, GoodbyeReason, INTERN_LIMIT, NONCE_LEN, NodeIdentity,
    PROOF_LEN, PROTOCOL_VERSION, Refusal, RefuseReason, SessionId, TypeUrl,
};

/// Not API: the session core's test harness and fuzz (`runtime/session/testing/`), for the
/// crate's tests and, with the feature `bench-internals`, the benches of the session core.
/// It may change in any release.
#[cfg(any(test, feature = "bench-internals"))]
#[doc(hidden)]
pub use session::testing as session_testing;
