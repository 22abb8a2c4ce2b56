//! `weir plugin new`: writes a new plug-in project in a new directory — the
//! WIT contract (in Rust, inside the vendored SDK; a Python project also gets
//! the helper module `weir_guest.py`, a JavaScript one `weir-guest.js`), a
//! minimal plug-in that builds, a sample context for `weir plugin test`, and
//! a README with the one build command. A Rust project needs the Rust
//! toolchain, a Python one Python (componentize-py comes from PyPI), a
//! JavaScript one Node.js (componentize-js or componentize-qjs comes from
//! npm), each besides this weir binary.
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

/// The Python helper module (PyPI's `weir-guest`), vendored next to a Python
/// project's `app.py`.
const PY_SDK: &str = include_str!("../../guest-examples/weir-guest-py/src/weir_guest.py");

/// The JavaScript helper (npm's `weir-guest`: one self-contained ES module,
/// big.js inlined), vendored next to a JavaScript project's `app.js`.
const JS_SDK: &str = include_str!("../../guest-examples/weir-guest-js/dist/weir-guest.js");

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

/// The engine a JavaScript project's component embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum JsEngine {
    /// SpiderMonkey, built with componentize-js: the web platform's APIs
    /// (`fetch` over granted hosts, `URL`, `TextEncoder`…); a 12 MB component.
    #[default]
    Starlingmonkey,
    /// QuickJS, built with componentize-qjs: the language without the web
    /// APIs; a 1.6 MB component that loads in about a second and costs about
    /// a fifth of a StarlingMonkey call (`weir bench --only languages`).
    Quickjs,
}

/// A project written by [`new`]: the component its build makes and the one
/// command that builds it (from the project's directory).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Project {
    pub file: String,
    pub build: String,
}

/// The pinned toolchains of the Python and JavaScript projects.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
const COMPONENTIZE_JS: &str = "0.23.0";
const COMPONENTIZE_QJS: &str = "0.4.5";
/// componentize-js 0.23 imports preview2-shim at run time without declaring
/// it as a dependency: the project declares it (else a clean install fails
/// with ERR_MODULE_NOT_FOUND).
const PREVIEW2_SHIM: &str = "0.25.0";

