//! One session's protocol state, with no I/O, no clock and no runtime: the sans-IO core
//! in the manner of `quinn-proto`.
//!
//! Inputs: [`Session::handle_frame`], [`Session::handle_timeout`], [`Session::send`],
//! [`Session::confirm_delivered`], [`Session::finish`], [`Session::accept`] /
//! [`Session::refuse`], [`Session::end`], [`Session::handle_transport_error`].
//! Outputs: [`Session::poll_transmit`] (frames to write), [`Session::poll_event`]
//! (what the owner must learn) and [`Session::poll_timeout`] (when to call
//! `handle_timeout`). The drivers in `driver.rs` move frames between this struct and a
//! gRPC stream; everything that decides anything lives here.
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
//!   any --bad proof / Refuse / protocol error / timeout / transport error--> Closed(reason)
//!   Active/Finishing --recv Goodbye(other reason) / end(reason)--> Closed(reason)
//! ```
//!
//! Delivery: every envelope gets the next per-direction sequence number. The receiver
//! accepts only the next expected one, and acknowledges cumulatively only what the
//! driver confirmed delivered into the owner's mailbox ([`Session::confirm_delivered`]),
//! piggybacked on its next batch, or as a lone `Ack` after `ack_every` messages or
//! `ack_delay`. Sent envelopes stay in the in-flight buffer until acknowledged.

use std::collections::VecDeque;
use std::mem;
use std::time::{Duration, Instant};

use crate::auth::{Nonce, ProofRole, Secret, Transcript};
use crate::error::{AuthError, CloseReason, ProtocolError, SendError};
use crate::wire::{
    Batch, Body, Challenge, Envelope, Frame, Goodbye, GoodbyeReason, Hello, NodeIdentity,
    PROTOCOL_VERSION, Refusal, RefuseReason, SessionId,
};

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
    /// Over, for the given reason.
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
    /// The session is over.
    Closed(CloseReason),
}

