//! Flow control of one session, both ways, pure like the rest of the core.
//!
//! - [`Outflow`]: what this side may send. Credit is cumulative (the highest sequence
//!   number the peer allows); the peer's signals pause it (`Pause` until `Resume`,
//!   `ResumeAfter(d)` for `d`) or pace it (`Throttle(f)`: a token bucket at `f` times the
//!   rate this side was sending at when the signal arrived).
//! - [`Inflow`]: what this side lets the peer send. Credit is granted as the owner
//!   consumes messages (drops them), in bulk (a quarter window at a time); the owner's
//!   backlog from this session (delivered, not yet consumed) crossing the high watermark
//!   pauses the peer, and falling under the low watermark resumes it. A grant due is
//!   withheld while an inbound memory budget is exceeded (`crate::budget`), and made
//!   once it is not.

use std::time::{Duration, Instant};

use crate::error::HeldBy;
use crate::session::SessionConfig;
use crate::wire::{Flow, FlowSignal};

/// The flow state of one session, both ways, as its owner can read it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlowState {
    /// Messages this side may still send before it needs more credit.
    pub credit: u64,
    /// Whether a send would wait now (no credit, paused, or throttled).
    pub send_blocked: bool,
    /// The peer's back-pressure signal in effect, if any.
    pub peer_signal: Option<FlowSignal>,
    /// The rate, in messages per second, a peer's `Throttle` limits this side to.
    pub throttled_to: Option<f64>,
    /// Messages from the peer delivered to the owner's mailbox and not yet consumed.
    pub inbound_waiting: u64,
    /// Whether this side is pausing the peer (automatically or by the owner's signal).
    pub pausing_peer: bool,
    /// Whether this side withholds credit from the peer because an inbound memory budget
    /// is exceeded ([`crate::BudgetConfig`]): the grant goes out once it is not.
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
    pub(crate) fn new(window: u64, now: Instant) -> Self {
        Self {
            credit: window,
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

    /// The peer's credit window, learned in the handshake.
    pub(crate) fn set_window(&mut self, window: u64) {
        self.credit = window;
    }

    /// Until when sending `next_seq` must wait: `Some(None)` until credit or a resume
    /// arrives, `Some(Some(t))` until `t`; `None` to send now.
    ///
    /// `now` is read only while a resume-after or a throttle is in effect: the common send
    /// asks no clock.
    pub(crate) fn blocked(
        &self,
        next_seq: u64,
        now: impl Fn() -> Instant,
    ) -> Option<Option<Instant>> {
        self.hold(next_seq, now).map(|(_, until)| until)
    }

    /// What holds back sending `next_seq`, if anything, and until when (`None`: until
    /// credit or a resume arrives).
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
            return Some((HeldBy::ResumeAfter, Some(at)));
        }
        self.throttle
            .as_ref()
            .and_then(|b| b.ready_at(now()))
            .map(|at| (HeldBy::Throttled, Some(at)))
    }

    /// One message was sent (`now` is read only under a throttle).
    pub(crate) fn sent(&mut self, now: impl Fn() -> Instant) {
        self.sent_total += 1;
        // A resume-after that has run out is forgotten, so sending stops reading the clock.
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
    pub(crate) fn update(
        &mut self,
        credit: u64,
        signal: Option<FlowSignal>,
        now: Instant,
    ) -> Update {
        let more_credit = credit > self.credit;
        self.credit = self.credit.max(credit);
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
            Some(FlowSignal::ResumeAfter(after)) => {
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

    /// Whether sending `next_seq` waits for the peer (credit or a pause), as opposed to a
    /// delay that ends by itself (a resume-after or a throttle).
    pub(crate) fn held_back(&self, next_seq: u64) -> bool {
        next_seq > self.credit || self.paused
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
            Some(FlowSignal::ResumeAfter(
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

/// What this side lets the peer send.
#[derive(Debug)]
pub(crate) struct Inflow {
    window: u64,
    consumed: u64,
    delivered: u64,
    /// The credit granted so far (cumulative).
    granted: u64,
    high: Option<u64>,
    low: u64,
    auto_paused: bool,
    /// The owner's own signal in effect, restated after a resume.
    manual: Option<FlowSignal>,
    /// A signal the peer may not have received (sent while interrupted, or queued when
    /// the stream broke): sent again on the resumed stream.
    unsent: Option<FlowSignal>,
    /// A grant is due and an inbound budget holds it back.
    withheld: bool,
}

impl Inflow {
    pub(crate) fn new(config: &SessionConfig) -> Self {
        let window = config.credit_window.max(1);
        let at = |fraction: f64| ((fraction * window as f64) as u64).clamp(1, window);
        Self {
            window,
            consumed: 0,
            delivered: 0,
            granted: window,
            high: config.flow_high_watermark.map(at),
            low: at(config.flow_low_watermark).saturating_sub(1),
            auto_paused: false,
            manual: None,
            unsent: None,
            withheld: false,
        }
    }

    /// The highest sequence number the peer may send (replies excepted).
    pub(crate) fn granted(&self) -> u64 {
        self.granted
    }

    /// Messages delivered to the owner and not yet consumed.
    pub(crate) fn waiting(&self) -> u64 {
        self.delivered.saturating_sub(self.consumed)
    }

    /// Whether this side is pausing the peer.
    pub(crate) fn pausing(&self) -> bool {
        self.auto_paused || self.manual == Some(FlowSignal::Pause)
    }

    /// Messages up to `seq` were delivered; may pause the peer.
    pub(crate) fn delivered(&mut self, seq: u64) -> Option<Flow> {
        self.delivered = self.delivered.max(seq);
        let high = self.high?;
        if !self.pausing() && self.waiting() >= high {
            self.auto_paused = true;
            return Some(Flow {
                credit: 0,
                signal: Some(FlowSignal::Pause),
            });
        }
        None
    }

    /// The owner consumed `consumed` messages in all; may grant credit or resume. A grant
    /// due goes out only if `budget_allows()`; otherwise it is withheld, and the next
    /// call (with more consumed or not) looks again.
    pub(crate) fn consumed(
        &mut self,
        consumed: u64,
        budget_allows: impl FnOnce() -> bool,
    ) -> Option<Flow> {
        if consumed <= self.consumed && !self.withheld {
            return None;
        }
        self.consumed = self.consumed.max(consumed);
        let mut flow = Flow {
            credit: 0,
            signal: None,
        };
        self.withheld = false;
        // Saturating: a window of `u64::MAX` (no flow control to speak of) is granted whole
        // in the greeting, and never again.
        let grant = self.consumed.saturating_add(self.window);
        if grant > self.granted && grant >= self.granted.saturating_add((self.window / 4).max(1)) {
            if budget_allows() {
                self.granted = grant;
                flow.credit = grant;
            } else {
                self.withheld = true;
            }
        }
        if self.auto_paused && self.waiting() <= self.low {
            self.auto_paused = false;
            if self.manual != Some(FlowSignal::Pause) {
                flow.signal = Some(FlowSignal::Resume);
            }
        }
        (flow.credit > 0 || flow.signal.is_some()).then_some(flow)
    }

    /// Whether a grant is due and an inbound budget holds it back.
    pub(crate) fn withheld(&self) -> bool {
        self.withheld
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
                (Some(after @ FlowSignal::ResumeAfter(_)), Some(_)) => after,
                _ => FlowSignal::Resume,
            }
        };
        Flow {
            credit: self.granted,
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

    #[test]
    fn credit_is_granted_in_bulk_as_the_owner_consumes() {
        let mut inflow = Inflow::new(&config(100));
        inflow.delivered(10);
        assert_eq!(
            inflow.consumed(10, || true),
            None,
            "less than a quarter window"
        );
        inflow.delivered(30);
        let flow = inflow.consumed(30, || true).expect("a grant");
        assert_eq!(flow.credit, 130);
    }

    #[test]
    fn a_grant_withheld_by_a_budget_goes_out_once_the_budget_allows() {
        let mut inflow = Inflow::new(&config(100));
        inflow.delivered(30);
        assert_eq!(inflow.consumed(30, || false), None, "the budget holds it");
        assert!(inflow.withheld());
        assert_eq!(inflow.granted(), 100);
        assert_eq!(
            inflow.consumed(30, || false),
            None,
            "nothing more consumed, the budget still holds it"
        );
        let flow = inflow.consumed(30, || true).expect("the withheld grant");
        assert_eq!(flow.credit, 130);
        assert!(!inflow.withheld());
        assert_eq!(inflow.consumed(30, || true), None, "nothing more to grant");
    }

    #[test]
    fn the_largest_window_is_granted_once_without_overflow() {
        let mut inflow = Inflow::new(&config(u64::MAX));
        assert_eq!(inflow.granted(), u64::MAX);
        assert_eq!(inflow.delivered(10), None);
        assert_eq!(inflow.consumed(10, || true), None, "nothing more to grant");
        assert_eq!(inflow.consumed(u64::MAX, || true), None);
        assert_eq!(inflow.granted(), u64::MAX);
    }

    #[test]
    fn the_high_watermark_pauses_and_the_low_one_resumes() {
        let mut inflow = Inflow::new(&config(100));
        assert_eq!(inflow.delivered(74), None);
        let pause = inflow.delivered(75).expect("paused at 75 waiting");
        assert_eq!(pause.signal, Some(FlowSignal::Pause));
        assert!(inflow.pausing());
        assert_eq!(
            inflow.consumed(40, || true).and_then(|f| f.signal),
            None,
            "35 still waiting"
        );
        let resume = inflow.consumed(51, || true).expect("24 waiting");
        assert_eq!(resume.signal, Some(FlowSignal::Resume));
    }

    #[test]
    fn the_owners_pause_outlives_the_automatic_resume() {
        let mut inflow = Inflow::new(&config(100));
        inflow.delivered(80);
        inflow.signalled(FlowSignal::Pause);
        assert_eq!(inflow.consumed(80, || true).and_then(|f| f.signal), None);
        assert!(inflow.pausing());
    }

    #[test]
    fn sending_stops_at_the_credit_and_on_pause() {
        let now = Instant::now();
        let mut out = Outflow::new(2, now);
        assert_eq!(out.blocked(2, || now), None);
        assert_eq!(out.blocked(3, || now), Some(None));
        assert!(out.update(5, None, now).opened);
        assert_eq!(out.blocked(3, || now), None);
        out.update(0, Some(FlowSignal::Pause), now);
        assert_eq!(out.blocked(3, || now), Some(None));
        out.update(0, Some(FlowSignal::Resume), now);
        assert_eq!(out.blocked(3, || now), None);
    }

    /// Found by the fuzz (`runtime/fuzz.rs`): a peer that grants the largest credit, in
    /// its greeting or a `Flow`, made reading the flow state overflow (a panic in a debug
    /// build, no credit left in a release one).
    #[test]
    fn the_largest_credit_leaves_the_most_credit() {
        let now = Instant::now();
        let mut out = Outflow::new(u64::MAX, now);
        assert_eq!(out.credit_left(1), u64::MAX);
        assert_eq!(out.credit_left(u64::MAX), 1);
        out = Outflow::new(5, now);
        out.update(u64::MAX, None, now);
        assert_eq!(out.credit_left(6), u64::MAX - 5);
        assert_eq!(Outflow::new(5, now).credit_left(7), 0);
        assert_eq!(Outflow::new(5, now).credit_left(5), 1);
    }

    #[test]
    fn resume_after_waits_the_given_time() {
        let now = Instant::now();
        let mut out = Outflow::new(10, now);
        out.update(
            0,
            Some(FlowSignal::ResumeAfter(Duration::from_millis(300))),
            now,
        );
        let until = now + Duration::from_millis(300);
        assert_eq!(out.blocked(1, || now), Some(Some(until)));
        assert_eq!(out.blocked(1, || until), None);
    }

    #[test]
    fn throttle_paces_at_a_fraction_of_the_measured_rate() {
        let start = Instant::now();
        let mut out = Outflow::new(u64::MAX, start);
        // 1000 messages per second for half a second.
        let mut now = start;
        for _ in 0..500 {
            now += Duration::from_millis(1);
            out.sent(|| now);
            out.sample(now);
        }
        out.update(0, Some(FlowSignal::Throttle(0.5)), now);
        let limit = out.throttled_to().unwrap();
        assert!((limit - 500.0).abs() < 50.0, "limit {limit}");
        // Sending as fast as allowed for one second sends about half as much.
        let (end, mut sent) = (now + Duration::from_secs(1), 0);
        while now < end {
            match out.blocked(1, || now) {
                None => {
                    out.sent(|| now);
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
