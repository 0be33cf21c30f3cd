//! The async job types of the Emit API, each mapped onto this manager's own job or call.
//!
//! Cluster jobs (`create_cluster` … `delete_comp`) are accepted onto the job runner exactly as
//! the REST API accepts them; their id is the answer. Machine, switch and no-switch types
//! are done at once (a probe over SSH or a switchover takes seconds) and recorded as a
//! finished job row, so `get_status` shows them like the original's jobs. Either way a
//! refusal is a job row ended `failed` with the original's code.

use kunlun_core::{ClusterManager, Term};
use kunlun_meta::api::{
    AddComps, AddNodes, AddShards, CreateCluster, RegisterMachine, UpdateMachine,
};
use kunlun_meta::model::{HaMode, JobStatus, MachineType, MemberState, NewJob};
use kunlun_meta::store::repo::jobs as job_rows;
use serde_json::{json, Value};

use super::codes::{self, Code};
use super::paras::{host_port, Fail, Paras};
use super::{EmitSettings, Request};
use crate::http::failovers::MAX_NO_SWITCH_SECS;

/// What a job type's handler reaches.
pub struct Ctx<'a> {
    pub engine: &'a ClusterManager,
    pub term: &'a Term,
    pub settings: &'a EmitSettings,
}

const CLUSTER_JOBS: &[&str] = &[
    "create_cluster",
    "delete_cluster",
    "add_shards",
    "delete_shard",
    "add_nodes",
    "delete_node",
    "add_comps",
    "delete_comp",
    "rebuild_node",
    "manual_backup_cluster",
    "cluster_restore",
];
const INLINE_JOBS: &[&str] = &[
    "create_machine",
    "update_machine",
    "delete_machine",
    "manual_switch",
    "set_noswitch",
    "control_instance",
    "create_backup_storage",
    "update_backup_storage",
    "delete_backup_storage",
    "update_cluster_coldback_time_period",
];

/// Whether `t` is an async type served here.
pub fn is_async(t: &str) -> bool {
    CLUSTER_JOBS.contains(&t) || INLINE_JOBS.contains(&t)
}

/// Machine registration is an admin's act on the REST API too; so is changing a storage
/// server's variables, and registering, repointing or removing a backup storage (the daemon
/// writes and removes files under its directory as the machine's SSH user).
pub fn needs_admin(t: &str) -> bool {
    t.ends_with("_machine")
        || t == "set_variable"
        || matches!(
            t,
            "create_backup_storage" | "update_backup_storage" | "delete_backup_storage"
        )
}

/// Runs or accepts one async request; `Ok(job id)` whether the job was accepted or ended
/// failed, `Err` only when not even a failed job row could be written.
pub async fn run(cx: &Ctx<'_>, r: &Request) -> Result<i64, String> {
    let t = r.job_type.as_str();
    let outcome = if CLUSTER_JOBS.contains(&t) {
        accept(cx, r).await
    } else {
        match inline(cx, r).await {
            Ok(memo) => return record(cx.engine, r, JobStatus::Done, memo).await,
            Err(f) => Err(f),
        }
    };
    match outcome {
        Ok(id) => Ok(id),
        Err(f) => {
            tracing::info!(job_type = t, code = f.code.0, error = %f.info(), "Emit job refused");
            let memo = json!({"error_code": f.code.0, "error_info": f.info()});
            record(cx.engine, r, JobStatus::Failed, memo).await
        }
    }
}

/// A finished job row for a request done at once or refused (one transaction: the runner
/// never sees it `not_started`).
async fn record(
    engine: &ClusterManager,
    r: &Request,
    status: JobStatus,
    memo: Value,
) -> Result<i64, String> {
    let store = engine.store().map_err(|e| e.to_string())?;
    let new = NewJob {
        job_type: r.job_type.clone(),
        job_info: redacted(&r.raw),
        user_name: r.user_name.clone(),
    };
    store
        .tx(async |tx| {
            let job = job_rows::create(tx, &new).await?;
            job_rows::update(tx, job.id, status, Some(&memo)).await
        })
        .await
        .map(|j| j.id)
        .map_err(|e| format!("the job row could not be written: {e}"))
}

