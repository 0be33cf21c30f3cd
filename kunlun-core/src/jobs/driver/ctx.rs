//! [`JobCtx`]: what a job step may touch (the store, the machines, its own job id and
//! progress), and the three ways a step writes: a progress step, a transaction that also
//! stores the memo, and the job's end.

use std::future::Future;

use kunlun_meta::model::JobStatus;
use kunlun_meta::store::repo::jobs;
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::Result as MetaResult;
use serde::Serialize;

use super::super::progress::Progress;
use super::memo::{failed_stage, JobMemo};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;

/// What a job step may touch: the store, the machines, its own job id and progress.
pub struct JobCtx {
    pub store: Store,
    pub fleet: Provisioner,
    pub job_id: i64,
    pub progress: Progress,
    /// The job was found `ongoing` at start: its steps were read back, not run here.
    pub resumed: bool,
}

impl JobCtx {
    /// The context of claimed job `job`: its progress read back from its memo, `resumed` when
    /// it had one.
    pub fn for_job(store: &Store, fleet: &Provisioner, job: &kunlun_meta::model::Job) -> JobCtx {
        JobCtx {
            store: store.clone(),
            fleet: fleet.clone(),
            job_id: job.id,
            progress: Progress::for_job(store, job.id, job.memo.as_ref()),
            resumed: job.memo.is_some(),
        }
    }

    /// Runs `f` as progress step `name`, marked done or failed once.
    pub async fn step<T>(&self, name: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
        let step = self.progress.step(name);
        let r = f.await;
        match &r {
            Ok(_) => step.done(),
            Err(e) => step.fail(e),
        }
        r
    }

    /// Runs `f` in one transaction that also stores the memo `f` returns (job still
    /// `ongoing`); the progress adopts that memo only once the transaction committed.
    pub async fn commit<E, F>(&self, f: F) -> Result<JobMemo<E>>
    where
        E: Serialize + Send,
        for<'r> F: AsyncFnOnce(&'r mut Tx) -> MetaResult<JobMemo<E>>
            + kunlun_meta::store::TxFn<&'r mut Tx, MetaResult<JobMemo<E>>, Fut: Send>
            + Clone
            + Send,
    {
        let _write = self.progress.exclusive().await;
        let (id, progress) = (self.job_id, &self.progress);
        let memo = self
            .store
            .tx(async |tx| {
                let m = f(tx).await?;
                let full = progress.memo_with(m.to_json()?);
                jobs::update(tx, id, JobStatus::Ongoing, Some(&full)).await?;
                Ok(m)
            })
            .await?;
        self.progress.set_memo(memo.to_json()?);
        Ok(memo)
    }

    /// Stores `memo` (with the steps) while the job runs, best effort: a failure is logged and
    /// the job goes on (its end writes the memo again).
    pub async fn save<E: Serialize + Clone + Send + Sync>(&self, memo: &JobMemo<E>) {
        let m = memo.clone();
        if let Err(e) = self.commit(async |_| Ok(m.clone())).await {
            tracing::warn!(job_id = self.job_id, error = %e, "job progress not stored");
        }
    }

    /// Ends the job with `status` and `memo` (plus the steps).
    pub async fn end<E: Serialize>(&self, status: JobStatus, memo: &JobMemo<E>) -> Result<()> {
        let base = memo.to_json()?;
        let _write = self.progress.seal().await;
        self.progress.set_memo(base);
        self.store
            .update_job(self.job_id, status, Some(&self.progress.memo()))
            .await?;
        Ok(())
    }

    /// Ends the job `failed` with `why`: the stage becomes `failed` unless it says how a
    /// rollback went.
    pub async fn fail<E: Serialize>(&self, mut memo: JobMemo<E>, why: &Error) -> Result<()> {
        memo.error = Some(why.to_string());
        memo.stage = failed_stage(memo.stage);
        self.end(JobStatus::Failed, &memo).await
    }
}
