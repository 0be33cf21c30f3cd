//! The `add_nodes` and `delete_node` jobs: new replicas installed, seeded with the shard's data
//! (see [`super::seed`]) and following the primary by GTID, then recorded; a replica (never the
//! primary) uninstalled and removed. Both end with a catalog push.
//!
//! Invariants: as `add_shards` — ports reserved with the plan in the memo before any host is
//! touched; a new node's row (`replica`, its `node_map_master` row, the shard's `num_nodes`)
//! is written only once it replicates and has caught up, with its ports committed in the same
//! transaction; a failed or interrupted add is rolled back from its memo; a delete re-checks at
//! run time that the node is not the primary (a failover may have promoted it since it was
//! accepted; again when resumed) and marks it `Deleted` in the transaction that records the
//! removal, so HA stops watching it before it is uninstalled; rows go only after the instance
//! is gone.

use std::collections::HashMap;

use kunlun_meta::api::AddNodes;
use kunlun_meta::model::{Job, Machine, MemberState, ShardNode};
use kunlun_meta::store::repo::{nodes, shards};
use kunlun_meta::store::Store;
use kunlun_meta::{Error as MetaError, Result as MetaResult};
use tokio::task::JoinSet;

use super::cluster::update_ports;
use super::install::planned_steps;
use super::plan::{ClusterPlan, InstancePlan};
use super::plan_scale::{install_view, plan_add_nodes, removal_plan, shard_in};
use super::progress::Progress;
use super::scale::{self, ScaleMemo};
use super::seed;
use crate::accounts::MANAGER_USER;
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::storage::NodeAddr;

pub const ADD_NODES: &str = "add_nodes";
pub const DELETE_NODE: &str = "delete_node";

/// Runs one claimed `add_nodes` job to `done` or `failed` (rolled back).
pub async fn run_add_nodes(store: &Store, prov: &Provisioner, job: &Job) -> Result<()> {
    let progress = Progress::for_job(store, job.id, job.memo.as_ref());
    let r = add_nodes(store, prov, job, &progress).await;
    progress.close().await;
    r
}

fn label(n: &InstancePlan) -> String {
    format!("storage {}:{}", n.slot.hostaddr, n.slot.port)
}

async fn add_nodes(
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
    let shard_id = info
        .shard_id
        .ok_or_else(|| Error::Invalid(format!("job {}: request has no shard_id", job.id)))?;
    let mut memo = ScaleMemo {
        cluster_id: Some(info.cluster_id),
        shard_id: Some(shard_id),
        ..ScaleMemo::default()
    };

    let step = progress.step("plan");
    let planned = async {
        let req: AddNodes = serde_json::from_value(info.request.clone())
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let detail = store.cluster_detail(info.cluster_id).await?;
        let machines = store.list_machines().await?;
        let pw = scale::passwords(store, info.cluster_id).await?;
        let plan = plan_add_nodes(&req, &detail, shard_id, &machines, pw)?;
        Ok::<_, Error>((plan, machines))
    }
    .await;
    let (plan, machines) = match planned {
        Ok(p) => {
            let new: Vec<String> = p.0.shards[0].nodes.iter().map(label).collect();
            step.done_with(new.join(", "));
            p
        }
        Err(e) => {
            step.fail(&e);
            return scale::fail_with(store, job.id, memo, &e, progress).await;
        }
    };
    let new_nodes = plan.shards[0].nodes.clone();
    progress.plan(["reserve ports"]);
    progress.plan(planned_steps(&install_view(&plan)));
    for n in &new_nodes {
        progress.plan([
            format!("seed {}", label(n)),
            format!("replicate {}", label(n)),
        ]);
    }
    progress.plan(["record topology", "push catalog"]);

    memo.stage = "planned".into();
    memo.plan = Some(plan.clone());
    if let Err(e) = scale::reserve(store, job.id, &memo, progress).await {
        progress.skip_pending("ports could not be reserved");
        memo.plan = None;
        memo.stage = "failed".into();
        return scale::fail_with(store, job.id, memo, &e, progress).await;
    }

    let installed = async {
        prov.install_cluster_with(&machines, &install_view(&plan), progress)
            .await?;
        seed_all(store, prov, &machines, &plan, shard_id, progress).await
    }
    .await;
    let primary = match installed {
        Ok(p) => p,
        Err(e) => {
            progress.skip_pending("an earlier step failed");
            return scale::rollback(store, prov, job.id, memo, &e.to_string(), progress).await;
        }
    };

    let step = progress.step("record topology");
    memo.stage = "recorded".into();
    let cluster_id = info.cluster_id;
    let recorded = {
        let _write = progress.exclusive().await;
        store
            .tx(async |tx| {
                let current = nodes::list(tx, Some(shard_id)).await?;
                primary_unchanged(&current, (&primary.0, primary.1))?;
                let p = Some((primary.0.as_str(), primary.1));
                for n in &new_nodes {
                    scale::insert_node(tx, cluster_id, shard_id, &plan, n, p).await?;
                }
                let count = nodes::list(tx, Some(shard_id)).await?.len() as i64;
                shards::set_nodes(tx, shard_id, count, i64::from(count > 1)).await?;
                update_ports(tx, &plan, |s, p| Ok(s.commit(p))).await?;
                scale::write_memo(tx, job.id, &memo, progress).await?;
                Ok(count as usize)
            })
            .await
    };
    let count = match recorded {
        Ok(count) => {
            scale::adopt(progress, &memo)?;
            step.done();
            count
        }
        Err(e) => {
            step.fail(&e);
            memo.stage = "installed".into();
            return scale::rollback(store, prov, job.id, memo, &e.to_string(), progress).await;
        }
    };
    let before = count.saturating_sub(new_nodes.len());
    scale::match_semi_sync(store, shard_id, plan.ha_mode, before, progress).await;
    scale::finish(store, job.id, memo, progress).await
}

