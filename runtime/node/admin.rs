//! The node's admin address ([`crate::NodeConfig::admin`]): HTTP/1 for the tools
//! operators already run.
//!
//! - `GET /metrics`: the node's metrics in Prometheus' text format.
//! - `GET /status.json`: [`crate::Node::status`] as JSON.
//! - `GET /`: the status page, which reads `/status.json` every second.
//!
//! Its connections are admitted as the session port's are, in the same descriptor
//! budget ([`Descriptors`]): a cap of their own, the idle timeout, and a header read
//! timeout (hyper's, which `axum::serve` does not offer; each connection is served here
//! with hyper's HTTP/1 server). Every request passes the [`Gate`] before the routes: its
//! `Host` must be one this address answers to (DNS rebinding), and with a token, it must
//! carry it. Off the loopback interface the node does not start without a token (and
//! TLS, or `insecure_plaintext`) unless told ([`check_exposure`]).
//!
//! The server lives until the node's shutdown is over (it keeps answering while the node
//! drains, so an operator watches the drain), and holds the node weakly: a node dropped
//! without shutdown takes its admin server with it.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::ops::Ops;
use super::server::admission::{Admission, ConnInfo, Descriptors, Port};
use super::status::{NodeStatus, RatePoint, SessionStatus};
use crate::config::{AdminAccess, AdminToken, NodeConfig};
use crate::error::{AdminGuard, NodeError};
use crate::log_budget::LogBudget;
use crate::session::SessionCounters;
use crate::tls::TlsAccept;

/// The status page: one self-contained file, no script or style from elsewhere.
const PAGE: &str = include_str!("admin/status.html");

/// Largest request head the admin server reads, in bytes (hyper's default is 400 KiB;
/// a browser's cookies for `localhost` still fit).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long a stopped admin server lets requests under way finish (when the node is
/// dropped without a shutdown, which bounds it otherwise).
const DRAIN_AT_MOST: Duration = Duration::from_secs(5);

/// The realm a browser shows when it asks for the token.
const REALM: &str = "duologue admin";

/// Refuses an admin address off the loopback interface that anyone who reaches it
/// could read (every session, member and metric): without a token, or with one that
/// would cross the network in plaintext, unless told ([`AdminAccess::insecure`], or
/// [`NodeConfig::insecure_plaintext`] for the plaintext).
pub(crate) fn check_exposure(config: &NodeConfig) -> Result<(), NodeError> {
    let Some(addr) = config.admin else {
        return Ok(());
    };
    let access = &config.admin_access;
    if addr.ip().is_loopback() || access.insecure {
        return Ok(());
    }
    let refuse = |guard| Err(NodeError::AdminUnguarded { addr, guard });
    if access.token.is_none() {
        return refuse(AdminGuard::Token);
    }
    if access.tls.is_none() && !config.insecure_plaintext {
        return refuse(AdminGuard::Tls);
    }
    Ok(())
}