/// The request as stored in `job_info`: every value whose key may name a secret
/// (`computer_password`, `backup_encrypt_key`, …), at any depth, is replaced by
/// `<redacted>`; job rows are readable by viewers.
fn redacted(raw: &Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, val) in m.iter_mut() {
                    let k = k.to_ascii_lowercase();
                    if ["pass", "pwd", "secret", "encrypt_key", "token"]
                        .iter()
                        .any(|w| k.contains(w))
                    {
                        *val = json!("<redacted>");
                    } else {
                        walk(val);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = raw.clone();
    walk(&mut v);
    v
}

/// Codes of a cluster job type: its cluster id missing, the cluster unknown, and anything
/// else our own checks refuse.
struct Codes {
    missing_cluster: Code,
    unknown: Code,
    refused: Code,
}

fn codes_of(t: &str) -> Codes {
    let c = |missing_cluster, unknown, refused| Codes {
        missing_cluster,
        unknown,
        refused,
    };
    match t {
        "delete_cluster" => c(codes::DC_LOST_PARA, codes::DC_BAD_ID, codes::DC_FAILED),
        "add_shards" => c(
            codes::AS_MISS_CLUSTER,
            codes::AS_NO_CLUSTER,
            codes::AS_INSTALL,
        ),
        "delete_shard" => c(
            codes::DS_MISS_CLUSTER,
            codes::DS_NOT_FOUND,
            codes::DS_FAILED,
        ),
        "add_nodes" => c(
            codes::AN_MISS_CLUSTER,
            codes::AN_NO_SHARD,
            codes::AN_INSTALL,
        ),
        "delete_node" => c(codes::DN_MISS_CLUSTER, codes::DN_NO_SHARD, codes::DN_FAILED),
        "rebuild_node" => c(
            codes::LOST_CLUSTER_ID,
            codes::RB_NOT_IN_SHARD,
            codes::RB_FAILED,
        ),
        "add_comps" => c(
            codes::AC_MISS_CLUSTER,
            codes::AC_NO_CLUSTER,
            codes::AC_INSTALL,
        ),
        "delete_comp" => c(
            codes::DCOMP_MISS_CLUSTER,
            codes::DCOMP_NOT_FOUND,
            codes::DCOMP_FAILED,
        ),
        _ => c(
            codes::LOST_CLUSTER_ID,
            codes::CC_INSERT_FAILED,
            codes::CC_INSTALL_STORAGE,
        ),
    }
}

/// Our refusal as the type's code: unknown ids `unknown`, everything else `refused`; our
/// message follows the original's.
fn refusal(c: &Codes, e: kunlun_core::Error) -> Fail {
    match e {
        kunlun_core::Error::NotFound { .. } => Fail::new(c.unknown, e.to_string()),
        other => Fail::new(c.refused, other.to_string()),
    }
}

async fn accept(cx: &Ctx<'_>, r: &Request) -> Result<i64, Fail> {
    let t = r.job_type.as_str();
    let p = r.paras();
    let c = codes_of(t);
    let e = cx.engine;
    let job = match t {
        "create_cluster" => e.create_cluster(&create_cluster(e, &p).await?).await,
        "delete_cluster" => e.delete_cluster(cluster_ref(e, &p).await?).await,
        "add_shards" => {
            let id = p.id("cluster_id", c.missing_cluster, c.unknown)?;
            let req = AddShards {
                shards: p.count("shards", codes::AS_MISS_SHARDS, codes::AS_BAD_SHARDS)?,
                nodes: p.count("nodes", codes::AS_MISS_NODES, codes::AS_BAD_NODES)?,
                storage_hosts: hosts_of(
                    e,
                    &p,
                    "storage_iplists",
                    MachineType::Storage,
                    codes::AS_IPLISTS,
                )
                .await?,
            };
            e.add_shards(id, &req).await
        }
        "delete_shard" => {
            let id = p.id("cluster_id", c.missing_cluster, c.unknown)?;
            let shard = p.id("shard_id", codes::DS_MISS_SHARD, codes::DS_NOT_FOUND)?;
            let shards = e.list_shards(id).await.map_err(|x| refusal(&c, x))?;
            if !shards.iter().any(|s| s.id == shard) {
                return Err(Fail::new(
                    c.unknown,
                    format!("shard {shard} is not in cluster {id}"),
                ));
            }
            if shards.len() == 1 {
                return Err(Fail::new(codes::DS_LAST, "delete the cluster instead"));
            }
            e.delete_shard(id, shard).await
        }
        "add_nodes" => {
            let id = p.id("cluster_id", c.missing_cluster, c.unknown)?;
            let req = AddNodes {
                nodes: p.count("nodes", codes::AN_MISS_NODES, codes::AN_BAD_NODES)?,
                storage_hosts: hosts_of(
                    e,
                    &p,
                    "storage_iplists",
                    MachineType::Storage,
                    codes::AN_IPLISTS,
                )
                .await?,
            };
            match p.opt_id("shard_id", codes::AN_NO_SHARD)? {
                Some(shard) => e.add_nodes(id, shard, &req).await,
                // As the original: no shard_id adds the nodes to every shard, in one job.
                None => {
                    let shards = e.list_shards(id).await.map_err(|x| refusal(&c, x))?;
                    let ids: Vec<i64> = shards.iter().map(|s| s.id).collect();
                    e.add_nodes_to_shards(id, &ids, &req).await
                }
            }
        }
        "delete_node" => {
            let id = p.id("cluster_id", c.missing_cluster, c.unknown)?;
            let shard = p.id("shard_id", codes::DN_MISS_SHARD, codes::DN_NO_SHARD)?;
            let host = p.req("hostaddr", codes::DN_MISS_HOSTADDR)?;
            let port = p.id("port", codes::DN_MISS_PORT, codes::DN_MISS_PORT)?;
            let nodes = e
                .list_shard_nodes(shard)
                .await
                .map_err(|x| refusal(&c, x))?;
            let Some(node) = nodes
                .iter()
                .find(|n| n.hostaddr == host && i64::from(n.port) == port)
            else {
                return Err(Fail::new(
                    codes::DN_NOT_IN_SHARD,
                    format!("{host}:{port} in shard {shard}"),
                ));
            };
            if nodes.len() == 1 {
                return Err(Fail::new(codes::DN_ONLY_NODE, format!("shard {shard}")));
            }
            if node.member_state == MemberState::Source {
                return Err(Fail::new(
                    codes::DN_PRIMARY,
                    format!("{host}:{port} is the primary: switch over first"),
                ));
            }
            e.delete_node(id, shard, node.id).await
        }
        "add_comps" => {
            let id = p.id("cluster_id", c.missing_cluster, c.unknown)?;
            let req = AddComps {
                comps: p.count("comps", codes::AC_MISS_COMPS, codes::AC_BAD_COMPS)?,
                computer_hosts: hosts_of(
                    e,
                    &p,
                    "computer_iplists",
                    MachineType::Computer,
                    codes::AC_IPLISTS,
                )
                .await?,
            };
            e.add_comps(id, &req).await
        }
        "delete_comp" => {
            let id = p.id("cluster_id", c.missing_cluster, c.unknown)?;
            let comp = p.id("comp_id", codes::DCOMP_MISS_COMP, codes::DCOMP_NOT_FOUND)?;
            let comps = e.list_comp_nodes(id).await.map_err(|x| refusal(&c, x))?;
            if !comps.iter().any(|n| n.id == comp) {
                return Err(Fail::new(
                    c.unknown,
                    format!("compute node {comp} is not in cluster {id}"),
                ));
            }
            if comps.len() == 1 {
                return Err(Fail::new(codes::DCOMP_LAST, "delete the cluster instead"));
            }
            e.delete_comp(id, comp).await
        }
        "rebuild_node" => {
            let id = p.id("cluster_id", c.missing_cluster, codes::GET_SHARD_FAILED)?;
            let req = super::rebuild::request(e, id, &p).await?;
            e.rebuild_nodes(id, req).await
        }
        "manual_backup_cluster" => {
            let id = p.id("cluster_id", c.missing_cluster, codes::PARAMETER_ERROR)?;
            let req = super::backup::request(e, &p).await?;
            e.backup_cluster(id, &req).await
        }
        "cluster_restore" => {
            let (dst, req) = super::backup::restore_request(e, &p).await?;
            e.restore_into(dst, &req).await
        }
        other => return Err(Fail::new(codes::UNRECOGNIZED_JOB_TYPE, other.to_string())),
    };
    job.map(|j| j.job_id).map_err(|x| refusal(&c, x))
}

/// The host list `key` (`storage_iplists`, `computer_iplists`), each a registered machine of
/// type `t` (else `bad`, as the original checks them against `server_nodes`).
async fn hosts_of(
    e: &ClusterManager,
    p: &Paras<'_>,
    key: &str,
    t: MachineType,
    bad: Code,
) -> Result<Vec<String>, Fail> {
    let hosts = p.list(key, bad)?;
    if hosts.is_empty() {
        return Ok(hosts);
    }
    let machines = e
        .list_machines()
        .await
        .map_err(|x| Fail::new(bad, x.to_string()))?;
    for h in &hosts {
        if !machines
            .iter()
            .any(|m| m.hostaddr == *h && m.machine_type == t)
        {
            return Err(Fail::new(
                bad,
                format!("{h} is not a registered {t} machine"),
            ));
        }
    }
    Ok(hosts)
}

/// `cluster_<unix ts>_<6-digit next id>`, as the original names clusters.
async fn cluster_name(e: &ClusterManager) -> Result<String, Fail> {
    let next = e
        .list_clusters()
        .await
        .map_err(|x| Fail::new(codes::CC_INSERT_FAILED, x.to_string()))?
        .iter()
        .map(|c| c.id)
        .max()
        .unwrap_or(0)
        + 1;
    let ts = chrono::Utc::now().timestamp();
    Ok(format!("cluster_{ts}_{next:06}"))
}

async fn create_cluster(e: &ClusterManager, p: &Paras<'_>) -> Result<CreateCluster, Fail> {
    let ha = p.req("ha_mode", codes::CC_MISS_HA_MODE)?;
    let ha_mode: HaMode = ha.parse().map_err(|_| {
        Fail::new(
            codes::CC_MISS_HA_MODE,
            format!("ha_mode {ha:?}: rbr, no_rep or mgr"),
        )
    })?;
    let shards = p.count("shards", codes::CC_MISS_SHARDS, codes::CC_BAD_SHARDS)?;
    let nodes = p.count("nodes", codes::CC_MISS_NODES, codes::CC_BAD_NODES)?;
    let comps = p.count("comps", codes::CC_MISS_COMPS, codes::CC_BAD_COMPS)?;
    // Required by the original; sizes are not enforced on instances here (see README).
    p.number("max_storage_size", codes::CC_MISS_MAX_STORAGE)?;
    let max_connections = p.number("max_connections", codes::CC_MISS_MAX_CONN)?;
    p.number("cpu_cores", codes::CC_MISS_CPU)?;
    let innodb = p.req("innodb_size", codes::CC_MISS_INNODB)?;
    let innodb_size_mb = super::paras::digits(&innodb)
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Fail::new(codes::CC_BAD_INNODB, format!("innodb_size {innodb:?}")))?;
    let req = CreateCluster {
        name: cluster_name(e).await?,
        nick_name: p.text("nick_name").filter(|s| !s.is_empty()),
        ha_mode,
        shards,
        nodes,
        comps,
        innodb_size_mb: Some(innodb_size_mb),
        max_connections: Some(u32::try_from(max_connections).map_err(|_| {
            Fail::new(
                codes::CC_MISS_MAX_CONN,
                format!("max_connections {max_connections}"),
            )
        })?),
        storage_hosts: hosts_of(
            e,
            p,
            "storage_iplists",
            MachineType::Storage,
            codes::CC_STORAGE_IPLISTS,
        )
        .await?,
        computer_hosts: hosts_of(
            e,
            p,
            "computer_iplists",
            MachineType::Computer,
            codes::CC_COMPUTER_IPLISTS,
        )
        .await?,
    };
    req.validate()
        .map_err(|x| Fail::new(codes::PARAMETER_ERROR, x.to_string()))?;
    Ok(req)
}