/// Refuses (`Conflict`) when the shard's stored primary among `current` is no longer the
/// `seeded` one the new nodes follow (a failover during the seed): they would be recorded
/// following a dead primary.
fn primary_unchanged(current: &[ShardNode], seeded: (&str, u16)) -> MetaResult<()> {
    let now = current
        .iter()
        .find(|n| n.member_state == MemberState::Source);
    match now {
        Some(n) if (n.hostaddr.as_str(), n.port) == seeded => Ok(()),
        _ => Err(MetaError::Conflict(
            "the shard's primary changed during the seed".into(),
        )),
    }
}

/// Seeds every new node of `plan` in parallel and makes it follow the shard's primary (read
/// from the store now, so a failover since planning is followed); returns the primary.
async fn seed_all(
    store: &Store,
    prov: &Provisioner,
    machines: &[Machine],
    plan: &ClusterPlan,
    shard_id: i64,
    progress: &Progress,
) -> Result<(String, u16)> {
    let current = store.list_shard_nodes(Some(shard_id)).await?;
    let primary = current
        .iter()
        .find(|n| n.member_state == MemberState::Source)
        .cloned()
        .ok_or_else(|| Error::Conflict(format!("shard {shard_id} has no primary")))?;
    let source = seed::choose_source(&current, &primary).await;
    let by_id: HashMap<i64, &Machine> = machines.iter().map(|m| (m.id, m)).collect();
    let mut set = JoinSet::new();
    for n in plan.shards.iter().flat_map(|s| s.nodes.iter()) {
        let m = by_id
            .get(&n.slot.machine_id)
            .ok_or_else(|| Error::NotFound {
                what: "machine",
                id: n.slot.machine_id.to_string(),
            })?;
        let target = prov.target(m);
        let new = NodeAddr {
            host: n.slot.hostaddr.clone(),
            port: n.slot.port,
            user: MANAGER_USER.into(),
            password: plan.passwords.manager.clone(),
        };
        let (prov, n, source, primary, repl, progress) = (
            prov.clone(),
            n.clone(),
            source.clone(),
            primary.clone(),
            plan.passwords.repl.clone(),
            progress.clone(),
        );
        set.spawn(async move {
            let l = label(&n);
            let step = progress.step(format!("seed {l}"));
            step.note(format!("from {}:{}", source.hostaddr, source.port));
            let src = NodeAddr::from(&source);
            let gtid = match seed::seed(&prov.ssh, &*prov.storage, &target, &n.base_dir, &src, &new)
                .await
            {
                Ok(g) => {
                    step.done_with(format!("from {}:{} at '{g}'", source.hostaddr, source.port));
                    g
                }
                Err(e) => {
                    step.fail(&e);
                    return Err(e);
                }
            };
            let step = progress.step(format!("replicate {l}"));
            let r = async {
                seed::follow(&new, (&primary.hostaddr, primary.port), &repl, &gtid).await?;
                seed::wait_caught_up(&new, &NodeAddr::from(&primary), seed::CATCH_UP_TIMEOUT).await
            }
            .await;
            match &r {
                Ok(()) => step.done(),
                Err(e) => step.fail(e),
            }
            r
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) => failures.push(format!("seed task failed: {e}")),
        }
    }
    if failures.is_empty() {
        Ok((primary.hostaddr, primary.port))
    } else {
        failures.sort();
        Err(Error::Unavailable(failures.join("; ")))
    }
}

