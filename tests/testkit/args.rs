//! Command-line options shared by the bench binaries (`--flag value`, numbers only).

use anyhow::Context;

/// The number after `flag` in `args`, or `default` when the flag is absent.
///
/// # Errors
/// When `flag` has no value after it, or one that is not a number.
pub fn option(args: &[String], flag: &str, default: u64) -> anyhow::Result<u64> {
    match args.iter().position(|a| a == flag) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} takes a number")),
        None => Ok(default),
    }
}
