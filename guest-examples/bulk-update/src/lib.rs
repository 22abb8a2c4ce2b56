//! bulk-update: a background operation (`weir background submit bulk-update`).
//!
//! Input: `{"table": "expense", "set": {"state": "archived"}, "filter": "state eq 'paid'"}`
//! (`filter` optional). Updates every matching record with `set`, logging progress,
//! and returns `{"updated": N}`. Needs `--grant TABLE:write`.

use weir_guest::records;
use weir_guest::serde_json::Value as Json;
use weir_guest::types::{Context, Field, Value};

weir_guest::bindings!("workflow");

use exports::weir::plugin::runner::{Guest, Step, WorkflowError};

/// Most records one run updates.
const MAX_RECORDS: u32 = 5000;

/// A JSON value as a typed field value (weir checks it against the column).
fn value(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Decimal(n.to_string()),
        },
        Json::String(s) => Value::Text(s.clone()),
        other => Value::Json(other.to_string()),
    }
}

struct BulkUpdate;

impl Guest for BulkUpdate {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        let input = weir_guest::json(&ctx.input);
        let bad = |m: &str| WorkflowError::Permanent(format!("bad input: {m}; expected {{\"table\": ..., \"set\": {{...}}, \"filter\": ...}}"));
        let table = input["table"].as_str().ok_or_else(|| bad("no table"))?;
        let set: Vec<Field> = input["set"]
            .as_object()
            .ok_or_else(|| bad("no set"))?
            .iter()
            .map(|(k, v)| weir_guest::field(k, value(v)))
            .collect();
        let filter = input["filter"].as_str().unwrap_or("");
        let matching = weir_guest::query(table, filter, MAX_RECORDS)
            .map_err(|e| WorkflowError::Permanent(format!("cannot query {table}: {e:?}")))?;
        weir_guest::info(&format!("updating {} {table} records", matching.len()));
        for (i, record) in matching.iter().enumerate() {
            records::update(table, &record.id, &set)
                .map_err(|e| WorkflowError::Transient(format!("cannot update {table} {}: {e:?}", record.id)))?;
            if (i + 1) % 100 == 0 {
                weir_guest::info(&format!("{} of {} updated", i + 1, matching.len()));
            }
        }
        weir_guest::info(&format!("done: {} updated", matching.len()));
        Ok(Step::Done(Some(format!("{{\"updated\":{}}}", matching.len()))))
    }
}

export!(BulkUpdate);
