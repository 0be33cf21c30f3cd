//! Shard high availability over HTTP: `/v1/failovers` (records with their per-phase
//! timeline), `/v1/ha` (node health, alarms, counters, recent events), and the operator
//! controls `POST /v1/shards/{id}/switchover` and `POST /v1/shards/{id}/no_switch`.

use super::body::JsonObject;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use kunlun_meta::api::{ErrorBody, Page, PageQuery};
use serde::Deserialize;

use super::error::ApiError;
use kunlun_core::ha::FailoverRecord;
use kunlun_core::ClusterManager;

use super::leader::Leading;

type Result<T> = std::result::Result<T, ApiError>;

/// `?shard_id=&limit=&after=` of the listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only the records of this shard.
    pub shard_id: Option<i64>,
    /// At most this many, newest first (default 100, 1..=1000; anything else is a 400).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only records older than this id: the `X-Next-Cursor` of the previous page.
    pub after: Option<i64>,
}

/// Body of a switchover request: `{}` (or no body at all) means the best replica.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    pub target_node_id: Option<i64>,
}

/// Longest no-switch hold: 7 days. A longer one would in effect turn automatic failover off
/// for good, which is not what a hold is for.
pub const MAX_NO_SWITCH_SECS: u64 = 7 * 24 * 3600;

/// Body of a no-switch request: hold automatic failover for `seconds` (0 lifts it; at most
/// [`MAX_NO_SWITCH_SECS`]).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoSwitchRequest {
    #[schema(maximum = 604800)]
    pub seconds: u64,
}

impl NoSwitchRequest {
    fn validate(&self) -> Result<u64> {
        if self.seconds > MAX_NO_SWITCH_SECS {
            return Err(ApiError::invalid_field(format!(
                "seconds: {} is more than {MAX_NO_SWITCH_SECS} (7 days); set a hold of at most \
                 7 days and renew it if needed",
                self.seconds
            )));
        }
        Ok(self.seconds)
    }
}

/// The switchover body: empty means `{}`; anything else must be `application/json` (415) and
/// parse as [`SwitchoverRequest`] (400). Explicit, because an `Option<Json<_>>` extractor
/// turned every malformed body into "no body", i.e. a real switchover (issue 11).
fn switchover_body(req: &HttpRequest, body: &[u8]) -> Result<SwitchoverRequest> {
    if body.is_empty() {
        return Ok(SwitchoverRequest::default());
    }
    let json = req.mime_type().ok().flatten().is_some_and(|m| {
        m.subtype() == actix_web::mime::JSON || m.suffix() == Some(actix_web::mime::JSON)
    });
    if !json {
        return Err(ApiError::unsupported_media_type(
            "Content-Type must be application/json (or send no body for the best replica)",
        ));
    }
    serde_json::from_slice(body).map_err(|e| super::error::from_serde_json(&e))
}

