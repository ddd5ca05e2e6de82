//! The connections a node accepts, under its [`AdmissionConfig`]: at most so many open
//! at once, each closed when it has carried no stream for the idle timeout, and accept
//! errors (out of file descriptors) backed off instead of retried in a spin.
//!
//! Every port that accepts connections, the session port and the admin port, counts
//! them in one budget ([`Descriptors`]), which never exceeds what the node's open-file
//! limit leaves once its own descriptors are set aside: so `accept` does not fail for
//! lack of descriptors before the limit and its eviction act, and no port can take the
//! descriptors another needs.
//!
//! At the limit, a new connection takes the place of the open one that has carried no
//! stream for longest, if there is one: silent sockets cannot keep a peer that talks
//! out. Only when every open connection carries a stream is the new one closed. An admin
//! connection only takes the place of another admin connection, under a cap of its own.
//! A place is taken back before the next accept: at most one connection per port is
//! ever open beyond the limit, for as long as the one it replaces takes to close.
//!
//! tonic's own `TcpIncoming` has none of this: it retries a failing `accept` at once,
//! forever, without a word.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::Stream;
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

use crate::config::{AdmissionConfig, NodeConfig};
use crate::log_budget::{LogBudget, LogVerdict as Verdict};

/// The first pause after a failed `accept`; doubles per failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause after a failed `accept`.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The longest an accept loop waits for the connection it displaced to close before it
/// accepts again all the same (that connection's task is not reading).
const ROOM_WAIT_MAX: Duration = Duration::from_secs(1);
/// Descriptors always kept for the node's own use, whatever its open-file limit: the
/// runtime's, the listeners', the gossip sockets, outgoing connections, files.
const RESERVE_MIN: u64 = 32;

/// The port a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Port {
    /// The session port (gRPC: sessions, health, reflection).
    Session,
    /// The admin address (HTTP/1: metrics, status).
    Admin,
}

impl Port {
    const ALL: [Self; 2] = [Self::Session, Self::Admin];

    fn index(self) -> usize {
        match self {
            Self::Session => 0,
            Self::Admin => 1,
        }
    }

    /// Its label in metrics and log lines.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Admin => "admin",
        }
    }
}

/// Why admission closed a connection (counted per port, for the metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    /// Closed to make room for a new one: it had carried nothing for longest.
    Evicted,
    /// Closed as soon as accepted: every open connection carried something.
    Refused,
    /// Closed after carrying nothing for the idle timeout.
    Idle,
    /// Closed without a whole request head within the header timeout (admin port).
    HeaderTimeout,
}

impl Closed {
    const ALL: [Self; 4] = [
        Self::Evicted,
        Self::Refused,
        Self::Idle,
        Self::HeaderTimeout,
    ];

    fn index(self) -> usize {
        match self {
            Self::Evicted => 0,
            Self::Refused => 1,
            Self::Idle => 2,
            Self::HeaderTimeout => 3,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Evicted => "evicted",
            Self::Refused => "refused",
            Self::Idle => "idle",
            Self::HeaderTimeout => "header_timeout",
        }
    }
}

/// The process's open-file limits, soft and hard (`None`: unlimited, or unknown on this
/// platform).
pub(crate) fn open_file_limits() -> (Option<u64>, Option<u64>) {
    #[cfg(unix)]
    {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        (limit.current, limit.maximum)
    }
    #[cfg(not(unix))]
    {
        (None, None)
    }
}

