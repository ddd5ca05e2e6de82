//! One session's protocol state, with no I/O, no clock and no runtime: the sans-IO core
//! in the manner of `quinn-proto`.
//!
//! Inputs: [`Session::handle_frame`], [`Session::handle_timeout`], [`Session::send`],
//! [`Session::confirm_delivered`], [`Session::finish`], [`Session::accept`] /
//! [`Session::refuse`], [`Session::end`], [`Session::stream_broken`],
//! [`Session::begin_resume`] / [`Session::resume_proven`], [`Session::give_up`]. A resume
//! stream reaching an acceptor first passes a [`ResumeGate`], which holds it until it
//! proves the session's resume key; until then no session is touched.
//! Outputs: [`Session::poll_transmit`] (frames to write), [`Session::poll_event`] (what
//! the owner must learn) and [`Session::poll_timeout`] (when to call `handle_timeout`).
//! The driver (`crate::driver`) moves frames between this struct and gRPC streams;
//! everything that decides anything lives here.
//!
//! By concern:
//! - `handshake`: greeting and mutual authentication, first and on each resume.
//! - `gate`: the acceptor's side of a resume, before the stream may reach the session.
//! - `resume`: a stream breaking, and the session going on over the next one.
//! - `replay`: the replay buffer (sent, not yet acknowledged) and this side's acks.
//! - `flow`: credit and back-pressure signals, both ways.
//! - `timers`: the one timer table, and what each deadline does when it passes.
//!
//! The state ([`State`]) carries what is valid only in it: a handshake's nonces and proof
//! while greeting or resuming, the silence watch while established, the cause and the
//! state to return to while interrupted, the reason once closed. [`Phase`] is its
//! summary, as tests and the diagram below name it.
//!
//! ```text
//!              initiator                          acceptor
//!   Init --send Hello--> AwaitingPeer    Init --recv Hello, send Challenge--> AwaitingPeer
//!   AwaitingPeer --recv Challenge (proof ok), send Proof--> AwaitingPeer
//!                                        AwaitingPeer --recv Proof (ok)--> Authenticated
//!                                        Authenticated --accept(): send Welcome--> Active
//!   AwaitingPeer --recv Welcome--> Active
//!
//!   Active --finish(): Goodbye after queued data--> Finishing
//!   Active/Finishing --recv Goodbye(Finished)--> (peer finished; may still send)
//!   Finishing + peer finished + all ours acked + all theirs delivered --> Closed(Finished)
//!
//!   Active/Finishing --stream broke / peer silent--> Interrupted
//!   Interrupted --initiator: begin_resume (Hello{resume})--> Resuming
//!   Resuming --acceptor proved, resume key proved, Welcome{last received}: replay the rest--> Active/Finishing  (Resumed)
//!   Resuming --attempt failed--> Interrupted
//!   acceptor: Active/Finishing/Interrupted --resume_proven (a stream passed the gate):
//!             send Welcome{last received}, replay the rest--> Active/Finishing  (Resumed)
//!   Interrupted/Resuming --deadline, peer restarted, window or budget overflow, refused--> Closed(Lost(reason))
//!   Active/Finishing --recv Goodbye(other reason)--> Closed(Lost(PeerEnded))
//!
//!   before Active: bad proof / Refuse / protocol error / timeout / broken stream --> Closed(reason)
//! ```
//!
//! (`Init`, `AwaitingPeer` and `Authenticated` are [`State::Greeting`]; `Active` and
//! `Finishing` are [`State::Established`]; `Interrupted` and `Resuming` are
//! [`State::Interrupted`], without and with a handshake under way on a new stream.)
//!
//! Delivery: every envelope gets the next per-direction sequence number. The receiver
//! accepts the next expected one, drops ones it already has (a replay), and treats a gap
//! as a protocol error. It acknowledges cumulatively only what the driver confirmed
//! delivered into the owner's mailbox ([`Session::confirm_delivered`]), piggybacked on its
//! next batch, or as a lone `Ack` after `ack_every` messages or `ack_delay`. Sent envelopes
//! stay in the replay buffer until acknowledged; after a resume, each side re-sends what
//! the other has not received, so every message reaches the mailbox exactly once while
//! both node incarnations live and the gap fits the replay window.

use std::collections::VecDeque;
use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::{CertDigest, ResumeKey, Secret, TlsBinding};
use crate::budget::Account;
use crate::error::{
    CloseReason, InterruptCause, LostReason, ProtocolError, ReplayLimit, SendError,
};
use crate::signal::FlowSignal;
use crate::wire::{
    Body, BodyKind, Envelope, Flow, Frame, FrameError, Goodbye, GoodbyeReason, NodeIdentity, Nonce,
    Refusal, RefuseReason, SessionId,
};

mod counters;
mod flow;
mod gate;
mod handshake;
mod replay;
mod resume;
mod timers;

pub use counters::SessionCounters;
pub use flow::FlowState;
use flow::{HeldBack, InboundBudget, Inflow, Outflow, Unbounded};
pub(crate) use gate::{GateRefusal, GateVerdict, ProvenResume, ResumeGate};
use handshake::{Handshake, Step};
use replay::{Acks, Replay};
use timers::{Timer, TimerTable};

