//! The collaborative editing paradigm: a document actor holding a shared text, and
//! editors on other nodes, each with its own replica, editing it at the same time.
//!
//! ```text
//!  editor ann (node B)                  document (node A)                editor bob (node C)
//!    | -- call Open{ann, sv} -------------> |  registers ann
//!    | <---- Snapshot{update, text, sv} --- |  update: all that ann's sv lacks
//!    | -- cast Update{what doc lacks} ----> |  (edits ann made while away)
//!    |  ann inserts / deletes locally       |
//!    | -- cast Update{u1} ----------------> |  merge u1 -- cast Relay{u1, from: ann} -> |  merge
//!    |                                      | <-------------------- cast Update{u2} --- |  bob edits
//!    | <---------- cast Relay{u2, bob} ---- |  merge u2
//!    | -- finish (Goodbye) ---------------> |  ann leaves
//!    | <------------------------ Goodbye -- |
//!   Closed(Finished)                      Closed(Finished)
//! ```
//!
//! The text is a [`yrs`] CRDT (the Rust port of Yjs): updates commute and are
//! idempotent, so every replica that has merged the same updates, in any order, holds
//! the same text. The document merges each editor's update and relays only what was new
//! to it (yrs reports a transaction's effect only when it changed something), so an
//! update it already had is not relayed again. A cut stream needs nothing here: the
//! session replays what was sent meanwhile, exactly once. A late joiner opens with an
//! empty state vector and gets the whole text in its snapshot.
//!
//! # The editor reads at its own pace
//!
//! An [`Editor`] has no actor of its own: its session delivers into an
//! [`InboxReceiver`], and a relay is merged into the replica only when the application
//! reads it with [`Editor::next_event`]. Until then it waits in the inbox unconsumed, and
//! the document has no credit to send more: what an editor that does not read holds is
//! at most its session's credit window, never a growing queue. Local edits
//! ([`Editor::insert`], [`Editor::append`], [`Editor::delete`]) apply to the replica at
//! once and go to the document whether or not the application reads (but see below: they
//! wait while the document holds the editors back).
//!
//! # Slow editors and stopped ones
//!
//! The document relays through a [`Fanout`], under its policy, "slow is not stuck" (see
//! [`duologue::Fanout`]; the bounds are [`DocumentConfig::fanout`]): a relay goes straight
//! to an editor that has credit, else waits in that editor's outbox, drained in order by
//! one task per editor. What makes the document relay is editors' updates, so every
//! editor's session feeds the fan-out (a member's session does by default): those are the
//! sessions the document holds back when one editor cannot keep up.
//!
//! - **An editor that reads slowly slows the others down and loses nothing.** While its
//!   outbox holds [`FanoutConfig::hold_lag`] relays (or [`FanoutConfig::hold_lag_bytes`])
//!   and it keeps reading, the document pauses every editor's session (a `Pause` flow
//!   signal, which their runtimes obey): the others' edits wait in
//!   [`Editor::insert`], [`Editor::append`] and [`Editor::delete`] until that outbox is down
//!   to half, then go on. The slow editor reads every relay, in order, each an
//!   [`EditEvent::Applied`]; it is never let go for being slow. The document runs at the
//!   pace of its slowest reader that keeps reading.
//! - **An editor that stops reading holds the others back for at most
//!   [`FanoutConfig::hold_at_most`]**: then they go on, and relays pile up in its outbox.
//!   Once it has had relays waiting and taken none for [`FanoutConfig::stuck_after`], it
//!   is stuck and let go: its session is ended with a `LimitExceeded` farewell saying so.
//!   When its application reads again, it gets the relays its session had taken (its
//!   credit window), in order, then [`EditEvent::Lost`] with
//!   `LostReason::PeerEnded` (reason `LimitExceeded`, the detail saying it was stuck);
//!   [`Editor::reopen`] then brings it back in step, nothing lost (under the `Restart`
//!   session policy the runtime opens the new session itself, and the editor syncs on it:
//!   [`EditEvent::Restarted`]).
//! - **The hard bound.** An editor whose outbox reaches [`FanoutConfig::max_lag`] relays
//!   (or [`FanoutConfig::max_lag_bytes`]), or that its peer's or its node's replay budgets
//!   cannot hold more for, is let go at once: the document stops relaying to it and sends
//!   it a `FellBehind` notice (carrying `max_lag`) after the relays its outbox still holds,
//!   then finishes the session. It reads every relay sent to it, in order, then the notice;
//!   on it, [`Editor::next_event`] opens the document again on a new session (an `Open`
//!   with its state vector), merges the snapshot of everything it lacks (exact, since CRDT
//!   state needs no history), sends what the document lacks, and reports
//!   [`EditEvent::FellBehind`]. Nothing is lost, only merged later in one piece. An editor
//!   that does not read up to its notice within [`FanoutConfig::farewell_timeout`] has its
//!   session ended instead: its next events are the relays its session took, then
//!   [`EditEvent::Lost`] (`LimitExceeded`), and [`Editor::reopen`] brings it back.
//! - **An interrupted editor is not a slow one.** The document forwards its editors'
//!   `Interrupted` and `Resumed` signals to the fan-out ([`Fanout::interrupted`],
//!   [`Fanout::resumed`]): while an editor's stream is broken it holds no one back, its
//!   stuck clock stops and `max_lag` does not apply; what the document owes it waits within
//!   the replay budgets, and it reads it all in order once the session resumes
//!   ([`EditEvent::Interrupted`], then [`EditEvent::Resumed`]), or its session is lost at
//!   its resume deadline.
//!
//! An editor's own session is held back with the others' while it is the slow one. Since
//! an [`Editor`] edits and reads in turn (edits take `&self`, [`Editor::next_event`] takes
//! `&mut self`), an application far behind in its reading may see an edit wait up to
//! [`FanoutConfig::hold_at_most`]; reading what waits first (with
//! [`Editor::try_next_event`]) avoids that.
//!
//! ```text
//!  editor ann, reading slowly           document                    editor bob, editing
//!    | (inbox: a credit window)           | <------------ Update ------- |
//!    |                                    |  relays to ann wait in her outbox
//!    |                                    |  at hold_lag: --- Pause ---> |  bob's edits wait
//!    |  ann reads relays, in order -----> |  her outbox drains to half
//!    |                                    | ------------ Resume -------> |  bob edits again
//!    |  ... every relay, in order; no one is let go
//!
//!  editor ann, not reading              document                    editors bob, cat
//!    |                                    |  holds bob and cat back for at most
//!    |                                    |  hold_at_most, then lets them go on:
//!    |                                    |  relays to ann pile up in her outbox
//!    | <------- Goodbye{LimitExceeded} -- |  stuck_after with nothing taken: ended
//!    |  ann reads: relays, then Lost; she calls reopen (Open{sv} on a new session)
//!    |
//!    |                                    |  (or, before that, her outbox reached
//!    |                                    |  max_lag: she is let go at once)
//!    |  ann reads: relays, in order, ---> |  the outbox drains
//!    | <-------------- FellBehind ------- |
//!    | <---------------------- Goodbye -- |
//!    | == new session: call Open{sv} ===> |
//!    | <== Snapshot{what ann lacks} ===== |  ann is in step: EditEvent::FellBehind
//! ```
//!
//! Indexes and lengths count UTF-8 bytes of the text (yrs' default offsets) and must
//! fall on character boundaries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use duologue::LostReason;
use duologue::Resumption;
use duologue::{
    CallError, CloseReason, ConnectError, Fanout, FanoutConfig, Fault, InboxEvent, InboxReceiver,
    Mailbox, Node, Protocol, RemoteRef, Reply, SessionId, SessionRef, SessionSignal,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;

use crate::peer_lines::PeerLines;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update};

