//! `GET /v1/meta`: the metadata store this instance uses and, on a MySQL metadata shard, its
//! nodes as recorded (`meta_db_nodes`) and as observed now.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::model::MemberState;

/// `GET /v1/meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct MetaShard {
    /// `sqlite` or `mysql`.
    pub backend: String,
    /// Where this instance's store is: `sqlite:/abs/path` or `mysql://user@host:port/db`
    /// (never a password).
    pub store: String,
    /// Said on the SQLite backend: the metadata is an embedded file, there is no metadata
    /// shard to fail over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// MySQL: the primary this instance's store follows and its last moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<StoreFollow>,
    /// Whether the leader fails the metadata shard over (`on`), or why not.
    pub failover: String,
    /// The metadata shard's nodes: the `meta_db_nodes` rows, else the seeds.
    pub nodes: Vec<MetaNode>,
}

/// One node of the metadata shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct MetaNode {
    /// Its `meta_db_nodes` id; `null` for a seed with no row.
    pub id: Option<i64>,
    pub hostaddr: String,
    pub port: u16,
    /// Its role as `meta_db_nodes` records it (`source`/`replica`); `null` without a row.
    pub recorded_role: Option<MemberState>,
    /// This instance's store sends its statements here.
    pub used_by_this_instance: bool,
    pub observed: MetaNodeObserved,
}

/// What a probe of one metadata node saw just now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct MetaNodeObserved {
    /// `primary` (writable, replicating from nobody), `replica`, `writable_replica`,
    /// `read_only` (read-only, replicating from nobody: a fenced or not yet promoted node) or
    /// `unreachable`.
    pub role: String,
    pub reachable: bool,
    /// Why it could not be probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub read_only: Option<bool>,
    pub gtid_current_pos: Option<String>,
    pub gtid_binlog_pos: Option<String>,
    /// Its replication channels.
    pub replication: Vec<MetaChannel>,
    /// `Rpl_semi_sync_master_status` (commits wait for a replica's acknowledgement).
    pub semi_sync_master_active: Option<bool>,
}

/// One replication channel of a metadata node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct MetaChannel {
    /// `host:port` it replicates from.
    pub source: String,
    /// `Slave_IO_Running`: `Yes`, `Connecting` or `No`.
    pub io_running: String,
    pub sql_running: bool,
    /// Received position (`Gtid_IO_Pos`).
    pub gtid_io_pos: Option<String>,
    /// `Last_IO_Error` or `Last_SQL_Error`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One move of a store to another metadata primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PrimaryMove {
    /// `host:port` the store left.
    pub from: String,
    /// `host:port` it moved to.
    pub to: String,
    /// What made it look: a failed statement, a failed check, a failover.
    pub reason: String,
    #[serde(with = "crate::utc")]
    pub at: NaiveDateTime,
}

/// What a store's primary-follower knows (MySQL backend).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct StoreFollow {
    /// `host:port` this instance's store sends its statements to.
    pub primary: String,
    /// Since when (the store's open or its last move).
    #[serde(with = "crate::utc")]
    pub since: NaiveDateTime,
    /// Where discovery looks: the seeds, then the `meta_db_nodes` rows last read.
    pub candidates: Vec<String>,
    /// Set while no writable primary is found: why the search started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub searching: Option<String>,
    /// Since when it searches (set with `searching`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::utc::option"
    )]
    pub searching_since: Option<NaiveDateTime>,
    /// The last moves, oldest first (at most 16).
    pub moves: Vec<PrimaryMove>,
}
