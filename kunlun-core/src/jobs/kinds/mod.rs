//! The job kinds, one file each: what each supplies to the [`super::driver`] (its request,
//! its pure plan call, the rows it writes or removes, its extra machine work).
//!
//! Invariant: a kind imports the driver, the planners and `super::common`, never another
//! kind.

pub mod add_comps;
pub mod add_nodes;
pub mod add_shards;
pub mod create_cluster;
pub mod delete_cluster;
pub mod delete_comp;
pub mod delete_node;
pub mod delete_shard;

pub use add_comps::{AddCompsJob, CompsExtra, CompsMemo, ADD_COMPS};
pub use add_nodes::{AddNodesJob, ADD_NODES};
pub use add_shards::{AddShardsJob, ScaleExtra, ScaleMemo, ADD_SHARDS};
pub use create_cluster::{CreateClusterJob, CreateExtra, CreateMemo, CREATE_CLUSTER};
pub use delete_cluster::{DeleteClusterJob, DELETE_CLUSTER};
pub use delete_comp::{DeleteCompJob, DELETE_COMP};
pub use delete_node::{DeleteNodeJob, DELETE_NODE};
pub use delete_shard::{DeleteShardJob, DELETE_SHARD};
