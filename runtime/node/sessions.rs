//! The node's sessions, accepted and dialled, from their handshake to their close: who
//! owns each (to end them when the owner stops), which accepted ones a peer may resume,
//! their table for the status, and what their drivers report ([`NodeHooks`], implemented
//! here). The drivers hold this part as a trait object and never name the node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use ractor::{ActorCell, ActorId};
use tokio::sync::{Notify, broadcast, mpsc};

use super::dial::{Dial, GaveUp, Retry};
use super::link::Idle;
use super::metrics::NodeMetrics;
use super::registry::Registry;
use super::status::SessionTable;
use super::stop_reasons::StopReasons;
use super::watcher::Stopped;
use crate::actor::mailbox::{Deliver, Lost, SessionSignal};
use crate::auth::{Secret, TlsBinding};
use crate::budget::Budgets;
use crate::config::{NodeConfig, SessionPolicy};
use crate::driver::{Attach, Closed, Context, DriverConfig, NodeHooks, Restart};
use crate::error::{CloseReason, ConnectError, LostReason};
use crate::handles::remote_ref::{Protocol, RemoteRef, SessionSlot};
use crate::handles::session_ref::SessionRef;
use crate::handles::state::Shared;
use crate::log_budget;
use crate::members::ClusterEvent;
use crate::session::{ResumeGate, Role, Session};
use crate::shutdown::Shutdown;
use crate::sync::lock;
use crate::tls::ServerTls;
use crate::wire::{GoodbyeReason, NodeIdentity, Refusal, RefuseReason, SessionId};

/// Something that happened to a session of this node, for monitoring and tests.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// A session completed its handshake.
    SessionOpened {
        /// Its id.
        session: SessionId,
        /// The peer node.
        peer: NodeIdentity,
        /// The actor on the acceptor's side.
        actor: String,
    },
    /// A session ended during its handshake: a wrong secret, an unknown actor, a
    /// malformed greeting.
    SessionRejected {
        /// Where it came from, when known.
        remote_addr: Option<SocketAddr>,
        /// Why.
        reason: CloseReason,
    },
    /// An established session closed.
    SessionClosed {
        /// Its id.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
    /// The node's server stopped after its last handle was dropped without
    /// [`Node::shutdown`](crate::Node::shutdown): its listening socket is closed and the port free.
    ServerStopped,
}

/// An established acceptor session a peer may resume, and where its stream goes.
#[derive(Clone, Debug)]
pub(crate) struct Resumable {
    pub(crate) shared: Arc<Shared>,
    pub(crate) attach: mpsc::Sender<Box<Attach>>,
}

/// The sessions of one node and what their drivers report.
#[derive(Debug)]
pub(crate) struct Sessions {
    identity: NodeIdentity,
    config: Arc<NodeConfig>,
    secret: Secret,
    /// The memory budgets all its sessions share.
    budgets: Arc<Budgets>,
    /// The named actors accepted sessions go to.
    registry: Arc<Registry>,
    /// Where restarts dial.
    dial: Arc<Dial>,
    shutdown: Shutdown,
    events: broadcast::Sender<NodeEvent>,
    /// Established acceptor sessions a peer may resume, and where to route its stream.
    resumable: Mutex<HashMap<SessionId, Resumable>>,
    /// Sessions by the actor that owns them, to end them when it stops.
    owned: Mutex<HashMap<ActorId, Vec<Weak<Shared>>>>,
    /// Stop reasons of watched actors, for the farewell of their sessions.
    stop_reasons: StopReasons,
    /// Lines a peer can cause by failing handshakes: a few per window, the rest counted.
    failed_handshakes: log_budget::LogBudget,
    /// Told whenever a count of the node's bookkeeping may have changed.
    bookkeeping_changed: Arc<Notify>,
    /// Its established sessions, for the status.
    table: SessionTable,
    /// Where losses, failed handshakes and call latencies are recorded, with an admin
    /// address.
    metrics: Option<Arc<NodeMetrics>>,
}

/// What a node's sessions part is made of.
#[derive(Debug)]
pub(crate) struct SessionsParts {
    pub(crate) registry: Arc<Registry>,
    pub(crate) dial: Arc<Dial>,
    pub(crate) budgets: Arc<Budgets>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    pub(crate) bookkeeping_changed: Arc<Notify>,
    pub(crate) metrics: Option<Arc<NodeMetrics>>,
}

impl Sessions {
    /// The sessions part of the node `dial` dials for.
    pub(crate) fn new(parts: SessionsParts) -> Self {
        let SessionsParts {
            registry,
            dial,
            budgets,
            events,
            bookkeeping_changed,
            metrics,
        } = parts;
        Self {
            identity: dial.identity.clone(),
            config: dial.config.clone(),
            secret: dial.secret.clone(),
            shutdown: dial.shutdown.clone(),
            budgets,
            registry,
            dial,
            events,
            resumable: Mutex::new(HashMap::new()),
            owned: Mutex::new(HashMap::new()),
            stop_reasons: StopReasons::default(),
            failed_handshakes: log_budget::LogBudget::new(),
            bookkeeping_changed,
            table: SessionTable::default(),
            metrics,
        }
    }

