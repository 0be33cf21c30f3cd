//! Clusters, shards, nodes and compute nodes on both backends: per-cluster log tables created
//! and dropped, commit-log deadline guard and duplicates, range queries, repositories composed
//! in one transaction and a rollback leaving nothing behind.

mod common;

use common::TestStore;
use kunlun_meta::model::*;
use kunlun_meta::store::repo::commit_log::{self, NewCommitLogEntry};
use kunlun_meta::store::repo::{clusters, comps, meta, nodes, shards};
use kunlun_meta::store::Store;
use kunlun_meta::Error;

fn new_cluster(name: &str) -> NewCluster {
    NewCluster {
        name: name.into(),
        nick_name: Some("nick 'quoted'".into()),
        owner: Some("abc".into()),
        business: None,
        ha_mode: HaMode::Rbr,
        memo: Some(r#"{"shards":1,"nodes":3}"#.into()),
    }
}

async fn has_table(s: &Store, name: &str) -> bool {
    s.tables().await.unwrap().contains_key(name)
}

/// Creates cluster `name` with one shard of two nodes and one compute node.
async fn build_cluster(s: &Store, name: &str) -> Cluster {
    let name = name.to_string();
    s.tx(async |tx| {
        let c = clusters::insert(tx, &new_cluster(&name)).await?;
        let sh = shards::insert(
            tx,
            &NewShard {
                name: "shard_1".into(),
                db_cluster_id: c.id,
                num_nodes: 2,
                sync_num: 1,
            },
        )
        .await?;
        for (port, role) in [
            (57001u16, MemberState::Source),
            (57002, MemberState::Replica),
        ] {
            nodes::insert(
                tx,
                &NewShardNode {
                    shard_id: sh.id,
                    db_cluster_id: c.id,
                    hostaddr: format!("127.0.0.{}", c.id + 10),
                    port,
                    user_name: "pgx".into(),
                    passwd: "pgx_pwd".into(),
                    master_priority: 1,
                    member_state: role,
                    status: NodeStatus::Active,
                    innodb_buffer_pool_mb: 128,
                },
            )
            .await?;
        }
        let ids = comps::reserve_ids(tx, 1).await?;
        comps::insert(
            tx,
            &NewCompNode {
                id: *ids.start(),
                db_cluster_id: c.id,
                name: "comp1".into(),
                hostaddr: "127.0.0.1".into(),
                port: 47001,
                user_name: "abc".into(),
                passwd: "abc".into(),
                status: NodeStatus::Active,
                max_conns: 100,
            },
        )
        .await?;
        Ok(c)
    })
    .await
    .unwrap()
}

async fn cluster_tables_and_detail(t: &TestStore) {
    let s = &t.store;
    let c = build_cluster(s, "cluster_1657012345_000003").await;
    assert_eq!(
        c.ddl_log_tblname.as_deref(),
        Some("ddl_ops_log_cluster_1657012345_000003")
    );
    assert_eq!(c.status, ClusterStatus::Inuse);
    assert!(has_table(s, "commit_log_cluster_1657012345_000003").await);
    assert!(has_table(s, "ddl_ops_log_cluster_1657012345_000003").await);
    let tables = s.tables().await.unwrap();
    assert_eq!(
        tables["commit_log_cluster_1657012345_000003"],
        tables["commit_log_template_table"]
    );
    assert_eq!(
        tables["ddl_ops_log_cluster_1657012345_000003"],
        tables["ddl_ops_log_template_table"]
    );

    assert_eq!(
        s.get_cluster_by_name("cluster_1657012345_000003")
            .await
            .unwrap(),
        c
    );
    assert_eq!(s.list_clusters().await.unwrap(), vec![c.clone()]);
    let d = s.cluster_detail(c.id).await.unwrap();
    assert_eq!(d.shards.len(), 1);
    assert_eq!(d.shards[0].nodes.len(), 2);
    assert_eq!(d.shards[0].nodes[0].member_state, MemberState::Source);
    assert_eq!(d.comp_nodes.len(), 1);
    assert_eq!(d.comp_nodes[0].passwd, "abc");
    assert_eq!(s.list_shards(Some(c.id)).await.unwrap().len(), 1);
    assert_eq!(
        s.list_shard_nodes(Some(d.shards[0].shard.id))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(s.list_comp_nodes(None).await.unwrap().len(), 1);
    assert_eq!(
        s.get_shard(d.shards[0].shard.id).await.unwrap().name,
        "shard_1"
    );

    // Failover bookkeeping: move the primary and record who follows whom.
    let replica = d.shards[0].nodes[1].id;
    s.tx(async |tx| {
        nodes::set_primary(tx, replica).await?;
        meta::set_node_master(
            tx,
            &NodeMapMaster {
                cluster_id: c.id,
                node_host: "127.0.0.11_57001".into(),
                master_host: "127.0.0.11_57002".into(),
                master_uuid: None,
            },
        )
        .await
    })
    .await
    .unwrap();
    let ns = s
        .list_shard_nodes(Some(d.shards[0].shard.id))
        .await
        .unwrap();
    let sources: Vec<i64> = ns
        .iter()
        .filter(|n| n.member_state == MemberState::Source)
        .map(|n| n.id)
        .collect();
    assert_eq!(sources, vec![replica]);

    let dup = build_cluster_err(s, "cluster_1657012345_000003").await;
    assert!(
        matches!(dup, Error::Conflict(ref m) if m.contains("already exists")),
        "{dup:?}"
    );

    s.tx(async |tx| clusters::delete(tx, c.id).await)
        .await
        .unwrap();
    assert!(!has_table(s, "commit_log_cluster_1657012345_000003").await);
    assert!(!has_table(s, "ddl_ops_log_cluster_1657012345_000003").await);
    assert!(matches!(
        s.get_cluster(c.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        s.list_shard_nodes(None).await.unwrap().is_empty(),
        "nodes go with the cluster"
    );
    assert!(s.list_comp_nodes(None).await.unwrap().is_empty());
    let nm = s
        .read(async |tx| meta::list_node_masters(tx, None).await)
        .await
        .unwrap();
    assert!(nm.is_empty());
}

async fn build_cluster_err(s: &Store, name: &str) -> Error {
    let name = name.to_string();
    s.tx(async |tx| clusters::insert(tx, &new_cluster(&name)).await)
        .await
        .unwrap_err()
}

async fn bad_cluster_names_never_reach_sql(t: &TestStore) {
    let s = &t.store;
    for bad in ["c`; DROP TABLE db_clusters; --", "", "x y", &"a".repeat(60)] {
        let bad = bad.to_string();
        let e = s
            .tx(async |tx| clusters::insert(tx, &new_cluster(&bad)).await)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e:?}");
        let e = s
            .read(async |tx| commit_log::range(tx, &bad, 0, 10).await)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e:?}");
    }
    assert!(s.list_clusters().await.unwrap().is_empty());
    assert!(has_table(s, "db_clusters").await);
}

async fn rollback_leaves_nothing(t: &TestStore) {
    let s = &t.store;
    let r: Result<(), Error> = s
        .tx(async |tx| {
            let c = clusters::insert(tx, &new_cluster("doomed")).await?;
            shards::insert(
                tx,
                &NewShard {
                    name: "shard_1".into(),
                    db_cluster_id: c.id,
                    num_nodes: 1,
                    sync_num: 0,
                },
            )
            .await?;
            kunlun_meta::store::repo::jobs::create(
                tx,
                &NewJob {
                    job_type: "create_cluster".into(),
                    job_info: serde_json::json!({}),
                    user_name: None,
                },
            )
            .await?;
            Err(Error::Conflict("the caller changed its mind".into()))
        })
        .await;
    assert!(matches!(r, Err(Error::Conflict(_))));
    assert!(s.list_clusters().await.unwrap().is_empty());
    assert!(s.list_shards(None).await.unwrap().is_empty());
    assert!(s.list_jobs(&Default::default()).await.unwrap().is_empty());
    assert!(
        !has_table(s, "commit_log_doomed").await,
        "log tables undone"
    );
    assert!(!has_table(s, "ddl_ops_log_doomed").await);

    // A failing statement in the middle also rolls back what came before it.
    build_cluster(s, "kept").await;
    let before = s.list_shards(None).await.unwrap();
    let r = s
        .tx(async |tx| {
            let c = clusters::get_by_name(tx, "kept").await?;
            shards::insert(
                tx,
                &NewShard {
                    name: "shard_2".into(),
                    db_cluster_id: c.id,
                    num_nodes: 1,
                    sync_num: 0,
                },
            )
            .await?;
            shards::insert(
                tx,
                &NewShard {
                    name: "shard_1".into(),
                    db_cluster_id: c.id,
                    num_nodes: 1,
                    sync_num: 0,
                },
            )
            .await
        })
        .await;
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    assert_eq!(s.list_shards(None).await.unwrap(), before);
}

async fn cancelled_transaction_leaves_nothing(t: &TestStore) {
    let s = &t.store;
    // The caller gives up (timeout, shutdown) while the transaction is open.
    let r = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        s.tx(async |tx| {
            clusters::insert(tx, &new_cluster("abandoned")).await?;
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            Ok(())
        }),
    )
    .await;
    assert!(r.is_err(), "timed out");
    // The half-done transaction is gone and the store keeps working, writes included.
    assert!(s
        .list_clusters()
        .await
        .unwrap()
        .iter()
        .all(|c| c.name != "abandoned"));
    build_cluster(s, "after_cancel").await;
    assert_eq!(s.list_clusters().await.unwrap().len(), 1);
}

async fn commit_log_guard_and_ranges(t: &TestStore) {
    let s = &t.store;
    build_cluster(s, "xa1").await;
    // The guard compares with the database server's clock.
    let now = s
        .autocommit(async |tx| commit_log::server_now(tx).await)
        .await
        .unwrap();
    let local = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now - i64::try_from(local).unwrap()).abs() < 60,
        "server clock {now} vs local {local}"
    );
    let start = u32::try_from(now - 100).unwrap();
    let entry = |comp: i64, xid: u32, cmd: TxnCmd| NewCommitLogEntry {
        comp_node_id: comp,
        txn_id: commit_log::txn_id(start, xid),
        next_txn_cmd: cmd,
        written_shards: Some(vec![1, 2]),
    };

    // In time: logged.
    s.tx(async |tx| {
        commit_log::insert(tx, "xa1", &entry(1, 10, TxnCmd::Commit), Some(now + 30)).await
    })
    .await
    .unwrap();
    // Late: the database refuses it.
    let late = s
        .tx(async |tx| {
            commit_log::insert(tx, "xa1", &entry(1, 11, TxnCmd::Commit), Some(now - 30)).await
        })
        .await
        .unwrap_err();
    assert!(matches!(late, Error::Expired(_)), "{late:?}");
    // The manager's abort claim (no deadline) for a decision already logged: Conflict.
    let dup = s
        .tx(async |tx| commit_log::insert(tx, "xa1", &entry(1, 10, TxnCmd::Abort), None).await)
        .await
        .unwrap_err();
    assert!(matches!(dup, Error::Conflict(_)), "{dup:?}");
    // Other transactions and other compute nodes.
    s.tx(async |tx| {
        commit_log::insert(tx, "xa1", &entry(1, 11, TxnCmd::Abort), None).await?;
        commit_log::insert(tx, "xa1", &entry(2, 10, TxnCmd::Commit), None).await
    })
    .await
    .unwrap();

    let got = s
        .read(async |tx| commit_log::get(tx, "xa1", 1, commit_log::txn_id(start, 10)).await)
        .await
        .unwrap();
    assert_eq!(got.map(|e| e.next_txn_cmd), Some(TxnCmd::Commit));
    let none = s
        .read(async |tx| commit_log::get(tx, "xa1", 1, commit_log::txn_id(start, 12)).await)
        .await
        .unwrap();
    assert!(none.is_none());
    let all = s
        .read(async |tx| {
            commit_log::range(
                tx,
                "xa1",
                commit_log::txn_id(start, 0),
                commit_log::txn_id(start, 11),
            )
            .await
        })
        .await
        .unwrap();
    let keys: Vec<(i64, u32, TxnCmd)> = all
        .iter()
        .map(|e| {
            (
                e.comp_node_id,
                (e.txn_id & 0xffff_ffff) as u32,
                e.next_txn_cmd,
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            (1, 10, TxnCmd::Commit),
            (1, 11, TxnCmd::Abort),
            (2, 10, TxnCmd::Commit)
        ]
    );
    assert!(all.iter().all(|e| e.prepare_ts.is_some()));
    let some = s
        .read(async |tx| {
            commit_log::range(
                tx,
                "xa1",
                commit_log::txn_id(start, 11),
                commit_log::txn_id(start, 20),
            )
            .await
        })
        .await
        .unwrap();
    assert_eq!(some.len(), 1);

    let purged = s
        .tx(async |tx| commit_log::purge_before(tx, "xa1", commit_log::txn_id(start, 11)).await)
        .await
        .unwrap();
    assert_eq!(purged, 2);
}

