//! `POST /v1/instances/{host}:{port}/{stop|start|restart}`: control of one installed storage or
//! compute instance. Done at once (a stop or start takes seconds) on the leader and answered
//! with the finished `control_instance` job row; refusals write no row.
//! `POST /v1/instances/{host}:{port}/rebuild`: a `rebuild_node` job for one storage replica,
//! answered `202 {job_id}` at once like the other job-creating endpoints.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use kunlun_core::instances::control::{Control, ControlInstance};
use kunlun_core::ClusterManager;
use kunlun_meta::api::{ErrorBody, JobAccepted, RebuildNode};
use kunlun_meta::model::Job;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ApiError;
use super::leader::Leading;

type Result<T> = std::result::Result<T, ApiError>;

/// Body of a control request: `{}`, `{"force": true}`, or no body at all.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    /// Stop (or restart) a shard's primary; HA then fails the shard over.
    #[serde(default)]
    pub force: bool,
}

/// An empty body is `{}`; anything else must be `application/json` (415) of `T`.
pub(super) fn json_body<T: DeserializeOwned + Default>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T> {
    if body.is_empty() {
        return Ok(T::default());
    }
    let json = req.mime_type().ok().flatten().is_some_and(|m| {
        m.subtype() == actix_web::mime::JSON || m.suffix() == Some(actix_web::mime::JSON)
    });
    if !json {
        return Err(ApiError::unsupported_media_type(
            "Content-Type must be application/json (or send no body)",
        ));
    }
    serde_json::from_slice(body).map_err(|e| super::error::from_serde_json(&e))
}

/// `host:port` of the path (the host may be a name or an IPv4 address).
fn instance(addr: &str) -> Result<(String, u16)> {
    addr.rsplit_once(':')
        .filter(|(h, _)| !h.is_empty())
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok().filter(|p| *p > 0)?)))
        .ok_or_else(|| ApiError::invalid_field(format!("instance: {addr:?} is not host:port")))
}

/// What every control route answers (the 200 is the finished job).
macro_rules! control_route {
    ($name:ident, $path:literal, $action:expr, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(
            post, path = $path, tag = "clusters",
            params(("instance" = String, Path, description = "`host:port` of a storage or compute node")),
            request_body(content = ControlBody, description = "`{\"force\": true}` to stop or restart a shard's primary; `{}` or no body otherwise. A body must be `application/json` and exactly this shape"),
            responses(
                (status = 200, description = "Done: the finished `control_instance` job (status done, or failed with memo.error). Memo: {kind (storage|compute), node_id, cluster_id, shard_id, primary, base_dir, steps, status (the node row's status afterwards: a stopped non-primary is manual_stop, made active again by a start), outcome (stopped|started|restarted|failed), replication, error}", body = Job),
                (status = 400, description = "Not host:port, or a bad body: nothing was done", body = ErrorBody),
                (status = 404, description = "No storage or compute node at host:port", body = ErrorBody),
                (status = 409, description = "A shard's primary without force, a node being installed or deleted, a job changing its cluster, or no machine registered for it: nothing was done", body = ErrorBody),
                (status = 415, body = ErrorBody),
                (status = 503, description = "Not the leader, no SSH settings, or the store unavailable", body = ErrorBody),
            )
        )]
        pub async fn $name(
            term: Leading,
            path: web::Path<String>,
            req: HttpRequest,
            body: web::Bytes,
        ) -> Result<HttpResponse> {
            control(term, &path, $action, &req, &body).await
        }
    };
}

control_route!(
    stop,
    "/v1/instances/{instance}/stop",
    Control::Stop,
    "Stop one instance (job `control_instance`); a shard's primary only with force."
);
control_route!(
    start,
    "/v1/instances/{instance}/start",
    Control::Start,
    "Start one instance (job `control_instance`) and wait until it answers; a storage replica must replicate again."
);
control_route!(
    restart,
    "/v1/instances/{instance}/restart",
    Control::Restart,
    "Stop then start one instance (job `control_instance`); a shard's primary only with force."
);

async fn control(
    term: Leading,
    addr: &str,
    action: Control,
    req: &HttpRequest,
    body: &[u8],
) -> Result<HttpResponse> {
    let (host, port) = instance(addr)?;
    let force = json_body::<ControlBody>(req, body)?.force;
    let req = ControlInstance {
        host,
        port,
        action,
        force,
    };
    Ok(HttpResponse::Ok().json(term.engine().control_instance_job(&req).await?))
}

/// Rebuild one storage replica in place (job `rebuild_node`): out of service, its data set
/// aside, a consistent copy of a healthy replica (else the primary) put in, then it follows
/// the primary by GTID again and is back in service; the old data is removed at the end.
#[utoipa::path(
    post, path = "/v1/instances/{instance}/rebuild", tag = "clusters",
    params(("instance" = String, Path, description = "`host:port` of a storage replica")),
    request_body(content = RebuildNode, description = "Optional: `{\"source\": \"host:port\"}` (a node of the same shard to copy from) and `\"method\": \"backup\"|\"dump\"`; `{}` or no body chooses both. A body must be `application/json` and exactly this shape"),
    responses(
        (status = 202, description = "Accepted; follow the job (memo: stage, nodes[] with phase pending|stopping|aside|copied|following|active|done|put_back|failed|skipped, source, method, gtid, outcome; steps)", body = JobAccepted),
        (status = 400, description = "Not host:port, or a bad body (unknown field, a source that is not a node of the shard): nothing was done", body = ErrorBody),
        (status = 404, description = "No storage node at host:port", body = ErrorBody),
        (status = 409, description = "Its shard's primary (switch over first), a node being installed or deleted, or a job changing its cluster: nothing was done", body = ErrorBody),
        (status = 415, body = ErrorBody),
    )
)]
pub async fn rebuild(
    cm: web::Data<ClusterManager>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let (host, port) = instance(&path)?;
    let body: RebuildNode = json_body(&req, &body)?;
    Ok(HttpResponse::Accepted().json(cm.rebuild_instance(&host, port, &body).await?))
}
