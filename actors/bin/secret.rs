//! `duologue secret new FILE`: a fresh random cluster secret, readable by its owner only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use duologue::Secret;

/// Options of `duologue secret`.
#[derive(Debug, Args)]
pub(crate) struct SecretArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Write 32 random bytes (as hex) to FILE, mode 0600; FILE must not exist.
    New {
        /// Where to write the secret.
        file: PathBuf,
    },
}

pub(crate) fn run(args: &SecretArgs) -> ExitCode {
    let Action::New { file } = &args.action;
    match Secret::create_file(file) {
        Ok(_) => {
            println!("wrote a new secret to {}", file.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("duologue secret: {error}");
            ExitCode::FAILURE
        }
    }
}
