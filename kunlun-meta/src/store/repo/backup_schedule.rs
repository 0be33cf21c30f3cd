//! Clusters' backup schedules (`kl_backup_schedule`), and the original's per-shard and
//! per-compute-node `coldbackup_period` columns they keep in step.
//!
//! Invariant: a schedule goes with its cluster (foreign key, cascade), so a cluster id reused
//! after a delete never inherits an old schedule; its window is stored as validated by the
//! caller (canonical text).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::now;
use crate::error::Result;
use crate::model::{BackupSchedule, OnOff};
use crate::store::conn::{with_conn, Tx};
use crate::store::repo::backup_storage;
use crate::store::schema::{comp_nodes, kl_backup_schedule as k, shards};

/// A schedule to store (validated by the caller; the cluster and the storage exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackupSchedule {
    pub cluster_id: i64,
    pub storage_id: i64,
    pub window: String,
    pub keep_count: Option<u32>,
    pub keep_days: Option<u32>,
    pub enabled: bool,
}

type Row = (
    i64,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    String,
    NaiveDateTime,
);

fn columns() -> (
    k::db_cluster_id,
    k::storage_id,
    k::backup_window,
    k::keep_count,
    k::keep_days,
    k::enabled,
    k::updated_at,
) {
    (
        k::db_cluster_id,
        k::storage_id,
        k::backup_window,
        k::keep_count,
        k::keep_days,
        k::enabled,
        k::updated_at,
    )
}

fn keep(n: Option<i64>) -> Option<u32> {
    n.and_then(|n| u32::try_from(n).ok())
}

fn from_row(r: Row, storage: String) -> BackupSchedule {
    let (cluster_id, storage_id, window, keep_count, keep_days, enabled, updated_at) = r;
    BackupSchedule {
        cluster_id,
        storage_id,
        storage,
        window,
        keep_count: keep(keep_count),
        keep_days: keep(keep_days),
        // Anything but the stored `OFF` reads as on: the column's CHECK/enum allows only two.
        enabled: enabled != OnOff::Off.as_str(),
        updated_at,
    }
}

async fn storage_name(tx: &mut Tx, id: i64) -> Result<String> {
    Ok(backup_storage::get(tx, id).await?.name)
}

/// The schedule of one cluster, if it has one.
pub async fn get(tx: &mut Tx, cluster_id: i64) -> Result<Option<BackupSchedule>> {
    let row: Option<Row> = with_conn!(tx, c => k::table
        .filter(k::db_cluster_id.eq(cluster_id))
        .select(columns())
        .first(c)
        .await
        .optional())?;
    match row {
        Some(r) => {
            let name = storage_name(tx, r.1).await?;
            Ok(Some(from_row(r, name)))
        }
        None => Ok(None),
    }
}

/// Every schedule, by cluster id.
pub async fn list(tx: &mut Tx) -> Result<Vec<BackupSchedule>> {
    let rows: Vec<Row> = with_conn!(tx, c => k::table
        .order(k::db_cluster_id.asc())
        .select(columns())
        .load(c)
        .await)?;
    let storages = backup_storage::list(tx).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let name = storages
                .iter()
                .find(|s| s.id == r.1)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            from_row(r, name)
        })
        .collect())
}

/// Stores a cluster's schedule, replacing any earlier one.
pub async fn set(tx: &mut Tx, s: &NewBackupSchedule) -> Result<BackupSchedule> {
    with_conn!(tx, c => diesel::delete(k::table.filter(k::db_cluster_id.eq(s.cluster_id)))
        .execute(c)
        .await)?;
    let enabled = if s.enabled { OnOff::On } else { OnOff::Off };
    with_conn!(tx, c => diesel::insert_into(k::table)
        .values((
            k::db_cluster_id.eq(s.cluster_id),
            k::storage_id.eq(s.storage_id),
            k::backup_window.eq(&s.window),
            k::keep_count.eq(s.keep_count.map(i64::from)),
            k::keep_days.eq(s.keep_days.map(i64::from)),
            k::enabled.eq(enabled.as_str()),
            k::updated_at.eq(now()),
        ))
        .execute(c)
        .await)?;
    let cid = s.cluster_id;
    get(tx, cid).await?.ok_or_else(|| {
        crate::Error::Database(format!("the schedule of cluster {cid} was not stored"))
    })
}

/// Removes a cluster's schedule; whether it had one.
pub async fn delete(tx: &mut Tx, cluster_id: i64) -> Result<bool> {
    let n = with_conn!(tx, c => diesel::delete(k::table.filter(k::db_cluster_id.eq(cluster_id)))
        .execute(c)
        .await)?;
    Ok(n > 0)
}

/// The clusters whose schedules name storage `storage_id`.
pub async fn clusters_using(tx: &mut Tx, storage_id: i64) -> Result<Vec<i64>> {
    with_conn!(tx, c => k::table
        .filter(k::storage_id.eq(storage_id))
        .order(k::db_cluster_id.asc())
        .select(k::db_cluster_id)
        .load(c)
        .await)
}

/// Writes `period` into the original's `coldbackup_period` of every shard and compute node
/// of the cluster (what its tools read the window from).
pub async fn set_coldbackup_period(tx: &mut Tx, cluster_id: i64, period: &str) -> Result<()> {
    with_conn!(tx, c => diesel::update(shards::table.filter(shards::db_cluster_id.eq(cluster_id)))
        .set(shards::coldbackup_period.eq(Some(period)))
        .execute(c)
        .await)?;
    with_conn!(tx, c => diesel::update(comp_nodes::table.filter(comp_nodes::db_cluster_id.eq(cluster_id)))
        .set(comp_nodes::coldbackup_period.eq(Some(period)))
        .execute(c)
        .await)?;
    Ok(())
}
