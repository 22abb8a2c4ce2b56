//! Hardening of weir's input and output (issue 13): reads are bounded before
//! they happen (a device, a FIFO or a huge sparse file given to `plugin add` is
//! refused without being read; a component without a weir world, or with
//! imports weir does not provide, is refused before it is compiled and leaves
//! nothing in the compile cache), and a read-only database can still be read.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Env, Run, component_importing, path};

/// A child using more memory than this is reading its input without a bound.
const MAX_CHILD_RSS_BYTES: u64 = 1 << 30;

/// Runs `command` to its end, killing it if it is still running after 20 s
/// (it blocked) or if its resident memory passes [`MAX_CHILD_RSS_BYTES`] (it
/// reads without a bound), so a regression fails the test instead of hanging
/// the suite or exhausting the machine's memory.
fn run_guarded(mut command: Command) -> Run {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("weir starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for weir") {
            break status;
        }
        let rss = rss_bytes(child.id());
        if started.elapsed() > Duration::from_secs(20) || rss > MAX_CHILD_RSS_BYTES {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weir did not exit by itself (after {:?}, {rss} bytes resident): it blocked or read its input without a bound", started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("weir's output");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The resident memory of process `pid` (0 where /proc is not available).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).map_or(0, |kb| kb * 1024)
}

fn add_guarded(env: &Env, name: &str, file: &Path) -> Run {
    let mut c = env.command();
    c.args(["plugin", "add", name, path(file)]);
    run_guarded(c)
}

#[track_caller]
fn assert_nothing_stored(env: &Env) {
    let list = env.run(&["plugin", "list", "--json"]).ok().json();
    assert_eq!(list, serde_json::json!([]), "nothing was stored");
}

#[cfg(unix)]
#[test]
fn plugin_add_refuses_a_device_without_reading_it() {
    let env = Env::new();
    let out = add_guarded(&env, "zero", Path::new("/dev/zero")).fails();
    assert!(out.stderr.contains("/dev/zero") && out.stderr.contains("not a regular file"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert_nothing_stored(&env);
}

#[test]
fn plugin_add_refuses_a_file_over_the_limit_without_reading_it() {
    let env = Env::new();
    let file = env.dir.path().join("huge.wasm");
    // 4 GiB of holes: nothing on disk, but reading it would fill memory.
    std::fs::File::create(&file).and_then(|f| f.set_len(4 << 30)).expect("a sparse file");
    let out = add_guarded(&env, "huge", &file).fails();
    let limit = weir::plugins::MAX_COMPONENT_BYTES.to_string();
    assert!(out.stderr.contains(path(&file)) && out.stderr.contains(&limit), "names the file and the limit ({limit}): {}", out.stderr);
    assert!(out.stderr.contains(&(4u64 << 30).to_string()), "says how big the file is: {}", out.stderr);
    assert_nothing_stored(&env);
}

#[cfg(unix)]
#[test]
fn plugin_add_refuses_a_fifo_without_blocking() {
    let env = Env::new();
    let fifo = env.dir.path().join("pipe.wasm");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", fifo.display());
    // Nobody ever writes to it: opening it for reading would block for ever.
    let out = add_guarded(&env, "pipe", &fifo).fails();
    assert!(out.stderr.contains(path(&fifo)) && out.stderr.contains("not a regular file"), "{}", out.stderr);
    assert_nothing_stored(&env);
}

/// A core module of `functions` functions of `body` instructions each:
/// compiling it takes real work. Unless `valid`, the last function adds
/// values that are not there, which only validating the function body finds.
fn big_module(functions: u32, body: u32, valid: bool) -> wasm_encoder::Module {
    use wasm_encoder::{CodeSection, Function, FunctionSection, Module, TypeSection};
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    for n in 0..functions {
        funcs.function(0);
        let mut f = Function::new([]);
        let mut sink = f.instructions();
        for i in 0..body {
            sink.i32_const(i as i32).drop();
        }
        if !valid && n == functions - 1 {
            sink.i32_add();
        }
        sink.end();
        code.function(&f);
    }
    let mut module = Module::new();
    module.section(&types).section(&funcs).section(&code);
    module
}

/// A component embedding (and instantiating) `module`, importing `import`
/// (an interface) if given, and exporting nothing.
fn component_without_a_world(module: &wasm_encoder::Module, import: Option<&str>) -> Vec<u8> {
    component_exporting(module, import, None)
}

/// The same, exporting an empty instance named `export` if given: a world's
/// name without its functions.
fn component_exporting(module: &wasm_encoder::Module, import: Option<&str>, export: Option<&str>) -> Vec<u8> {
    use wasm_encoder::{Component, ComponentExportKind, ComponentExportSection, ComponentInstanceSection, InstanceSection, ModuleArg, ModuleSection};
    let mut instances = InstanceSection::new();
    instances.instantiate(0, std::iter::empty::<(&str, ModuleArg)>());
    // Start from a component that (maybe) imports `import`, then add the module.
    let mut component = match import {
        Some(interface) => component_importing(interface, "call"),
        None => Component::new().finish(),
    };
    let mut tail = Component::new();
    tail.section(&ModuleSection(module)).section(&instances);
    if let Some(name) = export {
        let mut instance = ComponentInstanceSection::new();
        instance.export_items(std::iter::empty::<(&str, ComponentExportKind, u32)>());
        let mut exports = ComponentExportSection::new();
        // After the imported instance, if any.
        exports.export(name, ComponentExportKind::Instance, u32::from(import.is_some()), None);
        tail.section(&instance).section(&exports);
    }
    // Both are complete components: splice the sections of the second after
    // the first's (the 8-byte header is the same).
    component.extend_from_slice(&tail.finish()[8..]);
    component
}

/// Every file in the compile cache directory (`.cwasm` artifacts, and any
/// temporary file a write left behind).
fn cache_files(env: &Env) -> Vec<PathBuf> {
    let cache = env.dir.path().join("weir.db.cache");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&cache) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => vec![],
    };
    files.sort();
    files
}

#[test]
fn a_refused_component_is_not_compiled_or_cached() {
    let env = Env::new();
    // A valid plug-in first: the cache directory exists and holds its artifact.
    env.add_example("noop");
    let before = cache_files(&env);
    assert!(before.len() == 1 && before[0].extension().is_some_and(|x| x == "cwasm"), "the accepted plug-in is cached: {before:?}");

    let module = big_module(1000, 300, true);
    let no_world = env.write("no-world.wasm", &component_without_a_world(&module, None));
    let out = add_guarded(&env, "no-world", &no_world).fails();
    assert!(out.stderr.contains("none of weir's worlds") && out.stderr.contains("weir:plugin/handler"), "names the missing world: {}", out.stderr);
    assert!(out.stderr.contains("no-world"), "names the plug-in: {}", out.stderr);

    let importer = env.write("importer.wasm", &component_without_a_world(&module, Some("example:evil/thing@1.0.0")));
    let out = add_guarded(&env, "importer", &importer).fails();
    assert!(out.stderr.contains("imports weir does not provide") && out.stderr.contains("example:evil/thing@1.0.0"), "names the import: {}", out.stderr);

    // Refused before compiling: the broken function inside is never looked
    // at (compiling would have failed on it with a type mismatch instead).
    let broken = big_module(10, 10, false);
    let out = add_guarded(&env, "broken", &env.write("broken.wasm", &component_without_a_world(&broken, None))).fails();
    assert!(out.stderr.contains("none of weir's worlds") && !out.stderr.contains("type mismatch"), "refused by its exports, before compiling: {}", out.stderr);
    // A WASI interface weir's linker does not define is found before compiling too.
    let http = "wasi:http/outgoing-handler@0.2.0";
    let out = add_guarded(&env, "broken", &env.write("broken-http.wasm", &component_without_a_world(&broken, Some(http)))).fails();
    assert!(
        out.stderr.contains("imports weir does not provide") && out.stderr.contains(http) && !out.stderr.contains("type mismatch"),
        "refused by its imports, before compiling: {}",
        out.stderr
    );

    // Its exports name a world but do not implement it: only compiling it shows that.
    let fake = env.write("fake-world.wasm", &component_exporting(&module, None, Some("weir:plugin/handler@0.1.0")));
    let out = add_guarded(&env, "fake-world", &fake).fails();
    assert!(out.stderr.contains("none of weir's worlds"), "{}", out.stderr);

    assert_eq!(cache_files(&env), before, "refused components leave nothing in the compile cache");
    let list = env.run(&["plugin", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "only the accepted plug-in is stored: {list}");
}

// ------------------------------------------------------------ a read-only database

/// Makes the database directory and its files read-only while alive, and
/// restores them when dropped (so the temp dir can be removed).
#[cfg(unix)]
struct ReadOnly {
    dir: PathBuf,
}

#[cfg(unix)]
impl ReadOnly {
    fn new(dir: &Path) -> ReadOnly {
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(dir).expect("the database directory") {
            let p = e.expect("an entry").path();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).expect("chmod 0444");
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).expect("chmod 0555");
        ReadOnly { dir: dir.to_path_buf() }
    }
}

#[cfg(unix)]
impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644));
            }
        }
    }
}

