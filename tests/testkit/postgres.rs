//! A real PostgreSQL server for the tests: `initdb`, then `pg_ctl start`, in a folder of
//! its own under the system temp dir, on a free TCP port of 127.0.0.1 ([`Postgres::start`])
//! or of a lab host, inside that host's network namespace ([`Postgres::start_in`]).
//!
//! ```text
//!   $TMPDIR/duologue-pg-<owner pid>-<random>/   the server's folder (its Unix socket too)
//!     data/                                     the cluster: postgresql.conf, pg_hba.conf, ...
//!     server.log                                what the server writes (in errors)
//!     initdb.log, createdb.log, pg_ctl.log      what each step wrote (in errors)
//! ```
//!
//! One superuser and one database, both `duologue`, a generated password, and password
//! (SCRAM-SHA-256) authentication for every connection. As durable as a production server
//! (`fsync` and `synchronous_commit` on) unless the test's settings say otherwise.
//!
//! The server runs as `nobody` when the tests run as root (`initdb` and `postgres` refuse
//! root), as the tests' own user otherwise. Its programs are found beside `initdb` on
//! `PATH`, or in Debian's `/usr/lib/postgresql/<highest version>/bin`.
//!
//! `pg_ctl` detaches the server from the process that starts it, so only the harness ends
//! it: dropping a [`Postgres`] stops the server (`pg_ctl stop -m immediate`, then SIGKILL
//! to whatever of it is left) and removes its folder, on every exit path, a panicking test
//! included; [`Postgres::start`] first does the same for the servers of test processes that
//! died without dropping theirs (killed, or aborted without unwinding).
//!
//! The methods block: a start takes about a second, a drop a few milliseconds.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{PidfdFlags, pidfd_open, pidfd_send_signal};

use crate::{ClusterError, Lab};

/// Prefix of every server folder: `duologue-pg-<owner pid>-<random>` (the owner: the
/// process that started the server).
const PREFIX: &str = "duologue-pg-";

/// Where Debian installs each major version's server programs (`<version>/bin`).
const DEBIAN_LIB: &str = "/usr/lib/postgresql";

/// Who the server runs as when the tests run as root.
const SERVER_USER: &str = "nobody";

/// The programs of a server, as `/proc/PID/exe` names them: what the harness ends.
const SERVER_PROGRAMS: &[&str] = &["postgres", "postmaster", "pg_ctl", "initdb"];

/// The cluster's folder inside the server's folder.
const DATA: &str = "data";

/// What the server writes (`pg_ctl -l`).
const SERVER_LOG: &str = "server.log";

/// The postmaster's file in the cluster's folder: its pid, its SysV segment, its state.
const PID_FILE: &str = "postmaster.pid";

/// Bound of `initdb`.
const INITDB_WAIT: Duration = Duration::from_secs(60);

/// Bound of creating the database (a single-user `postgres`).
const CREATEDB_WAIT: Duration = Duration::from_secs(30);

/// Bound of a start (`pg_ctl start -t`), until the server accepts connections.
const START_WAIT: Duration = Duration::from_secs(30);

/// Bound of [`Postgres::stop`] (`pg_ctl stop -m fast -t`).
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Bound of the stop on drop (`pg_ctl stop -m immediate -t`).
const IMMEDIATE_WAIT: Duration = Duration::from_secs(10);

/// How much longer than its own `-t` bound `pg_ctl` is given before it is killed.
const PG_CTL_MARGIN: Duration = Duration::from_secs(5);

/// Bound of the end of processes sent SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How often `/proc` is looked at where there are no pidfds to wait on.
const PROC_POLL: Duration = Duration::from_millis(10);

/// Starts tried before giving up when the free port found was taken meanwhile.
const START_ATTEMPTS: usize = 5;

/// Most of a log put in an error (its end).
const LOG_TAIL: usize = 16 * 1024;

