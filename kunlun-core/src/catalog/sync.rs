//! `CatalogSync`: the actor that keeps every compute node's catalog current. Each round it
//! re-pushes a cluster whose rows changed since its last complete push, or whose last push
//! missed a compute node, so a compute node that was down catches up once it answers.
//!
//! Each round also brings the grants of storage nodes not yet checked by this process to
//! least privilege ([`crate::jobs::grants`]): the upgrade of clusters installed with
//! `ALL PRIVILEGES`; a node counts as checked once it answered.
//!
//! Invariant: a cluster counts as pushed only when every in-service compute node took the
//! rows; its digest is then remembered, so an unchanged, fully pushed cluster costs one
//! metadata read per round and no compute-node connection (except the periodic full resync).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kunlun_meta::model::ClusterStatus;
use kunlun_meta::store::Store;
use tokio_util::sync::CancellationToken;

use super::push::{desired_for_cluster, push_cluster, PushReport};
use super::CatalogOptions;
use crate::error::Result;

/// Settings of the catalog sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSyncConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// Every this many rounds every cluster is pushed even if unchanged (a compute node
    /// rebuilt from scratch gets its rows back); 0 never.
    pub resync_every: u32,
    /// Deadlines; the TLS part is replaced by the store's [`kunlun_meta::Store::cluster_tls`]
    /// (one setting for every push of the manager).
    pub options: CatalogOptions,
    /// The clusters pushed (`clusters_to_serve`). Default: every cluster.
    pub clusters: crate::ClusterScope,
}

impl Default for CatalogSyncConfig {
    fn default() -> Self {
        CatalogSyncConfig {
            interval: Duration::from_secs(10),
            resync_every: 30,
            options: CatalogOptions::default(),
            clusters: crate::ClusterScope::all(),
        }
    }
}

/// The actor; see the module doc.
#[derive(Debug)]
pub struct CatalogSync {
    store: Store,
    config: CatalogSyncConfig,
    /// Digest of the last push that reached every compute node, by cluster.
    pushed: HashMap<i64, u64>,
    /// Storage nodes whose system users' grants were checked (and fixed) by this process.
    grants_checked: HashSet<i64>,
    rounds: u64,
}

impl CatalogSync {
    pub fn new(store: Store, mut config: CatalogSyncConfig) -> CatalogSync {
        config.options.tls = store.cluster_tls().clone();
        CatalogSync {
            store,
            config,
            pushed: HashMap::new(),
            grants_checked: HashSet::new(),
            rounds: 0,
        }
    }

    /// Runs rounds every `interval` until `cancel` fires.
    pub async fn run_forever(mut self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.round() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "catalog sync round failed; retrying next round");
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    /// One round: the reports of the clusters it pushed (unchanged ones are skipped).
    pub async fn round(&mut self) -> Result<Vec<PushReport>> {
        // `checked_rem` is `None` for 0 (never a full round).
        let full = self.rounds.checked_rem(u64::from(self.config.resync_every)) == Some(0);
        self.rounds += 1;
        let clusters: Vec<i64> = self
            .store
            .list_clusters()
            .await?
            .into_iter()
            .filter(|c| c.status == ClusterStatus::Inuse && self.config.clusters.serves(c.id))
            .map(|c| c.id)
            .collect();
        self.pushed.retain(|id, _| clusters.contains(id));
        let mut reports = Vec::new();
        for &id in &clusters {
            match crate::jobs::grants::fix_cluster_grants(&self.store, id, &self.grants_checked)
                .await
            {
                Ok(done) => self
                    .grants_checked
                    .extend(done.iter().filter(|g| g.result.is_ok()).map(|g| g.node_id)),
                Err(e) => tracing::warn!(cluster_id = id, error = %e, "grants not checked"),
            }
        }
        for id in clusters {
            if !full {
                match (
                    desired_for_cluster(&self.store, id).await,
                    self.pushed.get(&id),
                ) {
                    (Ok((_, rows)), Some(last)) if rows.digest() == *last => continue,
                    (Err(e), _) => {
                        tracing::warn!(cluster_id = id, error = %e, "catalog of cluster not computed");
                        continue;
                    }
                    _ => {}
                }
            }
            match push_cluster(&self.store, id, &self.config.options).await {
                Ok(r) => {
                    if r.all_ok() {
                        self.pushed.insert(id, r.digest);
                    } else {
                        self.pushed.remove(&id);
                    }
                    reports.push(r);
                }
                Err(e) => {
                    self.pushed.remove(&id);
                    tracing::warn!(cluster_id = id, error = %e, "catalog push failed");
                }
            }
        }
        Ok(reports)
    }
}
