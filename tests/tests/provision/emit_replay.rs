//! The original KunlunBase job API replayed against the real daemon: `POST /HttpService/Emit`
//! is the only way in, as in the original's test suites and Kunlun-XPanel. The daemon runs
//! with an original-style cnf (`meta_group_seeds` of a harness MariaDB, no `meta_backend`),
//! two loopback "machines" (private sshds on 127.0.0.61 and 127.0.0.62) are registered with
//! `create_machine` (SSH access once as extension paras, once from the cnf's `machine_ssh_*`
//! defaults), and one `rbr` cluster is created, checked (metadata rows, who replicates from
//! whom, the compute node's catalog), scaled (`add_shards`, `add_nodes`/`delete_node`,
//! `add_comps`/`delete_comp`), switched over (`manual_switch`), failed over (`kill -9` of a
//! primary under the daemon's HA), deleted, and the machines removed; every parameter error
//! of every job type is answered `accept` and then fails through `get_status` with the
//! original's 700xx code. A second test covers the answers that need no cluster.
//!
//! Invariant: everything this file starts is stopped by PID when the test ends, also on a
//! panic half-way (the daemon first, then every server under the machines' dirs by its pid
//! file, then the sshds and the metadata MariaDB); the cluster itself is removed by the
//! daemon's own `delete_cluster`, which the test checks by processes, ports, dirs and rows.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kunlun_core::catalog::{desired_for_cluster, read_catalog, CatalogOptions};
use kunlun_meta::store::{Store, StoreConfig};
use kunlun_tests::cli::free_port;
use kunlun_tests::daemon::{write_cnf, Daemon};
use kunlun_tests::emit::{Emit, Wire, INVALID_REQUEST, JOB_ID_NOT_FOUND, OK};
use kunlun_tests::harness::harness_root;
use kunlun_tests::world::{kill9, kill_leftovers, pid_in};
use kunlun_tests::{free_port_block, MariaDb, Sshd};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

const IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 61), Ipv4Addr::new(127, 0, 0, 62)];
/// The metadata database on the harness MariaDB.
const DB: &str = "kl_emit_replay";
/// Deadline of a job that installs or removes servers (a loaded 2-core host); not asserted on.
const JOB_LIMIT: Duration = Duration::from_secs(300);
/// Deadline of a job that only validates its paras.
const QUICK: Duration = Duration::from_secs(60);
/// Deadline of a poll of servers or metadata.
const POLL: Duration = Duration::from_secs(120);
const NICK: &str = "emit_replay_nick";

// ---------------------------------------------------------------------------------------------
// The scene: metadata MariaDB, sshds, dirs, daemon.

/// Kills, by their pid files, the servers still running under the machines' dirs when the
/// test ends (a test that finished removed them through the daemon).
struct Leftovers(Vec<PathBuf>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for d in &self.0 {
            kill_leftovers(d);
        }
    }
}

/// One loopback machine's directories: storage `datadir`, `logdir`, `wal_log_dir`, and the
/// computer's `comp_datadir`.
struct HostDirs {
    ip: Ipv4Addr,
    data: PathBuf,
    log: PathBuf,
    wal: PathBuf,
    comp: PathBuf,
}

impl HostDirs {
    fn new(root: &Path, ip: Ipv4Addr) -> HostDirs {
        let base = root.join(format!("host-{ip}"));
        let mk = |name: &str| {
            let d = base.join(name);
            std::fs::create_dir_all(&d).expect("machine dir");
            chmod_755(&d);
            d
        };
        let dirs = HostDirs {
            ip,
            data: mk("data"),
            log: mk("log"),
            wal: mk("wal"),
            comp: mk("comp"),
        };
        chmod_755(&base);
        dirs
    }

    fn all(&self) -> [&PathBuf; 4] {
        [&self.data, &self.log, &self.wal, &self.comp]
    }

    fn s(p: &Path) -> String {
        p.display().to_string()
    }
}

fn chmod_755(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod 0755");
}

