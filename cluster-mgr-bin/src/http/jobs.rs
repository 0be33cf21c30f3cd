//! `/v1/jobs`: list and show jobs.

use actix_web::{web, HttpRequest, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{ErrorBody, JobQuery};
use kunlun_meta::model::Job;

use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// List jobs, newest first: one page of at most `limit` (default 100, 1..=1000, more is a
/// 400). When older ones follow, `X-Next-Cursor` (and `Link rel="next"`) give the next page's
/// `after`.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(JobQuery),
    responses(
        (status = 200, body = Vec<Job>, headers(
            ("X-Next-Cursor" = i64, description = "`after` of the next page; absent on the last"),
            ("Link" = String, description = "`<next page URL>; rel=\"next\"`; absent on the last"),
        )),
        (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn list(
    cm: web::Data<ClusterManager>,
    pages: web::Data<super::cache::Pages>,
    q: web::Query<JobQuery>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let store = cm.store()?;
    pages
        .page(&req, store, async || Ok(store.jobs_page(&q).await?))
        .await
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
