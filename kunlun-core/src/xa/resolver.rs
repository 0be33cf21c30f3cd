//! The XA resolver actor: every `thread_work_interval` one pass per cluster and one over the
//! metadata shard, then (every `purge_every`) the commit-log retention purge.
//!
//! Invariants: the actor owns its state (which branches it has already seen and since when,
//! when it last purged) and only publishes counters; an abort is claimed only `wait_max` after
//! this resolver first saw the branch prepared (a new resolver starts every clock afresh); a failed pass is logged and retried on the next tick;
//! a cluster's log is purged only after a pass that scanned every one of its shards, so a
//! prepared branch on an unreachable shard can never lose its decision.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use kunlun_meta::model::ClusterStatus;
use kunlun_meta::store::Store;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::decide::FirstSeen;
use super::metrics::XaMetrics;
use super::round::{
    purge_commit_log, resolve_cluster, resolve_meta_shard, RoundReport, XaConfig, META_SHARD_ID,
};
use super::xid::KunlunXid;
use crate::error::Result;

/// The resolver's state; run it with [`XaResolver::run`] or drive it with [`XaResolver::round`].
#[derive(Debug)]
pub struct XaResolver {
    store: Store,
    cfg: XaConfig,
    metrics: Arc<XaMetrics>,
    /// `(cluster id or META, shard id, xid)` of every branch seen in the last round.
    seen: HashSet<(i64, i64, KunlunXid)>,
    /// When each branch (shard, xid) was first seen prepared, for the abort claims.
    clock: FirstSeen,
    last_purge: Option<Instant>,
}

/// Cluster id used in reports for the metadata shard.
pub const META_CLUSTER_ID: i64 = -1;

/// What one round did, per cluster (the metadata shard as [`META_CLUSTER_ID`]).
#[derive(Debug, Default)]
pub struct RoundSummary {
    pub clusters: Vec<(i64, RoundReport)>,
    /// Clusters whose pass failed, with the reason.
    pub errors: Vec<(i64, String)>,
    /// Commit-log rows purged this round.
    pub purged: usize,
}

impl RoundSummary {
    /// The sum of all clusters' reports.
    pub fn total(&self) -> RoundReport {
        let mut t = RoundReport::default();
        for (_, r) in &self.clusters {
            t.absorb(r.clone());
        }
        t
    }
}

impl XaResolver {
    pub fn new(store: Store, cfg: XaConfig, metrics: Arc<XaMetrics>) -> Self {
        XaResolver {
            store,
            cfg,
            metrics,
            seen: HashSet::new(),
            clock: FirstSeen::default(),
            last_purge: None,
        }
    }

    /// Spawns the actor on `tasks`; it stops when `cancel` fires.
    pub fn spawn(self, tasks: &TaskTracker, cancel: CancellationToken) {
        tasks.spawn(self.run(cancel));
    }

    /// Runs rounds every `interval` until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                s = self.round() => {
                    if let Err(e) = s {
                        tracing::warn!(error = %e, "XA recovery round failed; retried next round");
                    }
                }
            }
        }
    }

    /// Runs one round over every cluster in use and the metadata shard.
    pub async fn round(&mut self) -> Result<RoundSummary> {
        let clusters = self.store.list_clusters().await?;
        let mut summary = RoundSummary::default();
        for c in clusters
            .iter()
            .filter(|c| c.status == ClusterStatus::Inuse && self.cfg.clusters.serves(c.id))
        {
            match resolve_cluster(&self.store, c, &self.cfg, &mut self.clock).await {
                Ok(r) => summary.clusters.push((c.id, r)),
                Err(e) => {
                    tracing::warn!(cluster = %c.name, error = %e, "XA recovery pass failed");
                    summary.errors.push((c.id, e.to_string()));
                }
            }
        }
        match resolve_meta_shard(&self.store, &self.cfg).await {
            Ok(r) => summary.clusters.push((META_CLUSTER_ID, r)),
            Err(e) => summary.errors.push((META_CLUSTER_ID, e.to_string())),
        }
        self.count_new(&summary);
        self.forget_gone(&summary);
        self.metrics.record_round(&summary.total());
        if self
            .last_purge
            .is_none_or(|t| t.elapsed() >= self.cfg.purge_every)
        {
            summary.purged = self.purge(&clusters, &summary).await;
            self.last_purge = Some(Instant::now());
        }
        Ok(summary)
    }

    fn count_new(&mut self, summary: &RoundSummary) {
        let now: HashSet<(i64, i64, KunlunXid)> = summary
            .clusters
            .iter()
            .flat_map(|(c, r)| r.seen.iter().map(move |(s, x)| (*c, *s, *x)))
            .collect();
        let new = now.difference(&self.seen).count();
        self.metrics.add_found(new as u64);
        self.seen = now;
    }

    /// Forgets the first sightings of branches this round did not find. Those on shards it
    /// could not scan are kept, and after a cluster's pass failed outright (its shards are not
    /// known) nothing is forgotten this round.
    fn forget_gone(&mut self, summary: &RoundSummary) {
        if summary.errors.iter().any(|(c, _)| *c != META_CLUSTER_ID) {
            return;
        }
        let found: HashSet<(i64, KunlunXid)> = summary
            .clusters
            .iter()
            .filter(|(c, _)| *c != META_CLUSTER_ID)
            .flat_map(|(_, r)| r.seen.iter().copied())
            .collect();
        let unscanned: HashSet<i64> = summary
            .clusters
            .iter()
            .flat_map(|(_, r)| r.unreachable.iter().map(|(s, _)| *s))
            .collect();
        self.clock.round_done(&found, &unscanned);
    }

    /// Branches whose first sighting the resolver remembers.
    pub fn remembered(&self) -> usize {
        self.clock.len()
    }

    async fn purge(
        &self,
        clusters: &[kunlun_meta::model::Cluster],
        summary: &RoundSummary,
    ) -> usize {
        let mut total = 0;
        for c in clusters {
            let Some((_, r)) = summary.clusters.iter().find(|(id, _)| *id == c.id) else {
                continue;
            };
            if !r.complete() {
                continue;
            }
            let prepared: Vec<KunlunXid> = r
                .seen
                .iter()
                .filter(|(s, _)| *s != META_SHARD_ID)
                .map(|(_, x)| *x)
                .collect();
            match purge_commit_log(&self.store, &c.name, self.cfg.retention, &prepared).await {
                Ok(n) => total += n,
                Err(e) => tracing::warn!(cluster = %c.name, error = %e, "commit-log purge failed"),
            }
        }
        self.metrics.add_purged(total as u64);
        total
    }
}
