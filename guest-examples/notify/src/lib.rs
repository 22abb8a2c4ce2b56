//! notify: an async workflow that tells another system about a record.
//!
//! It always writes a trace line. With `{"url": "http://host:port/path"}` in
//! its step's config it POSTs the target record as JSON to that URL through
//! `wasi:http` (the step must be granted the host with `--allow-http`; a
//! background operation takes the same keys from its input), with
//! `Authorization: Bearer <value>` when the config names a secret
//! (`"secret": "NAME"`, granted with `--secret NAME`). `"count": N` sends it N
//! times (to show the per-attempt request cap).
//!
//! Each request carries `Idempotency-Key: <job id>-<n>` (n counts the
//! requests of one run from 1): the job's id is the same on every attempt of
//! it, so a receiver that keeps the keys it has seen acts once even when a
//! retried attempt sends again (the first attempt's answer was lost, or its
//! worker died after sending).
//!
//! A 2xx answer succeeds; a 5xx answer, a timeout or a connection failure is
//! transient (the job is retried); a 4xx, a redirect (never followed) or a
//! refusal by weir's egress policy is permanent.

use weir_guest::serde_json::{self, Map, Value as Json, json};
use weir_guest::types::{Context, Entity, Value};

weir_guest::bindings!("workflow");

use exports::weir::plugin::runner::{Guest, Step, WorkflowError};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

struct Notify;

impl Guest for Notify {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        weir_guest::info(&format!("notify: {} {} on {}", ctx.target.id, ctx.table, ctx.user));
        // A step's config, or a background operation's input.
        let config = match weir_guest::json(&ctx.config) {
            weir_guest::serde_json::Value::Null => weir_guest::json(&ctx.input),
            c => c,
        };
        let Some(url) = config["url"].as_str() else {
            return Ok(Step::Done(None));
        };
        let token = match config["secret"].as_str() {
            Some(name) => Some(weir_guest::secrets::get(name).map_err(|e| WorkflowError::Permanent(format!("cannot read secret {name}: {e:?}")))?),
            None => None,
        };
        let body = record_json(&ctx.target).to_string();
        let count = config["count"].as_u64().unwrap_or(1).max(1);
        let mut status = 0;
        for n in 1..=count {
            let key = format!("{}-{n}", ctx.job_id);
            let (code, reply) = post(url, token.as_deref(), &key, body.as_bytes())?;
            status = code;
            weir_guest::info(&format!("notify: POST {url} answered {code} ({} bytes)", reply.len()));
            match code {
                200..=299 => {}
                300..=399 => return Err(WorkflowError::Permanent(format!("POST {url} answered {code}, a redirect; redirects are not followed"))),
                400..=499 => return Err(WorkflowError::Permanent(format!("POST {url} answered {code}"))),
                _ => return Err(WorkflowError::Transient(format!("POST {url} answered {code}"))),
            }
        }
        Ok(Step::Done(Some(json!({"url": url, "status": status}).to_string())))
    }
}

/// The record as `{"table", "id", "fields": {name: value}}`.
fn record_json(e: &Entity) -> Json {
    let fields: Map<String, Json> = e
        .fields
        .iter()
        .map(|f| {
            let v = match &f.value {
                Value::Null => Json::Null,
                Value::Boolean(b) => json!(b),
                Value::Integer(i) | Value::Timestamp(i) => json!(i),
                // Exact: the decimal's text as a JSON number.
                Value::Decimal(d) => serde_json::from_str(d).unwrap_or(Json::String(d.clone())),
                Value::Text(s) => json!(s),
                Value::Reference(r) => json!(r.id),
                Value::Json(s) => serde_json::from_str(s).unwrap_or(Json::String(s.clone())),
            };
            (f.name.clone(), v)
        })
        .collect();
    json!({"table": e.table, "id": e.id, "fields": fields})
}

/// POSTs `body` as JSON; returns the status and the response body.
fn post(url: &str, token: Option<&str>, key: &str, body: &[u8]) -> Result<(u16, Vec<u8>), WorkflowError> {
    let bad = |why: &str| WorkflowError::Permanent(format!("bad url {url:?} in the config: {why}"));
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(bad("use http:// or https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    let set = |name: &str, value: &[u8]| headers.append(name, value).map_err(|e| bad(&format!("header {name}: {e:?}")));
    set("content-type", b"application/json")?;
    set("content-length", body.len().to_string().as_bytes())?;
    set("idempotency-key", key.as_bytes())?;
    if let Some(t) = token {
        set("authorization", format!("Bearer {t}").as_bytes())?;
    }
    let request = OutgoingRequest::new(headers);
    request.set_method(&wasip2::http::types::Method::Post).map_err(|()| bad("method"))?;
    request.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
    request.set_authority(Some(authority)).map_err(|()| bad("host"))?;
    request.set_path_with_query(Some(path)).map_err(|()| bad("path"))?;
    let outgoing = request.body().map_err(|()| bad("body"))?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| failed(url, &e))?;
    // A request refused or failed at once closes the body stream: the
    // response then says why, so a failed write is not the error to report.
    let mut sent = true;
    {
        let stream = outgoing.write().map_err(|()| bad("body stream"))?;
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                sent = false;
                break;
            }
        }
    }
    if sent {
        OutgoingBody::finish(outgoing, None).map_err(|e| failed(url, &e))?;
    } else {
        drop(outgoing);
    }
    let response = loop {
        match pending.get() {
            Some(r) => break r,
            None => pending.subscribe().block(),
        }
    };
    let response = response.map_err(|()| WorkflowError::Transient(format!("POST {url}: no response")))?.map_err(|e| failed(url, &e))?;
    let status = response.status();
    let incoming = response.consume().map_err(|()| WorkflowError::Transient(format!("POST {url}: no response body")))?;
    let mut reply = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| WorkflowError::Transient(format!("POST {url}: no response body")))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => reply.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match wasip2::http::types::http_error_code(&e) {
                        Some(code) => failed(url, &code),
                        None => WorkflowError::Transient(format!("POST {url}: reading the response failed: {}", e.to_debug_string())),
                    });
                }
            }
        }
    }
    Ok((status, reply))
}

/// A request that got no (complete) answer: refusals by weir's egress
/// policy and oversized answers are permanent, the rest transient.
fn failed(url: &str, e: &ErrorCode) -> WorkflowError {
    let (name, permanent) = match e {
        ErrorCode::HttpRequestDenied => ("denied (the step is not granted this host: --allow-http)", true),
        ErrorCode::DestinationIpProhibited => ("destination address prohibited (it is in the host's own network)", true),
        ErrorCode::HttpResponseBodySize(_) => ("response too large", true),
        ErrorCode::HttpRequestUriInvalid => ("invalid URL", true),
        ErrorCode::ConnectionTimeout => ("connection timeout", false),
        ErrorCode::HttpResponseTimeout | ErrorCode::ConnectionReadTimeout => ("response timeout", false),
        ErrorCode::ConnectionRefused => ("connection refused", false),
        ErrorCode::DnsTimeout | ErrorCode::DnsError(_) => ("DNS failure", false),
        _ => ("request failed", false),
    };
    let message = format!("POST {url}: {name} [{e:?}]");
    if permanent { WorkflowError::Permanent(message) } else { WorkflowError::Transient(message) }
}

export!(Notify);
