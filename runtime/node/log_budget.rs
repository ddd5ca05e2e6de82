//! A budget for log lines that a peer can cause: the first few of a kind in each window
//! are logged, the rest only counted, and the count is reported with the next line that
//! is logged, so a flood of failures costs a few lines, not one each.
//!
//! Pure: the caller passes the time, so the budget is tested without a clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind logged per window.
pub(crate) const LINES_PER_WINDOW: u32 = 5;
/// The budget's window.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// What to do with one occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it, saying how many were suppressed since the last line that was logged.
    Log {
        /// Occurrences counted but not logged before this one.
        suppressed: u64,
    },
    /// Count it only.
    Suppress,
}

/// The budget of one kind of line.
#[derive(Debug)]
pub(crate) struct LogBudget {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogBudget {
    /// A fresh budget.
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                window_start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether the occurrence at `now` is logged.
    pub(crate) fn admit(&self, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let in_window = state
            .window_start
            .is_some_and(|start| now.saturating_duration_since(start) < WINDOW);
        if !in_window {
            state.window_start = Some(now);
            state.logged = 0;
        }
        if state.logged < LINES_PER_WINDOW {
            state.logged += 1;
            let suppressed = std::mem::take(&mut state.suppressed);
            Verdict::Log { suppressed }
        } else {
            state.suppressed += 1;
            Verdict::Suppress
        }
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
            .filter(|v| matches!(v, Verdict::Log { .. }))
            .count();
        assert_eq!(logged, LINES_PER_WINDOW as usize);
        assert_eq!(verdicts[0], Verdict::Log { suppressed: 0 });
        // The next window's first line carries the count of what was not logged.
        let later = start + WINDOW;
        assert_eq!(
            budget.admit(later),
            Verdict::Log {
                suppressed: 1000 - u64::from(LINES_PER_WINDOW)
            }
        );
        assert_eq!(budget.admit(later), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn occasional_lines_are_all_logged() {
        let budget = LogBudget::new();
        let start = Instant::now();
        for i in 0..20 {
            let at = start + WINDOW * i;
            assert_eq!(budget.admit(at), Verdict::Log { suppressed: 0 });
        }
    }
}
