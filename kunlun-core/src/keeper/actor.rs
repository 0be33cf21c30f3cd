//! The keeper's loop: a snapshot of metadata, one bounded check per machine, the decisions of
//! [`super::decide`], restarts in their own tasks, and what it publishes.
//!
//! Invariant: the actor owns its per-node memory ([`Track`], what it announced) and is the only
//! writer of [`KeeperShared`]; restarts report back through its task set and only the actor
//! applies them; a node has at most one restart in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kunlun_meta::model::{
    Cluster, ClusterPolicy, CompNode, HaMode, Job, Machine, MachineType, MemberState, NodeStats,
    NodeStatus, ShardNode,
};
use kunlun_meta::store::repo::{self, dirs};
use kunlun_meta::store::Store;
use kunlun_provision::placement::InstanceKind;
use kunlun_provision::recipe::{self as recipes, InstanceSpec, InstanceState, StateCheck};
use kunlun_provision::{SshExecutor, SshOptions};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::decide::{self, Next, StorageFacts, Tend, Track};
use super::state::{CrashLoop, KeeperEvent, KeeperShared, NodeKey, NodeKind, NodeRestarts};
use super::KeeperConfig;
use crate::fleet::Provisioner;
use crate::ha::HaHandle;
use crate::instances::control::{self, ControlReport, Node};

/// How the keeper finds HA's monitor of its term (`None` while it does not run).
pub(crate) type HaLookup = Arc<dyn Fn() -> Option<HaHandle> + Send + Sync>;

/// Deadline of the round's metadata snapshot.
const STORE_DEADLINE: Duration = Duration::from_secs(10);
/// Longest one restart may take (the recipe's steps have their own deadlines; this bounds
/// the whole, row reads and replication wait included).
const RESTART_DEADLINE: Duration = Duration::from_secs(300);
/// Deadline of reading a log tail.
const LOG_DEADLINE: Duration = Duration::from_secs(10);
/// Machines checked at once.
const CHECKS_AT_ONCE: usize = 16;

/// Runs the keeper until `cancel` fires; restarts in flight are aborted then (a start is
/// idempotent: the next term's keeper finds the instance as it was left).
pub(crate) async fn run(
    store: Store,
    prov: Provisioner,
    cfg: KeeperConfig,
    ha: HaLookup,
    shared: Arc<KeeperShared>,
    cancel: CancellationToken,
) {
    shared.set_settings(
        cfg.interval.as_secs_f64(),
        cfg.max_restarts,
        cfg.window.as_secs(),
    );
    // Its own pool: checks never wait behind a job's long SSH sessions.
    let ex = SshExecutor::new(SshOptions {
        connect_timeout: cfg.check_timeout,
        max_connections_per_host: 2,
        keepalive_interval: Duration::from_secs(5),
        idle_timeout: (cfg.interval * 3).max(Duration::from_secs(30)),
        ..SshOptions::default()
    });
    let mut k = Keeper {
        store,
        permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
        prov,
        ex,
        cfg,
        ha,
        shared,
        tracks: HashMap::new(),
        said: HashMap::new(),
        machine_said: HashMap::new(),
        running: JoinSet::new(),
        in_flight: HashMap::new(),
    };
    tracing::info!(interval = ?k.cfg.interval, max_restarts = k.cfg.max_restarts,
        window = ?k.cfg.window, "instance keeper started");
    let mut tick = tokio::time::interval(k.cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(done) = k.running.join_next_with_id(), if !k.running.is_empty() => {
                k.finished(done);
            }
            _ = tick.tick() => {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = k.round() => {}
                }
            }
        }
    }
    k.running.shutdown().await;
}

/// What one round reads from metadata, in one transaction.
struct Snapshot {
    clusters: HashMap<i64, Cluster>,
    policies: HashMap<i64, ClusterPolicy>,
    storage: Vec<ShardNode>,
    compute: Vec<CompNode>,
    machines: Vec<Machine>,
    storage_dirs: HashMap<i64, String>,
    compute_dirs: HashMap<i64, String>,
    /// Unfinished jobs (their requests say which cluster they change).
    jobs: Vec<Job>,
}

