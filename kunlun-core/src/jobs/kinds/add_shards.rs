//! `add_shards`: new storage shards of an existing cluster placed, installed (primary plus
//! replicas following it by GTID, semi-sync in `rbr`), recorded and pushed to the compute
//! nodes.
//!
//! Invariant: as every adding kind (see [`crate::jobs::driver`]); the push is best effort
//! (the catalog sync catches a missed compute node up).

use kunlun_meta::api::AddShards;
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::{Error as MetaError, Result as MetaResult};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::jobs::common::{insert_shards, passwords};
use crate::jobs::driver::{Direction, JobCtx, JobInfo, JobKind, JobMemo, Planned, PushPolicy};
use crate::jobs::plan::ClusterPlan;
use crate::jobs::plan_scale::plan_add_shards;

pub const ADD_SHARDS: &str = "add_shards";

/// The `add_shards` kind.
pub struct AddShardsJob;

/// The memo fields of the shard and node jobs besides the common ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<i64>,
}

/// The memo of a shard or node job.
pub type ScaleMemo = JobMemo<ScaleExtra>;

impl JobKind for AddShardsJob {
    const TYPE: &'static str = ADD_SHARDS;
    const DIRECTION: Direction = Direction::Add;
    const PUSH: PushPolicy = PushPolicy::BestEffort;
    const RECORD_STEP: &'static str = "record topology";
    type Request = AddShards;
    type Extra = ScaleExtra;

    fn validate(req: &AddShards) -> Result<()> {
        Ok(req.validate()?)
    }

    async fn check(_: &Store, _: &JobInfo<AddShards>) -> Result<()> {
        Ok(())
    }

    fn extra(_: &JobInfo<AddShards>) -> ScaleExtra {
        ScaleExtra::default()
    }

    async fn plan(
        cx: &JobCtx,
        info: &JobInfo<AddShards>,
        _: &mut ScaleMemo,
    ) -> Result<Option<Planned>> {
        let id = info.cluster()?;
        let detail = cx.store.cluster_detail(id).await?;
        let machines = cx.store.list_machines().await?;
        let pw = passwords(&cx.store, id).await?;
        let plan = plan_add_shards(&info.request, &detail, &machines, pw)?;
        let names: Vec<&str> = plan.shards.iter().map(|s| s.name.as_str()).collect();
        let note = names.join(", ");
        Ok(Some(Planned {
            plan,
            machines,
            note,
        }))
    }

    async fn record(
        tx: &mut Tx,
        info: &JobInfo<AddShards>,
        plan: &ClusterPlan,
        _: &mut ScaleMemo,
    ) -> MetaResult<()> {
        let id = info
            .cluster_id
            .ok_or_else(|| MetaError::Invalid("add_shards without a cluster".into()))?;
        insert_shards(tx, id, plan).await
    }
}