/// Runs one claimed `delete_node` job to `done` or `failed`.
pub async fn run_delete_node(store: &Store, prov: &Provisioner, job: &Job) -> Result<()> {
    let progress = Progress::for_job(store, job.id, job.memo.as_ref());
    let r = delete_node(store, prov, job, &progress).await;
    progress.close().await;
    r
}

/// The stored node `node_id` of shard `shard_id`, refused when it is the primary.
fn removable(all: &[ShardNode], shard_id: i64, node_id: i64) -> Result<&ShardNode> {
    let n = all
        .iter()
        .find(|n| n.id == node_id)
        .ok_or_else(|| Error::NotFound {
            what: "node of this shard",
            id: node_id.to_string(),
        })?;
    if n.member_state == MemberState::Source {
        return Err(Error::Conflict(format!(
            "node {node_id} is the primary of shard {shard_id}; switch over first"
        )));
    }
    Ok(n)
}

/// The row of node `node_id` among `all` (none when already removed: a resumed job), refused
/// when it became the primary since the job was planned (a failover promoted it).
fn still_removable(all: &[ShardNode], node_id: i64) -> MetaResult<Option<ShardNode>> {
    match all.iter().find(|n| n.id == node_id) {
        Some(n) if n.member_state == MemberState::Source => Err(MetaError::Conflict(format!(
            "node {node_id} became primary; switch over first"
        ))),
        n => Ok(n.cloned()),
    }
}