impl Snapshot {
    async fn read(store: &Store) -> kunlun_meta::Result<Snapshot> {
        store
            .read(async |tx| {
                let clusters = repo::clusters::list(tx).await?;
                let policies = repo::policy::list_set(tx).await?;
                let storage = repo::nodes::list(tx, None).await?;
                let compute = repo::comps::list(tx, None).await?;
                let machines = repo::machines::list(tx).await?;
                let ids: Vec<i64> = storage.iter().map(|n| n.id).collect();
                let storage_dirs = dirs::get_many(tx, dirs::NodeKind::Storage, &ids).await?;
                let ids: Vec<i64> = compute.iter().map(|n| n.id).collect();
                let compute_dirs = dirs::get_many(tx, dirs::NodeKind::Compute, &ids).await?;
                let jobs = repo::jobs::list_unfinished(tx).await?;
                Ok(Snapshot {
                    clusters: clusters.into_iter().map(|c| (c.id, c)).collect(),
                    policies,
                    storage,
                    compute,
                    machines,
                    storage_dirs,
                    compute_dirs,
                    jobs,
                })
            })
            .await
    }

    fn machine(&self, host: &str, ty: MachineType) -> Option<&Machine> {
        self.machines
            .iter()
            .find(|m| m.hostaddr == host && m.machine_type == ty)
    }
}

/// One instance checked this round.
struct Cand {
    key: NodeKey,
    node: Node,
    cluster: Cluster,
    machine: Machine,
    spec: InstanceSpec,
}

impl Cand {
    fn addr(&self) -> String {
        format!("{}:{}", self.spec.bind_address, self.spec.port)
    }
    fn shard_id(&self) -> Option<i64> {
        match &self.node {
            Node::Storage(n) => Some(n.shard_id),
            Node::Compute(_) => None,
        }
    }
    fn name(&self) -> String {
        let kind = match self.key.0 {
            NodeKind::Storage => "storage",
            NodeKind::Compute => "compute",
        };
        format!("{kind} node {} ({})", self.key.1, self.addr())
    }
    fn restarts_entry(&self, in_window: u64) -> NodeRestarts {
        NodeRestarts {
            kind: self.key.0,
            node_id: self.key.1,
            cluster_id: self.cluster.id,
            shard_id: self.shard_id(),
            addr: self.addr(),
            restarts: 0,
            restarts_in_window: in_window,
            last_at: None,
            last_outcome: None,
        }
    }
}

/// How a restart task ended.
enum Outcome {
    /// Not started: the row (or HA's stance) changed since the decision.
    Skipped(String),
    Done(Box<ControlReport>),
    TimedOut,
}

/// The actor's state; see the module invariant.
struct Keeper {
    store: Store,
    prov: Provisioner,
    ex: SshExecutor,
    cfg: KeeperConfig,
    ha: HaLookup,
    shared: Arc<KeeperShared>,
    permits: Arc<Semaphore>,
    tracks: HashMap<NodeKey, Track>,
    /// The last "left down because" said of each node, so it is said once per episode.
    said: HashMap<NodeKey, String>,
    /// The same for machines (dead, check failing).
    machine_said: HashMap<i64, String>,
    running: JoinSet<(NodeKey, Outcome)>,
    /// Restart tasks by task id, with the node and what to name it in events.
    in_flight: HashMap<tokio::task::Id, (NodeKey, Cand)>,
}

impl Keeper {
    fn event(&self, c: Option<&Cand>, what: String) {
        self.shared.event(KeeperEvent {
            at: Utc::now(),
            cluster_id: c.map(|c| c.cluster.id),
            shard_id: c.and_then(Cand::shard_id),
            kind: c.map(|c| c.key.0),
            node_id: c.map(|c| c.key.1),
            what,
        });
    }

    fn busy_keys(&self) -> HashSet<NodeKey> {
        self.in_flight.values().map(|(k, _)| *k).collect()
    }

