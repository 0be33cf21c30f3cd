//! The one job driver: every persisted job kind (`create_cluster`, the scale jobs, the
//! deletes) runs the same skeleton, which lives here once; a kind ([`JobKind`]) supplies only
//! its pure plan call, the rows it writes or removes and its extra machine work.
//!
//! The skeleton of an adding job: plan → reserve ports with the plan in the memo (stage
//! `planned`) → install → write rows, commit ports, stage `recorded` (one transaction) →
//! catalog push per [`PushPolicy`] → `done`; any failure before `recorded` rolls back from the
//! memo, sparing instances never touched. A removing job: plan → take the instances out of
//! service with the plan in the memo (stage `removing`) → uninstall → remove rows, release
//! ports, stage `removed` (one transaction) → push → `done`.
//!
//! Invariants:
//! - one meaning per stage: `recorded` is written in the transaction that writes the rows, so
//!   a job resumed at `recorded` finishes forward and at any earlier stage with a plan rolls
//!   back (adding) or carries on (removing); what a resumed job does is decided by the pure
//!   [`resume`] table alone;
//! - a memo write inside a transaction reaches the progress flusher only after the commit
//!   (`exclusive` → `memo_with` → `set_memo`), so a restart never resumes from a stage that was
//!   never stored;
//! - a job that ends `failed` has stage `failed`, `rolled_back` or `rollback_failed`, and its
//!   `error` says why;
//! - the memo and `job_info` keep the JSON field names of before the driver (tests, the CLI
//!   and the API read them); legacy stage spellings of jobs in flight are mapped on read.

use std::collections::HashSet;
use std::future::Future;
use std::ops::{Deref, DerefMut};

use kunlun_meta::model::{Job, JobStatus, Machine};
use kunlun_meta::store::repo::jobs;
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::{Error as MetaError, Result as MetaResult};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::common::{sparing, untouched, update_ports};
use super::plan::ClusterPlan;
use super::progress::{Progress, StepRecord};
use crate::catalog::{push_cluster, CatalogOptions};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;

/// Where a job is (the memo's `stage`). Ordered: a stage at or past [`Stage::Planned`] means
/// the plan and its reservation are stored.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Nothing stored yet (spelt `""`).
    #[default]
    #[serde(rename = "")]
    New,
    /// Plan stored, ports reserved; nothing recorded.
    Planned,
    /// Legacy only (never written): create/add_comps wrote it with their rows (= recorded),
    /// add_shards/add_nodes when recording failed (= not recorded). See [`JobKind::LEGACY_INSTALLED`].
    Installed,
    /// Rows written and ports committed in one transaction.
    Recorded,
    /// Removal plan stored, instances out of service.
    Removing,
    /// Rows removed and ports released in one transaction.
    Removed,
    Done,
    Failed,
    RolledBack,
    RollbackFailed,
}

impl Stage {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::New => "",
            Stage::Planned => "planned",
            Stage::Installed => "installed",
            Stage::Recorded => "recorded",
            Stage::Removing => "removing",
            Stage::Removed => "removed",
            Stage::Done => "done",
            Stage::Failed => "failed",
            Stage::RolledBack => "rolled_back",
            Stage::RollbackFailed => "rollback_failed",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Stage {
    /// The stage of a stored spelling; an unknown one is [`Stage::New`].
    fn from(s: &str) -> Stage {
        serde_json::from_value(Value::String(s.to_string())).unwrap_or_default()
    }
}

impl PartialEq<&str> for Stage {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Whether a kind adds instances (reserves ports, rolls back on failure) or removes them
/// (carries on from its memo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Add,
    Remove,
}

/// What the catalog push at the end of a job must achieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushPolicy {
    /// Every compute node must hold the topology, else the job rolls back (create).
    AllMustHave,
    /// The new compute nodes ([`JobKind::pushed_ids`]) must, else the job rolls back.
    NewMustHave,
    /// Pushed, the outcome noted; a missed node is caught up by the catalog sync.
    BestEffort,
    /// No push.
    None,
}

