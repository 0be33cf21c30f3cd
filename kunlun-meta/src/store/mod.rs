//! The metadata store: diesel + diesel-async over an embedded SQLite file or a MySQL-compatible
//! metadata shard, one API for both.
//!
//! Invariants: every query is parameterised (a per-cluster table name is built only from a name
//! that passed [`crate::validate::name`] and is quoted as an identifier); each convenience
//! method below runs in its own transaction; repositories in [`repo`] compose inside one
//! [`Store::tx`].

mod config;
pub(crate) mod conn;
mod seeds;

pub use config::{BackendConfig, BackendKind, StoreConfig, DEFAULT_MYSQL_DATABASE};
pub use conn::{Tx, TxFn};
pub use seeds::{SeedAttempt, SeedOutcome, SeedReport};

use std::sync::Arc;
use std::time::Duration;

use conn::Pools;

use crate::api;
use crate::error::Result;
use crate::model::{
    Cluster, CompNode, Job, JobStatus, Machine, MachinePatch, NewJob, NewMachine, Shard, ShardNode,
};

/// A handle on the metadata store; cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pools: Pools,
    describe: String,
    seed_report: Option<SeedReport>,
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.describe)
            .finish()
    }
}

#[allow(clippy::unused_async)]
impl Store {
    /// Opens the store: finds the primary (MySQL), creates the database or file if missing and
    /// runs the embedded migrations.
    pub async fn open(cfg: &StoreConfig) -> Result<Store> {
        let _ = cfg;
        unimplemented!()
    }

    /// The backend in use.
    pub fn kind(&self) -> BackendKind {
        self.inner.pools.kind()
    }

    /// Where the metadata lives, e.g. `sqlite:/abs/path` or `mysql://user@host:port/db`
    /// (never a password).
    pub fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    /// Which seed was chosen and why the others were not (MySQL only).
    pub fn seed_report(&self) -> Option<&SeedReport> {
        self.inner.seed_report.as_ref()
    }

    /// Checks that the store answers; [`crate::Error::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        unimplemented!()
    }

    /// Runs `f` inside one transaction: committed when it returns `Ok`, rolled back otherwise.
    ///
    /// ```ignore
    /// store.tx(async |tx| {
    ///     let m = repo::machines::insert(tx, &new_machine).await?;
    ///     repo::jobs::create(tx, &new_job).await?;
    ///     Ok(m)
    /// }).await?;
    /// ```
    pub async fn tx<R, F>(&self, f: F) -> Result<R>
    where
        for<'r> F:
            AsyncFnOnce(&'r mut Tx) -> Result<R> + TxFn<&'r mut Tx, Result<R>, Fut: Send> + Send,
        R: Send,
    {
        let mut tx = Tx::begin(&self.inner.pools, self.inner.timeout).await?;
        match f(&mut tx).await {
            Ok(r) => {
                tx.commit().await?;
                Ok(r)
            }
            Err(e) => {
                if let Err(re) = tx.rollback().await {
                    tracing::warn!(error = %re, "rollback failed; the connection is discarded");
                }
                Err(e)
            }
        }
    }

    /// Runs `f` on one connection in autocommit mode (each statement commits on its own).
    pub async fn autocommit<R, F>(&self, f: F) -> Result<R>
    where
        for<'r> F:
            AsyncFnOnce(&'r mut Tx) -> Result<R> + TxFn<&'r mut Tx, Result<R>, Fut: Send> + Send,
        R: Send,
    {
        let mut tx = Tx::autocommit(&self.inner.pools, self.inner.timeout).await?;
        f(&mut tx).await
    }

    /// Registers a machine; [`crate::Error::Conflict`] if `(hostaddr, machine_type)` exists.
    pub async fn insert_machine(&self, m: &NewMachine) -> Result<Machine> {
        let _ = m;
        unimplemented!()
    }

    /// Every machine, by id.
    pub async fn list_machines(&self) -> Result<Vec<Machine>> {
        unimplemented!()
    }

    /// One machine; [`crate::Error::NotFound`] if unknown.
    pub async fn get_machine(&self, id: i64) -> Result<Machine> {
        let _ = id;
        unimplemented!()
    }

    /// Changes the fields the patch names.
    pub async fn update_machine(&self, id: i64, p: &MachinePatch) -> Result<Machine> {
        let _ = (id, p);
        unimplemented!()
    }

    /// Removes a machine; [`crate::Error::Conflict`] while it has used or installing ports.
    pub async fn delete_machine(&self, id: i64) -> Result<()> {
        let _ = id;
        unimplemented!()
    }

    /// Every cluster, by id.
    pub async fn list_clusters(&self) -> Result<Vec<Cluster>> {
        unimplemented!()
    }

    /// One cluster by id.
    pub async fn get_cluster(&self, id: i64) -> Result<Cluster> {
        let _ = id;
        unimplemented!()
    }

    /// One cluster by name.
    pub async fn get_cluster_by_name(&self, name: &str) -> Result<Cluster> {
        let _ = name;
        unimplemented!()
    }

    /// A cluster with its shards, their nodes and its compute nodes, read in one transaction.
    pub async fn cluster_detail(&self, id: i64) -> Result<api::ClusterDetail> {
        let _ = id;
        unimplemented!()
    }

    /// Shards, of one cluster or all.
    pub async fn list_shards(&self, cluster_id: Option<i64>) -> Result<Vec<Shard>> {
        let _ = cluster_id;
        unimplemented!()
    }

    /// One shard.
    pub async fn get_shard(&self, id: i64) -> Result<Shard> {
        let _ = id;
        unimplemented!()
    }

    /// Storage nodes, of one shard or all.
    pub async fn list_shard_nodes(&self, shard_id: Option<i64>) -> Result<Vec<ShardNode>> {
        let _ = shard_id;
        unimplemented!()
    }

    /// Compute nodes, of one cluster or all.
    pub async fn list_comp_nodes(&self, cluster_id: Option<i64>) -> Result<Vec<CompNode>> {
        let _ = cluster_id;
        unimplemented!()
    }

    /// Records a new job in state `not_started`.
    pub async fn create_job(&self, j: &NewJob) -> Result<Job> {
        let _ = j;
        unimplemented!()
    }

    /// One job.
    pub async fn get_job(&self, id: i64) -> Result<Job> {
        let _ = id;
        unimplemented!()
    }

    /// Jobs, newest first; limit 100 by default, at most 1000.
    pub async fn list_jobs(&self, q: &api::JobQuery) -> Result<Vec<Job>> {
        let _ = q;
        unimplemented!()
    }

    /// Claims the oldest `not_started` job of one of `types` (all types when empty) by moving
    /// it to `ongoing` with a compare-and-swap: of concurrent claimers exactly one gets it.
    pub async fn claim_next_job(&self, types: &[&str]) -> Result<Option<Job>> {
        let _ = types;
        unimplemented!()
    }

    /// Sets a job's status and (when given) memo; a final status also sets `when_ended`.
    pub async fn update_job(
        &self,
        id: i64,
        status: JobStatus,
        memo: Option<&serde_json::Value>,
    ) -> Result<Job> {
        let _ = (id, status, memo);
        unimplemented!()
    }
}
