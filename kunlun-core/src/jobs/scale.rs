//! What the scale jobs (`add_shards`, `delete_shard`, `add_nodes`, `delete_node`) share: their
//! memo, reading the request and the cluster's passwords, reserving and committing ports with
//! the memo, rolling back new instances, recording new storage nodes, and the catalog push.
//!
//! Invariants: ports are reserved in the transaction that stores the plan in the memo, so after
//! a crash the memo names every instance that may exist; rows of new instances are written in
//! the transaction that commits their ports and moves the memo to `recorded`, so a job found
//! `recorded` after a restart is finished forward and any earlier stage is rolled back.

use kunlun_meta::model::{
    HaMode, Job, JobStatus, MemberState, NewShardNode, NodeMapMaster, NodeStatus, ShardNode,
};
use kunlun_meta::store::repo::{jobs, meta, nodes, secrets};
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::{Error as MetaError, Result as MetaResult};
use serde::{Deserialize, Serialize};

use super::cluster::update_ports;
use super::plan::{ClusterPlan, InstancePlan, SystemPasswords};
use super::plan_scale::{host_port, passwords_of};
use super::progress::{Progress, StepRecord};
use crate::accounts::MANAGER_USER;
use crate::catalog::{push_cluster, CatalogOptions};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;

/// Progress of a scale job (the job's memo).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleMemo {
    /// Adding: `planned` → `installed` → `recorded` → `done`, or `rolled_back` /
    /// `rollback_failed`. Removing: `removing` → `removed` → `done`. `failed` when nothing
    /// was reserved.
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<i64>,
    /// The instances added or removed (without passwords).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ClusterPlan>,
    /// Outcome of the compute-node catalog push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Step progress (see [`Progress`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
}

impl ScaleMemo {
    /// The memo stored with `job` (default when none or unreadable).
    pub fn of(job: &Job) -> ScaleMemo {
        job.memo
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }
}

pub(crate) fn to_json(memo: &ScaleMemo) -> MetaResult<serde_json::Value> {
    serde_json::to_value(memo).map_err(|e| MetaError::Invalid(e.to_string()))
}

/// The job's `job_info`: the request plus `cluster_id`, `name` and maybe `shard_id` /
/// `node_id` (see `accept_cluster_job`).
pub(crate) struct Info {
    pub cluster_id: i64,
    pub shard_id: Option<i64>,
    pub node_id: Option<i64>,
    /// The request's own fields only.
    pub request: serde_json::Value,
}

pub(crate) fn info(job: &Job) -> Result<Info> {
    let mut v = job
        .job_info
        .clone()
        .ok_or_else(|| Error::Invalid(format!("job {} has no request", job.id)))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Error::Invalid(format!("job {}: request is not an object", job.id)))?;
    let int = |o: &mut serde_json::Map<String, serde_json::Value>, k: &str| {
        o.remove(k).and_then(|x| x.as_i64())
    };
    let cluster_id = int(obj, "cluster_id")
        .ok_or_else(|| Error::Invalid(format!("job {}: request has no cluster_id", job.id)))?;
    let shard_id = int(obj, "shard_id");
    let node_id = int(obj, "node_id");
    obj.remove("name");
    Ok(Info {
        cluster_id,
        shard_id,
        node_id,
        request: v,
    })
}

/// The cluster's stored system passwords.
pub(crate) async fn passwords(store: &Store, cluster_id: i64) -> Result<SystemPasswords> {
    let s = store
        .read(async |tx| secrets::get(tx, cluster_id).await)
        .await
        .map_err(|e| match e {
            MetaError::NotFound { .. } => Error::Conflict(format!(
                "cluster {cluster_id} has no stored system passwords (created before they were \
                 kept); instances cannot be added to it"
            )),
            other => other.into(),
        })?;
    Ok(passwords_of(&s))
}

/// Ends the job `failed` with `e` in the memo (and the steps of `progress`).
pub(crate) async fn fail_with(
    store: &Store,
    job_id: i64,
    mut memo: ScaleMemo,
    e: &Error,
    progress: &Progress,
) -> Result<()> {
    memo.error = Some(e.to_string());
    if memo.stage.is_empty() {
        memo.stage = "failed".into();
    }
    let _write = progress.seal().await;
    progress.set_memo(to_json(&memo)?);
    store
        .update_job(job_id, JobStatus::Failed, Some(&progress.memo()))
        .await?;
    Ok(())
}

/// Writes `memo` as the job's memo, job still `ongoing`, in `tx` (hold `progress.exclusive()`).
/// The progress keeps its old memo: call [`adopt`] once the transaction committed, so a
/// rolled-back write never reaches the flusher (a restart would resume from a stage that was
/// never stored).
pub(crate) async fn write_memo(
    tx: &mut Tx,
    job_id: i64,
    memo: &ScaleMemo,
    progress: &Progress,
) -> MetaResult<()> {
    let v = progress.memo_with(to_json(memo)?);
    jobs::update(tx, job_id, JobStatus::Ongoing, Some(&v)).await?;
    Ok(())
}

