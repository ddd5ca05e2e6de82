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
//! Indexes and lengths count UTF-8 bytes of the text (yrs' default offsets) and must
//! fall on character boundaries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use duologue::error::LostReason;
use duologue::mailbox::Resumption;
use duologue::{
    CallError, CloseReason, ConnectError, Fault, Inbound, Node, Protocol, RemoteRef, SendError,
    SessionMsg, SessionRef, SessionSignal,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, watch};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update};

/// The editing protocol's messages (`proto/duologue/edit/v1/edit.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/duologue.edit.v1.rs"));
}

use proto::{DocumentMessage, EditorMessage, Open, Relay, Snapshot};
use proto::{document_message, editor_message};

/// The name of the one shared text in every replica.
const TEXT: &str = "text";

impl From<Open> for EditorMessage {
    fn from(open: Open) -> Self {
        Self {
            kind: Some(editor_message::Kind::Open(open)),
        }
    }
}

impl From<proto::Update> for EditorMessage {
    fn from(update: proto::Update) -> Self {
        Self {
            kind: Some(editor_message::Kind::Update(update)),
        }
    }
}

impl From<document_message::Kind> for DocumentMessage {
    fn from(kind: document_message::Kind) -> Self {
        Self { kind: Some(kind) }
    }
}

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
    /// next [`Editor::sync`] sends it.
    #[error("the change stayed local: {0}")]
    NotSent(String),
    /// The editor actor is gone (or could not start).
    #[error("the editor actor is not running: {0}")]
    Stopped(String),
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

/// An editor that opened the document.
#[derive(Debug)]
struct Opened {
    name: String,
    session: SessionRef,
}

/// The document's state: its replica (all changes merged) and the editors present.
#[derive(Debug)]
pub struct DocumentState {
    name: String,
    replica: Replica,
    editors: Vec<Opened>,
}

impl DocumentState {
    fn editor(&self, session: &SessionRef) -> Option<&Opened> {
        self.editors.iter().find(|e| &e.session == session)
    }

    fn leave(&mut self, session: &SessionRef) {
        if let Some(at) = self.editors.iter().position(|e| &e.session == session) {
            let editor = self.editors.remove(at);
            tracing::info!(document = %self.name, editor = %editor.name, "left");
        }
    }

    /// Registers the editor (again, on a second open) and answers with what it lacks.
    fn open(&mut self, mut inbound: Inbound, open: Open) {
        let session = inbound.session().clone();
        let missing = match self.replica.missing(&open.state_vector) {
            Ok(missing) => missing,
            Err(error) => {
                if let Some(port) = inbound.take_reply() {
                    let _ = port.fail(Fault {
                        code: "bad_state_vector".into(),
                        message: error.to_string(),
                    });
                }
                return;
            }
        };
        match self.editors.iter_mut().find(|e| e.session == session) {
            Some(known) => known.name = open.editor,
            None => {
                tracing::info!(document = %self.name, editor = %open.editor, peer = %session.peer(), "opened");
                self.editors.push(Opened {
                    name: open.editor,
                    session,
                });
            }
        }
        let reply: DocumentMessage = document_message::Kind::Snapshot(Snapshot {
            update: missing.into(),
            text: self.replica.text(),
            state_vector: self.replica.state_vector().into(),
        })
        .into();
        if let Err(error) = inbound.reply(&reply) {
            tracing::warn!(%error, "snapshot not sent");
        }
    }

