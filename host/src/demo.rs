//! `weir demo`: loads the example plug-ins and walks through weir's story.

use std::path::Path;

use crate::Weir;
use crate::error::Result;

pub fn run(db: &Path) -> Result<()> {
    let weir = Weir::open(db)?;
    for name in crate::examples::names() {
        let wasm = crate::examples::wasm(name).unwrap_or_default();
        let row = weir.add_plugin(name, wasm)?;
        println!("loaded {name} v{} ({})", row.version, row.world);
    }
    Ok(())
}
