//! `backup_cluster`: one backup of a whole cluster onto a registered backup storage, every
//! shard's snapshot standing at one consistent cut (`cut.rs`) when every source is a replica.
//! For each shard a physical snapshot taken from a replica (`mariadb-backup --stream`, the
//! recipe's [`Reseed::backup_script`](kunlun_provision::recipe::reseed::Reseed)) streamed
//! straight into the storage; one compute node's schema (`pg_dumpall --schema-only`); the
//! cluster's metadata rows and its `commit_log_`/`ddl_ops_log_` tables (the commit log as read
//! at the cut); all in parallel (bounded), then `manifest.json` last. The catalogue
//! (`kl_backup`, its parts in `cluster_coldbackups`) says where everything is.
//!
//! It does not fit the add/remove skeleton of [`crate::jobs::driver`] (no plan, no ports, no
//! cluster rows changed), so it has its own run function, like `rebuild_node`, but keeps the
//! driver's memo ([`JobMemo`]: stage, error, steps) with one entry per part whose `phase` and
//! `bytes` are written as it goes.
//!
//! Invariants:
//! - the primary is never the source of a shard's snapshot unless the request allows it: a
//!   shard without a healthy replica fails its part with the reason; a backup with a primary
//!   source has no common cut (`consistent: false` in its memo and manifest: each shard then
//!   stands at its own GTID and the logs are read after every snapshot ended);
//! - a backup is `done` only once every part and the manifest are stored; any failure (and a
//!   manager restart mid-backup) removes what was stored and leaves the row `failed` with the
//!   reason: nothing half-registered as done;
//! - no data changes on the cluster: the backup reads, and holds its source replicas' SQL
//!   threads at the cut only until their snapshots are taken.
//!
//! Here: the request, its checks and acceptance, the memo and the pure source choice
//! ([`pick_replica`]); the run is in `run.rs`, the parts in `parts.rs`, the cut in `cut.rs`.

use kunlun_meta::model::{Job, NewJob, ShardNode};
use kunlun_meta::store::repo::backup_storage;
use kunlun_meta::store::Store;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::jobs::common::busy;
use crate::jobs::driver::{JobInfo, JobMemo};
use crate::jobs::reseed::{pick_source, Candidate};

pub const BACKUP_CLUSTER: &str = "backup_cluster";
/// A replica further behind than this is not a source unless the request allows more.
pub const DEFAULT_MAX_SOURCE_LAG_S: u32 = 30;
const MAX_SOURCE_LAG_LIMIT_S: u32 = 86_400;
/// Parts stored at once.
pub const PARALLEL_PARTS: usize = 4;
/// Longest storage name (the storages' own rule).
const MAX_STORAGE_NAME: usize = 64;

fn default_lag() -> u32 {
    DEFAULT_MAX_SOURCE_LAG_S
}

/// The request of a `backup_cluster` job (its `job_info`, besides `cluster_id` and `name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRequest {
    /// The registered backup storage, by name.
    pub storage: String,
    /// Whether a shard's primary may be the source when it has no healthy replica.
    #[serde(default)]
    pub allow_primary: bool,
    /// Most seconds a replica source may lag behind its primary.
    #[serde(default = "default_lag")]
    pub max_source_lag_s: u32,
    /// How the shards' snapshots are stored.
    #[serde(default)]
    pub compression: kunlun_meta::api::SnapshotCompression,
}

impl BackupRequest {
    pub fn to(storage: &str) -> BackupRequest {
        BackupRequest {
            storage: storage.to_string(),
            allow_primary: false,
            max_source_lag_s: DEFAULT_MAX_SOURCE_LAG_S,
            compression: kunlun_meta::api::SnapshotCompression::Auto,
        }
    }

    /// The request on its own: a storage name of `A-Z a-z 0-9 _ -`, a bounded lag.
    pub fn validate(&self) -> Result<()> {
        let s = &self.storage;
        if s.is_empty()
            || s.len() > MAX_STORAGE_NAME
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::Invalid(format!(
                "storage: 1 to {MAX_STORAGE_NAME} characters of A-Z a-z 0-9 _ -"
            )));
        }
        if self.max_source_lag_s > MAX_SOURCE_LAG_LIMIT_S {
            return Err(Error::Invalid(format!(
                "allowed replica delay: at most {MAX_SOURCE_LAG_LIMIT_S} s, not {}",
                self.max_source_lag_s
            )));
        }
        Ok(())
    }
}

/// Where one part of the backup is (memo `parts[].phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartPhase {
    #[default]
    Pending,
    /// Its source being chosen and checked.
    Checking,
    /// Being written to the storage.
    Storing,
    /// On the storage (`bytes`, `sha256` say what).
    Stored,
    Failed,
    /// Stored, then removed again because the backup failed.
    Removed,
    /// Not started: the backup failed before.
    Skipped,
}

