//! The HTTP API of `weir serve` (axum): records through the pipeline, jobs and
//! their control, background operations, plug-ins, steps and tables, the
//! operator dashboard and its pushed updates (`/api/events`, [`events`]),
//! `/metrics` and an OpenAPI document generated from the handlers
//! (`/api/openapi.json`).
//!
//! Every error is JSON `{"error": ..., ...}` naming the plug-in, step or record:
//! 400 bad input, 401 no, wrong, revoked or expired credential, 403 a
//! cross-site request or a right the caller lacks, 404 unknown
//! table/record/job, 408 a body that stopped arriving, 409 an illegal job
//! transition, a duplicate or a reused Idempotency-Key, 406 the event stream
//! asked for without accepting `text/event-stream`, 413 a body over the
//! limit, 429 over the caller's rate (with `Retry-After`), 415 a write that is
//! not JSON (or wasm on upload), 421 a `Host` that is not this server's
//! loopback name, 422 a plug-in rejected or failed the operation, 503 the
//! store was busy for longer than an operation may take (with `Retry-After`),
//! 500 anything else. Even hyper's own answers to unparseable requests (400,
//! 414 URI too long, 431 headers too large) carry a JSON body.
//!
//! Before any handler, [`guard`] defends against a browser on the same machine
//! (see SECURITY.md): without a token only loopback `Host` names are answered
//! (DNS rebinding), a foreign `Origin` or `Sec-Fetch-Site` is refused unless
//! `--allow-origin` lists it, and writes must say `application/json` (a page's
//! "simple" cross-site requests cannot). It also reads the body with a limit
//! and an idle timeout, so a client that promises more than it sends is
//! answered and disconnected instead of holding a connection. Then [`auth`]
//! resolves the caller (`crate::access`), counts its rate (`limiter`), asks
//! `policy` whether the route is theirs, and audits every change.
//!
//! Handlers are thin: they parse, call the library on a blocking thread (the
//! pipeline runs SQLite and wasm synchronously) and shape the answer.

mod events;
pub mod limiter;
mod policy;

pub use limiter::RateSettings;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Request, State};

use crate::access::Caller;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value as Json_, json};
use utoipa::OpenApi;

mod schema;

use self::schema::*;
use crate::error::Error;
use crate::jobs::{GroupBy, JobView};
use crate::steps::{Step, StepRequest, StepUpdate};
use crate::store::PluginRow;
use crate::store::records::TableDef;
use crate::traces::TraceView;
use crate::{BackgroundRequest, BulkOutcome, Weir};

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Bearer token required on every route but health (and the static
    /// dashboard shell, which carries no data).
    pub token: Option<String>,
    /// Largest JSON body accepted (413 above).
    pub max_body_bytes: usize,
    /// Hosts background callbacks may go to; empty allows any.
    pub callback_hosts: crate::jobs::callbacks::CallbackHosts,
    /// Origins besides the server's own whose pages may call the API
    /// (`--allow-origin`), as `scheme://host[:port]`.
    pub allow_origins: Vec<String>,
    /// The port the server listens on. Without a token, only requests whose
    /// `Host` names a loopback address or `localhost` on this port are
    /// answered (`None`: any port, for a router not bound to a socket).
    pub listen_port: Option<u16>,
    /// How long a request body may stop arriving before the request is
    /// answered 408 and the connection closed.
    pub body_idle_timeout: Duration,
    /// The identity provider whose JWTs sign callers in (`--jwt-*`).
    pub jwt: Option<Arc<crate::sso::Jwt>>,
    /// Requests per second per caller (`--rate-limit`, `--burst`); tokens
    /// with a rate of their own use theirs.
    pub rate_limit: Option<RateSettings>,
    /// How long an `Idempotency-Key` answers with its first job, in ms.
    pub idempotency_window_ms: i64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            token: None,
            max_body_bytes: 1 << 20,
            callback_hosts: Default::default(),
            allow_origins: Vec::new(),
            listen_port: None,
            body_idle_timeout: Duration::from_secs(10),
            jwt: None,
            rate_limit: None,
            idempotency_window_ms: crate::jobs::idempotency::DEFAULT_WINDOW_MS,
        }
    }
}

#[derive(Clone)]
struct App {
    weir: Arc<Weir>,
    config: Arc<ApiConfig>,
    limiter: Arc<limiter::Limiter>,
    events: Arc<events::Events>,
}

/// An API error: a status and a JSON body.
pub struct ApiError(StatusCode, Json_);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(self.1)).into_response();
        match self.0 {
            // The store was busy: nothing was written, try again shortly.
            StatusCode::SERVICE_UNAVAILABLE => {
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The request's body was not (fully) read: the connection cannot be reused.
            StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE => {
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        r
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let msg = e.to_string();
        match e {
            Error::Invalid(_) | Error::Load(_) => ApiError(StatusCode::BAD_REQUEST, json!({"error": msg})),
            Error::NotFound(_) => ApiError(StatusCode::NOT_FOUND, json!({"error": msg})),
            Error::Forbidden(_) => ApiError(StatusCode::FORBIDDEN, json!({"error": msg})),
            Error::Unauthorized(_) => ApiError(StatusCode::UNAUTHORIZED, json!({"error": msg})),
            Error::Conflict(_) => ApiError(StatusCode::CONFLICT, json!({"error": msg})),
            Error::Plugin { plugin, step, code, trace, .. } => {
                ApiError(StatusCode::UNPROCESSABLE_ENTITY, json!({"error": msg, "plugin": plugin, "step": step, "code": code, "trace": trace}))
            }
            Error::DepthLimit(_) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, json!({"error": msg, "code": "depth_limit"})),
            Error::Busy(_) => ApiError(StatusCode::SERVICE_UNAVAILABLE, json!({"error": msg, "code": "busy"})),
            Error::Unavailable(_) => ApiError(StatusCode::SERVICE_UNAVAILABLE, json!({"error": msg, "code": "unavailable"})),
            Error::Db(_) | Error::Internal(_) => {
                tracing::error!("internal error: {msg}");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": msg}))
            }
        }
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, json!({"error": msg.into()}))
}

type ApiResult<T> = Result<T, ApiError>;

/// Runs blocking library work off the async executor.
/// The request's trace context goes with it.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> crate::error::Result<T> + Send + 'static) -> ApiResult<T> {
    let cx = crate::otel::current();
    let traced = move || {
        let _attached = cx.attach();
        f()
    };
    tokio::task::spawn_blocking(traced).await.map_err(|e| ApiError::from(Error::Internal(format!("the request's worker failed: {e}"))))?.map_err(ApiError::from)
}

