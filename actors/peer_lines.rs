//! The log lines a peer can make a ready-made actor write, one [`LogBudget`] per kind: a
//! few lines per window each, the rest counted, the count reported with the next line of
//! that kind and, for what no line reported, when the actor stops.

use duologue::status::LogBudget;

/// One actor's budgets, by kind of line.
#[derive(Debug, Default)]
pub(crate) struct PeerLines {
    /// Peers arriving, leaving, let go or lost (info).
    pub(crate) membership: LogBudget,
    /// Messages the actor cannot read: empty, undecodable, unexpected (warn).
    pub(crate) unreadable: LogBudget,
    /// Messages read but refused: not merged, stale (warn).
    pub(crate) refused: LogBudget,
    /// Replies and reports that could not be sent (warn).
    pub(crate) unsent: LogBudget,
}

impl PeerLines {
    /// Logs what no line reported (one line per kind with a count, at the level of its
    /// lines): when `source` stops.
    pub(crate) fn report(&self, source: &str) {
        use tracing::Level;
        let membership = "peer arrived, left, let go or lost";
        self.membership
            .report_unreported(Level::INFO, source, membership);
        self.unreadable
            .report_unreported(Level::WARN, source, "unreadable message");
        self.refused
            .report_unreported(Level::WARN, source, "message refused");
        self.unsent
            .report_unreported(Level::WARN, source, "reply or report not sent");
    }
}
