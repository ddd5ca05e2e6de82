//! Flow control of one session, both ways, pure like the rest of the core.
//!
//! - [`Outflow`]: what this side may send. Credit is cumulative and counted twice: in
//!   messages (the highest sequence number the peer allows) and in bytes (the most payload
//!   bytes, summed over the session, the peer allows); a send waits on whichever runs out
//!   first. The peer's signals pause it (`Pause` until `Resume`, `PauseFor(d)` for
//!   `d`) or pace it (`Throttle(f)`: a token bucket at `f` times the rate this side was
//!   sending at when the signal arrived).
//! - [`Inflow`]: what this side lets the peer send. Credit is granted as the owner
//!   consumes messages (drops them), in bulk (a quarter window at a time); the owner's
//!   backlog from this session (delivered, not yet consumed) crossing the high watermark
//!   pauses the peer, and falling under the low watermark resumes it. Every byte of
//!   credit granted and not yet consumed is reserved in the inbound memory budgets
//!   ([`InboundBudget`], `crate::budget`) before it is granted, so what may be in flight
//!   towards the owner never exceeds them; a grant the budgets cannot cover waits until
//!   they can. The byte window grows from a small initial grant as the peer uses it, so
//!   an idle session reserves little.

use std::time::{Duration, Instant};

use crate::error::HeldBy;
use crate::session::SessionConfig;
use crate::signal::FlowSignal;
use crate::wire::{Flow, FlowQuery};

/// The flow state of one session, both ways, as its owner can read it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlowState {
    /// Messages this side may still send before it needs more credit.
    pub credit: u64,
    /// Payload bytes this side may still send before it needs more byte credit.
    pub credit_bytes: u64,
    /// Whether a send would wait now (no credit, paused, or throttled), or the last one
    /// refused still waits for byte credit.
    pub send_blocked: bool,
    /// The peer's back-pressure signal in effect, if any.
    pub peer_signal: Option<FlowSignal>,
    /// The rate, in messages per second, a peer's `Throttle` limits this side to.
    pub throttled_to: Option<f64>,
    /// Messages from the peer delivered to the owner's mailbox and not yet consumed.
    pub inbound_waiting: u64,
    /// Their payload bytes (received from the peer and not yet consumed).
    pub inbound_waiting_bytes: u64,
    /// Payload bytes this side granted the peer and the owner has not consumed: the most
    /// that can be in flight towards the owner from this session, and what it holds of
    /// the inbound budgets.
    pub inbound_granted_bytes: u64,
    /// Whether this side is pausing the peer (automatically or by the owner's signal).
    pub pausing_peer: bool,
    /// Whether this side withholds credit from the peer because an inbound memory budget
    /// cannot cover it ([`crate::settings::BudgetConfig`]): the grant goes out once it can.
    pub credit_withheld: bool,
}

/// The slowest a throttle ever paces, in messages per second.
const MIN_RATE: f64 = 1.0;
/// How often the sending rate is measured.
const RATE_EPOCH: Duration = Duration::from_millis(100);

/// What this side may send.
#[derive(Debug)]
pub(crate) struct Outflow {
    /// The highest sequence number the peer allows.
    credit: u64,
    /// The most payload bytes, summed over the session, the peer allows.
    credit_bytes: u64,
    /// Payload bytes sent so far, replies included.
    sent_bytes: u64,
    /// A send refused for byte credit: its sequence number and size, until it goes.
    byte_wait: Option<(u64, u64)>,
    /// The sequence number a `FlowQuery` naming its size went out for.
    asked_bytes_for: Option<u64>,
    paused: bool,
    resume_at: Option<Instant>,
    throttle: Option<Bucket>,
    throttle_factor: Option<f64>,
    epoch_start: Instant,
    /// Messages sent in all.
    sent_total: u64,
    /// `sent_total` when the current epoch started.
    epoch_total: u64,
    /// Messages per second over the last measured epochs.
    rate: f64,
}

impl Outflow {
    pub(crate) fn new(window: u64, window_bytes: u64, now: Instant) -> Self {
        Self {
            credit: window,
            credit_bytes: window_bytes,
            sent_bytes: 0,
            byte_wait: None,
            asked_bytes_for: None,
            paused: false,
            resume_at: None,
            throttle: None,
            throttle_factor: None,
            epoch_start: now,
            sent_total: 0,
            epoch_total: 0,
            rate: 0.0,
        }
    }

    /// The peer's credit windows, learned in the handshake.
    pub(crate) fn set_window(&mut self, window: u64, window_bytes: u64) {
        self.credit = window;
        self.credit_bytes = window_bytes;
    }

    /// Until when sending `next_seq` must wait: `Some(None)` until credit or a resume
    /// arrives, `Some(Some(t))` until `t`; `None` to send now.
    ///
    /// `now` is read only while a timed pause or a throttle is in effect: the common send
    /// asks no clock.
    pub(crate) fn blocked(
        &self,
        next_seq: u64,
        now: impl Fn() -> Instant,
    ) -> Option<Option<Instant>> {
        self.hold(next_seq, now).map(|(_, until)| until)
    }

