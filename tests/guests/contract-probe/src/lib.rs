//! contract-probe: uses every item of the 0.2 contract and reports what it
//! saw, for the tests (world `hybrid`).
//!
//! Sync, driven by the step's config:
//! * it logs `seen: {...}` (JSON): its identity (step, plugin, version,
//!   operation id), the shared variables, and each decimal and reference
//!   field of the target as it arrived;
//! * `"set": {NAME: JSON}` sets shared variables; `"note": TEXT` adds a note;
//! * `"scale": {"column": C, "by": DECIMAL}` sets column C to C × by, exactly;
//! * `"query": {...}` runs `records.query` with the given table, filter,
//!   order_by (`[[column, descending]]`), columns, skip, top and count, and
//!   logs `query: {"ids": [...], "count": N, "fields": [...]}`;
//! * `"link": {"column": C, "table": T, "id": ID}` sets reference column C.
//!
//! Async: logs `seen: {...}` the same way; with `"wait": {"table", "filter",
//! "timeout_ms"}` in its input or config it waits for a record of that table to
//! match, then ends with `{"wake": REASON}`; with `"wait_record": {"table",
//! "id", "condition", "timeout_ms"}` it waits for that record to meet the
//! condition the same way.

use weir_guest::serde_json::{Value as Json, json};
use weir_guest::types::{Context, Reference, Value, WakeReason};
use weir_guest::{Decimal, records};

weir_guest::bindings!("hybrid");

use exports::weir::plugin::handler::{Outcome, PluginError};
use exports::weir::plugin::runner::{Step, WaitFor, WaitForQuery, WorkflowError};

fn seen(ctx: &Context) -> Json {
    let vars: weir_guest::serde_json::Map<String, Json> =
        ctx.shared_variables.iter().map(|v| (v.name.clone(), weir_guest::json(&v.value))).collect();
    let mut fields = weir_guest::serde_json::Map::new();
    for f in &ctx.target.fields {
        match &f.value {
            Value::Decimal(d) => {
                fields.insert(f.name.clone(), json!({"decimal": d}));
            }
            Value::Reference(r) => {
                fields.insert(f.name.clone(), json!({"table": r.table, "id": r.id}));
            }
            _ => {}
        }
    }
    json!({
        "step": ctx.step, "plugin": ctx.plugin, "plugin_version": ctx.plugin_version,
        "operation_id": ctx.operation_id, "correlation_id": ctx.correlation_id,
        "variables": vars, "fields": fields,
    })
}

fn config(ctx: &Context) -> Json {
    match weir_guest::json(&ctx.config) {
        Json::Null => weir_guest::json(&ctx.input),
        c => c,
    }
}

fn run_query(q: &Json) -> Result<Json, String> {
    let query = records::QueryOptions {
        table: q["table"].as_str().unwrap_or_default().into(),
        filter: q["filter"].as_str().unwrap_or_default().into(),
        order_by: q["order_by"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| records::OrderBy { column: o[0].as_str().unwrap_or_default().into(), descending: o[1].as_bool().unwrap_or(false) })
            .collect(),
        columns: q["columns"].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(String::from)).collect(),
        skip: q["skip"].as_u64().unwrap_or(0) as u32,
        top: q["top"].as_u64().unwrap_or(100) as u32,
        count: q["count"].as_bool().unwrap_or(false),
    };
    let page = records::query(&query).map_err(|e| format!("{e:?}"))?;
    let fields: Vec<Vec<String>> = page.records.iter().map(|r| r.fields.iter().map(|f| f.name.clone()).collect()).collect();
    Ok(json!({"ids": page.records.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), "count": page.count, "fields": fields}))
}

struct Probe;

impl exports::weir::plugin::handler::Guest for Probe {
    fn execute(ctx: Context) -> Result<Outcome, PluginError> {
        weir_guest::info(&format!("seen: {}", seen(&ctx)));
        let c = config(&ctx);
        let mut out = Outcome { changes: vec![], notes: vec![], variables: vec![] };
        if let Some(set) = c["set"].as_object() {
            out.variables = set.iter().map(|(k, v)| weir_guest::set_variable(k, v)).collect();
        }
        if let Some(note) = c["note"].as_str() {
            out.notes.push(note.to_string());
        }
        if c["scale"].is_object() {
            let scale = &c["scale"];
            let column = scale["column"].as_str().unwrap_or_default();
            let by: Decimal = scale["by"].as_str().unwrap_or("1").parse().map_err(|e| PluginError::Failed(format!("bad factor: {e}")))?;
            let have = ctx.target.decimal(column).ok_or_else(|| PluginError::Failed(format!("no decimal {column}")))?;
            out.changes.push(weir_guest::decimal(column, have * by));
        }
        if c["link"].is_object() {
            let link = &c["link"];
            let r = Reference { table: link["table"].as_str().unwrap_or_default().into(), id: link["id"].as_str().unwrap_or_default().into() };
            out.changes.push(weir_guest::field(link["column"].as_str().unwrap_or_default(), Value::Reference(r)));
        }
        if c["query"].is_object() {
            let result = run_query(&c["query"]).map_err(PluginError::Failed)?;
            weir_guest::info(&format!("query: {result}"));
        }
        Ok(out)
    }
}

impl exports::weir::plugin::runner::Guest for Probe {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        weir_guest::info(&format!("seen: {}", seen(&ctx)));
        if let Some(reason) = ctx.wake {
            let reason = match reason {
                WakeReason::Timer => "timer",
                WakeReason::ConditionMet => "condition-met",
                WakeReason::TimedOut => "timed-out",
                WakeReason::Checkpoint => "checkpoint",
            };
            return Ok(Step::Done(Some(json!({"wake": reason}).to_string())));
        }
        let c = config(&ctx);
        if c["wait"].is_object() {
            let w = &c["wait"];
            return Ok(Step::WaitForQuery(WaitForQuery {
                table: w["table"].as_str().unwrap_or_default().into(),
                filter: w["filter"].as_str().unwrap_or_default().into(),
                timeout_ms: w["timeout_ms"].as_u64().unwrap_or(60_000),
                state: vec![],
            }));
        }
        if c["wait_record"].is_object() {
            let w = &c["wait_record"];
            return Ok(Step::WaitFor(WaitFor {
                table: w["table"].as_str().unwrap_or_default().into(),
                id: w["id"].as_str().unwrap_or_default().into(),
                condition: w["condition"].as_str().unwrap_or_default().into(),
                timeout_ms: w["timeout_ms"].as_u64().unwrap_or(60_000),
                state: vec![],
            }));
        }
        Ok(Step::Done(Some(seen(&ctx).to_string())))
    }
}

export!(Probe);
