//! `duologue demo <chat|edit|reconcile|pipeline|cluster|entities|all>`: a real cluster of separate
//! processes on 127.0.0.1 with ports chosen at run time, playing one paradigm (or all of
//! them in turn) and printing what happens for a person to read, then a summary. At a
//! terminal, a bar on stderr follows the runs that take seconds (`cluster`, `all`).
//! Every child is killed on every exit path (errors, Ctrl-C, panics): each one is held by
//! a guard that kills it when dropped.

/// `println!`, above the progress bars that show (`duologue_testkit::progress::println`):
/// while `demo all` or a long demo draws one, a line printed past it would break it.
macro_rules! say {
    () => {
        duologue_testkit::progress::println("")
    };
    ($($arg:tt)*) => {
        duologue_testkit::progress::println(format_args!($($arg)*))
    };
}

mod chat;
mod cluster;
mod edit;
mod entities;
mod pipeline;
mod reconcile;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use duologue_testkit::ClusterError;
use duologue_testkit::progress::{self, Summary};

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
    /// Shopping carts as entities on three nodes, one node killed, every cart back.
    Entities,
    /// Every paradigm in turn.
    All,
}

impl Paradigm {
    /// Its name on the command line.
    fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Edit => "edit",
            Self::Reconcile => "reconcile",
            Self::Pipeline => "pipeline",
            Self::Cluster => "cluster",
            Self::Entities => "entities",
            Self::All => "all",
        }
    }
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
            Paradigm::Entities,
        ],
        one => vec![one],
    };
    let started = Instant::now();
    // `all` runs for several seconds: a bar over the paradigms played.
    let all = (paradigms.len() > 1).then(|| progress::bar("demo all", paradigms.len() as u64));
    for &paradigm in &paradigms {
        if let Some(all) = &all {
            all.set_message(paradigm.name());
        }
        let result = tokio::select! {
            result = play(paradigm) => result,
            _ = tokio::signal::ctrl_c() => Err(ClusterError::Unexpected("interrupted".into())),
        };
        // Children not yet stopped were killed when their guards dropped with the future.
        let name = format!("demo {}", paradigm.name());
        match result {
            Ok(summary) => say!("{}", summary.ok()),
            Err(error) => {
                progress::eprintln(Summary::new(name).failed(error));
                return ExitCode::FAILURE;
            }
        }
        if let Some(all) = &all {
            all.inc(1);
        }
    }
    if let Some(all) = all {
        all.finish_and_clear();
        let mut summary = Summary::new("demo all");
        summary.figure(format_args!(
            "{} paradigms played in {:.1} s",
            paradigms.len(),
            started.elapsed().as_secs_f64()
        ));
        say!("\n{}", summary.ok());
    }
    ExitCode::SUCCESS
}

/// Plays one paradigm; its summary says what it showed.
async fn play(paradigm: Paradigm) -> Result<Summary, ClusterError> {
    match paradigm {
        Paradigm::Chat => chat::run().await,
        Paradigm::Edit => edit::run().await,
        Paradigm::Reconcile => reconcile::run().await,
        Paradigm::Pipeline => pipeline::run().await,
        Paradigm::Cluster => cluster::run().await,
        Paradigm::Entities => entities::run().await,
        Paradigm::All => unreachable!("expanded above"),
    }
}
