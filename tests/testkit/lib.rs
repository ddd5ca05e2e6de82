//! Starting node processes on this machine, and breaking the connections between them:
//! what the demo, the cross-process tests, the examples and the benches share. Every
//! child is killed when its guard drops, on every exit path.
//!
//! [`Lab`] puts node processes on separate network stacks (Linux network namespaces
//! around a router), with delayed, lossy or cut links, for the cross-host cluster tests.
//! [`postgres::Postgres`] is a real PostgreSQL server of a test's own, on 127.0.0.1 or in a
//! lab host, stopped and removed when it drops.
//!
//! The modules hold what the tests and benches share inside one process: a probe actor,
//! a test protocol and in-process nodes ([`probe`]), a peer that speaks the wire by hand
//! ([`raw_peer`]), a hostile HTTP/2 client ([`hostile`]), a listener of cluster events
//! ([`cluster`]), the Python environment of the Python clients ([`python`]) and the
//! entities' verification run, joins, leaves and kills checked against an independent
//! record ([`entity_chaos`]), and a bank on PostgreSQL that must balance through
//! partitions, kills and pauses ([`bank`]). For a person running the demo or a bench: progress bars and
//! the summary a run ends with ([`progress`]), the benches' numeric options ([`args`])
//! and their calls in flight ([`load`]).

pub mod args;
pub mod bank;
mod chat_transfer;
pub mod cluster;
pub mod entity_chaos;
mod fault_proxy;
pub mod hostile;
pub mod load;
mod netns;
pub mod postgres;
pub mod probe;
pub mod progress;
pub mod python;
pub mod raw_peer;

pub use chat_transfer::{ChatTransfer, TransferReport};
pub use fault_proxy::FaultProxy;
pub use netns::Lab;
/// The signals [`ChildGuard::signal`] sends.
pub use nix::sys::signal::Signal;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// Starting or talking to a child process failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The process could not be started.
    #[error("cannot start {program}: {reason}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// The process did not say what was expected in time.
    #[error("{what} within {timeout:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        timeout: Duration,
    },
    /// The process said something unexpected or ended early.
    #[error("{0}")]
    Unexpected(String),
    /// An I/O error talking to the process.
    #[error("i/o with child: {0}")]
    Io(#[from] std::io::Error),
}

/// A child process that is killed (SIGKILL) when this guard drops.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    /// Its standard input, if piped.
    pub stdin: Option<ChildStdin>,
    /// Its standard output as lines, if piped.
    pub stdout: Option<Lines<BufReader<ChildStdout>>>,
    /// Its standard error as lines, if piped.
    pub stderr: Option<Lines<BufReader<ChildStderr>>>,
}

