//! `get_status`: one job in the original's memo layout.
//!
//! Rows the Emit API wrote itself (refusals, machine and switch types) already hold the
//! original's memo; rows of our cluster jobs are translated from our memo (its plan, step
//! list and error) and `job_info`: `storage_state`/`computer_state`
//! (`prepare → dispatch → done | failed`), `job_steps`, `shard_step` and `computer_step`
//! for create and delete cluster, hosts as `ip_port;` lists. Our step list is kept as
//! `steps` beside them.
//!
//! Invariant: never shows a password (the plan in our memo holds none).

use kunlun_core::ClusterManager;
use kunlun_meta::model::{Job, JobStatus};
use serde_json::{json, Map, Value};

use super::codes::{self, Code};
use super::paras::{digits, Fail};

/// The attachment of `get_status` for `job_id` (with the fields the answer lifts).
pub async fn get_status(engine: &ClusterManager, job_id: &str) -> Result<Value, Fail> {
    let id = digits(job_id)
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| Fail::new(codes::JOB_ID_NOT_FOUND, ""))?;
    let job = engine.get_job(id).await.map_err(|e| match e {
        kunlun_core::Error::NotFound { .. } => Fail::new(codes::JOB_ID_NOT_FOUND, ""),
        other => Fail::new(codes::INVALID_REQUEST, other.to_string()),
    })?;
    let nick = match cluster_id(&job) {
        Some(c) => engine
            .list_clusters()
            .await
            .ok()
            .and_then(|cs| cs.into_iter().find(|x| x.id == c).and_then(|x| x.nick_name)),
        None => None,
    };
    let shard_ids = match cluster_id(&job) {
        Some(c) => engine
            .list_shards(c)
            .await
            .map(|ss| ss.into_iter().map(|s| (s.name, s.id)).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(attachment(&job, nick, &shard_ids))
}

fn cluster_id(job: &Job) -> Option<i64> {
    let from = |v: Option<&Value>| v.and_then(|v| v.get("cluster_id")).and_then(Value::as_i64);
    from(job.memo.as_ref()).or_else(|| from(job.job_info.as_ref()))
}

/// The attachment for `job`; `nick` is the cluster's nick name, `shard_ids` its shards by name.
pub fn attachment(job: &Job, nick: Option<String>, shard_ids: &[(String, i64)]) -> Value {
    let memo = job.memo.clone().unwrap_or(Value::Null);
    let status = job.status.as_str();
    // Rows the Emit API recorded: already in the original's layout.
    if let Value::Object(m) = &memo {
        if m.contains_key("error_code") {
            let mut a = m.clone();
            a.insert("status".into(), json!(status));
            return Value::Object(a);
        }
    }
    let info = job.job_info.clone().unwrap_or(Value::Null);
    let failed = job.status == JobStatus::Failed;
    let error = memo
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let code: Code = if failed {
        failed_code(&job.job_type)
    } else {
        codes::OK
    };
    let phase = match job.status {
        JobStatus::NotStarted => "prepare",
        JobStatus::Ongoing => "dispatch",
        JobStatus::Done => "done",
        JobStatus::Failed => "failed",
    };
    let mut a = Map::new();
    a.insert("status".into(), json!(status));
    a.insert("error_code".into(), json!(code.0.to_string()));
    let info_text = match (failed, error.is_empty()) {
        (true, true) => code.1.to_string(),
        (true, false) => format!("{}: {error}", code.1),
        _ => String::new(),
    };
    a.insert("error_info".into(), json!(info_text));
    if let Some(c) = cluster_id(job) {
        a.insert("cluster_id".into(), json!(c.to_string()));
    }
    let name = info
        .get("name")
        .and_then(Value::as_str)
        .or_else(|| memo.pointer("/plan/name").and_then(Value::as_str))
        .unwrap_or_default();
    a.insert("cluster_name".into(), json!(name));
    if let Some(n) = nick.or_else(|| {
        info.get("nick_name")
            .and_then(Value::as_str)
            .map(String::from)
    }) {
        a.insert("nick_name".into(), json!(n));
    }
    let plan = memo.get("plan").cloned().unwrap_or(Value::Null);
    let shard_hosts = shard_hosts(&plan);
    let all_storage: String = shard_hosts.iter().map(|(_, h)| h.as_str()).collect();
    let shard_ids_v: Vec<Value> = shard_hosts
        .iter()
        .map(|(n, _)| {
            let id = shard_ids
                .iter()
                .find(|(s, _)| s == n)
                .map(|(_, i)| i.to_string());
            json!({ n.clone(): id.unwrap_or_default() })
        })
        .collect();
    let shard_hosts_v: Vec<Value> = shard_hosts
        .iter()
        .map(|(n, h)| json!({ n.clone(): h }))
        .collect();
    let comp_hosts = hosts(plan.get("comps"));
    let comp_ids = memo
        .get("comp_ids")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .or_else(|| info.get("comp_id").map(|i| i.to_string()))
        .unwrap_or_default();
    // One shard, or (add_nodes to every shard) `shard_ids` as `1,2,`, as the original lists them.
    let shard_id = match memo.get("shard_ids").or_else(|| info.get("shard_ids")) {
        Some(Value::Array(ids)) if !ids.is_empty() => {
            Some(ids.iter().map(|i| format!("{i},")).collect::<String>())
        }
        _ => memo
            .get("shard_id")
            .or_else(|| info.get("shard_id"))
            .map(|i| i.to_string().trim_matches('"').to_string()),
    };
    let err_field = if failed { error.clone() } else { String::new() };
    match job.job_type.as_str() {
        "create_cluster" | "delete_cluster" => {
            a.insert("storage_state".into(), json!(phase));
            a.insert("computer_state".into(), json!(phase));
            a.insert("job_steps".into(), json!("shard,computer"));
            a.insert(
                "shard_step".into(),
                json!([{
                    "storage_state": phase, "shard_ids": shard_ids_v, "shard_hosts": shard_hosts_v,
                    "storage_hosts": all_storage, "error_info": err_field,
                }]),
            );
            a.insert(
                "computer_step".into(),
                json!([{
                    "computer_state": phase, "computer_hosts": comp_hosts,
                    "computer_id": comp_ids, "error_info": err_field,
                }]),
            );
            a.insert("shard_error_info".into(), json!(err_field));
            a.insert("comp_error_info".into(), json!(err_field));
            if job.job_type == "create_cluster" {
                a.insert(
                    "computer_user".into(),
                    json!(kunlun_core::accounts::COMP_USER),
                );
            }
            if let Some(m) = plan.get("ha_mode") {
                a.insert("ha_mode".into(), m.clone());
            }
        }
        "add_shards" => {
            a.insert("storage_state".into(), json!(phase));
            a.insert("rollback_flag".into(), json!("0"));
            a.insert("shard_ids".into(), json!(shard_ids_v));
            a.insert("shard_hosts".into(), json!(shard_hosts_v));
            if let Some(m) = plan.get("ha_mode") {
                a.insert("ha_mode".into(), m.clone());
            }
        }
        "delete_shard" => {
            a.insert("storage_state".into(), json!(phase));
            a.insert("rollback_flag".into(), json!("0"));
            a.insert("shard_id".into(), json!(shard_id.unwrap_or_default()));
            a.insert("storage_hosts".into(), json!(all_storage));
        }
        "add_comps" | "delete_comp" => {
            a.insert("computer_state".into(), json!(phase));
            a.insert("rollback_flag".into(), json!("0"));
            a.insert("computer_id".into(), json!(comp_ids));
            a.insert("computer_hosts".into(), json!(comp_hosts));
            if job.job_type == "add_comps" {
                a.insert(
                    "computer_user".into(),
                    json!(kunlun_core::accounts::COMP_USER),
                );
            }
        }
        "rebuild_node" => {
            a.insert("storage_state".into(), json!(phase));
            a.insert("shard_id".into(), json!(shard_id.unwrap_or_default()));
            // The step running (or the last one), and each node's state as `ip_port: state`.
            let steps = memo.get("steps").and_then(Value::as_array);
            let step = steps.and_then(|s| {
                s.iter()
                    .rev()
                    .find(|x| x["status"] == "running")
                    .or_else(|| s.iter().rev().find(|x| x["status"] != "pending"))
            });
            a.insert(
                "job_step".into(),
                json!(step.and_then(|x| x["name"].as_str()).unwrap_or_default()),
            );
            let nodes = memo.get("nodes").and_then(Value::as_array);
            let states: Vec<Value> = nodes
                .map(|ns| {
                    ns.iter()
                        .map(|n| {
                            let key = format!(
                                "{}_{}",
                                n["host"].as_str().unwrap_or_default(),
                                n["port"].as_u64().unwrap_or_default()
                            );
                            let state = match n["phase"].as_str().unwrap_or_default() {
                                "pending" | "skipped" => "not_started",
                                "done" => "done",
                                "put_back" | "failed" => "failed",
                                _ => "ongoing",
                            };
                            json!({ key: state })
                        })
                        .collect()
                })
                .unwrap_or_default();
            a.insert("rbnode_state".into(), json!(states));
            if let Some(ns) = nodes {
                a.insert("rb_nodes".into(), json!(ns));
            }
            if failed && error.contains("no source") {
                let c = codes::RB_NO_PULL_HOST;
                a.insert("error_code".into(), json!(c.0.to_string()));
                a.insert("error_info".into(), json!(format!("{}: {error}", c.1)));
            }
        }
        "backup_cluster" => {
            a.insert("backup_state".into(), json!(phase));
            for k in ["backup_id", "parts"] {
                if let Some(v) = memo.get(k) {
                    a.insert(k.into(), v.clone());
                }
            }
        }
        "restore_into_cluster" => {
            a.insert("restore_state".into(), json!(phase));
            for k in [
                "backup_id",
                "restore_time",
                "consistent",
                "shards",
                "put_back",
            ] {
                if let Some(v) = memo.get(k) {
                    a.insert(k.into(), v.clone());
                }
            }
        }
        "add_nodes" | "delete_node" => {
            a.insert("storage_state".into(), json!(phase));
            a.insert("shard_state".into(), json!(phase));
            a.insert("shard_id".into(), json!(shard_id.unwrap_or_default()));
            a.insert("shard_hosts".into(), json!(all_storage));
        }
        _ => {}
    }
    if let Some(steps) = memo.get("steps") {
        a.insert("steps".into(), steps.clone());
    }
    Value::Object(a)
}

/// The generic failure code of a cluster job type.
fn failed_code(t: &str) -> Code {
    match t {
        "create_cluster" => codes::CC_INSTALL_STORAGE,
        "delete_cluster" => codes::DC_FAILED,
        "add_shards" => codes::AS_INSTALL,
        "delete_shard" => codes::DS_FAILED,
        "add_nodes" => codes::AN_INSTALL,
        "delete_node" => codes::DN_FAILED,
        "add_comps" => codes::AC_INSTALL,
        "delete_comp" => codes::DCOMP_FAILED,
        "rebuild_node" => codes::RB_FAILED,
        "backup_cluster" | "restore_into_cluster" => codes::PARAMETER_ERROR,
        _ => codes::INVALID_REQUEST,
    }
}

/// `ip_port;ip_port;` of a plan's instances.
fn hosts(instances: Option<&Value>) -> String {
    instances
        .and_then(Value::as_array)
        .map(|is| {
            is.iter()
                .filter_map(|i| {
                    let h = i.pointer("/slot/hostaddr")?.as_str()?;
                    let p = i.pointer("/slot/port")?.as_u64()?;
                    Some(format!("{h}_{p};"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Each planned shard's name and hosts.
fn shard_hosts(plan: &Value) -> Vec<(String, String)> {
    plan.get("shards")
        .and_then(Value::as_array)
        .map(|ss| {
            ss.iter()
                .map(|s| {
                    let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
                    (name.to_string(), hosts(s.get("nodes")))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(job_type: &str, status: JobStatus, memo: Value, info: Value) -> Job {
        Job {
            id: 9,
            job_type: job_type.into(),
            status,
            job_info: Some(info),
            memo: Some(memo),
            user_name: None,
            related_id: None,
            when_started: None,
            when_ended: None,
        }
    }

    #[test]
    fn create_cluster_reads_as_the_original_lays_it_out() {
        let memo = json!({
            "stage": "recorded", "cluster_id": 4,
            "plan": {"name": "cluster_1_000004", "ha_mode": "rbr", "shards": [
                {"name": "shard_1", "nodes": [
                    {"slot": {"machine_id": 1, "hostaddr": "10.0.0.1", "port": 57001}},
                    {"slot": {"machine_id": 2, "hostaddr": "10.0.0.2", "port": 57001}}]}],
                "comps": [{"slot": {"machine_id": 3, "hostaddr": "10.0.0.3", "port": 47001}}]},
            "steps": [{"name": "install", "status": "done"}],
        });
        let info = json!({"name": "cluster_1_000004", "nick_name": "n"});
        let a = attachment(
            &job("create_cluster", JobStatus::Done, memo, info),
            None,
            &[("shard_1".into(), 7)],
        );
        assert_eq!(a["status"], "done");
        assert_eq!(a["error_code"], "0");
        assert_eq!(a["cluster_id"], "4");
        assert_eq!(a["cluster_name"], "cluster_1_000004");
        assert_eq!(a["nick_name"], "n");
        assert_eq!(a["job_steps"], "shard,computer");
        assert_eq!(a["storage_state"], "done");
        assert_eq!(
            a["shard_step"][0]["storage_hosts"],
            "10.0.0.1_57001;10.0.0.2_57001;"
        );
        assert_eq!(a["shard_step"][0]["shard_ids"][0]["shard_1"], "7");
        assert_eq!(a["computer_step"][0]["computer_hosts"], "10.0.0.3_47001;");
        assert_eq!(a["steps"][0]["name"], "install");
        assert!(a.get("computer_pwd").is_none(), "passwords are never shown");
    }

    #[test]
    fn a_failed_job_carries_its_kinds_code_and_our_error() {
        let memo = json!({"stage": "", "error": "no machine"});
        let a = attachment(
            &job("add_comps", JobStatus::Failed, memo, json!({})),
            None,
            &[],
        );
        assert_eq!(a["status"], "failed");
        assert_eq!(a["error_code"], "70148");
        assert!(a["error_info"].as_str().unwrap().ends_with(": no machine"));
        assert_eq!(a["computer_state"], "failed");
    }

    #[test]
    fn an_emit_row_passes_through_with_its_status() {
        let memo = json!({"error_code": 70071, "error_info": "x"});
        let a = attachment(
            &job("create_cluster", JobStatus::Failed, memo, json!({})),
            None,
            &[],
        );
        assert_eq!(a["error_code"], 70071);
        assert_eq!(a["status"], "failed");
    }
}
