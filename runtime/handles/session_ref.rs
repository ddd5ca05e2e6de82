//! [`SessionRef`]: a handle to one established session, for sending, calling, replying
//! and closing. Both ends hold one; the session is symmetric once established.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::{Message, Name};

use crate::error::{CallError, CloseReason, DecodeError, SendError};
use crate::handles::state::{CallOutcome, Shared};
use crate::session::FlowState;
use crate::session::Role;
use crate::signal::FlowSignal;
use crate::wire::{Body, BodyKind, Fault, GoodbyeReason, NodeIdentity, SessionId, TypeUrl};

/// What is known of an established session.
#[derive(Clone, Debug)]
pub(crate) struct SessionInfo {
    pub(crate) id: SessionId,
    pub(crate) role: Role,
    pub(crate) peer: NodeIdentity,
    pub(crate) actor: String,
    pub(crate) remote_addr: Option<SocketAddr>,
}

/// A handle to one established session. Cheap to clone; every clone is the same session.
#[derive(Clone)]
pub struct SessionRef {
    // One reference count per clone, apart from the session core's: every delivered
    // message carries a clone, made on the driver's thread and dropped on the actor's, and
    // a count next to the core's lock would make the two threads fight over its cache line.
    inner: Arc<Handle>,
}

/// What every clone of a [`SessionRef`] shares.
struct Handle {
    shared: Arc<Shared>,
    info: SessionInfo,
}

impl SessionRef {
    pub(crate) fn new(shared: Arc<Shared>, info: SessionInfo) -> Self {
        Self {
            inner: Arc::new(Handle { shared, info }),
        }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.inner.info.id
    }

    /// Whether this end opened the session.
    pub fn role(&self) -> Role {
        self.inner.info.role
    }

    /// The node at the other end.
    pub fn peer(&self) -> &NodeIdentity {
        &self.inner.info.peer
    }

    /// The name of the actor on the acceptor's node this session talks to.
    pub fn actor(&self) -> &str {
        &self.inner.info.actor
    }

