//! `GET`/`PATCH /v1/clusters/{id}/policy`: a cluster's self-healing switches
//! (`auto_restart`: the instance keeper starts its dead instances again; `auto_rebuild`: a
//! replica kept out for rebuild is rebuilt by a job on its own). Both on unless changed.

use super::body::JsonObject;
use actix_web::{web, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{ErrorBody, UpdateClusterPolicy};
use kunlun_meta::model::ClusterPolicy;

use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Show a cluster's self-healing switches (both on unless an operator changed them).
#[utoipa::path(
    get, path = "/v1/clusters/{id}/policy", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    responses(
        (status = 200, body = ClusterPolicy),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn show(cm: web::Data<ClusterManager>, id: web::Path<i64>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(cm.store()?.cluster_policy(*id).await?))
}

/// Change a cluster's self-healing switches: name at least one; a switch left out keeps its
/// value. Answers with the policy now stored.
#[utoipa::path(
    patch, path = "/v1/clusters/{id}/policy", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    request_body(content = UpdateClusterPolicy, description = "`{\"auto_restart\": bool, \"auto_rebuild\": bool}`, at least one of them; any other field is refused and nothing is changed"),
    responses(
        (status = 200, body = ClusterPolicy),
        (status = 400, description = "Malformed JSON, a wrong type, an unknown field, or no switch named: nothing was changed", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn update(
    cm: web::Data<ClusterManager>,
    id: web::Path<i64>,
    body: JsonObject<UpdateClusterPolicy>,
) -> Result<HttpResponse> {
    body.validate()?;
    Ok(HttpResponse::Ok().json(cm.store()?.update_cluster_policy(*id, *body).await?))
}
