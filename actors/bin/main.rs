//! The `duologue` command: run a node, chat in a room, or watch a demo cluster.
//!
//! ```text
//! duologue node --name hub --listen 127.0.0.1:0 --secret-file cluster.secret --actor chat-room:general
//! duologue chat --peer 127.0.0.1:PORT --room general --user alice --secret-file cluster.secret
//! duologue demo chat
//! duologue node --name a --secret-file cluster.secret --gossip-listen 127.0.0.1:7001 --actor chat-room:general
//! duologue node --name b --secret-file cluster.secret --gossip-listen 127.0.0.1:7002 --seed 127.0.0.1:7001
//! duologue members --peer 127.0.0.1:PORT --secret-file cluster.secret
//! duologue spawn --peer 127.0.0.1:PORT --secret-file cluster.secret --any chat-room:lobby
//! duologue status --peer 127.0.0.1:PORT --secret-file cluster.secret
//! duologue certs certs/ --node hub --node alice   # a development CA and certificates
//! duologue node --name hub --listen 0.0.0.0:7000 --secret-file cluster.secret \
//!     --tls-cert certs/hub.pem --tls-key certs/hub.key --tls-client-ca certs/ca.pem --actor chat-room:general
//! duologue chat --peer 127.0.0.1:7000 --room general --user alice --secret-file cluster.secret \
//!     --tls-ca certs/ca.pem --tls-client-cert certs/alice.pem --tls-client-key certs/alice.key
//! ```

/// jemalloc, not glibc's malloc: a node's memory comes and goes with its peers (a crowd
/// that joins, talks and vanishes), and glibc kept most of what they made it allocate
/// after they were gone, where jemalloc returns it (`benches/hostile_room.rs`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod certs;
mod chat;
mod demo;
mod members;
mod node;
mod secret;
mod shards;
mod status;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use duologue::cli::{LogFormat, NodeArgs};
use duologue::settings::RuntimeFlavor;

/// An actor runtime whose nodes talk over gRPC bidirectional streams.
#[derive(Debug, Parser)]
#[command(name = "duologue", version)]
struct Cli {
    /// The tokio runtime to run on: `multi-thread` spreads actors over all cores;
    /// `current-thread` runs actors and network on one thread, which answers calls about
    /// twice as fast on a small machine; `thread-per-core` runs one current-thread runtime
    /// per core, each connection with its sessions on one of them (see benches/README.md).
    #[arg(long, global = true, default_value = "multi-thread", value_parser = str::parse::<RuntimeFlavor>)]
    runtime: RuntimeFlavor,
    /// How log lines look on stderr: `text` for people, `json` (one object a line, with
    /// the session's span fields) for machines.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node until SIGINT or SIGTERM.
    Node(Box<NodeArgs>),
    /// Join a chat room on a node; stdin lines are sent, relayed texts are printed.
    Chat(chat::ChatArgs),
    /// Start a real multi-process cluster on 127.0.0.1 and play a paradigm.
    Demo(demo::DemoArgs),
    /// Write a development CA and node certificates signed by it (TLS, mutual TLS).
    Certs(certs::CertsArgs),
    /// Make a cluster secret: `duologue secret new FILE`.
    Secret(secret::SecretArgs),
    /// List a cluster's members, their state and named actors, as one node sees them.
    Members(members::MembersArgs),
    /// Start an actor of a registered kind on a node of the cluster.
    Spawn(members::SpawnArgs),
    /// What a node is doing: its sessions (peer, actor, state, credit, backlog, rates)
    /// and its cluster's members, as tables.
    Status(status::StatusArgs),
    /// The entity kinds of a cluster, node by node: shards, active entities, hand-offs.
    Shards(shards::ShardsArgs),
}

fn main() -> ExitCode {
    // The kinds `node` describes in its help; the node itself is built once its flags
    // say whether it has a store (`--state`), where the carts then keep their lines.
    let kinds = node::ready_made(false);
    // `node`'s flags, and the global --runtime and --log-format, also read DUOLOGUE_FLAG
    // variables; `node` also reads --config FILE (duologue::cli::get_matches).
    let command = kinds
        .with_env(Cli::command())
        .mut_subcommand("node", |node| kinds.describe(node));
    let cli = match Cli::from_arg_matches(&duologue::cli::get_matches(command)) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    duologue::cli::log_to_stderr(cli.log_format);
    let runtime = match cli.runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("duologue: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => {
                let with_store = args.state.url.is_some();
                node::ready_made(with_store).serve(*args).await
            }
            Command::Chat(args) => chat::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Certs(args) => certs::run(&args),
            Command::Secret(args) => secret::run(&args),
            Command::Members(args) => members::members(args).await,
            Command::Spawn(args) => members::spawn(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Shards(args) => shards::run(args).await,
        }
    });
    // A blocking read of stdin may still be pending; the command is over, so do not
    // wait for it.
    runtime.shutdown_background();
    code
}
