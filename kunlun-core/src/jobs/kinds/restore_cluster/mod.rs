//! `restore_cluster`: a done backup restored into a **new** cluster that the job creates with
//! the backed-up shape, to the end of the backup (its cut).
//!
//! It is an adding kind on the one driver ([`crate::jobs::driver`]), `create_cluster`'s
//! skeleton: plan (with every backup file checked against the manifest's size and SHA-256, so
//! a damaged backup fails before anything is installed) → reserve (the cluster row and its
//! secret) → install → **restore the data** (`data.rs`) → record the rows → push the topology;
//! any failure before `recorded` rolls the new cluster back (its instances uninstalled, its
//! rows removed) and leaves the backup as it was. The data restore: on every node of each
//! shard the shard's snapshot streamed from the storage and prepared, the new
//! cluster's system passwords set, the XA branches prepared at the cut ended as the backed-up
//! commit log says (commit when it logged a commit, else rollback: the same decision on every
//! node, so no transaction is on some shards and not others), all nodes at the snapshot's GTID
//! with the first node the primary and the others following it; the compute nodes get the
//! backed-up schema.
//!
//! Invariants: the backup and the source cluster are only read (the source may be gone); the
//! memo never holds a password; a restore of a backup without a consistent cut says so in its
//! memo (`consistent: false`).

use kunlun_meta::api::{CreateCluster, RestoreBackup};
use kunlun_meta::model::{Backup, BackupStatus, HaMode, Job};
use kunlun_meta::store::repo::backups;
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::Result as MetaResult;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::jobs::common::{insert_cluster, name_free, record_new_cluster, unrecord_new_cluster};
use crate::jobs::driver::{
    Direction, JobCtx, JobInfo, JobKind, JobMemo, Planned, PushPolicy, Stage,
};
use crate::jobs::plan::{plan_create_cluster, ClusterPlan, SystemPasswords};

mod data;
pub mod into;

pub const RESTORE_CLUSTER: &str = "restore_cluster";

/// The `restore_cluster` kind.
pub struct RestoreClusterJob;

/// The request of a `restore_cluster` job (its `job_info`; `name` is the new cluster's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub backup_id: i64,
    #[serde(flatten)]
    pub target: RestoreBackup,
}

/// The memo fields of `restore_cluster` besides the common ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<i64>,
    /// Whether the backup had one consistent cut across its shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent: Option<bool>,
    /// The point in time restored to (RFC 3339, UTC), when not the end of the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_time: Option<String>,
    /// Per new shard: the source shard, its snapshot's GTID and the XA branches ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardRestore>,
}

/// What the restore did for one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRestore {
    /// The new shard's name.
    pub shard: String,
    pub source_shard_id: i64,
    pub gtid: String,
    /// Archived binary log files replayed past the snapshot (a point-in-time restore).
    #[serde(default)]
    pub replayed_files: usize,
    /// Prepared branches committed (their transaction logged a commit before the cut).
    pub xa_committed: usize,
    /// Prepared branches rolled back (no commit logged before the cut).
    pub xa_rolled_back: usize,
    /// Prepared branches left as they are: not of a Kunlun transaction (an application's own
    /// XA), for their owner to end.
    #[serde(default)]
    pub xa_left: usize,
}

/// The memo of a `restore_cluster` job.
pub type RestoreMemo = JobMemo<RestoreExtra>;

/// The backup's shape: how many shards, nodes per shard and compute nodes it holds, and the
/// cluster's replication mode when recorded.
fn shape_counts(b: &Backup) -> (u32, u32, u32, Option<HaMode>) {
    let shape = b.shape.clone().unwrap_or_default();
    let shards = shape["shards"].as_array().cloned().unwrap_or_default();
    let nodes = shards
        .first()
        .and_then(|s| s["nodes"].as_array().map(Vec::len))
        .unwrap_or(1);
    let comps = shape["comps"].as_array().map_or(1, Vec::len);
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let mode = shape["ha_mode"].as_str().and_then(|m| m.parse().ok());
    (n(shards.len()), n(nodes), n(comps), mode)
}

/// The new cluster's `create_cluster` request (checked).
fn create_request(req: &RestoreRequest, b: &Backup) -> Result<CreateCluster> {
    let (shards, nodes, comps, mode) = shape_counts(b);
    if shards == 0 {
        return Err(Error::Conflict(format!(
            "backup {} records no shard: nothing to restore",
            b.id
        )));
    }
    Ok(req.target.to_create(shards, nodes, comps, mode)?)
}