/// The editing protocol's messages (`proto/duologue/edit/v1/edit.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/duologue.edit.v1.rs"));
}

use proto::{DocumentMessage, EditorMessage, FellBehind, Open, Relay, Snapshot};
use proto::{document_message, editor_message};

/// The name of the one shared text in every replica.
const TEXT: &str = "text";

duologue::oneof!(EditorMessage, kind: editor_message::Kind {
    Open(Open),
    Update(proto::Update),
});
duologue::oneof!(DocumentMessage, kind: document_message::Kind {
    Snapshot(Snapshot),
    Relay(Relay),
    FellBehind(FellBehind),
});

/// Editing failed.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// An index or range outside the text, or splitting a character.
    #[error("{index}..{end} is outside the text of {len} bytes or splits a character")]
    OutOfRange {
        /// Where the edit starts.
        index: u32,
        /// Where it ends.
        end: u64,
        /// The text's length in bytes.
        len: usize,
    },
    /// An update or state vector that does not decode or apply.
    #[error("bad update: {0}")]
    BadUpdate(String),
    /// The session to the document could not be opened.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The open call failed.
    #[error("open failed: {0}")]
    Call(#[from] CallError),
    /// The document answered something else than a snapshot.
    #[error("the document answered {0}")]
    Unexpected(String),
    /// The change was made on this replica but could not be sent to the document; the
    /// next [`Editor::sync`] (or [`Editor::reopen`]) sends it.
    #[error("the change stayed local: {0}")]
    NotSent(String),
}

/// One replica of the shared text: a yrs document that reports the effect of each of
/// its transactions as a yrs v1 update.
pub struct Replica {
    doc: Doc,
    text: TextRef,
    /// What yrs reported since the last call of `change`.
    changes: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("client_id", &self.doc.client_id())
            .field("text", &self.text())
            .finish()
    }
}

