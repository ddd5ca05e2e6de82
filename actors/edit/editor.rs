//! The [`Editor`]: a replica kept in step with a [`Document`] over one session, read at
//! the application's pace (see the [module doc](crate::edit)).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use duologue::{
    CloseReason, InboxReceiver, LostReason, Node, RemoteRef, SessionRef, SessionSignal,
    flow::Resumption, mailbox::InboxEvent,
};
use tokio::sync::watch;
use yrs::Update;

use super::proto::{self, DocumentMessage, Open, Relay, Snapshot, document_message};
use super::{Document, EditError, Replica};
use crate::peer_lines::PeerLines;
// What the docs link to.
#[cfg(doc)]
use duologue::flow::FanoutConfig;

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
/// [module doc](crate::edit)). Dropping it ends the session.
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
        let (remote, inbox) = node.connect::<Document>((addr, document)).inbox().await?;
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
            .connect::<Document>((&self.addr, &self.document_name))
            .inbox()
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
