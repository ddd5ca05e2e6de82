//! One session as its handles see it: no task, no actor. The state a session's handles
//! share with its driver (the core behind one lock, its wakers, pending calls, credit
//! counters: [`state`]), the untyped handle ([`session_ref::SessionRef`]) and the typed one
//! with the protocol it speaks ([`remote_ref::RemoteRef`], [`remote_ref::Protocol`]).

pub(crate) mod remote_ref;
pub(crate) mod session_ref;
pub(crate) mod state;
