//! Helpers for the end-to-end tests: run the real `weir` binary on a real SQLite
//! file in a temporary directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Env {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success; stderr: {}\nstdout: {}", self.stderr, self.stdout);
        self
    }
    #[track_caller]
    pub fn fails(self) -> Run {
        assert_eq!(self.code, 1, "expected exit 1; stderr: {}\nstdout: {}", self.stderr, self.stdout);
        self
    }
}

impl Env {
    pub fn new() -> Env {
        Env { dir: tempfile::tempdir().expect("a temp dir") }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("weir.db")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
        c.arg("--db").arg(self.db()).env_remove("WEIR_DB").env_remove("WEIR_TOKEN");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self.command().args(args).output().expect("weir runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Writes an example plug-in to a file and returns its path.
    pub fn example_file(&self, name: &str) -> PathBuf {
        self.write(&format!("{name}.wasm"), weir::examples::wasm(name).expect("example exists"))
    }

    pub fn write(&self, file: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(file);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    pub fn add_example(&self, name: &str) {
        let f = self.example_file(name);
        self.run(&["plugin", "add", name, path(&f)]).ok();
    }
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
