//! [`Alarm`]: a session driver's one timer, moved only when a deadline comes sooner.
//!
//! Setting a tokio timer earlier than the runtime's next wake-up makes tokio wake its I/O
//! driver through a file descriptor: a system call, and a spurious wake-up. A session's
//! next deadline (the ack delay, the silence deadline) moves with nearly every message, so
//! a timer that followed it exactly would cost that for every message. The alarm moves only
//! when the deadline comes sooner than the one it is set for; when it fires for a deadline
//! that has since moved later, the session finds nothing due, and the alarm is set again.

use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::time::Sleep;

/// A timer set for the soonest deadline it was asked for since it last fired.
#[derive(Debug)]
pub(crate) struct Alarm {
    sleep: Pin<Box<Sleep>>,
    set_for: Option<Instant>,
}

impl Alarm {
    /// An alarm set for nothing.
    pub(crate) fn new() -> Self {
        // Any instant will do: the alarm is not polled until it is set.
        let idle = tokio::time::Instant::now() + Duration::from_secs(86_400);
        Self {
            sleep: Box::pin(tokio::time::sleep_until(idle)),
            set_for: None,
        }
    }

    /// Makes sure the alarm goes off no later than `deadline`.
    pub(crate) fn want(&mut self, deadline: Option<Instant>) {
        if let Some(deadline) = deadline
            && self.set_for.is_none_or(|set| deadline < set)
        {
            self.set_for = Some(deadline);
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
    }

    /// The deadline it is set for, if any.
    pub(crate) fn set_for(&self) -> Option<Instant> {
        self.set_for
    }

    /// Waits until it goes off, and leaves it set for nothing. Pending for ever while it is
    /// set for nothing.
    pub(crate) async fn ring(&mut self) {
        if self.set_for.is_none() {
            return std::future::pending().await;
        }
        self.sleep.as_mut().await;
        self.set_for = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rings_at_the_soonest_deadline_asked_for_then_rests() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut alarm = Alarm::new();
        assert_eq!(alarm.set_for(), None);

        alarm.want(Some(at(100)));
        alarm.want(Some(at(300))); // later: the alarm stays
        alarm.want(None);
        assert_eq!(alarm.set_for(), Some(at(100)));
        alarm.want(Some(at(50))); // sooner: the alarm moves
        assert_eq!(alarm.set_for(), Some(at(50)));

        let before = tokio::time::Instant::now();
        alarm.ring().await;
        let rang_after = tokio::time::Instant::now() - before;
        assert!(
            rang_after >= Duration::from_millis(50) && rang_after < Duration::from_millis(100),
            "{rang_after:?}"
        );
        assert_eq!(alarm.set_for(), None);

        // Set for nothing, it never rings.
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), alarm.ring())
                .await
                .is_err()
        );
        // Set again, it rings again.
        alarm.want(Some(Instant::now() + Duration::from_millis(10)));
        tokio::time::timeout(Duration::from_secs(1), alarm.ring())
            .await
            .expect("rings");
    }
}
