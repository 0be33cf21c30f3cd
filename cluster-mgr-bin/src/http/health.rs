//! `GET /healthz`: 200 `{"status":"ok"}` while the metadata store answers a ping within its
//! deadline, 503 `{"status":"degraded","reason":...}` otherwise. Never itself fails. The body
//! also names this instance's leadership `role` (leader, follower, starting, standalone); the
//! role never changes the status code: a follower is healthy.

use actix_web::{web, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::Health;

use super::leader::LeaderView;
use super::metrics::Metrics;

/// Health of the daemon and its metadata store.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "The daemon and its metadata store answer (body also has `role`: leader, follower, starting or standalone)", body = Health),
        (status = 503, description = "Degraded: the metadata store does not answer", body = Health),
    )
)]
pub async fn healthz(
    manager: web::Data<ClusterManager>,
    metrics: web::Data<Metrics>,
    leader: web::Data<LeaderView>,
) -> HttpResponse {
    let health = manager.health().await;
    let ok = health.status == "ok";
    metrics.set_store_up(ok);
    let mut body = serde_json::to_value(&health).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(o) = body.as_object_mut() {
        o.insert("role".into(), leader.role().into());
    }
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
