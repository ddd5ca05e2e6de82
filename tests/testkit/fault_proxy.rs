//! A fault-injecting TCP proxy for tests: put it between two nodes (or any client and
//! server on 127.0.0.1) and cut, starve or silence the connections on demand.
//!
//! ```text
//!  client ──TCP──▶ FaultProxy (127.0.0.1:0) ──TCP──▶ target
//!                   │ cut_all()        shut both sockets of every connection, abort its task
//!                   │ cut_every(n)     cut everything after every n bytes client → target
//!                   │ reset_all()      reset (RST) both sockets of every connection
//!                   │ set_blackhole()  accept, but forward nothing while on
//! ```
//!
//! Used by the resume tests and `examples/resume.rs`. Loopback only.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// Size of each read when forwarding.
const CHUNK: usize = 16 * 1024;

/// A TCP proxy on 127.0.0.1 that forwards to one target and injects faults on demand.
/// Everything it runs stops when it is dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// What the accept loop, the connection tasks and the handle share.
#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    /// `true` while the proxy forwards nothing.
    blackhole: watch::Sender<bool>,
    /// Connections accepted so far.
    accepted: watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    conns: HashMap<u64, Conn>,
    /// Connections cut so far, by any means.
    cuts: usize,
    /// Cut everything after this many bytes client → target (`None`: never).
    cut_every: Option<u64>,
    /// Bytes client → target since the last cut (or since `cut_every` was set).
    since_cut: u64,
    /// The `cut_every` budget is spent and the cut is under way: forward nothing more.
    cut_pending: bool,
    /// The proxy was dropped: take no more connections.
    closed: bool,
}

/// One proxied connection.
#[derive(Debug)]
struct Conn {
    task: AbortHandle,
    /// Duplicates of the two sockets' descriptors, to shut them from outside the task.
    client: std::net::TcpStream,
    target: Option<std::net::TcpStream>,
}

impl Conn {
    /// Shuts both sockets (the peers see EOF at once, pending reads and writes in the
    /// task fail) and aborts the task, which drops (closes) them.
    fn cut(self) {
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(target) = &self.target {
            let _ = target.shutdown(Shutdown::Both);
        }
        self.task.abort();
    }

    /// Resets both sockets: with a zero linger, closing them sends RST instead of FIN,
    /// as a middlebox or a crashed host does. Pending reads and writes on both peers
    /// fail with "connection reset".
    fn reset(self) {
        let _ = socket2::SockRef::from(&self.client).set_linger(Some(std::time::Duration::ZERO));
        if let Some(target) = &self.target {
            let _ = socket2::SockRef::from(target).set_linger(Some(std::time::Duration::ZERO));
        }
        // The task holds the other descriptor of each socket; the last close sends the RST.
        self.task.abort();
    }
}

/// A second handle to a tokio socket, for `shutdown` from any thread.
fn dup(stream: &TcpStream) -> io::Result<std::net::TcpStream> {
    Ok(std::net::TcpStream::from(
        stream.as_fd().try_clone_to_owned()?,
    ))
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test task must not hide the proxy from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts every connection; returns how many.
    fn cut_all(&self) -> usize {
        let conns = self.take_all();
        let n = conns.len();
        conns.into_iter().for_each(Conn::cut);
        n
    }

    /// Resets every connection; returns how many.
    fn reset_all(&self) -> usize {
        let conns = self.take_all();
        let n = conns.len();
        conns.into_iter().for_each(Conn::reset);
        n
    }

    /// Takes every connection out of the table, counting them as cut.
    fn take_all(&self) -> Vec<Conn> {
        let mut state = self.state();
        let conns: Vec<Conn> = state.conns.drain().map(|(_, c)| c).collect();
        state.cuts += conns.len();
        state.since_cut = 0;
        state.cut_pending = false;
        conns
    }

    /// How many of `wanted` bytes client → target may be forwarded now, and whether
    /// forwarding them spends the `cut_every` budget (the caller then cuts everything).
    fn reserve(&self, wanted: usize) -> (usize, bool) {
        let mut state = self.state();
        if state.cut_pending {
            return (0, false);
        }
        let Some(every) = state.cut_every else {
            return (wanted, false);
        };
        let left = every.saturating_sub(state.since_cut);
        let allowed = wanted.min(usize::try_from(left).unwrap_or(usize::MAX));
        state.since_cut += allowed as u64;
        let trigger = state.since_cut >= every;
        state.cut_pending = trigger;
        (allowed, trigger)
    }

    /// Waits while the blackhole is on.
    async fn open(&self) {
        let mut rx = self.blackhole.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|on| !*on).await;
    }
}

