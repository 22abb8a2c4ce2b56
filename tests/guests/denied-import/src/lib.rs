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
        // Everything weir provides keeps working in a component with a denied
        // import: its log, WASI's stderr and clocks. Only the store is denied.
        weir::plugin::log::write(weir::plugin::log::Level::Info, &format!("checking {}", ctx.table));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        eprintln!("denied-import: the clock reads {} s", if now > 1_600_000_000 { "past 2020" } else { "before 2020" });
        match wasi::keyvalue::store::get("limit") {
            Some(v) => Err(PluginError::Rejected(format!("the store said {v}"))),
            None => Ok(Outcome { changes: vec![], notes: vec![], variables: vec![] }),
        }
    }
}

export!(Denied);