/// How many connections a node may hold open under a soft open-file limit of `soft`: a
/// quarter of it (at least [`RESERVE_MIN`]) is kept for the node's own descriptors.
pub(crate) fn connections_within(soft: u64) -> usize {
    let reserve = (soft / 4).max(RESERVE_MIN);
    usize::try_from(soft.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
}

/// The node's descriptor budget: every connection accepted on any of its ports counts
/// in it, and the idlest connections of all ports are found here.
#[derive(Debug)]
pub(crate) struct Descriptors {
    /// Most connections open at once, all ports together.
    limit: usize,
    /// Most connections open at once on the admin port.
    admin_limit: usize,
    /// The soft open-file limit the budget was derived from.
    soft_limit: Option<u64>,
    /// Open connections, per port.
    open: [AtomicUsize; 2],
    /// Every connection accepted, to find an idle one to close at a limit (pruned of
    /// closed ones as it is searched).
    conns: Mutex<Vec<(Port, Weak<ConnState>)>>,
    /// Each port's accept loop, woken when a connection closes.
    waiting: [AtomicWaker; 2],
    /// Connections closed by admission, per port and [`Closed`].
    closed: [[AtomicU64; 4]; 2],
    /// Failed accepts (out of descriptors), per port.
    accept_failures: [AtomicU64; 2],
}

impl Descriptors {
    /// The budget the node's admission settings and the process's open-file limit
    /// allow; a warning when the limit holds a node that accepts connections below
    /// `max_connections`.
    pub(crate) fn new(config: &NodeConfig) -> Arc<Self> {
        let accepts = config.listen.is_some() || config.admin.is_some();
        Self::within(&config.admission, open_file_limits().0, accepts)
    }

    fn within(config: &AdmissionConfig, soft_limit: Option<u64>, warn: bool) -> Arc<Self> {
        let mut limit = config.max_connections.max(1);
        if let Some(soft) = soft_limit {
            let allowed = connections_within(soft);
            if allowed < limit && warn {
                tracing::warn!(
                    soft_limit = soft,
                    max_connections = config.max_connections,
                    connections = allowed,
                    "the open-file limit is low: the node holds at most {allowed} connections \
                     (the rest of its {soft} descriptors are kept for its own sockets and \
                     files); raise the limit (ulimit -n, systemd's LimitNOFILE=) to allow \
                     max_connections"
                );
            }
            limit = limit.min(allowed);
        }
        let admin_limit = config.max_admin_connections.min(limit / 4).max(1);
        Arc::new(Self {
            limit,
            admin_limit,
            soft_limit,
            open: Default::default(),
            conns: Mutex::new(Vec::new()),
            waiting: Default::default(),
            closed: Default::default(),
            accept_failures: Default::default(),
        })
    }

    /// Most connections open at once on `port` (the whole budget for the session port).
    pub(crate) fn limit_of(&self, port: Port) -> usize {
        match port {
            Port::Session => self.limit,
            Port::Admin => self.admin_limit,
        }
    }

    /// Connections open on `port` now.
    pub(crate) fn open_on(&self, port: Port) -> usize {
        self.open[port.index()].load(Ordering::Acquire)
    }

    fn total(&self) -> usize {
        Port::ALL.iter().map(|p| self.open_on(*p)).sum()
    }

    /// Whether `port` may accept one more connection now: its places, and the node's,
    /// are at most one over their limit once it is accepted.
    fn has_room(&self, port: Port) -> bool {
        self.total() <= self.limit && self.open_on(port) <= self.limit_of(port)
    }

    fn count(&self, port: Port, closed: Closed) {
        self.closed[port.index()][closed.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection of `port` was closed without a whole request head in time.
    pub(crate) fn header_timed_out(&self, port: Port) {
        self.count(port, Closed::HeaderTimeout);
    }

    /// Closes the open connection that has carried nothing for longest, on `only` if
    /// given, else on any port.
    fn evict_idlest(&self, only: Option<Port>) -> bool {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|(_, c)| c.strong_count() > 0);
        let idlest = conns
            .iter()
            .filter(|(port, _)| only.is_none_or(|only| only == *port))
            .filter_map(|(port, c)| Some((*port, c.upgrade()?)))
            .filter(|(_, c)| !c.evicted.load(Ordering::Acquire))
            .filter_map(|(port, c)| Some((c.idle_since()?, port, c)))
            .min_by_key(|(since, _, _)| *since);
        let Some((_, port, conn)) = idlest else {
            return false;
        };
        // Marked under the lock: the other port's accept loop cannot pick it too.
        conn.evicted.store(true, Ordering::Release);
        drop(conns);
        conn.reader.wake();
        self.count(port, Closed::Evicted);
        true
    }

    fn remember(&self, port: Port, state: &Arc<ConnState>) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        // Forget closed connections now and then, not only at the limit: a node that
        // never reaches it would otherwise keep one entry per connection ever accepted.
        if conns.len() >= 2 * self.limit.max(64) {
            conns.retain(|(_, c)| c.strong_count() > 0);
        }
        conns.push((port, Arc::downgrade(state)));
    }

    /// The budget in Prometheus' text format: open connections and limits per port,
    /// connections closed by admission, failed accepts, the open-file limit.
    pub(crate) fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP duologue_connections Connections open, by port (one descriptor budget).\n\
             # TYPE duologue_connections gauge"
        );
        for port in Port::ALL {
            let _ = writeln!(
                out,
                "duologue_connections{{port=\"{}\"}} {}",
                port.as_str(),
                self.open_on(port)
            );
        }
        let _ = writeln!(
            out,
            "# HELP duologue_connection_limit Most connections open at once: all ports \
             together (port=\"all\"), and the admin port's own cap.\n\
             # TYPE duologue_connection_limit gauge\n\
             duologue_connection_limit{{port=\"all\"}} {}\n\
             duologue_connection_limit{{port=\"admin\"}} {}",
            self.limit, self.admin_limit
        );
        let _ = writeln!(
            out,
            "# HELP duologue_connections_closed_total Connections closed by admission, by \
             port and reason (evicted: to make room; refused: at once, all others busy; \
             idle: the idle timeout; header_timeout: no request head in time).\n\
             # TYPE duologue_connections_closed_total counter"
        );
        for port in Port::ALL {
            for closed in Closed::ALL {
                let _ = writeln!(
                    out,
                    "duologue_connections_closed_total{{port=\"{}\",reason=\"{}\"}} {}",
                    port.as_str(),
                    closed.as_str(),
                    self.closed[port.index()][closed.index()].load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP duologue_accept_failures_total Failed accepts (out of descriptors), by port.\n\
             # TYPE duologue_accept_failures_total counter"
        );
        for port in Port::ALL {
            let _ = writeln!(
                out,
                "duologue_accept_failures_total{{port=\"{}\"}} {}",
                port.as_str(),
                self.accept_failures[port.index()].load(Ordering::Relaxed)
            );
        }
        if let Some(soft) = self.soft_limit {
            let _ = writeln!(
                out,
                "# HELP duologue_open_files_limit The soft open-file limit the connection \
                 budget was derived from.\n\
                 # TYPE duologue_open_files_limit gauge\n\
                 duologue_open_files_limit {soft}"
            );
        }
    }
}

/// Accepted connections of one port, as tonic's `serve_with_incoming` takes them (and
/// the admin server's accept loop). Never yields an error: a failed accept is logged and
/// waited out here.
pub(crate) struct Admission {
    listener: TcpListener,
    port: Port,
    idle_timeout: Duration,
    budget: Arc<Descriptors>,
    backoff: Option<(Duration, Pin<Box<Sleep>>)>,
    /// Waiting for a displaced connection to close, at most until then.
    room_wait: Option<Pin<Box<Sleep>>>,
    accept_errors: LogBudget,
    over_limit: LogBudget,
    made_room: LogBudget,
}

impl Admission {
    pub(crate) fn new(
        listener: TcpListener,
        port: Port,
        idle_timeout: Duration,
        budget: Arc<Descriptors>,
    ) -> Self {
        Self {
            listener,
            port,
            idle_timeout,
            budget,
            backoff: None,
            room_wait: None,
            accept_errors: LogBudget::new(),
            over_limit: LogBudget::new(),
            made_room: LogBudget::new(),
        }
    }

    fn admit(&mut self, stream: TcpStream, remote: SocketAddr) -> Option<Conn> {
        let budget = &self.budget;
        let port = self.port;
        let on_port = budget.open[port.index()].fetch_add(1, Ordering::AcqRel) + 1;
        let slot = OpenSlot {
            budget: budget.clone(),
            port,
        };
        let total = budget.total();
        let over_port = on_port > budget.limit_of(port);
        if over_port || total > budget.limit {
            // An admin connection never takes a session connection's place.
            let only = (port == Port::Admin).then_some(Port::Admin);
            let limit = if over_port {
                budget.limit_of(port)
            } else {
                budget.limit
            };
            if !budget.evict_idlest(only) {
                budget.count(port, Closed::Refused);
                if let Verdict::Log { suppressed } =
                    self.over_limit.admit(std::time::Instant::now())
                {
                    tracing::warn!(
                        port = port.as_str(),
                        %remote,
                        limit,
                        suppressed,
                        "connection limit reached, every connection carries a stream; closing the new one"
                    );
                }
                return None;
            }
            if let Verdict::Log { suppressed } = self.made_room.admit(std::time::Instant::now()) {
                tracing::warn!(
                    port = port.as_str(),
                    %remote,
                    limit,
                    suppressed,
                    "connection limit reached; closing the connection idle for longest to make room"
                );
            }
        }
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let info = ConnInfo {
            remote,
            state: Arc::new(ConnState {
                streams: AtomicUsize::new(0),
                idle_since: Mutex::new(Some(Instant::now())),
                pending: Mutex::new(Pending::default()),
                evicted: AtomicBool::new(false),
                reader: AtomicWaker::new(),
            }),
        };
        budget.remember(port, &info.state);
        Some(Conn {
            stream,
            idle_timeout: self.idle_timeout,
            idle: Box::pin(tokio::time::sleep(self.idle_timeout)),
            closed_idle: false,
            info,
            slot,
        })
    }

    /// Ready when the port may accept again: its place and the node's are free, or the
    /// connection displaced last has not closed within [`ROOM_WAIT_MAX`].
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let waker = &self.budget.waiting[self.port.index()];
        waker.register(cx.waker());
        if self.budget.has_room(self.port) {
            self.room_wait = None;
            return Poll::Ready(());
        }
        let wait = self
            .room_wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(ROOM_WAIT_MAX)));
        ready!(wait.as_mut().poll(cx));
        tracing::debug!(
            port = self.port.as_str(),
            "a displaced connection is slow to close; accepting all the same"
        );
        self.room_wait = None;
        Poll::Ready(())
    }
}