fn parse_body(body: &Bytes) -> ApiResult<Json_> {
    serde_json::from_slice(body).map_err(|e| bad(format!("the body is not valid JSON: {e}")))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "weir", description = "A WebAssembly plug-in host: records, an event pipeline and a durable job queue."),
    paths(
        health, create_record, create_batch, query_records, get_record, update_record, delete_record, list_jobs, job_groups, bulk_jobs,
        list_schedules, get_job, delete_job, job_action, event_stream,
        submit_background, list_plugins, upload_plugin, list_steps, add_step, list_tables, create_table, stats,
        list_users, add_user, user_action, reassign_jobs, update_step, remove_step, step_action, list_traces, get_trace,
        remove_plugin, rollback_plugin, list_queues, set_queue, list_nodes, me, list_tokens, create_token, revoke_token, list_grants,
        change_grants, list_audit
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Builds the router, its event streams fed by `events` (which `serve_on`
/// closes when it stops, so open streams do not hold up a graceful stop).
fn router(weir: Arc<Weir>, config: ApiConfig, events: Arc<events::Events>) -> Router {
    let limiter = Arc::new(limiter::Limiter::new(config.rate_limit));
    let app = App { weir, config: Arc::new(config.clone()), limiter, events };
    let plugins = Router::new().route("/api/plugins", get(list_plugins).post(upload_plugin)).layer(DefaultBodyLimit::max(crate::plugins::MAX_COMPONENT_BYTES));
    Router::new()
        .route("/", get(dashboard))
        .route("/jobs/{id}", get(dashboard))
        .route("/assets/chart.js", get(chart_js))
        .route("/api/health", get(health))
        .route("/api/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics))
        .route("/api/stats", get(stats))
        .route("/api/events", get(event_stream))
        .route("/api/data/{table}", post(create_record).get(query_records))
        .route("/api/data/{table}/batch", post(create_batch))
        .route("/api/data/{table}/{id}", get(get_record).patch(update_record).delete(delete_record))
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/groups", get(job_groups))
        .route("/api/jobs/bulk", post(bulk_jobs))
        .route("/api/schedules", get(list_schedules))
        .route("/api/queues", get(list_queues))
        .route("/api/queues/{name}", axum::routing::patch(set_queue))
        .route("/api/nodes", get(list_nodes))
        .route("/api/jobs/{id}", get(get_job).delete(delete_job))
        .route("/api/jobs/{id}/{action}", post(job_action))
        .route("/api/background", post(submit_background))
        .route("/api/steps", get(list_steps).post(add_step))
        .route("/api/steps/{name}", axum::routing::patch(update_step).delete(remove_step))
        .route("/api/steps/{name}/{action}", post(step_action))
        .route("/api/tables", get(list_tables).post(create_table))
        .route("/api/users", get(list_users).post(add_user))
        .route("/api/me", get(me))
        .route("/api/tokens", get(list_tokens).post(create_token))
        .route("/api/tokens/{id}/revoke", post(revoke_token))
        .route("/api/grants", get(list_grants).post(change_grants))
        .route("/api/audit", get(list_audit))
        .route("/api/users/{name}/{action}", post(user_action))
        .route("/api/jobs/reassign", post(reassign_jobs))
        .route("/api/plugins/{name}", axum::routing::delete(remove_plugin))
        .route("/api/plugins/{name}/rollback", post(rollback_plugin))
        .route("/api/traces", get(list_traces))
        .route("/api/traces/{id}", get(get_trace))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .merge(plugins)
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(middleware::from_fn_with_state(app.clone(), json_errors))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(traced))
        .with_state(app)
}

/// A span per request when OpenTelemetry is on ([`crate::otel`]): named by
/// its route, a child of the caller's `traceparent`, current while the
/// handler runs (so the operation and the jobs it enqueues are its children).
async fn traced(request: axum::extract::Request, next: middleware::Next) -> Response {
    if !crate::otel::enabled() {
        return next.run(request).await;
    }
    use opentelemetry::context::FutureExt;
    let route = request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string());
    let span = crate::otel::http_request(request.method().as_str(), route.as_deref().unwrap_or("(no route)"), request.headers());
    let Some(cx) = span.context() else { return next.run(request).await };
    let response = next.run(request).with_context(cx).await;
    let status = response.status();
    span.set(|| vec![opentelemetry::KeyValue::new("http.response.status_code", i64::from(status.as_u16()))]);
    if status.is_server_error() {
        span.fail(|| status.to_string());
    }
    response
}

/// The dashboard's inline script, as its Content-Security-Policy allows it
/// (`'sha256-…'` of the text between its `<script>` tags).
fn dashboard_script_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        use sha2::Digest;
        let page = include_str!("../../assets/dashboard.html");
        let script = page.rsplit_once("<script>").and_then(|(_, rest)| rest.split_once("</script>")).map_or("", |(s, _)| s);
        let digest = sha2::Sha256::digest(script.as_bytes());
        format!("'sha256-{}'", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest))
    })
}

/// Every answer says it may not be framed (clickjacking: a bait page cannot
/// put the dashboard in an `<iframe>` and steer a click onto its buttons),
/// and the dashboard may run only its own scripts: the chart library it
/// serves and its one inline script, by hash.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let csp = format!(
        "default-src 'none'; script-src 'self' {}; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        dashboard_script_hash()
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// Gives the errors axum produces by itself (413 over the body limit, 404 no
/// such route, 405 wrong method, a bad query string...) the API's JSON shape
/// and a message that says what to do.
async fn json_errors(State(app): State<App>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let text = match axum::body::to_bytes(resp.into_body(), 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(&app.config, &path),
        StatusCode::NOT_FOUND => format!("no route {method} {path}; the routes are listed in /api/openapi.json"),
        StatusCode::METHOD_NOT_ALLOWED => format!("{path} does not take {method}; the routes are listed in /api/openapi.json"),
        _ if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    ApiError(status, json!({"error": message})).into_response()
}

/// Why a body over the limit of `path` was refused.
fn too_large(config: &ApiConfig, path: &str) -> String {
    format!(
        "the request body is larger than the limit of {} bytes (weir serve --max-body-bytes sets it; plug-in uploads may be up to {} bytes)",
        body_limit(config, path),
        crate::plugins::MAX_COMPONENT_BYTES
    )
}

fn body_limit(config: &ApiConfig, path: &str) -> usize {
    if path == "/api/plugins" { crate::plugins::MAX_COMPONENT_BYTES } else { config.max_body_bytes }
}

/// The defences every request passes before auth and the handlers: the
/// `Host` (DNS rebinding), the `Origin` (cross-site requests), the content
/// type of writes, the `X-Weir-User` header, then the body, read with a limit
/// and an idle timeout.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    if let Err(e) = check_request(&app.config, &req) {
        return e.into_response();
    }
    match read_body(&app.config, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check_request(config: &ApiConfig, req: &Request) -> ApiResult<()> {
    let headers = req.headers();
    let host = match headers.get(header::HOST) {
        Some(h) => h.to_str().ok().map(str::to_ascii_lowercase),
        None => req.uri().authority().map(|a| a.as_str().to_ascii_lowercase()),
    };
    if config.token.is_none() && !host.as_deref().is_some_and(|h| is_loopback_host(h, config.listen_port)) {
        let port = config.listen_port.map_or(String::new(), |p| format!(":{p}"));
        return Err(ApiError(
            StatusCode::MISDIRECTED_REQUEST,
            json!({"error": format!(
                "this server answers only requests addressed to localhost{port} or a loopback address, not Host {}: without a token it refuses other names \
                 (a defence against DNS rebinding); to serve other names, set a token (--token or WEIR_TOKEN)",
                host.as_deref().unwrap_or("(none)")
            )}),
        ));
    }
    let own = |origin: &str| {
        let origin = origin.to_ascii_lowercase();
        host.as_deref().is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"))
            || config.allow_origins.iter().any(|o| o.eq_ignore_ascii_case(&origin))
    };
    let cross_site = |why: String| {
        ApiError(
            StatusCode::FORBIDDEN,
            json!({"error": format!("{why}: a page of another site may not call this API; serve --allow-origin ORIGIN allows one")}),
        )
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !own(origin) {
            return Err(cross_site(format!("the request comes from origin {origin:?}")));
        }
    } else if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        // Browsers omit Origin on some requests (no-cors GETs); Fetch Metadata
        // still says where they come from. A top-level navigation (a link) only
        // shows the page to the user, so it may come from anywhere.
        // But not into a frame: a page of another site that frames the
        // dashboard could steer the user's clicks onto its buttons.
        let navigation = headers.get("sec-fetch-mode").is_some_and(|m| m == "navigate") && req.method() == Method::GET;
        let framed = headers.get("sec-fetch-dest").is_some_and(|d| matches!(d.as_bytes(), b"iframe" | b"frame" | b"embed" | b"object" | b"fencedframe"));
        if matches!(site, "cross-site" | "same-site") && (!navigation || framed) {
            let how = if framed { " into a frame" } else { "" };
            return Err(cross_site(format!("the request is {site} (Sec-Fetch-Site){how}")));
        }
    }
    if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        let expected = if req.uri().path() == "/api/plugins" { "application/wasm" } else { "application/json" };
        let given = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).to_string());
        let essence = given.as_deref().and_then(|v| v.split(';').next()).map(|v| v.trim().to_ascii_lowercase());
        if essence.as_deref() != Some(expected) {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json!({"error": format!(
                    "{} {} needs Content-Type: {expected}, not {}",
                    req.method(),
                    req.uri().path(),
                    given.map_or("none".to_string(), |g| format!("{g:?}"))
                )}),
            ));
        }
    }
    if let Some(user) = headers.get("x-weir-user")
        && (user.to_str().is_err() || user.is_empty())
    {
        return Err(bad("X-Weir-User must be a user name (lowercase letters, digits, '-' or '_'), not empty and not bytes outside ASCII"));
    }
    Ok(())
}

