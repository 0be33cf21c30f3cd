//! [`Daemon`]: one real `cluster-mgr` process for the tests that drive the binary (HTTP API,
//! CLI, TLS, leadership, faults): the binary path, the cnf, the port, the wait for
//! `/healthz`, requests, job polls, the log tail in every failure message, and the stop.
//!
//! Invariant: every process started here is owned by a [`Daemon`] value and is stopped by its
//! PID when the value drops (SIGKILL, or SIGTERM first with
//! [`DaemonBuilder::term_on_drop`]), also when a test panics half-way. Its output goes to a log
//! file of its own, so a failure shows what the daemon said.

use std::ffi::OsString;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::blocking::Client;
use serde_json::Value;

use crate::cli::{bin, free_port};

/// Writes `lines` (`key = value`) as a `cluster_mgr.cnf` at `path`.
pub fn write_cnf(path: &Path, lines: &[String]) -> Result<()> {
    std::fs::write(path, lines.join("\n") + "\n")
        .with_context(|| format!("write {}", path.display()))
}

/// A plain HTTP client with a per-request timeout.
pub fn http(timeout: Duration) -> Client {
    Client::builder()
        .timeout(timeout)
        .build()
        .expect("http client")
}

/// How to run one `cluster-mgr`; see [`Daemon::command`].
pub struct DaemonBuilder {
    dir: PathBuf,
    name: String,
    args: Vec<OsString>,
    port: u16,
    log: PathBuf,
    https: Option<Client>,
    term_on_drop: bool,
    binary: Option<PathBuf>,
}

impl DaemonBuilder {
    /// Runs this `cluster-mgr` binary (a benchmark's release build) instead of
    /// [`bin`]`("cluster-mgr")`.
    pub fn binary(mut self, path: &Path) -> Self {
        self.binary = Some(path.to_path_buf());
        self
    }

    /// The name failure messages give it (`cluster-mgr` unless set).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Appends command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--config PATH`.
    pub fn config(self, cnf: &Path) -> Self {
        self.args([OsString::from("--config"), cnf.as_os_str().to_owned()])
    }

    /// The port it serves on (set by the arguments or the cnf): where URLs point.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Where its stdout and stderr go (`DIR/cluster-mgr.log` unless set).
    pub fn log(mut self, log: PathBuf) -> Self {
        self.log = log;
        self
    }

    /// It serves HTTPS: URLs say `https` and `/healthz` is asked with `client` (which trusts
    /// the test's CA and may present a client certificate).
    pub fn https(mut self, client: Client) -> Self {
        self.https = Some(client);
        self
    }

    /// On drop, SIGTERM first (10 s to shut down gracefully), then SIGKILL.
    pub fn term_on_drop(mut self) -> Self {
        self.term_on_drop = true;
        self
    }

    /// Starts the process (current dir: the builder's dir, so its defaults such as `./data/`
    /// never land in the repository) without waiting for it.
    pub fn spawn(self) -> Result<Daemon> {
        let out =
            File::create(&self.log).with_context(|| format!("create {}", self.log.display()))?;
        let err = out.try_clone()?;
        let program = self.binary.unwrap_or_else(|| bin("cluster-mgr"));
        let child = Command::new(program)
            .args(&self.args)
            .current_dir(&self.dir)
            .env_remove("KUNLUN_CLUSTER_MGR_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("spawn cluster-mgr")?;
        let scheme = if self.https.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(Daemon {
            base: format!("{scheme}://127.0.0.1:{}", self.port),
            health: self.https,
            name: self.name,
            child: Some(child),
            port: self.port,
            log: self.log,
            term_on_drop: self.term_on_drop,
        })
    }

    /// [`spawn`](Self::spawn), then waits (60 s) until `/healthz` answers 200.
    pub fn start(self) -> Result<Daemon> {
        let mut d = self.spawn()?;
        d.wait_healthy(Duration::from_secs(60))?;
        Ok(d)
    }
}

/// A running `cluster-mgr`; see the module doc.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    pub port: u16,
    base: String,
    log: PathBuf,
    /// The client `/healthz` is asked with when it serves HTTPS.
    health: Option<Client>,
    term_on_drop: bool,
}