/// Failover and switchover records, newest first (kept in the metadata store).
#[utoipa::path(
    get, path = "/v1/failovers", tag = "ha",
    params(ListQuery),
    responses(
        (status = 200, description = "Array of failover records, newest first: one page of at most `limit`; when older ones follow, `X-Next-Cursor` (and `Link rel=\"next\"`) give the next page's `after`. A failover record: id, cluster_id, shard_id, kind (automatic|switchover), started_at, old_primary, new_primary, outcome (promoted|refused|failed), proven_lossless, possible_loss, reason, fence, phases [{name, ms, note}], old_primary_fate, total_ms, errant_followers [{node_id, gtids}] (kept out for rebuild, not repointed), not_replicating and fence_unproven [{node_id, why}]", headers(
            ("X-Next-Cursor" = i64, description = "`after` of the next page; absent on the last"),
            ("Link" = String, description = "`<next page URL>; rel=\"next\"`; absent on the last"),
        )),
        (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn list(
    cm: web::Data<ClusterManager>,
    term: Option<Leading>,
    pages: web::Data<super::cache::Pages>,
    q: web::Query<ListQuery>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let limit = PageQuery {
        limit: q.limit,
        after: q.after,
    }
    .validate()?;
    // Newest first, older than the cursor; one more than the page tells whether more follow.
    // Ids are positive, so a cursor below 1 leaves nothing older.
    let before = q.after.map(|a| u64::try_from(a).unwrap_or(0));
    let probe = limit as usize + 1;
    let page = |rows: Vec<FailoverRecord>| {
        Page::from_probe(rows, limit, |r| i64::try_from(r.id).unwrap_or(i64::MAX))
    };
    // Stored records on every instance; the term adds those its monitor could not store, and
    // an answer with them is not kept (they change without the store changing).
    if let Some(t) = term.as_ref().filter(|t| t.failovers_in_memory(q.shard_id)) {
        let rows = t.failovers_page(q.shard_id, before, probe).await?;
        return Ok(super::page::ok(&req, page(rows)));
    }
    let store = cm.store()?;
    let read = async || Ok(page(cm.failovers_page(q.shard_id, before, probe).await?));
    pages.page(&req, store, read).await
}

/// One record with its timeline.
#[utoipa::path(
    get, path = "/v1/failovers/{id}", tag = "ha",
    params(("id" = u64, Path, description = "Failover record id")),
    responses(
        (status = 200, description = "A failover record: id, cluster_id, shard_id, kind (automatic|switchover), started_at, old_primary, new_primary, outcome (promoted|refused|failed), proven_lossless, possible_loss, reason, fence, phases [{name, ms, note}], old_primary_fate, total_ms, errant_followers [{node_id, gtids}] (kept out for rebuild, not repointed), not_replicating and fence_unproven [{node_id, why}]"),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn show(
    cm: web::Data<ClusterManager>,
    term: Option<Leading>,
    id: web::Path<u64>,
) -> Result<HttpResponse> {
    let rec = match &term {
        Some(t) => t.failover(*id).await?,
        None => cm.failover(*id).await?,
    };
    Ok(HttpResponse::Ok().json(rec))
}

/// Health of every probed storage node, alarms, counters and recent events.
#[utoipa::path(
    get, path = "/v1/ha", tag = "ha",
    responses(
        (status = 200, description = "{nodes: [{node_id, shard_id, cluster_id, addr, is_primary, state (up|suspect|down), consecutive_failures, probed_at, probe}], alarms: {shard_id: reason}, stats: {rounds, probes, probe_failures, failovers, failovers_refused, failovers_failed, failover_retries, shards_given_up, replication_restarts, replicas_repointed, errant_followers, followers_not_replicating, watched_primaries (primaries with a crash-watch session now)}, errant_followers: [{node_id, shard_id, ...}] (kept out for rebuild until rebuilt), events: [{at, cluster_id, shard_id, node_id, what}], keeper: the instance keeper (null when it does not run): {interval_secs, max_restarts, restart_window_secs, stats: {rounds, checks, check_failures, found_down, restarts, restart_failures, crash_loops}, nodes: [{kind (storage|compute), node_id, cluster_id, shard_id, addr, restarts, restarts_in_window, last_at, last_outcome}], crash_loops: [{kind, node_id, cluster_id, shard_id, addr, since, alarm, log_tail}], events: [{at, cluster_id, shard_id, kind, node_id, what}]}"),
        (status = 503, description = "The HA monitor is not running yet", body = ErrorBody),
    )
)]
pub async fn status(term: Leading) -> Result<HttpResponse> {
    let mut v = serde_json::to_value(term.ha_status()?)
        .map_err(|e| ApiError::from(kunlun_core::Error::Internal(e.to_string())))?;
    let keeper = serde_json::to_value(term.keeper_status())
        .map_err(|e| ApiError::from(kunlun_core::Error::Internal(e.to_string())))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("keeper".into(), keeper);
    }
    Ok(HttpResponse::Ok().json(v))
}

/// Planned switchover; answers with the record once it is done (or refused).
#[utoipa::path(
    post, path = "/v1/shards/{id}/switchover", tag = "ha",
    params(("id" = i64, Path, description = "Shard id")),
    request_body(content = SwitchoverRequest, description = "`{\"target_node_id\": N}`, or `{}` or no body at all for the best replica. A body must be `application/json` and exactly this shape: anything else is refused and nothing happens"),
    responses(
        (status = 200, description = "The switchover's record (outcome promoted, refused or failed). A failover record: id, cluster_id, shard_id, kind (automatic|switchover), started_at, old_primary, new_primary, outcome (promoted|refused|failed), proven_lossless, possible_loss, reason, fence, phases [{name, ms, note}], old_primary_fate, total_ms, errant_followers [{node_id, gtids}] (kept out for rebuild, not repointed), not_replicating and fence_unproven [{node_id, why}]"),
        (status = 400, description = "Malformed JSON, a wrong type or an unknown field: nothing was done", body = ErrorBody),
        (status = 415, description = "A body that is not application/json: nothing was done", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn switchover(
    term: Leading,
    id: web::Path<i64>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let target = switchover_body(&req, &body)?.target_node_id;
    Ok(HttpResponse::Ok().json(term.switchover(*id, target).await?))
}

/// Sets or lifts the no-switch hold of a shard.
#[utoipa::path(
    post, path = "/v1/shards/{id}/no_switch", tag = "ha",
    params(("id" = i64, Path, description = "Shard id")),
    request_body = NoSwitchRequest,
    responses(
        (status = 200, description = "{shard_id, seconds}"),
        (status = 400, description = "Bad JSON, or `seconds` not an integer in 0..=604800 (7 days)", body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn no_switch(
    term: Leading,
    id: web::Path<i64>,
    body: JsonObject<NoSwitchRequest>,
) -> Result<HttpResponse> {
    let seconds = body.validate()?;
    term.set_no_switch(*id, seconds).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "shard_id": *id, "seconds": seconds })))
}

