//! duologue: an actor runtime on [`ractor`] whose nodes talk over gRPC bidirectional
//! streams. Each conversation between two actors is a **session**: one HTTP/2 stream
//! whose state advances with every exchange (greeting, work, farewell), many of them
//! multiplexed on one connection per pair of nodes, all of an actor's sessions feeding
//! its one ractor mailbox.
//!
//! # The public face
//!
//! The crate root holds what a first user needs: a [`Node`] (built with
//! [`NodeBuilder`], [`NodeConfig`] and a [`Secret`]), actors registered with
//! [`Node::register`] and sessions opened with [`Node::connect`] (one [`Connect`] for
//! every owner kind: an actor, an actor taking batches ([`Owner`]), or an
//! [`InboxReceiver`]; by address or by name, [`Target`]), the typed [`Mailbox`] and the
//! untyped [`Inbound`] and [`SessionSignal`], the handles [`RemoteRef`] and
//! [`SessionRef`] (whose [`SessionRef::signal`] sends a [`FlowSignal`]), and the errors
//! of those calls. The rest is in namespaces: [`flow`] (what holds a sender back,
//! fan-out), [`mailbox`] (batches, replies, the traits a message type implements),
//! [`cluster`] (members, names, remote spawn), [`status`] (status, events,
//! bookkeeping), [`settings`] (settings beside `NodeConfig`), [`state`] (entity state in
//! a store: SQLite or PostgreSQL, fencing, leases), [`tls`], [`wire`] (the
//! protocol's frames as types) and `cli` (feature `cli`: node binaries).
//!
//! # Layout
//!
//! The modules behind the public face are private, grouped by who owns what, in the order
//! data flows:
//!
//! - `node`: the node, a facade over parts it builds in order and hands to each other:
//!   `registry` (names), `sessions` (live and resumable sessions, what drivers report),
//!   `dial` and `link` (connections to peers), `server` (admission, the session service,
//!   the standard services), `ops` and `admin` (status, metrics, the admin address),
//!   `cluster` (membership on chitchat), `control` (the `$node` actor), `hosting` (kinds
//!   started on request), `watcher` (actors that stopped).
//! - `driver`: one task per session moving frames between its core and its gRPC streams,
//!   and events into the owner's mailbox; it reports to the node through a trait the node
//!   implements, and never names the node.
//! - `actor`: what reaches an actor (the `mailbox` with its typed [`Mailbox`], an
//!   `inbox`, a `fanout`, the session's `owner`).
//! - `handles`: one session's core behind its lock (`state`), and the handles to it
//!   ([`SessionRef`], [`RemoteRef`]).
//! - `session`: one session's state machine, pure (no tokio, no tonic, no clock of its
//!   own), split by concern: handshake, resume, replay and acks, flow control, timers.
//! - `wire`: the protocol's frames as domain types; the one place a malformed frame
//!   becomes a typed error, and the byte encoding. No tonic.
//!
//! Beside them: `auth` (secret and proofs), `tls`, `budget` (memory budgets the sessions
//! of a node share), `config`, `error`, `members` and `names` (the cluster as one node
//! sees it, pure), `log_budget`, `oneof` ([`oneof!`]), `signal`, `shutdown`, `store`
//! (the entity state store's connection pool: SQLite or PostgreSQL), `sync`.
//!
//! The ready-made actors (chat, editing, reconcile, pipeline) and the `duologue` command
//! live in the `duologue-actors` crate, built only on this public API; the process
//! harness of the tests, demo and benches in `duologue-testkit`.
//!
//! No two modules depend on each other unless one is the other's ancestor, and no child
//! uses its ancestors' state: `tests/module_graph.rs` checks both.
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

mod actor;
mod auth;
mod budget;
#[cfg(feature = "cli")]
pub mod cli;
mod config;
mod cores;
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
mod signal;
mod store;
mod sync;
pub mod tls;
pub mod wire;

