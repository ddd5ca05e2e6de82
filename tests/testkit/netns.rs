//! A network lab of Linux network namespaces, for tests that need node processes on
//! separate network stacks: their own addresses, a slow or lossy link, a partition.
//!
//! ```text
//!   dl<pid>x<n>h0 (10.0.1.2) ──eth0═veth═h0── dl<pid>x<n>r ──h2═veth═eth0── dl<pid>x<n>h2 (10.0.3.2)
//!                                               (router,
//!   dl<pid>x<n>h1 (10.0.2.2) ──eth0═veth═h1──  ip_forward)
//! ```
//!
//! Every host namespace has one veth to the lab's router namespace and a default route
//! through it; the router forwards between them. A link is impaired (delay, loss) by
//! iptables rules in the router that queue its packets to a delay thread of this process
//! ([`delay`]), because the kernel the tests run on has no `sch_netem`; a host is cut off
//! by iptables DROP rules in the router. Needs root, `ip` (iproute2), and for impairments
//! and cuts `iptables`.
//!
//! Everything a lab creates is removed when it drops, and [`Lab::new`] removes what labs of
//! processes that died without dropping theirs left behind.

mod delay;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use self::delay::{Delayer, Impairment};
use crate::{ChildGuard, ClusterError, NodeProcess};

/// Prefix of every namespace a lab creates: `dl<pid>x<counter>r` (router) and
/// `dl<pid>x<counter>h<i>` (hosts).
const PREFIX: &str = "dl";

/// Where `ip netns` keeps its namespaces.
const RUN_NETNS: &str = "/run/netns";

/// Where `ip netns exec NS` finds files it mounts over `/etc` for NS.
const ETC_NETNS: &str = "/etc/netns";

/// Most hosts in a lab (one `10.0.<i+1>.0/24` each).
const MAX_HOSTS: usize = 250;

/// How long a new veth may take to come up.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Labs created by this process so far, for unique names.
static LABS: AtomicU32 = AtomicU32::new(0);

/// Linux network namespaces: a router and `hosts` hosts around it, each host on its own
/// link with its own address. Links can be delayed, made lossy, cut and healed. Dropping
/// the lab stops its delay threads and deletes its namespaces and files.
///
/// The methods block (they run `ip` and `iptables`, a few milliseconds each).
#[derive(Debug)]
pub struct Lab {
    router: String,
    hosts: Vec<String>,
    state: Mutex<State>,
}

/// What changes after creation.
#[derive(Debug, Default)]
struct State {
    /// Namespaces created so far (deleted on drop).
    created: Vec<String>,
    /// Delay threads by host.
    delayers: BTreeMap<usize, Delayer>,
    /// Hosts cut off.
    cut: BTreeSet<usize>,
    /// The last NFQUEUE queue number used in the router.
    queues: u16,
}

