//! Time helpers: weir stores instants as milliseconds since the Unix epoch (UTC)
//! and shows them as RFC 3339.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
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
    Ok(crate::db::database_now(conn)?.unwrap_or_else(now_ms))
}

/// Parses a cron expression with seconds (`*/5 * * * * *`).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    use std::str::FromStr;
    cron::Schedule::from_str(expr).map_err(|e| format!("bad --schedule {expr:?}: {e} (six or seven fields: sec min hour day month weekday [year])"))
}
