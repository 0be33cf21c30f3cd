//! `bin_path`: the workspace binaries (`cluster-mgr`, `kunlunctl`) for tests that run them.
//!
//! Invariant: the path returned is in the same target profile directory as the running test
//! executable and the file exists (it is built first when missing).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// `target/<profile>/<name>` next to the running test executable (which lives in
/// `target/<profile>/deps`); runs `$CARGO build --bin <name>` first if it does not exist.
/// Panics with the reason if it cannot be found or built (tests must not skip).
pub fn bin_path(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe
        .parent()
        .expect("the test executable's directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--bin", name]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("running cargo build --bin {name}: {e}"));
        assert!(
            status.success(),
            "cargo build --bin {name} failed: {status}"
        );
        assert!(
            path.exists(),
            "cargo build --bin {name} succeeded but {} does not exist",
            path.display()
        );
    }
    path
}