impl ChildGuard {
    /// Starts `program` with `args`, every stdio piped.
    ///
    /// # Errors
    /// [`ClusterError::Spawn`].
    pub fn spawn(name: &str, program: &Path, args: &[String]) -> Result<Self, ClusterError> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ClusterError::Spawn {
                program: program.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            stdout: child.stdout.take().map(|s| BufReader::new(s).lines()),
            stderr: child.stderr.take().map(|s| BufReader::new(s).lines()),
            child,
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `signal` to the process.
    ///
    /// # Errors
    /// When the process is gone or the signal cannot be sent.
    pub fn signal(&self, signal: Signal) -> Result<(), ClusterError> {
        let pid = self
            .pid()
            .ok_or_else(|| ClusterError::Unexpected(format!("{} has exited", self.name)))?;
        let pid =
            i32::try_from(pid).map_err(|_| ClusterError::Unexpected("pid out of range".into()))?;
        kill(Pid::from_raw(pid), signal)
            .map_err(|e| ClusterError::Unexpected(format!("signal to {}: {e}", self.name)))
    }

    /// Closes its standard input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `timeout` for the process to exit; its exit code (`None`: killed by a
    /// signal).
    ///
    /// # Errors
    /// [`ClusterError::Timeout`] if it did not exit.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Option<i32>, ClusterError> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?.code()),
            Err(_) => Err(ClusterError::Timeout {
                what: format!("{} did not exit", self.name),
                timeout,
            }),
        }
    }

    /// The next line on its standard output, waiting up to `timeout`; `None` at its end.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`].
    pub async fn stdout_line(&mut self, timeout: Duration) -> Result<Option<String>, ClusterError> {
        let lines = self
            .stdout
            .as_mut()
            .ok_or_else(|| ClusterError::Unexpected("stdout not piped".into()))?;
        next_line(&self.name, "stdout", lines, timeout).await
    }

    /// The next line on its standard error, waiting up to `timeout`; `None` at its end.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`].
    pub async fn stderr_line(&mut self, timeout: Duration) -> Result<Option<String>, ClusterError> {
        let lines = self
            .stderr
            .as_mut()
            .ok_or_else(|| ClusterError::Unexpected("stderr not piped".into()))?;
        next_line(&self.name, "stderr", lines, timeout).await
    }

    /// Reads standard error until a line containing `needle`, waiting up to `timeout` in
    /// all; returns that line.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`], or [`ClusterError::Unexpected`] when stderr ends first.
    pub async fn stderr_until(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.stderr_line(left).await? {
                Some(line) if line.contains(needle) => return Ok(line),
                Some(_) => {}
                None => {
                    return Err(ClusterError::Unexpected(format!(
                        "{} closed stderr before saying {needle:?}",
                        self.name
                    )));
                }
            }
        }
    }
}

async fn next_line<R>(
    name: &str,
    stream: &str,
    lines: &mut Lines<R>,
    timeout: Duration,
) -> Result<Option<String>, ClusterError>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    match tokio::time::timeout(timeout, lines.next_line()).await {
        Ok(line) => Ok(line?),
        Err(_) => Err(ClusterError::Timeout {
            what: format!("no line on {name}'s {stream}"),
            timeout,
        }),
    }
}

/// Starts `exe` as the child `name` with `args`: a node whose first two lines on stdout
/// are `listening on ADDR` and `gossip on ADDR` (the benches' and tests' own node
/// binaries say so). Returns it with its session address and its gossip address.
///
/// # Errors
/// It cannot start, or its first lines are not those within `wait`.
pub async fn start_announcing(
    name: &str,
    exe: &Path,
    args: &[String],
    wait: Duration,
) -> anyhow::Result<(ChildGuard, String, String)> {
    let mut child = ChildGuard::spawn(name, exe, args)?;
    let (addr, gossip) = announced(&mut child, wait).await?;
    Ok((child, addr, gossip))
}

/// The session and gossip addresses a node child says first (`listening on ADDR`, then
/// `gossip on ADDR`: what [`announce_until_sigterm`] prints).
///
/// # Errors
/// Its first lines are not those within `wait`.
pub async fn announced(child: &mut ChildGuard, wait: Duration) -> anyhow::Result<(String, String)> {
    let mut line = async |prefix: &str| -> anyhow::Result<String> {
        let line = child.stdout_line(wait).await?.unwrap_or_default();
        line.strip_prefix(prefix)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("{} said {line:?}", child.name))
    };
    let addr = line("listening on ").await?;
    let gossip = line("gossip on ").await?;
    Ok((addr, gossip))
}

/// What a child mode of the tests' own node binaries does once its node started: says
/// where it listens and gossips (one line each, read by [`announced`]), serves until
/// SIGTERM, then shuts the node down politely.
///
/// # Errors
/// SIGTERM cannot be watched.
pub async fn announce_until_sigterm(node: duologue::Node) -> anyhow::Result<()> {
    println!("listening on {}", node.local_addr().expect("listens"));
    println!("gossip on {}", node.gossip_addr().expect("clustered"));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    node.shutdown().await;
    Ok(())
}

/// The value after `flag` in a child mode's arguments.
pub fn flag_value(argv: &[String], flag: &str) -> Option<String> {
    argv.iter()
        .position(|a| a == flag)
        .and_then(|i| argv.get(i + 1))
        .cloned()
}

