//! `create_cluster` wall time: 2 shards x 3 MariaDB nodes (rbr, semi-sync) + 1 PostgreSQL
//! compute node installed by the real `cluster-mgr` daemon over a private sshd, from
//! `POST /v1/clusters` to the job read back `done` (polled every 50 ms), against the floor
//! measured in the same run: the same installs done by a plain shell script per instance over
//! the same sshd, all in parallel (dirs, `mariadb-install-db` with the recipe's arguments, the
//! recipe's own `my.cnf`, start, wait until it answers, the same system users, `CHANGE MASTER`
//! on replicas; `initdb`, the recipe's `kunlun.conf`, start, wait, the compute user). Trials
//! alternate which side goes first and everything is torn down between trials; prints every
//! trial, the daemon's phases (accepted → claimed by the job runner → done), p50 of each side
//! and the ratio (goal ≤ 1.3x). Both sides are checked afterwards (untimed): every replica's
//! IO and SQL threads run, every server answers.
//!
//! A second series (`create_cluster/many.rs`): 10 clusters of 1x3 + 1 submitted at once,
//! from the first submit until all ten jobs read back `done`, against the floor installing the
//! same 40 instances by the same script, all in parallel (goal <= 1.5x).
//!
//! `cargo bench -p kunlun-tests --bench create_cluster` runs 3 trials of each side of both
//! series (`CREATE_CLUSTER_TRIALS` to change; `CREATE_CLUSTER_SERIES=one|many|all`, default
//! all, to run one series alone); without `--bench` (as under `cargo test --all-targets`)
//! one smoke trial of each side of the first series only, on 1 shard x 2 nodes + 1 compute
//! node. `CREATE_CLUSTER_PROFILE=1` adds, per trial of the first series, a run of the
//! daemon's own install code in-process with every recipe step timed, and prints per step the
//! median time of the floor's phases and of the recipe steps (the floor's only in the second).
//! `CREATE_CLUSTER_NO_BASHRC=1` starts the sshd with `SetEnv HOME=/nonexistent`, so no session
//! sources root's `~/.bashrc` (the daemon and the floor both install each instance in one
//! session). A failed run stops what it left running by the pid files before it returns.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kunlun_provision::recipe::{InstanceSpec, MariaDbRecipe, PostgresRecipe};
use kunlun_tests::daemon::{write_cnf, Daemon};
use kunlun_tests::{free_port, free_port_block, Sshd};
use serde_json::{json, Value};

#[path = "create_cluster/many.rs"]
mod many;
#[path = "create_cluster/profile.rs"]
mod profile;
use profile::{library_profile, print_steps, StepTime};

/// A loopback address no other test uses, so port ranges cannot clash.
const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 23);
const POLL: Duration = Duration::from_millis(50);
const LIMIT: Duration = Duration::from_secs(600);
const INNODB_MB: u32 = 64;
const MAX_CONNS: u32 = 100;
/// The compute recipe's shared_buffers (`kunlun_core::jobs::plan::COMPUTE_BUFFER_MB`).
const COMPUTE_BUFFER_MB: u32 = kunlun_core::jobs::plan::COMPUTE_BUFFER_MB;

#[derive(Clone, Copy)]
struct Shape {
    shards: usize,
    nodes: usize,
    comps: usize,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ------------------------------------------------------------------------------ the daemon

/// Builds `name` of `package` in this executable's profile (release under `cargo bench`) so
/// the bench never times a stale binary; returns its path.
fn fresh_bin(package: &str, name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("exe dir")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", name]);
    if dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().context("run cargo build")?;
    ensure!(st.success(), "cargo build -p {package} --bin {name}: {st}");
    Ok(dir.join(name))
}

/// The `cluster-mgr` daemon (`bin`) on a free port with its SQLite store in the work dir,
/// ready when it leads (its job runner runs), so no trial times the start-up. Stopped by PID
/// (SIGTERM, then SIGKILL) on drop.
fn start_daemon(bin: &Path, work: &Path) -> Result<Daemon> {
    let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
    // The harness sshd's key pair lives under the harness root; its host key is new.
    let cnf = work.join("cluster_mgr.cnf");
    write_cnf(
        &cnf,
        &[
            format!(
                "ssh_keys_dir = {}",
                kunlun_tests::harness::harness_root().display()
            ),
            "ssh_host_key_policy = accept-new".to_string(),
        ],
    )?;
    let mut d = Daemon::command(work, port)
        .binary(bin)
        .config(&cnf)
        .args(["--http-bind", "127.0.0.1", "--http-port", &port.to_string()])
        .args([
            std::ffi::OsString::from("--sqlite-path"),
            work.join("meta.sqlite3").into_os_string(),
        ])
        .term_on_drop()
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = d.try_exit() {
            bail!("cluster-mgr exited with {st}:\n{}", d.log_tail());
        }
        let (st, v) = d.get(&http(), "/v1/leader");
        if st == 200 && v["role"] == "leader" {
            return Ok(d);
        }
        ensure!(
            Instant::now() < deadline,
            "cluster-mgr did not answer:\n{}",
            d.log_tail()
        );
        std::thread::sleep(POLL);
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::blocking::Client::new())
}

