//! Callbacks of background operations: when a job with a
//! callback URL completes, a delivery is queued in the same transaction (an
//! outbox) and POSTed by the worker pool, retried with backoff when the
//! receiver fails. Delivery never changes the job's own outcome.
//!
//! A callback URL is a request weir makes on a caller's behalf, so it is checked
//! when the job is submitted ([`check_url`]): http or https with a host, and,
//! where the service sets a [`CallbackHosts`] allow-list, one of its hosts.
//! Redirects are not followed, so a receiver cannot bounce weir elsewhere.
//!
//! With a callback secret (`--callback-secret`, `WEIR_CALLBACK_SECRET`) every
//! delivery is signed the way Stripe signs webhooks: `Weir-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` ([`sign`]); a receiver
//! recomputes it and refuses an old `t` to stop replays.

use std::time::Duration;

use hmac::{Hmac, Mac};

use crate::db::{Connection, OptionalExtension, params};
use serde_json::{Value as Json, json};

use super::{backoff_ms, status_name};
use crate::error::Result;
use crate::time::{now_ms, to_rfc3339};

/// Deliveries tried before giving up.
pub const MAX_ATTEMPTS: i64 = 10;
const BASE_BACKOFF_MS: u64 = 1000;

/// The hosts callbacks may go to (`weir serve --callback-hosts`): `host` or
/// `host:port` entries, compared without case; empty allows any host.
#[derive(Debug, Clone, Default)]
pub struct CallbackHosts(Vec<String>);

impl CallbackHosts {
    /// Parses a comma-separated list (`WEIR_CALLBACK_HOSTS`); blanks are ignored.
    pub fn parse(list: &str) -> Self {
        CallbackHosts(list.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect())
    }

    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.is_any() || self.0.iter().any(|h| *h == host || *h == format!("{host}:{port}"))
    }
}

/// Checks a callback URL before a job is accepted: http(s), a host, no
/// credentials, and a host `allowed` names. The error says what to change.
pub fn check_url(url: &str, allowed: &CallbackHosts) -> std::result::Result<(), String> {
    // URL parsing forgives what it should not be asked to: it drops tabs and
    // line breaks, reads `\` as `/`. A URL that needs forgiving is refused.
    if let Some(c) = url.chars().find(|c| c.is_control() || c.is_whitespace() || *c == '\\') {
        return Err(format!("bad callback URL {url:?}: it holds {c:?}; write the URL plainly (percent-encode what must be in it)"));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("bad callback URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("bad callback URL {url:?}: use http:// or https://"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("bad callback URL {url:?}: no credentials in the URL; the receiver can check the job id against /api/jobs"));
    }
    let Some(host) = parsed.host_str() else {
        return Err(format!("bad callback URL {url:?}: it names no host"));
    };
    // The host as written (the parser drops a trailing dot from an IP address).
    let written = url.split_once("://").map_or("", |(_, rest)| rest);
    let authority = written.split(['/', '?', '#']).next().unwrap_or("");
    let written_host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let written_host = if written_host.starts_with('[') { written_host } else { written_host.rsplit_once(':').map_or(written_host, |(h, _)| h) };
    if host.ends_with('.') || written_host.ends_with('.') {
        return Err(format!("bad callback URL {url:?}: the host {written_host} ends with a dot; write it without"));
    }
    let host = host.to_ascii_lowercase();
    let port = parsed.port_or_known_default().unwrap_or(80);
    match (parsed.scheme(), parsed.port()) {
        ("https", Some(80)) => return Err(format!("bad callback URL {url:?}: https to port 80, a plain-HTTP port; use http://, or the receiver's TLS port")),
        ("http", Some(443)) => return Err(format!("bad callback URL {url:?}: http to port 443, a TLS port; use https://")),
        _ => {}
    }
    if !allowed.allows(&host, port) {
        return Err(format!("callback host {host}:{port} is not allowed: this service sends callbacks only to {} (--callback-hosts)", allowed.0.join(", ")));
    }
    Ok(())
}

/// A finished job's callback URL, codes, result, error and parent.
type FinalRow = (Option<String>, i64, i64, Option<String>, Option<String>, Option<String>, Option<String>);

/// Queues the callback of job `id`, if it has a URL. Returns its parent
/// job, if a workflow started it (read in the same look-up, for
/// the parent's wake in `state`).
pub fn queue(conn: &Connection, id: &str, now: i64) -> Result<Option<String>> {
    let row: Option<FinalRow> = conn
        .prepare_cached("SELECT callback_url, statecode, statuscode, result, error_code, error_message, parent_id FROM weir_jobs WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .optional()?;
    let Some((url, statecode, statuscode, result, error_code, error, parent)) = row else {
        return Ok(None);
    };
    let Some(url) = url else { return Ok(parent) };
    let payload = json!({
        "id": id,
        "status": status_name(statuscode),
        "statecode": statecode,
        "statuscode": statuscode,
        "result": result.as_deref().map(|r| serde_json::from_str::<Json>(r).unwrap_or(Json::String(r.to_string()))),
        "error_code": error_code,
        "error": error,
        "completed_at": to_rfc3339(now),
        "location": format!("/api/jobs/{id}"),
    });
    conn.prepare_cached("INSERT INTO weir_callbacks (job_id, url, payload, next_at) VALUES (?1, ?2, ?3, ?4)")?.execute(params![
        id,
        url,
        payload.to_string(),
        now
    ])?;
    Ok(parent)
}

/// A delivery to make.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub job_id: String,
    pub url: String,
    pub payload: String,
    pub attempts: i64,
}

/// Deliveries that are due, oldest first.
pub fn due(conn: &Connection, limit: usize) -> Result<Vec<Delivery>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, job_id, url, payload, attempts FROM weir_callbacks
         WHERE delivered_at IS NULL AND next_at <= ?1 ORDER BY next_at LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now_ms(), limit as i64], |r| {
        Ok(Delivery { id: r.get(0)?, job_id: r.get(1)?, url: r.get(2)?, payload: r.get(3)?, attempts: r.get(4)? })
    })?;
    Ok(rows.collect::<crate::db::Result<_>>()?)
}

