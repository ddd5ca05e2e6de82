//! The stop reasons of watched actors, kept only while a session of the stopped actor is
//! still open and may need the reason for its farewell: a session that learns of the stop
//! through a failed delivery rather than from the watcher. An actor that stops with no
//! open session leaves nothing behind.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};

use ractor::ActorId;

use crate::handles::state::Shared;
use crate::wire::SessionId;

/// Stop reasons by actor, each with the sessions that may still ask for it.
#[derive(Debug, Default)]
pub(crate) struct StopReasons {
    entries: Mutex<HashMap<ActorId, Entry>>,
}

#[derive(Debug)]
struct Entry {
    reason: String,
    /// The actor's sessions open when it stopped.
    open: Vec<(SessionId, Weak<Shared>)>,
}

impl StopReasons {
    /// Keeps `reason` for as long as one of `open` (the actor's sessions) stays open.
    pub(crate) fn record(
        &self,
        actor: ActorId,
        reason: String,
        open: Vec<(SessionId, Weak<Shared>)>,
    ) {
        let mut entries = self.lock();
        let mut entry = Entry { reason, open };
        entry.prune(None);
        if entry.open.is_empty() {
            entries.remove(&actor);
        } else {
            entries.insert(actor, entry);
        }
    }

    /// The reason `actor` stopped, while a session of it is open.
    pub(crate) fn get(&self, actor: ActorId) -> Option<String> {
        self.lock().get(&actor).map(|e| e.reason.clone())
    }

    /// `session` closed: it needs no reason any more.
    pub(crate) fn session_closed(&self, session: SessionId) {
        self.lock().retain(|_, entry| {
            entry.prune(Some(session));
            !entry.open.is_empty()
        });
    }

    /// How many reasons are kept.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ActorId, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Entry {
    /// Forgets `closing` and every session already closed or gone.
    fn prune(&mut self, closing: Option<SessionId>) {
        self.open.retain(|(id, shared)| {
            Some(*id) != closing
                && shared
                    .upgrade()
                    .is_some_and(|shared| shared.close_reason().is_none())
        });
    }
}
