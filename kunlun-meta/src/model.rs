//! Domain types of the metadata: machines, clusters, shards, nodes, jobs and the rest.
//!
//! These are what the engine, the HTTP API and the CLI exchange. They are plain serde structs,
//! free of any database type; the store maps its row types to and from them. States are enums
//! whose `as_str()` spelling is exactly the value KunlunBase stores in its metadata columns.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

mod backup_storage;
pub use backup_storage::BackupStorage;

/// Declares a string-backed state enum: serde and `as_str` use the Kunlun spelling, and
/// `FromStr` rejects anything else with the list of allowed values.
macro_rules! state_enum {
    ($(#[doc = $doc:literal])* $name:ident { $($(#[$vm:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $variant),+
        }

        // By hand, not derived: the derive does not see a `rename` made of a macro argument
        // and would document the Rust names (`Storage`) instead of the wire values (`storage`).
        #[cfg(feature = "utoipa")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(concat!($($doc, "\n"),*).trim()))
                    .enum_values(Some([$($s),+]))
                    .into()
            }
        }

        #[cfg(feature = "utoipa")]
        impl utoipa::ToSchema for $name {}

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling stored in the metadata and used on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::error::ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(crate::error::ParseEnumError {
                        kind: stringify!($name),
                        value: s.to_string(),
                        allowed: &[$($s),+],
                    }),
                }
            }
        }
    };
}

state_enum!(
    /// What a machine hosts (`server_nodes.machine_type`).
    MachineType { Storage => "storage", Computer => "computer" }
);
state_enum!(
    /// Liveness of a machine as the manager last saw it (`server_nodes.node_stats`).
    NodeStats { Running => "running", Idle => "idle", Dead => "dead" }
);
state_enum!(
    /// `db_clusters.status` and `shards.status`.
    ClusterStatus { Inuse => "inuse", Deleted => "deleted" }
);
state_enum!(
    /// Replication mode of the shards of a cluster (`db_clusters.ha_mode`).
    HaMode { NoRep => "no_rep", Mgr => "mgr", Rbr => "rbr" }
);
state_enum!(
    /// Life-cycle state of a storage or compute node (`shard_nodes.status`, `comp_nodes.status`).
    NodeStatus {
        Creating => "creating",
        Inactive => "inactive",
        Active => "active",
        Deleted => "deleted",
        ManualStop => "manual_stop",
    }
);
state_enum!(
    /// Recorded replication role (`member_state`): `source` is the primary.
    MemberState { Source => "source", Replica => "replica" }
);
state_enum!(
    /// Whether a replica acknowledges commits (`sync_state`).
    SyncState { Fsync => "fsync", Async => "async" }
);
state_enum!(
    /// Status of a job row (`cluster_general_job_log.status`).
    JobStatus { NotStarted => "not_started", Ongoing => "ongoing", Done => "done", Failed => "failed" }
);
state_enum!(
    /// A 2PC decision in `commit_log_<cluster>` (`next_txn_cmd`).
    TxnCmd { Commit => "commit", Abort => "abort" }
);
state_enum!(
    /// `ON`/`OFF` switches of the Kunlun schema (degrade flags, `backup_node`).
    OnOff { On => "ON", Off => "OFF" }
);

impl JobStatus {
    /// A job in this state will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Failed)
    }
}

/// A host the manager reaches over SSH to install database instances (`server_nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Machine {
    pub id: i64,
    pub hostaddr: String,
    pub machine_type: MachineType,
    pub rack_id: Option<String>,
    /// Directories instances may be placed under (Kunlun keeps them `;`-separated).
    pub data_dirs: Vec<String>,
    /// Inclusive port range instances may use, e.g. `57000-58000`.
    pub port_range: String,
    pub total_mem_mb: Option<i64>,
    pub total_cpu_cores: Option<i64>,
    pub node_stats: NodeStats,
    /// Base ports of installed instances.
    pub used_ports: Vec<u16>,
    /// Base ports reserved by installs in flight.
    pub installing_ports: Vec<u16>,
    pub ssh: SshAccess,
    #[serde(default, with = "crate::utc::option")]
    pub svc_since: Option<NaiveDateTime>,
}

/// How the manager logs in to a machine. Never carries a secret: the key stays on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SshAccess {
    pub port: u16,
    pub user: String,
    /// Path, on the manager's host, of the private key used to log in.
    pub key_path: String,
}

/// What the last SSH probe found on a machine (`kl_machine_probe`): kept so an operator sees
/// what registration (or an update that re-probed) checked, not only its memory and cores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct MachineProbe {
    /// `ID VERSION_ID` of `/etc/os-release` as the probe read it, e.g. `debian 12`; empty when
    /// the machine has no os-release.
    pub os: String,
    /// `uname -sr`, e.g. `Linux 6.1.0`.
    pub kernel: String,
    /// Each data dir as probed, in the machine's order.
    pub data_dirs: Vec<ProbedDir>,
    /// When the probe ran (UTC).
    #[serde(with = "crate::utc")]
    pub probed_at: NaiveDateTime,
}

