//! Benchmark: the REST API's lists at scale against `GET /healthz` of the same `cluster-mgr`,
//! driven by the same closed-loop load generator, on each metadata backend: requests/s,
//! p50/p99 latency of each endpoint and the ratio `GET /v1/machines` / `GET /healthz`.
//!
//! The store holds, before the daemon starts: 10,000 machines, 1,000 `rbr` clusters of
//! 3 shards x 3 storage nodes + 1 compute node (3,000 shards, 9,000 storage nodes, 1,000
//! compute nodes, 2,000 per-cluster log tables), one finished job per cluster plus as many
//! `control_instance` jobs again, and one failover record and one done backup per cluster.
//! The rows are written straight through `kunlun_meta`'s repository functions (registering
//! 10,000 machines through the API would probe them). Every address is loopback
//! (`127.x.y.z`) and nothing listens there; the daemon is configured not to reach them:
//! `clusters_to_serve` names a cluster id that does not exist (shard HA, XA recovery,
//! catalog sync and the job runner leave the seeded clusters alone, but still read the
//! topology each round), the machine liveness check and the instance keeper are off
//! (`machine_check_interval = 0`, `instance_keeper_interval_secs = 0`, they would SSH to
//! every machine), and so are binlog archiving and the backup scheduler. Requests carry a
//! `viewer` token made with `cluster-mgr token create`, as every API client must once a
//! token exists.
//!
//! Each of the `API_LOAD_CONNS` (200) clients sends the next request as soon as the previous
//! answer is read in full. A paginated list is walked page after page (`?limit=N`, then the
//! `X-Next-Cursor` of each answer as `after`, from the start again after the last page), so
//! every offset is measured; per-cluster and per-shard endpoints cycle through the seeded ids.
//! The daemon keeps answers while the store is unchanged (SQLite), and nothing writes during
//! the series above; the last series walk `/v1/machines` again while a store handle of the
//! bench's own commits a change to one machine every 100 ms, then every 5 ms, so every page
//! is read from the store again after each commit.
//!
//! Run: `cargo bench -p kunlun-tests --bench api_load`. The daemon is the release binary
//! (`target/release/cluster-mgr`, built with `cargo build --release --bin cluster-mgr` when
//! missing; `KUNLUN_BENCH_DAEMON=/path/to/cluster-mgr` overrides). It runs on a free loopback
//! port, with a temp SQLite file or a fresh database `kl_api_load_<random>` on the MariaDB at
//! `KUNLUN_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`, dropped at the end), and
//! is stopped by PID at the end, also on failure.
//! Knobs (env): `API_LOAD_BACKENDS` (`sqlite,mysql`), `API_LOAD_CONNS` (200),
//! `API_LOAD_WARMUP_SECS` (2), `API_LOAD_SECS` (5, per endpoint), `API_LOAD_MACHINES`
//! (10000), `API_LOAD_CLUSTERS` (1000), `API_LOAD_ONLY` (endpoint names containing this
//! text; `/healthz` and `/v1/machines` always run). The figures are printed, never asserted:
//! they depend on the box (the generator shares the CPU with the daemon).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kunlun_meta::api::NEXT_CURSOR_HEADER;
use kunlun_meta::model::{
    BackupStatus, HaMode, JobStatus, MachineType, MemberState, NewCluster, NewCompNode, NewJob,
    NewMachine, NewShard, NewShardNode, NodeStatus, SshAccess,
};
use kunlun_meta::store::repo;
use kunlun_meta::{Store, StoreConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `target/<profile>` of this bench executable (`target/release/deps/api_load-*`).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("bench executable has no target/<profile>/deps parent")
}

/// The `cluster-mgr` of this bench's profile (release under `cargo bench`), rebuilt first so it
/// is never older than the sources (a no-op when it is up to date).
fn daemon_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KUNLUN_BENCH_DAEMON") {
        return Ok(PathBuf::from(p));
    }
    let dir = profile_dir()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "cluster-mgr-bin",
        "--bin",
        "cluster-mgr",
    ]);
    if dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("run cargo build --bin cluster-mgr")?;
    ensure!(
        status.success(),
        "cargo build --bin cluster-mgr failed: {status}"
    );
    let bin = dir.join("cluster-mgr");
    ensure!(bin.exists(), "{} missing after the build", bin.display());
    Ok(bin)
}