fn call(method: reqwest::Method, url: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let mut req = http().request(method, url);
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().with_context(|| format!("request {url}"))?;
    let st = r.status().as_u16();
    Ok((st, r.json().unwrap_or(Value::Null)))
}

/// Registers the sshd's host as a storage and a computer machine with `data` as data dir.
/// Port ranges: 50 storage blocks (4 ports each) and 20 compute blocks (3 each), room for the
/// `many` series' 30 + 10 instances of 10 clusters on this one host (placement puts a shard's
/// nodes on one machine when it is the only one).
fn register(d: &Daemon, sshd: &Sshd, data: &Path) -> Result<()> {
    for (ty, span) in [("storage", 199), ("computer", 59)] {
        let port = free_port_block(IpAddr::V4(IP), span + 1);
        let (st, v) = call(
            reqwest::Method::POST,
            &format!("{}/v1/machines", d.url()),
            Some(&json!({
                "hostaddr": IP.to_string(), "machine_type": ty,
                "ssh_port": sshd.port(), "ssh_user": sshd.user(),
                "ssh_key_path": sshd.user_key().private.display().to_string(),
                "data_dirs": [data.display().to_string()],
                "port_range": format!("{}-{}", port, port + span),
            })),
        )?;
        ensure!(st == 201, "register {ty} machine: {st} {v}");
    }
    Ok(())
}

/// What one daemon trial measured.
struct DaemonRun {
    total: Duration,
    /// POST → first poll that saw the job claimed (`ongoing` or later).
    claimed: Duration,
    /// Each memo stage with when it was first seen.
    stages: Vec<(String, Duration)>,
    cluster_id: i64,
}

/// A final job, when it was first seen claimed, and each memo stage with when it was seen.
type Followed = (Value, Option<Duration>, Vec<(String, Duration)>);

/// Polls job `id` every [`POLL`] until it is final; returns it with the stages seen.
fn follow_job(d: &Daemon, id: i64, t0: Instant) -> Result<Followed> {
    let url = format!("{}/v1/jobs/{id}", d.url());
    let mut claimed = None;
    let mut stages: Vec<(String, Duration)> = Vec::new();
    loop {
        let (st, job) = call(reqwest::Method::GET, &url, None)?;
        ensure!(st == 200, "GET {url}: {st} {job}");
        let status = job["status"].as_str().unwrap_or_default().to_string();
        if claimed.is_none() && status != "not_started" {
            claimed = Some(t0.elapsed());
        }
        if let Some(stage) = job["memo"]["stage"].as_str() {
            if stages.last().is_none_or(|(s, _)| s != stage) {
                stages.push((stage.to_string(), t0.elapsed()));
            }
        }
        if status == "done" || status == "failed" {
            return Ok((job, claimed, stages));
        }
        ensure!(
            t0.elapsed() < LIMIT,
            "job {id} not final after {LIMIT:?}: {job}"
        );
        std::thread::sleep(POLL);
    }
}

