//! `create_cluster`: a new cluster's storage shards and compute nodes placed, installed,
//! replicating, recorded and given the topology.
//!
//! Invariants: the cluster row (with its log tables) and its secret are written with the port
//! reservation, so after a crash the memo's `cluster_id` names every row a rollback removes;
//! shard, node and compute rows only after every instance answered; a cluster whose compute
//! nodes do not hold its topology is rolled back. The memo never holds passwords.

use kunlun_meta::api::CreateCluster;
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::Result as MetaResult;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::jobs::common::{insert_cluster, name_free, record_new_cluster, unrecord_new_cluster};
use crate::jobs::driver::{
    Direction, JobCtx, JobInfo, JobKind, JobMemo, Planned, PushPolicy, Stage,
};
use crate::jobs::plan::{plan_create_cluster, ClusterPlan, SystemPasswords};

pub const CREATE_CLUSTER: &str = "create_cluster";

/// The `create_cluster` kind.
pub struct CreateClusterJob;

/// The memo fields of `create_cluster` besides the common ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
}

/// The memo of a `create_cluster` job.
pub type CreateMemo = JobMemo<CreateExtra>;

impl JobKind for CreateClusterJob {
    const TYPE: &'static str = CREATE_CLUSTER;
    const DIRECTION: Direction = Direction::Add;
    const PUSH: PushPolicy = PushPolicy::AllMustHave;
    /// `installed` was written with the rows.
    const LEGACY_INSTALLED: Stage = Stage::Recorded;
    /// Its instances all answering after a restart are kept: replication, rows, push.
    const FORWARD_FROM_PLANNED: bool = true;
    const RECORD_STEP: &'static str = "record topology";
    const PUSH_STEP: &'static str = "push topology to compute nodes";
    type Request = CreateCluster;
    type Extra = CreateExtra;

    fn validate(req: &CreateCluster) -> Result<()> {
        Ok(req.validate()?)
    }

    async fn check(store: &Store, info: &JobInfo<CreateCluster>) -> Result<()> {
        let name = &info.request.name;
        name_free(store, name).await
    }

    async fn plan(
        cx: &JobCtx,
        info: &JobInfo<CreateCluster>,
        _: &mut CreateMemo,
    ) -> Result<Option<Planned>> {
        let machines = cx.store.list_machines().await?;
        let names: Vec<String> = cx
            .store
            .list_clusters()
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        let plan = plan_create_cluster(
            &info.request,
            &machines,
            &names,
            SystemPasswords::generate(),
        )?;
        let note = format!(
            "{} shards x {} nodes + {} compute nodes",
            plan.shards.len(),
            plan.shards.first().map_or(0, |s| s.nodes.len()),
            plan.comps.len()
        );
        Ok(Some(Planned {
            plan,
            machines,
            note,
        }))
    }

    /// The cluster row (which creates its log tables, with the creation paras in
    /// `db_clusters.memo` as the original keeps them) and its secret.
    async fn on_reserve(
        tx: &mut Tx,
        info: &JobInfo<CreateCluster>,
        plan: &ClusterPlan,
        memo: &mut CreateMemo,
    ) -> MetaResult<()> {
        let c = insert_cluster(tx, plan, info.request.nick_name.clone()).await?;
        memo.cluster_id = Some(c.id);
        memo.extra.cluster_name = Some(c.name);
        Ok(())
    }

    /// Shard, node, `node_map_master` and compute rows.
    async fn record(
        tx: &mut Tx,
        _: &JobInfo<CreateCluster>,
        plan: &ClusterPlan,
        memo: &mut CreateMemo,
    ) -> MetaResult<()> {
        record_new_cluster(tx, memo.cluster_id, plan, Self::TYPE).await
    }

    /// Every row of the cluster, its secret, its log tables and the cluster row.
    async fn unrecord(tx: &mut Tx, plan: &ClusterPlan, memo: &CreateMemo) -> MetaResult<()> {
        unrecord_new_cluster(tx, memo.cluster_id, plan).await
    }
}
