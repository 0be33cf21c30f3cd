//! Rebuilding a replica in place (`rebuild_node`) on real servers.
//!
//! On 127.0.0.91 (a [`ProvisionWorld`], HA, the job runner and the automatic rebuild running):
//! an `rbr` cluster of 1 shard x 3 nodes; a replica gets an errant transaction, a switchover
//! keeps it out for rebuild (HA lists it), and with writes going on through the primary the
//! automatic rebuild brings it back: `active`, replicating from the primary, read-only, the
//! primary's data (`CHECKSUM TABLE` equal, the errant row gone), every acknowledged write there,
//! the old data removed, the HA invariant holding. Then a rebuild on request by the dump path
//! from a chosen source, and the refusals (the primary, an unknown node, an unknown source, a
//! cluster another job is changing).
//!
//! On 127.0.0.92 (the real daemon and `kunlunctl`): `kunlunctl node rebuild --wait`, the REST
//! refusals (the primary 409, an unknown node 404, an unknown field 400, not JSON 415), the
//! Emit `rebuild_node` with `get_status` (done, and its refusals with the original's codes), and
//! the daemon killed mid-copy: after the restart the job ends `rolled_back` with the old data
//! put back and the replica replicating again.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use kunlun_core::accounts::MANAGER_USER;
use kunlun_core::auto_rebuild::AutoRebuildConfig;
use kunlun_core::jobs::accept_create_cluster;
use kunlun_meta::api::{CreateCluster, JobQuery, RebuildMethod, RebuildNode};
use kunlun_meta::model::{HaMode, Job, JobStatus, MemberState, NodeStatus, ShardNode};
use kunlun_meta::store::repo::secrets;
use kunlun_meta::{Store, StoreConfig};
use kunlun_tests::cli::{ctl, workdir};
use kunlun_tests::daemon::Daemon;
use kunlun_tests::emit::Emit;
use kunlun_tests::ha::invariant::{self, Acked, Login};
use kunlun_tests::ha::{test_ha_config, Writer, LIMIT};
use kunlun_tests::world::{chmod_755, kill_leftovers, memo, ProvisionWorld};
use kunlun_tests::{free_port_block, Sshd};
use mysql_async::prelude::Queryable;
use serde_json::Value;

const WORLD_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 91);
const DAEMON_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 92);
/// Longest a rebuild of these small instances may take here.
const REBUILD_LIMIT: Duration = Duration::from_secs(300);

/// One string of `sql`, bounded.
async fn one(c: &mut mysql_async::Conn, sql: &str) -> String {
    tokio::time::timeout(Duration::from_secs(30), c.query_first::<String, _>(sql))
        .await
        .unwrap_or_else(|_| panic!("`{sql}` within 30 s"))
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"))
        .unwrap_or_default()
}

/// `CHECKSUM TABLE` of `table` on `c`.
async fn checksum(c: &mut mysql_async::Conn, table: &str) -> i64 {
    let row: Option<(String, Option<i64>)> = tokio::time::timeout(
        Duration::from_secs(30),
        c.query_first(format!("CHECKSUM TABLE {table}")),
    )
    .await
    .expect("checksum within 30 s")
    .expect("CHECKSUM TABLE");
    row.and_then(|(_, s)| s).expect("a checksum")
}

