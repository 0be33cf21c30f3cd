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
use kunlun_meta::Store;
use kunlun_tests::ha::invariant::{self, Acked, Login};
use kunlun_tests::ha::{test_ha_config, Writer, LIMIT};
use kunlun_tests::world::{memo, ProvisionWorld};
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

fn node<'a>(nodes: &'a [ShardNode], id: i64) -> &'a ShardNode {
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
    writer.wait_more(30).await.expect("writes reach the primary");

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
    assert_eq!(st, (c.port, "Yes".into(), "Yes".into()), "b replicates from c");
    assert_eq!(one(&mut pb, "SELECT @@read_only").await, "1");
    assert_eq!(
        one(&mut pb, "SELECT CAST(COUNT(*) AS CHAR) FROM rb.t WHERE id = -1").await,
        "0",
        "the errant row is gone"
    );
    assert_eq!(checksum(&mut pb, "rb.t").await, checksum(&mut pc, "rb.t").await);
    assert_eq!(checksum(&mut pb, "ha.w").await, checksum(&mut pc, "ha.w").await);
    let want: BTreeSet<i64> = acked.iter().copied().collect();
    let on_b: BTreeSet<i64> = pb
        .query::<i64, _>("SELECT id FROM ha.w")
        .await
        .expect("rows")
        .into_iter()
        .collect();
    let missing: Vec<_> = want.difference(&on_b).take(10).collect();
    assert!(missing.is_empty(), "{} acknowledged, b misses {missing:?}", want.len());
    assert!(aside_left(&w, b.port).is_empty(), "{:?}", aside_left(&w, b.port));
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
    assert_eq!(checksum(&mut pa, "rb.t").await, checksum(&mut pc, "rb.t").await);
    assert_eq!(slave_status(&mut pa).await, (c.port, "Yes".into(), "Yes".into()));
    assert!(aside_left(&w, a.port).is_empty());
    let rows = store.list_shard_nodes(Some(shard)).await.expect("nodes");
    assert_eq!(node(&rows, a.id).status, NodeStatus::Active);
    invariant::check(&store, shard, &login, &acked_all)
        .await
        .expect("the invariant holds after the second rebuild");

    assert!(w.stop_runner(Duration::from_secs(30)).await);
    w.term.shutdown(Duration::from_secs(5)).await;
}

/// Silences an unused-import warning while the daemon scenario is written.
#[allow(dead_code)]
fn _unused(_: Value, _: IpAddr) -> Ipv4Addr {
    DAEMON_IP
}
