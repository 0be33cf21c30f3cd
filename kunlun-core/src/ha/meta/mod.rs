//! High availability of the metadata shard itself (MySQL backend): the leader probes the
//! `meta_db_nodes` every `check_shard_interval` and fails the shard over with the same rules as
//! a storage shard (detection confirmed by the replicas, the semi-sync proof of
//! [`super::choose`], fence, catch-up, promote, repoint), then tells its own store to follow
//! the new primary and records the result there ([`failover`]). Between failovers it fences a
//! node that is writable but not the primary, rejoins a returned old primary as a replica when
//! it holds nothing the new primary lacks, and keeps `meta_db_nodes` naming the primary the
//! store writes to. [`observe`] is what `GET /v1/meta` shows on every instance.
//!
//! The metadata primary also holds the leader lease: while it is down the leader cannot renew,
//! and acts on its last confirmed renew until that lease can expire
//! ([`crate::leader`]). The failover therefore reads nothing from the store (it works from the
//! nodes and machines read in earlier rounds), bounds every store call, and must fit in that
//! time; its metadata write carries the term's fence, so a manager whose lease ran out records
//! nothing.
//!
//! Invariants: a node is promoted only on a [`super::detect::Verdict::PrimaryDead`] verdict,
//! outside the anti-flapping window, and, by default, only when [`super::choose`] proves no
//! acknowledged write is lost; the promoted node is opened for writes only after the old
//! primary's fence and the followers' repointing; the record is written after the store moved.

pub mod failover;
pub mod lock;
pub mod observe;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_meta::model::{Machine, MemberState, MetaDbNode, NodeStatus, OnOff, ShardNode};
use kunlun_meta::store::{repo, Store};
use tokio_util::sync::CancellationToken;

use super::choose::LossPolicy;
use super::detect::{self, NodeRef, ShardFacts, Verdict};
use super::probe::{probe_node, probe_options, NodeProbe};
use super::promote::{self, Login};
use super::{HaConfig, TermFence};
use crate::config::MetaShardLogins;
use crate::fleet::Provisioner;
use crate::storage::{NodeAddr, StorageOptions};
use observe::seed_of;

/// `kl_failover.cluster_id` and `shard_id` of a metadata-shard failover (its node ids are
/// `meta_db_nodes` ids).
pub const META_CLUSTER_ID: i64 = 0;
/// See [`META_CLUSTER_ID`].
pub const META_SHARD_ID: i64 = 0;

/// Longest a store call of a round may take (never the store's wait for a new primary): a
/// healthy store answers in milliseconds, and a round must not stall while it is down.
const STORE_CALL: Duration = Duration::from_millis(500);
/// Longest the record and `meta_db_nodes` writes after a switch may take.
const WRITE_CALL: Duration = Duration::from_secs(2);
/// The machines are read again every this many rounds.
const MACHINES_EVERY: u64 = 30;
/// Pause after a failed attempt before the next one.
const AFTER_FAILED: Duration = Duration::from_secs(2);

/// Which instance's monitor this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The leader's (in its term): probes every round, fails over, keeps the shard tidy.
    Leader,
    /// Every instance's stand-in for a leader that cannot act: it does nothing until its own
    /// store has found no writable metadata primary for `after` (the leader lease's length, so
    /// any leader's lease has run out by then: nobody can renew one while the primary is
    /// down), then fails the shard over as the leader would. Both take the majority lock
    /// ([`lock`]), so they never act at once.
    Standby { after: Duration },
}

