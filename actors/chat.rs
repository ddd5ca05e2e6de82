//! The chat paradigm: a room actor, and members that join it from other nodes.
//!
//! ```text
//!  member (node B)                  room (node A)                 other members
//!    | -- call Join{user} ------------> |
//!    | <-- Welcome{members, history} -- | -- cast Presence{user, joined} --> |
//!    | -- cast Text{client_seq, text} -> |  room_seq += 1, kept in the history
//!    | <-------- Ack{client_seq, seq} -- | -- cast Relay{seq, from, text} --> |
//!    | -- cast Leave / finish ---------> |  member leaves
//!    |                                   | -- cast Presence{user, left} ----> |
//!    | <-------- final Acks, Goodbye --- |  (after a finish)
//!   Closed(Finished)                  Closed(Finished)
//! ```
//!
//! Each member's session is its own ordered stream into the room's one mailbox; the
//! room answers and relays on the sessions the messages came from.
//!
//! Everything the room sends a member (acks, relays, presence) goes through that
//! member's outbox in a [`Fanout`]: in order, as the member's credit allows, under the
//! fan-out's policy ([`RoomConfig::fanout`]; see [`duologue::flow::Fanout`]). Every member's
//! session feeds the room, so a member that reads slowly but keeps reading slows the
//! writers down (their sessions are paused while its outbox is over the soft bound) and
//! loses nothing. A member that reads nothing at all holds them for at most
//! `hold_at_most` at a time, and is let go once it took nothing for `stuck_after` (its
//! session ended with a `LimitExceeded` farewell saying so) or once its outbox reaches the
//! hard bound (it then receives what was queued for it, then [`FellBehind`]: where its gap
//! starts, and which of its texts were recorded; then the room's farewell). The others see
//! it leave. While a member's session is interrupted it holds no one back and is never
//! let go for it: what the room owes it waits within its session's replay and the replay
//! budgets, and it gets it all in order when it resumes.
//!
//! A member that joins again under its name from the same node (its session's handshake
//! proved the node's name and incarnation) while the room still holds its earlier
//! session (interrupted, say, or not yet seen to be gone) takes that place: the earlier
//! session ends, superseded, and the others see no leave. Its Welcome says which of its
//! texts the room recorded (`last_client_seq`), as it does for a member that left
//! recently, so it sends again exactly the ones that were not.
//!
//! A member is not an actor: [`join`] opens a session read through [`ChatEvents`], so
//! the room sends a member more only as fast as the member reads.
//!
//! # What members can cost a room
//!
//! Every join, leave and text reaches every member, so a room's work and memory grow
//! with its members; each bound below keeps what one member can make it hold small. A
//! room takes at most [`RoomConfig::max_members`] members and texts of at most
//! [`RoomConfig::max_text_bytes`]; a [`Presence`] names who came or went and the new
//! count, not the whole list (which each member keeps itself from its Welcome on: with
//! the list, n joins cost n³ bytes); a Welcome carries at most [`WELCOME_MEMBER_BYTES`]
//! of names and [`RoomConfig::history_bytes`] of history. Refusals are typed
//! ([`Rejected`] with a reason). What waits for a member that does not keep up is bounded
//! by the fan-out's lag, in messages and in bytes ([`FanoutConfig`]).

use std::time::Duration;

use duologue::flow::{Behind, Fanout, FanoutConfig, Refused};
use duologue::{
    CallError, CloseReason, ConnectError, Mailbox, Node, Protocol, RemoteRef, Reply, SessionRef,
    SessionSignal,
    wire::{GoodbyeReason, NodeIdentity, SessionId},
};
use duologue::{InboxReceiver, mailbox::InboxEvent};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::peer_lines::PeerLines;

/// The chat protocol's messages (`proto/duologue/chat/v1/chat.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/duologue.chat.v1.rs"));
}

use proto::{
    Ack, FellBehind, Join, Leave, MemberMessage, Presence, Rejected, Relay, RoomMessage, Text,
    Welcome,
};
use proto::{member_message, room_message};