/// The gossip settings of the tests' own cluster children: gossip every 100 ms, a polite
/// leave lingering 500 ms, on `listen`, joining `seed` (none: found the cluster).
pub fn quick_cluster(
    listen: std::net::SocketAddr,
    seed: Option<String>,
) -> duologue::settings::ClusterConfig {
    let mut cluster = duologue::settings::ClusterConfig::new(listen);
    cluster.gossip_interval = Duration::from_millis(100);
    cluster.leave_linger = Duration::from_millis(500);
    cluster.seeds = seed.into_iter().collect();
    cluster
}

/// The flags of a node process in a cluster on 127.0.0.1: the secret file, gossip on a
/// port chosen at run time every `gossip_interval` (as `--gossip-interval` takes it), and
/// the seed to join (none: it founds the cluster).
pub fn cluster_flags(secret: &Path, gossip_interval: &str, seed: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "--secret-file".to_owned(),
        secret.display().to_string(),
        "--gossip-listen".into(),
        "127.0.0.1:0".into(),
        "--gossip-interval".into(),
        gossip_interval.into(),
    ];
    if let Some(seed) = seed {
        args.extend(["--seed".to_owned(), seed.to_owned()]);
    }
    args
}

/// A `duologue node` process and the address it listens on.
#[derive(Debug)]
pub struct NodeProcess {
    /// The process.
    pub child: ChildGuard,
    /// Where it accepts sessions.
    pub addr: SocketAddr,
}

impl NodeProcess {
    /// Runs `duologue node` (`exe` is the `duologue` binary) with `args`, and waits up to
    /// `timeout` for its `listening on ADDR` line.
    ///
    /// # Errors
    /// [`ClusterError`] when it does not start or says something else first.
    pub async fn start(
        exe: &Path,
        name: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        Self::until_listening(exe, &[], name, &node_args(name, args), timeout).await
    }

    /// Runs `duologue node` named `room` hosting a chat room of that name, with the secret
    /// of `secrets`, and waits up to 10 s for it to listen.
    ///
    /// # Errors
    /// As [`NodeProcess::start`].
    pub async fn chat_room(
        exe: &Path,
        secrets: &SecretDir,
        room: &str,
    ) -> Result<Self, ClusterError> {
        let args = [
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--actor".into(),
            format!("chat-room:{room}"),
        ];
        Self::start(exe, room, &args, Duration::from_secs(10)).await
    }

    /// Runs a node binary built with `duologue::cli::NodeMain` (`exe`, whose command line
    /// is `--name NAME` then `args`), and waits up to `timeout` for its
    /// `listening on ADDR` line.
    ///
    /// # Errors
    /// [`ClusterError`] when it does not start or says something else first.
    pub async fn start_binary(
        exe: &Path,
        name: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        Self::until_listening(exe, &[], name, &binary_args(name, args), timeout).await
    }

    /// Runs `program` with `prefix` then `args` (the prefix is how the process is wrapped,
    /// as `ip netns exec NS exe` for the network lab), and waits up to `timeout` for its
    /// `listening on ADDR` line.
    pub(crate) async fn until_listening(
        program: &Path,
        prefix: &[String],
        name: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Self, ClusterError> {
        let all: Vec<String> = prefix.iter().chain(args).cloned().collect();
        let mut child = ChildGuard::spawn(name, program, &all)?;
        let line = child.stdout_line(timeout).await?.ok_or_else(|| {
            ClusterError::Unexpected(format!("node {name} exited before listening"))
        })?;
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| ClusterError::Unexpected(format!("node {name} said {line:?}")))?;
        Ok(Self { child, addr })
    }
}

/// The command line of `duologue node` named `name`, then `args`.
fn node_args(name: &str, args: &[String]) -> Vec<String> {
    let mut all = vec!["node".to_owned()];
    all.extend(binary_args(name, args));
    all
}

