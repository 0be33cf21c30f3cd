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
//!
//! Where it lives: [`memo`] (the stored shapes: `Stage`, `JobMemo`, `JobInfo`, and the pure
//! `resume` table), [`ctx`] (`JobCtx`, all a step may touch), [`drive`] (the two skeletons,
//! rollback and the catalog push), and here the `JobKind` trait a kind implements.

mod ctx;
mod drive;
mod memo;

use std::future::Future;

use kunlun_meta::model::Machine;
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::Result as MetaResult;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::plan::ClusterPlan;
use crate::error::Result;

pub use ctx::JobCtx;
pub use drive::drive;
pub use memo::{memo_of, resume, stage_of, JobInfo, JobMemo, NoExtra, Resume, Stage};

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
    /// Found `planned` at start-up, the job checks its instances and finishes forward when
    /// all are installed and answering ([`memo::after_check`]) instead of rolling back: only
    /// for kinds whose install is the recipe's plus replication set-up (no seed, no data).
    const FORWARD_FROM_PLANNED: bool = false;
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

    /// The memo's kind fields of a fresh run (none set unless overridden).
    fn extra(_info: &JobInfo<Self::Request>) -> Self::Extra {
        Self::Extra::default()
    }

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