/// A chat room: members join, say things, and hear each other.
#[derive(Debug, Default)]
pub struct ChatRoom;

impl Protocol for ChatRoom {
    type Request = MemberMessage;
    type Response = RoomMessage;
}

duologue::oneof!(MemberMessage, kind: member_message::Kind {
    Join(Join),
    Text(Text),
    Leave(Leave),
});
duologue::oneof!(RoomMessage, kind: room_message::Kind {
    Welcome(Welcome),
    Rejected(Rejected),
    Relay(Relay),
    Ack(Ack),
    Presence(Presence),
    FellBehind(FellBehind),
});

/// One member present in the room.
#[derive(Debug)]
struct Member {
    user: String,
    session: SessionRef,
    /// The `client_seq` of its last text the room recorded.
    last_client_seq: u64,
}

/// A member that left, as the room remembers it for a while: a join under its name from
/// the same node learns which of its texts were recorded.
#[derive(Debug)]
struct Departed {
    user: String,
    peer: NodeIdentity,
    last_client_seq: u64,
}

/// How many members that left a room remembers (the most recent).
pub const DEPARTED_REMEMBERED: usize = 1024;

/// How many recent texts a Welcome carries for members who join.
pub const HISTORY: usize = 50;

/// How many bytes of recent texts a Welcome carries, by default: a Welcome stays far
/// below the session's message limit however large the texts are, so no member can make
/// the room un-joinable.
pub const HISTORY_BYTES: usize = 256 * 1024;

/// How many recent texts a room keeps to catch up a member that joins again
/// (`Join.seen_room_seq`).
pub const CATCH_UP: usize = 10_000;

/// How many bytes of recent texts a room keeps to catch up a member that joins again, by
/// default. A text larger than this is relayed, not kept.
pub const CATCH_UP_BYTES: usize = 4 * 1024 * 1024;

/// The longest user name a room takes, in bytes (a Welcome lists the members' names).
pub const MAX_USER_BYTES: usize = 64;

/// How many members a room takes at once, by default: each join and leave is announced
/// to every member, and each member holds a session, so a room's cost grows with it.
pub const MAX_MEMBERS: usize = 1000;

/// The longest text a room takes, by default, in bytes: every text is relayed to every
/// member, each member's session holding its own copy until that member's node has it.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The most bytes of user names a Welcome lists: past it, a Welcome lists the most recent
/// members only (and counts them all), so it stays far below the session's message limit
/// however many members a room is set to take.
pub const WELCOME_MEMBER_BYTES: usize = 64 * 1024;

/// How a room is set up.
#[derive(Clone, Debug)]
pub struct RoomConfig {
    /// The room's name.
    pub name: String,
    /// How far a member may fall behind before the room lets it go (see
    /// [`duologue::flow::Fanout`]).
    pub fanout: FanoutConfig,
    /// The bytes of recent texts a Welcome carries ([`HISTORY_BYTES`] by default).
    pub history_bytes: usize,
    /// The bytes of recent texts kept to catch up a member that joins again
    /// ([`CATCH_UP_BYTES`] by default; at most [`CATCH_UP`] texts).
    pub catch_up_bytes: usize,
    /// Most members at once ([`MAX_MEMBERS`] by default); a join past it is refused
    /// (`Rejected`: the room is full). Members already in are not affected.
    pub max_members: usize,
    /// The longest text taken, in bytes ([`MAX_TEXT_BYTES`] by default); a longer one is
    /// refused (`Rejected`, in order with the member's acks), neither recorded nor relayed.
    pub max_text_bytes: usize,
}

impl From<&str> for RoomConfig {
    fn from(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            fanout: FanoutConfig::default(),
            history_bytes: HISTORY_BYTES,
            catch_up_bytes: CATCH_UP_BYTES,
            max_members: MAX_MEMBERS,
            max_text_bytes: MAX_TEXT_BYTES,
        }
    }
}

/// Members that fell behind, waiting for their notice.
type Fallen = Vec<Behind<SessionId, RoomMessage>>;