/// The metadata backend of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Mysql,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Mysql => "mysql",
        }
    }
}

/// The MariaDB of `KUNLUN_TEST_MYSQL_URL`: (host, port, user, password).
fn mysql_server() -> Result<(String, u16, String, String)> {
    let url = std::env::var("KUNLUN_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_string());
    let o = mysql_async::Opts::from_url(&url)
        .with_context(|| format!("KUNLUN_TEST_MYSQL_URL={url} is not a mysql:// URL"))?;
    Ok((
        o.ip_or_hostname().to_string(),
        o.tcp_port(),
        o.user().unwrap_or("root").to_string(),
        o.pass().unwrap_or("").to_string(),
    ))
}

/// Where the metadata of one run lives; a MySQL database is dropped by [`MetaPlace::drop_db`].
struct MetaPlace {
    backend: Backend,
    store: StoreConfig,
    /// `cluster_mgr.cnf` lines naming this store.
    cnf: String,
    mysql_db: Option<String>,
}

impl MetaPlace {
    fn new(backend: Backend, dir: &Path) -> Result<MetaPlace> {
        match backend {
            Backend::Sqlite => {
                let path = dir.join("meta.sqlite3");
                Ok(MetaPlace {
                    backend,
                    store: StoreConfig::sqlite(&path),
                    cnf: format!("meta_backend = sqlite\nsqlite_path = {}\n", path.display()),
                    mysql_db: None,
                })
            }
            Backend::Mysql => {
                let (host, port, user, pass) = mysql_server()?;
                ensure!(
                    !pass.contains(char::is_whitespace) && !pass.starts_with('#'),
                    "the password of KUNLUN_TEST_MYSQL_URL cannot be written to cluster_mgr.cnf"
                );
                let db = format!("kl_api_load_{:016x}", rand::random::<u64>());
                Ok(MetaPlace {
                    backend,
                    store: StoreConfig::mysql(vec![format!("{host}:{port}")], &user, &pass, &db),
                    cnf: format!(
                        "meta_backend = mysql\nmeta_group_seeds = {host}:{port}\n\
                         meta_user = {user}\nmeta_pwd = {pass}\nmeta_database = {db}\n"
                    ),
                    mysql_db: Some(db),
                })
            }
        }
    }

    async fn drop_db(&self) {
        let Some(db) = &self.mysql_db else {
            return;
        };
        let Ok((host, port, user, pass)) = mysql_server() else {
            return;
        };
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some(user))
            .pass((!pass.is_empty()).then_some(pass));
        if let Ok(mut c) = mysql_async::Conn::new(opts).await {
            use mysql_async::prelude::Queryable;
            let _ = c
                .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                .await;
            let _ = c.disconnect().await;
        }
    }
}

/// The daemon under test; killed by PID when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(bin: &Path, dir: &Path, cnf: &Path) -> Result<Daemon> {
        let log = dir.join("cluster-mgr.log");
        let out = File::create(&log)?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(cnf)
            .current_dir(dir)
            .env_remove("KUNLUN_CLUSTER_MGR_CONFIG")
            // Request logging would measure the terminal, not the API.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Daemon { child, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A `viewer` token made the way an operator makes one (`cluster-mgr token create`).
fn make_token(bin: &Path, cnf: &Path) -> Result<String> {
    let out = Command::new(bin)
        .args(["token", "create", "--name", "api-load", "--role", "viewer"])
        .arg("--config")
        .arg(cnf)
        .env_remove("KUNLUN_CLUSTER_MGR_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .context("run cluster-mgr token create")?;
    ensure!(
        out.status.success(),
        "cluster-mgr token create: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kl_"))
        .map(str::to_string)
        .context("cluster-mgr token create printed no token")
}

async fn wait_healthy(http: &reqwest::Client, base: &str, daemon: &mut Daemon) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = daemon.child.try_wait()? {
            bail!("cluster-mgr exited with {status}:\n{}", daemon.log_tail());
        }
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "cluster-mgr did not answer /healthz in 60 s:\n{}",
                daemon.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Size of the seeded store.
