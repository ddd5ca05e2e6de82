//! The delay line of an impaired link: a thread in the lab's router namespace that takes
//! the packets iptables queues to it (NFQUEUE), holds each for the link's delay and then
//! lets it through, or drops it with the link's loss probability. It stands in for
//! `tc qdisc ... netem`, which the CI kernel does not have.
//!
//! ```text
//!  host i ═veth═ router: FORWARD -i/-o h<i> ─▶ NFQUEUE n ──netlink──▶ delay thread
//!                          (packet waits in the kernel) ◀── verdict: ACCEPT after the
//!                                                            delay, or DROP (loss)
//! ```
//!
//! The packets wait in the kernel: the thread only learns each packet's id (copy range 0,
//! metadata only) and answers with a verdict when its time has come. Verdicts go out in
//! arrival order (FIFO), so the link does not reorder. No `--queue-bypass`: while no
//! thread listens on the queue (it failed, or the lab is going away) the link carries
//! nothing, rather than carrying everything unimpaired.
//!
//! The socket. The kernel tells the thread of each packet with a netlink message and drops
//! the packet when the socket's buffer is full; the default buffer (`rmem_default`,
//! read-only inside a namespace) holds about 200, which a burst fills in a millisecond. And
//! the thread must sleep until either a packet comes or the next held one is due, which
//! takes `poll` on the socket. nfq 0.2.5 (the last release) does not expose its socket
//! (its repository's next version does), so the thread finds it: the one netfilter netlink
//! socket that appeared among this process's descriptors in the router's namespace while
//! it opened the queue (the lab creates delay threads one at a time), duplicated with
//! `pidfd_getfd`. On the duplicate it raises the buffer (`SO_RCVBUFFORCE`, root) and polls.
//!
//! nfq opens its socket without close-on-exec, so processes started while a delay thread
//! runs inherit it, and keep its queue bound after the thread ends: every delay thread
//! therefore gets a queue number never used before in its lab.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nfq::{Message, Queue, Verdict};
use rand::Rng;
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::ClusterError;

/// The most packets the kernel holds for the thread (told of, or waiting for a verdict);
/// beyond it the kernel drops. The default (1024) is 51 k packets/s at a 20 ms delay.
const QUEUE_MAX_LEN: u32 = 16 * 1024;

/// The socket's receive buffer: room for about [`QUEUE_MAX_LEN`] messages (each takes
/// about 1 KiB of buffer).
const SOCKET_BUFFER: usize = 16 << 20;

/// How long starting waits for the thread to bind its queue.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest the thread sleeps before looking whether it is told to stop.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// Netlink protocol number of netfilter (`NETLINK_NETFILTER`), in `/proc/net/netlink`.
const NETLINK_NETFILTER: u32 = 12;

/// [`Shared::state`]: run.
const RUN: u8 = 0;
/// [`Shared::state`]: let the held packets through at their time, then stop once nothing
/// more comes (the rules feeding the queue are gone).
const DRAIN: u8 = 1;
/// [`Shared::state`]: stop now (the held packets are dropped with the socket).
const STOP: u8 = 2;

/// The impairment of one link.
#[derive(Clone, Copy, Debug)]
pub(super) struct Impairment {
    /// One-way delay of every packet.
    pub(super) delay: Duration,
    /// Probability that a packet is dropped, in `[0, 1]`.
    pub(super) loss: f64,
}

/// What the handle and the thread share.
#[derive(Debug)]
struct Shared {
    state: AtomicU8,
    impairment: Mutex<Impairment>,
}

/// A running delay thread for one NFQUEUE queue; stopped (its held packets dropped) when
/// dropped.
#[derive(Debug)]
pub(super) struct Delayer {
    queue: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Delayer {
    /// Starts the thread in network namespace `netns` (a file under `/run/netns`, named
    /// `netns_name`), bound to queue `queue`, and waits until it listens. Call one at a
    /// time per namespace (see the module's doc).
    pub(super) fn start(
        netns: File,
        netns_name: &str,
        queue: u16,
        impairment: Impairment,
    ) -> Result<Self, ClusterError> {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(RUN),
            impairment: Mutex::new(impairment),
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("lab-delay-{queue}"))
            .spawn(move || {
                // setns changes only this thread's namespace; the socket opened after it
                // belongs to the router's namespace, where the queue and the rules are.
                let (queue, socket) = match bind(&netns, queue) {
                    Ok(bound) => bound,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Ok(());
                    }
                };
                let _ = ready_tx.send(Ok(()));
                run(queue, &socket, &thread_shared)
            })
            .map_err(|e| ClusterError::Spawn {
                program: "delay thread".into(),
                reason: e.to_string(),
            })?;
        let delayer = Self {
            queue,
            shared,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => Ok(delayer),
            Ok(Err(e)) => Err(ClusterError::Unexpected(format!(
                "delay thread for queue {queue} in {netns_name}: {e}"
            ))),
            Err(_) => Err(ClusterError::Timeout {
                what: format!("delay thread for queue {queue} in {netns_name} did not start"),
                timeout: START_TIMEOUT,
            }),
        }
    }

    /// Its queue number.
    pub(super) fn queue(&self) -> u16 {
        self.queue
    }

    /// Changes the impairment; packets already held keep their time.
    pub(super) fn set(&self, impairment: Impairment) {
        *self
            .shared
            .impairment
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = impairment;
    }

    /// Lets the held packets through at their time and stops once the queue is empty
    /// (call after the rules that feed it are gone); the thread's error, if it failed.
    pub(super) fn drain(mut self) -> Result<(), ClusterError> {
        self.stop(DRAIN)
    }

    /// Tells the thread to stop now, without waiting for it (dropping waits).
    pub(super) fn tell_stop(&self) {
        self.shared.state.store(STOP, Ordering::SeqCst);
    }

    fn stop(&mut self, how: u8) -> Result<(), ClusterError> {
        self.shared.state.store(how, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(ClusterError::Unexpected(format!(
                "delay thread failed: {e}"
            ))),
            Some(Err(_)) => Err(ClusterError::Unexpected("delay thread panicked".into())),
        }
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        let _ = self.stop(STOP);
    }
}

