//! Plug-ins in Python and JavaScript. The credit-check examples in
//! `guest-examples/python` and `guest-examples/js` are built with
//! componentize-py, and componentize-js and componentize-qjs (the pinned
//! toolchains `.ci/run` installs from PyPI and npm), and run as sync steps,
//! like the Rust one; and `weir plugin new --lang python|js` projects are
//! built from an empty directory with the one command their README gives,
//! tried offline with `plugin test`, added and run.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{Env, path};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `command` with bash in `dir`; panics with its output if it fails.
#[track_caller]
fn sh(dir: &Path, command: &str) {
    let out = Command::new("bash").arg("-c").arg(command).current_dir(dir).output().expect("bash runs");
    assert!(
        out.status.success(),
        "`{command}` in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The toolchain a test needs, or a panic that says how to install it.
#[track_caller]
fn toolchain(tool: &Path) -> String {
    assert!(tool.exists(), "{} is missing: run .ci/run (it installs the Python and JavaScript toolchains of the examples)", tool.display());
    tool.to_str().unwrap().to_string()
}

/// The tables of the examples, `wasm` added as `plugin` and registered as a
/// pre-validation step on opportunity creates that may read accounts.
fn credit_check(env: &Env, plugin: &str, wasm: &Path) {
    env.crm_tables(&[]);
    env.run(&["plugin", "add", plugin, path(wasm)]).ok();
    env.run(&[
        "step",
        "add",
        "credit",
        "--plugin",
        plugin,
        "--message",
        "create",
        "--table",
        "opportunity",
        "--stage",
        "pre-validation",
        "--grant",
        "account:read",
    ])
    .ok();
}

/// `weir record create TABLE BODY` with a 30 s budget: the first call of a
/// large interpreter in a new process can take seconds under the suite's
/// load, and the budget is not what these tests are about.
fn create(env: &Env, table: &str, body: &str) -> crate::common::Run {
    env.run(&["--op-budget-ms", "30000", "record", "create", table, body])
}

/// The example's behaviour, as the Rust credit-check has it.
#[track_caller]
fn assert_checks_credit(env: &Env, plugin: &str) {
    let account = env.run(&["record", "create", "account", r#"{"name": "Contoso", "creditlimit": 100}"#]).ok().json()["id"].as_str().unwrap().to_string();
    let opportunity = |amount: &str| create(env, "opportunity", &json!({"amount": amount, "customer": account}).to_string());
    let ok = opportunity("50").ok().json();
    assert_eq!(ok["amount"], json!(50), "{plugin}: {ok}");
    let near = opportunity("95.50").ok().json();
    assert_eq!(near["@notes"], json!([format!("{plugin}: amount 95.50 uses more than 90% of the credit limit 100")]), "{plugin}: {near}");
    let refused = opportunity("500").fails();
    assert!(refused.stderr.contains(&format!("{plugin}: amount 500 exceeds the credit limit 100 of account Contoso")), "{plugin}: {}", refused.stderr);
    assert_eq!(env.run(&["record", "query", "opportunity", "--json"]).ok().json().as_array().unwrap().len(), 2, "{plugin}: the refused one is not stored");
}

#[test]
fn the_python_and_javascript_examples_run_as_sync_steps() {
    let examples = root().join("guest-examples");
    let wit = root().join("wit");
    // The Python example imports the helper module `weir_guest` from its source directory.
    let helper = format!("-p . -p {}", path(&examples.join("weir-guest-py/src")));
    let python = (examples.join("python/credit_check"), "credit-check-py");
    let js = (examples.join("js/credit-check"), "credit-check-js");
    let quickjs = (examples.join("js/credit-check"), "credit-check-qjs");
    // The JavaScript example imports the helper from its own directory, where its build scripts copy it.
    std::fs::copy(examples.join("weir-guest-js/dist/weir-guest.js"), js.0.join("weir-guest.js")).unwrap();
    let builds = [
        (python.clone(), format!("{} -d {} -w plugin componentize app {helper} -o", toolchain(&python.0.join(".venv/bin/componentize-py")), path(&wit))),
        (js.clone(), format!("{} app.js --wit {} --world-name plugin -o", toolchain(&js.0.join("node_modules/.bin/componentize-js")), path(&wit))),
        (quickjs, format!("{} --wit {} --world plugin --js app.js --sync -o", toolchain(&js.0.join("node_modules/.bin/componentize-qjs")), path(&wit))),
    ];
    // Each build in its own database, all at once (building and compiling take seconds).
    std::thread::scope(|scope| {
        for ((dir, plugin), build) in &builds {
            scope.spawn(move || {
                let env = Env::new();
                let wasm = env.dir.path().join(format!("{plugin}.wasm"));
                sh(dir, &format!("{build} {}", path(&wasm)));
                // Offline first, with the example's own context and fixture.
                let tried = env
                    .run(&["plugin", "test", path(&wasm), "--context", path(&dir.join("context.json")), "--records", path(&dir.join("records.json")), "--json"])
                    .ok()
                    .json();
                assert_eq!(tried["outcome"], "ok", "{plugin}: {tried}");
                assert!(tried["trace"].to_string().contains("amount 500 is within the credit limit 1000"), "{plugin}: {tried}");
                credit_check(&env, plugin, &wasm);
                assert_checks_credit(&env, plugin);
            });
        }
    });
}

#[test]
fn a_js_engine_is_chosen_only_for_javascript() {
    let env = Env::new();
    let refused = env.command().current_dir(env.dir.path()).args(["plugin", "new", "p", "--lang", "python", "--js-engine", "quickjs"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--js-engine is for JavaScript projects"), "{refused:?}");
    assert!(!env.dir.path().join("p").exists(), "nothing is written");
}

#[test]
fn plugin_new_python_and_js_projects_build_from_their_readme_and_run() {
    std::thread::scope(|scope| {
        let projects = [
            ("python", "plugin", None),
            ("js", "plugin", None),
            ("python", "workflow", None),
            ("js", "workflow", None),
            ("js", "plugin", Some("quickjs")),
            ("js", "workflow", Some("quickjs")),
        ];
        for (lang, world, engine) in projects {
            scope.spawn(move || {
                let env = Env::new();
                let name = format!("hello-{lang}-{world}{}", engine.map(|e| format!("-{e}")).unwrap_or_default());
                let mut new = vec!["plugin", "new", &name, "--lang", lang, "--world", world, "--json"];
                new.extend(engine.map(|e| ["--js-engine", e]).iter().flatten());
                let out = env.command().current_dir(env.dir.path()).args(&new).output().unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let made: Value = serde_json::from_slice(&out.stdout).unwrap();
                let project = env.dir.path().join(&name);
                let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
                if lang == "js" {
                    let (tool, engine) = if engine.is_some() { ("componentize-qjs", "QuickJS") } else { ("componentize-js", "StarlingMonkey") };
                    let package = std::fs::read_to_string(project.join("package.json")).unwrap();
                    assert!(package.contains(&format!("\"build\": \"{tool} ")) && readme.contains(engine), "{name}: {package}\n{readme}");
                }
                let build = made["build"].as_str().unwrap();
                assert!(readme.contains(&format!("    {build}\n")), "the README gives the build command: {readme}");
                assert!(!project.join("weir-guest").exists() && project.join("wit/worlds.wit").exists(), "the WIT, not the Rust SDK");
                sh(&project, build);
                let wasm = project.join(made["builds"].as_str().unwrap());
                let tried = env.run(&["plugin", "test", path(&wasm), "--context", path(&project.join("context.json")), "--json"]).ok().json();
                env.run(&["plugin", "add", &name, path(&wasm)]).ok();
                env.run(&["table", "create", "contact", "--column", "name:text"]).ok();
                if world == "workflow" {
                    assert_eq!(tried["outcome"], "ok", "{name}: {tried}");
                    assert_eq!(tried["step"], json!({"done": {"seen": "c1"}}), "{name}: {tried}");
                    let step =
                        ["step", "add", &name, "--plugin", &name, "--message", "create", "--table", "contact", "--stage", "post-operation", "--mode", "async"];
                    env.run(&step).ok();
                    let id = create(&env, "contact", r#"{"name": "Ada"}"#).ok().json()["id"].as_str().unwrap().to_string();
                    env.run(&["work", "--until-idle"]).ok();
                    let jobs = env.run(&["jobs", "list", "--json"]).ok().json();
                    assert_eq!((jobs[0]["status"].as_str(), &jobs[0]["result"]), (Some("Succeeded"), &json!({"seen": id})), "{name}: {jobs}");
                } else {
                    assert_eq!(tried["outcome"], "ok", "{name}: {tried}");
                    assert_eq!(tried["notes"], json!(["checked by ".to_string() + &name]), "{name}: {tried}");
                    if lang == "python" || engine.is_some() {
                        author_edits_with_exact_decimals(&env, &project, &name, lang, build, &made);
                    }
                    env.run(&["step", "add", &name, "--plugin", &name, "--message", "create", "--table", "contact", "--stage", "pre-operation"]).ok();
                    let ada = create(&env, "contact", r#"{"name": "Ada"}"#).ok().json();
                    assert_eq!(ada["@notes"], json!([format!("{name}: checked by {name}")]), "{ada}");
                    let blank = create(&env, "contact", r#"{"name": " "}"#).fails();
                    assert!(blank.stderr.contains(&format!("{name}: the name must not be blank")), "{}", blank.stderr);
                }
            });
        }
    });
}

/// An author's first edit of a `plugin new` project: exact decimal arithmetic
/// with the language's helper (0.1 × 3 + 0.2 is 0.5, not 0.5000000000000001),
/// built, tested twice (the second test loads the compiled copy; the bench
/// times both) and measured in its own layout with `bench --component`.
fn author_edits_with_exact_decimals(env: &Env, project: &Path, name: &str, lang: &str, build: &str, made: &Value) {
    let (file, source) = if lang == "python" {
        (
            "app.py",
            r#"from decimal import Decimal

import weir_guest as weir
from wit_world import exports
from wit_world.imports.types import Context


class Handler(exports.Handler):
    def execute(self, ctx: Context) -> weir.Outcome:
        total = weir.decimal(ctx.target, "amount") * 3 + Decimal("0.2")
        if total > Decimal("100"):
            weir.rejected(f"total {total} is over 100")
        return weir.Outcome().note(f"total {total}")
"#,
        )
    } else {
        (
            "app.js",
            r#"import { decimal, outcome, rejected } from './weir-guest.js';

export const handler = {
  execute(ctx) {
    const total = decimal(ctx.target, 'amount').times(3).plus('0.2');
    if (total.gt(100)) throw rejected(`total ${total} is over 100`);
    return outcome().note(`total ${total}`);
  },
};
"#,
        )
    };
    std::fs::write(project.join(file), source).unwrap();
    let records = project.join("records.json");
    std::fs::write(&records, r#"{"contact": {"columns": {"name": "text", "amount": "decimal"}, "records": []}}"#).unwrap();
    let context = project.join("decimal-context.json");
    std::fs::write(&context, r#"{"message": "create", "table": "contact", "stage": "pre-operation", "target": {"id": "c1", "name": "Ada", "amount": 0.1}}"#)
        .unwrap();
    sh(project, build);
    let wasm = project.join(made["builds"].as_str().unwrap());
    let test = || env.run(&["plugin", "test", path(&wasm), "--context", path(&context), "--records", path(&records), "--json"]).ok().json();
    for _ in 0..2 {
        let tried = test();
        assert_eq!(tried["notes"], json!(["total 0.5"]), "{name}: exact decimals: {tried}");
    }
    let label = name.replace(['.', ' '], "-");
    let bench = [
        "bench",
        "--only",
        "languages",
        "--component",
        &format!("{label}={}", path(&wasm)),
        "--context",
        path(&context),
        "--records",
        path(&records),
        "--json",
    ];
    let figures = env.run(&bench).ok().json();
    for key in ["load_s", "test_first_s", "test_again_s", "create_us"] {
        assert!(figures[format!("lang_{label}_{key}")].as_f64().is_some_and(|v| v > 0.0), "{name}: {key}: {figures}");
    }
}
