//! What one session carried, counted by its core as it goes: plain additions under the
//! lock the core holds anyway, read by the node for its status and metrics.

/// Totals of one session since it opened (across all its streams).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct SessionCounters {
    /// Messages this side's actor sent (casts, calls and replies), once each: replays
    /// are counted in `replayed`, not here.
    pub messages_out: u64,
    /// Their payload bytes.
    pub bytes_out: u64,
    /// Messages from the peer handed to this side's actor.
    pub messages_in: u64,
    /// Their payload bytes.
    pub bytes_in: u64,
    /// Times a stream broke under the established session.
    pub interruptions: u64,
    /// Times the session resumed on a new stream.
    pub resumes: u64,
    /// Messages sent again after a resume (what the peer had not received).
    pub replayed: u64,
}

impl SessionCounters {
    /// The sum of two sessions' counters.
    pub fn plus(self, other: Self) -> Self {
        Self {
            messages_out: self.messages_out + other.messages_out,
            bytes_out: self.bytes_out + other.bytes_out,
            messages_in: self.messages_in + other.messages_in,
            bytes_in: self.bytes_in + other.bytes_in,
            interruptions: self.interruptions + other.interruptions,
            resumes: self.resumes + other.resumes,
            replayed: self.replayed + other.replayed,
        }
    }
}
