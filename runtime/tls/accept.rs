//! The TLS handshakes a node accepts, done here rather than inside tonic: tonic drops a
//! failed handshake with a debug line, and a node must count what it refused and say
//! it, within a log budget (a scanner, an expired client certificate, a client without
//! one, a stranger that opens and waits).
//!
//! [`TlsAccept::incoming`] turns a stream of admitted connections into one of TLS
//! streams: handshakes run side by side, each bounded by the handshake timeout, and a
//! failed one is counted by [`TlsRefusal`] in [`TlsRefusals`] and dropped.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use crate::log_budget::LogBudget;

/// Why a TLS handshake was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsRefusal {
    /// It did not finish within the handshake timeout.
    TimedOut,
    /// The client closed the connection before the handshake finished.
    Abandoned,
    /// What came was not TLS (plaintext HTTP/2, a scanner's probe).
    NotTls,
    /// Mutual TLS: the client presented no certificate.
    NoClientCertificate,
    /// Mutual TLS: the client's certificate is not from the client CA, expired, or
    /// otherwise invalid.
    ClientCertificateRefused,
    /// No protocol version or cipher suite in common, or any other failure.
    Other,
}

impl TlsRefusal {
    /// Every reason.
    pub const ALL: [Self; 6] = [
        Self::TimedOut,
        Self::Abandoned,
        Self::NotTls,
        Self::NoClientCertificate,
        Self::ClientCertificateRefused,
        Self::Other,
    ];

    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TimedOut => "timed_out",
            Self::Abandoned => "abandoned",
            Self::NotTls => "not_tls",
            Self::NoClientCertificate => "no_client_certificate",
            Self::ClientCertificateRefused => "client_certificate_refused",
            Self::Other => "other",
        }
    }

    /// The reason for a handshake that failed with `error`.
    fn of(error: &std::io::Error) -> Self {
        use rustls::Error as Tls;
        if let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Tls>()) {
            return match tls {
                Tls::NoCertificatesPresented => Self::NoClientCertificate,
                Tls::InvalidCertificate(_) => Self::ClientCertificateRefused,
                Tls::InvalidMessage(_) => Self::NotTls,
                _ => Self::Other,
            };
        }
        match error.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => Self::Abandoned,
            std::io::ErrorKind::InvalidData => Self::NotTls,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for TlsRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS handshakes a node refused on one port for one reason, since it started
/// ([`crate::status::NodeStatus::tls_refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsRefused {
    /// `"session"` or `"admin"`.
    pub port: &'static str,
    /// Why.
    pub reason: TlsRefusal,
    /// How many.
    pub count: u64,
}

/// The TLS handshakes each port of a node refused.
#[derive(Debug, Default)]
pub(crate) struct TlsRefusedByPort {
    pub(crate) session: Arc<TlsRefusals>,
    pub(crate) admin: Arc<TlsRefusals>,
}

impl TlsRefusedByPort {
    /// Every port's count for every reason.
    pub(crate) fn all(&self) -> Vec<TlsRefused> {
        [("session", &self.session), ("admin", &self.admin)]
            .into_iter()
            .flat_map(|(port, refusals)| {
                TlsRefusal::ALL
                    .into_iter()
                    .zip(refusals.counts())
                    .map(move |(reason, count)| TlsRefused {
                        port,
                        reason,
                        count,
                    })
            })
            .collect()
    }
}

/// The TLS handshakes a port refused, by reason, since the node started.
#[derive(Debug, Default)]
pub(crate) struct TlsRefusals {
    counts: [AtomicU64; TlsRefusal::ALL.len()],
    log: LogBudget,
}

impl TlsRefusals {
    /// The counts, in the order of [`TlsRefusal::ALL`].
    pub(crate) fn counts(&self) -> [u64; TlsRefusal::ALL.len()] {
        std::array::from_fn(|at| self.counts[at].load(Ordering::Relaxed))
    }

    fn refused(&self, port: &str, from: Option<SocketAddr>, reason: TlsRefusal, detail: &str) {
        let at = TlsRefusal::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(TlsRefusal::ALL.len() - 1);
        self.counts[at].fetch_add(1, Ordering::Relaxed);
        self.log.log(|not_logged_since_last_line| {
            tracing::warn!(
                port,
                from = %from.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                %reason,
                %detail,
                not_logged_since_last_line,
                "refused a TLS handshake"
            );
        });
    }
}

/// A port's TLS: its configuration, the bound on a handshake, and where refusals are
/// counted.
#[derive(Clone)]
pub(crate) struct TlsAccept {
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
    port: &'static str,
    refusals: Arc<TlsRefusals>,
}

impl fmt::Debug for TlsAccept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAccept")
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TlsAccept {
    /// Handshakes on `port` ("session", "admin") with `config`, each bounded by
    /// `timeout`, refusals counted in `refusals`.
    pub(crate) fn new(
        config: Arc<rustls::ServerConfig>,
        timeout: Duration,
        port: &'static str,
        refusals: Arc<TlsRefusals>,
    ) -> Self {
        Self {
            config,
            timeout,
            port,
            refusals,
        }
    }

    /// The TLS stream over `io` (from `from`), or `None` once the refusal is counted.
    pub(crate) async fn accept<IO>(&self, io: IO, from: Option<SocketAddr>) -> Option<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        match tokio::time::timeout(self.timeout, acceptor.accept(io)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(error)) => {
                let reason = TlsRefusal::of(&error);
                self.refusals
                    .refused(self.port, from, reason, &error.to_string());
                None
            }
            Err(_) => {
                let detail = format!("no handshake within {:?}", self.timeout);
                self.refusals
                    .refused(self.port, from, TlsRefusal::TimedOut, &detail);
                None
            }
        }
    }

    /// The connections of `incoming` that finish a TLS handshake, up to `at_once`
    /// handshakes side by side (more wait for one to end; the admission that feeds
    /// `incoming` bounds how many connections are open at all). `peer` says where a
    /// connection comes from. Errors of `incoming` pass through.
    pub(crate) fn incoming<S, IO, E>(
        self,
        incoming: S,
        at_once: usize,
        peer: fn(&IO) -> Option<SocketAddr>,
    ) -> impl Stream<Item = Result<TlsStream<IO>, E>>
    where
        S: Stream<Item = Result<IO, E>>,
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        incoming
            .map(move |accepted| {
                let tls = self.clone();
                async move {
                    match accepted {
                        Ok(io) => {
                            let from = peer(&io);
                            tls.accept(io, from).await.map(Ok)
                        }
                        Err(error) => Some(Err(error)),
                    }
                }
            })
            .buffer_unordered(at_once.max(1))
            .filter_map(std::future::ready)
    }
}
