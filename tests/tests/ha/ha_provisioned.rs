//! Shard HA over a cluster created by provisioning (not the harness's `ReplicaSet`): a real
//! `rbr` cluster of 1 shard x 3 nodes + 1 compute node made by the `create_cluster` job
//! against a SQLite store and a private sshd on 127.0.0.9, the manager's HA monitor started
//! on it, a continuous write load, then `kill -9` of the primary's mariadbd. After the
//! failover: exactly one writable survivor and it is metadata's primary, every acknowledged
//! write on it, the other replica follows it, `node_map_master` and the compute node's catalog
//! name it, the record (with its `route` phase) is stored. The cluster is then deleted and
//! nothing of it is left.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_core::catalog::{desired_for_cluster, read_catalog, CatalogOptions};
use kunlun_core::ha::{FailoverRecord, Outcome};
use kunlun_core::jobs::accept_create_cluster;
use kunlun_core::jobs::accept_delete_cluster;
use kunlun_core::Term;
use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::{HaMode, JobStatus, MemberState, NodeStatus, ShardNode};
use kunlun_meta::store::repo::{meta, secrets};
use kunlun_tests::ha::{test_ha_config, Writer, LIMIT};
use kunlun_tests::world::{kill9, memo, pid_in, ProvisionWorld};
use mysql_async::prelude::Queryable;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

/// One string-valued row of `sql`, bounded.
async fn one(c: &mut mysql_async::Conn, sql: &str) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(40), c.query_first::<String, _>(sql))
        .await
        .expect("query within 40 s")
        .expect("query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_cluster_fails_over_on_kill9_and_its_compute_node_follows() {
    let w = ProvisionWorld::builder(IP).build().await;
    scenario(&w).await;
    w.term.shutdown(Duration::from_secs(5)).await;
}

fn primary_of(nodes: &[ShardNode]) -> &ShardNode {
    nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source)
        .expect("a primary")
}

