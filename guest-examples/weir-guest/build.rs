//! Writes the `bindings!` macro with the WIT contract inline (from this
//! crate's own `wit/`), so a plug-in crate anywhere gets its world's bindings
//! without a path to the WIT files.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("wit");
    let mut doc = String::new();
    for file in ["types.wit", "worlds.wit"] {
        let path = dir.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).expect("the crate's wit/ files are readable");
        for line in text.lines() {
            // One document: the second file's package line goes.
            if line.starts_with("package ") && !doc.is_empty() {
                continue;
            }
            doc.push_str(line);
            doc.push('\n');
        }
    }
    assert!(!doc.contains("\"#"), "the WIT must not contain a raw-string terminator");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("bindings_macro.rs");
    let mac = format!(
        r####"/// Generates a plug-in's bindings for one of weir's worlds (`"plugin"`,
/// `"workflow"` or `"hybrid"`) in the calling crate, reusing this crate's
/// types and imports: `exports::weir::plugin::handler::Guest` (sync) and/or
/// `exports::weir::plugin::runner::Guest` (async), and `export!`. The
/// [`plugin!`], [`workflow!`] and [`hybrid!`] macros use it with the traits
/// of this crate; call it directly to implement the generated traits yourself.
#[macro_export]
macro_rules! bindings {{
    ($world:literal) => {{
        weir_guest::wit_bindgen::generate!({{
            inline: r#"{doc}"#,
            world: $world,
            runtime_path: "weir_guest::wit_bindgen::rt",
            with: {{
                "weir:plugin/types@0.3.0": weir_guest::types,
                "weir:plugin/records@0.3.0": weir_guest::records,
                "weir:plugin/log@0.3.0": weir_guest::log,
                "weir:plugin/secrets@0.3.0": weir_guest::secrets,
                "weir:plugin/jobs@0.3.0": weir_guest::jobs,
            }},
        }});
    }};
}}
"####
    );
    std::fs::write(out, mac).expect("OUT_DIR is writable");
}
