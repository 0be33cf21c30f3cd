//! API types of cluster backups: the request that starts one and the catalogue's list query.

use serde::{Deserialize, Serialize};

/// `POST /v1/clusters/{id}/backups`: back the cluster up onto the registered storage
/// `storage`; a shard's snapshot comes from a replica, from the primary only when
/// `allow_primary` and no replica is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateBackup {
    /// The backup storage's name.
    pub storage: String,
    #[serde(default)]
    pub allow_primary: bool,
}

/// `GET /v1/backups`: one page of the catalogue, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct BackupQuery {
    /// Only the backups of this cluster (it may have been deleted since).
    #[serde(default)]
    pub cluster_id: Option<i64>,
    /// At most this many (default 100, 1..=1000; anything else is a 400).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", param(minimum = 1, maximum = 1000))]
    pub limit: Option<u32>,
    /// Only backups older than this id: the cursor of the previous page.
    #[serde(default)]
    pub after: Option<i64>,
}

impl BackupQuery {
    /// The page size asked for, checked.
    pub fn validate(&self) -> crate::Result<u32> {
        super::page_limit(self.limit)
    }
}
