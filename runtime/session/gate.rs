//! Acceptor: a stream whose first frame is a resume `Hello`, held at the gate until it
//! proves the session's resume key. Nothing of any session is touched before: the
//! session's live stream keeps flowing, nothing is routed to it, and the node answers
//! every resume the same way until the proof checks out, so a stranger learns nothing
//! about which session ids exist.
//!
//! ```text
//! recv Hello{resume} --version ok: send Challenge (the secret's proof)--> AwaitingProof
//! recv Hello{resume} --other version, or it binds TLS and this node serves plaintext--> Refused
//! AwaitingProof --recv Proof, checked against the session's ResumeTicket--> Proven
//! AwaitingProof --unknown id, wrong proof, other peer or incarnation: one refusal--> Refused
//! AwaitingProof --anything else, or the handshake timeout--> Refused(PROTOCOL_ERROR)
//! ```
//!
//! Sans-IO like the session: the node's service reads frames, looks the session up when
//! the proof arrives, writes what [`ResumeGate::poll_transmit`] yields, and attaches the
//! stream to the session once [`ResumeGate::verdict`] says [`GateVerdict::Proven`]; the
//! session then continues with [`Session::resume_proven`].
//!
//! Over TLS ([`ResumeGate::with_tls_binding`]), a resume `Hello` that asks for the
//! binding (`bind_tls_certificate`) gets a challenge, and must bring a resume proof,
//! bound to this node's certificate, exactly as a first handshake's proofs are: every
//! resume stream asks again, on its own connection.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Session, SessionConfig};
use crate::auth::{CertDigest, ProofRole, ResumeKey, Secret, TlsBinding, Transcript};
use crate::error::ProtocolError;
use crate::wire::{
    Challenge, Frame, FrameError, Hello, NodeIdentity, Nonce, PROTOCOL_VERSION, Refusal,
    RefuseReason, SessionId,
};

/// What an established acceptor session keeps so a resume can be checked against it:
/// its resume key, and the initiator and target of its first handshake.
#[derive(Clone, Debug)]
pub(crate) struct ResumeTicket {
    key: ResumeKey,
    peer: NodeIdentity,
    target: String,
}

/// A resume stream that proved the session's resume key: attach it to the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProvenResume {
    /// The session it resumes.
    pub(crate) session: SessionId,
    /// The initiator's last received sequence number, as its proof binds it.
    pub(crate) last_received: u64,
}

/// Why a gate refused a stream. The peer is told only the [`Refusal`] the gate sent,
/// which is the same for every cause of [`GateRefusal::NotResumable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GateRefusal {
    /// The `Hello` names another protocol version.
    UnsupportedVersion(u32),
    /// The `Hello` binds the proofs to a TLS certificate, and this node serves plaintext.
    PlaintextBinding,
    /// No session with that id, or the proof, the initiator, the target or the acceptor
    /// incarnation does not match it.
    NotResumable {
        /// Whether the node has a session with that id (for the node's log only).
        known: bool,
    },
    /// A frame other than a well-formed `Proof`.
    Protocol(ProtocolError),
    /// No proof within the handshake timeout.
    TimedOut,
}

/// Where a gate is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GateVerdict {
    /// Waiting for the proof.
    Pending,
    /// Proved: attach the stream.
    Proven(ProvenResume),
    /// Refused; the refusal is the last frame to write, then the stream ends.
    Refused(GateRefusal),
}

/// One resume stream before it proved anything; see the module doc.
#[derive(Debug)]
pub(crate) struct ResumeGate {
    secret: Secret,
    local: NodeIdentity,
    /// What the proofs are bound to over TLS (this node's certificate, if it serves TLS).
    tls: TlsBinding,
    /// What the `Challenge` announces, as a first handshake's does.
    max_message_bytes: u64,
    credit_window: u64,
    credit_window_bytes: u64,
    /// This side's nonce on this stream.
    nonce: Nonce,
    hello: Hello,
    deadline: Instant,
    verdict: GateVerdict,
    control: VecDeque<Frame>,
}

