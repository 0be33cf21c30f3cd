//! `/v1/jobs`: list and show jobs.

use actix_web::{web, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{ErrorBody, JobQuery};
use kunlun_meta::model::Job;

use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// List jobs, newest first.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(JobQuery),
    responses((status = 200, body = Vec<Job>), (status = 400, body = ErrorBody))
)]
pub async fn list(cm: web::Data<ClusterManager>, q: web::Query<JobQuery>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(cm.list_jobs(&q).await?))
}

/// Show one job.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody))
)]
pub async fn show(cm: web::Data<ClusterManager>, id: web::Path<i64>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(cm.get_job(*id).await?))
}
