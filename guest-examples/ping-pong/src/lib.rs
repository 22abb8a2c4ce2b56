//! ping-pong: on update, updates the same record again.
//!
//! Each update bumps `counter`, which fires the step again: an endless chain that
//! weir's depth guard stops (and rolls back). It exists to test that guard.

use weir_guest::records;
use weir_guest::types::{Context, Value};

weir_guest::bindings!("plugin");

use exports::weir::plugin::handler::{Guest, Outcome, PluginError};

struct PingPong;

impl Guest for PingPong {
    fn execute(ctx: Context) -> Result<Outcome, PluginError> {
        let counter = ctx.target.number("counter").unwrap_or(0.0) as i64;
        let bump = vec![weir_guest::field("counter", Value::Integer(counter + 1))];
        records::update(&ctx.table, &ctx.target.id, &bump)
            .map_err(|e| PluginError::Failed(format!("pong failed at depth {}: {e:?}", ctx.depth)))?;
        Ok(Outcome { changes: vec![], notes: vec![], variables: vec![] })
    }
}

export!(PingPong);