/// Settings of the metadata shard's monitor.
#[derive(Debug, Clone)]
pub struct MetaHaConfig {
    /// Gap between two rounds (`check_shard_interval`); a quarter of it while the primary is
    /// suspect.
    pub interval: Duration,
    /// Consecutive failed probes before the primary counts as dead. Default 3.
    pub failures_to_dead: u32,
    pub storage: StorageOptions,
    /// Longest wait for the candidate to apply its relay log (the failover must fit in the
    /// leader's lease). Default 5 s.
    pub catch_up_limit: Duration,
    /// Longest one attempt may take. Default 30 s.
    pub attempt_deadline: Duration,
    /// No second automatic failover within this window. Default 300 s.
    pub flap_window: Duration,
    /// What to do when losslessness cannot be proven. Default refuse.
    pub policy: LossPolicy,
    pub logins: MetaShardLogins,
    /// SSH access to registered machines, to stop an old primary that does not answer SQL.
    pub ssh: Option<Arc<Provisioner>>,
    /// The leadership term (its metadata writes check the lease).
    pub term: Option<TermFence>,
}

impl MetaHaConfig {
    /// The shard monitor's probe settings with the metadata shard's logins.
    pub fn from_ha(ha: &HaConfig, logins: MetaShardLogins) -> Self {
        MetaHaConfig {
            interval: ha.interval,
            failures_to_dead: ha.failures_to_dead,
            storage: ha.storage,
            catch_up_limit: Duration::from_secs(5),
            attempt_deadline: Duration::from_secs(30),
            flap_window: ha.flap_window,
            policy: LossPolicy::Refuse,
            logins,
            ssh: ha.ssh.clone(),
            term: ha.term.clone(),
        }
    }
}

/// Runs `futs` at once, each on its own task; their outputs in order (`None`: it panicked).
pub(crate) async fn all_at_once<T, F>(futs: impl IntoIterator<Item = F>) -> Vec<Option<T>>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.ok());
    }
    out
}

/// A metadata node as the storage steps take it (a [`ShardNode`] of cluster and shard
/// [`META_CLUSTER_ID`]), reached with `login`.
pub fn as_shard_node(n: &MetaDbNode, login: &Login) -> ShardNode {
    ShardNode {
        id: n.id,
        shard_id: META_SHARD_ID,
        db_cluster_id: META_CLUSTER_ID,
        hostaddr: n.hostaddr.clone(),
        port: n.port,
        user_name: login.user.clone(),
        passwd: login.password.clone(),
        master_priority: n.master_priority,
        ro_weight: 0,
        status: NodeStatus::Active,
        member_state: n.member_state,
        sync_state: n.sync_state,
        replica_delay: 0,
        backup_node: OnOff::Off,
        innodb_buffer_pool_mb: 0,
        when_created: None,
    }
}

fn addr(n: &MetaDbNode, login: &Login) -> NodeAddr {
    login.at(&NodeAddr {
        host: n.hostaddr.clone(),
        port: n.port,
        user: String::new(),
        password: String::new(),
    })
}

fn node_ref(n: &MetaDbNode) -> NodeRef {
    NodeRef {
        id: n.id,
        host: n.hostaddr.clone(),
        port: n.port,
        master_priority: n.master_priority,
        no_switch: false,
    }
}

/// The node the store writes to: the row at the store's primary, else the row recorded
/// `source`.
pub fn current_primary<'a>(nodes: &'a [MetaDbNode], store_primary: &str) -> Option<&'a MetaDbNode> {
    nodes
        .iter()
        .find(|n| seed_of(&n.hostaddr, n.port) == store_primary)
        .or_else(|| nodes.iter().find(|n| n.member_state == MemberState::Source))
}

/// Nodes other than the primary that answer writable: they must be fenced.
pub fn rogue_writables(primary: i64, probes: &[(i64, &NodeProbe)]) -> Vec<i64> {
    probes
        .iter()
        .filter(|(id, p)| *id != primary && p.reachable && !p.read_only)
        .map(|(id, _)| *id)
        .collect()
}

/// The metadata shard's monitor; see the module doc.
pub struct MetaMonitor {
    store: Store,
    cfg: MetaHaConfig,
    mode: Mode,
    cancel: CancellationToken,
    nodes: Vec<MetaDbNode>,
    machines: Vec<Machine>,
    primary: Option<i64>,
    failures: u32,
    first_fail: Option<Instant>,
    last_ok: Option<NodeProbe>,
    last_failover: Option<Instant>,
    /// Nodes whose broken replication or errant transactions were reported (once each).
    reported: BTreeSet<i64>,
    /// The facts of the last refused attempt: not attempted (nor fenced) again on them.
    refused: Option<String>,
    rounds: u64,
}