/// Runs weir on `env`'s database as a user who may read but not write it:
/// root ignores permission bits, so as root weir runs as `nobody` (65534).
#[cfg(unix)]
fn run_unprivileged(env: &Env, args: &[&str]) -> Run {
    let root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
    let mut c = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_weir")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_weir"))
    };
    c.arg("--db").arg(env.db()).env_remove("WEIR_DB").env_remove("WEIR_TOKEN").args(args);
    run_guarded(c)
}

#[cfg(unix)]
#[test]
fn a_read_only_database_can_be_read() {
    let env = Env::new();
    if env.is_postgres() {
        // A file's permissions: PostgreSQL's are its roles'.
        return;
    }
    env.run(&["table", "create", "thing", "--column", "name:text"]).ok();
    env.run(&["record", "create", "thing", r#"{"name":"kept"}"#]).ok();
    let tables = env.run(&["table", "list", "--json"]).ok().json();
    // A copy of the database on read-only media: no compile cache next to it,
    // no -wal or -shm (weir's last connection checkpointed and removed them).
    let _ = std::fs::remove_dir_all(env.dir.path().join("weir.db.cache"));
    for leftover in ["weir.db-wal", "weir.db-shm"] {
        assert!(!env.dir.path().join(leftover).exists(), "{leftover} was removed when weir closed the database");
    }
    let guard = ReadOnly::new(env.dir.path());

    let listed = run_unprivileged(&env, &["table", "list", "--json"]).ok().json();
    assert_eq!(listed, tables);
    let records = run_unprivileged(&env, &["record", "query", "thing"]).ok().json();
    let names: Vec<&str> = records.as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["kept"], "{records}");
    let plugins = run_unprivileged(&env, &["plugin", "list", "--json"]).ok().json();
    assert_eq!(plugins, serde_json::json!([]));

    // A write fails clearly, and nothing changed.
    let write = run_unprivileged(&env, &["record", "create", "thing", r#"{"name":"new"}"#]).fails();
    assert!(write.stderr.contains("readonly") || write.stderr.contains("read-only"), "says the database is read-only: {}", write.stderr);
    assert!(!write.stderr.contains("panicked"), "{}", write.stderr);
    drop(guard);
    let records = env.run(&["record", "query", "thing"]).ok().json();
    assert_eq!(records.as_array().map(Vec::len), Some(1), "{records}");
}

/// Hardening round 2, item 6: `record import` read without bounds
/// (`/dev/zero` grew to 24 GB, a directory read forever, a FIFO blocked).
/// It now takes what `plugin add` takes: a regular file, under a size cap,
/// read as a stream of lines of bounded length; each refusal is exit 1 with
/// the file named, and nothing is stored.
#[cfg(unix)]
#[test]
fn record_import_reads_only_regular_files_within_bounds() {
    let env = Env::new();
    env.run(&["table", "create", "thing", "--column", "name:text"]).ok();
    let import = |file: &Path| {
        let mut c = env.command();
        c.args(["record", "import", "thing", path(file)]);
        run_guarded(c)
    };
    let fifo = env.dir.path().join("pipe.jsonl");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let huge = env.dir.path().join("huge.jsonl");
    std::fs::File::create(&huge).and_then(|f| f.set_len(4 << 30)).expect("a sparse file");
    for (file, says) in
        [(Path::new("/dev/zero"), "not a regular file"), (env.dir.path(), "not a regular file"), (&fifo, "not a regular file"), (&huge, "over the limit")]
    {
        let out = import(file).fails();
        assert!(out.stderr.contains(path(file)) && out.stderr.contains(says), "{}: {}", file.display(), out.stderr);
    }
    // One endless line (2 MiB without a newline) after a good one: the good
    // one is imported, the long one refused without reading it whole.
    let long = env.dir.path().join("long.jsonl");
    let mut text = b"{\"name\": \"ok\"}\n".to_vec();
    text.extend(std::iter::repeat_n(b'x', 2 << 20));
    std::fs::write(&long, text).unwrap();
    let out = import(&long).fails();
    assert!(out.stdout.contains("line 2") && out.stdout.contains("longer than"), "{}", out.stdout);
    let stored = env.run(&["record", "query", "thing"]).ok().json();
    assert_eq!(stored.as_array().unwrap().len(), 1, "{stored}");
}
