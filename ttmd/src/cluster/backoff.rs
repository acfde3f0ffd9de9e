//! The pauses of the outbox (`mirror.rs`) between pushes etcd refuses.

use std::time::Duration;

use super::mirror::RETRY;

/// The longest pause between pushes etcd keeps refusing.
const REFUSED_CAP: Duration = Duration::from_secs(8);

/// Consecutive refused pushes of one transaction. The first is tried
/// again at once (etcd's record is read again: a lost reply, a restart);
/// later ones wait, doubling up to [`REFUSED_CAP`], so a push etcd keeps
/// refusing (a stray `ev/` key) costs a few etcd calls a minute, not a
/// busy loop. Logged once when it starts and once when it ends.
#[derive(Debug, Default)]
pub(super) struct Refusals(u32);

impl Refusals {
    /// One more refusal: the pause before the next try.
    pub(super) fn again(&mut self, module: &str, id: &str, pushed: u64, why: &str) -> Duration {
        self.0 += 1;
        if self.0 == 2 {
            tracing::warn!(
                module,
                txn = id,
                pushed,
                "etcd keeps refusing this transaction's mirror push: {why}; trying again with growing pauses (up to {}s)",
                REFUSED_CAP.as_secs()
            );
        }
        if self.0 == 1 {
            return Duration::ZERO;
        }
        let doublings = (self.0 - 2).min(16);
        (RETRY * 2u32.pow(doublings)).min(REFUSED_CAP)
    }

    /// A push went through.
    pub(super) fn moved(&mut self, module: &str, id: &str) {
        if self.0 >= 2 {
            tracing::info!(
                module,
                txn = id,
                "etcd takes this transaction's mirror pushes again"
            );
        }
        self.0 = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_refused_push_is_retried_at_once_then_after_doubling_pauses_up_to_the_cap() {
        let mut refused = Refusals::default();
        let pauses: Vec<Duration> = (0..8).map(|_| refused.again("m", "t", 3, "why")).collect();
        let ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        refused.moved("m", "t");
        assert_eq!(refused.again("m", "t", 3, "why"), Duration::ZERO);
    }
}