impl Default for Replica {
    fn default() -> Self {
        Self::new()
    }
}

impl Replica {
    /// An empty replica with a fresh yrs client id.
    pub fn new() -> Self {
        let doc = Doc::new();
        let text = doc.get_or_insert_text(TEXT);
        let changes = Arc::new(Mutex::new(Vec::new()));
        let reported = Arc::clone(&changes);
        // yrs calls this on commit, only when the transaction changed something.
        doc.observe_update_v1("duologue.edit", move |_, event| {
            reported
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(event.update.clone());
        })
        .expect("a fresh document has no transaction open");
        Self { doc, text, changes }
    }

    /// The text now.
    pub fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    /// Inserts `chunk` at byte `index`; returns the update to send (`None`: nothing
    /// changed).
    ///
    /// # Errors
    /// [`EditError::OutOfRange`].
    pub fn insert(&mut self, index: u32, chunk: &str) -> Result<Option<Vec<u8>>, EditError> {
        self.check(index, 0)?;
        self.text.insert(&mut self.doc.transact_mut(), index, chunk);
        Ok(self.change())
    }

    /// Appends `chunk` at the end of the text as this replica has it.
    pub fn append(&mut self, chunk: &str) -> Option<Vec<u8>> {
        self.text.push(&mut self.doc.transact_mut(), chunk);
        self.change()
    }

    /// Deletes `len` bytes from byte `index`; returns the update to send.
    ///
    /// # Errors
    /// [`EditError::OutOfRange`].
    pub fn delete(&mut self, index: u32, len: u32) -> Result<Option<Vec<u8>>, EditError> {
        self.check(index, len)?;
        if len > 0 {
            self.text
                .remove_range(&mut self.doc.transact_mut(), index, len);
        }
        Ok(self.change())
    }

    /// Merges a yrs v1 update; returns what was new to this replica, as an update
    /// (`None`: it had everything already).
    ///
    /// # Errors
    /// [`EditError::BadUpdate`] when it does not decode or apply.
    pub fn merge(&mut self, update: &[u8]) -> Result<Option<Vec<u8>>, EditError> {
        let update = Update::decode_v1(update).map_err(|e| EditError::BadUpdate(e.to_string()))?;
        self.doc
            .transact_mut()
            .apply_update(update)
            .map_err(|e| EditError::BadUpdate(e.to_string()))?;
        Ok(self.change())
    }

    /// This replica's state vector (v1 encoding): what it has.
    pub fn state_vector(&self) -> Vec<u8> {
        self.doc.transact().state_vector().encode_v1()
    }

    /// Everything this replica has that a replica with `state_vector` (v1 encoding;
    /// empty: nothing) lacks, as one update.
    ///
    /// # Errors
    /// [`EditError::BadUpdate`] when the state vector does not decode.
    pub fn missing(&self, state_vector: &[u8]) -> Result<Vec<u8>, EditError> {
        let sv = if state_vector.is_empty() {
            StateVector::default()
        } else {
            StateVector::decode_v1(state_vector).map_err(|e| EditError::BadUpdate(e.to_string()))?
        };
        Ok(self.doc.transact().encode_state_as_update_v1(&sv))
    }

    fn check(&self, index: u32, len: u32) -> Result<(), EditError> {
        let text = self.text();
        let end = u64::from(index) + u64::from(len);
        let fits = end <= text.len() as u64
            && text.is_char_boundary(index as usize)
            && text.is_char_boundary(end as usize);
        if fits {
            Ok(())
        } else {
            Err(EditError::OutOfRange {
                index,
                end,
                len: text.len(),
            })
        }
    }

    /// The effect of the transactions committed since the last call, as one update.
    fn change(&self) -> Option<Vec<u8>> {
        let changes = std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()));
        match changes.len() {
            0 => None,
            1 => changes.into_iter().next(),
            _ => yrs::merge_updates_v1(&changes).ok(),
        }
    }
}

/// The shared document: editors open it, send their changes, and hear each other's.
#[derive(Debug, Default)]
pub struct Document;

impl Protocol for Document {
    type Request = EditorMessage;
    type Response = DocumentMessage;
}

/// How a [`Document`] runs: its name, and the fan-out's bounds on its editors' unread
/// relays (see the [module doc](self)).
#[derive(Clone, Debug)]
pub struct DocumentConfig {
    /// Its name (for logs).
    pub name: String,
    /// The relays' fan-out: how many unread relays of one editor hold the other editors
    /// back (`hold_lag`), for how long an editor that stopped reading holds them
    /// (`hold_at_most`) and is waited for (`stuck_after`), the hard bound at which it is
    /// let go with a `FellBehind` notice (`max_lag`, which the notice carries), and how long
    /// it then gets to read its notice.
    pub fanout: FanoutConfig,
}

