//! The `add_comps` and `delete_comp` jobs: new compute nodes installed, recorded and given the
//! cluster topology; a compute node uninstalled and removed.
//!
//! Invariants (as for `create_cluster`):
//! - the new compute nodes' ports are reserved (`installing_ports`) in the same transaction
//!   that writes the plan into the memo, so after a crash the memo names exactly what may
//!   exist on the machines;
//! - compute node rows are written, and their ports committed, in one transaction only after
//!   every new instance answered; the memo's stage moves to `installed` in that transaction;
//! - a failed job, or one found `ongoing` at start-up before `installed`, is rolled back from
//!   its memo (instances uninstalled, rows removed, ports released); one found `installed`
//!   is finished forward (catalog push), since everything it installed is recorded;
//! - `delete_comp` removes the row and releases the ports only after the instance is gone.

use kunlun_meta::api::AddComps;
use kunlun_meta::model::{Job, JobStatus, NewCompNode, NodeStatus};
use kunlun_meta::store::repo::{comps, jobs, machines, secrets};
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::{Error as MetaError, Result as MetaResult};
use kunlun_provision::placement::PortSets;
use serde::{Deserialize, Serialize};

use super::install::planned_steps;
use super::plan::ClusterPlan;
use super::plan_comps::{comp_password, plan_add_comps, plan_delete_comp, ports_by_machine};
use super::progress::{Progress, StepRecord};
use crate::accounts::COMP_USER;
use crate::catalog::{push_cluster, CatalogOptions};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;

pub const ADD_COMPS: &str = "add_comps";
pub const DELETE_COMP: &str = "delete_comp";

/// Progress of an `add_comps` or `delete_comp` job (the job's memo).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompsMemo {
    /// add_comps: `planned` → `installed` → `done`, or `rolled_back` / `rollback_failed` /
    /// `failed`; delete_comp: `done` or `failed`.
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<i64>,
    /// The compute nodes to install (add_comps), without the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ClusterPlan>,
    /// Ids of the compute nodes recorded (add_comps) or removed (delete_comp).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comp_ids: Vec<i64>,
    /// What the catalog push did (compute nodes written / not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Step progress; written by the job's [`Progress`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
}

fn to_json(memo: &CompsMemo) -> MetaResult<serde_json::Value> {
    serde_json::to_value(memo).map_err(|e| MetaError::Invalid(e.to_string()))
}

/// The request of a cluster job: its `cluster_id` and the rest of `job_info` (without the
/// `cluster_id` and `name` the accept step added) as `T`.
fn request<T: serde::de::DeserializeOwned>(job: &Job) -> Result<(i64, T)> {
    let mut info = job
        .job_info
        .clone()
        .ok_or_else(|| Error::Invalid("job has no request".into()))?;
    let obj = info
        .as_object_mut()
        .ok_or_else(|| Error::Invalid("job request is not an object".into()))?;
    let cluster_id = obj
        .remove("cluster_id")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| Error::Invalid("job request names no cluster_id".into()))?;
    obj.remove("name");
    let req = serde_json::from_value(info).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok((cluster_id, req))
}

