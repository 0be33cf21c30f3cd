//! Read endpoints of clusters, shards, storage nodes and compute nodes.

use actix_web::{web, HttpRequest, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{ClusterDetail, ErrorBody, PageQuery};
use kunlun_meta::model::{Cluster, CompNode, Shard, ShardNode};

use super::cache::Pages;
use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// List clusters by id: one page of at most `limit` (default 100, 1..=1000, more is a 400).
/// When more follow, `X-Next-Cursor` (and `Link rel="next"`) give the next page's `after`.
#[utoipa::path(
    get, path = "/v1/clusters", tag = "clusters",
    params(PageQuery),
    responses(
        (status = 200, body = Vec<Cluster>, headers(
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
        .page(&req, store, async || Ok(store.clusters_page(&q).await?))
        .await
}

/// Show a cluster with its shards, storage nodes and compute nodes.
#[utoipa::path(
    get, path = "/v1/clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    responses((status = 200, body = ClusterDetail), (status = 404, body = ErrorBody))
)]
pub async fn show(
    cm: web::Data<ClusterManager>,
    pages: web::Data<Pages>,
    id: web::Path<i64>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    pages
        .json(&req, cm.store()?, async || {
            Ok(cm.cluster_detail(*id).await?)
        })
        .await
}

/// List the shards of a cluster.
#[utoipa::path(
    get, path = "/v1/clusters/{id}/shards", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    responses((status = 200, body = Vec<Shard>), (status = 404, body = ErrorBody))
)]
pub async fn shards(
    cm: web::Data<ClusterManager>,
    pages: web::Data<Pages>,
    id: web::Path<i64>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    pages
        .json(&req, cm.store()?, async || Ok(cm.list_shards(*id).await?))
        .await
}

/// List the compute nodes of a cluster.
#[utoipa::path(
    get, path = "/v1/clusters/{id}/comp_nodes", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    responses((status = 200, body = Vec<CompNode>), (status = 404, body = ErrorBody))
)]
pub async fn comp_nodes(
    cm: web::Data<ClusterManager>,
    pages: web::Data<Pages>,
    id: web::Path<i64>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    pages
        .json(&req, cm.store()?, async || {
            Ok(cm.list_comp_nodes(*id).await?)
        })
        .await
}

/// Show one shard.
#[utoipa::path(
    get, path = "/v1/shards/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Shard id")),
    responses((status = 200, body = Shard), (status = 404, body = ErrorBody))
)]
pub async fn shard(cm: web::Data<ClusterManager>, id: web::Path<i64>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(cm.get_shard(*id).await?))
}

/// List the storage nodes of a shard.
#[utoipa::path(
    get, path = "/v1/shards/{id}/nodes", tag = "clusters",
    params(("id" = i64, Path, description = "Shard id")),
    responses((status = 200, body = Vec<ShardNode>), (status = 404, body = ErrorBody))
)]
pub async fn shard_nodes(
    cm: web::Data<ClusterManager>,
    pages: web::Data<Pages>,
    id: web::Path<i64>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    pages
        .json(&req, cm.store()?, async || {
            Ok(cm.list_shard_nodes(*id).await?)
        })
        .await
}