    async fn round(&mut self) {
        let snap = match tokio::time::timeout(STORE_DEADLINE, Snapshot::read(&self.store)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "keeper: cannot read metadata; next round");
                return;
            }
            Err(_) => {
                tracing::debug!("keeper: metadata read timed out; next round");
                return;
            }
        };
        let (cands, in_service) = self.candidates(&snap);
        // Forget nodes that left service (deleted, stopped by an operator, being removed).
        self.tracks.retain(|k, _| in_service.contains(k));
        self.said.retain(|k, _| in_service.contains(k));
        let existing: HashSet<NodeKey> = snap
            .storage
            .iter()
            .map(|n| (NodeKind::Storage, n.id))
            .chain(snap.compute.iter().map(|c| (NodeKind::Compute, c.id)))
            .collect();
        self.shared
            .retain(|k| existing.contains(k), |k| in_service.contains(k));

        let (states, checks, failures) = self.check(&cands).await;
        let down: HashSet<NodeKey> = cands
            .iter()
            .filter(|c| states.get(&c.key).is_some_and(InstanceState::down))
            .map(|c| c.key)
            .collect();
        self.shared.count_round(checks, failures, down.len() as u64);
        // The policies as they are after the check, not as the snapshot had them: an
        // `auto_restart off` set before an instance died is always seen by the round that
        // finds it down. No restart this round when they cannot be read.
        let policies = if down.is_empty() {
            HashMap::new()
        } else {
            let read = self.store.read(async |tx| repo::policy::list_set(tx).await);
            match tokio::time::timeout(STORE_DEADLINE, read).await {
                Ok(Ok(p)) => p,
                _ => {
                    tracing::debug!("keeper: cannot read the policies again; next round");
                    return;
                }
            }
        };
        let ha = (self.ha)();
        let now = Instant::now();
        for c in cands {
            let Some(st) = states.get(&c.key) else {
                continue;
            };
            if st.up() {
                self.seen_up(&c);
                continue;
            }
            if !st.down() {
                // Starting (process alive, port not yet open) or the port held by another
                // process: not ours to start.
                continue;
            }
            if policies.get(&c.cluster.id).is_some_and(|p| !p.auto_restart) {
                continue;
            }
            let tend = match &c.node {
                Node::Storage(n) => {
                    let others_in_service = snap.storage.iter().any(|o| {
                        o.shard_id == n.shard_id
                            && o.id != n.id
                            && o.status == NodeStatus::Active
                            && !down.contains(&(NodeKind::Storage, o.id))
                    });
                    decide::storage(&StorageFacts {
                        status: n.status,
                        primary: n.member_state == MemberState::Source,
                        ha_watched: c.cluster.ha_mode == HaMode::Rbr,
                        others_in_service,
                        ha: ha.as_ref().map(|h| h.shared().stance(n.shard_id, n.id)),
                    })
                }
                Node::Compute(n) => decide::compute(n.status),
            };
            match tend {
                Tend::Leave { why } => {
                    if self.said.get(&c.key) != Some(&why) {
                        self.event(Some(&c), format!("{} is down; left down: {why}", c.name()));
                        self.said.insert(c.key, why);
                    }
                }
                Tend::Restart { why } => self.tend_down(c, why, now).await,
            }
        }
    }

    /// The instances to check this round, and every node in service (whatever its cluster's
    /// policy or machine).
    fn candidates(&mut self, snap: &Snapshot) -> (Vec<Cand>, HashSet<NodeKey>) {
        let busy = self.busy_keys();
        let mut out = Vec::new();
        let mut in_service = HashSet::new();
        let nodes = snap
            .storage
            .iter()
            .filter(|n| decide::watched(n.status, true))
            .map(|n| Node::Storage(n.clone()))
            .chain(
                snap.compute
                    .iter()
                    .filter(|c| decide::watched(c.status, false))
                    .map(|c| Node::Compute(c.clone())),
            );
        let mut notes: BTreeMap<i64, String> = BTreeMap::new();
        for node in nodes {
            let (key, host, port, ty, dir) = match &node {
                Node::Storage(n) => (
                    (NodeKind::Storage, n.id),
                    n.hostaddr.clone(),
                    n.port,
                    MachineType::Storage,
                    snap.storage_dirs.get(&n.id),
                ),
                Node::Compute(n) => (
                    (NodeKind::Compute, n.id),
                    n.hostaddr.clone(),
                    n.port,
                    MachineType::Computer,
                    snap.compute_dirs.get(&n.id),
                ),
            };
            in_service.insert(key);
            if busy.contains(&key) {
                continue;
            }
            let Some(cluster) = snap.clusters.get(&node.cluster_id()) else {
                continue;
            };
            let policy = snap
                .policies
                .get(&cluster.id)
                .copied()
                .unwrap_or_else(|| ClusterPolicy::default_for(cluster.id));
            if decide::cluster_skip(cluster, &policy, job_busy(&snap.jobs, cluster)).is_some() {
                continue;
            }
            let Some(machine) = snap.machine(&host, ty) else {
                continue;
            };
            if machine.node_stats == NodeStats::Dead {
                notes.insert(
                    machine.id,
                    format!(
                        "machine {} ({}) is dead: its instances are started once it answers \
                         SSH again",
                        machine.id, machine.hostaddr
                    ),
                );
                continue;
            }
            let kind = match ty {
                MachineType::Storage => InstanceKind::Storage,
                MachineType::Computer => InstanceKind::Compute,
            };
            let base_dir = match dir {
                Some(d) => d.clone(),
                None => match machine.data_dirs.first() {
                    Some(d) => InstanceSpec::base_dir_for(d, kind, port),
                    None => continue,
                },
            };
            if recipes::validate_base_dir(&base_dir).is_err() {
                continue;
            }
            out.push(Cand {
                key,
                cluster: cluster.clone(),
                machine: machine.clone(),
                spec: InstanceSpec {
                    bind_address: host,
                    port,
                    base_dir,
                    server_id: 0,
                    buffer_mb: 0,
                    max_connections: 0,
                    semi_sync: false,
                    users: Vec::new(),
                },
                node,
            });
        }
        for (id, note) in notes {
            if self.machine_said.get(&id) != Some(&note) {
                self.event(None, note.clone());
                self.machine_said.insert(id, note);
            }
        }
        (out, in_service)
    }

    /// One SSH command per machine for all its candidates, in parallel, each bounded.
    /// Returns the states found, the machines checked and the checks that failed.
    async fn check(&mut self, cands: &[Cand]) -> (HashMap<NodeKey, InstanceState>, u64, u64) {
        let mut by_machine: BTreeMap<i64, Vec<&Cand>> = BTreeMap::new();
        for c in cands {
            by_machine.entry(c.machine.id).or_default().push(c);
        }
        let permits = Arc::new(Semaphore::new(CHECKS_AT_ONCE));
        let mut set = JoinSet::new();
        for (mid, list) in &by_machine {
            let mut keys = Vec::new();
            let mut checks = Vec::new();
            for c in list {
                let recipe = control::recipe_of(&self.prov, &c.node);
                if let Some(ch) = StateCheck::of(recipe.as_ref(), &c.spec) {
                    keys.push(c.key);
                    checks.push(ch);
                }
            }
            let target = self.prov.target(&list[0].machine);
            let (ex, permits, deadline, mid) = (
                self.ex.clone(),
                permits.clone(),
                self.cfg.check_timeout,
                *mid,
            );
            set.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let r = tokio::time::timeout(
                    deadline + Duration::from_secs(1),
                    recipes::instance_states(&ex, &target, &checks, deadline),
                )
                .await;
                let r = match r {
                    Ok(Ok(states)) => Ok(states),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {deadline:?}")),
                };
                (mid, keys, r)
            });
        }
        let (mut out, mut n, mut failed) = (HashMap::new(), 0, 0);
        while let Some(r) = set.join_next().await {
            let Ok((mid, keys, r)) = r else { continue };
            n += 1;
            match r {
                Ok(states) => {
                    if self
                        .machine_said
                        .get(&mid)
                        .is_some_and(|s| s.starts_with("check of machine"))
                    {
                        self.machine_said.remove(&mid);
                    }
                    for (k, s) in keys.into_iter().zip(states) {
                        if let Some(s) = s {
                            out.insert(k, s);
                        }
                    }
                }
                Err(e) => {
                    failed += 1;
                    let note = format!("check of machine {mid} failed: {e}");
                    if self
                        .machine_said
                        .get(&mid)
                        .is_none_or(|s| !s.starts_with("check of machine"))
                    {
                        self.event(None, note.clone());
                        self.machine_said.insert(mid, note);
                    }
                }
            }
        }
        (out, n, failed)
    }

    fn seen_up(&mut self, c: &Cand) {
        self.said.remove(&c.key);
        let was_given_up = self.tracks.get_mut(&c.key).is_some_and(Track::seen_up);
        if was_given_up || self.shared.crash_looping(c.key) {
            self.shared.set_crash_loop(c.key, None);
            self.event(
                Some(c),
                format!("{} is up again: its crash-loop alarm is cleared", c.name()),
            );
        }
    }

    /// A node the keeper may start is down: restart it, wait, or give up.
    async fn tend_down(&mut self, c: Cand, why: String, now: Instant) {
        let limits = self.cfg.limits();
        let track = self.tracks.entry(c.key).or_default();
        match track.next(now, &limits) {
            Next::Wait(_) | Next::GivenUp => {}
            Next::Restart => {
                track.restarted(now, &limits);
                let n = track.restarts_in_window(now, limits.window) as u64;
                self.said.remove(&c.key);
                self.event(
                    Some(&c),
                    format!(
                        "{} is down; restarting it ({why}), restart {n} of {} within {} s",
                        c.name(),
                        limits.max_restarts,
                        limits.window.as_secs()
                    ),
                );
                self.shared.restart_begun(c.key, &c.restarts_entry(n));
                self.spawn_restart(c);
            }
            Next::GiveUp => self.give_up(c).await,
        }
    }

    fn spawn_restart(&mut self, c: Cand) {
        let (store, prov, ha, permits) = (
            self.store.clone(),
            self.prov.clone(),
            self.ha.clone(),
            self.permits.clone(),
        );
        let (key, node, machine) = (c.key, c.node.clone(), c.machine.clone());
        let h = self.running.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let r =
                tokio::time::timeout(RESTART_DEADLINE, restart(&store, &prov, &ha, node, machine))
                    .await;
            (key, r.unwrap_or(Outcome::TimedOut))
        });
        self.in_flight.insert(h.id(), (key, c));
    }

    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, (NodeKey, Outcome)), tokio::task::JoinError>,
    ) {
        let (id, outcome) = match done {
            Ok((id, (_, o))) => (id, Ok(o)),
            Err(e) => (e.id(), Err(e.to_string())),
        };
        let Some((key, c)) = self.in_flight.remove(&id) else {
            return;
        };
        let (result, what) = match outcome {
            Ok(Outcome::Skipped(why)) => {
                self.event(
                    Some(&c),
                    format!("restart of {} not begun: {why}", c.name()),
                );
                self.shared
                    .restart_ended(key, Err(format!("not begun: {why}")));
                return;
            }
            Ok(Outcome::Done(r)) => match &r.error {
                None => {
                    if let Some(t) = self.tracks.get_mut(&key) {
                        t.started();
                    }
                    (
                        Ok(()),
                        format!(
                            "restarted {}{}",
                            c.name(),
                            r.replication
                                .as_deref()
                                .map(|s| format!(" (replication: {s})"))
                                .unwrap_or_default()
                        ),
                    )
                }
                Some(e) => (
                    Err(e.clone()),
                    format!("restart of {} failed: {e}", c.name()),
                ),
            },
            Ok(Outcome::TimedOut) => {
                let e = format!("not done within {RESTART_DEADLINE:?}");
                (
                    Err(e.clone()),
                    format!("restart of {} failed: {e}", c.name()),
                )
            }
            Err(e) => (
                Err(format!("the restart task ended: {e}")),
                format!("restart of {} failed: the task ended: {e}", c.name()),
            ),
        };
        self.event(Some(&c), what);
        self.shared.restart_ended(key, result);
    }

    /// `max_restarts` within the window and down again: stop, and raise the alarm with the
    /// server's log tail.
    async fn give_up(&mut self, c: Cand) {
        let recipe = control::recipe_of(&self.prov, &c.node);
        let target = self.prov.target(&c.machine);
        let tail = tokio::time::timeout(
            LOG_DEADLINE + Duration::from_secs(1),
            recipes::log_tail(
                recipe.as_ref(),
                &self.ex,
                &target,
                &c.spec,
                self.cfg.log_tail_bytes,
                LOG_DEADLINE,
            ),
        )
        .await;
        let log_tail = match tail {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => format!("(the log could not be read: {e})"),
            Err(_) => format!("(the log could not be read within {LOG_DEADLINE:?})"),
        };
        let last = self
            .shared
            .status()
            .nodes
            .into_iter()
            .find(|n| (n.kind, n.node_id) == c.key)
            .and_then(|n| n.last_outcome)
            .unwrap_or_else(|| "unknown".into());
        let alarm = format!(
            "{} of cluster {} went down again after {} restarts within {} s: the keeper stopped \
             restarting it (last restart: {last}); fix the cause (see the log tail), then start \
             it with `kunlunctl node start {}`",
            c.name(),
            c.cluster.id,
            self.cfg.max_restarts,
            self.cfg.window.as_secs(),
            c.addr()
        );
        self.event(Some(&c), format!("crash loop: {alarm}"));
        self.shared.set_crash_loop(
            c.key,
            Some(CrashLoop {
                kind: c.key.0,
                node_id: c.key.1,
                cluster_id: c.cluster.id,
                shard_id: c.shard_id(),
                addr: c.addr(),
                since: Utc::now(),
                alarm,
                log_tail,
            }),
        );
    }
}

