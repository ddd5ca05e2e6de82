//! The chat paradigm: a room actor, and a member actor that joins it from another node.
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

use duologue::SessionMsg;
use std::time::Duration;

use duologue::{
    CallError, CloseReason, ConnectError, Inbound, Node, Protocol, RemoteRef, SessionRef,
    SessionSignal,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

/// The chat protocol's messages (`proto/duologue/chat/v1/chat.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/duologue.chat.v1.rs"));
}

use proto::{
    Ack, Join, Leave, MemberMessage, Presence, Rejected, Relay, RoomMessage, Text, Welcome,
};
use proto::{member_message, room_message};

/// A chat room: members join, say things, and hear each other.
#[derive(Debug, Default)]
pub struct ChatRoom;

impl Protocol for ChatRoom {
    type Request = MemberMessage;
    type Response = RoomMessage;
}

impl From<Join> for MemberMessage {
    fn from(join: Join) -> Self {
        Self {
            kind: Some(member_message::Kind::Join(join)),
        }
    }
}

impl From<Text> for MemberMessage {
    fn from(text: Text) -> Self {
        Self {
            kind: Some(member_message::Kind::Text(text)),
        }
    }
}

impl From<Leave> for MemberMessage {
    fn from(leave: Leave) -> Self {
        Self {
            kind: Some(member_message::Kind::Leave(leave)),
        }
    }
}

impl From<room_message::Kind> for RoomMessage {
    fn from(kind: room_message::Kind) -> Self {
        Self { kind: Some(kind) }
    }
}

/// One member present in the room.
#[derive(Debug)]
struct Member {
    user: String,
    session: SessionRef,
}

/// How many recent texts a room keeps for members who join later.
pub const HISTORY: usize = 50;

/// The room's state.
#[derive(Debug)]
pub struct RoomState {
    name: String,
    members: Vec<Member>,
    room_seq: u64,
    history: std::collections::VecDeque<Relay>,
}

impl RoomState {
    fn member(&self, session: &SessionRef) -> Option<&Member> {
        self.members.iter().find(|m| &m.session == session)
    }

    fn leave(&mut self, session: &SessionRef) {
        if let Some(at) = self.members.iter().position(|m| &m.session == session) {
            let member = self.members.remove(at);
            tracing::info!(room = %self.name, user = %member.user, "left");
            self.announce(&member.user, false);
        }
    }

    /// Tells every member but `user` that `user` joined or left.
    fn announce(&self, user: &str, joined: bool) {
        let presence: RoomMessage = room_message::Kind::Presence(Presence {
            user: user.to_owned(),
            joined,
            members: self.members.iter().map(|m| m.user.clone()).collect(),
        })
        .into();
        for member in self.members.iter().filter(|m| m.user != user) {
            if let Err(error) = member.session.try_cast(presence.clone()) {
                tracing::warn!(%error, user = %member.user, "presence not sent");
            }
        }
    }

    fn join(&mut self, inbound: Inbound, join: Join) {
        let session = inbound.session().clone();
        let reply: RoomMessage = if self.members.iter().any(|m| m.user == join.user) {
            room_message::Kind::Rejected(Rejected {
                reason: format!("the name {:?} is taken in {}", join.user, self.name),
            })
            .into()
        } else if self.member(&session).is_some() {
            room_message::Kind::Rejected(Rejected {
                reason: "this session already joined".into(),
            })
            .into()
        } else {
            tracing::info!(room = %self.name, user = %join.user, peer = %session.peer(), "joined");
            self.members.push(Member {
                user: join.user.clone(),
                session,
            });
            self.announce(&join.user, true);
            room_message::Kind::Welcome(Welcome {
                room: self.name.clone(),
                members: self.members.iter().map(|m| m.user.clone()).collect(),
                room_seq: self.room_seq,
                history: self.history.iter().cloned().collect(),
            })
            .into()
        };
        if let Err(error) = inbound.reply(&reply) {
            tracing::warn!(%error, "join reply not sent");
        }
    }

