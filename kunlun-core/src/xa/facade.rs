//! The XA part of the [`ClusterManager`] facade: start the resolver, list in-doubt branches,
//! resolve one by hand, read the counters.
//!
//! Invariant: these are thin: the resolver is an actor on the manager's tasks (stopped with
//! it), and every manual action goes through [`super::manual`], which keeps it consistent with
//! the commit log.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kunlun_meta::api::{XaInDoubt, XaResolveRequest, XaResolveResult};
use kunlun_meta::model::TxnCmd;

use super::manual::{list_in_doubt, resolve_by_hand};
use super::metrics::{XaMetrics, XaStats};
use super::resolver::XaResolver;
use super::round::XaConfig;
use crate::error::Result;
use crate::ClusterManager;

/// What the manager keeps for XA recovery: the settings it was started with and the counters.
#[derive(Debug, Default)]
pub struct XaState {
    config: OnceLock<XaConfig>,
    metrics: Arc<XaMetrics>,
}

impl ClusterManager {
    /// Starts the XA resolver once the store is open (a second call is a no-op). It stops
    /// with the manager.
    pub fn start_xa(&self, cfg: XaConfig) {
        let (tasks, state) = self.xa_parts();
        if state.config.set(cfg.clone()).is_err() {
            return;
        }
        let me = self.clone();
        let cancel = self.cancellation_token();
        let metrics = state.metrics.clone();
        tasks.spawn(async move {
            let store = loop {
                if let Ok(s) = me.store() {
                    break s.clone();
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            };
            tracing::info!(interval = ?cfg.interval, wait_max = ?cfg.wait_max, "XA recovery started");
            XaResolver::new(store, cfg, metrics).run(cancel).await;
        });
    }

    /// The XA settings in use: those given to [`start_xa`](Self::start_xa), else the
    /// engine's configuration.
    fn xa_config(&self) -> XaConfig {
        let (_, state) = self.xa_parts();
        state
            .config
            .get()
            .cloned()
            .unwrap_or_else(|| XaConfig::from_core(self.config()))
    }

    /// Counters of XA recovery (resolver and manual resolutions), for `/metrics`.
    pub fn xa_stats(&self) -> XaStats {
        self.xa_parts().1.metrics.snapshot()
    }

    /// The prepared Kunlun branches on every shard primary of a cluster, with their age and
    /// the decision logged for them (if any).
    pub async fn xa_in_doubt(&self, cluster_id: i64) -> Result<XaInDoubt> {
        let store = self.store()?;
        let cluster = store.get_cluster(cluster_id).await?;
        list_in_doubt(store, &cluster, &self.xa_config()).await
    }

    /// Ends one in-doubt transaction of a cluster by hand, as far as the commit log allows,
    /// and records it in the audit trail under `user`.
    pub async fn xa_resolve(
        &self,
        cluster_id: i64,
        xid: &str,
        req: &XaResolveRequest,
        user: Option<&str>,
    ) -> Result<XaResolveResult> {
        let store = self.store()?;
        let cluster = store.get_cluster(cluster_id).await?;
        let r = resolve_by_hand(store, &cluster, xid, req, user, &self.xa_config()).await?;
        let n = r.ended_on.len() as u64;
        let m = &self.xa_parts().1.metrics;
        match r.decision {
            TxnCmd::Commit => m.add_committed(n),
            TxnCmd::Abort => m.add_rolled_back(n),
        }
        Ok(r)
    }
}
