//! `MariaDb`: one real MariaDB server on 127.0.0.1 with its own datadir (copied from a
//! template made once per test process), port, socket and `server_id`; binary log with GTID,
//! optional lossless semi-sync.
//!
//! Invariant: the server process is owned by the value and stopped by PID when it is dropped;
//! `restart` always reuses the same datadir and port, so data and GTID positions survive
//! kill -9 and clean stops alike.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use super::process::{free_port, log_tail, port_open, run, wait_until, ServerProcess};
use super::workdir::InstanceDir;

const MARIADBD: &str = "/usr/sbin/mariadbd";
const START_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// How to start a [`MariaDb`].
#[derive(Debug, Clone)]
pub struct MariaDbOptions {
    /// Enable both semi-sync master and slave plugins (built in), wait point `AFTER_SYNC`.
    pub semi_sync: bool,
    /// `rpl_semi_sync_master_timeout` in milliseconds (how long a commit waits for an ack
    /// before falling back to async).
    pub semi_sync_timeout_ms: u64,
    /// Extra `mariadbd` arguments, appended last so they override the harness defaults.
    pub extra_args: Vec<String>,
    /// Run `mariadbd` inside this network namespace (`ip netns exec`), listening on
    /// `bind_address`; `None` runs it here on 127.0.0.1.
    pub netns: Option<String>,
    /// Address to listen on and connect to (default 127.0.0.1).
    pub bind_address: Option<String>,
    /// A data dir to copy and start on (e.g. a restored backup) instead of a fresh one.
    pub datadir_from: Option<PathBuf>,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        MariaDbOptions {
            semi_sync: false,
            semi_sync_timeout_ms: 10_000,
            extra_args: Vec::new(),
            netns: None,
            bind_address: None,
            datadir_from: None,
        }
    }
}

/// A running (or deliberately stopped/killed) MariaDB server. All methods take `&self` so a
/// test can share it (e.g. inside a [`super::ReplicaSet`] or an `Arc`).
#[derive(Debug)]
pub struct MariaDb {
    process: Mutex<Option<ServerProcess>>,
    port: AtomicU16,
    server_id: u32,
    options: MariaDbOptions,
    dir: InstanceDir,
}

/// The template datadir of this process: `mariadb-install-db` once (root without password on
/// localhost, 127.0.0.1, ::1 and '%'), then copied per instance.
fn template() -> Result<&'static Path> {
    static TEMPLATE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let made = TEMPLATE.get_or_init(|| make_template().map_err(|e| format!("{e:#}")));
    match made {
        Ok(p) => Ok(p.as_path()),
        Err(e) => Err(anyhow!("creating the MariaDB template datadir failed: {e}")),
    }
}

