//! Retry policy: exponential backoff with full jitter, a cap, `Retry-After`,
//! and give-up limits (attempts, age) after which an entry is dead-lettered.
//! The random source is injected so tests are deterministic.

use serde::{Deserialize, Serialize};

use crate::protocol::Millis;

/// A source of uniform random numbers in `[0, 1)`.
pub trait RandomSource {
    fn next_unit(&mut self) -> f64;
}

/// A small deterministic generator (SplitMix64) for tests and for shells without a better one.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

/// Backoff and give-up limits. Serialized as part of the page's `Config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay ceiling of the first retry, before jitter.
    pub base_delay_ms: u64,
    /// Most any single delay may be (before `Retry-After`, which may be longer).
    pub max_delay_ms: u64,
    /// Attempts after which an entry goes to the dead-letter store (0: never).
    pub max_attempts: u32,
    /// Age (since the write) after which an entry goes to the dead-letter store (0: never).
    pub max_age_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        todo!("base 1 s, cap 5 min, 25 attempts, 7 days")
    }
}

impl RetryPolicy {
    /// Full-jitter backoff before retry number `attempt` (1 = first retry):
    /// uniform in `[0, min(max_delay, base * 2^(attempt-1))]`. Never overflows.
    pub fn backoff_ms(&self, attempt: u32, rng: &mut dyn RandomSource) -> u64 {
        let _ = (attempt, rng);
        todo!()
    }

    /// The delay to wait: the jittered backoff, but at least `retry_after_ms` when the server said so.
    pub fn delay_ms(&self, attempt: u32, retry_after_ms: Option<u64>, rng: &mut dyn RandomSource) -> u64 {
        let _ = (attempt, retry_after_ms, rng);
        todo!()
    }

    /// Whether an entry first written at `created_at` that has been tried `attempts` times
    /// should now be dead-lettered.
    pub fn gives_up(&self, attempts: u32, created_at: Millis, now: Millis) -> bool {
        let _ = (attempts, created_at, now);
        todo!()
    }
}

/// Parse a `Retry-After` header (delta-seconds or an IMF-fixdate HTTP-date) into a delay
/// in milliseconds from `now`. A date in the past is 0; garbage is `None`.
pub fn parse_retry_after(header: &str, now: Millis) -> Option<u64> {
    let _ = (header, now);
    todo!()
}