/// `cluster_id`, or else `cluster_name`, of an existing cluster.
async fn cluster_ref(e: &ClusterManager, p: &Paras<'_>) -> Result<i64, Fail> {
    if let Some(id) = p.text("cluster_id").filter(|s| !s.is_empty()) {
        let id = super::paras::digits(&id)
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| Fail::new(codes::DC_BAD_ID, format!("cluster_id {id:?}")))?;
        return Ok(id);
    }
    let name = p.req("cluster_name", codes::DC_LOST_PARA)?;
    let clusters = e
        .list_clusters()
        .await
        .map_err(|x| Fail::new(codes::DC_BAD_NAME, x.to_string()))?;
    clusters
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.id)
        .ok_or_else(|| Fail::new(codes::DC_BAD_NAME, format!("no cluster {name:?}")))
}

/// The types done at once; `Ok` is the finished job's memo.
async fn inline(cx: &Ctx<'_>, r: &Request) -> Result<Value, Fail> {
    let p = r.paras();
    match r.job_type.as_str() {
        "create_machine" => create_machine(cx, &p).await,
        "update_machine" => update_machine(cx, &p).await,
        "delete_machine" => delete_machine(cx, &p).await,
        "manual_switch" => manual_switch(cx, &p).await,
        "set_noswitch" => set_noswitch(cx, &p).await,
        "control_instance" => control_instance(cx, &p).await,
        "update_cluster_coldback_time_period" => super::backup::update_window(cx.engine, &p).await,
        t if super::backup_storage::TYPES.contains(&t) => {
            super::backup_storage::inline(cx.engine, t, &p).await
        }
        other => Err(Fail::new(codes::UNRECOGNIZED_JOB_TYPE, other.to_string())),
    }
}

