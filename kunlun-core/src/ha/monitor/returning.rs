//! What the monitor does for nodes that come back: an old primary that answers again rejoins
//! (or is kept out), and a replica whose replication threads stayed stopped is tended
//! ([`crate::ha::upkeep`]).
//!
//! Invariant: the status written after the repoint is conditional on the status this round
//! decided from, so a node a delete job marked `deleted` meanwhile is never brought back.

use std::collections::HashMap;

use kunlun_meta::model::{MemberState, NodeStatus, ShardNode};
use kunlun_meta::store::repo;

use super::HaMonitor;
use crate::error::Result;
use crate::ha::detect::{rejoin, Rejoin};
use crate::ha::gtid::GtidPos;
use crate::ha::probe::NodeProbe;
use crate::ha::upkeep::{self, Tended};
use crate::ha::ShardTopo;
use crate::ha::{promote, records};
use crate::storage::NodeAddr;

impl HaMonitor {
    /// Replica upkeep (see [`crate::ha::upkeep`]) of every active replica that answered, while
    /// the primary answers.
    pub(super) async fn tend_replicas(
        &mut self,
        s: &ShardTopo,
        primary: &ShardNode,
        probes: &HashMap<i64, NodeProbe>,
    ) {
        if !probes.get(&primary.id).is_some_and(|p| p.reachable) {
            return;
        }
        let ctx = self.step_context();
        for n in s.nodes.iter().filter(|n| {
            n.id != primary.id
                && n.status == NodeStatus::Active
                && n.member_state == MemberState::Replica
        }) {
            let Some(p) = probes.get(&n.id) else { continue };
            let tended = upkeep::tend(&ctx, primary, n, p).await;
            let track = self.nodes.entry(n.id).or_default();
            let what = match tended {
                Tended::Fine => {
                    track.upkeep = None;
                    continue;
                }
                Tended::Acted { repointed, what } => {
                    track.upkeep = None;
                    self.shared.count_upkeep(repointed);
                    what
                }
                Tended::Report(what) => {
                    if track.upkeep.as_deref() == Some(what.as_str()) {
                        continue;
                    }
                    track.upkeep = Some(what.clone());
                    what
                }
            };
            self.shared
                .event(s.cluster.id, s.shard_id, Some(n.id), what);
        }
    }

    /// An old primary that answers again rejoins as a replica when it holds nothing beyond
    /// the new primary's promotion point; otherwise it stays inactive, marked for rebuild.
    pub(super) async fn rejoin_returning(
        &mut self,
        s: &ShardTopo,
        primary: &ShardNode,
        probes: &HashMap<i64, NodeProbe>,
    ) -> Result<()> {
        let Some(st) = self.shards.get_mut(&s.shard_id) else {
            return Ok(());
        };
        // A node gone from this round's topology was deleted (or its row removed) by a job:
        // it will not rejoin.
        let (known, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut st.rejoining)
            .into_iter()
            .partition(|r| s.nodes.iter().any(|n| n.id == r.old));
        let (back, waiting): (Vec<_>, Vec<_>) = known
            .into_iter()
            .partition(|r| probes.get(&r.old).is_some_and(|p| p.reachable));
        st.rejoining = waiting;
        for r in gone {
            let fate = skipped_rejoin(None);
            self.set_rejoin_fate(s, r.old, r.record, "did not return", fate)
                .await;
        }
        let mut retry = Vec::new();
        for r in back {
            let Some(node) = s.nodes.iter().find(|n| n.id == r.old) else {
                continue;
            };
            // The probe's position may predate a commit the node was still finishing when it
            // came back; fence it first and read the position afterwards, or try next round.
            let own = match promote::fence_and_pos(&NodeAddr::from(node), self.cfg.storage).await {
                Ok(own) => own,
                Err(_) => {
                    retry.push(r);
                    continue;
                }
            };
            let (own, at) = match (GtidPos::parse(&own), GtidPos::parse(&r.promoted_at)) {
                (Ok(a), Ok(b)) => (a, b),
                _ => continue,
            };
            let fate = match rejoin(&own, &at) {
                Rejoin::AsReplica => match self.rejoin_as_replica(s, node, primary).await {
                    Ok(fate) => fate,
                    Err(e) => {
                        // Metadata unreachable: the repoint is idempotent, try next round.
                        tracing::warn!(node = node.id, error = %e, "rejoin not recorded; retrying");
                        retry.push(r);
                        continue;
                    }
                },
                Rejoin::Rebuild { errant } => {
                    self.shared.mark_errant(crate::ha::ErrantNode {
                        node_id: node.id,
                        shard_id: s.shard_id,
                        cluster_id: s.cluster.id,
                        gtids: errant.clone(),
                        record: r.record,
                    });
                    format!("kept out for rebuild: errant transactions {errant}")
                }
            };
            self.set_rejoin_fate(s, node.id, r.record, "returned", fate)
                .await;
        }
        if let Some(st) = self.shards.get_mut(&s.shard_id) {
            st.rejoining.extend(retry);
        }
        Ok(())
    }