#[derive(Debug, Clone, Copy)]
struct Scale {
    machines: u32,
    clusters: u32,
}

/// Shards per cluster, storage nodes per shard (plus one compute node per cluster).
const SHARDS: u32 = 3;
const NODES: u32 = 3;
/// Clusters written per transaction.
const CLUSTER_BATCH: u32 = 50;
/// Machines written per transaction.
const MACHINE_BATCH: u32 = 1000;

/// A loopback address per index: 127.(1..).x.y, never 127.0.0.1.
fn loopback(i: u32) -> String {
    format!("127.{}.{}.{}", i / 65536 % 255 + 1, i / 256 % 256, i % 256)
}

/// What [`seed`] wrote that the load needs.
struct Seeded {
    clusters: Vec<i64>,
    shards: Vec<i64>,
    took: Duration,
}

/// Writes the rows of [`Scale`] (see the module comment) straight into the store.
async fn seed(store: &Store, scale: Scale) -> Result<Seeded> {
    let started = Instant::now();
    // Machines: one in four a compute machine, as in a real fleet.
    let machine = |i: u32| NewMachine {
        hostaddr: loopback(i),
        machine_type: if i.is_multiple_of(4) {
            MachineType::Computer
        } else {
            MachineType::Storage
        },
        rack_id: Some(format!("rack-{}", i % 20)),
        data_dirs: vec!["/data1/kunlun".into(), "/data2/kunlun".into()],
        port_range: "57000-58000".into(),
        total_mem_mb: Some(65536),
        total_cpu_cores: Some(32),
        ssh: SshAccess {
            port: 22,
            user: "kunlun".into(),
            key_path: "/root/.ssh/id_ed25519".into(),
        },
    };
    let mut first_machine = None;
    for start in (0..scale.machines).step_by(MACHINE_BATCH as usize) {
        let end = (start + MACHINE_BATCH).min(scale.machines);
        let id = store
            .tx(async |tx| {
                let mut first = None;
                for i in start..end {
                    let m = repo::machines::insert(tx, &machine(i)).await?;
                    first.get_or_insert(m.id);
                }
                Ok(first)
            })
            .await
            .with_context(|| format!("seed machines {start}..{end}"))?;
        first_machine = first_machine.or(id);
    }
    let storage_machine = first_machine.map(|id| id + 1).unwrap_or(0);
    let backup_storage = store
        .tx(async |tx| {
            repo::backup_storage::insert(
                tx,
                &repo::backup_storage::NewBackupStorage {
                    name: "api-load".into(),
                    hostaddr: loopback(1),
                    path: "/backup/kunlun".into(),
                    machine_id: storage_machine,
                },
            )
            .await
        })
        .await
        .context("seed the backup storage")?;

    // Storage nodes go round the storage machines (i % 4 != 0), compute nodes round the
    // compute ones, each on its own port.
    let storage_hosts: Vec<u32> = (0..scale.machines.max(4))
        .filter(|i| !i.is_multiple_of(4))
        .collect();
    let compute_hosts: Vec<u32> = (0..scale.machines.max(4))
        .filter(|i| i.is_multiple_of(4))
        .collect();
    let (mut clusters, mut shards) = (Vec::new(), Vec::new());
    for start in (0..scale.clusters).step_by(CLUSTER_BATCH as usize) {
        let end = (start + CLUSTER_BATCH).min(scale.clusters);
        let (storage_hosts, compute_hosts) = (&storage_hosts, &compute_hosts);
        let (c, s) = store
            .tx(async |tx| {
                let (mut cs, mut ss) = (Vec::new(), Vec::new());
                for k in start..end {
                    let cluster = repo::clusters::insert(
                        tx,
                        &NewCluster {
                            name: format!("load_{k:05}"),
                            nick_name: Some(format!("orders-{k}")),
                            owner: Some("api_load".into()),
                            business: None,
                            ha_mode: HaMode::Rbr,
                            memo: None,
                        },
                    )
                    .await?;
                    cs.push(cluster.id);
                    for s in 0..SHARDS {
                        let shard = repo::shards::insert(
                            tx,
                            &NewShard {
                                name: format!("shard_{}", s + 1),
                                db_cluster_id: cluster.id,
                                num_nodes: i64::from(NODES),
                                sync_num: 1,
                            },
                        )
                        .await?;
                        ss.push(shard.id);
                        for n in 0..NODES {
                            let slot = (k * SHARDS + s) * NODES + n;
                            let host = storage_hosts[slot as usize % storage_hosts.len()];
                            let port = 57000
                                + 2 * (slot as usize / storage_hosts.len()) as u16;
                            repo::nodes::insert(
                                tx,
                                &NewShardNode {
                                    shard_id: shard.id,
                                    db_cluster_id: cluster.id,
                                    hostaddr: loopback(host),
                                    port,
                                    user_name: "pgx".into(),
                                    passwd: "secret".into(),
                                    master_priority: 0,
                                    member_state: if n == 0 {
                                        MemberState::Source
                                    } else {
                                        MemberState::Replica
                                    },
                                    status: NodeStatus::Active,
                                    innodb_buffer_pool_mb: 1024,
                                },
                            )
                            .await?;
                        }
                    }
                    let id = *repo::comps::reserve_ids(tx, 1).await?.start();
                    let host = compute_hosts[k as usize % compute_hosts.len()];
                    repo::comps::insert(
                        tx,
                        &NewCompNode {
                            id,
                            db_cluster_id: cluster.id,
                            name: format!("comp_{id}"),
                            hostaddr: loopback(host),
                            port: 47001 + 3 * (k as usize / compute_hosts.len()) as u16,
                            user_name: "abc".into(),
                            passwd: "secret".into(),
                            status: NodeStatus::Active,
                            max_conns: 1000,
                        },
                    )
                    .await?;
                    // The create job and a later instance restart, both finished, with a
                    // memo of the size real jobs have.
                    for job_type in ["create_cluster", "control_instance"] {
                        let job = repo::jobs::create(
                            tx,
                            &NewJob {
                                job_type: job_type.into(),
                                job_info: serde_json::json!({
                                    "cluster_id": cluster.id, "name": cluster.name,
                                    "shards": SHARDS, "nodes": NODES, "comps": 1,
                                }),
                                user_name: Some("api_load".into()),
                            },
                        )
                        .await?;
                        let steps: Vec<_> = (0..8)
                            .map(|i| serde_json::json!({"name": format!("step_{i}"),
                                "status": "done", "ms": 1200 + i, "note": null}))
                            .collect();
                        repo::jobs::update(
                            tx,
                            job.id,
                            JobStatus::Done,
                            Some(&serde_json::json!({"stage": "done", "steps": steps})),
                        )
                        .await?;
                    }
                    repo::failovers::insert(
                        tx,
                        &repo::failovers::FailoverRow {
                            id: 0,
                            cluster_id: cluster.id,
                            shard_id: *ss.last().unwrap_or(&0),
                            kind: "switchover".into(),
                            started_at: chrono::Utc::now().naive_utc(),
                            old_primary: 1,
                            new_primary: Some(2),
                            outcome: "promoted".into(),
                            proven_lossless: 1,
                            possible_loss: None,
                            reason: Some("api_load".into()),
                            fence: Some("read_only set".into()),
                            phases: r#"[{"name":"choose","ms":3},{"name":"fence","ms":12},{"name":"promote","ms":80},{"name":"route","ms":40}]"#.into(),
                            old_primary_fate: None,
                            total_ms: 135,
                        },
                    )
                    .await?;
                    let bk = repo::backups::create(
                        tx,
                        &kunlun_meta::model::NewBackup {
                            cluster_id: cluster.id,
                            cluster_name: cluster.name.clone(),
                            storage_id: backup_storage.id,
                            job_id: None,
                            shape: serde_json::json!({"shards": SHARDS, "nodes": NODES, "comps": 1}),
                        },
                    )
                    .await?;
                    repo::backups::finish(
                        tx,
                        bk.id,
                        BackupStatus::Done,
                        1 << 30,
                        Some("manifest.json"),
                        None,
                    )
                    .await?;
                }
                Ok((cs, ss))
            })
            .await
            .with_context(|| format!("seed clusters {start}..{end}"))?;
        clusters.extend(c);
        shards.extend(s);
    }
    Ok(Seeded {
        clusters,
        shards,
        took: started.elapsed(),
    })
}

