//! `weir plugin new`: writes a new plug-in project in a new directory — the
//! SDK vendored into it (with the WIT contract), a minimal plug-in that
//! builds, a sample context for `weir plugin test`, and a README with the
//! commands. The project needs nothing but the Rust toolchain and this weir
//! binary (the SDK's dependencies come from crates.io).
//!
//! Owns only the templates; writes nothing but the new directory.

use std::path::Path;

use crate::error::{Error, Result};

/// The SDK's files, as they are in `guest-examples/weir-guest/`.
const SDK: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../guest-examples/weir-guest/Cargo.toml")),
    ("build.rs", include_str!("../../guest-examples/weir-guest/build.rs")),
    ("src/lib.rs", include_str!("../../guest-examples/weir-guest/src/lib.rs")),
    ("wit/types.wit", include_str!("../../guest-examples/weir-guest/wit/types.wit")),
    ("wit/worlds.wit", include_str!("../../guest-examples/weir-guest/wit/worlds.wit")),
];

/// The kind of plug-in to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Sync: runs inside the operation's transaction.
    Plugin,
    /// Async: runs later as a system job.
    Workflow,
}

/// The language of the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// Writes project `name` in `parent/name` (which must not exist); returns the
/// file the build makes, relative to the project.
pub fn new(parent: &Path, name: &str, lang: Lang, kind: Kind) -> Result<String> {
    crate::plugins::check_name("plug-in", name)?;
    if lang != Lang::Rust {
        return Err(Error::invalid(
            "only --lang rust is available in this version of weir (Python and JavaScript projects are planned; AUTHORING.md says how to build such components by hand)",
        ));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(Error::Conflict(format!("{} already exists; choose another name or remove it", dir.display())));
    }
    let write = |rel: &str, text: &str| -> Result<()> {
        let path = dir.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| Error::invalid(format!("cannot create {}: {e}", p.display())))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::invalid(format!("cannot write {}: {e}", path.display())))
    };
    for (rel, text) in SDK {
        write(&format!("weir-guest/{rel}"), text)?;
    }
    let file = format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_"));
    let ty = camel(name);
    let (world, source, context, stage, mode) = match kind {
        Kind::Plugin => (
            "plugin",
            plugin_source(name, &ty),
            r#"{"message": "create", "table": "contact", "stage": "pre-operation", "target": {"id": "c1", "name": "Ada"}}"#,
            "pre-operation",
            "",
        ),
        Kind::Workflow => (
            "workflow",
            workflow_source(name, &ty),
            r#"{"message": "create", "table": "contact", "stage": "post-operation", "mode": "async", "target": {"id": "c1", "name": "Ada"}}"#,
            "post-operation",
            " --mode async",
        ),
    };
    write(
        "Cargo.toml",
        &format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
weir-guest = {{ path = "weir-guest" }}

[profile.release]
opt-level = "s"
panic = "abort"

# A project of its own, even inside another workspace.
[workspace]
"#
        ),
    )?;
    write("src/lib.rs", &source)?;
    write("context.json", &format!("{context}\n"))?;
    write(".gitignore", "/target\n")?;
    write(
        "README.md",
        &format!(
            r#"# {name}

A weir plug-in (world `{world}`), written in Rust with the weir-guest SDK (vendored in
`weir-guest/`, with the WIT contract `weir:plugin@0.2.0` in `weir-guest/wit/`).

Build it (needs the Rust toolchain; once: `rustup target add wasm32-wasip2`):

    cargo build --release --target wasm32-wasip2

Try it offline, in weir's sandbox, with the sample context (no database is touched):

    weir plugin test {file} --context context.json

Add it to weir and run it on every new `contact`:

    weir plugin add {name} {file}
    weir table create contact --column name:text
    weir step add {name} --plugin {name} --message create --table contact --stage {stage}{mode}
    weir record create contact '{{"name": "Ada"}}'
"#
        ),
    )?;
    Ok(file)
}

/// `my-check` → `MyCheck`.
fn camel(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

fn plugin_source(name: &str, ty: &str) -> String {
    format!(
        r#"//! {name}: a sync weir plug-in. It runs inside the operation's
//! transaction: rejecting rolls the operation back.

use weir_guest::{{Context, Outcome, Plugin, PluginError}};

struct {ty};

impl Plugin for {ty} {{
    fn execute(ctx: Context) -> Result<Outcome, PluginError> {{
        // The record being written, its fields by name and type.
        let name: Option<String> = ctx.target.value("name");
        weir_guest::info(&format!("{name} saw {{}} {{}}", ctx.table, ctx.target.id));
        match name {{
            Some(n) if n.trim().is_empty() => Err(PluginError::Rejected("the name must not be blank".into())),
            _ => Ok(Outcome::default().note("checked by {name}")),
        }}
    }}
}}

weir_guest::plugin!({ty});
"#
    )
}

fn workflow_source(name: &str, ty: &str) -> String {
    format!(
        r#"//! {name}: an async weir workflow. It runs later, as a system job, and
//! may wait; a transient error is retried with backoff.

use weir_guest::{{Context, Step, Workflow, WorkflowError}};

struct {ty};

impl Workflow for {ty} {{
    fn run(ctx: Context, _state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {{
        weir_guest::info(&format!("{name} runs for {{}} {{}}", ctx.table, ctx.target.id));
        Ok(Step::done_json(&weir_guest::serde_json::json!({{"seen": ctx.target.id}})))
    }}
}}

weir_guest::workflow!({ty});
"#
    )
}