/// Whether `host` (a `Host` header: `name[:port]`) names this machine's
/// loopback on `port`: `localhost`, `127.0.0.0/8` or `[::1]`.
fn is_loopback_host(host: &str, port: Option<u16>) -> bool {
    let (name, given_port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':')),
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        },
    };
    let loopback = name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let port_ok = match (port, given_port) {
        (None, _) => true,
        (Some(p), Some(g)) => g.parse::<u16>() == Ok(p),
        (Some(p), None) => p == 80,
    };
    loopback && port_ok
}

/// Reads the request's body up to its limit, giving up when nothing arrives
/// for `body_idle_timeout`, and hands the handlers the buffered body.
async fn read_body(config: &ApiConfig, req: Request) -> ApiResult<Request> {
    use axum::body::{Body, HttpBody};
    use http_body_util::BodyExt;
    let limit = body_limit(config, req.uri().path());
    if req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > limit as u64) {
        return Err(payload_too_large(config, req.uri().path()));
    }
    if req.body().is_end_stream() {
        return Ok(req);
    }
    let (parts, mut body) = req.into_parts();
    let mut buf = Vec::new();
    loop {
        match tokio::time::timeout(config.body_idle_timeout, body.frame()).await {
            Err(_) => {
                return Err(ApiError(
                    StatusCode::REQUEST_TIMEOUT,
                    json!({"error": format!(
                        "the request body stopped arriving for {} ms after {} bytes (is Content-Length larger than the body?); the connection is closed",
                        config.body_idle_timeout.as_millis(),
                        buf.len()
                    )}),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(bad(format!("cannot read the request body: {e}"))),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limit {
                        return Err(payload_too_large(config, parts.uri.path()));
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(Request::from_parts(parts, Body::from(buf)))
}

fn payload_too_large(config: &ApiConfig, path: &str) -> ApiError {
    ApiError(StatusCode::PAYLOAD_TOO_LARGE, json!({"error": too_large(config, path)}))
}

/// Who is calling, and may they: resolves the bearer token to a
/// [`Caller`] (the server's own token or none on loopback: an admin; a
/// user's token: that user with its role), applies `X-Weir-User` (another
/// user only with impersonate), asks [`policy::check`] before the handler
/// runs, and writes every change that is not a record's to the audit log
/// with its outcome. The handlers read the caller (and whom it acts as)
/// from the request's extensions.
async fn auth(State(app): State<App>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if policy::is_open(&path) {
        return next.run(req).await;
    }
    let headers = req.headers().clone();
    let caller = match resolve_caller(&app, &headers).await {
        Ok(c) => c,
        Err(e) => {
            let mut r = e.into_response();
            if r.status() == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return r;
        }
    };
    if let Err(wait) = app.limiter.check(&caller.rate_key(), caller.rate_milli) {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut r = ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": format!("{} sent more requests than its rate limit allows; retry after {secs} s", caller.user)}),
        )
        .into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return r;
    }
    let template = req.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_string());
    let method = req.method().clone();
    let audited = !matches!(method, Method::GET | Method::HEAD) && !path.starts_with("/api/data/");
    // `guard` has read the body already: this takes it without copying.
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let decision = match &template {
        Some(t) => {
            let table = path
                .strip_prefix("/api/data/")
                .and_then(|r| r.split('/').next())
                .map(|t| percent_encoding::percent_decode_str(t).decode_utf8_lossy().into_owned());
            policy::check(&caller, &method, t, table.as_deref())
        }
        // No such route: answered 404 (or 405) by the router.
        None => Ok(()),
    };
    let resp = match decision {
        Err(e) => ApiError::from(e).into_response(),
        Ok(()) => {
            parts.extensions.insert(caller.clone());
            next.run(Request::from_parts(parts.clone(), axum::body::Body::from(bytes.clone()))).await
        }
    };
    if audited {
        let entry = crate::access::AuditEntry {
            id: 0,
            at: String::new(),
            actor: caller.user.clone(),
            as_user: caller.acting_as.clone(),
            via: "api".into(),
            action: format!("{method} {}", template.as_deref().unwrap_or(&path)),
            target: parts.uri.to_string(),
            outcome: i64::from(resp.status().as_u16()),
            detail: audit_detail(&parts.headers, &bytes),
        };
        let weir = app.weir.clone();
        if let Err(e) = blocking(move || weir.audit(&entry)).await {
            tracing::error!("could not write the audit log: {}", e.1);
        }
    }
    resp
}

/// What the audit keeps of a request's body: JSON up to 16 KiB as sent, a
/// component's size (never its bytes).
fn audit_detail(headers: &HeaderMap, bytes: &Bytes) -> Option<Json_> {
    if bytes.is_empty() {
        return None;
    }
    let json = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json && bytes.len() <= 16 * 1024 { serde_json::from_slice(bytes).ok() } else { Some(json!({"bytes": bytes.len()})) }
}

/// The caller a request's credentials name (see [`auth`]).
async fn resolve_caller(app: &App, headers: &HeaderMap) -> ApiResult<crate::access::Caller> {
    use crate::access::Caller;
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::to_string);
    let base = match (given, &app.config.token) {
        (None, None) => Caller::admin("system"),
        (None, Some(_)) => {
            return Err(ApiError(StatusCode::UNAUTHORIZED, json!({"error": "missing bearer token: send Authorization: Bearer <token>"})));
        }
        (Some(g), Some(t)) if constant_time_eq(g.as_bytes(), t.as_bytes()) => Caller::admin("system"),
        (Some(g), _) if crate::sso::Jwt::looks_like(&g) => {
            let Some(jwt) = app.config.jwt.clone() else {
                return Err(ApiError::from(Error::Unauthorized(
                    "a JWT was sent, but this server takes none (serve --jwt-issuer, --jwt-audience, --jwks-file)".into(),
                )));
            };
            let weir = app.weir.clone();
            blocking(move || {
                let claimed = jwt.verify(&g)?;
                weir.pool().with_conn(|conn| Caller::signed_in(conn, &claimed.user, claimed.role))
            })
            .await?
        }
        (Some(g), _) => {
            let weir = app.weir.clone();
            // On SQLite, on this thread when a connection is free (a few µs,
            // less than a hand-off); else on a blocking thread.
            let free = if weir.pool().db().dialect().short_reads_inline() { weir.pool().try_checkout().map_err(Error::from)? } else { None };
            match free {
                Some(conn) => Caller::from_token(&conn, &g)?,
                None => blocking(move || weir.pool().with_conn(|conn| Caller::from_token(conn, &g))).await?,
            }
        }
    };
    match headers.get("x-weir-user").and_then(|v| v.to_str().ok()) {
        Some(other) if other != base.user => Ok(base.act_as(other)?),
        _ => Ok(base),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[utoipa::path(get, path = "/api/health", security(()), responses((status = 200, description = "weir is up", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../../assets/dashboard.html"))
}

async fn chart_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=86400")], include_str!("../../assets/chart.umd.min.js"))
}

async fn metrics(State(app): State<App>) -> ApiResult<impl IntoResponse> {
    let weir = app.weir.clone();
    let jobs = blocking(move || weir.pool().with_conn(crate::jobs::stats::prometheus)).await?;
    let body = format!("{}{jobs}", crate::telemetry::render());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body))
}

#[utoipa::path(get, path = "/api/stats", params(("range" = Option<String>, Query, description = "what the rates, durations, throughput and per-plug-in figures cover: 1h (the default, per minute), 6h, 24h or 7d")),
    responses((status = 200, body = StatsView,
    description = "The dashboard's figures: jobs by status, failure rate, duration percentiles, backlog, held steps, stuck jobs, recent failures, throughput per bucket (from the database), per-plug-in calls (this process)"),
    (status = 400, body = ErrorBody)))]
async fn stats(State(app): State<App>, StrictQuery(q): StrictQuery) -> ApiResult<Json<StatsView>> {
    let range = q.get("range").map(|r| crate::jobs::stats::Range::parse(r)).transpose()?.unwrap_or_default();
    let weir = app.weir.clone();
    let jobs = blocking(move || weir.pool().with_conn(|conn| crate::jobs::stats::stats_over(conn, range))).await?;
    let plugins = crate::telemetry::plugin_stats()
        .iter()
        .map(|p| PluginFigures { plugin: p.plugin.clone(), calls: p.calls, failures: p.failures, fuel: p.fuel, mean_ms: p.mean_ms() })
        .collect();
    Ok(Json(StatsView { jobs, plugins }))
}

#[utoipa::path(get, path = "/api/events",
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "Server-Sent Events: `ready` once subscribed, then `change` whenever the job system changed (on any node sharing the database, checked about every second); comments keep it open. Send Accept: text/event-stream."),
        (status = 406, description = "The request does not accept text/event-stream", body = ErrorBody)))]
