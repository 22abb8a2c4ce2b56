//! The range of every count and duration a caller can set: worker pool sizes,
//! leases, step limits, retention ages, page sizes. One table, used twice: the
//! CLI checks its options against it when it parses them (out of range is a
//! usage error, exit 2, naming the option and its range), and the library
//! checks every request against it (the HTTP API, library users), so a value
//! can never wrap, overflow a timestamp or starve the pool.
//!
//! Owns no state and touches nothing else.

use std::ops::RangeInclusive;
use std::time::Duration;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Jobs one pool runs at once.
pub const WORKERS: RangeInclusive<u64> = 1..=1024;
/// A worker's lease on a job. The heartbeat renews it every third of it, so
/// a lease spans three heartbeats: at 1 s the heartbeat runs every 333 ms.
/// Below that a busy moment would let the lease expire under a live worker
/// (the job would run twice at once).
pub const LEASE_MS: RangeInclusive<u64> = 1_000..=3_600_000;
/// How long running jobs may take to finish on shutdown.
pub const SHUTDOWN_GRACE_MS: RangeInclusive<u64> = 0..=3_600_000;
/// The largest JSON body `weir serve` accepts.
pub const MAX_BODY_BYTES: RangeInclusive<u64> = 1_024..=(64 << 20);
/// How long a request body may stop arriving before 408.
pub const BODY_TIMEOUT_MS: RangeInclusive<u64> = 100..=600_000;
/// Rows in one page of a listing.
pub const PAGE: RangeInclusive<u64> = 1..=5_000;
/// Rows skipped before a page.
pub const SKIP: RangeInclusive<u64> = 0..=1_000_000_000;
/// Fuel of one plug-in call.
pub const FUEL: RangeInclusive<u64> = 1..=1_000_000_000_000_000_000;
/// The time budget of one operation (its sync plug-ins included): up to
/// Dataverse's 2 minutes.
pub const OP_BUDGET_MS: RangeInclusive<u64> = 100..=120_000;
/// A step's or background operation's time budget per call or attempt.
pub const TIMEOUT_MS: RangeInclusive<u64> = 1..=DAY_MS;
/// Attempts of one job.
pub const MAX_ATTEMPTS: RangeInclusive<u64> = 1..=1_000;
/// A step's or a queue's jobs running at once (`--max-running`).
pub const MAX_RUNNING: RangeInclusive<u64> = 1..=100_000;
/// Failures in a row before the breaker holds a step (0: never).
pub const HOLD_AFTER: RangeInclusive<u64> = 0..=100_000;
/// The breaker's longest hold: a second to a week.
pub const MAX_HOLD_MS: RangeInclusive<u64> = 1_000..=7 * DAY_MS;
/// `--unique-for` of a step, in ms: 1 ms to 30 days.
pub const UNIQUE_FOR_MS: RangeInclusive<u64> = 1..=30 * DAY_MS;
/// The first retry's delay (later ones double, capped).
pub const BACKOFF_MS: RangeInclusive<u64> = 0..=DAY_MS;
/// Ages in retention and cleanup: up to a hundred years (of 365.25 days, as
/// `humantime` counts them).
pub const AGE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(100 * 31_557_600);
/// Timeouts of a plug-in's outbound HTTP requests (connect, whole request).
pub const HTTP_TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(3600);
/// Bytes of one outbound response body.
pub const HTTP_RESPONSE_BYTES: RangeInclusive<u64> = 1..=(1 << 30);
/// Outbound requests of one job attempt.
pub const HTTP_REQUESTS: RangeInclusive<u64> = 1..=10_000;
/// How often retention runs.
pub const RETENTION_EVERY: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_millis(30 * DAY_MS);

/// Checks `value` of `what` (an option name such as `--lease-ms`).
pub fn check(what: &str, value: u64, range: &RangeInclusive<u64>) -> Result<u64, String> {
    if range.contains(&value) { Ok(value) } else { Err(format!("{what} {value} is out of range: use {}..={}", range.start(), range.end())) }
}

/// Parses a duration such as `30d`, `12h 30m` or `0s` within `range`.
pub fn duration(value: &str, range: &RangeInclusive<Duration>) -> Result<Duration, String> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| format!("{e} (try 30d, 12h, 0s)"))?;
    if range.contains(&d) { Ok(d) } else { Err(format!("{value:?} is out of range: use {} to {}", show(*range.start()), show(*range.end()))) }
}

/// Checks a duration of `what` within `range`.
pub fn check_duration(what: &str, value: Duration, range: &RangeInclusive<Duration>) -> Result<Duration, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!("{what} {} is out of range: use {} to {}", show(value), show(*range.start()), show(*range.end())))
    }
}

/// Milliseconds of a duration that [`AGE`] or [`RETENTION_EVERY`] admitted,
/// as the i64 timestamps use (saturating, never wrapping).
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn show(d: Duration) -> String {
    if d.is_zero() { "0s".into() } else { humantime::format_duration(d).to_string() }
}

/// Most jobs or traces one listing returns (`$top`, `--top`).
pub const MAX_PAGE: usize = 5_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_range_checked_never_wrapped() {
        assert_eq!(duration("30d", &AGE), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(duration("0s", &AGE), Ok(Duration::ZERO));
        let e = duration("300000000y", &AGE).unwrap_err();
        assert!(e.contains("out of range") && e.contains("0s to 100years"), "{e}");
        assert!(duration("0s", &RETENTION_EVERY).is_err());
        assert!(duration("soon", &AGE).is_err());
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }

    #[test]
    fn counts_are_range_checked() {
        assert!(check("--lease-ms", 0, &LEASE_MS).is_err());
        assert!(check("--lease-ms", u64::MAX, &LEASE_MS).unwrap_err().contains("1000..=3600000"));
        assert_eq!(check("--lease-ms", 30_000, &LEASE_MS), Ok(30_000));
        assert!(check("--workers", u64::MAX, &WORKERS).is_err());
    }
}
