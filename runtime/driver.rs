//! The thin async layer around one session core: it moves frames between the core and
//! gRPC streams, and events from the core into the owner's mailbox. One driver task lives
//! as long as its session, across any number of streams.
//!
//! - `task`: the per-session task ([`Driver::run`]): reads each stream, feeds the core,
//!   and gets the next stream when one breaks.
//! - `events`: what the core's events become: mailbox items for the owner, reports to
//!   the node.
//! - `dial`: the initiator's way back to its peer: dialing, with capped, jittered
//!   exponential backoff ([`backoff`]).
//! - `outbound`: the outgoing half of each stream ([`OutboundFrames`]), the `Stream`
//!   tonic's encoder pulls: each poll takes the next frame the core has ready.
//! - `link`: where the next stream comes from ([`Link`]): a dial, or a resume stream
//!   the node routes to an acceptor ([`Attach`]).
//! - `hooks`: what a driver shares with its node ([`NodeHooks`], [`Context`]).
//! - `cause`: a failed gRPC stream as the typed cause the session sees.
//! - `transport`: the gRPC codec and the generated `Converse` stubs.
//! - `alarm`: the task's one timer.
//!
//! The core and its wakers live in [`crate::handles::state`], which handles use too. The driver
//! never reaches up into the node: it reports through [`NodeHooks`], which the node
//! implements, and the node decides (quinn's connection reports `EndpointEvent`s to its
//! endpoint the same way).

mod alarm;
mod cause;
mod dial;
mod events;
mod hooks;
mod link;
mod outbound;
mod task;
pub(crate) mod transport;

pub(crate) use cause::SHUTTING_DOWN;
pub(crate) use dial::backoff;
pub(crate) use hooks::{Closed, Context, DriverConfig, NodeHooks, Restart};
pub(crate) use link::{Attach, Dialer, Link, StreamStart};
pub(crate) use outbound::OutboundFrames;
pub(crate) use task::{Driver, OnAuthenticated};
