//! The `create_cluster` and `delete_cluster` jobs: accepted as a job row at once, then run by
//! the job runner against the metadata store and the machines.
//!
//! Invariants:
//! - ports are reserved (`installing_ports`, compare-and-swap per machine) in the same
//!   transaction that inserts the cluster row (which creates its log tables) and the memo holding the plan,
//!   so after a crash the memo names exactly what may exist on the machines;
//! - a job found `ongoing` at start-up (the manager died mid-job) is rolled back from its
//!   memo: every planned instance uninstalled, ports released, rows and tables dropped; the
//!   memo never holds passwords (they live only in the node rows), so it cannot be resumed
//!   forward, and rolling back is what Kunlun does too (error 70106);
//! - shard, node and compute rows are written only after every instance answered, so no
//!   half-installed node is ever registered;
//! - every step (plan, reserve ports, install/start of each instance, replication of each
//!   shard, record topology, and on rollback the removal of each instance) is recorded in the
//!   memo's `steps` as it starts and ends (see [`Progress`]).

use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::{
    Job, JobStatus, MemberState, NewCluster, NewJob, NewShard, NewShardNode, NodeMapMaster,
    NodeStatus,
};
use kunlun_meta::store::repo::dirs::{self, NodeKind};
use kunlun_meta::store::repo::{clusters, comps, jobs, machines, meta, nodes, secrets, shards};
use kunlun_meta::store::{Store, Tx};
use kunlun_provision::placement::{PortSets, Slot};
use serde::{Deserialize, Serialize};

use super::plan::{plan_create_cluster, ClusterPlan, SystemPasswords};
use super::progress::{Progress, StepRecord, StepStatus};
use crate::accounts::MANAGER_USER;
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use kunlun_meta::{Error as MetaError, Result as MetaResult};
use std::collections::HashSet;

pub const CREATE_CLUSTER: &str = "create_cluster";
/// The progress step that writes the topology into the compute nodes' catalogs.
const PUSH_STEP: &str = "push topology to compute nodes";

/// Progress of a `create_cluster` job (the job's memo).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateMemo {
    /// `planned` → `installed` → `done`, or `rolled_back`.
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// The plan without passwords.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ClusterPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Step progress (see [`Progress`]); written by the job's progress, empty until then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
}

/// Accepts a `create_cluster` request: validated, name checked, job row written.
pub async fn accept_create_cluster(store: &Store, req: &CreateCluster) -> Result<Job> {
    req.validate()?;
    if store
        .list_clusters()
        .await?
        .iter()
        .any(|c| c.name == req.name)
    {
        return Err(Error::Conflict(format!(
            "cluster {} already exists",
            req.name
        )));
    }
    let info = serde_json::to_value(req).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(store
        .create_job(&NewJob {
            job_type: CREATE_CLUSTER.into(),
            job_info: info,
            user_name: None,
        })
        .await?)
}

fn to_json(memo: &CreateMemo) -> MetaResult<serde_json::Value> {
    serde_json::to_value(memo).map_err(|e| MetaError::Invalid(e.to_string()))
}

/// Ports of `plan` grouped per machine.
fn ports_by_machine(plan: &ClusterPlan) -> std::collections::BTreeMap<i64, Vec<u16>> {
    let mut m: std::collections::BTreeMap<i64, Vec<u16>> = Default::default();
    for (id, port) in plan.ports() {
        m.entry(id).or_default().push(port);
    }
    m
}

/// Applies `f` to the port sets of every machine `plan` uses (compare-and-swap each).
pub(crate) async fn update_ports(
    tx: &mut Tx,
    plan: &ClusterPlan,
    f: impl Fn(PortSets, &[u16]) -> std::result::Result<PortSets, kunlun_provision::Error>,
) -> MetaResult<()> {
    for (id, ports) in ports_by_machine(plan) {
        let m = machines::get(tx, id).await?;
        let sets = f(PortSets::of(&m), &ports).map_err(|e| MetaError::Conflict(e.to_string()))?;
        machines::set_ports(tx, &m, &sets.used, &sets.installing).await?;
    }
    Ok(())
}

/// Runs one claimed `create_cluster` job to `done` or `failed`, recording its steps in the
/// memo as it goes.
pub async fn run_create_cluster(store: &Store, prov: &Provisioner, job: &Job) -> Result<()> {
    let progress = Progress::for_job(store, job.id, job.memo.as_ref());
    let r = create(store, prov, job, &progress).await;
    progress.close().await;
    r
}

