//! The leader's backup scheduler: every `interval`, for each enabled schedule of a cluster
//! this manager serves, a `backup_cluster` job when one is [`schedule::due`] and no job
//! changes the cluster, then retention ([`schedule::to_remove`]) through the catalogue's one
//! removal path ([`ClusterManager::delete_backup`]: the files, then the rows).
//!
//! Invariants: a round never stops on one cluster's failure (a refused job is tried again next
//! round, a backup that cannot be removed — being restored, storage unreachable — is logged and
//! left); nothing here removes files or rows itself.

use std::collections::HashSet;
use std::time::Duration;

use kunlun_meta::api::{BackupWindow, CreateBackup};
use kunlun_meta::model::BackupSchedule;
use kunlun_meta::store::repo::{backup_schedule, jobs};
use kunlun_meta::Store;
use tokio_util::sync::CancellationToken;

use super::schedule::{self, cluster_backups};
use crate::error::{Error, Result};
use crate::ClusterManager;

/// What one round did for one cluster.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Acted {
    /// The job accepted, if a backup was started.
    pub job_id: Option<i64>,
    /// The backups removed.
    pub removed: Vec<i64>,
}

/// Runs rounds every `interval` until `cancel`.
pub async fn run(
    store: Store,
    engine: ClusterManager,
    interval: Duration,
    cancel: CancellationToken,
) {
    tracing::info!(?interval, "backup scheduler started");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = round(&store, &engine, &cancel).await {
            tracing::warn!(error = %e, "backup scheduler: round failed");
        }
    }
}

/// One round over every enabled schedule.
pub async fn round(
    store: &Store,
    engine: &ClusterManager,
    cancel: &CancellationToken,
) -> Result<()> {
    let (list, unfinished) = store
        .read(async |tx| {
            Ok((
                backup_schedule::list(tx).await?,
                jobs::list_unfinished(tx).await?,
            ))
        })
        .await?;
    let busy: HashSet<i64> = unfinished
        .iter()
        .filter_map(|j| j.job_info.as_ref()?.get("cluster_id")?.as_i64())
        .collect();
    let scope = &engine.config().clusters_to_serve;
    for s in list
        .iter()
        .filter(|s| s.enabled && scope.serves(s.cluster_id))
    {
        if cancel.is_cancelled() {
            return Ok(());
        }
        if let Err(e) = cluster(store, engine, s, busy.contains(&s.cluster_id)).await {
            tracing::warn!(cluster_id = s.cluster_id, error = %e, "backup scheduler: cluster skipped this round");
        }
    }
    Ok(())
}

/// The round's work for one schedule: the backup if due, then retention.
async fn cluster(
    store: &Store,
    engine: &ClusterManager,
    s: &BackupSchedule,
    busy: bool,
) -> Result<Acted> {
    let cid = s.cluster_id;
    let window = BackupWindow::parse(&s.window)?;
    let list = cluster_backups(store, cid).await?;
    let now = chrono::Utc::now().naive_utc();
    let last_start = list.iter().map(|b| b.started_at).max();
    let mut acted = Acted::default();
    if schedule::due(window, now, last_start) {
        if busy {
            tracing::debug!(
                cluster_id = cid,
                "scheduled backup due, but a job changes the cluster: next round"
            );
        } else {
            let req = CreateBackup {
                storage: s.storage.clone(),
                allow_primary: false,
                compression: Default::default(),
            };
            match engine.backup_cluster(cid, &req).await {
                Ok(a) => {
                    tracing::info!(cluster_id = cid, job_id = a.job_id, storage = %s.storage, window = %s.window, "scheduled backup started");
                    acted.job_id = Some(a.job_id);
                }
                Err(Error::Conflict(why)) => {
                    tracing::info!(cluster_id = cid, %why, "scheduled backup due, but refused for now: next round");
                }
                Err(e) => {
                    tracing::warn!(cluster_id = cid, storage = %s.storage, error = %e, "scheduled backup could not be started");
                }
            }
        }
    }
    for id in schedule::to_remove(&list, s.keep_count, s.keep_days, now) {
        match engine.delete_backup(id).await {
            Ok(_) => {
                tracing::info!(cluster_id = cid, backup_id = id, keep_count = ?s.keep_count, keep_days = ?s.keep_days, "retention: backup removed");
                acted.removed.push(id);
            }
            Err(e) => {
                tracing::warn!(cluster_id = cid, backup_id = id, error = %e, "retention: backup not removed (tried again next round)");
            }
        }
    }
    Ok(acted)
}
