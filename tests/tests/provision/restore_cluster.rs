//! Restoring a cluster backup into a new cluster (`restore_cluster`) on real servers, through
//! the real daemon and `kunlunctl`.
//!
//! On 127.0.0.95: a cluster of 2 shards x 2 nodes + 1 compute node, rows on each shard, a
//! table on the compute node, and two distributed transactions left prepared on both shards
//! by a coordinator that keeps its sessions (as a compute node that stopped between the
//! phases): T1 with its commit logged in the commit log, T2 without. Money transfers between
//! accounts on the two shards run all through the backup as a compute node makes them (its
//! `pgx` login, XA on both shards, the decision in the commit log, then the commits). The
//! backup (taken from the replicas, held at one cut) is `consistent` and records the cut. The
//! source cluster is then deleted and the backup restored into a new cluster: on every node of
//! each restored shard the rows are there, T1 is committed and T2 is not (the job's memo
//! counts them among the branches it ended), the balances add up to the initial total exactly (every
//! transfer on both shards or on neither), no branch is left prepared, the replica replicates
//! a new write from the primary, and the restored compute node has the table. A backup file
//! damaged on the storage: the restore fails before installing anything and leaves no
//! cluster.
//!
//! Point-in-time restore on the same cluster (no second one: CI time): the daemon archives the
//! primaries' binlogs every 2 s, each transfer also inserts its number into `bk.xfer` on both
//! shards, and the test keeps, per committed transfer, the wall time before its first
//! `XA START` and after both `XA COMMIT`s returned. Transfers go on ~12 s after the backup,
//! then shard 1 is switched over to its replica and transfers go on ~8 s against the new
//! primaries. The archive then covers that end with no gap, and the switched shard is archived
//! from its new primary. A restore time past the archive is refused and creates nothing.
//! Three restores at random whole seconds T of the archived range (seeded, one after the
//! switchover), run at once: in each restored cluster the balances add up, no branch is left
//! prepared, both shards hold the same transfers, every transfer acknowledged before T is
//! there and none begun at T + 1 s or later, T1 is committed and T2 is not.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kunlun_core::accounts::COMP_USER;
use kunlun_meta::model::TxnCmd;
use kunlun_meta::store::repo::commit_log::{self, NewCommitLogEntry};
use kunlun_meta::store::repo::secrets;
use kunlun_meta::{Store, StoreConfig};
use kunlun_tests::cli::ctl;
use kunlun_tests::daemon::http;
use kunlun_tests::daemon_cluster::{DaemonCluster, Shape};
use kunlun_tests::emit::Emit;
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 95);
/// The daemon's extra settings: binlogs archived every 2 s, so the archive soon covers the
/// end of the transfers.
const EXTRA_CNF: &[&str] = &["binlog_archive_interval = 2"];
/// Rows written on each shard before the backup.
const ROWS: i64 = 500;
const T1_ROW: i64 = 100_001;
const T2_ROW: i64 = 100_002;
/// Accounts on each shard, and each one's opening balance.
const ACCOUNTS: i64 = 10;
const OPENING: i64 = 1000;

/// A compute node's login on the storage node at `port`.
async fn pgx(port: u16, pwd: &str) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(IP.to_string())
        .tcp_port(port)
        .user(Some(kunlun_core::accounts::PGX_USER))
        .pass(Some(pwd.to_string()))
        .prefer_socket(false);
    tokio::time::timeout(Duration::from_secs(10), mysql_async::Conn::new(opts))
        .await
        .expect("connect within 10 s")
        .expect("connect")
}

/// A committed transfer: its number (its row in `bk.xfer` on both shards), the wall time just
/// before its first `XA START` and the wall time once both `XA COMMIT`s had returned.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    local: u32,
    started: SystemTime,
    acked: SystemTime,
}

/// Every committed transfer of every run, in order.
type Transfers = Arc<Mutex<Vec<Transfer>>>;

fn committed(log: &Transfers) -> Vec<Transfer> {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Transfers of 1 between the accounts of the two shard primaries `(a, b)` until `stop`, as a
/// compute node (`comp_id`) makes them: XA on both (each branch also records the transfer's
/// number, from `first_local + 1` on, in `bk.xfer`), the commit decision in the commit log,
/// then both commits. Each committed one is pushed onto `log`.
async fn transfers(
    sqlite: PathBuf,
    (a, b): (u16, u16),
    pwd: String,
    comp_id: i64,
    first_local: u32,
    stop: Arc<AtomicBool>,
    log: Transfers,
) {
    let store = Store::open(&StoreConfig::sqlite(&sqlite))
        .await
        .expect("the daemon's store");
    let (mut ca, mut cb) = (pgx(a, &pwd).await, pgx(b, &pwd).await);
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as u32;
    let mut local = first_local;
    while !stop.load(Ordering::SeqCst) {
        local += 1;
        let x = format!("{comp_id}-{ts}-{local}");
        let acct = i64::from(local) % ACCOUNTS;
        let (from, to) = if local.is_multiple_of(2) {
            (&mut ca, &mut cb)
        } else {
            (&mut cb, &mut ca)
        };
        let started = SystemTime::now();
        for (c, delta) in [(from, -1), (to, 1)] {
            c.query_drop(format!(
                "XA START '{x}'; UPDATE bk.acct SET balance = balance + ({delta}) \
                 WHERE id = {acct}; INSERT INTO bk.xfer VALUES ({local}); XA END '{x}'; \
                 XA PREPARE '{x}'"
            ))
            .await
            .expect("a prepared transfer branch");
        }
        let e = NewCommitLogEntry {
            comp_node_id: comp_id,
            txn_id: (u64::from(ts) << 32) | u64::from(local),
            next_txn_cmd: TxnCmd::Commit,
            written_shards: None,
        };
        let logged = store
            .tx(async |tx| commit_log::insert(tx, "rs1", &e, None).await)
            .await;
        let end = if logged.is_ok() { "COMMIT" } else { "ROLLBACK" };
        for c in [&mut ca, &mut cb] {
            c.query_drop(format!("XA {end} '{x}'"))
                .await
                .expect("the transfer ended");
        }
        if logged.is_ok() {
            let acked = SystemTime::now();
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Transfer {
                    local,
                    started,
                    acked,
                });
        }
    }
}

