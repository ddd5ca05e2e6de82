//! What the core's events become: messages and signals in the owner's mailbox, completed
//! calls, and reports to the node through [`NodeHooks`](super::NodeHooks).

use std::time::{Duration, Instant};

use super::task::Driver;
use super::{Closed, Link, Restart};
use crate::actor::mailbox::{
    Escalation, HeldBack, Inbound, InboundBatch, Lost, ReplyPort, Resumption, SessionSignal,
};
use crate::config::SessionPolicy;
use crate::error::{CallError, CloseReason};
use crate::handles::session_ref::{SessionInfo, SessionRef};
use crate::session::{Event, Role, Session};
use crate::wire::{Body, BodyKind, Envelope, GoodbyeReason, NodeIdentity};

impl Driver {
    /// Takes every event the core has and acts on it, until there are none.
    pub(super) fn handle_events(&mut self) {
        self.shared.sync_consumed();
        let batches = self.owner.as_ref().is_some_and(|o| o.takes_batches());
        loop {
            let events = self.shared.take_events();
            if events.is_empty() {
                return;
            }
            let mut delivery = Delivery {
                // A run rarely breaks: room for every message of the round at once.
                run: Vec::with_capacity(if batches { events.len() } else { 0 }),
                ..Delivery::default()
            };
            for event in events {
                let Event::Message(envelope) = event else {
                    // Messages before a signal reach the owner before it.
                    self.hand_over(&mut delivery);
                    self.on_event(event);
                    continue;
                };
                if delivery.owner_gone {
                    // After the owner stopped, later messages stay unacknowledged.
                    continue;
                }
                let seq = envelope.seq;
                match self.arrive(envelope.body) {
                    Arrival::Completed => {
                        // Confirmed after the run before it, or not if that run failed.
                        self.hand_over(&mut delivery);
                        if !delivery.owner_gone {
                            delivery.confirmed = Some(seq);
                        }
                    }
                    Arrival::ForOwner(inbound) if batches => {
                        delivery.run.push(inbound);
                        delivery.run_end = seq;
                    }
                    Arrival::ForOwner(inbound) => {
                        let taken = self
                            .owner
                            .as_ref()
                            .is_some_and(|o| o.inbound(inbound).is_ok());
                        self.delivered(&mut delivery, seq, taken);
                    }
                    Arrival::NoOwner => self.delivered(&mut delivery, seq, false),
                }
            }
            self.hand_over(&mut delivery);
            if let Some(seq) = delivery.confirmed {
                self.shared
                    .with(|s| s.confirm_delivered(seq, Instant::now()));
            }
        }
    }

    /// Hands the run of messages gathered for a batching owner over, as one batch (or as
    /// one message when it is alone).
    fn hand_over(&mut self, delivery: &mut Delivery) {
        let taken = match delivery.run.len() {
            0 => return,
            1 => {
                let inbound = delivery.run.pop().expect("one message");
                self.owner
                    .as_ref()
                    .is_some_and(|o| o.inbound(inbound).is_ok())
            }
            _ => {
                let batch = InboundBatch::new(std::mem::take(&mut delivery.run));
                match (&self.owner, batch) {
                    (Some(owner), Some(batch)) => owner.batch(batch).is_ok(),
                    _ => false,
                }
            }
        };
        let end = delivery.run_end;
        self.delivered(delivery, end, taken);
    }

    /// Records that the owner took everything up to `seq`, or that it is gone and the
    /// session ends.
    fn delivered(&self, delivery: &mut Delivery, seq: u64, taken: bool) {
        if taken {
            delivery.confirmed = Some(seq);
            return;
        }
        delivery.owner_gone = true;
        delivery.run.clear();
        let reason = self.cx.node.stop_reason(self.owner.as_deref());
        self.shared
            .with(|s| s.end(GoodbyeReason::ActorStopped, reason));
    }

