//! Shared by the `cli_*` tests: the real `cluster-mgr` daemon on a free loopback port with a
//! temp SQLite file, and a runner for the real `kunlunctl` binary.
//!
//! Invariant: every daemon started here is owned by a [`Daemon`] value and is stopped by its PID
//! when the value drops, also when a test panics half-way.

#![allow(dead_code)] // each test file uses a different part of this module

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Path of a binary of this workspace (`cluster-mgr`, `kunlunctl`), built once per test process
/// so the tests never run a binary older than the sources (`kunlun_tests::bin_path` alone only
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
    kunlun_tests::bin_path(name)
}

/// A free port on 127.0.0.1 that nothing listens on.
pub fn free_port() -> u16 {
    kunlun_tests::free_port([127, 0, 0, 1].into())
}

/// A `cluster-mgr` process serving HTTP on 127.0.0.1:`port` with its metadata in `sqlite`.
pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    pub sqlite: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon on a free port and waits until `/healthz` answers 200. Retries on
    /// another port if the chosen one was taken in between.
    pub fn start(workdir: &Path, sqlite: &Path) -> Result<Daemon> {
        Self::start_with(workdir, sqlite, &[])
    }

    /// [`Daemon::start`] with extra `cluster_mgr.cnf` lines (`key = value`). Unless they set
    /// them, the harness sets `ssh_keys_dir` to the harness root (every harness sshd's key pair
    /// lives under it) and `ssh_host_key_policy = accept-new` (the harness sshds are new hosts
    /// each run; the tests of the strict policy set it themselves).
    pub fn start_with(workdir: &Path, sqlite: &Path, extra: &[&str]) -> Result<Daemon> {
        let mut lines: Vec<String> = extra.iter().map(|l| l.to_string()).collect();
        let sets = |key: &str| extra.iter().any(|l| l.trim_start().starts_with(key));
        if !sets("ssh_keys_dir") {
            lines.push(format!(
                "ssh_keys_dir = {}",
                kunlun_tests::harness::harness_root().display()
            ));
        }
        if !sets("ssh_host_key_policy") {
            lines.push("ssh_host_key_policy = accept-new".to_string());
        }
        let mut last = None;
        for attempt in 0..3 {
            match Self::start_on(workdir, sqlite, free_port(), attempt, &lines) {
                Ok(d) => return Ok(d),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("daemon did not start")))
    }

    fn start_on(
        workdir: &Path,
        sqlite: &Path,
        port: u16,
        attempt: u32,
        cnf_lines: &[String],
    ) -> Result<Daemon> {
        let log = workdir.join(format!("cluster-mgr-{port}-{attempt}.log"));
        let cnf = workdir.join(format!("cluster-mgr-{port}-{attempt}.cnf"));
        std::fs::write(&cnf, cnf_lines.join("\n") + "\n")
            .with_context(|| format!("write {}", cnf.display()))?;
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(bin("cluster-mgr"))
            .arg("--config")
            .arg(&cnf)
            .args([
                "--http-bind",
                "127.0.0.1",
                "--http-port",
                &port.to_string(),
                "--sqlite-path",
            ])
            .arg(sqlite)
            // Its defaults (./data/) must never land in the repository.
            .current_dir(workdir)
            .env_remove("KUNLUN_CLUSTER_MGR_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("spawn cluster-mgr")?;
        let mut d = Daemon {
            child: Some(child),
            port,
            sqlite: sqlite.to_path_buf(),
            log,
        };
        d.wait_healthy(Duration::from_secs(60))?;
        Ok(d)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_healthy(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "cluster-mgr exited with {status} before answering:\n{}",
                        self.log_tail()
                    );
                }
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                if let Ok(r) = http.get(format!("{}/healthz", self.url())).send() {
                    if r.status().is_success() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "cluster-mgr did not answer /healthz within {limit:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops the daemon with SIGTERM (graceful shutdown), SIGKILL after 10 s; returns whether it
    /// stopped on SIGTERM.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
