//! Ready-made actors for the session paradigms, built only on duologue's public API.
//!
//! - [`chat`]: a chat room (JOIN -> WELCOME -> TEXT -> ACK, relayed to the other
//!   members) and a member actor that joins one.

pub mod chat;
