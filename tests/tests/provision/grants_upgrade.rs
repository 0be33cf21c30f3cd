//! Clusters installed before least privilege, on real MariaDB servers (a primary and a
//! read-only replica) and a SQLite store: the catalog sync's grants check brings `pgx` and
//! `clustmgr` from `ALL PRIVILEGES … WITH GRANT OPTION` to their roles without writing a
//! GTID, a second check changes nothing, and `pgx` is then stopped by `read_only`. Also: the
//! base dirs recorded at install are the ones removals use, and a machine update that would
//! orphan instances is refused with nothing stored.

use std::collections::HashSet;

use kunlun_core::catalog::{CatalogSync, CatalogSyncConfig};
use kunlun_core::jobs::common::apply_recorded_dirs;
use kunlun_core::jobs::grants::fix_cluster_grants;
use kunlun_core::jobs::plan::plan_from_rows;
use kunlun_core::{ClusterManager, CoreConfig, Error};
use kunlun_meta::api::{RegisterMachine, UpdateMachine};
use kunlun_meta::model::{MachineType, NewCompNode, NodeStatus};
use kunlun_meta::store::repo::dirs::{self, NodeKind};
use kunlun_meta::store::repo::{self};
use kunlun_meta::{Store, StoreConfig};
use kunlun_tests::rows::insert_cluster;
use kunlun_tests::{MariaDb, ReplicaSet};
use mysql_async::prelude::Queryable;

const MGR_PWD: &str = "mgr-old-pw";
const PGX_PWD: &str = "pgx-old-pw";

/// The users as clusters were created before: `clustmgr` and `pgx` with everything.
fn old_style_users(db: &MariaDb) {
    db.sql(&format!(
        "SET SESSION sql_log_bin = 0;
         CREATE USER IF NOT EXISTS 'clustmgr'@'%' IDENTIFIED BY '{MGR_PWD}';
         GRANT ALL PRIVILEGES ON *.* TO 'clustmgr'@'%' WITH GRANT OPTION;
         CREATE USER IF NOT EXISTS 'pgx'@'%' IDENTIFIED BY '{PGX_PWD}';
         GRANT ALL PRIVILEGES ON *.* TO 'pgx'@'%' WITH GRANT OPTION;
         CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'r';
         GRANT REPLICATION SLAVE, REPLICATION CLIENT, SLAVE MONITOR ON *.* TO 'repl'@'%';"
    ))
    .expect("old-style users");
}

fn grants(db: &MariaDb, user: &str) -> String {
    db.sql(&format!("SHOW GRANTS FOR '{user}'@'%'"))
        .expect("show grants")
}

async fn store(dir: &std::path::Path) -> Store {
    Store::open(&StoreConfig::sqlite(dir.join("meta.db")))
        .await
        .expect("store")
}

