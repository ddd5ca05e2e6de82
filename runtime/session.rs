//! One session's protocol state, with no I/O, no clock and no runtime: the sans-IO core
//! in the manner of `quinn-proto`.
//!
//! Inputs: [`Session::handle_frame`], [`Session::handle_timeout`], [`Session::send`],
//! [`Session::confirm_delivered`], [`Session::finish`], [`Session::accept`] /
//! [`Session::refuse`], [`Session::end`], [`Session::stream_broken`],
//! [`Session::begin_resume`] / [`Session::attach_stream`], [`Session::give_up`].
//! Outputs: [`Session::poll_transmit`] (frames to write), [`Session::poll_event`] (what
//! the owner must learn) and [`Session::poll_timeout`] (when to call `handle_timeout`).
//! The drivers in `driver.rs` move frames between this struct and gRPC streams;
//! everything that decides anything lives here.
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
//!   Interrupted --initiator: begin_resume (Hello{resume}); acceptor: recv Hello{resume}--> Resuming
//!   Resuming --re-authenticated, Welcome{last received}: replay the rest--> Active/Finishing  (Resumed)
//!   Resuming --attempt failed--> Interrupted
//!   Interrupted/Resuming --deadline, peer restarted, window overflow, refused--> Closed(Lost(reason))
//!   Active/Finishing --recv Goodbye(other reason)--> Closed(Lost(PeerEnded))
//!
//!   before Active: bad proof / Refuse / protocol error / timeout / broken stream --> Closed(reason)
//! ```
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
use std::time::{Duration, Instant};

use crate::auth::{Nonce, ProofRole, Secret, Transcript};
use crate::error::{AuthError, CloseReason, LostReason, ProtocolError, SendError};
use crate::wire::{
    Batch, Body, Challenge, Envelope, Flow, FlowSignal, Frame, Goodbye, GoodbyeReason, Hello,
    NodeIdentity, PROTOCOL_VERSION, Refusal, RefuseReason, ResumeRequest, SessionId,
};

mod flow;

pub use flow::FlowState;
use flow::{HeldBack, HeldBackStep, Inflow, Outflow};

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
    /// Most unacknowledged payload bytes the replay buffer holds.
    pub replay_max_bytes: usize,
    /// How long an interrupted session may take to resume before it is lost.
    pub resume_timeout: Duration,
    /// With data unacknowledged, a peer silent for this long interrupts the session.
    pub silence_timeout: Duration,
    /// How many messages the peer may send ahead of this side's actor consuming them:
    /// the bound on this session's share of the actor's mailbox.
    pub credit_window: u64,
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
            flow_high_watermark: Some(0.75),
            flow_low_watermark: 0.25,
        }
    }
}

/// Which end of the session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opened the session (sent `Hello`).
    Initiator,
    /// Accepted the session.
    Acceptor,
}

/// The session's state; see the module doc for the diagram.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
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
    /// Acceptor: the peer authenticated and asks for `target`; call `accept` or `refuse`.
    Authenticated { peer: NodeIdentity, target: String },
    /// The handshake completed.
    Established,
    /// The next message in order; confirm it with `confirm_delivered` once delivered.
    Message(Envelope),
    /// The peer finished politely: it sends nothing more, but still receives.
    PeerFinished(Goodbye),
    /// The stream broke; the session waits for a new one.
    Interrupted(String),
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
pub struct Session {
    role: Role,
    config: SessionConfig,
    secret: Secret,
    id: SessionId,
    local: NodeIdentity,
    /// The peer as it introduced itself on the current stream.
    peer: Option<NodeIdentity>,
    /// The peer the session was established with; a resume must come from it.
    established_peer: Option<NodeIdentity>,
    target: String,
    local_nonce: Nonce,
    peer_nonce: Option<Nonce>,
    state: State,
    handshake_deadline: Option<Instant>,
    proof_sent: bool,
    peer_max_message_bytes: u64,

    /// What to return to after a resume (Active or Finishing).
    resume_to: State,
    resume_deadline: Option<Instant>,
    interrupt_cause: String,
    /// Acceptor: the initiator's last received, from its resume `Hello`.
    peer_resume_point: Option<u64>,
    /// Acceptor: a resume `Hello` for a session this node does not have.
    unknown_resume: bool,
    /// Bumped every time the current stream is given up.
    generation: u64,
    last_heard: Option<Instant>,
    waiting_since: Option<Instant>,

    next_seq: u64,
    transmitted: u64,
    queued: VecDeque<Envelope>,
    in_flight: VecDeque<Envelope>,
    unacked_bytes: usize,

    received: u64,
    delivered: u64,
    ack_sent: u64,
    ack_due: Option<Instant>,
    ack_now: bool,