fn machine_type(p: &Paras<'_>) -> Result<MachineType, Fail> {
    let t = p.req("machine_type", codes::MACHINE_MISS_TYPE)?;
    t.parse().map_err(|_| {
        Fail::new(
            codes::MACHINE_BAD_TYPE,
            format!("machine_type {t:?}: storage or computer"),
        )
    })
}

fn ok_memo() -> Value {
    json!({"error_code": 0, "error_info": ""})
}

/// The data directory of a machine's paras: `datadir` (storage, with `logdir` and
/// `wal_log_dir` required as by the original) or `comp_datadir`. Each instance keeps its
/// data, logs and WAL under one directory here.
fn machine_dirs(p: &Paras<'_>, t: MachineType, required: bool) -> Result<Option<String>, Fail> {
    let get = |key: &str, code: Code| {
        if required {
            p.req(key, code).map(Some)
        } else {
            Ok(p.text(key).filter(|s| !s.is_empty()))
        }
    };
    match t {
        MachineType::Storage => {
            let d = get("datadir", codes::MACHINE_MISS_DATADIR)?;
            get("logdir", codes::MACHINE_MISS_LOGDIR)?;
            get("wal_log_dir", codes::MACHINE_MISS_WALDIR)?;
            Ok(d)
        }
        MachineType::Computer => get("comp_datadir", codes::MACHINE_MISS_COMP_DATADIR),
    }
}

