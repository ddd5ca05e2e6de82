//! A node binary for your own actor kinds in one call (feature `cli`).
//!
//! A node process hosts named actors, each `--actor KIND:NAME[@ARG]` on its command line.
//! [`NodeMain`] knows the kinds the program registered and does the rest the way
//! `duologue node` does: every flag of [`NodeArgs`], the first stdout line
//! `listening on ADDR` (the contract with whoever started the process), and on SIGTERM or
//! SIGINT a bounded drain of every session before the actors stop. A node in a cluster
//! (`--gossip-listen`) prints `gossip on ADDR` as its second line; one with `--metrics`
//! then prints `metrics on http://ADDR` (`https` with `--metrics-tls`). SIGUSR1 prints one
//! line on stderr with the node's bookkeeping (links, resumable sessions, owners).
//!
//! ```no_run
//! use duologue::cli::NodeMain;
//! # #[derive(Default)] struct KvStore;
//! # impl ractor::Actor for KvStore {
//! #     type Msg = duologue::SessionMsg; type State = (); type Arguments = ();
//! #     async fn pre_start(&self, _: ractor::ActorRef<Self::Msg>, _: ()) -> Result<(), ractor::ActorProcessingErr> { Ok(()) }
//! # }
//!
//! fn main() -> std::process::ExitCode {
//!     NodeMain::new("kv")
//!         .actor("kv-store", "a key-value store", |_spec| Ok((KvStore, ())))
//!         .run()
//! }
//! ```
//!
//! `kv --name a --secret-file s --actor kv-store:store` then runs a node hosting `store`.
//!
//! # Settings
//!
//! Each setting is one flag of [`NodeArgs`] (or `--runtime`, `--log-format`), and is
//! taken from the first of:
//!
//! 1. the flag: `--max-connections 2048`;
//! 2. its environment variable, the binary's prefix (its name in upper case, each
//!    character other than a letter or digit as `_`, or [`NodeMain::env_prefix`]), `_`,
//!    then the long flag in upper case with `-` as `_`: `KV_MAX_CONNECTIONS=2048` for
//!    `kv`, `DUOLOGUE_MAX_CONNECTIONS` for `duologue node`;
//! 3. the TOML file `--config FILE` names (or the variable `KV_CONFIG`), whose keys are
//!    the long flags: `max-connections = 2048`;
//! 4. its default.
//!
//! `--help` shows each flag's variable. A repeatable flag (`--actor`, `--seed`,
//! `--seed-dns`, `--metrics-allow-host`) takes a comma-separated list in its variable and
//! on the command line, and a TOML list (or one string) in the file; the first source
//! that sets it gives the whole list. A switch is `true` or `false` in the variable and
//! in the file; any other value is written as the flag takes it (`resume-timeout =
//! "1m 30s"`, `phi-threshold = 8.0`). The file's values are parsed and checked as the
//! flags' are (with their `requires` and `conflicts_with`); a key that names no flag or
//! a value its flag refuses is a [`SettingsError`] naming the file, the line and the
//! key, and a refused variable one naming the variable. Secrets are read from files:
//! settings hold only their paths.
//!
//! ```toml
//! # kv.toml, for `kv --config kv.toml --name a` or `KV_CONFIG=kv.toml KV_NAME=a kv`
//! secret-file = "/run/secrets/cluster"
//! listen = "0.0.0.0:7000"
//! insecure-plaintext = true
//! gossip-listen = "0.0.0.0:7001"
//! seed = ["10.0.0.1:7001", "10.0.0.2:7001"]
//! actor = ["kv-store:store"]
//! resume-timeout = "1m"
//! ```
//!
//! A binary with commands beside `node` (as `duologue` has) gives its node subcommand
//! these settings with [`NodeMain::describe`] and parses with [`get_matches`], then runs
//! the node with [`NodeMain::serve`].

mod args;
mod flags;
mod settings;

use std::fmt;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{ArgMatches, Command, CommandFactory, FromArgMatches, Parser};
use ractor::{Actor, ActorCell, ActorRef};
use tokio::signal::unix::{SignalKind, signal};

pub use self::args::{
    AdminArgs, AdmissionArgs, BudgetArgs, ClusterArgs, DialTlsArgs, NodeArgs, ServeTlsArgs, Timing,
    duration,
};
pub use self::flags::explain;
pub use self::settings::SettingsError;
use crate::actor::mailbox::FromSession;
use crate::config::{NodeConfig, RuntimeFlavor};
pub use crate::node::{ActorSpec, Hosted};
use crate::node::{Entity, EntityKinds, Kinds, Node};

/// A node binary: the actor kinds it can host, then [`NodeMain::run`]. Its settings come
/// from flags, environment variables and a config file, in that order (see
/// [the module](self#settings)).
pub struct NodeMain {
    program: String,
    env_prefix: String,
    kinds: Kinds<Node>,
    entity_kinds: EntityKinds<Node>,
}