/// Tunables of one session. The defaults suit small messages on a LAN.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Most envelopes in one batch frame.
    pub max_batch_messages: usize,
    /// Batch frames stop growing past this many payload bytes (a single larger message
    /// still travels alone).
    pub max_batch_bytes: usize,
    /// Send a lone ack once this many delivered messages are unacknowledged.
    pub ack_every: u64,
    /// Send a lone ack at most this long after a delivery, if no batch carried one.
    pub ack_delay: Duration,
    /// The handshake must complete within this time.
    pub handshake_timeout: Duration,
    /// Largest payload this side accepts in one envelope, in bytes. The smaller of the
    /// two sides' limits applies to sending.
    pub max_message_bytes: u64,
    /// Most unacknowledged messages the replay buffer holds.
    pub replay_max_messages: usize,
    /// Most unacknowledged payload bytes the replay buffer holds. All sessions with one
    /// peer, and all sessions of the node, are bounded together as well
    /// ([`crate::settings::BudgetConfig`]).
    pub replay_max_bytes: usize,
    /// How long an interrupted session may take to resume before it is lost.
    pub resume_timeout: Duration,
    /// With data unacknowledged, a peer silent for this long interrupts the session.
    pub silence_timeout: Duration,
    /// How many messages the peer may send ahead of this side's actor consuming them:
    /// the bound on this session's share of the actor's mailbox, in messages.
    pub credit_window: u64,
    /// How many payload bytes the peer may send ahead of this side's actor consuming
    /// them, at most: the bound in bytes (never below `max_message_bytes`, capped by the
    /// session's inbound budget, [`crate::settings::BudgetConfig::session_inbound_bytes`]). The
    /// peer is granted `initial_credit_bytes` at first, and more as it uses what it was
    /// granted, up to this; every byte granted and not yet consumed is reserved in the
    /// node's inbound budgets.
    pub credit_window_bytes: u64,
    /// The byte credit granted in the handshake, before the peer sent anything: what an
    /// idle session holds of the inbound budgets.
    pub initial_credit_bytes: u64,
    /// Pause the peer automatically when this fraction of the credit window waits in the
    /// mailbox, and resume it below `flow_low_watermark`. `None`: never automatically.
    pub flow_high_watermark: Option<f64>,
    /// See `flow_high_watermark`.
    pub flow_low_watermark: f64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_batch_messages: 1024,
            max_batch_bytes: 64 * 1024,
            ack_every: 256,
            ack_delay: Duration::from_millis(5),
            handshake_timeout: Duration::from_secs(10),
            max_message_bytes: 4 * 1024 * 1024,
            replay_max_messages: 1 << 20,
            replay_max_bytes: 256 * 1024 * 1024,
            resume_timeout: Duration::from_secs(30),
            silence_timeout: Duration::from_secs(3),
            credit_window: crate::wire::DEFAULT_CREDIT_WINDOW,
            credit_window_bytes: 4 * 1024 * 1024,
            initial_credit_bytes: crate::wire::DEFAULT_CREDIT_WINDOW_BYTES,
            flow_high_watermark: Some(0.75),
            flow_low_watermark: 0.25,
        }
    }
}

/// Which end of the session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opened the session (sent `Hello`).
    Initiator,
    /// Accepted the session.
    Acceptor,
}

/// A stream given up: why, in a word, and the transport's own words when it said more
/// (a session still greeting closes with them: they tell a TLS failure from a refusal).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Broken {
    pub(crate) cause: InterruptCause,
    pub(crate) detail: Option<String>,
}

impl From<InterruptCause> for Broken {
    fn from(cause: InterruptCause) -> Self {
        Self {
            cause,
            detail: None,
        }
    }
}

/// The session's state, with what is valid only in it; see the module doc.
#[derive(Debug)]
enum State {
    /// The first handshake is under way.
    Greeting(Handshake),
    /// Data flows.
    Established {
        stage: Stage,
        /// Since when this side waits for an ack, with data in flight: what the silence
        /// deadline counts from.
        waiting_since: Option<Instant>,
    },
    /// The stream broke; the session waits for a new one, or re-authenticates on it.
    Interrupted {
        /// Where a resume returns to.
        resume_to: Stage,
        /// Why the last stream went.
        cause: InterruptCause,
        /// The handshake on a new stream, once there is one.
        stream: Option<Handshake>,
    },
    /// Over, for the given reason (`Lost(..)` when messages may be unconfirmed).
    Closed(CloseReason),
}

/// How far an established session is in its farewell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Data flows both ways.
    Active,
    /// This side finished; waiting for the peer's final messages, farewell and acks.
    Finishing,
}

