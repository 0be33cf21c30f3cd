//! The job-retention actor: every hour it deletes finished jobs older than
//! `job_retention_days`, so the job table (and `GET /v1/jobs`) cannot grow without bound.
//!
//! Invariant: only `done`/`failed` jobs are deleted (see
//! `kunlun_meta::store::repo::retention`); running it on several managers at once is harmless,
//! so it does not wait for leadership. It stops when `cancel` fires.

use std::time::Duration;

use kunlun_core::ClusterManager;
use kunlun_meta::store::repo;
use tokio_util::sync::CancellationToken;

/// How often old jobs are looked for.
const PERIOD: Duration = Duration::from_secs(3600);
/// The first pass waits this long after start, so start-up is not slowed.
const FIRST: Duration = Duration::from_secs(60);

/// Runs until `cancel`.
pub async fn run(manager: ClusterManager, keep: Duration, cancel: CancellationToken) {
    let mut wait = FIRST;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = PERIOD;
        let Ok(store) = manager.store() else {
            continue;
        };
        let Ok(keep) = chrono::Duration::from_std(keep) else {
            return;
        };
        let cutoff = chrono::Utc::now().naive_utc() - keep;
        match store
            .tx(async |tx| repo::retention::delete_finished_jobs_before(tx, cutoff).await)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(deleted = n, %cutoff, "deleted finished jobs past job_retention_days")
            }
            Err(e) => tracing::warn!(error = %e, "cannot delete old jobs; retrying next hour"),
        }
    }
}