/// Writes project `name` in `parent/name` (which must not exist); `engine`
/// only for JavaScript.
pub fn new(parent: &Path, name: &str, lang: Lang, kind: Kind, engine: Option<JsEngine>) -> Result<Project> {
    crate::names::check_name("plug-in", name)?;
    if engine.is_some() && lang != Lang::Js {
        return Err(Error::invalid("--js-engine is for JavaScript projects: add --lang js, or leave --js-engine out"));
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
    let (world, context, stage, mode) = match kind {
        Kind::Plugin => {
            ("plugin", r#"{"message": "create", "table": "contact", "stage": "pre-operation", "target": {"id": "c1", "name": "Ada"}}"#, "pre-operation", "")
        }
        Kind::Workflow => (
            "workflow",
            r#"{"message": "create", "table": "contact", "stage": "post-operation", "mode": "async", "target": {"id": "c1", "name": "Ada"}}"#,
            "post-operation",
            " --mode async",
        ),
    };
    let snake = name.replace('-', "_");
    let (project, language, setup) = match lang {
        Lang::Rust => {
            for (rel, text) in SDK {
                write(&format!("weir-guest/{rel}"), text)?;
            }
            let ty = camel(name);
            write("Cargo.toml", &cargo_toml(name))?;
            write("src/lib.rs", &if kind == Kind::Plugin { plugin_source(name, &ty) } else { workflow_source(name, &ty) })?;
            write(".gitignore", "/target\n")?;
            let project = Project { file: format!("target/wasm32-wasip2/release/{snake}.wasm"), build: "cargo build --release --target wasm32-wasip2".into() };
            (
                project,
                "Rust with the weir-guest SDK (vendored in `weir-guest/`, with the WIT contract `weir:plugin@0.3.0` in `weir-guest/wit/`)",
                "the Rust toolchain; once: `rustup target add wasm32-wasip2`",
            )
        }
        Lang::Python => {
            write_wit(&write)?;
            write("app.py", &if kind == Kind::Plugin { python_plugin(name) } else { python_workflow(name) })?;
            // Next to app.py, so componentize-py's default module path (`.`) finds it.
            write("weir_guest.py", PY_SDK)?;
            write("requirements.txt", &format!("{COMPONENTIZE_PY}\n"))?;
            write(".gitignore", ".venv/\n__pycache__/\n*.wasm\n")?;
            let file = format!("{snake}.wasm");
            let build = format!(
                "python3 -m venv .venv && .venv/bin/pip install --quiet -r requirements.txt && .venv/bin/componentize-py -d wit -w {world} componentize app -o {file}"
            );
            (
                Project { file, build },
                "Python, built with componentize-py, with the helper module `weir_guest.py` (typed fields, exact decimals, outcomes and errors; the WIT contract `weir:plugin@0.3.0` is in `wit/`)",
                "Python 3.10 or later; the build installs componentize-py from PyPI into `.venv/`",
            )
        }
        Lang::Js => {
            write_wit(&write)?;
            write("app.js", &if kind == Kind::Plugin { js_plugin(name) } else { js_workflow(name) })?;
            // Next to app.js: both engines load a relative import, neither a bare npm name.
            write("weir-guest.js", JS_SDK)?;
            let file = format!("{snake}.wasm");
            let (script, deps, language, setup) = match engine.unwrap_or_default() {
                JsEngine::Starlingmonkey => (
                    format!("componentize-js app.js --wit wit --world-name {world} -o {file}"),
                    format!(
                        r#""@bytecodealliance/componentize-js": "{COMPONENTIZE_JS}",
    "@bytecodealliance/preview2-shim": "{PREVIEW2_SHIM}""#
                    ),
                    "JavaScript, built with componentize-js (StarlingMonkey, with the web APIs; `weir plugin new NAME --lang js --js-engine quickjs` makes calls about five times cheaper without them; the WIT contract `weir:plugin@0.3.0` is in `wit/`), with the helper `weir-guest.js` (typed fields, exact decimals with big.js, outcomes, errors and workflow steps)",
                    "Node.js 18 or later; the build installs componentize-js from npm",
                ),
                // `--sync`: the component model's synchronous ABI, which weir's worlds use.
                JsEngine::Quickjs => (
                    format!("componentize-qjs --wit wit --world {world} --js app.js --sync -o {file}"),
                    format!(r#""componentize-qjs": "{COMPONENTIZE_QJS}""#),
                    "JavaScript, built with componentize-qjs (QuickJS: the language without the web APIs, so `log.write` rather than `console` and no `fetch`; an absent `option` is `null` and 64-bit integers are numbers, exact to 2^53; the WIT contract `weir:plugin@0.3.0` is in `wit/`), with the helper `weir-guest.js` (typed fields, exact decimals with big.js, outcomes, errors and workflow steps)",
                    "Node.js 18 or later; the build installs componentize-qjs from npm",
                ),
            };
            write(
                "package.json",
                &format!(
                    r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "{script}"
  }},
  "devDependencies": {{
    {deps}
  }}
}}
"#
                ),
            )?;
            write(".gitignore", "node_modules/\n*.wasm\n")?;
            (Project { file, build: "npm install --no-audit --no-fund && npm run build".into() }, language, setup)
        }
    };
    write("context.json", &format!("{context}\n"))?;
    // A Rust workflow waits once and resumes: its second run has a context of its own.
    let resume = if lang == Lang::Rust && kind == Kind::Workflow {
        let resumed = context.replacen('{', r#"{"wake": "timer", "#, 1);
        write("resumed.json", &format!("{resumed}\n"))?;
        format!(
            "\nIts first run saves its state and waits; test the run that resumes from it with that state:\n\n    \
             weir plugin test {f} --context context.json --save-state state.bin\n    \
             weir plugin test {f} --context resumed.json --state state.bin\n",
            f = project.file
        )
    } else {
        String::new()
    };
    // componentize-py's components embed CPython, componentize-js's StarlingMonkey
    // (and componentize-qjs's QuickJS): compiling one takes seconds.
    let first_test = if lang != Lang::Rust {
        "\n\nThe first `weir plugin test` of a new build compiles it (several seconds); later ones reuse the compiled copy."
    } else {
        ""
    };
    let (file, build) = (&project.file, &project.build);
    write(
        "README.md",
        &format!(
            r#"# {name}

A weir plug-in (world `{world}`), written in {language}.

Build it (needs {setup}):

    {build}

Try it offline, in weir's sandbox, with the sample context (no database is touched):

    weir plugin test {file} --context context.json{first_test}
{resume}
Add it to weir and run it on every new `contact`:

    weir plugin add {name} {file}
    weir table create contact --column name:text
    weir step add {name} --plugin {name} --message create --table contact --stage {stage}{mode}
    weir record create contact '{{"name": "Ada"}}'

AUTHORING.md in weir's repository explains the contract, the errors, waits, grants and limits.
"#
        ),
    )?;
    Ok(project)
}

/// The WIT contract, for the toolchains that read it (componentize-py, componentize-js, componentize-qjs).
fn write_wit(write: &dyn Fn(&str, &str) -> Result<()>) -> Result<()> {
    for (rel, text) in SDK.iter().filter(|(rel, _)| rel.starts_with("wit/")) {
        write(rel, text)?;
    }
    Ok(())
}

fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
weir-guest = {{ path = "weir-guest" }}
# A workflow's saved state is any serde type.
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = "s"
panic = "abort"

# A project of its own, even inside another workspace.
[workspace]
"#
    )
}

