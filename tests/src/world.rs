//! [`ProvisionWorld`]: what a provisioning scenario runs in. A private sshd on one loopback
//! address (this very host, logged into with the harness's key), a world-readable (0755)
//! temp dir holding the metadata store and the machines' data dir, a storage and a compute
//! machine row with a free port range each, the [`Provisioner`] over them (strict host keys),
//! a [`JobRunner`], and a [`ClusterManager`] engine with a standalone [`Term`] on the same store.
//!
//! Invariant: when the world is dropped, also by a panic half-way through a scenario, the
//! manager's background tasks are cancelled, every database server still running under the
//! world's data dir is killed by the PID in its pid file (only its own: never by address or
//! name pattern), then the sshd and the temp dir go, and a MySQL-backed store's database is
//! dropped. Nothing of another test is touched.
//!
//! The places that name job internals (the `Provisioner` and `JobRunner` fields) are here,
//! so a change of their shape is one fix in this file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use kunlun_core::accounts::MANAGER_USER;
use kunlun_core::fleet::Provisioner;
use kunlun_core::jobs::JobRunner;
use kunlun_core::{ClusterManager, CoreConfig, Term};
use kunlun_meta::model::{Job, Machine, MachineType, NewMachine, SshAccess};
use kunlun_meta::{Store, StoreConfig};
use kunlun_provision::recipe::MariaDbRecipe;
use kunlun_provision::HostKeyPolicy;
use mysql_async::prelude::Queryable;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{free_port_block, Sshd};

/// Ports per machine range (`base..=base + PORTS - 1`): room for a few clusters.
const PORTS: u16 = 41;

/// The provisioner the tests use: the system's MariaDB and PostgreSQL programs, strict host
/// keys against the harness sshd's `known_hosts` (`sshd.known_hosts()`).
pub fn provisioner(known_hosts: PathBuf) -> Provisioner {
    Provisioner {
        host_key_policy: HostKeyPolicy::Strict,
        ..Provisioner::with_system_servers(known_hosts)
    }
}

/// [`provisioner`] with another storage recipe (a fault: a missing program, …).
pub fn provisioner_with_storage(known_hosts: PathBuf, storage: MariaDbRecipe) -> Provisioner {
    Provisioner {
        storage: Arc::new(storage),
        ..provisioner(known_hosts)
    }
}

/// A job runner over `store` that polls every `poll`.
pub fn job_runner(store: &Store, provisioner: Provisioner, poll: Duration) -> JobRunner {
    JobRunner {
        store: store.clone(),
        provisioner,
        poll_interval: poll,
        clusters: Default::default(),
    }
}

/// The job's memo as text (empty without one): for `contains` checks.
pub fn memo(j: &Job) -> String {
    j.memo.as_ref().map(|m| m.to_string()).unwrap_or_default()
}

/// The job's memo as `T` (the job's typed memo); panics with the memo when it does not fit.
pub fn memo_as<T: serde::de::DeserializeOwned>(j: &Job) -> T {
    let v = j
        .memo
        .clone()
        .unwrap_or_else(|| panic!("job {} has a memo", j.id));
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("memo shape ({e}): {v}"))
}

/// Sets mode 0755: the servers run as other system users and must reach their dirs.
pub fn chmod_755(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod 0755");
}

/// Where the metadata lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A SQLite file in the world's temp dir.
    Sqlite,
    /// A fresh database on the MariaDB of `KUNLUN_TEST_MYSQL_URL`, dropped with the world.
    Mysql,
}

/// Builds a [`ProvisionWorld`]; see [`ProvisionWorld::builder`].
pub struct WorldBuilder {
    ip: Ipv4Addr,
    store: StoreKind,
    storage: bool,
    compute: bool,
    poll: Duration,
    storage_recipe: Option<MariaDbRecipe>,
}

impl WorldBuilder {
    /// Where the metadata lives (SQLite unless set).
    pub fn store(mut self, kind: StoreKind) -> Self {
        self.store = kind;
        self
    }

    /// Whether a storage machine row is registered (yes unless set). One per kind at most:
    /// machines are unique by (address, type).
    pub fn storage_machine(mut self, yes: bool) -> Self {
        self.storage = yes;
        self
    }

    /// Whether a compute machine row is registered (yes unless set).
    pub fn compute_machine(mut self, yes: bool) -> Self {
        self.compute = yes;
        self
    }

    /// How often the job runner looks for work when run in the background (100 ms unless set).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The runner's storage recipe (the system's MariaDB unless set): for faults such as a
    /// missing server program.
    pub fn storage_recipe(mut self, recipe: MariaDbRecipe) -> Self {
        self.storage_recipe = Some(recipe);
        self
    }

