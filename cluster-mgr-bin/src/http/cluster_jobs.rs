//! `/v1/clusters` jobs: create and delete a cluster. Both answer `202 {job_id}` at once; the
//! job runner does the work, followed with `GET /v1/jobs/{id}`. Any instance accepts (the
//! engine writes the row); the leader's runner claims it.

use super::body::JsonObject;
use actix_web::{web, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{CreateCluster, ErrorBody, JobAccepted};

use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Create a cluster (job `create_cluster`).
#[utoipa::path(
    post, path = "/v1/clusters", tag = "clusters",
    request_body = CreateCluster,
    responses(
        (status = 202, description = "Accepted; follow the job", body = JobAccepted),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 409, description = "A cluster with this name exists", body = ErrorBody),
        (status = 503, description = "Metadata store unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    cm: web::Data<ClusterManager>,
    body: JsonObject<CreateCluster>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Accepted().json(cm.create_cluster(&body).await?))
}

/// Delete a cluster and every instance of it (job `delete_cluster`).
#[utoipa::path(
    delete, path = "/v1/clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    responses(
        (status = 202, description = "Accepted; follow the job", body = JobAccepted),
        (status = 404, description = "No such cluster", body = ErrorBody),
        (status = 409, description = "Another job is changing the cluster", body = ErrorBody),
    )
)]
pub async fn delete(cm: web::Data<ClusterManager>, id: web::Path<i64>) -> Result<HttpResponse> {
    Ok(HttpResponse::Accepted().json(cm.delete_cluster(*id).await?))
}
