//! The `add_shards` and `delete_shard` jobs: new storage shards placed, installed and recorded; a shard uninstalled and removed.
//!
//! Invariant: (being built) a failed or interrupted job rolls back what it installed.

use kunlun_meta::model::Job;
use kunlun_meta::store::Store;

use super::install::Provisioner;
use crate::error::{Error, Result};

pub const ADD_SHARDS: &str = "add_shards";
pub const DELETE_SHARD: &str = "delete_shard";

/// Runs one claimed `add_shards` job.
pub async fn run_add_shards(_store: &Store, _prov: &Provisioner, job: &Job) -> Result<()> {
    Err(Error::Internal(format!(
        "job {}: add_shards is not implemented yet",
        job.id
    )))
}

/// Runs one claimed `delete_shard` job.
pub async fn run_delete_shard(_store: &Store, _prov: &Provisioner, job: &Job) -> Result<()> {
    Err(Error::Internal(format!(
        "job {}: delete_shard is not implemented yet",
        job.id
    )))
}