    /// Starts the sshd, opens the store and registers the machines.
    pub async fn build(self) -> ProvisionWorld {
        let ip = self.ip;
        // Starting sshd blocks (key generation, waiting for the port): off the runtime.
        let sshd = tokio::task::spawn_blocking(move || Sshd::start_on(ip))
            .await
            .expect("join sshd start")
            .unwrap_or_else(|e| panic!("sshd on {ip}: {e:#}"));
        let dir = tempfile::tempdir().expect("tempdir");
        chmod_755(dir.path());
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        chmod_755(&data);
        let (cfg, mysql_db) = match self.store {
            StoreKind::Sqlite => (StoreConfig::sqlite(dir.path().join("meta.db")), None),
            StoreKind::Mysql => {
                let (host, port, user, pass) = mysql_server();
                let db = format!("kl_test_world_{:016x}", rand::random::<u64>());
                let cfg = StoreConfig::mysql(vec![format!("{host}:{port}")], &user, &pass, &db);
                (cfg, Some(db))
            }
        };
        let store = Store::open(&cfg).await.expect(
            "store (the MySQL backend needs the MariaDB of KUNLUN_TEST_MYSQL_URL; \
             scripts/test.sh starts one)",
        );
        let prov = match self.storage_recipe {
            Some(recipe) => provisioner_with_storage(sshd.known_hosts(), recipe),
            None => provisioner(sshd.known_hosts()),
        };
        let mgr = ClusterManager::new(CoreConfig::default(), store.clone());
        let mut world = ProvisionWorld {
            term: Term::standalone(&mgr),
            mgr,
            runner: job_runner(&store, prov, self.poll),
            store,
            machines: Vec::new(),
            background: None,
            sshd,
            ip,
            data,
            mysql_db,
            dir,
        };
        for (wanted, ty) in [
            (self.storage, MachineType::Storage),
            (self.compute, MachineType::Computer),
        ] {
            if wanted {
                let base = free_port_block(IpAddr::V4(ip), PORTS);
                let m = world.new_machine(ty, base);
                let m = world.store.insert_machine(&m).await.expect("machine row");
                world.machines.push(m);
            }
        }
        world
    }
}

/// The job runner started with [`ProvisionWorld::start_runner`].
struct Background {
    cancel: CancellationToken,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// A private sshd, a store with machine rows, a provisioner, a job runner and a manager; see
/// the module doc for what its drop cleans up.
pub struct ProvisionWorld {
    /// The engine: reads, registration, job acceptance.
    pub mgr: ClusterManager,
    /// A standalone term over [`mgr`](Self::mgr): the actors a scenario starts (HA, XA, …).
    pub term: Term,
    pub runner: JobRunner,
    pub store: Store,
    /// The machine rows registered at build (storage first).
    pub machines: Vec<Machine>,
    background: Option<Background>,
    pub sshd: Sshd,
    pub ip: Ipv4Addr,
    /// The machines' data dir (0755): instances live under `data/kunlun/`.
    pub data: PathBuf,
    mysql_db: Option<String>,
    dir: tempfile::TempDir,
}

impl ProvisionWorld {
    /// A world on `ip` (give each test file its own address: the harness keeps ports apart
    /// within one test binary, the address keeps a scenario's servers recognisable).
    pub fn builder(ip: Ipv4Addr) -> WorldBuilder {
        WorldBuilder {
            ip,
            store: StoreKind::Sqlite,
            storage: true,
            compute: true,
            poll: Duration::from_millis(100),
            storage_recipe: None,
        }
    }

    /// The temp dir that holds the SQLite file and `data/`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// [`data`](Self::data) as the string a machine row holds.
    pub fn data_dir(&self) -> String {
        self.data.display().to_string()
    }

    /// A machine row (not stored) of type `ty` on this world's sshd, ports `base..=base+40`.
    pub fn new_machine(&self, ty: MachineType, base: u16) -> NewMachine {
        NewMachine {
            hostaddr: self.ip.to_string(),
            machine_type: ty,
            rack_id: None,
            data_dirs: vec![self.data_dir()],
            port_range: format!("{}-{}", base, base + PORTS - 1),
            total_mem_mb: None,
            total_cpu_cores: None,
            ssh: SshAccess {
                port: self.sshd.port(),
                user: self.sshd.user().to_string(),
                key_path: self.sshd.user_key().private.display().to_string(),
            },
        }
    }

    /// The registered machine of type `ty`.
    pub fn machine(&self, ty: MachineType) -> &Machine {
        self.machines
            .iter()
            .find(|m| m.machine_type == ty)
            .unwrap_or_else(|| panic!("the world has a {ty:?} machine"))
    }

    /// The first port of the range of the registered machine of type `ty`.
    pub fn port_base(&self, ty: MachineType) -> u16 {
        let range = &self.machine(ty).port_range;
        range
            .split_once('-')
            .and_then(|(a, _)| a.parse().ok())
            .unwrap_or_else(|| panic!("a port range: {range}"))
    }

    /// A provisioner like the runner's (for direct installs).
    pub fn provisioner(&self) -> Provisioner {
        provisioner(self.sshd.known_hosts())
    }

    /// A connection to the node on `port` of this world's address as the manager user.
    pub async fn conn(&self, port: u16, password: &str) -> mysql_async::Conn {
        self.conn_as(port, MANAGER_USER, password).await
    }

