//! Automatic rebuild: a replica HA keeps out for rebuild (errant transactions, listed in
//! [`crate::ha::HaShared::errant_nodes`]) gets a `rebuild_node` job of its own when its
//! cluster's policy `auto_rebuild` is on (no policy row: on). A small actor of the leadership
//! term; the term glues it to HA (which lists the nodes) and to the jobs (which rebuild them),
//! so neither imports the other.
//!
//! Invariants: never two rebuilds of one node at once (a job is started only for a cluster no
//! unfinished job names, and never while this actor's own job for the node is unfinished);
//! after a failed rebuild the node waits a doubling backoff ([`AutoRebuildConfig`]) before the
//! next try, so a rebuild that keeps failing is not hammered; a node is rebuilt only while its
//! row says `inactive` replica (HA took it out; a node already back, or promoted, is left
//! alone); the decision is the pure [`due`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kunlun_meta::api::JobQuery;
use kunlun_meta::model::{ClusterPolicy, JobStatus, MemberState, NodeStatus, ShardNode};
use kunlun_meta::store::Store;
use tokio_util::sync::CancellationToken;

use crate::ha::ErrantNode;
use crate::jobs::kinds::rebuild_node::RebuildRequest;
use crate::ClusterManager;

/// Settings of the automatic rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoRebuildConfig {
    /// How often the errant list is looked at.
    pub interval: Duration,
    /// Wait after a node's first failed rebuild; doubled after each further failure.
    pub backoff_initial: Duration,
    /// Longest wait between two tries.
    pub backoff_max: Duration,
}

impl Default for AutoRebuildConfig {
    fn default() -> Self {
        AutoRebuildConfig {
            interval: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(60),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

impl AutoRebuildConfig {
    /// The wait after `failures` failed tries (at least one).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .backoff_initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        doubled.min(self.backoff_max)
    }
}

/// What the actor remembers of one node it tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// Its job, while unfinished.
    pub job_id: Option<i64>,
    pub failures: u32,
    /// Not before then.
    pub next_try: Instant,
}

/// A rebuild to start now: `(cluster_id, shard_id, node_id)`.
pub type Due = (i64, i64, i64);

/// The errant nodes to rebuild now (pure): the node row is an `inactive` replica of its shard,
/// its cluster's policy allows it, no unfinished job names its cluster, it has no unfinished
/// job of ours and its backoff is over; at most one per cluster (a job holds the cluster).
pub fn due(
    errant: &[ErrantNode],
    rows: &HashMap<i64, ShardNode>,
    policies: &HashMap<i64, ClusterPolicy>,
    busy: &HashSet<i64>,
    tried: &HashMap<i64, Tried>,
    now: Instant,
) -> Vec<Due> {
    let mut clusters = HashSet::new();
    let mut out = Vec::new();
    let mut sorted: Vec<&ErrantNode> = errant.iter().collect();
    sorted.sort_by_key(|e| e.node_id);
    for e in sorted {
        let Some(n) = rows.get(&e.node_id) else {
            continue;
        };
        let kept_out = n.status == NodeStatus::Inactive && n.member_state == MemberState::Replica;
        let allowed = policies
            .get(&n.db_cluster_id)
            .is_none_or(|p| p.auto_rebuild);
        let waiting = tried
            .get(&n.id)
            .is_some_and(|t| t.job_id.is_some() || t.next_try > now);
        if kept_out
            && allowed
            && !waiting
            && !busy.contains(&n.db_cluster_id)
            && clusters.insert(n.db_cluster_id)
        {
            out.push((n.db_cluster_id, n.shard_id, n.id));
        }
    }
    out
}

/// The actor.
pub struct AutoRebuild {
    store: Store,
    engine: ClusterManager,
    cfg: AutoRebuildConfig,
    tried: HashMap<i64, Tried>,
}

impl AutoRebuild {
    pub fn new(store: Store, engine: ClusterManager, cfg: AutoRebuildConfig) -> AutoRebuild {
        AutoRebuild {
            store,
            engine,
            cfg,
            tried: HashMap::new(),
        }
    }