    /// What holds back sending `next_seq` of `size` payload bytes, if anything, and until
    /// when (`None`: until credit or a resume arrives). A refusal for bytes is remembered
    /// (see [`Outflow::byte_query`]).
    pub(crate) fn hold_sized(
        &mut self,
        next_seq: u64,
        size: u64,
        now: impl Fn() -> Instant,
    ) -> Option<(HeldBy, Option<Instant>)> {
        let hold = self.hold(next_seq, now);
        if hold.as_ref().is_some_and(|(by, _)| *by == HeldBy::NoCredit) {
            return hold;
        }
        if self.sent_bytes.saturating_add(size) > self.credit_bytes {
            self.byte_wait = Some((next_seq, size));
            return Some((HeldBy::NoByteCredit, None));
        }
        hold
    }

    /// What holds back sending `next_seq`, if anything, and until when (`None`: until
    /// credit or a resume arrives); byte credit aside (see [`Outflow::hold_sized`]).
    pub(crate) fn hold(
        &self,
        next_seq: u64,
        now: impl Fn() -> Instant,
    ) -> Option<(HeldBy, Option<Instant>)> {
        if next_seq > self.credit {
            return Some((HeldBy::NoCredit, None));
        }
        if self.paused {
            return Some((HeldBy::Paused, None));
        }
        if let Some(at) = self.resume_at
            && now() < at
        {
            return Some((HeldBy::PauseFor, Some(at)));
        }
        self.throttle
            .as_ref()
            .and_then(|b| b.ready_at(now()))
            .map(|at| (HeldBy::Throttled, Some(at)))
    }

    /// A `FlowQuery` to send now, if a send waits for byte credit and the peer was not yet
    /// told its size: a peer that consumed everything it got has no reason of its own to
    /// grant more, so it must learn that a larger message waits.
    pub(crate) fn byte_query(&mut self) -> Option<FlowQuery> {
        let (next_seq, size) = self.byte_wait?;
        let needed_bytes = self.sent_bytes.saturating_add(size);
        if self.asked_bytes_for == Some(next_seq) || needed_bytes <= self.credit_bytes {
            return None;
        }
        self.asked_bytes_for = Some(next_seq);
        Some(FlowQuery {
            next_seq,
            needed_bytes,
        })
    }

    /// The byte-credit query of the current wait may have been lost with a broken
    /// stream: ask again on the next refusal.
    pub(crate) fn forget_byte_query(&mut self) {
        self.asked_bytes_for = None;
    }

    /// One message of `size` payload bytes was sent (`now` is read only under a
    /// throttle).
    pub(crate) fn sent(&mut self, size: u64, now: impl Fn() -> Instant) {
        self.sent_total += 1;
        self.sent_bytes = self.sent_bytes.saturating_add(size);
        self.byte_wait = None;
        // A timed pause that has run out is forgotten, so sending stops reading the clock.
        if self.resume_at.is_some_and(|at| now() >= at) {
            self.resume_at = None;
        }
        if let Some(bucket) = &mut self.throttle {
            bucket.take(now());
        }
    }

    /// Measures the sending rate: called whenever data goes out, it closes an epoch once
    /// one has lasted [`RATE_EPOCH`].
    pub(crate) fn sample(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.epoch_start);
        if elapsed >= RATE_EPOCH {
            let rate = (self.sent_total - self.epoch_total) as f64 / elapsed.as_secs_f64();
            self.rate = if self.rate == 0.0 {
                rate
            } else {
                0.5 * self.rate + 0.5 * rate
            };
            self.epoch_start = now;
            self.epoch_total = self.sent_total;
        }
    }

    fn current_rate(&self, now: Instant) -> f64 {
        let elapsed = now
            .saturating_duration_since(self.epoch_start)
            .as_secs_f64();
        let partial = if elapsed > 0.0 {
            (self.sent_total - self.epoch_total) as f64 / elapsed
        } else {
            0.0
        };
        if self.rate == 0.0 { partial } else { self.rate }
    }

    /// The peer granted credit or signalled. Returns whether a waiting sender may now go
    /// on, and whether the signal changed anything (a signal restated after a resume that
    /// is already in effect does not: a repeated `Throttle(f)` keeps its bucket, so the
    /// rate is not scaled twice).
    pub(crate) fn update(&mut self, flow: &Flow, now: Instant) -> Update {
        let (credit, signal) = (flow.credit, flow.signal);
        let more_credit = credit > self.credit || flow.credit_bytes > self.credit_bytes;
        self.credit = self.credit.max(credit);
        self.credit_bytes = self.credit_bytes.max(flow.credit_bytes);
        let before = (self.paused, self.resume_at, self.throttle_factor);
        match signal {
            None => {}
            Some(FlowSignal::Pause) => {
                self.paused = true;
                self.resume_at = None;
            }
            Some(FlowSignal::Resume) => {
                self.paused = false;
                self.resume_at = None;
                self.throttle = None;
                self.throttle_factor = None;
            }
            Some(FlowSignal::PauseFor(after)) => {
                self.paused = false;
                self.resume_at = Some(now + after);
            }
            Some(FlowSignal::Throttle(factor)) if self.throttle_factor == Some(factor) => {}
            Some(FlowSignal::Throttle(factor)) => {
                let limit = (factor * self.current_rate(now)).max(MIN_RATE);
                self.throttle = Some(Bucket::new(limit, now));
                self.throttle_factor = Some(factor);
            }
        }
        let changed = (self.paused, self.resume_at, self.throttle_factor) != before;
        Update {
            opened: more_credit || changed,
            changed,
        }
    }

    /// Whether the last send refused, `next_seq`, still waits for byte credit.
    pub(crate) fn waits_for_bytes(&self, next_seq: u64) -> bool {
        self.byte_wait.is_some_and(|(seq, size)| {
            seq == next_seq && self.sent_bytes.saturating_add(size) > self.credit_bytes
        })
    }

    /// Whether sending `next_seq` waits for the peer (credit in messages or bytes, or a
    /// pause), as opposed to a delay that ends by itself (a timed pause or a throttle).
    pub(crate) fn held_back(&self, next_seq: u64) -> bool {
        next_seq > self.credit || self.paused || self.waits_for_bytes(next_seq)
    }

    /// The highest sequence number the peer allows (cumulative): it grows as the peer's
    /// owner consumes, paused or not.
    pub(crate) fn granted(&self) -> u64 {
        self.credit
    }

    /// Payload bytes that may still be sent on the current byte credit.
    pub(crate) fn credit_bytes_left(&self) -> u64 {
        self.credit_bytes.saturating_sub(self.sent_bytes)
    }

    /// Messages that may still be sent on the current credit. (The peer chooses the
    /// credit: `u64::MAX` is as valid as any.)
    pub(crate) fn credit_left(&self, next_seq: u64) -> u64 {
        self.credit
            .checked_sub(next_seq)
            .map_or(0, |left| left.saturating_add(1))
    }

    /// The peer's signal in effect.
    pub(crate) fn signal(&self) -> Option<FlowSignal> {
        if self.paused {
            Some(FlowSignal::Pause)
        } else if let Some(at) = self.resume_at {
            Some(FlowSignal::PauseFor(
                at.saturating_duration_since(self.epoch_start),
            ))
        } else {
            self.throttle_factor.map(FlowSignal::Throttle)
        }
    }

    /// The rate a throttle limits sending to.
    pub(crate) fn throttled_to(&self) -> Option<f64> {
        self.throttle.as_ref().map(|b| b.rate)
    }
}

