//! Cluster backups: start one (`POST /v1/clusters/{id}/backups`, job `backup_cluster`), the
//! catalogue (`GET /v1/backups`, `GET /v1/backups/{id}`), removal (`DELETE
//! /v1/backups/{id}`: the files on the storage, then the rows) and restore into a new cluster
//! (`POST /v1/backups/{id}/restore`, job `restore_cluster`, to the end of the backup or to a
//! point in time within `GET /v1/backups/{id}/archive`) or over an existing, empty one (`POST
//! /v1/clusters/{id}/restore`, job `restore_into_cluster`).

use super::body::JsonObject;
use actix_web::{web, HttpRequest, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{
    BackupArchive, BackupQuery, CreateBackup, ErrorBody, JobAccepted, RestoreBackup, RestoreInto,
};
use kunlun_meta::model::Backup;

use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Back a cluster up onto a registered backup storage (job `backup_cluster`): each shard's
/// physical snapshot from a replica (never the primary unless `allow_primary` and no replica is
/// healthy), one compute node's schema, the cluster's metadata rows and its commit and DDL
/// logs, then `manifest.json`. A failure removes what was stored and marks the backup failed.
#[utoipa::path(
    post, path = "/v1/clusters/{id}/backups", tag = "backups",
    params(("id" = i64, Path, description = "Cluster id")),
    request_body(content = CreateBackup, description = "`{\"storage\": name, \"allow_primary\": bool?}`; any other field is refused"),
    responses(
        (status = 202, description = "Accepted; follow the job (memo: backup_id, parts[] with name, phase pending|checking|storing|stored|failed|removed|skipped, bytes, source, gtid, outcome; steps)", body = JobAccepted),
        (status = 400, description = "Bad body: nothing was done", body = ErrorBody),
        (status = 404, description = "No such cluster or storage", body = ErrorBody),
        (status = 409, description = "Another job is changing the cluster", body = ErrorBody),
    )
)]
pub async fn create(
    cm: web::Data<ClusterManager>,
    id: web::Path<i64>,
    body: JsonObject<CreateBackup>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Accepted().json(cm.backup_cluster(*id, &body).await?))
}

/// List backups, newest first (of one cluster with `cluster_id`, which may have been deleted
/// since); one page of at most `limit`. When more follow, `X-Next-Cursor` (and `Link
/// rel="next"`) give the next page's `after`.
#[utoipa::path(
    get, path = "/v1/backups", tag = "backups",
    params(BackupQuery),
    responses(
        (status = 200, body = Vec<Backup>, headers(
            ("X-Next-Cursor" = i64, description = "`after` of the next page; absent on the last"),
            ("Link" = String, description = "`<next page URL>; rel=\"next\"`; absent on the last"),
        )),
        (status = 400, body = ErrorBody),
    )
)]
pub async fn list(
    cm: web::Data<ClusterManager>,
    pages: web::Data<super::cache::Pages>,
    q: web::Query<BackupQuery>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    pages
        .page(&req, cm.store()?, async || Ok(cm.list_backups(&q).await?))
        .await
}

/// Show one backup with its parts (`cluster_coldbackups` rows: type, shard or compute node,
/// status, memo {rel, bytes, sha256, gtid, source}).
#[utoipa::path(
    get, path = "/v1/backups/{id}", tag = "backups",
    params(("id" = i64, Path, description = "Backup id")),
    responses((status = 200, body = Backup), (status = 404, body = ErrorBody))
)]
pub async fn show(cm: web::Data<ClusterManager>, id: web::Path<i64>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(cm.backup(*id).await?))
}

