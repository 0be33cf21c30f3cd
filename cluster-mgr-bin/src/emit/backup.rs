//! `manual_backup_cluster` of the Emit API: the original's "back this cluster up now", as this
//! manager's own `backup_cluster` job (the one `POST /v1/clusters/{id}/backups` accepts); and
//! `update_cluster_coldback_time_period`: the original's daily cold-backup window, as the
//! window of the cluster's backup schedule (`PUT /v1/clusters/{id}/backup_schedule`), also
//! written to the original's `coldbackup_period` columns of its shards and compute nodes.
//! Invariant: the storage is never guessed among several: the only registered one, or the one
//! named in `storage_name` (or the one the cluster's schedule names); anything else is refused
//! and said.

use kunlun_core::ClusterManager;
use kunlun_meta::api::{BackupWindow, CreateBackup, SetBackupSchedule};
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
