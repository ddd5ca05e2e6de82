//! [`LogBudget`]: log lines a peer can cause, a few per window and the rest counted.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind a [`LogBudget`] lets through per window.
pub const LOG_LINES_PER_WINDOW: u32 = 5;
/// A [`LogBudget`]'s window.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// What to do with one occurrence of a line ([`LogBudget::admit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogVerdict {
    /// Log it, saying how many were suppressed since the last line that was logged.
    Log {
        /// Occurrences counted but not logged before this one.
        suppressed: u64,
    },
    /// Count it only.
    Suppress,
}

/// A budget for one kind of log line that a peer can cause at will (a failed handshake,
/// a message that does not decode, a reply that could not be sent): the first
/// [`LOG_LINES_PER_WINDOW`] occurrences in each [`LOG_WINDOW`] are logged, the rest only
/// counted. The count is reported with the next line that is logged, and what was never
/// reported can be read when the source stops ([`LogBudget::unreported`]), so a flood
/// costs a few lines, not one each, and is still seen whole.
///
/// ```
/// use duologue::status::LogBudget;
///
/// static UNDECODABLE: LogBudget = LogBudget::new();
///
/// fn on_undecodable(error: &str) {
///     UNDECODABLE.log(|suppressed| {
///         tracing::warn!(%error, not_logged_since_last_line = suppressed, "undecodable message");
///     });
/// }
/// # for _ in 0..100 { on_undecodable("bad"); }
/// # assert_eq!(UNDECODABLE.counted(), 100);
/// # assert_eq!(UNDECODABLE.unreported(), 95);
/// ```
///
/// Pure: [`LogBudget::admit`] takes the time, so the budget is tested without a clock.
#[derive(Debug)]
pub struct LogBudget {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
    counted: u64,
}

impl LogBudget {
    /// A fresh budget (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(State {
                window_start: None,
                logged: 0,
                suppressed: 0,
                counted: 0,
            }),
        }
    }

    /// Whether the occurrence at `now` is logged.
    pub fn admit(&self, now: Instant) -> LogVerdict {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.counted += 1;
        let in_window = state
            .window_start
            .is_some_and(|start| now.saturating_duration_since(start) < LOG_WINDOW);
        if !in_window {
            state.window_start = Some(now);
            state.logged = 0;
        }
        if state.logged < LOG_LINES_PER_WINDOW {
            state.logged += 1;
            let suppressed = std::mem::take(&mut state.suppressed);
            LogVerdict::Log { suppressed }
        } else {
            state.suppressed += 1;
            LogVerdict::Suppress
        }
    }

    /// Counts one occurrence now, and calls `line` (which logs it) if it is within the
    /// budget, with the count of occurrences suppressed since the last line logged.
    pub fn log(&self, line: impl FnOnce(u64)) {
        if let LogVerdict::Log { suppressed } = self.admit(Instant::now()) {
            line(suppressed);
        }
    }

    /// Occurrences counted in all.
    pub fn counted(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).counted
    }

    /// Occurrences suppressed and not yet reported by a logged line; reading them reports
    /// them (the count starts again from zero). For a summary when the source stops.
    pub fn unreported(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut state.suppressed)
    }

    /// Logs one line at `level` (the level of the lines it stands for, so it shows where
    /// they would have) saying how many occurrences of `lines` (their message) no line
    /// reported, if any: the summary for when the source stops.
    pub fn report_unreported(&self, level: tracing::Level, source: &str, lines: &str) {
        let not_logged = self.unreported();
        if not_logged == 0 {
            return;
        }
        let counted = self.counted();
        // `tracing` takes a level known at compile time.
        macro_rules! summary {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    source,
                    lines,
                    not_logged,
                    counted,
                    "lines not logged (log budget)"
                )
            };
        }
        match level {
            tracing::Level::ERROR => summary!(tracing::Level::ERROR),
            tracing::Level::WARN => summary!(tracing::Level::WARN),
            tracing::Level::INFO => summary!(tracing::Level::INFO),
            tracing::Level::DEBUG => summary!(tracing::Level::DEBUG),
            _ => summary!(tracing::Level::TRACE),
        }
    }
}

impl Default for LogBudget {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_costs_a_few_lines_and_the_next_line_counts_the_rest() {
        let budget = LogBudget::new();
        let start = Instant::now();
        let verdicts: Vec<_> = (0..1000).map(|_| budget.admit(start)).collect();
        let logged = verdicts
            .iter()
            .filter(|v| matches!(v, LogVerdict::Log { .. }))
            .count();
        assert_eq!(logged, LOG_LINES_PER_WINDOW as usize);
        assert_eq!(verdicts[0], LogVerdict::Log { suppressed: 0 });
        // The next window's first line carries the count of what was not logged.
        let later = start + LOG_WINDOW;
        assert_eq!(
            budget.admit(later),
            LogVerdict::Log {
                suppressed: 1000 - u64::from(LOG_LINES_PER_WINDOW)
            }
        );
        assert_eq!(budget.admit(later), LogVerdict::Log { suppressed: 0 });
        assert_eq!(budget.counted(), 1002);
        assert_eq!(budget.unreported(), 0);
    }

    #[test]
    fn occasional_lines_are_all_logged() {
        let budget = LogBudget::new();
        let start = Instant::now();
        for i in 0..20 {
            let at = start + LOG_WINDOW * i;
            assert_eq!(budget.admit(at), LogVerdict::Log { suppressed: 0 });
        }
    }

    #[test]
    fn what_no_line_reported_is_read_once_at_the_end() {
        let budget = LogBudget::new();
        let start = Instant::now();
        for _ in 0..12 {
            budget.admit(start);
        }
        assert_eq!(budget.unreported(), 12 - u64::from(LOG_LINES_PER_WINDOW));
        assert_eq!(budget.unreported(), 0);
        assert_eq!(budget.counted(), 12);
    }
}
