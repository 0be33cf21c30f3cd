//! The job kinds, one file each: what each supplies to the [`super::driver`] (its request,
//! its pure plan call, the rows it writes or removes, its extra machine work).
//!
//! Invariant: a kind imports the driver, the planners, `super::common` and the memo shapes
//! defined here (those an adding kind shares with its removing twin), never another kind.

use serde::{Deserialize, Serialize};

use super::driver::JobMemo;

pub mod add_comps;
pub mod add_nodes;
pub mod add_shards;
pub mod backup_cluster;
pub mod create_cluster;
pub mod delete_cluster;
pub mod delete_comp;
pub mod delete_node;
pub mod delete_shard;
pub mod rebuild_node;
pub mod restore_cluster;
pub mod verify_backup;

pub use add_comps::{AddCompsJob, ADD_COMPS};
pub use add_nodes::{AddNodesJob, ADD_NODES};
pub use add_shards::{AddShardsJob, ADD_SHARDS};
pub use backup_cluster::{BackupRequest, BACKUP_CLUSTER};
pub use create_cluster::{CreateClusterJob, CreateExtra, CreateMemo, CREATE_CLUSTER};
pub use delete_cluster::{DeleteClusterJob, DELETE_CLUSTER};
pub use delete_comp::{DeleteCompJob, DELETE_COMP};
pub use delete_node::{DeleteNodeJob, DELETE_NODE};
pub use delete_shard::{DeleteShardJob, DELETE_SHARD};
pub use rebuild_node::{RebuildRequest, REBUILD_NODE};
pub use restore_cluster::into::RESTORE_INTO_CLUSTER;
pub use restore_cluster::{RestoreClusterJob, RESTORE_CLUSTER};
pub use verify_backup::VERIFY_BACKUP;

/// The memo fields of `add_comps` and `delete_comp` besides the common ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompsExtra {
    /// Ids of the compute nodes recorded (add_comps) or removed (delete_comp).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comp_ids: Vec<i64>,
    /// delete_comp: the node's status before it was taken out of service (this run only).
    #[serde(skip)]
    pub before: Option<kunlun_meta::model::NodeStatus>,
}

/// The memo of an `add_comps` or `delete_comp` job.
pub type CompsMemo = JobMemo<CompsExtra>;

/// The memo fields of the shard and node jobs besides the common ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<i64>,
}

/// The memo of a shard or node job.
pub type ScaleMemo = JobMemo<ScaleExtra>;
