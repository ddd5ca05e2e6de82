//! [`RemoteRef`]: a typed handle to a named actor on another node, over its own session.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use prost::{Message, Name};

use crate::error::{CallError, CloseReason, SendError};
use crate::session_ref::SessionRef;

/// The session a typed handle currently uses; a `Restart` moves it to the new session.
#[derive(Debug)]
pub(crate) struct SessionSlot(ArcSwapOption<SessionRef>);

impl SessionSlot {
    /// A slot to fill once the session is established.
    pub(crate) fn empty() -> Arc<Self> {
        Arc::new(Self(ArcSwapOption::empty()))
    }

    pub(crate) fn store(&self, session: SessionRef) {
        self.0.store(Some(Arc::new(session)));
    }

    fn load(&self) -> Arc<SessionRef> {
        self.0
            .load_full()
            .expect("a RemoteRef exists only once its slot holds an established session")
    }
}

/// The messages a remote actor speaks: what it accepts and what it sends back (replies,
/// and messages it pushes on the session). Both are protobuf messages with a type URL,
/// usually a `oneof` wrapper, so any gRPC language can produce them.
pub trait Protocol: Send + Sync + 'static {
    /// Messages sent to the actor.
    type Request: Message + Name + Default + 'static;
    /// Messages the actor sends back.
    type Response: Message + Name + Default + 'static;
}

/// A typed handle to one remote actor, bound to a session that a local actor owns. Under
/// the `Restart` policy it follows the session's replacement after a loss.
pub struct RemoteRef<P> {
    slot: Arc<SessionSlot>,
    protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol> RemoteRef<P> {
    pub(crate) fn new(slot: Arc<SessionSlot>) -> Self {
        Self {
            slot,
            protocol: PhantomData,
        }
    }

    /// The session underneath now.
    pub fn session(&self) -> SessionRef {
        SessionRef::clone(&self.slot.load())
    }

    /// Sends a one-way message, waiting for credit as [`SessionRef::cast`] does.
    ///
    /// # Cancel safety
    /// As [`SessionRef::cast`]: dropped before it completes, the message was never sent.
    ///
    /// # Errors
    /// The message comes back in a [`SendError`] when the session does not take it.
    pub async fn cast(&self, message: impl Into<P::Request>) -> Result<(), SendError<P::Request>> {
        self.slot.load().cast(message.into()).await
    }

    /// Sends a one-way message without waiting.
    ///
    /// # Errors
    /// As [`RemoteRef::cast`].
    pub fn try_cast(&self, message: impl Into<P::Request>) -> Result<(), SendError<P::Request>> {
        self.slot.load().try_cast(message.into())
    }

    /// Sends a request and waits up to `timeout` for its reply.
    ///
    /// # Cancel safety
    /// As [`SessionRef::call`]: dropping the future leaves nothing behind.
    ///
    /// # Errors
    /// See [`SessionRef::call`].
    pub async fn call(
        &self,
        message: impl Into<P::Request>,
        timeout: Duration,
    ) -> Result<P::Response, CallError> {
        let session = self.slot.load();
        session.call(&message.into(), timeout).await
    }

    /// Half-closes the session (see [`SessionRef::finish`]).
    pub fn finish(&self) {
        self.slot.load().finish();
    }

    /// Waits until the current session is over.
    pub async fn closed(&self) -> CloseReason {
        let session = self.slot.load();
        session.closed().await
    }
}

impl<P> Clone for RemoteRef<P> {
    fn clone(&self) -> Self {
        Self {
            slot: self.slot.clone(),
            protocol: PhantomData,
        }
    }
}

impl<P> fmt::Debug for RemoteRef<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RemoteRef").field(&self.slot.load()).finish()
    }
}