/// `(Master_Port, Slave_IO_Running, Slave_SQL_Running)`.
async fn slave_status(c: &mut mysql_async::Conn) -> (u16, String, String) {
    let row: Option<mysql_async::Row> =
        tokio::time::timeout(Duration::from_secs(10), c.query_first("SHOW SLAVE STATUS"))
            .await
            .expect("within 10 s")
            .expect("SHOW SLAVE STATUS");
    let Some(r) = row else {
        return (0, String::new(), String::new());
    };
    let get = |name: &str| -> String {
        r.columns_ref()
            .iter()
            .position(|x| x.name_str() == name)
            .and_then(|i| r.as_ref(i))
            .map(|v| match v {
                mysql_async::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default()
    };
    (
        get("Master_Port").parse().unwrap_or(0),
        get("Slave_IO_Running"),
        get("Slave_SQL_Running"),
    )
}

/// Waits until `replica` holds everything `primary` logged so far.
async fn caught_up(primary: &mut mysql_async::Conn, replica: &mut mysql_async::Conn) {
    let pos = one(primary, "SELECT @@gtid_binlog_pos").await;
    let r = one(
        replica,
        &format!("SELECT CAST(MASTER_GTID_WAIT('{pos}', 60) AS CHAR)"),
    )
    .await;
    assert_eq!(r, "0", "the replica reaches {pos}");
}

/// Waits (bounded) for job `id` to end.
async fn wait_job(store: &Store, id: i64, limit: Duration) -> Job {
    let deadline = Instant::now() + limit;
    loop {
        let j = store.get_job(id).await.expect("job");
        if j.status.is_final() {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {:?} after {limit:?}: {}",
            j.status,
            memo(&j)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn node(nodes: &[ShardNode], id: i64) -> &ShardNode {
    nodes.iter().find(|n| n.id == id).expect("the node")
}

/// Names under the instance dir of `port` that a rebuild set aside.
fn aside_left(w: &ProvisionWorld, port: u16) -> Vec<String> {
    let dir = w.data.join(format!("kunlun/storage_{port}"));
    std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".rebuild-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_errant_replica_is_rebuilt_on_its_own_and_a_replica_on_request() {
    let mut w = ProvisionWorld::builder(WORLD_IP).build().await;
    let store = w.store.clone();
    let req = CreateCluster {
        name: "rb1".into(),
        nick_name: None,
        ha_mode: HaMode::Rbr,
        shards: 1,
        nodes: 3,
        comps: 1,
        innodb_size_mb: Some(32),
        max_connections: Some(100),
        storage_hosts: vec![],
        computer_hosts: vec![],
    };
    let t0 = Instant::now();
    let job = accept_create_cluster(&store, &req).await.expect("accepted");
    let job = w.run_job(job.id).await;
    assert_eq!(job.status, JobStatus::Done, "{}", memo(&job));
    eprintln!("create_cluster took {:?}", t0.elapsed());
    let cid = store.get_cluster_by_name("rb1").await.expect("cluster").id;
    let pw = store
        .read(async |tx| secrets::get(tx, cid).await)
        .await
        .expect("secrets")
        .manager_pwd;
    let login = Login {
        user: MANAGER_USER.into(),
        password: pw.clone(),
    };
    let shard = store.list_shards(Some(cid)).await.expect("shards")[0].id;
    let nodes = store.list_shard_nodes(Some(shard)).await.expect("nodes");
    let a = nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source)
        .expect("a primary")
        .clone();
    let mut replicas: Vec<ShardNode> = nodes.iter().filter(|n| n.id != a.id).cloned().collect();
    replicas.sort_by_key(|n| n.id);
    let (b, c) = (replicas[0].clone(), replicas[1].clone());

    // The load's table, a table with some bulk for the checksum, an unprivileged writer.
    let mut pa = w.conn(a.port, &pw).await;
    pa.query_drop(
        "CREATE DATABASE ha; CREATE TABLE ha.w (id BIGINT PRIMARY KEY) ENGINE=InnoDB; \
         CREATE USER app@'%' IDENTIFIED BY 'app'; GRANT SELECT, INSERT ON ha.* TO app@'%'; \
         CREATE DATABASE rb; CREATE TABLE rb.t (id BIGINT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB; \
         INSERT INTO rb.t SELECT seq, REPEAT(MD5(seq), 6) FROM rb.seq_1_to_20000",
    )
    .await
    .expect("set-up on the primary");
    let mut pb = w.conn(b.port, &pw).await;
    caught_up(&mut pa, &mut pb).await;

    w.start_runner();
    w.term.start_ha(test_ha_config());
    w.term.start_auto_rebuild(AutoRebuildConfig {
        interval: Duration::from_millis(300),
        backoff_initial: Duration::from_secs(2),
        backoff_max: Duration::from_secs(10),
    });
    let deadline = Instant::now() + LIMIT;
    while w.term.ha_status().map(|s| s.stats.rounds).unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "the HA monitor never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writer = Writer::start(store.clone(), shard);
    writer
        .wait_more(30)
        .await
        .expect("writes reach the primary");

    // An errant transaction on replica b (logged under its own server id), then a switchover
    // to c: b is kept out for rebuild.
    pb.query_drop("INSERT INTO rb.t VALUES (-1, 'errant')")
        .await
        .expect("the errant write");
    let rec = w
        .term
        .switchover(shard, Some(c.id))
        .await
        .expect("switchover");
    assert_eq!(rec.new_primary, Some(c.id), "{rec:?}");
    assert!(
        rec.errant_followers.iter().any(|e| e.node_id == b.id),
        "b is errant: {rec:?}"
    );
    let t_out = Instant::now();
    writer.wait_more(30).await.expect("writes go on through c");

    // The automatic rebuild starts a job for b and brings it back.
    let q = JobQuery {
        status: None,
        job_type: Some("rebuild_node".into()),
        limit: Some(10),
        after: None,
    };
    let deadline = Instant::now() + REBUILD_LIMIT;
    let auto = loop {
        let jobs = store.list_jobs(&q).await.expect("jobs");
        if let Some(j) = jobs.into_iter().find(|j| j.status.is_final()) {
            break j;
        }
        assert!(Instant::now() < deadline, "no automatic rebuild ended");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!(
        "b kept out -> rebuilt automatically in {:?}: {}",
        t_out.elapsed(),
        memo(&auto)
    );
    assert_eq!(auto.status, JobStatus::Done, "{}", memo(&auto));
    let info = auto.job_info.clone().unwrap_or_default();
    assert_eq!(info["node_ids"], serde_json::json!([b.id]), "{info}");
    assert_eq!(info["auto"], true);
    let m = auto.memo.clone().unwrap_or_default();
    assert_eq!(m["stage"], "done", "{m}");
    assert_eq!(m["nodes"][0]["phase"], "done", "{m}");
    assert_eq!(m["nodes"][0]["method"], "backup", "{m}");
    assert_ne!(m["nodes"][0]["source_id"], b.id, "{m}");
    writer.wait_more(20).await.expect("writes go on");
    let acked = writer.finish().await;

    // b: active, following c, read-only, with c's data and without its errant row.
    let rows = store.list_shard_nodes(Some(shard)).await.expect("nodes");
    assert_eq!(node(&rows, b.id).status, NodeStatus::Active);
    assert_eq!(node(&rows, b.id).member_state, MemberState::Replica);
    let mut pc = w.conn(c.port, &pw).await;
    let mut pb = w.conn(b.port, &pw).await;
    caught_up(&mut pc, &mut pb).await;
    let st = slave_status(&mut pb).await;
    assert_eq!(
        st,
        (c.port, "Yes".into(), "Yes".into()),
        "b replicates from c"
    );
    assert_eq!(one(&mut pb, "SELECT @@read_only").await, "1");
    assert_eq!(
        one(
            &mut pb,
            "SELECT CAST(COUNT(*) AS CHAR) FROM rb.t WHERE id = -1"
        )
        .await,
        "0",
        "the errant row is gone"
    );
    assert_eq!(
        checksum(&mut pb, "rb.t").await,
        checksum(&mut pc, "rb.t").await
    );
    assert_eq!(
        checksum(&mut pb, "ha.w").await,
        checksum(&mut pc, "ha.w").await
    );
    let want: BTreeSet<i64> = acked.iter().copied().collect();
    let on_b: BTreeSet<i64> = pb
        .query::<i64, _>("SELECT id FROM ha.w")
        .await
        .expect("rows")
        .into_iter()
        .collect();
    let missing: Vec<_> = want.difference(&on_b).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged, b misses {missing:?}",
        want.len()
    );
    assert!(
        aside_left(&w, b.port).is_empty(),
        "{:?}",
        aside_left(&w, b.port)
    );
    // HA took it back: no longer listed as errant; the invariant holds on the shard.
    let deadline = Instant::now() + LIMIT;
    while w
        .term
        .ha_status()
        .map(|s| s.errant_followers.iter().any(|e| e.node_id == b.id))
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "b still listed as errant");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acked_all = [Acked {
        writer: "app".into(),
        table: "ha.w".into(),
        ids: acked.clone(),
    }];
    let report = invariant::check(&store, shard, &login, &acked_all)
        .await
        .expect("the invariant holds after the rebuild");
    eprintln!("{report}");

    // Refusals, nothing written: the primary, an unknown node, an unknown source.
    let mgr = &w.mgr;
    let ip = WORLD_IP.to_string();
    let e = mgr
        .rebuild_instance(&ip, c.port, &RebuildNode::default())
        .await
        .expect_err("the primary is refused");
    assert!(matches!(e, kunlun_core::Error::Conflict(_)), "{e}");
    assert!(e.to_string().contains("primary"), "{e}");
    let e = mgr
        .rebuild_instance(&ip, 1, &RebuildNode::default())
        .await
        .expect_err("an unknown node");
    assert!(matches!(e, kunlun_core::Error::NotFound { .. }), "{e}");
    let bad_source = RebuildNode {
        source: Some(format!("{ip}:1")),
        method: None,
    };
    let e = mgr
        .rebuild_instance(&ip, a.port, &bad_source)
        .await
        .expect_err("an unknown source");
    assert!(matches!(e, kunlun_core::Error::Invalid(_)), "{e}");

    // On request, by the dump path, from the primary; a second request meanwhile is refused.
    let body = RebuildNode {
        source: Some(format!("{ip}:{}", c.port)),
        method: Some(RebuildMethod::Dump),
    };
    let t1 = Instant::now();
    let accepted = mgr
        .rebuild_instance(&ip, a.port, &body)
        .await
        .expect("accepted");
    w.wake();
    let e = mgr
        .rebuild_instance(&ip, b.port, &RebuildNode::default())
        .await
        .expect_err("the cluster is busy");
    assert!(matches!(e, kunlun_core::Error::Conflict(_)), "{e}");
    let j = wait_job(&store, accepted.job_id, REBUILD_LIMIT).await;
    eprintln!("rebuild of a by dump took {:?}: {}", t1.elapsed(), memo(&j));
    assert_eq!(j.status, JobStatus::Done, "{}", memo(&j));
    let m = j.memo.clone().unwrap_or_default();
    assert_eq!(m["nodes"][0]["method"], "dump", "{m}");
    assert_eq!(m["nodes"][0]["source_id"], c.id, "{m}");
    let mut pa = w.conn(a.port, &pw).await;
    pc.query_drop("INSERT INTO rb.t VALUES (-2, 'after')")
        .await
        .expect("a write after");
    caught_up(&mut pc, &mut pa).await;
    assert_eq!(
        checksum(&mut pa, "rb.t").await,
        checksum(&mut pc, "rb.t").await
    );
    assert_eq!(
        slave_status(&mut pa).await,
        (c.port, "Yes".into(), "Yes".into())
    );
    assert!(aside_left(&w, a.port).is_empty());
    let rows = store.list_shard_nodes(Some(shard)).await.expect("nodes");
    assert_eq!(node(&rows, a.id).status, NodeStatus::Active);
    invariant::check(&store, shard, &login, &acked_all)
        .await
        .expect("the invariant holds after the second rebuild");

    assert!(w.stop_runner(Duration::from_secs(30)).await);
    w.term.shutdown(Duration::from_secs(5)).await;
}

/// A blocking HTTP client for the daemon.
fn http() -> reqwest::blocking::Client {
    kunlun_tests::daemon::http(Duration::from_secs(30))
}

/// POST `body` (raw, with `content_type`) to `url`: status and JSON.
fn post_raw(url: &str, content_type: &str, body: &str) -> (u16, Value) {
    let r = http()
        .post(url)
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .expect("request");
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// The memo of job `id` once `pred` holds on the job (bounded).
fn job_when(d: &Daemon, id: i64, pred: impl Fn(&Value) -> bool) -> Value {
    d.wait_job(id, REBUILD_LIMIT, pred)
}

/// Kills the servers under its dir when dropped (see [`kill_leftovers`]).
struct Leftovers(std::path::PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        kill_leftovers(&self.0);
    }
}

fn ended(j: &Value) -> bool {
    j["status"] == "done" || j["status"] == "failed"
}

#[test]
fn a_replica_is_rebuilt_over_the_cli_rest_and_emit_and_a_killed_daemon_puts_its_data_back() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sshd = Sshd::start_on(DAEMON_IP).expect("sshd on 127.0.0.92");
    let wd = workdir();
    chmod_755(wd.path());
    let data = wd.path().join("instances");
    std::fs::create_dir(&data).expect("data dir");
    chmod_755(&data);
    // Every server the daemon installed is stopped (by its pid file) however the test ends,
    // before the work dir goes.
    let _servers = Leftovers(data.clone());
    let sqlite = wd.path().join("meta.db");
    let mut daemon = Daemon::start(wd.path(), &sqlite).expect("daemon");
    let base = daemon.url();
    let t0 = Instant::now();
    let mark = |what: &str| eprintln!("{:>6.1} s  {what}", t0.elapsed().as_secs_f64());
    for ty in ["storage", "computer"] {
        let port = free_port_block(IpAddr::V4(DAEMON_IP), 41);
        let (st, v) = daemon.post(
            &http(),
            "/v1/machines",
            &serde_json::json!({
                "hostaddr": DAEMON_IP.to_string(), "machine_type": ty,
                "ssh_port": sshd.port(), "ssh_user": sshd.user(),
                "ssh_key_path": sshd.user_key().private.display().to_string(),
                "data_dirs": [data.display().to_string()],
                "port_range": format!("{}-{}", port, port + 40),
            }),
        );
        assert_eq!(st, 201, "{v}");
    }
    let out = ctl(
        &base,
        &[
            "cluster",
            "create",
            "rb2",
            "--shards",
            "1",
            "--nodes",
            "2",
            "--comps",
            "1",
            "--innodb-size-mb",
            "32",
            "--max-connections",
            "100",
            "--wait",
            "--wait-timeout",
            "300",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    let cid = ctl(&base, &["--json", "cluster", "list"]).ok().json()[0]["id"]
        .as_i64()
        .expect("cluster id");
    let detail = ctl(&base, &["--json", "cluster", "show", &cid.to_string()])
        .ok()
        .json();
    let shard = detail["shards"][0]["shard"]["id"].as_i64().expect("shard");
    let nodes = detail["shards"][0]["nodes"]
        .as_array()
        .expect("nodes")
        .clone();
    let port_of = |state: &str| -> u16 {
        nodes
            .iter()
            .find(|n| n["member_state"] == state)
            .and_then(|n| n["port"].as_u64())
            .unwrap_or_else(|| panic!("a {state}")) as u16
    };
    let (primary, replica) = (port_of("source"), port_of("replica"));
    let ip = DAEMON_IP.to_string();
    let addr = |port: u16| format!("{ip}:{port}");
    let pw = rt.block_on(async {
        let store = Store::open(&StoreConfig::sqlite(&sqlite))
            .await
            .expect("the daemon's store");
        store
            .read(async |tx| secrets::get(tx, cid).await)
            .await
            .expect("secrets")
            .manager_pwd
    });
    let conn = |port: u16| {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(DAEMON_IP.to_string())
            .tcp_port(port)
            .user(Some(MANAGER_USER))
            .pass(Some(pw.clone()))
            .prefer_socket(false);
        async move {
            tokio::time::timeout(Duration::from_secs(10), mysql_async::Conn::new(opts))
                .await
                .expect("connect within 10 s")
                .expect("connect")
        }
    };
    // Data, and the replica holds it; `same` checks the replica has exactly the primary's.
    rt.block_on(async {
        let mut p = conn(primary).await;
        p.query_drop(
            "CREATE DATABASE rb; CREATE TABLE rb.t (id BIGINT PRIMARY KEY, v VARCHAR(200)); \
             INSERT INTO rb.t SELECT seq, REPEAT(MD5(seq), 6) FROM rb.seq_1_to_20000",
        )
        .await
        .expect("set-up");
    });
    let writes = std::cell::Cell::new(0i64);
    let same = |what: &str| {
        writes.set(writes.get() + 1);
        let n = writes.get();
        rt.block_on(async {
            let (mut p, mut r) = (conn(primary).await, conn(replica).await);
            p.query_drop(format!("INSERT INTO rb.t VALUES (-{n}, 'x')"))
                .await
                .expect("a write on the primary");
            caught_up(&mut p, &mut r).await;
            assert_eq!(
                checksum(&mut r, "rb.t").await,
                checksum(&mut p, "rb.t").await,
                "{what}: the replica has the primary's data"
            );
            let st = slave_status(&mut r).await;
            assert_eq!(st, (primary, "Yes".into(), "Yes".into()), "{what}");
            // Read-only: a rebuild sets it; a replica that was only restarted is fenced by
            // HA's next round (a writable non-primary is made read-only).
            let deadline = Instant::now() + LIMIT;
            while one(&mut r, "SELECT @@read_only").await != "1" {
                assert!(
                    Instant::now() < deadline,
                    "{what}: the replica stays writable"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    same("before");
    mark("cluster created");

    // kunlunctl node rebuild --wait: done, and the replica is whole again.
    let out = ctl(
        &base,
        &[
            "--json",
            "node",
            "rebuild",
            &addr(replica),
            "--wait",
            "--wait-timeout",
            "300",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    let job = out.json();
    assert_eq!(job["job_type"], "rebuild_node", "{job}");
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["memo"]["nodes"][0]["phase"], "done", "{job}");
    assert_eq!(job["memo"]["nodes"][0]["source"], addr(primary), "{job}");
    same("after the CLI rebuild");
    mark("rebuilt by the CLI");

    // REST refusals: nothing is accepted.
    let url = |port: u16| format!("{base}/v1/instances/{}/rebuild", addr(port));
    let (st, v) = post_raw(&url(primary), "application/json", "{}");
    assert_eq!((st, v["code"].as_str()), (409, Some("conflict")), "{v}");
    let (st, v) = post_raw(&url(1), "application/json", "{}");
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")), "{v}");
    let (st, v) = post_raw(&url(replica), "application/json", r#"{"sourc": "x:1"}"#);
    assert_eq!(st, 400, "an unknown field: {v}");
    let (st, v) = post_raw(
        &url(replica),
        "application/json",
        r#"{"source": "10.9.9.9:1"}"#,
    );
    assert_eq!(st, 400, "a source outside the shard: {v}");
    let (st, v) = post_raw(&url(replica), "text/plain", "{}");
    assert_eq!(st, 415, "{v}");
    let jobs = daemon.get(&http(), "/v1/jobs?job_type=rebuild_node").1;
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(1),
        "only the CLI's: {jobs}"
    );

    // Emit: refusals with the original's codes (as the original, reported by get_status).
    let emit = Emit::new(&base);
    let rb = |port: u16, extra: Value| {
        let mut n = serde_json::json!({"hostaddr": ip, "port": port.to_string(),
            "need_backup": "0", "hdfs_host": "", "pv_limit": "100"});
        if let (Some(n), Value::Object(e)) = (n.as_object_mut(), extra) {
            n.extend(e);
        }
        n
    };
    let paras = |nodes: Value, from_master: &str| {
        serde_json::json!({"cluster_id": cid.to_string(), "shard_id": shard.to_string(),
            "rb_nodes": nodes, "allow_pull_from_master": from_master,
            "allow_replica_delay": "30"})
    };
    let lim = Duration::from_secs(60);
    let (code, info) = emit.run_failed(
        "rebuild_node",
        paras(serde_json::json!([rb(primary, Value::Null)]), "1"),
        lim,
    );
    assert_eq!(
        code, "70041",
        "the primary is not a replica of the shard: {info}"
    );
    let (code, _) = emit.run_failed("rebuild_node", paras(serde_json::json!([]), "1"), lim);
    assert_eq!(code, "70036");
    let need = serde_json::json!({"need_backup": "1"});
    let mut p = paras(serde_json::json!([rb(replica, need)]), "1");
    p["rb_nodes"][0]
        .as_object_mut()
        .expect("node")
        .remove("hdfs_host");
    let (code, _) = emit.run_failed("rebuild_node", p, lim);
    assert_eq!(code, "70039");
    let need = serde_json::json!({"need_backup": "1", "hdfs_host": "10.0.0.1:9000"});
    let (code, info) = emit.run_failed(
        "rebuild_node",
        paras(serde_json::json!([rb(replica, need)]), "1"),
        lim,
    );
    assert_eq!(code, "70005", "{info}");
    assert!(info.contains("HDFS"), "{info}");
    // The only other node is the primary, which the original does not pull from by default.
    let (code, info) = emit.run_failed(
        "rebuild_node",
        paras(serde_json::json!([rb(replica, Value::Null)]), "0"),
        lim,
    );
    assert_eq!(code, "70042", "no source: {info}");
    same("after the refusals");
    mark("refusals");

    // Emit rebuild_node from the primary: accepted, visible through get_status until done.
    let id = emit.accept(
        "rebuild_node",
        paras(serde_json::json!([rb(replica, Value::Null)]), "1"),
    );
    let (a, seen) = emit.wait(&id, REBUILD_LIMIT);
    eprintln!("emit rebuild_node went {seen:?}: {}", a.text);
    assert_eq!(
        (a.s("status"), a.s("error_code")),
        ("done", "0"),
        "{}",
        a.text
    );
    let key = format!("{ip}_{replica}");
    assert_eq!(
        a.body["attachment"]["rbnode_state"],
        serde_json::json!([{ key.clone(): "done" }]),
        "{}",
        a.text
    );
    assert_eq!(a.body["attachment"]["shard_id"], shard.to_string());
    same("after the Emit rebuild");
    mark("rebuilt by Emit");

    // The daemon killed mid-copy (a copy slowed to 1 MB/s): after the restart the job puts the
    // old data back, the replica runs and replicates again with all its data.
    let slow = serde_json::json!({"pv_limit": "1"});
    let id = emit.accept(
        "rebuild_node",
        paras(serde_json::json!([rb(replica, slow)]), "1"),
    );
    let id: i64 = id.parse().expect("job id");
    let before = job_when(&daemon, id, |j| {
        ended(j)
            || j["memo"]["steps"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["status"] == "running"
                        && s["name"].as_str().is_some_and(|n| n.starts_with("copy "))
                })
            })
    });
    assert_eq!(
        before["status"], "ongoing",
        "still copying when killed: {before}"
    );
    let st = emit.status(&id.to_string());
    assert_eq!(st.s("status"), "ongoing", "{}", st.text);
    assert_eq!(
        st.body["attachment"]["rbnode_state"],
        serde_json::json!([{ key.clone(): "ongoing" }]),
        "{}",
        st.text
    );
    daemon.kill9();
    let daemon = Daemon::start(wd.path(), &sqlite).expect("the daemon again");
    let job = job_when(&daemon, id, ended);
    eprintln!("killed mid-copy, after the restart: {job}");
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["memo"]["stage"], "rolled_back", "{job}");
    assert_eq!(job["memo"]["nodes"][0]["phase"], "put_back", "{job}");
    assert!(
        job["memo"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("restarted") && e.contains("put back")),
        "{job}"
    );
    let emit = Emit::new(&daemon.url());
    let st = emit.status(&id.to_string());
    assert_eq!(
        (st.s("status"), st.s("error_code")),
        ("failed", "70047"),
        "{}",
        st.text
    );
    assert_eq!(
        st.body["attachment"]["rbnode_state"],
        serde_json::json!([{ key: "failed" }]),
        "{}",
        st.text
    );
    let left: Vec<String> = std::fs::read_dir(data.join(format!("kunlun/storage_{replica}")))
        .expect("instance dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".rebuild-"))
        .collect();
    assert!(left.is_empty(), "everything set aside came back: {left:?}");
    let row = daemon.get(&http(), &format!("/v1/shards/{shard}/nodes")).1;
    let status = row
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["port"] == replica))
        .map(|n| n["status"].clone());
    assert_eq!(status, Some(Value::from("active")), "{row}");
    // Its replication threads stayed stopped (skip-slave-start): HA's upkeep starts them.
    let deadline = Instant::now() + LIMIT;
    loop {
        let st = rt.block_on(async { slave_status(&mut conn(replica).await).await });
        if st == (primary, "Yes".into(), "Yes".into()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica replicates again: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    same("after the put-back");
    mark("put back after the daemon's restart");
    let mut d = daemon;
    assert!(d.stop(), "the daemon stops on SIGTERM");
}