async fn create(store: &Store, prov: &Provisioner, job: &Job, progress: &Progress) -> Result<()> {
    let memo: CreateMemo = job
        .memo
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    if memo.plan.is_some() {
        // Resumed after a crash: roll back what the memo says may exist.
        return rollback(
            store,
            prov,
            job.id,
            memo,
            "the manager restarted mid-job",
            progress,
            false,
        )
        .await;
    }
    let req: CreateCluster = job
        .job_info
        .clone()
        .ok_or_else(|| Error::Invalid("job has no request".into()))
        .and_then(|v| serde_json::from_value(v).map_err(|e| Error::Invalid(e.to_string())))?;

    let step = progress.step("plan");
    let machines_now = store.list_machines().await?;
    let names: Vec<String> = store
        .list_clusters()
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    let plan = match plan_create_cluster(&req, &machines_now, &names, SystemPasswords::generate()) {
        Ok(p) => {
            step.done_with(format!(
                "{} shards x {} nodes + {} compute nodes",
                p.shards.len(),
                p.shards.first().map_or(0, |s| s.nodes.len()),
                p.comps.len()
            ));
            p
        }
        Err(e) => {
            step.fail(&e);
            return fail_with(store, job.id, CreateMemo::default(), &e, progress).await;
        }
    };
    progress.plan(["reserve ports"]);
    progress.plan(super::install::planned_steps(&plan));
    progress.plan(["record topology", PUSH_STEP]);

    // Reserve ports, create the cluster and its log tables, record the plan: all or nothing.
    let step = progress.step("reserve ports");
    let reserved = {
        let _write = progress.exclusive().await;
        store
            .tx(async |tx| {
                update_ports(tx, &plan, |s, p| s.reserve(p)).await?;
                let c = clusters::insert(
                    tx,
                    &NewCluster {
                        name: plan.name.clone(),
                        nick_name: req.nick_name.clone(),
                        owner: None,
                        business: None,
                        ha_mode: plan.ha_mode,
                        memo: None,
                    },
                )
                .await?;
                secrets::insert(tx, &super::plan_scale::secret_of(c.id, &plan.passwords)).await?;
                let memo = CreateMemo {
                    stage: "planned".into(),
                    cluster_id: Some(c.id),
                    cluster_name: Some(c.name.clone()),
                    plan: Some(plan.clone()),
                    ..CreateMemo::default()
                };
                let v = progress.memo_with(to_json(&memo)?);
                jobs::update(tx, job.id, JobStatus::Ongoing, Some(&v)).await?;
                Ok::<_, MetaError>(memo)
            })
            .await
    };
    let memo = match reserved {
        Ok(m) => {
            progress.set_memo(to_json(&m)?);
            step.done();
            m
        }
        Err(e) => {
            step.fail(&e);
            progress.skip_pending("ports could not be reserved");
            return fail_with(store, job.id, CreateMemo::default(), &e.into(), progress).await;
        }
    };

    if let Err(e) = prov
        .install_cluster_with(&machines_now, &plan, progress)
        .await
    {
        progress.skip_pending("an earlier step failed");
        return rollback(store, prov, job.id, memo, &e.to_string(), progress, true).await;
    }
    let cluster_id = memo.cluster_id.unwrap_or_default();
    let step = progress.step("record topology");
    let installed = CreateMemo {
        stage: "installed".into(),
        ..memo.clone()
    };
    let recorded = {
        let _write = progress.exclusive().await;
        store
            .tx(async |tx| {
                record_topology(tx, cluster_id, &plan).await?;
                update_ports(tx, &plan, |s, p| Ok(s.commit(p))).await?;
                let v = progress.memo_with(to_json(&installed)?);
                jobs::update(tx, job.id, JobStatus::Ongoing, Some(&v)).await?;
                Ok::<_, MetaError>(())
            })
            .await
    };
    match recorded {
        Ok(()) => {
            progress.set_memo(to_json(&installed)?);
            step.done();
        }
        Err(e) => {
            step.fail(&e);
            return rollback(store, prov, job.id, memo, &e.to_string(), progress, true).await;
        }
    }
    // A cluster whose compute nodes do not know its topology is not usable: roll it back.
    let step = progress.step(PUSH_STEP);
    let opts = crate::catalog::CatalogOptions::for_store(store);
    let why = match crate::catalog::push_cluster(store, cluster_id, &opts).await {
        Ok(r) if r.all_ok() => None,
        Ok(r) => Some(r.to_string()),
        Err(e) => Some(format!("catalog push: {e}")),
    };
    match why {
        None => step.done(),
        Some(why) => {
            step.fail(&why);
            return rollback(store, prov, job.id, memo, &why, progress, true).await;
        }
    }
    let done = CreateMemo {
        stage: "done".into(),
        ..memo.clone()
    };
    let _write = progress.seal().await;
    progress.set_memo(to_json(&done)?);
    store
        .update_job(job.id, JobStatus::Done, Some(&progress.memo()))
        .await?;
    Ok(())
}

