//! The `delete_cluster` job: every storage and compute instance of a cluster uninstalled,
//! then its rows and per-cluster tables removed and its ports released.
//!
//! Invariants: the instances to remove are derived from the metadata rows (pure
//! [`plan_from_rows`]), and rows go only after their instances are gone; a cluster another
//! job is working on is refused (`Conflict`, HTTP 409).

use kunlun_meta::api::ClusterDetail;
use kunlun_meta::model::{Job, JobStatus, Machine, MachineType, NewJob};
use std::collections::HashMap;

use kunlun_meta::store::repo::dirs::{self, NodeKind};
use kunlun_meta::store::repo::nodes;
use kunlun_meta::store::Store;
use kunlun_provision::placement::{InstanceKind, Slot};
use serde::{Deserialize, Serialize};

use super::cluster::teardown_with;
use super::plan::{base_dir, ClusterPlan, InstancePlan, ShardPlan, SystemPasswords};
use super::progress::Progress;
use super::scale::retire_nodes;
use crate::error::{Error, Result};
use crate::fleet::Provisioner;

pub const DELETE_CLUSTER: &str = "delete_cluster";

/// The request stored as the job's `job_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteClusterInfo {
    pub cluster_id: i64,
    pub name: String,
}

/// True if a job that is not finished names the cluster (by id or name).
pub(crate) async fn busy(store: &Store, id: i64, name: &str) -> Result<bool> {
    for status in [JobStatus::NotStarted, JobStatus::Ongoing] {
        let q = kunlun_meta::api::JobQuery {
            status: Some(status),
            job_type: None,
            limit: Some(1000),
            after: None,
        };
        for j in store.list_jobs(&q).await? {
            let info = j.job_info.unwrap_or_default();
            let same_id = info.get("cluster_id").and_then(|v| v.as_i64()) == Some(id);
            let same_name = info.get("name").and_then(|v| v.as_str()) == Some(name);
            if same_id || same_name {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Accepts a `delete_cluster`: the cluster must exist and no other job may be changing it.
pub async fn accept_delete_cluster(store: &Store, cluster_id: i64) -> Result<Job> {
    let c = store.get_cluster(cluster_id).await?;
    if busy(store, c.id, &c.name).await? {
        return Err(Error::Conflict(format!(
            "cluster {} has a job in progress",
            c.name
        )));
    }
    let info = DeleteClusterInfo {
        cluster_id: c.id,
        name: c.name,
    };
    Ok(store
        .create_job(&NewJob {
            job_type: DELETE_CLUSTER.into(),
            job_info: serde_json::to_value(&info).map_err(|e| Error::Internal(e.to_string()))?,
            user_name: None,
        })
        .await?)
}

/// The instances of a stored cluster as a plan (passwords unknown: only good for removal).
pub fn plan_from_rows(detail: &ClusterDetail, machines: &[Machine]) -> Result<ClusterPlan> {
    let slot = |host: &str, port: u16, ty: MachineType| -> Result<Slot> {
        let m = machines
            .iter()
            .find(|m| m.hostaddr == host && m.machine_type == ty)
            .ok_or_else(|| Error::NotFound {
                what: "machine",
                id: format!("{host} ({ty})"),
            })?;
        Ok(Slot {
            machine_id: m.id,
            hostaddr: host.to_string(),
            port,
        })
    };
    let inst = |s: Slot, kind: InstanceKind| -> Result<InstancePlan> {
        Ok(InstancePlan {
            base_dir: base_dir(machines, kind, &s)?,
            server_id: 0,
            slot: s,
        })
    };
    let mut shards = Vec::new();
    for sd in &detail.shards {
        let mut nodes = Vec::new();
        for n in &sd.nodes {
            nodes.push(inst(
                slot(&n.hostaddr, n.port, MachineType::Storage)?,
                InstanceKind::Storage,
            )?);
        }
        shards.push(ShardPlan {
            name: sd.shard.name.clone(),
            nodes,
        });
    }
    let mut comps = Vec::new();
    for c in &detail.comp_nodes {
        comps.push(inst(
            slot(&c.hostaddr, c.port, MachineType::Computer)?,
            InstanceKind::Compute,
        )?);
    }
    Ok(ClusterPlan {
        name: detail.cluster.name.clone(),
        ha_mode: detail.cluster.ha_mode,
        innodb_size_mb: 0,
        max_connections: 0,
        shards,
        comps,
        passwords: SystemPasswords::unknown(),
    })
}

/// Replaces the computed base dirs in `plan` (of instances of `detail`'s cluster) by those
/// recorded at install, matched by host and port; instances without a record (installed
/// before dirs were recorded) keep the computed dir.
pub async fn apply_recorded_dirs(
    store: &Store,
    plan: &mut ClusterPlan,
    detail: &ClusterDetail,
) -> Result<()> {
    let node_ids: Vec<i64> = detail
        .shards
        .iter()
        .flat_map(|s| s.nodes.iter().map(|n| n.id))
        .collect();
    let comp_ids: Vec<i64> = detail.comp_nodes.iter().map(|c| c.id).collect();
    let (node_dirs, comp_dirs) = store
        .read(async |tx| {
            Ok((
                dirs::get_many(tx, NodeKind::Storage, &node_ids).await?,
                dirs::get_many(tx, NodeKind::Compute, &comp_ids).await?,
            ))
        })
        .await?;
    let mut storage: HashMap<(&str, u16), &String> = HashMap::new();
    for n in detail.shards.iter().flat_map(|s| s.nodes.iter()) {
        if let Some(d) = node_dirs.get(&n.id) {
            storage.insert((n.hostaddr.as_str(), n.port), d);
        }
    }
    let mut compute: HashMap<(&str, u16), &String> = HashMap::new();
    for c in &detail.comp_nodes {
        if let Some(d) = comp_dirs.get(&c.id) {
            compute.insert((c.hostaddr.as_str(), c.port), d);
        }
    }
    for n in plan.shards.iter_mut().flat_map(|s| s.nodes.iter_mut()) {
        if let Some(d) = storage.get(&(n.slot.hostaddr.as_str(), n.slot.port)) {
            n.base_dir = d.to_string();
        }
    }
    for c in plan.comps.iter_mut() {
        if let Some(d) = compute.get(&(c.slot.hostaddr.as_str(), c.slot.port)) {
            c.base_dir = d.to_string();
        }
    }
    Ok(())
}

/// Runs one claimed `delete_cluster` job to `done` or `failed`.
pub async fn run_delete_cluster(store: &Store, prov: &Provisioner, job: &Job) -> Result<()> {
    let info: DeleteClusterInfo = job
        .job_info
        .clone()
        .ok_or_else(|| Error::Invalid("job has no request".into()))
        .and_then(|v| serde_json::from_value(v).map_err(|e| Error::Invalid(e.to_string())))?;
    let progress = Progress::for_job(store, job.id, job.memo.as_ref());
    progress.set_memo(serde_json::json!({ "stage": "removing", "cluster_id": info.cluster_id }));
    let result = async {
        let step = progress.step("read topology");
        let planned = async {
            let detail = store.cluster_detail(info.cluster_id).await?;
            let machines = store.list_machines().await?;
            let mut plan = plan_from_rows(&detail, &machines)?;
            apply_recorded_dirs(store, &mut plan, &detail).await?;
            Ok::<_, Error>(plan)
        }
        .await;
        let plan = match planned {
            Ok(p) => {
                step.done();
                p
            }
            Err(e) => {
                step.fail(&e);
                return Err(e);
            }
        };
        progress.plan(removal_steps(&plan));
        // Every storage node is marked `Deleted` before any is touched, so HA stops watching
        // the cluster's shards and never fails over to a node being removed.
        store
            .tx(async |tx| {
                let all = nodes::list_by_cluster(tx, info.cluster_id).await?;
                retire_nodes(tx, &all).await
            })
            .await?;
        teardown_with(store, prov, Some(info.cluster_id), &plan, &progress).await
    }
    .await;
    let (status, memo) = match &result {
        Ok(()) => (
            JobStatus::Done,
            serde_json::json!({ "stage": "done", "cluster_id": info.cluster_id }),
        ),
        // Already gone (a resumed job that had finished the removal): done.
        Err(Error::NotFound {
            what: "cluster", ..
        }) => (
            JobStatus::Done,
            serde_json::json!({ "stage": "done", "cluster_id": info.cluster_id }),
        ),
        Err(e) => (
            JobStatus::Failed,
            serde_json::json!({ "stage": "failed", "cluster_id": info.cluster_id, "error": e.to_string() }),
        ),
    };
    {
        let _write = progress.seal().await;
        progress.set_memo(memo);
        store
            .update_job(job.id, status, Some(&progress.memo()))
            .await?;
    }
    progress.close().await;
    Ok(())
}

/// The steps `delete_cluster` reports for `plan`: one `remove <kind> <host:port>` per
/// instance, then `remove rows and ports`.
fn removal_steps(plan: &ClusterPlan) -> Vec<String> {
    let storage = plan
        .shards
        .iter()
        .flat_map(|s| s.nodes.iter())
        .map(|n| ("storage", n));
    let comps = plan.comps.iter().map(|c| ("compute", c));
    storage
        .chain(comps)
        .map(|(kind, i)| format!("remove {kind} {}:{}", i.slot.hostaddr, i.slot.port))
        .chain(std::iter::once("remove rows and ports".to_string()))
        .collect()
}
