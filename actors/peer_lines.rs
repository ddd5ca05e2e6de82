//! The log lines a peer can make a ready-made actor write, one [`LogBudget`] per kind: a
//! few lines per window each, the rest counted, the count reported with the next line of
//! that kind and, for what no line reported, when the actor stops.

use duologue::LogBudget;

/// One actor's budgets, by kind of line.
#[derive(Debug, Default)]
pub(crate) struct PeerLines {
    /// Peers arriving, leaving, let go or lost (info).
    pub(crate) membership: LogBudget,
    /// Messages the actor cannot read: empty, undecodable, unexpected.
    pub(crate) unreadable: LogBudget,
    /// Messages read but refused: not merged, stale.
    pub(crate) refused: LogBudget,
    /// Replies and reports that could not be sent.
    pub(crate) unsent: LogBudget,
}

impl PeerLines {
    /// Logs what no line reported (one line per kind with a count): when `source` stops.
    pub(crate) fn report(&self, source: &str) {
        self.membership
            .report_unreported(source, "peer arrived, left, let go or lost");
        self.unreadable
            .report_unreported(source, "unreadable message");
        self.refused.report_unreported(source, "message refused");
        self.unsent
            .report_unreported(source, "reply or report not sent");
    }
}
