//! audit-trail: a sync post-operation plug-in.
//!
//! Writes an `audit` record {entity, recordid, action} for every operation it is
//! registered on, in the same transaction. Needs `--grant audit:write`.

use weir_guest::records;
use weir_guest::types::{Context, Message};

weir_guest::bindings!("plugin");

use exports::weir::plugin::handler::{Guest, Outcome, PluginError};

struct AuditTrail;

impl Guest for AuditTrail {
    fn execute(ctx: Context) -> Result<Outcome, PluginError> {
        let action = match ctx.message {
            Message::Create => "create",
            Message::Update => "update",
            Message::Delete => "delete",
            Message::Background => "background",
        };
        let fields = vec![
            weir_guest::text("entity", ctx.table.as_str()),
            weir_guest::text("recordid", ctx.target.id.as_str()),
            weir_guest::text("action", action),
        ];
        records::create("audit", &fields)
            .map_err(|e| PluginError::Failed(format!("cannot write the audit record: {e:?}")))?;
        Ok(Outcome { changes: vec![], notes: vec![], variables: vec![] })
    }
}

export!(AuditTrail);
