//! Post-ops that run after their change was answered (`end_later`), by
//! every replicate layer of this process: a mount about to exit waits for
//! them, so an unmount leaves no `dirty` mark for heal to settle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// One post-op running; it counts until dropped.
pub(super) struct Running(());

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) fn started() -> Running {
    RUNNING.fetch_add(1, Ordering::AcqRel);
    Running(())
}

/// Waits up to `limit` for every post-op running to end; false if some
/// were still running then.
pub async fn settled(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while RUNNING.load(Ordering::Acquire) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}
