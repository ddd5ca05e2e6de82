//! The `duologue` command: run a node, chat in a room, or watch a demo cluster.
//!
//! ```text
//! duologue node --name hub --listen 127.0.0.1:0 --secret-file cluster.secret --actor chat-room:general
//! duologue chat --peer 127.0.0.1:PORT --room general --user alice --secret-file cluster.secret
//! duologue demo chat
//! ```

mod chat;
mod demo;
mod node;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use duologue::config::RuntimeFlavor;

/// An actor runtime whose nodes talk over gRPC bidirectional streams.
#[derive(Debug, Parser)]
#[command(name = "duologue", version)]
struct Cli {
    /// The tokio runtime to run on: `multi-thread` spreads actors over all cores;
    /// `current-thread` runs actors and network on one thread, which answers calls about
    /// twice as fast on a small machine (see benches/README.md).
    #[arg(long, global = true, default_value = "multi-thread", value_parser = str::parse::<RuntimeFlavor>)]
    runtime: RuntimeFlavor,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node until SIGINT or SIGTERM.
    Node(node::NodeArgs),
    /// Join a chat room on a node; stdin lines are sent, relayed texts are printed.
    Chat(chat::ChatArgs),
    /// Start a real multi-process cluster on 127.0.0.1 and play a paradigm.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match cli.runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("duologue: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => node::run(args).await,
            Command::Chat(args) => chat::run(args).await,
            Command::Demo(args) => demo::run(args).await,
        }
    });
    // A blocking read of stdin may still be pending; the command is over, so do not
    // wait for it.
    runtime.shutdown_background();
    code
}