/// Starting or stopping a PostgreSQL server failed.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// A server program is not installed where the harness looks.
    #[error(
        "{program} not found {looked}: install PostgreSQL's server (apt-get install -y postgresql)"
    )]
    NotFound {
        /// The program (`initdb`, `pg_ctl`, `postgres`).
        program: String,
        /// Where it was looked for.
        looked: String,
    },
    /// The tests run as root and there is no unprivileged user to run the server as.
    #[error(
        "running as root, and no user {SERVER_USER:?} to run PostgreSQL as (it refuses root): {0}"
    )]
    NoUser(String),
    /// A setting given to start with cannot be written to `postgresql.conf`.
    #[error("setting {name} = {value:?}: {reason}")]
    Setting {
        /// Its name.
        name: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A step (`initdb`, creating the database, `pg_ctl start` or `stop`) failed.
    #[error("{step} failed ({reason}); it wrote:\n{log}")]
    Failed {
        /// The step.
        step: String,
        /// How it failed: its exit status, or why it could not run.
        reason: String,
        /// The end of what it wrote, and of the server's log once there is one.
        log: String,
    },
    /// A step did not end within its bound; it was killed.
    #[error("{step} did not end within {timeout:?}; it wrote:\n{log}")]
    TimedOut {
        /// The step.
        step: String,
        /// The bound.
        timeout: Duration,
        /// The end of what it wrote, and of the server's log once there is one.
        log: String,
    },
    /// Finding a free port in, or starting the server inside, a lab host's namespace failed.
    #[error("network lab: {0}")]
    Lab(#[from] ClusterError),
    /// An I/O error on the server's folder or its files.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// A PostgreSQL server of its own, with superuser [`Postgres::USER`] and database
/// [`Postgres::DATABASE`], reached at [`Postgres::url`]. Dropping it stops the server at
/// once (`pg_ctl stop -m immediate`, SIGKILL if that fails) and removes its folder;
/// [`Postgres::stop`] stops it as an operator would.
///
/// A server started in a lab host ([`Postgres::start_in`]) should drop before the lab (be
/// declared after it): a lab's drop takes the host's link away from under it.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use duologue_testkit::postgres::Postgres;
/// use sqlx::Connection;
///
/// let server = Postgres::start()?;
/// let mut conn = sqlx::PgConnection::connect(&server.url()).await?;
/// sqlx::query("CREATE TABLE notes (body TEXT)").execute(&mut conn).await?;
/// conn.close().await?;
/// drop(server); // the server is gone, and its folder
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Postgres {
    addr: SocketAddr,
    password: String,
    pid: u32,
    server: Server,
}

impl Postgres {
    /// The superuser the server is set up with.
    pub const USER: &str = "duologue";

    /// The database the server is set up with, owned by [`Postgres::USER`].
    pub const DATABASE: &str = "duologue";

    /// Starts a server listening on 127.0.0.1, on a free port, and waits up to 30 s until it
    /// accepts connections; first ends the servers of test processes that are gone.
    ///
    /// # Errors
    /// [`PostgresError`]: the programs are missing, or a step failed (the error holds what
    /// it and the server wrote). Whatever was started is stopped and removed.
    pub fn start() -> Result<Self, PostgresError> {
        Self::start_with(&[])
    }

    /// [`Postgres::start`] with `settings` written to `postgresql.conf` after the
    /// harness's own, so that they win: `("synchronous_commit", "off")`, say.
    ///
    /// # Errors
    /// As [`Postgres::start`]; [`PostgresError::Setting`] when a name is not a setting
    /// name or a value holds a line break.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<Self, PostgresError> {
        Self::start_at(IpAddr::V4(Ipv4Addr::LOCALHOST), None, settings)
    }

    /// Starts a server in lab host `host`: its processes run in that host's network
    /// namespace and listen on [`Lab::ip`]`(host)`, so every host of the lab reaches it and
    /// nothing outside the lab does. Otherwise as [`Postgres::start`].
    ///
    /// # Errors
    /// As [`Postgres::start`]; [`PostgresError::Lab`] when the namespace cannot be entered.
    ///
    /// # Panics
    /// When the lab has no host `host`.
    pub fn start_in(lab: &Lab, host: usize) -> Result<Self, PostgresError> {
        Self::start_in_with(lab, host, &[])
    }

    /// [`Postgres::start_in`] with `settings`, as [`Postgres::start_with`] takes them.
    ///
    /// # Errors
    /// As [`Postgres::start_in`] and [`Postgres::start_with`].
    ///
    /// # Panics
    /// When the lab has no host `host`.
    pub fn start_in_with(
        lab: &Lab,
        host: usize,
        settings: &[(&str, &str)],
    ) -> Result<Self, PostgresError> {
        Self::start_at(lab.ip(host), Some((lab, host)), settings)
    }

    /// The URL to connect with: `postgres://duologue:PASSWORD@HOST:PORT/duologue`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@{}/{}",
            Self::USER,
            self.password,
            self.addr,
            Self::DATABASE
        )
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The superuser's password (generated at start).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The postmaster's process id (the server's parent process).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The cluster's folder (`PGDATA`), inside the server's folder; both are removed on
    /// drop.
    pub fn data_dir(&self) -> PathBuf {
        self.server.data()
    }

    /// What the server has written so far (its end, up to 16 KiB): for a failing test's
    /// message.
    pub fn log(&self) -> String {
        tail(&self.server.root().join(SERVER_LOG))
    }

    /// Stops the server as an operator would (`pg_ctl stop -m fast`: sessions are ended,
    /// a checkpoint is written), waiting up to 30 s, then removes its folder.
    ///
    /// # Errors
    /// [`PostgresError`] when it did not stop in time or `pg_ctl` failed: the server is
    /// then killed and its folder removed all the same.
    pub fn stop(self) -> Result<(), PostgresError> {
        self.server.shut_down("fast", STOP_WAIT)
        // Dropping the server ends whatever the stop left, and removes the folder.
    }

    fn start_at(
        ip: IpAddr,
        lab: Option<(&Lab, usize)>,
        settings: &[(&str, &str)],
    ) -> Result<Self, PostgresError> {
        let settings = user_settings(settings)?;
        let bin = find_bin()?;
        let user = server_user()?;
        sweep_stale();
        let root = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir_in(temp_dir())?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(root.path(), Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        // From here on, dropping `server` ends whatever was started and removes the folder.
        let server = Server { bin, user, root };
        let password = uuid::Uuid::new_v4().simple().to_string();
        server.init(&password)?;
        let conf = fs::read_to_string(server.data().join("postgresql.conf"))?;
        let mut attempt = 1;
        let port = loop {
            let port = free_port(ip, lab)?;
            fs::write(
                server.data().join("postgresql.conf"),
                format!("{conf}{}{settings}", server.config(ip, port)),
            )?;
            match server.pg_ctl_start(lab) {
                Ok(()) => break port,
                // Another process took the port between its check and the server's bind.
                Err(PostgresError::Failed { log, .. })
                    if attempt < START_ATTEMPTS && log.contains("Address already in use") =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let pid = read_pid_file(&server.data())
            .ok_or_else(|| PostgresError::Failed {
                step: "pg_ctl start".into(),
                reason: format!("the server started but left no readable {PID_FILE}"),
                log: tail(&server.root().join(SERVER_LOG)),
            })?
            .pid;
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            password,
            pid,
            server,
        })
    }
}

/// A server's folder and how to run its programs; ends the server and removes the folder
/// on drop.
#[derive(Debug)]
struct Server {
    /// The folder of the server programs.
    bin: PathBuf,
    /// Who runs them (`None`: this process's user).
    user: Option<(Uid, Gid)>,
    /// The server's folder; last, so it goes after the server.
    root: tempfile::TempDir,
}

impl Server {
    fn root(&self) -> &Path {
        self.root.path()
    }

    fn data(&self) -> PathBuf {
        self.root().join(DATA)
    }

    /// A server program as the server's user, in the server's folder, with an environment
    /// of its own (no `PG*` variable of the tests', messages in English for the port
    /// check, times in UTC).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .current_dir(self.root())
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.user {
            // std drops the supplementary groups too.
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        command
    }

    /// `initdb` with the superuser and its password and password authentication, then the
    /// database (in single-user mode, so that no server listens meanwhile), then
    /// `pg_hba.conf`.
    fn init(&self, password: &str) -> Result<(), PostgresError> {
        let pwfile = self.root().join("password");
        fs::write(&pwfile, format!("{password}\n"))?;
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(&pwfile, Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        let mut initdb = self.command("initdb");
        initdb
            .arg("--pgdata")
            .arg(self.data())
            .arg(format!("--username={}", Postgres::USER))
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"])
            // Only initdb's own files are not synced (a throwaway folder that no machine
            // crash outlives); the server syncs as ever (`fsync`).
            .arg("--no-sync");
        let initdb = self.step("initdb", initdb, "initdb.log", None, INITDB_WAIT);
        let _ = fs::remove_file(&pwfile);
        initdb?;
        let mut single = self.command("postgres");
        single
            .arg("--single")
            .arg("-D")
            .arg(self.data())
            // An error ends the session with status 1, rather than 0 with the error logged.
            .args(["-c", "exit_on_error=on", "postgres"]);
        let create = format!("CREATE DATABASE {};\n", Postgres::DATABASE);
        self.step(
            "creating the database",
            single,
            "createdb.log",
            Some(create.as_bytes()),
            CREATEDB_WAIT,
        )?;
        // Not initdb's, which lets in 127.0.0.1 and ::1 only: connections to a lab host
        // come from the lab's addresses. The server listens on one address only.
        fs::write(
            self.data().join("pg_hba.conf"),
            "# duologue-testkit (postgres.rs): a password for every connection, from anywhere.\n\
             local all all scram-sha-256\n\
             host all all 0.0.0.0/0 scram-sha-256\n\
             host all all ::/0 scram-sha-256\n",
        )?;
        Ok(())
    }

    /// The harness's settings, appended to `postgresql.conf` (a later line wins).
    fn config(&self, ip: IpAddr, port: u16) -> String {
        format!(
            "\n# duologue-testkit (postgres.rs): a server for tests, as durable as a production one.\n\
             listen_addresses = {}\n\
             port = {port}\n\
             unix_socket_directories = {}\n\
             max_connections = 200\n\
             fsync = on\n\
             synchronous_commit = on\n\
             full_page_writes = on\n\
             # Dynamic shared memory in the cluster's folder, not /dev/shm: a server killed\n\
             # mid-run leaves nothing there.\n\
             dynamic_shared_memory_type = mmap\n",
            quote(&ip.to_string()),
            quote(&self.root().display().to_string()),
        )
    }

    /// `pg_ctl start`, waiting until the server accepts connections, inside lab host
    /// `lab`'s namespace if any (a process started from a thread in a namespace runs in it,
    /// and so do its children).
    fn pg_ctl_start(&self, lab: Option<(&Lab, usize)>) -> Result<(), PostgresError> {
        let log = self.root().join(SERVER_LOG);
        // Only this attempt's lines in the error.
        let _ = fs::remove_file(&log);
        let timeout = START_WAIT.as_secs().to_string();
        let mut command = self.command("pg_ctl");
        command.arg("start").arg("--pgdata").arg(self.data());
        command.arg("--log").arg(&log);
        command.args(["--wait", "--timeout", &timeout]);
        let output = self.root().join("pg_ctl.log");
        let wait = START_WAIT + PG_CTL_MARGIN;
        let outcome = match lab {
            None => run(command, &output, None, wait),
            Some((lab, host)) => lab.run_in(host, move || run(command, &output, None, wait))?,
        };
        self.check("pg_ctl start", outcome, "pg_ctl.log", wait)
    }

    /// `pg_ctl stop -m MODE`, waiting up to `wait` until the server is gone, the
    /// postmaster included (pg_ctl returns once its pid file is, a moment before).
    /// Nothing when no server runs.
    fn shut_down(&self, mode: &str, wait: Duration) -> Result<(), PostgresError> {
        let Some(postmaster) = read_pid_file(&self.data()) else {
            return Ok(());
        };
        let held = i32::try_from(postmaster.pid)
            .ok()
            .and_then(|pid| Process::of_server(pid, self.root()));
        let bound = wait + PG_CTL_MARGIN;
        let deadline = Instant::now() + bound;
        let timeout = wait.as_secs().to_string();
        let mut command = self.command("pg_ctl");
        command.arg("stop").arg("--pgdata").arg(self.data());
        command.args(["--mode", mode, "--wait", "--timeout", &timeout]);
        self.step("pg_ctl stop", command, "pg_ctl.log", None, bound)?;
        if let Some(process) = held
            && !process.wait(deadline)
        {
            return Err(PostgresError::TimedOut {
                step: "the postmaster's exit after pg_ctl stop".into(),
                timeout: bound,
                log: tail(&self.root().join(SERVER_LOG)),
            });
        }
        Ok(())
    }

    /// Runs `command` as step `step`, its output to file `output` in the folder.
    fn step(
        &self,
        step: &str,
        command: Command,
        output: &str,
        input: Option<&[u8]>,
        wait: Duration,
    ) -> Result<(), PostgresError> {
        let outcome = run(command, &self.root().join(output), input, wait);
        self.check(step, outcome, output, wait)
    }

    /// `outcome` of step `step` (bound: `wait`) as a result: the error holds the end of
    /// what it wrote to `output` and, once there is one, of the server's log.
    fn check(
        &self,
        step: &str,
        outcome: io::Result<Outcome>,
        output: &str,
        wait: Duration,
    ) -> Result<(), PostgresError> {
        let written = || {
            let mut text = tail(&self.root().join(output));
            let log = tail(&self.root().join(SERVER_LOG));
            if !log.is_empty() {
                let _ = write!(text, "\n--- the server's log ---\n{log}");
            }
            text
        };
        match outcome {
            Ok(Outcome::Exited(status)) if status.success() => Ok(()),
            Ok(Outcome::Exited(status)) => Err(PostgresError::Failed {
                step: step.into(),
                reason: status.to_string(),
                log: written(),
            }),
            Ok(Outcome::TimedOut) => Err(PostgresError::TimedOut {
                step: step.into(),
                timeout: wait,
                log: written(),
            }),
            Err(e) => Err(PostgresError::Failed {
                step: step.into(),
                reason: format!("cannot run it: {e}"),
                log: String::new(),
            }),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let postmaster = read_pid_file(&self.data());
        if let Err(error) = self.shut_down("immediate", IMMEDIATE_WAIT) {
            tracing::warn!(%error, "postgres: the immediate stop failed, killing the server");
        }
        end_server(self.root(), postmaster.as_ref());
        // The folder goes with `root`.
    }
}

/// How a child ended.
#[derive(Debug)]
enum Outcome {
    /// It exited.
    Exited(ExitStatus),
    /// It did not within the bound, and was killed.
    TimedOut,
}

/// Runs `command` with `input` on its stdin (none: /dev/null) and its stdout and stderr to
/// file `output`, and waits up to `wait` for it to exit; kills it when it does not.
fn run(
    mut command: Command,
    output: &Path,
    input: Option<&[u8]>,
    wait: Duration,
) -> io::Result<Outcome> {
    let out = File::create(output)?;
    command.stdout(out.try_clone()?).stderr(out);
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn()?;
    let deadline = Instant::now() + wait;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // Small enough for the pipe's buffer; a child that ended first says why itself.
        let _ = stdin.write_all(input);
    }
    let process = Process::of_child(&child);
    if process.wait(deadline) {
        return Ok(Outcome::Exited(child.wait()?));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(Outcome::TimedOut)
}

/// Another process, held by its pidfd where the kernel has them: signalled and awaited
/// without mistaking a process that reused its pid.
#[derive(Debug)]
struct Process {
    pid: i32,
    fd: Option<OwnedFd>,
}

impl Process {
    /// Child `child` (its pid is not reused until it is waited for).
    fn of_child(child: &std::process::Child) -> Self {
        let pid = rustix::process::Pid::from_child(child);
        Self {
            pid: pid.as_raw_nonzero().get(),
            fd: pidfd_open(pid, PidfdFlags::empty()).ok(),
        }
    }

    /// Process `pid`, if it is a server program working in folder `root` (or in it).
    fn of_server(pid: i32, root: &Path) -> Option<Self> {
        if !works_in(pid, root) {
            return None;
        }
        let fd = match pidfd_open(rustix::process::Pid::from_raw(pid)?, PidfdFlags::empty()) {
            Ok(fd) => Some(fd),
            Err(Errno::SRCH) => return None,
            Err(_) => None,
        };
        // Again, now that it is held: the pid may have been reused in between.
        works_in(pid, root).then_some(Self { pid, fd })
    }

    fn kill(&self) {
        match &self.fd {
            Some(fd) => {
                let _ = pidfd_send_signal(fd, rustix::process::Signal::KILL);
            }
            None => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Waits until the process has ended (gone, or a zombie), up to `deadline`; whether it
    /// has.
    fn wait(&self, deadline: Instant) -> bool {
        if let Some(fd) = &self.fd {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let Ok(timeout) = Timespec::try_from(left) else {
                    break;
                };
                let mut fds = [PollFd::new(fd, PollFlags::IN)];
                match poll(&mut fds, Some(&timeout)) {
                    Ok(0) => return ended(self.pid),
                    Ok(_) => return true,
                    Err(Errno::INTR) => {}
                    Err(_) => break,
                }
            }
        }
        loop {
            if ended(self.pid) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(PROC_POLL);
        }
    }
}

/// Ends what is left of the server whose folder is `root`: SIGKILL to every server program
/// working there (the postmaster and its backends work in the cluster's folder, `pg_ctl`
/// and `initdb` in `root`), then, once they are gone, the SysV segment of a postmaster
/// that did not remove it (`postmaster`: its pid file, read before it stopped). Best
/// effort.
fn end_server(root: &Path, postmaster: Option<&PidFile>) {
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    let killed: Vec<Process> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Process::of_server(pid, root))
        .collect();
    for process in &killed {
        process.kill();
    }
    let deadline = Instant::now() + KILL_WAIT;
    let left: Vec<i32> = killed
        .iter()
        .filter(|p| !p.wait(deadline))
        .map(|p| p.pid)
        .collect();
    if !left.is_empty() {
        tracing::warn!(?left, root = %root.display(), "postgres: processes outlived SIGKILL");
        return;
    }
    if let Some(shm) = postmaster.and_then(|p| p.shm)
        && root.join(DATA).join(PID_FILE).exists()
    {
        remove_segment(shm);
    }
}

/// Whether process `pid` is a server program whose working directory is `root` or inside
/// it (so never a person's shell looking in the folder).
fn works_in(pid: i32, root: &Path) -> bool {
    let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let name = exe.file_name().unwrap_or_default().to_string_lossy();
    // A program replaced on disk while it runs (a package upgrade) reads "NAME (deleted)".
    let name = name.strip_suffix(" (deleted)").unwrap_or(&name);
    SERVER_PROGRAMS.contains(&name)
        && fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(root))
}

/// Whether process `pid` has ended: it is gone, or a zombie (a server's processes are
/// orphans, and an init that does not reap leaves them so).
fn ended(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the command name, which is in parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("Z" | "X" | "x"))
}

/// What `postmaster.pid` says.
#[derive(Clone, Copy, Debug)]
struct PidFile {
    /// The postmaster's pid (line 1).
    pid: u32,
    /// Its SysV segment's key and id (line 7), if any.
    shm: Option<(u64, u64)>,
}

/// The cluster `data`'s `postmaster.pid`, if there is one and it reads.
fn read_pid_file(data: &Path) -> Option<PidFile> {
    let text = fs::read_to_string(data.join(PID_FILE)).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines.first()?.trim().parse().ok()?;
    let shm = lines.get(6).and_then(|line| {
        let mut numbers = line.split_whitespace().map(str::parse::<u64>);
        match (numbers.next(), numbers.next()) {
            (Some(Ok(key)), Some(Ok(id))) => Some((key, id)),
            _ => None,
        }
    });
    Some(PidFile { pid, shm })
}

/// Removes SysV shared memory segment `(key, id)` if it is still there and nothing is
/// attached to it (a postmaster removes its own unless killed). Best effort.
fn remove_segment((key, id): (u64, u64)) {
    let Ok(table) = fs::read_to_string("/proc/sysvipc/shm") else {
        return;
    };
    let (key, id) = (key.to_string(), id.to_string());
    // `key shmid perms size cpid lpid nattch ...`
    let unattached = table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 6 && fields[0] == key && fields[1] == id && fields[6] == "0"
    });
    if unattached {
        let _ = Command::new("ipcrm")
            .args(["-m", &id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Ends the servers of processes that are gone and removes their folders: the folders
/// under the system temp dir named for an owner that has ended. Best effort.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(owner) = owner_pid(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        // Not a link planted in the shared temp dir.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || !ended(owner) {
            continue;
        }
        let root = entry.path();
        end_server(&root, read_pid_file(&root.join(DATA)).as_ref());
        let _ = fs::remove_dir_all(&root);
    }
}

/// The system temp dir, as the kernel names it: what `/proc/PID/cwd` of a server's
/// processes starts with (not so were it reached through a link).
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir();
    fs::canonicalize(&dir).unwrap_or(dir)
}