/// The room's state.
#[derive(Debug)]
pub struct RoomState {
    name: String,
    /// In join order.
    members: Vec<Member>,
    /// Everything the room sends a member goes through its outbox here, in order.
    outboxes: Fanout<SessionId, RoomMessage>,
    room_seq: u64,
    /// Recent texts, oldest first: what catches up a member that joins again, and, its
    /// most recent part, a Welcome's history.
    log: std::collections::VecDeque<Relay>,
    /// The bytes of text in `log`, at most `log_limit`.
    log_bytes: usize,
    log_limit: usize,
    /// The bytes of text a Welcome's history carries at most.
    history_limit: usize,
    max_members: usize,
    max_text_bytes: usize,
    /// The log lines members can cause, each kind a few per window and the rest counted.
    lines: PeerLines,
    /// Members that left, the most recent last.
    departed: std::collections::VecDeque<Departed>,
}

impl RoomState {
    /// Keeps `line` in the log, dropping the oldest lines past [`CATCH_UP`] texts or the
    /// room's byte limit; a line larger than the limit is not kept at all.
    fn keep(&mut self, line: &Relay) {
        let size = line.text.len() + line.from.len();
        if size > self.log_limit {
            tracing::debug!(room = %self.name, room_seq = line.room_seq, size, "text too large to keep");
            return;
        }
        while self.log.len() >= CATCH_UP || self.log_bytes + size > self.log_limit {
            let Some(oldest) = self.log.pop_front() else {
                break;
            };
            self.log_bytes -= oldest.text.len() + oldest.from.len();
        }
        self.log_bytes += size;
        self.log.push_back(line.clone());
    }

    /// A Welcome's history: the most recent texts, at most [`HISTORY`] of them and the
    /// room's history bytes, oldest first.
    fn history(&self) -> Vec<Relay> {
        let mut bytes = 0;
        let mut recent: Vec<Relay> = self
            .log
            .iter()
            .rev()
            .take(HISTORY)
            .take_while(|line| {
                bytes += line.text.len() + line.from.len();
                bytes <= self.history_limit
            })
            .cloned()
            .collect();
        recent.reverse();
        recent
    }

    /// The `room_seq` of the first relay after `seen` that the room still holds for
    /// `user` (others' texts only); 0: none.
    fn catch_up_from(&self, user: &str, seen: u64) -> u64 {
        let from = self.log.partition_point(|line| line.room_seq <= seen);
        self.log
            .range(from..)
            .find(|line| line.from != user)
            .map_or(0, |line| line.room_seq)
    }

    /// Sends member `session` (`user`) the relays from `first` on, others' texts only,
    /// through its outbox.
    fn catch_up(&mut self, session: &SessionRef, user: &str, first: u64) {
        let from = self.log.partition_point(|line| line.room_seq < first);
        let missed: Vec<Relay> = self
            .log
            .range(from..)
            .filter(|line| line.from != user)
            .cloned()
            .collect();
        for line in missed {
            if let Err(Refused::Behind(behind)) = self.outboxes.send(&session.id(), line.into()) {
                self.let_go(vec![behind], self.room_seq + 1);
                return;
            }
        }
    }

    fn member(&self, session: &SessionRef) -> Option<&Member> {
        self.members.iter().find(|m| &m.session == session)
    }

    fn remove(&mut self, session: &SessionRef) -> Option<Member> {
        let at = self.members.iter().position(|m| &m.session == session)?;
        let member = self.members.remove(at);
        if self.departed.len() >= DEPARTED_REMEMBERED {
            self.departed.pop_front();
        }
        self.departed.push_back(Departed {
            user: member.user.clone(),
            peer: member.session.peer().clone(),
            last_client_seq: member.last_client_seq,
        });
        Some(member)
    }

    /// What the room remembers of `user` joining from `peer`: its last recorded text.
    fn remembered(&mut self, user: &str, peer: &NodeIdentity) -> Option<u64> {
        let at = self
            .departed
            .iter()
            .rposition(|d| d.user == user && d.peer == *peer)?;
        self.departed.remove(at).map(|d| d.last_client_seq)
    }