/// The backup to restore: it exists (404) and is done (409).
async fn done_backup(store: &Store, id: i64) -> Result<Backup> {
    let b = store.read(async |tx| backups::get(tx, id).await).await?;
    if b.status != BackupStatus::Done || b.manifest.is_none() {
        return Err(Error::Conflict(format!(
            "backup {id} is {}: only a done backup can be restored",
            b.status
        )));
    }
    Ok(b)
}

impl JobKind for RestoreClusterJob {
    const TYPE: &'static str = RESTORE_CLUSTER;
    const DIRECTION: Direction = Direction::Add;
    const PUSH: PushPolicy = PushPolicy::AllMustHave;
    const LEGACY_INSTALLED: Stage = Stage::Recorded;
    /// A restart mid-restore rolls the new cluster back: its data may be half restored.
    const FORWARD_FROM_PLANNED: bool = false;
    const RECORD_STEP: &'static str = "record topology";
    const PUSH_STEP: &'static str = "push topology to compute nodes";
    type Request = RestoreRequest;
    type Extra = RestoreExtra;

    fn validate(req: &RestoreRequest) -> Result<()> {
        // The shape is the backup's, known at `check`; the rest is checked here.
        req.target.restore_at()?;
        req.target
            .to_create(1, 1, 1, None)
            .map(|_| ())
            .map_err(Error::from)
    }

    async fn check(store: &Store, info: &JobInfo<RestoreRequest>) -> Result<()> {
        let b = done_backup(store, info.request.backup_id).await?;
        create_request(&info.request, &b)?;
        let name = &info.request.target.name;
        name_free(store, name).await
    }

    fn extra(info: &JobInfo<RestoreRequest>) -> RestoreExtra {
        RestoreExtra {
            backup_id: Some(info.request.backup_id),
            ..RestoreExtra::default()
        }
    }