/// The owner's pid in a server folder's name `duologue-pg-<pid>-<random>`.
fn owner_pid(name: &str) -> Option<i32> {
    let (pid, _) = name.strip_prefix(PREFIX)?.split_once('-')?;
    let pid: i32 = pid.parse().ok()?;
    (pid > 0).then_some(pid)
}

/// A free TCP port on `ip` (in lab host `lab`'s namespace, if any).
fn free_port(ip: IpAddr, lab: Option<(&Lab, usize)>) -> Result<u16, PostgresError> {
    let bind = move || TcpListener::bind((ip, 0)).and_then(|l| l.local_addr());
    let addr = match lab {
        None => bind(),
        Some((lab, host)) => lab.run_in(host, bind)?,
    }?;
    Ok(addr.port())
}

/// Where the server programs are: beside `initdb` on `PATH` (where it really is, for a
/// link such as `/usr/local/bin/initdb`), else in Debian's folder of the highest version.
fn find_bin() -> Result<PathBuf, PostgresError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .map(|dir| dir.join("initdb"))
        .find(|initdb| executable(initdb));
    let bin = match on_path {
        Some(initdb) => fs::canonicalize(&initdb)?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        None => debian_bin().ok_or_else(|| PostgresError::NotFound {
            program: "initdb".into(),
            looked: format!("on PATH nor in {DEBIAN_LIB}/*/bin"),
        })?,
    };
    for program in ["pg_ctl", "postgres"] {
        if !executable(&bin.join(program)) {
            return Err(PostgresError::NotFound {
                program: program.into(),
                looked: format!("beside initdb in {}", bin.display()),
            });
        }
    }
    Ok(bin)
}