impl Stream for Admission {
    type Item = Result<Conn, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some((_, sleep)) = &mut this.backoff {
                ready!(sleep.as_mut().poll(cx));
            }
            ready!(this.poll_room(cx));
            match ready!(this.listener.poll_accept(cx)) {
                Ok((stream, remote)) => {
                    this.backoff = None;
                    if let Some(conn) = this.admit(stream, remote) {
                        return Poll::Ready(Some(Ok(conn)));
                    }
                }
                Err(error) if is_per_connection(&error) => {
                    tracing::debug!(%error, "a connection failed before it was accepted");
                }
                Err(error) => {
                    this.budget.accept_failures[this.port.index()].fetch_add(1, Ordering::Relaxed);
                    let pause = this
                        .backoff
                        .as_ref()
                        .map_or(ACCEPT_BACKOFF_MIN, |(last, _)| *last * 2)
                        .min(ACCEPT_BACKOFF_MAX);
                    if let Verdict::Log { suppressed } =
                        this.accept_errors.admit(std::time::Instant::now())
                    {
                        tracing::warn!(port = this.port.as_str(), %error, ?pause, suppressed, "accept failed; pausing");
                    }
                    this.backoff = Some((pause, Box::pin(tokio::time::sleep(pause))));
                }
            }
        }
    }
}

