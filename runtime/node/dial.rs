//! Dialling: opening a session to a peer and waiting for its handshake, retrying what
//! may heal (a refused, reset or broken connection; on a restart, also a peer not ready
//! yet) with the reconnect backoff until a deadline, and saying why it failed in a
//! typed [`ConnectError`].

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use super::link::{Client, Links};
use crate::actor::mailbox::Deliver;
use crate::auth::{Secret, TlsBinding};
use crate::config::{NodeConfig, SessionPolicy};
use crate::driver::{Context, Dialer, Driver, backoff};
use crate::error::{CloseReason, ConnectError, InterruptCause, TlsFailure};
use crate::handles::remote_ref::SessionSlot;
use crate::handles::session_ref::SessionRef;
use crate::handles::state::Shared;
use crate::session::Session;
use crate::shutdown::Shutdown;
use crate::tls::serves_tls;
use crate::wire::{NodeIdentity, Refusal, RefuseReason, SessionId};

/// What a node dials with: its identity and secret, settings, links, shutdown.
#[derive(Debug)]
pub(crate) struct Dial {
    pub(crate) identity: NodeIdentity,
    pub(crate) config: Arc<NodeConfig>,
    pub(crate) secret: Secret,
    pub(crate) links: Arc<Links>,
    pub(crate) shutdown: Shutdown,
    /// Told when a link is made or dropped (a count of the node's bookkeeping).
    pub(crate) bookkeeping_changed: Arc<Notify>,
}

/// How hard [`Dial::open_session`] tries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry {
    /// No attempt starts after this (one under way may take up to the handshake timeout).
    pub(crate) deadline: Instant,
    /// A restart also retries what a returning peer may outgrow: an actor not yet
    /// registered, a peer shutting down, a handshake timeout. Otherwise only a refused,
    /// reset or broken connection is retried.
    pub(crate) restart: bool,
}

/// Opening a session failed for good.
#[derive(Debug)]
pub(crate) struct GaveUp {
    /// Why the last attempt failed.
    pub(crate) error: ConnectError,
    /// How many attempts were made.
    pub(crate) attempts: u32,
}

/// One failed attempt to open a session.
struct Failure {
    error: ConnectError,
    /// The connection failed (refused, reset, broken): another attempt may succeed.
    transient: bool,
}

impl Failure {
    fn worth_retrying(&self, retry: Retry) -> bool {
        self.transient
            || (retry.restart
                && !matches!(
                    self.error,
                    ConnectError::Auth { .. }
                        | ConnectError::InvalidAddress { .. }
                        | ConnectError::ShuttingDown
                        | ConnectError::OwnerStopped
                ))
    }
}

/// What a session is opened to, and for whom.
struct Target {
    /// What its driver reports to and runs with.
    context: Context,
    addr: String,
    actor: String,
    owner: Arc<dyn Deliver>,
    policy: SessionPolicy,
    /// Where the established session goes, with the protocol its `Hello` names (a
    /// restart passes the lost session's slot).
    slot: Arc<SessionSlot>,
}

/// `error`, counting `attempts` when it says the peer was unreachable.
fn with_attempts(error: ConnectError, attempts: u32) -> ConnectError {
    match error {
        ConnectError::Unreachable { addr, reason, .. } => ConnectError::Unreachable {
            addr,
            reason,
            attempts,
        },
        other => other,
    }
}