    /// A connection to the node on `port` as `user`, within 10 s.
    pub async fn conn_as(&self, port: u16, user: &str, password: &str) -> mysql_async::Conn {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.ip.to_string())
            .tcp_port(port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false);
        tokio::time::timeout(Duration::from_secs(10), mysql_async::Conn::new(opts))
            .await
            .unwrap_or_else(|_| panic!("connect to {}:{port} within 10 s", self.ip))
            .unwrap_or_else(|e| panic!("connect to {}:{port} as {user}: {e}", self.ip))
    }

    /// Waits (60 s) until `sql` on the node on `port` returns `want`.
    pub async fn wait_for(&self, port: u16, password: &str, sql: &str, want: &str) {
        let mut c = self.conn(port, password).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got: Option<String> = c.query_first(sql).await.unwrap_or(None);
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {port}: `{sql}` never returned {want:?} (last {got:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether something accepts connections on `port` of this world's address.
    pub fn listening(&self, port: u16) -> bool {
        TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(self.ip), port),
            Duration::from_millis(300),
        )
        .is_ok()
    }

    /// Runs the one job the runner claims next (it must claim one) and returns job `id`,
    /// which must then be finished.
    pub async fn run_job(&self, id: i64) -> Job {
        assert!(
            self.runner.run_once().await.expect("runner"),
            "a job was claimed"
        );
        let j = self.store.get_job(id).await.expect("job");
        assert!(j.status.is_final(), "job {id} finished: {:?}", j.status);
        j
    }

    /// Starts the job runner in the background (woken by [`wake`](Self::wake)); it is stopped
    /// by [`stop_runner`](Self::stop_runner) or with the world.
    pub fn start_runner(&mut self) {
        assert!(self.background.is_none(), "one background runner");
        let cancel = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(
            self.runner
                .clone()
                .run_forever_woken(cancel.clone(), wake.clone()),
        );
        self.background = Some(Background { cancel, wake, task });
    }

    /// Wakes the background runner (after accepting a job).
    pub fn wake(&self) {
        if let Some(b) = &self.background {
            b.wake.notify_one();
        }
    }

    /// Stops the background runner; returns whether it stopped within `limit`.
    pub async fn stop_runner(&mut self, limit: Duration) -> bool {
        let Some(b) = self.background.take() else {
            return true;
        };
        b.cancel.cancel();
        match tokio::time::timeout(limit, b.task).await {
            Ok(joined) => {
                joined.expect("the runner task ended without a panic");
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for ProvisionWorld {
    fn drop(&mut self) {
        if let Some(b) = self.background.take() {
            b.cancel.cancel();
            b.task.abort();
        }
        // Cancels every background task at the first poll (HA monitors, catalog sync); the
        // wait for them is the runtime's, which ends with the test. Its timer needs a runtime:
        // a panic here, during a test's unwinding, would abort the whole test binary.
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = self.term.shutdown(Duration::ZERO).now_or_never();
            let _ = self.mgr.shutdown(Duration::ZERO).now_or_never();
        }
        kill_leftovers(&self.data);
        if let Some(db) = self.mysql_db.take() {
            // Drop runs inside the test's runtime: the async client gets a runtime of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(drop_mysql_db(&db));
            })
            .join();
        }
    }
}

/// Kills (by the pid in their pid files) every server still running under `data`: a scenario
/// that finished removed them itself; one that failed half-way must not leave them running.
pub fn kill_leftovers(data: &Path) {
    let Ok(entries) = std::fs::read_dir(data.join("kunlun")) else {
        return;
    };
    for e in entries.flatten() {
        for pf in [
            e.path().join("run/mysqld.pid"),
            e.path().join("data/postmaster.pid"),
        ] {
            if let Some(pid) = pid_in(&pf) {
                kill9(pid);
            }
        }
    }
}

/// The PID on the first line of a pid file (MariaDB's, PostgreSQL's `postmaster.pid`).
pub fn pid_in(pid_file: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
}

/// SIGKILL to `pid` (errors ignored: it may be gone already).
pub fn kill9(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The MariaDB of `KUNLUN_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`):
/// (host, port, user, password).
pub fn mysql_server() -> (String, u16, String, String) {
    let url = std::env::var("KUNLUN_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_string());
    let o = mysql_async::Opts::from_url(&url).expect("KUNLUN_TEST_MYSQL_URL is a mysql:// URL");
    (
        o.ip_or_hostname().to_string(),
        o.tcp_port(),
        o.user().unwrap_or("root").to_string(),
        o.pass().unwrap_or("").to_string(),
    )
}

async fn drop_mysql_db(db: &str) {
    let (host, port, user, pass) = mysql_server();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(user))
        .pass((!pass.is_empty()).then_some(pass));
    let Ok(mut c) = mysql_async::Conn::new(opts).await else {
        return;
    };
    let _ = c
        .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
        .await;
    let _ = c.disconnect().await;
}