/// Watches a sender the peer holds back (no credit, or paused) while the stream is up,
/// so that it never waits without a word: after the silence timeout it asks the peer to
/// restate its flow state (`FlowQuery`); a peer that does not answer within another
/// silence timeout has a broken stream (the resume restates everything); a peer that
/// answers and still holds it back is reported to the owner, once per episode.
#[derive(Debug, Default)]
pub(crate) struct HeldBack {
    /// Since when a send has been refused for credit or a pause.
    since: Option<Instant>,
    /// When the `FlowQuery` went out.
    asked: Option<Instant>,
    /// A `Flow` arrived after the query.
    answered: bool,
    /// The owner was told.
    told: bool,
}

/// What [`HeldBack::due`] says to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeldBackStep {
    /// Send a `FlowQuery`.
    Ask,
    /// The peer did not answer the query: give the stream up.
    Unanswered,
    /// The peer answered and still holds the sender back this long: tell the owner.
    Tell(Duration),
}

impl HeldBack {
    /// A send was refused for credit or a pause at `now`.
    pub(crate) fn refused(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// The sender may go on, or the stream changed: a new episode starts at the next
    /// refusal.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// A `Flow` arrived from the peer.
    pub(crate) fn heard_flow(&mut self) {
        if self.asked.is_some() {
            self.answered = true;
        }
    }

    /// When the next step is due, if any.
    pub(crate) fn deadline(&self, silence: Duration) -> Option<Instant> {
        match (self.since, self.asked) {
            _ if self.told => None,
            (Some(since), None) => Some(since + silence),
            (Some(_), Some(asked)) => Some(asked + silence),
            (None, _) => None,
        }
    }

    /// The step due at `now`, if any (and records it).
    pub(crate) fn due(&mut self, now: Instant, silence: Duration) -> Option<HeldBackStep> {
        if self.deadline(silence).is_none_or(|at| now < at) {
            return None;
        }
        let since = self.since?;
        if self.asked.is_none() {
            self.asked = Some(now);
            return Some(HeldBackStep::Ask);
        }
        if !self.answered {
            self.clear();
            return Some(HeldBackStep::Unanswered);
        }
        self.told = true;
        Some(HeldBackStep::Tell(now.saturating_duration_since(since)))
    }
}

/// What a [`Outflow::update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Update {
    /// A waiting sender may go on (more credit, or a signal changed).
    pub(crate) opened: bool,
    /// The peer's signal changed the flow state.
    pub(crate) changed: bool,
}

/// A token bucket: `rate` messages per second, bursts of a hundredth of a second.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        let burst = (rate / 100.0).max(1.0);
        Self {
            rate,
            tokens: 1.0,
            burst,
            last: now,
        }
    }

    fn tokens_at(&self, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        (self.tokens + refill).min(self.burst)
    }

    /// When the next token is there, if not now.
    fn ready_at(&self, now: Instant) -> Option<Instant> {
        let tokens = self.tokens_at(now);
        (tokens < 1.0).then(|| now + Duration::from_secs_f64((1.0 - tokens) / self.rate))
    }

    fn take(&mut self, now: Instant) {
        self.tokens = self.tokens_at(now) - 1.0;
        self.last = now;
    }
}