/// The memo of every kind: today's field names, the kind's own fields flattened in (and
/// reachable as `memo.field` through `Deref`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMemo<E> {
    pub stage: Stage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<i64>,
    #[serde(flatten)]
    pub extra: E,
    /// The instances added or removed, without passwords.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ClusterPlan>,
    /// What the catalog push did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Step progress (see [`Progress`]); written by the job's progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
}

impl<E> Deref for JobMemo<E> {
    type Target = E;
    fn deref(&self) -> &E {
        &self.extra
    }
}

impl<E> DerefMut for JobMemo<E> {
    fn deref_mut(&mut self) -> &mut E {
        &mut self.extra
    }
}

impl<E: Serialize> JobMemo<E> {
    fn to_json(&self) -> MetaResult<Value> {
        serde_json::to_value(self).map_err(|e| MetaError::Invalid(e.to_string()))
    }
}

/// No kind-specific memo fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoExtra {}

/// `job_info`: the request plus the cluster it targets (`cluster_id`, `name`: what the
/// runner and the accept check read to keep one job per cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo<R> {
    pub cluster_id: Option<i64>,
    pub name: String,
    pub request: R,
}

impl<R> JobInfo<R> {
    /// The target cluster's id (every kind but `create_cluster` has one).
    pub fn cluster(&self) -> Result<i64> {
        self.cluster_id
            .ok_or_else(|| Error::Invalid("job request names no cluster_id".into()))
    }
}

impl<R: Serialize> JobInfo<R> {
    /// The stored spelling: the request's fields plus `cluster_id` and `name`.
    pub fn to_value(&self) -> Result<Value> {
        let mut v =
            serde_json::to_value(&self.request).map_err(|e| Error::Internal(e.to_string()))?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| Error::Internal("job request is not an object".into()))?;
        if let Some(id) = self.cluster_id {
            obj.insert("cluster_id".into(), id.into());
        }
        obj.insert("name".into(), self.name.clone().into());
        Ok(v)
    }
}

impl<R: DeserializeOwned> JobInfo<R> {
    /// Reads a stored `job_info`. The request sees only its own fields (flattened), so a
    /// request that has a `name` (create) gets it too.
    pub fn from_value(v: Value) -> Result<JobInfo<R>> {
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            cluster_id: Option<i64>,
            #[serde(default)]
            name: Option<String>,
        }
        #[derive(Deserialize)]
        struct Body<R> {
            #[serde(flatten)]
            request: R,
        }
        if !v.is_object() {
            return Err(Error::Invalid("job request is not an object".into()));
        }
        let head: Head =
            serde_json::from_value(v.clone()).map_err(|e| Error::Invalid(e.to_string()))?;
        let body: Body<R> = serde_json::from_value(v).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(JobInfo {
            cluster_id: head.cluster_id,
            name: head.name.unwrap_or_default(),
            request: body.request,
        })
    }

    /// The `job_info` of `job`.
    pub fn of(job: &Job) -> Result<JobInfo<R>> {
        let v = job
            .job_info
            .clone()
            .ok_or_else(|| Error::Invalid(format!("job {} has no request", job.id)))?;
        Self::from_value(v).map_err(|e| Error::Invalid(format!("job {}: {e}", job.id)))
    }
}

/// A plan made by [`JobKind::plan`]: the instances, the machines snapshot it came from, and
/// the note of the `plan` step.
pub struct Planned {
    pub plan: ClusterPlan,
    pub machines: Vec<Machine>,
    pub note: String,
}