/// Binds `addr` and serves the admin routes of the node `ops` reads, as `config` says,
/// until `stop` is cancelled; the bound address and the server's task. Its connections
/// count in `descriptors`.
pub(crate) async fn start(
    ops: &Arc<Ops>,
    config: &NodeConfig,
    addr: SocketAddr,
    descriptors: Arc<Descriptors>,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), NodeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::Bind {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|e| NodeError::Bind {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    let gate = Arc::new(Gate::new(&config.admin_access, bound));
    let routes = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/status.json", get(status))
        .with_state(Arc::new(Admin {
            ops: Arc::downgrade(ops),
            descriptors: descriptors.clone(),
            gate: gate.clone(),
        }));
    let server = Arc::new(Server {
        routes,
        gate,
        tls: match &config.admin_access.tls {
            // The handshake is part of the wait for the first request's head.
            Some(tls) => Some(TlsAccept::new(
                tls.admin_config()?,
                config.admission.admin_header_timeout,
                "admin",
                ops.tls_refused.admin.clone(),
            )),
            None => None,
        },
        header_timeout: config.admission.admin_header_timeout,
        descriptors: descriptors.clone(),
        no_head: LogBudget::new(),
    });
    let incoming = Admission::new(
        listener,
        Port::Admin,
        config.admission.connection_idle_timeout,
        descriptors,
    );
    let task = tokio::spawn(server.run(incoming, stop));
    Ok((bound, task))
}

/// What the routes read: the node's figures, the descriptor budget, the gate's counts.
struct Admin {
    ops: Weak<Ops>,
    descriptors: Arc<Descriptors>,
    gate: Arc<Gate>,
}

/// The admin server: how it serves each connection it admits.
struct Server {
    routes: Router,
    gate: Arc<Gate>,
    tls: Option<TlsAccept>,
    header_timeout: Duration,
    /// Where connections closed at the header timeout are counted.
    descriptors: Arc<Descriptors>,
    /// Connections closed with no request head in time: a few lines per window.
    no_head: LogBudget,
}

impl Server {
    /// Serves each admitted connection until `stop`; then lets each finish the request
    /// it is answering (the node's shutdown bounds that, and drops what is left).
    async fn run(self: Arc<Self>, mut incoming: Admission, stop: CancellationToken) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                conn = incoming.next() => match conn {
                    Some(Ok(conn)) => {
                        connections.spawn(self.clone().connection(conn, stop.clone()));
                    }
                    _ => break,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        // The port is free from here. Requests under way are answered, for a while:
        // what is left then is dropped with the set.
        drop(incoming);
        let drained = async { while connections.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(DRAIN_AT_MOST, drained).await;
    }

    async fn connection(
        self: Arc<Self>,
        conn: super::server::admission::Conn,
        stop: CancellationToken,
    ) {
        let info = conn.info().clone();
        let local = conn.local_addr().ok();
        let Some(tls) = &self.tls else {
            return self.serve(conn, info, local, stop).await;
        };
        // A refusal is counted and said by `TlsAccept`, as on the session port.
        if let Some(stream) = tls.accept(conn, Some(info.remote)).await {
            self.serve(stream, info, local, stop).await;
        }
    }

    /// Serves HTTP/1 on `io` until the client goes, its head is late, or `stop`.
    async fn serve<IO>(
        self: Arc<Self>,
        io: IO,
        info: ConnInfo,
        local: Option<SocketAddr>,
        stop: CancellationToken,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let server = self.clone();
        let remote = info.remote;
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            counted.fetch_add(1, Ordering::Relaxed);
            // While a request is answered, the connection is not idle: neither the idle
            // timeout nor a new connection's need for room closes it.
            let busy = info.state.stream_opened();
            let server = server.clone();
            let remote = info.remote;
            async move {
                let response = server.answer(request, remote, local).await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            // The head's own bound: the buffer's is checked only while a head is
            // incomplete, so a head that arrives whole in one read could pass it.
            .max_header_size(MAX_HEAD_BYTES)
            .max_buf_size(MAX_HEAD_BYTES);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        tokio::select! {
            served = connection.as_mut() => {
                match served {
                    // A kept-alive connection whose next request did not come is over;
                    // one that never sent a whole head is a silent or slow client.
                    Err(error) if error.is_timeout() && requests.load(Ordering::Relaxed) == 0 => {
                        self.descriptors.header_timed_out(Port::Admin);
                        self.no_head.log(|suppressed| {
                            tracing::warn!(
                                %remote,
                                timeout = ?self.header_timeout,
                                not_logged_since_last_line = suppressed,
                                "admin connection closed: no request head within the header timeout"
                            );
                        });
                    }
                    Err(error) => tracing::debug!(%error, "admin connection ended"),
                    Ok(()) => {}
                }
                return;
            }
            () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
        }
        let _ = connection.await;
    }

    /// The gate, then the routes.
    async fn answer(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Response {
        if let Err(refusal) = self.gate.check(&request, local.map(|l| l.ip())) {
            self.gate.refused(refusal, remote, &request);
            return refusal.response();
        }
        let mut routes = self.routes.clone();
        match routes.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// Why a request (or a connection) on the admin address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// No `Host` (400).
    NoHost,
    /// A `Host` this address does not answer to (421): DNS rebinding, or a name the
    /// operator did not list.
    UnknownHost,
    /// No token, with one required (401).
    NoToken,
    /// A token that is not the one (401).
    WrongToken,
}

impl Refusal {
    const ALL: [Self; 4] = [
        Self::NoHost,
        Self::UnknownHost,
        Self::NoToken,
        Self::WrongToken,
    ];

    fn index(self) -> usize {
        match self {
            Self::NoHost => 0,
            Self::UnknownHost => 1,
            Self::NoToken => 2,
            Self::WrongToken => 3,
        }
    }

    /// Its label in the metric and the log line.
    fn as_str(self) -> &'static str {
        match self {
            Self::NoHost => "no_host",
            Self::UnknownHost => "unknown_host",
            Self::NoToken => "no_token",
            Self::WrongToken => "wrong_token",
        }
    }

    fn response(self) -> Response {
        let text = |status, body: &'static str| (status, body).into_response();
        match self {
            Self::NoHost => text(StatusCode::BAD_REQUEST, "a Host header is required\n"),
            Self::UnknownHost => text(
                StatusCode::MISDIRECTED_REQUEST,
                "this admin address does not answer to that Host: use its address, \
                 localhost, or a name the node lists (AdminAccess::allowed_hosts)\n",
            ),
            Self::NoToken | Self::WrongToken => {
                let mut response = text(
                    StatusCode::UNAUTHORIZED,
                    "this admin address needs its token\n",
                );
                let headers = response.headers_mut();
                for challenge in [
                    format!("Basic realm=\"{REALM}\", charset=\"UTF-8\""),
                    format!("Bearer realm=\"{REALM}\""),
                ] {
                    if let Ok(value) = HeaderValue::from_str(&challenge) {
                        headers.append(header::WWW_AUTHENTICATE, value);
                    }
                }
                response
            }
        }
    }
}

/// What every admin request passes before the routes: its `Host`, then its token.
struct Gate {
    token: Option<AdminToken>,
    /// Host names (lower case, no port) it answers to beside IP literals of its own
    /// addresses: `localhost` and the operator's.
    names: Vec<String>,
    /// The address it is bound to, when it is one address (not a wildcard).
    bound: Option<IpAddr>,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// One log budget per kind of refusal.
    lines: [LogBudget; Refusal::ALL.len()],
}

impl Gate {
    fn new(access: &AdminAccess, bound: SocketAddr) -> Self {
        let mut names = vec!["localhost".to_owned()];
        names.extend(access.allowed_hosts.iter().map(|h| normal_host(h)));
        Self {
            token: access.token.clone(),
            names,
            bound: (!bound.ip().is_unspecified()).then_some(bound.ip().to_canonical()),
            refused: Default::default(),
            lines: Default::default(),
        }
    }

    /// Whether `request`, which reached the local address `local`, may be answered.
    fn check<B>(&self, request: &Request<B>, local: Option<IpAddr>) -> Result<(), Refusal> {
        let host = host_of(request).ok_or(Refusal::NoHost)?;
        let local = local.map(|ip| ip.to_canonical());
        let known = match host.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            // An address literal cannot be rebound: it must be this server's own.
            Ok(ip) => Some(ip) == local || Some(ip) == self.bound || self.names.contains(&host),
            Err(_) => self.names.contains(&host),
        };
        if !known {
            return Err(Refusal::UnknownHost);
        }
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| presented_token(value.as_bytes()))
            .ok_or(Refusal::NoToken)?;
        if token.matches(&presented) {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        }
    }

    fn count(&self, refusal: Refusal) {
        self.refused[refusal.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused request and logs it within the log budget of its kind.
    fn refused<B>(&self, refusal: Refusal, remote: SocketAddr, request: &Request<B>) {
        self.count(refusal);
        self.lines[refusal.index()].log(|suppressed| {
            let host = request.headers().get(header::HOST).map(|h| {
                String::from_utf8_lossy(h.as_bytes())
                    .chars()
                    .take(80)
                    .collect::<String>()
            });
            tracing::warn!(
                %remote,
                reason = refusal.as_str(),
                host = ?host,
                path = %request.uri().path().chars().take(80).collect::<String>(),
                not_logged_since_last_line = suppressed,
                "admin request refused"
            );
        });
    }

    /// The refusals in Prometheus' text format.
    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP duologue_admin_refused_total Requests and connections the admin address \
             refused, by reason.\n\
             # TYPE duologue_admin_refused_total counter"
        );
        for refusal in Refusal::ALL {
            let _ = writeln!(
                out,
                "duologue_admin_refused_total{{reason=\"{}\"}} {}",
                refusal.as_str(),
                self.refused[refusal.index()].load(Ordering::Relaxed)
            );
        }
    }
}

/// A host as compared: lower case, without brackets or a trailing dot.
fn normal_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.to_ascii_lowercase()
}

/// The host a request names (its `Host`, or the authority of an absolute URI), without
/// its port.
fn host_of<B>(request: &Request<B>) -> Option<String> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let authority = match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().ok()?.parse::<http::uri::Authority>().ok()?,
        // Two say nothing certain.
        (Some(_), Some(_)) => return None,
        (None, _) => request.uri().authority()?.clone(),
    };
    Some(normal_host(authority.host()))
}

