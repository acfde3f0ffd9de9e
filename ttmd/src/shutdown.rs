//! The daemon's one stop signal. Whatever asks for a stop (SIGTERM, the
//! embedder's future, the Shutdown RPC) triggers it; whatever must end
//! (the server, open streams, the watchdog, the grace timer) waits on it.

use std::sync::Arc;

use tokio::sync::watch;

/// A latch shared by clones: once triggered it stays triggered, and every
/// waiter, early or late, sees it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    // A watch rather than a Notify: the state is kept, so a trigger before
    // anyone waits is not lost, and any number of waiters wake.
    flag: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Shutdown {
            flag: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Begins the shutdown; later calls change nothing.
    pub fn trigger(&self) {
        self.flag.send_replace(true);
    }

    /// Whether the shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.flag.borrow()
    }

    /// Completes once the shutdown has begun (at once if it already has).
    pub async fn wait(&self) {
        let mut seen = self.flag.subscribe();
        // The sender lives in `self`, so the channel cannot close while we
        // wait; an error could only mean "gone", which also means "stop".
        let _ = seen.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trigger_reaches_early_and_late_waiters() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        let early = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        s.trigger();
        s.trigger();
        assert!(s.is_triggered());
        early.await.expect("the early waiter wakes");
        // Already triggered: completes without waiting.
        tokio::time::timeout(std::time::Duration::from_secs(5), s.wait())
            .await
            .expect("a late waiter returns at once");
    }
}
