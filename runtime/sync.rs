//! Locks that a panic on another task does not poison for the rest of the node: the data
//! behind them is counts and maps that stay consistent between statements.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking the data back from a panicked holder.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