/// `/usr/lib/postgresql/<version>/bin` of the highest version that has `initdb`.
fn debian_bin() -> Option<PathBuf> {
    fs::read_dir(DEBIAN_LIB)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            executable(&bin.join("initdb")).then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

fn executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Who runs the server: [`SERVER_USER`] when this process is root, else this process's
/// user (`None`).
fn server_user() -> Result<Option<(Uid, Gid)>, PostgresError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name(SERVER_USER) {
        Ok(Some(user)) => Ok(Some((user.uid, user.gid))),
        Ok(None) => Err(PostgresError::NoUser("no such user".into())),
        Err(e) => Err(PostgresError::NoUser(e.to_string())),
    }
}

/// The test's settings as `postgresql.conf` lines.
fn user_settings(settings: &[(&str, &str)]) -> Result<String, PostgresError> {
    let mut lines = String::new();
    for &(name, value) in settings {
        let invalid = |reason: &str| PostgresError::Setting {
            name: name.into(),
            value: value.into(),
            reason: reason.into(),
        };
        // Names are identifiers, custom ones with a dot (`auto_explain.log_min_duration`).
        let is_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !is_name {
            return Err(invalid("not a setting name"));
        }
        if value.contains(['\n', '\r']) {
            return Err(invalid("a value is one line"));
        }
        if lines.is_empty() {
            lines.push_str("# Given by the test:\n");
        }
        let _ = writeln!(lines, "{name} = {}", quote(value));
    }
    Ok(lines)
}