/// The session's state as observers name it (the module doc's diagram).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Phase {
    /// Nothing exchanged yet.
    Init,
    /// Handshake under way.
    AwaitingPeer,
    /// Acceptor only: the peer proved the secret; the node decides whether to admit it.
    Authenticated,
    /// Data flows both ways.
    Active,
    /// This side finished; waiting for the peer's final messages, farewell and acks.
    Finishing,
    /// The stream broke; waiting for a new one.
    Interrupted,
    /// A new stream is re-authenticating to resume the session.
    Resuming,
    /// Over, for the given reason (`Lost(..)` when messages may be unconfirmed).
    Closed(CloseReason),
}

/// What the owner of a session must learn, in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Event {
    /// Acceptor: the peer authenticated and asks for `target`, speaking `protocol`
    /// (empty: unspecified); call `accept` or `refuse`.
    Authenticated {
        peer: NodeIdentity,
        target: String,
        protocol: String,
    },
    /// The handshake completed.
    Established,
    /// The next message in order; confirm it with `confirm_delivered` once delivered.
    Message(Envelope),
    /// The peer finished politely: it sends nothing more, but still receives.
    PeerFinished(Goodbye),
    /// The stream broke; the session waits for a new one.
    Interrupted(InterruptCause),
    /// The session continues on a new stream; `replayed` messages were sent again.
    Resumed { replayed: u64 },
    /// The peer sent a back-pressure signal (already obeyed by `send`).
    Flow(FlowSignal),
    /// Credit arrived or a pause ended: senders waiting may try again.
    CanSend,
    /// A sender has been held back by the peer (no credit, or paused) for `waited`,
    /// though the peer restated its flow state when asked: its actor is not consuming.
    HeldBack {
        waited: Duration,
        credit_left: u64,
        peer_signal: Option<FlowSignal>,
    },
    /// The session is over; the messages the peer never confirmed come back.
    Closed(CloseReason, Vec<Envelope>),
}

/// One session's protocol state machine.
#[derive(Debug)]
pub(crate) struct Session {
    role: Role,
    config: SessionConfig,
    secret: Secret,
    id: SessionId,
    local: NodeIdentity,
    /// This side's nonce for the current stream's handshake.
    local_nonce: Nonce,
    /// The peer the session was established with; a resume must come from it.
    peer: Option<NodeIdentity>,
    /// Derived from the first handshake: what a resume proves (see `crate::auth`).
    resume_key: Option<ResumeKey>,
    target: String,
    /// The protocol the initiator speaks to `target`, as its `Hello` names it (empty:
    /// unspecified); every `Hello` of the session, resumes too, repeats it.
    protocol: String,
    /// What the proofs are bound to over TLS.
    tls: TlsBinding,
    peer_max_message_bytes: u64,
    state: State,
    /// Bumped every time the current stream is given up.
    generation: u64,
    /// The cluster declared the peer's node unreachable and it has not been heard from
    /// since: sends fail at once ([`SendError::PeerUnreachable`]) instead of waiting in
    /// the replay buffer for a resume that may never come.
    peer_unreachable: bool,
    last_heard: Option<Instant>,

    /// What this side sent and the peer has not acknowledged.
    replay: Replay,
    /// What this side received, delivered and acknowledged.
    acks: Acks,

    local_goodbye: Option<Goodbye>,
    goodbye_sent: bool,
    peer_goodbye: Option<Goodbye>,

    /// What this side may send: credit and the peer's signals.
    outflow: Outflow,
    /// What this side lets the peer send: consumption, grants and watermarks.
    inflow: Inflow,
    /// A sender held back by the peer, watched so it never waits without a word.
    held_back: HeldBack,
    /// Its charges against the peer's and the node's memory budgets, once established
    /// (`None`: no budgets but the session's own).
    account: Option<Arc<Account>>,

    timers: TimerTable,
    control: VecDeque<Frame>,
    events: VecDeque<Event>,
    /// What it carried so far.
    counters: SessionCounters,
}

impl Session {
    /// A session that will greet `target` on the peer node; its `Hello` is the first
    /// frame `poll_transmit` yields.
    pub(crate) fn initiator(
        config: SessionConfig,
        secret: Secret,
        local: NodeIdentity,
        id: SessionId,
        target: String,
        nonce: Nonce,
        now: Instant,
    ) -> Self {
        let mut session = Self::new(Role::Initiator, config, secret, local, id, nonce, now);
        session.target = target;
        session.control.push_back(session.hello(None));
        session.state = State::Greeting(Handshake::new(Step::AwaitingPeer));
        session
    }

    /// A session waiting for a peer's `Hello`.
    pub(crate) fn acceptor(
        config: SessionConfig,
        secret: Secret,
        local: NodeIdentity,
        nonce: Nonce,
        now: Instant,
    ) -> Self {
        // The real id arrives with the Hello.
        let placeholder = SessionId(uuid::Uuid::nil());
        Self::new(
            Role::Acceptor,
            config,
            secret,
            local,
            placeholder,
            nonce,
            now,
        )
    }

