//! The sync job types of the Emit API: answered inline, no job row.
//!
//! The answer lifts `error_code`, `error_info`, `status`, `job_id` and `job_type` from the
//! handler's attachment to the top, with the original's defaults (`70001`, `""`, `failed`)
//! when the handler did not set them; `get_cluster_detail` keeps the original's quirk of
//! answering `failed`/`70001` beside its `work_mode`.

use std::time::Duration;

use kunlun_core::instances::VarValue;
use kunlun_core::{ClusterManager, Term};
use kunlun_meta::store::BackendKind;
use serde_json::{json, Map, Value};

use super::codes::{self, Code};
use super::paras::Fail;
use super::{reply, status, Request};

const SYNC: &[&str] = &[
    "get_status",
    "get_meta_mode",
    "get_meta_summary",
    "get_cluster_detail",
    "get_variable",
    "set_variable",
    "get_backup_storage",
];

/// Whether `t` is a sync type served here.
pub fn is_sync(t: &str) -> bool {
    SYNC.contains(&t)
}

/// How long `get_meta_summary` waits for each metadata node's port.
const META_PROBE: Duration = Duration::from_secs(1);

/// Answers one sync request.
pub async fn answer(engine: &ClusterManager, _term: &Term, r: &Request) -> actix_web::HttpResponse {
    let attachment = match r.job_type.as_str() {
        "get_status" => status::get_status(engine, &r.job_id).await,
        "get_meta_mode" => meta_mode(engine).await,
        "get_meta_summary" => meta_summary(engine).await,
        "get_cluster_detail" => Ok(json!({"work_mode": "community"})),
        "get_variable" => get_variable(engine, r).await,
        "set_variable" => set_variable(engine, r).await,
        "get_backup_storage" => super::backup_storage::list(engine).await,
        other => Err(Fail::new(codes::UNRECOGNIZED_JOB_TYPE, other.to_string())),
    };
    let mut attachment = match attachment {
        Ok(Value::Object(m)) => m,
        Ok(_) => Map::new(),
        Err(f) => {
            let mut m = Map::new();
            m.insert("error_code".into(), json!(f.code.0.to_string()));
            m.insert("error_info".into(), json!(f.info()));
            m.insert("status".into(), json!("failed"));
            m
        }
    };
    reply(lift(&mut attachment, r))
}

/// The answer: lifted fields at the top, the rest as the attachment.
fn lift(a: &mut Map<String, Value>, r: &Request) -> Value {
    let take = |a: &mut Map<String, Value>, k: &str, default: &str| match a.remove(k) {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => default.to_string(),
    };
    let error_code = take(a, "error_code", "70001");
    let error_info = take(a, "error_info", "");
    let status = take(a, "status", "failed");
    let job_id = take(a, "job_id", &r.job_id);
    let job_type = take(a, "job_type", "");
    json!({
        "version": "1.0",
        "error_code": error_code,
        "error_info": error_info,
        "status": status,
        "job_id": job_id,
        "job_type": job_type,
        "attachment": Value::Object(std::mem::take(a)),
    })
}

fn fail(code: Code) -> impl Fn(kunlun_core::Error) -> Fail {
    move |e| Fail::new(code, e.to_string())
}

/// `no_rep` for one metadata node (and the embedded store), else the recorded
/// `meta_ha_mode` (`rbr` when none is recorded).
async fn meta_mode(engine: &ClusterManager) -> Result<Value, Fail> {
    let members = meta_members(engine).await?;
    let mode = if engine.backend() == BackendKind::Sqlite || members.len() <= 1 {
        "no_rep".to_string()
    } else {
        let store = engine.store().map_err(fail(codes::INVALID_REQUEST))?;
        store
            .read(async |tx| kunlun_meta::store::repo::meta::get_config(tx, "meta_ha_mode").await)
            .await
            .map_err(|e| Fail::new(codes::INVALID_REQUEST, e.to_string()))?
            .unwrap_or_else(|| "rbr".into())
    };
    Ok(json!({"mode": mode, "status": "done", "error_code": "0"}))
}

