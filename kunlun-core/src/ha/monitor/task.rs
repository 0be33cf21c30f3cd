//! One shard's failover or switchover as its own task, so a slow one never stalls probing,
//! detection or the failover of any other shard. The task gets a copy of what it needs
//! ([`TaskCtx`]), runs under a deadline per attempt, and reports back through the monitor's
//! channel ([`Done`]); only the monitor applies the result to its per-shard state.
//!
//! Invariants: the monitor marks the shard busy before it spawns the task and clears the mark
//! only when it applies the [`Done`] (which is always sent, also after a panic or the
//! deadline), so one shard never has two such tasks and a switchover never races a failover
//! of the same shard; the task writes records and published state only through the store and
//! [`HaShared`], never the monitor's own maps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_meta::model::{NodeStatus, ShardNode};
use kunlun_meta::store::Store;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::ha::choose::{choose, Choice, ShardView};
use crate::ha::failover::{
    record_fence, switch_to, FailoverKind, FailoverRecord, Follower, Outcome, StepContext, Switch,
    Timeline,
};
use crate::ha::probe::{probe_node, probe_options, NodeProbe};
use crate::ha::state::HaShared;
use crate::ha::ShardTopo;
use crate::ha::{fence, records, switchover, HaConfig};
use crate::storage::NodeAddr;

/// What a shard task needs, copied out of the monitor.
#[derive(Debug, Clone)]
pub(crate) struct TaskCtx {
    pub store: Store,
    pub cfg: HaConfig,
    pub shared: Arc<HaShared>,
    pub cancel: CancellationToken,
}

impl TaskCtx {
    /// The step context without the cluster's logins (see [`StepContext::with_logins`]).
    pub(crate) fn step_context(&self) -> StepContext {
        StepContext {
            store: self.store.clone(),
            storage: self.cfg.storage,
            catch_up_limit: self.cfg.catch_up_limit,
            xa: self.cfg.xa.clone(),
            cancel: self.cancel.clone(),
            before_write: self.cfg.before_write.clone(),
            repl: None,
            pgx: None,
            term: self.cfg.term.clone(),
        }
    }

    /// Stores a finished record (memory-only when the store cannot take it); returns its id.
    pub(crate) async fn keep(&self, rec: FailoverRecord) -> u64 {
        keep(&self.store, &self.shared, rec).await
    }

    /// A probe of a just-promoted primary, so the semi-sync proof of its next failure rests on
    /// a probe taken while it was primary (a replica may report the master side off).
    async fn seed(&self, n: &ShardNode) -> NodeProbe {
        let opts = probe_options(self.cfg.interval, self.cfg.storage);
        probe_node(&NodeAddr::from(n), opts).await
    }
}

/// Stores a finished record (memory-only when the store cannot take it); returns its id.
pub(super) async fn keep(store: &Store, shared: &HaShared, mut rec: FailoverRecord) -> u64 {
    match records::insert(store, &rec).await {
        Ok(id) => rec.id = id,
        Err(e) => {
            tracing::warn!(shard = rec.shard_id, error = %e, "failover record kept in memory only");
            rec.id = 0;
        }
    }
    shared.record(rec)
}

/// A shard task's report to the monitor.
pub(super) enum Done {
    Failover {
        shard_id: i64,
        outcome: FailoverDone,
    },
    Switchover {
        shard_id: i64,
        /// The shard's node ids: their per-node memory is reset after a promotion.
        nodes: Vec<i64>,
        result: Box<Result<FailoverRecord>>,
        seed: Option<(i64, NodeProbe)>,
        reply: oneshot::Sender<Result<FailoverRecord>>,
    },
}

/// How an automatic failover attempt ended.
#[derive(Debug)]
pub(super) enum FailoverDone {
    /// Nothing was changed on the nodes: the choice refused (the old primary was fenced).
    /// `facts` is the view the choice refused on: no new attempt (and no new fence) runs
    /// while the shard's facts stay the same.
    Refused {
        old: i64,
        reason: String,
        facts: String,
    },
    Promoted {
        old: i64,
        new: i64,
        record: u64,
        /// The new primary's position when promoted (a returning old primary's reference).
        promoted_at: String,
        total_ms: u64,
        /// What an operator must look at (errant or not replicating followers).
        degraded: Option<String>,
        seed: NodeProbe,
    },
    Failed {
        new: Option<i64>,
        reason: String,
        /// The view's facts when the failure followed from them (see `retry`).
        facts_bound: Option<String>,
        /// The old primary when the task could not store its record (it was lost to the
        /// deadline or ended abnormally, or never started its steps): the monitor stores one.
        unrecorded: Option<i64>,
    },
}

/// The inputs of one automatic failover attempt.
pub(super) struct FailoverJob {
    pub shard: ShardTopo,
    pub old: ShardNode,
    pub view: ShardView,
    pub detected: Instant,
    /// Why the primary was declared dead.
    pub basis: crate::ha::detect::Basis,
}