/// The inbound memory budgets a session reserves its byte grants in (`crate::budget`).
pub(crate) trait InboundBudget {
    /// Reserves up to `bytes` to grant ahead of need; returns how many it could (it
    /// never waits: a peer that needs more asks).
    fn reserve(&mut self, bytes: u64) -> u64;
    /// Reserves exactly `bytes`, or nothing (`false`); short of room, it arranges for
    /// the session to be woken once there may be enough.
    fn reserve_exact(&mut self, bytes: u64) -> bool;
    /// Gives back `bytes` reserved before.
    fn release(&mut self, bytes: u64);
    /// Done for now: whoever waits for room that this session gave back may take it.
    fn settle(&mut self) {}
}

/// No budgets but the session's own windows.
#[derive(Debug)]
pub(crate) struct Unbounded;

impl InboundBudget for Unbounded {
    fn reserve(&mut self, bytes: u64) -> u64 {
        bytes
    }

    fn reserve_exact(&mut self, _: u64) -> bool {
        true
    }

    fn release(&mut self, _: u64) {}
}

/// What this side lets the peer send.
#[derive(Debug)]
pub(crate) struct Inflow {
    window: u64,
    consumed: u64,
    delivered: u64,
    /// The credit granted so far (cumulative).
    granted: u64,
    /// The most payload bytes granted and not consumed at once.
    window_bytes: u64,
    /// What the byte grant keeps open ahead of consumption: the initial grant at first,
    /// doubling (up to the window) whenever the peer has used half of it.
    target_bytes: u64,
    /// The byte credit granted so far (cumulative).
    granted_bytes: u64,
    /// Payload bytes the owner consumed, in all.
    consumed_bytes: u64,
    /// Payload bytes received, in all.
    received_bytes: u64,
    /// The byte credit the peer asked for (`FlowQuery.needed_bytes`), until it is
    /// granted; 0: none asked.
    needed_bytes: u64,
    high: Option<u64>,
    low: u64,
    auto_paused: bool,
    /// Holds on the peer from this side's fan-outs (`crate::flow::Fanout`): while any is on,
    /// the peer is paused, whatever the owner's own signals.
    holds: u32,
    /// The owner's own signal in effect, restated after a resume.
    manual: Option<FlowSignal>,
    /// A signal the peer may not have received (sent while interrupted, or queued when
    /// the stream broke): sent again on the resumed stream.
    unsent: Option<FlowSignal>,
    /// A byte grant is due and the inbound budgets cannot cover it yet.
    withheld: bool,
}

impl Inflow {
    pub(crate) fn new(config: &SessionConfig) -> Self {
        let window = config.credit_window.max(1);
        let at = |fraction: f64| ((fraction * window as f64) as u64).clamp(1, window);
        // The byte window takes the largest message this side accepts, or that message
        // could never be granted.
        let window_bytes = config
            .credit_window_bytes
            .max(config.max_message_bytes)
            .max(1);
        let initial = config.initial_credit_bytes.clamp(1, window_bytes);
        Self {
            window,
            consumed: 0,
            delivered: 0,
            granted: window,
            window_bytes,
            target_bytes: initial,
            granted_bytes: initial,
            consumed_bytes: 0,
            received_bytes: 0,
            needed_bytes: 0,
            high: config.flow_high_watermark.map(at),
            low: at(config.flow_low_watermark).saturating_sub(1),
            auto_paused: false,
            holds: 0,
            manual: None,
            unsent: None,
            withheld: false,
        }
    }

    /// The highest sequence number the peer may send (replies excepted).
    pub(crate) fn granted(&self) -> u64 {
        self.granted
    }

    /// The byte credit granted so far (cumulative): what the handshake states first.
    pub(crate) fn granted_bytes(&self) -> u64 {
        self.granted_bytes
    }

    /// Caps the byte window at `bytes` (the session's inbound budget), never below the
    /// largest message this side accepts, which must stay receivable.
    pub(crate) fn cap_window_bytes(&mut self, bytes: u64, max_message: u64) {
        self.window_bytes = self.window_bytes.min(bytes.max(max_message)).max(1);
        self.target_bytes = self.target_bytes.min(self.window_bytes);
    }

    /// Whether the peer may send a message of `size` bytes (not a reply) now: what it
    /// received so far and this stay within the byte credit granted.
    pub(crate) fn byte_credit_allows(&self, size: u64) -> bool {
        self.received_bytes.saturating_add(size) <= self.granted_bytes
    }

    /// A message (or reply) of `size` payload bytes arrived.
    pub(crate) fn received(&mut self, size: u64) {
        self.received_bytes = self.received_bytes.saturating_add(size);
    }

    /// Payload bytes received and not yet consumed.
    pub(crate) fn waiting_bytes(&self) -> u64 {
        self.received_bytes.saturating_sub(self.consumed_bytes)
    }

    /// Payload bytes granted and not yet consumed: what is reserved in the budgets.
    pub(crate) fn outstanding_bytes(&self) -> u64 {
        self.granted_bytes.saturating_sub(self.consumed_bytes)
    }

    /// Whether the peer waits on this side: every message it was granted was delivered,
    /// or this side pauses it. Then grants go out in small steps, so a sender watching how
    /// its peer reads (a fan-out) sees it read, a little at a time.
    pub(crate) fn peer_waits(&self) -> bool {
        self.delivered >= self.granted || self.pausing()
    }

    /// Messages delivered to the owner and not yet consumed.
    pub(crate) fn waiting(&self) -> u64 {
        self.delivered.saturating_sub(self.consumed)
    }