/// One data dir as the probe saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ProbedDir {
    pub path: String,
    /// Free MB of the dir, or of the existing parent it will be created in.
    pub free_mb: Option<u64>,
    /// The dir existed already (else the first install creates it).
    #[serde(default)]
    pub exists: bool,
}

/// A machine with the facts of its last probe: what `GET /v1/machines[/{id}]` returns.
/// `probe` is `null` for a machine stored with `"probe": false` (or whose SSH access or data
/// dirs were last changed without a probe): nothing was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct MachineInfo {
    #[serde(flatten)]
    pub machine: Machine,
    pub probe: Option<MachineProbe>,
}

/// What is stored when a machine is registered (validated API input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMachine {
    pub hostaddr: String,
    pub machine_type: MachineType,
    pub rack_id: Option<String>,
    pub data_dirs: Vec<String>,
    pub port_range: String,
    pub total_mem_mb: Option<i64>,
    pub total_cpu_cores: Option<i64>,
    pub ssh: SshAccess,
}

/// A partial update of a machine; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachinePatch {
    pub rack_id: Option<String>,
    pub data_dirs: Option<Vec<String>>,
    pub port_range: Option<String>,
    pub total_mem_mb: Option<i64>,
    pub total_cpu_cores: Option<i64>,
    pub node_stats: Option<NodeStats>,
    pub ssh_port: Option<u16>,
    pub ssh_user: Option<String>,
    pub ssh_key_path: Option<String>,
}

/// A database cluster (`db_clusters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Cluster {
    pub id: i64,
    pub name: String,
    pub nick_name: Option<String>,
    pub owner: Option<String>,
    pub ddl_log_tblname: Option<String>,
    pub business: Option<String>,
    pub ha_mode: HaMode,
    pub status: ClusterStatus,
    /// JSON of the creation parameters (Kunlun keeps them here).
    pub memo: Option<String>,
    #[serde(default, with = "crate::utc::option")]
    pub when_created: Option<NaiveDateTime>,
}

/// What is stored when a cluster row is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCluster {
    pub name: String,
    pub nick_name: Option<String>,
    pub owner: Option<String>,
    pub business: Option<String>,
    pub ha_mode: HaMode,
    pub memo: Option<String>,
}

/// A storage shard: one replication group (`shards`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Shard {
    pub id: i64,
    pub name: String,
    pub db_cluster_id: i64,
    pub num_nodes: i64,
    pub space_volumn: i64,
    pub num_tablets: i64,
    pub sync_num: i64,
    pub degrade_conf_state: OnOff,
    pub degrade_run_state: OnOff,
    pub degrade_conf_time: i64,
    pub status: ClusterStatus,
    pub coldbackup_period: Option<String>,
    #[serde(default, with = "crate::utc::option")]
    pub when_created: Option<NaiveDateTime>,
}

/// What is stored when a shard row is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewShard {
    pub name: String,
    pub db_cluster_id: i64,
    pub num_nodes: i64,
    pub sync_num: i64,
}

/// A storage node (MySQL-compatible instance) of a shard (`shard_nodes`).
///
/// `Debug` and serde never show the password: it is skipped when serialising.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ShardNode {
    pub id: i64,
    pub shard_id: i64,
    pub db_cluster_id: i64,
    pub hostaddr: String,
    pub port: u16,
    pub user_name: String,
    #[serde(skip_serializing, default)]
    pub passwd: String,
    pub master_priority: i64,
    pub ro_weight: i64,
    pub status: NodeStatus,
    pub member_state: MemberState,
    pub sync_state: SyncState,
    pub replica_delay: i64,
    pub backup_node: OnOff,
    pub innodb_buffer_pool_mb: i64,
    #[serde(default, with = "crate::utc::option")]
    pub when_created: Option<NaiveDateTime>,
}

/// What is stored when a storage node row is created.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewShardNode {
    pub shard_id: i64,
    pub db_cluster_id: i64,
    pub hostaddr: String,
    pub port: u16,
    pub user_name: String,
    pub passwd: String,
    pub master_priority: i64,
    pub member_state: MemberState,
    pub status: NodeStatus,
    pub innodb_buffer_pool_mb: i64,
}

/// A compute node (PostgreSQL-compatible front end) of a cluster (`comp_nodes`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CompNode {
    pub id: i64,
    pub db_cluster_id: i64,
    pub name: String,
    pub hostaddr: String,
    pub port: u16,
    pub user_name: String,
    #[serde(skip_serializing, default)]
    pub passwd: String,
    pub status: NodeStatus,
    pub max_conns: i64,
    #[serde(default, with = "crate::utc::option")]
    pub when_created: Option<NaiveDateTime>,
}

/// What is stored when a compute node row is created; `id` comes from `comp_nodes_id_seq`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCompNode {
    pub id: i64,
    pub db_cluster_id: i64,
    pub name: String,
    pub hostaddr: String,
    pub port: u16,
    pub user_name: String,
    pub passwd: String,
    pub status: NodeStatus,
    pub max_conns: i64,
}

