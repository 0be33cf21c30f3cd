//! `Postgres`: a real PostgreSQL 15 server on 127.0.0.1, run as the `postgres` user (initdb
//! refuses root), trust authentication for the `postgres` role.
//!
//! Invariant: the datadir is a copy of a per-process template made by `initdb`, owned by
//! `postgres` with mode 0700; the postmaster is our direct child (privileges dropped with
//! `setuid` in the spawn rather than through `runuser`, which would fork and leave us holding
//! the wrong PID), so stop and kill go to the right process.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::{chown, User};

use super::process::{free_port, log_tail, port_open, run, wait_until, ServerProcess};
use super::workdir::InstanceDir;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const START_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// A running PostgreSQL server; stopped (by PID) and removed on drop.
#[derive(Debug)]
pub struct Postgres {
    process: Mutex<Option<ServerProcess>>,
    port: AtomicU16,
    user: User,
    dir: InstanceDir,
}

fn pg_user() -> Result<User> {
    User::from_name("postgres")
        .context("looking up the postgres user")?
        .context("no `postgres` user on this machine (install postgresql)")
}

/// Makes `path` (a directory) owned by postgres with `mode`.
fn give_to_postgres(path: &Path, user: &User, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown postgres {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn as_postgres(cmd: &mut Command, user: &User, cwd: &Path) {
    cmd.uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .current_dir(cwd)
        .env("HOME", cwd)
        .env("USER", "postgres");
}

fn template() -> Result<&'static Path> {
    static TEMPLATE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let made = TEMPLATE.get_or_init(|| make_template().map_err(|e| format!("{e:#}")));
    match made {
        Ok(p) => Ok(p.as_path()),
        Err(e) => Err(anyhow!(
            "creating the PostgreSQL template datadir failed: {e}"
        )),
    }
}

fn make_template() -> Result<PathBuf> {
    let user = pg_user()?;
    // Leaked: lives as long as the process, swept by the next run.
    let dir = Box::leak(Box::new(InstanceDir::new("postgres-template")?));
    let data = dir.path().join("data");
    fs::create_dir(&data)?;
    give_to_postgres(&data, &user, 0o700)?;
    let mut cmd = Command::new(format!("{PG_BIN}/initdb"));
    cmd.arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
        .arg("--no-sync");
    as_postgres(&mut cmd, &user, dir.path());
    run(&mut cmd).context("initdb")?;
    Ok(data)
}

impl Postgres {
    /// Copies the template datadir, starts the server on a free port and waits until it
    /// answers `SELECT 1`.
    pub fn start() -> Result<Postgres> {
        let template = template()?;
        let user = pg_user()?;
        let dir = InstanceDir::new("postgres")?;
        run(Command::new("cp")
            .arg("-a")
            .arg(template)
            .arg(dir.path().join("data")))?;
        let sock = dir.path().join("run");
        fs::create_dir(&sock)?;
        give_to_postgres(&sock, &user, 0o755)?;
        let pg = Postgres {
            process: Mutex::new(None),
            port: AtomicU16::new(0),
            user,
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            pg.port.store(
                free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                Ordering::Relaxed,
            );
            match pg.launch() {
                Ok(()) => return Ok(pg),
                Err(e) => {
                    let in_use = log_tail(&pg.log(), 50).contains("Address already in use");
                    if !in_use || attempt >= 5 {
                        return Err(e);
                    }
                    pg.kill9()?;
                }
            }
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn lock(&self) -> MutexGuard<'_, Option<ServerProcess>> {
        self.process.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn launch(&self) -> Result<()> {
        let mut cmd = Command::new(format!("{PG_BIN}/postgres"));
        cmd.arg("-D")
            .arg(self.datadir())
            .arg("-p")
            .arg(self.port().to_string())
            .arg("-k")
            .arg(self.dir.path().join("run"))
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "max_connections=100"]);
        as_postgres(&mut cmd, &self.user, self.dir.path());
        let mut guard = self.lock();
        *guard = Some(ServerProcess::spawn("postgres", cmd, &self.log())?);
        let process = guard.as_mut().context("just spawned")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()));
        let res = wait_until("PostgreSQL to accept connections", START_LIMIT, || {
            process.ensure_running()?;
            Ok(port_open(addr) && self.sql("SELECT 1").is_ok())
        });
        drop(guard);
        res.with_context(|| {
            format!(
                "starting PostgreSQL on port {} ({}); log:\n{}",
                self.port(),
                self.dir.path().display(),
                log_tail(&self.log(), 30)
            )
        })
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// Host to connect to: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres` (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port())
    }

    /// The datadir (owned by `postgres`).
    pub fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The postmaster's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut g = self.lock();
        g.as_mut().and_then(ServerProcess::running_pid)
    }

    /// Runs SQL with `psql` over TCP as `postgres` in database `postgres`; returns unaligned,
    /// tuples-only output (`|`-separated columns, one row per line).
    pub fn sql(&self, sql: &str) -> Result<String> {
        run(Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .arg("-p")
            .arg(self.port().to_string())
            .arg("-c")
            .arg(sql)
            .env("PGCONNECT_TIMEOUT", "10"))
        .with_context(|| format!("SQL on PostgreSQL port {}: {sql}", self.port()))
    }

    /// `kill -9` the postmaster and reap it (its backends exit on their own).
    pub fn kill9(&self) -> Result<()> {
        match self.lock().as_mut() {
            Some(p) => p.kill9(),
            None => Ok(()),
        }
    }

    /// Fast shutdown (SIGINT), waiting for it.
    pub fn stop(&self) -> Result<()> {
        match self.lock().as_mut() {
            Some(p) => p.terminate_with(Signal::SIGINT, STOP_LIMIT),
            None => Ok(()),
        }
    }

    /// Starts again on the same datadir and port (stopping first if running).
    pub fn restart(&self) -> Result<()> {
        if self.pid().is_some() {
            self.stop()?;
        }
        self.launch()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown lets the backends go with the postmaster; kill -9 if it hangs.
        if let Some(p) = self.lock().as_mut() {
            let _ = p.terminate_with(Signal::SIGINT, Duration::from_secs(10));
        }
    }
}
