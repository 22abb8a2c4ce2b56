//! denied-import: a sync plug-in that imports `wasi:keyvalue/store`, a
//! standard WASI interface weir does not provide. It must load (the import is
//! linked as a denial) and its call must fail with a typed `denied` error
//! naming the interface. A test fixture for the sandbox.

wit_bindgen::generate!({
    path: ["../../../wit", "wit"],
    world: "test:denied/denied",
    generate_all,
});

use exports::weir::plugin::handler::{Guest, Outcome, PluginError};
use weir::plugin::types::Context;

struct Denied;

impl Guest for Denied {
    fn execute(ctx: Context) -> Result<Outcome, PluginError> {
        // Plain records without the store: the plug-in runs until it asks for it.
        weir::plugin::log::write(weir::plugin::log::Level::Info, &format!("checking {}", ctx.table));
        match wasi::keyvalue::store::get("limit") {
            Some(v) => Err(PluginError::Rejected(format!("the store said {v}"))),
            None => Ok(Outcome { changes: vec![], notes: vec![], variables: vec![] }),
        }
    }
}

export!(Denied);
