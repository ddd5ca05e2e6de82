//! Ready-made actors for the session paradigms, built only on duologue's public API.
//!
//! - [`chat`]: a chat room (JOIN -> WELCOME -> TEXT -> ACK, relayed to the other
//!   members) and a member actor that joins one.
//! - [`seq_check`]: a sequence checker (TICK n = 1, 2, 3, ... counted for order,
//!   repeats and gaps across all its sessions; REPORT on call; STOP with a final
//!   report), for diagnosing delivery.

pub mod chat;
pub mod edit;
pub mod pipeline;
pub mod reconcile;
pub mod seq_check;
