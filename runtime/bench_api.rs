//! Crate-private pieces of the session core, exposed for `benches/session_core.rs` only
//! (feature `bench-internals`). Not part of the API.