    /// Every `interval` until `cancel`: one [`round`](Self::round) over what `errant` lists.
    pub async fn run(
        mut self,
        errant: impl Fn() -> Vec<ErrantNode> + Send,
        cancel: CancellationToken,
    ) {
        tracing::info!(interval = ?self.cfg.interval, "automatic rebuild started");
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.interval) => {}
            }
            let list = errant();
            if let Err(e) = self.round(&list).await {
                tracing::warn!(error = %e, "automatic rebuild: round failed");
            }
        }
    }

    /// One round: settles the jobs it started, then starts those [`due`] now. Returns the
    /// jobs started.
    pub async fn round(&mut self, errant: &[ErrantNode]) -> crate::Result<Vec<i64>> {
        let now = Instant::now();
        let listed: HashSet<i64> = errant.iter().map(|e| e.node_id).collect();
        for (node, t) in self.tried.iter_mut() {
            let Some(job_id) = t.job_id else { continue };
            let job = match self.store.get_job(job_id).await {
                Ok(j) => j,
                // Gone (retention): nothing to wait for.
                Err(kunlun_meta::Error::NotFound { .. }) => {
                    t.job_id = None;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match job.status {
                JobStatus::Done => t.job_id = None,
                JobStatus::Failed => {
                    t.job_id = None;
                    t.failures += 1;
                    let wait = self.cfg.backoff(t.failures);
                    t.next_try = now + wait;
                    tracing::warn!(node, job_id, failures = t.failures, retry_in = ?wait,
                        "automatic rebuild failed; backing off");
                }
                _ => {}
            }
        }
        // A node no longer listed (back in service, or gone) starts afresh next time.
        self.tried
            .retain(|id, t| t.job_id.is_some() || listed.contains(id));
        if errant.is_empty() {
            return Ok(Vec::new());
        }
        let rows: HashMap<i64, ShardNode> = self
            .store
            .list_shard_nodes(None)
            .await?
            .into_iter()
            .filter(|n| listed.contains(&n.id))
            .map(|n| (n.id, n))
            .collect();
        let policies = self.store.cluster_policies().await?;
        let busy = self.busy_clusters().await?;
        let mut started = Vec::new();
        for (cluster, shard, node) in due(errant, &rows, &policies, &busy, &self.tried, now) {
            let request = RebuildRequest {
                auto: true,
                ..RebuildRequest::node(shard, node)
            };
            let failures = self.tried.get(&node).map_or(0, |t| t.failures);
            match self.engine.rebuild_nodes(cluster, request).await {
                Ok(a) => {
                    tracing::info!(
                        node,
                        cluster,
                        job_id = a.job_id,
                        "automatic rebuild started"
                    );
                    started.push(a.job_id);
                    self.tried.insert(
                        node,
                        Tried {
                            job_id: Some(a.job_id),
                            failures,
                            next_try: now,
                        },
                    );
                }
                // Another job took the cluster meanwhile: next round.
                Err(crate::Error::Conflict(why)) if why.contains("job in progress") => {}
                Err(e) => {
                    let failures = failures + 1;
                    let wait = self.cfg.backoff(failures);
                    tracing::warn!(node, cluster, error = %e, retry_in = ?wait,
                        "automatic rebuild refused; backing off");
                    self.tried.insert(
                        node,
                        Tried {
                            job_id: None,
                            failures,
                            next_try: now + wait,
                        },
                    );
                }
            }
        }
        Ok(started)
    }

    /// Clusters an unfinished job names (by `job_info.cluster_id`).
    async fn busy_clusters(&self) -> crate::Result<HashSet<i64>> {
        let mut out = HashSet::new();
        for status in [JobStatus::NotStarted, JobStatus::Ongoing] {
            let q = JobQuery {
                status: Some(status),
                job_type: None,
                limit: Some(1000),
                after: None,
            };
            for j in self.store.list_jobs(&q).await? {
                if let Some(id) = j
                    .job_info
                    .as_ref()
                    .and_then(|i| i.get("cluster_id"))
                    .and_then(|v| v.as_i64())
                {
                    out.insert(id);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, cluster: i64, status: NodeStatus, state: MemberState) -> ShardNode {
        let mut n = crate::jobs::common::tests::node(id, state == MemberState::Source);
        n.db_cluster_id = cluster;
        n.shard_id = cluster * 10;
        n.status = status;
        n
    }

    fn errant(id: i64, cluster: i64) -> ErrantNode {
        ErrantNode {
            node_id: id,
            shard_id: cluster * 10,
            cluster_id: cluster,
            gtids: "0-9-1".into(),
            record: 1,
        }
    }

    fn rows(list: &[ShardNode]) -> HashMap<i64, ShardNode> {
        list.iter().map(|n| (n.id, n.clone())).collect()
    }

    #[test]
    fn an_inactive_errant_replica_is_rebuilt_once_per_cluster_at_a_time() {
        use MemberState::*;
        use NodeStatus::*;
        let now = Instant::now();
        let r = rows(&[
            row(1, 1, Inactive, Replica),
            row(2, 1, Inactive, Replica),
            row(3, 2, Inactive, Replica),
            row(4, 3, Active, Replica),
            row(5, 4, Inactive, Source),
        ]);
        let e: Vec<ErrantNode> = [(1, 1), (2, 1), (3, 2), (4, 3), (5, 4), (6, 5)]
            .iter()
            .map(|&(n, c)| errant(n, c))
            .collect();
        let none = HashMap::new();
        let got = due(&e, &r, &none, &HashSet::new(), &none_tried(), now);
        // One of cluster 1, cluster 2's; node 4 is back in service, 5 the primary, 6 gone.
        assert_eq!(got, vec![(1, 10, 1), (2, 20, 3)]);
        // A cluster another job changes waits.
        let busy: HashSet<i64> = [1].into();
        assert_eq!(
            due(&e, &r, &none, &busy, &none_tried(), now),
            vec![(2, 20, 3)]
        );
        // Policy off: left alone.
        let off: HashMap<i64, ClusterPolicy> = [(
            2,
            ClusterPolicy {
                auto_rebuild: false,
                ..ClusterPolicy::default_for(2)
            },
        )]
        .into();
        assert_eq!(
            due(&e, &r, &off, &HashSet::new(), &none_tried(), now),
            vec![(1, 10, 1)]
        );
    }

    fn none_tried() -> HashMap<i64, Tried> {
        HashMap::new()
    }

    #[test]
    fn a_node_with_a_job_or_a_backoff_running_waits() {
        let now = Instant::now();
        let r = rows(&[row(1, 1, NodeStatus::Inactive, MemberState::Replica)]);
        let e = [errant(1, 1)];
        let (p, b) = (HashMap::new(), HashSet::new());
        let mut t: HashMap<i64, Tried> = [(
            1,
            Tried {
                job_id: Some(9),
                failures: 0,
                next_try: now,
            },
        )]
        .into();
        assert!(due(&e, &r, &p, &b, &t, now).is_empty(), "its job runs");
        t.insert(
            1,
            Tried {
                job_id: None,
                failures: 1,
                next_try: now + Duration::from_secs(60),
            },
        );
        assert!(due(&e, &r, &p, &b, &t, now).is_empty(), "backing off");
        assert_eq!(
            due(&e, &r, &p, &b, &t, now + Duration::from_secs(61)),
            vec![(1, 10, 1)]
        );
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let c = AutoRebuildConfig::default();
        assert_eq!(c.backoff(1), Duration::from_secs(60));
        assert_eq!(c.backoff(2), Duration::from_secs(120));
        assert_eq!(c.backoff(3), Duration::from_secs(240));
        assert_eq!(c.backoff(50), Duration::from_secs(3600));
        assert_eq!(c.backoff(0), Duration::from_secs(60));
    }
}