/// Waits for the first failover record of `shard_id` with outcome `Promoted`.
async fn wait_promoted(mgr: &Term, shard_id: i64) -> FailoverRecord {
    let deadline = Instant::now() + LIMIT;
    loop {
        let recs = mgr
            .failovers_page(Some(shard_id), None, 1000)
            .await
            .expect("failovers");
        if let Some(r) = recs.iter().find(|r| r.outcome == Outcome::Promoted) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no promotion within {LIMIT:?}: records {recs:?}; status {:?}",
            mgr.ha_status().map(|s| s.events)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(Master_Port, Slave_IO_Running, Slave_SQL_Running)` of a replica.
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

async fn scenario(w: &ProvisionWorld) {
    let (store, runner, mgr) = (&w.store, &w.runner, &w.term);
    let req = CreateCluster {
        name: "hap1".into(),
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
    let job = accept_create_cluster(store, &req).await.expect("accepted");
    let job = w.run_job(job.id).await;
    assert_eq!(job.status, JobStatus::Done, "{}", memo(&job));
    eprintln!("create_cluster took {:?}", t0.elapsed());
    let cid = store.get_cluster_by_name("hap1").await.expect("cluster").id;
    let pw = store
        .read(async |tx| secrets::get(tx, cid).await)
        .await
        .expect("create_cluster stored the system passwords")
        .manager_pwd;
    let shard = store.list_shards(Some(cid)).await.expect("shards")[0].clone();
    let nodes = store.list_shard_nodes(Some(shard.id)).await.expect("nodes");
    assert_eq!(nodes.len(), 3);
    let old = primary_of(&nodes).clone();
    let pid_file = w
        .data
        .join(format!("kunlun/storage_{}/run/mysqld.pid", old.port));
    let old_pid = pid_in(&pid_file).expect("the primary's pid file");

    // The load's table and an unprivileged writer (a privileged one could write through
    // read_only and hide a fencing failure).
    let mut p = w.conn(old.port, &pw).await;
    p.query_drop(
        "CREATE DATABASE ha; CREATE TABLE ha.w (id BIGINT PRIMARY KEY) ENGINE=InnoDB; \
         CREATE USER app@'%' IDENTIFIED BY 'app'; GRANT SELECT, INSERT ON ha.* TO app@'%'",
    )
    .await
    .expect("load set-up on the primary");
    drop(p);

    let mut cfg = test_ha_config();
    cfg.ssh = Some(Arc::new(runner.provisioner.clone()));
    mgr.start_ha(cfg);
    // The monitor has probed every node a few times before the crash.
    let deadline = Instant::now() + LIMIT;
    loop {
        let rounds = mgr.ha_status().map(|s| s.stats.rounds).unwrap_or(0);
        if rounds >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the HA monitor never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writer = Writer::start(store.clone(), shard.id);
    writer
        .wait_more(50)
        .await
        .expect("writes reach the primary");

    kill9(old_pid);
    let killed = Instant::now();
    let rec = wait_promoted(mgr, shard.id).await;
    eprintln!(
        "failover recorded {:?} after kill -9: {rec:?}",
        killed.elapsed()
    );
    assert_eq!(rec.old_primary, old.id);
    assert!(rec.proven_lossless, "{rec:?}");
    assert!(rec.possible_loss.is_none(), "{rec:?}");
    let new_id = rec.new_primary.expect("a new primary");
    assert_ne!(new_id, old.id);
    writer
        .wait_more(30)
        .await
        .expect("writes resume on the new primary");
    let acked = writer.finish().await;

    // Metadata: the new primary is the source, the old one is kept out.
    let nodes = store.list_shard_nodes(Some(shard.id)).await.expect("nodes");
    let new = primary_of(&nodes).clone();
    assert_eq!(new.id, new_id, "metadata names the promoted node");
    let old_row = nodes.iter().find(|n| n.id == old.id).expect("old row");
    assert_eq!(old_row.status, NodeStatus::Inactive, "old primary kept out");
    let other = nodes
        .iter()
        .find(|n| n.id != old.id && n.id != new.id)
        .expect("the other replica")
        .clone();

    // Exactly one writable survivor, and it is metadata's primary.
    let mut c_new = w.conn(new.port, &pw).await;
    let mut c_other = w.conn(other.port, &pw).await;
    assert_eq!(
        one(&mut c_new, "SELECT @@read_only").await.as_deref(),
        Some("0")
    );
    assert_eq!(
        one(&mut c_other, "SELECT @@read_only").await.as_deref(),
        Some("1")
    );

    // Every acknowledged write is on the new primary.
    let want: BTreeSet<i64> = acked.iter().copied().collect();
    let have: BTreeSet<i64> = c_new
        .query::<i64, _>("SELECT id FROM ha.w")
        .await
        .expect("rows")
        .into_iter()
        .collect();
    let missing: Vec<_> = want.difference(&have).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged, missing e.g. {missing:?}",
        want.len()
    );

    // The other replica follows the new primary and catches up.
    let deadline = Instant::now() + LIMIT;
    loop {
        let st = slave_status(&mut c_other).await;
        if st.0 == new.port && st.1 == "Yes" && st.2 == "Yes" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {} replicates as {st:?}, want port {}",
            other.port,
            new.port
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pos = one(&mut c_new, "SELECT @@gtid_binlog_pos")
        .await
        .unwrap_or_default();
    assert_eq!(
        one(
            &mut c_other,
            &format!("SELECT CAST(MASTER_GTID_WAIT('{pos}', 30) AS CHAR)")
        )
        .await
        .as_deref(),
        Some("0"),
        "the other replica reaches {pos}"
    );
    let on_other: BTreeSet<i64> = c_other
        .query::<i64, _>("SELECT id FROM ha.w")
        .await
        .expect("rows")
        .into_iter()
        .collect();
    assert!(want.is_subset(&on_other), "the other replica has them too");

    // node_map_master: the other replica's master is the new primary; nothing names the old.
    let host = |n: &ShardNode| format!("{}_{}", n.hostaddr, n.port);
    let masters = store
        .read(async |tx| meta::list_node_masters(tx, Some(cid)).await)
        .await
        .expect("node_map_master");
    assert!(
        masters
            .iter()
            .any(|m| m.node_host == host(&other) && m.master_host == host(&new)),
        "{masters:?}"
    );
    assert!(
        masters.iter().all(|m| m.master_host != host(&old)),
        "{masters:?}"
    );
    assert!(
        masters.iter().all(|m| m.node_host != host(&new)),
        "{masters:?}"
    );

    // The record is stored with its route phase, which pushed the catalog.
    let stored = mgr
        .failovers_page(Some(shard.id), None, 1000)
        .await
        .expect("failovers");
    assert!(stored.iter().any(|r| r.id == rec.id), "{stored:?}");
    let route = rec
        .phases
        .iter()
        .find(|p| p.name == "route")
        .expect("a route phase");
    let note = route.note.clone().unwrap_or_default();
    assert!(
        note.starts_with("catalog pushed to 1/1"),
        "route phase: {note}"
    );

    // The compute node's catalog is metadata's, routing the shard to the new primary.
    let comp = store.list_comp_nodes(Some(cid)).await.expect("comps")[0].clone();
    let desired = desired_for_cluster(store, cid)
        .await
        .expect("desired")
        .1
        .for_comp(comp.id);
    let cat = read_catalog(store, &comp, &CatalogOptions::default())
        .await
        .expect("catalog");
    assert_eq!(cat, desired, "the compute node's catalog is metadata's");
    let srow = cat.shard(shard.id).expect("shard row");
    let master = cat
        .shard_nodes
        .iter()
        .find(|n| n.id == srow.master_node_id)
        .expect("the routed primary's row");
    assert_eq!(
        (master.hostaddr.as_str(), master.port),
        (new.hostaddr.as_str(), i32::from(new.port)),
        "the compute node routes to the new primary"
    );
    drop(c_new);
    drop(c_other);

    // Stop the monitor before the cluster goes, then delete it: nothing is left.
    mgr.shutdown(Duration::from_secs(5)).await;
    let del = accept_delete_cluster(store, cid).await.expect("accepted");
    let j = w.run_job(del.id).await;
    assert_eq!(j.status, JobStatus::Done, "{}", memo(&j));
    let gone = store.read(async |tx| secrets::get(tx, cid).await).await;
    assert!(gone.is_err(), "kl_cluster_secret row removed");
    let machines = store.list_machines().await.expect("machines");
    assert!(machines
        .iter()
        .all(|m| m.used_ports.is_empty() && m.installing_ports.is_empty()));
    assert!(!w.data.join("kunlun").exists(), "instance dirs removed");
}
