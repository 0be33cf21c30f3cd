//! `add_nodes`: new replicas of one shard, or of several shards in one job (the original's
//! `add_nodes` without `shard_id` adds to every shard), installed, each seeded with its own
//! shard's data (see [`crate::jobs::seed`]) and following that shard's primary by GTID, then
//! recorded.
//!
//! Invariants: a new node's row (`replica`, its `node_map_master` row, the shard's
//! `num_nodes`) is written only once it replicates and has caught up, and only while the
//! primary it was seeded from is still its shard's primary (a failover of any target shard
//! during the seed refuses the record and rolls the whole job back). The plan holds one
//! shard per target shard, in the order of [`AddNodesRequest::shards`].

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
use crate::jobs::plan::{ClusterPlan, InstancePlan, ShardPlan};
use crate::jobs::plan_scale::{distinct_shards, install_view, plan_add_nodes_to_shards};
use crate::jobs::seed;
use crate::storage::NodeAddr;

pub const ADD_NODES: &str = "add_nodes";

/// The `add_nodes` kind.
pub struct AddNodesJob;

/// The request of an `add_nodes` job: the target shards and the API body (`nodes` new
/// replicas for each target shard).
///
/// Stored spelling: `shard_id` is the first target shard, as it always was (a row stored
/// before several shards were possible, `{"shard_id": 5, "nodes": 1, ...}`, reads and runs as
/// before, and readers that know only `shard_id` still find one target); `shard_ids` lists
/// every target shard in order, starting with `shard_id`, and is written only when there are
/// two or more, so a one-shard job is stored exactly as before. Read it with
/// [`shards`](Self::shards); build it with [`new`](Self::new).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddNodesRequest {
    pub shard_id: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shard_ids: Vec<i64>,
    #[serde(flatten)]
    pub nodes: AddNodes,
}

impl AddNodesRequest {
    /// `nodes` for each of `shard_ids` (`Invalid` when empty).
    pub fn new(shard_ids: &[i64], nodes: AddNodes) -> Result<AddNodesRequest> {
        let Some(&first) = shard_ids.first() else {
            return Err(Error::Invalid("add_nodes names no shard".into()));
        };
        Ok(AddNodesRequest {
            shard_id: first,
            shard_ids: if shard_ids.len() > 1 {
                shard_ids.to_vec()
            } else {
                Vec::new()
            },
            nodes,
        })
    }

    /// Every target shard, in order.
    pub fn shards(&self) -> Vec<i64> {
        targets(self.shard_id, &self.shard_ids)
    }
}

/// `list` when given, else the one shard `first`.
fn targets(first: i64, list: &[i64]) -> Vec<i64> {
    if list.is_empty() {
        vec![first]
    } else {
        list.to_vec()
    }
}

/// The memo fields of `add_nodes` besides the common ones: `shard_id` (the first target, as
/// before) and `shard_ids` (every target, only when several), spelt as in the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddNodesExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shard_ids: Vec<i64>,
    /// Per target shard: the primary its new nodes were seeded from and follow (this run only).
    #[serde(skip)]
    primaries: HashMap<i64, (String, u16)>,
    /// Per target shard: its node count once recorded (this run only).
    #[serde(skip)]
    counts: HashMap<i64, usize>,
}

impl AddNodesExtra {
    /// Every target shard, in order (none in a memo written before planning had a shard).
    pub fn shards(&self) -> Vec<i64> {
        match self.shard_id {
            Some(first) => targets(first, &self.shard_ids),
            None => self.shard_ids.clone(),
        }
    }
}

