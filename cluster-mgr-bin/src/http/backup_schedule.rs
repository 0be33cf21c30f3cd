//! `GET`/`PUT`/`DELETE /v1/clusters/{id}/backup_schedule`: a cluster's scheduled backups (the
//! storage, a daily UTC window) and their retention (`keep_count`, `keep_days`); the leader's
//! backup scheduler acts on it.

use super::body::JsonObject;
use actix_web::{web, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{ErrorBody, SetBackupSchedule};
use kunlun_meta::model::BackupSchedule;

use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Show a cluster's backup schedule.
#[utoipa::path(
    get, path = "/v1/clusters/{id}/backup_schedule", tag = "backups",
    params(("id" = i64, Path, description = "Cluster id")),
    responses(
        (status = 200, body = BackupSchedule),
        (status = 404, description = "No such cluster, or it has no backup schedule", body = ErrorBody),
    )
)]
pub async fn show(cm: web::Data<ClusterManager>, id: web::Path<i64>) -> Result<HttpResponse> {
    match cm.backup_schedule(*id).await? {
        Some(s) => Ok(HttpResponse::Ok().json(s)),
        None => Err(kunlun_core::Error::NotFound {
            what: "backup schedule of cluster",
            id: id.to_string(),
        }
        .into()),
    }
}

/// Set (or replace) a cluster's backup schedule: once a day, when the UTC `window` is open and
/// no backup was started since it opened, the leader backs the cluster up onto `storage` (job
/// `backup_cluster`); then it removes the cluster's done backups past the newest `keep_count`
/// and those (done or failed) older than `keep_days` days, never the newest done one. The
/// window is also written to the original's `coldbackup_period` of the cluster's shards and
/// compute nodes.
#[utoipa::path(
    put, path = "/v1/clusters/{id}/backup_schedule", tag = "backups",
    params(("id" = i64, Path, description = "Cluster id")),
    request_body(content = SetBackupSchedule, description = "`{\"storage\": name, \"window\": \"01:00:00-02:00:00\", \"keep_count\"?: n, \"keep_days\"?: n, \"enabled\"?: bool}`; any other field is refused and nothing is changed"),
    responses(
        (status = 200, description = "The schedule now stored", body = BackupSchedule),
        (status = 400, description = "A malformed window, keep_count or keep_days out of range, no storage named, or an unknown field: nothing was changed", body = ErrorBody),
        (status = 404, description = "No such cluster or storage", body = ErrorBody),
    )
)]
pub async fn set(
    cm: web::Data<ClusterManager>,
    id: web::Path<i64>,
    body: JsonObject<SetBackupSchedule>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(cm.set_backup_schedule(*id, &body).await?))
}

/// Remove a cluster's backup schedule (its backups stay).
#[utoipa::path(
    delete, path = "/v1/clusters/{id}/backup_schedule", tag = "backups",
    params(("id" = i64, Path, description = "Cluster id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such cluster, or it has no backup schedule", body = ErrorBody),
    )
)]
pub async fn delete(cm: web::Data<ClusterManager>, id: web::Path<i64>) -> Result<HttpResponse> {
    cm.delete_backup_schedule(*id).await?;
    Ok(HttpResponse::NoContent().finish())
}