    /// Whether this side is pausing the peer.
    pub(crate) fn pausing(&self) -> bool {
        self.auto_paused || self.holds > 0 || self.manual == Some(FlowSignal::Pause)
    }

    /// A fan-out holds the peer back; returns the signal to send, if the peer was not
    /// paused already.
    pub(crate) fn hold(&mut self) -> Option<FlowSignal> {
        let paused = self.pausing();
        self.holds += 1;
        (!paused).then_some(FlowSignal::Pause)
    }

    /// A fan-out's hold ends; returns the signal to send, if nothing else pauses the peer:
    /// the owner's throttle in effect, or `Resume`.
    pub(crate) fn unhold(&mut self) -> Option<FlowSignal> {
        if self.holds == 0 {
            return None;
        }
        self.holds -= 1;
        let signal = match self.manual {
            Some(throttle @ FlowSignal::Throttle(_)) => throttle,
            _ => FlowSignal::Resume,
        };
        (!self.pausing()).then_some(signal)
    }

    /// Messages up to `seq` were delivered; may pause the peer.
    pub(crate) fn delivered(&mut self, seq: u64) -> Option<Flow> {
        self.delivered = self.delivered.max(seq);
        let high = self.high?;
        if !self.pausing() && self.waiting() >= high {
            self.auto_paused = true;
            return Some(Flow {
                signal: Some(FlowSignal::Pause),
                ..Flow::default()
            });
        }
        None
    }

    /// The owner consumed `consumed` messages of `consumed_bytes` payload bytes in all;
    /// gives back to `budget` what that frees, and may grant credit or resume. A byte
    /// grant goes out only as far as `budget` covers it; short of that it is withheld,
    /// and the next call (with more consumed or not) looks again.
    pub(crate) fn consumed(
        &mut self,
        consumed: u64,
        consumed_bytes: u64,
        budget: &mut dyn InboundBudget,
    ) -> Option<Flow> {
        if consumed <= self.consumed && consumed_bytes <= self.consumed_bytes && !self.withheld() {
            return None;
        }
        self.consumed = self.consumed.max(consumed);
        let reserved = self.outstanding_bytes();
        self.consumed_bytes = self.consumed_bytes.max(consumed_bytes);
        budget.release(reserved - self.outstanding_bytes());
        let mut flow = Flow::default();
        // Saturating: a window of `u64::MAX` (no flow control to speak of) is granted whole
        // in the greeting, and never again. A quarter window at a time, or a 256th while
        // the peer waits for it.
        let grant = self.consumed.saturating_add(self.window);
        let step = if self.peer_waits() {
            self.window / 256
        } else {
            self.window / 4
        };
        if grant > self.granted && grant >= self.granted.saturating_add(step.max(1)) {
            self.granted = grant;
            flow.credit = grant;
        }
        flow.credit_bytes = self.grant_bytes(budget).unwrap_or(0);
        budget.settle();
        if self.auto_paused && self.waiting() <= self.low {
            self.auto_paused = false;
            if !self.pausing() {
                flow.signal = Some(FlowSignal::Resume);
            }
        }
        (flow.credit > 0 || flow.credit_bytes > 0 || flow.signal.is_some()).then_some(flow)
    }

    /// The peer asks (`FlowQuery`): when it names byte credit beyond what it was granted
    /// (a message that does not fit), grants it as far as the window and `budget` allow
    /// (now, or once they do). Returns the whole flow state to restate as the answer.
    pub(crate) fn asked(&mut self, query: FlowQuery, budget: &mut dyn InboundBudget) -> Flow {
        if query.needed_bytes > self.granted_bytes {
            self.needed_bytes = self.needed_bytes.max(query.needed_bytes);
            self.grant_bytes(budget);
            budget.settle();
        }
        self.restate()
    }

    /// Raises the byte grant towards `consumed + target` (and what the peer asked for),
    /// reserving the difference in `budget`; the new cumulative grant, if it grew enough
    /// to be worth a frame.
    fn grant_bytes(&mut self, budget: &mut dyn InboundBudget) -> Option<u64> {
        // The peer used half of what was open: open more, up to the window.
        if self.received_bytes.saturating_add(self.target_bytes / 2) >= self.granted_bytes {
            self.target_bytes = self.target_bytes.saturating_mul(2).min(self.window_bytes);
        }
        let base = self.granted_bytes.max(self.consumed_bytes);
        let ceiling = self.consumed_bytes.saturating_add(self.window_bytes);
        let mut granted = None;
        if self.needed_bytes > self.granted_bytes {
            // The peer waits to send a message: what it needs, whole, or nothing yet (a
            // part would be held for nothing). Past the window, once the owner consumes.
            if self.needed_bytes > ceiling || !budget.reserve_exact(self.needed_bytes - base) {
                self.withheld = true;
                return None;
            }
            self.granted_bytes = self.needed_bytes;
            self.needed_bytes = 0;
            granted = Some(self.granted_bytes);
        }
        let base = self.granted_bytes.max(self.consumed_bytes);
        let want = self.consumed_bytes.saturating_add(self.target_bytes);
        let step = (self.target_bytes / 4).max(1);
        if want <= base || want < self.granted_bytes.saturating_add(step) {
            self.withheld = false;
            return granted;
        }
        // Ahead of need: what the budgets spare, or nothing (the peer asks when it waits).
        let got = budget.reserve(want - base);
        self.withheld = false;
        let grant = base + got;
        if grant < self.granted_bytes.saturating_add(step) {
            budget.release(got);
            return granted;
        }
        self.granted_bytes = grant;
        Some(grant)
    }

