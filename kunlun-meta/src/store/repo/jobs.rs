//! Jobs (`cluster_general_job_log`): created `not_started`, claimed by one worker, updated
//! with progress (memo JSON) until `done` or `failed`.
//!
//! Invariant: a job moves `not_started -> ongoing` only through a compare-and-swap UPDATE, so
//! of any number of concurrent claimers exactly one gets it; `when_ended` is set exactly when
//! the status becomes final.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{last_insert_id, now};
use crate::api::{JobQuery, Page};
use crate::error::{Error, Result};
use crate::model::{Job, JobStatus, NewJob};
use crate::store::conn::{with_conn, Tx};
use crate::store::rows::{JobRow, NewJobRow};
use crate::store::schema::cluster_general_job_log as jobs;

/// Default and largest page of [`list`].
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// How many lost compare-and-swaps [`claim_next`] tolerates before giving up for this round.
const CLAIM_ATTEMPTS: usize = 32;

/// Records a job in state `not_started`.
pub async fn create(tx: &mut Tx, j: &NewJob) -> Result<Job> {
    if j.job_type.is_empty() {
        return Err(Error::Invalid("job_type: must not be empty".into()));
    }
    let row = NewJobRow {
        job_type: j.job_type.clone(),
        status: JobStatus::NotStarted.as_str().to_string(),
        job_info: Some(j.job_info.to_string()),
        user_name: j.user_name.clone(),
        when_started: now(),
    };
    with_conn!(tx, c => diesel::insert_into(jobs::table).values(&row).execute(c).await)?;
    let id = last_insert_id(tx).await?;
    get(tx, id).await
}

/// One job; [`Error::NotFound`] if unknown.
pub async fn get(tx: &mut Tx, id: i64) -> Result<Job> {
    let row = with_conn!(tx, c => jobs::table
        .filter(jobs::id.eq(id))
        .select(JobRow::as_select())
        .first::<JobRow>(c)
        .await
        .optional())?;
    row.ok_or_else(|| Error::not_found("job", id))?.try_into()
}

/// Jobs matching the query, newest first (older than `q.after` when given).
pub async fn list(tx: &mut Tx, q: &JobQuery) -> Result<Vec<Job>> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    list_rows(tx, q, limit).await
}

/// One page of the jobs matching the query, newest first; the cursor goes to older jobs.
pub async fn list_page(tx: &mut Tx, q: &JobQuery) -> Result<Page<Job>> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let rows = list_rows(tx, q, limit + 1).await?;
    Ok(Page::from_probe(rows, limit, |j| j.id))
}

async fn list_rows(tx: &mut Tx, q: &JobQuery, limit: u32) -> Result<Vec<Job>> {
    let limit = i64::from(limit);
    let before = q.after.unwrap_or(i64::MAX);
    let rows = with_conn!(tx, c => {
        let mut b = jobs::table.select(JobRow::as_select()).filter(jobs::id.lt(before)).order(jobs::id.desc()).limit(limit).into_boxed();
        if let Some(s) = q.status {
            b = b.filter(jobs::status.eq(s.as_str()));
        }
        if let Some(t) = &q.job_type {
            b = b.filter(jobs::job_type.eq(t));
        }
        b.load::<JobRow>(c).await
    })?;
    rows.into_iter().map(Job::try_from).collect()
}

/// Jobs in one status, oldest first (e.g. the `ongoing` ones to resume after a restart).
pub async fn list_by_status(tx: &mut Tx, status: JobStatus) -> Result<Vec<Job>> {
    let rows = with_conn!(tx, c => jobs::table
        .filter(jobs::status.eq(status.as_str()))
        .order(jobs::id.asc())
        .select(JobRow::as_select())
        .load::<JobRow>(c)
        .await)?;
    rows.into_iter().map(Job::try_from).collect()
}

/// The unfinished jobs (`not_started`, then `ongoing`), each by id.
pub async fn list_unfinished(tx: &mut Tx) -> Result<Vec<Job>> {
    let mut out = list_by_status(tx, JobStatus::NotStarted).await?;
    out.extend(list_by_status(tx, JobStatus::Ongoing).await?);
    Ok(out)
}

/// Claims the oldest `not_started` job of one of `types` (any type when empty).
///
/// Best run in autocommit mode ([`crate::store::Store::claim_next_job`]): each losing
/// compare-and-swap moves on to the next candidate.
pub async fn claim_next(tx: &mut Tx, types: &[&str]) -> Result<Option<Job>> {
    let mut after = 0i64;
    for _ in 0..CLAIM_ATTEMPTS {
        let candidate = with_conn!(tx, c => {
            let mut b = jobs::table
                .filter(jobs::status.eq(JobStatus::NotStarted.as_str()))
                .filter(jobs::id.gt(after))
                .order(jobs::id.asc())
                .select(jobs::id)
                .into_boxed();
            if !types.is_empty() {
                b = b.filter(jobs::job_type.eq_any(types));
            }
            b.first::<i64>(c).await.optional()
        })?;
        let Some(id) = candidate else { return Ok(None) };
        if claim(tx, id).await? {
            return get(tx, id).await.map(Some);
        }
        after = id;
    }
    Ok(None)
}

/// Moves job `id` from `not_started` to `ongoing`; false if it was not `not_started`.
pub async fn claim(tx: &mut Tx, id: i64) -> Result<bool> {
    let n = with_conn!(tx, c => diesel::update(
            jobs::table.filter(jobs::id.eq(id)).filter(jobs::status.eq(JobStatus::NotStarted.as_str())),
        )
        .set(jobs::status.eq(JobStatus::Ongoing.as_str()))
        .execute(c)
        .await)?;
    Ok(n == 1)
}

#[derive(AsChangeset)]
#[diesel(table_name = jobs)]
struct JobChangeset {
    status: String,
    memo: Option<String>,
    when_ended: Option<chrono::NaiveDateTime>,
}

/// Replaces the memo of a job that is still `ongoing`; false (nothing written) once the job
/// ended or was handed back (a progress write of a task that outlived its job must not bring
/// the job back).
pub async fn update_memo_if_ongoing(
    tx: &mut Tx,
    id: i64,
    memo: &serde_json::Value,
) -> Result<bool> {
    let memo = memo.to_string();
    let n = with_conn!(tx, c => diesel::update(
            jobs::table
                .filter(jobs::id.eq(id))
                .filter(jobs::status.eq(JobStatus::Ongoing.as_str())),
        )
        .set(jobs::memo.eq(Some(memo)))
        .execute(c)
        .await)?;
    Ok(n == 1)
}

/// Sets the status and, when given, the memo; a final status also sets `when_ended`.
pub async fn update(
    tx: &mut Tx,
    id: i64,
    status: JobStatus,
    memo: Option<&serde_json::Value>,
) -> Result<Job> {
    let cs = JobChangeset {
        status: status.as_str().to_string(),
        memo: memo.map(serde_json::Value::to_string),
        when_ended: status.is_final().then(now),
    };
    let n = with_conn!(tx, c => diesel::update(jobs::table.filter(jobs::id.eq(id))).set(&cs).execute(c).await)?;
    if n == 0 {
        return Err(Error::not_found("job", id));
    }
    get(tx, id).await
}
