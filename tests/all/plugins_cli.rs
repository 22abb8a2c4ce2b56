//! `weir plugin add|list` through the real binary: the example guests load with
//! their worlds; bad files are refused with exit 1, a reason, and nothing stored.

use crate::common::{Env, path};

const ALL: &[(&str, &str)] = &[
    ("credit-check", "plugin"),
    ("set-defaults", "plugin"),
    ("audit-trail", "plugin"),
    ("ping-pong", "plugin"),
    ("spin-forever", "hybrid"),
    ("memory-hog", "hybrid"),
    ("deep-recursion", "hybrid"),
    ("panicker", "hybrid"),
];

#[test]
fn example_guests_load_and_list_with_their_world() {
    let env = Env::new();
    for (name, world) in ALL {
        let f = env.example_file(name);
        let out = env.run(&["plugin", "add", name, path(&f), "--json"]).ok().json();
        assert_eq!(out["world"], *world, "{name}");
        assert_eq!(out["version"], 1);
    }
    let list = env.run(&["plugin", "list", "--json"]).ok().json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), ALL.len());
    // Re-adding makes a new version.
    let f = env.example_file("credit-check");
    let out = env.run(&["plugin", "add", "credit-check", path(&f)]).ok();
    assert!(out.stdout.contains("version 2"), "{}", out.stdout);
    let text = env.run(&["plugin", "list"]).ok().stdout;
    assert!(text.contains("credit-check") && text.contains("hybrid"), "{text}");
    // The compiled artifact was cached on disk.
    let cache = env.dir.path().join("weir.db.cache");
    assert!(std::fs::read_dir(cache).unwrap().count() >= ALL.len());
}

#[test]
fn bad_files_are_refused_and_nothing_is_stored() {
    let env = Env::new();
    let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("random", random, "not a wasm component"),
        // A valid core module (the empty module).
        ("core", b"\0asm\x01\0\0\0".to_vec(), "not a component"),
        // A valid component that implements no weir world.
        ("empty", b"\0asm\x0d\0\x01\0".to_vec(), "none of weir's worlds"),
        ("empty-file", vec![], "not a wasm component"),
    ];
    for (name, bytes, why) in cases {
        let f = env.write(&format!("{name}.wasm"), &bytes);
        let out = env.run(&["plugin", "add", name, path(&f)]).fails();
        assert!(out.stderr.contains(why), "{name}: {}", out.stderr);
        assert!(out.stderr.contains(name), "the error names the plug-in: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    let missing = env.run(&["plugin", "add", "x", "/nonexistent/file.wasm"]).fails();
    assert!(missing.stderr.contains("cannot read /nonexistent/file.wasm"), "{}", missing.stderr);
    let bad_name = env.run(&["plugin", "add", "Bad Name", path(&env.example_file("notify"))]).fails();
    assert!(bad_name.stderr.contains("bad plug-in name"), "{}", bad_name.stderr);
    let list = env.run(&["plugin", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 0, "nothing was stored");
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    assert_eq!(env.run(&["plugin", "frobnicate"]).code, 2);
    assert_eq!(env.run(&["plugin", "add"]).code, 2);
}

#[test]
fn the_compile_cache_is_shared_by_every_database_of_a_user() {
    let env = Env::new();
    let home = env.dir.path().join("home");
    let f = env.example_file("credit-check");
    let add = |db: &str| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
        c.env_remove("WEIR_CACHE_DIR").env_remove("WEIR_DB").env("XDG_CACHE_HOME", &home).args(["--db", db, "plugin", "add", "credit-check", path(&f)]);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let cache = home.join("weir").join("components");
    // Each artifact with its inode: a recompile renames a new file into place.
    let artifacts = || -> Vec<(std::path::PathBuf, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut v: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap()).map(|e| (e.path(), e.metadata().unwrap().ino())).collect();
        v.sort();
        v
    };
    add(env.dir.path().join("a.db").to_str().unwrap());
    let first = artifacts();
    assert_eq!(first.len(), 1, "one artifact in the user's cache: {first:?}");
    assert!(!env.dir.path().join("a.db.cache").exists(), "nothing beside the database");
    // Another database loads the same component from the shared artifact: no second compile.
    add(env.dir.path().join("b.db").to_str().unwrap());
    assert_eq!(artifacts(), first, "the second database reused the artifact");
}

#[test]
fn a_compile_cache_others_can_write_is_neither_read_nor_written() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let open = env.dir.path().join("open-cache");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let f = env.example_file("credit-check");
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env_remove("WEIR_DB").env("WEIR_CACHE_DIR", &open).args(["--db", env.db().to_str().unwrap(), "plugin", "add", "credit-check", path(&f)]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "the plug-in is added all the same: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0, "no native code left where anyone could swap it");
    // A cache of its own is made private to the user.
    env.run(&["plugin", "add", "credit-check", path(&f)]).ok();
    let own = std::fs::metadata(env.dir.path().join("weir.db.cache")).unwrap().permissions().mode() & 0o777;
    assert_eq!(own, 0o700);
}