/// Errors of one connection that `accept` reports, which say nothing of the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One open connection's place in the node's [`Descriptors`].
struct OpenSlot {
    budget: Arc<Descriptors>,
    port: Port,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.budget.open[self.port.index()].fetch_sub(1, Ordering::AcqRel);
        for waiting in &self.budget.waiting {
            waiting.wake();
        }
    }
}

/// What the node knows of one accepted connection; every request on it carries this in
/// its extensions (under TLS, inside tonic's `TlsConnectInfo`).
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    pub(crate) remote: SocketAddr,
    pub(crate) state: Arc<ConnState>,
}

/// A connection's live streams, shared by the streams and the connection's idle check.
#[derive(Debug)]
pub(crate) struct ConnState {
    streams: AtomicUsize,
    /// When the last stream ended (or the connection was accepted); `None` while a
    /// stream is open.
    idle_since: Mutex<Option<Instant>>,
    /// The connection's unauthenticated streams.
    pending: Mutex<Pending>,
    /// Closed to make room for a new connection.
    evicted: AtomicBool,
    /// The connection's reader, woken to close it.
    reader: AtomicWaker,
}

impl ConnState {
    /// Counts a stream open on this connection until the guard drops.
    pub(crate) fn stream_opened(self: &Arc<Self>) -> StreamOnConn {
        if self.streams.fetch_add(1, Ordering::AcqRel) == 0 {
            *self.idle_since.lock().expect("idle lock") = None;
        }
        StreamOnConn(self.clone())
    }