impl From<&str> for DocumentConfig {
    fn from(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            fanout: FanoutConfig::default(),
        }
    }
}

/// The document's state: its replica (all changes merged) and the editors present.
#[derive(Debug)]
pub struct DocumentState {
    name: String,
    /// The fan-out's hard bound, which a `FellBehind` notice names.
    max_lag: usize,
    replica: Replica,
    /// The editors that opened the document and get its relays, by session: their names.
    editors: HashMap<SessionId, String>,
    /// The relays to them, each editor's in order. Every editor's session feeds it (a
    /// member's does by default): editors' updates are what it relays, so they are the
    /// sessions held back while one editor reads slowly.
    relays: Fanout<SessionId, DocumentMessage>,
    /// The log lines editors can cause, each kind a few per window and the rest counted.
    lines: PeerLines,
}

impl DocumentState {
    fn new(config: DocumentConfig) -> Self {
        Self {
            name: config.name,
            max_lag: config.fanout.max_lag,
            replica: Replica::new(),
            editors: HashMap::new(),
            relays: Fanout::new(config.fanout),
            lines: PeerLines::default(),
        }
    }

    /// The session is over: forget its editor.
    fn gone(&mut self, session: &SessionRef) {
        let id = session.id();
        self.relays.remove(&id);
        if let Some(editor) = self.editors.remove(&id) {
            self.lines.membership.log(|suppressed| {
                tracing::info!(document = %self.name, %editor, not_logged_since_last_line = suppressed, "left");
            });
        }
    }

    /// The editor finished its side: what is queued for it goes out, then the
    /// document's farewell.
    fn finished(&mut self, session: &SessionRef) {
        let id = session.id();
        if let Some(editor) = self.editors.remove(&id) {
            self.lines.membership.log(|suppressed| {
                tracing::info!(document = %self.name, %editor, not_logged_since_last_line = suppressed, "leaves");
            });
        }
        // An editor that fell behind gets its notice first; the fan-out finishes then.
        if !self.relays.finish(&id) {
            session.finish();
        }
    }

    /// What an editor sent, cast or called (`reply`: only an open is answered; a call of
    /// an update is answered `no_reply` as `reply` drops).
    fn heard(
        &mut self,
        session: &SessionRef,
        kind: editor_message::Kind,
        reply: Option<Reply<DocumentMessage>>,
    ) {
        match kind {
            editor_message::Kind::Open(open) => self.open(session, open, reply),
            editor_message::Kind::Update(update) => self.update(session, &update.update),
        }
    }

    /// Registers the editor (again, on a second open) and answers with what it lacks,
    /// through `reply` (`None`: the open was cast, so nobody is answered, though the
    /// editor is registered all the same).
    fn open(&mut self, session: &SessionRef, open: Open, reply: Option<Reply<DocumentMessage>>) {
        let missing = match self.replica.missing(&open.state_vector) {
            Ok(missing) => missing,
            Err(error) => {
                if let Some(reply) = reply {
                    let _ = reply.fail(Fault {
                        code: "bad_state_vector".into(),
                        message: error.to_string(),
                    });
                }
                return;
            }
        };
        let id = session.id();
        // One told it fell behind reopens on a new session; this one gets no relays.
        if !self.relays.fell_behind_since(&id) {
            if !self.relays.contains(&id) {
                self.lines.membership.log(|suppressed| {
                    tracing::info!(document = %self.name, editor = %open.editor, peer = %session.peer(), not_logged_since_last_line = suppressed, "opened");
                });
                self.relays.insert(id, session.clone());
            }
            self.editors.insert(id, open.editor);
        }
        let snapshot = Snapshot {
            update: missing.into(),
            text: self.replica.text(),
            state_vector: self.replica.state_vector().into(),
        };
        let sent = match reply {
            Some(reply) => reply.send(snapshot).map_err(|error| error.to_string()),
            None => Err("the open was cast, not called: nobody to answer".to_owned()),
        };
        if let Err(error) = sent {
            self.lines.unsent.log(|suppressed| {
                tracing::warn!(document = %self.name, %error, not_logged_since_last_line = suppressed, "snapshot not sent");
            });
        }
    }

