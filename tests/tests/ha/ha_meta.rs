//! The metadata shard's own high availability on three real MariaDB nodes (semi-sync, GTID):
//!
//! - two stores (two manager instances, in process) follow a replica an operator promoted by
//!   hand, while both write job rows: every acknowledged row is on the new primary, none
//!   failed (a statement refused as read-only runs once more on the new primary), and each
//!   store says where it moved and why;
//! - two `cluster-mgr` daemons on the shard, the leader failing it over after `kill -9` of its
//!   primary during a `create_cluster` job and while a compute node's login writes commit-log
//!   rows (see [`a_killed_metadata_primary_is_failed_over_by_the_leader_and_both_managers_follow`]).
//!
//! Invariant: every server and daemon started here is owned by a value that stops it by PID.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_meta::model::NewJob;
use kunlun_meta::store::{Store, StoreConfig};
use kunlun_tests::ha::LIMIT;
use kunlun_tests::harness::MariaDb;
use kunlun_tests::meta_shard::{wait_for, MetaShardSet, STORE_PWD, STORE_USER};

/// What one writer saw: the ids of acknowledged rows (with when), and every failure.
#[derive(Debug, Default)]
struct Written {
    acked: Vec<(i64, Instant)>,
    failed: Vec<String>,
}

/// Creates job rows through `store` until `stop`, one at a time.
async fn write_jobs(store: Store, who: &'static str, stop: Arc<AtomicBool>) -> Written {
    let mut w = Written::default();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let job = NewJob {
            job_type: "xa_resolve".into(),
            job_info: serde_json::json!({"writer": who, "n": i}),
            user_name: Some(who.into()),
        };
        match store.create_job(&job).await {
            Ok(j) => w.acked.push((j.id, Instant::now())),
            Err(e) => w.failed.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_follow_a_replica_promoted_by_hand_and_keep_every_acknowledged_write() {
    const DB: &str = "kl_meta_follow";
    let m = tokio::task::spawn_blocking(|| MetaShardSet::start(DB))
        .await
        .expect("join")
        .expect("metadata shard");
    let cfg = StoreConfig {
        primary_check: Duration::from_millis(500),
        ..StoreConfig::mysql(m.seeds(), STORE_USER, STORE_PWD, DB)
    };
    let a = Store::open(&cfg).await.expect("store a");
    let b = Store::open(&cfg).await.expect("store b");
    let old = m.seeds()[0].clone();
    let new = m.seeds()[1].clone();
    assert_eq!(a.primary().as_deref(), Some(old.as_str()));
    assert_eq!(b.primary().as_deref(), Some(old.as_str()));

    let stop = Arc::new(AtomicBool::new(false));
    let wa = tokio::spawn(write_jobs(a.clone(), "a", stop.clone()));
    let wb = tokio::spawn(write_jobs(b.clone(), "b", stop.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;

    // An operator promotes the first replica by hand while both write.
    let m = Arc::new(m);
    let m2 = m.clone();
    tokio::task::spawn_blocking(move || {
        let nodes = m2.nodes();
        m2.promote_by_hand(nodes[0], nodes[1])
    })
    .await
    .expect("join")
    .expect("promotion by hand");
    let promoted = Instant::now();

    for (name, s) in [("a", &a), ("b", &b)] {
        let s = s.clone();
        let want = new.clone();
        tokio::task::spawn_blocking(move || {
            wait_for(&format!("store {name} on {want}"), LIMIT, || {
                (s.primary().as_deref() == Some(want.as_str())).then_some(())
            })
        })
        .await
        .expect("join")
        .expect("the store follows the new primary");
    }
    // Both go on writing on the new primary for a while.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    let (wa, wb) = (wa.await.expect("writer a"), wb.await.expect("writer b"));

    for (name, w) in [("a", &wa), ("b", &wb)] {
        println!(
            "writer {name}: {} rows acknowledged, {} after the promotion, {} failed",
            w.acked.len(),
            w.acked.iter().filter(|(_, t)| *t > promoted).count(),
            w.failed.len()
        );
        assert!(
            w.failed.is_empty(),
            "writer {name}: a write refused as read-only must run again on the new primary: {:?}",
            w.failed
        );
        assert!(
            w.acked.iter().any(|(_, t)| *t > promoted),
            "writer {name} wrote nothing on the new primary"
        );
    }
    // Every acknowledged row is on the new primary (read through it directly).
    let new_node = m.at(&new).expect("new primary");
    let ids: std::collections::BTreeSet<i64> = new_node
        .rows(&format!("SELECT id FROM {DB}.cluster_general_job_log"))
        .expect("read job rows")
        .into_iter()
        .map(|r| r[0].parse().expect("id"))
        .collect();
    for (_, w) in [("a", &wa), ("b", &wb)] {
        for (id, _) in &w.acked {
            assert!(
                ids.contains(id),
                "acknowledged job {id} is missing on the new primary"
            );
        }
    }
    // Each store says where it moved, from where and why.
    for (name, s) in [("a", &a), ("b", &b)] {
        let st = s.follow_status().expect("mysql store");
        let last = st
            .moves
            .last()
            .unwrap_or_else(|| panic!("store {name}: no move: {st:?}"));
        assert_eq!(
            (last.from.as_str(), last.to.as_str()),
            (old.as_str(), new.as_str())
        );
        assert!(
            last.reason.contains(&old) && last.reason.contains("read-only"),
            "store {name}: {}",
            last.reason
        );
        assert_eq!(st.primary, new);
        assert!(st.searching.is_none(), "{st:?}");
        assert_eq!(s.describe(), format!("mysql://{STORE_USER}@{new}/{DB}"));
    }
}

/// The loopback address of this file's machine (a private sshd).
const MACHINE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 101);

/// A compute node's commit-log writer on the metadata shard: inserts one decision at a time
/// with its own least-privilege login into `commit_log_<cluster>` of whichever node is
/// writable, as a compute node does after learning the new primary; a row is acknowledged when
/// its `INSERT` returned OK. After a failed insert it finds the writable node again and
/// inserts the same row again: a duplicate key then says the first one was stored.
#[derive(Debug, Default)]
struct CommitLog {
    acked: Vec<u64>,
    stored_on_retry: Vec<u64>,
    errors: usize,
}

async fn writable_conn(seeds: &[String]) -> Option<mysql_async::Conn> {
    use kunlun_tests::meta_shard::{CN_PWD, CN_USER};
    use mysql_async::prelude::Queryable;
    for s in seeds {
        let (host, port) = s.rsplit_once(':')?;
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port.parse().ok()?)
            .user(Some(CN_USER))
            .pass(Some(CN_PWD))
            .prefer_socket(false);
        let Ok(Ok(mut c)) =
            tokio::time::timeout(Duration::from_secs(1), mysql_async::Conn::new(opts)).await
        else {
            continue;
        };
        let ro = tokio::time::timeout(
            Duration::from_secs(1),
            c.query_first::<i64, _>("SELECT @@read_only"),
        )
        .await;
        if matches!(ro, Ok(Ok(Some(0)))) {
            return Some(c);
        }
    }
    None
}

async fn write_commit_log(seeds: Vec<String>, table: String, stop: Arc<AtomicBool>) -> CommitLog {
    use mysql_async::prelude::Queryable;
    let mut out = CommitLog::default();
    let start = chrono::Utc::now().timestamp() as u64;
    let mut conn: Option<mysql_async::Conn> = None;
    let mut i = 0u64;
    'rows: while !stop.load(Ordering::SeqCst) {
        i += 1;
        let txn = (start << 32) | i;
        let mut retried = false;
        loop {
            if stop.load(Ordering::SeqCst) && retried {
                break 'rows;
            }
            let Some(c) = conn.as_mut() else {
                conn = writable_conn(&seeds).await;
                if conn.is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            };
            let sql = format!(
                "INSERT INTO {table} (comp_node_id, txn_id, next_txn_cmd) VALUES (7, {txn}, 'commit')"
            );
            match tokio::time::timeout(Duration::from_secs(5), c.query_drop(sql)).await {
                Ok(Ok(())) => {
                    out.acked.push(txn);
                    break;
                }
                Ok(Err(mysql_async::Error::Server(e))) if e.code == 1062 && retried => {
                    out.stored_on_retry.push(txn);
                    break;
                }
                _ => {
                    out.errors += 1;
                    retried = true;
                    conn = None;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

/// Samples `GET /v1/leader` of every daemon until `stop`: `(a leader, b leader)` pairs.
fn sample_leaders(urls: Vec<String>, stop: Arc<AtomicBool>) -> Vec<Vec<bool>> {
    let http = kunlun_tests::daemon::http(Duration::from_secs(2));
    let mut out = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        out.push(
            urls.iter()
                .map(|u| {
                    http.get(u)
                        .send()
                        .ok()
                        .and_then(|r| r.json::<serde_json::Value>().ok())
                        .is_some_and(|v| v["role"] == "leader")
                })
                .collect(),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    out
}

/// Two daemons on the metadata shard; the leader fails it over after `kill -9` of its
/// primary while a `create_cluster` job (accepted by the follower, run by the leader)
/// installs and a compute node's login writes commit-log rows: the failover is recorded
/// (`kl_failover` shard 0, `meta_db_nodes` naming the new primary), the job finishes,
/// every acknowledged commit-log row is on the new primary, both managers' stores follow it
/// (`GET /v1/meta`), never two managers lead at once, and the returned old primary rejoins as
/// a replica. The cluster is then deleted by its own job.
#[test]
fn a_killed_metadata_primary_is_failed_over_by_the_leader_and_both_managers_follow() {
    use kunlun_tests::meta_shard::HA_USER;
    use nix::sys::signal::Signal;
    use serde_json::{json, Value};

    const DB: &str = "kl_meta_ha";
    let limit = Duration::from_secs(120);
    let job_limit = Duration::from_secs(600);
    let m = MetaShardSet::start(DB).expect("metadata shard");
    let seeds = m.seeds();
    let sshd = kunlun_tests::Sshd::start_on(MACHINE_IP).expect("sshd");
    let wd = kunlun_tests::cli::workdir();
    let mode755 = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(wd.path(), mode755.clone()).expect("chmod");
    let data = wd.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    std::fs::set_permissions(&data, mode755).expect("chmod");
    // The cluster's servers are stopped also when a step fails (seen: one left running).
    let _servers = kunlun_tests::daemon_cluster::Leftovers(data.clone());

    let spawn = |name: &str| spawn_daemon(&m, wd.path(), name, &["leader_lease_secs = 10"]);
    let http = kunlun_tests::daemon::http(Duration::from_secs(30));
    let mut a = spawn("a");
    a.wait_for(&http, "/v1/leader", limit, |st, v| {
        st == 200 && v["role"] == "leader"
    });
    m.register_nodes().expect("meta_db_nodes rows");
    let mut b = spawn("b");
    b.wait_for(&http, "/v1/leader", limit, |st, v| {
        st == 200 && v["role"] == "follower" && v["leader"].is_string()
    });
    let meta = a.wait_for(&http, "/v1/meta", limit, |st, v| {
        st == 200 && v["nodes"].as_array().is_some_and(|n| n.len() == 3)
    });
    assert_eq!(meta["failover"], "on", "{meta}");
    assert_eq!(meta["follow"]["primary"], json!(seeds[0]), "{meta}");
    let roles: Vec<&str> = meta["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["observed"]["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["primary", "replica", "replica"], "{meta}");

    // A compute node's commit log, written with its own login while all this goes on.
    let table = format!("{DB}.commit_log_cnlog");
    m.set
        .primary()
        .sql(&format!(
            "CREATE TABLE {table} LIKE {DB}.commit_log_template_table"
        ))
        .expect("commit log table");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (seeds, table, stop) = (seeds.clone(), table.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(write_commit_log(seeds, table, stop))
        })
    };
    let sampler = {
        let urls = vec![a.url_for("/v1/leader"), b.url_for("/v1/leader")];
        let stop = stop.clone();
        std::thread::spawn(move || sample_leaders(urls, stop))
    };

    // Machines for the job, then the job itself, accepted by the follower.
    for ty in ["storage", "computer"] {
        let port = kunlun_tests::free_port_block(std::net::IpAddr::V4(MACHINE_IP), 41);
        let (st, v) = a.post(
            &http,
            "/v1/machines",
            &json!({
                "hostaddr": MACHINE_IP.to_string(), "machine_type": ty,
                "ssh_port": sshd.port(), "ssh_user": sshd.user(),
                "ssh_key_path": sshd.user_key().private.display().to_string(),
                "data_dirs": [data.display().to_string()],
                "port_range": format!("{}-{}", port, port + 40),
            }),
        );
        assert_eq!(st, 201, "{v}\n{}", a.log_tail());
    }
    let (st, v) = b.post(
        &http,
        "/v1/clusters",
        &json!({"name": "metaha", "ha_mode": "no_rep", "shards": 1, "nodes": 1, "comps": 1,
                "innodb_size_mb": 32, "max_connections": 100}),
    );
    assert_eq!(st, 202, "{v}");
    let job_id = v["job_id"].as_i64().expect("job_id");
    // Its installs are running (the plan is stored): now the metadata primary dies.
    a.wait_job(job_id, job_limit, |j| {
        j["memo"]["stage"] == "planned" || j["status"] != "ongoing" && j["status"] != "not_started"
    });
    let old = m.set.primary();
    old.kill9().expect("kill -9 the metadata primary");
    let killed = Instant::now();
    println!("metadata primary {} killed", seeds[0]);

    // The leader fails the shard over and records it on the new primary.
    let rec = a.wait_for(&http, "/v1/failovers?shard_id=0", limit, |st, v| {
        st == 200
            && v.as_array()
                .is_some_and(|r| r.iter().any(|r| r["outcome"] == "promoted"))
    });
    let rec = rec
        .as_array()
        .and_then(|r| r.iter().find(|r| r["outcome"] == "promoted"))
        .cloned()
        .expect("promoted record");
    println!(
        "metadata failover recorded {} ms after the kill; record total {} ms, phases {}",
        killed.elapsed().as_millis(),
        rec["total_ms"],
        rec["phases"]
    );
    assert_eq!(rec["cluster_id"], 0, "{rec}");
    assert_eq!(rec["old_primary"], 1, "{rec}");
    assert_eq!(rec["proven_lossless"], true, "{rec}");
    let new_id = rec["new_primary"].as_i64().expect("new primary id");
    let new_seed = seeds[usize::try_from(new_id - 1).expect("id")].clone();
    let new_node = m.at(&new_seed).expect("new primary node");

    // Both managers' stores follow it, and say so.
    for d in [&mut a, &mut b] {
        let v = d.wait_for(&http, "/v1/meta", limit, |st, v| {
            st == 200 && v["follow"]["primary"] == json!(new_seed)
        });
        let moved = v["follow"]["moves"].as_array().expect("moves");
        assert!(
            moved
                .iter()
                .any(|mv| mv["from"] == json!(seeds[0]) && mv["to"] == json!(new_seed)),
            "{}: {v}",
            d.name()
        );
        let used: Vec<&Value> = v["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter(|n| n["used_by_this_instance"] == true)
            .collect();
        assert_eq!(used.len(), 1, "{v}");
        assert_eq!(used[0]["id"], json!(new_id), "{v}");
        assert_eq!(used[0]["recorded_role"], "source", "{v}");
        assert_eq!(used[0]["observed"]["role"], "primary", "{v}");
    }
    let v = b.get(&http, "/v1/meta").1;
    println!("follower's view after the failover: {}", v["follow"]);

    // The job finishes.
    let job = a.wait_job(job_id, job_limit, |j| {
        matches!(j["status"].as_str(), Some("done" | "failed"))
    });
    assert_eq!(job["status"], "done", "{job}\n{}", a.log_tail());

    // Every acknowledged commit-log row is on the new primary.
    stop.store(true, Ordering::SeqCst);
    let log = writer.join().expect("writer");
    let samples = sampler.join().expect("sampler");
    let stored: std::collections::BTreeSet<u64> = new_node
        .rows(&format!("SELECT txn_id FROM {table}"))
        .expect("read the commit log")
        .into_iter()
        .map(|r| r[0].parse().expect("txn_id"))
        .collect();
    println!(
        "commit log: {} acknowledged, {} found stored on a retry, {} failed inserts, {} rows",
        log.acked.len(),
        log.stored_on_retry.len(),
        log.errors,
        stored.len()
    );
    let missing: Vec<&u64> = log.acked.iter().filter(|t| !stored.contains(t)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged commit-log rows lost: {missing:?}"
    );
    assert!(!log.acked.is_empty());

    // One leader at a time, and the lease row names one holder.
    let both = samples
        .iter()
        .filter(|s| s.iter().filter(|l| **l).count() > 1)
        .count();
    assert_eq!(
        both,
        0,
        "two managers led at once in {both} of {} samples",
        samples.len()
    );
    let lease = new_node
        .rows(&format!("SELECT holder, epoch FROM {DB}.kl_leader_lease"))
        .expect("lease");
    assert_eq!(lease.len(), 1, "{lease:?}");
    let la = a.get(&http, "/v1/leader").1;
    let lb = b.get(&http, "/v1/leader").1;
    assert_eq!(la["leader"], lb["leader"], "{la} {lb}");
    assert_eq!(la["leader"], json!(lease[0][0]), "{la} {lease:?}");
    println!(
        "leader after the failover: {} (epoch {})",
        lease[0][0], lease[0][1]
    );

    // meta_db_nodes names the new primary, on the new primary.
    let rows = new_node
        .rows(&format!(
            "SELECT id, member_state FROM {DB}.meta_db_nodes ORDER BY id"
        ))
        .expect("meta_db_nodes");
    for r in &rows {
        let want = if r[0] == new_id.to_string() {
            "source"
        } else {
            "replica"
        };
        assert_eq!(r[1], want, "{rows:?}");
    }
    // The metadata HA login never wrote a row: the store's login did (grants unchanged).
    assert!(
        !new_node
            .sql(&format!("SHOW GRANTS FOR '{HA_USER}'@'%'"))
            .expect("grants")
            .contains(DB),
        "the HA login has no data privilege"
    );

    // The old primary comes back writable (a plain restart): fenced, and rejoined as a replica,
    // unless the kill caught a write it had logged but no replica had received (a writer's
    // failed insert, never acknowledged): then it holds a transaction the new primary lacks and
    // is kept read-only for a rebuild, said in the leader's log. Nothing acknowledged is lost
    // either way (checked above).
    old.restart().expect("restart the old primary");
    let rejoined = wait_for("the old primary replicates from the new one", limit, || {
        let r = old.named_rows("SHOW SLAVE STATUS").ok()?;
        let r = r.first()?;
        (r.get("Master_Port").map(String::as_str) == Some(&new_node.port().to_string())
            && r.get("Slave_IO_Running").map(String::as_str) == Some("Yes")
            && r.get("Slave_SQL_Running").map(String::as_str) == Some("Yes"))
        .then_some(())
    });
    if let Err(e) = rejoined {
        let pos = |n: &MariaDb| {
            n.value("SELECT @@gtid_binlog_pos")
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let (old_pos, new_pos) = (pos(old), pos(new_node));
        let said = [&a, &b].iter().any(|d| {
            d.log_text()
                .contains("holds transactions the primary lacks")
        });
        assert!(
            said,
            "{e} (old primary at {old_pos}, new at {new_pos})\n{}",
            a.log_tail()
        );
        println!(
            "the old primary holds a transaction the new one lacks ({old_pos} vs {new_pos}): \
             kept read-only for a rebuild"
        );
    }
    assert_eq!(
        old.value("SELECT @@read_only").expect("ro").as_deref(),
        Some("1")
    );
    assert_eq!(m.writable().len(), 1, "exactly one writable metadata node");

    // The cluster is deleted by its own job (its servers stopped by the daemon).
    let cid = job["memo"]["cluster_id"]
        .as_i64()
        .or_else(|| {
            let (_, v) = a.get(&http, "/v1/clusters");
            v.as_array()?.iter().find(|c| c["name"] == "metaha")?["id"].as_i64()
        })
        .expect("cluster id");
    let r = http
        .delete(a.url_for(&format!("/v1/clusters/{cid}")))
        .send()
        .expect("DELETE cluster");
    assert_eq!(r.status().as_u16(), 202);
    let del: Value = r.json().expect("json");
    let del = a.wait_job(del["job_id"].as_i64().expect("job id"), job_limit, |j| {
        matches!(j["status"].as_str(), Some("done" | "failed"))
    });
    assert_eq!(del["status"], "done", "{del}");
    for d in [&mut a, &mut b] {
        let st = d.stop_with(Signal::SIGTERM);
        assert_eq!(st.code(), Some(0), "{}", d.log_tail());
    }
}

/// A `cluster-mgr` on the metadata shard `m` in `root/name` (probes every 0.5 s, 2 s connect
/// deadline, the harness's SSH keys), with `extra` cnf lines; not waited for.
fn spawn_daemon(
    m: &MetaShardSet,
    root: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> kunlun_tests::daemon::Daemon {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("daemon dir");
    let port = kunlun_tests::free_port([127, 0, 0, 1].into());
    let mut lines = m.cnf_lines();
    lines.extend([
        format!("brpc_http_port = {port}"),
        "check_shard_interval = 0.5".into(),
        "mysql_connect_timeout = 2".into(),
        "machine_check_interval = 0".into(),
        format!(
            "ssh_keys_dir = {}",
            kunlun_tests::harness::harness_root().display()
        ),
        "ssh_host_key_policy = accept-new".into(),
    ]);
    lines.extend(extra.iter().map(|l| l.to_string()));
    let cnf = dir.join("cluster_mgr.cnf");
    kunlun_tests::daemon::write_cnf(&cnf, &lines).expect("cnf");
    kunlun_tests::daemon::Daemon::command(&dir, port)
        .name(name)
        .config(&cnf)
        .term_on_drop()
        .spawn()
        .expect("spawn cluster-mgr")
}

/// The promoted record among `GET /v1/failovers?shard_id=0` of `v`.
fn promoted(v: &serde_json::Value) -> Option<serde_json::Value> {
    v.as_array()?
        .iter()
        .find(|r| r["outcome"] == "promoted")
        .cloned()
}

/// The leader dies together with the metadata primary (`kill -9` of both): nobody can renew
/// the lease, which lives on the dead primary. The surviving manager's stand-in monitor fails
/// the shard over once its store has found no writable primary for a whole lease (no leader
/// can act by then), its store follows the new primary, and it takes the lease there.
#[test]
fn when_the_leader_dies_with_the_metadata_primary_the_other_manager_fails_it_over() {
    use nix::sys::signal::Signal;
    use serde_json::json;

    let limit = Duration::from_secs(120);
    let m = MetaShardSet::start("kl_meta_standby").expect("metadata shard");
    let seeds = m.seeds();
    let wd = kunlun_tests::cli::workdir();
    let http = kunlun_tests::daemon::http(Duration::from_secs(30));
    let lease = ["leader_lease_secs = 3"];
    let mut a = spawn_daemon(&m, wd.path(), "a", &lease);
    a.wait_for(&http, "/v1/leader", limit, |st, v| {
        st == 200 && v["role"] == "leader"
    });
    m.register_nodes().expect("meta_db_nodes rows");
    let mut b = spawn_daemon(&m, wd.path(), "b", &lease);
    b.wait_for(&http, "/v1/leader", limit, |st, v| {
        st == 200 && v["role"] == "follower" && v["leader"].is_string()
    });
    b.wait_for(&http, "/v1/meta", limit, |st, v| {
        st == 200 && v["failover"] == "on" && v["nodes"].as_array().is_some_and(|n| n.len() == 3)
    });
    // B's stand-in has probed the primary (its semi-sync proof) a few times.
    std::thread::sleep(Duration::from_secs(2));

    a.stop_with(Signal::SIGKILL);
    m.set
        .primary()
        .kill9()
        .expect("kill -9 the metadata primary");
    let killed = Instant::now();

    let recs = b.wait_for(&http, "/v1/failovers?shard_id=0", limit, |st, v| {
        st == 200 && promoted(v).is_some()
    });
    let rec = promoted(&recs).expect("promoted record");
    println!(
        "stand-in failover recorded {} ms after the kills; record total {} ms",
        killed.elapsed().as_millis(),
        rec["total_ms"]
    );
    assert_eq!(
        (rec["cluster_id"].clone(), rec["old_primary"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(rec["proven_lossless"], true, "{rec}");
    let new_id = rec["new_primary"].as_i64().expect("new primary id");
    let new_seed = seeds[usize::try_from(new_id - 1).expect("id")].clone();
    let v = b.wait_for(&http, "/v1/meta", limit, |st, v| {
        st == 200 && v["follow"]["primary"] == json!(new_seed)
    });
    println!("stand-in's view: {}", v["follow"]);
    // B takes the lease on the new primary (A's ran out with it).
    let l = b.wait_for(&http, "/v1/leader", limit, |st, v| {
        st == 200 && v["role"] == "leader"
    });
    assert!(l["epoch"].as_i64().unwrap_or(0) >= 2, "{l}");
    let new_node = m.at(&new_seed).expect("new primary node");
    let rows = new_node
        .rows("SELECT id, member_state FROM kl_meta_standby.meta_db_nodes ORDER BY id")
        .expect("meta_db_nodes");
    for r in &rows {
        let want = if r[0] == new_id.to_string() {
            "source"
        } else {
            "replica"
        };
        assert_eq!(r[1], want, "{rows:?}");
    }
    assert_eq!(m.writable().len(), 1, "exactly one writable metadata node");
    let st = b.stop_with(Signal::SIGTERM);
    assert_eq!(st.code(), Some(0), "{}", b.log_tail());
}
