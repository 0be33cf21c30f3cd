//! `add_nodes`: new replicas of a shard installed, seeded with the shard's data (see
//! [`crate::jobs::seed`]) and following the primary by GTID, then recorded.
//!
//! Invariants: a new node's row (`replica`, its `node_map_master` row, the shard's
//! `num_nodes`) is written only once it replicates and has caught up, and only while the
//! primary it was seeded from is still the shard's primary (a failover during the seed
//! refuses the record and rolls the job back).

use std::collections::HashMap;

use kunlun_meta::api::AddNodes;
use kunlun_meta::model::{Machine, MemberState, ShardNode};
use kunlun_meta::store::repo::{nodes, shards};
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::{Error as MetaError, Result as MetaResult};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::accounts::MANAGER_USER;
use crate::error::{Error, Result};
use crate::jobs::common::{insert_node, match_semi_sync, passwords, shard_of};
use crate::jobs::driver::{Direction, JobCtx, JobInfo, JobKind, JobMemo, Planned, PushPolicy};
use crate::jobs::install::planned_steps;
use crate::jobs::plan::{ClusterPlan, InstancePlan};
use crate::jobs::plan_scale::{install_view, plan_add_nodes};
use crate::jobs::seed;
use crate::storage::NodeAddr;

pub const ADD_NODES: &str = "add_nodes";

/// The `add_nodes` kind.
pub struct AddNodesJob;

/// The request of an `add_nodes` job: the shard and the API body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddNodesRequest {
    pub shard_id: i64,
    #[serde(flatten)]
    pub nodes: AddNodes,
}

/// The memo fields of `add_nodes` besides the common ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddNodesExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<i64>,
    /// The primary the new nodes were seeded from and follow (this run only).
    #[serde(skip)]
    primary: Option<(String, u16)>,
    /// The shard's node count once recorded (this run only).
    #[serde(skip)]
    count: usize,
}

type Memo = JobMemo<AddNodesExtra>;

fn label(n: &InstancePlan) -> String {
    format!("storage {}:{}", n.slot.hostaddr, n.slot.port)
}

impl JobKind for AddNodesJob {
    const TYPE: &'static str = ADD_NODES;
    const DIRECTION: Direction = Direction::Add;
    const PUSH: PushPolicy = PushPolicy::BestEffort;
    const RECORD_STEP: &'static str = "record topology";
    type Request = AddNodesRequest;
    type Extra = AddNodesExtra;

    fn validate(req: &AddNodesRequest) -> Result<()> {
        Ok(req.nodes.validate()?)
    }

    async fn check(store: &Store, info: &JobInfo<AddNodesRequest>) -> Result<()> {
        shard_of(store, info.cluster()?, info.request.shard_id).await
    }

    fn extra(info: &JobInfo<AddNodesRequest>) -> AddNodesExtra {
        AddNodesExtra {
            shard_id: Some(info.request.shard_id),
            ..AddNodesExtra::default()
        }
    }

    async fn plan(
        cx: &JobCtx,
        info: &JobInfo<AddNodesRequest>,
        _: &mut Memo,
    ) -> Result<Option<Planned>> {
        let id = info.cluster()?;
        let detail = cx.store.cluster_detail(id).await?;
        let machines = cx.store.list_machines().await?;
        let pw = passwords(&cx.store, id).await?;
        let plan = plan_add_nodes(
            &info.request.nodes,
            &detail,
            info.request.shard_id,
            &machines,
            pw,
        )?;
        let new: Vec<String> = plan.shards[0].nodes.iter().map(label).collect();
        Ok(Some(Planned {
            note: new.join(", "),
            plan,
            machines,
        }))
    }

    fn steps(plan: &ClusterPlan) -> Vec<String> {
        let mut steps = planned_steps(&install_view(plan));
        for n in &plan.shards[0].nodes {
            steps.push(format!("seed {}", label(n)));
            steps.push(format!("replicate {}", label(n)));
        }
        steps
    }

    /// Install, then seed every new node and make it follow the primary.
    async fn install(
        cx: &JobCtx,
        info: &JobInfo<AddNodesRequest>,
        machines: &[Machine],
        plan: &ClusterPlan,
        memo: &mut Memo,
    ) -> Result<()> {
        cx.fleet
            .install_cluster_with(machines, &install_view(plan), &cx.progress)
            .await?;
        let primary = seed_all(cx, machines, plan, info.request.shard_id).await?;
        memo.extra.primary = Some(primary);
        Ok(())
    }

    async fn record(
        tx: &mut Tx,
        info: &JobInfo<AddNodesRequest>,
        plan: &ClusterPlan,
        memo: &mut Memo,
    ) -> MetaResult<()> {
        let (cluster_id, shard_id) = (info.cluster_in_tx()?, info.request.shard_id);
        let Some((host, port)) = memo.extra.primary.clone() else {
            return Err(MetaError::Conflict(
                "the new nodes follow no primary".into(),
            ));
        };
        let current = nodes::list(tx, Some(shard_id)).await?;
        primary_unchanged(&current, (&host, port))?;
        for n in &plan.shards[0].nodes {
            insert_node(tx, cluster_id, shard_id, plan, n, Some((&host, port))).await?;
        }
        let count = nodes::list(tx, Some(shard_id)).await?.len() as i64;
        shards::set_nodes(tx, shard_id, count, i64::from(count > 1)).await?;
        memo.extra.count = count as usize;
        Ok(())
    }

    async fn after_record(cx: &JobCtx, plan: &ClusterPlan, memo: &Memo) {
        let Some(shard_id) = memo.shard_id else {
            return;
        };
        let before = memo.count.saturating_sub(plan.shards[0].nodes.len());
        match_semi_sync(&cx.store, shard_id, plan.ha_mode, before, &cx.progress).await;
    }
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
    cx: &JobCtx,
    machines: &[Machine],
    plan: &ClusterPlan,
    shard_id: i64,
) -> Result<(String, u16)> {
    let current = cx.store.list_shard_nodes(Some(shard_id)).await?;
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
        let target = cx.fleet.target(m);
        let new = NodeAddr {
            host: n.slot.hostaddr.clone(),
            port: n.slot.port,
            user: MANAGER_USER.into(),
            password: plan.passwords.manager.clone(),
        };
        let (prov, n, source, primary, repl, progress) = (
            cx.fleet.clone(),
            n.clone(),
            source.clone(),
            primary.clone(),
            plan.passwords.repl.clone(),
            cx.progress.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::common::tests::node;

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
