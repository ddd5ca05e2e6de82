//! Greeting and mutual authentication: `Hello`, `Challenge`, `Proof`, then `Welcome` or
//! `Refuse`: the whole first handshake, and the initiator's side of each resume (the
//! acceptor's side of a resume is `gate`'s). The proofs are [`crate::auth`]'s; this is
//! the order they are exchanged in.

use super::{Event, Phase, Role, Session, Stage, State, Timer};
use crate::auth::{ProofRole, TlsBinding, Transcript};
use crate::error::{AuthError, CloseReason, LostReason, ProtocolError};
use crate::wire::{
    Challenge, Frame, Hello, NodeIdentity, Nonce, PROTOCOL_VERSION, Refusal, RefuseReason,
    ResumeRequest,
};

/// One handshake under way on one stream: what is valid only until it completes.
#[derive(Debug)]
pub(super) struct Handshake {
    pub(super) step: Step,
    /// The peer as it introduced itself on this stream.
    pub(super) peer: Option<NodeIdentity>,
    pub(super) peer_nonce: Option<Nonce>,
    /// Initiator: its proof is sent; only a `Welcome` or a `Refuse` may follow.
    pub(super) proof_sent: bool,
    /// Initiator, resuming: the last received its resume `Hello` names (its proof binds it).
    pub(super) resume_point: Option<u64>,
    /// Acceptor: the `Hello` asked to bind the proofs to this node's TLS certificate.
    pub(super) peer_binds_tls: bool,
}

/// How far a handshake is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing exchanged on this stream yet (an acceptor waits for the `Hello`).
    Init,
    /// Greetings and proofs under way.
    AwaitingPeer,
    /// Acceptor, first handshake: the peer proved the secret; the node decides.
    Authenticated,
}

impl Handshake {
    pub(super) fn new(step: Step) -> Self {
        Self {
            step,
            peer: None,
            peer_nonce: None,
            proof_sent: false,
            resume_point: None,
            peer_binds_tls: false,
        }
    }
}

impl Session {
    pub(super) fn hello(&self, resume: Option<ResumeRequest>) -> Frame {
        Frame::Hello(Hello {
            session_id: self.id,
            from: self.local.clone(),
            target: self.target.clone(),
            protocol_version: PROTOCOL_VERSION,
            nonce: self.local_nonce,
            max_message_bytes: self.config.max_message_bytes,
            resume,
            credit_window: self.config.credit_window,
            credit_window_bytes: self.inflow.granted_bytes(),
            protocol: self.protocol.clone(),
            bind_tls_certificate: self.binds_tls(),
        })
    }

    /// Initiator: whether its proofs are bound to the acceptor's TLS certificate.
    pub(super) fn binds_tls(&self) -> bool {
        matches!(self.tls, TlsBinding::Verified(_))
    }

    /// Acceptor: admit the authenticated peer.
    pub(crate) fn accept(&mut self) {
        if self.phase() == Phase::Authenticated {
            self.control.push_back(Frame::Welcome(None));
            self.established();
        }
    }

    /// Acceptor: refuse the authenticated peer (unknown actor, shutting down, limits).
    pub(crate) fn refuse(&mut self, refusal: Refusal) {
        if let State::Greeting(_) = self.state {
            self.control.push_back(Frame::Refuse(refusal.clone()));
            self.close(CloseReason::RefusedLocally(refusal));
        }
    }

    /// The first handshake completed: data may flow. Both sides derive the session's
    /// resume key from its transcript.
    pub(super) fn established(&mut self) {
        if !matches!(self.state, State::Greeting(_)) {
            return;
        }
        self.resume_key = Some(self.transcript().resume_key(&self.secret));
        let State::Greeting(handshake) = &mut self.state else {
            return;
        };
        self.peer = handshake.peer.take();
        self.state = State::Established {
            stage: Stage::Active,
            waiting_since: None,
        };
        self.timers.stop(Timer::Handshake);
        self.events.push_back(Event::Established);
    }

    pub(super) fn on_hello(&mut self, hello: Hello) {
        if hello.resume.is_some() {
            // The node hands resume greetings to a `ResumeGate`, never to a new session.
            self.violation(ProtocolError::UnexpectedFrame {
                frame: "Hello{resume}",
                state: "Init",
            });
            return;
        }
        self.id = hello.session_id;
        self.target = hello.target;
        self.protocol = hello.protocol;
        self.peer_max_message_bytes = hello.max_message_bytes;
        self.outflow
            .set_window(hello.credit_window, hello.credit_window_bytes);
        let handshake = self.handshake_mut().expect("greeting");
        handshake.peer = Some(hello.from);
        handshake.peer_nonce = Some(hello.nonce);
        handshake.peer_binds_tls = hello.bind_tls_certificate;
        if hello.bind_tls_certificate && !matches!(self.tls, TlsBinding::Served(_)) {
            // The initiator verified some TLS certificate this node does not have (a
            // TLS-terminating proxy between them?): its proofs cannot match ours.
            let refusal = plaintext_binding_refusal();
            self.control.push_back(Frame::Refuse(refusal.clone()));
            self.close(CloseReason::RefusedLocally(refusal));
            return;
        }
        if hello.protocol_version != PROTOCOL_VERSION {
            let error = ProtocolError::UnsupportedVersion(hello.protocol_version);
            self.control.push_back(Frame::Refuse(Refusal {
                reason: RefuseReason::UnsupportedVersion {
                    speaks: PROTOCOL_VERSION,
                },
                detail: error.to_string(),
            }));
            self.close(CloseReason::Protocol(error));
            return;
        }
        self.send_challenge();
        self.handshake_mut().expect("greeting").step = Step::AwaitingPeer;
    }