fn daemon_create(d: &Daemon, name: &str, shape: Shape) -> Result<DaemonRun> {
    let body = json!({
        "name": name, "ha_mode": "rbr", "shards": shape.shards, "nodes": shape.nodes,
        "comps": shape.comps, "innodb_size_mb": INNODB_MB, "max_connections": MAX_CONNS,
    });
    let t0 = Instant::now();
    let (st, v) = call(
        reqwest::Method::POST,
        &format!("{}/v1/clusters", d.url()),
        Some(&body),
    )?;
    ensure!(st == 202, "POST /v1/clusters: {st} {v}");
    let id = v["job_id"].as_i64().context("no job_id")?;
    let (job, claimed, stages) = follow_job(d, id, t0)?;
    let total = t0.elapsed();
    ensure!(
        job["status"] == "done",
        "create_cluster failed: {}\ndaemon log:\n{}",
        job["memo"],
        d.log_tail()
    );
    Ok(DaemonRun {
        total,
        claimed: claimed.unwrap_or(total),
        stages,
        cluster_id: job["memo"]["cluster_id"]
            .as_i64()
            .context("no cluster_id")?,
    })
}

/// Socket paths and ports of the daemon's cluster, checked against `shape`.
fn daemon_topology(d: &Daemon, cluster: i64, data: &Path, shape: Shape) -> Result<Topology> {
    let (st, v) = call(
        reqwest::Method::GET,
        &format!("{}/v1/clusters/{cluster}", d.url()),
        None,
    )?;
    ensure!(st == 200, "GET cluster: {st} {v}");
    let shards = v["shards"].as_array().context("shards")?;
    ensure!(shards.len() == shape.shards, "shards: {v}");
    let mut t = Topology::default();
    for s in shards {
        let nodes = s["nodes"].as_array().context("nodes")?;
        ensure!(nodes.len() == shape.nodes, "nodes: {v}");
        for n in nodes {
            let port = n["port"].as_u64().context("port")? as u16;
            let base = data.join(format!("kunlun/storage_{port}"));
            if n["member_state"] == "replica" {
                t.replicas.push(base);
            } else {
                t.primaries.push(base);
            }
        }
    }
    let comps = v["comp_nodes"].as_array().context("comp_nodes")?;
    ensure!(comps.len() == shape.comps, "comps: {v}");
    for c in comps {
        let port = c["port"].as_u64().context("port")? as u16;
        t.comps
            .push((data.join(format!("kunlun/compute_{port}")), port));
    }
    Ok(t)
}

fn daemon_delete(d: &Daemon, cluster: i64, data: &Path) -> Result<()> {
    let (st, v) = call(
        reqwest::Method::DELETE,
        &format!("{}/v1/clusters/{cluster}", d.url()),
        None,
    )?;
    ensure!(st == 202, "DELETE cluster: {st} {v}");
    let id = v["job_id"].as_i64().context("no job_id")?;
    let (job, _, _) = follow_job(d, id, Instant::now())?;
    ensure!(
        job["status"] == "done",
        "delete_cluster failed: {}",
        job["memo"]
    );
    ensure!(
        !data.join("kunlun").exists() || dir_empty(&data.join("kunlun")),
        "instance dirs left"
    );
    Ok(())
}

fn dir_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

// ------------------------------------------------------------------------------ the floor

/// Instance directories of one cluster (storage bases split by role; compute base and port).
#[derive(Default)]
struct Topology {
    primaries: Vec<PathBuf>,
    replicas: Vec<PathBuf>,
    comps: Vec<(PathBuf, u16)>,
}

const PW: &str = "FloorBench0pw";

fn storage_users_sql() -> String {
    let mut sql = String::from("SET SESSION sql_log_bin = 0;\n");
    for (name, grant) in [
        ("clustmgr", "ALL PRIVILEGES ON *.*"),
        (
            "repl",
            "REPLICATION SLAVE, REPLICATION CLIENT, SLAVE MONITOR ON *.*",
        ),
        ("pgx", "ALL PRIVILEGES ON *.*"),
    ] {
        let opt = if name == "repl" {
            ""
        } else {
            " WITH GRANT OPTION"
        };
        sql.push_str(&format!(
            "CREATE USER IF NOT EXISTS '{name}'@'%' IDENTIFIED BY '{PW}';\n\
             ALTER USER '{name}'@'%' IDENTIFIED BY '{PW}';\n\
             GRANT {grant} TO '{name}'@'%'{opt};\n"
        ));
    }
    sql
}