    /// Merges an editor's change and relays what was new to every other editor; tells
    /// those let go (at the fan-out's hard bound, or its replay budgets) that they fell
    /// behind.
    fn update(&mut self, session: &SessionRef, update: &[u8]) {
        let id = session.id();
        let from = self
            .editors
            .get(&id)
            .cloned()
            .unwrap_or_else(|| session.peer().name.clone());
        let change = match self.replica.merge(update) {
            Ok(Some(change)) => change,
            Ok(None) => return,
            Err(error) => {
                self.lines.refused.log(|suppressed| {
                    tracing::warn!(document = %self.name, %error, editor = %from, not_logged_since_last_line = suppressed, "update not merged");
                });
                return;
            }
        };
        let relay = DocumentMessage::from(Relay {
            update: Bytes::from(change),
            from,
        });
        for behind in self.relays.publish(&relay, Some(&id)) {
            let editor = self.editors.remove(&behind.key).unwrap_or_default();
            self.lines.membership.log(|suppressed| {
                tracing::info!(document = %self.name, %editor, queued = behind.queued(), cause = %behind.cause(), not_logged_since_last_line = suppressed, "fell behind; told to reopen");
            });
            behind.farewell(
                FellBehind {
                    max_lag: self.max_lag as u64,
                }
                .into(),
            );
        }
    }
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Document {
    type Msg = Mailbox<Self>;
    type State = DocumentState;
    type Arguments = DocumentConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        config: DocumentConfig,
    ) -> Result<DocumentState, ActorProcessingErr> {
        Ok(DocumentState::new(config))
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut DocumentState,
    ) -> Result<(), ActorProcessingErr> {
        state.lines.report(&state.name);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut DocumentState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Mailbox::Call {
                session,
                request: EditorMessage { kind: Some(kind) },
                reply,
                ..
            } => state.heard(&session, kind, Some(reply)),
            Mailbox::Cast {
                session,
                message: EditorMessage { kind: Some(kind) },
                ..
            } => state.heard(&session, kind, None),
            // An editor can send these at will: a few lines per window, then a count. (A
            // call of them is answered: `no_reply` for an empty one, `decode` otherwise.)
            Mailbox::Call { session, .. } | Mailbox::Cast { session, .. } => {
                state.lines.unreadable.log(|suppressed| {
                    tracing::warn!(document = %state.name, peer = %session.peer(), not_logged_since_last_line = suppressed, "empty editor message");
                });
            }
            Mailbox::Undecodable(undecodable) => state.lines.unreadable.log(|suppressed| {
                tracing::warn!(document = %state.name, error = %undecodable.error(), type_url = undecodable.type_url(), peer = %undecodable.session().peer(), not_logged_since_last_line = suppressed, "undecodable editor message");
            }),
            // Everything the editor sent before its farewell is merged (it precedes this
            // signal in the mailbox); finish in turn.
            Mailbox::Signal(SessionSignal::PeerFinished(session, _)) => {
                state.finished(&session);
            }
            Mailbox::Signal(SessionSignal::Closed { session, .. }) => state.gone(&session),
            // An editor whose stream broke is not a slow one: it holds no one back, and is
            // not let go for it, until its session resumes (or is lost).
            Mailbox::Signal(SessionSignal::Interrupted(session, _)) => {
                state.relays.interrupted(&session.id());
            }
            Mailbox::Signal(SessionSignal::Resumed(session, _)) => {
                state.relays.resumed(&session.id());
            }
            Mailbox::Signal(SessionSignal::Lost(lost)) => {
                state.lines.membership.log(|suppressed| {
                    tracing::info!(document = %state.name, reason = %lost.reason, not_logged_since_last_line = suppressed, "editor session lost");
                });
                state.gone(&lost.session);
            }
            Mailbox::Signal(_) => {}
            Mailbox::Local(never) => match never {},
            // Not subscribed to the cluster.
            Mailbox::Cluster(_) => {}
        }
        Ok(())
    }
}

/// Starts a [`Document`] on `node` and registers it as `name`, for
/// `duologue node --actor edit:NAME`.
///
/// # Errors
/// When the actor does not start or the name is taken.
pub async fn host(node: &Node, name: &str) -> Result<ractor::ActorCell, String> {
    host_with(node, DocumentConfig::from(name)).await
}

/// As [`host`], with the document's own [`DocumentConfig`].
///
/// # Errors
/// When the actor does not start or the name is taken.
pub async fn host_with(node: &Node, config: DocumentConfig) -> Result<ractor::ActorCell, String> {
    let name = config.name.clone();
    let (document, _) = Actor::spawn(None, Document, config)
        .await
        .map_err(|e| format!("cannot start document {name}: {e}"))?;
    if let Err(error) = node.register(&name, &document) {
        document.stop(None);
        return Err(error.to_string());
    }
    Ok(document.get_cell())
}