    fn send_challenge(&mut self) {
        let proof = self.transcript().prove(&self.secret, ProofRole::Acceptor);
        self.control.push_back(Frame::Challenge(Challenge {
            from: self.local.clone(),
            nonce: self.local_nonce,
            proof,
            max_message_bytes: self.config.max_message_bytes,
            credit_window: self.config.credit_window,
            credit_window_bytes: self.inflow.granted_bytes(),
        }));
    }

    pub(super) fn on_challenge(&mut self, challenge: Challenge) {
        let resuming = self.is_interrupted();
        let handshake = self.handshake_mut().expect("a handshake is under way");
        handshake.peer = Some(challenge.from.clone());
        handshake.peer_nonce = Some(challenge.nonce);
        self.peer_max_message_bytes = challenge.max_message_bytes;
        if !resuming {
            self.outflow
                .set_window(challenge.credit_window, challenge.credit_window_bytes);
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
            && let Some(previous) = self.peer.as_ref().map(|p| p.incarnation)
            && previous != challenge.from.incarnation
        {
            self.lose(LostReason::PeerRestarted {
                previous,
                current: challenge.from.incarnation,
            });
            return;
        }
        // A resume proves the session's resume key; the first handshake, the secret.
        let resume_point = self.handshake().and_then(|h| h.resume_point);
        let proof = match (resuming, resume_point, &self.resume_key) {
            (true, Some(point), Some(key)) => self.transcript().prove_resume(key, point),
            _ => self.transcript().prove(&self.secret, ProofRole::Initiator),
        };
        self.control.push_back(Frame::Proof(proof));
        self.handshake_mut()
            .expect("a handshake is under way")
            .proof_sent = true;
    }

    /// Acceptor, first handshake: the initiator's proof of the secret.
    pub(super) fn on_proof(&mut self, proof: &[u8]) {
        let verdict = self
            .transcript()
            .verify(&self.secret, ProofRole::Initiator, proof);
        if let Err(error) = verdict {
            self.auth_failed(error);
            return;
        }
        let handshake = self.handshake_mut().expect("a handshake is under way");
        handshake.step = Step::Authenticated;
        let peer = handshake.peer.clone().expect("set by the Hello");
        self.events.push_back(Event::Authenticated {
            peer,
            target: self.target.clone(),
            protocol: self.protocol.clone(),
        });
    }

    fn auth_failed(&mut self, error: AuthError) {
        self.control.push_back(auth_refusal());
        self.close(CloseReason::Auth(error));
    }

    fn transcript(&self) -> Transcript<'_> {
        let handshake = self.handshake().expect("a handshake is under way");
        let peer = handshake
            .peer
            .as_ref()
            .expect("peer known before any proof");
        let peer_nonce = handshake
            .peer_nonce
            .as_ref()
            .expect("peer nonce known before any proof");
        let (initiator, acceptor, initiator_nonce, acceptor_nonce) = match self.role {
            Role::Initiator => (&self.local, peer, &self.local_nonce, peer_nonce),
            Role::Acceptor => (peer, &self.local, peer_nonce, &self.local_nonce),
        };
        let tls_certificate = match (&self.tls, self.role) {
            (TlsBinding::Verified(seen), Role::Initiator) => Some(*seen),
            (TlsBinding::Served(own), Role::Acceptor) if handshake.peer_binds_tls => {
                Some(Some(*own))
            }
            // Refused in `on_hello`; were it not, the proofs could never match.
            (_, Role::Acceptor) if handshake.peer_binds_tls => Some(None),
            _ => None,
        };
        Transcript {
            session_id: self.id,
            initiator,
            acceptor,
            target: &self.target,
            initiator_nonce,
            acceptor_nonce,
            tls_certificate,
        }
    }
}

/// The refusal of a `Hello` that binds its proofs to a TLS certificate, by a node that
/// serves plaintext (first handshake or resume alike).
pub(super) fn plaintext_binding_refusal() -> Refusal {
    Refusal {
        reason: RefuseReason::AuthFailed,
        detail: "the initiator binds its proof to a TLS certificate, and this node serves \
                 plaintext"
            .into(),
    }
}

fn auth_refusal() -> Frame {
    Frame::Refuse(Refusal {
        reason: RefuseReason::AuthFailed,
        detail: "the proof does not match this node's secret".into(),
    })
}
