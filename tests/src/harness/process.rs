//! A server process the harness started: spawn with output to a log file, signals, clean
//! stop, kill -9 and reaping; plus free loopback ports and bounded waits.
//!
//! Invariant: a `ServerProcess` owns its child and reaps it; every stop path ends with the
//! child waited for (never a lingering zombie), and dropping it SIGKILLs a child still running.

use std::collections::HashSet;
use std::fs::{self, File};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;

/// Ports handed out by this process, single ([`free_port`]) or in blocks
/// ([`free_port_block`]): neither ever hands out a port the other gave.
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Single ports come from here, blocks from [`BLOCKS`]: a server a test starts on a single
/// port (sshd, a daemon, a harness MariaDB) can never land inside another test's machine
/// `port_range`, which jobs fill later. (A fresh-clone run once failed when one test's sshd
/// took a port inside the compute range of a test running beside it in the same binary.)
const SINGLES: std::ops::Range<u16> = 20000..27000;
/// Where [`free_port_block`] takes machine port ranges from; below the kernel's ephemeral
/// range (32768..), so outgoing connections never take them either.
const BLOCKS: std::ops::Range<u16> = 27000..32700;

/// A free TCP port on `ip`, never handed out twice by this process. Ports come from
/// [`SINGLES`], below the kernel's ephemeral range, so outgoing connections do not take them;
/// another process may still grab one between this check and the server's bind, which is why
/// servers are started with a retry on "address in use".
pub fn free_port(ip: IpAddr) -> u16 {
    let mut rng = rand::rng();
    loop {
        let port: u16 = rng.random_range(SINGLES);
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        let given = given.get_or_insert_with(HashSet::new);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
}

/// The first port of `len` consecutive ports on `ip`, each free when checked and none handed
/// out before by this process (as a single port or in another block): a machine's
/// `port_range` (`base..=base + len - 1`) that no other test of this binary will use.
pub fn free_port_block(ip: IpAddr, len: u16) -> u16 {
    assert!(len > 0 && len < 1000, "a block of 1..1000 ports");
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let base: u16 = rng.random_range(BLOCKS.start..BLOCKS.end - len);
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        let given = given.get_or_insert_with(HashSet::new);
        let ports = base..base + len;
        if ports.clone().any(|p| given.contains(&p)) {
            continue;
        }
        if ports
            .clone()
            .all(|p| TcpListener::bind(SocketAddr::new(ip, p)).is_ok())
        {
            given.extend(ports);
            return base;
        }
    }
    panic!("no block of {len} free ports on {ip} in {BLOCKS:?}");
}

/// Polls `check` every 20 ms until it returns `Ok(true)`, failing after `limit` with `what`
/// and the last error seen.
pub(crate) fn wait_until(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut last_err = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            match last_err {
                Some(e) => bail!("timed out after {limit:?} waiting for {what}: {e:#}"),
                None => bail!("timed out after {limit:?} waiting for {what}"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True if something accepts TCP connections on `addr`.
pub(crate) fn port_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// A child server process with its log file.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ServerProcess {
    /// Spawns `cmd` with stdin closed and stdout/stderr appended to `log`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<ServerProcess> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(ServerProcess {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The PID if the child has not exited.
    pub(crate) fn running_pid(&mut self) -> Option<u32> {
        if self.is_running() {
            self.pid()
        } else {
            None
        }
    }

    /// True while the child has not exited (reaps it if it has).
    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Fails with the log tail if the child has exited.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        bail!(
            "{} exited; log {}:\n{}",
            self.name,
            self.log.display(),
            log_tail(&self.log, 30)
        )
    }

    /// Sends `sig` to the running child.
    pub(crate) fn signal(&mut self, sig: Signal) -> Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        kill(Pid::from_raw(pid as i32), sig)
            .with_context(|| format!("sending {sig} to {} (pid {pid})", self.name))
    }

    /// SIGSTOP, returning once the kernel reports the process stopped (signal delivery is
    /// asynchronous, and a test that pauses a server expects it paused on return).
    pub(crate) fn pause(&mut self) -> Result<()> {
        self.signal(Signal::SIGSTOP)?;
        let pid = self.pid().context("not running")?;
        wait_until("the process to stop", Duration::from_secs(10), || {
            Ok(process_state(pid) == Some('T'))
        })
    }

    /// SIGCONT, returning once the process is no longer stopped.
    pub(crate) fn resume(&mut self) -> Result<()> {
        self.signal(Signal::SIGCONT)?;
        let pid = self.pid().context("not running")?;
        wait_until("the process to continue", Duration::from_secs(10), || {
            Ok(process_state(pid) != Some('T'))
        })
    }

    /// SIGKILL and reap. A stopped (SIGSTOP) child dies from SIGKILL too.
    pub(crate) fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child
                .wait()
                .with_context(|| format!("reaping {}", self.name))?;
        }
        Ok(())
    }

    /// SIGTERM (after SIGCONT, in case it was paused), wait up to `limit`, then SIGKILL.
    /// Returns an error if the process had to be killed.
    pub(crate) fn terminate(&mut self, limit: Duration) -> Result<()> {
        self.terminate_with(Signal::SIGTERM, limit)
    }

    /// Like [`ServerProcess::terminate`] with another stop signal (PostgreSQL: SIGINT).
    pub(crate) fn terminate_with(&mut self, sig: Signal, limit: Duration) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, sig);
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    self.child = None;
                    return Ok(());
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    self.kill9()?;
                    bail!("{} did not stop within {limit:?}; killed", self.name);
                }
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Whether process `pid` runs: it exists and is neither a zombie nor dead (a killed server
/// not yet reaped by init still answers `kill -0`; the recipes do not count it as running,
/// and neither do the tests).
pub fn pid_running(pid: u32) -> bool {
    process_state(pid).is_some_and(|c| c != 'Z' && c != 'X')
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T` stopped, `Z` zombie, …).
pub(crate) fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Runs a short command to completion, failing with its output if it exits non-zero.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
