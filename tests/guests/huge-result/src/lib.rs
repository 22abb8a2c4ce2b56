//! huge-result: returns an enormous result.
//!
//! A misbehaving guest for the sandbox's tests; it exports both worlds so it can
//! be registered as a sync step or an async one. The step's config (or a
//! background operation's input) says how: `{"mib": 8, "mode": "..."}` with mode
//! * `changes` (sync, the default there): one change of `mib` MiB of text;
//! * `fields` (sync): a hundred thousand small changes;
//! * `result` (async, the default there): `done` with a `mib` MiB JSON string;
//! * `state` (async): `wait-until` with `mib` MiB of saved state;
//! * `error`: a rejection (sync) or permanent error (async) of `mib` MiB;
//! * `log`: four log lines of `mib` MiB each, then success;
//! * `write` (sync): creates a record of its table with `mib` MiB of text in
//!   `name`, and fails saying how the write was refused.
//!
//! The default size stays well inside the memory limit, so it is the size limit
//! on results, not the memory limit, that must stop it.

use weir_guest::records;
use weir_guest::types::{Context, Value};

weir_guest::bindings!("hybrid");

use exports::weir::plugin::handler::{Outcome, PluginError};
use exports::weir::plugin::runner::{Step, WaitUntil, WorkflowError};

struct Plan {
    bytes: usize,
    mode: String,
}

fn plan(ctx: &Context, default_mode: &str) -> Plan {
    let config = weir_guest::json(&ctx.config);
    let input = weir_guest::json(&ctx.input);
    let get = |k: &str| if config[k].is_null() { input[k].clone() } else { config[k].clone() };
    let mib = get("mib").as_u64().unwrap_or(8) as usize;
    let mode = get("mode").as_str().unwrap_or(default_mode).to_string();
    Plan { bytes: mib << 20, mode }
}

fn blob(bytes: usize) -> String {
    "x".repeat(bytes)
}

fn log_lines(bytes: usize) {
    for _ in 0..4 {
        weir_guest::info(&blob(bytes));
    }
}

struct Bad;

impl exports::weir::plugin::handler::Guest for Bad {
    fn execute(ctx: Context) -> Result<Outcome, PluginError> {
        let p = plan(&ctx, "changes");
        match p.mode.as_str() {
            "fields" => {
                let name = "f".repeat(24);
                Ok(Outcome { changes: (0..100_000).map(|i| weir_guest::field(&name, Value::Integer(i))).collect(), notes: vec![], variables: vec![] })
            }
            "error" => Err(PluginError::Rejected(blob(p.bytes))),
            "write" => match records::create(&ctx.table, &[weir_guest::text("name", blob(p.bytes))]) {
                Ok(_) => Ok(Outcome { changes: vec![], notes: vec![], variables: vec![] }),
                Err(e) => Err(PluginError::Failed(format!("the write was refused: {e:?}"))),
            },
            "log" => {
                log_lines(p.bytes);
                Ok(Outcome { changes: vec![], notes: vec![], variables: vec![] })
            }
            _ => Ok(Outcome { changes: vec![weir_guest::text("name", blob(p.bytes))], notes: vec![], variables: vec![] }),
        }
    }
}

impl exports::weir::plugin::runner::Guest for Bad {
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {
        let p = plan(&ctx, "result");
        match p.mode.as_str() {
            "state" => Ok(Step::WaitUntil(WaitUntil { at: i64::MAX / 2, state: vec![7u8; p.bytes] })),
            "error" => Err(WorkflowError::Permanent(blob(p.bytes))),
            "log" => {
                log_lines(p.bytes);
                Ok(Step::Done(None))
            }
            _ => Ok(Step::Done(Some(format!("\"{}\"", blob(p.bytes))))),
        }
    }
}

export!(Bad);
