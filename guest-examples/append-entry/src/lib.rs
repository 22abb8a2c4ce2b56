//! append-entry: an async workflow that appends one `entry` record
//! `{source, attempt}` for the operation it runs for (`source` is the record's
//! id, or the correlation id of a background operation), then, as its step
//! config asks, keeps the CPU busy for `spin_ms` and fails transiently before
//! attempt `succeed_on`. A fixture for weir's attempt tests: however many
//! attempts run and whichever worker runs them, exactly one entry is kept.
//! Needs `--grant entry:write`.

use std::time::{Duration, Instant};

use weir_guest::records;
use weir_guest::types::{Context, Value};

weir_guest::bindings!("workflow");

use exports::weir::plugin::runner::{Guest, Step, WorkflowError};

struct AppendEntry;

impl Guest for AppendEntry {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        let config = weir_guest::json(&ctx.config);
        let source = if ctx.target.id.is_empty() { ctx.correlation_id.clone() } else { ctx.target.id.clone() };
        let fields = [weir_guest::text("source", source.as_str()), weir_guest::field("attempt", Value::Integer(i64::from(ctx.attempt)))];
        records::create("entry", &fields).map_err(|e| WorkflowError::Transient(format!("cannot append the entry: {e:?}")))?;
        let until = Instant::now() + Duration::from_millis(config["spin_ms"].as_u64().unwrap_or(0));
        let mut spins: u64 = 0;
        while Instant::now() < until {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        let succeed_on = config["succeed_on"].as_u64().unwrap_or(1);
        if u64::from(ctx.attempt) < succeed_on {
            return Err(WorkflowError::Transient(format!("failing attempt {} on purpose (succeeds on {succeed_on})", ctx.attempt)));
        }
        weir_guest::info(&format!("appended the entry of {source} on attempt {}", ctx.attempt));
        Ok(Step::Done(None))
    }
}

export!(AppendEntry);