fn connect_error(addr: String, actor: &str, protocol: &str, reason: CloseReason) -> ConnectError {
    if let Some(error) = reason.auth_error() {
        return ConnectError::Auth { addr, error };
    }
    match reason {
        CloseReason::RefusedByPeer(Refusal {
            reason: RefuseReason::UnknownActor,
            ..
        }) => ConnectError::UnknownActor {
            addr,
            actor: actor.to_owned(),
        },
        CloseReason::RefusedByPeer(Refusal {
            reason: RefuseReason::ProtocolMismatch { acceptor },
            ..
        }) => ConnectError::ProtocolMismatch {
            addr,
            actor: actor.to_owned(),
            ours: protocol.to_owned(),
            theirs: acceptor,
        },
        CloseReason::Transport {
            cause: InterruptCause::Tls(failure),
            detail,
        } => ConnectError::Tls {
            addr,
            failure,
            detail,
        },
        CloseReason::Transport { detail, .. } => ConnectError::Unreachable {
            addr,
            reason: detail,
            attempts: 1,
        },
        CloseReason::HandshakeTimeout => ConnectError::Unreachable {
            addr,
            reason: "the peer did not complete the handshake in time".into(),
            attempts: 1,
        },
        reason => ConnectError::Closed { addr, reason },
    }
}

/// How long a dial that broke waits to learn whether TLS was the cause.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

