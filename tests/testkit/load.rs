//! Load for the benches: many calls in flight at once, each one's latency kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Makes `total` calls, `call(0)` to `call(total - 1)`, from `concurrency` tasks that each
/// take the next index as soon as their call ended. Returns the wall time and every
/// call's latency in microseconds (saturating at `u32::MAX`), in no order.
///
/// # Errors
/// The first call that failed, or a task that panicked.
pub async fn calls<F, Fut>(
    total: u64,
    concurrency: u64,
    call: F,
) -> anyhow::Result<(Duration, Vec<u32>)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (call, next) = (call.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(latencies);
                }
                let sent = Instant::now();
                call(i).await?;
                latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
        }));
    }
    let mut all = Vec::with_capacity(usize::try_from(total)?);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((started.elapsed(), all))
}