async fn event_stream(State(app): State<App>, headers: HeaderMap) -> ApiResult<Response> {
    let accepts = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream")));
    if !accepts {
        return Err(ApiError(
            StatusCode::NOT_ACCEPTABLE,
            json!({"error": "GET /api/events is a stream of Server-Sent Events that does not end: send Accept: text/event-stream and read it as it comes"}),
        ));
    }
    let body = app.events.subscribe(&app.weir);
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-store")], body).into_response())
}

#[utoipa::path(post, path = "/api/data/{table}", params(("table" = String, Path)), request_body(content = RecordFields, description = "Column values"),
    responses((status = 201, description = "The stored record, with its id", body = Record), (status = 400, body = ErrorBody), (status = 403, description = "The acting user is deactivated", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, description = "A plug-in rejected or failed the operation", body = ErrorBody), (status = 503, description = "The store was busy; retry", body = ErrorBody)))]
async fn create_record(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(table): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, HeaderMap, Json<Json_>)> {
    let json = parse_body(&body)?;
    let weir = app.weir.clone();
    // Concurrent writes share commits through the group writer.
    let rec = weir.pipeline().create_grouped(caller.who(), &table, json).await?;
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/data/{table}/{}", rec.id)) {
        h.insert(header::LOCATION, v);
    }
    Ok((StatusCode::CREATED, h, Json(rec.to_json())))
}

/// Most records one batch request creates.
const MAX_BATCH: usize = 1000;

#[utoipa::path(post, path = "/api/data/{table}/batch", params(("table" = String, Path)), request_body(content = Vec<RecordFields>, description = "Records to create, at most 1000"),
    responses((status = 200, description = "One result per element, in order", body = BatchResults), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn create_batch(State(app): State<App>, Extension(caller): Extension<Caller>, Path(table): Path<String>, body: Bytes) -> ApiResult<Json<Json_>> {
    let Json_::Array(items) = parse_body(&body)? else {
        return Err(bad("a batch is a JSON array of records"));
    };
    if items.len() > MAX_BATCH {
        return Err(bad(format!("a batch holds at most {MAX_BATCH} records, this one {}; send it in parts", items.len())));
    }
    let weir = app.weir.clone();
    // Each element is its own operation (its steps run; a refusal rolls back
    // only it), answered in order; they share commits.
    let results = blocking(move || {
        Ok(weir
            .pipeline()
            .create_many(caller.who(), &table, items)
            .into_iter()
            .map(|created| match created {
                Ok(rec) => json!({"status": 201, "record": rec.to_json()}),
                Err(e) => {
                    let ApiError(status, mut body) = ApiError::from(e);
                    body["status"] = json!(status.as_u16());
                    body
                }
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(json!({"value": results})))
}

#[utoipa::path(get, path = "/api/data/{table}", params(("table" = String, Path), ("$filter" = Option<String>, Query), ("$select" = Option<String>, Query), ("$top" = Option<usize>, Query), ("$skip" = Option<usize>, Query), ("$orderby" = Option<String>, Query)),
    responses((status = 200, description = "The matching records", body = RecordList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn query_records(State(app): State<App>, Path(table): Path<String>, StrictQuery(q): StrictQuery) -> ApiResult<Json<Json_>> {
    let filter = q.get("$filter").cloned();
    let top = number_param(&q, "$top")?;
    let skip = number_param(&q, "$skip")?.unwrap_or(0);
    let order = crate::store::records::parse_orderby(q.get("$orderby").map(String::as_str).unwrap_or("")).map_err(ApiError::from)?;
    let select: Option<Vec<String>> = q.get("$select").map(|s| s.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect());
    let weir = app.weir.clone();
    let (rows, def) = blocking(move || {
        let rows = weir.query_page(&table, filter.as_deref(), &order, skip, top)?;
        let def = weir.pool().with_conn(|c| crate::store::records::require_table(c, &table))?;
        Ok((rows, def))
    })
    .await?;
    if let Some(cols) = &select {
        for c in cols {
            if def.kind(c).is_none() {
                return Err(ApiError::from(def.unknown_column(c)));
            }
        }
    }
    let value: Vec<Json_> = rows
        .iter()
        .map(|r| {
            let mut j = r.to_json();
            if let (Some(cols), Json_::Object(m)) = (&select, &mut j) {
                m.retain(|k, _| k == "id" || cols.contains(k));
            }
            j
        })
        .collect();
    Ok(Json(json!({"value": value})))
}

#[utoipa::path(get, path = "/api/data/{table}/{id}", params(("table" = String, Path), ("id" = String, Path)), responses((status = 200, body = Record), (status = 404, body = ErrorBody)))]
async fn get_record(State(app): State<App>, Path((table, id)): Path<(String, String)>) -> ApiResult<Json<Json_>> {
    let weir = app.weir.clone();
    Ok(Json(blocking(move || weir.get(&table, &id)).await?.to_json()))
}

#[utoipa::path(patch, path = "/api/data/{table}/{id}", params(("table" = String, Path), ("id" = String, Path)), request_body(content = RecordFields, description = "The columns to change"),
    responses((status = 200, description = "The record as committed", body = Record), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_record(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path((table, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Json_>> {
    let json = parse_body(&body)?;
    Ok(Json(app.weir.pipeline().update_grouped(caller.who(), &table, id, json).await?.to_json()))
}

#[utoipa::path(delete, path = "/api/data/{table}/{id}", params(("table" = String, Path), ("id" = String, Path)), responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn delete_record(State(app): State<App>, Extension(caller): Extension<Caller>, Path((table, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    app.weir.pipeline().delete_grouped(caller.who(), &table, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A whole-number query parameter (at most 2^63 - 1, what the database
/// takes).
fn number_param(q: &HashMap<String, String>, key: &str) -> ApiResult<Option<usize>> {
    q.get(key)
        .map(|t| match t.parse::<u64>() {
            Ok(n) if n <= i64::MAX as u64 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            Ok(_) => Err(bad(format!("bad {key} {t:?}: at most {}", i64::MAX))),
            Err(_) => Err(bad(format!("bad {key} {t:?}: a whole number, 0 or more"))),
        })
        .transpose()
}

/// The query string's parameters, decoded strictly: a parameter whose
/// decoded bytes are not UTF-8 is refused (400 naming it) rather than read
/// with replacement characters (a filter would then mean something else).
struct StrictQuery(HashMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for StrictQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let decode = |text: &str| percent_encoding::percent_decode(text.replace('+', " ").as_bytes()).decode_utf8().map(|c| c.into_owned());
        let mut map = HashMap::new();
        for pair in parts.uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k).map_err(|_| bad(format!("the query parameter name {k:?} is not UTF-8 once decoded")))?;
            let value = decode(v).map_err(|_| bad(format!("the query parameter {key} is not UTF-8 once decoded ({v:?})")))?;
            map.insert(key, value);
        }
        Ok(StrictQuery(map))
    }
}

#[utoipa::path(get, path = "/api/jobs", params(("$filter" = Option<String>, Query, description = "weir's filter language over job fields, e.g. status eq 'Failed' and plugin eq 'notify'"),
        ("$top" = Option<usize>, Query, description = "page size, default 100, at most 5000"), ("$skip" = Option<usize>, Query)),
    responses((status = 200, description = "A page of jobs, newest first", body = JobPage), (status = 400, body = ErrorBody)))]
async fn list_jobs(State(app): State<App>, StrictQuery(q): StrictQuery) -> ApiResult<Json<JobPage>> {
    let filter = q.get("$filter").cloned();
    let top = number_param(&q, "$top")?.unwrap_or(100).min(crate::jobs::MAX_PAGE);
    let skip = number_param(&q, "$skip")?.unwrap_or(0);
    let weir = app.weir.clone();
    let f = filter.clone();
    let (value, count) = blocking(move || Ok((weir.list_jobs_page(f.as_deref(), top, skip)?, weir.count_jobs(f.as_deref())?))).await?;
    let next = (top > 0 && value.len() == top).then(|| {
        let filter = filter.map_or(String::new(), |f| format!("&$filter={}", url::form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>()));
        format!("/api/jobs?$top={top}&$skip={}{filter}", skip.saturating_add(top))
    });
    Ok(Json(JobPage { value, count, next }))
}

#[utoipa::path(get, path = "/api/jobs/groups", params(("by" = GroupBy, Query, description = "step, plugin, kind or owner"), ("$filter" = Option<String>, Query, description = "only the jobs this filter selects")),
    responses((status = 200, description = "The groups, largest first, each by status", body = JobGroups), (status = 400, body = ErrorBody)))]
async fn job_groups(State(app): State<App>, StrictQuery(q): StrictQuery) -> ApiResult<Json<JobGroups>> {
    let by = q
        .get("by")
        .and_then(|b| serde_json::from_value::<GroupBy>(Json_::String(b.clone())).ok())
        .ok_or_else(|| bad(format!("bad by {:?}: group jobs by step, plugin, kind or owner", q.get("by"))))?;
    let filter = q.get("$filter").cloned();
    let weir = app.weir.clone();
    let value = blocking(move || weir.job_groups(by, filter.as_deref())).await?;
    Ok(Json(JobGroups { by, value }))
}

#[utoipa::path(post, path = "/api/jobs/bulk", request_body(content = BulkRequest),
    responses((status = 200, description = "What the action did (with dry_run: how many jobs it would act on)", body = BulkOutcome), (status = 400, body = ErrorBody)))]
async fn bulk_jobs(State(app): State<App>, body: Bytes) -> ApiResult<Json<BulkOutcome>> {
    let req: BulkRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "bad bulk action: {e}; send {{\"action\": \"cancel|pause|resume|retry|delete|postpone|run-now|priority\", \"filter\": EXPR, \"until\": TIME (postpone), \"priority\": 0-9 (priority), \"dry_run\": BOOL, \"through\": ID}}"
        ))
    })?;
    let action = req.action.action(req.until.as_deref(), req.priority.as_deref())?;
    let weir = app.weir.clone();
    Ok(Json(blocking(move || weir.bulk_jobs(&req.filter, action, req.dry_run, req.through.as_deref())).await?))
}