/// Whether one of the unfinished `jobs` changes `cluster`. A backup only reads the cluster
/// (and may run for hours): its crashed instances are still started again.
fn job_busy(jobs: &[Job], cluster: &Cluster) -> bool {
    jobs.iter().any(|j| {
        j.job_type != crate::jobs::kinds::BACKUP_CLUSTER
            && crate::jobs::common::job_changes(j, cluster.id, &cluster.name)
    })
}

/// One restart: the node's row is read again (a status or role changed since the decision
/// wins: nothing is started), HA's task must not have taken the shard meanwhile, then the
/// shared start path runs.
async fn restart(
    store: &Store,
    prov: &Provisioner,
    ha: &HaLookup,
    node: Node,
    machine: Machine,
) -> Outcome {
    // The row, the cluster, its policy and the unfinished jobs as they are now, not as the
    // round read them: a policy switched off, a stop by hand, or a job that began changing the
    // cluster (a `cluster rm` stops and removes its compute nodes without marking their rows)
    // after the round's snapshot wins.
    let (id, cid, storage) = match &node {
        Node::Storage(n) => (n.id, n.db_cluster_id, true),
        Node::Compute(n) => (n.id, n.db_cluster_id, false),
    };
    let read = store
        .read(async |tx| {
            let now = if storage {
                Node::Storage(repo::nodes::get(tx, id).await?)
            } else {
                Node::Compute(repo::comps::get(tx, id).await?)
            };
            let cluster = repo::clusters::get(tx, cid).await?;
            let policy = repo::policy::get(tx, cid).await?;
            let jobs = repo::jobs::list_unfinished(tx).await?;
            Ok((now, cluster, policy, jobs))
        })
        .await;
    let now = match read {
        Ok((n, cluster, policy, jobs)) => {
            if let Some(why) = decide::cluster_skip(&cluster, &policy, job_busy(&jobs, &cluster)) {
                return Outcome::Skipped(format!("{why} (since the round's check)"));
            }
            n
        }
        Err(e) => return Outcome::Skipped(format!("its row could not be read: {e}")),
    };
    match (&node, &now) {
        (Node::Storage(a), Node::Storage(b))
            if a.status != b.status || a.member_state != b.member_state =>
        {
            return Outcome::Skipped(format!(
                "it became {} ({}) meanwhile",
                b.status, b.member_state
            ));
        }
        (Node::Compute(a), Node::Compute(b)) if a.status != b.status => {
            return Outcome::Skipped(format!("it became {} meanwhile", b.status));
        }
        _ => {}
    }
    if let Node::Storage(n) = &now {
        if ha()
            .as_ref()
            .is_some_and(|h| h.shared().stance(n.shard_id, n.id).busy)
        {
            return Outcome::Skipped("HA's failover or switchover of its shard began".into());
        }
    }
    match control::located_on(store, now, machine).await {
        Ok(loc) => match control::start_located(store, prov, &loc).await {
            Ok(report) => Outcome::Done(Box::new(report)),
            Err(why) => Outcome::Skipped(why),
        },
        Err(e) => Outcome::Skipped(e.to_string()),
    }
}