// The command line of a binary that only runs a node: the node's flags and the runtime.
// (A comment, not a doc comment: clap would show it as every such binary's description.)
#[derive(Debug, Parser)]
struct NodeCli {
    /// The tokio runtime: `multi-thread` spreads actors over all cores; `current-thread`
    /// runs actors and network on one thread; `thread-per-core` runs one current-thread
    /// runtime per core, each connection on one of them.
    #[arg(long, default_value = "multi-thread")]
    runtime: RuntimeFlavor,
    /// How log lines look on stderr: `text` for people, `json` (one object a line, with
    /// the session's span fields) for machines.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    node: NodeArgs,
}

impl NodeMain {
    /// A node binary called `program` (in help and error messages) hosting no kinds yet.
    /// Its settings' environment variables start with `program` in upper case, each
    /// character other than a letter or digit as `_` (`kv-node`: `KV_NODE_SEED`, ...);
    /// [`NodeMain::env_prefix`] chooses another prefix.
    pub fn new(program: impl Into<String>) -> Self {
        let program = program.into();
        Self {
            env_prefix: settings::env_prefix(&program),
            program,
            kinds: Kinds::default(),
            entity_kinds: EntityKinds::default(),
        }
    }

    /// Names the settings' environment variables `PREFIX_FLAG` (`PREFIX_SEED`,
    /// `PREFIX_MAX_CONNECTIONS`, ...) instead of after the program.
    pub fn env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.env_prefix = prefix.into();
        self
    }

    /// Hosts actors of `kind` with any async constructor: `host` gets the started node
    /// and the `--actor` spec (or a peer's spawn request, [`Node::spawn`]), spawns the
    /// actor, registers it under `spec.name` ([`Node::register`]) and returns its cell.
    /// For an actor spawned and registered as it is, [`NodeMain::actor`] is shorter.
    ///
    /// # Panics
    /// When `kind` was registered already (a programming error).
    pub fn kind<F, Fut>(mut self, kind: &str, about: &str, host: F) -> Self
    where
        F: Fn(Node, ActorSpec) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, String>> + Send + 'static,
    {
        self.kinds.add(kind, about, host);
        self
    }

    /// Hosts entities of `kind`, as [`crate::NodeBuilder::entity`] does.
    ///
    /// # Panics
    /// When `kind` was registered already (a programming error).
    pub fn entity<P, L, F, Fut>(mut self, kind: &str, start: F) -> Self
    where
        P: crate::Protocol,
        L: Send + 'static,
        F: Fn(Node, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorRef<Entity<P, L>>, String>> + Send + 'static,
    {
        crate::node::add_entity_kind(&mut self.entity_kinds, kind, start);
        self
    }

    /// Hosts entities of `kind` that keep state `S` in the node's store (`--state`), as
    /// [`crate::NodeBuilder::durable_entity`] does.
    ///
    /// # Panics
    /// When `kind` was registered already (a programming error).
    pub fn durable_entity<P, L, S, F, Fut>(mut self, kind: &str, start: F) -> Self
    where
        P: crate::Protocol,
        L: Send + 'static,
        S: prost::Message + Default + Clone + 'static,
        F: Fn(Node, String, crate::state::Durable<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorRef<Entity<P, L>>, String>> + Send + 'static,
    {
        crate::node::add_durable_entity_kind(&mut self.entity_kinds, kind, start);
        self
    }

    /// Hosts actors of `kind`: for each `--actor KIND:NAME`, `make(spec)` gives the actor
    /// and its arguments; the node spawns it and registers it as `NAME`
    /// ([`Node::register`]: a typed mailbox names its protocol). Such a kind takes no
    /// `@ARG`, and one given is refused; a kind that takes one uses [`NodeMain::kind`].
    pub fn actor<A, F>(self, kind: &str, about: &str, make: F) -> Self
    where
        A: Actor,
        A::Msg: FromSession,
        F: Fn(&ActorSpec) -> Result<(A, A::Arguments), String> + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        self.kind(kind, about, move |node, spec| {
            let made = match &spec.arg {
                Some(arg) => Err(format!("kind {} takes no @ARG (got @{arg})", spec.kind)),
                None => make(&spec),
            };
            async move {
                let (actor, arguments) = made?;
                let (actor, _) = Actor::spawn(None, actor, arguments)
                    .await
                    .map_err(|e| format!("cannot start {}:{}: {e}", spec.kind, spec.name))?;
                if let Err(error) = node.register(spec.name.clone(), &actor) {
                    actor.stop(None);
                    return Err(error.to_string());
                }
                Ok(actor.get_cell())
            }
        })
    }

    /// The registered kinds, in registration order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.iter().map(|k| k.name.as_str())
    }

    /// `command` (a command whose arguments include [`NodeArgs`]) as this binary reads
    /// it: the `--actor` help listing this binary's kinds, `--config FILE`, and an
    /// environment variable for each flag ([`NodeMain::with_env`]). Parse it with
    /// [`get_matches`], which reads the config file; clap's own `get_matches` would take
    /// `--config` and ignore it.
    pub fn describe(&self, command: Command) -> Command {
        let mut help = String::from(
            "An actor to host, as KIND:NAME or KIND:NAME@ARG. Repeatable; also a \
             comma-separated list (so an ARG holds no comma). Kinds:",
        );
        for kind in self.kinds.iter() {
            help.push_str(&format!("\n  {}: {}", kind.name, kind.about));
        }
        self.with_env(
            command
                .mut_arg("actors", |arg| arg.help(help))
                .arg(settings::config_arg()),
        )
    }

    /// `command` with an environment variable for each of its own flags (not its
    /// subcommands'): this binary's prefix, `_`, then the long flag in upper case with
    /// `-` as `_` (`--seed-dns` reads `DUOLOGUE_SEED_DNS` in `duologue`). A flag that names
    /// its variable already keeps it. [`NodeMain::describe`] does this to the node's
    /// command; a binary with subcommands does it to its global flags.
    pub fn with_env(&self, command: Command) -> Command {
        settings::with_env(command, &self.env_prefix)
    }

    /// Parses the process's command line ([`NodeArgs`] and `--runtime`), logs to stderr
    /// (`RUST_LOG`, `warn` by default), and runs the node until SIGTERM or SIGINT.
    pub fn run(self) -> ExitCode {
        let about = format!(
            "{}: a duologue node hosting actors of the kinds below",
            self.program
        );
        let command = self.describe(NodeCli::command().name(self.program.clone()).about(about));
        let cli = match NodeCli::from_arg_matches(&get_matches(command)) {
            Ok(cli) => cli,
            Err(error) => error.exit(),
        };
        log_to_stderr(cli.log_format);
        let runtime = match cli.runtime.build() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("{}: cannot start the async runtime: {error}", self.program);
                return ExitCode::FAILURE;
            }
        };
        let code = runtime.block_on(self.serve(cli.node));
        runtime.shutdown_background();
        code
    }

    /// Runs a node as `args` say until SIGTERM or SIGINT, on the current tokio runtime:
    /// for a binary that has other commands beside `node`. Prints `listening on ADDR` as
    /// its first stdout line once every actor is registered; errors go to stderr.
    pub async fn serve(&self, args: NodeArgs) -> ExitCode {
        match self.serve_until_signalled(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{} node: {error}", self.program);
                ExitCode::FAILURE
            }
        }
    }

    async fn serve_until_signalled(&self, args: NodeArgs) -> Result<(), String> {
        for spec in &args.actors {
            if self.kinds.get(&spec.kind).is_none() {
                return Err(format!(
                    "--actor {spec}: unknown kind {:?} (known: {})",
                    spec.kind,
                    self.kinds.names().join(", ")
                ));
            }
        }
        if !args.allow_weak_secret {
            refuse_guessable_secret(&args.secret_file)?;
        }
        // The process is the node's: it may hold as many descriptors as it is allowed,
        // and its connection limits follow (Node::start derives them, and warns when
        // they are low).
        raise_open_file_limit();
        let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut report = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
        let mut config = NodeConfig {
            name: args.name.clone(),
            listen: Some(args.listen),
            admin: args.metrics,
            ..NodeConfig::default()
        };
        args.timing.apply(&mut config);
        args.admission.apply(&mut config);
        args.budget.apply(&mut config);
        args.cluster.apply(&mut config);
        args.state.apply(&mut config);
        args.tls.apply(&mut config).map_err(|e| e.to_string())?;
        config.admin_access = args.admin.load(&args.tls).map_err(|e| e.to_string())?;
        config.peer_tls = args.peer_tls.load().map_err(|e| e.to_string())?;
        let node = Node::builder()
            .config(config)
            .secret_file(&args.secret_file)
            .with_kinds(self.kinds.clone(), self.entity_kinds.clone())
            .start()
            .await
            .map_err(|e| explain(&e))?;
        for spec in &args.actors {
            if let Err(error) = node.host(spec.clone()).await {
                node.shutdown().await;
                node.stop_hosted(args.timing.shutdown_drain).await;
                return Err(format!("--actor {spec}: {error}"));
            }
        }
        let addr = node.local_addr().ok_or("the node has no listen address")?;
        // The first stdout line is the contract with whoever started us; a node in a
        // cluster says where it gossips on the second (what other nodes take as --seed).
        println!("listening on {addr}");
        if let Some(gossip) = node.gossip_addr() {
            println!("gossip on {gossip}");
        }
        if let Some(admin) = node.admin_addr() {
            let scheme = if args.admin.metrics_tls {
                "https"
            } else {
                "http"
            };
            println!("metrics on {scheme}://{admin}");
        }
        loop {
            tokio::select! {
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
                _ = report.recv() => report_bookkeeping(&self.program, &node),
            }
        }
        let drained = node.shutdown().await;
        if !drained {
            eprintln!(
                "{} node: some sessions did not drain in time and were cancelled",
                self.program
            );
        }
        // Each actor's `post_stop` runs before the process exits, within the drain bound.
        let drain = args.timing.shutdown_drain;
        for name in node.stop_hosted(drain).await {
            eprintln!(
                "{} node: actor {name} did not stop within {drain:?}",
                self.program
            );
        }
        Ok(())
    }
}