    fn new(
        role: Role,
        config: SessionConfig,
        secret: Secret,
        local: NodeIdentity,
        id: SessionId,
        nonce: Nonce,
        now: Instant,
    ) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Handshake, now + config.handshake_timeout);
        Self {
            role,
            peer_max_message_bytes: config.max_message_bytes,
            secret,
            id,
            local,
            local_nonce: nonce,
            peer: None,
            resume_key: None,
            target: String::new(),
            protocol: String::new(),
            tls: TlsBinding::Plaintext,
            state: State::Greeting(Handshake::new(Step::Init)),
            generation: 0,
            peer_unreachable: false,
            last_heard: None,
            replay: Replay::new(),
            acks: Acks::default(),
            local_goodbye: None,
            goodbye_sent: false,
            peer_goodbye: None,
            outflow: Outflow::new(
                crate::wire::DEFAULT_CREDIT_WINDOW,
                crate::wire::DEFAULT_CREDIT_WINDOW_BYTES,
                now,
            ),
            inflow: Inflow::new(&config),
            held_back: HeldBack::default(),
            account: None,
            timers,
            control: VecDeque::new(),
            events: VecDeque::new(),
            counters: SessionCounters::default(),
            config,
        }
    }

    /// Initiator: names the protocol its `Hello` announces (empty: unspecified). Call it
    /// on a new session, before the first `poll_transmit`.
    pub(crate) fn with_protocol(mut self, protocol: String) -> Self {
        self.protocol = protocol;
        if let Some(Frame::Hello(hello)) = self.control.front_mut() {
            hello.protocol.clone_from(&self.protocol);
        }
        self
    }

    /// Initiator over TLS: the certificate the connection of the stream that just opened
    /// was verified by (its proofs are bound to it).
    pub(crate) fn tls_verified(&mut self, cert: Option<CertDigest>) {
        if let TlsBinding::Verified(seen) = &mut self.tls {
            *seen = cert;
        }
    }

    /// Binds the proofs to TLS as `tls` says (an initiator's `Hello` then asks for it).
    /// Call it on a new session, before the first `poll_transmit`.
    pub(crate) fn with_tls_binding(mut self, tls: TlsBinding) -> Self {
        self.tls = tls;
        let binds = self.binds_tls();
        if let Some(Frame::Hello(hello)) = self.control.front_mut() {
            hello.bind_tls_certificate = binds;
        }
        self
    }

    /// The session's id (for an acceptor, known once the `Hello` arrived).
    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    /// What it carried so far.
    pub(crate) fn counters(&self) -> SessionCounters {
        self.counters
    }

    /// This end's role.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The current state, as the module doc's diagram names it.
    pub(crate) fn phase(&self) -> Phase {
        match &self.state {
            State::Greeting(handshake) => match handshake.step {
                Step::Init => Phase::Init,
                Step::AwaitingPeer => Phase::AwaitingPeer,
                Step::Authenticated => Phase::Authenticated,
            },
            State::Established {
                stage: Stage::Active,
                ..
            } => Phase::Active,
            State::Established {
                stage: Stage::Finishing,
                ..
            } => Phase::Finishing,
            State::Interrupted {
                stream: Some(handshake),
                ..
            } if handshake.step != Step::Init => Phase::Resuming,
            State::Interrupted { .. } => Phase::Interrupted,
            State::Closed(reason) => Phase::Closed(reason.clone()),
        }
    }

    /// The peer node, once it introduced itself.
    pub(crate) fn peer(&self) -> Option<&NodeIdentity> {
        self.peer
            .as_ref()
            .or_else(|| self.handshake().and_then(|h| h.peer.as_ref()))
    }

    /// The name of the actor on the acceptor's node this session talks to.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Whether the session is over.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// Whether data flows (`Active` or `Finishing`).
    fn is_established(&self) -> bool {
        matches!(self.state, State::Established { .. })
    }

    /// Whether the session waits for a new stream (interrupted, or resuming on one).
    pub(crate) fn is_interrupted(&self) -> bool {
        matches!(self.state, State::Interrupted { .. })
    }

    /// The handshake under way on the current stream, if one is.
    fn handshake(&self) -> Option<&Handshake> {
        match &self.state {
            State::Greeting(handshake)
            | State::Interrupted {
                stream: Some(handshake),
                ..
            } => Some(handshake),
            _ => None,
        }
    }

    fn handshake_mut(&mut self) -> Option<&mut Handshake> {
        match &mut self.state {
            State::Greeting(handshake)
            | State::Interrupted {
                stream: Some(handshake),
                ..
            } => Some(handshake),
            _ => None,
        }
    }

    /// Counts the streams given up so far; a driver whose stream was given up (the core
    /// interrupted itself, say for silence) sees it change.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Messages sent or queued that the peer has not acknowledged yet.
    pub(crate) fn unacked(&self) -> usize {
        self.replay.unacked()
    }

    /// The largest payload this session may send: the smaller of both sides' limits.
    pub(crate) fn send_limit(&self) -> u64 {
        self.config
            .max_message_bytes
            .min(self.peer_max_message_bytes)
    }

    /// Charges the session's replay buffer and its peer's deliveries to `account` (the
    /// peer's and the node's budgets) from now on.
    ///
    /// The byte credit granted so far (the handshake's) is charged to the inbound budgets
    /// whatever they hold: it is granted already. The byte window is capped at the
    /// session's inbound budget.
    pub(crate) fn set_account(&mut self, account: Arc<Account>) {
        account.charge_replay(self.replay.unacked_bytes);
        account.charge_inbound(self.inflow.outstanding_bytes());
        self.inflow.cap_window_bytes(
            account.session_inbound_bytes(),
            self.config.max_message_bytes,
        );
        self.account = Some(account);
    }

    /// Queues a message; returns its sequence number.
    ///
    /// While interrupted, messages keep being accepted into the replay buffer, so a short
    /// break is invisible to senders; overflowing the replay window or a replay budget
    /// then loses the session ([`LostReason::ReplayFull`]).
    ///
    /// # Errors
    /// The message comes back in the error when the session does not take data now
    /// ([`SendError::Closed`], [`SendError::NotReady`]), the peer holds this side back
    /// ([`SendError::HeldBack`]: no credit, paused, throttled; replies are never held
    /// back), the replay window or a replay budget is full while the stream is up
    /// ([`SendError::Full`]), or the payload exceeds [`Session::send_limit`]
    /// ([`SendError::TooLarge`]).
    ///
    /// `now` is read only when a resume-after or a throttle is in effect.
    pub(crate) fn send(
        &mut self,
        body: Body,
        now: impl Fn() -> Instant,
    ) -> Result<u64, SendError<Body>> {
        let sending = match &self.state {
            State::Established { stage, .. } => *stage == Stage::Active,
            State::Interrupted { resume_to, .. } => *resume_to == Stage::Active,
            State::Greeting(_) => return Err(SendError::NotReady(body)),
            State::Closed(_) => false,
        };
        if !sending {
            return Err(self.closed(body));
        }
        // A reply still waits for a resume: its caller is on the other side and may be
        // back, and it is the peer's unreachability, not this side's, that it would learn.
        if self.peer_unreachable && !matches!(body.kind, BodyKind::Reply { .. }) {
            return Err(SendError::PeerUnreachable { message: body });
        }
        let limit = self.send_limit();
        let size = body.payload.len();
        if size as u64 > limit {
            return Err(SendError::TooLarge {
                size: size as u64,
                limit,
                message: body,
            });
        }
        // Replies skip credit and signals: they never wait in the peer's mailbox (a
        // caller is waiting for them), and holding them back could deadlock two callers.
        let reply = matches!(body.kind, BodyKind::Reply { .. });
        let next_seq = self.replay.next_seq;
        if !reply && let Some((by, _)) = self.outflow.hold_sized(next_seq, size as u64, &now) {
            if self.outflow.held_back(next_seq) {
                self.held_back.refused(now());
            }
            if self.is_established()
                && let Some(query) = self.outflow.byte_query()
            {
                self.control.push_back(Frame::FlowQuery(query));
            }
            return Err(SendError::HeldBack { by, message: body });
        }
        let full = if self.replay.unacked() + 1 > self.config.replay_max_messages
            || self.replay.unacked_bytes + size > self.config.replay_max_bytes
        {
            Err(ReplayLimit::Session {
                messages: self.config.replay_max_messages,
                bytes: self.config.replay_max_bytes,
            })
        } else {
            self.account
                .as_ref()
                .map_or(Ok(()), |account| account.reserve_replay(size))
        };
        if let Err(limit) = full {
            if self.is_established() {
                return Err(SendError::Full {
                    limit,
                    message: body,
                });
            }
            self.lose(LostReason::ReplayFull(limit));
            return Err(self.closed(body));
        }
        self.outflow.sent(size as u64, &now);
        self.counters.messages_out += 1;
        self.counters.bytes_out += size as u64;
        Ok(self.replay.push(body))
    }

    /// Gives back to the budgets what the replay buffer no longer holds.
    fn settle_replay(&self) {
        if let Some(account) = &self.account {
            account.settle_replay(self.replay.unacked_bytes);
        }
    }

    /// Until when a send must wait, if it must: `Some(None)` until credit or a resume
    /// arrives, `Some(Some(t))` until `t` (a resume-after or a throttle).
    pub(crate) fn send_blocked(&self, now: Instant) -> Option<Option<Instant>> {
        self.outflow.blocked(self.replay.next_seq, || now)
    }

    /// Records that the owner consumed (dropped) messages: up to `consumed` in all, of
    /// `consumed_bytes` payload bytes in all. This is what grants the peer more credit and
    /// lifts an automatic pause.
    ///
    /// A byte grant is reserved in the inbound budgets (its peer's and the node's) first;
    /// what they cannot cover yet is withheld, and calling this again, with more consumed
    /// or not, looks again.
    pub(crate) fn consumed(&mut self, consumed: u64, consumed_bytes: u64) {
        let flow = self
            .inflow
            .consumed(consumed, consumed_bytes, &mut budget_of(&self.account));
        if let Some(account) = &self.account {
            account.set_withheld(self.inflow.withheld());
            account.set_peer_waits(self.inflow.peer_waits());
        }
        if let Some(flow) = flow {
            self.push_flow(flow);
        }
    }

    /// Consumed bytes worth reporting to the core at once: an eighth of what the byte
    /// grant keeps open (or every message, while a grant is withheld).
    pub(crate) fn consumed_bytes_step(&self) -> u64 {
        self.inflow.target() / 8
    }

    /// Sends a back-pressure signal to the peer (after the resume, if interrupted). A
    /// `Resume` while a fan-out holds the peer back lifts the owner's own signal only.
    pub(crate) fn signal_peer(&mut self, signal: FlowSignal) {
        self.inflow.signalled(signal);
        if signal == FlowSignal::Resume && self.inflow.pausing() {
            return;
        }
        if self.is_established() {
            self.push_flow(Flow {
                signal: Some(signal),
                ..Flow::default()
            });
        } else {
            self.inflow.unsent(signal);
        }
    }

    /// A fan-out holds the peer back (pauses it) until [`Session::release_peer`], apart
    /// from the owner's own signals.
    pub(crate) fn hold_peer(&mut self) {
        if let Some(signal) = self.inflow.hold() {
            self.push_flow(Flow {
                signal: Some(signal),
                ..Flow::default()
            });
        }
    }

    /// A fan-out's hold on the peer ends.
    pub(crate) fn release_peer(&mut self) {
        if let Some(signal) = self.inflow.unhold() {
            self.push_flow(Flow {
                signal: Some(signal),
                ..Flow::default()
            });
        }
    }

    fn push_flow(&mut self, flow: Flow) {
        // While interrupted, the resume restates the grant and the pause.
        if self.is_established() {
            self.control.push_back(Frame::Flow(flow));
        }
    }

    /// The message credit the peer granted so far (cumulative): it grows as the peer's
    /// owner consumes, even while the peer pauses this side.
    pub(crate) fn peer_grant(&self) -> u64 {
        self.outflow.granted()
    }

    /// The session's flow state, both ways.
    pub(crate) fn flow(&self, now: Instant) -> FlowState {
        let next_seq = self.replay.next_seq;
        FlowState {
            credit: self.outflow.credit_left(next_seq),
            credit_bytes: self.outflow.credit_bytes_left(),
            send_blocked: self.outflow.blocked(next_seq, || now).is_some()
                || self.outflow.waits_for_bytes(next_seq),
            peer_signal: self.outflow.signal(),
            throttled_to: self.outflow.throttled_to(),
            inbound_waiting: self.inflow.waiting(),
            inbound_waiting_bytes: self.inflow.waiting_bytes(),
            inbound_granted_bytes: self.inflow.outstanding_bytes(),
            pausing_peer: self.inflow.pausing(),
            credit_withheld: self.inflow.withheld(),
        }
    }

    /// Aborts: no drain, no retries; the peer learns `Aborted` at once, and every message
    /// not confirmed comes back to the owner.
    pub(crate) fn abort(&mut self, detail: String) {
        if self.is_closed() {
            return;
        }
        if self.is_established() {
            let goodbye = Goodbye {
                reason: GoodbyeReason::Aborted,
                detail: detail.clone(),
                last_seq: self.replay.transmitted,
            };
            // Nothing queued goes out: the farewell names the last message sent.
            self.replay.unsend();
            self.control.clear();
            self.control.push_back(Frame::Goodbye(goodbye));
        }
        self.close(CloseReason::Ended {
            reason: GoodbyeReason::Aborted,
            detail,
        });
    }

    /// Half-closes: after the queued data, a `Goodbye(Finished)`. The peer may still
    /// send; the session closes once both sides finished and everything is acknowledged.
    pub(crate) fn finish(&mut self) {
        let last_seq = self.replay.next_seq - 1;
        let stage = match &mut self.state {
            State::Established { stage, .. } => stage,
            State::Interrupted { resume_to, .. } => resume_to,
            _ => return,
        };
        if *stage != Stage::Active {
            return;
        }
        *stage = Stage::Finishing;
        self.local_goodbye = Some(Goodbye {
            reason: GoodbyeReason::Finished,
            detail: String::new(),
            last_seq,
        });
        if self.is_established() {
            self.check_finished();
        }
    }

    /// Ends the session now for `reason`: the queued data and a `Goodbye` still go out
    /// (if a stream is up), but nothing more is received. Messages not yet acknowledged
    /// come back to the owner with the `Closed` event.
    pub(crate) fn end(&mut self, reason: GoodbyeReason, detail: String) {
        match self.state {
            State::Closed(_) => {}
            State::Established { .. } => {
                self.local_goodbye = Some(Goodbye {
                    reason,
                    detail: detail.clone(),
                    last_seq: self.replay.next_seq - 1,
                });
                self.close(CloseReason::Ended { reason, detail });
            }
            State::Interrupted { .. } => {
                self.control.clear();
                self.close(CloseReason::Ended { reason, detail });
            }
            State::Greeting(_) => {
                let refusal = Refusal {
                    reason: match reason {
                        GoodbyeReason::NodeShutdown => RefuseReason::ShuttingDown,
                        GoodbyeReason::LimitExceeded => RefuseReason::LimitExceeded,
                        _ => RefuseReason::ProtocolError,
                    },
                    detail: detail.clone(),
                };
                self.control.push_back(Frame::Refuse(refusal));
                self.close(CloseReason::Ended { reason, detail });
            }
        }
    }

    /// Feeds one frame from the peer.
    pub(crate) fn handle_frame(&mut self, frame: Frame, now: Instant) {
        if self.is_closed() {
            return;
        }
        self.last_heard = Some(now);
        let proof_sent = self.handshake().is_some_and(|h| h.proof_sent);
        match (self.role, self.phase(), frame) {
            (Role::Acceptor, Phase::Init, Frame::Hello(hello)) => self.on_hello(hello),
            (Role::Initiator, Phase::AwaitingPeer | Phase::Resuming, Frame::Challenge(c))
                if !proof_sent =>
            {
                self.on_challenge(c)
            }
            (Role::Acceptor, Phase::AwaitingPeer, Frame::Proof(proof)) => self.on_proof(&proof),
            (Role::Initiator, Phase::AwaitingPeer, Frame::Welcome(None)) if proof_sent => {
                self.established();
            }
            (Role::Initiator, Phase::Resuming, Frame::Welcome(Some(last))) if proof_sent => {
                self.resumed(last);
            }
            (_, Phase::Init | Phase::AwaitingPeer | Phase::Authenticated, Frame::Refuse(r)) => {
                self.close(CloseReason::RefusedByPeer(r));
            }
            (_, Phase::Resuming, Frame::Refuse(r)) => {
                self.lose(LostReason::ResumeRefused(r));
            }
            (_, Phase::Active | Phase::Finishing, Frame::Batch(batch)) => self.on_batch(batch),
            (_, Phase::Active | Phase::Finishing, Frame::Ack(seq)) => self.on_ack(seq),
            (_, Phase::Active | Phase::Finishing, Frame::Goodbye(g)) => self.on_goodbye(g),
            (_, Phase::Active | Phase::Finishing, Frame::Flow(flow)) => self.on_flow(flow, now),
            (_, Phase::Active | Phase::Finishing, Frame::FlowQuery(query)) => {
                let flow = self.inflow.asked(query, &mut budget_of(&self.account));
                if let Some(account) = &self.account {
                    account.set_withheld(self.inflow.withheld());
                }
                self.control.push_back(Frame::Flow(flow));
            }
            (_, phase, frame) => {
                self.violation(ProtocolError::UnexpectedFrame {
                    frame: frame.kind(),
                    state: phase.name(),
                });
            }
        }
    }

    /// A frame that did not parse arrived.
    pub(crate) fn handle_malformed(&mut self, error: FrameError) {
        self.handle_protocol_error(ProtocolError::Malformed(error));
    }

    /// The peer broke the protocol in a way the transport detected (an oversized frame).
    pub(crate) fn handle_protocol_error(&mut self, error: ProtocolError) {
        if !self.is_closed() {
            self.violation(error);
        }
    }

    /// The next frame to write on the current stream, if any.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        if let Some(frame) = self.control.pop_front() {
            // Control frames come a few at a time (a handshake's, a grant): an idle
            // session keeps no room for them.
            if self.control.is_empty() {
                self.control = VecDeque::new();
            }
            return Some(frame);
        }
        if !(self.is_established() || self.is_closed()) {
            return None;
        }
        if !self.replay.queued.is_empty() {
            return Some(Frame::Batch(self.next_batch(now)));
        }
        if mem::take(&mut self.acks.ack_now) && self.acks.delivered > self.acks.ack_sent {
            return Some(Frame::Ack(self.take_ack()));
        }
        if let Some(goodbye) = self.local_goodbye.take() {
            self.goodbye_sent = true;
            self.check_finished();
            return Some(Frame::Goodbye(goodbye));
        }
        None
    }

    /// Whether the outgoing direction is done for good: closed, and nothing left to write.
    pub(crate) fn is_transmit_done(&self) -> bool {
        self.is_closed()
            && self.control.is_empty()
            && self.replay.queued.is_empty()
            && self.local_goodbye.is_none()
            && !self.acks.ack_pending()
    }

    /// Whether `poll_transmit` has something to write now.
    pub(crate) fn wants_transmit(&self) -> bool {
        if !self.control.is_empty() {
            return true;
        }
        (self.is_established() || self.is_closed())
            && (!self.replay.queued.is_empty()
                || self.acks.ack_pending()
                || self.local_goodbye.is_some())
    }

    /// Whether `poll_event` has something.
    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event for the owner, if any (the driver takes them all at once:
    /// [`Session::take_events`]).
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Every event for the owner, in order. The queue's room goes with them, so an idle
    /// session keeps none.
    pub(crate) fn take_events(&mut self) -> Vec<Event> {
        Vec::from(mem::take(&mut self.events))
    }

    fn on_flow(&mut self, flow: Flow, now: Instant) {
        let update = self.outflow.update(&flow, now);
        if self.outflow.held_back(self.replay.next_seq) {
            self.held_back.heard_flow();
        } else {
            self.held_back.clear();
        }
        if let Some(signal) = flow.signal.filter(|_| update.changed) {
            self.events.push_back(Event::Flow(signal));
        }
        if update.opened {
            self.events.push_back(Event::CanSend);
        }
    }

    fn on_goodbye(&mut self, goodbye: Goodbye) {
        if let Some(seen) = &self.peer_goodbye {
            if *seen != goodbye {
                // A finished peer that then aborts (or shuts down): that ends it.
                self.lose(LostReason::PeerEnded(goodbye));
            }
            // Otherwise a farewell repeated after a resume.
            return;
        }
        if goodbye.last_seq != self.acks.received {
            self.violation(ProtocolError::GoodbyeMismatch {
                last_seq: goodbye.last_seq,
                received: self.acks.received,
            });
            return;
        }
        self.peer_goodbye = Some(goodbye.clone());
        if self.acks.delivered > self.acks.ack_sent {
            self.acks.ack_now = true;
        }
        if goodbye.reason == GoodbyeReason::Finished {
            self.events.push_back(Event::PeerFinished(goodbye));
            self.check_finished();
        } else {
            self.lose(LostReason::PeerEnded(goodbye));
        }
    }

    fn check_finished(&mut self) {
        let finishing = matches!(
            self.state,
            State::Established {
                stage: Stage::Finishing,
                ..
            }
        );
        if finishing
            && self.goodbye_sent
            && self.peer_goodbye.is_some()
            && self.replay.is_empty()
            && self.acks.delivered == self.acks.received
        {
            self.close(CloseReason::Finished);
        }
    }

    fn violation(&mut self, error: ProtocolError) {
        let detail = error.to_string();
        if self.is_established() {
            self.replay.queued.clear();
            self.local_goodbye = Some(Goodbye {
                reason: GoodbyeReason::ProtocolError,
                detail,
                last_seq: self.replay.next_seq - 1,
            });
        } else {
            self.control.push_back(Frame::Refuse(Refusal {
                reason: RefuseReason::ProtocolError,
                detail,
            }));
        }
        self.close(CloseReason::Protocol(error));
    }

    /// Over, with every message the peer did not confirm handed back.
    fn lose(&mut self, reason: LostReason) {
        self.local_goodbye = None;
        self.close(CloseReason::Lost(reason));
    }

    /// The refusal of a message sent to a session that takes no more: why it closed, or
    /// `None` while it finishes.
    fn closed<T>(&self, message: T) -> SendError<T> {
        let reason = match &self.state {
            State::Closed(reason) => Some(Box::new(reason.clone())),
            _ => None,
        };
        SendError::Closed { reason, message }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        self.timers.stop(Timer::Handshake);
        self.timers.stop(Timer::Resume);
        self.timers.stop(Timer::Ack);
        // Whatever is still queued will not be sent; with what is in flight it goes
        // back to the owner. (A goodbye queued by `end` still flushes what it can.)
        let unconfirmed = self.replay.unconfirmed(self.local_goodbye.is_some());
        self.settle_replay();
        self.state = State::Closed(reason.clone());
        self.events.push_back(Event::CanSend);
        self.events.push_back(Event::Closed(reason, unconfirmed));
    }
}

