//! `/v1/backup_storages`: register, list, show and remove backup storages (where cluster
//! backups are kept; the first kind is a directory on a registered machine, over SSH).

use super::body::JsonObject;
use actix_web::{web, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{check_storage_name, AddBackupStorage, BackupStorageInfo, ErrorBody};
use kunlun_meta::model::BackupStorage;

use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Register a backup storage: `kind` `ssh_dir`, a directory `path` on the registered machine
/// `hostaddr` (any type), reached with that machine's SSH settings. The daemon first logs in,
/// creates the directory (mode 0700) when missing, proves it writable and reads its free
/// space; a refusal stores nothing.
#[utoipa::path(
    post, path = "/v1/backup_storages", tag = "backup_storages",
    request_body = AddBackupStorage,
    responses(
        (status = 201, description = "Registered, with the free space found", body = BackupStorageInfo),
        (status = 400, description = "Bad input (name, kind, path), an unknown field, or no \
            registered machine at `hostaddr`: nothing was stored", body = ErrorBody),
        (status = 409, description = "A storage of this name exists", body = ErrorBody),
        (status = 422, description = "The storage did not answer: `machine_unreachable`, \
            `ssh_auth_failed`, `host_key_mismatch`, `host_key_unknown`, or \
            `data_dir_unusable` (the directory cannot be created or written)", body = ErrorBody),
        (status = 503, description = "Metadata store unavailable, or no SSH settings \
            (`probe_unavailable`)", body = ErrorBody),
    )
)]
pub async fn add(
    cm: web::Data<ClusterManager>,
    body: JsonObject<AddBackupStorage>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Created().json(cm.add_backup_storage(&body).await?))
}

/// List the registered backup storages by id (no storage is contacted).
#[utoipa::path(
    get, path = "/v1/backup_storages", tag = "backup_storages",
    responses(
        (status = 200, body = Vec<BackupStorage>),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn list(cm: web::Data<ClusterManager>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(cm.list_backup_storages().await?))
}

/// Show one backup storage with its free space (`free_bytes`), or why it could not be read
/// (`unreachable`): the storage is asked over SSH, within 20 s.
#[utoipa::path(
    get, path = "/v1/backup_storages/{name}", tag = "backup_storages",
    params(("name" = String, Path, description = "Storage name")),
    responses(
        (status = 200, body = BackupStorageInfo),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn show(cm: web::Data<ClusterManager>, name: web::Path<String>) -> Result<HttpResponse> {
    check_storage_name(&name)?;
    Ok(HttpResponse::Ok().json(cm.backup_storage(&name).await?))
}

/// Remove a backup storage from the registry; the files on it stay. Refused while backups
/// are recorded on it.
#[utoipa::path(
    delete, path = "/v1/backup_storages/{name}", tag = "backup_storages",
    params(("name" = String, Path, description = "Storage name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Backups are recorded on it", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn delete(
    cm: web::Data<ClusterManager>,
    name: web::Path<String>,
) -> Result<HttpResponse> {
    check_storage_name(&name)?;
    cm.delete_backup_storage(&name).await?;
    Ok(HttpResponse::NoContent().finish())
}