/// Records a delivery attempt: done, or retried with backoff (given up after
/// [`MAX_ATTEMPTS`], keeping the last error), with the HTTP status it got.
pub fn record(conn: &Connection, d: &Delivery, attempt: Attempt) -> Result<()> {
    let attempts = d.attempts + 1;
    let status = attempt.status.map(i64::from);
    match attempt.outcome {
        Ok(()) => conn.execute(
            "UPDATE weir_callbacks SET delivered_at = ?2, attempts = ?3, last_error = NULL, last_status = ?4 WHERE id = ?1",
            params![d.id, now_ms(), attempts, status],
        )?,
        Err(e) => {
            let next = if attempts >= MAX_ATTEMPTS { i64::MAX } else { now_ms() + backoff_ms(BASE_BACKOFF_MS, attempts as u32) as i64 };
            conn.execute(
                "UPDATE weir_callbacks SET attempts = ?2, next_at = ?3, last_error = ?4, last_status = ?5 WHERE id = ?1",
                params![d.id, attempts, next, e, status],
            )?
        }
    };
    Ok(())
}

/// The delivery of job `id`'s callback as `jobs show` reports it, once queued.
pub fn delivery(conn: &Connection, id: &str) -> Result<Option<DeliveryView>> {
    type Row = (String, i64, Option<i64>, Option<String>, Option<i64>, i64);
    let row: Option<Row> = conn
        .prepare_cached("SELECT url, attempts, delivered_at, last_error, last_status, next_at FROM weir_callbacks WHERE job_id = ?1 ORDER BY id DESC LIMIT 1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .optional()?;
    Ok(row.map(|(url, attempts, delivered_at, last_error, last_status, next_at)| {
        let state = match (delivered_at, attempts) {
            (Some(_), _) => "delivered",
            (None, n) if n >= MAX_ATTEMPTS => "given up",
            (None, 0) => "pending",
            (None, _) => "retrying",
        };
        DeliveryView {
            url,
            state,
            attempts,
            last_status,
            last_error,
            delivered_at: delivered_at.map(to_rfc3339),
            next_attempt_at: (delivered_at.is_none() && attempts < MAX_ATTEMPTS).then(|| to_rfc3339(next_at)),
        }
    }))
}

/// A job's callback delivery, as operators see it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub url: String,
    /// pending, retrying, delivered or given up.
    #[schema(value_type = String)]
    pub state: &'static str,
    pub attempts: i64,
    /// The HTTP status of the last attempt.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    pub next_attempt_at: Option<String>,
}