    /// The room's welcome to a member now in it.
    fn welcome(&self, last_client_seq: Option<u64>, took_over: bool) -> Welcome {
        Welcome {
            room: self.name.clone(),
            members: recent_names(
                self.members.iter().map(|m| m.user.as_str()),
                WELCOME_MEMBER_BYTES,
            ),
            room_seq: self.room_seq,
            history: self.history(),
            member_count: count(self.members.len()),
            last_client_seq: last_client_seq.unwrap_or(0),
            known: last_client_seq.is_some(),
            took_over,
            catch_up_from: 0,
        }
    }

    /// The member left (or its session ended): the others are told.
    fn leave(&mut self, session: &SessionRef) {
        self.outboxes.remove(&session.id());
        if let Some(member) = self.remove(session) {
            self.lines.membership.log(|suppressed| {
                tracing::info!(room = %self.name, user = %member.user, not_logged_since_last_line = suppressed, "left");
            });
            let fallen = self.announce(&member.user, false);
            self.let_go(fallen, self.room_seq + 1);
        }
    }

    /// Tells every member but `user` that `user` joined or left: the name and the new
    /// count, not the list (which each member keeps itself), so a presence costs the same
    /// in a room of three as in a room of a thousand.
    fn announce(&mut self, user: &str, joined: bool) -> Fallen {
        let presence = RoomMessage::from(Presence {
            user: user.to_owned(),
            joined,
            member_count: count(self.members.len()),
        });
        let except = self
            .members
            .iter()
            .find(|m| m.user == user)
            .map(|m| m.session.id());
        self.outboxes.publish(&presence, except.as_ref())
    }

    /// Members that fell behind leave the room, each told after what it was sent; the
    /// others hear that they left (which may leave more behind).
    fn let_go(&mut self, mut fallen: Fallen, missed_from: u64) {
        while let Some(behind) = fallen.pop() {
            let Some(member) = self.remove(behind.session()) else {
                continue;
            };
            self.lines.membership.log(|suppressed| {
                tracing::info!(room = %self.name, user = %member.user, queued = behind.queued(), not_logged_since_last_line = suppressed, "fell behind; let go");
            });
            let notice = FellBehind {
                missed_from,
                queued: behind.queued() as u64,
                last_client_seq: member.last_client_seq,
            };
            behind.farewell(notice.into());
            fallen.extend(self.announce(&member.user, false));
        }
    }

    /// What a member sent, cast or called (`reply`: only a join is answered; a call of
    /// anything else is answered `no_reply` as `reply` drops).
    fn heard(
        &mut self,
        session: &SessionRef,
        kind: member_message::Kind,
        reply: Option<Reply<RoomMessage>>,
    ) {
        match kind {
            member_message::Kind::Join(join) => self.join(session, join, reply),
            member_message::Kind::Text(text) => self.text(session, text),
            member_message::Kind::Leave(Leave {}) => self.leave(session),
        }
    }

    /// A member asks to join, in a call answered through `reply` (`None`: it cast its
    /// join, so nobody is answered, though it joins all the same).
    fn join(&mut self, session: &SessionRef, join: Join, reply: Option<Reply<RoomMessage>>) {
        let mut answer = self.admit(session, &join.user);
        // Joining again: the relays it missed follow its Welcome, through its outbox.
        let catch_up = match &mut answer {
            Ok(welcome) if join.seen_room_seq > 0 => {
                welcome.catch_up_from = self.catch_up_from(&join.user, join.seen_room_seq);
                welcome.catch_up_from
            }
            _ => 0,
        };
        let answer = match answer {
            Ok(welcome) => RoomMessage::from(welcome),
            Err(rejected) => RoomMessage::from(rejected),
        };
        // A reply skips credit: it reaches the member ahead of anything queued for it.
        let sent = match reply {
            Some(reply) => reply.send(answer).map_err(|error| error.to_string()),
            None => Err("the join was cast, not called: nobody to answer".to_owned()),
        };
        if let Err(error) = sent {
            self.lines.unsent.log(|suppressed| {
                tracing::warn!(room = %self.name, %error, not_logged_since_last_line = suppressed, "join reply not sent");
            });
        }
        if catch_up > 0 {
            self.catch_up(session, &join.user, catch_up);
        }
    }

