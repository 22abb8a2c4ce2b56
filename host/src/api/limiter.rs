//! Request rates per caller: a token bucket (GCRA, the `governor` crate) for
//! each token or user, at the server's `--rate-limit` or the token's own
//! `--rate`. Over it, a request is answered 429 with `Retry-After` before
//! any handler runs; the health check and the dashboard's static shell are
//! never limited. One caller's flood spends only its own bucket.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

/// The server's limit: requests per second (in thousandths) and burst.
#[derive(Debug, Clone, Copy)]
pub struct RateSettings {
    pub rate_milli: i64,
    pub burst: u32,
}

/// The buckets, one per caller key, made when first needed.
#[derive(Debug)]
pub struct Limiter {
    default: Option<RateSettings>,
    buckets: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
}

fn quota(rate_milli: i64, burst: u32) -> Option<Quota> {
    let per_request = Duration::from_nanos(u64::try_from(1_000_000_000_000i64 / rate_milli.max(1)).unwrap_or(u64::MAX));
    Some(Quota::with_period(per_request)?.allow_burst(NonZeroU32::new(burst.max(1))?))
}

impl Limiter {
    pub fn new(default: Option<RateSettings>) -> Limiter {
        Limiter { default, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from `key`'s bucket (`own`: a token's own rate, in
    /// thousandths per second, burst one second's worth). Err: how long
    /// until the next request would be let through.
    pub fn check(&self, key: &str, own: Option<i64>) -> Result<(), Duration> {
        let settings = match (own, self.default) {
            (Some(rate_milli), _) => RateSettings { rate_milli, burst: u32::try_from(rate_milli / 1000).unwrap_or(u32::MAX).max(1) },
            (None, Some(d)) => d,
            (None, None) => return Ok(()),
        };
        let bucket = {
            let mut buckets = self.buckets.lock();
            match buckets.get(key) {
                Some(b) => b.clone(),
                None => {
                    let Some(q) = quota(settings.rate_milli, settings.burst) else { return Ok(()) };
                    let b = Arc::new(RateLimiter::direct(q));
                    buckets.insert(key.to_string(), b.clone());
                    b
                }
            }
        };
        bucket.check().map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}