/// The `Weir-Signature` header value of `body` sent at `t` (unix seconds).
pub fn sign(secret: &str, t: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// One delivery attempt: the HTTP status, if an answer came, and whether it counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub status: Option<u16>,
    pub outcome: std::result::Result<(), String>,
}

/// POSTs a payload as JSON, signed with `secret` at `t` when one is set.
/// Blocking; run it off the async executor. `traceparent`: the delivery's
/// span, sent as the W3C header (OpenTelemetry).
pub fn post(url: &str, payload: &str, secret: Option<&str>, t: i64, traceparent: Option<&str>) -> Attempt {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).http_status_as_error(false).max_redirects(0).build().into();
    let mut request = agent.post(url).header("content-type", "application/json").header("user-agent", concat!("weir/", env!("CARGO_PKG_VERSION")));
    if let Some(secret) = secret {
        request = request.header("weir-signature", sign(secret, t, payload));
    }
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let response = match request.send(payload) {
        Ok(r) => r,
        Err(e) => return Attempt { status: None, outcome: Err(format!("POST {url}: {e}")) },
    };
    let status = response.status();
    let outcome =
        if status.is_success() { Ok(()) } else { Err(format!("POST {url}: answered {status}; callbacks need a 2xx answer and do not follow redirects")) };
    Attempt { status: Some(status.as_u16()), outcome }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn urls_are_checked_against_scheme_credentials_and_allowed_hosts() {
        let any = CallbackHosts::default();
        assert!(check_url("http://127.0.0.1:9000/done", &any).is_ok());
        assert!(check_url("ftp://example.com/x", &any).unwrap_err().contains("use http:// or https://"));
        assert!(check_url("not a url", &any).unwrap_err().contains("bad callback URL"));
        assert!(check_url("http://user:pw@example.com/", &any).unwrap_err().contains("no credentials"));
        let only = CallbackHosts::parse(" hooks.example.com, 127.0.0.1:9000 ,");
        assert!(check_url("https://HOOKS.example.com/weir", &only).is_ok());
        assert!(check_url("http://127.0.0.1:9000/done", &only).is_ok());
        let refused = check_url("http://127.0.0.1:9001/done", &only).unwrap_err();
        assert!(refused.contains("127.0.0.1:9001 is not allowed") && refused.contains("hooks.example.com, 127.0.0.1:9000"), "{refused}");
        assert!(check_url("http://169.254.169.254/latest/meta-data", &only).unwrap_err().contains("not allowed"));
        // Found in December: URLs the parser would forgive, and mismatched ports.
        for bad in [
            "http://exa\tmple.com/x",
            "http://example.com/x\r\nX-Injected: 1",
            "http://example.com\\@evil.example/",
            "http://127.0.0.1./done",
            "http://example.com./done",
            "https://example.com:80/done",
            "http://example.com:443/done",
            " http://example.com/",
        ] {
            assert!(check_url(bad, &any).is_err(), "{bad:?} should be refused");
        }
        assert!(check_url("https://example.com:8443/done", &any).is_ok());
    }

    /// A receiver answering one request with `status_line`; returns its URL.
    fn receiver(status_line: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let reply = format!("HTTP/1.1 {status_line}\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            s.write_all(reply.as_bytes()).unwrap();
        });
        format!("http://{addr}/done")
    }

    #[test]
    fn a_redirect_is_a_failed_delivery_not_followed() {
        let redirected = post(&receiver("302 Found"), "{}", None, 0, None);
        let err = redirected.outcome.unwrap_err();
        assert!(err.contains("302") && err.contains("do not follow redirects"), "{err}");
        assert_eq!(redirected.status, Some(302));
        assert_eq!(post(&receiver("204 No Content"), "{}", None, 0, None), Attempt { status: Some(204), outcome: Ok(()) });
        assert!(post(&receiver("500 Internal Server Error"), "{}", None, 0, None).outcome.unwrap_err().contains("500"));
    }

    #[test]
    fn a_signature_is_stripe_s_scheme() {
        // HMAC-SHA256("key", "1700000000.{}"), computed independently with
        // `printf '1700000000.{}' | openssl dgst -sha256 -hmac key`.
        let sig = sign("key", 1_700_000_000, "{}");
        assert_eq!(sig, "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae");
        assert_ne!(sig, sign("other", 1_700_000_000, "{}"));
        assert_ne!(sig, sign("key", 1_700_000_001, "{}"));
    }
}