    /// Lets `user` in on `session`: its Welcome, or why not.
    fn admit(&mut self, session: &SessionRef, user: &str) -> Result<Welcome, Rejected> {
        let refused = |reason: String| Err(Rejected { reason });
        if user.is_empty() || user.len() > MAX_USER_BYTES {
            return refused(format!("a user name is 1 to {MAX_USER_BYTES} bytes"));
        }
        let namesake = self
            .members
            .iter()
            .position(|m| m.user == user && &m.session != session);
        if let Some(at) = namesake {
            if self.members[at].session.peer() == session.peer() {
                return Ok(self.take_over(at, session.clone()));
            }
            return refused(format!("the name {user:?} is taken in {}", self.name));
        }
        if self.member(session).is_some() {
            return refused("this session already joined".into());
        }
        if self.members.len() >= self.max_members {
            tracing::debug!(room = %self.name, %user, "room full; join refused");
            return refused(format!(
                "the room {} is full ({} members)",
                self.name, self.max_members
            ));
        }
        self.lines.membership.log(|suppressed| {
            tracing::info!(room = %self.name, %user, peer = %session.peer(), not_logged_since_last_line = suppressed, "joined");
        });
        let known = self.remembered(user, session.peer());
        self.outboxes.insert(session.id(), session.clone());
        self.members.push(Member {
            user: user.to_owned(),
            session: session.clone(),
            last_client_seq: known.unwrap_or(0),
        });
        let fallen = self.announce(user, true);
        self.let_go(fallen, self.room_seq + 1);
        Ok(self.welcome(known, false))
    }

    /// Member `at` joins again on `session` from the node its earlier session came from:
    /// the new session takes its place, the earlier one ends (superseded), and the others
    /// see nothing.
    fn take_over(&mut self, at: usize, session: SessionRef) -> Welcome {
        let member = &mut self.members[at];
        let earlier = std::mem::replace(&mut member.session, session.clone());
        let (user, last_client_seq) = (member.user.clone(), member.last_client_seq);
        self.lines.membership.log(|suppressed| {
            tracing::info!(room = %self.name, %user, earlier = %earlier.id(), not_logged_since_last_line = suppressed, "joined again on a new session; took over its place");
        });
        self.outboxes.remove(&earlier.id());
        earlier.end(
            GoodbyeReason::Aborted,
            format!("superseded: {user} joined again on a new session"),
        );
        self.outboxes.insert(session.id(), session);
        self.welcome(Some(last_client_seq), true)
    }

    fn text(&mut self, session: &SessionRef, text: Text) {
        let Some(at) = self.members.iter().position(|m| &m.session == session) else {
            // Texts still in flight from a member that fell behind: its notice says which
            // of its texts were recorded.
            if self.outboxes.fell_behind_since(&session.id()) {
                tracing::debug!(
                    client_seq = text.client_seq,
                    "text after falling behind, not recorded"
                );
                return;
            }
            // Anyone else who never joined is told here, or its session ends.
            let rejected = Rejected {
                reason: "join before sending text".into(),
            };
            if session.try_cast(RoomMessage::from(rejected)).is_err() && !session.is_closed() {
                session.end(GoodbyeReason::ProtocolError, "text from a non-member");
            }
            return;
        };
        if text.text.len() > self.max_text_bytes {
            let refused = Rejected {
                reason: format!(
                    "text {} has {} bytes; the room takes at most {}",
                    text.client_seq,
                    text.text.len(),
                    self.max_text_bytes
                ),
            };
            if let Err(Refused::Behind(behind)) = self.outboxes.send(&session.id(), refused.into())
            {
                self.let_go(vec![behind], self.room_seq + 1);
            }
            return;
        }
        self.room_seq += 1;
        let member = &mut self.members[at];
        member.last_client_seq = text.client_seq;
        let from = member.user.clone();
        let ack = Ack {
            client_seq: text.client_seq,
            room_seq: self.room_seq,
        };
        let mut fallen = match self.outboxes.send(&session.id(), ack.into()) {
            Ok(()) | Err(Refused::NotMember(_)) => Vec::new(),
            Err(Refused::Behind(behind)) => vec![behind],
        };
        let line = Relay {
            room_seq: self.room_seq,
            from,
            text: text.text,
        };
        self.keep(&line);
        let relay = RoomMessage::from(line);
        fallen.extend(self.outboxes.publish(&relay, Some(&session.id())));
        self.let_go(fallen, self.room_seq);
    }
}