/// `psql -c sql` on the compute node at `port` as the cluster's compute user.
fn psql(port: u16, pwd: &str, sql: &str) -> std::process::Output {
    std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-X", "-At", "-h", &IP.to_string(), "-p", &port.to_string()])
        .args(["-U", COMP_USER, "-d", "postgres", "-c", sql])
        .env("PGPASSWORD", pwd)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("psql")
}

async fn secret(c: &DaemonCluster, cid: i64) -> secrets::ClusterSecret {
    let store = Store::open(&StoreConfig::sqlite(&c.sqlite))
        .await
        .expect("the daemon's store");
    store
        .read(async |tx| secrets::get(tx, cid).await)
        .await
        .expect("secrets")
}

/// `SELECT` one text column of the first row (NULL and no row as `None`).
async fn text(conn: &mut mysql_async::Conn, sql: &str) -> Option<String> {
    conn.query_first::<Option<String>, _>(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .flatten()
}

/// Whole seconds since the epoch of an RFC3339 time.
/// `MASTER_GTID_WAIT(pos, 60)` on a replica: `Some("0")` once it applied `pos`.
async fn reached(conn: &mut mysql_async::Conn, pos: &str) -> Option<String> {
    text(
        conn,
        &format!("SELECT CAST(MASTER_GTID_WAIT('{pos}', 60) AS CHAR)"),
    )
    .await
}

fn epoch_secs(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("not RFC3339 ({e}): {rfc3339}"))
        .timestamp()
}

/// `secs` since the epoch as the API writes times: RFC3339, UTC, whole seconds, `Z`.
fn rfc3339(secs: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
        .expect("a representable time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The wall time `secs` after the epoch.
fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).expect("after 1970"))
}

/// Whole seconds of `t` since the epoch (rounded down).
fn secs_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// splitmix64: the restore points drawn from a printed seed can be drawn again
/// (`PITR_SEED=<seed>`), whatever `rand` version the workspace moves to.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the modulo bias over a span of seconds is nothing).
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi, "an empty range {lo}..={hi}");
        lo + (self.next() % ((hi - lo) as u64 + 1)) as i64
    }
}