    async fn plan(
        cx: &JobCtx,
        info: &JobInfo<RestoreRequest>,
        _: &mut RestoreMemo,
    ) -> Result<Option<Planned>> {
        let b = done_backup(&cx.store, info.request.backup_id).await?;
        let req = create_request(&info.request, &b)?;
        // Before anything is installed: a damaged backup fails the job with nothing to undo.
        let anyway = info.request.target.allow_inconsistent;
        let at = info.request.target.restore_at()?;
        cx.step("check the backup files", data::check(cx, b.id, anyway, at))
            .await?;
        let machines = cx.store.list_machines().await?;
        let names: Vec<String> = cx
            .store
            .list_clusters()
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        let plan = plan_create_cluster(&req, &machines, &names, SystemPasswords::generate())?;
        let note = format!(
            "backup {} of {}: {} shards x {} nodes + {} compute nodes",
            b.id,
            b.cluster_name,
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

    fn steps(plan: &ClusterPlan) -> Vec<String> {
        let mut s = crate::jobs::install::planned_steps(plan);
        s.extend(data::steps(plan));
        s
    }

    async fn on_reserve(
        tx: &mut Tx,
        info: &JobInfo<RestoreRequest>,
        plan: &ClusterPlan,
        memo: &mut RestoreMemo,
    ) -> MetaResult<()> {
        let c = insert_cluster(tx, plan, info.request.target.nick_name.clone()).await?;
        memo.cluster_id = Some(c.id);
        memo.extra.cluster_name = Some(c.name);
        Ok(())
    }

    /// Installs the new cluster like `create_cluster`, then restores the backup into it.
    async fn install(
        cx: &JobCtx,
        info: &JobInfo<RestoreRequest>,
        machines: &[kunlun_meta::model::Machine],
        plan: &ClusterPlan,
        memo: &mut RestoreMemo,
    ) -> Result<()> {
        cx.fleet
            .install_cluster_with(machines, plan, &cx.progress)
            .await?;
        let at = info.request.target.restore_at()?;
        let id = info.request.backup_id;
        data::restore(cx, id, at, (machines, plan), &mut memo.extra, false).await
    }

    async fn record(
        tx: &mut Tx,
        _: &JobInfo<RestoreRequest>,
        plan: &ClusterPlan,
        memo: &mut RestoreMemo,
    ) -> MetaResult<()> {
        record_new_cluster(tx, memo.cluster_id, plan, Self::TYPE).await
    }

    async fn unrecord(tx: &mut Tx, plan: &ClusterPlan, memo: &RestoreMemo) -> MetaResult<()> {
        unrecord_new_cluster(tx, memo.cluster_id, plan).await
    }
}

/// Accepts a `restore_cluster` job for backup `backup_id` (400 for a bad request, 404 for an
/// unknown backup, 409 for a backup not done or a cluster name in use).
pub async fn accept(store: &Store, backup_id: i64, req: &RestoreBackup) -> Result<Job> {
    let info = JobInfo {
        cluster_id: None,
        name: req.name.clone(),
        request: RestoreRequest {
            backup_id,
            target: req.clone(),
        },
    };
    crate::jobs::accept::accept::<RestoreClusterJob>(store, info).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backup(shape: serde_json::Value) -> Backup {
        serde_json::from_value(json!({
            "id": 4, "cluster_id": 1, "cluster_name": "src", "storage_id": 2, "job_id": 9,
            "status": "done", "started_at": "2026-12-06T10:00:00Z", "ended_at": null,
            "bytes": 10, "shape": shape, "manifest": "cluster_1/backup_4/manifest.json",
            "error": null
        }))
        .expect("backup")
    }

    fn req(nodes: Option<u32>, comps: Option<u32>) -> RestoreRequest {
        RestoreRequest {
            backup_id: 4,
            target: RestoreBackup {
                name: "copy1".into(),
                nick_name: None,
                nodes,
                comps,
                innodb_size_mb: None,
                max_connections: None,
                storage_hosts: vec![],
                computer_hosts: vec![],
                allow_inconsistent: false,
                restore_time: None,
            },
        }
    }

    #[test]
    fn the_new_cluster_has_the_backed_up_shape_unless_the_request_says_otherwise() {
        let b = backup(json!({
            "shards": [{"id": 7, "nodes": [{"id": 1}, {"id": 2}]}, {"id": 8, "nodes": [{"id": 3}, {"id": 4}]}],
            "comps": [{"id": 5}]
        }));
        let c = create_request(&req(None, None), &b).unwrap();
        assert_eq!((c.shards, c.nodes, c.comps), (2, 2, 1));
        assert_eq!(c.ha_mode, kunlun_meta::model::HaMode::Rbr);
        let c = create_request(&req(Some(1), Some(2)), &b).unwrap();
        assert_eq!((c.shards, c.nodes, c.comps), (2, 1, 2));
        assert_eq!(c.ha_mode, kunlun_meta::model::HaMode::NoRep);
        // The backed-up mode is kept where it fits.
        let rbr1 = backup(json!({"ha_mode": "rbr", "shards": [{"id": 7, "nodes": [{"id": 1}]}]}));
        let c = create_request(&req(None, None), &rbr1).unwrap();
        assert_eq!((c.nodes, c.ha_mode), (1, kunlun_meta::model::HaMode::Rbr));
        let norep =
            backup(json!({"ha_mode": "no_rep", "shards": [{"id": 7, "nodes": [{"id": 1}]}]}));
        let c = create_request(&req(Some(3), None), &norep).unwrap();
        assert_eq!((c.nodes, c.ha_mode), (3, kunlun_meta::model::HaMode::Rbr));
        assert!(
            create_request(&req(Some(10), None), &b).is_err(),
            "nodes bounded"
        );
        let empty = backup(json!({"shards": [], "comps": []}));
        assert!(matches!(
            create_request(&req(None, None), &empty),
            Err(Error::Conflict(_))
        ));
    }

    #[test]
    fn the_stored_request_reads_back() {
        let v = json!({"backup_id": 4, "name": "copy1", "nodes": 3});
        let info = JobInfo::<RestoreRequest>::from_value(v).unwrap();
        assert_eq!(info.name, "copy1");
        assert_eq!(info.request, req(Some(3), None));
        let back = JobInfo {
            cluster_id: None,
            name: "copy1".into(),
            request: req(Some(3), None),
        }
        .to_value()
        .unwrap();
        assert_eq!(back["backup_id"], 4);
        assert_eq!(back["name"], "copy1");
    }
}