/// Makes `memo` the progress's memo, after the transaction that wrote it committed.
pub(crate) fn adopt(progress: &Progress, memo: &ScaleMemo) -> Result<()> {
    progress.set_memo(to_json(memo)?);
    Ok(())
}

/// Reserves the plan's ports and stores `memo` (stage `planned`) in one transaction.
pub(crate) async fn reserve(
    store: &Store,
    job_id: i64,
    memo: &ScaleMemo,
    progress: &Progress,
) -> Result<()> {
    let plan = memo
        .plan
        .as_ref()
        .ok_or_else(|| Error::Internal("reserve without a plan".into()))?;
    let step = progress.step("reserve ports");
    let r = {
        let _write = progress.exclusive().await;
        store
            .tx(async |tx| {
                update_ports(tx, plan, |s, p| s.reserve(p)).await?;
                write_memo(tx, job_id, memo, progress).await
            })
            .await
    };
    match r {
        Ok(()) => {
            adopt(progress, memo)?;
            step.done();
            Ok(())
        }
        Err(e) => {
            step.fail(&e);
            Err(e.into())
        }
    }
}

/// Pushes the cluster's topology to its compute nodes; the outcome goes into the memo (a
/// compute node that was missed is caught up by the catalog sync, so this never fails a job).
pub(crate) async fn push_catalog(store: &Store, cluster_id: i64, progress: &Progress) -> String {
    let step = progress.step("push catalog");
    let note = match push_cluster(store, cluster_id, &CatalogOptions::for_store(store)).await {
        Ok(r) => r.to_string(),
        Err(e) => format!("catalog not pushed (the catalog sync retries): {e}"),
    };
    step.done_with(note.clone());
    note
}

/// The last stage: catalog pushed, job `done`.
pub(crate) async fn finish(
    store: &Store,
    job_id: i64,
    mut memo: ScaleMemo,
    progress: &Progress,
) -> Result<()> {
    if let Some(id) = memo.cluster_id {
        memo.catalog = Some(push_catalog(store, id, progress).await);
    }
    memo.stage = "done".into();
    let _write = progress.seal().await;
    progress.set_memo(to_json(&memo)?);
    store
        .update_job(job_id, JobStatus::Done, Some(&progress.memo()))
        .await?;
    Ok(())
}

/// Rolls back the new instances of `memo.plan` (uninstalled, ports released; their rows were
/// never written) and ends the job failed with `why`.
pub(crate) async fn rollback(
    store: &Store,
    prov: &Provisioner,
    job_id: i64,
    mut memo: ScaleMemo,
    why: &str,
    progress: &Progress,
) -> Result<()> {
    tracing::warn!(job_id, reason = why, "scale job failed; rolling back");
    let Some(plan) = memo.plan.clone() else {
        return fail_with(
            store,
            job_id,
            memo,
            &Error::Unavailable(why.to_string()),
            progress,
        )
        .await;
    };
    let mut why = why.to_string();
    match remove_instances(store, prov, &plan, progress).await {
        Ok(()) => memo.stage = "rolled_back".into(),
        Err(e) => {
            memo.stage = "rollback_failed".into();
            why.push_str(&format!(
                "; rollback failed, instances may remain and their ports stay reserved: {e}"
            ));
        }
    }
    fail_with(store, job_id, memo, &Error::Unavailable(why), progress).await
}

/// Uninstalls every instance of `plan`, then releases its ports (only when that worked).
async fn remove_instances(
    store: &Store,
    prov: &Provisioner,
    plan: &ClusterPlan,
    progress: &Progress,
) -> Result<()> {
    let machines = store.list_machines().await?;
    prov.uninstall_cluster_with(&machines, plan, progress)
        .await?;
    let step = progress.step("release ports");
    let r = store
        .tx(async |tx| update_ports(tx, plan, |s, p| Ok(s.release(p))).await)
        .await;
    match r {
        Ok(()) => {
            step.done();
            Ok(())
        }
        Err(e) => {
            step.fail(&e);
            Err(e.into())
        }
    }
}