    /// Announces and stores the fate of a returning old primary.
    async fn set_rejoin_fate(
        &self,
        s: &ShardTopo,
        node_id: i64,
        record: u64,
        what: &str,
        fate: String,
    ) {
        self.shared.event(
            s.cluster.id,
            s.shard_id,
            Some(node_id),
            format!("old primary {what}: {fate}"),
        );
        if record < records::MEMORY_ID_BASE {
            if let Err(e) = records::set_fate(&self.store, record, &fate).await {
                tracing::warn!(record, error = %e, "old primary's fate not stored");
            }
        }
        self.shared.set_fate(record, fate);
    }

    /// Repoints a returning old primary at `primary` and records it active again, but only
    /// while metadata still holds it in the status this round saw: a delete job that marked
    /// it `deleted` meanwhile wins, and the rejoin is skipped. Returns the node's fate.
    async fn rejoin_as_replica(
        &self,
        s: &ShardTopo,
        node: &ShardNode,
        primary: &ShardNode,
    ) -> Result<String> {
        let (id, seen) = (node.id, node.status);
        // Cheap early look, so a node deleted long ago is not even repointed.
        let now = self
            .store
            .read(async |tx| repo::nodes::get(tx, id).await)
            .await
            .map(|n| n.status);
        if now.as_ref().map_or(true, |st| *st != seen) {
            return Ok(skipped_rejoin(now.ok()));
        }
        let (repl, _) = crate::ha::failover::cluster_logins(&self.store, s.cluster.id).await;
        if let Err(e) = promote::repoint(
            &NodeAddr::from(node),
            &NodeAddr::from(primary),
            true,
            repl.as_ref(),
            self.cfg.storage,
        )
        .await
        {
            return Ok(format!("could not rejoin, kept out: {e}"));
        }
        crate::ha::WriteHook::call(
            self.cfg.before_write.as_ref(),
            crate::ha::WriteSite::Rejoin { node_id: id },
        )
        .await;
        let m = kunlun_meta::model::NodeMapMaster {
            cluster_id: s.cluster.id,
            node_host: crate::ha::failover::map_host(node),
            master_host: crate::ha::failover::map_host(primary),
            master_uuid: None,
        };
        let term = self.cfg.term.clone();
        let done = self
            .store
            .tx(async move |tx| {
                crate::ha::TermFence::check(term.as_ref(), tx).await?;
                if !repo::nodes::set_status_if(tx, id, seen, NodeStatus::Active).await? {
                    let now = repo::nodes::get(tx, id).await.ok().map(|n| n.status);
                    return Ok(Some(now));
                }
                repo::meta::set_node_master(tx, &m).await?;
                Ok(None)
            })
            .await?;
        Ok(match done {
            None => format!("rejoined as replica of node {}", primary.id),
            Some(now) => skipped_rejoin(now),
        })
    }
}

/// The fate of an old primary whose metadata changed while it was away (a delete job).
fn skipped_rejoin(now: Option<NodeStatus>) -> String {
    match now {
        Some(NodeStatus::Deleted) | None => {
            "not rejoined: the node was deleted meanwhile".to_string()
        }
        Some(st) => format!("not rejoined: its status changed to {st:?} meanwhile"),
    }
}