/// Parses the process's command line for `command` (one [`NodeMain::describe`] made, or
/// with a subcommand it made) as clap's `Command::get_matches` does, with each setting of
/// the subcommand that runs taken from its flag, else its environment variable, else the
/// `--config` file, else its default. On an error, prints it and exits (2).
pub fn get_matches(command: Command) -> ArgMatches {
    match try_get_matches_from(command, std::env::args_os()) {
        Ok(matches) => matches,
        Err(error) => error.exit(),
    }
}

/// [`get_matches`] for the command line `argv` (the program's name first).
///
/// # Errors
/// [`SettingsError`]: the config file cannot be read, is not TOML, has a key that names
/// no flag or a value its flag refuses; an environment variable's value is refused; or
/// clap's own error for the command line (`--help` among them).
pub fn try_get_matches_from<I, T>(command: Command, argv: I) -> Result<ArgMatches, SettingsError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString>,
{
    settings::matches_from(command, argv.into_iter().map(Into::into).collect())
}

impl fmt::Debug for NodeMain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeMain")
            .field("program", &self.program)
            .field("env_prefix", &self.env_prefix)
            .field("kinds", &self.kinds().collect::<Vec<_>>())
            .finish()
    }
}

/// Raises the soft open-file limit to the hard one, as Go's runtime does at start: the
/// soft limit is often 1 024 (a default kept for `select`, which duologue does not use)
/// under a hard limit hundreds of times larger, and every connection takes a
/// descriptor. Done by the node binary, not by `Node::start`: a library does not change
/// its host process's limits (children it starts would inherit them). Failure is a
/// warning; the node then fits its connections in the limit it has.
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let (Some(soft), Some(hard)) = (limit.current, limit.maximum) else {
            return;
        };
        if soft >= hard {
            return;
        }
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(error) => tracing::warn!(
                soft,
                hard,
                %error,
                "cannot raise the open-file limit to the hard limit"
            ),
        }
    }
}