/// The metadata shard's nodes as `(host, port, is primary)`: the `meta_db_nodes` rows, or,
/// when none is recorded (a store reached through `meta_group_seeds` alone), the seeds, the
/// one the store chose being the primary. Empty for the embedded store.
async fn meta_members(engine: &ClusterManager) -> Result<Vec<(String, u16, bool)>, Fail> {
    let store = engine.store().map_err(fail(codes::INVALID_REQUEST))?;
    let nodes = store
        .read(async |tx| kunlun_meta::store::repo::meta::list_meta_nodes(tx).await)
        .await
        .map_err(|e| Fail::new(codes::INVALID_REQUEST, e.to_string()))?;
    if !nodes.is_empty() {
        return Ok(nodes
            .into_iter()
            .map(|n| {
                let master = n.member_state == kunlun_meta::model::MemberState::Source;
                (n.hostaddr, n.port, master)
            })
            .collect());
    }
    let Some(report) = store.seed_report() else {
        return Ok(Vec::new());
    };
    Ok(report
        .attempts
        .iter()
        .filter_map(|a| {
            let (h, p) = a.seed.rsplit_once(':')?;
            let master = a.seed == report.chosen;
            Some((
                h.trim_matches(['[', ']']).to_string(),
                p.parse().ok()?,
                master,
            ))
        })
        .collect())
}

/// Each metadata node with `online` when its port answers within a second.
async fn meta_summary(engine: &ClusterManager) -> Result<Value, Fail> {
    let members = meta_members(engine).await?;
    let mut list = Vec::with_capacity(members.len());
    for (host, port, master) in &members {
        let up = tokio::time::timeout(
            META_PROBE,
            tokio::net::TcpStream::connect((host.as_str(), *port)),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        list.push(json!({
            "hostaddr": host,
            "port": port.to_string(),
            "status": if up { "online" } else { "offline" },
            "master": master.to_string(),
        }));
    }
    Ok(json!({"list_meta": list, "status": "done", "error_code": "0"}))
}

fn node_of(r: &Request) -> Result<(String, u16, String), Fail> {
    let p = r.paras();
    let host = p.req("hostaddr", codes::NODE_PARA)?;
    let port = p.id("port", codes::NODE_PARA, codes::NODE_PARA)?;
    let port =
        u16::try_from(port).map_err(|_| Fail::new(codes::NODE_PARA, format!("port {port}")))?;
    let var = p.req("variable", codes::NODE_PARA)?;
    Ok((host, port, var))
}

async fn get_variable(engine: &ClusterManager, r: &Request) -> Result<Value, Fail> {
    let (host, port, var) = node_of(r)?;
    match engine.node_variable(&host, port, &var).await {
        Ok(Some(v)) => {
            Ok(json!({"result": "true", "value": v, "status": "done", "error_code": "0"}))
        }
        Ok(None) => Ok(json!({
            "result": "false", "value": "", "status": "failed",
            "error_code": codes::GET_VARIABLE.0.to_string(),
            "error_info": format!("{}: no variable {var}", codes::GET_VARIABLE.1),
        })),
        Err(e) => Err(Fail::new(codes::GET_VARIABLE, e.to_string())),
    }
}

async fn set_variable(engine: &ClusterManager, r: &Request) -> Result<Value, Fail> {
    let (host, port, var) = node_of(r)?;
    let p = r.paras();
    let value = p.req("value", codes::NODE_PARA)?;
    let kind = p.text("type").unwrap_or_default();
    let value = VarValue::parse(&kind, &value).map_err(fail(codes::SET_VARIABLE))?;
    engine
        .set_node_variable(&host, port, &var, &value)
        .await
        .map_err(fail(codes::SET_VARIABLE))?;
    Ok(json!({"result": "true", "status": "done", "error_code": "0"}))
}