    fn text(&mut self, session: &SessionRef, text: Text) {
        let Some(from) = self.member(session).map(|m| m.user.clone()) else {
            let rejected: RoomMessage = room_message::Kind::Rejected(Rejected {
                reason: "join before sending text".into(),
            })
            .into();
            let _ = session.try_cast(rejected);
            return;
        };
        self.room_seq += 1;
        let ack: RoomMessage = room_message::Kind::Ack(Ack {
            client_seq: text.client_seq,
            room_seq: self.room_seq,
        })
        .into();
        if let Err(error) = session.try_cast(ack) {
            tracing::warn!(%error, user = %from, "ack not sent");
        }
        let line = Relay {
            room_seq: self.room_seq,
            from,
            text: text.text,
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(line.clone());
        let relay: RoomMessage = room_message::Kind::Relay(line).into();
        for member in self.members.iter().filter(|m| &m.session != session) {
            if let Err(error) = member.session.try_cast(relay.clone()) {
                tracing::warn!(%error, user = %member.user, "relay not sent");
            }
        }
    }
}

impl Actor for ChatRoom {
    type Msg = SessionMsg;
    type State = RoomState;
    /// The room's name.
    type Arguments = String;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        name: String,
    ) -> Result<RoomState, ActorProcessingErr> {
        Ok(RoomState {
            name,
            members: Vec::new(),
            room_seq: 0,
            history: std::collections::VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Inbound(inbound) => match inbound.decode::<MemberMessage>() {
                Ok(MemberMessage {
                    kind: Some(member_message::Kind::Join(join)),
                }) => {
                    state.join(inbound, join);
                }
                Ok(MemberMessage {
                    kind: Some(member_message::Kind::Text(text)),
                }) => {
                    state.text(inbound.session(), text);
                }
                Ok(MemberMessage {
                    kind: Some(member_message::Kind::Leave(_)),
                }) => {
                    state.leave(inbound.session());
                }
                Ok(MemberMessage { kind: None }) => {
                    tracing::warn!(peer = %inbound.session().peer(), "empty member message");
                }
                Err(error) => {
                    tracing::warn!(%error, peer = %inbound.session().peer(), "undecodable member message");
                }
            },
            // The member half-closed: its texts before the farewell are all handled (they
            // precede this signal in the mailbox), so finishing now sends the final acks
            // ahead of the room's own farewell.
            SessionMsg::Signal(SessionSignal::PeerFinished(session, _)) => {
                state.leave(&session);
                session.finish();
            }
            SessionMsg::Signal(SessionSignal::Closed {
                session, reason, ..
            }) => {
                if state.member(&session).is_some() {
                    tracing::info!(%reason, "member session closed");
                }
                state.leave(&session);
            }
            SessionMsg::Signal(SessionSignal::Lost(lost)) => {
                tracing::info!(reason = %lost.reason, "member session lost");
                state.leave(&lost.session);
            }
            SessionMsg::Signal(_) => {}
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
    /// The room finished the session (after this member finished).
    RoomFinished,
    /// The stream to the room broke; the session is trying to resume.
    Interrupted(String),
    /// The session resumed: nothing lost or doubled.
    Resumed(duologue::mailbox::Resumption),
    /// After a loss, a new session greeted the room again (the `Restart` policy); the
    /// member must join again.
    Restarted,
    /// The session was lost; the texts the room never confirmed come back.
    Lost {
        /// Why.
        reason: duologue::error::LostReason,
        /// Texts sent but never acknowledged, oldest first.
        unconfirmed: Vec<Text>,
    },
    /// The session is over.
    Closed(CloseReason),
}

/// A member actor: forwards what the room sends to a channel its owner reads.
#[derive(Debug, Default)]
pub struct ChatMember;

impl Actor for ChatMember {
    type Msg = SessionMsg;
    type State = mpsc::UnboundedSender<ChatEvent>;
    type Arguments = mpsc::UnboundedSender<ChatEvent>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        events: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(events)
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        events: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let event = match message {
            SessionMsg::Inbound(inbound) => match inbound.decode::<RoomMessage>()?.kind {
                Some(room_message::Kind::Relay(relay)) => ChatEvent::Relay(relay),
                Some(room_message::Kind::Ack(ack)) => ChatEvent::Acked(ack),
                Some(room_message::Kind::Rejected(r)) => ChatEvent::Rejected(r.reason),
                Some(room_message::Kind::Presence(p)) => ChatEvent::Presence(p),
                Some(room_message::Kind::Welcome(_)) | None => return Ok(()),
            },
            SessionMsg::Signal(SessionSignal::PeerFinished(..)) => ChatEvent::RoomFinished,
            SessionMsg::Signal(SessionSignal::Interrupted(_, cause)) => {
                ChatEvent::Interrupted(cause)
            }
            SessionMsg::Signal(SessionSignal::Resumed(_, resumption)) => {
                ChatEvent::Resumed(resumption)
            }
            SessionMsg::Signal(SessionSignal::Restarted { .. }) => ChatEvent::Restarted,
            SessionMsg::Signal(SessionSignal::Lost(lost)) => {
                let unconfirmed = lost
                    .unconfirmed
                    .iter()
                    .filter_map(|u| u.decode::<MemberMessage>().ok())
                    .filter_map(|m| match m.kind {
                        Some(member_message::Kind::Text(text)) => Some(text),
                        _ => None,
                    })
                    .collect();
                ChatEvent::Lost {
                    reason: lost.reason.clone(),
                    unconfirmed,
                }
            }
            SessionMsg::Signal(SessionSignal::Closed { reason, .. }) => {
                let _ = events.send(ChatEvent::Closed(reason));
                myself.stop(None);
                return Ok(());
            }
            SessionMsg::Signal(
                SessionSignal::Opened(_) | SessionSignal::Flow(..) | SessionSignal::HeldBack(..),
            ) => return Ok(()),
        };
        // The receiver gone means the member's owner left; nothing to tell.
        let _ = events.send(event);
        Ok(())
    }
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
    /// The member actor could not start.
    #[error("member actor failed to start: {0}")]
    Spawn(String),
}

/// A member that joined a room.
#[derive(Debug)]
pub struct Joined {
    /// The typed handle to the room.
    pub room: RemoteRef<ChatRoom>,
    /// The room's welcome.
    pub welcome: Welcome,
    /// What the room sends, in order.
    pub events: mpsc::UnboundedReceiver<ChatEvent>,
    /// The member actor owning the session.
    pub member: ActorRef<SessionMsg>,
}

/// Starts a member actor on `node`, opens a session to room `room` at `addr`, and joins
/// as `user`.
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
    let (tx, events) = mpsc::unbounded_channel();
    let (member, _) = Actor::spawn(None, ChatMember, tx)
        .await
        .map_err(|e| JoinError::Spawn(e.to_string()))?;
    let result = async {
        let remote: RemoteRef<ChatRoom> = node.connect(addr, room, &member).await?;
        let reply = remote
            .call(
                Join {
                    user: user.to_owned(),
                },
                timeout,
            )
            .await?;
        match reply.kind {
            Some(room_message::Kind::Welcome(welcome)) => Ok((remote, welcome)),
            Some(room_message::Kind::Rejected(r)) => Err(JoinError::Rejected(r.reason)),
            _ => Err(JoinError::Rejected("unexpected reply to join".into())),
        }
    }
    .await;
    match result {
        Ok((room, welcome)) => Ok(Joined {
            room,
            welcome,
            events,
            member,
        }),
        Err(error) => {
            member.stop(None);
            Err(error)
        }
    }
}
