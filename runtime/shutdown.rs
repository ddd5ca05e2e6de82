//! Tell, then wait: one cancellation token every long-lived task selects on, and one
//! task tracker to wait for them, with a bound.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The node's shutdown signal and the tasks that must end before it is down.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// Spawns a task the node waits for on shutdown.
    pub(crate) fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Spawns a task the node waits for on shutdown, on the runtime of `handle`.
    pub(crate) fn spawn_on<F>(
        &self,
        task: F,
        handle: &tokio::runtime::Handle,
    ) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn_on(task, handle)
    }

    /// The token tasks select on.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether shutdown began.
    pub(crate) fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Tells every task to end, then waits up to `drain` for them. `true` if all ended.
    pub(crate) async fn run(&self, drain: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(drain, self.tracker.wait())
            .await
            .is_ok()
    }
}