/// One part of the backup, as the memo keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartProgress {
    /// `shard <id>`, `compute`, `metadata`, `manifest`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<i64>,
    #[serde(default)]
    pub phase: PartPhase,
    /// The files it wrote, relative to the storage's root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// `host:port (node N)` it was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// A shard snapshot's compression and why (`zstd (a sample shrinks 3.60x)`, `none (...)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// The memo fields of `backup_cluster` besides the common ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupExtra {
    /// The catalogue row (`kl_backup.id`), once recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartProgress>,
    /// Source replicas whose SQL thread the cut stopped (node ids): started again after their
    /// snapshot, on failure, and by a manager resuming the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<i64>,
    /// Whether the backup has one consistent cut across its shards (every source a replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent: Option<bool>,
}

/// The memo of a `backup_cluster` job.
pub type BackupMemo = JobMemo<BackupExtra>;

/// The source of a shard's snapshot (pure): [`pick_source`]'s healthy replica; the primary only
/// when allowed; otherwise why not.
pub fn pick_replica(
    candidates: &[Candidate],
    primary: Option<&ShardNode>,
    max_lag_s: u32,
    allow_primary: bool,
) -> std::result::Result<ShardNode, String> {
    let Some(primary) = primary else {
        return Err("the shard has no active primary and no healthy replica".into());
    };
    pick_source(candidates, primary, max_lag_s, allow_primary).ok_or_else(|| {
        format!(
            "no replica replicates from the primary within {max_lag_s} s, and the primary is \
             not used (allow_primary: false)"
        )
    })
}

/// Accepts a `backup_cluster` job: validated, the cluster and the storage exist (404), refused
/// with 409 while another job changes the cluster, then one `not_started` row.
pub async fn accept(store: &Store, mut info: JobInfo<BackupRequest>) -> Result<Job> {
    info.request.validate()?;
    let id = info.cluster()?;
    info.name = store.get_cluster(id).await?.name;
    let name = info.request.storage.clone();
    store
        .read(async |tx| backup_storage::get_by_name(tx, &name).await)
        .await?;
    if busy(store, id, &info.name).await? {
        return Err(Error::Conflict(format!(
            "cluster {} has a job in progress",
            info.name
        )));
    }
    Ok(store
        .create_job(&NewJob {
            job_type: BACKUP_CLUSTER.into(),
            job_info: info.to_value()?,
            user_name: None,
        })
        .await?)
}

mod cut;
mod parts;
mod run;

pub use run::run;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::common::tests::node;

    fn cand(id: i64, healthy: bool, lag: Option<i64>) -> Candidate {
        Candidate {
            node: node(id, false),
            healthy,
            lag_s: lag,
        }
    }

    #[test]
    fn the_source_is_the_healthiest_replica_and_the_primary_only_when_allowed() {
        let primary = node(1, true);
        let c = [
            cand(2, true, Some(5)),
            cand(3, true, Some(0)),
            cand(4, false, Some(0)),
            cand(5, true, None),
        ];
        assert_eq!(pick_replica(&c, Some(&primary), 30, false).unwrap().id, 3);
        let late = [cand(2, true, Some(100)), cand(4, false, Some(0))];
        let why = pick_replica(&late, Some(&primary), 30, false).unwrap_err();
        assert!(why.contains("allow_primary"), "{why}");
        assert_eq!(pick_replica(&late, Some(&primary), 30, true).unwrap().id, 1);
        assert_eq!(
            pick_replica(&late, Some(&primary), 100, false).unwrap().id,
            2
        );
        // A replica recorded as the primary is never taken for a replica.
        assert!(pick_replica(
            &[Candidate {
                node: node(9, true),
                healthy: true,
                lag_s: Some(0)
            }],
            None,
            30,
            true
        )
        .is_err());
    }

    #[test]
    fn requests_name_a_storage_and_keep_their_defaults() {
        use serde_json::json;
        assert!(BackupRequest::to("bk_1").validate().is_ok());
        for bad in ["", "a b", "../x", &"x".repeat(65)] {
            assert!(BackupRequest::to(bad).validate().is_err(), "{bad:?}");
        }
        let mut r = BackupRequest::to("s");
        r.max_source_lag_s = MAX_SOURCE_LAG_LIMIT_S + 1;
        assert!(r.validate().is_err());
        let info = JobInfo::<BackupRequest>::from_value(json!({
            "cluster_id": 3, "name": "c1", "storage": "s"
        }))
        .unwrap();
        assert_eq!(info.request, BackupRequest::to("s"));
        let memo: BackupMemo = serde_json::from_value(json!({
            "stage": "", "cluster_id": 3, "backup_id": 7,
            "parts": [{"name": "shard 4", "shard_id": 4, "phase": "storing"}]
        }))
        .unwrap();
        assert_eq!(memo.backup_id, Some(7));
        assert_eq!(memo.parts[0].phase, PartPhase::Storing);
    }
}
