//! Client-side pacing: a token bucket per account and region (Security Hub
//! allows BatchImportFindings 10 requests/s with bursts of 30), and
//! exponential backoff with full jitter between retries (crate::backoff).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst` saved up. Tokens
/// are reserved ahead (the count may go negative), so concurrent callers
/// each get their own slot without holding a lock while they wait.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// Starts full, so a restart may use the burst at once.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: rate.max(1e-3), burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Reserves one token at `now`; returns how long to wait before using it.
    pub fn reserve(&self, now: Instant) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *st;
        let earned = now.saturating_duration_since(last).as_secs_f64() * self.rate;
        let tokens = (tokens + earned).min(self.burst) - 1.0;
        *st = (tokens, now.max(last));
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate)
        }
    }

    /// Waits for one token.
    pub async fn acquire(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn the_bucket_allows_the_burst_then_the_rate() {
        let b = TokenBucket::new(10.0, 30);
        let t0 = Instant::now() + Duration::from_secs(1);
        for _ in 0..30 {
            assert_eq!(b.reserve(t0), Duration::ZERO, "the burst is free");
        }
        // Callers arriving together queue up 100 ms apart.
        let waits: Vec<u128> = (0..3).map(|_| ms(b.reserve(t0))).collect();
        assert_eq!(waits, [100, 200, 300]);
        // 10 s later the bucket is full again, not fuller.
        let t1 = t0 + Duration::from_secs(10);
        let free = (0..40).take_while(|_| b.reserve(t1).is_zero()).count();
        assert_eq!(free, 30, "refilled to the burst, not beyond it");
    }

    #[test]
    fn a_steady_caller_gets_the_rate() {
        let b = TokenBucket::new(10.0, 1);
        let t0 = Instant::now();
        assert!(b.reserve(t0).is_zero());
        assert_eq!(ms(b.reserve(t0)), 100);
        assert!(b.reserve(t0 + Duration::from_millis(250)).is_zero(), "the reserved token was earned by then");
    }
}