/// The token an `Authorization` value carries: `Bearer TOKEN`, or `Basic` with the
/// token as password.
fn presented_token(value: &[u8]) -> Option<Vec<u8>> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(credentials.as_bytes().to_vec())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(credentials)?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        Some(decoded[colon + 1..].to_vec())
    } else {
        None
    }
}

/// Standard base64 with padding (RFC 4648), as HTTP Basic credentials are sent.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) || bytes.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i == bytes.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for c in &chunk[..4 - pad] {
            n = (n << 6) | value(*c)?;
        }
        n <<= 6 * pad as u32;
        let decoded = n.to_be_bytes();
        out.extend_from_slice(&decoded[1..4 - pad]);
    }
    Some(out)
}

type AdminState = State<Arc<Admin>>;

fn gone() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "the node is gone\n").into_response()
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn metrics(State(admin): AdminState) -> Response {
    let Some(ops) = admin.ops.upgrade() else {
        return gone();
    };
    let Some(metrics) = ops.metrics.as_ref() else {
        return gone();
    };
    // Fresh at every scrape, not only as of the last sample.
    metrics.publish(&ops.status(false), true);
    let mut text = metrics.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    // What admission did on every port, and what the admin address refused: counted
    // where they happen, rendered here.
    admin.descriptors.render(&mut text);
    admin.gate.render(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn status(State(admin): AdminState) -> Response {
    let Some(ops) = admin.ops.upgrade() else {
        return gone();
    };
    axum::Json(StatusJson::from(&ops.status(true))).into_response()
}

/// [`NodeStatus`] as the page reads it: plain numbers and strings, seconds as floats.
#[derive(Serialize)]
struct StatusJson {
    node: String,
    incarnation: String,
    addr: Option<String>,
    uptime_secs: f64,
    draining: bool,
    sessions_opened: u64,
    totals: SessionCounters,
    credit_waited_secs: f64,
    sessions: Vec<SessionJson>,
    members: Vec<MemberJson>,
    entities: Vec<EntityKindJson>,
    history: Vec<PointJson>,
}

/// [`crate::status::EntityKindStatus`] as the page reads it.
#[derive(Serialize)]
struct EntityKindJson {
    kind: String,
    shards: u32,
    active: usize,
    started: u64,
    passivated: u64,
    handed_off: u64,
    forwarded: u64,
    waiting: usize,
    refused: u64,
    claims: usize,
    fenced: u64,
}

#[derive(Serialize)]
struct SessionJson {
    id: String,
    role: &'static str,
    peer: String,
    actor: String,
    remote_addr: Option<String>,
    state: &'static str,
    credit: u64,
    send_blocked: bool,
    peer_signal: Option<String>,
    backlog: u64,
    unacked: usize,
    counters: SessionCounters,
    credit_waited_secs: f64,
    messages_in_per_sec: f64,
    messages_out_per_sec: f64,
    age_secs: f64,
}

#[derive(Serialize)]
struct MemberJson {
    name: String,
    addr: Option<String>,
    state: &'static str,
    actors: Vec<String>,
    kinds: Vec<String>,
}

#[derive(Serialize)]
struct PointJson {
    /// Milliseconds since the Unix epoch.
    at_ms: u128,
    messages_in_per_sec: f64,
    messages_out_per_sec: f64,
    sessions: usize,
}

impl From<&NodeStatus> for StatusJson {
    fn from(status: &NodeStatus) -> Self {
        Self {
            node: status.identity.name.clone(),
            incarnation: status.identity.incarnation.to_string(),
            addr: status.addr.map(|a| a.to_string()),
            uptime_secs: status.uptime.as_secs_f64(),
            draining: status.draining,
            sessions_opened: status.sessions_opened,
            totals: status.totals,
            credit_waited_secs: status.credit_waited.as_secs_f64(),
            sessions: status.sessions.iter().map(SessionJson::from).collect(),
            members: status
                .members
                .iter()
                .map(|m| MemberJson {
                    name: m.identity.name.clone(),
                    addr: m.addr.clone(),
                    state: m.state.as_str(),
                    actors: m.actors.iter().map(|a| a.name.clone()).collect(),
                    kinds: m.kinds.clone(),
                })
                .collect(),
            entities: status
                .entities
                .iter()
                .map(|k| EntityKindJson {
                    kind: k.kind.clone(),
                    shards: k.shards,
                    active: k.active,
                    started: k.started,
                    passivated: k.passivated,
                    handed_off: k.handed_off,
                    forwarded: k.forwarded,
                    waiting: k.waiting,
                    refused: k.refused,
                    claims: k.claims,
                    fenced: k.fenced,
                })
                .collect(),
            history: status.history.iter().map(PointJson::from).collect(),
        }
    }
}

impl From<&SessionStatus> for SessionJson {
    fn from(s: &SessionStatus) -> Self {
        Self {
            id: s.id.to_string(),
            role: match s.role {
                crate::session::Role::Initiator => "initiator",
                crate::session::Role::Acceptor => "acceptor",
            },
            peer: s.peer.name.clone(),
            actor: s.actor.clone(),
            remote_addr: s.remote_addr.map(|a| a.to_string()),
            state: s.state.as_str(),
            credit: s.flow.credit,
            send_blocked: s.flow.send_blocked,
            peer_signal: s.flow.peer_signal.map(|p| format!("{p:?}")),
            backlog: s.backlog(),
            unacked: s.unacked,
            counters: s.counters,
            credit_waited_secs: s.credit_waited.as_secs_f64(),
            messages_in_per_sec: s.rate.messages_in,
            messages_out_per_sec: s.rate.messages_out,
            age_secs: s.age.as_secs_f64(),
        }
    }
}

impl From<&RatePoint> for PointJson {
    fn from(p: &RatePoint) -> Self {
        Self {
            at_ms: p
                .at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            messages_in_per_sec: p.rate.messages_in,
            messages_out_per_sec: p.rate.messages_out,
            sessions: p.sessions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: Option<&str>, authorization: Option<&str>) -> Request<()> {
        let mut request = Request::get("/metrics");
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        request.body(()).unwrap()
    }

    #[test]
    fn base64_as_basic_credentials_send_it() {
        assert_eq!(
            base64_decode("dXNlcjpwYXNz").as_deref(),
            Some(&b"user:pass"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        for bad in ["YQ=", "Y===", "YQ==YQ==", "****", "YWJj\n"] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_its_own_addresses_localhost_and_listed_names_are_answered() {
        let access = AdminAccess {
            allowed_hosts: vec!["Metrics.Example.".into(), "[fd00::1]".into()],
            ..AdminAccess::default()
        };
        let gate = Gate::new(&access, "0.0.0.0:9100".parse().unwrap());
        let local = Some("10.1.2.3".parse().unwrap());
        for host in [
            "10.1.2.3:9100",
            "10.1.2.3",
            "localhost:9100",
            "LOCALHOST",
            "metrics.example:443",
            "[fd00::1]:9100",
        ] {
            assert_eq!(
                gate.check(&request(Some(host), None), local),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "evil.example:9100",
            "10.1.2.4:9100",
            "127.0.0.1:9100",
            "localhost.evil.example",
            "metrics.example.evil",
        ] {
            assert_eq!(
                gate.check(&request(Some(host), None), local),
                Err(Refusal::UnknownHost),
                "{host}"
            );
        }
        assert_eq!(
            gate.check(&request(None, None), local),
            Err(Refusal::NoHost)
        );
        assert_eq!(
            gate.check(&request(Some(""), None), local),
            Err(Refusal::NoHost)
        );
        let two = Request::get("/")
            .header(header::HOST, "10.1.2.3")
            .header(header::HOST, "evil.example")
            .body(())
            .unwrap();
        assert_eq!(gate.check(&two, local), Err(Refusal::NoHost));
        // A dual-stack socket sees an IPv4 client at a mapped address.
        let mapped = Some("::ffff:10.1.2.3".parse().unwrap());
        assert_eq!(
            gate.check(&request(Some("10.1.2.3:9100"), None), mapped),
            Ok(())
        );
        // Bound to one address, that address is its own whatever the connection says.
        let gate = Gate::new(&AdminAccess::default(), "127.0.0.1:9100".parse().unwrap());
        assert_eq!(
            gate.check(&request(Some("127.0.0.1:9100"), None), None),
            Ok(())
        );
    }

    #[test]
    fn a_token_is_asked_for_as_bearer_or_basic() {
        let token = "0123456789abcdef0123456789abcdef";
        let access = AdminAccess {
            token: Some(AdminToken::new(token).unwrap()),
            ..AdminAccess::default()
        };
        let gate = Gate::new(&access, "127.0.0.1:9100".parse().unwrap());
        let host = Some("127.0.0.1:9100");
        let check = |authorization: Option<&str>| gate.check(&request(host, authorization), None);
        assert_eq!(check(Some(&format!("Bearer {token}"))), Ok(()));
        assert_eq!(check(Some(&format!("bearer  {token} "))), Ok(()));
        // "anyone:TOKEN"
        let basic = "YW55b25lOjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVm";
        assert_eq!(check(Some(&format!("Basic {basic}"))), Ok(()));
        assert_eq!(check(None), Err(Refusal::NoToken));
        assert_eq!(check(Some("Digest x")), Err(Refusal::NoToken));
        assert_eq!(
            check(Some("Bearer 0123456789abcdef0123456789abcdeF")),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            check(Some(&format!("Bearer {token}x"))),
            Err(Refusal::WrongToken)
        );
        // The host is checked first: a rebinding page is never asked for the token.
        assert_eq!(
            gate.check(&request(Some("evil.example"), None), None),
            Err(Refusal::UnknownHost)
        );
    }

    #[test]
    fn tokens_that_cannot_be_typed_or_guessed_safely_are_refused() {
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new("has a space in it, long enough").is_err());
        assert!(AdminToken::new([0xffu8; 32]).is_err());
        assert!(AdminToken::new("0123456789abcdef").is_ok());
        assert_eq!(
            format!("{:?}", AdminToken::new("0123456789abcdef").unwrap()),
            "AdminToken(..)"
        );
    }

    #[test]
    fn off_loopback_an_admin_address_needs_a_token_and_tls_or_to_be_told() {
        let token = AdminToken::new("0123456789abcdef").unwrap();
        let config = |admin: &str, access: AdminAccess, insecure_plaintext| NodeConfig {
            admin: Some(admin.parse().unwrap()),
            admin_access: access,
            insecure_plaintext,
            ..NodeConfig::default()
        };
        let open = AdminAccess::default();
        let with_token = AdminAccess {
            token: Some(token),
            ..AdminAccess::default()
        };
        let told = AdminAccess {
            insecure: true,
            ..AdminAccess::default()
        };
        assert!(check_exposure(&config("127.0.0.1:0", open.clone(), false)).is_ok());
        assert!(check_exposure(&config("[::1]:0", open.clone(), false)).is_ok());
        for addr in ["0.0.0.0:0", "10.0.0.5:9100", "[::]:0"] {
            let error = check_exposure(&config(addr, open.clone(), false)).unwrap_err();
            assert!(
                matches!(
                    error,
                    NodeError::AdminUnguarded {
                        guard: AdminGuard::Token,
                        ..
                    }
                ),
                "{error}"
            );
            let error = check_exposure(&config(addr, with_token.clone(), false)).unwrap_err();
            assert!(
                matches!(
                    error,
                    NodeError::AdminUnguarded {
                        guard: AdminGuard::Tls,
                        ..
                    }
                ),
                "{error}"
            );
            assert!(check_exposure(&config(addr, with_token.clone(), true)).is_ok());
            assert!(check_exposure(&config(addr, told.clone(), false)).is_ok());
        }
    }
}