/// A node of the metadata shard itself (`meta_db_nodes`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct MetaDbNode {
    pub id: i64,
    pub hostaddr: String,
    pub port: u16,
    pub user_name: String,
    #[serde(skip_serializing, default)]
    pub passwd: String,
    pub master_priority: i64,
    pub member_state: MemberState,
    pub sync_state: SyncState,
}

/// Which primary a replica follows (`node_map_master`); hosts are `ip_port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct NodeMapMaster {
    pub cluster_id: i64,
    pub node_host: String,
    pub master_host: String,
    pub master_uuid: Option<String>,
}

/// A cluster manager process sharing this metadata (`cluster_mgr_nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ClusterMgrNode {
    pub hostaddr: String,
    pub port: u16,
    pub prometheus_port: Option<u16>,
    pub member_state: MemberState,
}

/// A long-running piece of work (`cluster_general_job_log`); `id` is the job id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Job {
    pub id: i64,
    pub job_type: String,
    pub status: JobStatus,
    /// The full request, as JSON (used to resume after a crash).
    pub job_info: Option<serde_json::Value>,
    /// Progress and result, as JSON.
    pub memo: Option<serde_json::Value>,
    pub user_name: Option<String>,
    pub related_id: Option<String>,
    #[serde(default, with = "crate::utc::option")]
    pub when_started: Option<NaiveDateTime>,
    #[serde(default, with = "crate::utc::option")]
    pub when_ended: Option<NaiveDateTime>,
}

/// What is stored when a job is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    pub job_type: String,
    pub job_info: serde_json::Value,
    pub user_name: Option<String>,
}

/// One 2PC decision in `commit_log_<cluster>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitLogEntry {
    pub comp_node_id: i64,
    /// `(start_unix_ts << 32) | local_xid`.
    pub txn_id: u64,
    pub next_txn_cmd: TxnCmd,
    #[serde(default, with = "crate::utc::option")]
    pub prepare_ts: Option<NaiveDateTime>,
}

macro_rules! redacted_debug {
    ($name:ident { $($field:ident),* }) => {
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    $(.field(stringify!($field), &self.$field))*
                    .field("passwd", &"<redacted>")
                    .finish()
            }
        }
    };
}

redacted_debug!(ShardNode {
    id,
    shard_id,
    db_cluster_id,
    hostaddr,
    port,
    user_name,
    master_priority,
    ro_weight,
    status,
    member_state,
    sync_state,
    replica_delay,
    backup_node,
    innodb_buffer_pool_mb,
    when_created
});
redacted_debug!(NewShardNode {
    shard_id,
    db_cluster_id,
    hostaddr,
    port,
    user_name,
    master_priority,
    member_state,
    status,
    innodb_buffer_pool_mb
});
redacted_debug!(CompNode {
    id,
    db_cluster_id,
    name,
    hostaddr,
    port,
    user_name,
    status,
    max_conns,
    when_created
});
redacted_debug!(NewCompNode {
    id,
    db_cluster_id,
    name,
    hostaddr,
    port,
    user_name,
    status,
    max_conns
});
redacted_debug!(MetaDbNode {
    id,
    hostaddr,
    port,
    user_name,
    master_priority,
    member_state,
    sync_state
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_their_kunlun_spelling() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!("no_rep".parse::<HaMode>().unwrap(), HaMode::NoRep);
        let err = "bogus".parse::<MachineType>().unwrap_err();
        assert!(err.to_string().contains("storage, computer"), "{err}");
    }

    #[test]
    fn debug_never_shows_passwords() {
        let n = CompNode {
            id: 1,
            db_cluster_id: 1,
            name: "comp1".into(),
            hostaddr: "127.0.0.1".into(),
            port: 5432,
            user_name: "abc".into(),
            passwd: "s3cret".into(),
            status: NodeStatus::Active,
            max_conns: 100,
            when_created: None,
        };
        assert!(!format!("{n:?}").contains("s3cret"));
        assert!(!serde_json::to_string(&n).unwrap().contains("s3cret"));
    }
}

/// Per-cluster self-healing switches (`kl_cluster_policy`); both on unless an operator turned
/// one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ClusterPolicy {
    pub cluster_id: i64,
    /// The instance keeper starts the cluster's dead instances again.
    pub auto_restart: bool,
    /// A replica HA kept out for rebuild (errant transactions) is rebuilt by a job on its own.
    pub auto_rebuild: bool,
}

impl ClusterPolicy {
    /// The policy of a cluster that never had one set: everything on.
    pub fn default_for(cluster_id: i64) -> ClusterPolicy {
        ClusterPolicy {
            cluster_id,
            auto_restart: true,
            auto_rebuild: true,
        }
    }
}

mod backup;
mod backup_schedule;
pub use backup::{Backup, BackupPart, BackupStatus, NewBackup, NewBackupPart, PartKind};
pub use backup_schedule::BackupSchedule;