    local_goodbye: Option<Goodbye>,
    goodbye_sent: bool,
    peer_goodbye: Option<Goodbye>,

    /// What this side may send: credit and the peer's signals.
    outflow: Outflow,
    /// What this side lets the peer send: consumption, grants and watermarks.
    inflow: Inflow,
    /// A sender held back by the peer, watched so it never waits without a word.
    held_back: HeldBack,

    control: VecDeque<Frame>,
    events: VecDeque<Event>,
}

impl Session {
    /// A session that will greet `target` on the peer node; its `Hello` is the first
    /// frame `poll_transmit` yields.
    pub fn initiator(
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
        session.state = State::AwaitingPeer;
        session
    }

    /// A session waiting for a peer's `Hello`.
    pub fn acceptor(
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
        Self {
            role,
            handshake_deadline: Some(now + config.handshake_timeout),
            peer_max_message_bytes: config.max_message_bytes,
            secret,
            id,
            local,
            peer: None,
            established_peer: None,
            target: String::new(),
            local_nonce: nonce,
            peer_nonce: None,
            state: State::Init,
            proof_sent: false,
            resume_to: State::Active,
            resume_deadline: None,
            interrupt_cause: String::new(),
            peer_resume_point: None,
            unknown_resume: false,
            generation: 0,
            last_heard: None,
            waiting_since: None,
            next_seq: 1,
            transmitted: 0,
            queued: VecDeque::new(),
            in_flight: VecDeque::new(),
            unacked_bytes: 0,
            received: 0,
            delivered: 0,
            ack_sent: 0,
            ack_due: None,
            ack_now: false,
            local_goodbye: None,
            goodbye_sent: false,
            peer_goodbye: None,
            outflow: Outflow::new(crate::wire::DEFAULT_CREDIT_WINDOW, now),
            inflow: Inflow::new(&config),
            held_back: HeldBack::default(),
            control: VecDeque::new(),
            events: VecDeque::new(),
            config,
        }
    }

    fn hello(&self, resume: Option<ResumeRequest>) -> Frame {
        Frame::Hello(Hello {
            session_id: self.id,
            from: self.local.clone(),
            target: self.target.clone(),
            protocol_version: PROTOCOL_VERSION,
            nonce: self.local_nonce,
            max_message_bytes: self.config.max_message_bytes,
            resume,
            credit_window: self.config.credit_window,
        })
    }

    /// The session's id (for an acceptor, known once the `Hello` arrived).
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The peer node, once it introduced itself.
    pub fn peer(&self) -> Option<&NodeIdentity> {
        self.established_peer.as_ref().or(self.peer.as_ref())
    }

    /// The name of the actor on the acceptor's node this session talks to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// Whether the session waits for a new stream (interrupted, or resuming on one).
    pub fn is_interrupted(&self) -> bool {
        matches!(self.state, State::Interrupted | State::Resuming)
    }

