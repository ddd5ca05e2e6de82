//! `duologue demo <chat|edit|reconcile|pipeline|cluster|all>`: a real cluster of separate
//! processes on 127.0.0.1 with ports chosen at run time, playing one paradigm (or all of
//! them in turn) and printing what happens for a person to read. Every child is killed on
//! every exit path (errors, Ctrl-C, panics): each one is held by a guard that kills it
//! when dropped.

mod chat;
mod cluster;
mod edit;
mod pipeline;
mod reconcile;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use duologue_testkit::ClusterError;

/// Options of `duologue demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Which paradigm to play.
    #[arg(value_enum)]
    paradigm: Paradigm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Paradigm {
    /// A chat room on one node, members on three others.
    Chat,
    /// A shared document on one node, editors on others, converging.
    Edit,
    /// A reconciler streaming progress towards a declared state.
    Reconcile,
    /// A producer whose rate follows a stage's back-pressure.
    Pipeline,
    /// Nodes finding each other by gossip; a room found by name, its node killed, the
    /// room spawned again elsewhere and its members back in it.
    Cluster,
    /// Every paradigm in turn.
    All,
}

/// Bound on every wait of the demos.
pub(crate) const STEP: Duration = Duration::from_secs(15);

pub(crate) async fn run(args: DemoArgs) -> ExitCode {
    let paradigms = match args.paradigm {
        Paradigm::All => vec![
            Paradigm::Chat,
            Paradigm::Edit,
            Paradigm::Reconcile,
            Paradigm::Pipeline,
            Paradigm::Cluster,
        ],
        one => vec![one],
    };
    for paradigm in paradigms {
        let (name, result) = tokio::select! {
            result = play(paradigm) => result,
            _ = tokio::signal::ctrl_c() => ("demo", Err(ClusterError::Unexpected("interrupted".into()))),
        };
        // Children not yet stopped were killed when their guards dropped with the future.
        match result {
            Ok(()) => println!("demo {name}: ok"),
            Err(error) => {
                eprintln!("demo {name} failed: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

async fn play(paradigm: Paradigm) -> (&'static str, Result<(), ClusterError>) {
    match paradigm {
        Paradigm::Chat => ("chat", chat::run().await),
        Paradigm::Edit => ("edit", edit::run().await),
        Paradigm::Reconcile => ("reconcile", reconcile::run().await),
        Paradigm::Pipeline => ("pipeline", pipeline::run().await),
        Paradigm::Cluster => ("cluster", cluster::run().await),
        Paradigm::All => unreachable!("expanded above"),
    }
}