async fn delete_node(
    store: &Store,
    prov: &Provisioner,
    job: &Job,
    progress: &Progress,
) -> Result<()> {
    let info = scale::info(job)?;
    let (shard_id, node_id) = match (info.shard_id, info.node_id) {
        (Some(s), Some(n)) => (s, n),
        _ => {
            return Err(Error::Invalid(format!(
                "job {}: request needs shard_id and node_id",
                job.id
            )))
        }
    };
    let mut memo = ScaleMemo::of(job);
    memo.cluster_id = Some(info.cluster_id);
    memo.shard_id = Some(shard_id);
    if memo.stage == "removed" {
        return scale::finish(store, job.id, memo, progress).await;
    }

    let first_run = memo.plan.is_none();
    if first_run {
        let step = progress.step("plan");
        let planned = async {
            let detail = store.cluster_detail(info.cluster_id).await?;
            let machines = store.list_machines().await?;
            let sd = shard_in(&detail, shard_id)?;
            let n = removable(&sd.nodes, shard_id, node_id)?;
            let mut plan = removal_plan(&detail, &sd.shard.name, [n], &machines)?;
            super::delete::apply_recorded_dirs(store, &mut plan, &detail).await?;
            Ok::<_, Error>(plan)
        }
        .await;
        let plan = match planned {
            Ok(p) => {
                step.done_with(label(&p.shards[0].nodes[0]));
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
    // At run time (again on resume): the node must not have become the primary since it was
    // planned; it is marked `Deleted` before it is touched, so HA no longer sees it.
    let step = progress.step("take node out of service");
    let retired = {
        let _write = progress.exclusive().await;
        store
            .tx(async |tx| {
                let all = nodes::list(tx, Some(shard_id)).await?;
                let n = still_removable(&all, node_id)?;
                scale::retire_nodes(tx, n.as_slice()).await?;
                scale::write_memo(tx, job.id, &memo, progress).await
            })
            .await
    };
    match retired {
        Ok(()) => {
            scale::adopt(progress, &memo)?;
            step.done();
        }
        Err(e) => {
            // Nothing was touched (the transaction rolled back); a plan never stored is dropped.
            step.fail(&e);
            progress.skip_pending("the node could not be taken out of service");
            memo.stage = "failed".into();
            if first_run {
                memo.plan = None;
            }
            return scale::fail_with(store, job.id, memo, &e.into(), progress).await;
        }
    }
    let Some(plan) = memo.plan.clone() else {
        return Err(Error::Internal("delete_node without a plan".into()));
    };
    if let Err(e) = scale::uninstall(store, prov, &plan, progress).await {
        let e = Error::Unavailable(format!("{e}; the node's row and ports are kept"));
        return scale::fail_with(store, job.id, memo, &e, progress).await;
    }

    let step = progress.step("remove rows and ports");
    memo.stage = "removed".into();
    let removed = {
        let _write = progress.exclusive().await;
        store
            .tx(async |tx| {
                let all = nodes::list(tx, Some(shard_id)).await?;
                let mut removed_from = None;
                if let Some(n) = all.iter().find(|n| n.id == node_id) {
                    scale::delete_node_rows(tx, n).await?;
                    let count = all.len() as i64 - 1;
                    shards::set_nodes(tx, shard_id, count, i64::from(count > 1)).await?;
                    removed_from = Some(all.len());
                }
                scale::release_ports(tx, &plan).await?;
                scale::write_memo(tx, job.id, &memo, progress).await?;
                Ok(removed_from)
            })
            .await
    };
    let removed_from = match removed {
        Ok(r) => {
            scale::adopt(progress, &memo)?;
            step.done();
            r
        }
        Err(e) => {
            step.fail(&e);
            memo.stage = "removing".into();
            return scale::fail_with(store, job.id, memo, &e.into(), progress).await;
        }
    };
    if let Some(before) = removed_from {
        scale::match_semi_sync(store, shard_id, plan.ha_mode, before, progress).await;
    }
    scale::finish(store, job.id, memo, progress).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::model::{NodeStatus, OnOff, SyncState};

    fn node(id: i64, source: bool) -> ShardNode {
        ShardNode {
            id,
            shard_id: 1,
            db_cluster_id: 7,
            hostaddr: "127.0.0.1".into(),
            port: 3000 + id as u16,
            user_name: MANAGER_USER.into(),
            passwd: String::new(),
            master_priority: 0,
            ro_weight: 0,
            status: NodeStatus::Active,
            member_state: if source {
                MemberState::Source
            } else {
                MemberState::Replica
            },
            sync_state: SyncState::Fsync,
            replica_delay: 0,
            backup_node: OnOff::Off,
            innodb_buffer_pool_mb: 64,
            when_created: None,
        }
    }

    #[test]
    fn a_replica_that_became_primary_is_no_longer_removable() {
        // Planned as a replica; a failover since promoted it.
        let all = vec![node(1, false), node(2, true)];
        let e = still_removable(&all, 2).unwrap_err();
        assert!(matches!(e, MetaError::Conflict(_)), "{e}");
        assert_eq!(e.to_string(), "node 2 became primary; switch over first");
        assert_eq!(still_removable(&all, 1).unwrap().map(|n| n.id), Some(1));
        // Already removed (a resumed job): nothing to retire, not an error.
        assert!(still_removable(&all, 9).unwrap().is_none());
    }

    #[test]
    fn new_nodes_are_recorded_only_while_the_seeded_primary_is_still_the_primary() {
        let all = vec![node(1, true), node(2, false)];
        assert!(primary_unchanged(&all, ("127.0.0.1", 3001)).is_ok());
        // A failover promoted node 2 during the seed.
        let after = vec![node(1, false), node(2, true)];
        let e = primary_unchanged(&after, ("127.0.0.1", 3001)).unwrap_err();
        assert!(matches!(e, MetaError::Conflict(_)), "{e}");
        assert!(e.to_string().contains("primary changed during the seed"));
        // No primary at all (mid-failover) is refused too.
        assert!(primary_unchanged(&[node(2, false)], ("127.0.0.1", 3001)).is_err());
    }
}