/// One job kind. Every method but `plan` and `record` has a default that does nothing.
pub trait JobKind: Send + Sync + 'static {
    /// The `job_type` spelling.
    const TYPE: &'static str;
    const DIRECTION: Direction;
    const PUSH: PushPolicy;
    /// What a legacy `installed` stage of a memo in flight meant for this kind.
    const LEGACY_INSTALLED: Stage = Stage::Planned;
    /// Name of the planning step.
    const PLAN_STEP: &'static str = "plan";
    /// Name of the step taking instances out of service (removing kinds), if reported.
    const RETIRE_STEP: Option<&'static str> = None;
    /// Name of the step that writes (adding) or removes (removing) the rows.
    const RECORD_STEP: &'static str;
    /// Name of the catalog push step.
    const PUSH_STEP: &'static str = "push catalog";

    type Request: Serialize + DeserializeOwned + Send + Sync;
    type Extra: Serialize + DeserializeOwned + Default + Clone + Send + Sync + std::fmt::Debug;

    /// The request on its own (400), checked once at accept before anything is read.
    fn validate(_req: &Self::Request) -> Result<()> {
        Ok(())
    }

    /// The request checked against the metadata at accept (404/409; the target cluster was
    /// found already): nothing is written.
    fn check(
        _store: &Store,
        _info: &JobInfo<Self::Request>,
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// The memo's kind fields of a fresh run.
    fn extra(info: &JobInfo<Self::Request>) -> Self::Extra;

    /// Reads a snapshot and calls the pure planner; `None`: nothing to do (a removal whose
    /// target is gone already), the job ends `done`.
    fn plan(
        cx: &JobCtx,
        info: &JobInfo<Self::Request>,
        memo: &mut JobMemo<Self::Extra>,
    ) -> impl Future<Output = Result<Option<Planned>>> + Send;

    /// Steps announced once planned, besides the driver's own.
    fn steps(plan: &ClusterPlan) -> Vec<String> {
        match Self::DIRECTION {
            Direction::Add => super::install::planned_steps(plan),
            Direction::Remove => Vec::new(),
        }
    }

    /// Metadata written with the reservation (adding) or retirement (removing), in its
    /// transaction.
    fn on_reserve(
        _tx: &mut Tx,
        _info: &JobInfo<Self::Request>,
        _plan: &ClusterPlan,
        _memo: &mut JobMemo<Self::Extra>,
    ) -> impl Future<Output = MetaResult<()>> + Send {
        async { Ok(()) }
    }

    /// The machine work of an adding job: install every instance (add_nodes: and seed).
    fn install(
        cx: &JobCtx,
        _info: &JobInfo<Self::Request>,
        machines: &[Machine],
        plan: &ClusterPlan,
        _memo: &mut JobMemo<Self::Extra>,
    ) -> impl Future<Output = Result<()>> + Send {
        cx.fleet.install_cluster_with(machines, plan, &cx.progress)
    }

    /// A removing job's uninstall failed: undo what `on_reserve` did that must not stay.
    fn on_uninstall_failed(
        _cx: &JobCtx,
        _info: &JobInfo<Self::Request>,
        _memo: &JobMemo<Self::Extra>,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Rows written (adding) or removed (removing), in the transaction that commits or
    /// releases the plan's ports and moves the memo to `recorded`/`removed`.
    fn record(
        tx: &mut Tx,
        info: &JobInfo<Self::Request>,
        plan: &ClusterPlan,
        memo: &mut JobMemo<Self::Extra>,
    ) -> impl Future<Output = MetaResult<()>> + Send;

    /// Undo of `record` and `on_reserve` for an adding job rolled back (idempotent).
    fn unrecord(
        _tx: &mut Tx,
        _plan: &ClusterPlan,
        _memo: &JobMemo<Self::Extra>,
    ) -> impl Future<Output = MetaResult<()>> + Send {
        async { Ok(()) }
    }

    /// Best-effort follow-up once recorded (semi-sync on/off).
    fn after_record(
        _cx: &JobCtx,
        _plan: &ClusterPlan,
        _memo: &JobMemo<Self::Extra>,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The compute nodes that must hold the catalog ([`PushPolicy::NewMustHave`]).
    fn pushed_ids(_memo: &JobMemo<Self::Extra>) -> Vec<i64> {
        Vec::new()
    }
}

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

/// The stage a failed job ends with.
fn failed_stage(s: Stage) -> Stage {
    match s {
        Stage::RolledBack | Stage::RollbackFailed => s,
        _ => Stage::Failed,
    }
}

/// What a job run does first, from its stored memo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Nothing stored: plan.
    Fresh,
    /// Adding: roll back from the memo's plan.
    RollBack,
    /// Removing: carry on from the memo's plan.
    Continue,
    /// Rows recorded (adding) or removed (removing): push and end `done`.
    FinishForward,
}

/// The one place that says what a (resumed) job does.
pub fn resume(dir: Direction, stage: Stage, has_plan: bool) -> Resume {
    use Stage::*;
    if !has_plan {
        return Resume::Fresh;
    }
    match (dir, stage) {
        (Direction::Add, Recorded | Done) => Resume::FinishForward,
        (Direction::Add, _) => Resume::RollBack,
        (Direction::Remove, Removed | Done) => Resume::FinishForward,
        (Direction::Remove, _) => Resume::Continue,
    }
}

/// The memo of `job` for kind `K` (default when none or unreadable), legacy stages mapped.
pub fn memo_of<K: JobKind>(job: &Job) -> JobMemo<K::Extra> {
    let mut memo: JobMemo<K::Extra> = job
        .memo
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    if memo.stage == Stage::Installed {
        memo.stage = K::LEGACY_INSTALLED;
    }
    memo
}

/// Runs one claimed job of kind `K` to its end, recording its steps in the memo.
pub async fn drive<K: JobKind>(store: &Store, fleet: &Provisioner, job: &Job) -> Result<()> {
    let info = JobInfo::<K::Request>::of(job)?;
    let memo = memo_of::<K>(job);
    let cx = JobCtx {
        store: store.clone(),
        fleet: fleet.clone(),
        job_id: job.id,
        progress: Progress::for_job(store, job.id, job.memo.as_ref()),
        resumed: job.memo.is_some(),
    };
    let r = match K::DIRECTION {
        Direction::Add => add::<K>(&cx, &info, memo).await,
        Direction::Remove => remove::<K>(&cx, &info, memo).await,
    };
    cx.progress.close().await;
    r
}

const RESTARTED: &str = "the manager restarted mid-job";

/// Plans a fresh run: `None` when the job already ended (nothing to do, or a failed plan).
async fn plan_fresh<K: JobKind>(
    cx: &JobCtx,
    info: &JobInfo<K::Request>,
    memo: &mut JobMemo<K::Extra>,
) -> Result<Option<Planned>> {
    *memo = JobMemo {
        cluster_id: info.cluster_id,
        extra: K::extra(info),
        ..JobMemo::default()
    };
    let step = cx.progress.step(K::PLAN_STEP);
    match K::plan(cx, info, memo).await {
        Ok(Some(p)) => {
            step.done_with(p.note.clone());
            Ok(Some(p))
        }
        Ok(None) => {
            step.done_with("nothing left to do");
            memo.stage = Stage::Done;
            cx.end(JobStatus::Done, memo).await?;
            Ok(None)
        }
        Err(e) => {
            step.fail(&e);
            cx.fail(memo.clone(), &e).await?;
            Ok(None)
        }
    }
}

/// The record step of both directions, one transaction: the kind's rows written (adding) or
/// removed (removing), the plan's ports committed or released, and the memo at `stage`.
async fn record_step<K: JobKind>(
    cx: &JobCtx,
    info: &JobInfo<K::Request>,
    plan: &ClusterPlan,
    memo: &JobMemo<K::Extra>,
    stage: Stage,
) -> Result<JobMemo<K::Extra>> {
    let step = cx.progress.step(K::RECORD_STEP);
    let r = cx
        .commit(async |tx| {
            let mut m = memo.clone();
            m.stage = stage;
            K::record(tx, info, plan, &mut m).await?;
            if stage == Stage::Removed {
                update_ports(tx, plan, |s, p| Ok(s.release(p))).await?;
            } else {
                update_ports(tx, plan, |s, p| Ok(s.commit(p))).await?;
            }
            Ok(m)
        })
        .await;
    match &r {
        Ok(_) => step.done(),
        Err(e) => step.fail(e),
    }
    r
}

async fn add<K: JobKind>(
    cx: &JobCtx,
    info: &JobInfo<K::Request>,
    mut memo: JobMemo<K::Extra>,
) -> Result<()> {
    match resume(Direction::Add, memo.stage, memo.plan.is_some()) {
        Resume::FinishForward => return finish::<K>(cx, info, memo).await,
        Resume::RollBack | Resume::Continue => {
            return rollback::<K>(cx, info, memo, RESTARTED).await;
        }
        Resume::Fresh => {}
    }
    let Some(Planned { plan, machines, .. }) = plan_fresh::<K>(cx, info, &mut memo).await? else {
        return Ok(());
    };
    cx.progress.plan(["reserve ports"]);
    cx.progress.plan(K::steps(&plan));
    cx.progress.plan([K::RECORD_STEP, K::PUSH_STEP]);

    // Reserve ports, write what goes with them, store the plan: all or nothing.
    memo.stage = Stage::Planned;
    memo.plan = Some(plan.clone());
    let step = cx.progress.step("reserve ports");
    let reserved = cx
        .commit(async |tx| {
            update_ports(tx, &plan, |s, p| s.reserve(p)).await?;
            let mut m = memo.clone();
            K::on_reserve(tx, info, &plan, &mut m).await?;
            Ok(m)
        })
        .await;
    memo = match reserved {
        Ok(m) => {
            step.done();
            m
        }
        Err(e) => {
            step.fail(&e);
            cx.progress.skip_pending("ports could not be reserved");
            memo.plan = None;
            return cx.fail(memo, &e).await;
        }
    };

    if let Err(e) = K::install(cx, info, &machines, &plan, &mut memo).await {
        cx.progress.skip_pending("an earlier step failed");
        return rollback::<K>(cx, info, memo, &e.to_string()).await;
    }

    match record_step::<K>(cx, info, &plan, &memo, Stage::Recorded).await {
        Ok(m) => memo = m,
        Err(e) => {
            cx.progress.skip_pending("an earlier step failed");
            return rollback::<K>(cx, info, memo, &e.to_string()).await;
        }
    }
    K::after_record(cx, &plan, &memo).await;
    finish::<K>(cx, info, memo).await
}

/// Pushes per [`JobKind::PUSH`] and ends the job `done`; an adding job whose required push
/// failed is rolled back.
async fn finish<K: JobKind>(
    cx: &JobCtx,
    info: &JobInfo<K::Request>,
    mut memo: JobMemo<K::Extra>,
) -> Result<()> {
    if let (Some(id), true) = (memo.cluster_id, K::PUSH != PushPolicy::None) {
        let step = cx.progress.step(K::PUSH_STEP);
        let opts = CatalogOptions::for_store(&cx.store);
        let pushed = push_cluster(&cx.store, id, &opts).await;
        let why = match (K::PUSH, pushed) {
            (PushPolicy::AllMustHave, Ok(r)) if r.all_ok() => None,
            (PushPolicy::AllMustHave, Ok(r)) => Some(r.to_string()),
            (PushPolicy::AllMustHave, Err(e)) => Some(format!("catalog push: {e}")),
            (PushPolicy::NewMustHave, Ok(r)) => {
                memo.catalog = Some(r.to_string());
                let new = K::pushed_ids(&memo);
                let missed: Vec<String> = r
                    .failed()
                    .filter(|c| new.contains(&c.comp_node_id))
                    .map(|c| {
                        format!(
                            "{} ({}:{}): {}",
                            c.name,
                            c.hostaddr,
                            c.port,
                            c.error.as_deref().unwrap_or_default()
                        )
                    })
                    .collect();
                (!missed.is_empty()).then(|| {
                    format!(
                        "catalog not written to new compute nodes: {}",
                        missed.join("; ")
                    )
                })
            }
            (PushPolicy::NewMustHave, Err(e)) => Some(format!("catalog push failed: {e}")),
            (_, r) => {
                let note = match r {
                    Ok(r) => r.to_string(),
                    Err(e) => format!("catalog not pushed (the catalog sync retries): {e}"),
                };
                memo.catalog = Some(note);
                None
            }
        };
        match why {
            None => match &memo.catalog {
                Some(note) => step.done_with(note.clone()),
                None => step.done(),
            },
            Some(why) => {
                step.fail(&why);
                return rollback::<K>(cx, info, memo, &why).await;
            }
        }
    }
    memo.stage = Stage::Done;
    cx.end(JobStatus::Done, &memo).await
}

/// Rolls an adding job back from its memo's plan: uninstalls what it may have installed
/// (sparing instances never touched: their machines may be unreachable), then in one
/// transaction undoes its rows and releases the plan's ports; ends the job failed with `why`.
async fn rollback<K: JobKind>(
    cx: &JobCtx,
    _info: &JobInfo<K::Request>,
    mut memo: JobMemo<K::Extra>,
    why: &str,
) -> Result<()> {
    tracing::warn!(
        job_id = cx.job_id,
        job_type = K::TYPE,
        reason = why,
        "job failed; rolling back"
    );
    let Some(plan) = memo.plan.clone() else {
        return cx.fail(memo, &Error::Unavailable(why.to_string())).await;
    };
    memo.steps.clear();
    let spare: HashSet<String> = untouched(&cx.progress.steps(), !cx.resumed);
    let removed = async {
        let machines = cx.store.list_machines().await?;
        cx.fleet
            .uninstall_cluster_with(&machines, &sparing(&plan, &spare), &cx.progress)
            .await?;
        let m = &memo;
        cx.step("remove rows and ports", async {
            cx.store
                .tx(async |tx| {
                    K::unrecord(tx, &plan, m).await?;
                    update_ports(tx, &plan, |s, p| Ok(s.release(p))).await
                })
                .await?;
            Ok(())
        })
        .await?;
        checkpoint(&cx.store).await;
        Ok::<_, Error>(())
    }
    .await;
    let mut why = why.to_string();
    match removed {
        Ok(()) => memo.stage = Stage::RolledBack,
        Err(e) => {
            memo.stage = Stage::RollbackFailed;
            why.push_str(&format!(
                "; rollback failed, instances may remain and their ports stay reserved: {e}"
            ));
        }
    }
    cx.fail(memo, &Error::Unavailable(why)).await
}

/// Rows just removed held passwords: no copy may stay in the SQLite WAL.
async fn checkpoint(store: &Store) {
    if let Err(e) = store.checkpoint().await {
        tracing::warn!(error = %e, "cannot checkpoint the store after removing rows");
    }
}

async fn remove<K: JobKind>(
    cx: &JobCtx,
    info: &JobInfo<K::Request>,
    mut memo: JobMemo<K::Extra>,
) -> Result<()> {
    let (plan, machines, fresh) = match (
        resume(Direction::Remove, memo.stage, memo.plan.is_some()),
        memo.plan.clone(),
    ) {
        (Resume::FinishForward, _) => return finish::<K>(cx, info, memo).await,
        (Resume::Continue | Resume::RollBack, Some(plan)) => {
            (plan, cx.store.list_machines().await?, false)
        }
        _ => {
            let Some(p) = plan_fresh::<K>(cx, info, &mut memo).await? else {
                return Ok(());
            };
            cx.progress.plan(K::steps(&p.plan));
            (p.plan, p.machines, true)
        }
    };
    // Out of service (again on resume) before anything is touched, with the plan stored.
    memo.stage = Stage::Removing;
    memo.plan = Some(plan.clone());
    let step = K::RETIRE_STEP.map(|s| cx.progress.step(s));
    let retired = cx
        .commit(async |tx| {
            let mut m = memo.clone();
            K::on_reserve(tx, info, &plan, &mut m).await?;
            Ok(m)
        })
        .await;
    memo = match retired {
        Ok(m) => {
            if let Some(s) = step {
                s.done();
            }
            m
        }
        Err(e) => {
            // Nothing was touched (the transaction rolled back); a plan never stored is dropped.
            if let Some(s) = step {
                s.fail(&e);
            }
            cx.progress
                .skip_pending("the instances could not be taken out of service");
            if fresh {
                memo.plan = None;
            }
            return cx.fail(memo, &e).await;
        }
    };
    if let Err(e) = cx
        .fleet
        .uninstall_cluster_with(&machines, &plan, &cx.progress)
        .await
    {
        K::on_uninstall_failed(cx, info, &memo).await;
        let e = Error::Unavailable(format!("{e}; the rows and ports are kept"));
        return cx.fail(memo, &e).await;
    }
    match record_step::<K>(cx, info, &plan, &memo, Stage::Removed).await {
        Ok(m) => memo = m,
        Err(e) => return cx.fail(memo, &e).await,
    }
    checkpoint(&cx.store).await;
    K::after_record(cx, &plan, &memo).await;
    finish::<K>(cx, info, memo).await
}

/// The `stage` of a stored memo, typed (for the runner: a job at or past `planned` holds
/// its reservation).
pub fn stage_of(memo: Option<&Value>) -> Stage {
    memo.and_then(|m| m.get("stage"))
        .and_then(Value::as_str)
        .map(Stage::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Add, Remove};
    use Stage::*;

    const ALL: [Stage; 10] = [
        New,
        Planned,
        Installed,
        Recorded,
        Removing,
        Removed,
        Done,
        Failed,
        RolledBack,
        RollbackFailed,
    ];

    #[test]
    fn a_job_without_a_stored_plan_starts_afresh_whatever_its_stage() {
        for dir in [Add, Remove] {
            for s in ALL {
                assert_eq!(resume(dir, s, false), Resume::Fresh, "{dir:?} {s}");
            }
        }
    }

    #[test]
    fn an_add_finishes_forward_only_once_recorded_and_otherwise_rolls_back() {
        for s in ALL {
            let want = match s {
                Recorded | Done => Resume::FinishForward,
                _ => Resume::RollBack,
            };
            assert_eq!(resume(Add, s, true), want, "{s}");
        }
    }

    #[test]
    fn a_removal_finishes_once_removed_and_otherwise_carries_on() {
        for s in ALL {
            let want = match s {
                Removed | Done => Resume::FinishForward,
                _ => Resume::Continue,
            };
            assert_eq!(resume(Remove, s, true), want, "{s}");
        }
    }

    #[test]
    fn stages_keep_their_stored_spellings() {
        for s in ALL {
            let v = serde_json::to_value(s).unwrap();
            assert_eq!(v, Value::String(s.as_str().into()));
            assert_eq!(Stage::from(s.as_str()), s);
            assert_eq!(s, s.as_str());
        }
        assert_eq!(Stage::from("nonsense"), New);
        assert!(Planned < Recorded && New < Planned && Removing > Planned);
    }

    #[test]
    fn a_failed_job_says_failed_unless_it_says_how_its_rollback_went() {
        assert_eq!(failed_stage(New), Failed);
        assert_eq!(failed_stage(Planned), Failed);
        assert_eq!(failed_stage(Recorded), Failed);
        assert_eq!(failed_stage(Removing), Failed);
        assert_eq!(failed_stage(RolledBack), RolledBack);
        assert_eq!(failed_stage(RollbackFailed), RollbackFailed);
    }

    #[test]
    fn the_stage_of_a_raw_memo_is_read_typed() {
        use serde_json::json;
        assert_eq!(stage_of(None), New);
        assert_eq!(stage_of(Some(&json!({"steps": []}))), New);
        assert_eq!(stage_of(Some(&json!({"stage": "planned"}))), Planned);
        assert_eq!(stage_of(Some(&json!({"stage": 3}))), New);
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    struct X {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard_id: Option<i64>,
    }

    #[test]
    fn the_memo_keeps_its_json_field_names_with_the_kind_fields_flattened() {
        use serde_json::json;
        let m = JobMemo {
            stage: Planned,
            cluster_id: Some(3),
            extra: X { shard_id: Some(4) },
            ..JobMemo::default()
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            json!({"stage": "planned", "cluster_id": 3, "shard_id": 4})
        );
        let back: JobMemo<X> = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.shard_id, Some(4), "kind fields read through Deref");
        let info: JobInfo<X> =
            JobInfo::from_value(json!({"cluster_id": 1, "name": "c", "shard_id": 2})).unwrap();
        assert_eq!((info.cluster_id, info.request.shard_id), (Some(1), Some(2)));
        assert_eq!(info.name, "c");
        assert_eq!(
            info.to_value().unwrap(),
            json!({"cluster_id": 1, "name": "c", "shard_id": 2})
        );
        assert!(JobInfo::<X>::from_value(json!([1])).is_err());
    }
}
