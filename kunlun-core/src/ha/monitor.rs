//! The shard HA actor: every `check_shard_interval` it probes each storage node of the `rbr`
//! clusters (bounded concurrency), publishes health and events, fences stray writable nodes,
//! fails a confirmed-dead primary over, lets a returning old primary rejoin (or keeps it out),
//! restarts or repoints replicas whose replication stopped cleanly ([`super::upkeep`]), and
//! runs operator switchovers sent through its [`HaHandle`].
//!
//! A round (probe, track, decide) and the urgent rounds after a primary's watch session
//! ended are in [`round`]. Each shard's failover or switchover runs in its own bounded task
//! ([`task`]); meanwhile the rounds go on probing every shard and deciding for the others,
//! and skip the busy one until its task reports back.
//!
//! Invariants: the actor owns its per-node and per-shard state and is the only one that decides
//! for storage nodes for HA; a shard has at most one failover or switchover task, so a
//! switchover never races an automatic failover of it; a shard fails over
//! at most once per anti-flapping window; only the recorded primary is left writable; a status
//! write that follows a slow step is conditional on the status it was decided from, so a node
//! a delete job marked `deleted` meanwhile is never brought back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_meta::model::{NodeStatus, ShardNode};
use kunlun_meta::store::Store;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::detect::{assess, NodeRef, ShardFacts, Verdict};
use super::failover::{FailoverKind, FailoverRecord, StepContext};
use super::gate::{gate, Gate, GateFacts};
use super::probe::NodeProbe;
use super::retry::Attempts;
use super::state::{HaShared, NodeState};
use super::watch::{WatchEvent, Watches};
use super::{promote, HaConfig, ShardTopo};
use crate::error::{Error, Result};
use crate::storage::NodeAddr;

mod returning;
mod round;
mod task;

pub(super) use task::TaskCtx;
use task::{Done, FailoverDone, FailoverJob};

/// Longest shutdown waits for running shard tasks before it drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Gap between two probes of a shard whose primary's watch session ended, while its
/// replicas have not yet confirmed (they notice a closed connection within milliseconds).
const URGENT_GAP: Duration = Duration::from_millis(20);

/// How long a shard stays on the urgent path after its primary's watch session ended; then
/// the rounds (and the probe-based rules) take over.
const URGENT_FOR: Duration = Duration::from_secs(3);

/// A receiver's progress as two probes compare it (see [`super::probe::Channel::progress`]).
type Progress = Vec<(String, u64, u64, Option<String>)>;

/// Handle to a running monitor: read what it publishes, set controls, ask for a switchover.
#[derive(Debug, Clone)]
pub struct HaHandle {
    shared: Arc<HaShared>,
    tx: mpsc::Sender<Command>,
}

pub(super) enum Command {
    Switchover {
        shard_id: i64,
        target: Option<i64>,
        reply: oneshot::Sender<Result<FailoverRecord>>,
    },
}

impl HaHandle {
    /// Published health, events, records and controls.
    pub fn shared(&self) -> &HaShared {
        &self.shared
    }

    /// Planned switchover of `shard_id` to `target` (or the best replica); waits for it.
    pub async fn switchover(&self, shard_id: i64, target: Option<i64>) -> Result<FailoverRecord> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Switchover {
                shard_id,
                target,
                reply,
            })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// Per-node memory of the actor.
#[derive(Debug, Default)]
struct Track {
    failures: u32,
    first_failure: Option<Instant>,
    last_ok: Option<NodeProbe>,
    state: Option<NodeState>,
    /// The last upkeep condition reported for this replica, so it is reported once.
    upkeep: Option<String>,
    /// When the manager's watch session to this node ended, if it did since its last
    /// successful probe.
    watch_lost: Option<Instant>,
    /// This node's receivers' progress and the first probe that saw it so.
    progress: Option<(Progress, Instant)>,
}