/// Intervals of the writer of the churned series (see [`Churn`]).
const CHURN_EVERY_MS: [u64; 2] = [100, 5];

/// A writer beside the load: its own store handle (as another daemon or the CLI would have)
/// committing a change of one machine's `rack_id` every interval.
struct Churn {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(u64, Duration)>>,
}

impl Churn {
    async fn start(cfg: &StoreConfig, every: Duration) -> Result<Churn> {
        let store = Store::open(cfg).await.context("open the churn store")?;
        let first = store
            .machine_infos_page(&kunlun_meta::api::PageQuery {
                limit: Some(1),
                after: None,
            })
            .await?;
        let id = first
            .items
            .first()
            .context("no machine to change")?
            .machine
            .id;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = &mut stopped => return Ok((n, started.elapsed())),
                    _ = tick.tick() => {}
                }
                let patch = kunlun_meta::model::MachinePatch {
                    rack_id: Some(format!("churn-{n}")),
                    ..Default::default()
                };
                store.update_machine(id, &patch).await?;
                n += 1;
            }
        });
        Ok(Churn { stop, task })
    }

    /// Commits made and over how long.
    async fn stop(self) -> Result<(u64, Duration)> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// What one client asks for, request after request.
#[derive(Clone)]
enum Target {
    /// The same URL each time.
    Fixed(String),
    /// A paginated list: this URL (with its `?limit=`), then `&after=<X-Next-Cursor>` until
    /// the last page, then from the start again.
    Paged(String),
    /// `{prefix}{id}{suffix}` for each id in turn.
    Each {
        prefix: String,
        suffix: String,
        ids: Arc<Vec<i64>>,
    },
}