#[utoipa::path(get, path = "/api/schedules", responses((status = 200, description = "Scheduled steps with their next runs", body = ScheduleList)))]
async fn list_schedules(State(app): State<App>) -> ApiResult<Json<ScheduleList>> {
    let weir = app.weir.clone();
    Ok(Json(ScheduleList { value: blocking(move || weir.schedules()).await? }))
}

#[utoipa::path(get, path = "/api/jobs/{id}", params(("id" = String, Path)), responses((status = 200, description = "The job with its input, attempt history and callback delivery", body = JobView), (status = 404, body = ErrorBody)))]
async fn get_job(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    let weir = app.weir.clone();
    Ok(Json(blocking(move || weir.show_job(&id)).await?))
}

#[utoipa::path(delete, path = "/api/jobs/{id}", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted with its attempts"), (status = 404, body = ErrorBody), (status = 409, description = "Not completed", body = ErrorBody)))]
async fn delete_job(State(app): State<App>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let weir = app.weir.clone();
    blocking(move || weir.delete_job(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/jobs/{id}/{action}", params(("id" = String, Path), ("action" = String, Path, description = "cancel and pause (body {\"cascade\": true}: its unfinished children too), resume, retry (body {\"version\": N|\"current\"} to run another version), retry-current, run-now, postpone (body {\"until\": TIME}, earlier or later than before) or priority (body {\"priority\": 0-9|low|normal|high})")),
    request_body(content = Option<JobActionRequest>, description = "postpone: until; priority: priority; retry: version (optional); the other actions: none"),
    responses((status = 200, description = "The job after the action", body = JobView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "Illegal transition", body = ErrorBody)))]
async fn job_action(State(app): State<App>, Path((id, action)): Path<(String, String)>, body: Bytes) -> ApiResult<Json<JobView>> {
    let no_such = || {
        ApiError(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no job action {action:?}: use cancel, pause, resume, retry, run-now, postpone or priority (DELETE /api/jobs/{{id}} deletes)")}),
        )
    };
    let verb = <crate::BulkVerb as clap::ValueEnum>::from_str(&action, false).map_err(|_| no_such())?;
    // Only postpone, priority and retry (its version) read a body; the others take any.
    let reads_body = matches!(verb, crate::BulkVerb::Postpone | crate::BulkVerb::Priority)
        || (matches!(verb, crate::BulkVerb::Retry | crate::BulkVerb::Cancel | crate::BulkVerb::Pause) && !body.is_empty());
    let req = if reads_body {
        serde_json::from_slice::<JobActionRequest>(&body).map_err(|e| {
            bad(format!(
                "{action} needs {{\"until\": TIME}} (postpone), {{\"priority\": 0-9|low|normal|high}} (priority); retry takes {{\"version\": N|\"current\"}}, cancel and pause {{\"cascade\": true}}: {e}"
            ))
        })?
    } else {
        JobActionRequest::default()
    };
    // Delete has its own route (DELETE /api/jobs/{id}).
    let crate::BulkAction::Job(mut action) = verb.action(req.until.as_deref(), req.priority.as_deref()).map_err(ApiError::from)? else { return Err(no_such()) };
    if let (crate::JobAction::Retry, Some(v)) = (action, &req.version) {
        action = crate::JobAction::RetryOn(crate::jobs::control::VersionPick::parse(v)?);
    }
    let weir = app.weir.clone();
    if req.cascade {
        // The job after the action lists its children with their new statuses.
        return Ok(Json(blocking(move || weir.control_tree(&id, action).and_then(|_| weir.show_job(&id))).await?));
    }
    Ok(Json(blocking(move || weir.control_job(&id, action)).await?))
}

#[utoipa::path(post, path = "/api/background", request_body(content = BackgroundRequest),
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and body within the window (serve --idempotency-window, 24 h) answer the first job (200); another body with the key is refused (409)")),
    responses((status = 202, description = "Accepted; Location is the job", body = Accepted), (status = 200, description = "An earlier request with this Idempotency-Key made the job", body = Accepted),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "The Idempotency-Key was used for another request", body = ErrorBody)))]
async fn submit_background(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, HeaderMap, Json<Accepted>)> {
    let b: BackgroundRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "bad background operation: {e}; send {{\"plugin\": NAME, \"input\": JSON, \"grants\": [\"TABLE:read|write\"], \"callback\": URL, \"at\": TIME, \"max_attempts\": N, \"timeout_ms\": N}}"
        ))
    })?;
    // A caller cannot grant a plug-in more than they hold.
    caller.require_grants(&b.grants)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k =
                v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).ok_or_else(|| bad("Idempotency-Key must be 1 to 255 visible ASCII characters"))?;
            Some(crate::jobs::idempotency::Idempotency {
                caller: caller.user.clone(),
                key: k.to_string(),
                fingerprint: b.fingerprint(),
                window_ms: app.config.idempotency_window_ms,
            })
        }
    };
    let req = b.into_background(&caller.acting_as, Some(&caller.user), app.config.callback_hosts.clone())?;
    let weir = app.weir.clone();
    let submitted = blocking(move || match key {
        Some(k) => weir.submit_background_once(&req, &k),
        None => weir.submit_background(&req).map(|id| crate::Submitted { id, replayed: false }),
    })
    .await?;
    let location = format!("/api/jobs/{}", submitted.id);
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    let status = if submitted.replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, h, Json(Accepted { id: submitted.id, location })))
}

