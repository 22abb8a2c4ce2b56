//! Time: weir stores instants as milliseconds since the Unix epoch (UTC)
//! and shows them as RFC 3339.
//!
//! The clock seam: every instant weir reads (schedules, retention, waits,
//! leases, backoff, records' times) comes from [`now_ms`] or, where nodes
//! share the database's clock, [`now_on`]. `WEIR_CLOCK_SHIFT` (a duration,
//! `90s`, `-5m`) moves this process's clock by that much: the tests move time
//! forward with it instead of sleeping. Nothing else reads the system clock.

use chrono::{DateTime, SecondsFormat, Utc};

/// How far `WEIR_CLOCK_SHIFT` moves this process's clock, in ms (read once).
fn shift_ms() -> i64 {
    static SHIFT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *SHIFT.get_or_init(|| {
        let Ok(text) = std::env::var("WEIR_CLOCK_SHIFT") else { return 0 };
        let (sign, rest) = match text.trim().strip_prefix('-') {
            Some(rest) => (-1, rest),
            None => (1, text.trim().trim_start_matches('+')),
        };
        match humantime::parse_duration(rest) {
            Ok(d) => sign * i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2),
            Err(e) => {
                tracing::warn!("WEIR_CLOCK_SHIFT={text:?} is not a duration ({e}); the clock is not moved");
                0
            }
        }
    })
}

/// Now, in milliseconds since the Unix epoch (moved by `WEIR_CLOCK_SHIFT`).
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis().saturating_add(shift_ms())
}

/// RFC 3339 with milliseconds, UTC (`2026-11-22T14:00:00.000Z`).
pub fn to_rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)).unwrap_or_else(|| ms.to_string())
}

/// The latest time weir accepts (the end of year 9999, the last RFC 3339 can write).
pub const MAX_MS: i64 = 253_402_300_799_999;

/// Parses RFC 3339 into milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// Parses a time for the CLI: RFC 3339, or `+DURATION` from now (`+10m`, `+2h 30m`).
pub fn parse_when(s: &str) -> Result<i64, String> {
    if let Some(rest) = s.strip_prefix('+') {
        let d = humantime::parse_duration(rest.trim()).map_err(|e| format!("bad duration {rest:?}: {e} (try +30s, +10m, +2h)"))?;
        return i64::try_from(d.as_millis())
            .ok()
            .and_then(|ms| now_ms().checked_add(ms))
            .filter(|&t| t <= MAX_MS)
            .ok_or_else(|| format!("bad duration {rest:?}: too far in the future"));
    }
    parse_rfc3339(s).ok_or_else(|| format!("bad time {s:?}: use RFC 3339 (2026-11-22T15:00:00Z) or +DURATION (+10m)"))
}

/// Now by the clock the nodes of `conn`'s database share (the database's,
/// on PostgreSQL; this machine's on SQLite), in milliseconds since the epoch.
pub fn now_on(conn: &crate::db::Connection) -> crate::error::Result<i64> {
    Ok(match crate::db::database_now(conn)? {
        Some(db) => db.saturating_add(shift_ms()),
        None => now_ms(),
    })
}

/// Parses a cron expression with seconds (`*/5 * * * * *`).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    use std::str::FromStr;
    cron::Schedule::from_str(expr).map_err(|e| format!("bad --schedule {expr:?}: {e} (six or seven fields: sec min hour day month weekday [year])"))
}
