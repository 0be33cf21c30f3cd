//! `restore_into_cluster`: a done backup restored over the instances of an existing, empty
//! cluster (the original's `cluster_restore` of `src_cluster_id` into `dst_cluster_id`), to
//! the end of the backup or to a `restore_time`.
//!
//! Its own run function (no plan or ports: the instances exist). The backup's files are
//! checked first, then the cluster: as many shards as the backup, every storage node active
//! with a recorded primary per shard, and nothing of a user's in it (no database on a storage
//! node besides the system ones, no database or table on a compute node besides the catalog).
//! Every storage node is then taken out of HA (`inactive`, its status before kept in the
//! memo; the keeper leaves a cluster alone while a job names it), and `restore_cluster`'s data
//! restore (`data.rs`) runs on each shard with its recorded primary first, each node's own
//! data kept aside under the job's id. Once every shard and the compute schema are restored
//! the set-aside data is removed, the statuses are put back and the catalog is pushed.
//!
//! A failure, or a manager restart before the data restore ended, puts every node's own data
//! back and starts it again (replicas read-only and following their primary), so the cluster
//! is as empty as before, and puts the statuses back; the job fails saying so. A restart after
//! the data restore ended finishes the job instead.
//!
//! Invariants: never over a cluster that holds data, nor over the backup's own cluster; the
//! backup is only read; each shard's recorded primary stays its primary; no node is `active`
//! while its data is being replaced.

use futures::future::join_all;
use kunlun_meta::api::RestoreInto;
use kunlun_meta::model::{Backup, Job, JobStatus, Machine, MemberState, NewJob, NodeStatus};
use kunlun_meta::store::repo::nodes;
use kunlun_meta::store::Store;
use kunlun_provision::recipe::SYSTEM_SCHEMAS_SQL;
use serde::{Deserialize, Serialize};

use super::data;
use super::{done_backup, shape_counts, RestoreExtra};
use crate::catalog::{push_cluster, user_objects, CatalogOptions};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::jobs::common::{apply_recorded_dirs, busy, passwords};
use crate::jobs::driver::{JobCtx, JobInfo, JobMemo};
use crate::jobs::plan::{plan_from_rows, ClusterPlan};
use crate::jobs::reseed::{self, Instance};
use crate::jobs::seed;
use crate::storage::{NodeAddr, StorageConn, StorageOptions};

pub const RESTORE_INTO_CLUSTER: &str = "restore_into_cluster";

/// Names of a user's objects shown when a cluster is refused as not empty.
const SHOWN: usize = 10;

/// A storage node taken out of HA for the restore, its status before, and whether it is its
/// shard's recorded primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldNode {
    pub id: i64,
    pub status: NodeStatus,
    #[serde(default)]
    pub primary: bool,
}

/// The memo fields of `restore_into_cluster` besides the common ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntoExtra {
    #[serde(flatten)]
    pub restore: RestoreExtra,
    /// Storage nodes out of HA while the job runs (empty again once they are back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldNode>,
    /// Every shard and the compute schema restored (a restart from here on finishes the job).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restored: bool,
    /// After a failure: whether every node's own data was put back and started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub put_back: Option<bool>,
}

pub type IntoMemo = JobMemo<IntoExtra>;

/// Accepts a `restore_into_cluster` job: backup `req.backup_id` over cluster `cluster_id`
/// (400 for a bad request, 404 for an unknown backup or cluster, 409 for a backup not done,
/// the backup's own cluster, another number of shards, or a job in progress on the cluster).
/// Whether the cluster is empty is checked by the job, which reaches its instances.
pub async fn accept(store: &Store, cluster_id: i64, req: &RestoreInto) -> Result<Job> {
    req.restore_at()?;
    let b = done_backup(store, req.backup_id).await?;
    let detail = store.cluster_detail(cluster_id).await?;
    let name = detail.cluster.name.clone();
    if b.cluster_id == cluster_id {
        return Err(Error::Conflict(format!(
            "backup {} is of cluster {name} itself: restore it into another, empty cluster or \
             into a new one (POST /v1/backups/{}/restore)",
            b.id, b.id
        )));
    }
    same_shards(&b, detail.shards.len(), &name)?;
    if busy(store, cluster_id, &name).await? {
        return Err(Error::Conflict(format!(
            "cluster {name} has a job in progress"
        )));
    }
    let info = JobInfo {
        cluster_id: Some(cluster_id),
        name,
        request: req.clone(),
    };
    Ok(store
        .create_job(&NewJob {
            job_type: RESTORE_INTO_CLUSTER.into(),
            job_info: info.to_value()?,
            user_name: None,
        })
        .await?)
}