/// `value` as a quoted `postgresql.conf` string.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The end of file `path`, up to [`LOG_TAIL`] bytes (empty when it cannot be read).
fn tail(path: &Path) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(LOG_TAIL);
    let text = String::from_utf8_lossy(&bytes[start..]);
    if start > 0 {
        format!("[...]{text}")
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::{PidFile, owner_pid, quote, read_pid_file, user_settings};

    #[test]
    fn owner_pid_reads_only_server_folders() {
        assert_eq!(owner_pid("duologue-pg-1234-AbC9x"), Some(1234));
        assert_eq!(owner_pid("duologue-pg-1234-"), Some(1234));
        assert_eq!(owner_pid("duologue-pg-0-abc"), None);
        assert_eq!(owner_pid("duologue-pg--1-abc"), None);
        assert_eq!(owner_pid("duologue-pg-1234"), None);
        assert_eq!(owner_pid("duologue-python-abc"), None);
        assert_eq!(owner_pid("dl1234x0r"), None);
    }

    #[test]
    fn settings_are_quoted_and_checked() {
        assert_eq!(quote(r"it's a\b"), r"'it''s a\\b'");
        let lines = user_settings(&[("fsync", "off"), ("auto_explain.log_min_duration", "0")])
            .expect("valid");
        assert!(lines.contains("fsync = 'off'\n"), "{lines}");
        assert!(
            lines.contains("auto_explain.log_min_duration = '0'\n"),
            "{lines}"
        );
        assert_eq!(user_settings(&[]).expect("none"), "");
        assert!(user_settings(&[("fsync = off\nport", "1")]).is_err());
        assert!(user_settings(&[("1fsync", "off")]).is_err());
        assert!(user_settings(&[("work_mem", "1MB\nfsync = off")]).is_err());
    }

    #[test]
    fn pid_file_gives_the_postmaster_and_its_segment() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(read_pid_file(dir.path()).is_none());
        std::fs::write(
            dir.path().join("postmaster.pid"),
            "24037\n/tmp/x/data\n1796667304\n54329\n/tmp/x\n127.0.0.1\n 10158441         7\nready   \n",
        )
        .expect("write");
        let PidFile { pid, shm } = read_pid_file(dir.path()).expect("reads");
        assert_eq!((pid, shm), (24037, Some((10_158_441, 7))));
    }
}
