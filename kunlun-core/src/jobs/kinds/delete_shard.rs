//! `delete_shard`: a shard's instances taken out of service, uninstalled, and its rows
//! removed; the compute nodes learn the change.
//!
//! Invariants: the last shard of a cluster is never deleted (the cluster is), checked at
//! accept and again when the job plans; every node of the shard is marked `Deleted` (again on
//! resume) before any is touched, so HA stops watching it; rows go only after the instances.

use kunlun_meta::store::repo::shards;
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::{Error as MetaError, Result as MetaResult};
use serde::{Deserialize, Serialize};

use super::{ScaleExtra, ScaleMemo};
use crate::error::{Error, Result};
use crate::jobs::common::{apply_recorded_dirs, remove_rows_in_shard, retire_in_shard, shard_of};
use crate::jobs::driver::{Direction, JobCtx, JobInfo, JobKind, Planned, PushPolicy};
use crate::jobs::plan::ClusterPlan;
use crate::jobs::plan_scale::{removal_plan, shard_in};

pub const DELETE_SHARD: &str = "delete_shard";

/// The `delete_shard` kind.
pub struct DeleteShardJob;

/// The request of a `delete_shard` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRef {
    pub shard_id: i64,
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

impl JobKind for DeleteShardJob {
    const TYPE: &'static str = DELETE_SHARD;
    const DIRECTION: Direction = Direction::Remove;
    const PUSH: PushPolicy = PushPolicy::BestEffort;
    const RECORD_STEP: &'static str = "remove rows and ports";
    type Request = ShardRef;
    type Extra = ScaleExtra;

    async fn check(store: &Store, info: &JobInfo<ShardRef>) -> Result<()> {
        let (cluster_id, shard_id) = (info.cluster()?, info.request.shard_id);
        shard_of(store, cluster_id, shard_id).await?;
        let shards = store.list_shards(Some(cluster_id)).await?.len();
        refuse_last_shard(&info.name, shard_id, shards)
    }

    fn extra(info: &JobInfo<ShardRef>) -> ScaleExtra {
        ScaleExtra {
            shard_id: Some(info.request.shard_id),
        }
    }

    async fn plan(
        cx: &JobCtx,
        info: &JobInfo<ShardRef>,
        _: &mut ScaleMemo,
    ) -> Result<Option<Planned>> {
        let shard_id = info.request.shard_id;
        let detail = cx.store.cluster_detail(info.cluster()?).await?;
        let machines = cx.store.list_machines().await?;
        let sd = shard_in(&detail, shard_id)?;
        refuse_last_shard(&detail.cluster.name, shard_id, detail.shards.len())?;
        let mut plan = removal_plan(&detail, &sd.shard.name, sd.nodes.iter(), &machines)?;
        apply_recorded_dirs(&cx.store, &mut plan, &detail).await?;
        let note = format!("{} nodes", plan.shards[0].nodes.len());
        Ok(Some(Planned {
            plan,
            machines,
            note,
        }))
    }

    async fn on_reserve(
        tx: &mut Tx,
        info: &JobInfo<ShardRef>,
        _: &ClusterPlan,
        _: &mut ScaleMemo,
    ) -> MetaResult<()> {
        retire_in_shard(tx, info.request.shard_id, None).await
    }

    async fn record(
        tx: &mut Tx,
        info: &JobInfo<ShardRef>,
        _: &ClusterPlan,
        _: &mut ScaleMemo,
    ) -> MetaResult<()> {
        let shard_id = info.request.shard_id;
        remove_rows_in_shard(tx, shard_id, None).await?;
        match shards::delete(tx, shard_id).await {
            Ok(()) | Err(MetaError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
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