/// A failed-over old primary waiting to come back.
#[derive(Debug, Clone)]
struct Rejoining {
    old: i64,
    record: u64,
    /// The new primary's position when it was promoted: anything beyond it on the old
    /// primary is errant.
    promoted_at: String,
}

/// Per-shard memory of the actor.
#[derive(Debug, Default)]
struct ShardTrack {
    last_failover: Option<Instant>,
    /// The reason of the last refusal, so one refusal episode is recorded once.
    refused: Option<String>,
    rejoining: Vec<Rejoining>,
    /// Failed failover attempts of the current episode (see [`super::retry`]).
    attempts: Attempts,
    /// The facts the last attempt's choice refused on: while they stay the same no new
    /// attempt runs (it would refuse again, and fence again).
    refused_facts: Option<String>,
}

/// The actor; see the module doc.
#[derive(Debug)]
pub struct HaMonitor {
    store: Store,
    cfg: HaConfig,
    shared: Arc<HaShared>,
    nodes: HashMap<i64, Track>,
    shards: HashMap<i64, ShardTrack>,
    rx: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    /// Shards whose failover or switchover task runs, with what it is.
    busy: HashMap<i64, &'static str>,
    /// The cluster of each shard as the last round saw it (or as it was when its task
    /// started): for the events of a task's report and the reads of a scoped round.
    cluster_of: HashMap<i64, i64>,
    tasks: JoinSet<()>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// One idle session per answering primary ([`super::watch`]).
    watches: Watches,
    watch_rx: mpsc::UnboundedReceiver<WatchEvent>,
    /// Shards probed every [`URGENT_GAP`] since their primary's watch session ended.
    urgent: HashMap<i64, Instant>,
    /// Each shard's recorded primary as the last round saw it.
    topology_cache: HashMap<i64, i64>,
    /// Each node's probe session, kept open between probes, with the address it was made to.
    sessions: HashMap<i64, (NodeAddr, crate::storage::StorageConn)>,
}

impl HaMonitor {
    /// A monitor and its handle; run it with [`HaMonitor::run`] or [`HaMonitor::spawn`].
    pub fn new(store: Store, cfg: HaConfig, cancel: CancellationToken) -> (HaMonitor, HaHandle) {
        let (tx, rx) = mpsc::channel(16);
        let shared = Arc::new(HaShared::default());
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (watch_tx, watch_rx) = mpsc::unbounded_channel();
        let watches = Watches::new(watch_tx, cancel.child_token());
        let m = HaMonitor {
            store,
            cfg,
            shared: shared.clone(),
            nodes: HashMap::new(),
            shards: HashMap::new(),
            rx,
            cancel,
            busy: HashMap::new(),
            cluster_of: HashMap::new(),
            tasks: JoinSet::new(),
            done_tx,
            done_rx,
            watches,
            watch_rx,
            urgent: HashMap::new(),
            topology_cache: HashMap::new(),
            sessions: HashMap::new(),
        };
        (m, HaHandle { shared, tx })
    }