impl Dial {
    /// Opens a session and waits for its handshake, retrying as `retry` allows. The
    /// session greets the peer with `slot`'s protocol and goes into `slot`, replacing
    /// the one there (a restart). Stops trying when `owner` stops or the node shuts down.
    ///
    /// The future is boxed and `Send` by declaration: a restart opens a session from a
    /// task a session's driver asked for, and that recursion defeats `Send` inference.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_session(
        self: &Arc<Self>,
        context: Context,
        addr: &str,
        actor: &str,
        owner: Arc<dyn Deliver>,
        policy: SessionPolicy,
        slot: Arc<SessionSlot>,
        retry: Retry,
    ) -> futures::future::BoxFuture<'static, Result<(SessionRef, Arc<SessionSlot>), GaveUp>> {
        let node = self.clone();
        let target = Target {
            context,
            addr: addr.to_owned(),
            actor: actor.to_owned(),
            owner,
            policy,
            slot,
        };
        Box::pin(async move { node.open_retrying(&target, retry).await })
    }

    async fn open_retrying(
        self: &Arc<Self>,
        target: &Target,
        retry: Retry,
    ) -> Result<(SessionRef, Arc<SessionSlot>), GaveUp> {
        let mut attempts = 0;
        loop {
            if !target.owner.is_alive() {
                let error = ConnectError::OwnerStopped;
                return Err(GaveUp { error, attempts });
            }
            attempts += 1;
            let failure = match self.open(target).await {
                Ok(opened) => return Ok(opened),
                Err(failure) => failure,
            };
            let delay = backoff(attempts - 1, &target.context.config);
            if !failure.worth_retrying(retry) || Instant::now() + delay >= retry.deadline {
                let error = with_attempts(failure.error, attempts);
                return Err(GaveUp { error, attempts });
            }
            tracing::debug!(addr = %target.addr, error = %failure.error, attempts, "opening a session failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.token().cancelled() => {
                    let error = ConnectError::ShuttingDown;
                    return Err(GaveUp { error, attempts });
                }
            }
        }
    }

    /// A place among the handshakes in flight on the connection to `addr`, waited for at
    /// most a handshake timeout (others' handshakes end within it); session `id` gives
    /// its place on the link back when none comes.
    async fn handshake_place(
        &self,
        handshakes: Arc<Semaphore>,
        addr: &str,
        id: SessionId,
    ) -> Result<OwnedSemaphorePermit, Failure> {
        let timeout = self.config.session.handshake_timeout;
        let waited = tokio::select! {
            place = tokio::time::timeout(timeout, handshakes.acquire_owned()) => Some(place),
            () = self.shutdown.token().cancelled() => None,
        };
        let error = match waited {
            // The semaphore is never closed.
            Some(Ok(Ok(place))) => return Ok(place),
            None | Some(Ok(Err(_))) => ConnectError::ShuttingDown,
            Some(Err(_)) => ConnectError::Unreachable {
                addr: addr.to_owned(),
                reason: format!(
                    "no place among the connection's handshakes in flight within {timeout:?}"
                ),
                attempts: 1,
            },
        };
        if let Some(idle) = self.links.release(id) {
            self.links.evict_if_idle(&idle);
        }
        self.bookkeeping_changed.notify_waiters();
        let transient = !matches!(error, ConnectError::ShuttingDown);
        Err(Failure { error, transient })
    }

    /// One attempt to open a session, over within the handshake timeout.
    async fn open(
        self: &Arc<Self>,
        target: &Target,
    ) -> Result<(SessionRef, Arc<SessionSlot>), Failure> {
        let permanent = |error| Failure {
            error,
            transient: false,
        };
        if self.shutdown.is_triggered() {
            return Err(permanent(ConnectError::ShuttingDown));
        }
        let Target {
            context,
            addr,
            actor,
            owner,
            policy,
            slot,
        } = target;
        let id = SessionId::random();
        let Client {
            client,
            verified,
            core,
            handshakes,
        } = self
            .links
            .client(addr, id, &self.config)
            .map_err(permanent)?;
        self.bookkeeping_changed.notify_waiters();
        let _handshaking = self.handshake_place(handshakes, addr, id).await?;
        // The handshake timeout is left whole: it also bounds the session's resumes.
        let session = Session::initiator(
            self.config.session.clone(),
            self.secret.clone(),
            self.identity.clone(),
            id,
            actor.to_owned(),
            rand::random(),
            Instant::now(),
        )
        .with_protocol(slot.protocol().to_owned())
        .with_tls_binding(match verified {
            Some(_) => TlsBinding::Verified(None),
            None => TlsBinding::Plaintext,
        });
        let shared = Shared::new(session, self.config.session.credit_window);
        let (established_tx, established_rx) = oneshot::channel();
        // Handles are handed out only once the slot holds the established session.
        let slot = slot.clone();
        let dialer = Dialer {
            client,
            addr: addr.to_owned(),
            actor: actor.to_owned(),
            slot: slot.clone(),
            verified,
        };
        let driver = Driver::initiator(
            shared,
            context.clone(),
            *policy,
            dialer,
            owner.clone(),
            established_tx,
        );
        let run: futures::future::BoxFuture<'static, ()> = Box::pin(driver.run(None));
        // On a thread-per-core runtime the driver lives on its connection's core.
        match &core {
            Some(core) => self.shutdown.spawn_on(run, core.handle()),
            None => self.shutdown.spawn(run),
        };
        match established_rx.await {
            Ok(Ok(session)) => {
                slot.store(session.clone());
                Ok((session, slot))
            }
            Ok(Err(reason)) => {
                let broken = matches!(reason, CloseReason::Transport { .. });
                // Only a connection that opened and then broke may have met TLS without
                // rustls saying so: a TLS server dialled in plaintext, or a refusal of
                // this node's certificate that came after the handshake.
                let connected = matches!(
                    &reason,
                    CloseReason::Transport { cause, .. } if *cause != InterruptCause::Unreachable
                );
                if broken {
                    self.links.evict_if_unused(addr);
                    self.bookkeeping_changed.notify_waiters();
                }
                let mut error = connect_error(addr.to_owned(), actor, slot.protocol(), reason);
                if let ConnectError::Unreachable { reason, .. } = &error
                    && connected
                {
                    let found = match &self.config.peer_tls {
                        None => serves_tls(addr, PROBE_TIMEOUT.min(self.config.connect_timeout))
                            .await
                            .then(|| (TlsFailure::PlaintextToTls, reason.clone())),
                        Some(tls) => tls.diagnose(addr, PROBE_TIMEOUT).await,
                    };
                    if let Some((failure, detail)) = found {
                        error = ConnectError::Tls {
                            addr: addr.to_owned(),
                            failure,
                            detail,
                        };
                    }
                }
                // A failed TLS handshake does not heal by trying again.
                let transient = broken && !matches!(error, ConnectError::Tls { .. });
                Err(Failure { error, transient })
            }
            Err(_) => Err(permanent(ConnectError::ShuttingDown)),
        }
    }
}