/// The one refusal every resume that does not prove a session gets, whatever the cause.
pub(crate) fn not_resumable() -> Refusal {
    Refusal {
        reason: RefuseReason::UnknownSession,
        detail: "no session to resume: unknown, over, or the resume proof does not match".into(),
    }
}

impl ResumeTicket {
    /// The ticket checked against when the session does not exist: the same work, and a
    /// refusal whatever the proof.
    fn decoy(hello: &Hello) -> Self {
        Self {
            key: ResumeKey::decoy(),
            peer: hello.from.clone(),
            target: hello.target.clone(),
        }
    }
}

impl ResumeGate {
    /// A gate for a stream whose first frame was `hello` (a resume); its `Challenge` (or a
    /// refusal) is the first frame `poll_transmit` yields.
    pub(crate) fn new(
        config: &SessionConfig,
        secret: &Secret,
        local: NodeIdentity,
        nonce: Nonce,
        hello: Hello,
        now: Instant,
    ) -> Self {
        let mut gate = Self {
            secret: secret.clone(),
            local,
            tls: TlsBinding::Plaintext,
            max_message_bytes: config.max_message_bytes,
            credit_window: config.credit_window,
            credit_window_bytes: config
                .initial_credit_bytes
                .clamp(1, config.credit_window_bytes.max(config.max_message_bytes)),
            nonce,
            deadline: now + config.handshake_timeout,
            verdict: GateVerdict::Pending,
            control: VecDeque::new(),
            hello,
        };
        gate.greet();
        gate
    }

    /// Binds the proofs to TLS as `tls` says (a node serving TLS: its certificate), as
    /// [`Session::with_tls_binding`] does for a first handshake. Call it on a new gate,
    /// before the first `poll_transmit`: the gate's first frame is made again.
    pub(crate) fn with_tls_binding(mut self, tls: TlsBinding) -> Self {
        self.tls = tls;
        self.control.clear();
        self.verdict = GateVerdict::Pending;
        self.greet();
        self
    }

    /// Queues the gate's answer to the `Hello`: a challenge, or a refusal.
    fn greet(&mut self) {
        if self.hello.bind_tls_certificate && !matches!(self.tls, TlsBinding::Served(_)) {
            // As a first handshake's `Hello` would be: nothing about any session in it.
            self.refuse(
                GateRefusal::PlaintextBinding,
                super::handshake::plaintext_binding_refusal(),
            );
            return;
        }
        if self.hello.protocol_version != PROTOCOL_VERSION {
            let version = self.hello.protocol_version;
            let error = ProtocolError::UnsupportedVersion(version);
            self.refuse(
                GateRefusal::UnsupportedVersion(version),
                Refusal {
                    reason: RefuseReason::UnsupportedVersion {
                        speaks: PROTOCOL_VERSION,
                    },
                    detail: error.to_string(),
                },
            );
            return;
        }
        // The same challenge as a first handshake's: the acceptor proves the secret, over
        // what the Hello claims (and the TLS binding it asks for), before the session is
        // even looked up.
        let proof = self
            .transcript(&self.hello.from, &self.hello.target)
            .prove(&self.secret, ProofRole::Acceptor);
        self.control.push_back(Frame::Challenge(Challenge {
            from: self.local.clone(),
            nonce: self.nonce,
            proof,
            max_message_bytes: self.max_message_bytes,
            credit_window: self.credit_window,
            credit_window_bytes: self.credit_window_bytes,
        }));
    }

    /// The session the `Hello` names.
    pub(crate) fn session_id(&self) -> SessionId {
        self.hello.session_id
    }