async fn create_machine(cx: &Ctx<'_>, p: &Paras<'_>) -> Result<Value, Fail> {
    let hostaddr = p.req("hostaddr", codes::MACHINE_MISS_HOSTADDR)?;
    let t = machine_type(p)?;
    let rack_id = p.req("rack_id", codes::MACHINE_MISS_RACK)?;
    let dir = machine_dirs(p, t, true)?.unwrap_or_default();
    let total_mem = p.number("total_mem", codes::MACHINE_MISS_MEM)?;
    let total_cores = p.number("total_cpu_cores", codes::MACHINE_MISS_CORES)?;
    let machines = cx
        .engine
        .list_machines()
        .await
        .map_err(|e| Fail::new(codes::MACHINE_EXISTS, e.to_string()))?;
    if machines
        .iter()
        .any(|m| m.hostaddr == hostaddr && m.machine_type == t)
    {
        return Err(Fail::new(
            codes::MACHINE_EXISTS,
            format!("{hostaddr} ({t}) is registered"),
        ));
    }
    let ssh_port = match p.text("ssh_port").filter(|s| !s.is_empty()) {
        None => cx.settings.ssh_port,
        Some(s) => super::paras::digits(&s)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| Fail::new(codes::PARAMETER_ERROR, format!("ssh_port {s:?}")))?,
    };
    let ssh_key_path = p
        .text("ssh_key_path")
        .filter(|s| !s.is_empty())
        .or_else(|| cx.settings.ssh_key.clone())
        .ok_or_else(|| {
            Fail::new(
                codes::PARAMETER_ERROR,
                "no SSH key: send ssh_key_path or set machine_ssh_key in cluster_mgr.cnf",
            )
        })?;
    let req = RegisterMachine {
        hostaddr,
        machine_type: t,
        ssh_port: Some(ssh_port),
        ssh_user: Some(
            p.text("ssh_user")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| cx.settings.ssh_user.clone()),
        ),
        ssh_key_path,
        data_dirs: vec![dir],
        port_range: p.text("port_range").filter(|s| !s.is_empty()),
        rack_id: Some(rack_id),
        total_mem_mb: Some(total_mem),
        total_cpu_cores: Some(total_cores),
        probe: true,
        ssh_host_key: p.text("ssh_host_key").filter(|s| !s.is_empty()),
    };
    let m = cx
        .engine
        .register_machine(&req)
        .await
        .map_err(|e| match e {
            kunlun_core::Error::Invalid(_) => Fail::new(codes::PARAMETER_ERROR, e.to_string()),
            kunlun_core::Error::Conflict(_) => Fail::new(codes::MACHINE_EXISTS, e.to_string()),
            other => Fail::new(codes::MACHINE_UNALIVE, other.to_string()),
        })?;
    let mut memo = ok_memo();
    memo["machine_id"] = json!(m.machine.id.to_string());
    Ok(memo)
}