/// The plain script that installs one storage node (and points it at `primary` if a replica).
fn storage_script(spec: &InstanceSpec, primary: Option<u16>) -> String {
    let b = &spec.base_dir;
    let mut sql = storage_users_sql();
    if let Some(p) = primary {
        sql.push_str(&format!(
            "CHANGE MASTER TO MASTER_HOST='{IP}', MASTER_PORT={p}, MASTER_USER='repl', \
             MASTER_PASSWORD='{PW}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;\n\
             START SLAVE;\n"
        ));
    }
    format!(
        "set -e
B={b}
mkdir -p $B/run $B/tmp $B/files $B/log $B/data && chmod 0750 $B
echo \"@ make_dirs $(date +%s%N)\" >&2
u=$(id -un)
/usr/bin/mariadb-install-db --no-defaults --user=\"$u\" --datadir=$B/data \
--auth-root-authentication-method=socket --auth-root-socket-user=\"$u\" --skip-test-db \
--innodb-log-file-size=32M --tmpdir=$B/tmp >$B/log/install.log 2>&1
echo \"@ initialise $(date +%s%N)\" >&2
cat >$B/my.cnf <<'EOF'
{cnf}EOF
echo \"@ write_config $(date +%s%N)\" >&2
cd / && setsid /usr/sbin/mariadbd --defaults-file=$B/my.cnf --user=\"$u\" </dev/null >>$B/log/mariadbd.out 2>&1 &
i=0
until /usr/bin/mariadb-admin --no-defaults -S $B/run/mysqld.sock -uroot --connect-timeout=2 ping >/dev/null 2>&1; do
  i=$((i+1)); [ $i -lt 6000 ] || exit 1; sleep 0.05
done
echo \"@ wait_ready $(date +%s%N)\" >&2
/usr/bin/mariadb --no-defaults -S $B/run/mysqld.sock -uroot --batch <<'EOF'
{sql}EOF
echo \"@ create_users $(date +%s%N)\" >&2
",
        cnf = MariaDbRecipe::default().config(spec),
    )
}

/// The plain script that installs one compute node.
fn compute_script(spec: &InstanceSpec) -> String {
    let b = &spec.base_dir;
    let port = spec.port;
    format!(
        "set -e
B={b}; BIN=/usr/lib/postgresql/15/bin
mkdir -p $B/run $B/log $B/data && chown postgres $B $B/run $B/log $B/data && chmod 0750 $B && chmod 0700 $B/data
echo \"@ make_dirs $(date +%s%N)\" >&2
cd / && runuser -u postgres -- $BIN/initdb -D $B/data -U postgres --auth-local=peer \
--auth-host=scram-sha-256 -E UTF8 --locale=C >$B/log/initdb.log 2>&1
echo \"@ initialise $(date +%s%N)\" >&2
cat >$B/data/kunlun.conf <<'EOF'
{conf}EOF
echo \"include_if_exists = 'kunlun.conf'\" >>$B/data/postgresql.conf
echo 'host all all all scram-sha-256' >>$B/data/pg_hba.conf
echo \"@ write_config $(date +%s%N)\" >&2
setsid runuser -u postgres -- $BIN/postgres -D $B/data </dev/null >>$B/log/postgres.log 2>&1 &
i=0
until $BIN/pg_isready -q -h $B/run -p {port} -t 2; do i=$((i+1)); [ $i -lt 6000 ] || exit 1; sleep 0.05; done
echo \"@ wait_ready $(date +%s%N)\" >&2
runuser -u postgres -- $BIN/psql -X -q -h $B/run -p {port} -d postgres -c \"CREATE ROLE abc LOGIN SUPERUSER PASSWORD '{PW}'\"
echo \"@ create_users $(date +%s%N)\" >&2
",
        conf = PostgresRecipe::default().config(spec),
    )
}

