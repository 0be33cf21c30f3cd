//! `GET /v1/meta`: the metadata store this instance uses and, on a MySQL metadata shard, its
//! nodes with their role as recorded (`meta_db_nodes`) and as probed now, and the node this
//! instance's store sends its statements to. Every instance answers (leader or not), also
//! while the metadata primary is down (the nodes are then those last known).

use actix_web::{web, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::MetaShard;

use super::error::ApiError;

/// The metadata shard as this instance sees it.
#[utoipa::path(
    get, path = "/v1/meta", tag = "health",
    responses(
        (status = 200, description = "The metadata store: on MySQL the metadata shard's nodes (recorded and observed role, read_only, replication threads, GTID) and the one this instance's store uses; on SQLite a note that the metadata is an embedded file", body = MetaShard),
    )
)]
pub async fn show(cm: web::Data<ClusterManager>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(cm.meta_shard().await?))
}
