//! The node's admin address ([`crate::NodeConfig::admin`]): plain HTTP/1 for the tools
//! operators already run.
//!
//! - `GET /metrics`: the node's metrics in Prometheus' text format.
//! - `GET /status.json`: [`crate::Node::status`] as JSON.
//! - `GET /`: the status page, which reads `/status.json` every second.
//!
//! The server lives until the node's shutdown is over (it keeps answering while the node
//! drains, so an operator watches the drain), and holds the node weakly: a node dropped
//! without shutdown takes its admin server with it.

use std::net::SocketAddr;
use std::sync::Weak;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::NodeInner;
use super::status::{NodeStatus, RatePoint, SessionStatus};
use crate::error::NodeError;
use crate::session::SessionCounters;

/// The status page: one self-contained file, no script or style from elsewhere.
const PAGE: &str = include_str!("admin/status.html");

/// Binds `addr` and serves the admin routes until `stop` is cancelled; the bound address
/// and the server's task.
pub(crate) async fn start(
    node: Weak<NodeInner>,
    addr: SocketAddr,
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
    let routes = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/status.json", get(status))
        .with_state(node);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, routes)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "admin server stopped");
        }
    });
    Ok((bound, task))
}

type Node = State<Weak<NodeInner>>;

fn gone() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "the node is gone\n").into_response()
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn metrics(State(node): Node) -> Response {
    let Some(node) = node.upgrade() else {
        return gone();
    };
    let Some(metrics) = node.metrics.as_ref() else {
        return gone();
    };
    // Fresh at every scrape, not only as of the last sample.
    metrics.publish(&node.status(), true);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

async fn status(State(node): Node) -> Response {
    let Some(node) = node.upgrade() else {
        return gone();
    };
    axum::Json(StatusJson::from(&node.status())).into_response()
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
    history: Vec<PointJson>,
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
