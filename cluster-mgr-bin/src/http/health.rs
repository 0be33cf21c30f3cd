//! `GET /healthz`: 200 `{"status":"ok"}` while the metadata store answers a ping within its
//! deadline, 503 `{"status":"degraded","reason":...}` otherwise. Never itself fails.

use actix_web::{web, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::Health;

use super::metrics::Metrics;

/// Health of the daemon and its metadata store.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "The daemon and its metadata store answer", body = Health),
        (status = 503, description = "Degraded: the metadata store does not answer", body = Health),
    )
)]
pub async fn healthz(
    manager: web::Data<ClusterManager>,
    metrics: web::Data<Metrics>,
) -> HttpResponse {
    let health = manager.health().await;
    let ok = health.status == "ok";
    metrics.set_store_up(ok);
    if ok {
        HttpResponse::Ok().json(health)
    } else {
        HttpResponse::ServiceUnavailable().json(health)
    }
}
