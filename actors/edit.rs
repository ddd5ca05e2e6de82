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
//! [`duologue::flow::Fanout`]; the bounds are [`DocumentConfig::fanout`]): a relay goes straight
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

use std::sync::{Arc, Mutex};

use duologue::{CallError, ConnectError};
// What the module doc links to.
#[cfg(doc)]
use duologue::{
    InboxReceiver,
    flow::{Fanout, FanoutConfig},
};
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

mod document;
mod editor;

pub use document::{Document, DocumentConfig, DocumentState, host, host_with};
pub use editor::{EditEvent, Editor};

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