/// Installs `clusters` whole clusters of `shape` under `root` with one plain script per
/// instance over the sshd, all at once; returns the wall time and what was installed.
fn floor_create(
    sshd: &Sshd,
    root: &Path,
    (clusters, shape): (usize, Shape),
    trial: usize,
    phases: &mut Vec<StepTime>,
) -> Result<(Duration, Topology)> {
    let mut scripts = Vec::new();
    let mut topo = Topology::default();
    let spec = |kind: &str, port: u16, sid: u32, buf: u32| InstanceSpec {
        bind_address: IP.to_string(),
        port,
        base_dir: root
            .join(format!("kunlun/{kind}_{port}"))
            .display()
            .to_string(),
        server_id: sid,
        buffer_mb: buf,
        max_connections: MAX_CONNS,
        semi_sync: true,
        users: Vec::new(),
    };
    let mut sid = 1000 * trial as u32;
    for _ in 0..clusters * shape.shards {
        let mut primary = None;
        for _ in 0..shape.nodes {
            sid += 1;
            let s = spec("storage", free_port(IpAddr::V4(IP)), sid, INNODB_MB);
            scripts.push(storage_script(&s, primary));
            if primary.is_none() {
                primary = Some(s.port);
                topo.primaries.push(s.base_dir.into());
            } else {
                topo.replicas.push(s.base_dir.into());
            }
        }
    }
    for _ in 0..clusters * shape.comps {
        let mut s = spec("compute", free_port(IpAddr::V4(IP)), 0, COMPUTE_BUFFER_MB);
        s.semi_sync = false;
        scripts.push(compute_script(&s));
        topo.comps.push((s.base_dir.into(), s.port));
    }
    let t0 = Instant::now();
    let epoch0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let mut children = Vec::new();
    for s in &scripts {
        let mut child = sshd
            .ssh_command("sh -s")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn ssh")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(s.as_bytes())?;
        children.push(child);
    }
    let mut failures = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output()?;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            failures.push(err);
            continue;
        }
        let mut prev = 0.0;
        for line in err.lines() {
            let mut f = line.split_whitespace();
            if let (Some("@"), Some(step), Some(ns)) = (f.next(), f.next(), f.next()) {
                let end = ns.parse::<u128>().unwrap_or(epoch0).saturating_sub(epoch0) as f64 / 1e6;
                phases.push(StepTime {
                    storage: i < clusters * shape.shards * shape.nodes,
                    step: step.to_string(),
                    ms: end - prev,
                    end_ms: end,
                });
                prev = end;
            }
        }
    }
    let took = t0.elapsed();
    if !failures.is_empty() {
        let _ = floor_delete(&topo);
        bail!("floor install failed: {failures:?}");
    }
    Ok((took, topo))
}

/// Stops the floor's servers by their pid files and removes their directories.
fn floor_delete(t: &Topology) -> Result<()> {
    let mut dirs: Vec<(PathBuf, &str, &str)> = Vec::new();
    for b in t.primaries.iter().chain(&t.replicas) {
        dirs.push((b.clone(), "run/mysqld.pid", "TERM"));
    }
    for (b, _) in &t.comps {
        dirs.push((b.clone(), "data/postmaster.pid", "INT"));
    }
    let mut script = String::new();
    for (b, pid, sig) in &dirs {
        script.push_str(&format!(
            "( pf={b}/{pid}; if [ -f $pf ]; then p=$(head -n1 $pf); kill -{sig} $p 2>/dev/null; \
             i=0; while kill -0 $p 2>/dev/null && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; \
             kill -KILL $p 2>/dev/null; fi; rm -rf {b} ) &\n",
            b = b.display()
        ));
    }
    script.push_str("wait\n");
    let st = Command::new("sh").arg("-c").arg(script).status()?;
    ensure!(st.success(), "floor teardown: {st}");
    Ok(())
}

// ------------------------------------------------------------------------------ checks

/// Untimed: every replica's IO and SQL threads run and every compute node answers.
fn check_cluster(t: &Topology) -> Result<()> {
    ensure!(!t.primaries.is_empty(), "no primary");
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in t.primaries.iter().chain(&t.replicas) {
        let sock = p.join("run/mysqld.sock");
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-N", "-e", "SELECT 1", "-S"])
            .arg(&sock)
            .output()?;
        ensure!(out.status.success(), "{} does not answer", sock.display());
    }
    for r in &t.replicas {
        let sock = r.join("run/mysqld.sock");
        loop {
            let out = Command::new("mariadb")
                .args([
                    "--no-defaults",
                    "-uroot",
                    "-e",
                    "SHOW SLAVE STATUS\\G",
                    "-S",
                ])
                .arg(&sock)
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("Slave_IO_Running: Yes") && text.contains("Slave_SQL_Running: Yes") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "replica {} not replicating:\n{text}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for (b, port) in &t.comps {
        let st = Command::new("/usr/lib/postgresql/15/bin/pg_isready")
            .arg("-q")
            .arg("-h")
            .arg(b.join("run"))
            .args(["-p", &port.to_string()])
            .status()?;
        ensure!(st.success(), "compute {} does not answer", b.display());
    }
    Ok(())
}

// ------------------------------------------------------------------------------ main

/// Which series run: `CREATE_CLUSTER_SERIES=one|many|all` under `--bench` (default all); the
/// smoke run (no `--bench`) runs `one` only.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Series {
    One,
    Many,
    All,
}