/// Spawns `work` on `tasks` under `deadline`; whatever happens (done, deadline, panic), one
/// [`Done`] made by `done` or `lost` reaches `tx`.
pub(super) fn spawn_bounded<F>(
    tasks: &mut tokio::task::JoinSet<()>,
    tx: mpsc::UnboundedSender<Done>,
    deadline: Duration,
    work: F,
    lost: impl FnOnce(String) -> Done + Send + 'static,
) where
    F: std::future::Future<Output = Done> + Send + 'static,
{
    tasks.spawn(async move {
        let inner = tokio::spawn(tokio::time::timeout(deadline, work));
        // The inner task (spawned to catch a panic) is not owned by `tasks`: abort it when
        // this wrapper is dropped or aborted (the term ends), so a deposed leader's attempt
        // stops acting instead of running on beside the new leader's.
        let _stop = AbortOnDrop(inner.abort_handle());
        let done = match inner.await {
            Ok(Ok(d)) => d,
            Ok(Err(_)) => lost(format!("the attempt's deadline of {deadline:?} passed")),
            Err(e) => lost(format!("the attempt's task ended abnormally: {e}")),
        };
        let _ = tx.send(done);
    });
}

/// What a refusal depends on: the view's facts and the shard's loss policy (an operator
/// allowing a lossy promotion changes the outcome without changing the facts).
pub(super) fn refusal_key(facts: &str, policy: super::super::choose::LossPolicy) -> String {
    format!("{facts}|{policy:?}")
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One automatic failover attempt: choose, fence and prove, switch, record.
pub(super) async fn fail_over(ctx: TaskCtx, job: FailoverJob) -> FailoverDone {
    let FailoverJob {
        shard: s,
        old,
        mut view,
        detected,
        basis,
    } = job;
    let cfg = &ctx.cfg;
    let mut rec = FailoverRecord::new(FailoverKind::Automatic, s.cluster.id, s.shard_id, old.id);
    let mut t = Timeline::starting_at(detected);
    t.phase(&mut rec, "detect", Some(basis.to_string()));
    for r in &mut view.replicas {
        r.no_switch |= ctx.shared.node_no_switch(r.node_id);
    }
    let facts = view.fingerprint();
    // A term that already lost its lease touches no node: the new leader decides. (A read
    // error goes on: the metadata write checks the lease again, in its own transaction.)
    if let Some(term) = cfg.term.as_ref() {
        let held = ctx
            .store
            .read(async |tx| {
                kunlun_meta::store::repo::lease::holds(tx, &term.lease, &term.holder, term.epoch)
                    .await
            })
            .await;
        if matches!(held, Ok(false)) {
            return FailoverDone::Refused {
                old: old.id,
                reason: format!(
                    "leadership term {} ended (lease `{}` is no longer held by {}); the new \
                     leader decides",
                    term.epoch, term.lease, term.holder
                ),
                facts: refusal_key(&facts, ctx.shared.loss_policy(s.shard_id)),
            };
        }
    }
    let step = ctx.step_context().with_logins(s.cluster.id).await;
    // The choice needs only the view; the fence runs before anything stops receiving from the
    // old primary (see `record_fence`), and before a refusal is recorded.
    let choice = choose(&view, ctx.shared.loss_policy(s.shard_id));
    let fence_opts = fence::after_failed_probes(probe_options(cfg.interval, cfg.storage));
    let (new_id, proven, loss) = match choice {
        Choice::Refuse { reason } => {
            let _ = fence::fence_and_prove(
                &ctx.store,
                cfg.ssh.as_ref(),
                &old,
                fence_opts,
                step.pgx.as_ref(),
            )
            .await;
            return FailoverDone::Refused {
                old: old.id,
                reason,
                facts: refusal_key(&facts, ctx.shared.loss_policy(s.shard_id)),
            };
        }
        Choice::Promote {
            node_id,
            proven_lossless,
            possible_loss,
        } => (node_id, proven_lossless, possible_loss),
    };
    rec.proven_lossless = proven;
    rec.possible_loss = loss;
    let pos = view
        .replicas
        .iter()
        .find(|r| r.node_id == new_id)
        .and_then(|r| r.received.clone())
        .unwrap_or_default()
        .to_string();
    t.phase(&mut rec, "choose", Some(format!("node {new_id} at {pos}")));

    let Some(new) = s.nodes.iter().find(|n| n.id == new_id).cloned() else {
        return FailoverDone::Failed {
            new: None,
            reason: format!("candidate {new_id} is not in the shard's topology"),
            facts_bound: None,
            unrecorded: Some(old.id),
        };
    };
    let followers: Vec<Follower> = s
        .nodes
        .iter()
        .filter(|n| n.id != new_id && n.id != old.id && n.status == NodeStatus::Active)
        .map(|n| Follower {
            node: n.clone(),
            former_primary: false,
        })
        .collect();
    // The fence finishes before anything stops receiving from the old primary (see
    // `record_fence`).
    let started = Instant::now();
    let fenced = fence::fence_and_prove(
        &ctx.store,
        cfg.ssh.as_ref(),
        &old,
        fence_opts,
        step.pgx.as_ref(),
    )
    .await;
    // A primary that is only silent may be alive: it must be stopped (or read-only) before
    // its replicas are taken from it. Otherwise this attempt fails, and the shard waits for
    // the replicas to give it up (the probes ground) or for the retry.
    let unproven_silent =
        (basis == crate::ha::detect::Basis::Silent && !fenced.proven).then(|| {
            crate::ha::failover::StepError::transient(format!(
                "the old primary {} is silent but could not be stopped or set read-only ({}): \
                 not failed over on its silence alone",
                old.id, fenced.text
            ))
        });
    let r = match (
        record_fence(fenced, started.elapsed(), &mut rec, &mut t),
        unproven_silent,
    ) {
        (Ok(()), Some(e)) => {
            crate::ha::failover::ended(&mut rec, &e);
            Err(e)
        }
        (Ok(()), None) => {
            let sw = Switch {
                cluster: &s.cluster,
                new: &new,
                catch_up_pos: &pos,
                followers: &followers,
            };
            switch_to(&step, sw, &mut rec, &mut t).await
        }
        (Err(e), _) => Err(e),
    };
    match r {
        Ok(()) => {
            rec.old_primary_fate = Some("down, kept out until it returns".into());
            let degraded = rec.degraded();
            let total_ms = rec.total_ms;
            let record = ctx.keep(rec).await;
            let seed = ctx.seed(&new).await;
            FailoverDone::Promoted {
                old: old.id,
                new: new_id,
                record,
                promoted_at: pos,
                total_ms,
                degraded,
                seed,
            }
        }
        Err(e) => {
            let facts_bound = rec.facts_bound.then_some(facts);
            ctx.keep(rec).await;
            FailoverDone::Failed {
                new: Some(new_id),
                reason: e.reason,
                facts_bound,
                unrecorded: None,
            }
        }
    }
}

/// One planned switchover; the record is stored here, the monitor applies the rest.
pub(super) async fn switch_over(
    ctx: TaskCtx,
    s: ShardTopo,
    target: Option<i64>,
    reply: oneshot::Sender<Result<FailoverRecord>>,
) -> Done {
    let nodes: Vec<i64> = s.nodes.iter().map(|n| n.id).collect();
    let shard_id = s.shard_id;
    let result = switchover::run(&ctx.cfg, &ctx.shared, ctx.step_context(), &s, target).await;
    let (result, seed) = match result {
        Ok(rec) => {
            let promoted = (rec.outcome == Outcome::Promoted)
                .then_some(rec.new_primary)
                .flatten();
            let id = ctx.keep(rec.clone()).await;
            let stored = ctx.shared.failover(id).unwrap_or(rec);
            let seed = match promoted.and_then(|n| s.nodes.iter().find(|x| x.id == n)) {
                Some(n) => Some((n.id, ctx.seed(n).await)),
                None => None,
            };
            (Ok(stored), seed)
        }
        Err(e) => (Err(e), None),
    };
    Done::Switchover {
        shard_id,
        nodes,
        result: Box::new(result),
        seed,
        reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(shard_id: i64) -> impl FnOnce(String) -> Done + Send + 'static {
        move |why| Done::Failover {
            shard_id,
            outcome: FailoverDone::Failed {
                new: None,
                reason: why,
                facts_bound: None,
                unrecorded: Some(1),
            },
        }
    }

    fn reason(d: Done) -> (i64, String) {
        match d {
            Done::Failover {
                shard_id,
                outcome: FailoverDone::Failed { reason, .. },
            } => (shard_id, reason),
            Done::Failover {
                shard_id,
                outcome: FailoverDone::Refused { reason, .. },
            } => (shard_id, reason),
            _ => (0, String::new()),
        }
    }

    #[tokio::test]
    async fn every_task_reports_back_once_done_past_its_deadline_or_panicked() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut set = tokio::task::JoinSet::new();
        let ok = async {
            Done::Failover {
                shard_id: 1,
                outcome: FailoverDone::Refused {
                    old: 1,
                    reason: "fine".into(),
                    facts: String::new(),
                },
            }
        };
        spawn_bounded(&mut set, tx.clone(), Duration::from_secs(5), ok, lost(1));
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Done::Failover {
                shard_id: 2,
                outcome: FailoverDone::Refused {
                    old: 1,
                    reason: "never".into(),
                    facts: String::new(),
                },
            }
        };
        spawn_bounded(
            &mut set,
            tx.clone(),
            Duration::from_millis(50),
            slow,
            lost(2),
        );
        let boom = async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            Done::Failover {
                shard_id: 3,
                outcome: FailoverDone::Refused {
                    old: 1,
                    reason: "never".into(),
                    facts: String::new(),
                },
            }
        };
        spawn_bounded(&mut set, tx, Duration::from_secs(5), boom, lost(3));
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(reason(rx.recv().await.expect("a report")));
        }
        got.sort();
        assert_eq!(got[0], (1, "fine".to_string()));
        assert_eq!(got[1].0, 2);
        assert!(got[1].1.contains("deadline"), "{:?}", got[1]);
        assert_eq!(got[2].0, 3);
        assert!(got[2].1.contains("abnormally"), "{:?}", got[2]);
        while set.join_next().await.is_some() {}
        assert!(rx.try_recv().is_err(), "one report each");
    }
}
