//! Progress for a person at a terminal, in one look: the bars and spinners of
//! `duologue demo` and of the benches, drawn on stderr, the lines printed while they show,
//! and the summary a run ends with.
//!
//! Bars are drawn only when stderr is a terminal: indicatif hides them when it is a pipe
//! or a file (tests, CI, `2>/dev/null`) or when `TERM` is `dumb`. What a run prints is
//! then the same lines, with nothing of a bar among them. Every bar belongs to one
//! [`MultiProgress`] of the process, so a run of several parts can show its own bar above
//! each part's, and a line printed with [`println()`] or [`eprintln()`] while a bar shows goes
//! above the bars instead of through them.
//!
//! ```
//! use duologue_testkit::progress::{self, Summary};
//!
//! let sends = progress::bar("casts", 1_000);
//! for _ in 0..1_000 {
//!     sends.inc(1);
//! }
//! sends.finish_and_clear();
//! let mut summary = Summary::new("casts");
//! summary.figure("1 000 sent");
//! progress::eprintln(summary.ok());
//! ```

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::LazyLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressDrawTarget, ProgressStyle};

/// What [`bar`] and [`spinner`] return: indicatif's bar, to advance and end.
pub use indicatif::ProgressBar;

/// Every bar of the process, drawn on stderr.
static BARS: LazyLock<MultiProgress> =
    LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// How often a shown bar redraws by itself, so that its clock and spinner move while the
/// work it follows waits.
const TICK: Duration = Duration::from_millis(100);

/// A bar for `len` units of counted work (messages, inputs, phases), named `prefix`:
/// `⠙ slow_consumer [██████▓░░░░░] 600,000/1,000,000 12s casts sent`; a message longer
/// than the terminal is cut, so the bar stays on one line. Advance it with
/// [`ProgressBar::inc`] or [`ProgressBar::set_position`], say what it is doing with
/// [`ProgressBar::set_message`], and end it with [`ProgressBar::finish_and_clear`]. A bar
/// dropped unfinished (a run that failed) is left on the screen where it stopped.
pub fn bar(prefix: impl Into<Cow<'static, str>>, len: u64) -> ProgressBar {
    start(
        Some(len),
        prefix,
        concat!(
            "{spinner:.green} {prefix:.bold} [{bar:30.cyan/blue}] {human_pos}/{human_len} ",
            "{elapsed:.dim} {wide_msg}"
        ),
    )
}

/// A spinner for work with no known total, named `prefix`: `⠙ cluster_scale 4s steady
/// state`. Say what it waits for with [`ProgressBar::set_message`].
pub fn spinner(prefix: impl Into<Cow<'static, str>>) -> ProgressBar {
    start(
        None,
        prefix,
        "{spinner:.green} {prefix:.bold} {elapsed:.dim} {wide_msg}",
    )
}

/// A bar of [`BARS`] in `template`: added before it can draw anything, so nothing of it
/// reaches the terminal outside the [`MultiProgress`].
fn start(len: Option<u64>, prefix: impl Into<Cow<'static, str>>, template: &str) -> ProgressBar {
    let bar = BARS.add(ProgressBar::with_draw_target(
        len,
        ProgressDrawTarget::hidden(),
    ));
    // The templates above are fixed and valid; a typo in them fails the test below.
    let style = ProgressStyle::with_template(template).expect("a valid progress template");
    bar.set_style(style.progress_chars("█▓░"));
    bar.set_prefix(prefix);
    if !bar.is_hidden() {
        // A thread per bar, only for a bar that is drawn.
        bar.enable_steady_tick(TICK);
    }
    bar
}

/// Prints `line` on stdout, above the bars that show.
pub fn println(line: impl Display) {
    BARS.suspend(|| std::println!("{line}"));
}

/// Prints `line` on stderr, above the bars that show.
pub fn eprintln(line: impl Display) {
    BARS.suspend(|| std::eprintln!("{line}"));
}

/// The end of a run, for a person: its key figures, one per line, then what ran and how
/// it ended, on the last line (`demo chat: ok`, `fuzz: FAILED: 2 panics`).
#[derive(Debug)]
pub struct Summary {
    /// What ran: `demo chat`, `slow_consumer`.
    what: String,
    /// The key figures, in the order given.
    figures: Vec<String>,
}

impl Summary {
    /// A summary of the run `what`, with no figures yet.
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            figures: Vec::new(),
        }
    }

    /// Adds a key figure: `0 lost, 0 duplicated`.
    pub fn figure(&mut self, figure: impl Display) -> &mut Self {
        self.figures.push(figure.to_string());
        self
    }

    /// The summary of a run that passed: the figures, then `WHAT: ok`.
    pub fn ok(&self) -> String {
        self.ending(format!("{}: ok", self.what))
    }

    /// The summary of a run that failed: the figures, then `WHAT: FAILED: WHY`.
    pub fn failed(&self, why: impl Display) -> String {
        self.ending(format!("{}: FAILED: {why}", self.what))
    }

    /// The figures, one per line, then `last`.
    fn ending(&self, last: String) -> String {
        let mut lines: Vec<String> = self.figures.iter().map(|f| format!("  {f}")).collect();
        lines.push(last);
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_and_spinner_templates_parse() {
        bar("bar", 1).finish_and_clear();
        spinner("spinner").finish_and_clear();
    }

    #[test]
    fn summary_ends_with_what_ran_and_how() {
        let mut summary = Summary::new("demo chat");
        summary.figure("5 lines").figure("10 deliveries");
        assert_eq!(summary.ok(), "  5 lines\n  10 deliveries\ndemo chat: ok");
        assert_eq!(
            Summary::new("fuzz").failed("2 panics"),
            "fuzz: FAILED: 2 panics"
        );
    }
}