/// The command line of a `duologue::cli::NodeMain` binary named `name`, then `args`.
fn binary_args(name: &str, args: &[String]) -> Vec<String> {
    let mut all = vec!["--name".to_owned(), name.to_owned()];
    all.extend_from_slice(args);
    all
}

/// Runs a `duologue chat` member (`exe` is the `duologue` binary) of `room` at `peer` as
/// `user`, with the secret of `secrets` and `extra` options, and waits up to 30 s for it
/// to say it joined.
///
/// # Errors
/// [`ClusterError`] when it does not start or join.
pub async fn chat_member(
    exe: &Path,
    secrets: &SecretDir,
    peer: &str,
    room: &str,
    user: &str,
    extra: &[&str],
) -> Result<ChildGuard, ClusterError> {
    let secret = secrets.secret().display().to_string();
    let mut args = vec![
        "chat",
        "--peer",
        peer,
        "--room",
        room,
        "--user",
        user,
        "--secret-file",
        &secret,
    ];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    let mut child = ChildGuard::spawn(user, exe, &args)?;
    child
        .stderr_until("joined", Duration::from_secs(30))
        .await?;
    Ok(child)
}

/// A throwaway directory holding a fresh random secret file; removed on drop.
#[derive(Debug)]
pub struct SecretDir {
    dir: PathBuf,
    secret: PathBuf,
}

impl SecretDir {
    /// Creates the directory under the system temp dir and writes a fresh random secret
    /// (`duologue::Secret::create_file`: 32 bytes as hex, mode 0600).
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub fn create() -> Result<Self, ClusterError> {
        let dir = std::env::temp_dir().join(format!("duologue-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let secret = dir.join("secret");
        duologue::Secret::create_file(&secret)
            .map_err(|e| ClusterError::Unexpected(e.to_string()))?;
        Ok(Self { dir, secret })
    }

    /// The secret file.
    pub fn secret(&self) -> &Path {
        &self.secret
    }

    /// Writes another file in the directory (say, a wrong secret), readable by its owner
    /// only, as a secret file should be.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf, ClusterError> {
        use std::os::unix::fs::PermissionsExt;

        let path = self.dir.join(name);
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(path)
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The median of `values` (the lower middle of an even count; 0 for none): the benches
/// report medians of repeated rounds.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get((sorted.len().max(1) - 1) / 2)
        .copied()
        .unwrap_or(0.0)
}

/// CPU time (user + system) process `pid` has used (`None`: this process), from
/// `/proc/PID/stat`; `None` where there is no `/proc` or the process is gone.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime, in clock ticks: USER_HZ is 100 on Linux.
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// Peak resident set size (`VmHWM`), in bytes.
    pub peak: u64,
    /// Current resident set size (`VmRSS`), in bytes.
    pub now: u64,
}

impl Memory {
    /// The memory of process `pid` (`None`: this process); `None` where there is no
    /// `/proc` or the process is gone.
    pub fn of(pid: Option<u32>) -> Option<Self> {
        let path = match pid {
            Some(pid) => format!("/proc/{pid}/status"),
            None => "/proc/self/status".to_owned(),
        };
        let status = std::fs::read_to_string(path).ok()?;
        let kib = |name: &str| -> Option<u64> {
            let line = status.lines().find_map(|l| l.strip_prefix(name))?;
            line.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        };
        Some(Self {
            peak: kib("VmHWM:")? * 1024,
            now: kib("VmRSS:")? * 1024,
        })
    }
}

/// A session owner that reads nothing from its sessions, for benches and examples that
/// learn what they need from the handles (`RemoteRef::call`, `SessionRef::closed`). Its
/// mailbox takes every delivery and drops it.
#[derive(Clone, Copy, Debug, Default)]
pub struct IgnoringOwner;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl ractor::Actor for IgnoringOwner {
    type Msg = duologue::SessionMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ractor::ActorRef<duologue::SessionMsg>,
        (): (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}
