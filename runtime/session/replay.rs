//! Both directions of delivery. Outgoing, the replay buffer ([`Replay`]): every envelope
//! sent stays until the peer acknowledges it, and a resume sends again what the peer has
//! not received. Incoming, the acks ([`Acks`]): what arrived in order, what the driver
//! confirmed delivered into the owner's mailbox, and what was acknowledged, piggybacked on
//! a batch or as a lone `Ack`.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Event, Session, State, Timer};
use crate::error::ProtocolError;
use crate::wire::{Batch, Body, BodyKind, Envelope};

/// What this side sent, in sequence order, until the peer acknowledges it.
#[derive(Debug)]
pub(super) struct Replay {
    /// The sequence number of the next message.
    pub(super) next_seq: u64,
    /// The highest sequence number written to a stream.
    pub(super) transmitted: u64,
    /// Not written yet (or to write again after a resume).
    pub(super) queued: VecDeque<Envelope>,
    /// Written, not acknowledged.
    pub(super) in_flight: VecDeque<Envelope>,
    /// Payload bytes of `queued` and `in_flight`.
    pub(super) unacked_bytes: usize,
}

/// What this side received, delivered and acknowledged.
#[derive(Debug, Default)]
pub(super) struct Acks {
    /// The highest sequence number received in order.
    pub(super) received: u64,
    /// The highest sequence number the owner's mailbox has.
    pub(super) delivered: u64,
    /// The last ack sent.
    pub(super) ack_sent: u64,
    /// An ack is due at the next write.
    pub(super) ack_now: bool,
}

impl Replay {
    pub(super) fn new() -> Self {
        Self {
            next_seq: 1,
            transmitted: 0,
            queued: VecDeque::new(),
            in_flight: VecDeque::new(),
            unacked_bytes: 0,
        }
    }

    /// Messages sent or queued that the peer has not acknowledged.
    pub(super) fn unacked(&self) -> usize {
        self.queued.len() + self.in_flight.len()
    }

    /// Whether everything sent was acknowledged.
    pub(super) fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.in_flight.is_empty()
    }

    /// Queues `body` as the next message; returns its sequence number.
    pub(super) fn push(&mut self, body: Body) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked_bytes += body.payload.len();
        self.queued.push_back(Envelope { seq, body });
        seq
    }

    /// Forgets what the peer acknowledged, up to `seq`.
    fn acknowledge(&mut self, seq: u64) {
        while self.in_flight.front().is_some_and(|e| e.seq <= seq) {
            let envelope = self.in_flight.pop_front().expect("front exists");
            self.unacked_bytes -= envelope.body.payload.len();
        }
    }

    /// After a resume: queues again, first, what the peer has not received of what was
    /// written. Returns how many.
    pub(super) fn rewind(&mut self, peer_received: u64) -> u64 {
        let mut replay = VecDeque::new();
        while self.in_flight.back().is_some_and(|e| e.seq > peer_received) {
            replay.push_front(self.in_flight.pop_back().expect("back exists"));
        }
        let replayed = replay.len() as u64;
        replay.extend(std::mem::take(&mut self.queued));
        self.queued = replay;
        replayed
    }

    /// Nothing queued goes out: it counts as unconfirmed with what is in flight.
    pub(super) fn unsend(&mut self) {
        let unsent = std::mem::take(&mut self.queued);
        self.in_flight.extend(unsent);
    }

    /// At close: every message the peer did not confirm. With `flush`, what is queued
    /// stays queued to go out before a farewell (it is handed back all the same).
    pub(super) fn unconfirmed(&mut self, flush: bool) -> Vec<Envelope> {
        let mut unconfirmed: Vec<Envelope> = std::mem::take(&mut self.in_flight).into();
        if flush {
            unconfirmed.extend(self.queued.iter().cloned());
        } else {
            unconfirmed.extend(std::mem::take(&mut self.queued));
        }
        self.unacked_bytes = 0;
        unconfirmed
    }
}

