//! `delete_node`: a replica (never the primary) taken out of service, uninstalled and its
//! rows removed; semi-sync follows the shard's new size.
//!
//! Invariants: the node must not be the primary when accepted, when planned, and again when
//! it is retired (a failover may have promoted it since; checked in the transaction that
//! marks it `Deleted`, so HA stops watching it before it is uninstalled); rows go only after
//! the instance is gone.

use kunlun_meta::store::repo::shards;
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::Result as MetaResult;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::jobs::common::{
    apply_recorded_dirs, match_semi_sync, removable, remove_rows_in_shard, retire_in_shard,
    shard_of,
};
use crate::jobs::driver::{Direction, JobCtx, JobInfo, JobKind, JobMemo, Planned, PushPolicy};
use crate::jobs::plan::ClusterPlan;
use crate::jobs::plan_scale::{removal_plan, shard_in};

pub const DELETE_NODE: &str = "delete_node";

/// The `delete_node` kind.
pub struct DeleteNodeJob;

/// The request of a `delete_node` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub shard_id: i64,
    pub node_id: i64,
}

/// The memo fields of `delete_node` besides the common ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteNodeExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<i64>,
    /// The shard's node count before the removal, when this run removed the row.
    #[serde(skip)]
    before: Option<usize>,
}

type Memo = JobMemo<DeleteNodeExtra>;

impl JobKind for DeleteNodeJob {
    const TYPE: &'static str = DELETE_NODE;
    const DIRECTION: Direction = Direction::Remove;
    const PUSH: PushPolicy = PushPolicy::BestEffort;
    const RETIRE_STEP: Option<&'static str> = Some("take node out of service");
    const RECORD_STEP: &'static str = "remove rows and ports";
    type Request = NodeRef;
    type Extra = DeleteNodeExtra;

    /// 404 for a node of another shard, 409 for the primary.
    async fn check(store: &Store, info: &JobInfo<NodeRef>) -> Result<()> {
        let NodeRef { shard_id, node_id } = info.request;
        shard_of(store, info.cluster()?, shard_id).await?;
        let all = store.list_shard_nodes(Some(shard_id)).await?;
        removable(&all, shard_id, node_id)?;
        Ok(())
    }

    fn extra(info: &JobInfo<NodeRef>) -> DeleteNodeExtra {
        DeleteNodeExtra {
            shard_id: Some(info.request.shard_id),
            before: None,
        }
    }

    async fn plan(cx: &JobCtx, info: &JobInfo<NodeRef>, _: &mut Memo) -> Result<Option<Planned>> {
        let NodeRef { shard_id, node_id } = info.request;
        let detail = cx.store.cluster_detail(info.cluster()?).await?;
        let machines = cx.store.list_machines().await?;
        let sd = shard_in(&detail, shard_id)?;
        let n = removable(&sd.nodes, shard_id, node_id)?;
        let mut plan = removal_plan(&detail, &sd.shard.name, [n], &machines)?;
        apply_recorded_dirs(&cx.store, &mut plan, &detail).await?;
        let i = &plan.shards[0].nodes[0].slot;
        let note = format!("storage {}:{}", i.hostaddr, i.port);
        Ok(Some(Planned {
            plan,
            machines,
            note,
        }))
    }

    async fn on_reserve(
        tx: &mut Tx,
        info: &JobInfo<NodeRef>,
        _: &ClusterPlan,
        _: &mut Memo,
    ) -> MetaResult<()> {
        retire_in_shard(tx, info.request.shard_id, Some(info.request.node_id)).await
    }

    async fn record(
        tx: &mut Tx,
        info: &JobInfo<NodeRef>,
        _: &ClusterPlan,
        memo: &mut Memo,
    ) -> MetaResult<()> {
        let NodeRef { shard_id, node_id } = info.request;
        let all = remove_rows_in_shard(tx, shard_id, Some(node_id)).await?;
        if all.iter().any(|n| n.id == node_id) {
            let count = all.len() as i64 - 1;
            shards::set_nodes(tx, shard_id, count, i64::from(count > 1)).await?;
            memo.extra.before = Some(all.len());
        }
        Ok(())
    }

    async fn after_record(cx: &JobCtx, plan: &ClusterPlan, memo: &Memo) {
        if let (Some(before), Some(shard_id)) = (memo.before, memo.shard_id) {
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
