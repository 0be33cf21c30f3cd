//! A cluster's backup schedule (`kl_backup_schedule`): where and when the leader takes its
//! daily backup, and how many of its backups it keeps.
//!
//! Invariant: `window` is the canonical text of a valid [`crate::api::BackupWindow`].

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// `GET /v1/clusters/{id}/backup_schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BackupSchedule {
    pub cluster_id: i64,
    /// The `backup_storage` row backups are taken onto.
    pub storage_id: i64,
    /// That storage's name.
    pub storage: String,
    /// The daily window in UTC, `HH:MM:SS-HH:MM:SS` (may cross midnight).
    pub window: String,
    /// The newest this many done backups are kept (`null`: no limit).
    pub keep_count: Option<u32>,
    /// Backups older than this many days are removed (`null`: no limit).
    pub keep_days: Option<u32>,
    /// Whether backups are taken and old ones removed.
    pub enabled: bool,
    #[serde(with = "crate::utc")]
    pub updated_at: NaiveDateTime,
}
