//! `add_shards`: new storage shards of an existing cluster placed, installed (primary plus
//! replicas following it by GTID, semi-sync in `rbr`), recorded and pushed to the compute
//! nodes.
//!
//! Invariant: as every adding kind (see [`crate::jobs::driver`]); the push is best effort
//! (the catalog sync catches a missed compute node up).

use kunlun_meta::api::AddShards;
use kunlun_meta::store::Tx;
use kunlun_meta::Result as MetaResult;

use super::{ScaleExtra, ScaleMemo};
use crate::error::Result;
use crate::jobs::common::{insert_shards, passwords};
use crate::jobs::driver::{Direction, JobCtx, JobInfo, JobKind, Planned, PushPolicy};
use crate::jobs::plan::ClusterPlan;
use crate::jobs::plan_scale::plan_add_shards;

pub const ADD_SHARDS: &str = "add_shards";

/// The `add_shards` kind.
pub struct AddShardsJob;

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
        let id = info.cluster_in_tx()?;
        insert_shards(tx, id, plan).await
    }
}
