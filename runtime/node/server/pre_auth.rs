//! Streams before authentication: how many may be open, and what each may send, under
//! the node's [`AdmissionConfig`].
//!
//! A layer in front of the gRPC service gives every stream a [`StreamTicket`]: a place
//! among the node's and its connection's unauthenticated streams (refused with
//! `UNAVAILABLE` when there is none), and a watch on its request body that refuses a
//! message longer than the pre-authentication limit as soon as its length prefix
//! arrives, and more bytes than the pre-authentication budget in total. The session's
//! driver (or the resume gate) calls [`StreamTicket::authenticated`] once the peer has
//! proven the secret; from then on the stream is limited only as any session is.
//!
//! Streams of the standard services (health, reflection: see `standard.rs`) never
//! authenticate. By request path, they take a place under a cap of their own instead
//! ([`AdmissionConfig::max_standard_streams`]), held until their response ends, and
//! their bodies are watched as an unauthenticated stream's for their whole life.
//!
//! tonic checks a message's length against the (large) message limit only, and reserves
//! the declared length before the bytes arrive; these checks run before that.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Either, Ready};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TlsConnectInfo;

use super::admission::{ConnInfo, PendingPlace, PendingRefusal, StreamOnConn};
use super::standard::is_standard_path;
use crate::config::AdmissionConfig;
use crate::log_budget::{LogBudget, LogVerdict as Verdict};

/// The length of a gRPC message's prefix: a compression flag and a big-endian `u32`.
const PREFIX_LEN: usize = 5;

/// Wraps the node's gRPC routes (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct PreAuthLayer {
    limits: Arc<Limits>,
}

#[derive(Debug)]
struct Limits {
    config: AdmissionConfig,
    /// The node's unauthenticated streams.
    node: Arc<Semaphore>,
    /// The node's connections with unauthenticated streams.
    connections: Arc<Semaphore>,
    /// The node's streams of the standard services.
    standard: StandardPlaces,
    refusals: LogBudget,
}

/// The node's places for streams of the standard services, shared with the node, which
/// counts those in use in its bookkeeping and is told when one is given back.
#[derive(Clone, Debug)]
pub(crate) struct StandardPlaces {
    places: Arc<Semaphore>,
    max: usize,
    given_back: Arc<Notify>,
}

impl StandardPlaces {
    /// `max` places; `given_back` is told whenever a stream gives its place back.
    pub(crate) fn new(max: usize, given_back: Arc<Notify>) -> Self {
        Self {
            places: Arc::new(Semaphore::new(max)),
            max,
            given_back,
        }
    }

    /// Places held now.
    pub(crate) fn in_use(&self) -> usize {
        self.max - self.places.available_permits()
    }
}

impl PreAuthLayer {
    pub(crate) fn new(config: AdmissionConfig, standard: StandardPlaces) -> Self {
        Self {
            limits: Arc::new(Limits {
                node: Arc::new(Semaphore::new(config.max_unauthenticated_streams)),
                connections: Arc::new(Semaphore::new(config.max_unauthenticated_connections)),
                standard,
                config,
                refusals: LogBudget::new(),
            }),
        }
    }
}

impl<S> tower::Layer<S> for PreAuthLayer {
    type Service = PreAuthService<S>;

    fn layer(&self, inner: S) -> PreAuthService<S> {
        PreAuthService {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// The gRPC routes behind the pre-authentication limits.
#[derive(Clone, Debug)]
pub(crate) struct PreAuthService<S> {
    inner: S,
    limits: Arc<Limits>,
}

type Refused<E> = Ready<Result<http::Response<Body>, E>>;

impl<S> tower::Service<http::Request<Body>> for PreAuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    /// Sessions' streams unboxed; the standard services' boxed (they are not the hot
    /// path), as their place goes into the response when it comes.
    type Future = Either<
        Either<S::Future, Refused<S::Error>>,
        BoxFuture<'static, Result<Self::Response, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let refused = |status: Status| {
            Either::Left(Either::Right(futures::future::ready(
                Ok(status.into_http()),
            )))
        };
        let conn = conn_info(request.extensions()).cloned();
        if is_standard_path(request.uri().path()) {
            let place = match self.limits.standard_place(conn.as_ref()) {
                Ok(place) => place,
                Err(status) => return refused(status),
            };
            self.watch_body(&mut request, None, None);
            let on_conn = conn.map(|c| c.state.stream_opened());
            let given_back = self.limits.standard.given_back.clone();
            let response = self.inner.call(request);
            // The place is held until the response ends: a health `Watch` has read its one
            // request long before.
            return Either::Right(
                response
                    .map(|response| {
                        Ok(response?.map(|body| {
                            Body::new(Holding {
                                inner: body,
                                place: Some(place),
                                given_back,
                                _on_conn: on_conn,
                            })
                        }))
                    })
                    .boxed(),
            );
        }
        let ticket = match self.limits.ticket(conn.as_ref()) {
            Ok(ticket) => ticket,
            Err(status) => return refused(status),
        };
        let on_conn = conn.map(|c| c.state.stream_opened());
        self.watch_body(&mut request, Some(ticket.clone()), on_conn);
        request.extensions_mut().insert(ticket);
        Either::Left(Either::Left(self.inner.call(request)))
    }
}