#[utoipa::path(get, path = "/api/plugins", responses((status = 200, description = "Plug-in versions", body = PluginList)))]
async fn list_plugins(State(app): State<App>) -> ApiResult<Json<PluginList>> {
    let weir = app.weir.clone();
    Ok(Json(PluginList { value: blocking(move || weir.list_plugins()).await? }))
}

#[utoipa::path(post, path = "/api/plugins", params(("name" = String, Query)), request_body(content = Wasm, content_type = "application/wasm"),
    responses((status = 201, description = "The stored version", body = PluginRow), (status = 400, description = "Not a component, or no weir world", body = ErrorBody)))]
async fn upload_plugin(State(app): State<App>, StrictQuery(q): StrictQuery, body: Bytes) -> ApiResult<(StatusCode, Json<PluginRow>)> {
    let name = q.get("name").cloned().ok_or_else(|| bad("give the plug-in's name: POST /api/plugins?name=NAME with the component as the body"))?;
    let weir = app.weir.clone();
    Ok((StatusCode::CREATED, Json(blocking(move || weir.add_plugin(&name, &body)).await?)))
}

#[utoipa::path(get, path = "/api/steps", responses((status = 200, description = "The steps with their health; steps whose stored spec cannot be read are listed apart", body = StepList)))]
async fn list_steps(State(app): State<App>) -> ApiResult<Json<StepList>> {
    let weir = app.weir.clone();
    let (steps, unreadable) = blocking(move || {
        let listing = weir.list_steps()?;
        Ok((weir.steps_with_health(&listing.steps)?, listing.unreadable))
    })
    .await?;
    Ok(Json(StepList { value: steps, unreadable }))
}

#[utoipa::path(patch, path = "/api/steps/{name}", params(("name" = String, Path)),
    request_body(content = StepUpdate, description = "Any of rank, config, when (\"\" removes it), filter, fuel, timeout_ms, max_attempts, backoff_ms, grants (replaces them)"),
    responses((status = 200, description = "The step as changed", body = Step), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_step(State(app): State<App>, Extension(caller): Extension<Caller>, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Step>> {
    let change: crate::steps::StepUpdate = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "bad step change: {e}; send any of rank, config, when, filter, fuel, timeout_ms, max_attempts, backoff_ms, grants (the trigger and plug-in cannot change: remove and add the step)"
        ))
    })?;
    may_manage_step(&app, &caller, &name).await?;
    if let Some(grants) = &change.grants {
        caller.require_grants(grants)?;
    }
    let weir = app.weir.clone();
    Ok(Json(blocking(move || weir.update_step(&name, &change)).await?))
}

#[utoipa::path(delete, path = "/api/steps/{name}", params(("name" = String, Path)), responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody)))]
async fn remove_step(State(app): State<App>, Extension(caller): Extension<Caller>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    may_manage_step(&app, &caller, &name).await?;
    let weir = app.weir.clone();
    blocking(move || weir.remove_step(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/steps/{name}/{action}", params(("name" = String, Path), ("action" = String, Path, description = "enable, disable, or release (end a hold of its failure breaker now)")),
    responses((status = 200, body = StepEnabled), (status = 404, body = ErrorBody)))]
async fn step_action(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path((name, action)): Path<(String, String)>,
) -> ApiResult<Json<StepEnabled>> {
    // An author steers only the steps on their tables; an operator any.
    if caller.role == crate::access::Role::Author {
        may_manage_step(&app, &caller, &name).await?;
    }
    let weir = app.weir.clone();
    let n = name.clone();
    match action.as_str() {
        "enable" | "disable" => {
            let enabled = action == "enable";
            blocking(move || weir.set_step_enabled(&n, enabled)).await?;
            Ok(Json(StepEnabled { step: name, enabled: Some(enabled), released: None }))
        }
        "release" => {
            let released = blocking(move || weir.release_step(&n)).await?;
            Ok(Json(StepEnabled { step: name, enabled: None, released: Some(released) }))
        }
        other => Err(ApiError(StatusCode::NOT_FOUND, json!({"error": format!("no step action {other:?}: use enable, disable or release")}))),
    }
}

#[utoipa::path(get, path = "/api/queues",
    responses((status = 200, description = "Every queue: ready, due, running and suspended jobs, its limit, its oldest due job, the live nodes serving it", body = QueueList)))]
async fn list_queues(State(app): State<App>) -> ApiResult<Json<QueueList>> {
    let weir = app.weir.clone();
    Ok(Json(QueueList { value: blocking(move || weir.queues()).await? }))
}

#[utoipa::path(patch, path = "/api/queues/{name}", params(("name" = String, Path)), request_body(content = QueueSettings),
    responses((status = 200, body = QueueSettings), (status = 400, body = ErrorBody)))]
async fn set_queue(State(app): State<App>, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<QueueSettings>> {
    let settings: QueueSettings = serde_json::from_slice(&body).map_err(|e| bad(format!("a queue's settings are {{\"max_running\": N or null}}: {e}")))?;
    let weir = app.weir.clone();
    let max = settings.max_running;
    blocking(move || weir.set_queue_limit(&name, max)).await?;
    Ok(Json(settings))
}

#[utoipa::path(get, path = "/api/nodes", responses((status = 200, description = "Every node seen in the last day", body = NodeList)))]
async fn list_nodes(State(app): State<App>) -> ApiResult<Json<NodeList>> {
    let weir = app.weir.clone();
    Ok(Json(NodeList { value: blocking(move || weir.nodes()).await? }))
}

#[utoipa::path(post, path = "/api/steps", request_body(content = StepRequest, description = "A step: {\"name\", \"plugin\"} and either {\"schedule\": CRON} or {\"message\", \"table\", \"stage\"}; any other field of a step as `weir step list --json` shows them, with the CLI's defaults (a schedule implies mode async, otherwise sync; rank 1)"),
    responses((status = 201, description = "The stored step", body = Step), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_step(State(app): State<App>, Extension(caller): Extension<Caller>, body: Bytes) -> ApiResult<(StatusCode, Json<Step>)> {
    let req: StepRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "bad step: {e}; send {{\"name\": NAME, \"plugin\": PLUGIN}} with either \"schedule\" or \"message\", \"table\" and \"stage\", and any other field as `weir step list --json` shows them"
        ))
    })?;
    // An author registers steps on the tables they hold privileges on, and
    // grants a plug-in no more than they hold.
    if let Some(table) = &req.table {
        caller.require_some_on(table)?;
    }
    caller.require_grants(&req.grants)?;
    let weir = app.weir.clone();
    Ok((StatusCode::CREATED, Json(blocking(move || weir.register_step(req)).await?)))
}

/// Refuses an author a step on a table they hold no privilege on.
async fn may_manage_step(app: &App, caller: &Caller, name: &str) -> ApiResult<()> {
    if caller.role == crate::access::Role::Admin {
        return Ok(());
    }
    let weir = app.weir.clone();
    let listing = blocking(move || weir.list_steps()).await?;
    if let Some(table) = listing.steps.iter().find(|s| s.name == name).and_then(|s| s.table.as_deref()) {
        caller.require_some_on(table)?;
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/tables", responses((status = 200, body = TableList)))]
async fn list_tables(State(app): State<App>) -> ApiResult<Json<TableList>> {
    let weir = app.weir.clone();
    Ok(Json(TableList { value: blocking(move || weir.list_tables()).await? }))
}

#[utoipa::path(post, path = "/api/tables", request_body(content = TableRequest), responses((status = 201, body = TableDef), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_table(State(app): State<App>, body: Bytes) -> ApiResult<(StatusCode, Json<TableDef>)> {
    let b = parse_body(&body)?;
    let name = b["name"].as_str().ok_or_else(|| bad("give \"name\" (a string)"))?.to_string();
    let shape = "\"columns\" is a list of {\"name\": COL, \"type\": TYPE}";
    let cols: Vec<(String, String)> = match &b["columns"] {
        Json_::Null => vec![],
        Json_::Array(a) => a
            .iter()
            .map(|c| match (c["name"].as_str(), c["type"].as_str()) {
                (Some(n), Some(t)) => Ok((n.to_string(), t.to_string())),
                _ => Err(bad(format!("bad column {c}: {shape}"))),
            })
            .collect::<ApiResult<_>>()?,
        other => return Err(bad(format!("bad \"columns\" {other}: {shape}"))),
    };
    let weir = app.weir.clone();
    let def = blocking(move || {
        let cols: Vec<(&str, &str)> = cols.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        weir.create_table(&name, &cols)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(def)))
}

#[utoipa::path(delete, path = "/api/plugins/{name}", params(("name" = String, Path), ("version" = Option<i64>, Query, description = "one version; all when absent")),
    responses((status = 200, body = PluginRemoved), (status = 404, body = ErrorBody), (status = 409, description = "a step or an unfinished job uses it", body = ErrorBody)))]