    /// What the node's drivers share: these sessions to report to, settings, shutdown.
    pub(crate) fn driver_context(self: &Arc<Self>) -> Context {
        Context {
            node: self.clone(),
            config: self.driver_config(),
            cancel: self.shutdown.token().clone(),
            budgets: self.budgets.clone(),
        }
    }

    fn driver_config(&self) -> DriverConfig {
        DriverConfig {
            close_linger: self.config.close_linger,
            reconnect_base: self.config.reconnect_base,
            reconnect_max: self.config.reconnect_max,
            handshake_timeout: self.config.session.handshake_timeout,
        }
    }

    /// Opens a session to `actor` at `addr` for `owner`, as [`Dial::open_session`] does.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        self: &Arc<Self>,
        addr: &str,
        actor: &str,
        owner: Arc<dyn Deliver>,
        policy: SessionPolicy,
        slot: Arc<SessionSlot>,
        retry: Retry,
    ) -> futures::future::BoxFuture<'static, Result<(SessionRef, Arc<SessionSlot>), GaveUp>> {
        self.dial.open_session(
            self.driver_context(),
            addr,
            actor,
            owner,
            policy,
            slot,
            retry,
        )
    }

    /// Opens a session to `actor` at `addr` delivering into `owner`, retrying transient
    /// faults until the connect deadline, typed `P` ([`crate::Node::connect`]).
    pub(crate) async fn connect<P: Protocol>(
        self: &Arc<Self>,
        addr: &str,
        actor: &str,
        owner: Arc<dyn Deliver>,
        policy: SessionPolicy,
    ) -> Result<RemoteRef<P>, ConnectError> {
        let retry = Retry {
            deadline: Instant::now() + self.config.connect_timeout,
            restart: false,
        };
        let (_, slot) = self
            .open(
                addr,
                actor,
                owner,
                policy,
                SessionSlot::speaking::<P>(),
                retry,
            )
            .await
            .map_err(|gave_up| gave_up.error)?;
        Ok(RemoteRef::new(slot))
    }

    /// The settings sessions run with.
    pub(crate) fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Whether the node is shutting down.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// Where accepted sessions' drivers run: the node's task tracker.
    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The core of a new accepted session, its stream having arrived at `arrived`.
    pub(crate) fn acceptor_session(&self, arrived: Instant) -> Session {
        Session::acceptor(
            self.config.session.clone(),
            self.secret.clone(),
            self.identity.clone(),
            rand::random(),
            arrived,
        )
        .with_tls_binding(self.tls_binding())
    }

    /// The gate a resume stream greeting with `hello`, arrived at `arrived`, waits at
    /// until it proves the session's resume key.
    pub(crate) fn resume_gate(&self, hello: crate::wire::Hello, arrived: Instant) -> ResumeGate {
        ResumeGate::new(
            &self.config.session,
            &self.secret,
            self.identity.clone(),
            rand::random(),
            hello,
            arrived,
        )
        .with_tls_binding(self.tls_binding())
    }

    /// What the proofs of accepted sessions are bound to: this node's certificate, when it
    /// serves TLS.
    fn tls_binding(&self) -> TlsBinding {
        self.config
            .tls
            .as_ref()
            .map_or(TlsBinding::Plaintext, ServerTls::binding)
    }

    /// The session a resume stream names, if this node has it.
    pub(crate) fn resumable(&self, id: SessionId) -> Option<Resumable> {
        lock(&self.resumable).get(&id).cloned()
    }

    /// The established sessions' table.
    pub(crate) fn table(&self) -> &SessionTable {
        &self.table
    }

    /// Where the sessions' events are sent (a server stopped by a dropped node says so
    /// there too).
    pub(crate) fn events_sender(&self) -> broadcast::Sender<NodeEvent> {
        self.events.clone()
    }

    /// Subscribes to the sessions' events from now on.
    pub(crate) fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Stop reasons kept, resumable sessions, owners: counts of the node's bookkeeping.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (
            self.stop_reasons.len(),
            lock(&self.resumable).len(),
            lock(&self.owned).len(),
        )
    }

    /// Records that `owner` owns the session `shared`.
    fn owns(&self, owner: &ActorCell, shared: &Arc<Shared>) {
        self.registry.watch(owner.clone());
        let mut owned = lock(&self.owned);
        let sessions = owned.entry(owner.get_id()).or_default();
        sessions.retain(|s| s.strong_count() > 0);
        sessions.push(Arc::downgrade(shared));
        drop(owned);
        self.bookkeeping_changed.notify_waiters();
    }

    /// A watched actor stopped: end its sessions, after what they already queued, with a
    /// farewell that carries its stop reason.
    pub(crate) fn actor_stopped(&self, actor: ActorId, reason: Option<String>) {
        let reason = reason.unwrap_or_else(|| "the actor stopped".into());
        self.registry.forget_names_of(actor);
        let sessions = lock(&self.owned).remove(&actor).unwrap_or_default();
        let mut open = Vec::with_capacity(sessions.len());
        for weak in sessions {
            if let Some(shared) = weak.upgrade() {
                let id = shared.with(|s| {
                    s.end(GoodbyeReason::ActorStopped, reason.clone());
                    s.id()
                });
                open.push((id, weak));
            }
        }
        self.stop_reasons.record(actor, reason, open);
        self.bookkeeping_changed.notify_waiters();
    }

    /// Drops the link of `idle` if no session takes it up within the idle grace.
    fn evict_when_idle(&self, idle: Idle) {
        let links = self.dial.links.clone();
        let changed = self.bookkeeping_changed.clone();
        let grace = self.config.link_idle_timeout;
        let cancel = self.shutdown.token().clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(grace) => {
                    links.evict_if_idle(&idle);
                    changed.notify_waiters();
                }
                () = cancel.cancelled() => {}
            }
        });
    }

    /// `Restart`: opens a new session to where `lost` went, retrying with backoff until
    /// the restart deadline, and moves typed handles onto it; the owner hears either
    /// `Restarted` or a second `Lost` with `LostReason::RestartGaveUp`. Stops early when
    /// the owner stops or the node shuts down.
    async fn restart_session(self: Arc<Self>, lost: Restart) {
        let Restart {
            addr,
            actor,
            owner,
            policy,
            slot,
            previous,
        } = lost;
        let retry = Retry {
            deadline: Instant::now() + self.config.restart_timeout,
            restart: true,
        };
        let opened = self
            .open(&addr, &actor, owner.clone(), policy, slot, retry)
            .await;
        let signal = match opened {
            Ok((session, _)) => {
                tracing::info!(old = %previous.id(), new = %session.id(), "session restarted");
                SessionSignal::Restarted { previous, session }
            }
            Err(GaveUp { error, attempts }) => {
                tracing::warn!(old = %previous.id(), %error, attempts, "restart gave up");
                SessionSignal::Lost(Lost {
                    session: previous,
                    reason: LostReason::RestartGaveUp {
                        attempts,
                        last_error: Box::new(error),
                    },
                    unconfirmed: Vec::new(),
                    escalation: None,
                })
            }
        };
        let _ = owner.signal(signal);
    }
}