/// The registered machine `hostaddr` of `machine_type`.
async fn machine_of(cx: &Ctx<'_>, p: &Paras<'_>) -> Result<kunlun_meta::model::Machine, Fail> {
    let hostaddr = p.req("hostaddr", codes::MACHINE_MISS_HOSTADDR_DEL)?;
    let t = machine_type(p)?;
    cx.engine
        .list_machines()
        .await
        .map_err(|e| Fail::new(codes::MACHINE_NOT_FOUND, e.to_string()))?
        .into_iter()
        .find(|m| m.hostaddr == hostaddr && m.machine_type == t)
        .ok_or_else(|| Fail::new(codes::MACHINE_NOT_FOUND, format!("{hostaddr} ({t})")))
}

async fn update_machine(cx: &Ctx<'_>, p: &Paras<'_>) -> Result<Value, Fail> {
    let m = machine_of(cx, p).await?;
    let opt_num = |k: &str| -> Result<Option<i64>, Fail> {
        match p.text(k).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(_) => p.number(k, codes::PARAMETER_ERROR).map(Some),
        }
    };
    let dir = machine_dirs(p, m.machine_type, false)?;
    let req = UpdateMachine {
        ssh_port: None,
        ssh_user: None,
        ssh_key_path: None,
        data_dirs: dir.filter(|d| !m.data_dirs.contains(d)).map(|d| vec![d]),
        port_range: p.text("port_range").filter(|s| !s.is_empty()),
        rack_id: p.text("rack_id").filter(|s| !s.is_empty()),
        total_mem_mb: opt_num("total_mem")?,
        total_cpu_cores: opt_num("total_cpu_cores")?,
        probe: true,
        ssh_host_key: None,
    };
    cx.engine
        .update_machine(m.id, &req)
        .await
        .map_err(|e| Fail::new(codes::PARAMETER_ERROR, e.to_string()))?;
    Ok(ok_memo())
}

