//! The sequence-check paradigm: an actor that counts numbered ticks, to diagnose
//! delivery (loss, repeats, reordering) across sessions, reconnects and faults.
//!
//! ```text
//!  sender (node B)                          checker (node A)
//!    | -- cast Tick{n: 1} ------------------> |  received = 1, last = 1
//!    | -- cast Tick{n: 2} ------------------> |  received = 2, last = 2
//!    | -- cast Tick{n: 2} ------------------> |  duplicates = 1   (n <= last)
//!    | -- cast Tick{n: 5} ------------------> |  gaps = 1, received = 3, last = 5
//!    | -- call ReportRequest{} -------------> |
//!    | <------ Report{received, last, ..} --- |
//!    | -- cast StopRequest{reason} ---------> |
//!    | <------ cast Report{final: true, ..} - |  then stops with `reason`
//!   Closed                                  stopped
//! ```
//!
//! The numbering is shared by all the checker's sessions: ticks 1..=n may arrive over
//! several sessions one after another (a sender reconnecting after a cut), and the
//! counts say whether together they delivered each number once and in order.

use duologue::{Mailbox, Protocol};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::peer_lines::PeerLines;

/// The sequence-check protocol's messages (`proto/duologue/diag/v1/diag.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/duologue.diag.v1.rs"));
}

use proto::{CheckReply, CheckRequest, Report, ReportRequest, StopRequest, Tick};
use proto::{check_reply, check_request};

/// An actor counting ticks numbered 1, 2, 3, ... over all its sessions together.
#[derive(Debug, Default)]
pub struct SeqCheck;

impl Protocol for SeqCheck {
    type Request = CheckRequest;
    type Response = CheckReply;
}

duologue::oneof!(CheckRequest, kind: check_request::Kind {
    Tick(Tick),
    Report(ReportRequest),
    Stop(StopRequest),
});
duologue::oneof!(CheckReply, kind: check_reply::Kind { Report(Report) });

/// What one tick did to the counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickOutcome {
    /// The next number in sequence.
    InOrder,
    /// A number not above the last accepted one: a repeat or a late arrival.
    Duplicate,
    /// A number beyond the next: `missing` numbers were skipped.
    Gap {
        /// How many numbers were skipped.
        missing: u64,
    },
}

/// The checker's counts, and how each tick moves them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Ticks accepted as the next in sequence (in order, or after a gap).
    pub received: u64,
    /// The highest tick number accepted (0: none yet).
    pub last: u64,
    /// Ticks whose number was not above `last`.
    pub duplicates: u64,
    /// Times a tick skipped ahead of `last + 1`.
    pub gaps: u64,
}

impl Counts {
    /// Counts tick number `n`.
    pub fn tick(&mut self, n: u64) -> TickOutcome {
        if n <= self.last {
            self.duplicates += 1;
            return TickOutcome::Duplicate;
        }
        let missing = n - self.last - 1;
        self.received += 1;
        self.last = n;
        if missing == 0 {
            TickOutcome::InOrder
        } else {
            self.gaps += 1;
            TickOutcome::Gap { missing }
        }
    }

    /// The counts as a [`Report`]; `last_one` marks the report sent as the checker stops.
    pub fn report(&self, last_one: bool) -> Report {
        Report {
            received: self.received,
            last: self.last,
            duplicates: self.duplicates,
            gaps: self.gaps,
            r#final: last_one,
            max_backlog: 0,
        }
    }
}

/// How a checker is set up.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// The checker's name (for logs).
    pub name: String,
    /// Take at most this many ticks per second (a deliberately slow consumer).
    pub per_second: Option<u32>,
}

impl From<&str> for CheckConfig {
    fn from(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            per_second: None,
        }
    }
}

/// The checker's state.
#[derive(Debug)]
pub struct CheckState {
    name: String,
    counts: Counts,
    pace: Option<Pace>,
    max_backlog: u64,
    /// The log lines senders can cause, each kind a few per window and the rest counted.
    lines: PeerLines,
}

/// Spaces ticks `interval` apart.
#[derive(Debug)]
struct Pace {
    interval: std::time::Duration,
    next: tokio::time::Instant,
}