/// Applies `f` to the port sets of every machine `plan` uses (compare-and-swap each).
async fn update_ports(
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

/// Ends the job with `status` and `memo` (plus the steps of `progress`).
async fn finish(
    store: &Store,
    job_id: i64,
    status: JobStatus,
    memo: &CompsMemo,
    progress: &Progress,
) -> Result<()> {
    let _write = progress.seal().await;
    progress.set_memo(to_json(memo)?);
    store
        .update_job(job_id, status, Some(&progress.memo()))
        .await?;
    Ok(())
}

/// Ends the job `failed` with `e` recorded.
async fn fail_with(
    store: &Store,
    job_id: i64,
    mut memo: CompsMemo,
    e: &Error,
    progress: &Progress,
) -> Result<()> {
    memo.error = Some(e.to_string());
    if memo.stage.is_empty() || memo.stage == "planned" || memo.stage == "installed" {
        memo.stage = "failed".into();
    }
    finish(store, job_id, JobStatus::Failed, &memo, progress).await
}

/// Runs one claimed `add_comps` job to `done` or `failed`, recording its steps in the memo.
pub async fn run_add_comps(store: &Store, prov: &Provisioner, job: &Job) -> Result<()> {
    let progress = Progress::for_job(store, job.id, job.memo.as_ref());
    let r = add_comps(store, prov, job, &progress).await;
    progress.close().await;
    r
}

async fn add_comps(
    store: &Store,
    prov: &Provisioner,
    job: &Job,
    progress: &Progress,
) -> Result<()> {
    let memo: CompsMemo = job
        .memo
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    if memo.plan.is_some() {
        if memo.stage == "installed" {
            // Resumed after a crash with everything recorded: finish forward.
            return push_and_finish(store, prov, job.id, memo, progress).await;
        }
        return rollback(
            store,
            prov,
            job.id,
            memo,
            "the manager restarted mid-job",
            progress,
        )
        .await;
    }
    let (cluster_id, req): (i64, AddComps) = request(job)?;
    let mut memo = CompsMemo {
        cluster_id: Some(cluster_id),
        ..CompsMemo::default()
    };

    let step = progress.step("plan");
    let planned = async {
        let cluster = store.get_cluster(cluster_id).await?;
        let existing = store.list_comp_nodes(Some(cluster_id)).await?;
        let machines_now = store.list_machines().await?;
        // The cluster's stored owner password; else (a cluster created before secrets were
        // kept) the one its compute nodes' rows hold; a cluster with none left gets a fresh one.
        let secret = match store
            .read(async |tx| secrets::get(tx, cluster_id).await)
            .await
        {
            Ok(s) => Some(s),
            Err(MetaError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let password = comp_password(secret.as_ref().map(|s| s.comp_pwd.as_str()), &existing)
            .unwrap_or_else(kunlun_provision::recipe::random_password);
        let mut plan = plan_add_comps(&req, &cluster, &existing, &machines_now, password)?;
        // The manager's own superuser on the new compute nodes, with the cluster's manager
        // password (the catalog push logs in with it); a cluster without stored passwords
        // is pushed to as its compute nodes' own login, so any password does.
        plan.passwords.manager = secret
            .map(|s| s.manager_pwd)
            .filter(|p| !p.is_empty())
            .unwrap_or_else(kunlun_provision::recipe::random_password);
        Ok::<_, Error>((plan, machines_now))
    }
    .await;
    let (plan, machines_now) = match planned {
        Ok(p) => {
            step.done_with(format!("{} compute nodes", p.0.comps.len()));
            p
        }
        Err(e) => {
            step.fail(&e);
            return fail_with(store, job.id, memo, &e, progress).await;
        }
    };
    progress.plan(["reserve ports"]);
    progress.plan(planned_steps(&plan));
    progress.plan(["record compute nodes", "push catalog"]);

    let step = progress.step("reserve ports");
    memo.stage = "planned".into();
    memo.plan = Some(plan.clone());
    let reserved = {
        let _write = progress.exclusive().await;
        store
            .tx(async |tx| {
                update_ports(tx, &plan, |s, p| s.reserve(p)).await?;
                let v = progress.memo_with(to_json(&memo)?);
                jobs::update(tx, job.id, JobStatus::Ongoing, Some(&v)).await?;
                Ok::<_, MetaError>(())
            })
            .await
    };
    if let Err(e) = reserved {
        step.fail(&e);
        progress.skip_pending("ports could not be reserved");
        let memo = CompsMemo {
            cluster_id: Some(cluster_id),
            ..CompsMemo::default()
        };
        return fail_with(store, job.id, memo, &e.into(), progress).await;
    }
    progress.set_memo(to_json(&memo)?);
    step.done();

    if let Err(e) = prov
        .install_cluster_with(&machines_now, &plan, progress)
        .await
    {
        progress.skip_pending("an earlier step failed");
        return rollback(store, prov, job.id, memo, &e.to_string(), progress).await;
    }

    let step = progress.step("record compute nodes");
    let recorded = {
        let _write = progress.exclusive().await;
        store
            .tx(async |tx| {
                let ids = record_comps(tx, cluster_id, &plan).await?;
                update_ports(tx, &plan, |s, p| Ok(s.commit(p))).await?;
                let installed = CompsMemo {
                    stage: "installed".into(),
                    comp_ids: ids,
                    ..memo.clone()
                };
                let v = progress.memo_with(to_json(&installed)?);
                jobs::update(tx, job.id, JobStatus::Ongoing, Some(&v)).await?;
                Ok::<_, MetaError>(installed)
            })
            .await
    };
    match recorded {
        Ok(installed) => {
            progress.set_memo(to_json(&installed)?);
            step.done();
            push_and_finish(store, prov, job.id, installed, progress).await
        }
        Err(e) => {
            step.fail(&e);
            progress.skip_pending("an earlier step failed");
            rollback(store, prov, job.id, memo, &e.to_string(), progress).await
        }
    }
}

/// Compute node rows of the installed plan, with fresh ids; returns the ids.
pub(crate) async fn record_comps(
    tx: &mut Tx,
    cluster_id: i64,
    plan: &ClusterPlan,
) -> MetaResult<Vec<i64>> {
    let ids = comps::reserve_ids(tx, plan.comps.len() as i64).await?;
    let mut out = Vec::with_capacity(plan.comps.len());
    for (id, c) in ids.zip(plan.comps.iter()) {
        comps::insert(
            tx,
            &NewCompNode {
                id,
                db_cluster_id: cluster_id,
                name: format!("comp{id}"),
                hostaddr: c.slot.hostaddr.clone(),
                port: c.slot.port,
                user_name: COMP_USER.into(),
                passwd: plan.passwords.comp.clone(),
                status: NodeStatus::Active,
                max_conns: i64::from(plan.max_connections),
            },
        )
        .await?;
        kunlun_meta::store::repo::dirs::set(
            tx,
            kunlun_meta::store::repo::dirs::NodeKind::Compute,
            id,
            &c.base_dir,
        )
        .await?;
        out.push(id);
    }
    Ok(out)
}

/// Pushes the cluster's topology to its compute nodes; the job is done when every new one
/// holds it (an older compute node that missed it is caught up by the catalog sync), else
/// the new ones are rolled back.
async fn push_and_finish(
    store: &Store,
    prov: &Provisioner,
    job_id: i64,
    mut memo: CompsMemo,
    progress: &Progress,
) -> Result<()> {
    let cluster_id = memo.cluster_id.unwrap_or_default();
    let step = progress.step("push catalog");
    let why = match push_cluster(store, cluster_id, &CatalogOptions::for_store(store)).await {
        Ok(report) => {
            memo.catalog = Some(report.to_string());
            let missed: Vec<String> = report
                .failed()
                .filter(|c| memo.comp_ids.contains(&c.comp_node_id))
                .map(|c| {
                    format!(
                        "{} ({}:{}): {}",
                        c.name,
                        c.hostaddr,
                        c.port,
                        c.error.as_deref().unwrap_or_default()
                    )
                })
                .collect();
            if missed.is_empty() {
                step.done_with(report.to_string());
                memo.stage = "done".into();
                return finish(store, job_id, JobStatus::Done, &memo, progress).await;
            }
            format!(
                "catalog not written to new compute nodes: {}",
                missed.join("; ")
            )
        }
        Err(e) => format!("catalog push failed: {e}"),
    };
    step.fail(&why);
    rollback(store, prov, job_id, memo, &why, progress).await
}

/// Uninstalls the new compute nodes of the memo's plan; only when that worked, removes their
/// rows (if recorded) and releases their ports; marks the job failed with `why`.
async fn rollback(
    store: &Store,
    prov: &Provisioner,
    job_id: i64,
    mut memo: CompsMemo,
    why: &str,
    progress: &Progress,
) -> Result<()> {
    tracing::warn!(job_id, reason = why, "add_comps failed; rolling back");
    let Some(plan) = memo.plan.clone() else {
        return fail_with(
            store,
            job_id,
            memo,
            &Error::Unavailable(why.into()),
            progress,
        )
        .await;
    };
    let mut why = why.to_string();
    let removed = async {
        let machines_now = store.list_machines().await?;
        prov.uninstall_cluster_with(&machines_now, &plan, progress)
            .await?;
        let step = progress.step("remove rows and ports");
        let ids = memo.comp_ids.clone();
        let r = store
            .tx(async |tx| {
                for id in &ids {
                    if comps::get(tx, *id).await.is_ok() {
                        comps::delete(tx, *id).await?;
                    }
                }
                update_ports(tx, &plan, |s, p| Ok(s.release(p))).await
            })
            .await;
        match &r {
            Ok(()) => step.done(),
            Err(e) => step.fail(e),
        }
        Ok::<_, Error>(r?)
    }
    .await;
    match removed {
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

/// The request of a `delete_comp` job.
#[derive(Debug, Deserialize)]
struct DeleteCompInfo {
    comp_id: i64,
}

/// Runs one claimed `delete_comp` job to `done` or `failed`.
pub async fn run_delete_comp(store: &Store, prov: &Provisioner, job: &Job) -> Result<()> {
    let progress = Progress::for_job(store, job.id, job.memo.as_ref());
    let r = delete_comp(store, prov, job, &progress).await;
    progress.close().await;
    r
}

async fn delete_comp(
    store: &Store,
    prov: &Provisioner,
    job: &Job,
    progress: &Progress,
) -> Result<()> {
    let (cluster_id, info): (i64, DeleteCompInfo) = request(job)?;
    let memo = CompsMemo {
        cluster_id: Some(cluster_id),
        comp_ids: vec![info.comp_id],
        ..CompsMemo::default()
    };
    let r = async {
        let cluster = store.get_cluster(cluster_id).await?;
        let Some(comp) = store
            .list_comp_nodes(Some(cluster_id))
            .await?
            .into_iter()
            .find(|c| c.id == info.comp_id)
        else {
            // Gone already (a resumed job that had finished the removal).
            return Ok(());
        };
        let machines_now = store.list_machines().await?;
        let mut plan = plan_delete_comp(&cluster, &comp, &machines_now)?;
        let detail = kunlun_meta::api::ClusterDetail {
            cluster: cluster.clone(),
            shards: Vec::new(),
            comp_nodes: vec![comp.clone()],
        };
        super::delete::apply_recorded_dirs(store, &mut plan, &detail).await?;
        // Out of service first: catalog pushes and routing skip it from now on.
        store
            .tx(async |tx| comps::set_status(tx, comp.id, NodeStatus::Deleted).await)
            .await?;
        if let Err(e) = prov
            .uninstall_cluster_with(&machines_now, &plan, progress)
            .await
        {
            // It may still run: back in service, or catalog pushes would skip it forever.
            let back = status_after_failed_uninstall(comp.status);
            if let Err(e2) = store
                .tx(async |tx| comps::set_status(tx, comp.id, back).await)
                .await
            {
                tracing::error!(comp_id = comp.id, error = %e2, "cannot put the compute node back in service");
            }
            return Err(e);
        }
        let step = progress.step("remove row and ports");
        let r = store
            .tx(async |tx| {
                comps::delete(tx, comp.id).await?;
                update_ports(tx, &plan, |s, p| Ok(s.release(p))).await
            })
            .await;
        match &r {
            Ok(()) => step.done(),
            Err(e) => step.fail(e),
        }
        Ok::<_, Error>(r?)
    }
    .await;
    match r {
        Ok(()) => {
            let memo = CompsMemo {
                stage: "done".into(),
                ..memo
            };
            finish(store, job.id, JobStatus::Done, &memo, progress).await
        }
        Err(e) => fail_with(store, job.id, memo, &e, progress).await,
    }
}

/// The status a compute node gets back when its uninstall failed (it may still run): the one
/// it had, or `Active` when that was already `Deleted` (a resumed job).
fn status_after_failed_uninstall(before: NodeStatus) -> NodeStatus {
    match before {
        NodeStatus::Deleted => NodeStatus::Active,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_compute_node_whose_uninstall_failed_goes_back_in_service() {
        let back = status_after_failed_uninstall;
        assert_eq!(back(NodeStatus::Active), NodeStatus::Active);
        assert_eq!(back(NodeStatus::Deleted), NodeStatus::Active);
        assert_eq!(back(NodeStatus::ManualStop), NodeStatus::ManualStop);
    }

    fn job(info: serde_json::Value) -> Job {
        Job {
            id: 1,
            job_type: ADD_COMPS.into(),
            job_info: Some(info),
            status: JobStatus::NotStarted,
            memo: None,
            user_name: None,
            related_id: None,
            when_started: None,
            when_ended: None,
        }
    }

    #[test]
    fn the_request_is_read_without_the_fields_accept_added() {
        let j = job(json!({"comps": 2, "computer_hosts": ["h"], "cluster_id": 4, "name": "c"}));
        let (id, req): (i64, AddComps) = request(&j).unwrap();
        assert_eq!(id, 4);
        assert_eq!(req.comps, 2);
        assert_eq!(req.computer_hosts, vec!["h".to_string()]);
        let (_, d): (i64, DeleteCompInfo) =
            request(&job(json!({"comp_id": 9, "cluster_id": 4, "name": "c"}))).unwrap();
        assert_eq!(d.comp_id, 9);
        assert!(request::<AddComps>(&job(json!({"comps": 1}))).is_err());
        assert!(request::<AddComps>(&job(json!([1]))).is_err());
    }

    #[test]
    fn the_memo_round_trips_and_holds_no_password() {
        let m = CompsMemo {
            stage: "installed".into(),
            cluster_id: Some(3),
            comp_ids: vec![5, 6],
            ..CompsMemo::default()
        };
        let v = to_json(&m).unwrap();
        assert_eq!(v["stage"], "installed");
        let back: CompsMemo = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
