//! Telemetry: counters and histograms of operations, plug-in calls and jobs,
//! exported in Prometheus text format (`/metrics`, series named `weir_*`), and a
//! per-plug-in summary for the dashboard. Recording is cheap and lock-free on
//! the metrics side; it never touches the database.
//!
//! It also owns where weir's own log lines go ([`LogWriter`]) and the few
//! lines a service prints ([`say`]): neither may ever take the process down
//! when stderr or stdout cannot be written (a full disk, `2>/dev/full`, a
//! closed pipe): the line is dropped and counted in
//! `weir_log_write_failures_total`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static PLUGINS: Mutex<BTreeMap<String, PluginStat>> = Mutex::new(BTreeMap::new());
static LOG_WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Where log lines go: stderr, never failing. A line stderr does not take is
/// dropped and counted (tracing-subscriber would otherwise report the failure
/// with `eprintln!`, which panics when stderr is unwritable).
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().lock().write_all(buf).is_err() {
            LOG_WRITE_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// Log lines (and service messages) that could not be written.
pub fn log_write_failures() -> u64 {
    LOG_WRITE_FAILURES.load(Ordering::Relaxed)
}

/// Prints a line on stdout for whoever started the service (its address),
/// never failing: a line stdout does not take is dropped and counted.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
        LOG_WRITE_FAILURES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Installs the process-wide recorder (once); later calls are no-ops.
pub fn install() {
    HANDLE.get_or_init(|| {
        let buckets = [0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];
        PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets).ok().and_then(|b| b.install_recorder().ok())
    });
}

/// The recorded series in Prometheus text format (empty before [`install`]).
pub fn render() -> String {
    let mut out = HANDLE.get().and_then(|h| h.as_ref()).map(|h| h.render()).unwrap_or_default();
    out.push_str(&format!(
        "# HELP weir_log_write_failures_total Log lines dropped because stderr (or stdout) could not be written.\n\
         # TYPE weir_log_write_failures_total counter\nweir_log_write_failures_total {}\n",
        log_write_failures()
    ));
    out
}

/// One record operation through the pipeline ended.
pub fn operation(message: &str, outcome: &str) {
    counter!("weir_operations_total", "message" => message.to_string(), "outcome" => outcome.to_string()).increment(1);
}

/// One plug-in call ended (`outcome`: ok or an error code).
pub fn plugin_call(plugin: &str, mode: &'static str, outcome: &'static str, duration: Duration, fuel: u64) {
    counter!("weir_plugin_calls_total", "plugin" => plugin.to_string(), "mode" => mode, "outcome" => outcome).increment(1);
    histogram!("weir_plugin_call_duration_seconds", "plugin" => plugin.to_string(), "mode" => mode).record(duration.as_secs_f64());
    if fuel > 0 && fuel < u64::MAX / 2 {
        counter!("weir_plugin_fuel_used_total", "plugin" => plugin.to_string()).increment(fuel);
    }
    if let Ok(mut m) = PLUGINS.lock() {
        if !m.contains_key(plugin) {
            m.insert(plugin.to_string(), PluginStat { plugin: plugin.to_string(), ..PluginStat::default() });
        }
        let Some(s) = m.get_mut(plugin) else { return };
        s.calls += 1;
        if outcome != "ok" {
            s.failures += 1;
        }
        if fuel < u64::MAX / 2 {
            s.fuel += fuel;
        }
        s.total_ms += duration.as_secs_f64() * 1e3;
    }
}

/// An outbound HTTP request of a plug-in: counted by plug-in, host and
/// outcome (the status class, or why there was no answer), with its bytes.
/// A refused request's host is not a label (a guest could name endless hosts).
pub fn http_request(plugin: &str, request: &crate::runtime::HttpEvent) {
    let outcome: String = match request.outcome.as_bytes().first() {
        Some(c @ b'1'..=b'5') if request.outcome.len() == 3 => format!("{}xx", *c as char),
        _ => request.outcome.clone(),
    };
    let host = if request.outcome == "denied" { "(not granted)".to_string() } else { request.host.clone() };
    counter!("weir_http_requests_total", "plugin" => plugin.to_string(), "host" => host.clone(), "outcome" => outcome).increment(1);
    counter!("weir_http_bytes_total", "plugin" => plugin.to_string(), "host" => host.clone(), "direction" => "out").increment(request.bytes_out);
    counter!("weir_http_bytes_total", "plugin" => plugin.to_string(), "host" => host, "direction" => "in").increment(request.bytes_in);
}

/// A job attempt failed and will be retried.
pub fn job_retry() {
    counter!("weir_job_retries_total").increment(1);
}

/// Leases of dead workers were taken over.
pub fn leases_expired(n: u64) {
    if n > 0 {
        counter!("weir_leases_expired_total").increment(n);
    }
}

/// A job attempt finished with `outcome` (succeeded, failed, retry, wait, interrupted).
pub fn job_attempt(outcome: &str) {
    counter!("weir_job_attempts_total", "outcome" => outcome.to_string()).increment(1);
}

/// Calls, failures and fuel of one plug-in since this process started.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PluginStat {
    pub plugin: String,
    pub calls: u64,
    pub failures: u64,
    pub fuel: u64,
    #[serde(skip)]
    total_ms: f64,
}

impl PluginStat {
    pub fn mean_ms(&self) -> f64 {
        if self.calls == 0 { 0.0 } else { self.total_ms / self.calls as f64 }
    }
}

/// Per-plug-in figures, by name.
pub fn plugin_stats() -> Vec<PluginStat> {
    PLUGINS.lock().map(|m| m.values().cloned().collect()).unwrap_or_default()
}