impl CheckState {
    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    fn report(&self, last_one: bool) -> Report {
        Report {
            max_backlog: self.max_backlog,
            ..self.counts.report(last_one)
        }
    }
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for SeqCheck {
    type Msg = Mailbox<Self>;
    type State = CheckState;
    type Arguments = CheckConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        config: CheckConfig,
    ) -> Result<CheckState, ActorProcessingErr> {
        Ok(CheckState {
            name: config.name,
            counts: Counts::default(),
            pace: config.per_second.filter(|&r| r > 0).map(|rate| Pace {
                interval: std::time::Duration::from_secs(1) / rate,
                next: tokio::time::Instant::now(),
            }),
            max_backlog: 0,
            lines: PeerLines::default(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut CheckState,
    ) -> Result<(), ActorProcessingErr> {
        state.lines.report(&state.name);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut CheckState,
    ) -> Result<(), ActorProcessingErr> {
        let (session, kind, reply) = match message {
            Mailbox::Cast {
                session, message, ..
            } => (session, message.kind, None),
            Mailbox::Call {
                session,
                request,
                reply,
                ..
            } => (session, request.kind, Some(reply)),
            // A sender can send these at will: a few lines per window, then a count.
            Mailbox::Undecodable(undecodable) => {
                state.lines.unreadable.log(|suppressed| {
                    tracing::warn!(checker = %state.name, %undecodable, not_logged_since_last_line = suppressed, "undecodable check request");
                });
                return Ok(());
            }
            Mailbox::Signal(signal) => {
                tracing::debug!(checker = %state.name, ?signal, "session signal");
                return Ok(());
            }
            Mailbox::Local(never) => match never {},
            // Not subscribed to the cluster.
            Mailbox::Cluster(_) => return Ok(()),
        };
        match kind {
            Some(check_request::Kind::Tick(tick)) => {
                let backlog = session.flow().inbound_waiting;
                state.max_backlog = state.max_backlog.max(backlog);
                if let Some(pace) = &mut state.pace {
                    // The timer ticks in milliseconds: sleep only once a millisecond
                    // ahead, so fast paces keep their average rate.
                    let now = tokio::time::Instant::now();
                    let floor = now.checked_sub(pace.interval * 1000).unwrap_or(now);
                    pace.next = pace.next.max(floor) + pace.interval;
                    if pace.next > now + std::time::Duration::from_millis(1) {
                        tokio::time::sleep_until(pace.next).await;
                    }
                }
                let outcome = state.counts.tick(tick.n);
                if outcome != TickOutcome::InOrder {
                    tracing::debug!(checker = %state.name, n = tick.n, ?outcome, "tick out of sequence");
                }
            }
            Some(check_request::Kind::Report(ReportRequest {})) => {
                if let Some(reply) = reply
                    && let Err(error) = reply.send(state.report(false))
                {
                    state.lines.unsent.log(|suppressed| {
                        tracing::warn!(%error, checker = %state.name, not_logged_since_last_line = suppressed, "report not sent");
                    });
                }
            }
            Some(check_request::Kind::Stop(StopRequest { reason })) => {
                if let Err(error) = session.try_cast(CheckReply::from(state.report(true))) {
                    tracing::warn!(%error, checker = %state.name, "final report not sent");
                }
                tracing::info!(checker = %state.name, %reason, counts = ?state.counts, "stopping");
                myself.stop(Some(reason));
            }
            None => state.lines.unreadable.log(|suppressed| {
                tracing::warn!(checker = %state.name, peer = %session.peer(), not_logged_since_last_line = suppressed, "empty check request");
            }),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::proto::{CheckRequest, ReportRequest, Tick, check_request};
    use super::{Counts, TickOutcome};

    #[test]
    fn oneof_variants_convert_both_ways() {
        let request = CheckRequest::from(Tick {
            n: 7,
            ..Tick::default()
        });
        assert!(matches!(
            request.kind,
            Some(check_request::Kind::Tick(Tick { n: 7, .. }))
        ));
        assert_eq!(Tick::try_from(request.clone()).map(|t| t.n), Ok(7));
        assert_eq!(ReportRequest::try_from(request.clone()), Err(request));
        assert_eq!(
            Tick::try_from(CheckRequest::default()),
            Err(CheckRequest::default())
        );
    }

    fn counted(ticks: &[u64]) -> Counts {
        let mut counts = Counts::default();
        for &n in ticks {
            counts.tick(n);
        }
        counts
    }

    #[test]
    fn in_order_ticks_are_all_received() {
        let counts = counted(&[1, 2, 3, 4, 5]);
        assert_eq!(
            counts,
            Counts {
                received: 5,
                last: 5,
                duplicates: 0,
                gaps: 0
            }
        );
    }

    #[test]
    fn repeats_and_late_ticks_are_duplicates() {
        let mut counts = counted(&[1, 2, 3]);
        assert_eq!(counts.tick(3), TickOutcome::Duplicate);
        assert_eq!(counts.tick(1), TickOutcome::Duplicate);
        assert_eq!(counts.tick(4), TickOutcome::InOrder);
        assert_eq!(
            counts,
            Counts {
                received: 4,
                last: 4,
                duplicates: 2,
                gaps: 0
            }
        );
    }

    #[test]
    fn a_skip_is_one_gap_and_moves_last() {
        let mut counts = counted(&[1, 2]);
        assert_eq!(counts.tick(6), TickOutcome::Gap { missing: 3 });
        assert_eq!(counts.tick(7), TickOutcome::InOrder);
        // The skipped numbers arriving late are duplicates, not fills.
        assert_eq!(counts.tick(4), TickOutcome::Duplicate);
        assert_eq!(
            counts,
            Counts {
                received: 4,
                last: 7,
                duplicates: 1,
                gaps: 1
            }
        );
    }

    #[test]
    fn first_tick_above_one_is_a_gap_and_zero_is_a_duplicate() {
        let mut counts = Counts::default();
        assert_eq!(counts.tick(0), TickOutcome::Duplicate);
        assert_eq!(counts.tick(3), TickOutcome::Gap { missing: 2 });
        assert_eq!(
            counts,
            Counts {
                received: 1,
                last: 3,
                duplicates: 1,
                gaps: 1
            }
        );
    }

    #[test]
    fn report_carries_the_counts() {
        let counts = counted(&[1, 3, 3]);
        let report = counts.report(true);
        assert_eq!(
            (report.received, report.last, report.duplicates, report.gaps),
            (2, 3, 1, 1)
        );
        assert!(report.r#final);
        assert!(!counts.report(false).r#final);
    }

    #[test]
    fn max_tick_does_not_overflow() {
        let mut counts = Counts::default();
        assert_eq!(
            counts.tick(u64::MAX),
            TickOutcome::Gap {
                missing: u64::MAX - 1
            }
        );
        assert_eq!(counts.tick(u64::MAX), TickOutcome::Duplicate);
    }
}