impl Lab {
    /// Creates a router namespace and `hosts` host namespaces around it (host `i`:
    /// `10.0.<i+1>.2/24`, router side `10.0.<i+1>.1`), after removing the namespaces and
    /// files of labs whose process is gone.
    ///
    /// # Errors
    /// When `hosts` is 0 or above 250, or a command fails (not root, no `ip`): what was
    /// already created is removed.
    pub fn new(hosts: usize) -> Result<Self, ClusterError> {
        if hosts == 0 || hosts > MAX_HOSTS {
            return Err(ClusterError::Unexpected(format!(
                "a lab has 1 to {MAX_HOSTS} hosts, not {hosts}"
            )));
        }
        sweep_stale();
        let base = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Self {
            router: format!("{base}r"),
            hosts: (0..hosts).map(|i| format!("{base}h{i}")).collect(),
            state: Mutex::new(State::default()),
        };
        lab.add_namespace(&lab.router)?;
        ip(&["-n", &lab.router, "link", "set", "lo", "up"])?;
        lab.run_in_namespace(&lab.router, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })?
        .map_err(|e| ClusterError::Unexpected(format!("ip_forward in {}: {e}", lab.router)))?;
        let router = &lab.router;
        for (i, host) in lab.hosts.iter().enumerate() {
            lab.add_namespace(host)?;
            let net = i + 1;
            // Interface index 100 + i in the router: were a veth's index its peer's (host 0's
            // eth0 and the router's first veth would both be 2), the kernel would take its
            // carrier change for a non-urgent event and apply it up to a second later,
            // dropping every packet sent meanwhile.
            let index = 100 + i;
            ip_line(&format!(
                "-n {router} link add h{i} index {index} type veth peer name eth0 netns {host}"
            ))?;
            ip_line(&format!("-n {router} addr add 10.0.{net}.1/24 dev h{i}"))?;
            ip_line(&format!("-n {router} link set h{i} up"))?;
            ip_line(&format!("-n {host} link set lo up"))?;
            ip_line(&format!("-n {host} addr add 10.0.{net}.2/24 dev eth0"))?;
            ip_line(&format!("-n {host} link set eth0 up"))?;
            ip_line(&format!("-n {host} route add default via 10.0.{net}.1"))?;
        }
        // The carrier comes up asynchronously (linkwatch); until then a veth drops what it
        // is given.
        for (i, host) in lab.hosts.iter().enumerate() {
            wait_up(host, "eth0")?;
            wait_up(router, &format!("h{i}"))?;
        }
        Ok(lab)
    }

    /// Number of hosts.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Host `i`'s address, `10.0.<i+1>.2`.
    ///
    /// # Panics
    /// When there is no host `i`.
    pub fn ip(&self, i: usize) -> IpAddr {
        self.check(i);
        IpAddr::V4(Ipv4Addr::new(10, 0, net(i), 2))
    }

    /// Host `i`'s namespace name (for `ip netns exec`).
    ///
    /// # Panics
    /// When there is no host `i`.
    pub fn namespace(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// The router's namespace name.
    pub fn router(&self) -> &str {
        &self.router
    }

    /// Starts `program` with `args` in host `i`'s namespace, every stdio piped, as
    /// `ip netns exec NS program args...`; `ip` replaces itself with the program, so the
    /// guard's pid, signals and kill reach the program. It sees host `i`'s hosts file
    /// ([`Lab::hosts_file`]) as `/etc/hosts`.
    ///
    /// # Errors
    /// [`ClusterError::Spawn`].
    ///
    /// # Panics
    /// When there is no host `i`.
    pub fn spawn(
        &self,
        i: usize,
        name: &str,
        program: &Path,
        args: &[String],
    ) -> Result<ChildGuard, ClusterError> {
        let all: Vec<String> = self
            .exec_prefix(i, program)
            .into_iter()
            .chain(args.iter().cloned())
            .collect();
        ChildGuard::spawn(name, Path::new("ip"), &all)
    }

    /// [`NodeProcess::start`] in host `i`'s namespace: runs `exe node --name NAME args...`
    /// there and waits up to `timeout` for its `listening on ADDR` line.
    ///
    /// # Errors
    /// [`ClusterError`] when it does not start or says something else first.
    ///
    /// # Panics
    /// When there is no host `i`.
    pub async fn start_node(
        &self,
        i: usize,
        exe: &Path,
        name: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<NodeProcess, ClusterError> {
        self.until_listening(i, exe, name, &crate::node_args(name, args), timeout)
            .await
    }

    /// [`NodeProcess::start_binary`] in host `i`'s namespace: runs
    /// `exe --name NAME args...` there and waits up to `timeout` for its
    /// `listening on ADDR` line.
    ///
    /// # Errors
    /// [`ClusterError`] when it does not start or says something else first.
    ///
    /// # Panics
    /// When there is no host `i`.
    pub async fn start_binary(
        &self,
        i: usize,
        exe: &Path,
        name: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<NodeProcess, ClusterError> {
        self.until_listening(i, exe, name, &crate::binary_args(name, args), timeout)
            .await
    }

    /// Runs `exe args...` in host `i`'s namespace until its `listening on ADDR` line.
    async fn until_listening(
        &self,
        i: usize,
        exe: &Path,
        name: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<NodeProcess, ClusterError> {
        let prefix = self.exec_prefix(i, exe);
        NodeProcess::until_listening(Path::new("ip"), &prefix, name, args, timeout).await
    }

    /// Runs `f` on a new thread in host `i`'s network namespace and returns what it
    /// returns. Sockets it creates belong to that namespace and stay there wherever they
    /// are used afterwards: bind a listener or connect a client here, use it anywhere.
    /// (Name resolution in `f` reads this machine's `/etc/hosts`, not the lab's: that
    /// takes a process started with [`Lab::spawn`].)
    ///
    /// # Errors
    /// When the namespace cannot be entered, or `f` panics.
    ///
    /// # Panics
    /// When there is no host `i`.
    pub fn run_in<T, F>(&self, i: usize, f: F) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.run_in_namespace(&self.hosts[i], f)
    }

    /// Impairs host `i`'s link: every packet the router forwards from or to host `i` waits
    /// `delay` (one way) and is dropped with probability `loss` (0.01: 1 %), as
    /// `tc qdisc ... netem delay DELAY loss LOSS` would. Calling it again changes the
    /// impairment. A packet between two impaired hosts gets both impairments.
    ///
    /// # Errors
    /// When `loss` is not within `[0, 1]`, `iptables` is missing or fails, or the delay
    /// thread cannot start.
    ///
    /// # Panics
    /// When there is no host `i`.
    pub fn impair(&self, i: usize, delay: Duration, loss: f64) -> Result<(), ClusterError> {
        self.check(i);
        if !(0.0..=1.0).contains(&loss) {
            return Err(ClusterError::Unexpected(format!(
                "loss is a probability in [0, 1], not {loss}"
            )));
        }
        let impairment = Impairment { delay, loss };
        let mut state = self.state();
        if let Some(delayer) = state.delayers.get(&i) {
            delayer.set(impairment);
            return Ok(());
        }
        find_iptables()?;
        let netns = File::open(Path::new(RUN_NETNS).join(&self.router))?;
        // A queue number never used before in this lab (see `delay`'s doc: processes
        // started meanwhile keep an old queue bound).
        state.queues = state
            .queues
            .checked_add(1)
            .ok_or_else(|| ClusterError::Unexpected("out of queue numbers".into()))?;
        let queue = state.queues;
        // While the state is locked: one delay thread starts at a time (`delay` needs it).
        let delayer = Delayer::start(netns, &self.router, queue, impairment)?;
        // Bound before the rules exist: no packet reaches an unbound queue. Packets from
        // host i are queued in mangle's FORWARD chain, packets to it in filter's: a packet
        // between two impaired hosts passes both (an ACCEPT verdict ends a table's chain,
        // not the hook).
        let added = self
            .iptables(&queue_rule("-A", "mangle", "-i", i, queue))
            .and_then(|()| self.iptables(&queue_rule("-A", "filter", "-o", i, queue)));
        if let Err(e) = added {
            let _ = self.iptables(&queue_rule("-D", "mangle", "-i", i, queue));
            let _ = self.iptables(&queue_rule("-D", "filter", "-o", i, queue));
            return Err(e);
        }
        state.delayers.insert(i, delayer);
        Ok(())
    }

    /// Removes host `i`'s impairment (nothing when there is none); packets already held
    /// pass at their time.
    ///
    /// # Errors
    /// When `iptables` fails, or the delay thread had failed.
    ///
    /// # Panics
    /// When there is no host `i`.
    pub fn clear_impairment(&self, i: usize) -> Result<(), ClusterError> {
        self.check(i);
        let mut state = self.state();
        let Some(delayer) = state.delayers.remove(&i) else {
            return Ok(());
        };
        let queue = delayer.queue();
        let removed = self
            .iptables(&queue_rule("-D", "mangle", "-i", i, queue))
            .and_then(|()| self.iptables(&queue_rule("-D", "filter", "-o", i, queue)));
        if let Err(e) = removed {
            // Rules may still feed the queue: keep the thread on it.
            state.delayers.insert(i, delayer);
            return Err(e);
        }
        delayer.drain()
    }

    /// Cuts host `i` off from everyone (a partition): the router drops every packet from
    /// or to it, so connections stall and connects time out, as across a dead link.
    /// Nothing when already cut.
    ///
    /// # Errors
    /// When `iptables` is missing or fails.
    ///
    /// # Panics
    /// When there is no host `i`.
    pub fn cut(&self, i: usize) -> Result<(), ClusterError> {
        self.check(i);
        let mut state = self.state();
        if state.cut.contains(&i) {
            return Ok(());
        }
        find_iptables()?;
        self.iptables(&drop_rule("-I", "-i", i))?;
        if let Err(e) = self.iptables(&drop_rule("-I", "-o", i)) {
            let _ = self.iptables(&drop_rule("-D", "-i", i));
            return Err(e);
        }
        state.cut.insert(i);
        Ok(())
    }

    /// Reconnects host `i` after [`Lab::cut`] (nothing when not cut).
    ///
    /// # Errors
    /// When `iptables` fails.
    ///
    /// # Panics
    /// When there is no host `i`.
    pub fn heal(&self, i: usize) -> Result<(), ClusterError> {
        self.check(i);
        let mut state = self.state();
        if !state.cut.contains(&i) {
            return Ok(());
        }
        self.iptables(&drop_rule("-D", "-i", i))?;
        self.iptables(&drop_rule("-D", "-o", i))?;
        state.cut.remove(&i);
        Ok(())
    }

    /// Writes host `i`'s `/etc/hosts` (`/etc/netns/<ns>/hosts`, which `ip netns exec`
    /// mounts over `/etc/hosts`): the localhost lines, then one line per entry. Several
    /// entries of one name make that name resolve to several addresses. Seen by the
    /// processes started after it with [`Lab::spawn`], [`Lab::start_node`] and
    /// [`Lab::start_binary`].
    ///
    /// # Errors
    /// When the file cannot be written.
    ///
    /// # Panics
    /// When there is no host `i`.
    pub fn hosts_file(&self, i: usize, entries: &[(&str, IpAddr)]) -> Result<(), ClusterError> {
        let dir = etc_dir(&self.hosts[i]);
        std::fs::create_dir_all(&dir)?;
        let mut text =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for (name, addr) in entries {
            text.push_str(&format!("{addr}\t{name}\n"));
        }
        std::fs::write(dir.join("hosts"), text)?;
        Ok(())
    }

    fn check(&self, i: usize) {
        assert!(
            i < self.hosts.len(),
            "host {i} of a lab of {}",
            self.hosts.len()
        );
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add_namespace(&self, name: &str) -> Result<(), ClusterError> {
        ip(&["netns", "add", name])?;
        self.state().created.push(name.to_owned());
        Ok(())
    }

    fn run_in_namespace<T, F>(&self, name: &str, f: F) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let netns = File::open(Path::new(RUN_NETNS).join(name))?;
        let thread = std::thread::Builder::new()
            .name(format!("lab-{name}"))
            .spawn(move || {
                nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                Ok::<T, Errno>(f())
            })?;
        match thread.join() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ClusterError::Unexpected(format!("setns into {name}: {e}"))),
            Err(_) => Err(ClusterError::Unexpected(format!(
                "the function run in {name} panicked"
            ))),
        }
    }

    /// `netns exec NS program`: the start of `ip`'s command line that runs `program` in
    /// host `i`'s namespace.
    fn exec_prefix(&self, i: usize, program: &Path) -> Vec<String> {
        vec![
            "netns".into(),
            "exec".into(),
            self.hosts[i].clone(),
            program.display().to_string(),
        ]
    }

    /// Runs `iptables -w ARGS` in the router's namespace.
    fn iptables(&self, args: &[String]) -> Result<(), ClusterError> {
        let mut all: Vec<&str> = vec!["netns", "exec", &self.router, "iptables", "-w"];
        all.extend(args.iter().map(String::as_str));
        ip(&all).map(drop)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        // The threads first: they live in the router's namespace. All told, then each
        // awaited.
        for delayer in state.delayers.values() {
            delayer.tell_stop();
        }
        state.delayers.clear();
        for name in state.created.drain(..).rev() {
            let _ = ip(&["netns", "del", &name]);
        }
        for host in &self.hosts {
            let _ = std::fs::remove_dir_all(etc_dir(host));
        }
    }
}