async fn delete_machine(cx: &Ctx<'_>, p: &Paras<'_>) -> Result<Value, Fail> {
    let m = machine_of(cx, p).await?;
    if !m.used_ports.is_empty() || !m.installing_ports.is_empty() {
        return Err(Fail::new(
            codes::MACHINE_USED_PORTS,
            format!("{} has instances on ports {:?}", m.hostaddr, m.used_ports),
        ));
    }
    cx.engine.delete_machine(m.id).await.map_err(|e| match e {
        kunlun_core::Error::NotFound { .. } => Fail::new(codes::MACHINE_NOT_FOUND, e.to_string()),
        other => Fail::new(codes::MACHINE_USED_PORTS, other.to_string()),
    })?;
    Ok(ok_memo())
}

/// The shard `shard_id` of cluster `cluster_id`, checked.
async fn shard_in_cluster(cx: &Ctx<'_>, p: &Paras<'_>) -> Result<(i64, i64), Fail> {
    let cluster = p.id(
        "cluster_id",
        codes::LOST_CLUSTER_ID,
        codes::GET_SHARD_FAILED,
    )?;
    let shard = p.id("shard_id", codes::LOST_SHARD_ID, codes::GET_SHARD_FAILED)?;
    let s = cx
        .engine
        .get_shard(shard)
        .await
        .map_err(|e| Fail::new(codes::GET_SHARD_FAILED, e.to_string()))?;
    if s.db_cluster_id != cluster {
        return Err(Fail::new(
            codes::GET_SHARD_FAILED,
            format!("shard {shard} is not in cluster {cluster}"),
        ));
    }
    Ok((cluster, shard))
}

async fn manual_switch(cx: &Ctx<'_>, p: &Paras<'_>) -> Result<Value, Fail> {
    let (cluster, shard) = shard_in_cluster(cx, p).await?;
    let master = p.req("master_hostaddr", codes::LOST_MASTER_HOSTADDR)?;
    let (mh, mp) = host_port(&master).ok_or_else(|| {
        Fail::new(
            codes::LOST_MASTER_HOSTADDR,
            format!("master_hostaddr {master:?}: ip_port"),
        )
    })?;
    let nodes = cx
        .engine
        .list_shard_nodes(shard)
        .await
        .map_err(|e| Fail::new(codes::GET_SHARD_FAILED, e.to_string()))?;
    let is =
        |n: &kunlun_meta::model::ShardNode, h: &str, port: u16| n.hostaddr == h && n.port == port;
    if !nodes
        .iter()
        .any(|n| is(n, &mh, mp) && n.member_state == MemberState::Source)
    {
        return Err(Fail::new(codes::MASTER_NOT_SOURCE, format!("{mh}:{mp}")));
    }
    let target = match p.text("assign_hostaddr").filter(|s| !s.is_empty()) {
        None => None,
        Some(a) => {
            let (ah, ap) = host_port(&a).ok_or_else(|| {
                Fail::new(
                    codes::ASSIGN_NOT_REPLICA,
                    format!("assign_hostaddr {a:?}: ip_port"),
                )
            })?;
            let n = nodes
                .iter()
                .find(|n| is(n, &ah, ap) && n.member_state == MemberState::Replica)
                .ok_or_else(|| Fail::new(codes::ASSIGN_NOT_REPLICA, format!("{ah}:{ap}")))?;
            Some(n.id)
        }
    };
    let rec = cx
        .term
        .switchover(shard, target)
        .await
        .map_err(|e| Fail::new(codes::SUBMIT_SWITCH_FAILED, e.to_string()))?;
    let rec = serde_json::to_value(&rec).unwrap_or(Value::Null);
    if rec
        .get("outcome")
        .and_then(Value::as_str)
        .is_some_and(|o| o != "promoted")
    {
        return Err(Fail::new(codes::MANUAL_SW_FAILED, rec.to_string()));
    }
    let mut memo = ok_memo();
    memo["cluster_id"] = json!(cluster.to_string());
    memo["shard_id"] = json!(shard.to_string());
    memo["failover"] = rec;
    Ok(memo)
}

