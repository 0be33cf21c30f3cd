//! The backup catalogue's domain types: one [`Backup`] per cluster backup (`kl_backup`) and
//! its [`BackupPart`]s (`cluster_coldbackups`, one per shard snapshot and per compute dump).
//!
//! Invariant: a backup is `done` only once every part and its manifest are on the storage; a
//! `failed` backup has nothing left on the storage (the job removed what it had stored).

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

state_enum!(
    /// Status of a cluster backup (`kl_backup.status`).
    BackupStatus { Ongoing => "ongoing", Done => "done", Failed => "failed" }
);
state_enum!(
    /// What a part holds (`cluster_coldbackups.backup_type`): a shard's physical snapshot or a
    /// compute node's schema.
    PartKind { Storage => "storage", Compute => "compute" }
);

/// One cluster backup (`GET /v1/backups/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Backup {
    pub id: i64,
    /// The cluster backed up (it may have been deleted since).
    pub cluster_id: i64,
    pub cluster_name: String,
    /// The `backup_storage` row the files are on.
    pub storage_id: i64,
    /// The `backup_cluster` job that took it.
    pub job_id: Option<i64>,
    pub status: BackupStatus,
    #[serde(with = "crate::utc")]
    pub started_at: NaiveDateTime,
    #[serde(default, with = "crate::utc::option")]
    pub ended_at: Option<NaiveDateTime>,
    /// Bytes stored, every part and the manifest.
    pub bytes: u64,
    /// The cluster's shape at backup time (shards, nodes, comps).
    pub shape: Option<serde_json::Value>,
    /// The manifest's path relative to the storage's root (set once the backup is done).
    pub manifest: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Its parts (only in `GET /v1/backups/{id}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<BackupPart>,
}

/// One part of a cluster backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BackupPart {
    pub id: i64,
    pub backup_type: PartKind,
    pub shard_id: Option<i64>,
    pub comp_id: Option<i64>,
    pub status: crate::model::JobStatus,
    #[serde(with = "crate::utc")]
    pub start_ts: NaiveDateTime,
    #[serde(default, with = "crate::utc::option")]
    pub end_ts: Option<NaiveDateTime>,
    /// `{rel, bytes, sha256, gtid, source}` once stored; `{error}` when it failed.
    pub memo: Option<serde_json::Value>,
    /// The part's path relative to the storage's root.
    pub backup_addr: Option<String>,
}

/// What is recorded when a backup starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackup {
    pub cluster_id: i64,
    pub cluster_name: String,
    pub storage_id: i64,
    pub job_id: Option<i64>,
    pub shape: serde_json::Value,
}

/// What is recorded when a part starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackupPart {
    pub storage_id: i64,
    pub cluster_id: i64,
    pub kind: PartKind,
    pub shard_id: Option<i64>,
    pub comp_id: Option<i64>,
    /// Its path relative to the storage's root.
    pub rel: String,
}