impl Acks {
    /// Whether an ack is due and has something new to say.
    pub(super) fn ack_pending(&self) -> bool {
        self.ack_now && self.delivered > self.ack_sent
    }
}

impl Session {
    /// Records that every message up to `seq` reached the owner's mailbox, so it may be
    /// acknowledged.
    pub(crate) fn confirm_delivered(&mut self, seq: u64, now: Instant) {
        if seq <= self.acks.delivered || seq > self.acks.received {
            return;
        }
        self.acks.delivered = seq;
        if let Some(flow) = self.inflow.delivered(seq) {
            self.push_flow(flow);
        }
        if let Some(account) = &self.account {
            account.set_peer_waits(self.inflow.peer_waits());
        }
        if self.peer_goodbye.is_some()
            || self.acks.delivered - self.acks.ack_sent >= self.config.ack_every
        {
            self.acks.ack_now = true;
        } else if self.timers.get(Timer::Ack).is_none() {
            self.timers.set(Timer::Ack, now + self.config.ack_delay);
        }
        self.check_finished();
    }

    pub(super) fn next_batch(&mut self, now: Instant) -> Batch {
        let replay = &mut self.replay;
        let mut envelopes =
            Vec::with_capacity(replay.queued.len().min(self.config.max_batch_messages));
        let mut bytes = 0;
        if replay.in_flight.is_empty()
            && let State::Established { waiting_since, .. } = &mut self.state
        {
            *waiting_since = Some(now);
        }
        self.outflow.sample(now);
        let mut named = false;
        while let Some(envelope) = replay.queued.front() {
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
            let envelope = replay.queued.pop_front().expect("front exists");
            replay.transmitted = replay.transmitted.max(envelope.seq);
            replay.in_flight.push_back(envelope.clone());
            envelopes.push(envelope);
        }
        Batch {
            ack: self.take_ack(),
            envelopes,
        }
    }

    pub(super) fn take_ack(&mut self) -> u64 {
        self.acks.ack_sent = self.acks.delivered;
        self.timers.stop(Timer::Ack);
        self.acks.ack_now = false;
        self.acks.delivered
    }

    pub(super) fn on_batch(&mut self, batch: Batch) {
        self.on_ack(batch.ack);
        if self.is_closed() {
            return;
        }
        let limit = self.config.max_message_bytes;
        for envelope in batch.envelopes {
            let received = self.acks.received;
            if envelope.seq <= received {
                // Replayed after a resume, and already here: drop it.
                continue;
            }
            if self.peer_goodbye.is_some() {
                self.violation(ProtocolError::DataAfterGoodbye);
                return;
            }
            if envelope.seq != received + 1 {
                self.violation(ProtocolError::SequenceGap {
                    expected: received + 1,
                    got: envelope.seq,
                });
                return;
            }
            let reply = matches!(envelope.body.kind, BodyKind::Reply { .. });
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
            if !reply && !self.inflow.byte_credit_allows(size) {
                self.violation(ProtocolError::ByteCreditExceeded {
                    seq: envelope.seq,
                    granted: self.inflow.granted_bytes(),
                });
                return;
            }
            self.inflow.received(size);
            self.acks.received = envelope.seq;
            self.counters.messages_in += 1;
            self.counters.bytes_in += size;
            self.events.push_back(Event::Message(envelope));
        }
    }

    pub(super) fn on_ack(&mut self, seq: u64) {
        if seq > self.replay.transmitted {
            self.violation(ProtocolError::AckBeyondSent {
                ack: seq,
                sent: self.replay.transmitted,
            });
            return;
        }
        self.replay.acknowledge(seq);
        self.settle_replay();
        let waiting = (!self.replay.in_flight.is_empty())
            .then_some(self.last_heard)
            .flatten();
        if let State::Established { waiting_since, .. } = &mut self.state {
            *waiting_since = waiting;
        }
        self.check_finished();
    }
}