fn make_template() -> Result<PathBuf> {
    // Leaked on purpose: the template lives as long as the process; the next run's sweep
    // removes it with the rest of the owner directory.
    let dir = Box::leak(Box::new(InstanceDir::new("mariadb-template")?));
    let datadir = dir.path().join("data");
    fs::create_dir(&datadir)?;
    let extra = dir.path().join("extra.sql");
    fs::write(
        &extra,
        "INSERT INTO mysql.global_priv SELECT '%', User, Priv FROM mysql.global_priv \
         WHERE User='root' AND Host='127.0.0.1';\n",
    )?;
    run(Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg("--user=root")
        .arg(format!("--datadir={}", datadir.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg(format!("--extra-file={}", extra.display()))
        .arg("--innodb-log-file-size=8M"))
    .context("mariadb-install-db")?;
    Ok(datadir)
}

fn next_server_id() -> u32 {
    // Unique across processes (pid, up to 2^22) and within one (counter, 10 bits); never 0.
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) & 0x3ff;
    (std::process::id() << 10) | n.max(1)
}

impl MariaDb {
    /// Starts an instance with default options (no semi-sync).
    pub fn start() -> Result<MariaDb> {
        MariaDb::start_with(MariaDbOptions::default())
    }

    /// Starts an instance: copies the template datadir, picks a free port (retrying if another
    /// process took it first) and waits until `SELECT 1` answers.
    pub fn start_with(options: MariaDbOptions) -> Result<MariaDb> {
        let template = match &options.datadir_from {
            Some(d) => d.as_path(),
            None => template()?,
        };
        let dir = InstanceDir::new("mariadb")?;
        run(Command::new("cp")
            .arg("-a")
            .arg(template)
            .arg(dir.path().join("data")))?;
        let db = MariaDb {
            process: Mutex::new(None),
            port: AtomicU16::new(0),
            server_id: next_server_id(),
            options,
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            db.port.store(
                free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                Ordering::Relaxed,
            );
            match db.launch() {
                Ok(()) => return Ok(db),
                Err(e) => {
                    // Another process may have bound the port between our check and the
                    // server's bind: try another one.
                    let in_use = log_tail(&db.error_log(), 50).contains("Address already in use");
                    if !in_use || attempt >= 5 {
                        return Err(e);
                    }
                    db.kill9()?;
                }
            }
        }
    }

    fn args(&self) -> Vec<String> {
        let d = self.dir.path();
        let mut args = vec![
            "--no-defaults".to_string(),
            "--user=root".to_string(),
            format!("--datadir={}", d.join("data").display()),
            format!("--socket={}", self.socket().display()),
            format!("--pid-file={}", d.join("mysqld.pid").display()),
            format!("--log-error={}", self.error_log().display()),
            format!("--port={}", self.port()),
            format!("--bind-address={}", self.tcp_host()),
            format!("--server-id={}", self.server_id),
            "--log-bin=mysql-bin".to_string(),
            "--relay-log=relay-bin".to_string(),
            "--binlog-format=ROW".to_string(),
            "--log-slave-updates=ON".to_string(),
            "--gtid-strict-mode=ON".to_string(),
            "--sync-binlog=1".to_string(),
            "--innodb-flush-log-at-trx-commit=1".to_string(),
            "--skip-name-resolve".to_string(),
            "--innodb-buffer-pool-size=32M".to_string(),
            "--innodb-log-file-size=8M".to_string(),
            // Many instances at once exhaust the kernel's aio contexts.
            "--innodb-use-native-aio=0".to_string(),
            "--max-connections=300".to_string(),
        ];
        if self.options.semi_sync {
            args.extend([
                "--rpl-semi-sync-master-enabled=ON".to_string(),
                "--rpl-semi-sync-slave-enabled=ON".to_string(),
                "--rpl-semi-sync-master-wait-point=AFTER_SYNC".to_string(),
                format!(
                    "--rpl-semi-sync-master-timeout={}",
                    self.options.semi_sync_timeout_ms
                ),
            ]);
        }
        args.extend(self.options.extra_args.iter().cloned());
        args
    }

    fn launch(&self) -> Result<()> {
        let mut cmd = match &self.options.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.as_str(), MARIADBD]);
                c
            }
            None => Command::new(MARIADBD),
        };
        cmd.args(self.args());
        let log = self.dir.path().join("mariadbd.out");
        // A socket file left by kill -9 would look ready before the server listens.
        let _ = fs::remove_file(self.socket());
        let mut guard = self.lock();
        *guard = Some(ServerProcess::spawn("mariadbd", cmd, &log)?);
        let process = guard.as_mut().context("just spawned")?;
        let ip: Ipv4Addr = self.tcp_host().parse().context("bind_address")?;
        let addr = SocketAddr::from((ip, self.port()));
        let res = wait_until("MariaDB to accept connections", START_LIMIT, || {
            process.ensure_running()?;
            Ok(port_open(addr) && self.socket().exists() && self.sql("SELECT 1").is_ok())
        });
        drop(guard);
        res.with_context(|| {
            format!(
                "starting MariaDB on port {} ({}); error log:\n{}",
                self.port(),
                self.dir.path().display(),
                log_tail(&self.error_log(), 30)
            )
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<ServerProcess>> {
        self.process.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// Host to connect to: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// Address the server listens on: `bind_address`, else `127.0.0.1`.
    pub fn tcp_host(&self) -> String {
        self.options
            .bind_address
            .clone()
            .unwrap_or_else(|| "127.0.0.1".into())
    }

    /// This server's `server_id`, unique among all harness instances.
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// `mysql://root@127.0.0.1:<port>` (root, empty password).
    pub fn url(&self) -> String {
        format!("mysql://root@{}:{}", self.tcp_host(), self.port())
    }

    /// The datadir.
    pub fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// The server's error log.
    pub fn error_log(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    /// The server's PID while it runs (or is paused).
    pub fn pid(&self) -> Option<u32> {
        let mut g = self.lock();
        g.as_mut().and_then(ServerProcess::running_pid)
    }

    /// True while the server process exists (also while paused).
    pub fn is_running(&self) -> bool {
        self.lock().as_mut().is_some_and(ServerProcess::is_running)
    }

    /// Runs SQL through the `mariadb` client on the socket and returns its batch output
    /// (tab-separated columns, one row per line, no header). Hangs while the server is paused.
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.client(sql, false)
    }

    /// Rows of a query (e.g. `SHOW SLAVE STATUS`) as column name → value maps.
    pub fn named_rows(&self, sql: &str) -> Result<Vec<HashMap<String, String>>> {
        let out = self.client(sql, true)?;
        let mut lines = out.lines();
        let Some(header) = lines.next() else {
            return Ok(Vec::new());
        };
        let names: Vec<&str> = header.split('\t').collect();
        Ok(lines
            .map(|l| {
                names
                    .iter()
                    .zip(l.split('\t'))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect())
    }

    fn client(&self, sql: &str, header: bool) -> Result<String> {
        run(Command::new("mariadb")
            .arg("--no-defaults")
            .arg("-uroot")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("--connect-timeout=10")
            .arg(if header { "--column-names" } else { "-N" })
            .arg("-B")
            .arg("-e")
            .arg(sql))
        .with_context(|| format!("SQL on MariaDB port {}: {sql}", self.port()))
    }

    /// Rows of a query, each split into columns.
    pub fn rows(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        Ok(self
            .sql(sql)?
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }

    /// First column of the first row (`None` if no row).
    pub fn value(&self, sql: &str) -> Result<Option<String>> {
        Ok(self
            .rows(sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next()))
    }

    /// A `mysql_async` connection as root.
    pub async fn conn(&self) -> Result<mysql_async::Conn> {
        mysql_async::Conn::from_url(self.url())
            .await
            .with_context(|| format!("connecting to {}", self.url()))
    }

    /// Points this server at `source` with GTID replication (`slave_pos`, connect retry 1 s,
    /// heartbeats every 0.5 s as the manager sets them) and starts the replica threads. Does not wait for them to connect.
    pub fn replicate_from(&self, source: &MariaDb) -> Result<()> {
        self.sql(&format!(
            "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, \
             MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, \
             MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=0.5; START SLAVE;",
            source.tcp_host(),
            source.port()
        ))
        .map(drop)
    }

    /// `kill -9` the server and reap it; the datadir stays for [`MariaDb::restart`].
    pub fn kill9(&self) -> Result<()> {
        match self.lock().as_mut() {
            Some(p) => p.kill9(),
            None => Ok(()),
        }
    }

    /// SIGSTOP: the server keeps its port but answers nothing until [`MariaDb::resume`].
    pub fn pause(&self) -> Result<()> {
        self.with_process(ServerProcess::pause)
    }

    /// SIGCONT after [`MariaDb::pause`].
    pub fn resume(&self) -> Result<()> {
        self.with_process(ServerProcess::resume)
    }

    fn with_process(&self, f: impl FnOnce(&mut ServerProcess) -> Result<()>) -> Result<()> {
        let mut g = self.lock();
        let p = g
            .as_mut()
            .with_context(|| format!("MariaDB on port {} is not running", self.port()))?;
        f(p)
    }

    /// Clean shutdown (SIGTERM, wait); an error if it had to be killed.
    pub fn stop(&self) -> Result<()> {
        match self.lock().as_mut() {
            Some(p) => p.terminate(STOP_LIMIT),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same datadir and port, after [`MariaDb::kill9`],
    /// [`MariaDb::stop`], or while running (then it is stopped cleanly first).
    pub fn restart(&self) -> Result<()> {
        if self.is_running() {
            self.stop()?;
        }
        self.launch()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<MariaDb>();
}