    /// Whether a byte grant is due and cannot go out yet: the inbound budgets cannot
    /// cover it, or the peer waits for more than the window holds now.
    pub(crate) fn withheld(&self) -> bool {
        self.withheld || self.needed_bytes > self.granted_bytes
    }

    /// What the byte grant keeps open ahead of consumption now.
    pub(crate) fn target(&self) -> u64 {
        self.target_bytes
    }

    /// The owner sent `signal` to the peer.
    pub(crate) fn signalled(&mut self, signal: FlowSignal) {
        match signal {
            FlowSignal::Resume => {
                self.manual = None;
                self.auto_paused = false;
            }
            other => self.manual = Some(other),
        }
    }

    /// `signal` may not have reached the peer: repeat it after the resume.
    pub(crate) fn unsent(&mut self, signal: FlowSignal) {
        self.unsent = Some(signal);
    }

    /// The grant and the signal in effect, stated whole on a new stream.
    ///
    /// A frame that was on the wire when a stream broke may or may not have arrived, so
    /// nothing is assumed about it: the resume states the complete flow state instead of
    /// repeating the last change. Above all a `Resume` lost on a broken stream must not
    /// leave the peer paused for good, so a side that pauses nothing says `Resume`.
    pub(crate) fn restate(&mut self) -> Flow {
        let unsent = self.unsent.take();
        let signal = if self.pausing() {
            FlowSignal::Pause
        } else {
            match (self.manual, unsent) {
                (Some(throttle @ FlowSignal::Throttle(_)), _) => throttle,
                // A delay the peer may not have seen; one it saw has run or is running,
                // and the resume ends it (a restated delay would start again).
                (Some(after @ FlowSignal::PauseFor(_)), Some(_)) => after,
                _ => FlowSignal::Resume,
            }
        };
        Flow {
            credit: self.granted,
            credit_bytes: self.granted_bytes,
            signal: Some(signal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: u64) -> SessionConfig {
        SessionConfig {
            credit_window: window,
            ..SessionConfig::default()
        }
    }

    /// A budget of `room` bytes, keeping count of what it holds.
    #[derive(Debug)]
    struct Budget {
        room: u64,
        held: u64,
    }

    impl Budget {
        fn new(room: u64) -> Self {
            Self { room, held: 0 }
        }
    }

    impl InboundBudget for Budget {
        fn reserve(&mut self, bytes: u64) -> u64 {
            let got = bytes.min(self.room - self.held);
            self.held += got;
            got
        }

        fn reserve_exact(&mut self, bytes: u64) -> bool {
            let fits = self.room - self.held >= bytes;
            if fits {
                self.held += bytes;
            }
            fits
        }

        fn release(&mut self, bytes: u64) {
            self.held -= bytes;
        }
    }

    fn bytes_config(initial: u64, window: u64) -> SessionConfig {
        SessionConfig {
            initial_credit_bytes: initial,
            credit_window_bytes: window,
            max_message_bytes: 1000,
            ..SessionConfig::default()
        }
    }

    #[test]
    fn credit_is_granted_in_bulk_as_the_owner_consumes() {
        let mut inflow = Inflow::new(&config(100));
        inflow.delivered(10);
        assert_eq!(
            inflow.consumed(10, 0, &mut Unbounded),
            None,
            "less than a quarter window"
        );
        inflow.delivered(30);
        let flow = inflow.consumed(30, 0, &mut Unbounded).expect("a grant");
        assert_eq!(flow.credit, 130);
    }

    #[test]
    fn while_the_peer_waits_credit_is_granted_in_small_steps() {
        let mut inflow = Inflow::new(&SessionConfig {
            flow_high_watermark: None,
            ..config(1024)
        });
        // The peer sent its whole window: it waits.
        assert_eq!(inflow.delivered(1024), None);
        assert!(inflow.peer_waits());
        // A slow reader consumes four: a 256th of the window, granted at once (not a
        // quarter window later), so a sender watching its peer read sees it read.
        assert_eq!(inflow.consumed(3, 0, &mut Unbounded), None);
        let flow = inflow
            .consumed(4, 0, &mut Unbounded)
            .expect("a small grant");
        assert_eq!(flow.credit, 1028);
        assert!(!inflow.peer_waits(), "the grant is not used yet");
        assert_eq!(inflow.consumed(8, 0, &mut Unbounded), None, "back to bulk");
    }

    #[test]
    fn the_largest_window_is_granted_once_without_overflow() {
        let mut inflow = Inflow::new(&config(u64::MAX));
        assert_eq!(inflow.granted(), u64::MAX);
        assert_eq!(inflow.delivered(10), None);
        assert_eq!(
            inflow.consumed(10, 0, &mut Unbounded),
            None,
            "nothing more to grant"
        );
        assert_eq!(inflow.consumed(u64::MAX, 0, &mut Unbounded), None);
        assert_eq!(inflow.granted(), u64::MAX);
    }

    #[test]
    fn the_byte_grant_doubles_as_the_peer_uses_it_up_to_the_window() {
        let mut inflow = Inflow::new(&bytes_config(1000, 16_000));
        assert_eq!(inflow.granted_bytes(), 1000);
        let mut budget = Budget::new(u64::MAX);
        budget.held = 1000;
        let (mut n, mut consumed, mut grants) = (0, 0, Vec::new());
        // Rounds: the peer sends 100-byte messages until its byte credit runs out, then
        // the owner consumes them all.
        for _ in 0..20 {
            let mut sent = 0;
            while inflow.byte_credit_allows(100) {
                inflow.received(100);
                n += 1;
                inflow.delivered(n);
                sent += 100;
            }
            consumed += sent;
            if let Some(flow) = inflow.consumed(n, consumed, &mut budget) {
                grants.push(flow.credit_bytes - consumed);
            }
            assert!(
                inflow.outstanding_bytes() <= 16_000,
                "never more open than the window"
            );
            assert_eq!(
                budget.held,
                inflow.outstanding_bytes(),
                "all of it reserved"
            );
        }
        assert_eq!(inflow.target(), 16_000, "grown to the window");
        assert_eq!(
            grants[..5],
            [2000, 4000, 8000, 16_000, 16_000],
            "{grants:?}"
        );
    }

    #[test]
    fn a_byte_grant_is_reserved_first_and_waits_while_the_budget_has_no_room() {
        let mut inflow = Inflow::new(&bytes_config(1000, 4000));
        // The handshake's grant is charged apart (`Account::charge_inbound`).
        let mut budget = Budget::new(1000);
        budget.held = 1000;
        inflow.received(1000);
        inflow.delivered(10);
        // Consumed: the thousand bytes go back, and are granted again at once.
        let flow = inflow.consumed(10, 1000, &mut budget).expect("a grant");
        assert!(flow.credit_bytes > 1000);
        assert_eq!(budget.held, inflow.outstanding_bytes());
        // Another session takes the rest of the budget.
        budget.held = budget.room;
        inflow.received(inflow.outstanding_bytes());
        inflow.delivered(20);
        let granted = inflow.granted_bytes();
        let consumed = granted;
        let flow = inflow.consumed(20, consumed, &mut budget);
        // What this session gave back, it may grant again; nothing more.
        assert!(flow.is_none_or(|f| f.credit_bytes - granted <= granted - 1000));
        assert!(budget.held <= budget.room);
    }

    #[test]
    fn a_message_larger_than_the_grant_is_granted_when_asked_for() {
        let mut inflow = Inflow::new(&bytes_config(100, 4000));
        let mut budget = Budget::new(u64::MAX);
        // Nothing sent, nothing to consume: without the question nothing would move.
        assert_eq!(inflow.consumed(0, 0, &mut budget), None);
        let flow = inflow.asked(
            FlowQuery {
                next_seq: 1,
                needed_bytes: 900,
            },
            &mut budget,
        );
        assert!(flow.credit_bytes >= 900, "{flow:?}");
        assert!(!inflow.withheld());
        // Larger than the window: granted whole or not at all, so not (the sender's own
        // limit, `max_message_bytes`, stops it before it asks).
        let mut inflow = Inflow::new(&bytes_config(100, 1000));
        let flow = inflow.asked(
            FlowQuery {
                next_seq: 1,
                needed_bytes: 5000,
            },
            &mut budget,
        );
        assert_eq!(flow.credit_bytes, 100);
    }

    #[test]
    fn a_grant_the_peer_waits_for_follows_the_budget_as_it_frees() {
        let mut inflow = Inflow::new(&bytes_config(100, 4000));
        let mut budget = Budget::new(1000);
        budget.held = 1000;
        let flow = inflow.asked(
            FlowQuery {
                next_seq: 1,
                needed_bytes: 800,
            },
            &mut budget,
        );
        assert_eq!(flow.credit_bytes, 100, "no room: nothing more yet");
        assert!(inflow.withheld(), "the grant waits");
        budget.held = 100;
        let flow = inflow.consumed(0, 0, &mut budget).expect("looked at again");
        assert_eq!(flow.credit_bytes, 800);
        assert!(!inflow.withheld());
    }

    #[test]
    fn replies_past_the_byte_credit_are_counted_and_granted_over() {
        let mut inflow = Inflow::new(&bytes_config(100, 4000));
        let mut budget = Budget::new(u64::MAX);
        budget.held = 100;
        // A reply of 3000 bytes needs no credit; it is consumed as it arrives.
        inflow.received(3000);
        inflow.delivered(1);
        let flow = inflow.consumed(1, 3000, &mut budget).expect("a grant");
        assert!(flow.credit_bytes > 3000, "{flow:?}");
        assert_eq!(budget.held, inflow.outstanding_bytes());
    }

    #[test]
    fn the_high_watermark_pauses_and_the_low_one_resumes() {
        let mut inflow = Inflow::new(&config(100));
        assert_eq!(inflow.delivered(74), None);
        let pause = inflow.delivered(75).expect("paused at 75 waiting");
        assert_eq!(pause.signal, Some(FlowSignal::Pause));
        assert!(inflow.pausing());
        assert_eq!(
            inflow
                .consumed(40, 0, &mut Unbounded)
                .and_then(|f| f.signal),
            None,
            "35 still waiting"
        );
        let resume = inflow.consumed(51, 0, &mut Unbounded).expect("24 waiting");
        assert_eq!(resume.signal, Some(FlowSignal::Resume));
    }

    #[test]
    fn the_owners_pause_outlives_the_automatic_resume() {
        let mut inflow = Inflow::new(&config(100));
        inflow.delivered(80);
        inflow.signalled(FlowSignal::Pause);
        assert_eq!(
            inflow
                .consumed(80, 0, &mut Unbounded)
                .and_then(|f| f.signal),
            None
        );
        assert!(inflow.pausing());
    }

    #[test]
    fn sending_stops_at_the_credit_and_on_pause() {
        let now = Instant::now();
        let mut out = Outflow::new(2, u64::MAX, now);
        assert_eq!(out.blocked(2, || now), None);
        assert_eq!(out.blocked(3, || now), Some(None));
        assert!(out.update(&credit(5), now).opened);
        assert_eq!(out.blocked(3, || now), None);
        out.update(&signal(FlowSignal::Pause), now);
        assert_eq!(out.blocked(3, || now), Some(None));
        out.update(&signal(FlowSignal::Resume), now);
        assert_eq!(out.blocked(3, || now), None);
    }

    fn credit(credit: u64) -> Flow {
        Flow {
            credit,
            ..Flow::default()
        }
    }

    fn signal(signal: FlowSignal) -> Flow {
        Flow {
            signal: Some(signal),
            ..Flow::default()
        }
    }

    #[test]
    fn sending_waits_on_whichever_credit_runs_out_first() {
        let now = Instant::now();
        let mut out = Outflow::new(100, 250, now);
        assert_eq!(out.hold_sized(1, 200, || now), None);
        out.sent(200, || now);
        assert_eq!(
            out.hold_sized(2, 100, || now).map(|(by, _)| by),
            Some(HeldBy::NoByteCredit)
        );
        assert!(out.held_back(2));
        let query = out.byte_query().expect("the peer is asked once");
        assert_eq!((query.next_seq, query.needed_bytes), (2, 300));
        assert_eq!(out.byte_query(), None, "asked already");
        assert!(
            out.update(
                &Flow {
                    credit_bytes: 300,
                    ..Flow::default()
                },
                now
            )
            .opened
        );
        assert_eq!(out.hold_sized(2, 100, || now), None);
        out.sent(50, || now);
        assert_eq!(out.credit_bytes_left(), 50);
        // Messages run out first now.
        out.update(&credit(2), now);
        assert_eq!(
            out.hold_sized(101, 1, || now).map(|(by, _)| by),
            Some(HeldBy::NoCredit)
        );
    }

    /// Found by the fuzz (`session/testing/fuzz.rs`): a peer that grants the largest credit, in
    /// its greeting or a `Flow`, made reading the flow state overflow (a panic in a debug
    /// build, no credit left in a release one).
    #[test]
    fn the_largest_credit_leaves_the_most_credit() {
        let now = Instant::now();
        let mut out = Outflow::new(u64::MAX, u64::MAX, now);
        assert_eq!(out.credit_left(1), u64::MAX);
        assert_eq!(out.credit_left(u64::MAX), 1);
        out = Outflow::new(5, 5, now);
        out.update(&credit(u64::MAX), now);
        assert_eq!(out.credit_left(6), u64::MAX - 5);
        assert_eq!(Outflow::new(5, 5, now).credit_left(7), 0);
        assert_eq!(Outflow::new(5, 5, now).credit_left(5), 1);
    }

    #[test]
    fn a_timed_pause_waits_the_given_time() {
        let now = Instant::now();
        let mut out = Outflow::new(10, u64::MAX, now);
        out.update(
            &signal(FlowSignal::PauseFor(Duration::from_millis(300))),
            now,
        );
        let until = now + Duration::from_millis(300);
        assert_eq!(out.blocked(1, || now), Some(Some(until)));
        assert_eq!(out.blocked(1, || until), None);
    }

    #[test]
    fn a_timed_pause_already_received_ends_with_a_resume() {
        let now = Instant::now();
        let mut out = Outflow::new(10, u64::MAX, now);
        out.update(&signal(FlowSignal::PauseFor(Duration::from_secs(60))), now);
        assert!(out.blocked(1, || now).is_some());
        out.update(&signal(FlowSignal::Resume), now);
        assert_eq!(out.blocked(1, || now), None);
    }

    #[test]
    fn throttle_paces_at_a_fraction_of_the_measured_rate() {
        let start = Instant::now();
        let mut out = Outflow::new(u64::MAX, u64::MAX, start);
        // 1000 messages per second for half a second.
        let mut now = start;
        for _ in 0..500 {
            now += Duration::from_millis(1);
            out.sent(0, || now);
            out.sample(now);
        }
        out.update(&signal(FlowSignal::Throttle(0.5)), now);
        let limit = out.throttled_to().unwrap();
        assert!((limit - 500.0).abs() < 50.0, "limit {limit}");
        // Sending as fast as allowed for one second sends about half as much.
        let (end, mut sent) = (now + Duration::from_secs(1), 0);
        while now < end {
            match out.blocked(1, || now) {
                None => {
                    out.sent(0, || now);
                    out.sample(now);
                    sent += 1;
                }
                Some(Some(at)) => now = at,
                Some(None) => unreachable!("credit is unlimited"),
            }
        }
        assert!((450..=560).contains(&sent), "sent {sent}");
    }
}