    /// The peer's socket address as this node sees it (the accepted connection's remote
    /// address on the acceptor, the dialled address on the initiator).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.info.remote_addr
    }

    /// Sends a one-way message, waiting while the peer gives no credit or holds this side
    /// back (`Pause`, `PauseFor`, `Throttle`).
    ///
    /// # Cancel safety
    /// The session takes a message whole or not at all. Dropping this future before it
    /// completes drops the message unsent: it never entered the session. Once it returned
    /// `Ok`, the message is in the session's replay buffer: it is delivered exactly once,
    /// or handed back in [`crate::SessionSignal::Lost`] / `Closed` as unconfirmed.
    ///
    /// # Errors
    /// The message comes back in a [`SendError`] when the session is closed or finishing,
    /// when it exceeds the session's size limit, or at once when the replay window or a
    /// replay budget is full ([`SendError::Full`]: only the peer's acks free them, so
    /// waiting for credit would not help), and at once while the cluster holds the peer's
    /// node unreachable ([`SendError::PeerUnreachable`]).
    pub async fn cast<M: Message + Name + 'static>(&self, message: M) -> Result<(), SendError<M>> {
        let body = cast_body(TypeUrl::of::<M>(), &message);
        match self.inner.shared.send_waiting(body).await {
            Ok(_) => Ok(()),
            Err(error) => Err(error.map(|_| message)),
        }
    }

    /// Sends `messages` one-way, in order, as [`SessionRef::cast`] sends one, but taking
    /// them into the session a run at a time: one lock and one wake of the writer per run
    /// instead of per message. For an actor answering an [`crate::mailbox::InboundBatch`], or any
    /// sender with many messages at hand.
    ///
    /// # Cancel safety
    /// Dropping this future before it completes drops the messages not yet taken; the
    /// ones taken are in the session as a completed `cast` leaves them.
    ///
    /// # Errors
    /// As [`SessionRef::cast`]: the first message refused comes back in the error,
    /// followed by every message after it (none of them was sent); the ones before it
    /// were.
    pub async fn cast_all<M: Message + Name + 'static>(
        &self,
        messages: Vec<M>,
    ) -> Result<(), SendError<Vec<M>>> {
        let type_url = TypeUrl::of::<M>();
        let mut bodies: std::collections::VecDeque<Body> = messages
            .iter()
            .map(|message| cast_body(type_url.clone(), message))
            .collect();
        match self.inner.shared.send_all_waiting(&mut bodies).await {
            Ok(()) => Ok(()),
            Err(error) => {
                let mut messages = messages;
                let unsent = messages.split_off(messages.len() - bodies.len() - 1);
                Err(error.map(|_| unsent))
            }
        }
    }

    /// Sends a one-way message without waiting.
    ///
    /// # Errors
    /// As [`SessionRef::cast`], and [`SendError::HeldBack`] (the message back) when the
    /// peer gives no credit now or holds this side back.
    pub fn try_cast<M: Message + Name + 'static>(&self, message: M) -> Result<(), SendError<M>> {
        let body = cast_body(TypeUrl::of::<M>(), &message);
        match self.inner.shared.send(body) {
            Ok(_) => Ok(()),
            Err(error) => Err(error.map(|_| message)),
        }
    }

    /// Sends `request` and waits up to `timeout` for the reply, which must be a `R`. The
    /// callee can read the deadline ([`crate::Inbound::deadline`]).
    ///
    /// # Cancel safety
    /// Dropping this future cancels the wait and leaves nothing behind in the session (see
    /// [`SessionRef::pending_calls`]). If the request was already taken by the session,
    /// the callee still receives it and may answer; the answer is discarded on arrival.
    ///
    /// # Errors
    /// [`CallError::Timeout`] when no reply came in time, [`CallError::SessionClosed`]
    /// when the session closed first, [`CallError::PeerUnreachable`] at once when the
    /// cluster declared the peer's node unreachable, [`CallError::Fault`] when the callee failed (or
    /// dropped the call), [`CallError::Decode`] when the reply is not an `R`.
    pub async fn call<Q, R>(&self, request: &Q, timeout: Duration) -> Result<R, CallError>
    where
        Q: Message + Name + 'static,
        R: Message + Name + Default + 'static,
    {
        let (type_url, payload) = self.start_call(request, timeout).await?.answer().await?;
        Ok(decode_payload(&type_url, &payload)?)
    }

    /// The first half of [`SessionRef::call`]: sends `request` (waiting for credit), and
    /// gives what waits for its answer. Whoever must keep the order of its sends (an
    /// entity's host forwarding calls beside casts) sends inline and waits elsewhere.
    pub(crate) async fn start_call<Q>(
        &self,
        request: &Q,
        timeout: Duration,
    ) -> Result<CallInFlight, CallError>
    where
        Q: Message + Name + 'static,
    {
        let started = std::time::Instant::now();
        let id = self.inner.shared.next_call_id();
        let reply = self.inner.shared.register_call(id);
        // Forgets the call however it ends: reply, error, timeout or drop.
        let in_flight = CallInFlight {
            session: self.clone(),
            id,
            reply,
            started,
            timeout,
        };
        let body = Body {
            kind: BodyKind::Call {
                id,
                timeout_ms: u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            },
            type_url: TypeUrl::of::<Q>(),
            payload: request.encode_to_vec().into(),
        };
        match self.inner.shared.send_waiting(body).await {
            Ok(_) => Ok(in_flight),
            // A closed session says why, not only that it is closed.
            Err(SendError::Closed { .. }) => {
                Err(CallError::SessionClosed(self.close_reason_or_unknown()))
            }
            Err(SendError::PeerUnreachable { .. }) => Err(CallError::PeerUnreachable),
            Err(error) => Err(CallError::Send(error.map(drop))),
        }
    }

    /// Calls on this session waiting for their reply now.
    pub fn pending_calls(&self) -> usize {
        self.inner.shared.pending_calls()
    }

    pub(crate) fn send_reply<M: Message + Name + 'static>(
        &self,
        call_id: u64,
        reply: Result<&M, Fault>,
    ) -> Result<(), SendError<()>> {
        let body = match reply {
            Ok(message) => Body {
                kind: BodyKind::Reply {
                    to: call_id,
                    fault: None,
                },
                type_url: TypeUrl::of::<M>(),
                payload: message.encode_to_vec().into(),
            },
            Err(fault) => Body {
                kind: BodyKind::Reply {
                    to: call_id,
                    fault: Some(Box::new(fault)),
                },
                type_url: TypeUrl::empty(),
                payload: Bytes::new(),
            },
        };
        self.inner
            .shared
            .send(body)
            .map(drop)
            .map_err(|e| e.map(drop))
    }

    /// Half-closes: after what is queued, a farewell. The peer may still send its final
    /// messages; the session closes once both sides finished and everything was
    /// acknowledged. Watch for [`crate::SessionSignal::Closed`] or await
    /// [`SessionRef::closed`].
    pub fn finish(&self) {
        self.inner.shared.with(crate::session::Session::finish);
    }

    /// Ends the session now: what is queued and a farewell with `reason` still go out,
    /// nothing more is received, unacknowledged messages are not retried.
    pub fn end(&self, reason: GoodbyeReason, detail: impl Into<String>) {
        let detail = detail.into();
        self.inner.shared.with(|s| s.end(reason, detail));
    }

    /// Sends the peer a flow signal, which its runtime obeys and its owner sees as
    /// [`crate::SessionSignal::Flow`]: [`FlowSignal::Pause`] until a
    /// [`FlowSignal::Resume`], [`FlowSignal::PauseFor`] a while,
    /// [`FlowSignal::Throttle`] to a fraction of its current rate; `Resume` lifts any of
    /// them.
    ///
    /// # Panics
    /// If a throttle's factor is not in (0, 1].
    pub fn signal(&self, signal: FlowSignal) {
        if let FlowSignal::Throttle(factor) = signal {
            assert!(
                factor > 0.0 && factor <= 1.0,
                "a throttle factor is in (0, 1]"
            );
        }
        self.inner.shared.with(|s| s.signal_peer(signal));
    }

    /// Holds the peer back (pauses it) for a fan-out this session feeds, until
    /// [`SessionRef::release_peer`]; the owner's own signals stay as they are.
    pub(crate) fn hold_peer(&self) {
        self.inner.shared.with(crate::session::Session::hold_peer);
    }

    /// The message credit the peer granted so far (cumulative): it grows as the peer's
    /// owner consumes, even while the peer pauses this side.
    pub(crate) fn peer_grant(&self) -> u64 {
        self.inner.shared.read(crate::session::Session::peer_grant)
    }

    /// Waits until the session takes sends again after the cluster declared its peer
    /// unreachable ([`SendError::PeerUnreachable`]): the peer was heard from again, or
    /// the session closed.
    pub(crate) async fn until_heard_again(&self) {
        self.inner.shared.until_heard_again().await;
    }

    /// The session's charges against its peer's and its node's budgets, once established.
    pub(crate) fn account(&self) -> Option<&Arc<crate::budget::Account>> {
        self.inner.shared.account()
    }

    /// Ends a hold of [`SessionRef::hold_peer`].
    pub(crate) fn release_peer(&self) {
        self.inner
            .shared
            .with(crate::session::Session::release_peer);
    }

    /// The session's flow state, both ways: credit, signals in effect, backlog.
    pub fn flow(&self) -> FlowState {
        self.inner.shared.flow()
    }

    /// Aborts the session: no drain, no retries; the peer sees `Lost(PeerEnded(Aborted))`
    /// at once, and every unconfirmed message comes back to the owner.
    pub fn abort(&self) {
        self.inner
            .shared
            .with(|s| s.abort("aborted by its owner".into()));
    }

    /// Finishes (half-closes), waits up to `timeout` for the peer's final messages,
    /// farewell and acks, then aborts what is left. Returns how the session ended.
    pub async fn close(&self, timeout: Duration) -> CloseReason {
        self.finish();
        match tokio::time::timeout(timeout, self.closed()).await {
            Ok(reason) => reason,
            Err(_) => {
                self.abort();
                self.closed().await
            }
        }
    }

    pub(crate) fn consumed_one(&self, bytes: usize) {
        self.inner.shared.consumed_one(bytes);
    }

    /// Messages sent on this session that the peer has not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.inner.shared.with(|s| s.unacked())
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.close_reason().is_some()
    }

    /// Waits until the session is over, and says why.
    pub async fn closed(&self) -> CloseReason {
        self.inner.shared.closed().await
    }

    fn close_reason_or_unknown(&self) -> CloseReason {
        self.inner
            .shared
            .close_reason()
            .unwrap_or_else(|| CloseReason::Transport {
                cause: crate::error::InterruptCause::ConnectionLost,
                detail: "session driver gone".into(),
            })
    }
}

