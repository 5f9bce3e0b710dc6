//! Retry policy for key providers: exponential backoff with jitter, bounded in
//! attempts and time. One policy for every provider (AWS KMS, Vault Transit),
//! so that an operator tunes retries the same way whichever holds the keys.

use std::time::Duration;

use rand::Rng;

/// How transient key-provider failures (throttling, 5xx, a sealed server,
/// timeouts, connection errors) are retried. Final errors (access denied, disabled key, key not found,
/// invalid ciphertext, bad configuration) are never retried, whatever this
/// says.
///
/// Attempt `n` (from 1) that fails transiently is followed, if attempts and the
/// operation timeout remain, by a sleep drawn uniformly from
/// `[b/2, b]` with `b = min(max_backoff, initial_backoff * 2^(n-1))` ("equal
/// jitter": spreads a burst of clients out, yet always backs off).
///
/// ```
/// use std::time::Duration;
/// use rowseal_core::RetryPolicy;
/// let policy = RetryPolicy::default()
///     .with_max_attempts(5)
///     .with_initial_backoff(Duration::from_millis(50));
/// assert_eq!(policy.max_attempts, 5);
/// assert_eq!(RetryPolicy::no_retries().max_attempts, 1);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most HTTP requests per call, the first one included (at least 1).
    /// Default 4.
    pub max_attempts: u32,
    /// Backoff bound after the first failed attempt. Default 100 ms.
    pub initial_backoff: Duration,
    /// Largest backoff bound. Default 2 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn no_retries() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets [`max_attempts`](Self::max_attempts) (0 is taken as 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets [`initial_backoff`](Self::initial_backoff).
    pub fn with_initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Sets [`max_backoff`](Self::max_backoff).
    pub fn with_max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// The upper bound of the sleep after failed attempt `attempt` (from 1).
    pub fn backoff_bound(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The sleep after failed attempt `attempt` (from 1), jittered within
    /// `[bound/2, bound]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let bound = self.backoff_bound(attempt);
        let half = bound / 2;
        let spread = (bound - half).as_nanos().min(u64::MAX as u128) as u64;
        if spread == 0 {
            return bound;
        }
        half + Duration::from_nanos(rand::thread_rng().gen_range(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_bound(1), Duration::from_millis(100));
        assert_eq!(p.backoff_bound(2), Duration::from_millis(200));
        assert_eq!(p.backoff_bound(3), Duration::from_millis(400));
        assert_eq!(p.backoff_bound(10), Duration::from_secs(2));
        assert_eq!(p.backoff_bound(u32::MAX), Duration::from_secs(2));
        for attempt in 1..8 {
            for _ in 0..100 {
                let b = p.backoff(attempt);
                assert!(b <= p.backoff_bound(attempt));
                assert!(b >= p.backoff_bound(attempt) / 2);
            }
        }
    }

    #[test]
    fn at_least_one_attempt() {
        assert_eq!(RetryPolicy::default().with_max_attempts(0).max_attempts, 1);
    }
}