/// The third octet of host `i`'s network.
fn net(i: usize) -> u8 {
    u8::try_from(i + 1).expect("at most MAX_HOSTS hosts")
}

/// The rule in the router that queues host `i`'s packets (`dir`: `-i` from it, `-o` to it)
/// to its delay thread's `queue`; `op` `-A` adds it, `-D` deletes it.
fn queue_rule(op: &str, table: &str, dir: &str, i: usize, queue: u16) -> Vec<String> {
    [
        "-t",
        table,
        op,
        "FORWARD",
        dir,
        &format!("h{i}"),
        "-j",
        "NFQUEUE",
        "--queue-num",
        &queue.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The rule in the router that drops host `i`'s packets (`dir` as in
/// [`queue_rule`]), first in filter's FORWARD chain; `op` `-I` adds, `-D` deletes.
fn drop_rule(op: &str, dir: &str, i: usize) -> Vec<String> {
    let mut rule = vec![op.to_owned(), "FORWARD".to_owned()];
    if op == "-I" {
        rule.push("1".to_owned());
    }
    rule.extend([dir, &format!("h{i}"), "-j", "DROP"].map(str::to_owned));
    rule
}

/// `/etc/netns/<ns>`.
fn etc_dir(namespace: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(namespace)
}

/// Runs `ip ARGS`, output captured; its stdout, or an error naming the command and
/// carrying its stderr.
fn ip(args: &[&str]) -> Result<String, ClusterError> {
    let command = || format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ClusterError::Spawn {
            program: command(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                "`ip` not found: install iproute2 (apt-get install -y iproute2)".to_owned()
            } else {
                e.to_string()
            },
        })?;
    if !output.status.success() {
        return Err(ClusterError::Unexpected(format!(
            "`{}` failed ({}): {}",
            command(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// [`ip`] with `line` split at spaces (no argument has one).
fn ip_line(line: &str) -> Result<String, ClusterError> {
    ip(&line.split(' ').collect::<Vec<_>>())
}

/// Waits until interface `dev` in namespace `ns` is operationally up: watches the
/// namespace's link events (`ip monitor link`, started before the state is read, so an
/// event in between is not missed) rather than asking again and again.
fn wait_up(ns: &str, dev: &str) -> Result<(), ClusterError> {
    use std::io::{BufRead, BufReader};
    let timeout = || ClusterError::Timeout {
        what: format!("{dev} in {ns} not up"),
        timeout: LINK_UP_TIMEOUT,
    };
    let mut monitor = Command::new("ip")
        .args(["-n", ns, "-o", "monitor", "link"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| ClusterError::Spawn {
            program: format!("ip -n {ns} -o monitor link"),
            reason: e.to_string(),
        })?;
    // `3: h0@if4: <...> ... state UP ...`, a line per link, from `show` and `monitor` alike.
    let up = |line: &str| {
        (line.contains(&format!(": {dev}@")) || line.contains(&format!(": {dev}:")))
            && line.contains(" state UP ")
    };
    let (events_tx, events) = std::sync::mpsc::channel();
    let stdout = monitor.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if events_tx.send(line).is_err() {
                return;
            }
        }
    });
    let result = (|| {
        if up(&ip(&["-n", ns, "-o", "link", "show", "dev", dev])?) {
            return Ok(());
        }
        let deadline = Instant::now() + LINK_UP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(line) if up(&line) => return Ok(()),
                Ok(_) => {}
                Err(_) => return Err(timeout()),
            }
        }
    })();
    // Ends the monitor, and with its stdout the reading thread.
    let _ = monitor.kill();
    let _ = monitor.wait();
    result
}

/// Checks that `iptables` is on the path (`ip netns exec` would only say that it cannot
/// exec it).
fn find_iptables() -> Result<(), ClusterError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|dir| dir.join("iptables").is_file());
    if found {
        Ok(())
    } else {
        Err(ClusterError::Spawn {
            program: "iptables".into(),
            reason: "not found: the network lab's impairments and cuts need it; install it \
                     with `apt-get install -y iptables`"
                .into(),
        })
    }
}

/// Deletes the namespaces and `/etc/netns` directories of labs whose process is gone
/// (it was killed, or aborted without unwinding). Best effort.
fn sweep_stale() {
    for dir in [RUN_NETNS, ETC_NETNS] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = lab_pid(&name) else {
                continue;
            };
            if kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH) {
                continue;
            }
            if dir == RUN_NETNS {
                let _ = ip(&["netns", "del", &name]);
            } else {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The pid in a lab's namespace name `dl<pid>x...`.
fn lab_pid(name: &str) -> Option<i32> {
    let (pid, _) = name.strip_prefix(PREFIX)?.split_once('x')?;
    let pid: i32 = pid.parse().ok()?;
    (pid > 0).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::lab_pid;

    #[test]
    fn lab_pid_reads_only_lab_names() {
        assert_eq!(lab_pid("dl1234x0r"), Some(1234));
        assert_eq!(lab_pid("dl1234x10h2"), Some(1234));
        assert_eq!(lab_pid("dlx0r"), None);
        assert_eq!(lab_pid("dl-1x0r"), None);
        assert_eq!(lab_pid("dl0x0r"), None);
        assert_eq!(lab_pid("other"), None);
        assert_eq!(lab_pid("dl12"), None);
    }
}
