//! Ready-made actors for the session paradigms, built only on duologue's public API.
//!
//! - [`chat`]: a chat room (JOIN -> WELCOME -> TEXT -> ACK, relayed to the other
//!   members; presence, history on join, leave) and a member actor that joins one.
//! - [`edit`]: collaborative editing: a document and editors exchanging `yrs` CRDT
//!   updates both ways, converging after concurrent edits, cuts and late joins.
//! - [`reconcile`]: a control-plane reconcile loop: a declared state, and numbered
//!   status reports streamed back until it converges; a new declaration changes course.
//! - [`pipeline`]: an adaptive pipeline: a stage that throttles and resumes its producer
//!   by its own latency, and a producer whose rate follows.
//! - [`seq_check`]: a sequence checker (TICK n = 1, 2, 3, ... counted for order,
//!   repeats and gaps across all its sessions; REPORT on call; STOP with a final
//!   report), for diagnosing delivery.

pub mod chat;
pub mod edit;
mod peer_lines;
pub mod pipeline;
pub mod reconcile;
pub mod seq_check;