impl FaultProxy {
    /// Starts a proxy listening on 127.0.0.1 (a free port) that forwards every
    /// connection to `target`.
    ///
    /// # Errors
    /// When the listening socket cannot be bound, or `target` is not on 127.0.0.1.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        if !target.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("FaultProxy only forwards to 127.0.0.1, not {target}"),
            ));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State::default()),
            blackhole: watch::Sender::new(false),
            accepted: watch::Sender::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Abruptly closes every connection proxied now, both sides (the peers see EOF or a
    /// reset); returns how many, and adds them to [`FaultProxy::cuts`]. The proxy keeps
    /// accepting new connections.
    pub fn cut_all(&self) -> usize {
        self.shared.cut_all()
    }

    /// Resets every connection proxied now: both peers see "connection reset" (a TCP
    /// RST, not an orderly close). Returns how many, and adds them to
    /// [`FaultProxy::cuts`]. The proxy keeps accepting new connections.
    pub fn reset_all(&self) -> usize {
        self.shared.reset_all()
    }

    /// Connections cut so far, by [`FaultProxy::cut_all`], [`FaultProxy::reset_all`] and
    /// by [`FaultProxy::cut_every`].
    pub fn cuts(&self) -> usize {
        self.shared.state().cuts
    }

    /// From now on, after every `bytes` bytes forwarded client → target (all connections
    /// together), cut every connection: exactly `bytes` bytes pass, the rest of the
    /// chunk that reached the limit is dropped with the connections. `0` turns it off.
    /// The count starts afresh on each call.
    pub fn cut_every(&self, bytes: u64) {
        let mut state = self.shared.state();
        state.cut_every = (bytes > 0).then_some(bytes);
        state.since_cut = 0;
    }

    /// While on, new connections are accepted but not forwarded (the target is not even
    /// dialled), and existing ones stop forwarding in both directions: a silent peer.
    /// Bytes held back are forwarded, in order, once it is turned off.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.send_replace(on);
    }

    /// Waits until at least `n` connections were accepted since the proxy started.
    pub async fn accepted(&self, n: usize) {
        let mut rx = self.shared.accepted.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|accepted| *accepted >= n).await;
    }

    /// How many connections are proxied now.
    pub fn connections(&self) -> usize {
        self.shared.state().conns.len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        let conns: Vec<Conn> = {
            let mut state = self.shared.state();
            state.closed = true;
            state.conns.drain().map(|(_, c)| c).collect()
        };
        for conn in conns {
            conn.cut();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "fault proxy: accept failed");
                continue;
            }
        };
        if !peer.ip().is_loopback() {
            continue;
        }
        let _ = client.set_nodelay(true);
        let Ok(client_dup) = dup(&client) else {
            continue;
        };
        // Registered under the lock, so the task cannot finish (and unregister) first.
        let mut state = shared.state();
        if state.closed {
            return;
        }
        let id = state.next_id;
        state.next_id += 1;
        shared.accepted.send_modify(|n| *n += 1);
        let task = tokio::spawn(proxy_one(id, client, Arc::clone(&shared)));
        state.conns.insert(
            id,
            Conn {
                task: task.abort_handle(),
                client: client_dup,
                target: None,
            },
        );
    }
}

/// Forwards one connection until both directions end, then unregisters it.
async fn proxy_one(id: u64, client: TcpStream, shared: Arc<Shared>) {
    shared.open().await;
    if let Ok(target) = TcpStream::connect(shared.target).await {
        let _ = target.set_nodelay(true);
        let registered = match (dup(&target), shared.state().conns.get_mut(&id)) {
            (Ok(target_dup), Some(conn)) => {
                conn.target = Some(target_dup);
                true
            }
            _ => false,
        };
        if registered {
            let (client_rx, client_tx) = client.into_split();
            let (target_rx, target_tx) = target.into_split();
            tokio::join!(
                forward(&shared, client_rx, target_tx, true),
                forward(&shared, target_rx, client_tx, false),
            );
        }
    }
    shared.state().conns.remove(&id);
}

/// Copies `from` to `to` until EOF or an error, honouring the blackhole and, client →
/// target, the `cut_every` budget.
async fn forward(shared: &Shared, mut from: OwnedReadHalf, mut to: OwnedWriteHalf, upstream: bool) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        shared.open().await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        shared.open().await;
        let (allowed, trigger) = if upstream {
            shared.reserve(n)
        } else {
            (n, false)
        };
        if allowed > 0 && to.write_all(&buf[..allowed]).await.is_err() {
            break;
        }
        if trigger {
            shared.cut_all();
        }
        if allowed < n || trigger {
            // A cut is under way (this task is aborted by it); a half-close from here
            // would look polite, so wait to be cut instead.
            std::future::pending::<()>().await;
        }
    }
    // The source ended: pass the half-close on.
    let _ = to.shutdown().await;
}
