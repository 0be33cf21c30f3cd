//! Scale-out and scale-in jobs of a cluster: shards, storage nodes (replicas) and compute
//! nodes. Every call answers `202 {job_id}` at once; the job runner does the work, followed
//! with `GET /v1/jobs/{id}`.

use super::body::JsonObject;
use actix_web::{web, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{AddComps, AddNodes, AddShards, ErrorBody, JobAccepted};

use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Add shards to a cluster (job `add_shards`).
#[utoipa::path(
    post, path = "/v1/clusters/{id}/shards", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    request_body = AddShards,
    responses(
        (status = 202, description = "Accepted; follow the job", body = JobAccepted),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 404, description = "No such cluster", body = ErrorBody),
        (status = 409, description = "Another job is changing the cluster", body = ErrorBody),
    )
)]
pub async fn add_shards(
    cm: web::Data<ClusterManager>,
    id: web::Path<i64>,
    body: JsonObject<AddShards>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Accepted().json(cm.add_shards(*id, &body).await?))
}

/// Remove a shard and every node of it (job `delete_shard`); a cluster's last shard is refused.
#[utoipa::path(
    delete, path = "/v1/clusters/{id}/shards/{shard_id}", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id"), ("shard_id" = i64, Path, description = "Shard id")),
    responses(
        (status = 202, description = "Accepted; follow the job", body = JobAccepted),
        (status = 404, description = "No such cluster or shard", body = ErrorBody),
        (status = 409, description = "Another job is changing the cluster, or this is its last shard (delete the cluster instead)", body = ErrorBody),
    )
)]
pub async fn delete_shard(
    cm: web::Data<ClusterManager>,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse> {
    let (id, shard_id) = *path;
    Ok(HttpResponse::Accepted().json(cm.delete_shard(id, shard_id).await?))
}

/// Add replicas to a shard (job `add_nodes`).
#[utoipa::path(
    post, path = "/v1/clusters/{id}/shards/{shard_id}/nodes", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id"), ("shard_id" = i64, Path, description = "Shard id")),
    request_body = AddNodes,
    responses(
        (status = 202, description = "Accepted; follow the job", body = JobAccepted),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 404, description = "No such cluster or shard", body = ErrorBody),
        (status = 409, description = "Another job is changing the cluster", body = ErrorBody),
    )
)]
pub async fn add_nodes(
    cm: web::Data<ClusterManager>,
    path: web::Path<(i64, i64)>,
    body: JsonObject<AddNodes>,
) -> Result<HttpResponse> {
    let (id, shard_id) = *path;
    Ok(HttpResponse::Accepted().json(cm.add_nodes(id, shard_id, &body).await?))
}

/// Remove a replica (job `delete_node`); the primary is refused.
#[utoipa::path(
    delete, path = "/v1/clusters/{id}/shards/{shard_id}/nodes/{node_id}", tag = "clusters",
    params(
        ("id" = i64, Path, description = "Cluster id"),
        ("shard_id" = i64, Path, description = "Shard id"),
        ("node_id" = i64, Path, description = "Storage node id"),
    ),
    responses(
        (status = 202, description = "Accepted; follow the job", body = JobAccepted),
        (status = 404, description = "No such cluster, shard or node", body = ErrorBody),
        (status = 409, description = "The node is the primary, or another job is changing the cluster", body = ErrorBody),
    )
)]
pub async fn delete_node(
    cm: web::Data<ClusterManager>,
    path: web::Path<(i64, i64, i64)>,
) -> Result<HttpResponse> {
    let (id, shard_id, node_id) = *path;
    Ok(HttpResponse::Accepted().json(cm.delete_node(id, shard_id, node_id).await?))
}

/// Add compute nodes to a cluster (job `add_comps`).
#[utoipa::path(
    post, path = "/v1/clusters/{id}/comp_nodes", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    request_body = AddComps,
    responses(
        (status = 202, description = "Accepted; follow the job", body = JobAccepted),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 404, description = "No such cluster", body = ErrorBody),
        (status = 409, description = "Another job is changing the cluster", body = ErrorBody),
    )
)]
pub async fn add_comps(
    cm: web::Data<ClusterManager>,
    id: web::Path<i64>,
    body: JsonObject<AddComps>,
) -> Result<HttpResponse> {
    Ok(HttpResponse::Accepted().json(cm.add_comps(*id, &body).await?))
}

/// Remove a compute node (job `delete_comp`).
#[utoipa::path(
    delete, path = "/v1/clusters/{id}/comp_nodes/{comp_id}", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id"), ("comp_id" = i64, Path, description = "Compute node id")),
    responses(
        (status = 202, description = "Accepted; follow the job", body = JobAccepted),
        (status = 404, description = "No such cluster or compute node", body = ErrorBody),
        (status = 409, description = "Another job is changing the cluster", body = ErrorBody),
    )
)]
pub async fn delete_comp(
    cm: web::Data<ClusterManager>,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse> {
    let (id, comp_id) = *path;
    Ok(HttpResponse::Accepted().json(cm.delete_comp(id, comp_id).await?))
}