    /// Counts the streams given up so far; a driver whose stream was given up (the core
    /// interrupted itself, say for silence) sees it change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Messages sent or queued that the peer has not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.queued.len() + self.in_flight.len()
    }

    /// The largest payload this session may send: the smaller of both sides' limits.
    pub fn send_limit(&self) -> u64 {
        self.config
            .max_message_bytes
            .min(self.peer_max_message_bytes)
    }

    /// Queues a message; returns its sequence number.
    ///
    /// While interrupted, messages keep being accepted into the replay buffer, so a short
    /// break is invisible to senders; overflowing the buffer then loses the session
    /// ([`LostReason::WindowExceeded`]).
    ///
    /// # Errors
    /// The message comes back in the error when the session does not take data now
    /// ([`SendError::Closed`], [`SendError::NotReady`]), the replay window is full while
    /// the stream is up ([`SendError::Full`]), or the payload exceeds
    /// [`Session::send_limit`] ([`SendError::TooLarge`]).
    ///
    /// `now` is read only when a resume-after or a throttle is in effect.
    pub(crate) fn send(
        &mut self,
        body: Body,
        now: impl Fn() -> Instant,
    ) -> Result<u64, SendError<Body>> {
        let sending = match &self.state {
            State::Active => true,
            State::Interrupted | State::Resuming => self.resume_to == State::Active,
            State::Init | State::AwaitingPeer | State::Authenticated => {
                return Err(SendError::NotReady(body));
            }
            State::Finishing | State::Closed(_) => false,
        };
        if !sending {
            return Err(SendError::Closed(body));
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
        let reply = matches!(body.kind, crate::wire::BodyKind::Reply { .. });
        if !reply && self.outflow.blocked(self.next_seq, &now).is_some() {
            if self.outflow.held_back(self.next_seq) {
                self.held_back.refused(now());
            }
            return Err(SendError::Full(body));
        }
        if self.unacked() + 1 > self.config.replay_max_messages
            || self.unacked_bytes + size > self.config.replay_max_bytes
        {
            if self.state == State::Active {
                return Err(SendError::Full(body));
            }
            self.lose(LostReason::WindowExceeded {
                messages: self.config.replay_max_messages,
                bytes: self.config.replay_max_bytes,
            });
            return Err(SendError::Closed(body));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outflow.sent(&now);
        self.unacked_bytes += size;
        self.queued.push_back(Envelope { seq, body });
        Ok(seq)
    }

    /// Until when a send must wait, if it must: `Some(None)` until credit or a resume
    /// arrives, `Some(Some(t))` until `t` (a resume-after or a throttle).
    pub fn send_blocked(&self, now: Instant) -> Option<Option<Instant>> {
        self.outflow.blocked(self.next_seq, || now)
    }

    /// Records that the owner consumed (dropped) messages: up to `consumed` in all. This
    /// is what grants the peer more credit and lifts an automatic pause.
    pub fn consumed(&mut self, consumed: u64) {
        if let Some(flow) = self.inflow.consumed(consumed) {
            self.push_flow(flow);
        }
    }

    /// Sends a back-pressure signal to the peer (after the resume, if interrupted).
    pub fn signal_peer(&mut self, signal: FlowSignal) {
        self.inflow.signalled(signal);
        if matches!(self.state, State::Active | State::Finishing) {
            self.push_flow(Flow {
                credit: 0,
                signal: Some(signal),
            });
        } else {
            self.inflow.unsent(signal);
        }
    }

    fn push_flow(&mut self, flow: Flow) {
        // While interrupted, the resume restates the grant and the pause.
        if matches!(self.state, State::Active | State::Finishing) {
            self.control.push_back(Frame::Flow(flow));
        }
    }

    /// The session's flow state, both ways.
    pub fn flow(&self, now: Instant) -> FlowState {
        FlowState {
            credit: self.outflow.credit_left(self.next_seq),
            send_blocked: self.outflow.blocked(self.next_seq, || now).is_some(),
            peer_signal: self.outflow.signal(),
            throttled_to: self.outflow.throttled_to(),
            inbound_waiting: self.inflow.waiting(),
            pausing_peer: self.inflow.pausing(),
        }
    }

    /// Aborts: no drain, no retries; the peer learns `Aborted` at once, and every message
    /// not confirmed comes back to the owner.
    pub fn abort(&mut self, detail: String) {
        if self.is_closed() {
            return;
        }
        let established = matches!(self.state, State::Active | State::Finishing);
        if established {
            let goodbye = Goodbye {
                reason: GoodbyeReason::Aborted,
                detail: detail.clone(),
                last_seq: self.transmitted,
            };
            // Nothing queued goes out: the farewell names the last message sent.
            let unsent = mem::take(&mut self.queued);
            self.control.clear();
            self.control.push_back(Frame::Goodbye(goodbye));
            self.in_flight.extend(unsent);
        }
        self.close(CloseReason::Ended {
            reason: GoodbyeReason::Aborted,
            detail,
        });
    }

    /// Acceptor: admit the authenticated peer.
    pub fn accept(&mut self) {
        if self.state == State::Authenticated {
            self.control.push_back(Frame::Welcome(None));
            self.established();
        }
    }

    fn established(&mut self) {
        self.state = State::Active;
        self.handshake_deadline = None;
        self.established_peer = self.peer.clone();
        self.events.push_back(Event::Established);
    }

    /// Acceptor: refuse the authenticated peer (unknown actor, shutting down, limits).
    pub fn refuse(&mut self, refusal: Refusal) {
        if matches!(
            self.state,
            State::Authenticated | State::AwaitingPeer | State::Init
        ) {
            self.control.push_back(Frame::Refuse(refusal.clone()));
            self.close(CloseReason::RefusedLocally(refusal));
        }
    }

    /// Half-closes: after the queued data, a `Goodbye(Finished)`. The peer may still
    /// send; the session closes once both sides finished and everything is acknowledged.
    pub fn finish(&mut self) {
        let interrupted_active = self.is_interrupted() && self.resume_to == State::Active;
        if self.state == State::Active || interrupted_active {
            self.local_goodbye = Some(Goodbye {
                reason: GoodbyeReason::Finished,
                detail: String::new(),
                last_seq: self.next_seq - 1,
            });
            if interrupted_active {
                self.resume_to = State::Finishing;
            } else {
                self.state = State::Finishing;
                self.check_finished();
            }
        }
    }

    /// Ends the session now for `reason`: the queued data and a `Goodbye` still go out
    /// (if a stream is up), but nothing more is received. Messages not yet acknowledged
    /// come back to the owner with the `Closed` event.
    pub fn end(&mut self, reason: GoodbyeReason, detail: String) {
        match self.state {
            State::Closed(_) => {}
            State::Active | State::Finishing => {
                self.local_goodbye = Some(Goodbye {
                    reason,
                    detail: detail.clone(),
                    last_seq: self.next_seq - 1,
                });
                self.close(CloseReason::Ended { reason, detail });
            }
            State::Interrupted | State::Resuming => {
                self.control.clear();
                self.close(CloseReason::Ended { reason, detail });
            }
            State::Init | State::AwaitingPeer | State::Authenticated => {
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

    /// The current stream broke (or ended without a farewell, or was superseded). An
    /// established session becomes `Interrupted` and waits for a new stream; one still in
    /// its first handshake closes.
    pub fn stream_broken(&mut self, cause: String, now: Instant) {
        self.generation += 1;
        // The resume restates the whole flow state; a wait starts afresh after it.
        self.held_back.clear();
        // A signal still queued for the dead stream goes out on the next one.
        let queued_signal = self.control.iter().rev().find_map(|frame| match frame {
            Frame::Flow(flow) => flow.signal,
            _ => None,
        });
        if let Some(signal) = queued_signal {
            self.inflow.unsent(signal);
        }
        self.control.clear();
        match self.state {
            State::Closed(_) => {}
            State::Init | State::AwaitingPeer | State::Authenticated => {
                self.queued.clear();
                self.local_goodbye = None;
                self.close(CloseReason::Transport(cause));
            }
            State::Active | State::Finishing => {
                self.resume_to = self.state.clone();
                self.state = State::Interrupted;
                self.resume_deadline = Some(now + self.config.resume_timeout);
                self.interrupt_cause.clone_from(&cause);
                self.waiting_since = None;
                self.events.push_back(Event::Interrupted(cause));
            }
            State::Interrupted | State::Resuming => {
                self.state = State::Interrupted;
                self.interrupt_cause = cause;
            }
        }
    }

    /// The peer's stream ended. Expected after its `Goodbye` or `Refuse`; otherwise the
    /// stream broke.
    pub fn handle_stream_end(&mut self, now: Instant) {
        let expected = self.peer_goodbye.is_some() && !self.is_interrupted();
        if !expected {
            self.stream_broken("the stream ended without a goodbye".into(), now);
        }
    }

    /// Initiator: starts resuming on a new stream; its `Hello{resume}` is the next frame.
    pub fn begin_resume(&mut self, nonce: Nonce, now: Instant) {
        if self.role != Role::Initiator || self.state != State::Interrupted {
            return;
        }
        let Some(peer) = self.established_peer.clone() else {
            return;
        };
        self.local_nonce = nonce;
        self.peer_nonce = None;
        self.proof_sent = false;
        self.handshake_deadline = Some(now + self.config.handshake_timeout);
        let resume = ResumeRequest {
            last_received: self.received,
            acceptor_incarnation: peer.incarnation,
        };
        self.control.push_back(self.hello(Some(resume)));
        self.state = State::Resuming;
    }

    /// Acceptor: a new stream arrives for this session; its resume `Hello` follows.
    pub fn attach_stream(&mut self, nonce: Nonce, now: Instant) {
        if self.role == Role::Acceptor && self.state == State::Interrupted {
            self.local_nonce = nonce;
            self.peer_nonce = None;
            self.handshake_deadline = Some(now + self.config.handshake_timeout);
        }
    }

    /// Gives up an interrupted session without resuming (a `Stop` policy).
    pub fn give_up(&mut self, why: String) {
        if self.is_interrupted() {
            self.lose(LostReason::NotResumed(why));
        }
    }

    /// Feeds one frame from the peer.
    pub(crate) fn handle_frame(&mut self, frame: Frame, now: Instant) {
        if self.is_closed() {
            return;
        }
        self.last_heard = Some(now);
        match (self.role, &self.state, frame) {
            (Role::Acceptor, State::Init, Frame::Hello(hello)) => self.on_hello(hello),
            (Role::Acceptor, State::Interrupted, Frame::Hello(hello)) => {
                self.on_resume_hello(hello)
            }
            (Role::Initiator, State::AwaitingPeer | State::Resuming, Frame::Challenge(c))
                if !self.proof_sent =>
            {
                self.on_challenge(c)
            }
            (Role::Acceptor, State::AwaitingPeer | State::Resuming, Frame::Proof(proof)) => {
                self.on_proof(&proof)
            }
            (Role::Initiator, State::AwaitingPeer, Frame::Welcome(None)) if self.proof_sent => {
                self.established();
            }
            (Role::Initiator, State::Resuming, Frame::Welcome(Some(last))) if self.proof_sent => {
                self.resumed(last);
            }
            (_, State::Init | State::AwaitingPeer | State::Authenticated, Frame::Refuse(r)) => {
                self.close(CloseReason::RefusedByPeer(r));
            }
            (_, State::Resuming, Frame::Refuse(r)) => {
                self.lose(LostReason::ResumeRefused(r));
            }
            (_, State::Active | State::Finishing, Frame::Batch(batch)) => self.on_batch(batch),
            (_, State::Active | State::Finishing, Frame::Ack(seq)) => self.on_ack(seq),
            (_, State::Active | State::Finishing, Frame::Goodbye(g)) => self.on_goodbye(g),
            (_, State::Active | State::Finishing, Frame::Flow(flow)) => self.on_flow(flow, now),
            (_, State::Active | State::Finishing, Frame::FlowQuery(_)) => {
                let flow = self.inflow.restate();
                self.control.push_back(Frame::Flow(flow));
            }
            (_, state, frame) => {
                let state = state_name(state);
                self.violation(ProtocolError::UnexpectedFrame {
                    frame: frame.kind(),
                    state,
                });
            }
        }
    }

    /// A frame that did not parse arrived.
    pub fn handle_malformed(&mut self, error: crate::wire::FrameError) {
        self.handle_protocol_error(ProtocolError::Malformed(error));
    }

    /// The peer broke the protocol in a way the transport detected (an oversized frame).
    pub fn handle_protocol_error(&mut self, error: ProtocolError) {
        if !self.is_closed() {
            self.violation(error);
        }
    }

    /// Advances timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if let Some(deadline) = self.resume_deadline
            && now >= deadline
            && self.is_interrupted()
        {
            let cause = mem::take(&mut self.interrupt_cause);
            self.lose(LostReason::ResumeDeadline {
                after: self.config.resume_timeout,
                cause,
            });
            return;
        }
        if let Some(deadline) = self.handshake_deadline
            && now >= deadline
        {
            self.handshake_deadline = None;
            if self.state == State::Resuming {
                self.stream_broken("the resume handshake timed out".into(), now);
            } else if !self.is_interrupted() {
                self.control.push_back(Frame::Refuse(Refusal {
                    reason: RefuseReason::ProtocolError,
                    detail: "handshake timed out".into(),
                }));
                self.close(CloseReason::HandshakeTimeout);
                return;
            }
        }
        if let Some(deadline) = self.silence_deadline()
            && now >= deadline
        {
            let silent = self.config.silence_timeout;
            self.stream_broken(
                format!("no word from the peer for {silent:?} with messages unacknowledged"),
                now,
            );
        }
        if matches!(self.state, State::Active | State::Finishing) {
            self.held_back_step(now);
        }
        if let Some(due) = self.ack_due
            && now >= due
        {
            self.ack_due = None;
            self.ack_now = true;
        }
    }

    /// A sender the peer holds back: ask, give the stream up, or tell the owner.
    fn held_back_step(&mut self, now: Instant) {
        if !self.outflow.held_back(self.next_seq) {
            self.held_back.clear();
            return;
        }
        let silence = self.config.silence_timeout;
        match self.held_back.due(now, silence) {
            None => {}
            Some(HeldBackStep::Ask) => {
                self.control.push_back(Frame::FlowQuery(self.next_seq));
            }
            Some(HeldBackStep::Unanswered) => self.stream_broken(
                format!(
                    "the peer did not restate its flow state within {silence:?} of being asked"
                ),
                now,
            ),
            Some(HeldBackStep::Tell(waited)) => self.events.push_back(Event::HeldBack {
                waited,
                credit_left: self.outflow.credit_left(self.next_seq),
                peer_signal: self.outflow.signal(),
            }),
        }
    }

    fn silence_deadline(&self) -> Option<Instant> {
        if !matches!(self.state, State::Active | State::Finishing) {
            return None;
        }
        let since = self.waiting_since?;
        let heard = self.last_heard.map_or(since, |h| h.max(since));
        Some(heard + self.config.silence_timeout)
    }

    fn held_back_deadline(&self) -> Option<Instant> {
        if !matches!(self.state, State::Active | State::Finishing) {
            return None;
        }
        self.held_back.deadline(self.config.silence_timeout)
    }

    /// When `handle_timeout` must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.handshake_deadline,
            self.ack_due,
            self.silence_deadline(),
            self.held_back_deadline(),
            self.resume_deadline.filter(|_| self.is_interrupted()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Records that every message up to `seq` reached the owner's mailbox, so it may be
    /// acknowledged.
    pub fn confirm_delivered(&mut self, seq: u64, now: Instant) {
        if seq <= self.delivered || seq > self.received {
            return;
        }
        self.delivered = seq;
        if let Some(flow) = self.inflow.delivered(seq) {
            self.push_flow(flow);
        }
        if self.peer_goodbye.is_some() || self.delivered - self.ack_sent >= self.config.ack_every {
            self.ack_now = true;
        } else if self.ack_due.is_none() {
            self.ack_due = Some(now + self.config.ack_delay);
        }
        self.check_finished();
    }

    /// The next frame to write on the current stream, if any.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        if let Some(frame) = self.control.pop_front() {
            return Some(frame);
        }
        if !matches!(
            self.state,
            State::Active | State::Finishing | State::Closed(_)
        ) {
            return None;
        }
        if !self.queued.is_empty() {
            return Some(Frame::Batch(self.next_batch(now)));
        }
        if mem::take(&mut self.ack_now) && self.delivered > self.ack_sent {
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
    pub fn is_transmit_done(&self) -> bool {
        self.is_closed()
            && self.control.is_empty()
            && self.queued.is_empty()
            && self.local_goodbye.is_none()
            && !(self.ack_now && self.delivered > self.ack_sent)
    }

    /// Whether `poll_transmit` has something to write now.
    pub fn wants_transmit(&self) -> bool {
        if !self.control.is_empty() {
            return true;
        }
        matches!(
            self.state,
            State::Active | State::Finishing | State::Closed(_)
        ) && (!self.queued.is_empty()
            || (self.ack_now && self.delivered > self.ack_sent)
            || self.local_goodbye.is_some())
    }

    /// Whether `poll_event` has something.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event for the owner, if any.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn next_batch(&mut self, now: Instant) -> Batch {
        let mut envelopes =
            Vec::with_capacity(self.queued.len().min(self.config.max_batch_messages));
        let mut bytes = 0;
        if self.in_flight.is_empty() {
            self.waiting_since = Some(now);
        }
        self.outflow.sample(now);
        let mut named = false;
        while let Some(envelope) = self.queued.front() {
            let len = envelope.body.wire_len();
            // On the wire an empty name means "the type named before", so a message whose
            // type URL is empty cannot follow one that named a type (docs/protocol.md).
            let fault = envelope.body.kind.is_fault();
            let unnamed = !fault && envelope.body.type_url.is_empty();
            if !envelopes.is_empty()
                && (envelopes.len() >= self.config.max_batch_messages
                    || bytes + len > self.config.max_batch_bytes
                    || (unnamed && named))
            {
                break;
            }
            named |= !fault && !unnamed;
            bytes += len;
            let envelope = self.queued.pop_front().expect("front exists");
            self.transmitted = self.transmitted.max(envelope.seq);
            self.in_flight.push_back(envelope.clone());
            envelopes.push(envelope);
        }
        Batch {
            ack: self.take_ack(),
            envelopes,
        }
    }

    fn take_ack(&mut self) -> u64 {
        self.ack_sent = self.delivered;
        self.ack_due = None;
        self.ack_now = false;
        self.delivered
    }

    fn on_hello(&mut self, hello: Hello) {
        self.id = hello.session_id;
        self.peer = Some(hello.from);
        self.target = hello.target;
        self.peer_nonce = Some(hello.nonce);
        self.peer_max_message_bytes = hello.max_message_bytes;
        self.outflow.set_window(hello.credit_window);
        // A resume for a session this node does not have: authenticate first, then say
        // so, so an unauthenticated caller learns nothing.
        self.unknown_resume = hello.resume.is_some();
        if hello.protocol_version != PROTOCOL_VERSION {
            let error = ProtocolError::UnsupportedVersion(hello.protocol_version);
            self.control.push_back(Frame::Refuse(Refusal {
                reason: RefuseReason::UnsupportedVersion,
                detail: error.to_string(),
            }));
            self.close(CloseReason::Protocol(error));
            return;
        }
        self.send_challenge();
        self.state = State::AwaitingPeer;
    }

    fn on_resume_hello(&mut self, hello: Hello) {
        let from_same_peer = self.established_peer.as_ref() == Some(&hello.from);
        let Some(resume) = hello
            .resume
            .filter(|_| from_same_peer && hello.session_id == self.id)
        else {
            // Someone else's stream: refuse it, and keep waiting for the real peer.
            self.control.push_back(Frame::Refuse(Refusal {
                reason: RefuseReason::ResumeMismatch,
                detail: format!("session {} belongs to another peer", self.id),
            }));
            return;
        };
        if resume.acceptor_incarnation != self.local.incarnation {
            self.control.push_back(Frame::Refuse(Refusal {
                reason: RefuseReason::UnknownSession,
                detail: "the session was opened with another incarnation of this node".into(),
            }));
            return;
        }
        self.peer = Some(hello.from);
        self.peer_nonce = Some(hello.nonce);
        self.peer_resume_point = Some(resume.last_received);
        self.send_challenge();
        self.state = State::Resuming;
    }

    fn send_challenge(&mut self) {
        let proof = self.transcript().prove(&self.secret, ProofRole::Acceptor);
        self.control.push_back(Frame::Challenge(Challenge {
            from: self.local.clone(),
            nonce: self.local_nonce,
            proof,
            max_message_bytes: self.config.max_message_bytes,
            credit_window: self.config.credit_window,
        }));
    }

    fn on_challenge(&mut self, challenge: Challenge) {
        let resuming = self.state == State::Resuming;
        self.peer = Some(challenge.from.clone());
        self.peer_nonce = Some(challenge.nonce);
        self.peer_max_message_bytes = challenge.max_message_bytes;
        if !resuming {
            self.outflow.set_window(challenge.credit_window);
        }
        let verdict = self
            .transcript()
            .verify(&self.secret, ProofRole::Acceptor, &challenge.proof);
        if let Err(error) = verdict {
            if resuming {
                self.control.push_back(auth_refusal());
                self.lose(LostReason::ResumeAuth(error));
            } else {
                self.auth_failed(error);
            }
            return;
        }
        if resuming
            && let Some(previous) = self.established_peer.as_ref().map(|p| p.incarnation)
            && previous != challenge.from.incarnation
        {
            self.lose(LostReason::PeerRestarted {
                previous,
                current: challenge.from.incarnation,
            });
            return;
        }
        let proof = self.transcript().prove(&self.secret, ProofRole::Initiator);
        self.control.push_back(Frame::Proof(proof));
        self.proof_sent = true;
    }

    fn on_proof(&mut self, proof: &[u8]) {
        let verdict = self
            .transcript()
            .verify(&self.secret, ProofRole::Initiator, proof);
        if let Err(error) = verdict {
            if self.state == State::Resuming {
                // Not the peer it claims to be: refuse this stream, keep waiting.
                self.control.push_back(auth_refusal());
                self.state = State::Interrupted;
            } else {
                self.auth_failed(error);
            }
            return;
        }
        if self.state == State::Resuming {
            let peer_received = self.peer_resume_point.take().unwrap_or(0);
            self.control.push_back(Frame::Welcome(Some(self.received)));
            self.resumed(peer_received);
            return;
        }
        if self.unknown_resume {
            self.refuse(Refusal {
                reason: RefuseReason::UnknownSession,
                detail: format!(
                    "node {} has no session {} (it may have restarted or given up on it)",
                    self.local.name, self.id
                ),
            });
            return;
        }
        self.state = State::Authenticated;
        let peer = self.peer.clone().expect("set by the Hello");
        self.events.push_back(Event::Authenticated {
            peer,
            target: self.target.clone(),
        });
    }

    /// Continues after a resume handshake: re-send what the peer has not received.
    fn resumed(&mut self, peer_received: u64) {
        if peer_received > self.transmitted {
            self.violation(ProtocolError::AckBeyondSent {
                ack: peer_received,
                sent: self.transmitted,
            });
            return;
        }
        let mut replay = VecDeque::new();
        while self.in_flight.back().is_some_and(|e| e.seq > peer_received) {
            replay.push_front(self.in_flight.pop_back().expect("back exists"));
        }
        let replayed = replay.len() as u64;
        replay.extend(mem::take(&mut self.queued));
        self.queued = replay;
        if self.goodbye_sent {
            // The farewell may not have arrived; the peer ignores a repeat.
            self.goodbye_sent = false;
            self.local_goodbye = Some(Goodbye {
                reason: GoodbyeReason::Finished,
                detail: String::new(),
                last_seq: self.next_seq - 1,
            });
        }
        // Our last ack and grant may have been lost with the old stream: send them again.
        let flow = self.inflow.restate();
        self.control.push_back(Frame::Flow(flow));
        self.ack_sent = 0;
        self.ack_now = self.delivered > 0;
        self.state = mem::replace(&mut self.resume_to, State::Active);
        self.resume_deadline = None;
        self.handshake_deadline = None;
        self.waiting_since = None;
        self.events.push_back(Event::Resumed { replayed });
        self.check_finished();
    }

    fn auth_failed(&mut self, error: AuthError) {
        self.control.push_back(auth_refusal());
        self.close(CloseReason::Auth(error));
    }

    fn transcript(&self) -> Transcript<'_> {
        let peer = self.peer.as_ref().expect("peer known before any proof");
        let peer_nonce = self
            .peer_nonce
            .as_ref()
            .expect("peer nonce known before any proof");
        let (initiator, acceptor, initiator_nonce, acceptor_nonce) = match self.role {
            Role::Initiator => (&self.local, peer, &self.local_nonce, peer_nonce),
            Role::Acceptor => (peer, &self.local, peer_nonce, &self.local_nonce),
        };
        Transcript {
            session_id: self.id,
            initiator,
            acceptor,
            target: &self.target,
            initiator_nonce,
            acceptor_nonce,
        }
    }

    fn on_batch(&mut self, batch: Batch) {
        self.on_ack(batch.ack);
        if self.is_closed() {
            return;
        }
        let limit = self.config.max_message_bytes;
        for envelope in batch.envelopes {
            if envelope.seq <= self.received {
                // Replayed after a resume, and already here: drop it.
                continue;
            }
            if self.peer_goodbye.is_some() {
                self.violation(ProtocolError::DataAfterGoodbye);
                return;
            }
            if envelope.seq != self.received + 1 {
                self.violation(ProtocolError::SequenceGap {
                    expected: self.received + 1,
                    got: envelope.seq,
                });
                return;
            }
            let reply = matches!(envelope.body.kind, crate::wire::BodyKind::Reply { .. });
            if !reply && envelope.seq > self.inflow.granted() {
                self.violation(ProtocolError::CreditExceeded {
                    seq: envelope.seq,
                    granted: self.inflow.granted(),
                });
                return;
            }
            let size = envelope.body.payload.len() as u64;
            if size > limit {
                self.violation(ProtocolError::MessageTooLarge { size, limit });
                return;
            }
            self.received = envelope.seq;
            self.events.push_back(Event::Message(envelope));
        }
    }

    fn on_ack(&mut self, seq: u64) {
        if seq > self.transmitted {
            self.violation(ProtocolError::AckBeyondSent {
                ack: seq,
                sent: self.transmitted,
            });
            return;
        }
        while self.in_flight.front().is_some_and(|e| e.seq <= seq) {
            let envelope = self.in_flight.pop_front().expect("front exists");
            self.unacked_bytes -= envelope.body.payload.len();
        }
        self.waiting_since = if self.in_flight.is_empty() {
            None
        } else {
            self.last_heard
        };
        self.check_finished();
    }

    fn on_flow(&mut self, flow: Flow, now: Instant) {
        let update = self.outflow.update(flow.credit, flow.signal, now);
        if self.outflow.held_back(self.next_seq) {
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
        if goodbye.last_seq != self.received {
            self.violation(ProtocolError::GoodbyeMismatch {
                last_seq: goodbye.last_seq,
                received: self.received,
            });
            return;
        }
        self.peer_goodbye = Some(goodbye.clone());
        if self.delivered > self.ack_sent {
            self.ack_now = true;
        }
        if goodbye.reason == GoodbyeReason::Finished {
            self.events.push_back(Event::PeerFinished(goodbye));
            self.check_finished();
        } else {
            self.lose(LostReason::PeerEnded(goodbye));
        }
    }

    fn check_finished(&mut self) {
        if self.state == State::Finishing
            && self.goodbye_sent
            && self.peer_goodbye.is_some()
            && self.queued.is_empty()
            && self.in_flight.is_empty()
            && self.delivered == self.received
        {
            self.close(CloseReason::Finished);
        }
    }

    fn violation(&mut self, error: ProtocolError) {
        let detail = error.to_string();
        if matches!(self.state, State::Active | State::Finishing) {
            self.queued.clear();
            self.local_goodbye = Some(Goodbye {
                reason: GoodbyeReason::ProtocolError,
                detail,
                last_seq: self.next_seq - 1,
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

    fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        self.handshake_deadline = None;
        self.resume_deadline = None;
        self.ack_due = None;
        // Whatever is still queued will not be sent; with what is in flight it goes
        // back to the owner. (A goodbye queued by `end` still flushes what it can.)
        let mut unconfirmed: Vec<Envelope> = mem::take(&mut self.in_flight).into();
        if self.local_goodbye.is_none() {
            unconfirmed.extend(mem::take(&mut self.queued));
        } else {
            unconfirmed.extend(self.queued.iter().cloned());
        }
        self.unacked_bytes = 0;
        self.state = State::Closed(reason.clone());
        self.events.push_back(Event::CanSend);
        self.events.push_back(Event::Closed(reason, unconfirmed));
    }
}

fn auth_refusal() -> Frame {
    Frame::Refuse(Refusal {
        reason: RefuseReason::AuthFailed,
        detail: "the proof does not match this node's secret".into(),
    })
}

fn state_name(state: &State) -> &'static str {
    match state {
        State::Init => "Init",
        State::AwaitingPeer => "AwaitingPeer",
        State::Authenticated => "Authenticated",
        State::Active => "Active",
        State::Finishing => "Finishing",
        State::Interrupted => "Interrupted",
        State::Resuming => "Resuming",
        State::Closed(_) => "Closed",
    }
}

#[cfg(test)]
mod harness;
#[cfg(test)]
mod liveness_tests;
#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod tests;