fn python_plugin(name: &str) -> String {
    format!(
        r#""""{name}: a sync weir plug-in (world `plugin`). It runs inside the
operation's transaction: rejecting rolls the operation back.

weir_guest.py, next to this file, reads and builds weir's values: typed
fields (`weir.text`, `weir.decimal` as an exact `Decimal`...), outcomes
and errors."""

import weir_guest as weir
from wit_world import exports
from wit_world.imports.types import Context


class Handler(exports.Handler):
    def execute(self, ctx: Context) -> weir.Outcome:
        # The record being written, its fields by name and type.
        name = weir.text(ctx.target, "name")
        weir.info(f"{name} saw {{ctx.table}} {{ctx.target.id}}")
        if name is not None and not name.strip():
            # Raises; the operation is rolled back and the caller sees "{name}: <message>".
            weir.rejected("the name must not be blank")
        return weir.Outcome().note("checked by {name}")
"#
    )
}

fn python_workflow(name: &str) -> String {
    format!(
        r#""""{name}: an async weir workflow (world `workflow`). It runs later, as
a system job, and may wait; a transient error is retried with backoff.

weir_guest.py, next to this file, reads and builds weir's values. To wait,
return a wait step with saved state, such as
`Step_WaitUntil(WaitUntil(at=ms, state=weir.save({{"id": ctx.target.id}})))`
(from wit_world.exports.runner); the next run reads it with `weir.load(state)`."""

from typing import Optional

import weir_guest as weir
from wit_world import exports
from wit_world.exports.runner import Step
from wit_world.imports.types import Context


class Runner(exports.Runner):
    def run(self, ctx: Context, state: Optional[bytes]) -> Step:
        weir.info(f"{name} runs for {{ctx.table}} {{ctx.target.id}}")
        # Done; the result (JSON) is kept as the job's result.
        return weir.done({{"seen": ctx.target.id}})
"#
    )
}

fn js_plugin(name: &str) -> String {
    format!(
        r#"// {name}: a sync weir plug-in (world `plugin`). It runs inside the
// operation's transaction: rejecting rolls the operation back.
//
// weir-guest.js, next to this file, reads and builds weir's values: typed
// fields (`text`, `decimal` as an exact big.js decimal...), outcomes and errors.

import {{ info, outcome, rejected, text }} from './weir-guest.js';

export const handler = {{
  execute(ctx) {{
    // The record being written, its fields by name and type.
    const name = text(ctx.target, 'name');
    info(`{name} saw ${{ctx.table}} ${{ctx.target.id}}`);
    if (name !== null && name.trim() === '') {{
      // The operation is rolled back; the caller sees "{name}: <message>".
      throw rejected('the name must not be blank');
    }}
    return outcome().note('checked by {name}');
  }},
}};
"#
    )
}

fn js_workflow(name: &str) -> String {
    format!(
        r#"// {name}: an async weir workflow (world `workflow`). It runs later, as a
// system job, and may wait; a transient error is retried with backoff.
//
// weir-guest.js, next to this file, reads and builds weir's values. To wait,
// return a wait step with state to save, such as
// `waitUntil(Date.now() + 60000, {{ id: ctx.target.id }})`; the next run reads
// it with `load(state)`.

import {{ done, info }} from './weir-guest.js';

export const runner = {{
  run(ctx, state) {{
    info(`{name} runs for ${{ctx.table}} ${{ctx.target.id}}`);
    // Done; the result (JSON) is kept as the job's result.
    return done({{ seen: ctx.target.id }});
  }},
}};
"#
    )
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
//!
//! Its first run saves what it needs and waits a second; the run that
//! follows resumes from that state. Test each run offline:
//!     weir plugin test FILE --context context.json --save-state state.bin
//!     weir plugin test FILE --context resumed.json --state state.bin

use serde::{{Deserialize, Serialize}};
use weir_guest::{{Context, Step, Workflow, WorkflowError}};

struct {ty};

/// What the first run keeps for the next (any serde type).
#[derive(Serialize, Deserialize)]
struct Saved {{
    record: String,
}}

impl Workflow for {ty} {{
    fn run(ctx: Context, state: Option<Vec<u8>>) -> Result<Step, WorkflowError> {{
        if let Some(saved) = weir_guest::state::<Saved>(state.as_deref()) {{
            weir_guest::info(&format!("{name} resumes for {{}} (attempt {{}})", saved.record, ctx.attempt));
            return Ok(Step::done_json(&weir_guest::serde_json::json!({{"seen": saved.record}})));
        }}
        weir_guest::info(&format!("{name} runs for {{}} {{}}", ctx.table, ctx.target.id));
        let saved = Saved {{ record: ctx.target.id.clone() }};
        Ok(Step::WaitUntil {{ at: weir_guest::now_ms() + 1000, state: Step::save(&saved) }})
    }}
}}

weir_guest::workflow!({ty});
"#
    )
}
