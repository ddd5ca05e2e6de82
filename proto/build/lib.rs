//! Compiles the `.proto` files of a duologue protocol from a crate's `build.rs`.
//!
//! Session messages are prost 0.14 messages with `prost::Name` (their type URL travels
//! with every message), so the generated types need prost-build's `enable_type_names()`.
//! This does that, with protox instead of a system `protoc`:
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     duologue_build::messages(["kv/v1/kv.proto"], ["proto"])
//! }
//! ```
//!
//! and in the crate, `include!(concat!(env!("OUT_DIR"), "/kv.v1.rs"));` (the file is
//! named after the proto package).

use std::path::Path;

/// Generates the messages of `files` (found under `includes`) into `OUT_DIR`, one
/// `<package>.rs` per proto package, each message with its `prost::Name` (type URL
/// `type.googleapis.com/<package>.<Message>`). Tells Cargo to run the build script again
/// when a file under `includes` changes.
///
/// # Errors
/// When a file does not parse or compile (the error names file and line), or the
/// output cannot be written.
pub fn messages(
    files: impl IntoIterator<Item = impl AsRef<Path>>,
    includes: impl IntoIterator<Item = impl AsRef<Path>>,
) -> Result<(), Box<dyn std::error::Error>> {
    messages_with(files, includes, prost_build::Config::new())
}

/// As [`messages`], with a prost-build `config` of the caller's (say, `.bytes(["."])`
/// so payloads decode without copying).
///
/// # Errors
/// As [`messages`].
pub fn messages_with(
    files: impl IntoIterator<Item = impl AsRef<Path>>,
    includes: impl IntoIterator<Item = impl AsRef<Path>>,
    mut config: prost_build::Config,
) -> Result<(), Box<dyn std::error::Error>> {
    let includes: Vec<_> = includes
        .into_iter()
        .map(|i| i.as_ref().to_owned())
        .collect();
    for include in &includes {
        println!("cargo:rerun-if-changed={}", include.display());
    }
    let descriptors = protox::compile(files, &includes)?;
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        .compile_fds(descriptors)?;
    Ok(())
}
