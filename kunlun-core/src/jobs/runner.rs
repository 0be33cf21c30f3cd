//! The job runner: an actor that claims `not_started` jobs of the types it knows, one at a
//! time, and runs them; at start it first deals with jobs left `ongoing` by a manager that
//! died mid-job.
//!
//! Invariant: a job is run only after its row moved to `ongoing` by this runner's claim
//! (compare-and-swap), so two managers never run the same job; a job's own failure ends the
//! job `failed`, it never stops the runner.

use std::sync::Arc;
use std::time::Duration;

use kunlun_meta::model::{Job, JobStatus};
use kunlun_meta::store::repo::jobs;
use kunlun_meta::store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::cluster::{run_create_cluster, CREATE_CLUSTER};
use super::comps::{run_add_comps, run_delete_comp, ADD_COMPS, DELETE_COMP};
use super::delete::{run_delete_cluster, DELETE_CLUSTER};
use super::install::Provisioner;
use super::nodes::{run_add_nodes, run_delete_node, ADD_NODES, DELETE_NODE};
use super::shards::{run_add_shards, run_delete_shard, ADD_SHARDS, DELETE_SHARD};
use crate::error::Result;

/// Job types this runner executes.
pub const JOB_TYPES: &[&str] = &[
    CREATE_CLUSTER,
    DELETE_CLUSTER,
    ADD_SHARDS,
    DELETE_SHARD,
    ADD_NODES,
    DELETE_NODE,
    ADD_COMPS,
    DELETE_COMP,
];

/// Runs provisioning jobs.
#[derive(Clone)]
pub struct JobRunner {
    pub store: Store,
    pub provisioner: Provisioner,
    /// How often to look for new jobs when idle.
    pub poll_interval: Duration,
}

impl JobRunner {
    async fn run(&self, job: &Job) -> Result<()> {
        let r = match job.job_type.as_str() {
            CREATE_CLUSTER => run_create_cluster(&self.store, &self.provisioner, job).await,
            DELETE_CLUSTER => run_delete_cluster(&self.store, &self.provisioner, job).await,
            ADD_SHARDS => run_add_shards(&self.store, &self.provisioner, job).await,
            DELETE_SHARD => run_delete_shard(&self.store, &self.provisioner, job).await,
            ADD_NODES => run_add_nodes(&self.store, &self.provisioner, job).await,
            DELETE_NODE => run_delete_node(&self.store, &self.provisioner, job).await,
            ADD_COMPS => run_add_comps(&self.store, &self.provisioner, job).await,
            DELETE_COMP => run_delete_comp(&self.store, &self.provisioner, job).await,
            other => Err(crate::Error::Invalid(format!("unknown job type {other}"))),
        };
        if let Err(e) = &r {
            tracing::error!(job_id = job.id, error = %e, "job failed");
            let memo = serde_json::json!({ "stage": "failed", "error": e.to_string() });
            self.store
                .update_job(job.id, JobStatus::Failed, Some(&memo))
                .await?;
        }
        Ok(())
    }

    /// Rolls back (or finishes) every job of our types left `ongoing`; returns how many. A job
    /// that could not be dealt with (the store failed) is logged and the others are still
    /// tried; the error then names the ones left, which stay `ongoing` for the next try.
    pub async fn recover(&self) -> Result<usize> {
        let ongoing = self
            .store
            .read(async |tx| jobs::list_by_status(tx, JobStatus::Ongoing).await)
            .await?;
        let mut n = 0;
        let mut left = Vec::new();
        for job in ongoing
            .iter()
            .filter(|j| JOB_TYPES.contains(&j.job_type.as_str()))
        {
            tracing::warn!(job_id = job.id, job_type = %job.job_type, "resuming an interrupted job");
            match self.run(job).await {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::error!(job_id = job.id, error = %e, "recovering an interrupted job failed");
                    left.push(format!("job {}: {e}", job.id));
                }
            }
        }
        if left.is_empty() {
            Ok(n)
        } else {
            Err(crate::Error::Unavailable(format!(
                "interrupted jobs not recovered: {}",
                left.join("; ")
            )))
        }
    }

    /// Claims and runs one job; false when there was none.
    pub async fn run_once(&self) -> Result<bool> {
        let Some(job) = self.store.claim_next_job(JOB_TYPES).await? else {
            return Ok(false);
        };
        tracing::info!(job_id = job.id, job_type = %job.job_type, "job claimed");
        self.run(&job).await?;
        Ok(true)
    }

    /// The actor loop: recover (retried every `poll_interval` until it succeeds, so a store
    /// briefly down at start-up does not leave interrupted jobs behind), then claim and run
    /// jobs until `cancel`.
    pub async fn run_forever(self, cancel: CancellationToken) {
        self.run_forever_woken(cancel, Arc::new(Notify::new()))
            .await
    }

    /// [`Self::run_forever`], also woken by `wake` (a job was just accepted), so a new job
    /// starts at once instead of at the next poll.
    pub async fn run_forever_woken(self, cancel: CancellationToken, wake: Arc<Notify>) {
        loop {
            let r = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.recover() => r,
            };
            match r {
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "recovering interrupted jobs failed; retrying")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        loop {
            let busy = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.run_once() => r.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "job runner: store unavailable");
                    false
                }),
            };
            if !busy {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(self.poll_interval) => {}
                }
            }
        }
    }
}
