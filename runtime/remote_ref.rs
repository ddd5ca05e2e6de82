//! [`RemoteRef`]: a typed handle to a named actor on another node, over its own session.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use prost::{Message, Name};

use crate::error::{CallError, CloseReason, SendError};
use crate::session_ref::SessionRef;

/// The messages a remote actor speaks: what it accepts and what it sends back (replies,
/// and messages it pushes on the session). Both are protobuf messages with a type URL,
/// usually a `oneof` wrapper, so any gRPC language can produce them.
pub trait Protocol: Send + Sync + 'static {
    /// Messages sent to the actor.
    type Request: Message + Name + Default;
    /// Messages the actor sends back.
    type Response: Message + Name + Default;
}

/// A typed handle to one remote actor, bound to one session that a local actor owns.
pub struct RemoteRef<P> {
    session: SessionRef,
    protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol> RemoteRef<P> {
    pub(crate) fn new(session: SessionRef) -> Self {
        Self {
            session,
            protocol: PhantomData,
        }
    }

    /// The session underneath.
    pub fn session(&self) -> &SessionRef {
        &self.session
    }

    /// Sends a one-way message.
    ///
    /// # Errors
    /// The message comes back in a [`SendError`] when the session does not take it.
    pub async fn cast(&self, message: impl Into<P::Request>) -> Result<(), SendError<P::Request>> {
        self.session.cast(message.into()).await
    }

    /// Sends a request and waits up to `timeout` for its reply.
    ///
    /// # Errors
    /// See [`SessionRef::call`].
    pub async fn call(
        &self,
        message: impl Into<P::Request>,
        timeout: Duration,
    ) -> Result<P::Response, CallError> {
        self.session.call(&message.into(), timeout).await
    }

    /// Half-closes the session (see [`SessionRef::finish`]).
    pub fn finish(&self) {
        self.session.finish();
    }

    /// Waits until the session is over.
    pub async fn closed(&self) -> CloseReason {
        self.session.closed().await
    }
}

impl<P> Clone for RemoteRef<P> {
    fn clone(&self) -> Self {
        Self {
            session: self.session.clone(),
            protocol: PhantomData,
        }
    }
}

impl<P> fmt::Debug for RemoteRef<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RemoteRef").field(&self.session).finish()
    }
}
