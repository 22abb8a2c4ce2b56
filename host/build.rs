//! Builds the example plug-ins in `guest-examples/` and the test fixtures in
//! `tests/guests/` (one workspace) for wasm32-wasip2 and embeds them in the weir
//! binary (`weir demo` and the tests use them), so a fresh clone needs no
//! manual step beyond `rustup target add wasm32-wasip2`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.parent().expect("host/ lives in the workspace").to_path_buf();
    let guests = root.join("guest-examples");
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));

    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    // The SDK `weir plugin new` vendors (include_str!): its copy of the WIT must be the contract's.
    for file in ["types.wit", "worlds.wit"] {
        let (contract, copy) = (root.join("wit").join(file), guests.join("weir-guest/wit").join(file));
        println!("cargo:rerun-if-changed={}", copy.display());
        if fs::read(&contract).ok() != fs::read(&copy).ok() {
            panic!("{} differs from {}: copy the contract into the SDK", copy.display(), contract.display());
        }
    }
    println!("cargo:rerun-if-changed={}", guests.join("Cargo.toml").display());
    println!("cargo:rerun-if-changed={}", guests.join("Cargo.lock").display());
    let mut crates = Vec::new();
    // The examples, and the test fixtures built in the same workspace.
    let fixtures = root.join("tests").join("guests");
    // The exports the misbehaving fixtures share (each includes it).
    println!("cargo:rerun-if-changed={}", fixtures.join("misbehave.rs").display());
    let dirs = fs::read_dir(&guests).expect("guest-examples/ is readable").chain(fs::read_dir(&fixtures).expect("tests/guests/ is readable"));
    for entry in dirs {
        let dir = entry.expect("a guest directory entry").path();
        if dir.join("Cargo.toml").is_file() {
            println!("cargo:rerun-if-changed={}", dir.join("Cargo.toml").display());
            println!("cargo:rerun-if-changed={}", dir.join("src").display());
            if dir.join("wit").is_dir() {
                println!("cargo:rerun-if-changed={}", dir.join("wit").display());
            }
            let name = dir.file_name().expect("a crate dir").to_string_lossy().into_owned();
            let is_lib_only = name == "weir-guest";
            if !is_lib_only {
                crates.push(name);
            }
        }
    }
    crates.sort();

    // A nested cargo must not inherit the outer build's settings (target, flags, jobserver).
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    for (key, _) in env::vars() {
        let inherited = key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE";
        if inherited || key.starts_with("RUSTC") || key == "RUSTFLAGS" || key == "RUSTDOC" {
            cmd.env_remove(&key);
        }
    }
    let target_dir = guests.join("target");
    cmd.current_dir(&guests).args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"]).arg(&target_dir);
    let output = cmd.output().expect("cannot run cargo to build guest-examples");
    if !output.status.success() {
        panic!(
            "building guest-examples for wasm32-wasip2 failed.\n\
             If the target is missing, run `rustup target add wasm32-wasip2`.\n\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let built = target_dir.join("wasm32-wasip2").join("release");
    let dest = out.join("guests");
    fs::create_dir_all(&dest).expect("OUT_DIR is writable");
    let mut table = String::from("/// The example plug-ins, by name, as wasm components.\n");
    table.push_str("pub const EXAMPLES: &[(&str, &[u8])] = &[\n");
    for name in &crates {
        let file = format!("{}.wasm", name.replace('-', "_"));
        let copied = copy(&built.join(&file), &dest.join(&file));
        writeln!(table, "    ({name:?}, include_bytes!({:?})),", copied.display().to_string()).unwrap();
    }
    table.push_str("];\n");
    fs::write(out.join("examples.rs"), table).expect("OUT_DIR is writable");
}

fn copy(from: &Path, to: &Path) -> PathBuf {
    fs::copy(from, to).unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
    to.to_path_buf()
}