/// A member count as the protocol carries it.
fn count(members: usize) -> u32 {
    u32::try_from(members).unwrap_or(u32::MAX)
}

/// The most recent of `names` (in join order) that fit in `bytes` with their encoding's
/// two bytes each, in join order.
fn recent_names<'a>(names: impl DoubleEndedIterator<Item = &'a str>, bytes: usize) -> Vec<String> {
    let mut left = bytes;
    let mut recent: Vec<String> = names
        .rev()
        .map_while(|name| {
            left = left.checked_sub(name.len() + 2)?;
            Some(name.to_owned())
        })
        .collect();
    recent.reverse();
    recent
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for ChatRoom {
    type Msg = Mailbox<Self>;
    type State = RoomState;
    type Arguments = RoomConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        config: RoomConfig,
    ) -> Result<RoomState, ActorProcessingErr> {
        Ok(RoomState {
            name: config.name,
            members: Vec::new(),
            outboxes: Fanout::new(config.fanout),
            room_seq: 0,
            log: std::collections::VecDeque::new(),
            log_bytes: 0,
            log_limit: config.catch_up_bytes,
            history_limit: config.history_bytes,
            max_members: config.max_members,
            max_text_bytes: config.max_text_bytes,
            lines: PeerLines::default(),
            departed: std::collections::VecDeque::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        state.lines.report(&state.name);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Mailbox::Call {
                session,
                request: MemberMessage { kind: Some(kind) },
                reply,
                ..
            } => state.heard(&session, kind, Some(reply)),
            Mailbox::Cast {
                session,
                message: MemberMessage { kind: Some(kind) },
                ..
            } => state.heard(&session, kind, None),
            // A member can send these at will: a few lines per window, then a count. (A
            // call of them is answered: `no_reply` for an empty one, `decode` otherwise.)
            Mailbox::Call { session, .. } | Mailbox::Cast { session, .. } => {
                state.lines.unreadable.log(|suppressed| {
                    tracing::warn!(room = %state.name, peer = %session.peer(), not_logged_since_last_line = suppressed, "unreadable member message: empty");
                });
            }
            Mailbox::Undecodable(undecodable) => state.lines.unreadable.log(|suppressed| {
                tracing::warn!(room = %state.name, error = %undecodable.error(), type_url = undecodable.type_url(), peer = %undecodable.session().peer(), not_logged_since_last_line = suppressed, "unreadable member message");
            }),
            // The member half-closed: its texts before the farewell are all handled (they
            // precede this signal in the mailbox), so finishing after its outbox sends the
            // final acks ahead of the room's own farewell.
            Mailbox::Signal(SessionSignal::PeerFinished(session, _)) => {
                let outbox = state.outboxes.finish(&session.id());
                state.leave(&session);
                if !outbox {
                    session.finish();
                }
            }
            Mailbox::Signal(SessionSignal::Closed {
                session, reason, ..
            }) => {
                if state.member(&session).is_some() {
                    state.lines.membership.log(|suppressed| {
                        tracing::info!(room = %state.name, %reason, not_logged_since_last_line = suppressed, "member session closed");
                    });
                }
                state.leave(&session);
            }
            // What the room sends a member whose stream broke waits in its outbox, under
            // the lag, until it resumes: a member that vanished is let go once that fills.
            Mailbox::Signal(SessionSignal::Interrupted(session, _)) => {
                state.outboxes.interrupted(&session.id());
            }
            Mailbox::Signal(SessionSignal::Resumed(session, _)) => {
                state.outboxes.resumed(&session.id());
            }
            Mailbox::Signal(SessionSignal::Lost(lost)) => {
                state.lines.membership.log(|suppressed| {
                    tracing::info!(room = %state.name, reason = %lost.reason, not_logged_since_last_line = suppressed, "member session lost");
                });
                state.leave(&lost.session);
            }
            Mailbox::Signal(_) => {}
            Mailbox::Local(never) => match never {},
            // Not subscribed to the cluster.
            Mailbox::Cluster(_) => {}
        }
        Ok(())
    }
}

/// What a member hears from its room.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatEvent {
    /// Another member said something.
    Relay(Relay),
    /// The room recorded one of this member's texts.
    Acked(Ack),
    /// The room refused something this member sent.
    Rejected(String),
    /// Someone joined or left.
    Presence(Presence),
    /// This member could not keep up: the room let it go after everything queued for
    /// it. It should join again (its texts after `last_client_seq` were not recorded).
    FellBehind(FellBehind),
    /// The room sent something this member cannot decode.
    Undecodable(String),
    /// The room finished the session (after this member finished, or after letting it
    /// go).
    RoomFinished,
    /// The stream to the room broke; the session is trying to resume.
    Interrupted(duologue::InterruptCause),
    /// The session resumed: nothing lost or doubled.
    Resumed(duologue::flow::Resumption),
    /// The room has not granted this member credit for a while (see
    /// [`SessionSignal::HeldBack`]): its texts wait.
    HeldBack(duologue::flow::HeldBack),
    /// After a loss, a new session greeted the room again (the `Restart` policy); the
    /// member must join again.
    Restarted,
    /// The session was lost; the texts the room never confirmed come back.
    Lost {
        /// Why.
        reason: duologue::LostReason,
        /// Texts sent but never acknowledged, oldest first.
        unconfirmed: Vec<Text>,
    },
    /// The session is over.
    Closed(CloseReason),
}