async fn remove_plugin(State(app): State<App>, Path(name): Path<String>, StrictQuery(q): StrictQuery) -> ApiResult<Json<PluginRemoved>> {
    let version = q.get("version").map(|v| v.parse::<i64>().map_err(|_| bad(format!("bad version {v:?}: a whole number")))).transpose()?;
    let weir = app.weir.clone();
    let n = name.clone();
    let removed = blocking(move || weir.remove_plugin(&n, version)).await?;
    Ok(Json(PluginRemoved { plugin: name, version, removed }))
}

#[utoipa::path(post, path = "/api/plugins/{name}/rollback", params(("name" = String, Path)),
    responses((status = 200, body = PluginCurrent), (status = 404, body = ErrorBody), (status = 409, description = "no earlier version", body = ErrorBody)))]
async fn rollback_plugin(State(app): State<App>, Path(name): Path<String>) -> ApiResult<Json<PluginCurrent>> {
    let weir = app.weir.clone();
    let n = name.clone();
    let current = blocking(move || weir.rollback_plugin(&n)).await?;
    Ok(Json(PluginCurrent { plugin: name, current }))
}

#[utoipa::path(get, path = "/api/traces", params(("$filter" = Option<String>, Query, description = "e.g. plugin eq 'credit-check' and outcome ne 'ok'"), ("$top" = Option<usize>, Query)),
    responses((status = 200, description = "Traces, newest first", body = TraceList), (status = 400, body = ErrorBody)))]
async fn list_traces(State(app): State<App>, StrictQuery(q): StrictQuery) -> ApiResult<Json<TraceList>> {
    let filter = q.get("$filter").cloned();
    let top = number_param(&q, "$top")?.unwrap_or(100);
    let weir = app.weir.clone();
    Ok(Json(TraceList { value: blocking(move || weir.list_traces(filter.as_deref(), top)).await? }))
}

#[utoipa::path(get, path = "/api/traces/{id}", params(("id" = String, Path)), responses((status = 200, body = TraceView), (status = 404, body = ErrorBody)))]
async fn get_trace(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<TraceView>> {
    let weir = app.weir.clone();
    Ok(Json(blocking(move || weir.show_trace(&id)).await?))
}

#[utoipa::path(get, path = "/api/me", responses((status = 200, description = "Who the caller is, their role and what it allows", body = Me)))]
async fn me(State(app): State<App>, Extension(caller): Extension<Caller>, headers: HeaderMap) -> Json<Me> {
    let via = match (&caller.token, headers.get(header::AUTHORIZATION)) {
        (Some(_), _) => "token",
        (None, None) => "loopback",
        (None, Some(v)) if v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).is_some_and(crate::sso::Jwt::looks_like) && app.config.jwt.is_some() => {
            "jwt"
        }
        (None, Some(_)) => "server-token",
    };
    Json(Me { user: caller.user.clone(), role: caller.role, acting_as: caller.acting_as.clone(), may: caller.may(), tables: caller.tables(), via })
}

#[utoipa::path(get, path = "/api/tokens", responses((status = 200, description = "Every token, never its secret", body = TokenList)))]
async fn list_tokens(State(app): State<App>) -> ApiResult<Json<TokenList>> {
    let weir = app.weir.clone();
    Ok(Json(TokenList { value: blocking(move || weir.list_tokens()).await? }))
}

#[utoipa::path(post, path = "/api/tokens", request_body(content = TokenRequest),
    responses((status = 201, description = "The token: its secret is in `token`, shown once", body = crate::access::NewToken), (status = 400, body = ErrorBody)))]
async fn create_token(State(app): State<App>, Extension(caller): Extension<Caller>, body: Bytes) -> ApiResult<(StatusCode, Json<crate::access::NewToken>)> {
    let b: TokenRequest = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("bad token request: {e}; send {{\"user\": NAME, \"role\": \"admin|author|operator|reader\", \"expires\": \"90d\", \"name\": LABEL, \"rate\": \"50/s\"}}")))?;
    let expires_at = match &b.expires {
        Some(d) => {
            Some(crate::time::now_ms() + i64::try_from(crate::limits::duration(d, &crate::limits::AGE).map_err(bad)?.as_millis()).unwrap_or(i64::MAX / 2))
        }
        None => None,
    };
    let req = crate::access::TokenRequest {
        user: b.user,
        role: b.role,
        label: b.name,
        expires_at,
        rate_milli: b.rate.as_deref().map(crate::jobs::claims::parse_rate).transpose()?,
    };
    let weir = app.weir.clone();
    Ok((StatusCode::CREATED, Json(blocking(move || weir.create_token(&req, &caller.user)).await?)))
}

#[utoipa::path(post, path = "/api/tokens/{id}/revoke", params(("id" = String, Path)),
    responses((status = 200, description = "Revoked (false: it was already)", body = TokenRevoked), (status = 404, body = ErrorBody)))]
async fn revoke_token(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<TokenRevoked>> {
    let weir = app.weir.clone();
    let revoked = blocking({
        let id = id.clone();
        move || weir.revoke_token(&id)
    })
    .await?;
    Ok(Json(TokenRevoked { token: id, revoked }))
}

#[utoipa::path(get, path = "/api/grants", responses((status = 200, description = "Every privilege granted to users and roles", body = GrantList)))]
async fn list_grants(State(app): State<App>) -> ApiResult<Json<GrantList>> {
    let weir = app.weir.clone();
    Ok(Json(GrantList { value: blocking(move || weir.grants()).await? }))
}

#[utoipa::path(post, path = "/api/grants", request_body(content = GrantRequest),
    responses((status = 200, description = "Every privilege granted, after the change", body = GrantList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn change_grants(State(app): State<App>, Extension(caller): Extension<Caller>, body: Bytes) -> ApiResult<Json<GrantList>> {
    let b: GrantRequest = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "bad grant: {e}; send {{\"who\": USER|ROLE, \"privileges\": \"create,read,write,delete\"|\"impersonate\", \"table\": TABLE, \"revoke\": BOOL}}"
        ))
    })?;
    let who = crate::access::Subject::parse(&b.who)?;
    let grant = crate::access::Grant::parse(&b.privileges, b.table.as_deref())?;
    let weir = app.weir.clone();
    let value = blocking(move || {
        if b.revoke {
            weir.revoke(&who, &grant)?;
        } else {
            weir.grant(&who, &grant, &caller.user)?;
        }
        weir.grants()
    })
    .await?;
    Ok(Json(GrantList { value }))
}

#[utoipa::path(get, path = "/api/audit", params(("$filter" = Option<String>, Query, description = "The filter language over actor, as_user, via, action, target, outcome, id and at"), ("$top" = Option<usize>, Query)),
    responses((status = 200, description = "The audit log, newest first", body = AuditList)))]
async fn list_audit(State(app): State<App>, StrictQuery(q): StrictQuery) -> ApiResult<Json<AuditList>> {
    let top = number_param(&q, "$top")?.unwrap_or(100).min(crate::jobs::MAX_PAGE);
    let filter = q.get("$filter").cloned();
    let weir = app.weir.clone();
    Ok(Json(AuditList { value: blocking(move || weir.audit_log(filter.as_deref(), top)).await? }))
}