// The core a first user needs is at the root; the rest is in a few namespaces below,
// each item at one public path (quinn's way): the modules behind them are private.
pub use actor::inbox::InboxReceiver;
pub use actor::mailbox::{Inbound, Mailbox, Reply, SessionMsg, SessionSignal};
pub use actor::owner::Owner;
pub use auth::Secret;
pub use config::{NodeConfig, SessionPolicy};
pub use error::{
    AuthError, CallError, CloseReason, ConnectError, DecodeError, EntityError, InterruptCause,
    LostReason, NodeError, ProtocolError, SendError,
};
pub use handles::remote_ref::{Protocol, RemoteRef};
pub use handles::session_ref::SessionRef;
pub use node::{Connect, Entity, EntityRef, EntityReply, Node, NodeBuilder, Target};

/// Entities beyond the handle and the message type: what comes back undelivered, and
/// the kinds members host.
pub mod entities {
    pub use crate::members::HostedKind;
    pub use crate::node::Undelivered;
}
pub use signal::FlowSignal;

/// Entity state in a database: the store (SQLite or PostgreSQL), the setting that names
/// it, and what an entity that keeps state holds ([`state::Durable`]).
pub mod state {
    pub use crate::node::Durable;
    pub use crate::store::{
        Claim, LeaseRecord, STORE_TIMEOUT, StateConfig, StateError, StateStore, Stored,
    };
}

/// Flow control beyond [`FlowSignal`]: what holds a sender back, what a session's flow
/// state is, and one actor's messages fanned out to many sessions without letting a
/// slow member stall the rest.
pub mod flow {
    pub use crate::actor::fanout::{Behind, Fanout, FanoutConfig, LetGo, Refused};
    pub use crate::actor::mailbox::{Credit, HeldBack, Resumption};
    pub use crate::error::{HeldBy, ReplayLimit};
    pub use crate::session::{FlowState, SessionCounters};
}

/// What sessions deliver into a mailbox beyond [`Inbound`] and [`SessionSignal`]: the
/// traits a message type implements to take them, batches, replies to calls, and what a
/// lost session never confirmed.
pub mod mailbox {
    pub use crate::actor::inbox::{InboxEvent, NoMessage};
    pub use crate::actor::mailbox::{
        BatchedMailbox, BatchedSessionMsg, FromCluster, FromSession, InboundBatch, Lost, NoLocal,
        ReplyPort, Unconfirmed, Undecodable,
    };
    pub use crate::handles::remote_ref::Payload;
}

/// A cluster of nodes: members, names, lookups, actors started on request.
pub mod cluster {
    pub use crate::error::{LookupError, SpawnError};
    pub use crate::members::{
        ClusterEvent, HostedKind, Member, MemberState, NamedActor, name_holders, spawn_candidates,
    };
    pub use crate::names::{MAX_NAME_BYTES, MAX_PROTOCOL_BYTES, printable};
    pub use crate::node::{
        ActorSpec, CONTROL_ACTOR, ClusterStatus, Hosted, Located, MembersAt, SpawnOn, Spawned,
    };
}

/// What a node reports about itself: status, bookkeeping, events, and the admin
/// address's access and log budget.
pub mod status {
    pub use crate::error::AdminGuard;
    pub use crate::log_budget::{LOG_LINES_PER_WINDOW, LOG_WINDOW, LogBudget, LogVerdict};
    pub use crate::node::{
        Bookkeeping, EntityKindStatus, NodeEvent, NodeStatus, Rate, RatePoint, SessionState,
        SessionStatus,
    };
    pub use crate::session::Role;
}

/// The node's settings beside [`NodeConfig`] and [`SessionPolicy`].
pub mod settings {
    pub use crate::budget::BudgetConfig;
    pub use crate::config::{
        AdminAccess, AdminToken, AdmissionConfig, ClusterConfig, EntityConfig, RuntimeFlavor,
    };
    pub use crate::cores::NodeRuntime;
    pub use crate::session::SessionConfig;
}

/// Not API: the session core's test harness and fuzz (`runtime/session/testing/`), for the
/// crate's tests and, with the feature `bench-internals`, the benches of the session core.
/// It may change in any release.
#[cfg(any(test, feature = "bench-internals"))]
#[doc(hidden)]
pub use session::testing as session_testing;
