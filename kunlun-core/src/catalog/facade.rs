//! The catalog part of the [`ClusterManager`] facade: start the [`CatalogSync`] actor and
//! push or read a cluster's compute-node catalogs on demand.
//!
//! Invariant: the actor runs on the manager's task tracker and watches its cancellation
//! token, so it stops with the manager.

use std::time::Duration;

use super::{push_cluster, CatalogOptions, CatalogSync, CatalogSyncConfig, PushReport};
use crate::error::{Error, Result};
use crate::ClusterManager;

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
        push_cluster(self.store()?, cluster_id, &CatalogOptions::default()).await
    }
}