/// The tail of the daemon's log, read from its file (for failure messages).
fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of the daemon's log that contain `pat`.
fn log_grep(log: &Path, pat: &str, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<_> = text.lines().filter(|l| l.contains(pat)).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts `cluster-mgr` on an original-style cnf: the MySQL store from `meta_group_seeds`
/// (no `meta_backend`), the API on `brpc_http_port`, plus the test keys and `extra`.
fn start_daemon(wd: &Path, meta: &MariaDb, extra: &[String]) -> (Daemon, PathBuf) {
    let port = free_port();
    let cnf = wd.join("cluster_mgr.cnf");
    let log = wd.join("cluster-mgr.log");
    let mut lines = vec![
        format!("meta_group_seeds = 127.0.0.1:{}", meta.port()),
        "meta_user = root".to_string(),
        "meta_pwd =".to_string(),
        format!("meta_database = {DB}"),
        format!("brpc_http_port = {port}"),
        "mysql_connect_timeout = 2".to_string(),
        "check_shard_interval = 1".to_string(),
        format!("ssh_keys_dir = {}", harness_root().display()),
        "ssh_host_key_policy = accept-new".to_string(),
    ];
    lines.extend(extra.iter().cloned());
    write_cnf(&cnf, &lines).expect("cnf");
    let mut d = Daemon::command(wd, port)
        .log(log.clone())
        .config(&cnf)
        .start()
        .unwrap_or_else(|e| panic!("cluster-mgr: {e:#}"));
    // Emit is served by the leader only (as the original serves it on its raft leader).
    d.wait_for(
        &kunlun_tests::daemon::http(Duration::from_secs(5)),
        "/v1/leader",
        Duration::from_secs(60),
        |st, v| st == 200 && v["role"] == "leader",
    );
    (d, log)
}

fn workdir() -> tempfile::TempDir {
    let wd = tempfile::Builder::new()
        .prefix("kunlun-emit-")
        .tempdir()
        .expect("tempdir");
    chmod_755(wd.path());
    wd
}

/// Rows of `sql` on the metadata database, column name → value (`NULL` for NULL).
fn rows(meta: &MariaDb, sql: &str) -> Vec<HashMap<String, String>> {
    meta.named_rows(&format!("USE {DB}; {sql}"))
        .unwrap_or_else(|e| panic!("metadata query {sql}: {e:#}"))
}

fn count(meta: &MariaDb, sql: &str) -> usize {
    meta.value(&format!("USE {DB}; {sql}"))
        .unwrap_or_else(|e| panic!("metadata query {sql}: {e:#}"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a count from {sql}"))
}

// ---------------------------------------------------------------------------------------------
// What the test reads back: nodes, instances, replication, the catalog.

/// A `shard_nodes` row.
#[derive(Debug, Clone)]
struct Node {
    id: i64,
    shard_id: i64,
    host: String,
    port: u16,
    member_state: String,
    status: String,
    user: String,
    pw: String,
}

impl Node {
    /// `ip_port`, the original's way of naming a node.
    fn key(&self) -> String {
        format!("{}_{}", self.host, self.port)
    }
}

fn nodes(meta: &MariaDb, cluster_id: &str) -> Vec<Node> {
    rows(
        meta,
        &format!(
            "SELECT id, shard_id, hostaddr, port, member_state, status, user_name, passwd \
             FROM shard_nodes WHERE db_cluster_id = {cluster_id} ORDER BY id"
        ),
    )
    .into_iter()
    .map(|r| Node {
        id: r["id"].parse().expect("id"),
        shard_id: r["shard_id"].parse().expect("shard_id"),
        host: r["hostaddr"].clone(),
        port: r["port"].parse().expect("port"),
        member_state: r["member_state"].clone(),
        status: r["status"].clone(),
        user: r["user_name"].clone(),
        pw: r["passwd"].clone(),
    })
    .collect()
}

fn shard_nodes(all: &[Node], shard_id: i64) -> Vec<Node> {
    all.iter()
        .filter(|n| n.shard_id == shard_id)
        .cloned()
        .collect()
}

fn primary(nodes: &[Node]) -> Node {
    let p: Vec<_> = nodes
        .iter()
        .filter(|n| n.member_state == "source")
        .collect();
    assert_eq!(p.len(), 1, "one source: {nodes:#?}");
    p[0].clone()
}

/// `shards` rows of the cluster: (id, name), by id.
fn shards(meta: &MariaDb, cluster_id: &str) -> Vec<(i64, String)> {
    rows(
        meta,
        &format!("SELECT id, name FROM shards WHERE db_cluster_id = {cluster_id} ORDER BY id"),
    )
    .into_iter()
    .map(|r| (r["id"].parse().expect("id"), r["name"].clone()))
    .collect()
}

/// `comp_nodes` rows of the cluster: (id, hostaddr, port), by id.
fn comps(meta: &MariaDb, cluster_id: &str) -> Vec<(i64, String, u16)> {
    rows(
        meta,
        &format!(
            "SELECT id, hostaddr, port FROM comp_nodes WHERE db_cluster_id = {cluster_id} ORDER BY id"
        ),
    )
    .into_iter()
    .map(|r| {
        (
            r["id"].parse().expect("id"),
            r["hostaddr"].clone(),
            r["port"].parse().expect("port"),
        )
    })
    .collect()
}

/// A server as the test tracks it: where it listens, its directory, its PID.
#[derive(Debug, Clone)]
struct Instance {
    host: String,
    port: u16,
    dir: PathBuf,
    pid: i32,
}

/// The server runs (a zombie does not).
fn pid_alive(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(kunlun_tests::pid_running)
}

fn listening(host: &str, port: u16) -> bool {
    let addr = SocketAddr::new(host.parse().expect("ip"), port);
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// The running server at `host:port` (a storage or a compute instance), found by the
/// recipes' layout `<dir>/kunlun/{storage,compute}_<port>` in one of the machine's dirs.
fn instance(hosts: &[HostDirs], storage: bool, host: &str, port: u16) -> Instance {
    let h = hosts
        .iter()
        .find(|h| h.ip.to_string() == host)
        .unwrap_or_else(|| panic!("{host} is a test machine"));
    let kind = if storage { "storage" } else { "compute" };
    let dir = h
        .all()
        .iter()
        .map(|d| d.join("kunlun").join(format!("{kind}_{port}")))
        .find(|d| d.exists())
        .unwrap_or_else(|| panic!("no {kind}_{port} dir under the dirs of {host}"));
    let pid_file = if storage {
        dir.join("run/mysqld.pid")
    } else {
        dir.join("data/postmaster.pid")
    };
    let pid = pid_in(&pid_file).unwrap_or_else(|| panic!("a pid in {}", pid_file.display()));
    assert!(pid_alive(pid), "{kind} {host}:{port} runs (pid {pid})");
    Instance {
        host: host.to_string(),
        port,
        dir,
        pid,
    }
}

fn assert_gone(i: &Instance) {
    assert!(!pid_alive(i.pid), "process {} of {i:?} is gone", i.pid);
    assert!(!listening(&i.host, i.port), "{i:?} no longer listens");
    assert!(!i.dir.exists(), "{} removed", i.dir.display());
}

/// Processes whose command line names an instance under `root` (`.../kunlun/...`).
fn processes_under(root: &Path) -> Vec<(i32, String)> {
    let needle = root.display().to_string();
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if cmd.contains(&needle) && cmd.contains("/kunlun/") {
            out.push((pid, cmd));
        }
    }
    out
}

async fn connect(n: &Node) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(n.host.clone())
        .tcp_port(n.port)
        .user(Some(n.user.clone()))
        .pass(Some(n.pw.clone()))
        .prefer_socket(false);
    tokio::time::timeout(Duration::from_secs(20), mysql_async::Conn::new(opts))
        .await
        .unwrap_or_else(|_| panic!("connect to {} within 20 s", n.key()))
        .unwrap_or_else(|e| panic!("connect to {}: {e}", n.key()))
}

/// Named string columns of the first row of `sql` (empty without a row).
async fn first_row(c: &mut mysql_async::Conn, sql: &str) -> HashMap<String, String> {
    let rows: Vec<mysql_async::Row> = tokio::time::timeout(Duration::from_secs(20), c.query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql} within 20 s"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    all_columns(rows.first())
}

fn all_columns(r: Option<&mysql_async::Row>) -> HashMap<String, String> {
    let Some(r) = r else {
        return HashMap::new();
    };
    r.columns_ref()
        .iter()
        .enumerate()
        .map(|(i, col)| {
            let v = match r.as_ref(i) {
                Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(mysql_async::Value::Int(n)) => n.to_string(),
                Some(mysql_async::Value::UInt(n)) => n.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (col.name_str().into_owned(), v)
        })
        .collect()
}

/// The shard replicates as metadata says: `SHOW SLAVE HOSTS` on the primary lists every
/// replica's server id, every replica's `SHOW SLAVE STATUS` names the primary with both
/// threads running, and a row written on the primary (`marker`) reaches every replica.
async fn check_replication(shard: &[Node], marker: &str) {
    let p = primary(shard);
    let replicas: Vec<&Node> = shard
        .iter()
        .filter(|n| n.id != p.id && n.status != "inactive")
        .collect();
    let mut pc = connect(&p).await;
    pc.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS emit_replay; \
         CREATE TABLE IF NOT EXISTS emit_replay.t (k VARCHAR(40) PRIMARY KEY); \
         INSERT IGNORE INTO emit_replay.t VALUES ('{marker}')"
    ))
    .await
    .unwrap_or_else(|e| panic!("write on the primary {}: {e}", p.key()));
    let mut want_ids = BTreeSet::new();
    for r in &replicas {
        let mut rc = connect(r).await;
        let id = first_row(&mut rc, "SELECT @@server_id AS id").await["id"].clone();
        want_ids.insert(id);
        let deadline = Instant::now() + POLL;
        let q = format!("SELECT k FROM emit_replay.t WHERE k = '{marker}'");
        loop {
            let st = first_row(&mut rc, "SHOW SLAVE STATUS").await;
            let get = |k: &str| st.get(k).cloned().unwrap_or_default();
            let has: Vec<String> = rc.query(&q).await.unwrap_or_default();
            let follows = get("Master_Host") == p.host
                && get("Master_Port") == p.port.to_string()
                && get("Slave_IO_Running") == "Yes"
                && get("Slave_SQL_Running") == "Yes";
            if follows && !has.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {} follows {} and has row {marker}: slave status {:?}:{} IO {} SQL {} \
                 ({}), rows {has:?}",
                r.key(),
                p.key(),
                get("Master_Host"),
                get("Master_Port"),
                get("Slave_IO_Running"),
                get("Slave_SQL_Running"),
                get("Last_Error"),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        rc.disconnect().await.ok();
    }
    let deadline = Instant::now() + POLL;
    loop {
        let hosts: Vec<mysql_async::Row> = pc
            .query("SHOW SLAVE HOSTS")
            .await
            .unwrap_or_else(|e| panic!("SHOW SLAVE HOSTS on {}: {e}", p.key()));
        let got: BTreeSet<String> = hosts
            .iter()
            .map(|r| all_columns(Some(r)).remove("Server_id").unwrap_or_default())
            .collect();
        if got == want_ids {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SHOW SLAVE HOSTS on {} lists server ids {got:?}, want {want_ids:?}",
            p.key()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pc.disconnect().await.ok();
}

/// Every compute node of the cluster holds exactly the catalog rows its metadata implies
/// (`shards` shards), within [`POLL`] (the daemon re-pushes every few seconds).
async fn check_catalog(store: &Store, cluster_id: i64, shards: usize) {
    let deadline = Instant::now() + POLL;
    loop {
        let (comps, desired) = desired_for_cluster(store, cluster_id)
            .await
            .expect("desired catalog");
        let mut why = None;
        if desired.shards.len() != shards {
            why = Some(format!("metadata has {} shards", desired.shards.len()));
        }
        if comps.is_empty() {
            why = Some("no compute node in service".to_string());
        }
        for c in &comps {
            match read_catalog(store, c, &CatalogOptions::default()).await {
                Ok(got) if got == desired.for_comp(c.id) && got.cluster_meta.len() == 1 => {}
                Ok(got) => {
                    why = Some(format!(
                        "catalog of {}: {got:?}, want {:?}",
                        c.name,
                        desired.for_comp(c.id)
                    ))
                }
                Err(e) => why = Some(format!("read catalog of {}: {e}", c.name)),
            }
        }
        let Some(why) = why else {
            return;
        };
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Parameter errors: every one is checked; mismatching codes are gathered and reported at the
// end (each is also printed at once), so one run shows them all.

struct Codes<'a> {
    emit: &'a Emit,
    wrong: Vec<String>,
}

impl Codes<'_> {
    /// `job_type` with `paras` is accepted, then fails with code `want` (any code when
    /// `None`) and a message.
    fn fails(&mut self, job_type: &str, paras: Value, want: Option<&str>) {
        let req = paras.to_string();
        let t0 = Instant::now();
        let (code, info) = self.emit.run_failed(job_type, paras, QUICK);
        eprintln!(
            "  [{:.1?}] {job_type} {req} -> failed {code} {info:?}",
            t0.elapsed()
        );
        if let Some(want) = want {
            if code != want {
                self.note(format!(
                    "{job_type} {req}: error_code {code} ({info:?}), want {want}"
                ));
            }
        }
    }

    /// Records a difference from the original (printed now, reported at the end).
    fn note(&mut self, m: String) {
        eprintln!("DIFFERS FROM THE ORIGINAL: {m}");
        self.wrong.push(m);
    }
}

/// `{..base, ..extra}` with keys of `drop` removed.
fn paras(base: &Value, extra: Value, drop: &[&str]) -> Value {
    let mut v = base.clone();
    let o = v.as_object_mut().expect("paras object");
    if let Some(e) = extra.as_object() {
        o.extend(e.clone());
    }
    for k in drop {
        o.remove(*k);
    }
    v
}

fn is_cluster_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('_').collect();
    parts.len() == 3
        && parts[0] == "cluster"
        && !parts[1].is_empty()
        && parts[1].bytes().all(|b| b.is_ascii_digit())
        && parts[2].len() == 6
        && parts[2].bytes().all(|b| b.is_ascii_digit())
}

/// A phase's duration, printed as it ends and kept for the summary.
struct Clock {
    t0: Instant,
    last: Instant,
    phases: Vec<(String, Duration)>,
}

impl Clock {
    fn new() -> Clock {
        let now = Instant::now();
        Clock {
            t0: now,
            last: now,
            phases: Vec::new(),
        }
    }

    fn lap(&mut self, what: &str) {
        let d = self.last.elapsed();
        self.last = Instant::now();
        eprintln!("== {what}: {d:.1?} (total {:.1?})", self.t0.elapsed());
        self.phases.push((what.to_string(), d));
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn emit_replay_a_cluster_lifecycle_over_two_machines() {
    let mut clock = Clock::new();
    let meta = MariaDb::start().expect("metadata MariaDB");
    let sshds: Vec<Sshd> = IPS
        .iter()
        .map(|ip| Sshd::start_on(*ip).unwrap_or_else(|e| panic!("sshd on {ip}: {e:#}")))
        .collect();
    let wd = workdir();
    let hosts: Vec<HostDirs> = IPS.iter().map(|ip| HostDirs::new(wd.path(), *ip)).collect();
    let _leftovers = Leftovers(
        hosts
            .iter()
            .flat_map(|h| h.all().into_iter().cloned())
            .collect(),
    );
    // Machine B gets its SSH access from the cnf's defaults.
    let b = &sshds[1];
    let (mut daemon, log) = start_daemon(
        wd.path(),
        &meta,
        &[
            format!("machine_ssh_user = {}", b.user()),
            format!("machine_ssh_port = {}", b.port()),
            format!("machine_ssh_key = {}", b.user_key().private.display()),
        ],
    );
    let log2 = log.clone();
    let emit = Emit::new(&daemon.url())
        .with_context(move || format!("daemon log tail:\n{}", log_tail(&log2, 40)));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = rt
        .block_on(Store::open(&StoreConfig::mysql(
            vec![format!("127.0.0.1:{}", meta.port())],
            "root",
            "",
            DB,
        )))
        .expect("the metadata store");
    let mut codes = Codes {
        emit: &emit,
        wrong: Vec::new(),
    };
    clock.lap("start: MariaDB, 2 sshds, daemon");

    // ---- create_machine: storage on A (SSH as extension paras), storage on B (SSH from the
    // cnf), computer on A.
    let (a_ip, b_ip) = (IPS[0].to_string(), IPS[1].to_string());
    let block = |ip: Ipv4Addr| {
        let base = free_port_block(IpAddr::V4(ip), 41);
        format!("{}-{}", base, base + 40)
    };
    let storage = |h: &HostDirs| {
        json!({
            "hostaddr": h.ip.to_string(), "machine_type": "storage", "rack_id": "1",
            "datadir": HostDirs::s(&h.data), "logdir": HostDirs::s(&h.log),
            "wal_log_dir": HostDirs::s(&h.wal), "total_mem": "4096", "total_cpu_cores": "2",
            "port_range": block(h.ip),
        })
    };
    let ssh_a = json!({
        "ssh_port": sshds[0].port().to_string(), "ssh_user": sshds[0].user(),
        "ssh_key_path": sshds[0].user_key().private.display().to_string(),
    });
    let storage_a = paras(&storage(&hosts[0]), ssh_a.clone(), &[]);
    let machine_limit = Duration::from_secs(120);
    emit.run_done("create_machine", storage_a.clone(), machine_limit);
    emit.run_done("create_machine", storage(&hosts[1]), machine_limit);
    let computer_a = paras(
        &json!({
            "hostaddr": a_ip, "machine_type": "computer", "rack_id": "1",
            "comp_datadir": HostDirs::s(&hosts[0].comp), "total_mem": "4096",
            "total_cpu_cores": "2", "port_range": block(IPS[0]),
        }),
        ssh_a,
        &[],
    );
    emit.run_done("create_machine", computer_a, machine_limit);
    let machines = rows(
        &meta,
        "SELECT s.hostaddr, s.machine_type, s.port_range, s.datadir, s.comp_datadir, \
         k.ssh_port FROM server_nodes s LEFT JOIN kl_machine_ssh k ON k.server_node_id = s.id \
         ORDER BY s.id",
    );
    eprintln!("server_nodes: {machines:?}");
    assert_eq!(machines.len(), 3, "{machines:?}");
    let m = |host: &str, ty: &str| {
        machines
            .iter()
            .find(|r| r["hostaddr"] == host && r["machine_type"] == ty)
            .unwrap_or_else(|| panic!("a {ty} row of {host}: {machines:?}"))
    };
    assert_eq!(m(&a_ip, "storage")["ssh_port"], sshds[0].port().to_string());
    assert_eq!(
        m(&b_ip, "storage")["ssh_port"],
        sshds[1].port().to_string(),
        "machine B uses the cnf's machine_ssh_port"
    );
    assert_eq!(
        m(&a_ip, "computer")["ssh_port"],
        sshds[0].port().to_string()
    );
    assert_eq!(
        m(&a_ip, "storage")["port_range"],
        storage_a["port_range"].as_str().expect("range")
    );
    // The same host and type again.
    codes.fails("create_machine", storage_a.clone(), Some("70062"));
    clock.lap("create_machine x3");

    // ---- create_cluster rbr 1 shard x 3 nodes + 1 compute node.
    let create = json!({
        "ha_mode": "rbr", "shards": "1", "nodes": "3", "comps": "1",
        "max_storage_size": "20", "max_connections": "100", "cpu_cores": "2",
        "innodb_size": "32", "nick_name": NICK, "dbcfg": "0",
        "storage_iplists": [a_ip, b_ip], "computer_iplists": [a_ip],
    });
    // Hosts that are not registered machines of the type (given as the other type, or not
    // at all): refused before anything is installed.
    codes.fails(
        "create_cluster",
        paras(&create, json!({"storage_iplists": ["127.0.0.99"]}), &[]),
        Some("70181"),
    );
    codes.fails(
        "create_cluster",
        paras(&create, json!({"computer_iplists": [b_ip]}), &[]),
        Some("70182"),
    );
    assert_eq!(count(&meta, "SELECT COUNT(*) FROM db_clusters"), 0);
    let id = emit.accept_as("create_cluster", create, Wire::Text11);
    let (done, seen) = emit.wait(&id, JOB_LIMIT);
    eprintln!("create_cluster statuses {seen:?}: {}", done.text);
    assert_eq!(
        (done.s("status"), done.s("error_code")),
        ("done", OK),
        "create_cluster: {}\n{}",
        done.text,
        emit.context()
    );
    let att = &done.body["attachment"];
    let cid = att["cluster_id"]
        .as_str()
        .unwrap_or_else(|| panic!("cluster_id a string: {att}"))
        .to_string();
    let cid_n: i64 = cid.parse().expect("cluster_id digits");
    let cname = att["cluster_name"].as_str().unwrap_or("").to_string();
    assert!(is_cluster_name(&cname), "cluster_name {cname:?}: {att}");
    assert_eq!(att["nick_name"], NICK, "{att}");
    assert_eq!(att["storage_state"], "done", "{att}");
    assert_eq!(att["computer_state"], "done", "{att}");
    assert_eq!(att["job_steps"], "shard,computer", "{att}");
    let shard_step = att["shard_step"].as_array().expect("shard_step array");
    let computer_step = att["computer_step"]
        .as_array()
        .expect("computer_step array");
    assert!(!shard_step.is_empty() && !computer_step.is_empty(), "{att}");
    for k in ["shard_ids", "storage_hosts", "error_info"] {
        assert!(!shard_step[0][k].is_null(), "shard_step[0].{k}: {att}");
    }
    for k in ["computer_hosts", "computer_id", "computer_state"] {
        assert!(
            !computer_step[0][k].is_null(),
            "computer_step[0].{k}: {att}"
        );
    }
    clock.lap("create_cluster 1x3+1");

    // Metadata.
    let cl = rows(
        &meta,
        "SELECT id, name, nick_name, ha_mode FROM db_clusters",
    );
    assert_eq!(cl.len(), 1, "{cl:?}");
    assert_eq!(
        (
            cl[0]["id"].as_str(),
            cl[0]["name"].as_str(),
            cl[0]["nick_name"].as_str(),
            cl[0]["ha_mode"].as_str()
        ),
        (cid.as_str(), cname.as_str(), NICK, "rbr")
    );
    let sh = shards(&meta, &cid);
    assert_eq!(
        sh.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
        ["shard_1"]
    );
    let s1 = sh[0].0;
    let all = nodes(&meta, &cid);
    assert_eq!(all.len(), 3, "{all:#?}");
    let p1 = primary(&all);
    assert_eq!(
        all.iter().filter(|n| n.member_state == "replica").count(),
        2,
        "{all:#?}"
    );
    let node_hosts: BTreeSet<_> = all.iter().map(|n| n.host.clone()).collect();
    assert_eq!(
        node_hosts.len(),
        2,
        "the shard spans both machines: {all:#?}"
    );
    let storage_hosts = shard_step[0]["storage_hosts"].as_str().unwrap_or("");
    for n in &all {
        assert!(
            storage_hosts.contains(&format!("{};", n.key())),
            "shard_step storage_hosts {storage_hosts:?} names {}",
            n.key()
        );
    }
    let cs = comps(&meta, &cid);
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert_eq!(cs[0].1, a_ip);
    let comp_key = format!("{}_{}", cs[0].1, cs[0].2);
    assert!(
        computer_step[0]["computer_hosts"]
            .as_str()
            .unwrap_or("")
            .contains(&comp_key),
        "computer_hosts names {comp_key}: {att}"
    );
    let masters = rows(
        &meta,
        &format!("SELECT node_host, master_host FROM node_map_master WHERE cluster_id = {cid}"),
    );
    for r in all.iter().filter(|n| n.id != p1.id) {
        assert!(
            masters
                .iter()
                .any(|m| m["node_host"] == r.key() && m["master_host"] == p1.key()),
            "node_map_master: {} -> {}: {masters:?}",
            r.key(),
            p1.key()
        );
    }
    let mut instances: Vec<Instance> = all
        .iter()
        .map(|n| instance(&hosts, true, &n.host, n.port))
        .chain(cs.iter().map(|c| instance(&hosts, false, &c.1, c.2)))
        .collect();
    rt.block_on(async {
        check_replication(&all, "after_create").await;
        check_catalog(&store, cid_n, 1).await;
    });
    clock.lap("checks after create");

    // ---- Parameter errors and refusals against the live cluster (1 shard, 1 comp).
    let c = json!({ "cluster_id": cid });
    let s1s = s1.to_string();
    let comp1 = cs[0].0.to_string();
    let replica = all
        .iter()
        .find(|n| n.id != p1.id)
        .expect("a replica")
        .clone();
    codes.fails(
        "add_shards",
        json!({"shards": "1", "nodes": "3"}),
        Some("70119"),
    );
    codes.fails(
        "add_shards",
        paras(&c, json!({"nodes": "3"}), &[]),
        Some("70120"),
    );
    codes.fails(
        "add_shards",
        paras(&c, json!({"shards": "0", "nodes": "3"}), &[]),
        Some("70121"),
    );
    codes.fails(
        "add_shards",
        paras(&c, json!({"shards": "1"}), &[]),
        Some("70122"),
    );
    codes.fails(
        "add_shards",
        paras(&c, json!({"shards": "1", "nodes": "x"}), &[]),
        Some("70123"),
    );
    codes.fails(
        "add_shards",
        paras(
            &c,
            json!({"shards": "1", "nodes": "1", "storage_iplists": ["127.0.0.99"]}),
            &[],
        ),
        Some("70184"),
    );
    codes.fails("delete_shard", json!({"shard_id": s1s}), Some("70139"));
    codes.fails("delete_shard", c.clone(), Some("70140"));
    codes.fails(
        "delete_shard",
        paras(&c, json!({"shard_id": s1s}), &[]),
        Some("70174"),
    );
    codes.fails(
        "delete_shard",
        paras(&c, json!({"shard_id": "999999"}), &[]),
        None,
    );
    codes.fails("add_comps", json!({"comps": "1"}), Some("70109"));
    codes.fails("add_comps", c.clone(), Some("70108"));
    codes.fails(
        "add_comps",
        paras(&c, json!({"comps": "0"}), &[]),
        Some("70110"),
    );
    codes.fails(
        "add_comps",
        paras(
            &c,
            json!({"comps": "1", "computer_iplists": ["127.0.0.99"]}),
            &[],
        ),
        Some("70185"),
    );
    codes.fails("delete_comp", json!({"comp_id": comp1}), Some("70132"));
    codes.fails("delete_comp", c.clone(), Some("70133"));
    codes.fails(
        "delete_comp",
        paras(&c, json!({"comp_id": comp1}), &[]),
        Some("70157"),
    );
    codes.fails(
        "delete_comp",
        paras(&c, json!({"comp_id": "999999"}), &[]),
        None,
    );
    codes.fails("add_nodes", json!({"nodes": "1"}), Some("70154"));
    codes.fails("add_nodes", c.clone(), Some("70155"));
    codes.fails(
        "add_nodes",
        paras(&c, json!({"nodes": "x"}), &[]),
        Some("70156"),
    );
    codes.fails(
        "add_nodes",
        paras(
            &c,
            json!({"nodes": "1", "storage_iplists": ["127.0.0.99"]}),
            &[],
        ),
        Some("70183"),
    );
    codes.fails(
        "add_nodes",
        paras(&c, json!({"nodes": "1", "shard_id": "999999"}), &[]),
        None,
    );
    let del_node = json!({
        "cluster_id": cid, "shard_id": s1s, "hostaddr": replica.host,
        "port": replica.port.to_string(),
    });
    codes.fails(
        "delete_node",
        paras(&del_node, json!({}), &["cluster_id"]),
        Some("70168"),
    );
    codes.fails(
        "delete_node",
        paras(&del_node, json!({}), &["shard_id"]),
        Some("70169"),
    );
    codes.fails(
        "delete_node",
        paras(&del_node, json!({}), &["hostaddr"]),
        Some("70170"),
    );
    codes.fails(
        "delete_node",
        paras(&del_node, json!({}), &["port"]),
        Some("70171"),
    );
    codes.fails(
        "delete_node",
        paras(
            &del_node,
            json!({"hostaddr": p1.host, "port": p1.port.to_string()}),
            &[],
        ),
        Some("70172"),
    );
    codes.fails(
        "delete_node",
        paras(&del_node, json!({"port": "1"}), &[]),
        Some("70173"),
    );
    let switch = json!({
        "cluster_id": cid, "shard_id": s1s, "master_hostaddr": p1.key(),
        "assign_hostaddr": replica.key(),
    });
    codes.fails(
        "manual_switch",
        paras(&switch, json!({}), &["cluster_id"]),
        None,
    );
    codes.fails(
        "manual_switch",
        paras(&switch, json!({}), &["shard_id"]),
        None,
    );
    codes.fails(
        "manual_switch",
        paras(&switch, json!({}), &["master_hostaddr"]),
        None,
    );
    codes.fails(
        "manual_switch",
        paras(&switch, json!({"master_hostaddr": replica.key()}), &[]),
        None,
    );
    codes.fails(
        "manual_switch",
        paras(
            &switch,
            json!({"assign_hostaddr": format!("{a_ip}_1")}),
            &[],
        ),
        None,
    );
    codes.fails(
        "manual_switch",
        paras(&switch, json!({"shard_id": "999999"}), &[]),
        None,
    );
    codes.fails(
        "set_noswitch",
        json!({"type": "1", "timeout": "600", "shard_id": s1s}),
        None,
    );
    codes.fails("delete_cluster", json!({}), Some("70096"));
    // A machine that holds instances cannot go.
    codes.fails(
        "delete_machine",
        json!({"hostaddr": a_ip, "machine_type": "storage"}),
        Some("70064"),
    );
    // Nothing of the cluster changed.
    assert_eq!(nodes(&meta, &cid).len(), 3);
    assert_eq!(comps(&meta, &cid).len(), 1);
    assert_eq!(shards(&meta, &cid).len(), 1);
    clock.lap("parameter errors against the cluster");

    // ---- sync: get_variable on the primary.
    let a = emit.call(
        "get_variable",
        json!({"hostaddr": p1.host, "port": p1.port.to_string(), "variable": "port"}),
    );
    assert_eq!(
        (a.s("status"), a.s("error_code")),
        ("done", OK),
        "get_variable: {}",
        a.text
    );
    assert_eq!(a.body["attachment"]["result"], "true", "{}", a.text);
    assert_eq!(
        a.body["attachment"]["value"],
        p1.port.to_string(),
        "{}",
        a.text
    );

    // ---- add_shards: shard_2 of 3 nodes.
    let a = emit.run_done(
        "add_shards",
        paras(&c, json!({"shards": "1", "nodes": "3"}), &[]),
        JOB_LIMIT,
    );
    eprintln!("add_shards: {}", a.text);
    assert_eq!(
        a.body["attachment"]["cluster_id"], cid,
        "add_shards: {}",
        a.text
    );
    assert!(
        a.body["attachment"]["shard_ids"]
            .to_string()
            .contains("shard_2"),
        "add_shards names shard_2: {}",
        a.text
    );
    let sh = shards(&meta, &cid);
    assert_eq!(
        sh.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
        ["shard_1", "shard_2"]
    );
    let s2 = sh[1].0;
    let all = nodes(&meta, &cid);
    let n2 = shard_nodes(&all, s2);
    assert_eq!(n2.len(), 3, "{n2:#?}");
    instances.extend(n2.iter().map(|n| instance(&hosts, true, &n.host, n.port)));
    rt.block_on(async {
        check_replication(&n2, "after_add_shards").await;
        check_catalog(&store, cid_n, 2).await;
    });
    clock.lap("add_shards 1x3");

    // ---- add_nodes without shard_id: one more node in every shard (the original's
    // meaning). Checked, and the nodes removed again, when it is done; a refusal is a
    // difference from the original, noted and reported at the end.
    let before = nodes(&meta, &cid);
    let id = emit.accept("add_nodes", paras(&c, json!({"nodes": "1"}), &[]));
    let (a, _) = emit.wait(&id, JOB_LIMIT);
    eprintln!("add_nodes without shard_id: {}", a.text);
    if a.s("status") == "done" {
        let after = nodes(&meta, &cid);
        for s in [s1, s2] {
            assert_eq!(
                shard_nodes(&after, s).len(),
                4,
                "one node more in shard {s}: {after:#?}"
            );
        }
        for n in after
            .iter()
            .filter(|n| !before.iter().any(|o| o.id == n.id))
        {
            let inst = instance(&hosts, true, &n.host, n.port);
            emit.run_done(
                "delete_node",
                json!({"cluster_id": cid, "shard_id": n.shard_id.to_string(),
                       "hostaddr": n.host, "port": n.port.to_string()}),
                JOB_LIMIT,
            );
            assert_gone(&inst);
        }
    } else {
        codes.note(format!(
            "add_nodes {{cluster_id, nodes: \"1\"}} without shard_id on a 2-shard cluster: \
             {} {} {:?}, want done with one node added to every shard",
            a.s("status"),
            a.s("error_code"),
            a.s("error_info")
        ));
        assert_eq!(
            nodes(&meta, &cid).len(),
            before.len(),
            "a refusal adds nothing"
        );
    }

    // ---- add_nodes 1 to shard_2 (shard_1 untouched), then delete_node of it.
    let a = emit.run_done(
        "add_nodes",
        paras(&c, json!({"nodes": "1", "shard_id": s2.to_string()}), &[]),
        JOB_LIMIT,
    );
    eprintln!("add_nodes: {}", a.text);
    assert_eq!(
        a.body["attachment"]["cluster_id"], cid,
        "add_nodes: {}",
        a.text
    );
    let all = nodes(&meta, &cid);
    assert_eq!(shard_nodes(&all, s1).len(), 3, "shard_1 untouched");
    let n2b = shard_nodes(&all, s2);
    assert_eq!(n2b.len(), 4, "{n2b:#?}");
    let added = n2b
        .iter()
        .find(|n| !n2.iter().any(|o| o.id == n.id))
        .expect("the new node")
        .clone();
    assert_eq!(added.member_state, "replica", "{added:?}");
    let added_inst = instance(&hosts, true, &added.host, added.port);
    rt.block_on(async {
        // The row written before it existed came with the seed.
        let mut c = connect(&added).await;
        let got: Vec<String> = c
            .query("SELECT k FROM emit_replay.t WHERE k = 'after_add_shards'")
            .await
            .expect("seeded data");
        assert_eq!(got, ["after_add_shards"], "the new replica was seeded");
        c.disconnect().await.ok();
        check_replication(&n2b, "after_add_nodes").await;
    });
    let p2 = primary(&n2b);
    let masters = rows(
        &meta,
        &format!("SELECT node_host, master_host FROM node_map_master WHERE cluster_id = {cid}"),
    );
    assert!(
        masters
            .iter()
            .any(|m| m["node_host"] == added.key() && m["master_host"] == p2.key()),
        "node_map_master of the new node: {masters:?}"
    );
    let a = emit.run_done(
        "delete_node",
        json!({"cluster_id": cid, "shard_id": s2.to_string(), "hostaddr": added.host,
               "port": added.port.to_string()}),
        JOB_LIMIT,
    );
    eprintln!("delete_node: {}", a.text);
    assert_eq!(
        a.body["attachment"]["cluster_id"], cid,
        "delete_node: {}",
        a.text
    );
    assert_gone(&added_inst);
    let all = nodes(&meta, &cid);
    assert_eq!(shard_nodes(&all, s2).len(), 3);
    assert!(all.iter().all(|n| n.id != added.id));
    clock.lap("add_nodes 1 + delete_node");

    // ---- add_comps 1, then delete_comp of it.
    let a = emit.run_done(
        "add_comps",
        paras(&c, json!({"comps": "1"}), &[]),
        JOB_LIMIT,
    );
    eprintln!("add_comps: {}", a.text);
    assert_eq!(
        a.body["attachment"]["cluster_id"], cid,
        "add_comps: {}",
        a.text
    );
    let cs2 = comps(&meta, &cid);
    assert_eq!(cs2.len(), 2, "{cs2:?}");
    let new_comp = cs2
        .iter()
        .find(|x| x.0 != cs[0].0)
        .expect("the new compute node")
        .clone();
    let new_key = format!("{}_{};", new_comp.1, new_comp.2);
    assert!(
        a.body["attachment"]["computer_hosts"]
            .as_str()
            .unwrap_or("")
            .contains(&new_key),
        "add_comps computer_hosts names {new_key}: {}",
        a.text
    );
    let comp_inst = instance(&hosts, false, &new_comp.1, new_comp.2);
    rt.block_on(check_catalog(&store, cid_n, 2));
    let a = emit.run_done(
        "delete_comp",
        paras(&c, json!({"comp_id": new_comp.0.to_string()}), &[]),
        JOB_LIMIT,
    );
    eprintln!("delete_comp: {}", a.text);
    assert_eq!(
        a.body["attachment"]["cluster_id"], cid,
        "delete_comp: {}",
        a.text
    );
    assert_gone(&comp_inst);
    assert_eq!(comps(&meta, &cid).len(), 1);
    clock.lap("add_comps 1 + delete_comp");

    // ---- manual_switch of shard_1 to a replica.
    let target = replica.clone();
    let req = paras(&switch, json!({}), &[]);
    let a = emit.send_body(
        &kunlun_tests::emit::envelope("manual_switch", req),
        Wire::Json10,
    );
    let a = if a.s("status") == "accept" {
        emit.wait(a.s("job_id"), JOB_LIMIT).0
    } else {
        a
    };
    eprintln!("manual_switch: {}", a.text);
    assert_eq!(
        a.body["attachment"]["cluster_id"], cid,
        "manual_switch: {}",
        a.text
    );
    assert_eq!(
        (a.s("status"), a.s("error_code")),
        ("done", OK),
        "manual_switch: {}\n{}",
        a.text,
        emit.context()
    );
    let n1 = shard_nodes(&nodes(&meta, &cid), s1);
    assert_eq!(
        primary(&n1).id,
        target.id,
        "metadata names the assigned node: {n1:#?}"
    );
    rt.block_on(async {
        check_replication(&n1, "after_switch").await;
        check_catalog(&store, cid_n, 2).await;
    });
    clock.lap("manual_switch");

    // ---- kill -9 of shard_2's primary: the daemon's HA promotes another node. (Not
    // shard_1's: the switchover just made opened its anti-flapping window.)
    let old = primary(&shard_nodes(&nodes(&meta, &cid), s2));
    let victim = instance(&hosts, true, &old.host, old.port);
    kill9(victim.pid);
    let deadline = Instant::now() + POLL;
    let promoted = loop {
        let n2 = shard_nodes(&nodes(&meta, &cid), s2);
        let src: Vec<_> = n2.iter().filter(|n| n.member_state == "source").collect();
        if src.len() == 1 && src[0].id != old.id {
            break src[0].clone();
        }
        if Instant::now() > deadline {
            let ha = kunlun_tests::daemon::http(Duration::from_secs(10))
                .get(daemon.url_for("/v1/ha"))
                .send()
                .and_then(|r| r.text())
                .unwrap_or_default();
            panic!(
                "no new primary of shard_2 after kill -9 of {}: {n2:#?}
GET /v1/ha: {ha}
                 HA log lines:
{}",
                old.key(),
                log_grep(&log, "kunlun_core::ha", 40)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("promoted {} after kill -9 of {}", promoted.key(), old.key());
    let n2 = shard_nodes(&nodes(&meta, &cid), s2);
    let survivors: Vec<Node> = n2.iter().filter(|n| n.id != old.id).cloned().collect();
    rt.block_on(async {
        check_replication(&survivors, "after_failover").await;
        check_catalog(&store, cid_n, 2).await;
    });
    clock.lap("kill -9 failover");

    // ---- set_noswitch on shard_1.
    let req = json!({"type": "1", "timeout": "600", "cluster_id": cid, "shard_id": s1s});
    let a = emit.call("set_noswitch", req);
    let a = if a.s("status") == "accept" {
        emit.wait(a.s("job_id"), QUICK).0
    } else {
        a
    };
    assert_eq!(
        (a.s("status"), a.s("error_code")),
        ("done", OK),
        "set_noswitch: {}",
        a.text
    );

    // ---- delete_cluster: nothing of it is left.
    let a = emit.run_done("delete_cluster", c.clone(), JOB_LIMIT);
    eprintln!("delete_cluster: {}", a.text);
    assert_eq!(
        a.body["attachment"]["cluster_id"], cid,
        "delete_cluster: {}",
        a.text
    );
    assert_eq!(
        a.body["attachment"]["job_steps"], "shard,computer",
        "{}",
        a.text
    );
    for i in &instances {
        if i.pid == victim.pid {
            assert!(!pid_alive(i.pid) && !i.dir.exists(), "{i:?} removed");
        } else {
            assert_gone(i);
        }
    }
    let left = processes_under(wd.path());
    assert!(
        left.is_empty(),
        "servers left under the machines' dirs: {left:?}"
    );
    for (table, col) in [
        ("db_clusters", "id"),
        ("shards", "db_cluster_id"),
        ("shard_nodes", "db_cluster_id"),
        ("comp_nodes", "db_cluster_id"),
        ("node_map_master", "cluster_id"),
    ] {
        assert_eq!(
            count(
                &meta,
                &format!("SELECT COUNT(*) FROM {table} WHERE {col} = {cid}")
            ),
            0,
            "{table} rows of the cluster"
        );
    }
    let used = rows(
        &meta,
        "SELECT hostaddr, used_port, installing_port FROM server_nodes",
    );
    for r in &used {
        for k in ["used_port", "installing_port"] {
            let v = r[k].as_str();
            assert!(
                matches!(v, "" | "NULL" | "[]"),
                "{k} of {} released: {r:?}",
                r["hostaddr"]
            );
        }
    }
    codes.fails("delete_cluster", c.clone(), Some("70098"));
    clock.lap("delete_cluster");

    // ---- delete_machine of each; then none is known.
    for (host, ty) in [(&a_ip, "storage"), (&b_ip, "storage"), (&a_ip, "computer")] {
        emit.run_done(
            "delete_machine",
            json!({"hostaddr": host, "machine_type": ty}),
            QUICK,
        );
    }
    assert_eq!(count(&meta, "SELECT COUNT(*) FROM server_nodes"), 0);
    codes.fails(
        "delete_machine",
        json!({"hostaddr": a_ip, "machine_type": "storage"}),
        Some("70066"),
    );
    clock.lap("delete_machine x3");

    drop(store);
    daemon.stop();
    eprintln!("phases: {:?}", clock.phases);
    assert!(
        codes.wrong.is_empty(),
        "answers that differ from the original's:\n{}",
        codes.wrong.join("\n")
    );
}

/// The answers that need no cluster: transport (OPTIONS, HTTP/1.0, text/plain), instant
/// errors, `get_status` of unknown ids, the sync job types, unsupported job types, and the
/// parameter errors of `create_machine` / `create_cluster` and of jobs naming unknown ids.
#[test]
fn emit_replay_errors_without_a_cluster() {
    let t0 = Instant::now();
    let meta = MariaDb::start().expect("metadata MariaDB");
    let wd = workdir();
    let (mut daemon, log) = start_daemon(wd.path(), &meta, &[]);
    eprintln!("== daemon leads after {:.1?}", t0.elapsed());
    let log2 = log.clone();
    let emit = Emit::new(&daemon.url())
        .with_context(move || format!("daemon log tail:\n{}", log_tail(&log2, 40)));

    // Pre-flight.
    let a = emit.options();
    assert_eq!(a.http_status, 200, "{a:?}");
    assert_eq!(a.allow_origin.as_deref(), Some("*"), "{a:?}");
    assert!(
        a.allow_methods.as_deref().unwrap_or("").contains("POST"),
        "{a:?}"
    );

    // Instant errors.
    let instant = |body: &str, wire: Wire| {
        let a = emit.raw(body, wire);
        emit.check_transport(body, &a);
        assert_eq!(
            (a.s("status"), a.s("error_code"), a.s("version")),
            ("failed", INVALID_REQUEST, "1.0"),
            "{body}: {}",
            a.text
        );
        assert!(!a.s("error_info").is_empty(), "{body}: {}", a.text);
        assert!(a.body["attachment"].is_null(), "{body}: {}", a.text);
    };
    instant("this is not json", Wire::Json10);
    instant("{\"job_type\": \"get_meta_mode\", ", Wire::Json11);
    instant("{\"version\":\"1.0\",\"paras\":{}}", Wire::Json11);
    instant(
        "{\"version\":\"1.0\",\"job_type\":\"no_such_job\",\"paras\":{}}",
        Wire::Text11,
    );
    instant("{\"job_type\":\"\",\"paras\":{}}", Wire::Json10);

    let mut codes = Codes {
        emit: &emit,
        wrong: Vec::new(),
    };

    // get_status of ids that do not exist: the original says exactly "job_id no find".
    for id in ["987654321", "abc", ""] {
        let a = emit.status(id);
        assert_eq!(
            (a.s("status"), a.s("error_code")),
            ("failed", JOB_ID_NOT_FOUND),
            "get_status {id:?}: {}",
            a.text
        );
        assert!(
            a.s("error_info").starts_with("job_id no find"),
            "get_status {id:?}: {}",
            a.text
        );
        if a.s("error_info") != "job_id no find" {
            codes.note(format!(
                "get_status of job_id {id:?}: error_info {:?}, want \"job_id no find\"",
                a.s("error_info")
            ));
        }
    }

    // Sync job types; XPanel's bare envelope first.
    let a = emit.send_body(
        &json!({"job_type": "get_meta_mode", "job_id": "uuid999"}),
        Wire::Json10,
    );
    assert_eq!(
        (a.s("status"), a.s("error_code")),
        ("done", OK),
        "get_meta_mode: {}",
        a.text
    );
    assert_eq!(a.body["attachment"]["mode"], "no_rep", "{}", a.text);
    let a = emit.call("get_meta_summary", json!({}));
    assert_eq!(
        (a.s("status"), a.s("error_code")),
        ("done", OK),
        "get_meta_summary: {}",
        a.text
    );
    let list = a.body["attachment"]["list_meta"]
        .as_array()
        .unwrap_or_else(|| panic!("list_meta: {}", a.text))
        .clone();
    // The one metadata server, named as in meta_group_seeds, up, the master.
    let want = json!([{"hostaddr": "127.0.0.1", "port": meta.port().to_string(),
                       "status": "online", "master": "true"}]);
    if json!(list) != want {
        codes.note(format!(
            "get_meta_summary with meta_group_seeds = 127.0.0.1:{}: list_meta {}, want {want}",
            meta.port(),
            json!(list)
        ));
    }
    let a = emit.call("get_backup_storage", json!({}));
    assert_eq!(
        (a.s("status"), a.s("error_code")),
        ("done", OK),
        "get_backup_storage: {}",
        a.text
    );
    assert_eq!(
        a.body["attachment"]["list_backup_storage"],
        json!([]),
        "{}",
        a.text
    );
    let a = emit.call(
        "get_variable",
        json!({"hostaddr": "127.0.0.1", "port": "1", "variable": "port"}),
    );
    assert_eq!(
        a.s("status"),
        "failed",
        "get_variable of no node: {}",
        a.text
    );

    // cluster_restore is served (restore_into_cluster); a source without a backup, or a
    // restore_time that does not parse, fails the job with the reason.
    for (p, why) in [
        (
            json!({"src_cluster_id": "1", "dst_cluster_id": "2",
                   "restore_time": "2024-01-01 00:00:00"}),
            "no done backup",
        ),
        (
            json!({"src_cluster_id": "1", "dst_cluster_id": "2",
                   "restore_time": "2024-01-01T00:00:00Z"}),
            "YYYY-MM-DD HH:MM:SS",
        ),
    ] {
        let (code, info) = emit.run_failed("cluster_restore", p, Duration::from_secs(30));
        assert_eq!(code, "70005", "{info}");
        assert!(info.contains(why), "{info}");
    }
    // Not supported here.
    let a = emit.call(
        "expand_cluster",
        json!({"cluster_id": "1", "src_shard_id": "1", "dst_shard_id": "2", "table_list": []}),
    );
    assert_eq!(
        (a.s("status"), a.s("error_code")),
        ("failed", INVALID_REQUEST),
        "expand_cluster: {}",
        a.text
    );

    // create_machine: every required para.
    let storage = json!({
        "hostaddr": "127.0.0.63", "machine_type": "storage", "rack_id": "1",
        "datadir": "/nonexistent/data", "logdir": "/nonexistent/log",
        "wal_log_dir": "/nonexistent/wal", "total_mem": "1024", "total_cpu_cores": "2",
    });
    for (drop, want) in [
        ("hostaddr", "70052"),
        ("machine_type", "70050"),
        ("rack_id", "70053"),
        ("datadir", "70054"),
        ("logdir", "70055"),
        ("wal_log_dir", "70056"),
        ("total_mem", "70057"),
        ("total_cpu_cores", "70058"),
    ] {
        codes.fails(
            "create_machine",
            paras(&storage, json!({}), &[drop]),
            Some(want),
        );
    }
    codes.fails(
        "create_machine",
        paras(&storage, json!({"machine_type": "router"}), &[]),
        Some("70051"),
    );
    codes.fails(
        "create_machine",
        json!({"hostaddr": "127.0.0.63", "machine_type": "computer", "rack_id": "1",
               "total_mem": "1024", "total_cpu_cores": "2"}),
        Some("70061"),
    );
    codes.fails(
        "delete_machine",
        json!({"hostaddr": "127.0.0.63", "machine_type": "storage"}),
        Some("70066"),
    );

    // create_cluster: every required para, then bad values.
    let create = json!({
        "ha_mode": "rbr", "shards": "1", "nodes": "1", "comps": "1",
        "max_storage_size": "20", "max_connections": "100", "cpu_cores": "2",
        "innodb_size": "32", "nick_name": "nope",
    });
    for (drop, want) in [
        ("ha_mode", "70071"),
        ("shards", "70072"),
        ("nodes", "70074"),
        ("comps", "70076"),
        ("max_storage_size", "70078"),
        ("max_connections", "70079"),
        ("cpu_cores", "70080"),
        ("innodb_size", "70081"),
    ] {
        codes.fails(
            "create_cluster",
            paras(&create, json!({}), &[drop]),
            Some(want),
        );
    }
    for (key, value, want) in [
        ("shards", "0", "70073"),
        ("shards", "x", "70073"),
        ("nodes", "0", "70075"),
        ("comps", "300", "70077"),
        ("innodb_size", "0", "70082"),
    ] {
        codes.fails(
            "create_cluster",
            paras(&create, json!({ key: value }), &[]),
            Some(want),
        );
    }

    // Jobs naming a cluster, shard, node or compute node that does not exist.
    let unknown = json!({"cluster_id": "999999"});
    for (job_type, extra) in [
        ("add_shards", json!({"shards": "1", "nodes": "1"})),
        ("delete_shard", json!({"shard_id": "1"})),
        ("add_comps", json!({"comps": "1"})),
        ("delete_comp", json!({"comp_id": "1"})),
        ("add_nodes", json!({"nodes": "1"})),
        (
            "delete_node",
            json!({"shard_id": "1", "hostaddr": "127.0.0.63", "port": "57001"}),
        ),
        (
            "manual_switch",
            json!({"shard_id": "1", "master_hostaddr": "127.0.0.63_57001"}),
        ),
        (
            "set_noswitch",
            json!({"type": "1", "timeout": "600", "shard_id": "1"}),
        ),
    ] {
        codes.fails(job_type, paras(&unknown, extra, &[]), None);
    }
    codes.fails("delete_cluster", unknown.clone(), Some("70098"));
    codes.fails(
        "delete_cluster",
        json!({"cluster_name": "cluster_1_000001"}),
        None,
    );
    // The original's tests send "ver" instead of "version": still accepted.
    let a = emit.send_body(
        &json!({"ver": "1.0", "job_id": "", "job_type": "delete_cluster",
                "timestamp": "1435749309", "user_name": "kunlun_test",
                "paras": {"cluster_id": "999999"}}),
        Wire::Json11,
    );
    assert_eq!(a.s("status"), "accept", "{}", a.text);
    let (a, _) = emit.wait(a.s("job_id"), QUICK);
    assert_eq!(a.s("status"), "failed", "{}", a.text);

    assert_eq!(
        count(&meta, "SELECT COUNT(*) FROM db_clusters"),
        0,
        "no cluster row"
    );
    assert_eq!(
        count(&meta, "SELECT COUNT(*) FROM server_nodes"),
        0,
        "no machine row"
    );
    daemon.stop();
    eprintln!("== whole test {:.1?}", t0.elapsed());
    assert!(
        codes.wrong.is_empty(),
        "answers that differ from the original's:\n{}",
        codes.wrong.join("\n")
    );
}
