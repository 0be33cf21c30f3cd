//! One round of the monitor: read the topology, probe every node (each over the session it
//! kept), update the per-node memory and decide for each shard; the urgent rounds after a
//! primary's watch session ended; the watches kept in step with the primaries.
//!
//! Invariant: only a full round (not a scoped one) forgets nodes that are gone and counts in
//! the round statistics.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use kunlun_meta::model::{HaMode, MemberState, NodeStatus, ShardNode};
use kunlun_meta::store::repo;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{HaMonitor, Progress};
use crate::error::Result;
use crate::ha::detect::NodeRef;
use crate::ha::probe::{probe_kept, probe_options, NodeProbe};
use crate::ha::state::{NodeHealth, NodeState};
use crate::ha::watch::WatchEvent;
use crate::ha::ShardTopo;
use crate::storage::NodeAddr;

/// Most shards a scoped round reads one by one; more read the whole topology once.
const SCOPED_READ_MAX: usize = 8;

impl HaMonitor {
    /// A just-promoted primary's per-node memory starts from its seed probe.
    pub(super) fn seed_track(&mut self, id: i64, p: NodeProbe) {
        let t = self.nodes.entry(id).or_default();
        t.failures = 0;
        t.first_failure = None;
        t.last_ok = p.reachable.then_some(p);
    }

