//! The compute-node catalog push against a real PostgreSQL: a cluster of 2 shards registered
//! in a SQLite metadata store with one compute node on the harness server (password login
//! with quotes in the password) and one that is down; push, read back, change the primary,
//! push again, bring a stopped compute node back through the catalog sync.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result};
use kunlun_core::catalog::{
    desired_for_cluster, push_cluster, read_catalog, CatalogOptions, CatalogRows, CatalogSync,
    CatalogSyncConfig, PushReport,
};
use kunlun_core::{ClusterManager, CoreConfig};
use kunlun_meta::model::{
    Cluster, CompNode, HaMode, MemberState, NewCluster, NewCompNode, NewShardNode, NodeStatus,
};
use kunlun_meta::store::repo::secrets::ClusterSecret;
use kunlun_meta::store::{repo, Store, StoreConfig};
use kunlun_tests::rows::insert_cluster;
use kunlun_tests::{free_port, Postgres};

/// The compute node's owner password: quotes, a backslash and a dollar sign.
const COMP_PWD: &str = r#"o'ne "two" \three $4"#;
/// The `pgx` password written into `pg_shard_node`.
const PGX_PWD: &str = r#"p'gx" \ ;--"#;

struct World {
    pg: Postgres,
    store: Store,
    cluster: Cluster,
    /// Node ids per shard, primary first.
    shards: Vec<(i64, Vec<i64>)>,
    comp: CompNode,
    dead: CompNode,
    _dir: tempfile::TempDir,
}

fn opts() -> CatalogOptions {
    CatalogOptions {
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
        ..CatalogOptions::default()
    }
}

/// A PostgreSQL where role `abc` must log in over TCP with its SCRAM password.
fn start_pg() -> Result<Postgres> {
    let pg = Postgres::start()?;
    let quoted = COMP_PWD.replace('\'', "''");
    pg.sql(&format!(
        "CREATE ROLE abc LOGIN SUPERUSER PASSWORD '{quoted}'"
    ))?;
    let hba = pg.datadir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba)?;
    std::fs::write(
        &hba,
        format!("host all abc 127.0.0.1/32 scram-sha-256\n{old}"),
    )?;
    pg.sql("SELECT pg_reload_conf()")?;
    Ok(pg)
}

async fn world() -> Result<World> {
    let pg = tokio::task::spawn_blocking(start_pg).await??;
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreConfig::sqlite(dir.path().join("meta.db"))).await?;
    let port = pg.port();
    let dead_port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
    // Shard 1 of 3 nodes, shard 2 of 2 (never started: only their rows are pushed).
    let rows: Vec<Vec<(String, u16)>> = [(1u16, 3u16), (2, 2)]
        .iter()
        .map(|&(s, n)| {
            (0..n)
                .map(|i| ("127.0.0.1".to_string(), 40000 + s * 100 + i))
                .collect()
        })
        .collect();
    let (cluster, shards, mut comps) = store
        .tx(async |tx| {
            let (cluster, shards) = insert_cluster(
                tx,
                "cat_c",
                &rows,
                |i| format!("shard_{}", i + 1),
                ("clustmgr", "mgr"),
            )
            .await?;
            let ids = repo::comps::reserve_ids(tx, 2).await?;
            let mut comps = Vec::new();
            for (id, p) in ids.zip([port, dead_port]) {
                comps.push(
                    repo::comps::insert(
                        tx,
                        &NewCompNode {
                            id,
                            db_cluster_id: cluster.id,
                            name: format!("comp{id}"),
                            hostaddr: "127.0.0.1".into(),
                            port: p,
                            user_name: "abc".into(),
                            passwd: COMP_PWD.into(),
                            status: NodeStatus::Active,
                            max_conns: 100,
                        },
                    )
                    .await?,
                );
            }
            repo::secrets::insert(
                tx,
                &ClusterSecret {
                    cluster_id: cluster.id,
                    manager_pwd: "mgr".into(),
                    repl_pwd: "repl".into(),
                    pgx_pwd: PGX_PWD.into(),
                    comp_pwd: COMP_PWD.into(),
                },
            )
            .await?;
            Ok((cluster, shards, comps))
        })
        .await?;
    let dead = comps.pop().context("two compute nodes")?;
    let comp = comps.pop().context("two compute nodes")?;
    Ok(World {
        pg,
        store,
        cluster,
        shards,
        comp,
        dead,
        _dir: dir,
    })
}