/// Refuses a secret file whose text a password cracker would guess (zxcvbn score below
/// 3 of 4): an acceptor's challenge lets anyone who reaches the node test guesses offline.
/// Binary or unreadable files are left to [`crate::Secret::from_file`].
fn refuse_guessable_secret(path: &std::path::Path) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let text = text.trim_end_matches(['\r', '\n']);
    let strength = zxcvbn::zxcvbn(text, &[]);
    if u8::from(strength.score()) >= 3 {
        return Ok(());
    }
    Err(format!(
        "the secret in {} is guessable (about 10^{:.0} guesses): anyone who can reach the node \
         can test guesses offline; make a random one with `duologue secret new FILE`, or pass \
         --allow-weak-secret",
        path.display(),
        strength.guesses_log10()
    ))
}

/// Answers SIGUSR1: one line on stderr with what the node keeps per peer and per session
/// ([`Node::bookkeeping`]), whatever the log filter, for whoever watches a running node
/// (`kill -USR1 PID`; `benches/hostile_room.rs` reads it).
fn report_bookkeeping(program: &str, node: &Node) {
    let crate::node::Bookkeeping {
        links,
        stop_reasons,
        resumable,
        owners,
        standard_streams,
    } = node.bookkeeping();
    eprintln!(
        "{program} node: bookkeeping links={links} resumable={resumable} owners={owners} \
         stop_reasons={stop_reasons} standard_streams={standard_streams}"
    );
}

/// How log lines look ([`log_to_stderr`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, the spans it is in before it (`session{id=.. peer=..}`).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields`, `target`, the current
    /// span and the list of spans it is in, each with its fields.
    Json,
}

/// Sends `tracing` output to stderr as `format` says, filtered by `RUST_LOG` (`warn` when
/// unset): what every duologue binary does before anything else.
pub fn log_to_stderr(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    // A second call (a binary that already set a subscriber) keeps the first.
    let _ = match format {
        LogFormat::Text => builder
            // Colour only for a person at a terminal, not in files and pipes.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