/// The target shards paired with their part of `plan` (one plan shard per target, in order);
/// `None` when they do not match (a plan this job did not make).
fn per_shard<'a>(shards: &[i64], plan: &'a ClusterPlan) -> Option<Vec<(i64, &'a ShardPlan)>> {
    (shards.len() == plan.shards.len())
        .then(|| shards.iter().copied().zip(plan.shards.iter()).collect())
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
        req.nodes.validate()?;
        if req.shard_ids.first().is_some_and(|&s| s != req.shard_id) {
            return Err(Error::Invalid("shard_ids must start with shard_id".into()));
        }
        distinct_shards(&req.shards())
    }

    /// Every target shard belongs to the cluster (404 otherwise).
    async fn check(store: &Store, info: &JobInfo<AddNodesRequest>) -> Result<()> {
        let cluster_id = info.cluster()?;
        for shard_id in info.request.shards() {
            shard_of(store, cluster_id, shard_id).await?;
        }
        Ok(())
    }

    fn extra(info: &JobInfo<AddNodesRequest>) -> AddNodesExtra {
        AddNodesExtra {
            shard_id: Some(info.request.shard_id),
            shard_ids: info.request.shard_ids.clone(),
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
        let plan = plan_add_nodes_to_shards(
            &info.request.nodes,
            &detail,
            &info.request.shards(),
            &machines,
            pw,
        )?;
        let new: Vec<String> = plan
            .shards
            .iter()
            .flat_map(|s| s.nodes.iter())
            .map(label)
            .collect();
        Ok(Some(Planned {
            note: new.join(", "),
            plan,
            machines,
        }))
    }

    fn steps(plan: &ClusterPlan) -> Vec<String> {
        let mut steps = planned_steps(&install_view(plan));
        for n in plan.shards.iter().flat_map(|s| s.nodes.iter()) {
            steps.push(format!("seed {}", label(n)));
            steps.push(format!("replicate {}", label(n)));
        }
        steps
    }

    /// Install, then seed every new node and make it follow its shard's primary.
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
        let Some(targets) = per_shard(&info.request.shards(), plan) else {
            return Err(Error::Internal(
                "the plan does not hold one shard per target shard".into(),
            ));
        };
        memo.extra.primaries = seed_all(cx, machines, plan, &targets).await?;
        Ok(())
    }

    async fn record(
        tx: &mut Tx,
        info: &JobInfo<AddNodesRequest>,
        plan: &ClusterPlan,
        memo: &mut Memo,
    ) -> MetaResult<()> {
        let cluster_id = info.cluster_in_tx()?;
        let shard_ids = info.request.shards();
        let Some(targets) = per_shard(&shard_ids, plan) else {
            return Err(MetaError::Invalid(
                "the plan does not hold one shard per target shard".into(),
            ));
        };
        for (shard_id, sp) in targets {
            let Some((host, port)) = memo.extra.primaries.get(&shard_id).cloned() else {
                return Err(MetaError::Conflict(format!(
                    "the new nodes of shard {shard_id} follow no primary"
                )));
            };
            let current = nodes::list(tx, Some(shard_id)).await?;
            primary_unchanged(&current, (&host, port))
                .map_err(|e| MetaError::Conflict(format!("shard {shard_id}: {e}")))?;
            for n in &sp.nodes {
                insert_node(tx, cluster_id, shard_id, plan, n, Some((&host, port))).await?;
            }
            let count = nodes::list(tx, Some(shard_id)).await?.len() as i64;
            shards::set_nodes(tx, shard_id, count, i64::from(count > 1)).await?;
            memo.extra.counts.insert(shard_id, count as usize);
        }
        Ok(())
    }

    /// Semi-sync matched to each target shard's new node count.
    async fn after_record(cx: &JobCtx, plan: &ClusterPlan, memo: &Memo) {
        let Some(targets) = per_shard(&memo.shards(), plan) else {
            return;
        };
        for (shard_id, sp) in targets {
            let Some(&count) = memo.counts.get(&shard_id) else {
                continue;
            };
            let before = count.saturating_sub(sp.nodes.len());
            match_semi_sync(
                &cx.store,
                &cx.fleet,
                shard_id,
                plan.ha_mode,
                before,
                &cx.progress,
            )
            .await;
        }
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

/// Seeds every new node of `plan` in parallel, each from its own shard (`targets`: the shard
/// of each plan shard), and makes it follow its shard's primary (read from the store now, so
/// a failover since planning is followed); returns the primary of each shard.
async fn seed_all(
    cx: &JobCtx,
    machines: &[Machine],
    plan: &ClusterPlan,
    targets: &[(i64, &ShardPlan)],
) -> Result<HashMap<i64, (String, u16)>> {
    let by_id: HashMap<i64, &Machine> = machines.iter().map(|m| (m.id, m)).collect();
    // Every shard's primary and seed source first, so a shard without a primary fails the
    // job before any seed has started.
    let mut sources = Vec::with_capacity(targets.len());
    for &(shard_id, sp) in targets {
        let current = cx.store.list_shard_nodes(Some(shard_id)).await?;
        let primary = current
            .iter()
            .find(|n| n.member_state == MemberState::Source)
            .cloned()
            .ok_or_else(|| Error::Conflict(format!("shard {shard_id} has no primary")))?;
        let source = seed::choose_source(&current, &primary).await;
        sources.push((shard_id, sp, source, primary));
    }
    let mut primaries = HashMap::new();
    let mut set = JoinSet::new();
    for (shard_id, sp, source, primary) in &sources {
        primaries.insert(*shard_id, (primary.hostaddr.clone(), primary.port));
        spawn_seeds(cx, &by_id, plan, sp, source, primary, &mut set)?;
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
        Ok(primaries)
    } else {
        failures.sort();
        Err(Error::Unavailable(failures.join("; ")))
    }
}

/// Spawns into `set` the seed (from `source`) and follow (of `primary`) of every new node of
/// one shard's plan `sp`.
fn spawn_seeds(
    cx: &JobCtx,
    by_id: &HashMap<i64, &Machine>,
    plan: &ClusterPlan,
    sp: &ShardPlan,
    source: &ShardNode,
    primary: &ShardNode,
    set: &mut JoinSet<Result<()>>,
) -> Result<()> {
    for n in &sp.nodes {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::common::tests::node;

    fn one() -> AddNodes {
        AddNodes {
            nodes: 1,
            storage_hosts: vec![],
        }
    }

    #[test]
    fn a_request_stored_before_several_shards_reads_and_runs_as_one_shard() {
        use serde_json::json;
        let stored = json!({"shard_id": 5, "nodes": 1, "storage_hosts": [], "cluster_id": 3,
                            "name": "c1"});
        let info = JobInfo::<AddNodesRequest>::from_value(stored.clone()).unwrap();
        assert_eq!(info.request.shards(), [5]);
        assert_eq!(info.request, AddNodesRequest::new(&[5], one()).unwrap());
        assert!(AddNodesJob::validate(&info.request).is_ok());
        // A one-shard job is stored exactly as before.
        assert_eq!(info.to_value().unwrap(), stored);
        let memo = AddNodesJob::extra(&info);
        assert_eq!(serde_json::to_value(&memo).unwrap(), json!({"shard_id": 5}));
        assert_eq!(memo.shards(), [5]);
        let old: AddNodesExtra = serde_json::from_value(json!({"shard_id": 5})).unwrap();
        assert_eq!(old.shards(), [5]);
    }

    #[test]
    fn a_request_for_several_shards_keeps_the_first_as_shard_id_and_lists_them_all() {
        use serde_json::json;
        let req = AddNodesRequest::new(&[5, 7], one()).unwrap();
        assert_eq!(req.shards(), [5, 7]);
        let info = JobInfo {
            cluster_id: Some(3),
            name: "c1".into(),
            request: req,
        };
        let v = info.to_value().unwrap();
        assert_eq!(v["shard_id"], 5);
        assert_eq!(v["shard_ids"], json!([5, 7]));
        let back = JobInfo::<AddNodesRequest>::from_value(v).unwrap();
        assert_eq!(back, info);
        let memo = AddNodesJob::extra(&info);
        assert_eq!(
            serde_json::to_value(&memo).unwrap(),
            json!({"shard_id": 5, "shard_ids": [5, 7]})
        );
        let back: AddNodesExtra =
            serde_json::from_value(serde_json::to_value(&memo).unwrap()).unwrap();
        assert_eq!(back.shards(), [5, 7]);
    }

    #[test]
    fn bad_shard_lists_are_refused_as_invalid() {
        assert!(matches!(
            AddNodesRequest::new(&[], one()),
            Err(Error::Invalid(_))
        ));
        let dup = AddNodesRequest::new(&[5, 7, 5], one()).unwrap();
        let e = AddNodesJob::validate(&dup).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        let mut odd = AddNodesRequest::new(&[5, 7], one()).unwrap();
        odd.shard_id = 9;
        assert!(matches!(
            AddNodesJob::validate(&odd),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn the_plan_pairs_with_the_target_shards_in_order_or_not_at_all() {
        let sp = |name: &str| ShardPlan {
            name: name.into(),
            nodes: vec![],
        };
        let plan = ClusterPlan {
            name: "c1".into(),
            ha_mode: kunlun_meta::model::HaMode::Rbr,
            innodb_size_mb: 32,
            max_connections: 10,
            shards: vec![sp("shard_1"), sp("shard_2")],
            comps: vec![],
            passwords: crate::jobs::plan::SystemPasswords::unknown(),
        };
        let got = per_shard(&[5, 7], &plan).unwrap();
        let names: Vec<_> = got.iter().map(|(id, s)| (*id, s.name.as_str())).collect();
        assert_eq!(names, [(5, "shard_1"), (7, "shard_2")]);
        assert!(per_shard(&[5], &plan).is_none());
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