impl Series {
    fn from_env(bench: bool) -> Result<Series> {
        if !bench {
            return Ok(Series::One);
        }
        match std::env::var("CREATE_CLUSTER_SERIES").as_deref() {
            Err(_) | Ok("all") | Ok("") => Ok(Series::All),
            Ok("one") => Ok(Series::One),
            Ok("many") => Ok(Series::Many),
            Ok(other) => bail!("CREATE_CLUSTER_SERIES={other}: expected one, many or all"),
        }
    }

    fn runs(self, s: Series) -> bool {
        self == Series::All || self == s
    }
}

/// What the series share: the daemon (registered on the sshd's host), the sshd, the dirs.
struct Rig {
    sshd: Sshd,
    daemon: Daemon,
    bin: PathBuf,
    work: PathBuf,
    /// The daemon's data dir (its instances under `kunlun/`).
    data: PathBuf,
    /// The floor's instances.
    floor_root: PathBuf,
}

fn main() -> Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let series = Series::from_env(bench)?;
    let trials = if bench {
        std::env::var("CREATE_CLUSTER_TRIALS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
    } else {
        1
    };
    let bin = fresh_bin("cluster-mgr-bin", "cluster-mgr")?;
    // CREATE_CLUSTER_NO_BASHRC=1: the sshd sets HOME=/nonexistent so bash skips root's
    // ~/.bashrc in every session (Debian's bash sources it for ssh commands): shows what a
    // heavy ~/.bashrc (pyenv init here) costs each SSH session.
    let sshd = if std::env::var_os("CREATE_CLUSTER_NO_BASHRC").is_some() {
        Sshd::start_with(IP, &["SetEnv HOME=/nonexistent"])?
    } else {
        Sshd::start_on(IP)?
    };
    let work = tempfile::Builder::new()
        .prefix("kunlun-bench-cc-")
        .tempdir()?;
    // PostgreSQL runs as `postgres`: it must reach its instance dirs.
    std::fs::set_permissions(
        work.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )?;
    let data = work.path().join("instances");
    let floor_root = work.path().join("floor");
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&floor_root)?;
    let daemon = start_daemon(&bin, work.path())?;
    register(&daemon, &sshd, &data)?;
    let rig = Rig {
        sshd,
        daemon,
        bin,
        work: work.path().to_path_buf(),
        data,
        floor_root,
    };
    let mut r = Ok(());
    if series.runs(Series::One) {
        let shape = if bench {
            Shape {
                shards: 2,
                nodes: 3,
                comps: 1,
            }
        } else {
            Shape {
                shards: 1,
                nodes: 2,
                comps: 1,
            }
        };
        r = series_one(&rig, trials, shape);
    }
    if r.is_ok() && series.runs(Series::Many) {
        r = many::series_many(&rig, trials);
    }
    if r.is_err() {
        // Whatever a failed trial left running, by its pid file.
        let _ = sweep(&rig.data);
        let _ = sweep(&rig.floor_root);
    }
    let Rig { sshd, daemon, .. } = rig;
    drop(daemon);
    sshd.stop()?;
    r
}

/// Stops every server left under `root/kunlun` by its pid file and removes its directory.
fn sweep(root: &Path) -> Result<()> {
    let mut t = Topology::default();
    let Ok(dir) = std::fs::read_dir(root.join("kunlun")) else {
        return Ok(());
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("storage_") {
            t.primaries.push(e.path());
        } else if name.starts_with("compute_") {
            t.comps.push((e.path(), 0));
        }
    }
    floor_delete(&t)
}