/// Enters `netns`, opens and binds the queue there (metadata only, nonblocking), and finds
/// its socket.
fn bind(netns: &File, queue_num: u16) -> io::Result<(Queue, OwnedFd)> {
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let before = netfilter_sockets()?;
    let mut queue = Queue::open()?;
    let socket = queue_socket(&before)?;
    rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, SOCKET_BUFFER)?;
    queue.bind(queue_num)?;
    // Copy range 0: the kernel sends the packet id and metadata, never the payload.
    queue.set_copy_range(queue_num, 0)?;
    queue.set_queue_max_len(queue_num, QUEUE_MAX_LEN)?;
    // Full queue: drop (the default), never accept unimpaired.
    queue.set_fail_open(queue_num, false)?;
    queue.set_nonblocking(true);
    Ok((queue, socket))
}

/// This process's netfilter netlink sockets in the calling thread's network namespace:
/// descriptor number → socket inode.
fn netfilter_sockets() -> io::Result<BTreeMap<i32, u64>> {
    // Sockets of this thread's namespace (`thread-self`: the namespace is per thread).
    let table = std::fs::read_to_string("/proc/thread-self/net/netlink")?;
    let inodes: Vec<u64> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let protocol: u32 = fields.get(1)?.parse().ok()?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            (protocol == NETLINK_NETFILTER).then_some(inode)
        })
        .collect();
    let mut sockets = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/thread-self/fd")? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed meanwhile
        };
        let inode = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok());
        let fd = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok());
        if let (Some(inode), Some(fd)) = (inode, fd)
            && inodes.contains(&inode)
        {
            sockets.insert(fd, inode);
        }
    }
    Ok(sockets)
}

/// The socket `Queue::open` just opened (the one netfilter socket not in `before`),
/// duplicated.
fn queue_socket(before: &BTreeMap<i32, u64>) -> io::Result<OwnedFd> {
    let after = netfilter_sockets()?;
    let new: Vec<i32> = after
        .iter()
        .filter(|(fd, inode)| before.get(fd) != Some(inode))
        .map(|(fd, _)| *fd)
        .collect();
    let [fd] = new[..] else {
        return Err(io::Error::other(format!(
            "cannot tell the queue's socket among {new:?}"
        )));
    };
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )?;
    Ok(rustix::process::pidfd_getfd(
        &me,
        fd,
        rustix::process::PidfdGetfdFlags::empty(),
    )?)
}

/// The delay line: receives, holds, releases, until told to stop.
fn run(mut queue: Queue, socket: &OwnedFd, shared: &Shared) -> io::Result<()> {
    let mut held: VecDeque<(Instant, Message)> = VecDeque::new();
    // Deadlines never go backwards (the delay may shrink while packets are held), so the
    // front of `held` is always the next one due, and the link keeps packet order.
    let mut last_deadline = Instant::now();
    let mut rng = rand::rng();
    loop {
        let state = shared.state.load(Ordering::SeqCst);
        if state == STOP {
            return Ok(());
        }
        let mut received = false;
        loop {
            let mut message = match queue.recv() {
                Ok(message) => message,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            received = true;
            let impairment = *shared
                .impairment
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if impairment.loss > 0.0 && rng.random_bool(impairment.loss) {
                message.set_verdict(Verdict::Drop);
                queue.verdict(message)?;
            } else {
                last_deadline = last_deadline.max(Instant::now() + impairment.delay);
                held.push_back((last_deadline, message));
            }
            if held.front().is_some_and(|(due, _)| *due <= Instant::now()) {
                // Do not keep due packets waiting behind a long burst.
                break;
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, mut message)) = held.pop_front() {
                message.set_verdict(Verdict::Accept);
                queue.verdict(message)?;
            }
        }
        if state == DRAIN && held.is_empty() && !received {
            return Ok(());
        }
        let wait = held
            .front()
            .map_or(STOP_CHECK, |(due, _)| due.saturating_duration_since(now))
            .min(STOP_CHECK);
        let timeout = Timespec::try_from(wait).map_err(io::Error::other)?;
        let mut fds = [PollFd::new(socket, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) => {}
            Err(e) if e == rustix::io::Errno::INTR => {}
            Err(e) => return Err(e.into()),
        }
    }
}
