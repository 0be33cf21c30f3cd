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
    /// How the shards' snapshots are stored (default `auto`).
    #[serde(default)]
    pub compression: SnapshotCompression,
}

/// How a backup stores its shards' snapshots: `zstd`-compressed, as they are (`none`), or
/// (`auto`, the default) compressed unless a sample of the shard's largest table files shrinks
/// under 1.1x (already compressed or encrypted tablespaces: zstd would only cost CPU).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SnapshotCompression {
    #[default]
    Auto,
    Zstd,
    None,
}

impl std::str::FromStr for SnapshotCompression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(SnapshotCompression::Auto),
            "zstd" => Ok(SnapshotCompression::Zstd),
            "none" => Ok(SnapshotCompression::None),
            other => Err(format!("{other:?}: one of auto, zstd, none")),
        }
    }
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

/// `POST /v1/backups/{id}/restore`: restores the backup into a new cluster `name`, created by
/// the job with the backed-up shape (its number of shards; nodes per shard and compute nodes
/// as backed up unless given here) on the registered machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RestoreBackup {
    /// The new cluster's name (the rules of `POST /v1/clusters`); it must not exist.
    #[cfg_attr(feature = "utoipa", schema(pattern = "^[A-Za-z0-9_]{1,48}$"))]
    pub name: String,
    #[serde(default)]
    pub nick_name: Option<String>,
    /// Nodes per shard (default: as backed up).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 9))]
    pub nodes: Option<u32>,
    /// Compute nodes (default: as backed up).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 32))]
    pub comps: Option<u32>,
    /// InnoDB buffer pool of each storage node, MB (default 128).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 1048576))]
    pub innodb_size_mb: Option<u32>,
    /// `max_connections` of every instance (default 1000).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 100000))]
    pub max_connections: Option<u32>,
    /// Only these storage machines (host addresses), else all running ones.
    #[serde(default)]
    pub storage_hosts: Vec<String>,
    /// Only these compute machines (host addresses), else all running ones.
    #[serde(default)]
    pub computer_hosts: Vec<String>,
    /// Restore a backup that has no common cut across its shards (taken with a primary as a
    /// source): its distributed transactions may be on some shards and not on others.
    #[serde(default)]
    pub allow_inconsistent: bool,
    /// Restore to this point in time instead of the end of the backup: RFC 3339 in whole
    /// seconds (`2026-12-06T10:00:03Z`, any offset). It must lie in the backup's archive
    /// window (`GET /v1/backups/{id}/archive`: `restorable_from` ..= `restorable_until`).
    #[serde(default)]
    pub restore_time: Option<String>,
}

impl RestoreBackup {
    /// `restore_time` as unix seconds (`None` without one); a malformed time or one with a
    /// fraction of a second is a 400.
    pub fn restore_at(&self) -> crate::Result<Option<i64>> {
        restore_secs(self.restore_time.as_deref())
    }

    /// The `create_cluster` request of the new cluster: `shards` from the backup, `nodes` and
    /// `comps` from the request or else the backup (`backed_up_nodes`, `backed_up_comps`);
    /// the backed-up `ha_mode` when it fits the number of nodes, else one node per shard is
    /// `no_rep` and more `rbr`. Checked like a `create_cluster` request.
    pub fn to_create(
        &self,
        shards: u32,
        backed_up_nodes: u32,
        backed_up_comps: u32,
        backed_up_mode: Option<crate::model::HaMode>,
    ) -> crate::Result<crate::api::CreateCluster> {
        use crate::model::HaMode;
        let nodes = self.nodes.unwrap_or(backed_up_nodes.max(1));
        let ha_mode = match backed_up_mode {
            Some(HaMode::Rbr) => HaMode::Rbr,
            Some(HaMode::NoRep) if nodes == 1 => HaMode::NoRep,
            _ if nodes == 1 => HaMode::NoRep,
            _ => HaMode::Rbr,
        };
        let c = crate::api::CreateCluster {
            name: self.name.clone(),
            nick_name: self.nick_name.clone(),
            ha_mode,
            shards,
            nodes,
            comps: self.comps.unwrap_or(backed_up_comps.max(1)),
            innodb_size_mb: self.innodb_size_mb,
            max_connections: self.max_connections,
            storage_hosts: self.storage_hosts.clone(),
            computer_hosts: self.computer_hosts.clone(),
        };
        c.validate()?;
        Ok(c)
    }
}

/// A `restore_time` as unix seconds (`None` without one); a malformed time or one with a
/// fraction of a second is a 400.
fn restore_secs(t: Option<&str>) -> crate::Result<Option<i64>> {
    let Some(t) = t else {
        return Ok(None);
    };
    let bad = |why: &str| {
        crate::Error::Invalid(format!(
            "restore_time {t:?}: {why} (RFC 3339 in whole seconds, e.g. 2026-12-06T10:00:03Z)"
        ))
    };
    if t.len() > 64 {
        return Err(bad("too long"));
    }
    let at = chrono::DateTime::parse_from_rfc3339(t).map_err(|e| bad(&e.to_string()))?;
    if at.timestamp_subsec_nanos() != 0 {
        return Err(bad("a fraction of a second is not taken"));
    }
    let secs = at.timestamp();
    if secs <= 0 {
        return Err(bad("before 1970"));
    }
    Ok(Some(secs))
}

/// `POST /v1/clusters/{id}/restore`: restores backup `backup_id` over the cluster's own
/// instances (the original's `cluster_restore`). The cluster must have as many shards as the
/// backup, every storage node active, and hold no data yet: no database on its storage nodes
/// besides the system ones, no table or database of its own on its compute nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RestoreInto {
    /// The done backup to restore (of another cluster).
    pub backup_id: i64,
    /// As in `POST /v1/backups/{id}/restore`.
    #[serde(default)]
    pub allow_inconsistent: bool,
    /// As in `POST /v1/backups/{id}/restore`: RFC 3339 in whole seconds, in the backup's
    /// archive window; without it the end of the backup.
    #[serde(default)]
    pub restore_time: Option<String>,
}

impl RestoreInto {
    /// `restore_time` as unix seconds (see [`RestoreBackup::restore_at`]).
    pub fn restore_at(&self) -> crate::Result<Option<i64>> {
        restore_secs(self.restore_time.as_deref())
    }
}

/// `GET /v1/backups/{id}/archive`: how far past the backup its cluster's binary logs and commit
/// log are archived, i.e. which `restore_time`s a restore of it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BackupArchive {
    pub backup_id: i64,
    pub cluster_id: i64,
    /// The storage holding the backup and the archive.
    pub storage: String,
    /// The first restore time taken (a second after the backup's cut); `null` for a backup
    /// without a recorded cut.
    pub restorable_from: Option<String>,
    /// The last restore time taken: every shard's binary log and the commit log archived
    /// until then; `null` while the archive does not reach past the backup.
    pub restorable_until: Option<String>,
    /// The commit log is archived until then.
    pub commit_log_until: Option<String>,
    pub shards: Vec<ShardArchive>,
}

/// One shard's archived binary log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ShardArchive {
    pub shard_id: i64,
    /// `host:port` of the primary archived last.
    pub source: String,
    /// Archived files and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Every event written before this time is archived.
    pub covered_until: Option<String>,
    /// The GTID position the archive ends at.
    pub end_gtid: String,
    /// Set when events are missing from the archive (a primary's binary logs no longer held
    /// them, or a new primary lacks archived events): no restore past `covered_until`.
    pub gap: Option<String>,
    /// The last archiving round's error for this shard, if it failed.
    pub error: Option<String>,
}