/// One `create_cluster` of `shape` against the floor installing the same instances.
fn series_one(rig: &Rig, trials: usize, shape: Shape) -> Result<()> {
    let (daemon, sshd, data) = (&rig.daemon, &rig.sshd, &rig.data);
    println!(
        "create_cluster {}x{} + {} compute, rbr, innodb {} MB; daemon {}; {} trial(s) each\n",
        shape.shards,
        shape.nodes,
        shape.comps,
        INNODB_MB,
        rig.bin.display(),
        trials
    );

    let mut d_total = Vec::new();
    let mut f_total = Vec::new();
    let mut claimed = Vec::new();
    let mut floor_steps = Vec::new();
    for i in 0..trials {
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let r = daemon_create(daemon, &format!("bench_{i}"), shape)?;
                let topo = daemon_topology(daemon, r.cluster_id, data, shape)?;
                let checked = check_cluster(&topo);
                daemon_delete(daemon, r.cluster_id, data)?;
                checked?;
                let stages: Vec<String> = r
                    .stages
                    .iter()
                    .map(|(s, t)| format!("{s} {:.0}", ms(*t)))
                    .collect();
                println!(
                    "trial {:>2} daemon: {:>6.0} ms  (claimed by the runner at {:.0} ms; stages seen at ms: {})",
                    i + 1,
                    ms(r.total),
                    ms(r.claimed),
                    stages.join(", ")
                );
                d_total.push(ms(r.total));
                claimed.push(ms(r.claimed));
            } else {
                let (took, topo) =
                    floor_create(sshd, &rig.floor_root, (1, shape), i + 1, &mut floor_steps)?;
                let checked = check_cluster(&topo);
                floor_delete(&topo)?;
                checked?;
                println!("trial {:>2} floor:  {:>6.0} ms", i + 1, ms(took));
                f_total.push(ms(took));
            }
        }
    }
    let profile = std::env::var_os("CREATE_CLUSTER_PROFILE").is_some();
    let mut lib_steps = Vec::new();
    let mut lib_totals = Vec::new();
    if profile {
        for _ in 0..trials {
            let url = format!("{}/v1/machines", daemon.url());
            let (st, v) = call(reqwest::Method::GET, &url, None)?;
            ensure!(st == 200, "GET /v1/machines: {st} {v}");
            let machines: Vec<kunlun_meta::model::Machine> = serde_json::from_value(v)?;
            let req = serde_json::from_value(json!({
                "name": "profile", "ha_mode": "rbr", "shards": shape.shards, "nodes": shape.nodes,
                "comps": shape.comps, "innodb_size_mb": INNODB_MB, "max_connections": MAX_CONNS,
            }))?;
            let kh = rig.work.join("profile_known_hosts");
            lib_totals.push(library_profile(&machines, &req, kh, &mut lib_steps)?);
        }
    }

    d_total.sort_by(f64::total_cmp);
    f_total.sort_by(f64::total_cmp);
    claimed.sort_by(f64::total_cmp);
    let (d50, f50) = (pct(&d_total, 0.5), pct(&f_total, 0.5));
    println!(
        "\ncreate_cluster {}x{} + {}: daemon p50 {:.0} ms (min {:.0}, max {:.0}; of which POST -> claimed p50 {:.0} ms)",
        shape.shards,
        shape.nodes,
        shape.comps,
        d50,
        d_total.first().copied().unwrap_or(0.0),
        d_total.last().copied().unwrap_or(0.0),
        pct(&claimed, 0.5)
    );
    println!(
        "  floor (plain script per instance over the same sshd, all in parallel): p50 {:.0} ms (min {:.0}, max {:.0})",
        f50,
        f_total.first().copied().unwrap_or(0.0),
        f_total.last().copied().unwrap_or(0.0)
    );
    let ratio = if f50 > 0.0 { d50 / f50 } else { f64::NAN };
    println!("  ratio daemon / floor: {ratio:.2}x (goal <= 1.3x)");
    if profile {
        println!("\nper step: median ms (median end, ms after start)");
        print_steps("floor", &floor_steps);
        print_steps("library", &lib_steps);
        for (inst, total) in lib_totals {
            println!("  library run: all instances installed at {inst:.0} ms, replication set up at {total:.0} ms");
        }
    }
    Ok(())
}
