//! Per-user and per-address rate limits (GCRA, from `governor`). Each bucket allows its
//! rate per window as a burst and refills evenly; limits live in this process, so with
//! several server processes each enforces its own share.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};

use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Generate,
    Jobs,
    SignInAccount,
    SignInIp,
}

pub struct Limits {
    window: Duration,
    pub sign_in_per_account: u32,
    pub sign_in_per_ip: u32,
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