/// What happens to an editor's replica and session, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum EditEvent {
    /// Another editor's change was merged (one per relay received).
    Applied {
        /// Who made it.
        from: String,
        /// The replica's text after it.
        text: String,
    },
    /// The stream to the document broke; the session is trying to resume.
    Interrupted(duologue::InterruptCause),
    /// The session resumed: nothing lost or doubled.
    Resumed(Resumption),
    /// After a loss, a new session greeted the document (the `Restart` policy); the
    /// editor opened it again.
    Restarted,
    /// This editor left so many relays unread that it reached the document's hard bound
    /// ([`FanoutConfig::max_lag`], or the replay budgets): the document removed it from
    /// its relays, after every relay read before this event. (An editor that reads slowly
    /// but keeps reading never gets this: it slows the others down instead.) The editor opened the document again on a
    /// new session and merged everything it lacked: it is in step again, and `text` is
    /// its replica's text after the resync.
    FellBehind {
        /// The replica's text after the resync.
        text: String,
    },
    /// After falling behind, opening the document again failed: the editor has no
    /// session; local changes stay, and [`Editor::reopen`] tries again.
    ReopenFailed(String),
    /// The session was lost; local changes stay, [`Editor::sync`] cannot reach anyone
    /// ([`Editor::reopen`] opens a new session). An editor that stopped reading for the
    /// document's [`FanoutConfig::stuck_after`] gets this once it reads again, after the
    /// relays its session took: `PeerEnded` with a `LimitExceeded` farewell.
    Lost(LostReason),
    /// The document finished its side.
    DocumentFinished,
    /// The session is over.
    Closed(CloseReason),
}

/// An editor: a replica of the document on this node, kept in step with the document
/// over one session. Edits apply to the replica at once and go to the document. Other
/// editors' edits wait in the session's inbox, holding back the document's relays to
/// this editor, until the application reads them with [`Editor::next_event`], which
/// merges them ([`EditEvent::Applied`]). An editor that reads slowly slows the other
/// editors down and misses nothing; one that stops reading is let go (see the
/// [module doc](self)). Dropping it ends the session.
#[derive(Debug)]
pub struct Editor {
    name: String,
    /// Where the document is, to open it again after falling behind.
    node: Node,
    addr: String,
    document_name: String,
    timeout: Duration,
    document: RemoteRef<Document>,
    inbox: InboxReceiver<Document>,
    /// The session left after falling behind: it closes on its own (the document
    /// finishes it); dropped with the editor or at the next reopen.
    retired: Option<InboxReceiver<Document>>,
    /// Never locked across an `.await`.
    replica: Mutex<Replica>,
    text: watch::Sender<String>,
    /// The log lines the document can cause, each kind a few per window.
    lines: PeerLines,
}