/// Polls `GET /v1/backups/{id}/archive` every second, at most 120 s, until its
/// `restorable_until` is at least `until`; returns that answer.
fn archive_until(c: &DaemonCluster, backup_id: i64, until: SystemTime) -> Value {
    let client = http(Duration::from_secs(10));
    let path = format!("/v1/backups/{backup_id}/archive");
    let t0 = Instant::now();
    loop {
        let (st, v) = c.daemon.get(&client, &path);
        if st == 200
            && v["restorable_until"]
                .as_str()
                .is_some_and(|u| at(epoch_secs(u)) >= until)
        {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "GET {path} never reached {}: {st} {v}\ndaemon log:\n{}",
            rfc3339(secs_of(until)),
            c.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `(shard id, primary's node id, primary's port)` of each shard of cluster `cid`.
fn primaries_of(c: &DaemonCluster, cid: i64) -> Vec<(i64, i64, u16)> {
    let detail = ctl(&c.base, &["--json", "cluster", "show", &cid.to_string()])
        .ok()
        .json();
    detail["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| {
            let p = s["nodes"]
                .as_array()
                .and_then(|n| n.iter().find(|n| n["member_state"] == "source"))
                .unwrap_or_else(|| panic!("a primary: {s}"));
            (
                s["shard"]["id"].as_i64().expect("shard id"),
                p["id"].as_i64().expect("node id"),
                p["port"].as_u64().expect("port") as u16,
            )
        })
        .collect()
}

/// Checks the cluster that point-in-time restore `job` (at `t`, epoch seconds) made against
/// the committed transfers `log`; returns the cluster's id and how many transfers it holds.
fn check_point_in_time(
    rt: &tokio::runtime::Runtime,
    c: &DaemonCluster,
    t: i64,
    job: &Value,
    log: &[Transfer],
) -> (i64, usize) {
    let memo = &job["memo"];
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(
        memo["restore_time"].as_str(),
        Some(rfc3339(t).as_str()),
        "{job}"
    );
    let shards = memo["shards"].as_array().expect("the memo's shards");
    assert_eq!(shards.len(), 2, "{job}");
    for s in shards {
        assert_eq!(s["xa_left"], 0, "{s}");
    }
    let cid = memo["cluster_id"].as_i64().expect("the restored cluster");
    let pwd = rt.block_on(secret(c, cid)).manager_pwd;
    let mut total = 0i64;
    let mut held: Vec<BTreeSet<u32>> = Vec::new();
    let nodes = primaries_of(c, cid);
    rt.block_on(async {
        for (_, _, port) in nodes {
            let mut n = c.conn(&pwd, port).await;
            let got = text(
                &mut n,
                &format!(
                    "SELECT CONCAT(COUNT(*), ' ', SUM(id = {T1_ROW}), ' ', SUM(id = {T2_ROW})) \
                     FROM bk.t"
                ),
            )
            .await;
            assert_eq!(
                got.as_deref(),
                Some(format!("{} 1 0", ROWS + 1).as_str()),
                "cluster {cid} node {port}: every row, T1 and not T2"
            );
            let balance = text(&mut n, "SELECT CAST(SUM(balance) AS CHAR) FROM bk.acct").await;
            total += balance
                .and_then(|b| b.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("a balance on {port}"));
            let prepared: Vec<mysql_async::Row> = n.query("XA RECOVER").await.expect("XA RECOVER");
            assert!(
                prepared.is_empty(),
                "no branch left prepared on {port} (cluster {cid})"
            );
            let ids: Vec<u32> = n
                .query("SELECT id FROM bk.xfer")
                .await
                .expect("the transfers");
            held.push(ids.into_iter().collect());
        }
    });
    let when = rfc3339(t);
    assert_eq!(
        total,
        2 * ACCOUNTS * OPENING,
        "the balances of cluster {cid} restored at {when}"
    );
    assert_eq!(held.len(), 2, "two shards in cluster {cid}");
    let only: Vec<_> = held[0].symmetric_difference(&held[1]).collect();
    assert!(
        only.is_empty(),
        "transfers on one shard only at {when}: {only:?}"
    );
    let held = &held[0];
    let missing: Vec<u32> = log
        .iter()
        .filter(|x| x.acked < at(t) && !held.contains(&x.local))
        .map(|x| x.local)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged before {when} but not restored: {missing:?}"
    );
    let late: Vec<u32> = log
        .iter()
        .filter(|x| x.started >= at(t + 1) && held.contains(&x.local))
        .map(|x| x.local)
        .collect();
    assert!(
        late.is_empty(),
        "begun at {when} + 1 s or later but restored: {late:?}"
    );
    (cid, held.len())
}

/// The port of cluster `cid`'s first compute node and the cluster's compute password.
fn comp_login(rt: &tokio::runtime::Runtime, c: &DaemonCluster, cid: i64) -> (u16, String) {
    let shown = ctl(&c.base, &["--json", "cluster", "show", &cid.to_string()])
        .ok()
        .json();
    let port = shown["comp_nodes"][0]["port"]
        .as_u64()
        .expect("a compute node") as u16;
    (port, rt.block_on(secret(c, cid)).comp_pwd)
}

/// Whether the compute node of cluster `cid` has the table made after the backup's cut.
fn has_after_cut(rt: &tokio::runtime::Runtime, c: &DaemonCluster, cid: i64) -> bool {
    let (port, pwd) = comp_login(rt, c, cid);
    let out = psql(
        port,
        &pwd,
        "SELECT to_regclass('public.after_cut') IS NOT NULL",
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim() == "t"
}

/// The table made on the source's compute node after the backup: begun at `from` (epoch
/// seconds); `held_from`: when the first archived schema dump begun after it was taken.
struct Ddl {
    from: i64,
    held_from: Option<i64>,
}

impl Ddl {
    /// A cluster restored to `t` has the table when restored to a time the archive had a dump
    /// with it, and not when restored to a time before it was made.
    fn check(&self, rt: &tokio::runtime::Runtime, c: &DaemonCluster, cid: i64, t: i64) {
        let has = has_after_cut(rt, c, cid);
        if t < self.from {
            assert!(
                !has,
                "restored to {} before the DDL ({})",
                rfc3339(t),
                rfc3339(self.from)
            );
        }
        if self.held_from.is_some_and(|h| t >= h) {
            assert!(
                has,
                "restored to {}: the schema dumped at {:?} has the table",
                rfc3339(t),
                self.held_from.map(rfc3339)
            );
        }
        eprintln!(
            "cluster {cid} restored to {}: compute table after the cut {has}",
            rfc3339(t)
        );
    }
}

/// Each shard of cluster `dst` serves: its primary writable, its replicas read-only,
/// replicating with both threads running, every node active.
fn serving(rt: &tokio::runtime::Runtime, c: &DaemonCluster, dst: i64, pwd: &str) {
    let shown = ctl(&c.base, &["--json", "cluster", "show", &dst.to_string()])
        .ok()
        .json();
    rt.block_on(async {
        for s in shown["shards"].as_array().expect("shards") {
            let nodes = s["nodes"].as_array().expect("nodes");
            let primary = nodes
                .iter()
                .find(|n| n["member_state"] == "source")
                .expect("a primary");
            let mut p = c
                .conn(pwd, primary["port"].as_u64().expect("port") as u16)
                .await;
            let ro = text(&mut p, "SELECT CAST(@@read_only AS CHAR)").await;
            assert!(
                matches!(ro.as_deref(), Some("0" | "OFF")),
                "the primary takes writes ({ro:?}): {s}"
            );
            let pos = text(&mut p, "SELECT @@gtid_binlog_pos")
                .await
                .unwrap_or_default();
            for n in nodes {
                assert_eq!(n["status"], "active", "{n}");
                if n["member_state"] == "source" {
                    continue;
                }
                let mut r = c.conn(pwd, n["port"].as_u64().expect("port") as u16).await;
                let ro = text(&mut r, "SELECT CAST(@@read_only AS CHAR)").await;
                assert!(
                    matches!(ro.as_deref(), Some("1" | "ON")),
                    "the replica is read-only ({ro:?}): {n}"
                );
                let w = reached(&mut r, &pos).await;
                assert_eq!(
                    w.as_deref(),
                    Some("0"),
                    "the replica replicates to {pos}: {n}"
                );
                let st: Vec<mysql_async::Row> = r.query("SHOW SLAVE STATUS").await.expect("status");
                let row = st.first().expect("a replication status");
                let running: (Option<String>, Option<String>) =
                    (row.get("Slave_IO_Running"), row.get("Slave_SQL_Running"));
                assert_eq!(
                    running,
                    (Some("Yes".into()), Some("Yes".into())),
                    "the replica's threads run: {n}"
                );
            }
        }
    });
}

/// Every storage node of cluster `dst` holds its own (empty) data again and each shard serves.
fn own_data_back(rt: &tokio::runtime::Runtime, c: &DaemonCluster, dst: i64, pwd: &str) {
    serving(rt, c, dst, pwd);
    let shown = ctl(&c.base, &["--json", "cluster", "show", &dst.to_string()])
        .ok()
        .json();
    rt.block_on(async {
        for s in shown["shards"].as_array().expect("shards") {
            for n in s["nodes"].as_array().expect("nodes") {
                let mut conn = c.conn(pwd, n["port"].as_u64().expect("port") as u16).await;
                let dbs = text(
                    &mut conn,
                    "SELECT CAST(COUNT(*) AS CHAR) FROM information_schema.schemata \
                     WHERE schema_name = 'bk'",
                )
                .await;
                assert_eq!(
                    dbs.as_deref(),
                    Some("0"),
                    "the node's own data is back: {n}"
                );
            }
        }
    });
}

/// The Emit API's `cluster_restore` of the (deleted) source cluster into the existing cluster
/// `dst` at `t`: refused while `dst` holds a database, with nothing changed; failed after the
/// nodes were held (a schema load that fails), with their own data put back; interrupted by a
/// manager crash while the nodes are held, resumed by the restarted manager; then done, and
/// checked as the other point-in-time restores are, plus what a restore over a cluster must
/// keep: each shard's primary, its replica read-only and replicating, every node active.
fn restore_over_an_empty_cluster(
    rt: &tokio::runtime::Runtime,
    c: &mut DaemonCluster,
    dst: i64,
    t: i64,
    log: &[Transfer],
) {
    let emit = Emit::new(&c.base);
    let pwd = rt.block_on(secret(c, dst)).manager_pwd;
    let before = primaries_of(c, dst);
    let when = chrono::DateTime::from_timestamp(t, 0)
        .expect("a time")
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let paras = json!({
        "src_cluster_id": c.cluster_id.to_string(),
        "dst_cluster_id": dst.to_string(),
        "restore_time": when,
    });
    let port = before[0].2;
    rt.block_on(async {
        let mut p = c.conn(&pwd, port).await;
        p.query_drop("CREATE DATABASE userdb")
            .await
            .expect("a database");
    });
    let (code, info) = emit.run_failed("cluster_restore", paras.clone(), Duration::from_secs(300));
    assert_eq!(code, "70005", "{info}");
    assert!(
        info.contains("not empty") && info.contains("database userdb"),
        "the refusal names what the cluster holds: {info}"
    );
    rt.block_on(async {
        let mut p = c.conn(&pwd, port).await;
        let db = text(
            &mut p,
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'userdb'",
        )
        .await;
        assert_eq!(
            db.as_deref(),
            Some("userdb"),
            "the refused restore changed nothing"
        );
        p.query_drop("DROP DATABASE userdb").await.expect("dropped");
    });
    let shown = ctl(&c.base, &["--json", "cluster", "show", &dst.to_string()])
        .ok()
        .json();
    let statuses: Vec<&Value> = shown["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .flat_map(|s| s["nodes"].as_array().expect("nodes").iter())
        .map(|n| &n["status"])
        .collect();
    assert!(statuses.iter().all(|s| *s == "active"), "{shown}");

    // A restore that fails once the nodes are held: a domain named like a backed-up table (a
    // type, not a relation: the cluster still counts as empty) fails the schema load after
    // every shard was restored. The cluster's own data is put back: still empty, every node
    // active, each shard serving as before.
    let (comp_port, comp_pwd) = comp_login(rt, c, dst);
    let made = psql(
        comp_port,
        &comp_pwd,
        "CREATE DOMAIN public.accounts AS integer",
    );
    assert!(made.status.success(), "{made:?}");
    let id = emit.accept("cluster_restore", paras.clone());
    let (a, _) = emit.wait(&id, Duration::from_secs(900));
    assert_eq!(
        a.s("status"),
        "failed",
        "{}\ndaemon log:\n{}",
        a.text,
        c.log()
    );
    let job = ctl(&c.base, &["--json", "job", "show", &id]).ok().json();
    let error = job["memo"]["error"].as_str().unwrap_or_default();
    assert_eq!(job["memo"]["put_back"], true, "{job}");
    assert!(
        error.contains("put back") && error.contains("compute nodes may keep"),
        "the failure says what was undone and what was not: {job}"
    );
    assert_eq!(primaries_of(c, dst), before, "each shard keeps its primary");
    own_data_back(rt, c, dst, &pwd);
    let dropped = psql(
        comp_port,
        &comp_pwd,
        "DROP TABLE IF EXISTS public.after_cut; DROP DOMAIN public.accounts",
    );
    assert!(dropped.status.success(), "{dropped:?}");

    // The restore again, the manager killed while the nodes are held and started again: the
    // resumed job finishes (the data restore had ended) or puts the nodes' own data back, and
    // then the restore is asked once more. Either way the cluster ends restored.
    let started = Instant::now();
    let id = emit.accept("cluster_restore", paras.clone());
    let path = format!("/v1/jobs/{id}");
    let client = http(Duration::from_secs(10));
    loop {
        let (_, j) = c.daemon.get(&client, &path);
        if j["memo"]["held"].as_array().is_some_and(|h| !h.is_empty()) {
            break;
        }
        assert!(
            j["status"] != "done" && j["status"] != "failed",
            "the restore ended before it held the nodes: {j}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the restore holds no node: {j}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.restart_daemon(EXTRA_CNF);
    let emit = Emit::new(&c.base);
    // Through REST: the new manager answers Emit's get_status only once it leads.
    let ended = c.daemon.wait_job(
        id.parse().expect("a job id"),
        Duration::from_secs(900),
        |j| j["status"] == "done" || j["status"] == "failed",
    );
    let id = match ended["status"].as_str().unwrap_or_default() {
        "done" => {
            eprintln!("the restore resumed after the manager's restart and finished");
            id
        }
        "failed" => {
            let job = ctl(&c.base, &["--json", "job", "show", &id]).ok().json();
            assert_eq!(job["memo"]["put_back"], true, "{job}");
            assert!(
                job["memo"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("restarted")),
                "{job}"
            );
            eprintln!("the restore resumed after the manager's restart and was undone");
            own_data_back(rt, c, dst, &pwd);
            let id = emit.accept("cluster_restore", paras);
            let (a, _) = emit.wait(&id, Duration::from_secs(900));
            assert_eq!(
                a.s("status"),
                "done",
                "{}\ndaemon log:\n{}",
                a.text,
                c.log()
            );
            id
        }
        _ => panic!("the resumed restore: {ended}\ndaemon log:\n{}", c.log()),
    };
    let job = ctl(&c.base, &["--json", "job", "show", &id]).ok().json();
    assert_eq!(job["job_type"], "restore_into_cluster", "{job}");
    assert_eq!(job["memo"]["cluster_id"].as_i64(), Some(dst), "{job}");
    let (_, held) = check_point_in_time(rt, c, t, &job, log);
    eprintln!(
        "restored over cluster {dst} at {}: {held} transfers (job {id}, {:?})",
        rfc3339(t),
        started.elapsed()
    );
    assert_eq!(primaries_of(c, dst), before, "each shard keeps its primary");
    serving(rt, c, dst, &pwd);
}

#[test]
fn a_backup_is_restored_into_a_new_cluster_with_every_distributed_transaction_whole() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The binlogs archived every 2 s, so the archive soon covers the end of the transfers.
    let mut c = DaemonCluster::start_with(
        IP,
        "rs1",
        Shape {
            shards: 2,
            nodes: 2,
            comps: 1,
        },
        EXTRA_CNF,
    );
    let shards = c.shards();
    let src = rt.block_on(secret(&c, c.cluster_id));
    let comp = &c.detail["comp_nodes"][0];
    let comp_id = comp["id"].as_i64().expect("comp id");
    let comp_port = comp["port"].as_u64().expect("comp port") as u16;
    let out = psql(
        comp_port,
        &src.comp_pwd,
        "CREATE TABLE public.accounts (id INT PRIMARY KEY, balance BIGINT)",
    );
    assert!(out.status.success(), "{out:?}");

    // Rows on each shard, then T1 and T2 prepared on both primaries, their sessions kept.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as u32;
    let xid = |local: u32| format!("{comp_id}-{now}-{local}");
    let t1_txn = (u64::from(now) << 32) | 1;
    let holders = rt.block_on(async {
        let mut holders = Vec::new();
        for (sid, nodes) in &shards {
            let primary = nodes.iter().find(|n| n.2 == "source").expect("a primary");
            let mut p = c.conn(&src.manager_pwd, primary.1).await;
            p.query_drop(format!(
                "CREATE DATABASE bk; CREATE TABLE bk.t (id BIGINT PRIMARY KEY, shard BIGINT, \
                 v VARCHAR(100)); INSERT INTO bk.t SELECT seq, {sid}, MD5(seq) \
                 FROM bk.seq_1_to_{ROWS}; CREATE TABLE bk.acct (id BIGINT PRIMARY KEY, \
                 balance BIGINT NOT NULL); INSERT INTO bk.acct SELECT seq, {OPENING} \
                 FROM bk.seq_0_to_{}; CREATE TABLE bk.xfer (id BIGINT PRIMARY KEY)",
                ACCOUNTS - 1
            ))
            .await
            .expect("rows");
            for (local, row, v) in [(1, T1_ROW, "T1"), (2, T2_ROW, "T2")] {
                let mut h = c.conn(&src.manager_pwd, primary.1).await;
                h.query_drop(format!(
                    "XA START '{x}'; INSERT INTO bk.t VALUES ({row}, {sid}, '{v}'); \
                     XA END '{x}'; XA PREPARE '{x}'",
                    x = xid(local)
                ))
                .await
                .expect("a prepared branch");
                holders.push(h);
            }
            // The replica has received and applied everything, the prepares included.
            let pos = text(&mut p, "SELECT @@gtid_binlog_pos")
                .await
                .unwrap_or_default();
            for r in nodes.iter().filter(|n| n.2 != "source") {
                let mut rc = c.conn(&src.manager_pwd, r.1).await;
                let w = reached(&mut rc, &pos).await;
                assert_eq!(w.as_deref(), Some("0"), "replica {} reaches {pos}", r.1);
            }
        }
        // T1's coordinator logged its commit (and then stopped); T2's logged nothing.
        let store = Store::open(&StoreConfig::sqlite(&c.sqlite))
            .await
            .expect("the daemon's store");
        store
            .tx(async |tx| {
                commit_log::insert(
                    tx,
                    "rs1",
                    &NewCommitLogEntry {
                        comp_node_id: comp_id,
                        txn_id: t1_txn,
                        next_txn_cmd: TxnCmd::Commit,
                        written_shards: Some(shards.iter().map(|s| s.0).collect()),
                    },
                    None,
                )
                .await
            })
            .await
            .expect("T1's commit logged");
        holders
    });

    // Transfers all through the backup.
    let primaries: Vec<u16> = shards
        .iter()
        .map(|(_, nodes)| nodes.iter().find(|n| n.2 == "source").expect("primary").1)
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let log: Transfers = Arc::default();
    let workload = rt.spawn(transfers(
        c.sqlite.clone(),
        (primaries[0], primaries[1]),
        src.pgx_pwd.clone(),
        comp_id,
        1000,
        stop.clone(),
        log.clone(),
    ));
    let count = || log.lock().unwrap_or_else(|e| e.into_inner()).len();
    let t0 = std::time::Instant::now();
    while count() < 20 {
        assert!(t0.elapsed() < Duration::from_secs(60), "transfers run");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The backup: from the replicas, at one cut.
    let before = count();
    let store_dir = c.wd.path().join("backups");
    let (st, v) = c.daemon.post(
        &http(Duration::from_secs(60)),
        "/v1/backup_storages",
        &json!({"name": "rs_local", "kind": "ssh_dir", "hostaddr": IP.to_string(),
                "path": store_dir.display().to_string()}),
    );
    assert_eq!(st, 201, "{v}\n{}", c.log());
    let out = ctl(
        &c.base,
        &[
            "--json",
            "backup",
            "create",
            "rs1",
            "--storage",
            "rs_local",
            "--wait",
            "--wait-timeout",
            "600",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());
    let during = count();
    // The archive's part: transfers go on past the backup, and a table is made on the compute
    // node (DDL after the cut: the archive's schema dumps carry it).
    let ddl_from = secs_of(SystemTime::now());
    let made = psql(
        comp_port,
        &src.comp_pwd,
        "CREATE TABLE public.after_cut (id INT PRIMARY KEY)",
    );
    assert!(made.status.success(), "{made:?}");
    let ddl_done = secs_of(SystemTime::now()) + 1;
    std::thread::sleep(Duration::from_secs(12));
    stop.store(true, Ordering::SeqCst);
    rt.block_on(workload).expect("the transfers ended cleanly");
    eprintln!(
        "transfers committed: {before} before the backup was asked for, {during} by its end, \
         {} in all",
        count()
    );
    assert!(during > before, "transfers went on during the backup");
    let job = out.json();
    assert_eq!(job["memo"]["consistent"], true, "{job}");
    let backup_id = job["memo"]["backup_id"].as_i64().expect("backup id");
    // The coordinator is gone now. Before the switchover: a branch still attached to a live
    // session on the demoted primary cannot take the XA COMMIT that the resolver then writes
    // on the new one (its replication stops with 1397, XAER_NOTA).
    rt.block_on(async {
        for h in holders {
            drop(h.disconnect().await);
        }
    });

    // Shard 1's primary switched over to its replica, then transfers against the new
    // primaries: the archive follows the shard's new primary.
    let (switched, old_primary) = (shards[0].0, primaries[0]);
    let out = ctl(
        &c.base,
        &[
            "--json",
            "--timeout",
            "300",
            "failover",
            "switchover",
            "--shard",
            &switched.to_string(),
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());
    let record = out.json();
    assert_eq!(record["outcome"], "promoted", "{record}");
    let switched_at = SystemTime::now();
    let new_node = record["new_primary"].as_i64().expect("the new primary");
    let t0 = Instant::now();
    let new_primaries = loop {
        let now = primaries_of(&c, c.cluster_id);
        if now.iter().any(|p| p.0 == switched && p.1 == new_node) {
            break now;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "node {new_node} is not shard {switched}'s primary: {now:?}\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let port_of = |sid: i64| {
        new_primaries
            .iter()
            .find(|p| p.0 == sid)
            .map(|p| p.2)
            .expect("a primary")
    };
    let new_primary = port_of(switched);
    assert_ne!(new_primary, old_primary, "{new_primaries:?}");
    eprintln!(
        "shard {switched} switched over from {old_primary} to {new_primary} in {} ms",
        record["total_ms"]
    );
    let before_switch = count();
    let stop = Arc::new(AtomicBool::new(false));
    let workload = rt.spawn(transfers(
        c.sqlite.clone(),
        (port_of(shards[0].0), port_of(shards[1].0)),
        src.pgx_pwd.clone(),
        comp_id,
        1_000_000,
        stop.clone(),
        log.clone(),
    ));
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::SeqCst);
    rt.block_on(workload).expect("the transfers ended cleanly");
    let stopped_at = SystemTime::now();
    eprintln!(
        "transfers committed after the switchover: {}",
        count() - before_switch
    );
    assert!(
        count() > before_switch,
        "transfers went on after the switchover"
    );

    // The archive covers the end of the transfers, without a gap, from the new primary.
    let archive = archive_until(&c, backup_id, stopped_at + Duration::from_secs(1));
    eprintln!("archive: {archive}");
    let archived = archive["shards"].as_array().expect("the archive's shards");
    // The first schema dump begun after the table was made holds it.
    let index: Value = serde_json::from_slice(
        &std::fs::read(store_dir.join(format!("cluster_{}/binlog/index.json", c.cluster_id)))
            .expect("the archive's index"),
    )
    .expect("an index");
    let ddl = Ddl {
        from: ddl_from,
        held_from: index["compute"]["snapshots"]
            .as_array()
            .expect("the archived schema dumps")
            .iter()
            .filter_map(|s| s["taken_ms"].as_i64())
            .filter(|ms| *ms >= ddl_done * 1000)
            .min()
            .map(|ms| ms / 1000),
    };
    assert!(
        ddl.held_from.is_some(),
        "a schema dump after the DDL is archived: {index}"
    );
    assert_eq!(archived.len(), 2, "{archive}");
    for s in archived {
        assert!(s["gap"].is_null(), "a gap in the archive: {archive}");
    }
    let source = archived
        .iter()
        .find(|s| s["shard_id"] == switched)
        .map(|s| s["source"].clone());
    assert_eq!(
        source,
        Some(json!(format!("{IP}:{new_primary}"))),
        "shard {switched} archived from its new primary: {archive}"
    );
    let from = epoch_secs(
        archive["restorable_from"]
            .as_str()
            .expect("restorable_from"),
    );
    let until = epoch_secs(
        archive["restorable_until"]
            .as_str()
            .expect("restorable_until"),
    );
    let dir = store_dir.join(format!("cluster_{}/backup_{backup_id}", c.cluster_id));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("manifest JSON");
    assert_eq!(manifest["consistent"], true, "{manifest}");
    for (sid, _) in &shards {
        assert!(
            manifest["cut"][sid.to_string()].as_str().is_some(),
            "the cut of shard {sid}: {manifest}"
        );
    }
    // The source cluster is deleted.
    let out = ctl(
        &c.base,
        &["cluster", "rm", &c.cluster_id.to_string(), "--wait"],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());

    // The restore into a new cluster.
    let out = ctl(
        &c.base,
        &[
            "--json",
            "backup",
            "restore",
            &backup_id.to_string(),
            "--name",
            "rs2",
            "--innodb-size-mb",
            "32",
            "--max-connections",
            "100",
            "--wait",
            "--wait-timeout",
            "900",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());
    let job = out.json();
    assert_eq!(job["status"], "done", "{job}");
    let memo = &job["memo"];
    assert_eq!(memo["consistent"], true, "{job}");
    let restored = memo["shards"].as_array().expect("shards").clone();
    assert_eq!(restored.len(), 2, "{job}");
    // T1 and T2 on every shard, and any transfer prepared at the cut (committed when its
    // decision was logged before the cut): which of those are is checked by the rows and the
    // balances below.
    for s in &restored {
        assert!(s["xa_committed"].as_u64() >= Some(1), "T1 committed: {s}");
        assert!(
            s["xa_rolled_back"].as_u64() >= Some(1),
            "T2 rolled back: {s}"
        );
        assert_eq!(s["xa_left"], 0, "{s}");
    }
    let new_id = memo["cluster_id"].as_i64().expect("the new cluster");
    let detail = ctl(&c.base, &["--json", "cluster", "show", &new_id.to_string()])
        .ok()
        .json();
    let new = rt.block_on(secret(&c, new_id));
    let mut balances = Vec::new();
    rt.block_on(async {
        for s in detail["shards"].as_array().expect("shards") {
            let nodes = s["nodes"].as_array().expect("nodes");
            assert_eq!(nodes.len(), 2, "{s}");
            let port_of = |state: &str| {
                nodes
                    .iter()
                    .find(|n| n["member_state"] == state)
                    .and_then(|n| n["port"].as_u64())
                    .unwrap_or_else(|| panic!("a {state}: {s}")) as u16
            };
            let (primary, replica) = (port_of("source"), port_of("replica"));
            for port in [primary, replica] {
                let mut n = c.conn(&new.manager_pwd, port).await;
                let got = text(
                    &mut n,
                    &format!(
                        "SELECT CONCAT(COUNT(*), ' ', SUM(id = {T1_ROW}), ' ', SUM(id = {T2_ROW})) \
                         FROM bk.t"
                    ),
                )
                .await;
                assert_eq!(
                    got.as_deref(),
                    Some(format!("{} 1 0", ROWS + 1).as_str()),
                    "node {port}: every row, T1 and not T2"
                );
                let balance = text(&mut n, "SELECT CAST(SUM(balance) AS CHAR) FROM bk.acct").await;
                balances.push((port, balance.and_then(|b| b.parse::<i64>().ok())));
                let prepared: Vec<mysql_async::Row> =
                    n.query("XA RECOVER").await.expect("XA RECOVER");
                assert!(prepared.is_empty(), "no branch left prepared on {port}");
            }
            // Replication runs from the new primary.
            let mut p = c.conn(&new.manager_pwd, primary).await;
            p.query_drop("INSERT INTO bk.t VALUES (200001, 0, 'after')")
                .await
                .expect("a write on the restored primary");
            let pos = text(&mut p, "SELECT @@gtid_binlog_pos")
                .await
                .unwrap_or_default();
            let mut r = c.conn(&new.manager_pwd, replica).await;
            let w = reached(&mut r, &pos).await;
            assert_eq!(
                w.as_deref(),
                Some("0"),
                "the replica {replica} follows {pos}"
            );
        }
    });
    // Every transfer is on both shards or on neither: the total is the opening one, on the
    // primaries and on the replicas alike.
    let sum = |which: usize| -> i64 {
        balances
            .iter()
            .skip(which)
            .step_by(2)
            .map(|(port, b)| b.unwrap_or_else(|| panic!("a balance on {port}")))
            .sum()
    };
    assert_eq!(
        (sum(0), sum(1)),
        (2 * ACCOUNTS * OPENING, 2 * ACCOUNTS * OPENING),
        "the restored balances (primary, replica per shard): {balances:?}"
    );
    let new_comp = detail["comp_nodes"][0]["port"].as_u64().expect("comp") as u16;
    let out = psql(
        new_comp,
        &new.comp_pwd,
        "SELECT to_regclass('public.accounts') IS NOT NULL",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "t",
        "the compute schema was restored: {out:?}"
    );
    assert!(
        !has_after_cut(&rt, &c, new_id),
        "a restore to the end of the backup has the schema of its cut"
    );
    // Gone before the point-in-time restores, which need the room.
    let out = ctl(&c.base, &["cluster", "rm", &new_id.to_string(), "--wait"]);
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());

    // Three point-in-time restores at once, at random whole seconds of the archived range,
    // the last one after the switchover.
    let seed = std::env::var("PITR_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
        });
    let mut rng = SplitMix(seed);
    let points = [
        rng.between(from, until),
        rng.between(from, until),
        rng.between(from.max(secs_of(switched_at) + 1), until),
    ];
    eprintln!(
        "restore points (seed {seed}, archive {} ..= {}, switchover done {}): {:?}",
        rfc3339(from),
        rfc3339(until),
        rfc3339(secs_of(switched_at)),
        points.map(rfc3339)
    );
    // The third goes over an existing, empty cluster of the same shape through the Emit API's
    // `cluster_restore` (the original's restore into `dst_cluster_id`): made first.
    let out = ctl(
        &c.base,
        &[
            "--json",
            "cluster",
            "create",
            "rs6",
            "--shards",
            "2",
            "--nodes",
            "2",
            "--comps",
            "1",
            "--innodb-size-mb",
            "32",
            "--max-connections",
            "100",
            "--wait",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());
    let dst = out.json()["memo"]["cluster_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("the new cluster's id: {out:#?}"));
    let jobs: Vec<(i64, i64)> = points[..2]
        .iter()
        .zip(["rs4", "rs5"])
        .map(|(&t, name)| {
            let out = ctl(
                &c.base,
                &[
                    "--json",
                    "backup",
                    "restore",
                    &backup_id.to_string(),
                    "--name",
                    name,
                    "--restore-time",
                    &rfc3339(t),
                    "--nodes",
                    "1",
                    "--innodb-size-mb",
                    "32",
                    "--max-connections",
                    "100",
                ],
            );
            assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());
            (t, out.json()["job_id"].as_i64().expect("a job id"))
        })
        .collect();
    let log = committed(&log);
    let mut restored_ids = Vec::new();
    for (t, job_id) in jobs {
        let started = Instant::now();
        let out = ctl(
            &c.base,
            &[
                "--json",
                "job",
                "watch",
                &job_id.to_string(),
                "--timeout",
                "900",
            ],
        );
        assert_eq!(
            out.code,
            0,
            "the restore at {} (job {job_id}): {out:#?}\ndaemon log:\n{}",
            rfc3339(t),
            c.log()
        );
        let job = out.json();
        let (cid, held) = check_point_in_time(&rt, &c, t, &job, &log);
        ddl.check(&rt, &c, cid, t);
        let acked = log.iter().filter(|x| x.acked < at(t)).count();
        eprintln!(
            "restored at {}: {held} transfers of {} committed ({acked} acknowledged before), \
             job {job_id} waited for {:?}",
            rfc3339(t),
            log.len(),
            started.elapsed()
        );
        restored_ids.push(cid);
    }
    restore_over_an_empty_cluster(&rt, &mut c, dst, points[2], &log);
    ddl.check(&rt, &c, dst, points[2]);
    restored_ids.push(dst);
    for cid in restored_ids {
        let out = ctl(&c.base, &["cluster", "rm", &cid.to_string(), "--wait"]);
        assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());
    }

    // A restore time past the archive: refused, nothing created (after the restores that
    // succeed, so that a failure here does not hide theirs).
    let out = ctl(
        &c.base,
        &[
            "--json",
            "backup",
            "restore",
            &backup_id.to_string(),
            "--name",
            "rs7",
            "--restore-time",
            &rfc3339(until + 3600),
            "--nodes",
            "1",
            "--innodb-size-mb",
            "32",
            "--max-connections",
            "100",
        ],
    );
    if out.code == 0 {
        // Accepted: say how the job ended, for the failure message.
        let id = out.json()["job_id"].as_i64().unwrap_or_default();
        let job = ctl(
            &c.base,
            &[
                "--json",
                "job",
                "watch",
                &id.to_string(),
                "--timeout",
                "900",
            ],
        );
        panic!(
            "a restore time past the archive was accepted: {out:#?}\nits job: {}\ndaemon log:\n{}",
            job.stdout,
            c.log()
        );
    }
    let clusters = ctl(&c.base, &["--json", "cluster", "list"]).ok().json();
    assert!(
        clusters
            .as_array()
            .is_some_and(|a| a.iter().all(|c| c["name"] != "rs7")),
        "{clusters}"
    );

    // A damaged backup file: refused before anything is installed, no cluster left.
    let snapshot = std::fs::read_dir(&dir)
        .expect("the backup dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "zst"))
        .expect("a snapshot");
    let mut bytes = std::fs::read(&snapshot).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&snapshot, bytes).expect("damage");
    let out = ctl(
        &c.base,
        &[
            "--json",
            "backup",
            "restore",
            &backup_id.to_string(),
            "--name",
            "rs3",
            "--wait",
            "--wait-timeout",
            "600",
        ],
    );
    assert_ne!(out.code, 0, "{out:#?}");
    let failed = out.json();
    let error = failed["memo"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("damaged"), "{failed}");
    let clusters = ctl(&c.base, &["--json", "cluster", "list"]).ok().json();
    assert!(
        clusters
            .as_array()
            .is_some_and(|a| a.iter().all(|c| c["name"] != "rs3")),
        "{clusters}"
    );
}