/// Shard, node, `node_map_master` and compute rows of an installed plan.
async fn record_topology(tx: &mut Tx, cluster_id: i64, plan: &ClusterPlan) -> MetaResult<()> {
    for sp in &plan.shards {
        let shard = shards::insert(
            tx,
            &NewShard {
                name: sp.name.clone(),
                db_cluster_id: cluster_id,
                num_nodes: sp.nodes.len() as i64,
                sync_num: i64::from(sp.nodes.len() > 1),
            },
        )
        .await?;
        let primary = &sp.nodes[0].slot;
        for (i, n) in sp.nodes.iter().enumerate() {
            let row = nodes::insert(
                tx,
                &NewShardNode {
                    shard_id: shard.id,
                    db_cluster_id: cluster_id,
                    hostaddr: n.slot.hostaddr.clone(),
                    port: n.slot.port,
                    user_name: MANAGER_USER.into(),
                    passwd: plan.passwords.manager.clone(),
                    master_priority: 0,
                    member_state: if i == 0 {
                        MemberState::Source
                    } else {
                        MemberState::Replica
                    },
                    status: NodeStatus::Active,
                    innodb_buffer_pool_mb: i64::from(plan.innodb_size_mb),
                },
            )
            .await?;
            dirs::set(tx, NodeKind::Storage, row.id, &n.base_dir).await?;
            if i > 0 {
                meta::set_node_master(
                    tx,
                    &NodeMapMaster {
                        cluster_id,
                        node_host: host_port(&n.slot),
                        master_host: host_port(primary),
                        master_uuid: None,
                    },
                )
                .await?;
            }
        }
    }
    super::comps::record_comps(tx, cluster_id, plan).await?;
    Ok(())
}

/// Kunlun's `ip_port` spelling in `node_map_master`.
fn host_port(s: &Slot) -> String {
    format!("{}_{}", s.hostaddr, s.port)
}

