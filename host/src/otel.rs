//! OpenTelemetry traces: owns exporting spans over OTLP (HTTP/protobuf) and
//! the W3C trace context weir carries from one part to the next.
//!
//! The span tree of an operation: the HTTP request (its parent taken from the
//! caller's `traceparent`) → the operation (create/update/delete of a record;
//! a plug-in's nested operation is a child of the call that asked for it) →
//! each sync step's plug-in call (plug-in, version, fuel, outcome) → each job
//! it enqueues. The enqueue span's context is kept in the job's context
//! (`traceparent`), so every attempt of the job, however much later, is a span
//! of that trace, child of and linked to the enqueue; its outbound HTTP
//! requests carry the attempt's `traceparent`, and so do callbacks (a span of
//! their own under the job's enqueue).
//!
//! Off by default: it starts when `--otlp-endpoint` or one of the standard
//! `OTEL_EXPORTER_OTLP_*ENDPOINT` variables is set (and neither
//! `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says otherwise);
//! the other standard variables (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`) are the
//! SDK's. When off, every function here returns after one atomic load and
//! nothing is allocated.
//!
//! Owns nothing of the database, the pipeline or the runtime: callers hand it
//! names and numbers and carry the [`Cx`] it gives them (the runtime gets a
//! plain `traceparent` string, never this module).

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Link, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};

static ON: AtomicBool = AtomicBool::new(false);
static TRACER: OnceLock<Tracer> = OnceLock::new();

/// Whether spans are being exported.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The exporter while it runs: dropping it sends what is still buffered
/// (within a few seconds) and stops it.
pub struct Exporting(SdkTracerProvider);

impl Drop for Exporting {
    fn drop(&mut self) {
        ON.store(false, Ordering::Relaxed);
        if let Err(e) = self.0.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!("OpenTelemetry: the last spans could not be sent: {e}");
        }
    }
}

/// Where spans go, from `--otlp-endpoint` or the environment; `None` when
/// tracing is off.
fn configured(flag: Option<&str>) -> Option<Option<String>> {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none")) {
        return None;
    }
    if let Some(base) = flag.filter(|f| !f.trim().is_empty()) {
        // As OTEL_EXPORTER_OTLP_ENDPOINT: the collector's base URL.
        let base = base.trim().trim_end_matches('/');
        let url = if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") };
        return Some(Some(url));
    }
    (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()).then_some(None)
}

