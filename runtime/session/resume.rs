//! A stream breaking, and the session going on over the next one: interrupted, then
//! resumed (re-authenticated, then the replay of what the peer missed), or lost.

use std::time::Instant;

use super::handshake::{Handshake, Step};
use super::{Broken, Event, Phase, ProvenResume, Role, Session, State, Timer};
use crate::error::{CloseReason, InterruptCause, LostReason, ProtocolError};
use crate::wire::{Frame, Goodbye, GoodbyeReason, Nonce, ResumeRequest};

impl Session {
    /// The cluster declared the peer's node unreachable. An established session gives its
    /// stream up at once, as if it broke ([`InterruptCause::PeerUnreachable`]), instead
    /// of waiting for its silence deadline to notice; one already interrupted is told
    /// again, naming the verdict. Until the peer is heard from again (a resume, or
    /// [`Session::peer_reachable`]), sends fail at once with
    /// [`crate::SendError::PeerUnreachable`]. Returns whether the session took it in.
    pub(crate) fn peer_unreachable(&mut self, now: Instant) -> bool {
        match &mut self.state {
            State::Established { .. } => self.stream_broken(InterruptCause::PeerUnreachable, now),
            State::Interrupted { cause, .. } => {
                if self.peer_unreachable && *cause == InterruptCause::PeerUnreachable {
                    return false;
                }
                *cause = InterruptCause::PeerUnreachable;
                self.events
                    .push_back(Event::Interrupted(InterruptCause::PeerUnreachable));
            }
            State::Greeting(_) | State::Closed(_) => return false,
        }
        self.peer_unreachable = true;
        true
    }

    /// The cluster hears from the peer's node again: sends go into the replay buffer
    /// again until the session resumes or its deadline passes.
    pub(crate) fn peer_reachable(&mut self) {
        self.peer_unreachable = false;
    }

    /// Whether sends are refused because the cluster holds the peer unreachable.
    pub(crate) fn refuses_unreachable(&self) -> bool {
        self.peer_unreachable && !self.is_closed()
    }

    /// The cluster knows the peer's node under a new incarnation: the process this
    /// session was opened with is gone and nothing can resume it, so the session is lost
    /// ([`LostReason::PeerRestarted`]) at once instead of at its resume deadline. Returns
    /// whether it was.
    pub(crate) fn peer_restarted(&mut self, current: uuid::Uuid) -> bool {
        let Some(previous) = self.peer.as_ref().map(|p| p.incarnation) else {
            return false;
        };
        if previous == current || self.is_closed() || matches!(self.state, State::Greeting(_)) {
            return false;
        }
        self.lose(LostReason::PeerRestarted { previous, current });
        true
    }

    /// The current stream broke (or ended without a farewell, or was superseded). An
    /// established session becomes `Interrupted` and waits for a new stream; one still in
    /// its first handshake closes.
    pub(crate) fn stream_broken(&mut self, broken: impl Into<Broken>, now: Instant) {
        let Broken { cause, detail } = broken.into();
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
        match &mut self.state {
            State::Closed(_) => {}
            State::Greeting(_) => {
                self.replay.queued.clear();
                self.local_goodbye = None;
                self.close(CloseReason::Transport {
                    detail: detail.unwrap_or_else(|| cause.to_string()),
                    cause: cause.clone(),
                });
            }
            State::Established { stage, .. } => {
                let stage = *stage;
                self.state = State::Interrupted {
                    resume_to: stage,
                    cause: cause.clone(),
                    stream: None,
                };
                self.counters.interruptions += 1;
                self.timers
                    .set(Timer::Resume, now + self.config.resume_timeout);
                self.events.push_back(Event::Interrupted(cause));
            }
            State::Interrupted {
                cause: last_cause,
                stream,
                ..
            } => {
                *stream = None;
                *last_cause = cause;
            }
        }
    }