impl<S> PreAuthService<S> {
    /// Watches the body of `request` until `ticket` is authenticated (`None`: for good),
    /// holding `on_conn` as long as the body lives.
    fn watch_body(
        &self,
        request: &mut http::Request<Body>,
        ticket: Option<StreamTicket>,
        on_conn: Option<StreamOnConn>,
    ) {
        let body = std::mem::replace(request.body_mut(), Body::empty());
        *request.body_mut() = Body::new(PreAuthBody {
            inner: body,
            ticket,
            max_message: u64::from(self.limits.config.max_unauthenticated_message_bytes),
            max_bytes: u64::from(self.limits.config.max_unauthenticated_bytes),
            seen: 0,
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            message_left: 0,
            _on_conn: on_conn,
        });
    }
}

impl Limits {
    /// A place among the node's streams of the standard services.
    fn standard_place(&self, conn: Option<&ConnInfo>) -> Result<OwnedSemaphorePermit, Status> {
        let limit = self.config.max_standard_streams;
        self.standard
            .places
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                if let Verdict::Log { suppressed } = self.refusals.admit(Instant::now()) {
                    tracing::warn!(
                        remote = ?conn.map(|c| c.remote),
                        limit,
                        suppressed,
                        "too many health and reflection streams; refusing"
                    );
                }
                Status::unavailable(format!(
                    "too many health and reflection streams on this node (at most {limit}); \
                 try again"
                ))
            })
    }

    fn ticket(&self, conn: Option<&ConnInfo>) -> Result<StreamTicket, Status> {
        let node = self
            .node
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.refused("node", self.config.max_unauthenticated_streams, conn))?;
        let config = &self.config;
        let on_conn = match conn {
            Some(c) => Some(
                c.state
                    .pending_stream(
                        config.max_unauthenticated_streams_per_connection,
                        &self.connections,
                    )
                    .map_err(|refusal| match refusal {
                        PendingRefusal::Connection => self.refused(
                            "connection",
                            config.max_unauthenticated_streams_per_connection,
                            conn,
                        ),
                        PendingRefusal::Connections => self.refused(
                            "node's connections",
                            config.max_unauthenticated_connections,
                            conn,
                        ),
                    })?,
            ),
            None => None,
        };
        Ok(StreamTicket(Arc::new(Ticket {
            authenticated: AtomicBool::new(false),
            places: Mutex::new(Some((node, on_conn))),
        })))
    }

    fn refused(&self, scope: &str, limit: usize, conn: Option<&ConnInfo>) -> Status {
        let what = if scope == "node's connections" {
            "connections with unauthenticated streams"
        } else {
            "unauthenticated streams"
        };
        if let Verdict::Log { suppressed } = self.refusals.admit(Instant::now()) {
            tracing::warn!(
                remote = ?conn.map(|c| c.remote),
                scope,
                limit,
                suppressed,
                "too many unauthenticated streams or connections; refusing"
            );
        }
        Status::unavailable(format!(
            "too many {what} on this {scope} (at most {limit}); try again"
        ))
    }
}

/// The connection a request arrived on, over TLS or not.
pub(crate) fn conn_info(extensions: &http::Extensions) -> Option<&ConnInfo> {
    extensions.get::<ConnInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<ConnInfo>>()
            .map(TlsConnectInfo::get_ref)
    })
}

