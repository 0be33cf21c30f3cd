//! The catalog reads and pushes of the always-on engine ([`ClusterManager`]): push a
//! cluster's topology on demand, and check what each compute node holds (for `cluster show`).
//! The [`super::CatalogSync`] actor is started by a leadership term ([`crate::Term`]).
//!
//! Invariant: both act on request only and need nothing but the store, so every instance
//! (leader or follower) serves them.

use serde::Serialize;
use tokio::task::JoinSet;

use super::{desired_for_cluster, push_cluster, read_catalog, CatalogOptions, PushReport};
use crate::error::{Error, Result};
use crate::ClusterManager;

/// Whether one compute node's catalog matches the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompCatalog {
    pub comp_node_id: i64,
    pub name: String,
    /// `true` when its rows equal what the metadata says; `false` when they differ (the
    /// catalog sync will push); `None` when it could not be read.
    pub in_sync: Option<bool>,
    /// Primary (`master_node_id`) it routes each shard to, by shard id.
    pub primaries: Vec<(i64, i64)>,
    pub error: Option<String>,
}

impl ClusterManager {
    /// Pushes cluster `cluster_id`'s topology to its compute nodes now.
    pub async fn push_catalog(&self, cluster_id: i64) -> Result<PushReport> {
        let store = self.store()?;
        push_cluster(store, cluster_id, &CatalogOptions::for_store(store)).await
    }

    /// Reads every in-service compute node's catalog of cluster `cluster_id` (in parallel)
    /// and compares it with the metadata.
    pub async fn catalog_status(&self, cluster_id: i64) -> Result<Vec<CompCatalog>> {
        let store = self.store()?.clone();
        let (comps, rows) = desired_for_cluster(&store, cluster_id).await?;
        let opts = CatalogOptions::for_store(&store);
        let mut set = JoinSet::new();
        for c in comps {
            let want = rows.for_comp(c.id);
            let (opts, store) = (opts.clone(), store.clone());
            set.spawn(async move {
                let got = read_catalog(&store, &c, &opts).await;
                let (in_sync, primaries, error) = match got {
                    Ok(g) => (
                        Some(g == want),
                        g.shards.iter().map(|s| (s.id, s.master_node_id)).collect(),
                        None,
                    ),
                    Err(e) => (None, Vec::new(), Some(e.to_string())),
                };
                CompCatalog {
                    comp_node_id: c.id,
                    name: c.name.clone(),
                    in_sync,
                    primaries,
                    error,
                }
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.map_err(|e| Error::Internal(format!("catalog read task failed: {e}")))?);
        }
        out.sort_by_key(|c| c.comp_node_id);
        Ok(out)
    }
}
