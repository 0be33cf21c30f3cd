//! The `add_comps` and `delete_comp` jobs: new compute nodes installed, recorded and given the cluster topology; a compute node uninstalled and removed.
//!
//! Invariant: (being built) a failed or interrupted job rolls back what it installed.

use kunlun_meta::model::Job;
use kunlun_meta::store::Store;

use super::install::Provisioner;
use crate::error::{Error, Result};

pub const ADD_COMPS: &str = "add_comps";
pub const DELETE_COMP: &str = "delete_comp";

/// Runs one claimed `add_comps` job.
pub async fn run_add_comps(_store: &Store, _prov: &Provisioner, job: &Job) -> Result<()> {
    Err(Error::Internal(format!(
        "job {}: add_comps is not implemented yet",
        job.id
    )))
}

/// Runs one claimed `delete_comp` job.
pub async fn run_delete_comp(_store: &Store, _prov: &Provisioner, job: &Job) -> Result<()> {
    Err(Error::Internal(format!(
        "job {}: delete_comp is not implemented yet",
        job.id
    )))
}
