//! `/v1/machines`: register, list, show, update and delete machines.

use super::body::JsonObject;
use actix_web::{web, HttpRequest, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{ErrorBody, PageQuery, RegisterMachine, UpdateMachine};
use kunlun_meta::model::MachineInfo;

use super::cache::Pages;
use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Register a machine reachable over SSH. Unless `probe` is false, the daemon first logs in
/// with the given key, checks CPU, memory, OS, data dirs and the server binaries of the
/// machine type, and fills `total_mem_mb`/`total_cpu_cores` when not given; a refusal stores
/// nothing. The probe's facts (OS, kernel, each data dir's free MB, when) come back in
/// `probe` and stay stored with the machine. An unprobed machine is stored `dead` until the
/// liveness check reaches it, and its `probe` is null.
#[utoipa::path(
    post, path = "/v1/machines", tag = "machines",
    request_body = RegisterMachine,
    responses(
        (status = 201, description = "Registered", body = MachineInfo),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 409, description = "A machine of this type with this host address (in \
            its canonical form) exists", body = ErrorBody),
        (status = 422, description = "Refused: `ssh_key_rejected` (the key file is not a \
            0600 regular file of the daemon's user under `ssh_keys_dir`), \
            `host_unresolvable`, or by the SSH probe: `machine_unreachable`, \
            `ssh_auth_failed`, `host_key_mismatch` (also a wrong `ssh_host_key` pin), \
            `host_key_unknown` (names the offered fingerprint), `missing_binaries`, \
            `data_dir_unusable` or `machine_unsuitable`", body = ErrorBody),
        (status = 503, description = "Metadata store unavailable, or no SSH settings to probe \
            with (`probe_unavailable`)", body = ErrorBody),
    )
)]
pub async fn register(
    cm: web::Data<ClusterManager>,
    body: JsonObject<RegisterMachine>,
) -> Result<HttpResponse> {
    let m = cm.register_machine(&body).await?;
    Ok(HttpResponse::Created().json(m))
}

/// List machines by id, each with the facts of its last probe (`probe`, null if never
/// probed); one page of at most `limit` (default 100, 1..=1000, more is a 400). When more
/// follow, `X-Next-Cursor` (and `Link rel="next"`) give the next page's `after`.
#[utoipa::path(
    get, path = "/v1/machines", tag = "machines",
    params(PageQuery),
    responses(
        (status = 200, body = Vec<MachineInfo>, headers(
            ("X-Next-Cursor" = i64, description = "`after` of the next page; absent on the last"),
            ("Link" = String, description = "`<next page URL>; rel=\"next\"`; absent on the last"),
        )),
        (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn list(
    cm: web::Data<ClusterManager>,
    pages: web::Data<Pages>,
    q: web::Query<PageQuery>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let store = cm.store()?;
    pages
        .page(&req, store, async || {
            Ok(store.machine_infos_page(&q).await?)
        })
        .await
}

/// Show one machine with the facts of its last probe (`probe`, null if never probed).
#[utoipa::path(
    get, path = "/v1/machines/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Machine id")),
    responses((status = 200, body = MachineInfo), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody))
)]
pub async fn show(cm: web::Data<ClusterManager>, id: web::Path<i64>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(cm.machine_info(*id).await?))
}

/// Change some fields of a machine. A change of `ssh_port`, `ssh_user`, `ssh_key_path` or
/// `data_dirs` is probed over SSH with the new values first (unless `probe` is false) and
/// refused like a registration, storing nothing; on success the probe facts are refreshed.
/// Rack, port range, memory and cores are stored without reaching the machine.
#[utoipa::path(
    patch, path = "/v1/machines/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Machine id")),
    request_body = UpdateMachine,
    responses(
        (status = 200, body = MachineInfo),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "SSH access or data dirs changed concurrently while the \
            machine was probed", body = ErrorBody),
        (status = 422, description = "Refused by the SSH probe of the new values: \
            `machine_unreachable`, `ssh_auth_failed`, `host_key_mismatch`, `host_key_unknown`, \
            `missing_binaries`, `data_dir_unusable` or `machine_unsuitable`", body = ErrorBody),
        (status = 503, description = "Metadata store unavailable, or no SSH settings to probe \
            with (`probe_unavailable`)", body = ErrorBody),
    )
)]
pub async fn update(
    cm: web::Data<ClusterManager>,
    id: web::Path<i64>,
    body: JsonObject<UpdateMachine>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(cm.update_machine(*id, &body).await?))
}

/// Delete a machine.
#[utoipa::path(
    delete, path = "/v1/machines/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Machine id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn delete(cm: web::Data<ClusterManager>, id: web::Path<i64>) -> Result<HttpResponse> {
    cm.delete_machine(*id).await?;
    Ok(HttpResponse::NoContent().finish())
}
