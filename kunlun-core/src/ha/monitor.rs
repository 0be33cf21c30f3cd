//! The shard HA actor: every `check_shard_interval` it probes each storage node of the `rbr`
//! clusters (bounded concurrency), publishes health and events, fences stray writable nodes,
//! fails a confirmed-dead primary over, lets a returning old primary rejoin (or keeps it out),
//! restarts or repoints replicas whose replication stopped cleanly ([`super::upkeep`]), and
//! runs operator switchovers sent through its [`HaHandle`].
//!
//! Invariants: the actor owns its per-node and per-shard state and is the only one that acts on
//! storage nodes for HA, so a switchover never races an automatic failover; a shard fails over
//! at most once per anti-flapping window; only the recorded primary is left writable; a status
//! write that follows a slow step is conditional on the status it was decided from, so a node
//! a delete job marked `deleted` meanwhile is never brought back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kunlun_meta::model::{Cluster, HaMode, MemberState, NodeStatus, ShardNode};
use kunlun_meta::store::{repo, Store};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::choose::{choose, Choice};
use super::detect::{assess, in_flap_window, NodeRef, ShardFacts, Verdict};
use super::failover::{FailoverKind, FailoverRecord, Follower, Outcome, StepContext, Timeline};
use super::probe::{probe_node, probe_options, NodeProbe};
use super::retry::{Attempts, RetryDecision};
use super::state::{HaShared, NodeHealth, NodeState};
use super::{fence, promote, records, switchover, HaConfig};
use crate::error::{Error, Result};
use crate::storage::NodeAddr;

mod returning;

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
}

/// One shard as metadata describes it this round.
#[derive(Debug, Clone)]
pub(super) struct ShardTopo {
    pub cluster: Cluster,
    pub shard_id: i64,
    pub nodes: Vec<ShardNode>,
}

impl ShardTopo {
    pub(super) fn primary(&self) -> Option<&ShardNode> {
        self.nodes
            .iter()
            .find(|n| n.member_state == MemberState::Source && n.status == NodeStatus::Active)
    }
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
}