async fn comp_ids_and_small_tables(t: &TestStore) {
    let s = &t.store;
    let a = s
        .tx(async |tx| comps::reserve_ids(tx, 3).await)
        .await
        .unwrap();
    let b = s
        .tx(async |tx| comps::reserve_ids(tx, 2).await)
        .await
        .unwrap();
    assert_eq!((a.clone().count(), b.clone().count()), (3, 2));
    assert_eq!(*b.start(), *a.end() + 1, "blocks never overlap");

    s.tx(async |tx| {
        meta::set_config(tx, "meta_ha_mode", "rbr").await?;
        meta::set_config(tx, "meta_ha_mode", "no_rep").await?;
        meta::upsert_mgr_node(
            tx,
            &ClusterMgrNode {
                hostaddr: "127.0.0.1".into(),
                port: 8010,
                prometheus_port: Some(9010),
                member_state: MemberState::Replica,
            },
        )
        .await?;
        meta::upsert_mgr_node(
            tx,
            &ClusterMgrNode {
                hostaddr: "127.0.0.1".into(),
                port: 8010,
                prometheus_port: None,
                member_state: MemberState::Source,
            },
        )
        .await?;
        let n = meta::insert_meta_node(
            tx,
            &MetaDbNode {
                id: 0,
                hostaddr: "127.0.0.1".into(),
                port: 3306,
                user_name: "pgx".into(),
                passwd: "pgx_pwd".into(),
                master_priority: 1,
                member_state: MemberState::Replica,
                sync_state: SyncState::Fsync,
            },
        )
        .await?;
        meta::set_meta_primary(tx, n.id).await
    })
    .await
    .unwrap();
    let (mode, mgrs, metas) = s
        .read(async |tx| {
            Ok((
                meta::get_config(tx, "meta_ha_mode").await?,
                meta::list_mgr_nodes(tx).await?,
                meta::list_meta_nodes(tx).await?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(mode.as_deref(), Some("no_rep"));
    assert_eq!(mgrs.len(), 1);
    assert_eq!(mgrs[0].member_state, MemberState::Source);
    assert_eq!(mgrs[0].prometheus_port, None);
    assert_eq!(metas.len(), 1);
    assert_eq!(metas[0].member_state, MemberState::Source);
}

/// A cluster's self-healing switches: all on by default, stored when set, gone with the
/// cluster (a later cluster never inherits them), an unknown cluster is `NotFound`.
async fn cluster_policy_defaults_set_and_cascade(t: &TestStore) {
    let s = &t.store;
    let c = build_cluster(s, "pol").await;
    assert_eq!(
        s.cluster_policy(c.id).await.unwrap(),
        ClusterPolicy::default_for(c.id)
    );
    assert!(s.cluster_policies().await.unwrap().is_empty());
    let off = ClusterPolicy {
        cluster_id: c.id,
        auto_restart: false,
        auto_rebuild: true,
    };
    s.set_cluster_policy(off).await.unwrap();
    assert_eq!(s.cluster_policy(c.id).await.unwrap(), off);
    let both_off = ClusterPolicy {
        auto_rebuild: false,
        ..off
    };
    s.set_cluster_policy(both_off).await.unwrap();
    assert_eq!(s.cluster_policy(c.id).await.unwrap(), both_off);
    assert_eq!(
        s.cluster_policies().await.unwrap().get(&c.id),
        Some(&both_off)
    );
    assert!(matches!(
        s.set_cluster_policy(ClusterPolicy::default_for(c.id + 1000))
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.cluster_policy(c.id + 1000).await,
        Err(Error::NotFound { .. })
    ));
    s.tx(async |tx| clusters::delete(tx, c.id).await)
        .await
        .unwrap();
    assert!(s.cluster_policies().await.unwrap().is_empty());
}

both_backends! {
    cluster_tables => cluster_tables_and_detail;
    cluster_bad_names => bad_cluster_names_never_reach_sql;
    tx_rollback => rollback_leaves_nothing;
    tx_cancelled => cancelled_transaction_leaves_nothing;
    commit_log_guard => commit_log_guard_and_ranges;
    comp_ids_and_meta => comp_ids_and_small_tables;
    cluster_policy => cluster_policy_defaults_set_and_cascade;
}
