//! What the benchmarks that need a loaded shard share: a 1 shard x 2 nodes + 1 compute `rbr`
//! cluster made by the `create_cluster` job, rows loaded through its primary and replicated,
//! and small figures helpers.

use anyhow::{ensure, Context, Result};
use kunlun_core::jobs::accept_create_cluster;
use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::{HaMode, JobStatus, MemberState, ShardNode};
use kunlun_meta::store::repo::secrets;
use mysql_async::prelude::Queryable;

use crate::world::ProvisionWorld;

/// Rows of about this many bytes.
pub const ROW_BYTES: u64 = 1000;
/// Rows per `INSERT`.
const BATCH: u64 = 10_000;
/// Every this many rows the load waits for the replica and drops both nodes' binary logs, so
/// the set-up needs little more disk than the two data sets.
const PURGE_EVERY: u64 = 200_000;

/// An environment variable as a number, or `default`.
pub fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median (the upper one of an even count); NaN when empty.
pub fn p50(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `du -sb` of a local path, in MB.
pub fn du_mb(path: &std::path::Path) -> f64 {
    let out = std::process::Command::new("du")
        .args(["-sb", &path.display().to_string()])
        .output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1e6
}

/// Waits until the replica `r` holds everything the primary `p` logged, then drops both nodes'
/// binary logs (the replica's relay logs go as it applies them).
pub async fn sync_and_purge(p: &mut mysql_async::Conn, r: &mut mysql_async::Conn) -> Result<()> {
    let pos: String = p
        .query_first("SELECT @@gtid_binlog_pos")
        .await?
        .unwrap_or_default();
    let waited: Option<String> = r
        .query_first(format!(
            "SELECT CAST(MASTER_GTID_WAIT('{pos}', 3600) AS CHAR)"
        ))
        .await?;
    ensure!(waited.as_deref() == Some("0"), "the replica caught up");
    for c in [p, r] {
        c.query_drop("FLUSH BINARY LOGS").await?;
        c.query_drop("PURGE BINARY LOGS BEFORE NOW() + INTERVAL 1 SECOND")
            .await?;
    }
    Ok(())
}

/// The manager account's password of cluster `cid`.
pub async fn manager_pwd(w: &ProvisionWorld, cid: i64) -> Result<String> {
    Ok(w.store
        .read(async |tx| secrets::get(tx, cid).await)
        .await?
        .manager_pwd)
}

/// A loaded one-shard cluster.
pub struct LoadedShard {
    pub cid: i64,
    /// The cluster's manager password.
    pub pw: String,
    pub shard: i64,
    pub primary: ShardNode,
    pub replica: ShardNode,
    pub rows: u64,
    /// Seconds the load and its replication took.
    pub load_secs: f64,
}

/// Creates cluster `name` (1 shard x 2 nodes + 1 compute, `rbr`, `innodb_mb` of buffer pool)
/// and loads about `mb` MB into `bench.t (id, pad)` through its primary, `pad` being the SQL
/// expression of a row's ~1 KB text (`seq` is the row's number), replicated.
pub async fn one_shard_loaded(
    w: &ProvisionWorld,
    name: &str,
    innodb_mb: u32,
    mb: u64,
    pad: &str,
) -> Result<LoadedShard> {
    let store = w.store.clone();
    let req = CreateCluster {
        name: name.into(),
        nick_name: None,
        ha_mode: HaMode::Rbr,
        shards: 1,
        nodes: 2,
        comps: 1,
        innodb_size_mb: Some(innodb_mb),
        max_connections: Some(100),
        storage_hosts: vec![],
        computer_hosts: vec![],
    };
    let job = accept_create_cluster(&store, &req).await?;
    let job = w.run_job(job.id).await;
    ensure!(
        job.status == JobStatus::Done,
        "create_cluster: {:?}",
        job.memo
    );
    let cid = store.get_cluster_by_name(name).await?.id;
    let pw = manager_pwd(w, cid).await?;
    let shard = store.list_shards(Some(cid)).await?[0].id;
    let nodes = store.list_shard_nodes(Some(shard)).await?;
    let primary = nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source)
        .context("a primary")?
        .clone();
    let replica = nodes
        .iter()
        .find(|n| n.id != primary.id)
        .context("a replica")?
        .clone();

    let t = std::time::Instant::now();
    let rows = mb * 1_000_000 / ROW_BYTES;
    let mut p = w.conn(primary.port, &pw).await;
    p.query_drop(
        "CREATE DATABASE bench; CREATE TABLE bench.t (id BIGINT PRIMARY KEY, \
         pad VARCHAR(1000) NOT NULL) ENGINE=InnoDB",
    )
    .await?;
    let mut r = w.conn(replica.port, &pw).await;
    let mut from = 1;
    while from <= rows {
        let to = (from + BATCH - 1).min(rows);
        p.query_drop(format!(
            "INSERT INTO bench.t SELECT seq, {pad} FROM bench.seq_{from}_to_{to}"
        ))
        .await?;
        if to.is_multiple_of(PURGE_EVERY) || to == rows {
            sync_and_purge(&mut p, &mut r).await?;
        }
        from = to + 1;
    }
    Ok(LoadedShard {
        cid,
        pw,
        shard,
        primary,
        replica,
        rows,
        load_secs: t.elapsed().as_secs_f64(),
    })
}