    /// Counts an unauthenticated stream on this connection, until the place drops: at
    /// most `max` on the connection, and a connection with any holds one of
    /// `connections` (the node's connections with unauthenticated streams).
    pub(crate) fn pending_stream(
        self: &Arc<Self>,
        max: usize,
        connections: &Arc<Semaphore>,
    ) -> Result<PendingPlace, PendingRefusal> {
        let mut pending = self.pending.lock().expect("pending lock");
        if pending.streams >= max {
            return Err(PendingRefusal::Connection);
        }
        if pending.streams == 0 {
            let slot = connections
                .clone()
                .try_acquire_owned()
                .map_err(|_| PendingRefusal::Connections)?;
            pending.node_slot = Some(slot);
        }
        pending.streams += 1;
        Ok(PendingPlace(self.clone()))
    }

    /// Since when the connection has carried no stream, if it carries none now.
    fn idle_since(&self) -> Option<Instant> {
        *self.idle_since.lock().expect("idle lock")
    }
}

/// A connection's unauthenticated streams, and its place among the node's connections
/// that have any.
#[derive(Debug, Default)]
struct Pending {
    streams: usize,
    node_slot: Option<OwnedSemaphorePermit>,
}

/// Why an unauthenticated stream found no place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PendingRefusal {
    /// Its connection has as many as it may.
    Connection,
    /// As many connections as may have unauthenticated streams have some.
    Connections,
}

/// An unauthenticated stream's place on its connection.
#[derive(Debug)]
pub(crate) struct PendingPlace(Arc<ConnState>);

impl Drop for PendingPlace {
    fn drop(&mut self) {
        let mut pending = self.0.pending.lock().expect("pending lock");
        pending.streams -= 1;
        if pending.streams == 0 {
            pending.node_slot = None;
        }
    }
}

/// A stream's place on its connection: while any is alive, the connection is not idle.
#[derive(Debug)]
pub(crate) struct StreamOnConn(Arc<ConnState>);

impl Drop for StreamOnConn {
    fn drop(&mut self) {
        let mut idle_since = self.0.idle_since.lock().expect("idle lock");
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            *idle_since = Some(Instant::now());
        }
    }
}

/// An accepted connection. Its reads fail with `TimedOut` once it has carried no stream
/// for the idle timeout, which makes hyper close it.
pub(crate) struct Conn {
    stream: TcpStream,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    /// Closed by the idle timeout (counted once).
    closed_idle: bool,
    info: ConnInfo,
    slot: OpenSlot,
}

