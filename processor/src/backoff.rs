//! Waits between retries, in one place: exponential growth from `base` to
//! `cap`, with one of the two jitters of the AWS Architecture Blog's
//! "Exponential Backoff And Jitter".

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap }
    }

    /// base·2^attempt, at most `cap` (attempt 0 waits about `base`).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX)).min(self.cap)
    }

    /// Full jitter, uniform in [0, ceiling]: spreads the retries of many
    /// callers of one shared API most (Security Hub imports).
    pub fn full_jitter(&self, attempt: u32) -> Duration {
        uniform(Duration::ZERO, self.ceiling(attempt))
    }

    /// Equal jitter, uniform in [ceiling/2, ceiling]: never retries at once,
    /// for a loop that must not spin (pollers, commits).
    pub fn equal_jitter(&self, attempt: u32) -> Duration {
        let c = self.ceiling(attempt);
        uniform(c / 2, c)
    }
}

fn uniform(lo: Duration, hi: Duration) -> Duration {
    let (lo, hi) = (lo.as_nanos().min(u128::from(u64::MAX)) as u64, hi.as_nanos().min(u128::from(u64::MAX)) as u64);
    if hi <= lo {
        return Duration::from_nanos(hi);
    }
    Duration::from_nanos(rand::random_range(lo..=hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let ms: Vec<u128> = (0..9).map(|a| B.ceiling(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        assert_eq!(B.ceiling(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitters_stay_in_their_ranges_and_vary() {
        for a in 0..12 {
            let c = B.ceiling(a);
            for _ in 0..50 {
                assert!(B.full_jitter(a) <= c);
                let e = B.equal_jitter(a);
                assert!(e >= c / 2 && e <= c, "{e:?} outside [{:?}, {c:?}]", c / 2);
            }
        }
        let spread: std::collections::BTreeSet<Duration> = (0..20).map(|_| B.full_jitter(5)).collect();
        assert!(spread.len() > 1, "jittered");
        assert_eq!(Backoff::new(Duration::ZERO, Duration::ZERO).full_jitter(3), Duration::ZERO);
    }
}