/// Starts exporting when configured (see the module's docs). An endpoint
/// that cannot be used is an error for the operator to fix, not a silent
/// run without traces.
pub fn init(flag: Option<&str>) -> Result<Option<Exporting>, String> {
    let Some(endpoint) = configured(flag) else { return Ok(None) };
    if std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")).is_ok_and(|p| p.starts_with("grpc")) {
        return Err(
            "weir exports OTLP over HTTP/protobuf only: give the collector's HTTP endpoint (usually port 4318) and unset OTEL_EXPORTER_OTLP_PROTOCOL=grpc"
                .into(),
        );
    }
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let mut exporter =
        opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(opentelemetry_otlp::Protocol::HttpBinary).with_http_client(UreqClient::new());
    if let Some(url) = &endpoint {
        exporter = exporter.with_endpoint(url.clone());
    }
    let exporter = exporter.build().map_err(|e| format!("the OpenTelemetry exporter cannot start: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("weir");
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let _ = TRACER.set(provider.tracer("weir"));
    ON.store(TRACER.get().is_some(), Ordering::Relaxed);
    Ok(Some(Exporting(provider)))
}

/// A trace context to carry across threads, queues and the database: empty
/// when tracing is off.
#[derive(Clone, Default, Debug)]
pub struct Cx(Option<Context>);

impl Cx {
    /// Makes this context the thread's current one until the guard drops.
    pub fn attach(&self) -> Option<opentelemetry::ContextGuard> {
        self.0.as_ref().map(|c| c.clone().attach())
    }

    /// Its span as a W3C `traceparent` header value.
    pub fn traceparent(&self) -> Option<String> {
        let cx = self.0.as_ref()?;
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
    }

    /// The context a `traceparent` value names (a job's enqueue, a caller's request).
    pub fn from_traceparent(traceparent: Option<&str>) -> Cx {
        if !enabled() {
            return Cx(None);
        }
        let mut carrier = std::collections::HashMap::new();
        if let Some(tp) = traceparent {
            carrier.insert("traceparent".to_string(), tp.to_string());
        }
        let cx = TraceContextPropagator::new().extract(&carrier);
        Cx(cx.span().span_context().is_valid().then_some(cx))
    }
}

/// The thread's current context (what a span started now would be a child of).
pub fn current() -> Cx {
    if !enabled() {
        return Cx(None);
    }
    Cx(Some(Context::current()))
}

/// A span being recorded; it ends when dropped. Empty when tracing is off.
#[derive(Default)]
pub struct Span(Option<Context>);

impl Span {
    /// Its context, for children started elsewhere.
    pub fn cx(&self) -> Cx {
        Cx(self.0.clone())
    }

    /// Its context, to be current while a future is polled
    /// (`opentelemetry::context::FutureExt::with_context`).
    pub fn context(&self) -> Option<Context> {
        self.0.clone()
    }

    /// Makes it the thread's current span until the guard drops.
    pub fn attach(&self) -> Option<opentelemetry::ContextGuard> {
        self.0.as_ref().map(|c| c.clone().attach())
    }

    /// Adds attributes (their values are only made when tracing is on).
    pub fn set(&self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(cx) = &self.0 {
            cx.span().set_attributes(attributes());
        }
    }

    /// Marks it failed, with what the caller was told.
    pub fn fail(&self, message: impl FnOnce() -> String) {
        if let Some(cx) = &self.0 {
            cx.span().set_status(Status::error(message()));
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

fn start(name: impl Into<Cow<'static, str>>, kind: SpanKind, parent: &Context, links: Vec<Link>, attributes: Vec<KeyValue>) -> Span {
    let Some(tracer) = TRACER.get() else { return Span(None) };
    let span = tracer.span_builder(name).with_kind(kind).with_links(links).with_attributes(attributes).start_with_context(tracer, parent);
    Span(Some(parent.with_span(span)))
}

/// An HTTP request served: a child of the caller's `traceparent`, if it sent one.
pub fn http_request(method: &str, route: &str, headers: &http::HeaderMap) -> Span {
    if !enabled() {
        return Span(None);
    }
    let parent = TraceContextPropagator::new().extract(&HeaderCarrier(headers));
    let attributes = vec![KeyValue::new("http.request.method", method.to_string()), KeyValue::new("http.route", route.to_string())];
    start(format!("{method} {route}"), SpanKind::Server, &parent, vec![], attributes)
}

/// An operation on a record, child of the current span.
pub fn operation(message: &str, table: &str, id: &str, depth: u32) -> Span {
    if !enabled() {
        return Span(None);
    }
    let attributes = vec![
        KeyValue::new("weir.message", message.to_string()),
        KeyValue::new("weir.table", table.to_string()),
        KeyValue::new("weir.record", id.to_string()),
        KeyValue::new("weir.depth", i64::from(depth)),
    ];
    start(format!("{message} {table}"), SpanKind::Internal, &Context::current(), vec![], attributes)
}

/// A sync step's plug-in call, child of the current span (its operation).
pub fn sync_call(step: &str, plugin: &str, version: i64, stage: &str) -> Span {
    if !enabled() {
        return Span(None);
    }
    let attributes = vec![
        KeyValue::new("weir.step", step.to_string()),
        KeyValue::new("weir.plugin", plugin.to_string()),
        KeyValue::new("weir.plugin.version", version),
        KeyValue::new("weir.stage", stage.to_string()),
        KeyValue::new("weir.mode", "sync"),
    ];
    start(format!("step {step}"), SpanKind::Internal, &Context::current(), vec![], attributes)
}

/// A job being enqueued, child of the current span: a span that ends at once,
/// whose `traceparent` the job keeps for its attempts.
pub fn enqueued(plugin: &str, step: Option<&str>, queue: &str) -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut attributes = vec![KeyValue::new("weir.plugin", plugin.to_string()), KeyValue::new("weir.queue", queue.to_string())];
    if let Some(step) = step {
        attributes.push(KeyValue::new("weir.step", step.to_string()));
    }
    let span = start(format!("enqueue {}", step.unwrap_or(plugin)), SpanKind::Producer, &Context::current(), vec![], attributes);
    span.cx().traceparent()
}

/// One attempt of a job: a child of (and linked to) the span that enqueued
/// it, when its trace is known; a trace of its own otherwise.
pub fn job_attempt(enqueued: Option<&str>, job: &str, plugin: &str, step: Option<&str>, attempt: u32) -> Span {
    if !enabled() {
        return Span(None);
    }
    let parent = Cx::from_traceparent(enqueued).0.unwrap_or_default();
    let links = match parent.span().span_context() {
        sc if sc.is_valid() => vec![Link::with_context(sc.clone())],
        _ => vec![],
    };
    let mut attributes = vec![
        KeyValue::new("weir.job.id", job.to_string()),
        KeyValue::new("weir.plugin", plugin.to_string()),
        KeyValue::new("weir.job.attempt", i64::from(attempt)),
        KeyValue::new("weir.mode", "async"),
    ];
    if let Some(step) = step {
        attributes.push(KeyValue::new("weir.step", step.to_string()));
    }
    start(format!("job {}", step.unwrap_or(plugin)), SpanKind::Consumer, &parent, links, attributes)
}

/// A callback delivery of a finished job, under the job's enqueue.
pub fn callback(enqueued: Option<&str>, job: &str) -> Span {
    if !enabled() {
        return Span(None);
    }
    let parent = Cx::from_traceparent(enqueued).0.unwrap_or_default();
    start("callback", SpanKind::Client, &parent, vec![], vec![KeyValue::new("weir.job.id", job.to_string())])
}

/// Reads `traceparent` (and `tracestate`) from request headers.
struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The exporter's HTTP client: ureq, the client weir already uses for
/// callbacks. It blocks, which is what the SDK's batch processor expects (it
/// exports from a thread of its own).
#[derive(Debug)]
struct UreqClient(ureq::Agent);

impl UreqClient {
    fn new() -> UreqClient {
        let config = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).http_status_as_error(false).max_redirects(0).build();
        UreqClient(config.into())
    }
}

/// The most of a collector's answer read (it is only ever a status).
const MAX_ANSWER: u64 = 1 << 20;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for UreqClient {
    async fn send_bytes(&self, request: http::Request<bytes::Bytes>) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let response = self.0.run(http::Request::from_parts(parts, body.to_vec()))?;
        let (parts, mut body) = response.into_parts();
        let bytes = body.with_config().limit(MAX_ANSWER).read_to_vec()?;
        Ok(http::Response::from_parts(parts, bytes::Bytes::from(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_a_base_url_and_the_environment_decides_without_it() {
        assert_eq!(configured(None), None, "off by default");
        assert_eq!(configured(Some("http://127.0.0.1:4318")), Some(Some("http://127.0.0.1:4318/v1/traces".into())));
        assert_eq!(configured(Some("http://c:4318/v1/traces/")), Some(Some("http://c:4318/v1/traces".into())));
        assert_eq!(current().traceparent(), None, "nothing is carried while off");
        assert!(enqueued("p", None, "default").is_none());
    }
}
