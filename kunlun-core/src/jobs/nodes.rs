//! The `add_nodes` and `delete_node` jobs: new replicas seeded with the shard's data and following its primary by GTID; a replica (never the primary) uninstalled and removed.
//!
//! Invariant: (being built) a failed or interrupted job rolls back what it installed.

use kunlun_meta::model::Job;
use kunlun_meta::store::Store;

use super::install::Provisioner;
use crate::error::{Error, Result};

pub const ADD_NODES: &str = "add_nodes";
pub const DELETE_NODE: &str = "delete_node";

/// Runs one claimed `add_nodes` job.
pub async fn run_add_nodes(_store: &Store, _prov: &Provisioner, job: &Job) -> Result<()> {
    Err(Error::Internal(format!(
        "job {}: add_nodes is not implemented yet",
        job.id
    )))
}

/// Runs one claimed `delete_node` job.
pub async fn run_delete_node(_store: &Store, _prov: &Provisioner, job: &Job) -> Result<()> {
    Err(Error::Internal(format!(
        "job {}: delete_node is not implemented yet",
        job.id
    )))
}