/// What the room sends a member, in order, read as [`ChatEvent`]s. Credit follows the
/// reader: the room sends this member more only as it reads, so an unread member holds
/// at most one session window of messages (and, past the room's fan-out lag, is let go
/// with [`ChatEvent::FellBehind`]).
#[derive(Debug)]
pub struct ChatEvents {
    inbox: InboxReceiver<ChatRoom>,
}

impl ChatEvents {
    /// The next event, waiting for one; `None` once the session is over and read.
    pub async fn recv(&mut self) -> Option<ChatEvent> {
        loop {
            if let Some(event) = chat_event(self.inbox.recv().await?) {
                return Some(event);
            }
        }
    }

    /// The next event if one is waiting now.
    pub fn try_recv(&mut self) -> Option<ChatEvent> {
        loop {
            if let Some(event) = chat_event(self.inbox.try_recv()?) {
                return Some(event);
            }
        }
    }

    /// Events waiting to be read (an upper bound: some deliveries are not events).
    pub fn len(&self) -> usize {
        self.inbox.len()
    }

    /// Whether nothing waits to be read.
    pub fn is_empty(&self) -> bool {
        self.inbox.is_empty()
    }
}

/// The event a delivery means to a member, if any.
fn chat_event(event: InboxEvent<RoomMessage>) -> Option<ChatEvent> {
    Some(match event {
        InboxEvent::Message(message) => match message.kind? {
            room_message::Kind::Relay(relay) => ChatEvent::Relay(relay),
            room_message::Kind::Ack(ack) => ChatEvent::Acked(ack),
            room_message::Kind::Rejected(r) => ChatEvent::Rejected(r.reason),
            room_message::Kind::Presence(p) => ChatEvent::Presence(p),
            room_message::Kind::FellBehind(f) => ChatEvent::FellBehind(f),
            room_message::Kind::Welcome(_) => return None,
        },
        // A room does not call its members; dropping the port answers `no_reply`.
        InboxEvent::Call { .. } => return None,
        InboxEvent::Undecodable { type_url, error } => {
            ChatEvent::Undecodable(format!("{type_url}: {error}"))
        }
        InboxEvent::Signal(signal) => match signal {
            SessionSignal::PeerFinished(..) => ChatEvent::RoomFinished,
            SessionSignal::Interrupted(_, cause) => ChatEvent::Interrupted(cause),
            SessionSignal::Resumed(_, resumption) => ChatEvent::Resumed(resumption),
            SessionSignal::HeldBack(_, held) => ChatEvent::HeldBack(held),
            SessionSignal::Restarted { .. } => ChatEvent::Restarted,
            SessionSignal::Lost(lost) => ChatEvent::Lost {
                unconfirmed: lost
                    .unconfirmed
                    .iter()
                    .filter_map(|u| u.decode::<MemberMessage>().ok())
                    .filter_map(|m| Text::try_from(m).ok())
                    .collect(),
                reason: lost.reason.clone(),
            },
            SessionSignal::Closed { reason, .. } => ChatEvent::Closed(reason),
            SessionSignal::Opened(_) | SessionSignal::Flow(..) => return None,
        },
    })
}

