//! The session's timers, in one table (quinn-proto's `TimerTable`), and what each does
//! when it passes. The core never reads a clock: the driver asks [`Session::poll_timeout`]
//! when to call [`Session::handle_timeout`] with the time.
//!
//! Three timers are armed and stopped as the session goes ([`Timer`]). Two more deadlines
//! are derived from what they watch, so they are computed, never stored stale: silence
//! (data unacknowledged and no word from the peer) and a held-back sender's next step.

use std::time::Instant;

use super::flow::HeldBackStep;
use super::{Event, Phase, Session, State};
use crate::error::{CloseReason, InterruptCause, LostReason};
use crate::wire::{FlowQuery, Frame, Refusal, RefuseReason};

/// A timer the session arms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// The handshake under way must complete by then.
    Handshake,
    /// An interrupted session must resume by then, or it is lost.
    Resume,
    /// A lone ack goes out by then, if no batch carried one.
    Ack,
}

impl Timer {
    const COUNT: usize = 3;
}

/// When each [`Timer`] expires, if it is armed.
#[derive(Debug, Default)]
pub(super) struct TimerTable {
    deadlines: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    /// Whether `timer` is armed and has expired at `now`.
    fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| now >= at)
    }

    /// The soonest armed timer.
    fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
}

impl Session {
    /// Advances timers to `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if self.timers.is_expired(Timer::Resume, now)
            && let State::Interrupted { cause, .. } = &mut self.state
        {
            let cause = cause.clone();
            self.lose(LostReason::ResumeDeadline {
                after: self.config.resume_timeout,
                cause,
            });
            return;
        }
        if self.timers.is_expired(Timer::Handshake, now) {
            self.timers.stop(Timer::Handshake);
            if self.phase() == Phase::Resuming {
                self.stream_broken(InterruptCause::ResumeHandshakeTimedOut, now);
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
            self.stream_broken(InterruptCause::PeerSilent { after: silent }, now);
        }
        if self.is_established() {
            self.held_back_step(now);
        }
        if self.timers.is_expired(Timer::Ack, now) {
            self.timers.stop(Timer::Ack);
            self.acks.ack_now = true;
        }
    }

    /// When `handle_timeout` must next be called, if ever: never once closed, as it then
    /// does nothing (an owner confirming a delivery after the close still arms the ack
    /// timer, which would otherwise stay due for good).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        [
            self.timers.next(),
            self.silence_deadline(),
            self.held_back_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A sender the peer holds back: ask, give the stream up, or tell the owner.
    fn held_back_step(&mut self, now: Instant) {
        let next_seq = self.replay.next_seq;
        if !self.outflow.held_back(next_seq) {
            self.held_back.clear();
            return;
        }
        let silence = self.config.silence_timeout;
        match self.held_back.due(now, silence) {
            None => {}
            Some(HeldBackStep::Ask) => {
                self.control.push_back(Frame::FlowQuery(FlowQuery {
                    next_seq,
                    needed_bytes: 0,
                }));
            }
            Some(HeldBackStep::Unanswered) => {
                self.stream_broken(InterruptCause::FlowUnanswered { after: silence }, now)
            }
            Some(HeldBackStep::Tell(waited)) => self.events.push_back(Event::HeldBack {
                waited,
                credit_left: self.outflow.credit_left(next_seq),
                peer_signal: self.outflow.signal(),
            }),
        }
    }

    /// With data in flight, the peer must be heard from by then.
    fn silence_deadline(&self) -> Option<Instant> {
        let State::Established {
            waiting_since: Some(since),
            ..
        } = self.state
        else {
            return None;
        };
        let heard = self.last_heard.map_or(since, |h| h.max(since));
        Some(heard + self.config.silence_timeout)
    }

    fn held_back_deadline(&self) -> Option<Instant> {
        if !self.is_established() {
            return None;
        }
        self.held_back.deadline(self.config.silence_timeout)
    }
}
