//! The backup storage job types of the Emit API (`create_backup_storage`,
//! `update_backup_storage`, `delete_backup_storage`, done at once and recorded as a finished
//! job row; `get_backup_storage`, answered inline), mapped onto this manager's registry.
//!
//! Invariant: the original only registers HDFS (`stype` `HDFS` with `hostaddr` and `port`);
//! this manager has no HDFS storage and refuses it with `70203` and a message saying how to
//! register ours (`stype` `SSH_DIR`, `hostaddr` of a registered machine and a `path`); a
//! refusal stores nothing.

use kunlun_core::ClusterManager;
use kunlun_meta::api::{AddBackupStorage, KIND_SSH_DIR};
use serde_json::{json, Value};

use super::codes::{self, Code};
use super::paras::{Fail, Paras};

/// The async (inline) types served here.
pub const TYPES: &[&str] = &[
    "create_backup_storage",
    "update_backup_storage",
    "delete_backup_storage",
];

/// The `stype` our kind is registered with through this API.
pub const STYPE_SSH_DIR: &str = "SSH_DIR";

fn ok_memo() -> Value {
    json!({"error_code": 0, "error_info": ""})
}

/// `stype` must be `SSH_DIR`; `HDFS` (the original's only one) and anything else is `70203`.
fn check_stype(p: &Paras<'_>) -> Result<(), Fail> {
    let stype = p.req("stype", codes::MEMO_JSON)?;
    if stype.eq_ignore_ascii_case(STYPE_SSH_DIR) {
        return Ok(());
    }
    let why = if stype.eq_ignore_ascii_case("HDFS") {
        "HDFS is not supported by this cluster manager (it keeps backups in a directory on a \
         registered machine, over SSH); register one with stype \"SSH_DIR\", the hostaddr of a \
         registered machine and an absolute \"path\""
            .to_string()
    } else {
        format!("stype {stype:?}: the only supported stype is \"SSH_DIR\" (with hostaddr and path)")
    };
    Err(Fail::new(codes::BS_STYPE, why))
}

/// The failure of a registry call as the original's code: a taken name `70201`, an unknown
/// one `70202`, anything else `70200` with our message.
fn refusal(e: kunlun_core::Error) -> Fail {
    let code: Code = match &e {
        kunlun_core::Error::NotFound { what, .. } if *what == "backup storage" => codes::BS_NO_NAME,
        kunlun_core::Error::Conflict(m) if m.ends_with(" exists") => codes::BS_NAME_EXISTS,
        _ => codes::BS_ERROR,
    };
    Fail::new(code, e.to_string())
}

/// Runs one of [`TYPES`]; the memo of a done job, or the refusal.
pub async fn inline(engine: &ClusterManager, t: &str, p: &Paras<'_>) -> Result<Value, Fail> {
    let name = p.req("name", codes::MEMO_JSON)?;
    match t {
        "create_backup_storage" => {
            check_stype(p)?;
            let req = AddBackupStorage {
                name,
                kind: KIND_SSH_DIR.into(),
                hostaddr: p.req("hostaddr", codes::MEMO_JSON)?,
                path: p.req("path", codes::MEMO_JSON)?,
            };
            engine.add_backup_storage(&req).await.map_err(refusal)?;
        }
        "update_backup_storage" => {
            check_stype(p)?;
            let host = p.req("hostaddr", codes::MEMO_JSON)?;
            let path = p.req("path", codes::MEMO_JSON)?;
            engine
                .update_backup_storage(&name, &host, &path)
                .await
                .map_err(refusal)?;
        }
        "delete_backup_storage" => {
            engine.delete_backup_storage(&name).await.map_err(refusal)?;
        }
        other => return Err(Fail::new(codes::UNRECOGNIZED_JOB_TYPE, other.to_string())),
    }
    Ok(ok_memo())
}

/// `get_backup_storage`: `list_backup_storage:[{name, stype, hostaddr, port}]` as the original
/// (strings); ours are `SSH_DIR` with the SSH port of their machine, plus their `path`.
pub async fn list(engine: &ClusterManager) -> Result<Value, Fail> {
    let fail = |e: kunlun_core::Error| Fail::new(codes::BS_ERROR, e.to_string());
    let storages = engine.list_backup_storages().await.map_err(fail)?;
    let machines = engine
        .store()
        .map_err(fail)?
        .list_machines()
        .await
        .map_err(|e| fail(e.into()))?;
    let items: Vec<Value> = storages
        .iter()
        .map(|s| {
            let ours = s.kind == KIND_SSH_DIR;
            let port = machines
                .iter()
                .find(|m| ours && m.id == s.machine_id)
                .map_or_else(String::new, |m| m.ssh.port.to_string());
            let stype = if ours {
                STYPE_SSH_DIR.to_string()
            } else {
                s.kind.to_ascii_uppercase()
            };
            json!({
                "name": s.name, "stype": stype, "hostaddr": s.hostaddr, "port": port,
                "path": s.path,
            })
        })
        .collect();
    Ok(json!({"status": "done", "error_code": "0", "list_backup_storage": items}))
}