/// One session's protocol state machine.
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: SessionConfig,
    secret: Secret,
    id: SessionId,
    local: NodeIdentity,
    peer: Option<NodeIdentity>,
    target: String,
    local_nonce: Nonce,
    peer_nonce: Option<Nonce>,
    state: State,
    handshake_deadline: Option<Instant>,
    proof_sent: bool,
    peer_max_message_bytes: u64,

    next_seq: u64,
    transmitted: u64,
    queued: VecDeque<Envelope>,
    in_flight: VecDeque<Envelope>,

    received: u64,
    delivered: u64,
    ack_sent: u64,
    ack_due: Option<Instant>,
    ack_now: bool,

    local_goodbye: Option<Goodbye>,
    goodbye_sent: bool,
    peer_goodbye: Option<Goodbye>,

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
        session.control.push_back(Frame::Hello(Hello {
            session_id: id,
            from: session.local.clone(),
            target: target.clone(),
            protocol_version: PROTOCOL_VERSION,
            nonce,
            max_message_bytes: session.config.max_message_bytes,
        }));
        session.target = target;
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
            config,
            secret,
            id,
            local,
            peer: None,
            target: String::new(),
            local_nonce: nonce,
            peer_nonce: None,
            state: State::Init,
            proof_sent: false,
            next_seq: 1,
            transmitted: 0,
            queued: VecDeque::new(),
            in_flight: VecDeque::new(),
            received: 0,
            delivered: 0,
            ack_sent: 0,
            ack_due: None,
            ack_now: false,
            local_goodbye: None,
            goodbye_sent: false,
            peer_goodbye: None,
            control: VecDeque::new(),
            events: VecDeque::new(),
        }
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
        self.peer.as_ref()
    }

    /// The name of the actor on the acceptor's node this session talks to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
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
    /// # Errors
    /// The message comes back in the error when the session does not take data now
    /// ([`SendError::Closed`], [`SendError::NotReady`]) or the payload exceeds
    /// [`Session::send_limit`] ([`SendError::TooLarge`]).
    pub(crate) fn send(&mut self, body: Body) -> Result<u64, SendError<Body>> {
        match self.state {
            State::Active => {}
            State::Init | State::AwaitingPeer | State::Authenticated => {
                return Err(SendError::NotReady(body));
            }
            State::Finishing | State::Closed(_) => return Err(SendError::Closed(body)),
        }
        let limit = self.send_limit();
        if body.payload.len() as u64 > limit {
            return Err(SendError::TooLarge {
                size: body.payload.len() as u64,
                limit,
                message: body,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queued.push_back(Envelope { seq, body });
        Ok(seq)
    }

    /// Acceptor: admit the authenticated peer.
    pub fn accept(&mut self) {
        if self.state == State::Authenticated {
            self.control.push_back(Frame::Welcome);
            self.state = State::Active;
            self.handshake_deadline = None;
            self.events.push_back(Event::Established);
        }
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
        if self.state == State::Active {
            self.state = State::Finishing;
            self.local_goodbye = Some(Goodbye {
                reason: GoodbyeReason::Finished,
                detail: String::new(),
                last_seq: self.next_seq - 1,
            });
            self.check_finished();
        }
    }

    /// Ends the session now for `reason`: the queued data and a `Goodbye` still go out,
    /// but nothing more is received. Unacknowledged messages are not retried.
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
            _ => {
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

    /// The stream broke or ended without a farewell.
    pub fn handle_transport_error(&mut self, detail: String) {
        if !self.is_closed() {
            self.queued.clear();
            self.local_goodbye = None;
            self.close(CloseReason::Transport(detail));
        }
    }

    /// The peer's stream ended. Expected after its `Goodbye` or `Refuse`; otherwise the
    /// same as a transport error.
    pub fn handle_stream_end(&mut self) {
        if self.peer_goodbye.is_none() {
            self.handle_transport_error("stream ended without a goodbye".into());
        }
    }

    /// Feeds one frame from the peer.
    pub(crate) fn handle_frame(&mut self, frame: Frame) {
        if self.is_closed() {
            return;
        }
        match (self.role, &self.state, frame) {
            (Role::Acceptor, State::Init, Frame::Hello(hello)) => self.on_hello(hello),
            (Role::Initiator, State::AwaitingPeer, Frame::Challenge(c)) if !self.proof_sent => {
                self.on_challenge(c)
            }
            (Role::Acceptor, State::AwaitingPeer, Frame::Proof(proof)) => self.on_proof(&proof),
            (Role::Initiator, State::AwaitingPeer, Frame::Welcome) if self.proof_sent => {
                self.state = State::Active;
                self.handshake_deadline = None;
                self.events.push_back(Event::Established);
            }
            (_, State::Init | State::AwaitingPeer | State::Authenticated, Frame::Refuse(r)) => {
                self.peer_goodbye = Some(Goodbye {
                    reason: GoodbyeReason::Aborted,
                    detail: r.detail.clone(),
                    last_seq: 0,
                });
                self.close(CloseReason::RefusedByPeer(r));
            }
            (_, State::Active | State::Finishing, Frame::Batch(batch)) => self.on_batch(batch),
            (_, State::Active | State::Finishing, Frame::Ack(seq)) => self.on_ack(seq),
            (_, State::Active | State::Finishing, Frame::Goodbye(g)) => self.on_goodbye(g),
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
        if let Some(deadline) = self.handshake_deadline
            && now >= deadline
            && !self.is_closed()
        {
            self.handshake_deadline = None;
            self.control.push_back(Frame::Refuse(Refusal {
                reason: RefuseReason::ProtocolError,
                detail: "handshake timed out".into(),
            }));
            self.close(CloseReason::HandshakeTimeout);
        }
        if let Some(due) = self.ack_due
            && now >= due
        {
            self.ack_due = None;
            self.ack_now = true;
        }
    }

    /// When `handle_timeout` must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.handshake_deadline, self.ack_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Records that every message up to `seq` reached the owner's mailbox, so it may be
    /// acknowledged.
    pub fn confirm_delivered(&mut self, seq: u64, now: Instant) {
        if seq <= self.delivered || seq > self.received {
            return;
        }
        self.delivered = seq;
        if self.peer_goodbye.is_some() || self.delivered - self.ack_sent >= self.config.ack_every {
            self.ack_now = true;
        } else if self.ack_due.is_none() {
            self.ack_due = Some(now + self.config.ack_delay);
        }
        self.check_finished();
    }

    /// The next frame to write, if any.
    pub(crate) fn poll_transmit(&mut self) -> Option<Frame> {
        if let Some(frame) = self.control.pop_front() {
            return Some(frame);
        }
        if !self.queued.is_empty() {
            return Some(Frame::Batch(self.next_batch()));
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
        !self.control.is_empty()
            || !self.queued.is_empty()
            || (self.ack_now && self.delivered > self.ack_sent)
            || self.local_goodbye.is_some()
    }

    /// Whether `poll_event` has something.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event for the owner, if any.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn next_batch(&mut self) -> Batch {
        let mut envelopes =
            Vec::with_capacity(self.queued.len().min(self.config.max_batch_messages));
        let mut bytes = 0;
        while let Some(envelope) = self.queued.front() {
            let len = envelope.body.wire_len();
            if !envelopes.is_empty()
                && (envelopes.len() >= self.config.max_batch_messages
                    || bytes + len > self.config.max_batch_bytes)
            {
                break;
            }
            bytes += len;
            let envelope = self.queued.pop_front().expect("front exists");
            self.transmitted = envelope.seq;
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
        if hello.protocol_version != PROTOCOL_VERSION {
            let error = ProtocolError::UnsupportedVersion(hello.protocol_version);
            self.control.push_back(Frame::Refuse(Refusal {
                reason: RefuseReason::UnsupportedVersion,
                detail: error.to_string(),
            }));
            self.close(CloseReason::Protocol(error));
            return;
        }
        let proof = self.transcript().prove(&self.secret, ProofRole::Acceptor);
        self.control.push_back(Frame::Challenge(Challenge {
            from: self.local.clone(),
            nonce: self.local_nonce,
            proof,
            max_message_bytes: self.config.max_message_bytes,
        }));
        self.state = State::AwaitingPeer;
    }

    fn on_challenge(&mut self, challenge: Challenge) {
        self.peer = Some(challenge.from);
        self.peer_nonce = Some(challenge.nonce);
        self.peer_max_message_bytes = challenge.max_message_bytes;
        let verdict = self
            .transcript()
            .verify(&self.secret, ProofRole::Acceptor, &challenge.proof);
        if let Err(error) = verdict {
            self.auth_failed(error);
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
            self.auth_failed(error);
            return;
        }
        self.state = State::Authenticated;
        let peer = self.peer.clone().expect("set by the Hello");
        self.events.push_back(Event::Authenticated {
            peer,
            target: self.target.clone(),
        });
    }

    fn auth_failed(&mut self, error: AuthError) {
        self.control.push_back(Frame::Refuse(Refusal {
            reason: RefuseReason::AuthFailed,
            detail: "the proof does not match this node's secret".into(),
        }));
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
        if self.peer_goodbye.is_some() {
            self.violation(ProtocolError::DataAfterGoodbye);
            return;
        }
        let limit = self.config.max_message_bytes;
        for envelope in batch.envelopes {
            if envelope.seq != self.received + 1 {
                self.violation(ProtocolError::SequenceGap {
                    expected: self.received + 1,
                    got: envelope.seq,
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
        let sent = self.transmitted;
        if seq > sent {
            self.violation(ProtocolError::AckBeyondSent { ack: seq, sent });
            return;
        }
        while self.in_flight.front().is_some_and(|e| e.seq <= seq) {
            self.in_flight.pop_front();
        }
        self.check_finished();
    }

    fn on_goodbye(&mut self, goodbye: Goodbye) {
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
            self.queued.clear();
            self.close(CloseReason::PeerEnded(goodbye));
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

    fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        self.handshake_deadline = None;
        self.state = State::Closed(reason.clone());
        self.events.push_back(Event::Closed(reason));
    }
}

fn state_name(state: &State) -> &'static str {
    match state {
        State::Init => "Init",
        State::AwaitingPeer => "AwaitingPeer",
        State::Authenticated => "Authenticated",
        State::Active => "Active",
        State::Finishing => "Finishing",
        State::Closed(_) => "Closed",
    }
}

#[cfg(test)]
mod tests;