/// A restore maps the backup's shards onto the cluster's one to one.
fn same_shards(b: &Backup, shards: usize, name: &str) -> Result<()> {
    let (backed_up, ..) = shape_counts(b);
    if usize::try_from(backed_up).ok() != Some(shards) {
        return Err(Error::Conflict(format!(
            "backup {} holds {backed_up} shards and cluster {name} has {shards}: a restore into \
             a cluster needs as many",
            b.id
        )));
    }
    Ok(())
}

/// Runs one claimed `restore_into_cluster` job (the runner's registry calls this): it ends
/// the job `done` itself; an error is the runner's to record (`failed`, the memo as stored).
pub async fn run(store: &Store, fleet: &Provisioner, job: &Job) -> Result<()> {
    let info = JobInfo::<RestoreInto>::of(job)?;
    let cx = JobCtx::for_job(store, fleet, job);
    let r = match job.memo.clone() {
        // A memo this job cannot read back is never taken for "nothing done yet".
        Some(m) if cx.resumed => match serde_json::from_value::<IntoMemo>(m) {
            Ok(memo) => resume(&cx, &info, memo).await,
            Err(e) => Err(Error::Internal(format!(
                "the restore's memo does not read back ({e}): check the cluster's nodes by hand"
            ))),
        },
        _ => go(&cx, &info).await,
    };
    cx.progress.close().await;
    r
}

async fn go(cx: &JobCtx, info: &JobInfo<RestoreInto>) -> Result<()> {
    let id = info.cluster()?;
    let req = &info.request;
    let at = req.restore_at()?;
    let mut memo = IntoMemo {
        cluster_id: Some(id),
        ..IntoMemo::default()
    };
    memo.extra.restore.backup_id = Some(req.backup_id);
    memo.extra.restore.cluster_name = Some(info.name.clone());
    cx.save(&memo).await;
    cx.step(
        "check the backup files",
        data::check(cx, req.backup_id, req.allow_inconsistent, at),
    )
    .await?;
    let b = done_backup(&cx.store, req.backup_id).await?;
    let target = cx
        .step("check the cluster is empty", checked_target(cx, id, &b))
        .await?;
    hold(cx, &mut memo, &target.held).await?;
    let restored = data::restore(
        cx,
        req.backup_id,
        at,
        (&target.machines, &target.plan),
        &mut memo.extra.restore,
        true,
    )
    .await;
    match restored {
        Ok(()) => {
            // Stored before the set-aside data goes: a restart from here finishes the job.
            memo.extra.restored = true;
            let m = memo.clone();
            if let Err(e) = cx.commit(async |_| Ok(m.clone())).await {
                memo.extra.restored = false;
                return Err(undo(cx, &target, memo, e).await);
            }
            finish(cx, &target, memo).await
        }
        Err(e) => Err(undo(cx, &target, memo, e).await),
    }
}

/// A restart mid-job: finished when the data restore had ended, else undone.
async fn resume(cx: &JobCtx, info: &JobInfo<RestoreInto>, memo: IntoMemo) -> Result<()> {
    let id = info.cluster()?;
    if memo.extra.held.is_empty() && !memo.extra.restored {
        return Err(Error::Unavailable(match memo.extra.put_back {
            Some(true) => "the manager restarted after the restore failed and the cluster's own \
                           data was put back"
                .into(),
            Some(false) => "the manager restarted after the restore failed and putting the \
                            cluster's own data back failed too: rebuild or restart its nodes"
                .into(),
            None => "the manager restarted before the restore touched the cluster: nothing \
                     changed; start the restore again"
                .into(),
        }));
    }
    let target = target_of(cx, id).await?;
    if memo.extra.restored {
        return finish(cx, &target, memo).await;
    }
    let why = Error::Unavailable("the manager restarted while the data was being restored".into());
    Err(undo(cx, &target, memo, why).await)
}

/// The cluster as the restore writes it: its machines, its instances as a plan with the
/// cluster's passwords and each shard's recorded primary first, and its storage nodes.
struct Target {
    machines: Vec<Machine>,
    plan: ClusterPlan,
    held: Vec<HeldNode>,
}