impl fmt::Debug for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRef")
            .field("id", &self.inner.info.id)
            .field("role", &self.inner.info.role)
            .field("peer", &self.inner.info.peer.name)
            .field("actor", &self.inner.info.actor)
            .finish()
    }
}

impl PartialEq for SessionRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner.shared, &other.inner.shared)
    }
}

impl Eq for SessionRef {}

/// A call registered with the session, forgotten when dropped: a call whose future is
/// dropped leaves no entry behind.
/// A call sent, waiting for its answer ([`SessionRef::start_call`]); dropped, the call
/// is forgotten (its answer is discarded on arrival).
pub(crate) struct CallInFlight {
    session: SessionRef,
    id: u64,
    reply: tokio::sync::oneshot::Receiver<CallOutcome>,
    started: std::time::Instant,
    timeout: Duration,
}

impl CallInFlight {
    /// The answer's type URL and bytes, within the call's timeout (counted from when
    /// the request was sent).
    pub(crate) async fn answer(mut self) -> Result<(TypeUrl, Bytes), CallError> {
        let session = self.session.clone();
        match tokio::time::timeout(self.timeout, &mut self.reply).await {
            Err(_) => Err(CallError::Timeout(self.timeout)),
            Ok(Err(_)) => Err(CallError::SessionClosed(session.close_reason_or_unknown())),
            Ok(Ok(outcome)) => {
                session.inner.shared.call_answered(self.started.elapsed());
                Ok(outcome?)
            }
        }
    }
}

impl Drop for CallInFlight {
    fn drop(&mut self) {
        self.session.inner.shared.forget_call(self.id);
    }
}

/// Decodes `payload` as an `M` after checking its type URL.
pub(crate) fn decode_payload<M: Message + Name + Default + 'static>(
    type_url: &TypeUrl,
    payload: &Bytes,
) -> Result<M, DecodeError> {
    let expected = TypeUrl::of::<M>();
    if *type_url != expected {
        return Err(DecodeError::WrongType {
            expected: expected.to_string(),
            got: type_url.to_string(),
        });
    }
    M::decode(payload.clone()).map_err(|source| DecodeError::Invalid {
        type_url: expected.to_string(),
        source,
    })
}

/// The body of a cast of `message`, whose type is `type_url`.
fn cast_body(type_url: TypeUrl, message: &impl Message) -> Body {
    Body {
        kind: BodyKind::Cast,
        type_url,
        payload: message.encode_to_vec().into(),
    }
}