    pub(in crate::ha) async fn topology(&self) -> Result<Vec<ShardTopo>> {
        let (clusters, nodes) = self
            .store
            .read(async |tx| {
                let clusters = repo::clusters::list(tx).await?;
                let nodes = repo::nodes::list(tx, None).await?;
                Ok((clusters, nodes))
            })
            .await?;
        let mut by_cluster: HashMap<i64, Vec<ShardNode>> = HashMap::new();
        for n in nodes
            .into_iter()
            .filter(|n| n.status != NodeStatus::Deleted)
        {
            by_cluster.entry(n.db_cluster_id).or_default().push(n);
        }
        let mut out: Vec<ShardTopo> = Vec::new();
        for c in clusters
            .into_iter()
            .filter(|c| c.ha_mode == HaMode::Rbr && self.cfg.clusters.serves(c.id))
        {
            let mut by_shard: HashMap<i64, Vec<ShardNode>> = HashMap::new();
            for n in by_cluster.remove(&c.id).unwrap_or_default() {
                by_shard.entry(n.shard_id).or_default().push(n);
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

    /// The topology of the shards in `scope` only, read shard by shard (an urgent round runs
    /// every [`super::URGENT_GAP`]: reading the whole fleet each time would slow the very
    /// probes that decide a crash). Each shard's cluster is the one the last round saw;
    /// when one is not known yet, the whole topology is read and cut down.
    async fn scoped_topology(&self, scope: &HashSet<i64>) -> Result<Vec<ShardTopo>> {
        let mut wanted: Vec<(i64, i64)> = Vec::with_capacity(scope.len());
        for shard in scope {
            match self.cluster_of.get(shard) {
                // Two reads per shard: beyond a few shards (a machine holding many primaries
                // died) the one whole read costs less.
                Some(c) if scope.len() <= SCOPED_READ_MAX => wanted.push((*c, *shard)),
                _ => {
                    let mut topo = self.topology().await?;
                    topo.retain(|s| scope.contains(&s.shard_id));
                    return Ok(topo);
                }
            }
        }
        wanted.sort_unstable();
        let rows = self
            .store
            .read(async |tx| {
                let mut out = Vec::with_capacity(wanted.len());
                for &(cluster, shard) in &wanted {
                    let c = match repo::clusters::get(tx, cluster).await {
                        Ok(c) => c,
                        // Dropped since: nothing of it to probe.
                        Err(kunlun_meta::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(e),
                    };
                    let mut nodes = repo::nodes::list(tx, Some(shard)).await?;
                    nodes.retain(|n| n.db_cluster_id == c.id);
                    out.push((c, shard, nodes));
                }
                Ok(out)
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter(|(c, _, _)| c.ha_mode == HaMode::Rbr && self.cfg.clusters.serves(c.id))
            .filter_map(|(cluster, shard_id, nodes)| {
                let nodes: Vec<ShardNode> = nodes
                    .into_iter()
                    .filter(|n| n.status != NodeStatus::Deleted)
                    .collect();
                (!nodes.is_empty()).then_some(ShardTopo {
                    cluster,
                    shard_id,
                    nodes,
                })
            })
            .collect())
    }

    /// A watch's report: the node's session ended; its shard is probed at once.
    pub(super) fn watch_ended(&mut self, ev: WatchEvent) {
        if let Some(t) = self.nodes.get_mut(&ev.node_id) {
            t.watch_lost = Some(ev.at);
        }
        let cluster = self
            .cluster_of
            .get(&ev.shard_id)
            .copied()
            .unwrap_or_default();
        self.shared
            .event(cluster, ev.shard_id, Some(ev.node_id), ev.why);
        self.urgent.insert(ev.shard_id, ev.at);
    }

    /// Probes the urgent shards (see [`Self::run`]); true while some stay urgent.
    pub(super) async fn urgent_round(&mut self) -> bool {
        let now = Instant::now();
        self.urgent
            .retain(|_, since| now.duration_since(*since) < super::URGENT_FOR);
        let scope: HashSet<i64> = self
            .urgent
            .keys()
            .filter(|s| !self.busy.contains_key(s))
            .copied()
            .collect();
        if scope.is_empty() {
            self.urgent.clear();
            return false;
        }
        if let Err(e) = self.round_in(Some(&scope)).await {
            tracing::warn!(error = %e, "HA urgent probe failed");
        }
        // Urgent while the primary the watch lost is still recorded, failing and not taken
        // over by a failover task.
        // Borrowed field by field: cloning the fleet-wide primary map every 20 ms cost more
        // than the decision.
        let (busy, topo, nodes) = (&self.busy, &self.topology_cache, &self.nodes);
        self.urgent.retain(|shard, _| {
            !busy.contains_key(shard)
                && topo.get(shard).is_some_and(|p| {
                    nodes
                        .get(p)
                        .is_some_and(|t| t.watch_lost.is_some() && t.failures > 0)
                })
        });
        !self.urgent.is_empty()
    }

    /// One round over every shard. Returns true while some primary is suspect.
    pub async fn round(&mut self) -> Result<bool> {
        self.round_in(None).await
    }

    /// A round over the shards in `scope` (every shard when `None`; only such a full round
    /// forgets nodes that are gone and counts in the round statistics).
    async fn round_in(&mut self, scope: Option<&HashSet<i64>>) -> Result<bool> {
        let topo = match scope {
            Some(scope) => self.scoped_topology(scope).await?,
            None => self.topology().await?,
        };
        let probes = self.probe_all(&topo).await;
        for s in &topo {
            self.cluster_of.insert(s.shard_id, s.cluster.id);
            if let Some(p) = s.primary() {
                self.topology_cache.insert(s.shard_id, p.id);
            }
        }
        if scope.is_some() {
            return self.decide(&topo, &probes, scope).await;
        }
        let present: HashSet<i64> = probes.keys().copied().collect();
        self.nodes.retain(|id, _| present.contains(id));
        self.sessions.retain(|id, _| present.contains(id));
        self.shared.forget_missing(&present);
        let shards: HashSet<i64> = topo.iter().map(|s| s.shard_id).collect();
        self.topology_cache.retain(|s, _| shards.contains(s));
        self.cluster_of
            .retain(|s, _| shards.contains(s) || self.busy.contains_key(s));
        // An errant node stays listed until it is an active member again (rebuilt) or gone;
        // a busy shard's topology may predate its task's metadata write, so it is left alone.
        let active: HashSet<i64> = topo
            .iter()
            .flat_map(|s| s.nodes.iter())
            .filter(|n| n.status == NodeStatus::Active)
            .map(|n| n.id)
            .collect();
        self.shared.retain_errant(|id, shard| {
            self.busy.contains_key(&shard) || (present.contains(&id) && !active.contains(&id))
        });
        let failures = probes.values().filter(|p| !p.reachable).count() as u64;
        self.shared.count_round(probes.len() as u64, failures);
        self.decide(&topo, &probes, None).await
    }

    /// Updates the nodes' memory from `probes` and decides for each shard of `topo`; keeps
    /// the watches of the shards in `scope` (all when `None`) in step with their primaries.
    async fn decide(
        &mut self,
        topo: &[ShardTopo],
        probes: &HashMap<i64, NodeProbe>,
        scope: Option<&HashSet<i64>>,
    ) -> Result<bool> {
        let mut suspect = false;
        for s in topo {
            self.update_tracks(s, probes);
            if self.busy.contains_key(&s.shard_id) {
                // Its task acts on these nodes; decide again once it reported back.
                continue;
            }
            if let Err(e) = self.handle_shard(s, probes).await {
                tracing::warn!(shard = s.shard_id, error = %e, "HA handling of shard failed");
            }
            if let Some(p) = s.primary() {
                suspect |= self.nodes.get(&p.id).is_some_and(|t| t.failures > 0);
            }
        }
        self.publish_rejoining();
        let up: Vec<(i64, i64, NodeAddr)> = topo
            .iter()
            .filter(|s| !self.busy.contains_key(&s.shard_id))
            .filter_map(|s| s.primary().map(|p| (s.shard_id, p)))
            .filter(|(_, p)| probes.get(&p.id).is_some_and(|pr| pr.reachable))
            .map(|(shard, p)| (shard, p.id, NodeAddr::from(p)))
            .collect();
        self.watches.sync(
            scope,
            &up,
            probe_options(self.cfg.interval, self.cfg.storage),
        );
        self.shared.set_watched(self.watches.watched());
        Ok(suspect)
    }

    /// Probes every node of `topo`, each over the session its last probe kept open (see
    /// [`probe_kept`]); a node whose address or login changed gets a new one.
    async fn probe_all(&mut self, topo: &[ShardTopo]) -> HashMap<i64, NodeProbe> {
        let sem = Arc::new(Semaphore::new(self.cfg.probe_concurrency.max(1)));
        let opts = probe_options(self.cfg.interval, self.cfg.storage);
        let mut set = JoinSet::new();
        for n in topo.iter().flat_map(|s| s.nodes.iter()) {
            let (sem, addr, id) = (sem.clone(), NodeAddr::from(n), n.id);
            let kept = self
                .sessions
                .remove(&id)
                .filter(|(a, _)| *a == addr)
                .map(|(_, c)| c);
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let (p, kept) = probe_kept(&addr, opts, kept).await;
                (id, addr, p, kept)
            });
        }
        let mut out = HashMap::new();
        while let Some(r) = set.join_next().await {
            if let Ok((id, addr, p, kept)) = r {
                if let Some(c) = kept {
                    self.sessions.insert(id, (addr, c));
                }
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
                t.watch_lost = None;
                // The first probe that saw this progress, by when its answer came: nothing
                // arrived between then and when a later probe showing the same was sent.
                let progress: Progress = p.channels.iter().map(|c| c.progress()).collect();
                if t.progress
                    .as_ref()
                    .is_none_or(|(seen, _)| *seen != progress)
                {
                    let answered = p.channels_read.map_or_else(Instant::now, |(_, a)| a);
                    t.progress = Some((progress, answered));
                }
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

    pub(super) fn node_ref(&self, n: &ShardNode) -> NodeRef {
        NodeRef {
            id: n.id,
            host: n.hostaddr.clone(),
            port: n.port,
            master_priority: n.master_priority,
            no_switch: self.shared.node_no_switch(n.id),
        }
    }
}
