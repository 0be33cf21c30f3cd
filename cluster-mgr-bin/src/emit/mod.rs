//! The original KunlunBase job API: `POST /HttpService/Emit`, so Kunlun-XPanel, the
//! original's test suites and curl recipes drive this manager unchanged.
//!
//! A request is `{version, job_id, job_type, timestamp, user_name, paras}` with every value a
//! string; the answer is always HTTP 200, `text/plain`, with the CORS headers XPanel's browser
//! side needs, and a body `{version, error_code, error_info, status, job_id, attachment}`.
//! Job types map onto this manager's own jobs and calls ([`jobs`], [`sync`]); `get_status`
//! shows a job in the original's memo layout ([`status`]).
//!
//! Invariants:
//! - an async job type always answers `accept` with a `cluster_general_job_log` id once it got
//!   past the envelope: a para the original would refuse becomes a job row that ended
//!   `failed` with the original's 700xx code (as the original reports it, through
//!   `get_status`); nothing is guessed from a malformed para;
//! - an unknown or unsupported job type, a body that is not a JSON object, and a call on an
//!   instance that does not lead answer at once with `70001` and change nothing;
//! - jobs run on the same job runner, and the same checks, as the REST API's.

pub mod backup;
pub mod backup_storage;
pub mod codes;
pub mod jobs;
pub mod paras;
pub mod rebuild;
pub mod status;
pub mod sync;

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::auth::Role;
use serde_json::{json, Map, Value};

use crate::http::auth::Caller;
use crate::http::LeaderView;
use codes::Code;
use paras::{Fail, Paras};

/// The one path of this API.
pub const PATH: &str = "/HttpService/Emit";

/// Largest request body.
pub const MAX_BODY: usize = 256 * 1024;

/// The settings this API needs beyond the engine: SSH defaults for `create_machine`, which
/// has no SSH fields in the original.
#[derive(Debug, Clone)]
pub struct EmitSettings {
    pub ssh_user: String,
    pub ssh_port: u16,
    /// Private key for machines registered through Emit without `ssh_key_path`.
    pub ssh_key: Option<String>,
}

impl Default for EmitSettings {
    fn default() -> Self {
        EmitSettings {
            ssh_user: "root".into(),
            ssh_port: 22,
            ssh_key: None,
        }
    }
}

/// Job types the original knows that this manager does not do (yet), with why.
const NOT_SUPPORTED: &[(&str, &str)] = &[
    (
        "restore_new_cluster",
        "restore a backup into a new cluster with POST /v1/backups/{id}/restore",
    ),
    ("logical_backup", "logical backups are not supported"),
    ("logical_restore", "logical backups are not supported"),
    (
        "backup_cluster",
        "use manual_backup_cluster (or POST /v1/clusters/{id}/backups)",
    ),
    (
        "expand_cluster",
        "table moves between shards are not supported",
    ),
    (
        "get_expand_table_list",
        "table moves between shards are not supported",
    ),
    (
        "table_repartition",
        "table moves between shards are not supported",
    ),
    (
        "raft_mission",
        "this manager elects its leader with a lease in the metadata store, not raft",
    ),
    ("cluster_debug", "fault injection is not supported"),
    ("rename_cluster", "not supported"),
    ("update_prometheus", "this manager serves /metrics itself"),
    ("postgres_exporter", "this manager serves /metrics itself"),
    ("mysqld_exporter", "this manager serves /metrics itself"),
    ("update_instance_cgroup", "not supported"),
    ("create_rcr", "cross-cluster replication is not supported"),
    ("modify_rcr", "cross-cluster replication is not supported"),
    ("manualsw_rcr", "cross-cluster replication is not supported"),
    ("delete_rcr", "cross-cluster replication is not supported"),
    ("example_mission", "not supported"),
];

/// What one request is, after the envelope.
#[derive(Debug)]
pub struct Request {
    pub job_type: String,
    pub job_id: String,
    pub user_name: Option<String>,
    pub paras: Map<String, Value>,
    /// The whole request, stored as the job's `job_info` (as the original does).
    pub raw: Value,
}

impl Request {
    pub fn paras(&self) -> Paras<'_> {
        Paras(&self.paras)
    }
}

/// `OPTIONS /HttpService/Emit`: the CORS preflight answer.
pub async fn preflight() -> HttpResponse {
    with_cors(HttpResponse::Ok()).finish()
}

