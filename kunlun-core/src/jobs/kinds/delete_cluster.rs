//! `delete_cluster`: every storage and compute instance of a cluster uninstalled, then its
//! rows and per-cluster tables removed and its ports released.
//!
//! Invariants: the instances to remove come from the metadata rows (pure
//! [`plan_from_rows`]); every storage node is marked `Deleted` before any is touched, so HA
//! stops watching the cluster's shards; rows go only after their instances are gone.

use kunlun_meta::store::repo::nodes;
use kunlun_meta::store::Tx;
use kunlun_meta::{Error as MetaError, Result as MetaResult};

use crate::error::{Error, Result};
use crate::jobs::common::{apply_recorded_dirs, remove_cluster_rows, retire_nodes};
use crate::jobs::driver::{
    Direction, JobCtx, JobInfo, JobKind, JobMemo, NoExtra, Planned, PushPolicy,
};
use crate::jobs::plan::{plan_from_rows, ClusterPlan};

pub const DELETE_CLUSTER: &str = "delete_cluster";

/// The `delete_cluster` kind.
pub struct DeleteClusterJob;

type Memo = JobMemo<NoExtra>;

fn cluster_of(memo: &Memo) -> MetaResult<i64> {
    memo.cluster_id
        .ok_or_else(|| MetaError::Invalid("delete_cluster memo has no cluster_id".into()))
}

impl JobKind for DeleteClusterJob {
    const TYPE: &'static str = DELETE_CLUSTER;
    const DIRECTION: Direction = Direction::Remove;
    const PUSH: PushPolicy = PushPolicy::None;
    const PLAN_STEP: &'static str = "read topology";
    const RECORD_STEP: &'static str = "remove rows and ports";
    type Request = NoExtra;
    type Extra = NoExtra;

    async fn plan(cx: &JobCtx, info: &JobInfo<NoExtra>, _: &mut Memo) -> Result<Option<Planned>> {
        let detail = match cx
            .store
            .cluster_detail(info.cluster()?)
            .await
            .map_err(Error::from)
        {
            Ok(d) => d,
            // Already gone (a resumed job that had finished the removal): done.
            Err(Error::NotFound {
                what: "cluster", ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let machines = cx.store.list_machines().await?;
        let mut plan = plan_from_rows(&detail, &machines)?;
        apply_recorded_dirs(&cx.store, &mut plan, &detail).await?;
        Ok(Some(Planned {
            plan,
            machines,
            note: String::new(),
        }))
    }

    /// One `remove <kind> <host:port>` per instance, then `remove rows and ports`.
    fn steps(plan: &ClusterPlan) -> Vec<String> {
        let storage = plan
            .shards
            .iter()
            .flat_map(|s| s.nodes.iter())
            .map(|n| ("storage", n));
        let comps = plan.comps.iter().map(|c| ("compute", c));
        storage
            .chain(comps)
            .map(|(kind, i)| format!("remove {kind} {}:{}", i.slot.hostaddr, i.slot.port))
            .chain(std::iter::once(Self::RECORD_STEP.to_string()))
            .collect()
    }

    async fn on_reserve(
        tx: &mut Tx,
        _: &JobInfo<NoExtra>,
        _: &ClusterPlan,
        memo: &mut Memo,
    ) -> MetaResult<()> {
        let all = nodes::list_by_cluster(tx, cluster_of(memo)?).await?;
        retire_nodes(tx, &all).await
    }

    async fn record(
        tx: &mut Tx,
        _: &JobInfo<NoExtra>,
        plan: &ClusterPlan,
        memo: &mut Memo,
    ) -> MetaResult<()> {
        remove_cluster_rows(tx, cluster_of(memo)?, &plan.name).await
    }
}
