//! `/v1/clusters/{id}/xa`: in-doubt XA branches of a cluster, manual resolution of one
//! transaction, and the XA recovery counters of `/metrics`. Served by the leadership term
//! (the resolver's settings and counters live there): a follower answers 503.

use super::body::JsonObject;
use actix_web::{web, HttpRequest, HttpResponse};
use kunlun_core::xa::XaStats;
use kunlun_meta::api::{ErrorBody, XaInDoubt, XaResolveRequest, XaResolveResult};

use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Header naming the operator for the audit trail (optional).
pub const USER_HEADER: &str = "x-kunlun-user";

/// List the prepared XA branches on every shard primary of a cluster.
#[utoipa::path(
    get, path = "/v1/clusters/{id}/xa", tag = "xa",
    params(("id" = i64, Path, description = "Cluster id")),
    responses((status = 200, body = XaInDoubt), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn list(term: super::leader::Leading, id: web::Path<i64>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(term.xa_in_doubt(*id).await?))
}

/// Commit or roll back one in-doubt transaction by hand (only as its commit log allows).
#[utoipa::path(
    post, path = "/v1/clusters/{id}/xa/{xid}/resolve", tag = "xa",
    params(("id" = i64, Path, description = "Cluster id"), ("xid" = String, Path, description = "Kunlun xid <comp_node_id>-<start_ts>-<local_xid>")),
    request_body = XaResolveRequest,
    responses(
        (status = 200, body = XaResolveResult),
        (status = 400, description = "Bad xid or reason", body = ErrorBody),
        (status = 404, description = "Unknown cluster, or the xid is neither prepared nor logged", body = ErrorBody),
        (status = 409, description = "The action contradicts the commit log, or the coordinator may still decide", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn resolve(
    term: super::leader::Leading,
    path: web::Path<(i64, String)>,
    body: JsonObject<XaResolveRequest>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let (id, xid) = path.into_inner();
    // The token's name is who did it; the header only names someone in open mode.
    let token = super::auth::token_name(&req);
    let user = token
        .as_deref()
        .or_else(|| req.headers().get(USER_HEADER).and_then(|v| v.to_str().ok()));
    Ok(HttpResponse::Ok().json(term.xa_resolve(id, &xid, &body, user).await?))
}

/// The XA recovery counters in the Prometheus text format (appended to `/metrics`).
pub fn metrics_text(s: &XaStats) -> String {
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP kunlun_cluster_mgr_{name} {help}\n# TYPE kunlun_cluster_mgr_{name} {kind}\nkunlun_cluster_mgr_{name} {v}\n"
        ));
    };
    one(
        "xa_rounds_total",
        "counter",
        "XA recovery rounds run",
        s.rounds,
    );
    one(
        "xa_branches_found_total",
        "counter",
        "Prepared Kunlun XA branches discovered",
        s.found,
    );
    one(
        "xa_branches_committed_total",
        "counter",
        "XA branches committed by the manager",
        s.committed,
    );
    one(
        "xa_branches_rolled_back_total",
        "counter",
        "XA branches rolled back by the manager",
        s.rolled_back,
    );
    one(
        "xa_aborts_claimed_total",
        "counter",
        "Abort decisions written into commit logs",
        s.aborts_claimed,
    );
    one(
        "xa_failures_total",
        "counter",
        "XA lookups, claims or statements that failed (retried)",
        s.failed,
    );
    one(
        "xa_commit_log_purged_rows_total",
        "counter",
        "Commit-log rows purged by retention",
        s.purged_rows,
    );
    one(
        "xa_in_doubt_branches",
        "gauge",
        "XA branches left prepared after the last round",
        s.in_doubt,
    );
    one(
        "xa_oldest_in_doubt_age_seconds",
        "gauge",
        "Age of the oldest prepared branch seen in the last round",
        s.oldest_age_sec,
    );
    out
}
