//! Links to peer nodes: one lazily dialled HTTP/2 connection per peer address, carrying
//! every session to that peer as its own stream. A link counts the sessions on it: once
//! the last one closed it waits [`NodeConfig::link_idle_timeout`] for another, then is
//! dropped; a link whose connection failed with no session on it is dropped at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use tonic::transport::{Channel, Endpoint};

use crate::auth::VerifiedCert;
use crate::config::NodeConfig;
use crate::cores::{Core, Cores};
use crate::driver::transport::stubs::duologue_client::DuologueClient;
use crate::error::ConnectError;
use crate::wire::SessionId;

/// The connections this node dialled, by peer address.
#[derive(Debug, Default)]
pub(crate) struct Links {
    state: Mutex<State>,
    /// On a thread-per-core runtime, the cores connections are spread over.
    cores: Option<Cores>,
}

#[derive(Debug, Default)]
struct State {
    links: HashMap<String, Link>,
    /// The address of the link each open session rides on.
    by_session: HashMap<SessionId, String>,
    /// Numbers idle periods, so a late eviction timer cannot drop a link in use again.
    next_idle: u64,
}

/// One peer connection and how many sessions use it.
#[derive(Debug)]
struct Link {
    channel: Channel,
    /// The core its connection lives on, on a thread-per-core runtime.
    core: Option<Core>,
    /// Over TLS, the certificate its verifier last accepted the peer by, which its
    /// sessions' proofs are bound to.
    verified: Option<VerifiedCert>,
    sessions: usize,
    /// The idle period the link is in, while it carries no session.
    idle: Option<u64>,
    /// Places for handshakes in flight on the connection (see [`Client::handshakes`]).
    handshakes: Arc<Semaphore>,
}

/// A session's way onto its link.
pub(crate) struct Client {
    pub(crate) client: DuologueClient<Channel>,
    /// What the session's proofs are bound to, over TLS.
    pub(crate) verified: Option<VerifiedCert>,
    /// The core the connection lives on, where the session's driver belongs.
    pub(crate) core: Option<Core>,
    /// A place to hold while the session's first handshake is in flight. The peer admits
    /// at most [`AdmissionConfig::max_unauthenticated_streams_per_connection`] streams
    /// before they authenticate, and refuses the rest to be retried after a backoff; a
    /// node opening more sessions at once waits here instead, taking the same limit for
    /// the peer's as its own.
    ///
    /// [`AdmissionConfig::max_unauthenticated_streams_per_connection`]:
    /// crate::config::AdmissionConfig::max_unauthenticated_streams_per_connection
    pub(crate) handshakes: Arc<Semaphore>,
}

/// A link that just lost its last session: evict it with [`Links::evict_if_idle`] after
/// the grace, unless a session took it up again meanwhile.
#[derive(Debug)]
pub(crate) struct Idle {
    pub(crate) addr: String,
    period: u64,
}

impl Links {
    /// No links yet; connections go to `cores` in turn, when there are.
    pub(crate) fn new(cores: Option<Cores>) -> Self {
        Self {
            state: Mutex::default(),
            cores,
        }
    }

    /// A client on the one connection to `addr`, dialled on first use, for `session`
    /// (which counts as using it until [`Links::release`]), and what the session's proofs
    /// are bound to.
    pub(crate) fn client(
        &self,
        addr: &str,
        session: SessionId,
        config: &NodeConfig,
    ) -> Result<Client, ConnectError> {
        let mut state = self.lock();
        let link = match state.links.get_mut(addr) {
            Some(link) => link,
            None => {
                let (endpoint, verified) = endpoint(addr, config)?;
                let core = self.cores.as_ref().map(Cores::next);
                let endpoint = match &core {
                    Some(core) => endpoint.executor(core.clone()),
                    None => endpoint,
                };
                let link = Link {
                    channel: endpoint.connect_lazy(),
                    core,
                    verified,
                    sessions: 0,
                    idle: None,
                    handshakes: Arc::new(Semaphore::new(
                        config
                            .admission
                            .max_unauthenticated_streams_per_connection
                            .max(1),
                    )),
                };
                state.links.entry(addr.to_owned()).or_insert(link)
            }
        };
        link.sessions += 1;
        link.idle = None;
        let channel = link.channel.clone();
        let verified = link.verified.clone();
        let core = link.core.clone();
        let handshakes = link.handshakes.clone();
        state.by_session.insert(session, addr.to_owned());
        let client = DuologueClient::new(channel)
            .max_decoding_message_size(config.frame_limit())
            .max_encoding_message_size(config.frame_limit());
        Ok(Client {
            client,
            verified,
            core,
            handshakes,
        })
    }

    /// `session` closed; returns its link if that left the link without sessions.
    pub(crate) fn release(&self, session: SessionId) -> Option<Idle> {
        let mut state = self.lock();
        let addr = state.by_session.remove(&session)?;
        state.next_idle += 1;
        let period = state.next_idle;
        let link = state.links.get_mut(&addr)?;
        link.sessions = link.sessions.saturating_sub(1);
        if link.sessions > 0 {
            return None;
        }
        link.idle = Some(period);
        Some(Idle { addr, period })
    }

    /// Drops the link of `idle` if it stayed idle since.
    pub(crate) fn evict_if_idle(&self, idle: &Idle) {
        let mut state = self.lock();
        if state
            .links
            .get(&idle.addr)
            .is_some_and(|link| link.idle == Some(idle.period))
        {
            state.links.remove(&idle.addr);
        }
    }

    /// The connection to `addr` failed: drop its link if no session uses it, so the next
    /// attempt dials afresh.
    pub(crate) fn evict_if_unused(&self, addr: &str) {
        let mut state = self.lock();
        if state.links.get(addr).is_some_and(|link| link.sessions == 0) {
            state.links.remove(addr);
        }
    }

    /// How many links the node holds.
    pub(crate) fn len(&self) -> usize {
        self.lock().links.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The endpoint of `addr`, over TLS when the node dials so, with what its sessions'
/// proofs are bound to.
fn endpoint(
    addr: &str,
    config: &NodeConfig,
) -> Result<(Endpoint, Option<VerifiedCert>), ConnectError> {
    let invalid = |reason: String| ConnectError::InvalidAddress {
        addr: addr.to_owned(),
        reason,
    };
    if addr.contains("://") {
        return Err(invalid("give host:port, without a scheme".into()));
    }
    let scheme = if config.peer_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let bound = config.session.handshake_timeout.min(config.connect_timeout);
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(bound)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .http2_adaptive_window(false)
        .max_frame_size(config.max_frame_size);
    match &config.peer_tls {
        Some(tls) => tls.endpoint(endpoint, addr, bound),
        None => Ok((endpoint, None)),
    }
}