    /// The peer's stream ended. Expected after its `Goodbye` or `Refuse`; otherwise the
    /// stream broke.
    pub(crate) fn handle_stream_end(&mut self, now: Instant) {
        let expected = self.peer_goodbye.is_some() && !self.is_interrupted();
        if !expected {
            self.stream_broken(InterruptCause::EndedWithoutGoodbye, now);
        }
    }

    /// Initiator: starts resuming on a new stream; its `Hello{resume}` is the next frame.
    pub(crate) fn begin_resume(&mut self, nonce: Nonce, now: Instant) {
        if self.role != Role::Initiator || self.phase() != Phase::Interrupted {
            return;
        }
        let Some(incarnation) = self.peer.as_ref().map(|p| p.incarnation) else {
            return;
        };
        self.local_nonce = nonce;
        self.timers
            .set(Timer::Handshake, now + self.config.handshake_timeout);
        let resume = ResumeRequest {
            last_received: self.acks.received,
            acceptor_incarnation: incarnation,
        };
        self.control.push_back(self.hello(Some(resume)));
        let received = self.acks.received;
        if let State::Interrupted { stream, .. } = &mut self.state {
            let mut handshake = Handshake::new(Step::AwaitingPeer);
            handshake.resume_point = Some(received);
            *stream = Some(handshake);
        }
    }

    /// Acceptor: a new stream proved this session's resume key at its gate
    /// ([`super::ResumeGate`]); the session continues on it. A stream still up is
    /// superseded (given up) first. `Welcome{resumed}` and the replay are the next frames.
    pub(crate) fn resume_proven(&mut self, proven: &ProvenResume, now: Instant) {
        if self.role != Role::Acceptor || proven.session != self.id || self.is_closed() {
            return;
        }
        if self.is_established() {
            self.stream_broken(InterruptCause::Superseded, now);
        }
        if !self.is_interrupted() {
            return;
        }
        self.control
            .push_back(Frame::Welcome(Some(self.acks.received)));
        self.resumed(proven.last_received);
    }

    /// Gives up an interrupted session without resuming (a `Stop` policy).
    pub(crate) fn give_up(&mut self, why: String) {
        if self.is_interrupted() {
            self.lose(LostReason::NotResumed(why));
        }
    }

    /// Continues after a resume handshake: re-send what the peer has not received.
    pub(super) fn resumed(&mut self, peer_received: u64) {
        if peer_received > self.replay.transmitted {
            self.violation(ProtocolError::AckBeyondSent {
                ack: peer_received,
                sent: self.replay.transmitted,
            });
            return;
        }
        let State::Interrupted { resume_to, .. } = self.state else {
            return;
        };
        let replayed = self.replay.rewind(peer_received);
        if self.goodbye_sent {
            // The farewell may not have arrived; the peer ignores a repeat.
            self.goodbye_sent = false;
            self.local_goodbye = Some(Goodbye {
                reason: GoodbyeReason::Finished,
                detail: String::new(),
                last_seq: self.replay.next_seq - 1,
            });
        }
        // Our last ack and grant may have been lost with the old stream: send them again.
        let flow = self.inflow.restate();
        self.control.push_back(Frame::Flow(flow));
        // So may a question for byte credit: a sender still waiting asks again.
        self.outflow.forget_byte_query();
        if let Some(query) = self.outflow.byte_query() {
            self.control.push_back(Frame::FlowQuery(query));
        }
        self.acks.ack_sent = 0;
        self.acks.ack_now = self.acks.delivered > 0;
        self.state = State::Established {
            stage: resume_to,
            waiting_since: None,
        };
        self.timers.stop(Timer::Resume);
        self.timers.stop(Timer::Handshake);
        self.counters.resumes += 1;
        self.counters.replayed += replayed;
        if std::mem::take(&mut self.peer_unreachable) {
            self.events.push_back(Event::CanSend);
        }
        self.events.push_back(Event::Resumed { replayed });
        self.check_finished();
    }
}