/// Joining a room failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The session could not be opened (unreachable, unknown room, wrong secret).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The join call failed.
    #[error("join failed: {0}")]
    Call(#[from] CallError),
    /// The room refused the join.
    #[error("the room refused: {0}")]
    Rejected(String),
}

/// A member that joined a room.
#[derive(Debug)]
pub struct Joined {
    /// The typed handle to the room.
    pub room: RemoteRef<ChatRoom>,
    /// The room's welcome.
    pub welcome: Welcome,
    /// What the room sends, in order. Dropping it ends the session.
    pub events: ChatEvents,
}

/// Opens a session from `node` to room `room` at `addr`, and joins as `user`.
///
/// # Errors
/// [`JoinError`] says which step failed.
pub async fn join(
    node: &Node,
    addr: &str,
    room: &str,
    user: &str,
    timeout: Duration,
) -> Result<Joined, JoinError> {
    join_after(node, addr, room, user, 0, timeout).await
}

/// As [`join`], for a member that joins again having seen the room up to `seen_room_seq`
/// (the `room_seq` of the last relay or ack it got): the relays after it that the room
/// still holds follow the Welcome ([`Welcome::catch_up_from`] says from where).
///
/// # Errors
/// [`JoinError`] says which step failed.
pub async fn join_after(
    node: &Node,
    addr: &str,
    room: &str,
    user: &str,
    seen_room_seq: u64,
    timeout: Duration,
) -> Result<Joined, JoinError> {
    let (remote, inbox) = node.connect::<ChatRoom>((addr, room)).inbox().await?;
    let join = Join {
        user: user.to_owned(),
        seen_room_seq,
    };
    let reply = remote.call(join, timeout).await?;
    match reply.kind {
        Some(room_message::Kind::Welcome(welcome)) => Ok(Joined {
            room: remote,
            welcome,
            events: ChatEvents { inbox },
        }),
        Some(room_message::Kind::Rejected(r)) => Err(JoinError::Rejected(r.reason)),
        _ => Err(JoinError::Rejected("unexpected reply to join".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_welcome_lists_the_most_recent_names_that_fit() {
        let names = ["ann", "ben", "cat", "dan"];
        assert_eq!(recent_names(names.into_iter(), 1024), names);
        // Five bytes a name: two fit in eleven, the most recent two, in join order.
        assert_eq!(recent_names(names.into_iter(), 11), ["cat", "dan"]);
        assert!(recent_names(names.into_iter(), 4).is_empty());
    }

    #[test]
    fn a_full_room_of_the_longest_names_fits_a_welcome_many_times_under_a_message() {
        let name = "n".repeat(MAX_USER_BYTES);
        let listed = recent_names(
            std::iter::repeat_n(name.as_str(), 100_000),
            WELCOME_MEMBER_BYTES,
        );
        let bytes: usize = listed.iter().map(|n| n.len() + 2).sum();
        assert!(bytes <= WELCOME_MEMBER_BYTES);
        assert_eq!(listed.len(), WELCOME_MEMBER_BYTES / (MAX_USER_BYTES + 2));
    }
}