/// `POST /HttpService/Emit`.
pub async fn emit(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let Some(engine) = req.app_data::<web::Data<ClusterManager>>().cloned() else {
        return instant(
            Code(70001, "Invalid Request Protocal"),
            "no cluster manager",
        );
    };
    let settings = req
        .app_data::<web::Data<EmitSettings>>()
        .map(|s| s.get_ref().clone())
        .unwrap_or_default();
    let request = match envelope(&body) {
        Ok(r) => r,
        Err(why) => return instant(codes::INVALID_REQUEST, &why),
    };
    let jt = request.job_type.as_str();
    if let Some((_, why)) = NOT_SUPPORTED.iter().find(|(t, _)| *t == jt) {
        return instant(
            codes::UNRECOGNIZED_JOB_TYPE,
            &format!("{jt} is not supported by this cluster manager: {why}"),
        );
    }
    if !jobs::is_async(jt) && !sync::is_sync(jt) {
        return instant(codes::UNRECOGNIZED_JOB_TYPE, &format!("job_type {jt:?}"));
    }
    // The original serves this API on its leader only; a follower says where the leader is.
    let view = req.app_data::<web::Data<LeaderView>>().cloned();
    let term = match view.as_ref().map(|v| v.term_for(&engine)) {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            let leader = view
                .as_ref()
                .and_then(|v| v.info().leader)
                .map(|l| format!(" (the leader is {})", l.split('/').next().unwrap_or(&l)))
                .unwrap_or_default();
            return instant(codes::INVALID_REQUEST, &format!("not leader{leader}: {e}"));
        }
        None => kunlun_core::Term::standalone(&engine),
    };
    if jobs::needs_admin(jt) && !is_admin(&req) {
        return instant(
            codes::INVALID_REQUEST,
            &format!(
                "{jt} needs a token with role admin (machines and backup storages are \
                 registered by admins)"
            ),
        );
    }
    if sync::is_sync(jt) {
        let res = sync::answer(&engine, &term, &request).await;
        if jt == "set_variable" {
            audit(&req, &engine, jt).await;
        }
        return res;
    }
    let ctx = jobs::Ctx {
        engine: &engine,
        term: &term,
        settings: &settings,
    };
    let res = jobs::run(&ctx, &request).await;
    audit(&req, &engine, &request.job_type).await;
    match res {
        Ok(id) => accepted(id),
        Err(e) => instant(codes::INVALID_REQUEST, &e),
    }
}

/// The audit entry of a job type that changes something: `POST /HttpService/Emit <type>`.
async fn audit(req: &HttpRequest, engine: &ClusterManager, job_type: &str) {
    let entry = kunlun_meta::auth::NewAuditEntry {
        token_name: crate::http::auth::token_name(req),
        method: "POST".into(),
        path: format!("{PATH} {job_type}"),
        client: req
            .peer_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string()),
        status: 200,
    };
    crate::http::auth::record(engine, entry).await;
}

fn is_admin(req: &HttpRequest) -> bool {
    match req.extensions().get::<Caller>() {
        Some(Caller::Token { role, .. }) => *role >= Role::Admin,
        // Open mode, or a client on `emit_allowed_clients`.
        Some(Caller::Anonymous) => true,
        None => false,
    }
}

/// Parses the envelope leniently: only `job_type` is required; `job_id` may be a string or
/// a number; `paras` may be absent; unknown keys (`ver`, `timestamp`, …) are ignored.
pub fn envelope(body: &[u8]) -> Result<Request, String> {
    let raw: Value = serde_json::from_slice(body).map_err(|e| format!("JSON parse error: {e}"))?;
    let Value::Object(obj) = &raw else {
        return Err("JSON parse error: the body is not a JSON object".into());
    };
    let job_type = match obj.get("job_type") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err("job_type is missing".into()),
    };
    let job_id = match obj.get("job_id") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let user_name = match obj.get("user_name") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.chars().take(64).collect()),
        _ => None,
    };
    let paras = match obj.get("paras") {
        Some(Value::Object(m)) => m.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err("paras is not a JSON object".into()),
    };
    Ok(Request {
        job_type,
        job_id,
        user_name,
        paras,
        raw,
    })
}

/// The CORS headers of every answer (XPanel's browser side posts from its own origin).
fn with_cors(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header((header::ACCESS_CONTROL_MAX_AGE, "3600"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "*"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "POST, GET, OPTIONS"))
        .insert_header(("Access-Control-Allow-Private-Network", "true"));
    b
}

/// An answer: HTTP 200, `text/plain`, the JSON body and a newline.
pub fn reply(body: Value) -> HttpResponse {
    let mut text = body.to_string();
    text.push('\n');
    with_cors(HttpResponse::Ok())
        .content_type("text/plain; charset=utf-8")
        .body(text)
}

/// An error answered at once (nothing was recorded).
pub fn instant(code: Code, detail: &str) -> HttpResponse {
    reply(json!({
        "version": "1.0",
        "error_code": code.0.to_string(),
        "error_info": Fail::new(code, detail).info(),
        "status": "failed",
        "job_id": "",
        "attachment": null,
    }))
}

fn accepted(id: i64) -> HttpResponse {
    reply(json!({
        "version": "1.0",
        "error_code": "0",
        "error_info": "",
        "status": "accept",
        "job_id": id.to_string(),
        "attachment": null,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_lenient_where_the_original_is() {
        let r = envelope(br#"{"ver":"1.0","job_type":"get_status","job_id":7}"#).unwrap();
        assert_eq!(
            (r.job_type.as_str(), r.job_id.as_str()),
            ("get_status", "7")
        );
        assert!(r.paras.is_empty());
        let r =
            envelope(br#"{"job_type":" add_comps ","paras":{"x":"1"},"user_name":"u"}"#).unwrap();
        assert_eq!(r.job_type, "add_comps");
        assert_eq!(r.user_name.as_deref(), Some("u"));
        assert!(envelope(b"not json")
            .unwrap_err()
            .starts_with("JSON parse error"));
        assert!(envelope(b"[1]").is_err());
        assert_eq!(
            envelope(br#"{"paras":{}}"#).unwrap_err(),
            "job_type is missing"
        );
        assert!(envelope(br#"{"job_type":"x","paras":"a"}"#).is_err());
    }

    #[test]
    fn no_type_is_both_unsupported_and_served() {
        for (t, _) in NOT_SUPPORTED {
            assert!(!jobs::is_async(t) && !sync::is_sync(t), "{t}");
        }
    }
}