impl Conn {
    /// What the node knows of the connection.
    pub(crate) fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// The local address the peer reached.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Whether the connection has been idle too long; if not, sets the check for the
    /// next moment it could be.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle.as_mut().poll(cx).is_ready() {
            let next = match self.info.state.idle_since() {
                Some(since) if since + self.idle_timeout <= Instant::now() => return true,
                Some(since) => since + self.idle_timeout,
                // Busy: look again one timeout from now.
                None => Instant::now() + self.idle_timeout,
            };
            self.idle.as_mut().reset(next);
        }
        false
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.info.state.reader.register(cx.waker());
        if this.info.state.evicted.load(Ordering::Acquire) {
            tracing::debug!(remote = %this.info.remote, "closing an idle connection to make room");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room: the connection limit was reached",
            )));
        }
        if this.idle_expired(cx) {
            if !std::mem::replace(&mut this.closed_idle, true) {
                this.slot.budget.count(this.slot.port, Closed::Idle);
            }
            tracing::debug!(remote = %this.info.remote, "closing a connection idle for {:?}", this.idle_timeout);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle: no stream",
            )));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    async fn port(budget: &Arc<Descriptors>, port: Port) -> (Admission, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (Admission::new(listener, port, IDLE, budget.clone()), addr)
    }

    /// Whether the admission closed `conn` (its next read fails at once).
    async fn closed(conn: &mut Conn) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(200), conn.read(&mut buf)).await,
            Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn closed_connections_are_forgotten_below_the_limit() {
        let config = AdmissionConfig {
            max_connections: 64,
            ..AdmissionConfig::default()
        };
        let budget = Descriptors::within(&config, None, true);
        let (mut admission, addr) = port(&budget, Port::Session).await;
        for _ in 0..300 {
            let client = TcpStream::connect(addr).await.unwrap();
            let conn = admission.next().await.unwrap().unwrap();
            drop((conn, client));
        }
        assert_eq!(budget.total(), 0);
        let remembered = budget.conns.lock().unwrap().len();
        assert!(remembered <= 128, "{remembered} remembered");
    }

    #[test]
    fn the_budget_keeps_a_reserve_of_the_open_file_limit() {
        let config = AdmissionConfig::default();
        // 1 024 connections under a limit of 1 024 descriptors: `accept` failed with
        // EMFILE before the limit could act.
        let budget = Descriptors::within(&config, Some(1024), true);
        assert_eq!(budget.limit, 768);
        assert_eq!(budget.limit_of(Port::Admin), 32);
        let budget = Descriptors::within(&config, Some(256), true);
        assert_eq!(budget.limit, 192);
        let budget = Descriptors::within(&config, Some(64), true);
        assert_eq!(budget.limit, 32);
        assert_eq!(budget.limit_of(Port::Admin), 8);
        // A high limit leaves max_connections as it is.
        let budget = Descriptors::within(&config, Some(1 << 20), true);
        assert_eq!(budget.limit, config.max_connections);
        assert_eq!(Descriptors::within(&config, None, true).limit, 1024);
    }

    #[tokio::test]
    async fn the_session_port_takes_idle_admin_places_and_never_the_reverse() {
        let config = AdmissionConfig {
            max_connections: 8,
            max_admin_connections: 2,
            ..AdmissionConfig::default()
        };
        let budget = Descriptors::within(&config, None, true);
        assert_eq!(budget.limit_of(Port::Admin), 2);
        let (mut sessions, session_addr) = port(&budget, Port::Session).await;
        let (mut admin, admin_addr) = port(&budget, Port::Admin).await;
        let mut clients = Vec::new();
        // Three silent admin connections: the third takes the first's place.
        let mut admin_conns = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(admin_addr).await.unwrap());
            admin_conns.push(admin.next().await.unwrap().unwrap());
        }
        assert!(closed(&mut admin_conns[0]).await);
        drop(admin_conns.remove(0));
        assert_eq!(budget.open_on(Port::Admin), 2);
        // Six busy session connections fill the node's 8 places with the two admin ones.
        let mut session_conns = Vec::new();
        let mut busy = Vec::new();
        for _ in 0..6 {
            clients.push(TcpStream::connect(session_addr).await.unwrap());
            let conn = sessions.next().await.unwrap().unwrap();
            busy.push(conn.info().state.stream_opened());
            session_conns.push(conn);
        }
        // One more session connection: an idle admin connection makes room.
        clients.push(TcpStream::connect(session_addr).await.unwrap());
        session_conns.push(sessions.next().await.unwrap().unwrap());
        assert!(
            closed(&mut admin_conns[0]).await,
            "the idlest admin connection stays"
        );
        drop(admin_conns.remove(0));
        assert_eq!(budget.total(), 8);
        // The last admin connection is busy; every session connection too: a new admin
        // connection is closed at once, it takes no session's place.
        let _request = admin_conns[0].info().state.stream_opened();
        busy.push(session_conns[6].info().state.stream_opened());
        let mut late = TcpStream::connect(admin_addr).await.unwrap();
        let accepted = tokio::time::timeout(Duration::from_millis(300), admin.next()).await;
        assert!(accepted.is_err(), "an admin connection was let in");
        let mut sink = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), late.read_to_end(&mut sink)).await;
        assert!(ended.is_ok(), "the refused admin connection was left open");
        for conn in &mut session_conns {
            assert!(!closed(conn).await, "a session connection was closed");
        }
        assert_eq!(
            budget.closed[Port::Admin.index()][Closed::Refused.index()].load(Ordering::Relaxed),
            1
        );
        assert_eq!(
            budget.closed[Port::Admin.index()][Closed::Evicted.index()].load(Ordering::Relaxed),
            2
        );
    }
}
