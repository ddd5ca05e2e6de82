//! The [`Document`] actor: it merges its editors' updates into its replica and relays
//! what was new to every other editor, through a fan-out (see the
//! [module doc](crate::edit)).

use std::collections::HashMap;

use bytes::Bytes;
use duologue::{
    Mailbox, Node, Protocol, Reply, SessionRef, SessionSignal,
    flow::{Fanout, FanoutConfig},
    wire::{Fault, SessionId},
};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::Replica;
use super::proto::editor_message;
use super::proto::{DocumentMessage, EditorMessage, FellBehind, Open, Relay, Snapshot};
use crate::peer_lines::PeerLines;

/// The shared document: editors open it, send their changes, and hear each other's.
#[derive(Debug, Default)]
pub struct Document;

impl Protocol for Document {
    type Request = EditorMessage;
    type Response = DocumentMessage;
}

/// How a [`Document`] runs: its name, and the fan-out's bounds on its editors' unread
/// relays (see the [module doc](crate::edit)).
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