/// Remove a backup: its files from the storage, then its rows (kept when the storage cannot
/// be reached). Refused while the job taking it runs.
#[utoipa::path(
    delete, path = "/v1/backups/{id}", tag = "backups",
    params(("id" = i64, Path, description = "Backup id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Its job still runs", body = ErrorBody),
        (status = 503, description = "The storage could not be reached; nothing was removed from the catalogue", body = ErrorBody),
    )
)]
pub async fn delete(cm: web::Data<ClusterManager>, id: web::Path<i64>) -> Result<HttpResponse> {
    cm.delete_backup(*id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Restore a done backup into a new cluster (job `restore_cluster`): the cluster is created
/// with the backed-up shape (shards as backed up; `nodes` per shard and `comps` as backed up
/// unless given), every file is checked against the manifest, each shard's snapshot is
/// restored on all of its new nodes, the XA branches prepared at the backup's cut are ended as
/// its commit log says (`memo.shards[]`: `xa_committed`, `xa_rolled_back`), replication is set
/// up and the compute nodes get the backed-up schema. Any failure removes the new cluster; the
/// backup is only read.
#[utoipa::path(
    post, path = "/v1/backups/{id}/restore", tag = "backups",
    params(("id" = i64, Path, description = "Backup id")),
    request_body(content = RestoreBackup, description = "`{\"name\": new cluster, \"nodes\"?, \"comps\"?, ...}`; any other field is refused"),
    responses(
        (status = 202, description = "Accepted; follow the job (memo: cluster_id, cluster_name, backup_id, consistent, shards[], steps)", body = JobAccepted),
        (status = 400, description = "Bad body: nothing was done", body = ErrorBody),
        (status = 404, description = "No such backup", body = ErrorBody),
        (status = 409, description = "The backup is not done, or the cluster name is in use", body = ErrorBody),
    )
)]
pub async fn restore(
    cm: web::Data<ClusterManager>,
    id: web::Path<i64>,
    body: JsonObject<RestoreBackup>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Accepted().json(cm.restore_backup(*id, &body).await?))
}

/// Restore a done backup over an existing, empty cluster's own instances (job
/// `restore_into_cluster`; the original's `cluster_restore`). The cluster must have as many
/// shards as the backup and hold nothing yet: the job's first check refuses a cluster with a
/// database on a storage node (besides the system ones) or a table or database on a compute
/// node. Every storage node is out of HA while its data is replaced, each shard's recorded
/// primary stays its primary, and a failure puts every node's own data back.
#[utoipa::path(
    post, path = "/v1/clusters/{id}/restore", tag = "backups",
    params(("id" = i64, Path, description = "Cluster id (the one restored into)")),
    request_body(content = RestoreInto, description = "`{\"backup_id\": id, \"restore_time\"?, \"allow_inconsistent\"?}`; any other field is refused"),
    responses(
        (status = 202, description = "Accepted; follow the job (memo: cluster_id, backup_id, consistent, restore_time, shards[], put_back after a failure, steps)", body = JobAccepted),
        (status = 400, description = "Bad body: nothing was done", body = ErrorBody),
        (status = 404, description = "No such backup or cluster", body = ErrorBody),
        (status = 409, description = "The backup is not done or is of this cluster, the shards differ in number, the restore time is outside the archive, or a job is in progress on the cluster", body = ErrorBody),
    )
)]
pub async fn restore_into(
    cm: web::Data<ClusterManager>,
    id: web::Path<i64>,
    body: JsonObject<RestoreInto>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Accepted().json(cm.restore_into(*id, &body).await?))
}

/// The binlog archive past a backup: which `restore_time`s its restore takes
/// (`restorable_from` ..= `restorable_until`) and, per shard, how far its binary log is
/// archived, from which primary, and any gap.
#[utoipa::path(
    get, path = "/v1/backups/{id}/archive", tag = "backups",
    params(("id" = i64, Path, description = "Backup id")),
    responses(
        (status = 200, body = BackupArchive),
        (status = 404, body = ErrorBody),
        (status = 503, description = "The storage could not be reached", body = ErrorBody),
    )
)]
pub async fn archive(cm: web::Data<ClusterManager>, id: web::Path<i64>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(cm.backup_archive(*id).await?))
}

/// Verify a done backup (job `verify_backup`): every file's size and SHA-256 on the storage
/// checked against the manifest, then each shard's snapshot prepared and started as a scratch
/// server with no network on a storage machine, and every table's checksum compared with the
/// one recorded at the backup's cut. The job fails when anything does not verify; its memo
/// says per shard (`shards[]`: `started`, `recorded`, `matched`, `mismatched`).
#[utoipa::path(
    post, path = "/v1/backups/{id}/verify", tag = "backups",
    params(("id" = i64, Path, description = "Backup id")),
    request_body(content = NoFields, description = "No body, or `{}`; any field is refused"),
    responses(
        (status = 202, description = "Accepted; follow the job", body = JobAccepted),
        (status = 404, description = "No such backup", body = ErrorBody),
        (status = 409, description = "The backup is not done", body = ErrorBody),
    )
)]
pub async fn verify(
    cm: web::Data<ClusterManager>,
    id: web::Path<i64>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let _: NoFields = super::instances::json_body(&req, &body)?;
    Ok(HttpResponse::Accepted().json(cm.verify_backup(*id).await?))
}

/// A body that takes no field: none, or `{}`.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}
