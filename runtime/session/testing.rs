//! Not API: the session core's test harness, for the crate's tests and, with the feature
//! `bench-internals`, for the root package's benches (`benches/session_core.rs`,
//! `benches/fuzz.rs`), which reach it as `duologue::session_testing`. Anything here may
//! change in any release.
//!
//! - [`harness`]: two sessions back to back ([`Harness`]): the session core's unit tests
//!   drive them frame by frame on a synthetic clock; the bench runs its hot path.
//! - [`frames`]: frames encoded and decoded as the driver does, for the codec benches.
//! - [`fuzz`]: the fuzz of the frame decoder and the session core, run by its test (a
//!   few thousand inputs) and by the fuzz bench (a million).
//!
//! Like the core, everything here is pure: no sockets, no runtime.

pub mod frames;
pub mod fuzz;
pub mod harness;

pub use harness::Harness;