    /// Feeds the next frame of the stream. `ticket` is asked for only when the frame is a
    /// `Proof`: the named session's [`Session::resume_ticket`], if the node has it.
    pub(crate) fn handle_frame(
        &mut self,
        frame: Frame,
        ticket: impl FnOnce(SessionId) -> Option<ResumeTicket>,
    ) {
        if self.verdict != GateVerdict::Pending {
            return;
        }
        let Frame::Proof(proof) = frame else {
            let error = ProtocolError::UnexpectedFrame {
                frame: frame.kind(),
                state: "AwaitingProof",
            };
            self.protocol_error(error);
            return;
        };
        let resume = self
            .hello
            .resume
            .clone()
            .expect("a gate is made for resume greetings");
        let found = ticket(self.hello.session_id);
        let known = found.is_some();
        let ticket = found.unwrap_or_else(|| ResumeTicket::decoy(&self.hello));
        // Every check runs whatever the others say, so a refusal takes the same path.
        let proof_ok = self
            .transcript(&ticket.peer, &ticket.target)
            .verify_resume(&ticket.key, resume.last_received, &proof)
            .is_ok();
        let same_peer = ticket.peer == self.hello.from;
        let same_target = ticket.target == self.hello.target;
        let same_incarnation = resume.acceptor_incarnation == self.local.incarnation;
        if known & proof_ok & same_peer & same_target & same_incarnation {
            self.verdict = GateVerdict::Proven(ProvenResume {
                session: self.hello.session_id,
                last_received: resume.last_received,
            });
        } else {
            self.refuse(GateRefusal::NotResumable { known }, not_resumable());
        }
    }

    /// A frame that did not parse arrived.
    pub(crate) fn handle_malformed(&mut self, error: FrameError) {
        if self.verdict == GateVerdict::Pending {
            self.protocol_error(ProtocolError::Malformed(error));
        }
    }

    /// Advances to `now`: past the deadline, a pending gate refuses.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.verdict == GateVerdict::Pending && now >= self.deadline {
            self.refuse(
                GateRefusal::TimedOut,
                Refusal {
                    reason: RefuseReason::ProtocolError,
                    detail: "handshake timed out".into(),
                },
            );
        }
    }

    /// When `handle_timeout` must next be called, while the gate waits.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        (self.verdict == GateVerdict::Pending).then_some(self.deadline)
    }

    /// The next frame to write on the stream, if any.
    pub(crate) fn poll_transmit(&mut self) -> Option<Frame> {
        self.control.pop_front()
    }

    /// Where the gate is.
    pub(crate) fn verdict(&self) -> &GateVerdict {
        &self.verdict
    }

    fn protocol_error(&mut self, error: ProtocolError) {
        let refusal = Refusal {
            reason: RefuseReason::ProtocolError,
            detail: error.to_string(),
        };
        self.refuse(GateRefusal::Protocol(error), refusal);
    }

    fn refuse(&mut self, why: GateRefusal, refusal: Refusal) {
        self.control.push_back(Frame::Refuse(refusal));
        self.verdict = GateVerdict::Refused(why);
    }

    /// This stream's transcript, with the initiator and target taken from `initiator` and
    /// `target` (the session's, when checking its proof).
    fn transcript<'a>(&'a self, initiator: &'a NodeIdentity, target: &'a str) -> Transcript<'a> {
        Transcript {
            session_id: self.hello.session_id,
            initiator,
            acceptor: &self.local,
            target,
            initiator_nonce: &self.hello.nonce,
            acceptor_nonce: &self.nonce,
            tls_certificate: self.tls_certificate(),
        }
    }

    /// What the transcript binds of TLS: nothing unless the `Hello` asked; then this
    /// node's certificate (`Some(None)` when it has none, which no proof matches; such a
    /// `Hello` is refused before any proof anyway).
    fn tls_certificate(&self) -> Option<Option<CertDigest>> {
        let own = match &self.tls {
            TlsBinding::Served(own) => Some(*own),
            _ => None,
        };
        self.hello.bind_tls_certificate.then_some(own)
    }
}

impl Session {
    /// Acceptor: what a resume of this session must prove, while it may be resumed
    /// (established or interrupted); `None` otherwise.
    pub(crate) fn resume_ticket(&self) -> Option<ResumeTicket> {
        if self.role != super::Role::Acceptor || !(self.is_established() || self.is_interrupted()) {
            return None;
        }
        Some(ResumeTicket {
            key: self.resume_key.clone()?,
            peer: self.peer.clone()?,
            target: self.target.clone(),
        })
    }
}