impl Editor {
    /// Opens a session to the document `document` at `addr` from `node`, and opens the
    /// document as `name`: when this returns, the replica holds the document's text.
    /// `timeout` bounds each open (and later [`Editor::sync`]).
    ///
    /// # Errors
    /// [`EditError`] says which step failed.
    pub async fn open(
        node: &Node,
        addr: &str,
        document: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Self, EditError> {
        let (remote, inbox) = node.connect_inbox::<Document>(addr, document).await?;
        let editor = Self {
            name: name.to_owned(),
            node: node.clone(),
            addr: addr.to_owned(),
            document_name: document.to_owned(),
            timeout,
            document: remote,
            inbox,
            retired: None,
            replica: Mutex::new(Replica::new()),
            text: watch::Sender::new(String::new()),
            lines: PeerLines::default(),
        };
        // On failure, dropping the editor (its inbox) ends the session.
        editor.sync().await?;
        Ok(editor)
    }

    /// The editor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The replica's text now.
    pub fn text(&self) -> String {
        self.text.borrow().clone()
    }

    /// The replica's text, watched: changes with every local and merged edit.
    pub fn watch(&self) -> watch::Receiver<String> {
        self.text.subscribe()
    }

    /// The session to the document.
    pub fn session(&self) -> SessionRef {
        self.document.session()
    }

    /// Inserts `text` at byte `index` of the replica's text, and sends the change.
    ///
    /// # Errors
    /// [`EditError::OutOfRange`] (nothing changed), [`EditError::NotSent`].
    pub async fn insert(&self, index: u32, text: &str) -> Result<(), EditError> {
        let update = self.change(|replica| replica.insert(index, text))?;
        self.send(update).await
    }

    /// Appends `text` at the end of the replica's text, and sends the change.
    ///
    /// # Errors
    /// [`EditError::NotSent`].
    pub async fn append(&self, text: &str) -> Result<(), EditError> {
        let update = self.change(|replica| Ok(replica.append(text)))?;
        self.send(update).await
    }

    /// Deletes `len` bytes from byte `index` of the replica's text, and sends the change.
    ///
    /// # Errors
    /// [`EditError::OutOfRange`] (nothing changed), [`EditError::NotSent`].
    pub async fn delete(&self, index: u32, len: u32) -> Result<(), EditError> {
        let update = self.change(|replica| replica.delete(index, len))?;
        self.send(update).await
    }

    /// Syncs with the document again (an `Open` on the same session): merges what the
    /// replica lacks, sends what the document lacks, and returns the document's text as
    /// the document answered.
    ///
    /// # Errors
    /// As [`Editor::open`].
    pub async fn sync(&self) -> Result<String, EditError> {
        self.sync_on(&self.document).await
    }

    /// Opens the document again on a new session and syncs on it; then finishes the
    /// previous session. What [`Editor::next_event`] does after the document told this
    /// editor it fell behind; after a loss, the application may call it.
    ///
    /// # Errors
    /// As [`Editor::open`]; the editor stays on its previous session.
    pub async fn reopen(&mut self) -> Result<String, EditError> {
        let (remote, inbox) = self
            .node
            .connect_inbox::<Document>(&self.addr, &self.document_name)
            .await?;
        let text = self.sync_on(&remote).await?;
        self.document.finish();
        let previous = std::mem::replace(&mut self.inbox, inbox);
        self.document = remote;
        self.retired = Some(previous);
        Ok(text)
    }

    /// The next event, waiting for one: merges other editors' changes as it reads them,
    /// and keeps the editor in step (syncs again after a restart, reopens after falling
    /// behind). Reading is what lets the document send more: an editor whose events are
    /// read slowly holds the other editors back; one whose events are not read at all is
    /// let go after the document's `stuck_after` (then [`EditEvent::Lost`]) or at its
    /// `max_lag` (then [`EditEvent::FellBehind`], after the relays it was sent).
    ///
    /// Returns `None` only once the node has let go of the session, after
    /// [`EditEvent::Closed`] or a final [`EditEvent::Lost`] was read.
    pub async fn next_event(&mut self) -> Option<EditEvent> {
        loop {
            let event = self.inbox.recv().await?;
            if let Some(event) = self.handle(event).await {
                return Some(event);
            }
        }
    }

    /// The next event if one is waiting now, as [`Editor::next_event`]; it does not wait
    /// for the document, only for a resync that the event calls for.
    pub async fn try_next_event(&mut self) -> Option<EditEvent> {
        while let Some(event) = self.inbox.try_recv() {
            if let Some(event) = self.handle(event).await {
                return Some(event);
            }
        }
        None
    }

    /// Half-closes the session, waits up to `timeout` for the document to finish in
    /// turn, and returns how the session ended.
    pub async fn close(self, timeout: Duration) -> CloseReason {
        self.document.session().close(timeout).await
    }

    fn replica(&self) -> MutexGuard<'_, Replica> {
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `edit` to the replica; returns the update to send.
    fn change(
        &self,
        edit: impl FnOnce(&mut Replica) -> Result<Option<Vec<u8>>, EditError>,
    ) -> Result<Option<Vec<u8>>, EditError> {
        let mut replica = self.replica();
        let update = edit(&mut replica)?;
        self.text.send_replace(replica.text());
        Ok(update)
    }

    /// Sends a change to the document. Concurrent edits may send theirs in either
    /// order: yrs updates commute, and one whose dependencies are missing waits in the
    /// document's replica until they arrive. It waits while the document holds the editors
    /// back (the session paused: an editor reads slowly).
    async fn send(&self, update: Option<Vec<u8>>) -> Result<(), EditError> {
        let Some(update) = update else {
            return Ok(());
        };
        self.document
            .cast(proto::Update {
                update: update.into(),
            })
            .await
            .map_err(|e| EditError::NotSent(e.to_string()))
    }

    /// Opens (or syncs again) on `document`: gets what this replica lacks, sends what
    /// the document lacks; returns the document's text as it answered.
    async fn sync_on(&self, document: &RemoteRef<Document>) -> Result<String, EditError> {
        let open = Open {
            editor: self.name.clone(),
            state_vector: self.replica().state_vector().into(),
        };
        let snapshot = Snapshot::try_from(document.call(open, self.timeout).await?)
            .map_err(|other| EditError::Unexpected(format!("{:?} to open", other.kind)))?;
        let missing = {
            let mut replica = self.replica();
            replica.merge(&snapshot.update)?;
            self.text.send_replace(replica.text());
            replica.missing(&snapshot.state_vector)?
        };
        if missing != Update::EMPTY_V1 {
            document
                .cast(proto::Update {
                    update: missing.into(),
                })
                .await
                .map_err(|e| EditError::NotSent(e.to_string()))?;
        }
        Ok(snapshot.text)
    }

    /// What one delivery means to the application, if anything.
    async fn handle(&mut self, event: InboxEvent<DocumentMessage>) -> Option<EditEvent> {
        let signal = match event {
            InboxEvent::Message(message) => return self.message(message).await,
            // The document can send these at will: a few lines per window, then a count.
            InboxEvent::Call { request, .. } => {
                self.lines.unreadable.log(|suppressed| {
                    tracing::warn!(editor = %self.name, ?request, not_logged_since_last_line = suppressed, "the document called; not answered");
                });
                return None;
            }
            InboxEvent::Undecodable { type_url, error } => {
                self.lines.unreadable.log(|suppressed| {
                    tracing::warn!(editor = %self.name, %type_url, %error, not_logged_since_last_line = suppressed, "undecodable message from the document");
                });
                return None;
            }
            InboxEvent::Signal(signal) => signal,
        };
        match signal {
            SessionSignal::Interrupted(_, cause) => Some(EditEvent::Interrupted(cause)),
            SessionSignal::Resumed(_, resumption) => Some(EditEvent::Resumed(resumption)),
            SessionSignal::Restarted { .. } => {
                if let Err(error) = self.sync().await {
                    tracing::warn!(%error, editor = %self.name, "reopening failed");
                }
                Some(EditEvent::Restarted)
            }
            SessionSignal::Lost(lost) => Some(EditEvent::Lost(lost.reason)),
            SessionSignal::PeerFinished(session, _) => {
                session.finish();
                Some(EditEvent::DocumentFinished)
            }
            SessionSignal::Closed { reason, .. } => Some(EditEvent::Closed(reason)),
            SessionSignal::Opened(_) | SessionSignal::Flow(..) | SessionSignal::HeldBack(..) => {
                None
            }
        }
    }

    /// Merges another editor's change.
    fn merge(&self, relay: Relay) -> Option<EditEvent> {
        let mut replica = self.replica();
        if let Err(error) = replica.merge(&relay.update) {
            self.lines.refused.log(|suppressed| {
                tracing::warn!(%error, editor = %self.name, from = %relay.from, not_logged_since_last_line = suppressed, "relay not merged");
            });
            return None;
        }
        let text = replica.text();
        self.text.send_replace(text.clone());
        Some(EditEvent::Applied {
            from: relay.from,
            text,
        })
    }

    async fn message(&mut self, message: DocumentMessage) -> Option<EditEvent> {
        match message.kind? {
            document_message::Kind::Relay(relay) => self.merge(relay),
            document_message::Kind::FellBehind(notice) => {
                tracing::info!(editor = %self.name, max_lag = notice.max_lag, "fell behind; reopening");
                // The document sends nothing more on this session; finish it in turn.
                self.document.finish();
                match self.reopen().await {
                    Ok(_) => Some(EditEvent::FellBehind { text: self.text() }),
                    Err(error) => Some(EditEvent::ReopenFailed(error.to_string())),
                }
            }
            document_message::Kind::Snapshot(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Replica;

    /// Two replicas exchanging the updates their edits produce.
    fn pair() -> (Replica, Replica) {
        (Replica::new(), Replica::new())
    }

    #[test]
    fn concurrent_edits_merged_in_any_order_converge() {
        let (mut a, mut b) = pair();
        let base = a.append("hello world").unwrap();
        b.merge(&base).unwrap();
        let from_a = a.insert(0, "A: ").unwrap().unwrap();
        let from_b = b.delete(5, 6).unwrap().unwrap();
        let also_b = b.append("!").unwrap();
        b.merge(&from_a).unwrap();
        a.merge(&also_b).unwrap();
        a.merge(&from_b).unwrap();
        assert_eq!(a.text(), "A: hello!");
        assert_eq!(a.text(), b.text());
    }

    #[test]
    fn merging_what_a_replica_has_reports_nothing_new() {
        let (mut a, mut b) = pair();
        let change = a.append("once").unwrap();
        assert!(b.merge(&change).unwrap().is_some());
        assert_eq!(b.merge(&change).unwrap(), None);
        let deleted = a.delete(0, 1).unwrap().unwrap();
        assert!(b.merge(&deleted).unwrap().is_some());
        assert_eq!(b.merge(&deleted).unwrap(), None);
        assert_eq!(b.text(), "nce");
    }

    #[test]
    fn a_fresh_replica_gets_everything_from_missing() {
        let (mut a, mut late) = pair();
        a.append("abc").unwrap();
        a.delete(1, 1).unwrap().unwrap();
        let all = a.missing(&late.state_vector()).unwrap();
        late.merge(&all).unwrap();
        assert_eq!(late.text(), "ac");
        assert_eq!(
            a.missing(&[]).unwrap(),
            a.missing(&Replica::new().state_vector()).unwrap()
        );
    }

    #[test]
    fn out_of_range_and_split_characters_are_refused() {
        let mut a = Replica::new();
        a.append("é").unwrap();
        assert!(a.insert(3, "x").is_err());
        assert!(a.insert(1, "x").is_err(), "inside the two bytes of é");
        assert!(a.delete(0, 1).is_err());
        assert!(a.delete(0, 2).unwrap().is_some());
        assert_eq!(a.text(), "");
    }
}