impl NodeHooks for Sessions {
    fn admit(&self, target: &str, protocol: &str) -> Result<Arc<dyn Deliver>, Refusal> {
        if self.shutdown.is_triggered() {
            return Err(Refusal {
                reason: RefuseReason::ShuttingDown,
                detail: format!("node {} is shutting down", self.identity.name),
            });
        }
        match self.registry.get(target) {
            Some(owner) if owner.is_alive() => match owner.protocol() {
                Some(serves) if !protocol.is_empty() && serves != protocol => Err(Refusal {
                    detail: format!(
                        "actor {target:?} on node {} serves {serves}, not {protocol}",
                        self.identity.name
                    ),
                    reason: RefuseReason::ProtocolMismatch { acceptor: serves },
                }),
                _ => Ok(owner.clone()),
            },
            Some(_) => Err(Refusal {
                reason: RefuseReason::UnknownActor,
                detail: format!(
                    "actor {target:?} on node {} has stopped",
                    self.identity.name
                ),
            }),
            None => Err(Refusal {
                reason: RefuseReason::UnknownActor,
                detail: format!("no actor named {target:?} on node {}", self.identity.name),
            }),
        }
    }

    fn stop_reason(&self, owner: Option<&dyn Deliver>) -> String {
        owner
            .and_then(|o| {
                o.gone_reason()
                    .or_else(|| self.stop_reasons.get(o.cell()?.get_id()))
            })
            .unwrap_or_else(|| "the actor stopped".into())
    }

    fn session_opened(&self, session: &SessionRef, shared: &Arc<Shared>, owner: Option<ActorCell>) {
        tracing::debug!(id = %session.id(), peer = %session.peer(), actor = session.actor(), "session opened");
        let _ = self.events.send(NodeEvent::SessionOpened {
            session: session.id(),
            peer: session.peer().clone(),
            actor: session.actor().to_owned(),
        });
        self.table.opened(session, shared);
        if let Some(metrics) = &self.metrics {
            shared.record_calls_in(metrics.call_latency());
        }
        if let Some(owner) = owner {
            self.owns(&owner, shared);
        }
    }

