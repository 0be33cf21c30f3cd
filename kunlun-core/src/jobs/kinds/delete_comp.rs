//! `delete_comp`: one compute node taken out of service, uninstalled, and its row and ports
//! removed.
//!
//! Invariant: the row goes only after the instance is gone; a node whose uninstall failed is
//! put back in service (it may still run, and catalog pushes would skip it forever).

use kunlun_meta::api::ClusterDetail;
use kunlun_meta::model::NodeStatus;
use kunlun_meta::store::repo::comps;
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::{Error as MetaError, Result as MetaResult};
use serde::{Deserialize, Serialize};

use super::{CompsExtra, CompsMemo};
use crate::error::{Error, Result};
use crate::jobs::common::apply_recorded_dirs;
use crate::jobs::driver::{Direction, JobCtx, JobInfo, JobKind, Planned, PushPolicy};
use crate::jobs::plan::ClusterPlan;
use crate::jobs::plan_comps::plan_delete_comp;

pub const DELETE_COMP: &str = "delete_comp";

/// The `delete_comp` kind.
pub struct DeleteCompJob;

/// The request of a `delete_comp` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompRef {
    pub comp_id: i64,
}

impl JobKind for DeleteCompJob {
    const TYPE: &'static str = DELETE_COMP;
    const DIRECTION: Direction = Direction::Remove;
    const PUSH: PushPolicy = PushPolicy::None;
    const RECORD_STEP: &'static str = "remove row and ports";
    type Request = CompRef;
    type Extra = CompsExtra;

    /// 404 unless the compute node belongs to the cluster.
    async fn check(store: &Store, info: &JobInfo<CompRef>) -> Result<()> {
        let id = info.request.comp_id;
        if !store
            .list_comp_nodes(Some(info.cluster()?))
            .await?
            .iter()
            .any(|c| c.id == id)
        {
            return Err(Error::NotFound {
                what: "compute node of this cluster",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    fn extra(info: &JobInfo<CompRef>) -> CompsExtra {
        CompsExtra {
            comp_ids: vec![info.request.comp_id],
            before: None,
        }
    }

    async fn plan(
        cx: &JobCtx,
        info: &JobInfo<CompRef>,
        _: &mut CompsMemo,
    ) -> Result<Option<Planned>> {
        let cluster_id = info.cluster()?;
        let cluster = cx.store.get_cluster(cluster_id).await?;
        let Some(comp) = cx
            .store
            .list_comp_nodes(Some(cluster_id))
            .await?
            .into_iter()
            .find(|c| c.id == info.request.comp_id)
        else {
            // Gone already (a resumed job that had finished the removal).
            return Ok(None);
        };
        let machines = cx.store.list_machines().await?;
        let mut plan = plan_delete_comp(&cluster, &comp, &machines)?;
        let detail = ClusterDetail {
            cluster,
            shards: Vec::new(),
            comp_nodes: vec![comp.clone()],
        };
        apply_recorded_dirs(&cx.store, &mut plan, &detail).await?;
        Ok(Some(Planned {
            plan,
            machines,
            note: format!("{} ({}:{})", comp.name, comp.hostaddr, comp.port),
        }))
    }

    /// Out of service first: catalog pushes and routing skip it from now on.
    async fn on_reserve(
        tx: &mut Tx,
        info: &JobInfo<CompRef>,
        _: &ClusterPlan,
        memo: &mut CompsMemo,
    ) -> MetaResult<()> {
        let id = info.request.comp_id;
        match comps::get(tx, id).await {
            Ok(c) => memo.extra.before = Some(c.status),
            Err(MetaError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        comps::set_status(tx, id, NodeStatus::Deleted).await
    }

    async fn on_uninstall_failed(cx: &JobCtx, info: &JobInfo<CompRef>, memo: &CompsMemo) {
        let id = info.request.comp_id;
        let back = status_after_failed_uninstall(memo.before.unwrap_or(NodeStatus::Deleted));
        if let Err(e) = cx
            .store
            .tx(async |tx| comps::set_status(tx, id, back).await)
            .await
        {
            tracing::error!(comp_id = id, error = %e, "cannot put the compute node back in service");
        }
    }

    async fn record(
        tx: &mut Tx,
        info: &JobInfo<CompRef>,
        _: &ClusterPlan,
        _: &mut CompsMemo,
    ) -> MetaResult<()> {
        match comps::delete(tx, info.request.comp_id).await {
            Ok(()) | Err(MetaError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The status a compute node gets back when its uninstall failed (it may still run): the one
/// it had, or `Active` when that was already `Deleted` (a resumed job).
fn status_after_failed_uninstall(before: NodeStatus) -> NodeStatus {
    match before {
        NodeStatus::Deleted => NodeStatus::Active,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compute_node_whose_uninstall_failed_goes_back_in_service() {
        let back = status_after_failed_uninstall;
        assert_eq!(back(NodeStatus::Active), NodeStatus::Active);
        assert_eq!(back(NodeStatus::Deleted), NodeStatus::Active);
        assert_eq!(back(NodeStatus::ManualStop), NodeStatus::ManualStop);
    }
}
