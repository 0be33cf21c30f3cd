//! The `add_shards` and `delete_shard` jobs: new storage shards of an existing cluster placed,
//! installed (primary plus replicas following it by GTID, semi-sync in `rbr`) and recorded; a
//! shard's instances uninstalled and its rows removed. Both end with a catalog push so the
//! compute nodes learn the change.
//!
//! Invariants: as `create_cluster` — ports reserved with the plan in the memo before any host
//! is touched, rows written only after every instance answered (in the transaction that
//! commits the ports), a failed or interrupted add rolled back from its memo; a delete removes
//! rows only after the instances are gone, and an interrupted delete is carried on from its
//! memo (uninstalling twice is harmless); the last shard of a cluster is never deleted (the
//! cluster is).

use kunlun_meta::api::AddShards;
use kunlun_meta::model::{Job, NewShard};
use kunlun_meta::store::repo::shards;
use kunlun_meta::store::Store;
use kunlun_meta::Error as MetaError;

use super::cluster::update_ports;
use super::install::planned_steps;
use super::plan_scale::{plan_add_shards, removal_plan, shard_in};
use super::progress::Progress;
use super::scale::{self, ScaleMemo};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;

pub const ADD_SHARDS: &str = "add_shards";
pub const DELETE_SHARD: &str = "delete_shard";

/// Runs one claimed `add_shards` job to `done` or `failed` (rolled back).
pub async fn run_add_shards(store: &Store, prov: &Provisioner, job: &Job) -> Result<()> {
    let progress = Progress::for_job(store, job.id, job.memo.as_ref());
    let r = add_shards(store, prov, job, &progress).await;
    progress.close().await;
    r
}

async fn add_shards(
    store: &Store,
    prov: &Provisioner,
    job: &Job,
    progress: &Progress,
) -> Result<()> {
    let memo = ScaleMemo::of(job);
    match memo.stage.as_str() {
        "recorded" => return scale::finish(store, job.id, memo, progress).await,
        _ if memo.plan.is_some() => {
            let why = "the manager restarted mid-job";
            return scale::rollback(store, prov, job.id, memo, why, progress).await;
        }
        _ => {}
    }
    let info = scale::info(job)?;
    let mut memo = ScaleMemo {
        cluster_id: Some(info.cluster_id),
        ..ScaleMemo::default()
    };

    let step = progress.step("plan");
    let planned = async {
        let req: AddShards = serde_json::from_value(info.request.clone())
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let detail = store.cluster_detail(info.cluster_id).await?;
        let machines = store.list_machines().await?;
        let pw = scale::passwords(store, info.cluster_id).await?;
        let plan = plan_add_shards(&req, &detail, &machines, pw)?;
        Ok::<_, Error>((plan, machines))
    }
    .await;
    let (plan, machines) = match planned {
        Ok(p) => {
            let names: Vec<&str> = p.0.shards.iter().map(|s| s.name.as_str()).collect();
            step.done_with(names.join(", "));
            p
        }
        Err(e) => {
            step.fail(&e);
            return scale::fail_with(store, job.id, memo, &e, progress).await;
        }
    };
    progress.plan(["reserve ports"]);
    progress.plan(planned_steps(&plan));
    progress.plan(["record topology", "push catalog"]);

    memo.stage = "planned".into();
    memo.plan = Some(plan.clone());
    if let Err(e) = scale::reserve(store, job.id, &memo, progress).await {
        progress.skip_pending("ports could not be reserved");
        memo.plan = None;
        memo.stage = "failed".into();
        return scale::fail_with(store, job.id, memo, &e, progress).await;
    }

    if let Err(e) = prov.install_cluster_with(&machines, &plan, progress).await {
        progress.skip_pending("an earlier step failed");
        return scale::rollback(store, prov, job.id, memo, &e.to_string(), progress).await;
    }

    let step = progress.step("record topology");
    memo.stage = "recorded".into();
    let cluster_id = info.cluster_id;
    let recorded = {
        let _write = progress.exclusive().await;
        store
            .tx(async |tx| {
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
                    let p = &sp.nodes[0].slot;
                    for (i, n) in sp.nodes.iter().enumerate() {
                        let primary = (i > 0).then_some((p.hostaddr.as_str(), p.port));
                        scale::insert_node(tx, cluster_id, shard.id, &plan, n, primary).await?;
                    }
                }
                update_ports(tx, &plan, |s, p| Ok(s.commit(p))).await?;
                scale::write_memo(tx, job.id, &memo, progress).await
            })
            .await
    };
    match recorded {
        Ok(()) => {
            scale::adopt(progress, &memo)?;
            step.done();
        }
        Err(e) => {
            step.fail(&e);
            memo.stage = "installed".into();
            return scale::rollback(store, prov, job.id, memo, &e.to_string(), progress).await;
        }
    }
    scale::finish(store, job.id, memo, progress).await
}

