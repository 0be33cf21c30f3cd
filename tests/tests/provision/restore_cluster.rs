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

use std::net::Ipv4Addr;
use std::time::Duration;

use kunlun_core::accounts::COMP_USER;
use kunlun_meta::model::TxnCmd;
use kunlun_meta::store::repo::commit_log::{self, NewCommitLogEntry};
use kunlun_meta::store::repo::secrets;
use kunlun_meta::{Store, StoreConfig};
use kunlun_tests::cli::ctl;
use kunlun_tests::daemon::http;
use kunlun_tests::daemon_cluster::{DaemonCluster, Shape};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 95);
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

/// Transfers of 1 between the accounts of the two shard primaries `(a, b)` until `stop`, as a
/// compute node (`comp_id`) makes them: XA on both, the commit decision in the commit log,
/// then both commits. Returns how many committed.
async fn transfers(
    sqlite: std::path::PathBuf,
    (a, b): (u16, u16),
    pwd: String,
    comp_id: i64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let store = Store::open(&StoreConfig::sqlite(&sqlite))
        .await
        .expect("the daemon's store");
    let (mut ca, mut cb) = (pgx(a, &pwd).await, pgx(b, &pwd).await);
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as u32;
    let mut local = 1000u32;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        local += 1;
        let x = format!("{comp_id}-{ts}-{local}");
        let acct = i64::from(local) % ACCOUNTS;
        let (from, to) = if local.is_multiple_of(2) {
            (&mut ca, &mut cb)
        } else {
            (&mut cb, &mut ca)
        };
        for (c, delta) in [(from, -1), (to, 1)] {
            c.query_drop(format!(
                "XA START '{x}'; UPDATE bk.acct SET balance = balance + ({delta}) \
                 WHERE id = {acct}; XA END '{x}'; XA PREPARE '{x}'"
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
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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

#[test]
fn a_backup_is_restored_into_a_new_cluster_with_every_distributed_transaction_whole() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let c = DaemonCluster::start(
        IP,
        "rs1",
        Shape {
            shards: 2,
            nodes: 2,
            comps: 1,
        },
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
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
                 FROM bk.seq_0_to_{}",
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
                let w = text(
                    &mut rc,
                    &format!("SELECT CAST(MASTER_GTID_WAIT('{pos}', 60) AS CHAR)"),
                )
                .await;
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
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let moved = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workload = rt.spawn(transfers(
        c.sqlite.clone(),
        (primaries[0], primaries[1]),
        src.pgx_pwd.clone(),
        comp_id,
        stop.clone(),
        moved.clone(),
    ));
    let count = || moved.load(std::sync::atomic::Ordering::SeqCst);
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
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
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
    // The coordinator is gone now; the source cluster is deleted.
    rt.block_on(async {
        for h in holders {
            drop(h.disconnect().await);
        }
    });
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
            let w = text(
                &mut r,
                &format!("SELECT CAST(MASTER_GTID_WAIT('{pos}', 60) AS CHAR)"),
            )
            .await;
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

    // A damaged backup file: refused before anything is installed, no cluster left.
    let snapshot = std::fs::read_dir(&dir)
        .expect("the backup dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "mbstream"))
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

    let out = ctl(&c.base, &["cluster", "rm", &new_id.to_string(), "--wait"]);
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());
}