/// A stream's standing before authentication; in the request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct StreamTicket(Arc<Ticket>);

#[derive(Debug)]
struct Ticket {
    authenticated: AtomicBool,
    /// Its places among the node's and the connection's unauthenticated streams.
    places: Mutex<Option<(OwnedSemaphorePermit, Option<PendingPlace>)>>,
}

impl StreamTicket {
    /// The peer proved the secret on this stream: it leaves the unauthenticated count,
    /// and its body is no longer watched.
    pub(crate) fn authenticated(&self) {
        self.0.authenticated.store(true, Ordering::Release);
        self.0.places.lock().expect("ticket lock").take();
    }

    fn is_authenticated(&self) -> bool {
        self.0.authenticated.load(Ordering::Acquire)
    }
}

/// The response body of a standard service's stream, which holds the stream's places
/// (among the standard streams, and on its connection) until it ends.
struct Holding {
    inner: Body,
    place: Option<OwnedSemaphorePermit>,
    given_back: Arc<Notify>,
    _on_conn: Option<StreamOnConn>,
}

impl Drop for Holding {
    fn drop(&mut self) {
        drop(self.place.take());
        self.given_back.notify_waiters();
    }
}

impl HttpBody for Holding {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body watched until its stream is authenticated.
struct PreAuthBody {
    inner: Body,
    /// `None` for a stream that never authenticates: watched to its end.
    ticket: Option<StreamTicket>,
    max_message: u64,
    max_bytes: u64,
    /// Bytes received so far.
    seen: u64,
    /// The current message's length prefix, as far as it arrived.
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    /// Bytes of the current message still to come after its prefix.
    message_left: u64,
    _on_conn: Option<StreamOnConn>,
}

impl PreAuthBody {
    fn check(&mut self, mut data: &[u8]) -> Result<(), Status> {
        self.seen += data.len() as u64;
        if self.seen > self.max_bytes {
            return Err(Status::resource_exhausted(format!(
                "more than {} bytes sent before authentication",
                self.max_bytes
            )));
        }
        while !data.is_empty() {
            if self.message_left > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.message_left).unwrap_or(usize::MAX));
                self.message_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (PREFIX_LEN - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == PREFIX_LEN {
                let length = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                if u64::from(length) > self.max_message {
                    return Err(Status::resource_exhausted(format!(
                        "a message of {length} bytes before authentication (at most {})",
                        self.max_message
                    )));
                }
                self.message_left = u64::from(length);
                self.prefix_len = 0;
            }
        }
        Ok(())
    }
}

impl HttpBody for PreAuthBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && !this
                .ticket
                .as_ref()
                .is_some_and(StreamTicket::is_authenticated)
        {
            this.check(data)?;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(max_message: u64, max_bytes: u64) -> PreAuthBody {
        PreAuthBody {
            inner: Body::empty(),
            ticket: None,
            max_message,
            max_bytes,
            seen: 0,
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            message_left: 0,
            _on_conn: None,
        }
    }

    fn message(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.resize(PREFIX_LEN + len as usize, 7);
        bytes
    }

    #[test]
    fn small_messages_pass_in_any_split() {
        let mut stream = message(100);
        stream.extend(message(0));
        stream.extend(message(1000));
        for chunk in [1, 2, 5, 7, 4096] {
            let mut b = body(1000, 10_000);
            for piece in stream.chunks(chunk) {
                b.check(piece).unwrap();
            }
            assert_eq!((b.prefix_len, b.message_left), (0, 0));
        }
    }

    #[test]
    fn a_long_message_is_refused_at_its_prefix() {
        let mut b = body(1000, 10_000);
        b.check(&message(10)).unwrap();
        // Only the prefix of a 4 MiB message: refused before any of its bytes.
        let prefix = &message(4 << 20)[..PREFIX_LEN];
        let err = b.check(&prefix[..3]).and_then(|()| b.check(&prefix[3..]));
        let status = err.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("4194304"), "{}", status.message());
    }

    #[test]
    fn many_small_messages_meet_the_byte_budget() {
        let mut b = body(1000, 2000);
        let mut result = Ok(());
        for _ in 0..100 {
            result = b.check(&message(500));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result.unwrap_err().code(), tonic::Code::ResourceExhausted);
        assert!(b.seen <= 2000 + 505);
    }
}