/// Refuses (409) to delete shard `shard_id` when it is the only one of cluster `cluster`
/// (`shards` shards in all): a cluster keeps at least one shard. Checked when `delete_shard` is
/// accepted and again when the job plans, so nothing is touched either way.
pub(crate) fn refuse_last_shard(cluster: &str, shard_id: i64, shards: usize) -> Result<()> {
    if shards <= 1 {
        return Err(Error::Conflict(format!(
            "shard {shard_id} is the last shard of cluster {cluster}: a cluster keeps at least \
             one shard; delete the cluster instead"
        )));
    }
    Ok(())
}

/// Runs one claimed `delete_shard` job to `done` or `failed`.
pub async fn run_delete_shard(store: &Store, prov: &Provisioner, job: &Job) -> Result<()> {
    let progress = Progress::for_job(store, job.id, job.memo.as_ref());
    let r = delete_shard(store, prov, job, &progress).await;
    progress.close().await;
    r
}

async fn delete_shard(
    store: &Store,
    prov: &Provisioner,
    job: &Job,
    progress: &Progress,
) -> Result<()> {
    let info = scale::info(job)?;
    let shard_id = info
        .shard_id
        .ok_or_else(|| Error::Invalid(format!("job {}: request has no shard_id", job.id)))?;
    let mut memo = ScaleMemo::of(job);
    memo.cluster_id = Some(info.cluster_id);
    memo.shard_id = Some(shard_id);
    if memo.stage == "removed" {
        return scale::finish(store, job.id, memo, progress).await;
    }

    if memo.plan.is_none() {
        // First run: find the shard's instances and record them before touching any.
        let step = progress.step("plan");
        let planned = async {
            let detail = store.cluster_detail(info.cluster_id).await?;
            let machines = store.list_machines().await?;
            let sd = shard_in(&detail, shard_id)?;
            refuse_last_shard(&detail.cluster.name, shard_id, detail.shards.len())?;
            let mut plan = removal_plan(&detail, &sd.shard.name, sd.nodes.iter(), &machines)?;
            super::delete::apply_recorded_dirs(store, &mut plan, &detail).await?;
            Ok::<_, Error>(plan)
        }
        .await;
        let plan = match planned {
            Ok(p) => {
                step.done_with(format!("{} nodes", p.shards[0].nodes.len()));
                p
            }
            Err(e) => {
                step.fail(&e);
                return scale::fail_with(store, job.id, memo, &e, progress).await;
            }
        };
        memo.stage = "removing".into();
        memo.plan = Some(plan);
    }
    // Every node of the shard is marked `Deleted` (again on resume) before any is touched, so
    // HA stops watching the shard and never fails over to a node being removed.
    {
        let _write = progress.exclusive().await;
        store
            .tx(async |tx| {
                let all = kunlun_meta::store::repo::nodes::list(tx, Some(shard_id)).await?;
                scale::retire_nodes(tx, &all).await?;
                scale::write_memo(tx, job.id, &memo, progress).await
            })
            .await?;
    }
    scale::adopt(progress, &memo)?;
    let Some(plan) = memo.plan.clone() else {
        return Err(Error::Internal("delete_shard without a plan".into()));
    };
    if let Err(e) = scale::uninstall(store, prov, &plan, progress).await {
        let e = Error::Unavailable(format!("{e}; the shard's rows and ports are kept"));
        return scale::fail_with(store, job.id, memo, &e, progress).await;
    }

    let step = progress.step("remove rows and ports");
    memo.stage = "removed".into();
    let removed = {
        let _write = progress.exclusive().await;
        store
            .tx(async |tx| {
                let nodes = kunlun_meta::store::repo::nodes::list(tx, Some(shard_id)).await?;
                for n in &nodes {
                    scale::delete_node_rows(tx, n).await?;
                }
                match shards::delete(tx, shard_id).await {
                    Ok(()) | Err(MetaError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                scale::release_ports(tx, &plan).await?;
                scale::write_memo(tx, job.id, &memo, progress).await
            })
            .await
    };
    match removed {
        Ok(()) => {
            scale::adopt(progress, &memo)?;
            step.done();
        }
        Err(e) => {
            step.fail(&e);
            memo.stage = "removing".into();
            return scale::fail_with(store, job.id, memo, &e.into(), progress).await;
        }
    }
    scale::finish(store, job.id, memo, progress).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_shard_is_refused_with_what_to_do_instead() {
        let e = refuse_last_shard("c1", 7, 1).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("shard 7") && msg.contains("c1"),
            "names the shard and cluster: {msg}"
        );
        assert!(
            msg.contains("a cluster keeps at least one shard; delete the cluster instead"),
            "{msg}"
        );
        assert!(refuse_last_shard("c1", 7, 0).is_err());
        assert!(refuse_last_shard("c1", 7, 2).is_ok());
    }
}