async fn target_of(cx: &JobCtx, id: i64) -> Result<Target> {
    let mut detail = cx.store.cluster_detail(id).await?;
    for sd in &mut detail.shards {
        // `false` sorts first: the primary leads, the replicas keep their order.
        sd.nodes
            .sort_by_key(|n| n.member_state != MemberState::Source);
    }
    let machines = cx.store.list_machines().await?;
    let mut plan = plan_from_rows(&detail, &machines)?;
    apply_recorded_dirs(&cx.store, &mut plan, &detail).await?;
    plan.passwords = passwords(&cx.store, id).await?;
    let held = detail
        .shards
        .iter()
        .flat_map(|s| s.nodes.iter())
        .map(|n| HeldNode {
            id: n.id,
            status: n.status,
            primary: n.member_state == MemberState::Source,
        })
        .collect();
    Ok(Target {
        machines,
        plan,
        held,
    })
}

/// [`target_of`], checked: as many shards as the backup, each with an active primary and only
/// active nodes, and no object of a user's on any instance.
async fn checked_target(cx: &JobCtx, id: i64, b: &Backup) -> Result<Target> {
    let detail = cx.store.cluster_detail(id).await?;
    let name = &detail.cluster.name;
    same_shards(b, detail.shards.len(), name)?;
    for sd in &detail.shards {
        if let Some(n) = sd.nodes.iter().find(|n| n.status != NodeStatus::Active) {
            return Err(Error::Conflict(format!(
                "storage node {} ({}:{}) of shard {} is {}: every storage node must be active \
                 for a restore",
                n.id, n.hostaddr, n.port, sd.shard.name, n.status
            )));
        }
        if !sd
            .nodes
            .iter()
            .any(|n| n.member_state == MemberState::Source)
        {
            return Err(Error::Conflict(format!(
                "shard {} has no recorded primary",
                sd.shard.name
            )));
        }
    }
    let storage = detail.shards.iter().flat_map(|s| s.nodes.iter()).map(|n| {
        let addr = NodeAddr::from(n);
        async move {
            user_databases(&addr)
                .await
                .map(|dbs| {
                    dbs.into_iter()
                        .map(|d| format!("{addr}: database {d}"))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| format!("{addr}: {e}"))
        }
    });
    let opts = CatalogOptions::for_store(&cx.store);
    let compute = detail.comp_nodes.iter().map(|c| {
        let opts = &opts;
        async move {
            let at = format!("compute {}:{}", c.hostaddr, c.port);
            user_objects(&cx.store, c, opts, SHOWN as i64)
                .await
                .map(|objs| {
                    objs.into_iter()
                        .map(|o| format!("{at}: {o}"))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| format!("{at}: {e}"))
        }
    });
    let mut found = Vec::new();
    let mut unreachable = Vec::new();
    for r in join_all(storage).await {
        match r {
            Ok(f) => found.extend(f),
            Err(e) => unreachable.push(e),
        }
    }
    for r in join_all(compute).await {
        match r {
            Ok(f) => found.extend(f),
            Err(e) => unreachable.push(e),
        }
    }
    if !unreachable.is_empty() {
        return Err(Error::Unavailable(format!(
            "cannot check that cluster {name} is empty: {}",
            unreachable.join("; ")
        )));
    }
    if !found.is_empty() {
        let more = found.len().saturating_sub(SHOWN);
        found.truncate(SHOWN);
        return Err(Error::Conflict(format!(
            "cluster {name} is not empty ({}{}): a backup is restored only into an empty \
             cluster; drop them first, or restore into a new cluster",
            found.join("; "),
            if more > 0 {
                format!("; {more} more")
            } else {
                String::new()
            }
        )));
    }
    target_of(cx, id).await
}

/// The databases on a storage node besides the system ones (at most [`SHOWN`] + 1).
async fn user_databases(addr: &NodeAddr) -> crate::storage::Result<Vec<String>> {
    let mut c = StorageConn::connect(addr, StorageOptions::default()).await?;
    let r = c
        .query(&format!(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN {} \
             ORDER BY 1 LIMIT {}",
            SYSTEM_SCHEMAS_SQL,
            SHOWN + 1
        ))
        .await;
    c.close().await;
    r
}

/// Takes the cluster's storage nodes out of HA (`inactive`), recording their status before,
/// in one transaction that first checks each is still `active` in the role the restore
/// planned with (a switchover or a status change since the check aborts it, nothing held).
async fn hold(cx: &JobCtx, memo: &mut IntoMemo, all: &[HeldNode]) -> Result<()> {
    let base = memo.clone();
    let cid = memo.cluster_id.unwrap_or_default();
    *memo = cx
        .commit(async |tx| {
            let now = nodes::list_by_cluster(tx, cid).await?;
            for n in all {
                let same = now.iter().any(|r| {
                    r.id == n.id
                        && r.status == NodeStatus::Active
                        && (r.member_state == MemberState::Source) == n.primary
                });
                if !same {
                    return Err(kunlun_meta::Error::Conflict(format!(
                        "storage node {} changed (status or role) since the restore checked the \
                         cluster; try again",
                        n.id
                    )));
                }
            }
            let mut m = base.clone();
            for n in all {
                nodes::set_status(tx, n.id, NodeStatus::Inactive).await?;
                m.extra.held.push(HeldNode {
                    status: NodeStatus::Active,
                    ..n.clone()
                });
            }
            Ok(m)
        })
        .await?;
    Ok(())
}

/// Puts the held nodes' statuses back (those still `inactive`).
async fn release(cx: &JobCtx, memo: &mut IntoMemo) -> Result<()> {
    let base = memo.clone();
    *memo = cx
        .commit(async |tx| {
            let mut m = base.clone();
            for n in &base.extra.held {
                nodes::set_status_if(tx, n.id, NodeStatus::Inactive, n.status).await?;
            }
            m.extra.held.clear();
            Ok(m)
        })
        .await?;
    Ok(())
}

/// Every storage instance of `t` with the shard's primary first (as the plan has them).
fn instances(cx: &JobCtx, t: &Target) -> Result<Vec<Vec<Instance>>> {
    t.plan
        .shards
        .iter()
        .map(|s| {
            s.nodes
                .iter()
                .map(|n| data::instance(&cx.fleet, &t.machines, &t.plan, n))
                .collect()
        })
        .collect()
}

/// After the data restore: the set-aside data removed (a failure there only leaves disk
/// used, and is said), the statuses put back, the catalog pushed, the job done.
async fn finish(cx: &JobCtx, t: &Target, mut memo: IntoMemo) -> Result<()> {
    let shards = instances(cx, t)?;
    let step = cx.progress.step("remove the cluster's own data set aside");
    let drops = shards
        .iter()
        .flatten()
        .map(|i| reseed::drop_aside(&cx.fleet, i));
    let failed: Vec<String> = join_all(drops)
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if failed.is_empty() {
        step.done();
    } else {
        step.done_with(format!(
            "not removed (disk still used): {}",
            failed.join("; ")
        ));
    }
    let stuck: Vec<i64> = memo.extra.held.iter().map(|n| n.id).collect();
    release(cx, &mut memo).await.map_err(|e| {
        Error::Unavailable(format!(
            "the backup is restored, but storage nodes {stuck:?} are still inactive ({e}): set \
             them active again"
        ))
    })?;
    let id = memo
        .cluster_id
        .ok_or_else(|| Error::Internal("the restore's memo names no cluster".into()))?;
    let step = cx.progress.step("push topology to compute nodes");
    let pushed = push_cluster(&cx.store, id, &CatalogOptions::for_store(&cx.store)).await;
    memo.catalog = Some(match &pushed {
        Ok(r) if r.all_ok() => "pushed to every compute node".into(),
        Ok(r) => r.to_string(),
        Err(e) => format!("catalog push: {e}"),
    });
    match pushed {
        Ok(r) if r.all_ok() => step.done(),
        // The catalog sync pushes again; the data restore is what the job is for.
        _ => step.done_with(format!(
            "{} (the catalog sync pushes again)",
            memo.catalog.clone().unwrap_or_default()
        )),
    }
    tracing::info!(
        job_id = cx.job_id,
        cluster_id = id,
        "backup restored into the cluster"
    );
    cx.end(JobStatus::Done, &memo).await
}

/// After a failure: every node's own data put back and started (replicas read-only and
/// following their primary again), the statuses put back; returns the job's error.
async fn undo(cx: &JobCtx, t: &Target, mut memo: IntoMemo, why: Error) -> Error {
    let step = cx.progress.step("put the cluster's own data back");
    let tag = cx.job_id.to_string();
    let back = match instances(cx, t) {
        Ok(shards) => {
            let puts = shards.iter().map(|insts| {
                let tag = &tag;
                async move {
                    let primary = insts
                        .first()
                        .map(|p| (p.node.hostaddr.as_str(), p.node.port));
                    let mut errors = Vec::new();
                    for (i, inst) in insts.iter().enumerate() {
                        let r = async {
                            reseed::put_back(&cx.fleet, inst, tag, true).await?;
                            match primary {
                                Some(p) if i > 0 => {
                                    seed::attach(&inst.addr(), p, &t.plan.passwords.repl, None)
                                        .await
                                }
                                _ => Ok(()),
                            }
                        }
                        .await;
                        if let Err(e) = r {
                            errors.push(format!("{}: {e}", inst.addr()));
                        }
                    }
                    errors
                }
            });
            let errors: Vec<String> = join_all(puts).await.into_iter().flatten().collect();
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            }
        }
        Err(e) => Err(e.to_string()),
    };
    memo.extra.put_back = Some(back.is_ok());
    match &back {
        Ok(()) => step.done(),
        Err(e) => step.fail(Error::Unavailable(e.clone())),
    }
    let stuck: Vec<i64> = memo.extra.held.iter().map(|n| n.id).collect();
    let released = match release(cx, &mut memo).await {
        Ok(()) => String::new(),
        Err(e) => {
            tracing::warn!(job_id = cx.job_id, error = %e, "restore: statuses not put back");
            format!("; storage nodes {stuck:?} are still inactive ({e}): set them active again")
        }
    };
    cx.save(&memo).await;
    // The compute nodes lose the catalog rows of held nodes; they get them back now.
    if let Some(id) = memo.cluster_id {
        if let Err(e) = push_cluster(&cx.store, id, &CatalogOptions::for_store(&cx.store)).await {
            tracing::warn!(job_id = cx.job_id, error = %e, "restore: catalog not pushed after the undo");
        }
    }
    // Every shard restored: the failure was at the compute schema, which may be half loaded.
    let compute = if memo.extra.restore.shards.len() == t.plan.shards.len() {
        "; the compute nodes may keep part of the backed-up schema (drop it before restoring \
         again)"
    } else {
        ""
    };
    match back {
        Ok(()) => Error::Unavailable(format!(
            "{why}; the cluster's own data was put back and its nodes started again{compute}{released}"
        )),
        Err(e) => Error::Unavailable(format!(
            "{why}; putting the cluster's own data back failed too ({e}): rebuild or \
             restart those nodes{compute}{released}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backup(shards: usize) -> Backup {
        let s: Vec<_> = (0..shards)
            .map(|i| json!({"id": i + 1, "nodes": [{"id": 10 + i}]}))
            .collect();
        serde_json::from_value(json!({
            "id": 4, "cluster_id": 1, "cluster_name": "src", "storage_id": 2, "job_id": 9,
            "status": "done", "started_at": "2026-12-06T10:00:00Z", "ended_at": null,
            "bytes": 10, "shape": {"shards": s}, "manifest": "cluster_1/backup_4/manifest.json",
            "error": null
        }))
        .expect("backup")
    }

    #[test]
    fn the_cluster_needs_as_many_shards_as_the_backup() {
        assert!(same_shards(&backup(2), 2, "c").is_ok());
        for n in [1, 3] {
            let e = same_shards(&backup(2), n, "c").unwrap_err();
            assert!(
                matches!(e, Error::Conflict(ref m) if m.contains("holds 2 shards")),
                "{e}"
            );
        }
    }

    #[test]
    fn the_memo_keeps_what_a_restart_needs() {
        let mut m = IntoMemo {
            cluster_id: Some(7),
            ..IntoMemo::default()
        };
        m.extra.restore.backup_id = Some(4);
        m.extra.held = vec![HeldNode {
            id: 3,
            status: NodeStatus::Active,
            primary: true,
        }];
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["backup_id"], 4);
        assert_eq!(
            v["held"],
            json!([{"id": 3, "status": "active", "primary": true}])
        );
        // A memo written before roles were kept reads back (a replica).
        let old: HeldNode = serde_json::from_value(json!({"id": 4, "status": "active"})).unwrap();
        assert!(!old.primary);
        assert!(
            v.get("restored").is_none() && v.get("put_back").is_none(),
            "{v}"
        );
        let back: IntoMemo = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
        m.extra.held.clear();
        m.extra.restored = true;
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["restored"], true);
        assert!(v.get("held").is_none(), "{v}");
    }
}
