//! `add_comps`: new compute nodes of a cluster installed, recorded and given the topology
//! (the create machinery with a plan that has no shards).
//!
//! Invariants: the new nodes must hold the catalog, else they are rolled back (an older node
//! that missed it is caught up by the catalog sync); their password is the cluster's stored
//! owner password, else their siblings'.

use kunlun_meta::api::AddComps;
use kunlun_meta::store::repo::{comps, secrets};
use kunlun_meta::store::Tx;
use kunlun_meta::{Error as MetaError, Result as MetaResult};

use super::{CompsExtra, CompsMemo};
use crate::error::Result;
use crate::jobs::common::insert_comps;
use crate::jobs::driver::{Direction, JobCtx, JobInfo, JobKind, Planned, PushPolicy, Stage};
use crate::jobs::plan::ClusterPlan;
use crate::jobs::plan_comps::{comp_password, plan_add_comps};

pub const ADD_COMPS: &str = "add_comps";

/// The `add_comps` kind.
pub struct AddCompsJob;

impl JobKind for AddCompsJob {
    const TYPE: &'static str = ADD_COMPS;
    const DIRECTION: Direction = Direction::Add;
    const PUSH: PushPolicy = PushPolicy::NewMustHave;
    /// `installed` was written with the rows.
    const LEGACY_INSTALLED: Stage = Stage::Recorded;
    const RECORD_STEP: &'static str = "record compute nodes";
    type Request = AddComps;
    type Extra = CompsExtra;

    fn validate(req: &AddComps) -> Result<()> {
        Ok(req.validate()?)
    }

    async fn plan(
        cx: &JobCtx,
        info: &JobInfo<AddComps>,
        _: &mut CompsMemo,
    ) -> Result<Option<Planned>> {
        let cluster_id = info.cluster()?;
        let store = &cx.store;
        let cluster = store.get_cluster(cluster_id).await?;
        let existing = store.list_comp_nodes(Some(cluster_id)).await?;
        let machines = store.list_machines().await?;
        // The cluster's stored owner password; else (a cluster created before secrets were
        // kept) the one its compute nodes' rows hold; a cluster with none left gets a fresh one.
        let secret = match store
            .read(async |tx| secrets::get(tx, cluster_id).await)
            .await
        {
            Ok(s) => Some(s),
            Err(MetaError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let password = comp_password(secret.as_ref().map(|s| s.comp_pwd.as_str()), &existing)
            .unwrap_or_else(kunlun_provision::recipe::random_password);
        let mut plan = plan_add_comps(&info.request, &cluster, &existing, &machines, password)?;
        // The manager's own superuser on the new compute nodes, with the cluster's manager
        // password (the catalog push logs in with it); a cluster without stored passwords
        // is pushed to as its compute nodes' own login, so any password does.
        plan.passwords.manager = secret
            .map(|s| s.manager_pwd)
            .filter(|p| !p.is_empty())
            .unwrap_or_else(kunlun_provision::recipe::random_password);
        let note = format!("{} compute nodes", plan.comps.len());
        Ok(Some(Planned {
            plan,
            machines,
            note,
        }))
    }

    async fn record(
        tx: &mut Tx,
        info: &JobInfo<AddComps>,
        plan: &ClusterPlan,
        memo: &mut CompsMemo,
    ) -> MetaResult<()> {
        let id = info.cluster_in_tx()?;
        memo.extra.comp_ids = insert_comps(tx, id, plan).await?;
        Ok(())
    }

    async fn unrecord(tx: &mut Tx, _: &ClusterPlan, memo: &CompsMemo) -> MetaResult<()> {
        for id in &memo.comp_ids {
            if comps::get(tx, *id).await.is_ok() {
                comps::delete(tx, *id).await?;
            }
        }
        Ok(())
    }

    fn pushed_ids(memo: &CompsMemo) -> Vec<i64> {
        memo.comp_ids.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_request_is_read_without_the_fields_accept_added() {
        let info: JobInfo<AddComps> = JobInfo::from_value(
            json!({"comps": 2, "computer_hosts": ["h"], "cluster_id": 4, "name": "c"}),
        )
        .unwrap();
        assert_eq!(info.cluster().unwrap(), 4);
        assert_eq!(info.request.comps, 2);
        assert_eq!(info.request.computer_hosts, vec!["h".to_string()]);
        assert!(JobInfo::<AddComps>::from_value(json!({"comps": 1}))
            .unwrap()
            .cluster()
            .is_err());
        assert!(JobInfo::<AddComps>::from_value(json!([1])).is_err());
        let d: JobInfo<super::super::delete_comp::CompRef> =
            JobInfo::from_value(json!({"comp_id": 9, "cluster_id": 4, "name": "c"})).unwrap();
        assert_eq!(d.request.comp_id, 9);
    }

    #[test]
    fn the_memo_round_trips_and_holds_no_password() {
        let m = CompsMemo {
            stage: Stage::Recorded,
            cluster_id: Some(3),
            extra: CompsExtra {
                comp_ids: vec![5, 6],
                before: None,
            },
            ..CompsMemo::default()
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["stage"], "recorded");
        assert_eq!(v["comp_ids"], json!([5, 6]));
        let back: CompsMemo = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