/// Inserts the storage node row of `n` (shard `shard_id` of cluster `cluster_id`) and, for a
/// replica, which primary it follows.
pub(crate) async fn insert_node(
    tx: &mut Tx,
    cluster_id: i64,
    shard_id: i64,
    plan: &ClusterPlan,
    n: &InstancePlan,
    primary: Option<(&str, u16)>,
) -> MetaResult<ShardNode> {
    let row = nodes::insert(
        tx,
        &NewShardNode {
            shard_id,
            db_cluster_id: cluster_id,
            hostaddr: n.slot.hostaddr.clone(),
            port: n.slot.port,
            user_name: MANAGER_USER.into(),
            passwd: plan.passwords.manager.clone(),
            master_priority: 0,
            member_state: if primary.is_some() {
                MemberState::Replica
            } else {
                MemberState::Source
            },
            status: NodeStatus::Active,
            innodb_buffer_pool_mb: i64::from(plan.innodb_size_mb),
        },
    )
    .await?;
    kunlun_meta::store::repo::dirs::set(
        tx,
        kunlun_meta::store::repo::dirs::NodeKind::Storage,
        row.id,
        &n.base_dir,
    )
    .await?;
    if let Some((host, port)) = primary {
        meta::set_node_master(
            tx,
            &NodeMapMaster {
                cluster_id,
                node_host: host_port(&n.slot.hostaddr, n.slot.port),
                master_host: host_port(host, port),
                master_uuid: None,
            },
        )
        .await?;
    }
    Ok(row)
}

/// Deletes the rows of stored node `n` (its `node_map_master` row too), if still there.
pub(crate) async fn delete_node_rows(tx: &mut Tx, n: &ShardNode) -> MetaResult<()> {
    match nodes::delete(tx, n.id).await {
        Ok(()) | Err(MetaError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    meta::delete_node_master(tx, n.db_cluster_id, &host_port(&n.hostaddr, n.port)).await
}

/// Marks every node of `all` `Deleted` before its instance is uninstalled, so the HA monitor
/// drops it and failover/switchover never pick it (idempotent).
pub(crate) async fn retire_nodes(tx: &mut Tx, all: &[ShardNode]) -> MetaResult<()> {
    for n in all.iter().filter(|n| n.status != NodeStatus::Deleted) {
        match nodes::set_status(tx, n.id, NodeStatus::Deleted).await {
            Ok(()) | Err(MetaError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether semi-sync on a shard's primary must change when its node count goes from `before`
/// to `after`: on (`Some(true)`) for its first replica, off for its last one gone (else every
/// commit would wait `rpl_semi_sync_master_timeout` for an acknowledgement nobody sends). Only
/// `rbr` shards use semi-sync.
pub(crate) fn semi_sync_change(ha_mode: HaMode, before: usize, after: usize) -> Option<bool> {
    if ha_mode != HaMode::Rbr {
        return None;
    }
    match (before > 1, after > 1) {
        (false, true) => Some(true),
        (true, false) => Some(false),
        _ => None,
    }
}

/// Applies [`semi_sync_change`] to the shard's stored primary, now holding `after` nodes
/// (`before` earlier). Best effort, reported as a step: the topology change is already
/// recorded, so a failure here does not fail the job.
pub(crate) async fn match_semi_sync(
    store: &Store,
    shard_id: i64,
    ha_mode: HaMode,
    before: usize,
    progress: &Progress,
) {
    let current = match store.list_shard_nodes(Some(shard_id)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(shard_id, error = %e, "cannot read the shard to adjust semi-sync");
            return;
        }
    };
    let Some(on) = semi_sync_change(ha_mode, before, current.len()) else {
        return;
    };
    let step = progress.step(format!(
        "semi-sync {} on primary",
        if on { "on" } else { "off" }
    ));
    let Some(primary) = current
        .iter()
        .find(|n| n.member_state == MemberState::Source)
    else {
        step.fail(format!("shard {shard_id} has no primary"));
        return;
    };
    match super::seed::set_semi_sync(&crate::storage::NodeAddr::from(primary), on).await {
        Ok(()) => step.done_with(format!("{}:{}", primary.hostaddr, primary.port)),
        Err(e) => step.fail(e),
    }
}

/// Releases the ports of `plan` (idempotent).
pub(crate) async fn release_ports(tx: &mut Tx, plan: &ClusterPlan) -> MetaResult<()> {
    update_ports(tx, plan, |s, p| Ok(s.release(p))).await
}

/// Uninstalls every instance of a removal plan, reporting a step per instance.
pub(crate) async fn uninstall(
    store: &Store,
    prov: &Provisioner,
    plan: &ClusterPlan,
    progress: &Progress,
) -> Result<()> {
    let machines = store.list_machines().await?;
    prov.uninstall_cluster_with(&machines, plan, progress).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semi_sync_follows_whether_an_rbr_shard_has_replicas() {
        // First replica added to a single-node shard: on.
        assert_eq!(semi_sync_change(HaMode::Rbr, 1, 2), Some(true));
        // Last replica removed: off.
        assert_eq!(semi_sync_change(HaMode::Rbr, 2, 1), Some(false));
        // Replicas before and after: unchanged.
        assert_eq!(semi_sync_change(HaMode::Rbr, 2, 3), None);
        assert_eq!(semi_sync_change(HaMode::Rbr, 3, 2), None);
        // Other modes never use semi-sync.
        assert_eq!(semi_sync_change(HaMode::NoRep, 2, 1), None);
    }
}
