//! Per-user and per-address rate limits (GCRA, from `governor`). Each bucket allows its
//! rate per window as a burst and refills evenly; limits live in this process, so with
//! several server processes each enforces its own share.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};

use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Generate,
    Jobs,
    /// Voice samples (`GET /api/voices/preview`), at the background jobs' rate.
    VoiceSamples,
    /// Clips converted and visuals fetched from URLs, at the background jobs' rate.
    Visuals,
    /// Stock footage searches, at the background jobs' rate.
    StockSearches,
    SignInIp,
}

pub struct Limits {
    window: Duration,
    /// Failed sign-ins allowed per account and client address in a window.
    pub sign_in_per_account: u32,
    pub sign_in_per_ip: u32,
    /// Failed sign-ins per `account|address`; only failures count, so nobody can lock an
    /// account they do not know the password of, for anyone but themselves.
    pub sign_in_failures: FailureLog,
    /// One limiter per bucket, rebuilt when its configured rate changes.
    buckets: Mutex<HashMap<Bucket, (u32, Arc<Keyed>)>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("window", &self.window)
            .finish()
    }
}

impl Limits {
    /// `window` is a minute in production; tests shorten it.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            sign_in_per_account: 5,
            sign_in_per_ip: 30,
            sign_in_failures: FailureLog::new(window),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// A minute in production; the per-minute task limits count over it too.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Ok, or the whole seconds to wait.
    pub fn check(&self, bucket: Bucket, key: &str, per_window: u32) -> Result<(), u64> {
        let Some(burst) = NonZeroU32::new(per_window) else {
            return Ok(());
        };
        let limiter = {
            let Ok(mut buckets) = self.buckets.lock() else {
                return Ok(());
            };
            match buckets.get(&bucket) {
                Some((rate, limiter)) if *rate == per_window => limiter.clone(),
                _ => {
                    let period = (self.window / per_window).max(Duration::from_millis(1));
                    let quota = Quota::with_period(period)
                        .unwrap_or(Quota::per_minute(burst))
                        .allow_burst(burst);
                    let limiter = Arc::new(RateLimiter::keyed(quota));
                    buckets.insert(bucket, (per_window, limiter.clone()));
                    limiter
                }
            }
        };
        // Forget keys whose state is back to full, so the map does not grow forever.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Failures per key over the last window (a sliding log). A key with `max` failures in the
/// window is refused until the oldest of them leaves it. Unlike a token bucket, a check
/// spends nothing: only `record` counts.
pub struct FailureLog {
    window: Duration,
    entries: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLog {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Ok, or the whole seconds until the key may try again.
    pub fn check(&self, key: &str, max: u32) -> Result<(), u64> {
        let Ok(mut entries) = self.entries.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let Some(log) = entries.get_mut(key) else {
            return Ok(());
        };
        log.retain(|at| now.duration_since(*at) < self.window);
        if max == 0 || log.len() < max as usize {
            return Ok(());
        }
        let free_at = log[log.len() - max as usize] + self.window;
        let wait = free_at.saturating_duration_since(now);
        Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }

    pub fn record(&self, key: &str) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        // Forget keys whose failures have all left the window, so the map stays small.
        if entries.len() > 10_000 {
            entries.retain(|_, log| {
                log.back()
                    .is_some_and(|at| now.duration_since(*at) < self.window)
            });
        }
        let log = entries.entry(key.to_owned()).or_default();
        log.push_back(now);
        // More than a few windows' worth is never needed to answer `check`.
        while log.len() > 1_000 {
            log.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recorded_failures_count() {
        let log = FailureLog::new(Duration::from_secs(60));
        for _ in 0..100 {
            assert!(log.check("a", 3).is_ok(), "checking spends nothing");
        }
        log.record("a");
        log.record("a");
        assert!(log.check("a", 3).is_ok());
        log.record("a");
        let wait = log.check("a", 3).unwrap_err();
        assert!((59..=60).contains(&wait), "{wait}");
        assert!(log.check("b", 3).is_ok(), "other keys are not affected");
    }

    #[test]
    fn failures_leave_the_window() {
        let log = FailureLog::new(Duration::from_millis(1));
        log.record("a");
        std::thread::sleep(Duration::from_millis(5));
        assert!(log.check("a", 1).is_ok());
    }
}