/// The inbound budgets a session's byte grants are reserved in: its account's, or none.
fn budget_of(account: &Option<Arc<Account>>) -> AccountBudget<'_> {
    AccountBudget {
        account: account.as_ref(),
        released: false,
    }
}

/// [`InboundBudget`] over a session's account (none: unbounded).
struct AccountBudget<'a> {
    account: Option<&'a Arc<Account>>,
    /// Bytes were given back: whoever waits for room may take them.
    released: bool,
}

impl InboundBudget for AccountBudget<'_> {
    fn reserve(&mut self, bytes: u64) -> u64 {
        match self.account {
            Some(account) => account.reserve_inbound(bytes),
            None => Unbounded.reserve(bytes),
        }
    }

    fn reserve_exact(&mut self, bytes: u64) -> bool {
        match self.account {
            Some(account) => account.reserve_inbound_exact(bytes),
            None => Unbounded.reserve_exact(bytes),
        }
    }

    fn release(&mut self, bytes: u64) {
        if let Some(account) = self.account
            && bytes > 0
        {
            account.release_inbound(bytes);
            self.released = true;
        }
    }

    fn settle(&mut self) {
        // Only what this session gave back wakes anyone: a session that woke itself
        // with every look would never sleep.
        if let Some(account) = self.account
            && self.released
        {
            account.wake_inbound_waiters();
        }
    }
}

impl Phase {
    /// The phase's name, for errors.
    fn name(&self) -> &'static str {
        match self {
            Self::Init => "Init",
            Self::AwaitingPeer => "AwaitingPeer",
            Self::Authenticated => "Authenticated",
            Self::Active => "Active",
            Self::Finishing => "Finishing",
            Self::Interrupted => "Interrupted",
            Self::Resuming => "Resuming",
            Self::Closed(_) => "Closed",
        }
    }
}

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod liveness_tests;
#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod tests;
// The harness of the core's tests, the session_core bench and the fuzz.
#[cfg(any(test, feature = "bench-internals"))]
pub mod testing;