impl HaMonitor {
    /// A monitor and its handle; run it with [`HaMonitor::run`] or [`HaMonitor::spawn`].
    pub fn new(store: Store, cfg: HaConfig, cancel: CancellationToken) -> (HaMonitor, HaHandle) {
        let (tx, rx) = mpsc::channel(16);
        let shared = Arc::new(HaShared::default());
        let m = HaMonitor {
            store,
            cfg,
            shared: shared.clone(),
            nodes: HashMap::new(),
            shards: HashMap::new(),
            rx,
            cancel,
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

    /// The loop: a round each interval (a quarter of it while a primary is suspect), and
    /// switchover commands in between.
    pub async fn run(mut self) {
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Switchover { shard_id, target, reply }) => {
                        let r = self.switchover(shard_id, target).await;
                        let _ = reply.send(r);
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(next) => {
                    let suspect = match self.round().await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "HA round failed; retrying next interval");
                            false
                        }
                    };
                    let gap = if suspect { (self.cfg.interval / 4).max(Duration::from_millis(50)) } else { self.cfg.interval };
                    next = tokio::time::Instant::now() + gap;
                }
            }
        }
    }

    pub(super) async fn topology(&self) -> Result<Vec<ShardTopo>> {
        let (clusters, nodes) = self
            .store
            .read(async |tx| {
                let clusters = repo::clusters::list(tx).await?;
                let nodes = repo::nodes::list(tx, None).await?;
                Ok((clusters, nodes))
            })
            .await?;
        let mut out: Vec<ShardTopo> = Vec::new();
        for c in clusters.into_iter().filter(|c| c.ha_mode == HaMode::Rbr) {
            let mut by_shard: HashMap<i64, Vec<ShardNode>> = HashMap::new();
            for n in nodes
                .iter()
                .filter(|n| n.db_cluster_id == c.id && n.status != NodeStatus::Deleted)
            {
                by_shard.entry(n.shard_id).or_default().push(n.clone());
            }
            let mut ids: Vec<_> = by_shard.keys().copied().collect();
            ids.sort_unstable();
            for sid in ids {
                let nodes = by_shard.remove(&sid).unwrap_or_default();
                out.push(ShardTopo {
                    cluster: c.clone(),
                    shard_id: sid,
                    nodes,
                });
            }
        }
        Ok(out)
    }

    /// One round over every shard. Returns true while some primary is suspect.
    pub async fn round(&mut self) -> Result<bool> {
        let topo = self.topology().await?;
        let probes = self.probe_all(&topo).await;
        let present: HashSet<i64> = probes.keys().copied().collect();
        self.nodes.retain(|id, _| present.contains(id));
        self.shared.forget_missing(&present);
        let failures = probes.values().filter(|p| !p.reachable).count() as u64;
        self.shared.count_round(probes.len() as u64, failures);

        let mut suspect = false;
        for s in &topo {
            self.update_tracks(s, &probes);
            if let Err(e) = self.handle_shard(s, &probes).await {
                tracing::warn!(shard = s.shard_id, error = %e, "HA handling of shard failed");
            }
            if let Some(p) = s.primary() {
                suspect |= self.nodes.get(&p.id).is_some_and(|t| t.failures > 0);
            }
        }
        Ok(suspect)
    }

    async fn probe_all(&self, topo: &[ShardTopo]) -> HashMap<i64, NodeProbe> {
        let sem = Arc::new(Semaphore::new(self.cfg.probe_concurrency.max(1)));
        let opts = probe_options(self.cfg.interval, self.cfg.storage);
        let mut set = JoinSet::new();
        for n in topo.iter().flat_map(|s| s.nodes.iter()) {
            let (sem, addr, id) = (sem.clone(), NodeAddr::from(n), n.id);
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                (id, probe_node(&addr, opts).await)
            });
        }
        let mut out = HashMap::new();
        while let Some(r) = set.join_next().await {
            if let Ok((id, p)) = r {
                out.insert(id, p);
            }
        }
        out
    }

    fn update_tracks(&mut self, s: &ShardTopo, probes: &HashMap<i64, NodeProbe>) {
        let k = self.cfg.failures_to_dead.max(1);
        for n in &s.nodes {
            let Some(p) = probes.get(&n.id) else { continue };
            let t = self.nodes.entry(n.id).or_default();
            if p.reachable {
                t.failures = 0;
                t.first_failure = None;
                t.last_ok = Some(p.clone());
            } else {
                t.failures += 1;
                t.first_failure.get_or_insert_with(Instant::now);
            }
            let state = match t.failures {
                0 => NodeState::Up,
                f if f < k => NodeState::Suspect,
                _ => NodeState::Down,
            };
            if t.state != Some(state) {
                let what = match &p.error {
                    Some(e) if state != NodeState::Up => format!("node {} is {state:?}: {e}", n.id),
                    _ => format!("node {} is {state:?}", n.id),
                };
                self.shared
                    .event(s.cluster.id, s.shard_id, Some(n.id), what);
                t.state = Some(state);
            }
            self.shared.publish_health(NodeHealth {
                node_id: n.id,
                shard_id: s.shard_id,
                cluster_id: s.cluster.id,
                addr: format!("{}:{}", n.hostaddr, n.port),
                is_primary: n.member_state == MemberState::Source,
                state,
                consecutive_failures: t.failures,
                probed_at: Utc::now(),
                probe: p.clone(),
            });
        }
    }

    fn node_ref(&self, n: &ShardNode) -> NodeRef {
        NodeRef {
            id: n.id,
            host: n.hostaddr.clone(),
            port: n.port,
            master_priority: n.master_priority,
            no_switch: self.shared.node_no_switch(n.id),
        }
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
        let facts = ShardFacts {
            primary: &pref,
            primary_failures: track.map_or(0, |t| t.failures),
            primary_last_ok: track.and_then(|t| t.last_ok.as_ref()),
            replicas: replicas.iter().map(|(r, p)| (r, *p)).collect(),
        };
        match assess(&facts, self.cfg.failures_to_dead) {
            Verdict::Healthy => {
                let st = self.shards.entry(s.shard_id).or_default();
                let failed_before = std::mem::take(&mut st.attempts).failed > 0;
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
            Verdict::PrimaryDead { view } => {
                let now = Instant::now();
                let st = self.shards.entry(s.shard_id).or_default();
                if let Some(until) = self.shared.no_switch_until(s.shard_id, now) {
                    let why = format!("no-switch set for {:?} more", until - now);
                    self.refuse_once(s, primary.id, why, true).await;
                    return Ok(());
                }
                if in_flap_window(st.last_failover, now, self.cfg.flap_window) {
                    let why = format!(
                        "anti-flapping: last failover less than {:?} ago",
                        self.cfg.flap_window
                    );
                    self.refuse_once(s, primary.id, why, true).await;
                    return Ok(());
                }
                let attempts = st.attempts;
                match self.cfg.retry.decide(&attempts, now) {
                    RetryDecision::Attempt => {}
                    RetryDecision::WaitUntil(_) => return Ok(()),
                    RetryDecision::GiveUp => {
                        self.shared.set_given_up(s.shard_id, true);
                        let why = format!(
                            "failover failed {} times; retries used up, shard stays alarmed \
                             until an operator acts (switchover) or the primary returns",
                            attempts.failed
                        );
                        self.refuse_once(s, primary.id, why, true).await;
                        return Ok(());
                    }
                }
                if attempts.failed > 0 {
                    self.shared.count_retry();
                }
                let detected = track.and_then(|t| t.first_failure).unwrap_or(now);
                self.fail_over(s, primary, view, detected).await;
                Ok(())
            }
        }
    }

    /// Stores a finished record (memory-only when the store cannot take it); returns its id.
    async fn keep(&self, mut rec: FailoverRecord) -> u64 {
        match records::insert(&self.store, &rec).await {
            Ok(id) => rec.id = id,
            Err(e) => {
                tracing::warn!(shard = rec.shard_id, error = %e, "failover record kept in memory only");
                rec.id = 0;
            }
        }
        self.shared.record(rec)
    }

    /// Records a refusal (and raises the alarm) once per distinct reason.
    async fn refuse_once(&mut self, s: &ShardTopo, old: i64, reason: String, alarm: bool) {
        let st = self.shards.entry(s.shard_id).or_default();
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
            s.cluster.id,
            s.shard_id,
            Some(old),
            format!("no failover: {reason}"),
        );
        if alarm {
            let mut rec =
                FailoverRecord::new(FailoverKind::Automatic, s.cluster.id, s.shard_id, old);
            rec.reason = Some(reason.clone());
            rec.outcome = Outcome::Refused;
            self.keep(rec).await;
            self.shared.set_alarm(s.shard_id, Some(reason));
        }
    }

    async fn fail_over(
        &mut self,
        s: &ShardTopo,
        old: &ShardNode,
        mut view: super::ShardView,
        detected: Instant,
    ) {
        let mut rec =
            FailoverRecord::new(FailoverKind::Automatic, s.cluster.id, s.shard_id, old.id);
        let mut t = Timeline::starting_at(detected);
        t.phase(
            &mut rec,
            "detect",
            Some(format!(
                "{} failed probes, confirmed by replicas",
                self.cfg.failures_to_dead
            )),
        );

        for r in &mut view.replicas {
            r.no_switch |= self.shared.node_no_switch(r.node_id);
        }
        // The choice needs only the view; the fence runs alongside the steps that follow it
        // (see `switch_to`), and before a refusal is recorded.
        let choice = choose(&view, self.shared.loss_policy(s.shard_id));
        let fence_opts =
            fence::after_failed_probes(probe_options(self.cfg.interval, self.cfg.storage));
        let (new_id, proven, loss) = match choice {
            Choice::Refuse { reason } => {
                let fence =
                    fence::fence_old_primary(&self.store, self.cfg.ssh.as_ref(), old, fence_opts)
                        .await;
                rec.fence = Some(fence.clone());
                t.phase(&mut rec, "fence", Some(fence));
                t.phase(&mut rec, "choose", Some(reason.clone()));
                self.refuse_once(s, old.id, reason, true).await;
                return;
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

        let Some(new) = s.nodes.iter().find(|n| n.id == new_id) else {
            return;
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
        let ctx = self.step_context();
        let fence: super::failover::FenceTask<'_> = Box::pin(fence::fence_old_primary(
            &self.store,
            self.cfg.ssh.as_ref(),
            old,
            fence_opts,
        ));
        let r = super::failover::switch_to(
            &ctx,
            &s.cluster,
            new,
            &pos,
            &followers,
            Some(fence),
            &mut rec,
            &mut t,
        )
        .await;
        let st = self.shards.entry(s.shard_id).or_default();
        match r {
            Ok(()) => {
                st.last_failover = Some(Instant::now());
                st.refused = None;
                st.attempts = Attempts::default();
                rec.old_primary_fate = Some("down, kept out until it returns".into());
                self.shared.set_alarm(s.shard_id, None);
                self.shared.set_given_up(s.shard_id, false);
                let what = format!(
                    "failed over from node {} to node {new_id} in {} ms",
                    old.id, rec.total_ms
                );
                let id = self.keep(rec).await;
                self.shards
                    .entry(s.shard_id)
                    .or_default()
                    .rejoining
                    .push(Rejoining {
                        old: old.id,
                        record: id,
                        promoted_at: pos,
                    });
                self.shared
                    .event(s.cluster.id, s.shard_id, Some(new_id), what);
                self.nodes.remove(&old.id);
                self.seed_new_primary(new).await;
            }
            Err(e) => {
                st.attempts.failed_at(Instant::now());
                let n = st.attempts.failed;
                self.shared.set_alarm(
                    s.shard_id,
                    Some(format!("failover failed (attempt {n}): {e}")),
                );
                self.shared.event(
                    s.cluster.id,
                    s.shard_id,
                    Some(new_id),
                    format!("failover failed (attempt {n}): {e}"),
                );
                self.keep(rec).await;
            }
        }
    }

    /// Probes a just-promoted primary at once, so the semi-sync proof of its next failure
    /// rests on a probe taken while it was primary (a replica may report the master side off).
    async fn seed_new_primary(&mut self, n: &ShardNode) {
        let opts = probe_options(self.cfg.interval, self.cfg.storage);
        let p = probe_node(&NodeAddr::from(n), opts).await;
        let t = self.nodes.entry(n.id).or_default();
        t.failures = 0;
        t.first_failure = None;
        t.last_ok = p.reachable.then_some(p);
    }

    pub(super) fn step_context(&self) -> StepContext {
        StepContext {
            store: self.store.clone(),
            storage: self.cfg.storage,
            catch_up_limit: self.cfg.catch_up_limit,
            xa: self.cfg.xa.clone(),
            cancel: self.cancel.clone(),
            before_write: self.cfg.before_write.clone(),
        }
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

    async fn switchover(&mut self, shard_id: i64, target: Option<i64>) -> Result<FailoverRecord> {
        let topo = self.topology().await?;
        let s = topo
            .into_iter()
            .find(|s| s.shard_id == shard_id)
            .ok_or_else(|| Error::NotFound {
                what: "rbr shard",
                id: shard_id.to_string(),
            })?;
        let rec = switchover::run(self, &s, target).await?;
        let s_nodes = s.nodes.clone();
        let ok = rec.outcome == Outcome::Promoted;
        let id = self.keep(rec).await;
        if ok {
            self.shards.entry(shard_id).or_default().last_failover = Some(Instant::now());
            self.nodes.clear();
            let new = self.shared.failover(id).and_then(|r| r.new_primary);
            if let Some(n) = new.and_then(|n| s_nodes.iter().find(|x| x.id == n).cloned()) {
                self.seed_new_primary(&n).await;
            }
        }
        self.shared
            .failover(id)
            .ok_or_else(|| Error::Internal("switchover record vanished".into()))
    }

    pub(super) fn cfg(&self) -> &HaConfig {
        &self.cfg
    }

    pub(super) fn shared_state(&self) -> &HaShared {
        &self.shared
    }
}
