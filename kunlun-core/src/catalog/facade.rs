//! The catalog part of the [`ClusterManager`] facade: start the [`CatalogSync`] actor, push a
//! cluster's topology on demand, and check what each compute node holds (for `cluster show`).
//!
//! Invariant: the actor runs on the manager's task tracker and watches its cancellation
//! token, so it stops with the manager.

use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use super::{
    desired_for_cluster, push_cluster, read_catalog, CatalogOptions, CatalogSync,
    CatalogSyncConfig, PushReport,
};
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
    /// Starts the catalog sync as a background task once the store is open: every `interval`
    /// it re-pushes clusters whose topology changed or whose last push missed a compute node.
    pub fn start_catalog_sync(&self, interval: Duration) {
        let me = self.clone();
        let cancel = self.cancellation_token();
        self.tasks().spawn(async move {
            let store = loop {
                match me.store() {
                    Ok(s) => break s.clone(),
                    Err(Error::ShuttingDown) => return,
                    Err(_) => tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    },
                }
            };
            let cfg = CatalogSyncConfig {
                interval,
                ..CatalogSyncConfig::default()
            };
            CatalogSync::new(store, cfg).run_forever(cancel).await;
        });
    }

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

#[cfg(test)]
mod tests {
    use kunlun_meta::store::StoreConfig;

    use super::*;
    use crate::CoreConfig;

    #[tokio::test]
    async fn the_sync_waits_for_the_store_and_stops_with_the_manager() {
        let store = StoreConfig {
            connect_timeout: Duration::from_millis(100),
            ..StoreConfig::mysql(vec!["127.0.0.1:1".into()], "u", "p", "kunlun_metadata_db")
        };
        let cfg = CoreConfig {
            connect_retry_initial: Duration::from_millis(20),
            connect_retry_max: Duration::from_millis(50),
            ..CoreConfig::default()
        };
        let m = ClusterManager::connect(cfg, store);
        m.start_catalog_sync(Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(matches!(
            m.push_catalog(1).await,
            Err(Error::Unavailable(_))
        ));
        m.shutdown(Duration::from_secs(5)).await;
        assert!(m.tasks().is_empty(), "every task joined");
    }
}