    /// Starts the actor on `tasks`; it stops when `cancel` fires.
    pub fn spawn(
        store: Store,
        cfg: HaConfig,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> HaHandle {
        let (m, h) = HaMonitor::new(store, cfg, cancel);
        tasks.spawn(m.run());
        h
    }

    /// The loop: a round each interval (a quarter of it while a primary is suspect), counted
    /// from the start of the previous round (a round that takes longer is followed at once:
    /// rounds never overlap); switchover commands, the reports of shard tasks and the watches'
    /// reports in between. A watch report probes its shard at once, then every
    /// [`URGENT_GAP`] until the primary answers, is failed over, or [`URGENT_FOR`] passed.
    pub async fn run(mut self) {
        let mut next = tokio::time::Instant::now();
        let mut urgent_next: Option<tokio::time::Instant> = None;
        loop {
            let urgent_at = urgent_next.unwrap_or_else(|| next + Duration::from_secs(3600));
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                done = self.done_rx.recv() => {
                    if let Some(d) = done {
                        self.apply(d).await;
                    }
                }
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Switchover { shard_id, target, reply }) => {
                        self.start_switchover(shard_id, target, reply).await;
                    }
                    None => break,
                },
                ev = self.watch_rx.recv() => {
                    if let Some(ev) = ev {
                        self.watch_ended(ev);
                        urgent_next = Some(tokio::time::Instant::now());
                    }
                }
                _ = tokio::time::sleep_until(urgent_at), if urgent_next.is_some() => {
                    urgent_next = self.urgent_round().await.then(|| tokio::time::Instant::now() + URGENT_GAP);
                }
                _ = tokio::time::sleep_until(next) => {
                    let started = tokio::time::Instant::now();
                    let suspect = match self.round().await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "HA round failed; retrying next interval");
                            false
                        }
                    };
                    let gap = if suspect { (self.cfg.interval / 4).max(Duration::from_millis(50)) } else { self.cfg.interval };
                    next = (started + gap).max(tokio::time::Instant::now());
                }
            }
        }
        // A failover in flight finishes its step (they watch the cancellation) rather than
        // being cut mid-way, within a grace period.
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, drain).await;
    }

    fn task_ctx(&self) -> TaskCtx {
        TaskCtx {
            store: self.store.clone(),
            cfg: self.cfg.clone(),
            shared: self.shared.clone(),
            cancel: self.cancel.clone(),
        }
    }

    /// Starts a switchover task for a shard that has none running.
    async fn start_switchover(
        &mut self,
        shard_id: i64,
        target: Option<i64>,
        reply: oneshot::Sender<Result<FailoverRecord>>,
    ) {
        if let Some(what) = self.busy.get(&shard_id) {
            let _ = reply.send(Err(Error::Conflict(format!(
                "shard {shard_id}: a {what} is running"
            ))));
            return;
        }
        let s = match self.topology().await {
            Ok(topo) => topo.into_iter().find(|s| s.shard_id == shard_id),
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let Some(s) = s else {
            let _ = reply.send(Err(Error::NotFound {
                what: "rbr shard",
                id: shard_id.to_string(),
            }));
            return;
        };
        self.busy.insert(shard_id, "switchover");
        self.publish_busy();
        let ctx = self.task_ctx();
        let deadline = self.cfg.attempt_deadline;
        // The reply travels inside the task's report; if the task is lost, the caller's
        // receiver sees it dropped (an error), and the shard is freed by the report below.
        let (tx_reply, rx_reply) = oneshot::channel();
        tokio::spawn(async move {
            let r = rx_reply.await.unwrap_or(Err(Error::Internal(
                "the switchover's task ended without an answer".into(),
            )));
            let _ = reply.send(r);
        });
        task::spawn_bounded(
            &mut self.tasks,
            self.done_tx.clone(),
            deadline,
            task::switch_over(ctx, s, target, tx_reply),
            move |why| Done::Failover {
                shard_id,
                outcome: FailoverDone::Failed {
                    new: None,
                    reason: format!("switchover: {why}"),
                    facts_bound: None,
                    unrecorded: None,
                },
            },
        );
    }

    /// Applies a shard task's report to the monitor's state.
    async fn apply(&mut self, done: Done) {
        match done {
            Done::Failover { shard_id, outcome } => {
                let was = self.busy.remove(&shard_id);
                self.publish_busy();
                if was == Some("switchover") {
                    // A lost switchover task: nothing to apply but the alarm.
                    if let FailoverDone::Failed { reason, .. } = outcome {
                        self.shared.set_alarm(shard_id, Some(reason));
                    }
                    return;
                }
                self.failover_done(shard_id, outcome).await;
            }
            Done::Switchover {
                shard_id,
                nodes,
                result,
                seed,
                reply,
            } => {
                self.busy.remove(&shard_id);
                self.publish_busy();
                if let Ok(rec) = result.as_ref() {
                    if rec.outcome == super::Outcome::Promoted {
                        self.shards.entry(shard_id).or_default().last_failover =
                            Some(Instant::now());
                        for n in &nodes {
                            self.nodes.remove(n);
                        }
                        if let Some((id, p)) = seed {
                            self.seed_track(id, p);
                        }
                        self.shared.set_alarm(shard_id, rec.degraded());
                    }
                }
                let _ = reply.send(*result);
            }
        }
    }

    /// Tells the instance keeper which shards' nodes are a running task's alone.
    fn publish_busy(&self) {
        self.shared.set_busy_shards(self.busy.keys().copied());
    }

    /// Tells the instance keeper which failed-over old primaries HA waits for.
    fn publish_rejoining(&self) {
        self.shared.set_rejoining(
            self.shards
                .values()
                .flat_map(|s| s.rejoining.iter().map(|r| r.old)),
        );
    }

    async fn handle_shard(
        &mut self,
        s: &ShardTopo,
        probes: &HashMap<i64, NodeProbe>,
    ) -> Result<()> {
        let Some(primary) = s.primary() else {
            return Ok(());
        };
        self.fence_strays(s, primary, probes).await;
        self.rejoin_returning(s, primary, probes).await?;
        self.tend_replicas(s, primary, probes).await;

        let pref = self.node_ref(primary);
        let replicas: Vec<(NodeRef, &NodeProbe)> = s
            .nodes
            .iter()
            .filter(|n| n.id != primary.id && n.status == NodeStatus::Active)
            .filter_map(|n| probes.get(&n.id).map(|p| (self.node_ref(n), p)))
            .collect();
        let track = self.nodes.get(&primary.id);
        let unchanged_for = replicas
            .iter()
            .filter_map(|(r, p)| {
                let (_, since) = self.nodes.get(&r.id)?.progress.as_ref()?;
                let (sent, _) = p.channels_read?;
                Some((r.id, sent.saturating_duration_since(*since)))
            })
            .collect();
        let facts = ShardFacts {
            primary: &pref,
            primary_failures: track.map_or(0, |t| t.failures),
            primary_last_ok: track.and_then(|t| t.last_ok.as_ref()),
            primary_crashed: track.is_some_and(|t| t.watch_lost.is_some())
                && probes.get(&primary.id).is_some_and(|p| p.refused),
            // A silent primary the manager cannot stop over SSH may be alive: its replicas'
            // silence alone does not let a failover go on unfenced (the probes ground, after
            // the replicas gave up on it, still does, as before).
            silence_counts: self.cfg.ssh.is_some(),
            replicas: replicas.iter().map(|(r, p)| (r, *p)).collect(),
            unchanged_for,
        };
        match assess(&facts, self.cfg.failures_to_dead) {
            Verdict::Healthy if probes.get(&primary.id).is_some_and(|p| p.read_only) => {
                // A primary left read-only (a switchover or failover that failed after its
                // promotion step) means the shard takes no writes: say so until it is fixed.
                self.shared.set_alarm(
                    s.shard_id,
                    Some(format!(
                        "the recorded primary node {} is read-only: the shard takes no writes \
                         (an interrupted switchover or failover?); switch over to a replica \
                         or set read_only=OFF on it",
                        primary.id
                    )),
                );
                Ok(())
            }
            Verdict::Healthy => {
                self.shared.set_declined(s.shard_id, false);
                let st = self.shards.entry(s.shard_id).or_default();
                let failed_before = std::mem::take(&mut st.attempts).failed > 0;
                st.refused_facts = None;
                if self
                    .shared
                    .alarm(s.shard_id)
                    .is_some_and(|a| a.starts_with("the recorded primary node"))
                {
                    self.shared.set_alarm(s.shard_id, None);
                }
                if st.refused.take().is_some() || failed_before {
                    self.shared.set_alarm(s.shard_id, None);
                    self.shared.set_given_up(s.shard_id, false);
                }
                Ok(())
            }
            Verdict::Suspect { .. } => Ok(()),
            Verdict::NotConfirmed { reason } => {
                self.refuse_once(
                    s,
                    primary.id,
                    format!("primary unreachable from the manager only: {reason}"),
                    false,
                )
                .await;
                Ok(())
            }
            Verdict::PrimaryDead { view, basis } => {
                let now = Instant::now();
                let mut view = view;
                for r in &mut view.replicas {
                    r.no_switch |= self.shared.node_no_switch(r.node_id);
                }
                let facts = view.fingerprint();
                let key = task::refusal_key(&facts, self.shared.loss_policy(s.shard_id));
                let no_switch_until = self.shared.no_switch_until(s.shard_id, now);
                let st = self.shards.entry(s.shard_id).or_default();
                let decision = gate(&GateFacts {
                    now,
                    no_switch_until,
                    last_failover: st.last_failover,
                    flap_window: self.cfg.flap_window,
                    attempts: &st.attempts,
                    retry: &self.cfg.retry,
                    facts: &facts,
                    refusal_key: &key,
                    refused_on: st.refused_facts.as_deref(),
                });
                match decision {
                    Gate::Proceed { retry } => {
                        if retry {
                            self.shared.count_retry();
                        }
                    }
                    Gate::Wait => return Ok(()),
                    Gate::Refuse { reason, give_up } => {
                        if give_up {
                            self.shared.set_given_up(s.shard_id, true);
                        }
                        self.refuse_once(s, primary.id, reason, true).await;
                        return Ok(());
                    }
                }
                let detected = track.and_then(|t| t.first_failure).unwrap_or(now);
                self.start_failover(FailoverJob {
                    shard: s.clone(),
                    old: primary.clone(),
                    view,
                    detected,
                    basis,
                });
                Ok(())
            }
        }
    }

    /// Records a refusal (and raises the alarm) once per distinct reason.
    async fn refuse_once(&mut self, s: &ShardTopo, old: i64, reason: String, alarm: bool) {
        self.refuse_once_in(s.cluster.id, s.shard_id, old, reason, alarm)
            .await;
    }

    /// [`Self::refuse_once`] by ids.
    async fn refuse_once_in(
        &mut self,
        cluster_id: i64,
        shard_id: i64,
        old: i64,
        reason: String,
        alarm: bool,
    ) {
        if alarm {
            // A dead primary HA will not fail over: the instance keeper may start it again.
            self.shared.set_declined(shard_id, true);
        }
        let st = self.shards.entry(shard_id).or_default();
        // Durations in the text would make every round look new.
        let key: String = reason
            .chars()
            .filter(|c| !c.is_ascii_digit() && *c != '.')
            .collect();
        if st.refused.as_deref() == Some(key.as_str()) {
            return;
        }
        st.refused = Some(key);
        self.shared.event(
            cluster_id,
            shard_id,
            Some(old),
            format!("no failover: {reason}"),
        );
        if alarm {
            let mut rec = FailoverRecord::new(FailoverKind::Automatic, cluster_id, shard_id, old);
            rec.reason = Some(reason.clone());
            rec.outcome = super::Outcome::Refused;
            task::keep(&self.store, &self.shared, rec).await;
            self.shared.set_alarm(shard_id, Some(reason));
        }
    }

    /// Marks the shard busy and starts its failover task.
    fn start_failover(&mut self, job: FailoverJob) {
        let shard_id = job.shard.shard_id;
        let old = job.old.id;
        self.busy.insert(shard_id, "failover");
        self.publish_busy();
        self.cluster_of.insert(shard_id, job.shard.cluster.id);
        self.shared.event(
            job.shard.cluster.id,
            shard_id,
            Some(old),
            format!("failover started: primary {old} is down"),
        );
        let ctx = self.task_ctx();
        task::spawn_bounded(
            &mut self.tasks,
            self.done_tx.clone(),
            self.cfg.attempt_deadline,
            async move {
                let outcome = task::fail_over(ctx, job).await;
                Done::Failover { shard_id, outcome }
            },
            move |why| Done::Failover {
                shard_id,
                outcome: FailoverDone::Failed {
                    new: None,
                    reason: why,
                    facts_bound: None,
                    unrecorded: Some(old),
                },
            },
        );
    }

    /// Applies the end of a failover attempt to the shard's state.
    async fn failover_done(&mut self, shard_id: i64, outcome: FailoverDone) {
        let cluster_id = self.cluster_of.get(&shard_id).copied().unwrap_or_default();
        match outcome {
            FailoverDone::Refused { old, reason, facts } => {
                self.shards.entry(shard_id).or_default().refused_facts = Some(facts);
                self.refuse_once_in(cluster_id, shard_id, old, reason, true)
                    .await;
            }
            FailoverDone::Promoted {
                old,
                new,
                record,
                promoted_at,
                total_ms,
                degraded,
                seed,
            } => {
                let st = self.shards.entry(shard_id).or_default();
                st.last_failover = Some(Instant::now());
                st.refused = None;
                st.refused_facts = None;
                st.attempts = Attempts::default();
                st.rejoining.push(Rejoining {
                    old,
                    record,
                    promoted_at,
                });
                self.shared.set_given_up(shard_id, false);
                self.shared.set_declined(shard_id, false);
                self.publish_rejoining();
                let what = match &degraded {
                    None => format!("failed over from node {old} to node {new} in {total_ms} ms"),
                    Some(d) => format!(
                        "failed over from node {old} to node {new} in {total_ms} ms, but: {d}"
                    ),
                };
                self.shared.set_alarm(
                    shard_id,
                    degraded.map(|d| format!("failover to node {new} promoted, but: {d}")),
                );
                self.shared.event(cluster_id, shard_id, Some(new), what);
                self.nodes.remove(&old);
                self.seed_track(new, seed);
            }
            FailoverDone::Failed {
                new,
                reason,
                facts_bound,
                unrecorded,
            } => {
                if let Some(old) = unrecorded {
                    let mut rec =
                        FailoverRecord::new(FailoverKind::Automatic, cluster_id, shard_id, old);
                    rec.outcome = super::Outcome::Failed;
                    rec.new_primary = None;
                    rec.reason = Some(reason.clone());
                    task::keep(&self.store, &self.shared, rec).await;
                }
                let st = self.shards.entry(shard_id).or_default();
                let now = Instant::now();
                match facts_bound {
                    Some(facts) => st.attempts.failed_on(now, facts, reason.clone()),
                    None => st.attempts.failed_at(now),
                }
                let n = st.attempts.failed;
                let what = format!("failover failed (attempt {n}): {reason}");
                self.shared.set_alarm(shard_id, Some(what.clone()));
                self.shared.event(cluster_id, shard_id, new, what);
            }
        }
    }

    pub(super) fn step_context(&self) -> StepContext {
        self.task_ctx().step_context()
    }

    /// Only the recorded primary may be writable: any other reachable node with
    /// `read_only=OFF` (an old primary coming back) is set read-only at once.
    async fn fence_strays(
        &self,
        s: &ShardTopo,
        primary: &ShardNode,
        probes: &HashMap<i64, NodeProbe>,
    ) {
        for n in s.nodes.iter().filter(|n| n.id != primary.id) {
            if probes
                .get(&n.id)
                .is_some_and(|p| p.reachable && !p.read_only)
            {
                let what = promote::fence_read_only(&NodeAddr::from(n), self.cfg.storage).await;
                self.shared.event(
                    s.cluster.id,
                    s.shard_id,
                    Some(n.id),
                    format!("writable non-primary fenced: {what}"),
                );
            }
        }
    }
}
