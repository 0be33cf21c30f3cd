//! The two skeletons every kind runs ([`drive`]): adding (plan → reserve → install →
//! record → push) and removing (plan → take out of service → uninstall → remove rows →
//! push), the rollback of an adding job, and the catalog push at the end.

use std::collections::HashSet;

use kunlun_meta::model::{Job, JobStatus};
use kunlun_meta::store::Store;

use super::super::common::{sparing, untouched, update_ports};
use super::super::plan::ClusterPlan;
use super::memo::{after_check, memo_of, resume, JobInfo, JobMemo, Resume, Stage};
use super::{Direction, JobCtx, JobKind, Planned, PushPolicy};
use crate::catalog::{push_cluster, CatalogOptions};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;

/// Runs one claimed job of kind `K` to its end, recording its steps in the memo.
pub async fn drive<K: JobKind>(store: &Store, fleet: &Provisioner, job: &Job) -> Result<()> {
    let info = JobInfo::<K::Request>::of(job)?;
    let memo = memo_of::<K>(job)?;
    let cx = JobCtx::for_job(store, fleet, job);
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
    match resume(
        Direction::Add,
        memo.stage,
        memo.plan.is_some(),
        K::FORWARD_FROM_PLANNED,
    ) {
        Resume::FinishForward => return finish::<K>(cx, info, memo).await,
        Resume::CheckInstances => return forward_or_roll_back::<K>(cx, info, memo).await,
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

/// An add found `planned` at start-up ([`Resume::CheckInstances`]): when every planned
/// instance is installed and answering, replication is set up (again: idempotent), the rows
/// recorded and the catalog pushed, as if the run had not been cut; else it is rolled back.
async fn forward_or_roll_back<K: JobKind>(
    cx: &JobCtx,
    info: &JobInfo<K::Request>,
    memo: JobMemo<K::Extra>,
) -> Result<()> {
    let (Some(mut plan), Some(cluster_id)) = (memo.plan.clone(), memo.cluster_id) else {
        return rollback::<K>(cx, info, memo, RESTARTED).await;
    };
    let step = cx.progress.step("check installed instances");
    let checked = async {
        plan.passwords = super::super::common::passwords(&cx.store, cluster_id).await?;
        let machines = cx.store.list_machines().await?;
        let opts = CatalogOptions::for_store(&cx.store);
        cx.fleet.check_installed(&machines, &plan, &opts).await
    }
    .await;
    let checked = match checked {
        Ok(c) => c,
        Err(e) => {
            step.fail(&e);
            return rollback::<K>(cx, info, memo, &format!("{RESTARTED}; {e}")).await;
        }
    };
    let oks: Vec<bool> = checked.iter().map(|(_, r)| r.is_ok()).collect();
    if after_check(&oks) != Resume::FinishForward {
        let why: Vec<String> = checked
            .iter()
            .filter_map(|(l, r)| r.as_ref().err().map(|e| format!("{l}: {e}")))
            .collect();
        let why = format!(
            "{RESTARTED}; not every instance was ready: {}",
            why.join("; ")
        );
        step.fail(&why);
        return rollback::<K>(cx, info, memo, &why).await;
    }
    step.done_with(format!(
        "{} instances installed and answering: finishing forward",
        oks.len()
    ));
    tracing::warn!(
        job_id = cx.job_id,
        job_type = K::TYPE,
        "interrupted job's instances are all ready; finishing it forward"
    );
    if let Err(e) = cx.fleet.setup_replication_with(&plan, &cx.progress).await {
        return rollback::<K>(cx, info, memo, &e.to_string()).await;
    }
    let memo = match record_step::<K>(cx, info, &plan, &memo, Stage::Recorded).await {
        Ok(m) => m,
        Err(e) => return rollback::<K>(cx, info, memo, &e.to_string()).await,
    };
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
        resume(Direction::Remove, memo.stage, memo.plan.is_some(), false),
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