    /// Merges an editor's change and relays what was new to every other editor.
    fn update(&mut self, session: &SessionRef, update: &[u8]) {
        let from = self
            .editor(session)
            .map_or_else(|| session.peer().name.clone(), |e| e.name.clone());
        let change = match self.replica.merge(update) {
            Ok(Some(change)) => change,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, editor = %from, "update not merged");
                return;
            }
        };
        let relay: DocumentMessage = document_message::Kind::Relay(Relay {
            update: Bytes::from(change),
            from,
        })
        .into();
        for editor in self.editors.iter().filter(|e| &e.session != session) {
            match editor.session.try_cast(relay.clone()) {
                Ok(()) => {}
                // No credit now: wait for it on the side. Updates commute, so this one
                // overtaking or being overtaken by later ones changes nothing.
                Err(SendError::Full(relay)) => {
                    let session = editor.session.clone();
                    tokio::spawn(async move {
                        if let Err(error) = session.cast(relay).await {
                            tracing::warn!(%error, "relay not sent");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, editor = %editor.name, "relay not sent"),
            }
        }
    }
}

impl Actor for Document {
    type Msg = SessionMsg;
    type State = DocumentState;
    /// The document's name.
    type Arguments = String;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        name: String,
    ) -> Result<DocumentState, ActorProcessingErr> {
        Ok(DocumentState {
            name,
            replica: Replica::new(),
            editors: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut DocumentState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Inbound(inbound) => match inbound.decode::<EditorMessage>() {
                Ok(EditorMessage {
                    kind: Some(editor_message::Kind::Open(open)),
                }) => state.open(inbound, open),
                Ok(EditorMessage {
                    kind: Some(editor_message::Kind::Update(update)),
                }) => state.update(inbound.session(), &update.update),
                Ok(EditorMessage { kind: None }) => {
                    tracing::warn!(peer = %inbound.session().peer(), "empty editor message");
                }
                Err(error) => {
                    tracing::warn!(%error, peer = %inbound.session().peer(), "undecodable editor message");
                }
            },
            // Everything the editor sent before its farewell is merged (it precedes this
            // signal in the mailbox); finish in turn.
            SessionMsg::Signal(SessionSignal::PeerFinished(session, _)) => {
                state.leave(&session);
                session.finish();
            }
            SessionMsg::Signal(SessionSignal::Closed { session, .. }) => state.leave(&session),
            SessionMsg::Signal(SessionSignal::Lost(lost)) => {
                tracing::info!(reason = %lost.reason, "editor session lost");
                state.leave(&lost.session);
            }
            SessionMsg::Signal(_) => {}
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
    let (document, _) = Actor::spawn(None, Document, name.to_owned())
        .await
        .map_err(|e| format!("cannot start document {name}: {e}"))?;
    if let Err(error) = node.register(name, &document) {
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
    Interrupted(String),
    /// The session resumed: nothing lost or doubled.
    Resumed(Resumption),
    /// After a loss, a new session greeted the document (the `Restart` policy); the
    /// editor opened it again.
    Restarted,
    /// The session was lost; local changes stay, [`Editor::sync`] cannot reach anyone.
    Lost(LostReason),
    /// The document finished its side.
    DocumentFinished,
    /// The session is over.
    Closed(CloseReason),
}

/// One change asked of an editor.
#[derive(Debug)]
enum Edit {
    Insert { index: u32, text: String },
    Append(String),
    Delete { index: u32, len: u32 },
}

/// The editor actor's messages: its session's, and its handle's requests.
#[derive(Debug)]
enum EditorMsg {
    Session(SessionMsg),
    Open {
        document: RemoteRef<Document>,
        reply: RpcReplyPort<Result<String, EditError>>,
    },
    Edit {
        edit: Edit,
        reply: RpcReplyPort<Result<(), EditError>>,
    },
    Sync {
        reply: RpcReplyPort<Result<String, EditError>>,
    },
}

impl From<Inbound> for EditorMsg {
    fn from(inbound: Inbound) -> Self {
        Self::Session(SessionMsg::Inbound(inbound))
    }
}

impl From<SessionSignal> for EditorMsg {
    fn from(signal: SessionSignal) -> Self {
        Self::Session(SessionMsg::Signal(signal))
    }
}

/// The actor owning an editor's replica and its session to the document.
#[derive(Debug)]
struct EditorActor;

#[derive(Debug)]
struct EditorSetup {
    name: String,
    timeout: Duration,
    text: watch::Sender<String>,
    events: mpsc::UnboundedSender<EditEvent>,
}

#[derive(Debug)]
struct EditorState {
    setup: EditorSetup,
    replica: Replica,
    document: Option<RemoteRef<Document>>,
}

impl EditorState {
    fn publish(&self) -> String {
        let text = self.replica.text();
        self.setup.text.send_replace(text.clone());
        text
    }

    async fn send(&self, update: Vec<u8>) -> Result<(), EditError> {
        let document = self
            .document
            .as_ref()
            .ok_or_else(|| EditError::NotSent("the document is not open".into()))?;
        document
            .cast(proto::Update {
                update: update.into(),
            })
            .await
            .map_err(|e| EditError::NotSent(e.to_string()))
    }

    /// Opens (or syncs again): gets what this replica lacks, sends what the document
    /// lacks; returns the document's text as it answered.
    async fn sync(&mut self) -> Result<String, EditError> {
        let document = self
            .document
            .clone()
            .ok_or_else(|| EditError::NotSent("the document is not open".into()))?;
        let open = Open {
            editor: self.setup.name.clone(),
            state_vector: self.replica.state_vector().into(),
        };
        let snapshot = match document.call(open, self.setup.timeout).await?.kind {
            Some(document_message::Kind::Snapshot(snapshot)) => snapshot,
            other => return Err(EditError::Unexpected(format!("{other:?} to open"))),
        };
        self.replica.merge(&snapshot.update)?;
        self.publish();
        let missing = self.replica.missing(&snapshot.state_vector)?;
        if missing != Update::EMPTY_V1 {
            self.send(missing).await?;
        }
        Ok(snapshot.text)
    }

    async fn edit(&mut self, edit: Edit) -> Result<(), EditError> {
        let update = match edit {
            Edit::Insert { index, text } => self.replica.insert(index, &text)?,
            Edit::Append(text) => self.replica.append(&text),
            Edit::Delete { index, len } => self.replica.delete(index, len)?,
        };
        self.publish();
        match update {
            Some(update) => self.send(update).await,
            None => Ok(()),
        }
    }

    fn event(&self, event: EditEvent) {
        // The receiver gone means the handle was dropped; nothing to tell.
        let _ = self.setup.events.send(event);
    }

    async fn session(
        &mut self,
        myself: &ActorRef<EditorMsg>,
        message: SessionMsg,
    ) -> Result<(), ActorProcessingErr> {
        let event = match message {
            SessionMsg::Inbound(inbound) => match inbound.decode::<DocumentMessage>()?.kind {
                Some(document_message::Kind::Relay(relay)) => {
                    if let Err(error) = self.replica.merge(&relay.update) {
                        tracing::warn!(%error, editor = %self.setup.name, from = %relay.from, "relay not merged");
                        return Ok(());
                    }
                    EditEvent::Applied {
                        from: relay.from,
                        text: self.publish(),
                    }
                }
                Some(document_message::Kind::Snapshot(_)) | None => return Ok(()),
            },
            SessionMsg::Signal(SessionSignal::Interrupted(_, cause)) => {
                EditEvent::Interrupted(cause)
            }
            SessionMsg::Signal(SessionSignal::Resumed(_, resumption)) => {
                EditEvent::Resumed(resumption)
            }
            SessionMsg::Signal(SessionSignal::Restarted { .. }) => {
                self.event(EditEvent::Restarted);
                if let Err(error) = self.sync().await {
                    tracing::warn!(%error, editor = %self.setup.name, "reopening failed");
                }
                return Ok(());
            }
            SessionMsg::Signal(SessionSignal::Lost(lost)) => EditEvent::Lost(lost.reason.clone()),
            SessionMsg::Signal(SessionSignal::PeerFinished(session, _)) => {
                session.finish();
                EditEvent::DocumentFinished
            }
            SessionMsg::Signal(SessionSignal::Closed { reason, .. }) => {
                self.event(EditEvent::Closed(reason));
                myself.stop(None);
                return Ok(());
            }
            SessionMsg::Signal(
                SessionSignal::Opened(_) | SessionSignal::Flow(..) | SessionSignal::HeldBack(..),
            ) => {
                return Ok(());
            }
        };
        self.event(event);
        Ok(())
    }
}

impl Actor for EditorActor {
    type Msg = EditorMsg;
    type State = EditorState;
    type Arguments = EditorSetup;

    async fn pre_start(
        &self,
        _myself: ActorRef<EditorMsg>,
        setup: EditorSetup,
    ) -> Result<EditorState, ActorProcessingErr> {
        Ok(EditorState {
            setup,
            replica: Replica::new(),
            document: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<EditorMsg>,
        message: EditorMsg,
        state: &mut EditorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            EditorMsg::Session(message) => state.session(&myself, message).await?,
            EditorMsg::Open { document, reply } => {
                state.document = Some(document);
                let _ = reply.send(state.sync().await);
            }
            EditorMsg::Sync { reply } => {
                let _ = reply.send(state.sync().await);
            }
            EditorMsg::Edit { edit, reply } => {
                let _ = reply.send(state.edit(edit).await);
            }
        }
        Ok(())
    }
}

/// An editor: a replica of the document on this node, kept in step with the document
/// over one session. Edits apply to the replica at once and go to the document; other
/// editors' edits arrive as [`EditEvent::Applied`]. Dropping it stops its actor, which
/// ends the session.
#[derive(Debug)]
pub struct Editor {
    name: String,
    actor: ActorRef<EditorMsg>,
    document: RemoteRef<Document>,
    text: watch::Receiver<String>,
    /// What happens to the replica and the session, in order.
    pub events: mpsc::UnboundedReceiver<EditEvent>,
}

impl Editor {
    /// Starts an editor actor on `node`, opens a session to the document `document` at
    /// `addr`, and opens the document as `name`: when this returns, the replica holds
    /// the document's text. `timeout` bounds each open (and later [`Editor::sync`]).
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
        let (text_tx, text) = watch::channel(String::new());
        let (events_tx, events) = mpsc::unbounded_channel();
        let setup = EditorSetup {
            name: name.to_owned(),
            timeout,
            text: text_tx,
            events: events_tx,
        };
        let (actor, _) = Actor::spawn(None, EditorActor, setup)
            .await
            .map_err(|e| EditError::Stopped(e.to_string()))?;
        let opened = async {
            let remote: RemoteRef<Document> = node.connect(addr, document, &actor).await?;
            ractor::call!(actor, |reply| EditorMsg::Open {
                document: remote.clone(),
                reply
            })
            .map_err(|e| EditError::Stopped(e.to_string()))??;
            Ok(remote)
        }
        .await;
        match opened {
            Ok(document) => Ok(Self {
                name: name.to_owned(),
                actor,
                document,
                text,
                events,
            }),
            Err(error) => {
                actor.stop(None);
                Err(error)
            }
        }
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
        self.text.clone()
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
        self.edit(Edit::Insert {
            index,
            text: text.to_owned(),
        })
        .await
    }

    /// Appends `text` at the end of the replica's text as it is when the editor gets to
    /// it, and sends the change.
    ///
    /// # Errors
    /// [`EditError::NotSent`].
    pub async fn append(&self, text: &str) -> Result<(), EditError> {
        self.edit(Edit::Append(text.to_owned())).await
    }

    /// Deletes `len` bytes from byte `index` of the replica's text, and sends the change.
    ///
    /// # Errors
    /// [`EditError::OutOfRange`] (nothing changed), [`EditError::NotSent`].
    pub async fn delete(&self, index: u32, len: u32) -> Result<(), EditError> {
        self.edit(Edit::Delete { index, len }).await
    }

    /// Syncs with the document again (an `Open` on the same session): merges what the
    /// replica lacks, sends what the document lacks, and returns the document's text as
    /// the document answered.
    ///
    /// # Errors
    /// As [`Editor::open`].
    pub async fn sync(&self) -> Result<String, EditError> {
        ractor::call!(self.actor, |reply| EditorMsg::Sync { reply })
            .map_err(|e| EditError::Stopped(e.to_string()))?
    }

    /// Half-closes the session, waits up to `timeout` for the document to finish in
    /// turn, and returns how the session ended.
    pub async fn close(self, timeout: Duration) -> CloseReason {
        self.document.session().close(timeout).await
    }

    async fn edit(&self, edit: Edit) -> Result<(), EditError> {
        ractor::call!(self.actor, |reply| EditorMsg::Edit { edit, reply })
            .map_err(|e| EditError::Stopped(e.to_string()))?
    }
}

impl Drop for Editor {
    fn drop(&mut self) {
        self.actor.stop(None);
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