impl MetaMonitor {
    /// The leader's monitor.
    pub fn new(store: Store, cfg: MetaHaConfig, cancel: CancellationToken) -> Self {
        Self::with_mode(store, cfg, Mode::Leader, cancel)
    }

    /// A monitor in `mode` (see [`Mode`]); a standby carries no term.
    pub fn with_mode(
        store: Store,
        mut cfg: MetaHaConfig,
        mode: Mode,
        cancel: CancellationToken,
    ) -> Self {
        if matches!(mode, Mode::Standby { .. }) {
            cfg.term = None;
        }
        MetaMonitor {
            store,
            cfg,
            mode,
            cancel,
            nodes: Vec::new(),
            machines: Vec::new(),
            primary: None,
            failures: 0,
            first_fail: None,
            last_ok: None,
            last_failover: None,
            reported: BTreeSet::new(),
            refused: None,
            rounds: 0,
        }
    }

    /// Runs rounds until cancelled. Without the admin login it only says once why it is off.
    pub async fn run(mut self) {
        if self.cfg.logins.admin.is_none() {
            if self.mode == Mode::Leader {
                tracing::info!("metadata shard failover off: meta_ha_user is not set");
            }
            return;
        }
        tracing::info!(interval = ?self.cfg.interval, mode = ?self.mode, "metadata shard monitor started");
        loop {
            let pause = match self.mode {
                Mode::Leader => self.round().await,
                Mode::Standby { after } => {
                    if self.headless(after) {
                        self.round().await
                    } else {
                        // Only keep what a stand-in round needs when the store is down: the
                        // nodes, the machines, and a recent probe of the primary for the
                        // semi-sync proof.
                        self.reset();
                        if self.rounds.is_multiple_of(10) {
                            self.refresh().await;
                        }
                        self.watch_primary().await;
                        self.rounds += 1;
                        self.cfg.interval
                    }
                }
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// The store has found no writable primary for longer than `after`.
    fn headless(&self, after: Duration) -> bool {
        let Some(st) = self.store.follow_status() else {
            return false;
        };
        let Some(since) = st.searching_since else {
            return false;
        };
        let searching = chrono::Utc::now().naive_utc() - since;
        searching.to_std().is_ok_and(|d| d > after)
    }

    /// Probes the store's primary alone and keeps the probe while it answers writable (the
    /// semi-sync proof of a stand-in's failover rests on it).
    async fn watch_primary(&mut self) {
        let (Some(admin), Some(at)) = (self.cfg.logins.admin.clone(), self.store.primary()) else {
            return;
        };
        let Some(primary) = current_primary(&self.nodes, &at).cloned() else {
            return;
        };
        if self.primary != Some(primary.id) {
            self.primary = Some(primary.id);
            self.last_ok = None;
        }
        let opts = probe_options(self.cfg.interval, self.cfg.storage);
        let p = probe_node(&addr(&primary, &admin), opts).await;
        if p.reachable && !p.read_only {
            self.last_ok = Some(p);
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
        self.first_fail = None;
    }

    /// Reads the nodes and (now and then) the machines, keeping what was read before when
    /// the store does not answer within [`STORE_CALL`]. Not while the primary fails: the
    /// store cannot answer then, and the round must not wait for it.
    async fn refresh(&mut self) {
        if self.failures > 0
            || self
                .store
                .follow_status()
                .is_some_and(|f| f.searching.is_some())
        {
            return;
        }
        let read = self
            .store
            .read(async |tx| repo::meta::list_meta_nodes(tx).await);
        if let Ok(Ok(mut nodes)) = tokio::time::timeout(STORE_CALL, read).await {
            if nodes.len() > observe::MAX_NODES {
                tracing::warn!(rows = nodes.len(), kept = observe::MAX_NODES, "meta_db_nodes has more rows than a metadata shard has nodes; only the first are watched");
                nodes.truncate(observe::MAX_NODES);
            }
            self.nodes = nodes;
        }
        if self.rounds.is_multiple_of(MACHINES_EVERY) || self.machines.is_empty() {
            let read = self.store.read(async |tx| repo::machines::list(tx).await);
            if let Ok(Ok(m)) = tokio::time::timeout(STORE_CALL, read).await {
                self.machines = m;
            }
        }
    }

    /// A store write of this term, bounded, that checks the lease in its transaction.
    async fn write_primary(&self, id: i64) -> Result<(), String> {
        let term = self.cfg.term.clone();
        let w = self.store.tx(async move |tx| {
            TermFence::check(term.as_ref(), tx).await?;
            repo::meta::set_meta_primary(tx, id).await
        });
        match tokio::time::timeout(WRITE_CALL, w).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {WRITE_CALL:?}")),
        }
    }

    /// One round; returns the pause before the next.
    async fn round(&mut self) -> Duration {
        let pause = self.probe_round().await;
        self.rounds += 1;
        match pause {
            Some(p) => p,
            None if self.failures > 0 => self.cfg.interval / 4,
            None => self.cfg.interval,
        }
    }

    /// See [`MetaMonitor::round`]; `Some` asks for another pause than the usual one.
    async fn probe_round(&mut self) -> Option<Duration> {
        let admin = self.cfg.logins.admin.clone()?;
        self.refresh().await;
        if self.nodes.len() < 2 {
            return None;
        }
        let store_primary = self.store.primary()?;
        let Some(primary) = current_primary(&self.nodes, &store_primary).cloned() else {
            tracing::debug!(primary = %store_primary, "the store's metadata primary has no meta_db_nodes row");
            return None;
        };
        if self.primary != Some(primary.id) {
            self.primary = Some(primary.id);
            self.failures = 0;
            self.first_fail = None;
            self.last_ok = None;
        }
        let opts = probe_options(self.cfg.interval, self.cfg.storage);
        let probes: Vec<NodeProbe> = all_at_once(self.nodes.iter().map(|n| {
            let a = addr(n, &admin);
            async move { probe_node(&a, opts).await }
        }))
        .await
        .into_iter()
        .map(|r| r.unwrap_or_default())
        .collect();
        let by_id: Vec<(i64, &NodeProbe)> =
            self.nodes.iter().map(|n| n.id).zip(probes.iter()).collect();
        let pp = by_id
            .iter()
            .find(|(id, _)| *id == primary.id)
            .map(|(_, p)| *p)?;
        if pp.reachable {
            if self.failures > 0 {
                tracing::info!(node = primary.id, "metadata primary answers again");
            }
            self.failures = 0;
            self.first_fail = None;
            self.refused = None;
            if !pp.read_only {
                self.last_ok = Some(pp.clone());
            }
            if self.mode == Mode::Leader {
                self.upkeep(&primary, pp, &by_id, &admin).await;
            }
            return None;
        }
        self.failures += 1;
        let now = Instant::now();
        let detected = *self.first_fail.get_or_insert(now);
        let prim_ref = node_ref(&primary);
        let refs: Vec<NodeRef> = self
            .nodes
            .iter()
            .filter(|n| n.id != primary.id)
            .map(node_ref)
            .collect();
        let replicas: Vec<(&NodeRef, &NodeProbe)> = refs
            .iter()
            .filter_map(|r| {
                by_id
                    .iter()
                    .find(|(id, _)| *id == r.id)
                    .map(|(_, p)| (r, *p))
            })
            .collect();
        let facts = ShardFacts {
            primary: &prim_ref,
            primary_failures: self.failures,
            primary_last_ok: self.last_ok.as_ref(),
            primary_crashed: false,
            silence_counts: false,
            replicas,
            unchanged_for: std::collections::HashMap::new(),
        };
        let view = match detect::assess(&facts, self.cfg.failures_to_dead) {
            Verdict::PrimaryDead { view, .. } => view,
            Verdict::NotConfirmed { reason } => {
                tracing::warn!(node = primary.id, reason = %reason, "metadata primary does not answer, but a replica still sees it: no failover");
                return None;
            }
            Verdict::Suspect { failures } => {
                tracing::warn!(node = primary.id, failures, error = ?pp.error, "metadata primary does not answer");
                return None;
            }
            Verdict::Healthy => return None,
        };
        if detect::in_flap_window(self.last_failover, now, self.cfg.flap_window) {
            tracing::warn!(node = primary.id, "metadata primary dead, but the shard failed over less than the anti-flapping window ago: no failover");
            return None;
        }
        let facts_key = view.fingerprint();
        if self.refused.as_deref() == Some(facts_key.as_str()) {
            return None;
        }
        // Only one manager acts: the one holding the lock on a majority of the nodes.
        let held = match lock::take(&self.nodes, &admin, self.cfg.storage).await {
            Ok(m) => m,
            Err(why) => {
                tracing::warn!(node = primary.id, reason = %why, "metadata primary dead; not failing over");
                return Some(AFTER_FAILED);
            }
        };
        tracing::warn!(node = primary.id, failures = self.failures, mode = ?self.mode, locks = held.held(), "metadata primary dead (confirmed by its replicas): failing over");
        let attempt = failover::Attempt {
            store: &self.store,
            cfg: &self.cfg,
            nodes: &self.nodes,
            machines: &self.machines,
            old: &primary,
            view,
            detected,
        };
        let done =
            tokio::time::timeout(self.cfg.attempt_deadline, failover::fail_over(attempt)).await;
        held.release().await;
        let rec = match done {
            Ok(rec) => rec,
            Err(_) => {
                tracing::error!(deadline = ?self.cfg.attempt_deadline, "metadata shard failover did not end within its deadline");
                return Some(AFTER_FAILED);
            }
        };
        match rec.outcome {
            super::Outcome::Promoted => {
                self.last_failover = Some(Instant::now());
                self.failures = 0;
                self.first_fail = None;
                self.last_ok = None;
                None
            }
            super::Outcome::Refused => {
                self.refused = Some(facts_key);
                None
            }
            super::Outcome::Failed => Some(AFTER_FAILED),
        }
    }

    /// With the primary answering: fence writable non-primaries, restart or repoint replicas
    /// that do not replicate from it (a returned old primary, a node restarted without its
    /// replication) unless they hold transactions it lacks, and keep `meta_db_nodes` naming
    /// it.
    async fn upkeep(
        &mut self,
        primary: &MetaDbNode,
        pp: &NodeProbe,
        by_id: &[(i64, &NodeProbe)],
        admin: &Login,
    ) {
        let opts = self.cfg.storage;
        let rogue = rogue_writables(primary.id, by_id);
        for (id, p) in by_id {
            let Some(n) = self.nodes.iter().find(|n| n.id == *id).cloned() else {
                continue;
            };
            if n.id == primary.id || !p.reachable {
                continue;
            }
            let a = addr(&n, admin);
            if rogue.contains(id) {
                let r = promote::fence_read_only(&a, opts).await;
                tracing::warn!(node = id, at = %seed_of(&n.hostaddr, n.port), fence = %r, "metadata node writable but not the primary: fenced read-only");
                continue;
            }
            match detect::replica_upkeep(&primary.hostaddr, primary.port, p) {
                detect::Upkeep::Nothing => {
                    self.reported.remove(id);
                }
                detect::Upkeep::Start => match promote::restart_replication(&a, opts).await {
                    Ok(()) => tracing::info!(node = id, "metadata replica's replication restarted"),
                    Err(e) => {
                        tracing::warn!(node = id, error = %e, "metadata replica's replication not restarted")
                    }
                },
                detect::Upkeep::Repoint { from } => self.rejoin(&n, primary, pp, admin, from).await,
                detect::Upkeep::Broken { reason } => {
                    if self.reported.insert(*id) {
                        tracing::error!(node = id, reason = %reason, "metadata replica's replication stopped with an error: left for an operator");
                    }
                }
            }
        }
        if primary.member_state != MemberState::Source {
            match self.write_primary(primary.id).await {
                Ok(()) => tracing::info!(
                    node = primary.id,
                    "meta_db_nodes now names the metadata primary the store uses"
                ),
                Err(e) => tracing::debug!(error = %e, "meta_db_nodes not updated"),
            }
        }
    }

    /// A read-only node that replicates from nobody or another node (`from`): made a replica
    /// of `primary` unless it holds transactions `primary` lacks (then it stays read-only for
    /// an operator to rebuild, reported once).
    async fn rejoin(
        &mut self,
        n: &MetaDbNode,
        primary: &MetaDbNode,
        pp: &NodeProbe,
        admin: &Login,
        from: Option<String>,
    ) {
        let opts = self.cfg.storage;
        let a = addr(n, admin);
        let Ok(pos) = promote::fence_and_pos(&a, opts).await else {
            return;
        };
        let (Ok(old_pos), Ok(new_pos)) = (
            super::GtidPos::parse(&pos),
            super::GtidPos::parse(pp.gtid_current_pos.as_deref().unwrap_or("")),
        ) else {
            return;
        };
        match detect::rejoin(&old_pos, &new_pos) {
            detect::Rejoin::AsReplica => {
                let src = addr(primary, admin);
                let r = promote::repoint(&a, &src, true, self.cfg.logins.repl.as_ref(), opts).await;
                match r {
                    Ok(()) => {
                        tracing::info!(node = n.id, source = primary.id, before = ?from, "metadata node rejoined as a replica of the primary")
                    }
                    Err(e) => {
                        tracing::warn!(node = n.id, error = %e, "metadata node not repointed")
                    }
                }
            }
            detect::Rejoin::Rebuild { errant } => {
                if self.reported.insert(n.id) {
                    tracing::error!(node = n.id, errant = %errant, "metadata node holds transactions the primary lacks: kept read-only, rebuild it");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::model::SyncState;

    fn row(id: i64, port: u16, state: MemberState) -> MetaDbNode {
        MetaDbNode {
            id,
            hostaddr: "127.0.0.1".into(),
            port,
            user_name: "u".into(),
            passwd: String::new(),
            master_priority: 1,
            member_state: state,
            sync_state: SyncState::Fsync,
        }
    }

    #[test]
    fn the_primary_is_where_the_store_writes_else_the_recorded_source() {
        let nodes = vec![
            row(1, 3301, MemberState::Source),
            row(2, 3302, MemberState::Replica),
        ];
        assert_eq!(
            current_primary(&nodes, "127.0.0.1:3302").map(|n| n.id),
            Some(2)
        );
        assert_eq!(current_primary(&nodes, "10.0.0.9:1").map(|n| n.id), Some(1));
        let sn = as_shard_node(
            &nodes[1],
            &Login {
                user: "ha".into(),
                password: "p".into(),
            },
        );
        assert_eq!((sn.id, sn.shard_id, sn.port), (2, META_SHARD_ID, 3302));
        assert_eq!(
            (sn.user_name.as_str(), sn.status),
            ("ha", NodeStatus::Active)
        );
    }

    #[test]
    fn only_writable_answering_non_primaries_are_rogue() {
        let w = NodeProbe {
            reachable: true,
            read_only: false,
            ..NodeProbe::default()
        };
        let ro = NodeProbe {
            reachable: true,
            read_only: true,
            ..NodeProbe::default()
        };
        let gone = NodeProbe::default();
        assert_eq!(
            rogue_writables(1, &[(1, &w), (2, &w), (3, &ro), (4, &gone)]),
            vec![2]
        );
    }
}
