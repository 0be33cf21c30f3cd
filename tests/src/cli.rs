//! The real binaries for the tests that run them: [`bin`] (built fresh once per test process)
//! and a runner for `kunlunctl` ([`ctl`], [`run`]); the daemon itself is
//! [`crate::daemon::Daemon`].
//!
//! Invariant: a `kunlunctl` run never reads the caller's `KUNLUNCTL_SERVER`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// Path of a binary of this workspace (`cluster-mgr`, `kunlunctl`), built once per test process
/// so the tests never run a binary older than the sources (`crate::bin_path` alone only
/// builds a missing one). A no-op build takes well under a second.
pub fn bin(name: &str) -> PathBuf {
    static FRESH: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut fresh = FRESH.lock().unwrap_or_else(|e| e.into_inner());
    if !fresh.iter().any(|n| n == name) {
        let package = if name == "cluster-mgr" {
            "cluster-mgr-bin"
        } else {
            name
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // `-p`: from this package's directory a bare `--bin` only sees kunlun-tests.
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", package, "--bin", name])
            .status()
            .expect("run cargo build for the CLI tests");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {name} failed: {status}"
        );
        fresh.push(name.to_string());
    }
    crate::bin_path(name)
}

/// A free port on 127.0.0.1 that nothing listens on.
pub fn free_port() -> u16 {
    crate::free_port([127, 0, 0, 1].into())
}

/// What one `kunlunctl` run produced.
#[derive(Debug)]
pub struct Ctl {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ctl {
    /// Panics with the whole output unless the run exited 0.
    pub fn ok(self) -> Ctl {
        assert_eq!(self.code, 0, "kunlunctl failed: {self:#?}");
        self
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }
}

/// Runs `kunlunctl --server URL ARGS...` with `KUNLUNCTL_SERVER` unset.
pub fn ctl(server: &str, args: &[&str]) -> Ctl {
    let mut cmd = Command::new(bin("kunlunctl"));
    cmd.arg("--server")
        .arg(server)
        .args(args)
        .env_remove("KUNLUNCTL_SERVER");
    run(cmd)
}

/// Runs a prepared `kunlunctl` command; its own `--timeout` (30 s by default) bounds each request.
pub fn run(mut cmd: Command) -> Ctl {
    let out: Output = cmd.stdin(Stdio::null()).output().expect("spawn kunlunctl");
    Ctl {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temp dir for one test's daemon(s): its SQLite file and logs.
pub fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kunlun-cli-")
        .tempdir()
        .expect("tempdir")
}
