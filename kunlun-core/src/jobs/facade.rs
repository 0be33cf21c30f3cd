//! The jobs part of the [`ClusterManager`] facade: accept `create_cluster` /
//! `delete_cluster` (a job row, answered at once with its id: HTTP 202) and start the job
//! runner as one of the manager's background tasks.
//!
//! Invariant: accepting never touches a machine; only the runner does, and it stops with the
//! manager (it runs on the manager's task tracker and watches its cancellation token).

use std::time::Duration;

use kunlun_meta::api::{CreateCluster, JobAccepted};

use super::cluster::accept_create_cluster;
use super::delete::accept_delete_cluster;
use super::runner::JobRunner;
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::ClusterManager;

impl ClusterManager {
    /// Accepts a `create_cluster` job (validated; 409 for a name in use).
    pub async fn create_cluster(&self, req: &CreateCluster) -> Result<JobAccepted> {
        req.validate()?;
        let job = accept_create_cluster(self.store()?, req).await?;
        self.job_wake().notify_one();
        tracing::info!(job_id = job.id, cluster = %req.name, "create_cluster accepted");
        Ok(JobAccepted { job_id: job.id })
    }

    /// Accepts a `delete_cluster` job (404 unknown cluster, 409 while another job changes it).
    pub async fn delete_cluster(&self, cluster_id: i64) -> Result<JobAccepted> {
        let job = accept_delete_cluster(self.store()?, cluster_id).await?;
        self.job_wake().notify_one();
        tracing::info!(job_id = job.id, cluster_id, "delete_cluster accepted");
        Ok(JobAccepted { job_id: job.id })
    }

    /// Starts the job runner as a background task: it waits for the store to open, rolls
    /// back jobs a previous run left `ongoing`, then claims jobs until shutdown. Call once.
    pub fn start_job_runner(&self, provisioner: Provisioner, poll_interval: Duration) {
        let me = self.clone();
        let cancel = self.cancellation_token();
        self.tasks().spawn(async move {
            let store = loop {
                match me.store() {
                    Ok(s) => break s.clone(),
                    Err(Error::ShuttingDown) => return,
                    Err(_) => tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(poll_interval) => {}
                    },
                }
            };
            let runner = JobRunner {
                store,
                provisioner,
                poll_interval,
            };
            let wake = me.job_wake();
            runner.run_forever_woken(cancel, wake).await;
        });
    }
}