impl World {
    /// What the live compute node must hold now, by the metadata.
    async fn desired(&self) -> Result<CatalogRows> {
        let (_, rows) = desired_for_cluster(&self.store, self.cluster.id).await?;
        Ok(rows.for_comp(self.comp.id))
    }

    /// `id|master_node_id|num_nodes` of every `pg_shard` row, read with psql.
    fn shard_sql(&self) -> Result<String> {
        Ok(self
            .pg
            .sql("SELECT id, master_node_id, num_nodes FROM kunlun_sys.pg_shard ORDER BY id")?
            .trim()
            .to_string())
    }

    fn error_of<'a>(&self, r: &'a PushReport, comp: &CompNode) -> Option<&'a str> {
        r.comps
            .iter()
            .find(|c| c.comp_node_id == comp.id)
            .and_then(|c| c.error.as_deref())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_read_back_change_primary_and_survive_a_dead_compute_node() -> Result<()> {
    let w = world().await?;

    let r = push_cluster(&w.store, w.cluster.id, &opts()).await?;
    assert_eq!(r.comps.len(), 2, "{r}");
    assert_eq!(w.error_of(&r, &w.comp), None, "{r}");
    let err = w
        .error_of(&r, &w.dead)
        .context("the dead compute node fails")?;
    assert!(err.contains("connect to compute node"), "{err}");
    assert!(!r.all_ok());
    assert!(!r.to_string().contains(COMP_PWD) && !format!("{r:?}").contains(COMP_PWD));

    // Read back: exactly what the metadata says, for this compute node only.
    let got = read_catalog(&w.store, &w.comp, &opts()).await?;
    let want = w.desired().await?;
    assert_eq!(got, want);
    assert_eq!(got.cluster_meta.len(), 1);
    let m = &got.cluster_meta[0];
    assert_eq!(
        (
            m.comp_node_id,
            m.cluster_id,
            m.ha_mode,
            m.cluster_name.as_str()
        ),
        (w.comp.id, w.cluster.id, 2, "cat_c")
    );
    assert_eq!(m.comp_node_name, w.comp.name);
    assert_eq!(got.shard_nodes.len(), 5);

    // The same through plain SQL: primaries, node counts, the pgx login with its quotes.
    let (s1, n1) = &w.shards[0];
    let (s2, n2) = &w.shards[1];
    assert_eq!(
        w.shard_sql()?,
        format!("{s1}|{}|3\n{s2}|{}|2", n1[0], n2[0])
    );
    let logins =
        w.pg.sql("SELECT DISTINCT user_name || '/' || passwd FROM kunlun_sys.pg_shard_node")?;
    assert_eq!(logins.trim(), format!("pgx/{PGX_PWD}"));
    let meta = w.pg.sql(
        "SELECT comp_node_id, cluster_id, ha_mode, cluster_name FROM kunlun_sys.pg_cluster_meta",
    )?;
    assert_eq!(
        meta.trim(),
        format!("{}|{}|2|cat_c", w.comp.id, w.cluster.id)
    );

    // Idempotent: a second push leaves the same rows, not twice as many.
    let r = push_cluster(&w.store, w.cluster.id, &opts()).await?;
    assert_eq!(w.error_of(&r, &w.comp), None, "{r}");
    assert_eq!(read_catalog(&w.store, &w.comp, &opts()).await?, want);
    assert_eq!(
        w.pg.sql("SELECT count(*) FROM kunlun_sys.pg_shard_node")?
            .trim(),
        "5"
    );

    // A failover recorded in the metadata: the next push routes shard 1 to its new primary.
    let new_primary = n1[2];
    w.store
        .tx(async |tx| repo::nodes::set_primary(tx, new_primary).await)
        .await?;
    // `cluster show`'s view through the facade: the live node is behind, the dead one unread.
    let manager = ClusterManager::new(CoreConfig::default(), w.store.clone());
    let status = manager.catalog_status(w.cluster.id).await?;
    assert_eq!(status.len(), 2);
    assert_eq!(status[0].comp_node_id, w.comp.id);
    assert_eq!(status[0].in_sync, Some(false), "{status:?}");
    assert_eq!(status[0].primaries, [(*s1, n1[0]), (*s2, n2[0])]);
    assert!(
        status[1].in_sync.is_none() && status[1].error.is_some(),
        "{status:?}"
    );

    let r = manager.push_catalog(w.cluster.id).await?;
    assert_eq!(w.error_of(&r, &w.comp), None, "{r}");
    assert_eq!(
        w.shard_sql()?,
        format!("{s1}|{new_primary}|3\n{s2}|{}|2", n2[0])
    );
    assert_eq!(
        read_catalog(&w.store, &w.comp, &opts()).await?,
        w.desired().await?
    );
    let status = manager.catalog_status(w.cluster.id).await?;
    assert_eq!(status[0].in_sync, Some(true), "{status:?}");
    assert_eq!(status[0].primaries, [(*s1, new_primary), (*s2, n2[0])]);
    manager.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_catches_a_stopped_compute_node_up_and_skips_unchanged_clusters() -> Result<()> {
    let w = world().await?;
    // Out of service: the sync neither pushes to it nor counts it as missed.
    w.store
        .tx(async |tx| repo::comps::set_status(tx, w.dead.id, NodeStatus::Inactive).await)
        .await?;
    let mut sync = CatalogSync::new(
        w.store.clone(),
        CatalogSyncConfig {
            interval: Duration::from_millis(100),
            resync_every: 0,
            options: opts(),
            clusters: Default::default(),
        },
    );
    let r = sync.round().await?;
    assert_eq!(r.len(), 1);
    assert!(r[0].all_ok(), "{}", r[0]);
    assert_eq!(r[0].comps.len(), 1);
    assert!(
        sync.round().await?.is_empty(),
        "an unchanged cluster is skipped"
    );

    // The compute node goes down; the primary changes meanwhile.
    let pg = &w.pg;
    tokio::task::block_in_place(|| pg.stop())?;
    let (_, n2) = &w.shards[1];
    let new_primary = n2[1];
    w.store
        .tx(async |tx| repo::nodes::set_primary(tx, new_primary).await)
        .await?;
    let r = sync.round().await?;
    assert_eq!(r.len(), 1);
    assert!(w.error_of(&r[0], &w.comp).is_some(), "{}", r[0]);

    // Back up: the next round pushes again although the metadata did not change since.
    tokio::task::block_in_place(|| pg.restart())?;
    let r = sync.round().await?;
    assert_eq!(r.len(), 1);
    assert!(r[0].all_ok(), "{}", r[0]);
    let got = read_catalog(&w.store, &w.comp, &opts()).await?;
    assert_eq!(got, w.desired().await?);
    assert_eq!(
        got.shard(w.shards[1].0).map(|s| s.master_node_id),
        Some(new_primary)
    );
    assert!(sync.round().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_leaves_the_catalog_as_it_was() -> Result<()> {
    let w = world().await?;
    push_cluster(&w.store, w.cluster.id, &opts()).await?;
    let before = read_catalog(&w.store, &w.comp, &opts()).await?;

    // Unknown cluster.
    let e = push_cluster(&w.store, 999_999, &opts()).await.unwrap_err();
    assert!(matches!(e, kunlun_core::Error::NotFound { .. }), "{e}");

    // Two recorded primaries in one shard: refused, nothing written.
    let (s1, _) = w.shards[0];
    let cid = w.cluster.id;
    w.store
        .tx(async |tx| {
            repo::nodes::insert(
                tx,
                &NewShardNode {
                    shard_id: s1,
                    db_cluster_id: cid,
                    hostaddr: "127.0.0.1".into(),
                    port: 49999,
                    user_name: "clustmgr".into(),
                    passwd: "mgr".into(),
                    master_priority: 0,
                    member_state: MemberState::Source,
                    status: NodeStatus::Active,
                    innodb_buffer_pool_mb: 64,
                },
            )
            .await
        })
        .await?;
    let e = push_cluster(&w.store, w.cluster.id, &opts())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("recorded as primary"), "{e}");
    assert_eq!(read_catalog(&w.store, &w.comp, &opts()).await?, before);

    // A wrong compute-node password: that node is reported, the password is not.
    let mut wrong = w.comp.clone();
    wrong.passwd = "not-it".into();
    let e = read_catalog(&w.store, &wrong, &opts()).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("password") || msg.contains("auth"), "{msg}");
    assert!(!msg.contains("not-it") && !msg.contains(COMP_PWD), "{msg}");

    // Cluster names that could break out of quoting never get into the metadata.
    let e = w
        .store
        .tx(async |tx| {
            repo::clusters::insert(
                tx,
                &NewCluster {
                    name: "c'; DROP SCHEMA kunlun_sys; --".into(),
                    nick_name: None,
                    owner: None,
                    business: None,
                    ha_mode: HaMode::Rbr,
                    memo: None,
                },
            )
            .await
        })
        .await
        .unwrap_err();
    assert!(matches!(e, kunlun_meta::Error::Invalid(_)), "{e}");
    Ok(())
}