async fn set_noswitch(cx: &Ctx<'_>, p: &Paras<'_>) -> Result<Value, Fail> {
    let (cluster, shard) = shard_in_cluster(cx, p).await?;
    // `type` 1 holds the shard for `timeout` seconds; anything else lifts the hold.
    let hold = p.text("type").is_none_or(|t| t == "1");
    let seconds = if hold {
        let s = p.number("timeout", codes::PARAMETER_ERROR)?;
        // The REST API's cap: a hold longer than a week is refused, never silently kept.
        u64::try_from(s)
            .ok()
            .filter(|s| *s <= MAX_NO_SWITCH_SECS)
            .ok_or_else(|| {
                Fail::new(
                    codes::PARAMETER_ERROR,
                    format!("timeout {s}: at most {MAX_NO_SWITCH_SECS} seconds"),
                )
            })?
    } else {
        0
    };
    cx.term
        .set_no_switch(shard, seconds)
        .await
        .map_err(|e| Fail::new(codes::MANUAL_NOSWITCH_EXISTS, e.to_string()))?;
    let mut memo = ok_memo();
    memo["cluster_id"] = json!(cluster.to_string());
    memo["shard_id"] = json!(shard.to_string());
    memo["timeout"] = json!(seconds.to_string());
    Ok(memo)
}

/// `control_instance`: `hostaddr`, `port` and `control` (stop|start|restart) → the call the
/// REST route makes (`machine_type` and `cluster_id` are ignored: the instance is found by its
/// address). A primary is never stopped from here (the original has no force). Bad paras, a
/// refusal or a failed step: 70103.
async fn control_instance(cx: &Ctx<'_>, p: &Paras<'_>) -> Result<Value, Fail> {
    use kunlun_core::instances::control::{Control, ControlInstance};
    let host = p.req("hostaddr", codes::NODE_PARA)?;
    let port = p.number("port", codes::NODE_PARA)?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Fail::new(codes::NODE_PARA, format!("port: {port} is not a port")))?;
    let action = p.req("control", codes::NODE_PARA)?;
    let action = Control::parse(&action).map_err(|e| Fail::new(codes::NODE_PARA, e.to_string()))?;
    let req = ControlInstance {
        host,
        port,
        action,
        force: false,
    };
    let report = cx
        .engine
        .control_instance(&req)
        .await
        .map_err(|e| Fail::new(codes::NODE_PARA, e.to_string()))?;
    let report = serde_json::to_value(&report).unwrap_or(Value::Null);
    if let Some(e) = report.get("error").and_then(Value::as_str) {
        return Err(Fail::new(codes::NODE_PARA, e.to_string()));
    }
    let mut memo = ok_memo();
    memo["control"] = report;
    Ok(memo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_requests_hold_no_secret() {
        let raw = json!({"job_type": "create_cluster", "paras": {
            "computer_user": "u", "computer_password": "p1", "backup_encrypt_key": "k",
            "meta_pwd": "x", "shards": "1", "rb_nodes": [{"hdfs_password": "h"}]},
            "password": "top"});
        let v = redacted(&raw);
        assert_eq!(v["paras"]["computer_user"], "u");
        assert_eq!(v["paras"]["shards"], "1");
        for k in ["computer_password", "backup_encrypt_key", "meta_pwd"] {
            assert_eq!(v["paras"][k], "<redacted>", "{k}");
        }
        assert_eq!(v["paras"]["rb_nodes"][0]["hdfs_password"], "<redacted>");
        assert_eq!(v["password"], "<redacted>");
    }
}
