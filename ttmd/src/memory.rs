//! Giving memory back after a burst of streams. glibc keeps freed memory
//! in its arenas; after a thousand followers leave, the daemon would hold
//! their peak for good. A background task asks glibc to return free pages
//! once a burst of streams is over, and once a listing of many pages is
//! sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::service::Shared;

/// A burst worth trimming after: this many streams open at once.
const BURST: u64 = 64;
/// How often the task looks.
const EVERY: Duration = Duration::from_secs(2);

/// Runs until aborted: after a burst of at least [`BURST`] streams, once
/// fewer than a quarter of them remain, returns free memory to the OS.
pub async fn trim_after_bursts(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(EVERY).await;
        let (peak, open) = shared.stream_peak_and_open();
        if peak >= BURST && open <= peak / 4 {
            shared.reset_stream_peak();
            tokio::task::spawn_blocking(release).await.ok();
            tracing::debug!(peak, open, "returned free memory after a burst of streams");
        }
    }
}

/// A trim is queued: a run of listings queues one.
static QUEUED: AtomicBool = AtomicBool::new(false);
/// How long after the last page a trim waits: its reply is sent by then.
const AFTER_PAGE: Duration = Duration::from_millis(100);

/// Returns free memory to the OS shortly (once the reply being sent is
/// freed). A whole listing of 100,000 rows builds and frees ~100 MB of
/// rows and reply buffers on blocking and worker threads, each with its
/// own glibc arena; without this the daemon kept ~20 MiB of them.
pub fn trim_soon() {
    if QUEUED.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(AFTER_PAGE).await;
        QUEUED.store(false, Ordering::Release);
        tokio::task::spawn_blocking(release).await.ok();
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() {
    // The one unsafe call in ttmd: glibc's malloc_trim has no safe wrapper
    // in our dependencies. It takes a size and touches only the allocator's
    // own state.
    #[allow(unsafe_code)]
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim(0) is thread-safe and has no preconditions.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}