/// What one measured run produced.
struct Stats {
    name: String,
    latencies_us: Vec<u64>,
    errors: u64,
    /// The first failed answer, for the report.
    first_error: Option<String>,
    bytes: u64,
    elapsed: Duration,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Closed loop: `conns` tasks each send the next request as soon as the previous answer is read
/// in full; only answers that complete after the warm-up and before the end are counted.
async fn load(
    http: &reqwest::Client,
    token: &str,
    name: &str,
    target: Target,
    run: &Run,
) -> Result<Stats> {
    let start = Instant::now();
    let measure_from = start + run.warmup;
    let end = measure_from + run.measure;
    let auth = Arc::new(format!("Bearer {token}"));
    let mut set = tokio::task::JoinSet::new();
    for client in 0..run.conns {
        let (http, target, auth) = (http.clone(), target.clone(), auth.clone());
        set.spawn(async move {
            let (mut lat, mut errors, mut bytes, mut first_error) =
                (Vec::new(), 0u64, 0u64, None::<String>);
            // Clients start at different places, as independent ones would.
            let mut i = client as usize * 7919;
            let mut cursor: Option<String> = None;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let url = match &target {
                    Target::Fixed(u) => u.clone(),
                    Target::Paged(u) => match &cursor {
                        Some(c) => format!("{u}&after={c}"),
                        None => u.clone(),
                    },
                    Target::Each {
                        prefix,
                        suffix,
                        ids,
                    } => {
                        i += 1;
                        format!("{prefix}{}{suffix}", ids[i % ids.len()])
                    }
                };
                let outcome = match http
                    .get(&url)
                    .header(reqwest::header::AUTHORIZATION, auth.as_str())
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let next = r
                            .headers()
                            .get(NEXT_CURSOR_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        match r.bytes().await {
                            Ok(b) => {
                                bytes += b.len() as u64;
                                cursor = next;
                                Ok(())
                            }
                            Err(e) => Err(format!("{url}: {e}")),
                        }
                    }
                    Ok(r) => {
                        let status = r.status();
                        Err(format!(
                            "{url}: {status} {}",
                            r.text().await.unwrap_or_default()
                        ))
                    }
                    Err(e) => Err(format!("{url}: {e}")),
                };
                let t1 = Instant::now();
                if t0 >= measure_from && t1 <= end {
                    match outcome {
                        Ok(()) => lat.push(t1.duration_since(t0).as_micros() as u64),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            (lat, errors, bytes, first_error)
        });
    }
    let mut stats = Stats {
        name: name.to_string(),
        latencies_us: Vec::new(),
        errors: 0,
        first_error: None,
        bytes: 0,
        elapsed: run.measure,
    };
    while let Some(r) = set.join_next().await {
        let (lat, errors, bytes, first_error) = r?;
        stats.latencies_us.extend(lat);
        stats.errors += errors;
        stats.bytes += bytes;
        if stats.first_error.is_none() {
            stats.first_error = first_error;
        }
    }
    stats.latencies_us.sort_unstable();
    Ok(stats)
}

/// Walks a paginated list once with one client: (rows, pages).
async fn walk(http: &reqwest::Client, token: &str, url: &str) -> Result<(usize, usize)> {
    let (mut rows, mut pages, mut cursor) = (0, 0, None::<String>);
    loop {
        let u = match &cursor {
            Some(c) => format!("{url}&after={c}"),
            None => url.to_string(),
        };
        let r = http.get(&u).bearer_auth(token).send().await?;
        ensure!(r.status().is_success(), "GET {u}: {}", r.status());
        let next = r
            .headers()
            .get(NEXT_CURSOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body: serde_json::Value = r.json().await?;
        rows += body.as_array().map_or(0, Vec::len);
        pages += 1;
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok((rows, pages)),
        }
    }
}

/// Size of the load.
#[derive(Debug, Clone)]
struct Run {
    conns: u64,
    warmup: Duration,
    measure: Duration,
    scale: Scale,
    /// Only endpoints whose name contains this (plus the two baselines).
    only: Option<String>,
}

/// The daemon's configuration for the run: loopback, the store, and nothing that would reach
/// the seeded (fake) machines and nodes (see the module comment).
fn write_cnf(dir: &Path, port: u16, place: &MetaPlace) -> Result<PathBuf> {
    let cnf = dir.join("cluster_mgr.cnf");
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(
        &cnf,
        format!(
            "{}http_bind_address = 127.0.0.1\nbrpc_http_port = {port}\n\
             cluster_mgr_tmp_data_path = {}\n\
             clusters_to_serve = {}\n\
             machine_check_interval = 0\ninstance_keeper_interval_secs = 0\n\
             binlog_archive_interval = 0\nbackup_schedule_interval = 0\n",
            place.cnf,
            data.display(),
            NO_SUCH_CLUSTER,
        ),
    )?;
    Ok(cnf)
}

/// The only cluster the daemon serves: none of the seeded ones.
const NO_SUCH_CLUSTER: i64 = 999_999_999;

async fn bench_backend(backend: Backend, run: &Run) -> Result<()> {
    let bin = daemon_binary()?;
    let dir = tempfile::Builder::new()
        .prefix("kunlun-api-load-")
        .tempdir()?;
    let place = MetaPlace::new(backend, dir.path())?;
    let r = bench_in(&bin, dir.path(), &place, run).await;
    place.drop_db().await;
    r
}

async fn bench_in(bin: &Path, dir: &Path, place: &MetaPlace, run: &Run) -> Result<()> {
    let scale = run.scale;
    let store = Store::open(&place.store)
        .await
        .with_context(|| format!("open the {} store", place.backend.name()))?;
    let seeded = seed(&store, scale).await?;
    drop(store);

    let port = kunlun_tests::free_port([127, 0, 0, 1].into());
    let base = format!("http://127.0.0.1:{port}");
    let cnf = write_cnf(dir, port, place)?;
    let token = make_token(bin, &cnf)?;
    let mut daemon = Daemon::start(bin, dir, &cnf)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(run.conns as usize)
        .timeout(Duration::from_secs(30))
        .build()?;
    wait_healthy(&http, &base, &mut daemon).await?;

    println!(
        "== api_load, {} store: cluster-mgr {} on {base}, data in {}",
        place.backend.name(),
        bin.display(),
        dir.display()
    );
    println!(
        "seeded {} machines, {} clusters of {SHARDS}x{NODES}+1 ({} shards, {} storage nodes, {} \
         compute nodes), {} jobs, {} failover records, {} backups in {:.1} s",
        scale.machines,
        seeded.clusters.len(),
        seeded.shards.len(),
        seeded.shards.len() * NODES as usize,
        seeded.clusters.len(),
        seeded.clusters.len() * 2,
        seeded.clusters.len(),
        seeded.clusters.len(),
        seeded.took.as_secs_f64()
    );
    println!(
        "daemon: leader of its own term; clusters_to_serve = {NO_SUCH_CLUSTER} (HA, XA, catalog \
         sync, job runner touch no seeded cluster), machine check, keeper, binlog archive and \
         backup scheduler off; viewer token on every /v1 request"
    );

    // Every list walked once in full: the pages hold every row exactly once.
    let c = seeded.clusters.len();
    for (path, want) in [
        ("/v1/machines?limit=1000", scale.machines as usize),
        ("/v1/clusters?limit=1000", c),
        ("/v1/jobs?limit=1000", 2 * c),
        ("/v1/failovers?limit=1000", c),
        ("/v1/backups?limit=1000", c),
    ] {
        let (rows, pages) = walk(&http, &token, &format!("{base}{path}")).await?;
        let note = if rows == want { "" } else { "  <-- MISMATCH" };
        println!("walk {path}: {rows} rows in {pages} pages (expected {want}){note}");
    }
    println!(
        "load: {} connections, closed loop, {:?} warm-up + {:?} measured per endpoint\n",
        run.conns, run.warmup, run.measure
    );

    let clusters = Arc::new(seeded.clusters.clone());
    let shards = Arc::new(seeded.shards.clone());
    let each = |prefix: &str, suffix: &str, ids: &Arc<Vec<i64>>| Target::Each {
        prefix: format!("{base}{prefix}"),
        suffix: suffix.to_string(),
        ids: ids.clone(),
    };
    let paged = |path: &str| Target::Paged(format!("{base}{path}"));
    let targets: Vec<(&str, Target)> = vec![
        ("GET /healthz", Target::Fixed(format!("{base}/healthz"))),
        ("GET /v1/machines", paged("/v1/machines?limit=100")),
        ("/v1/machines?limit=1000", paged("/v1/machines?limit=1000")),
        ("/v1/clusters", paged("/v1/clusters?limit=100")),
        ("/v1/jobs", paged("/v1/jobs?limit=100")),
        (
            "/v1/jobs?status=done",
            paged("/v1/jobs?status=done&limit=100"),
        ),
        ("/v1/failovers", paged("/v1/failovers?limit=100")),
        ("/v1/backups", paged("/v1/backups?limit=100")),
        ("/v1/clusters/{id}", each("/v1/clusters/", "", &clusters)),
        (
            "/v1/clusters/{id}/shards",
            each("/v1/clusters/", "/shards", &clusters),
        ),
        (
            "/v1/clusters/{id}/comp_nodes",
            each("/v1/clusters/", "/comp_nodes", &clusters),
        ),
        (
            "/v1/shards/{id}/nodes",
            each("/v1/shards/", "/nodes", &shards),
        ),
    ];
    // The same walk while another connection commits a change to one machine every
    // `every`: each commit is a new store version, after which the daemon reads the pages again.
    let churned: Vec<(String, Target, Duration)> = CHURN_EVERY_MS
        .iter()
        .map(|ms| {
            (
                format!("/v1/machines, commit/{ms}ms"),
                paged("/v1/machines?limit=100"),
                Duration::from_millis(*ms),
            )
        })
        .collect();
    let targets = targets
        .into_iter()
        .map(|(n, t)| (n.to_string(), t, None))
        .chain(churned.into_iter().map(|(n, t, e)| (n, t, Some(e))));
    let mut results = Vec::new();
    let mut commits = Vec::new();
    for (name, target, churn) in targets {
        let baseline = name == "GET /healthz" || name == "GET /v1/machines";
        if !baseline && run.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        if let Some(status) = daemon.child.try_wait()? {
            bail!("cluster-mgr exited with {status}:\n{}", daemon.log_tail());
        }
        let writer = match churn {
            Some(every) => Some(Churn::start(&place.store, every).await?),
            None => None,
        };
        results.push(load(&http, &token, &name, target, run).await?);
        if let Some(w) = writer {
            commits.push((name, w.stop().await?));
        }
    }
    daemon.stop();

    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}",
        "endpoint (limit=100 pages)",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "KiB/resp"
    );
    for s in &results {
        let per = if s.latencies_us.is_empty() {
            0.0
        } else {
            s.bytes as f64 / 1024.0 / s.latencies_us.len() as f64
        };
        println!(
            "{:<30} {:>9} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>9.1}",
            s.name,
            s.latencies_us.len(),
            s.rps(),
            s.pct(0.50),
            s.pct(0.99),
            s.pct(1.0),
            s.errors,
            per
        );
    }
    let (health, list) = (&results[0], &results[1]);
    println!(
        "\n{}: ratio GET /v1/machines / GET /healthz: throughput {:.3} (goal >= 0.5), p50 {:.1}x, \
         p99 {:.1}x; paginated lists p99 <= 50 ms: {}\n",
        place.backend.name(),
        list.rps() / health.rps(),
        list.pct(0.50) / health.pct(0.50),
        list.pct(0.99) / health.pct(0.99),
        results
            .iter()
            .skip(1)
            .filter(|s| s.pct(0.99) > 50.0)
            .map(|s| format!("{} {:.0} ms", s.name, s.pct(0.99)))
            .reduce(|a, b| format!("{a}, {b}"))
            .map_or_else(|| "all".to_string(), |over| format!("over: {over}"))
    );
    for (name, (n, took)) in &commits {
        println!(
            "{name}: {n} commits in {:.1} s ({:.1}/s) by another connection",
            took.as_secs_f64(),
            *n as f64 / took.as_secs_f64().max(1e-9)
        );
    }
    for s in results.iter().filter(|s| s.errors > 0) {
        println!(
            "errors of {}: {} (first: {})",
            s.name,
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
    ensure!(
        results.iter().all(|s| s.errors == 0),
        "requests failed during the run (see errors column)"
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    // `cargo bench` passes `--bench`. Under `cargo test --all-targets` (scripts/test.sh) the same
    // code runs as a smoke test on SQLite: 50 machines, 5 clusters, no warm-up, one second per
    // endpoint.
    let smoke = !std::env::args().any(|a| a == "--bench");
    if smoke {
        println!("api_load: smoke run (cargo test); `cargo bench -p kunlun-tests --bench api_load` gives the figures");
    }
    let (run, backends) = if smoke {
        (
            Run {
                conns: 4,
                warmup: Duration::ZERO,
                measure: Duration::from_secs(1),
                scale: Scale {
                    machines: 50,
                    clusters: 5,
                },
                only: None,
            },
            "sqlite".to_string(),
        )
    } else {
        (
            Run {
                conns: env_num("API_LOAD_CONNS", 200).max(1),
                warmup: Duration::from_secs(env_num("API_LOAD_WARMUP_SECS", 2)),
                measure: Duration::from_secs(env_num("API_LOAD_SECS", 5).max(1)),
                scale: Scale {
                    machines: env_num("API_LOAD_MACHINES", 10_000).max(4) as u32,
                    clusters: env_num("API_LOAD_CLUSTERS", 1_000).max(1) as u32,
                },
                only: std::env::var("API_LOAD_ONLY")
                    .ok()
                    .filter(|s| !s.is_empty()),
            },
            std::env::var("API_LOAD_BACKENDS").unwrap_or_else(|_| "sqlite,mysql".into()),
        )
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("api_load: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for b in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        let backend = match b {
            "sqlite" => Backend::Sqlite,
            "mysql" => Backend::Mysql,
            other => {
                eprintln!("api_load: API_LOAD_BACKENDS: unknown backend {other:?} (sqlite, mysql)");
                return std::process::ExitCode::FAILURE;
            }
        };
        if let Err(e) = rt.block_on(bench_backend(backend, &run)) {
            eprintln!("api_load ({b}) failed: {e:#}");
            failed = true;
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