/// The shard HA counters and per-node gauges in the Prometheus text format (appended to
/// `/metrics` while the monitor runs).
pub fn metrics_text(s: &kunlun_core::ha::HaStatus) -> String {
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP kunlun_cluster_mgr_{name} {help}\n# TYPE kunlun_cluster_mgr_{name} {kind}\nkunlun_cluster_mgr_{name} {v}\n"
        ));
    };
    let st = &s.stats;
    one(
        "ha_rounds_total",
        "counter",
        "Probe rounds of the shard HA monitor",
        st.rounds,
    );
    one(
        "ha_probes_total",
        "counter",
        "Storage-node probes",
        st.probes,
    );
    one(
        "ha_probe_failures_total",
        "counter",
        "Storage-node probes that failed",
        st.probe_failures,
    );
    one(
        "ha_failovers_total",
        "counter",
        "Failovers and switchovers that promoted a new primary",
        st.failovers,
    );
    one(
        "ha_failovers_refused_total",
        "counter",
        "Failovers refused (no provable candidate, no-switch, anti-flapping)",
        st.failovers_refused,
    );
    one(
        "ha_failovers_failed_total",
        "counter",
        "Failovers that failed part-way",
        st.failovers_failed,
    );
    one(
        "ha_failover_retries_total",
        "counter",
        "Failover attempts that retried an earlier failed one",
        st.failover_retries,
    );
    one(
        "ha_replication_restarts_total",
        "counter",
        "Replicas whose stopped replication (no error, e.g. after a restart) was started again",
        st.replication_restarts,
    );
    one(
        "ha_replicas_repointed_total",
        "counter",
        "Replicas with no or another source repointed to the primary by GTID",
        st.replicas_repointed,
    );
    one(
        "ha_errant_followers_total",
        "counter",
        "Followers a failover or switchover found holding transactions the new primary lacks (not repointed, kept out for rebuild)",
        st.errant_followers,
    );
    one(
        "ha_followers_not_replicating_total",
        "counter",
        "Followers a failover or switchover repointed that did not replicate within the bound",
        st.followers_not_replicating,
    );
    one(
        "ha_errant_followers",
        "gauge",
        "Nodes currently kept out for rebuild because of errant transactions",
        s.errant_followers.len() as u64,
    );
    one(
        "ha_shards_given_up",
        "gauge",
        "Shards whose failover retries are used up (alarmed until an operator acts)",
        st.shards_given_up,
    );
    one(
        "ha_alarms",
        "gauge",
        "Shards with an open HA alarm",
        s.alarms.len() as u64,
    );
    out.push_str("# HELP kunlun_cluster_mgr_ha_node_up Storage node answered its last probe\n# TYPE kunlun_cluster_mgr_ha_node_up gauge\n");
    for n in &s.nodes {
        out.push_str(&format!(
            "kunlun_cluster_mgr_ha_node_up{{shard=\"{}\",node=\"{}\"}} {}\n",
            n.shard_id,
            n.node_id,
            u8::from(n.probe.reachable)
        ));
    }
    out.push_str("# HELP kunlun_cluster_mgr_ha_probe_latency_ms Duration of the last probe\n# TYPE kunlun_cluster_mgr_ha_probe_latency_ms gauge\n");
    for n in &s.nodes {
        out.push_str(&format!(
            "kunlun_cluster_mgr_ha_probe_latency_ms{{shard=\"{}\",node=\"{}\"}} {}\n",
            n.shard_id, n.node_id, n.probe.latency_ms
        ));
    }
    out
}
