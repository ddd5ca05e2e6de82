//! The connections a node accepts, under its [`AdmissionConfig`]: at most so many open
//! at once, each closed when it has carried no stream for the idle timeout, and accept
//! errors (out of file descriptors) backed off instead of retried in a spin.
//!
//! At the limit, a new connection takes the place of the open one that has carried no
//! stream for longest, if there is one: silent sockets cannot keep a peer that talks
//! out. Only when every open connection carries a stream is the new one closed.
//!
//! tonic's own `TcpIncoming` has none of the three: it retries a failing `accept` at
//! once, forever, without a word.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicUsize, Ordering};
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

use crate::config::AdmissionConfig;
use crate::log_budget::{LogBudget, LogVerdict as Verdict};

/// The first pause after a failed `accept`; doubles per failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause after a failed `accept`.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepted connections, as tonic's `serve_with_incoming` takes them. Never yields an
/// error: a failed accept is logged and waited out here.
pub(crate) struct Admission {
    listener: TcpListener,
    config: AdmissionConfig,
    open: Arc<AtomicUsize>,
    /// Every connection accepted, to find an idle one to close at the limit (pruned of
    /// closed ones as it is searched).
    conns: Vec<Weak<ConnState>>,
    backoff: Option<(Duration, Pin<Box<Sleep>>)>,
    accept_errors: LogBudget,
    over_limit: LogBudget,
}

impl Admission {
    pub(crate) fn new(listener: TcpListener, config: AdmissionConfig) -> Self {
        Self {
            listener,
            config,
            open: Arc::new(AtomicUsize::new(0)),
            conns: Vec::new(),
            backoff: None,
            accept_errors: LogBudget::new(),
            over_limit: LogBudget::new(),
        }
    }

    fn admit(&mut self, stream: TcpStream, remote: SocketAddr) -> Option<Conn> {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = OpenSlot(self.open.clone());
        if open > self.config.max_connections && !self.evict_idlest() {
            if let Verdict::Log { suppressed } = self.over_limit.admit(std::time::Instant::now()) {
                tracing::warn!(
                    %remote,
                    limit = self.config.max_connections,
                    suppressed,
                    "connection limit reached, every connection carries a stream; closing the new one"
                );
            }
            return None;
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
        // Forget closed connections now and then, not only at the limit: a node that
        // never reaches it would otherwise keep one entry per connection ever accepted.
        if self.conns.len() >= 2 * self.config.max_connections.max(64) {
            self.conns.retain(|c| c.strong_count() > 0);
        }
        self.conns.push(Arc::downgrade(&info.state));
        Some(Conn {
            stream,
            idle_timeout: self.config.connection_idle_timeout,
            idle: Box::pin(tokio::time::sleep(self.config.connection_idle_timeout)),
            info,
            _slot: slot,
        })
    }
}

impl Admission {
    /// Closes the open connection that has carried no stream for longest, if any.
    fn evict_idlest(&mut self) -> bool {
        self.conns.retain(|c| c.strong_count() > 0);
        let idlest = self
            .conns
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| !c.evicted.load(Ordering::Acquire))
            .filter_map(|c| Some((c.idle_since()?, c)))
            .min_by_key(|(since, _)| *since);
        let Some((_, conn)) = idlest else {
            return false;
        };
        conn.evicted.store(true, Ordering::Release);
        conn.reader.wake();
        true
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
                    let pause = this
                        .backoff
                        .as_ref()
                        .map_or(ACCEPT_BACKOFF_MIN, |(last, _)| *last * 2)
                        .min(ACCEPT_BACKOFF_MAX);
                    if let Verdict::Log { suppressed } =
                        this.accept_errors.admit(std::time::Instant::now())
                    {
                        tracing::warn!(%error, ?pause, suppressed, "accept failed; pausing");
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

/// One open connection's place under [`AdmissionConfig::max_connections`].
struct OpenSlot(Arc<AtomicUsize>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
    info: ConnInfo,
    _slot: OpenSlot,
}

impl Conn {
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

    use super::*;

    #[tokio::test]
    async fn closed_connections_are_forgotten_below_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = AdmissionConfig {
            max_connections: 64,
            ..AdmissionConfig::default()
        };
        let mut admission = Admission::new(listener, config);
        for _ in 0..300 {
            let client = TcpStream::connect(addr).await.unwrap();
            let conn = admission.next().await.unwrap().unwrap();
            drop((conn, client));
        }
        assert_eq!(admission.open.load(Ordering::Acquire), 0);
        assert!(
            admission.conns.len() <= 128,
            "{} remembered",
            admission.conns.len()
        );
    }
}
