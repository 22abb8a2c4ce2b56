//! set-defaults: a sync pre-operation plug-in.
//!
//! Fills `priority` with "normal" when the caller left it out, or with the value
//! of `priority` in the step's config (`--config '{"priority":"high"}'`).

use weir_guest::types::{Context, Value};

weir_guest::bindings!("plugin");

use exports::weir::plugin::handler::{Guest, Outcome, PluginError};

struct SetDefaults;

impl Guest for SetDefaults {
    fn execute(ctx: Context) -> Result<Outcome, PluginError> {
        let present = !matches!(ctx.target.get("priority"), None | Some(Value::Null));
        if present {
            return Ok(Outcome { changes: vec![], notes: vec![], variables: vec![] });
        }
        let config = weir_guest::json(&ctx.config);
        let default = config["priority"].as_str().unwrap_or("normal");
        Ok(Outcome { changes: vec![weir_guest::text("priority", default)], notes: vec![], variables: vec![] })
    }
}

export!(SetDefaults);