    fn remember_resumable(
        &self,
        session: &SessionRef,
        shared: &Arc<Shared>,
    ) -> mpsc::Receiver<Box<Attach>> {
        // Boxed: tokio allocates a channel's first block of 32 slots with the channel, and
        // an `Attach` is about 300 bytes: unboxed, every idle session held 9.5 KiB here.
        let (tx, rx) = mpsc::channel(4);
        let entry = Resumable {
            shared: shared.clone(),
            attach: tx,
        };
        lock(&self.resumable).insert(session.id(), entry);
        self.bookkeeping_changed.notify_waiters();
        rx
    }

    fn session_closed(&self, closed: Closed<'_>) {
        let Closed {
            session,
            established,
            role,
            remote_addr,
            reason,
        } = closed;
        self.stop_reasons.session_closed(session);
        if let Some(idle) = self.dial.links.release(session) {
            self.evict_when_idle(idle);
        }
        self.bookkeeping_changed.notify_waiters();
        if let Some(metrics) = &self.metrics {
            match reason {
                CloseReason::Lost(lost) if established => metrics.session_lost(lost),
                _ if !established => metrics.handshake_failed(role, reason),
                _ => {}
            }
        }
        let event = if established {
            self.table.closed(session, role);
            tracing::debug!(id = %session, %reason, "session closed");
            NodeEvent::SessionClosed {
                session,
                reason: reason.clone(),
            }
        } else {
            // A failed outgoing handshake is the caller's typed error; only a peer's
            // failed attempt on us has no one else to tell.
            if role == Role::Acceptor {
                // Anyone can fail handshakes at will: a few lines per window, then a count.
                if let log_budget::LogVerdict::Log { suppressed } =
                    self.failed_handshakes.admit(Instant::now())
                {
                    tracing::warn!(
                        ?remote_addr,
                        %reason,
                        not_logged_since_last_line = suppressed,
                        "incoming session failed during its handshake"
                    );
                }
            } else {
                tracing::debug!(?remote_addr, %reason, "outgoing session failed during its handshake");
            }
            NodeEvent::SessionRejected {
                remote_addr,
                reason: reason.clone(),
            }
        };
        let _ = self.events.send(event);
    }

    fn forget_resumable(&self, session: SessionId) {
        lock(&self.resumable).remove(&session);
        self.bookkeeping_changed.notify_waiters();
    }

    fn restart(self: Arc<Self>, lost: Restart) {
        // On the node's tracker, like the driver that asks: shutdown waits for it.
        let shutdown = self.shutdown.clone();
        let restart: futures::future::BoxFuture<'static, ()> = Box::pin(self.restart_session(lost));
        shutdown.spawn(restart);
    }
}

/// Keeps the sessions in step with the cluster's verdicts, until the cluster or
/// `sessions` is gone: the streams of the sessions to a member declared unreachable are
/// given up (their calls fail at once, and so do new sends, until it is heard from
/// again; they resume if it comes back in time), and the sessions to a member that
/// joins under a new incarnation are lost, its previous process being gone.
pub(crate) async fn follow_the_cluster(
    mut events: mpsc::UnboundedReceiver<ClusterEvent>,
    sessions: Weak<Sessions>,
) {
    while let Some(event) = events.recv().await {
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        match event {
            ClusterEvent::Unreachable(member) => {
                for shared in sessions.table.of_peer(&member.identity) {
                    tracing::info!(peer = %member.identity, "the cluster declared the peer unreachable");
                    shared.peer_unreachable();
                }
            }
            ClusterEvent::Reachable(member) => {
                for shared in sessions.table.of_peer(&member.identity) {
                    shared.peer_reachable();
                }
            }
            ClusterEvent::Joined(member) => restarted(&sessions, &member),
            ClusterEvent::Current(members) => {
                for member in &members {
                    restarted(&sessions, member);
                }
            }
            _ => {}
        }
    }
}

/// Loses the sessions to an earlier incarnation of `member`.
fn restarted(sessions: &Sessions, member: &crate::members::Member) {
    for shared in sessions.table.of_earlier_incarnation(&member.identity) {
        tracing::info!(peer = %member.identity, "the peer restarted: sessions to its previous incarnation are lost");
        shared.peer_restarted(member.identity.incarnation);
    }
}

/// Ends the sessions (and forgets the names) of every actor the watcher says stopped,
/// until `sessions` is gone.
pub(crate) async fn end_sessions_of_stopped(
    mut reports: mpsc::UnboundedReceiver<Stopped>,
    sessions: Weak<Sessions>,
) {
    while let Some(Stopped { actor, reason }) = reports.recv().await {
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        sessions.actor_stopped(actor, reason);
    }
}