impl Daemon {
    /// A daemon to run in `dir` serving on `port`.
    pub fn command(dir: &Path, port: u16) -> DaemonBuilder {
        DaemonBuilder {
            dir: dir.to_path_buf(),
            name: "cluster-mgr".to_string(),
            args: Vec::new(),
            port,
            log: dir.join("cluster-mgr.log"),
            https: None,
            term_on_drop: false,
            binary: None,
        }
    }

    /// Starts the daemon on a free 127.0.0.1 port with its metadata in `sqlite` and waits
    /// until `/healthz` answers 200. Retries on another port if the chosen one was taken in
    /// between.
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
                crate::harness::harness_root().display()
            ));
        }
        if !sets("ssh_host_key_policy") {
            lines.push("ssh_host_key_policy = accept-new".to_string());
        }
        let mut last = None;
        for attempt in 0..3 {
            let port = free_port();
            let cnf = workdir.join(format!("cluster-mgr-{port}-{attempt}.cnf"));
            write_cnf(&cnf, &lines)?;
            let started = Self::command(workdir, port)
                .log(workdir.join(format!("cluster-mgr-{port}-{attempt}.log")))
                .config(&cnf)
                .args(["--http-bind", "127.0.0.1", "--http-port", &port.to_string()])
                .args([
                    OsString::from("--sqlite-path"),
                    sqlite.as_os_str().to_owned(),
                ])
                .start();
            match started {
                Ok(d) => return Ok(d),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("daemon did not start")))
    }

    /// The name failure messages give it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:PORT` (or `https://…`).
    pub fn url(&self) -> String {
        self.base.clone()
    }

    /// [`url`](Self::url) followed by `path` (`/v1/…`).
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id; panics when it was stopped.
    pub fn pid(&self) -> Pid {
        let c = self.child.as_ref().expect("daemon running");
        Pid::from_raw(i32::try_from(c.id()).expect("pid fits i32"))
    }

    /// Its exit status if it has exited (and it is then no longer owned).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(st)
    }

    /// Waits until `/healthz` answers 200; fails with the log tail when the process exits first
    /// or `limit` passes.
    pub fn wait_healthy(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let http = match &self.health {
            Some(c) => c.clone(),
            None => http(Duration::from_secs(2)),
        };
        loop {
            if let Some(status) = self.try_exit() {
                bail!(
                    "{} exited with {status} before answering:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                if let Ok(r) = http.get(self.url_for("/healthz")).send() {
                    if r.status().is_success() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer /healthz within {limit:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET `path`: status and JSON body (0 and `Null` when the daemon does not answer).
    pub fn get(&self, http: &Client, path: &str) -> (u16, Value) {
        match http.get(self.url_for(path)).send() {
            Ok(r) => (r.status().as_u16(), r.json().unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    /// POST `body` as JSON to `path`: status and JSON body; panics when nothing answers.
    pub fn post(&self, http: &Client, path: &str, body: &Value) -> (u16, Value) {
        let r = http
            .post(self.url_for(path))
            .json(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.log_tail()));
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    /// Polls `GET path` until `pred` holds; panics with the log when the daemon exits or after
    /// `limit`.
    pub fn wait_for(
        &mut self,
        http: &Client,
        path: &str,
        limit: Duration,
        pred: impl Fn(u16, &Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_exit() {
                panic!("{} exited with {st}:\n{}", self.name, self.log_text());
            }
            let (st, body) = self.get(http, path);
            if pred(st, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{}: GET {path} still {st} {body} after {limit:?}:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls job `id` until `pred` holds on it; panics with the log tail after `limit`.
    pub fn wait_job(&self, id: i64, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let http = http(Duration::from_secs(10));
        let deadline = Instant::now() + limit;
        loop {
            let (_, j) = self.get(&http, &format!("/v1/jobs/{id}"));
            if pred(&j) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {j} after {limit:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 30 lines of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILL and reap (a crash, as far as the daemon can tell).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` and waits for the exit status (at most 20 s, then SIGKILL and a panic).
    pub fn stop_with(&mut self, sig: Signal) -> ExitStatus {
        let pid = self.pid();
        let mut child = self.child.take().expect("daemon running");
        kill(pid, sig).expect("signal cluster-mgr");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within 20 s of {sig}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon with SIGTERM (graceful shutdown), SIGKILL after 10 s; returns whether
    /// it stopped on SIGTERM.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
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
        if self.term_on_drop {
            self.stop();
        } else {
            // A stopped (SIGSTOP) process still dies of SIGKILL.
            self.kill9();
        }
    }
}