/// A cluster row with one shard holding `ports` (first the primary) on `host`.
async fn cluster_with_nodes(store: &Store, host: &str, ports: &[u16]) -> (i64, Vec<i64>) {
    let shards = [ports.iter().map(|p| (host.to_string(), *p)).collect()];
    let (c, mut out) = store
        .tx(async |tx| {
            insert_cluster(
                tx,
                "old_c",
                &shards,
                |_| "shard1".into(),
                ("clustmgr", MGR_PWD),
            )
            .await
        })
        .await
        .expect("rows");
    (c.id, out.remove(0).1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_privileges_cluster_is_brought_to_least_privilege_without_a_gtid() {
    let set = tokio::task::spawn_blocking(|| ReplicaSet::start(1))
        .await
        .expect("join")
        .expect("primary and replica");
    for db in set.nodes() {
        old_style_users(db);
    }
    let (primary, replica) = (set.primary(), &set.replicas()[0]);
    replica
        .sql("SET GLOBAL read_only = ON")
        .expect("read-only replica");
    let gtids: Vec<String> = set
        .nodes()
        .map(|d| {
            d.value("SELECT @@gtid_binlog_pos")
                .ok()
                .flatten()
                .unwrap_or_default()
        })
        .collect();
    assert!(grants(primary, "pgx").contains("ALL PRIVILEGES"));

    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    let (cid, ids) =
        cluster_with_nodes(&store, "127.0.0.1", &[primary.port(), replica.port()]).await;

    // The catalog sync round checks every node once (the cluster has no compute nodes).
    let mut sync = CatalogSync::new(store.clone(), CatalogSyncConfig::default());
    sync.round().await.expect("sync round");

    for db in set.nodes() {
        let pgx = grants(db, "pgx");
        eprintln!("pgx after the upgrade: {pgx}");
        for bad in [
            "ALL PRIVILEGES",
            "SUPER",
            "READ_ONLY ADMIN",
            "FILE",
            "GRANT OPTION",
        ] {
            assert!(!pgx.contains(bad), "pgx still has {bad}: {pgx}");
        }
        assert!(
            pgx.contains("INSERT") && pgx.contains("BINLOG MONITOR"),
            "{pgx}"
        );
        let mgr = grants(db, "clustmgr");
        assert!(mgr.contains("READ_ONLY ADMIN"), "{mgr}");
        assert!(
            !mgr.contains(" FILE,") && mgr.contains("GRANT OPTION"),
            "{mgr}"
        );
    }
    let after: Vec<String> = set
        .nodes()
        .map(|d| {
            d.value("SELECT @@gtid_binlog_pos")
                .ok()
                .flatten()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(gtids, after, "the upgrade wrote no GTID on any node");

    // Idempotent: a second check (as the now least-privileged manager) changes nothing.
    let again = fix_cluster_grants(&store, cid, &HashSet::new())
        .await
        .expect("second check");
    assert_eq!(again.len(), ids.len());
    for g in &again {
        assert_eq!(g.result, Ok(vec![]), "{}", g.node);
    }

    // The fence now holds against pgx: a write on the read-only replica is refused.
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(replica.port())
        .user(Some("pgx"))
        .pass(Some(PGX_PWD));
    let mut c = mysql_async::Conn::new(opts).await.expect("pgx logs in");
    let r = c.query_drop("CREATE DATABASE errant").await;
    match r {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1290, "{e}"),
        other => panic!("pgx wrote on a read-only node: {other:?}"),
    }
    c.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn removals_use_the_recorded_dir_and_dirs_go_with_their_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    let m = ClusterManager::new(CoreConfig::default(), store.clone());
    let reg = |ty: MachineType, range: &str| RegisterMachine {
        hostaddr: "127.0.0.9".into(),
        machine_type: ty,
        ssh_port: Some(22),
        ssh_user: Some("root".into()),
        ssh_key_path: "/nonexistent/key".into(),
        data_dirs: vec!["/data_now".into()],
        port_range: Some(range.into()),
        rack_id: None,
        total_mem_mb: Some(1024),
        total_cpu_cores: Some(2),
        probe: false,
        ssh_host_key: None,
    };
    let sm = m
        .register_machine(&reg(MachineType::Storage, "57000-57100"))
        .await
        .expect("storage machine")
        .machine;
    m.register_machine(&reg(MachineType::Computer, "47000-47100"))
        .await
        .expect("compute machine");
    let (cid, ids) = cluster_with_nodes(&store, &sm.hostaddr, &[57000]).await;
    let hostaddr = sm.hostaddr.clone();
    let comp_id = store
        .tx(async |tx| {
            // The instances live under a data dir the machine no longer lists.
            dirs::set(
                tx,
                NodeKind::Storage,
                ids[0],
                "/data_then/kunlun/storage_57000",
            )
            .await?;
            let id = repo::comps::reserve_ids(tx, 1)
                .await?
                .next()
                .unwrap_or_default();
            repo::comps::insert(
                tx,
                &NewCompNode {
                    id,
                    db_cluster_id: cid,
                    name: format!("comp{id}"),
                    hostaddr,
                    port: 47000,
                    user_name: "abc".into(),
                    passwd: "pw".into(),
                    status: NodeStatus::Active,
                    max_conns: 10,
                },
            )
            .await?;
            dirs::set(tx, NodeKind::Compute, id, "/data_then/kunlun/compute_47000").await?;
            Ok(id)
        })
        .await
        .expect("rows and dirs");
    let detail = store.cluster_detail(cid).await.expect("detail");
    let machines = store.list_machines().await.expect("machines");
    let mut plan = plan_from_rows(&detail, &machines).expect("plan");
    assert_eq!(
        plan.shards[0].nodes[0].base_dir,
        "/data_now/kunlun/storage_57000"
    );
    apply_recorded_dirs(&store, &mut plan, &detail)
        .await
        .expect("recorded dirs");
    assert_eq!(
        plan.shards[0].nodes[0].base_dir, "/data_then/kunlun/storage_57000",
        "the recorded dir wins over the computed one"
    );
    assert_eq!(plan.comps[0].base_dir, "/data_then/kunlun/compute_47000");

    // A machine update that would orphan the instance: 409, nothing stored.
    store
        .tx(async |tx| {
            let cur = repo::machines::get(tx, sm.id).await?;
            repo::machines::set_ports(tx, &cur, &[57000], &[]).await
        })
        .await
        .expect("ports");
    let before = store.get_machine(sm.id).await.expect("machine");
    for body in [
        serde_json::json!({ "port_range": "57010-57100" }),
        serde_json::json!({ "data_dirs": ["/elsewhere"], "probe": false }),
    ] {
        let req: UpdateMachine = serde_json::from_value(body.clone()).expect("request");
        match m.update_machine(sm.id, &req).await {
            Err(Error::Conflict(msg)) => {
                eprintln!("{body}: {msg}");
                assert!(msg.contains("57000"), "{msg}");
            }
            other => panic!("{body}: expected a conflict, got {other:?}"),
        }
        assert_eq!(store.get_machine(sm.id).await.expect("machine"), before);
    }

    // Dirs go with their nodes: deleting the cluster leaves no dir row behind.
    store
        .tx(async |tx| repo::clusters::delete(tx, cid).await)
        .await
        .expect("delete cluster");
    let left = store
        .read(async |tx| {
            Ok((
                dirs::get(tx, NodeKind::Storage, ids[0]).await?,
                dirs::get(tx, NodeKind::Compute, comp_id).await?,
            ))
        })
        .await
        .expect("read dirs");
    assert_eq!(left, (None, None));
}