/// Ends the job `failed` with `e` in the memo (and the steps of `progress`).
pub(crate) async fn fail_with(
    store: &Store,
    job_id: i64,
    mut memo: CreateMemo,
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

/// Uninstalls every instance of `plan`; only when that worked, removes the cluster's rows and
/// tables and releases the plan's ports. After a failed uninstall nothing is released, so no
/// instance that may still run loses its record or its ports.
pub async fn teardown(
    store: &Store,
    prov: &Provisioner,
    cluster_id: Option<i64>,
    plan: &ClusterPlan,
) -> Result<()> {
    teardown_with(store, prov, cluster_id, plan, &Progress::detached()).await
}

/// [`teardown`] reporting a `remove <kind> <host:port>` step per instance and a final
/// `remove rows and ports` step to `progress`.
pub async fn teardown_with(
    store: &Store,
    prov: &Provisioner,
    cluster_id: Option<i64>,
    plan: &ClusterPlan,
    progress: &Progress,
) -> Result<()> {
    teardown_sparing(store, prov, cluster_id, plan, progress, &HashSet::new()).await
}

/// [`teardown_with`] that does not uninstall the instances labelled in `untouched` (see
/// [`untouched`]): nothing of them exists on their machines, which may be unreachable. Their
/// ports are released like the others'.
async fn teardown_sparing(
    store: &Store,
    prov: &Provisioner,
    cluster_id: Option<i64>,
    plan: &ClusterPlan,
    progress: &Progress,
    untouched: &HashSet<String>,
) -> Result<()> {
    let machines_now = store.list_machines().await?;
    let mut remove = plan.clone();
    let keep = |kind: &str, i: &super::plan::InstancePlan| {
        !untouched.contains(&format!("{kind} {}:{}", i.slot.hostaddr, i.slot.port))
    };
    for s in &mut remove.shards {
        s.nodes.retain(|n| keep("storage", n));
    }
    remove.comps.retain(|c| keep("compute", c));
    prov.uninstall_cluster_with(&machines_now, &remove, progress)
        .await?;
    let name = plan.name.clone();
    let step = progress.step("remove rows and ports");
    let r = store
        .tx(async |tx| {
            if let Some(id) = cluster_id {
                for s in shards::list(tx, Some(id)).await? {
                    for n in nodes::list(tx, Some(s.id)).await? {
                        nodes::delete(tx, n.id).await?;
                    }
                    shards::delete(tx, s.id).await?;
                }
                for c in comps::list(tx, Some(id)).await? {
                    comps::delete(tx, c.id).await?;
                }
                for m in meta::list_node_masters(tx, Some(id)).await? {
                    meta::delete_node_master(tx, id, &m.node_host).await?;
                }
                secrets::delete(tx, id).await?;
                clusters::drop_log_tables(tx, &name).await?;
                if clusters::get(tx, id).await.is_ok() {
                    clusters::delete(tx, id).await?;
                }
            }
            update_ports(tx, plan, |s, p| Ok(s.release(p))).await?;
            Ok::<_, MetaError>(())
        })
        .await;
    match r {
        Ok(()) => {
            // The cluster's passwords were just deleted: no copy may stay in the SQLite WAL.
            if let Err(e) = store.checkpoint().await {
                tracing::warn!(error = %e, "cannot checkpoint the store after deleting secrets");
            }
            step.done();
            Ok(())
        }
        Err(e) => {
            step.fail(&e);
            Err(e.into())
        }
    }
}

/// Labels (`storage 127.0.0.2:57001`) of instances this job never touched: their `install`
/// step failed before writing anything (`nothing installed`), or, when `trust_pending` (the steps are this
/// run's own, not read back after a crash, where a start may not have been flushed yet), it
/// never started.
fn untouched(steps: &[StepRecord], trust_pending: bool) -> HashSet<String> {
    steps
        .iter()
        .filter(|r| match r.status {
            StepStatus::Pending | StepStatus::Skipped => trust_pending,
            StepStatus::Failed => r
                .note
                .as_deref()
                .is_some_and(|n| n.starts_with(super::install::NOTHING_INSTALLED)),
            _ => false,
        })
        .filter_map(|r| r.name.strip_prefix("install ").map(str::to_string))
        .collect()
}

/// Rolls a failed or interrupted create back ([`teardown`] of the memo's plan, sparing what
/// was never touched) and marks the job failed with `why`.
async fn rollback(
    store: &Store,
    prov: &Provisioner,
    job_id: i64,
    mut memo: CreateMemo,
    why: &str,
    progress: &Progress,
    trust_pending: bool,
) -> Result<()> {
    tracing::warn!(job_id, reason = why, "create_cluster failed; rolling back");
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
    memo.steps.clear();
    let spare = untouched(&progress.steps(), trust_pending);
    let mut why = why.to_string();
    match teardown_sparing(store, prov, memo.cluster_id, &plan, progress, &spare).await {
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

#[cfg(test)]
mod tests {
    use super::super::progress::StepStatus as S;
    use super::*;

    fn rec(name: &str, status: S, note: Option<&str>) -> StepRecord {
        StepRecord {
            name: name.into(),
            status,
            started_at: None,
            ms: None,
            note: note.map(Into::into),
        }
    }

    #[test]
    fn only_instances_never_touched_are_spared() {
        let steps = vec![
            rec("plan", S::Done, None),
            rec(
                "install storage h:1",
                S::Failed,
                Some("nothing installed: h: unreachable: refused"),
            ),
            rec("install storage h:5", S::Failed, Some("initialise: exit 1")),
            rec("install compute h:9", S::Pending, None),
            rec(
                "install compute h:12",
                S::Skipped,
                Some("an earlier step failed"),
            ),
            rec("start storage h:13", S::Pending, None),
        ];
        let live = untouched(&steps, true);
        assert_eq!(
            live,
            ["storage h:1", "compute h:9", "compute h:12"]
                .into_iter()
                .map(String::from)
                .collect()
        );
        let after_crash = untouched(&steps, false);
        assert_eq!(
            after_crash,
            ["storage h:1".to_string()].into_iter().collect()
        );
    }
}
