//! The flow signal: what one side of a session asks of the other's sending, carried on
//! the wire (`Flow` frames) and obeyed by the session core.

/// A back-pressure signal one side sends the other, which the other's runtime obeys and
/// whose owner sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FlowSignal {
    /// Stop sending until `Resume`.
    Pause,
    /// Send as before: lifts a pause, a timed pause and a throttle.
    Resume,
    /// Stop sending for this long.
    PauseFor(std::time::Duration),
    /// Send at this fraction, in (0, 1], of the current rate.
    Throttle(f64),
}
