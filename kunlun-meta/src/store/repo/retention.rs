//! Retention of finished jobs (`job_retention_days`): deletes `done`/`failed` job rows that
//! ended before a cutoff.
//!
//! Invariant: a job that has not ended (`not_started`, `ongoing`) is never deleted, whatever
//! its age, so a restart can still finish or roll it back.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::error::Result;
use crate::model::JobStatus;
use crate::store::conn::{with_conn, Tx};
use crate::store::schema::cluster_general_job_log as jobs;

/// Deletes finished jobs that ended before `cutoff`; returns how many.
pub async fn delete_finished_jobs_before(tx: &mut Tx, cutoff: NaiveDateTime) -> Result<usize> {
    let finals = [JobStatus::Done.as_str(), JobStatus::Failed.as_str()];
    with_conn!(tx, c => diesel::delete(
            jobs::table
                .filter(jobs::status.eq_any(finals))
                .filter(jobs::when_ended.lt(cutoff)),
        )
        .execute(c)
        .await)
}