#[utoipa::path(get, path = "/api/users", responses((status = 200, body = UserList)))]
async fn list_users(State(app): State<App>) -> ApiResult<Json<UserList>> {
    let weir = app.weir.clone();
    Ok(Json(UserList { value: blocking(move || weir.list_users()).await? }))
}

#[utoipa::path(post, path = "/api/users", request_body(content = UserRequest), responses((status = 201, body = UserChanged), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_user(State(app): State<App>, body: Bytes) -> ApiResult<(StatusCode, Json<UserChanged>)> {
    let UserRequest { name } = serde_json::from_slice(&body).map_err(|e| bad(format!("give {{\"name\": NAME}}: {e}")))?;
    let weir = app.weir.clone();
    let n = name.clone();
    blocking(move || weir.add_user(&n)).await?;
    Ok((StatusCode::CREATED, Json(UserChanged { user: name, active: true })))
}

#[utoipa::path(post, path = "/api/users/{name}/{action}", params(("name" = String, Path), ("action" = String, Path, description = "activate or deactivate")),
    responses((status = 200, body = UserChanged), (status = 404, body = ErrorBody)))]
async fn user_action(State(app): State<App>, Path((name, action)): Path<(String, String)>) -> ApiResult<Json<UserChanged>> {
    let active = match action.as_str() {
        "activate" => true,
        "deactivate" => false,
        other => return Err(ApiError(StatusCode::NOT_FOUND, json!({"error": format!("no user action {other:?}: use activate or deactivate")}))),
    };
    let weir = app.weir.clone();
    let n = name.clone();
    blocking(move || if active { weir.activate_user(&n) } else { weir.deactivate_user(&n) }).await?;
    Ok(Json(UserChanged { user: name, active }))
}

#[utoipa::path(post, path = "/api/jobs/reassign", request_body(content = ReassignRequest),
    responses((status = 200, body = Reassigned), (status = 404, body = ErrorBody), (status = 409, description = "the new owner is deactivated", body = ErrorBody)))]
async fn reassign_jobs(State(app): State<App>, body: Bytes) -> ApiResult<Json<Reassigned>> {
    let ReassignRequest { from, to } = serde_json::from_slice(&body).map_err(|e| bad(format!("give {{\"from\": USER, \"to\": USER}}: {e}")))?;
    let weir = app.weir.clone();
    let (f, t) = (from.clone(), to.clone());
    let reassigned = blocking(move || weir.reassign_jobs(&f, &t)).await?;
    Ok(Json(Reassigned { from, to, reassigned }))
}

/// Runs `weir serve`: the API, the worker pool (schedules and retention
/// included) until SIGTERM/Ctrl-C; then stops accepting, stops claiming, lets
/// running jobs finish and closes the database.
pub async fn serve(weir: Arc<Weir>, listen: std::net::SocketAddr, config: ApiConfig, work: crate::worker::WorkOptions) -> crate::error::Result<()> {
    if config.token.is_none() && !listen.ip().is_loopback() {
        return Err(Error::invalid(format!("refusing to listen on {listen} without a token: set --token or WEIR_TOKEN, or listen on 127.0.0.1")));
    }
    crate::telemetry::install();
    if config.callback_hosts.is_any() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "background callbacks may go to any host this server can reach; set --callback-hosts to limit them");
    }
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| Error::Internal(format!("cannot listen on {listen}: {e}")))?;
    let local = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    crate::telemetry::say(&format!("weir serving on http://{local} (dashboard at /, API at /api, OpenAPI at /api/openapi.json)"));
    serve_on(listener, weir, config, work, crate::signals::shutdown_signal()).await
}

/// Serves the API and runs the worker pool on `listener` until `shutdown`
/// resolves, then stops gracefully (what `weir serve` runs; the benchmark
/// runs it on a loopback port of its own).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    weir: Arc<Weir>,
    config: ApiConfig,
    work: crate::worker::WorkOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::error::Result<()> {
    let local = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    let config = ApiConfig { listen_port: Some(local.port()), ..config };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let pool = {
        let weir = weir.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { weir.work(work, stopped()).await })
    };
    let events: Arc<events::Events> = Arc::default();
    let app = router(weir, config, events.clone());
    let server = axum::serve(JsonParseErrorsListener(listener), app).with_graceful_shutdown(stopped());
    let signal = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests or jobs; running jobs finish");
        // Open event streams end: a graceful stop waits for connections.
        events.close();
        let _ = stop_tx.send(true);
    });
    let served = server.await;
    signal.abort();
    let stats = pool.await.map_err(|e| Error::Internal(format!("the worker pool failed: {e}")))??;
    tracing::info!("worker pool stopped after {} attempts", stats.attempts);
    served.map_err(|e| Error::Internal(format!("the HTTP server failed: {e}")))
}

// ------------------------------------------------ hyper's answers, in JSON

/// The server's listener: each connection is wrapped in [`JsonParseErrors`].
struct JsonParseErrorsListener(tokio::net::TcpListener);

impl axum::serve::Listener for JsonParseErrorsListener {
    type Io = JsonParseErrors<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (JsonParseErrors { inner: io, pending: Vec::new(), at: 0 }, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection whose automatic answers from hyper get the API's JSON shape.
///
/// hyper answers a request it cannot parse (a URI over 64 KiB: 414, headers
/// over its limits: 431, a malformed request line or header: 400) by itself,
/// with an empty body, before any middleware sees it. Those answers are the
/// only responses with `content-length: 0` and one of those statuses (the
/// API's own errors always carry a JSON body), so this wrapper recognises
/// them on the way out and writes the same status with a JSON body that says
/// what to do, then lets hyper close the connection as it would have.
struct JsonParseErrors<T> {
    inner: T,
    /// A rewritten answer still being written, from `at`.
    pending: Vec<u8>,
    at: usize,
}

impl<T: tokio::io::AsyncWrite + Unpin> JsonParseErrors<T> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.at < self.pending.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.at..])) {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => self.at += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.pending.clear();
        self.at = 0;
        Poll::Ready(Ok(()))
    }
}

/// The JSON version of one of hyper's automatic answers, if `head` is one.
fn json_auto_reply(head: &[u8]) -> Option<Vec<u8>> {
    const AUTO: [(&[u8], &str); 3] = [
        (b"HTTP/1.1 400 ", "the request is not valid HTTP (a malformed request line or header)"),
        (b"HTTP/1.1 414 ", "the request's URL is too long (at most 64 KiB); send large filters in fewer words or page with $top and $skip"),
        (b"HTTP/1.1 431 ", "the request's headers are too large or too many (at most 100 headers, about 400 KiB in all)"),
    ];
    let (_, message) = AUTO.iter().find(|(prefix, _)| head.starts_with(prefix))?;
    let head = std::str::from_utf8(head).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?;
    let rest: Vec<&str> = lines.collect();
    if !rest.iter().any(|l| l.eq_ignore_ascii_case("content-length: 0")) {
        return None;
    }
    let body = json!({"error": message}).to_string();
    let mut out = format!("{status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for line in rest {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if name != "content-length" && name != "connection" {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for JsonParseErrors<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for JsonParseErrors<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        if let Some(reply) = json_auto_reply(buf) {
            this.pending = reply;
            // Written from hyper's point of view; flush and shutdown finish it.
            if let Poll::Ready(Err(e)) = this.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost:8080", "127.0.0.1:8080", "127.1.2.3:8080", "[::1]:8080"] {
            assert!(is_loopback_host(h, Some(8080)), "{h}");
        }
        for h in ["attacker.example:8080", "localhost:8081", "localhost", "10.0.0.1:8080", "[::1]", "[::1", "localhost.attacker.example:8080", "0.0.0.0:8080"] {
            assert!(!is_loopback_host(h, Some(8080)), "{h}");
        }
        assert!(is_loopback_host("localhost", Some(80)));
    }

    #[test]
    fn hypers_empty_answers_become_json() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 26 Nov 2026 07:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_auto_reply(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("date: Thu"));
        assert!(serde_json::from_str::<Json_>(body).unwrap()["error"].as_str().unwrap().contains("headers"));
        // The API's own errors and other statuses pass untouched.
        assert!(json_auto_reply(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n").is_none());
        assert!(json_auto_reply(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
