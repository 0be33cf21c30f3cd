//! `manual_backup_cluster` of the Emit API: the original's "back this cluster up now", as this
//! manager's own `backup_cluster` job (the one `POST /v1/clusters/{id}/backups` accepts); and
//! `update_cluster_coldback_time_period`: the original's daily cold-backup window, as the
//! window of the cluster's backup schedule (`PUT /v1/clusters/{id}/backup_schedule`), also
//! written to the original's `coldbackup_period` columns of its shards and compute nodes.
//! `cluster_restore`: the original's point-in-time restore of `src_cluster_id` into the
//! existing `dst_cluster_id`, as this manager's `restore_into_cluster` job (the one `POST
//! /v1/clusters/{id}/restore` accepts) of the source cluster's newest done backup that ended by
//! `restore_time`.
//! Invariant: the storage is never guessed among several: the only registered one, or the one
//! named in `storage_name` (or the one the cluster's schedule names); anything else is refused
//! and said. A `restore_time` is never guessed either: one that does not parse is refused.

use chrono::{NaiveDateTime, SecondsFormat};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{BackupQuery, BackupWindow, CreateBackup, RestoreInto, SetBackupSchedule};
use kunlun_meta::model::{Backup, BackupStatus};
use serde_json::{json, Value};

use super::codes;
use super::paras::{Fail, Paras};

/// `storage_name` when given, else the only registered backup storage.
async fn storage_of(e: &ClusterManager, p: &Paras<'_>) -> Result<String, Fail> {
    if let Some(s) = p.text("storage_name").filter(|s| !s.is_empty()) {
        return Ok(s);
    }
    let all = e
        .list_backup_storages()
        .await
        .map_err(|x| Fail::new(codes::PARAMETER_ERROR, x.to_string()))?;
    match all.as_slice() {
        [only] => Ok(only.name.clone()),
        [] => Err(Fail::new(
            codes::PARAMETER_ERROR,
            "no backup storage is registered (create_backup_storage first)",
        )),
        several => Err(Fail::new(
            codes::PARAMETER_ERROR,
            format!(
                "{} backup storages are registered: name one in storage_name",
                several.len()
            ),
        )),
    }
}

/// The request of `manual_backup_cluster`: `storage_name` when given, else the only
/// registered backup storage.
pub async fn request(e: &ClusterManager, p: &Paras<'_>) -> Result<CreateBackup, Fail> {
    Ok(CreateBackup {
        storage: storage_of(e, p).await?,
        allow_primary: false,
        compression: Default::default(),
    })
}

/// `update_cluster_coldback_time_period` {cluster_id, time_period_str}: sets the window of the
/// cluster's backup schedule (its storage and retention kept); a cluster without one gets a
/// schedule on `storage_name`, else on the only registered storage, keeping every backup.
/// Done at once; the memo names the schedule.
pub async fn update_window(e: &ClusterManager, p: &Paras<'_>) -> Result<Value, Fail> {
    let id = p.id("cluster_id", codes::LOST_CLUSTER_ID, codes::PARAMETER_ERROR)?;
    let period = p.req("time_period_str", codes::PARAMETER_ERROR)?;
    let window = BackupWindow::parse(&period)
        .map_err(|x| Fail::new(codes::PARAMETER_ERROR, format!("time_period_str: {x}")))?;
    let refused = |x: kunlun_core::Error| Fail::new(codes::PARAMETER_ERROR, x.to_string());
    let req = match e.backup_schedule(id).await.map_err(refused)? {
        Some(s) => SetBackupSchedule {
            storage: s.storage,
            window: window.to_string(),
            keep_count: s.keep_count,
            keep_days: s.keep_days,
            enabled: Some(s.enabled),
        },
        None => SetBackupSchedule {
            storage: storage_of(e, p).await?,
            window: window.to_string(),
            keep_count: None,
            keep_days: None,
            enabled: None,
        },
    };
    let s = e.set_backup_schedule(id, &req).await.map_err(refused)?;
    Ok(json!({
        "error_code": 0,
        "error_info": "",
        "cluster_id": s.cluster_id,
        "time_period_str": s.window,
        "storage": s.storage,
    }))
}

/// Pages of the catalogue read looking for a backup to restore (100 backups each).
const MAX_PAGES: usize = 100;

/// The request of `cluster_restore` {src_cluster_id, dst_cluster_id, restore_time}: the
/// destination cluster and, for it, the newest done backup of the source cluster that ended
/// by `restore_time` ("YYYY-MM-DD HH:MM:SS", read as UTC), restored to that time; without a
/// `restore_time`, the newest done backup, to its end.
pub async fn restore_request(
    e: &ClusterManager,
    p: &Paras<'_>,
) -> Result<(i64, RestoreInto), Fail> {
    let src = p.id(
        "src_cluster_id",
        codes::LOST_CLUSTER_ID,
        codes::PARAMETER_ERROR,
    )?;
    let dst = p.id(
        "dst_cluster_id",
        codes::LOST_CLUSTER_ID,
        codes::PARAMETER_ERROR,
    )?;
    let at = match p.text("restore_time").filter(|t| !t.is_empty()) {
        Some(t) => Some(
            NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S").map_err(|x| {
                Fail::new(
                    codes::PARAMETER_ERROR,
                    format!("restore_time {t:?}: {x} (YYYY-MM-DD HH:MM:SS, UTC)"),
                )
            })?,
        ),
        None => None,
    };
    let b = newest_done(e, src, at).await?.ok_or_else(|| {
        Fail::new(
            codes::PARAMETER_ERROR,
            match at {
                Some(t) => format!("cluster {src} has no done backup that ended by {t} (UTC)"),
                None => format!("cluster {src} has no done backup"),
            },
        )
    })?;
    Ok((
        dst,
        RestoreInto {
            backup_id: b.id,
            allow_inconsistent: false,
            restore_time: at.map(|t| t.and_utc().to_rfc3339_opts(SecondsFormat::Secs, true)),
        },
    ))
}

/// The newest done backup of cluster `src` that ended by `at` (any, without `at`).
async fn newest_done(
    e: &ClusterManager,
    src: i64,
    at: Option<NaiveDateTime>,
) -> Result<Option<Backup>, Fail> {
    let mut after = None;
    for _ in 0..MAX_PAGES {
        let page = e
            .list_backups(&BackupQuery {
                cluster_id: Some(src),
                limit: Some(100),
                after,
            })
            .await
            .map_err(|x| Fail::new(codes::PARAMETER_ERROR, x.to_string()))?;
        let found = page.items.into_iter().find(|b| {
            b.status == BackupStatus::Done
                && match (at, b.ended_at) {
                    (Some(t), Some(end)) => end <= t,
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        });
        if found.is_some() || page.next.is_none() {
            return Ok(found);
        }
        after = page.next;
    }
    Ok(None)
}