    /// Acts on one event of the core other than a message.
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Authenticated {
                peer,
                target,
                protocol,
            } => self.admit(peer, target, &protocol),
            Event::Established => self.on_established(),
            Event::Message(_) => unreachable!("messages are delivered by handle_events"),
            Event::PeerFinished(goodbye) => {
                self.signal(|s| SessionSignal::PeerFinished(s, goodbye));
            }
            Event::Interrupted(cause) => {
                tracing::info!(%cause, "session interrupted");
                self.interrupted_at = Some(Instant::now());
                self.signal(|s| SessionSignal::Interrupted(s, cause));
            }
            Event::Resumed { replayed } => {
                self.attempt = 0;
                let interrupted_for = self
                    .interrupted_at
                    .take()
                    .map_or(Duration::ZERO, |at| at.elapsed());
                tracing::info!(replayed, ?interrupted_for, "session resumed");
                let resumption = Resumption {
                    replayed,
                    interrupted_for,
                };
                self.signal(|s| SessionSignal::Resumed(s, resumption));
            }
            Event::Closed(reason, unconfirmed) => self.on_closed(reason, unconfirmed),
            Event::Flow(signal) => self.signal(|s| SessionSignal::Flow(s, signal)),
            Event::CanSend => self.shared.senders_may_retry(),
            Event::HeldBack {
                waited,
                credit_left,
                peer_signal,
            } => {
                tracing::warn!(
                    ?waited,
                    credit_left,
                    ?peer_signal,
                    "sender held back by the peer"
                );
                let held = HeldBack {
                    waited,
                    credit_left,
                    peer_signal,
                };
                self.signal(|s| SessionSignal::HeldBack(s, held));
            }
        }
    }

    fn signal(&self, make: impl FnOnce(SessionRef) -> SessionSignal) {
        if let (Some(owner), Some(session)) = (&self.owner, &self.session_ref) {
            // An owner that stopped learns nothing more; its sessions end through
            // the failed deliveries of their messages.
            let _ = owner.signal(make(session.clone()));
        }
    }

    fn admit(&mut self, peer: NodeIdentity, target: String, protocol: &str) {
        if let Some(authenticated) = self.on_authenticated.take() {
            authenticated();
        }
        match self.cx.node.admit(&target, protocol) {
            Ok(owner) => {
                self.owner = Some(owner);
                self.shared.with(Session::accept);
            }
            Err(refusal) => {
                tracing::info!(%peer, %target, %refusal, "session refused");
                self.shared.with(|s| s.refuse(refusal));
            }
        }
    }

    fn on_established(&mut self) {
        let info = self.shared.read(|s| SessionInfo {
            id: s.id(),
            role: s.role(),
            peer: s.peer().cloned().expect("peer known once established"),
            actor: s.target().to_owned(),
            remote_addr: self.remote_addr,
        });
        self.span.record("id", tracing::field::display(info.id));
        self.span
            .record("peer", tracing::field::display(&info.peer));
        self.span.record("actor", info.actor.as_str());
        // Before any handle exists: every send and delivery is charged to the budgets.
        let account = self.cx.budgets.account(&info.peer);
        self.shared.set_account(account);
        let session = SessionRef::new(self.shared.clone(), info);
        let owner = self.owner.as_ref().and_then(|o| o.cell());
        self.cx.node.session_opened(&session, &self.shared, owner);
        self.session_ref = Some(session.clone());
        match (session.role(), self.established.take()) {
            (Role::Initiator, Some(tx)) => {
                let _ = tx.send(Ok(session));
            }
            _ => {
                if let Link::Accept = self.link {
                    let attach = self.cx.node.remember_resumable(&session, &self.shared);
                    self.attach_rx = Some(attach);
                }
                self.signal(SessionSignal::Opened);
            }
        }
    }

    /// What one message from the peer becomes: a completed call, or a message for the
    /// owner.
    fn arrive(&mut self, body: Body) -> Arrival {
        let Some(session) = &self.session_ref else {
            return Arrival::NoOwner;
        };
        if self.owner.is_none() {
            return Arrival::NoOwner;
        }
        let reply = match body.kind {
            BodyKind::Reply { to, fault } => {
                // Consumed on arrival: its bytes go back to the budgets at once.
                self.shared.consumed_one(body.payload.len());
                let outcome = match fault {
                    Some(fault) => Err(CallError::Fault(*fault)),
                    None => Ok((body.type_url, body.payload)),
                };
                if !self.shared.complete_call(to, outcome) {
                    tracing::debug!(call = to, "reply after the caller gave up");
                }
                return Arrival::Completed;
            }
            BodyKind::Call { id, timeout_ms } => Some(ReplyPort {
                session: session.clone(),
                call_id: id,
                deadline: (timeout_ms > 0)
                    .then(|| Instant::now() + Duration::from_millis(timeout_ms)),
                answered: false,
            }),
            BodyKind::Cast => None,
        };
        Arrival::ForOwner(Inbound {
            session: session.clone(),
            type_url: body.type_url,
            charge: body.payload.len(),
            payload: body.payload,
            reply,
        })
    }

    fn on_closed(&mut self, reason: CloseReason, unconfirmed: Vec<Envelope>) {
        self.shared.fail_calls(&reason);
        let (session, role) = self.shared.read(|s| (s.id(), s.role()));
        self.cx.node.session_closed(Closed {
            session,
            established: self.session_ref.is_some(),
            role,
            remote_addr: self.remote_addr,
            reason: &reason,
        });
        let unconfirmed = unconfirmed.into_iter().map(Into::into).collect();
        if let Some(tx) = self.established.take() {
            let _ = tx.send(Err(reason.clone()));
        } else if let CloseReason::Lost(lost) = &reason {
            let escalation = (self.policy == SessionPolicy::Escalate)
                .then(|| self.owner.as_ref().and_then(|o| o.cell()))
                .flatten()
                .map(|owner| Escalation {
                    owner,
                    reason: format!("session lost: {lost}"),
                });
            self.restart_after = self.policy == SessionPolicy::Restart
                && matches!(self.link, Link::Dial(_))
                && !self.shutdown_seen;
            let lost = lost.clone();
            self.signal(|session| {
                SessionSignal::Lost(Lost {
                    session,
                    reason: lost,
                    unconfirmed,
                    escalation,
                })
            });
        } else {
            let reason = reason.clone();
            self.signal(|session| SessionSignal::Closed {
                session,
                reason,
                unconfirmed,
            });
        }
        self.shared.set_closed(reason);
    }

    /// `Restart`: reports the loss to the node, which greets the peer again with a new
    /// session and tells the owner how that went.
    pub(super) fn request_restart(&self) {
        let Link::Dial(dialer) = &self.link else {
            return;
        };
        let (Some(owner), Some(previous)) = (self.owner.clone(), self.session_ref.clone()) else {
            return;
        };
        self.cx.node.clone().restart(Restart {
            addr: dialer.addr.clone(),
            actor: dialer.actor.clone(),
            owner,
            policy: self.policy,
            slot: dialer.slot.clone(),
            previous,
        });
    }
}

/// One message from the peer, as the driver sees it.
enum Arrival {
    /// A reply, handed to its caller.
    Completed,
    /// A message for the owner's mailbox.
    ForOwner(Inbound),
    /// There is no owner to take it.
    NoOwner,
}

/// What one round of events delivered.
#[derive(Default)]
struct Delivery {
    /// Messages gathered for a batching owner, not yet handed over.
    run: Vec<Inbound>,
    /// The sequence number of the run's last message.
    run_end: u64,
    /// Everything up to this sequence number reached its destination.
    confirmed: Option<u64>,
    /// The owner stopped taking messages; the session ends.
    owner_gone: bool,
}
