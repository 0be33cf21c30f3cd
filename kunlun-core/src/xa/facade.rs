//! XA recovery's handle for a leadership term ([`crate::Term`]): the settings the resolver
//! was started with and its counters, listing in-doubt branches and resolving one by hand.
//!
//! Invariant: these are thin and see nothing above `xa`: the resolver is an actor the term
//! spawns (stopped with it), and every manual action goes through [`super::manual`], which
//! keeps it consistent with the commit log.

use std::sync::{Arc, OnceLock};

use kunlun_meta::api::{XaInDoubt, XaResolveRequest, XaResolveResult};
use kunlun_meta::model::TxnCmd;
use kunlun_meta::store::Store;

use super::manual::{list_in_doubt, resolve_by_hand};
use super::metrics::{XaMetrics, XaStats};
use super::round::XaConfig;
use crate::config::CoreConfig;
use crate::error::Result;

/// What a term keeps for XA recovery: the settings it was started with and the counters.
#[derive(Debug, Default)]
pub struct XaState {
    config: OnceLock<XaConfig>,
    metrics: Arc<XaMetrics>,
}

impl XaState {
    /// Records the resolver's settings; `false` when a resolver was configured already (a
    /// second start is a no-op).
    pub fn configure(&self, cfg: XaConfig) -> bool {
        self.config.set(cfg).is_ok()
    }

    /// The counters the resolver and manual resolutions add to.
    pub fn metrics(&self) -> Arc<XaMetrics> {
        self.metrics.clone()
    }

    /// The XA settings in use: those given to [`configure`](Self::configure), else the
    /// engine's configuration.
    fn config(&self, core: &CoreConfig) -> XaConfig {
        self.config
            .get()
            .cloned()
            .unwrap_or_else(|| XaConfig::from_core(core))
    }

    /// Counters of XA recovery (resolver and manual resolutions), for `/metrics`.
    pub fn stats(&self) -> XaStats {
        self.metrics.snapshot()
    }

    /// The prepared Kunlun branches on every shard primary of a cluster, with their age and
    /// the decision logged for them (if any).
    pub async fn in_doubt(
        &self,
        store: &Store,
        core: &CoreConfig,
        cluster_id: i64,
    ) -> Result<XaInDoubt> {
        let cluster = store.get_cluster(cluster_id).await?;
        list_in_doubt(store, &cluster, &self.config(core)).await
    }

    /// Ends one in-doubt transaction of a cluster by hand, as far as the commit log allows,
    /// and records it in the audit trail under `user`.
    pub async fn resolve(
        &self,
        store: &Store,
        core: &CoreConfig,
        cluster_id: i64,
        xid: &str,
        req: &XaResolveRequest,
        user: Option<&str>,
    ) -> Result<XaResolveResult> {
        let cluster = store.get_cluster(cluster_id).await?;
        let r = resolve_by_hand(store, &cluster, xid, req, user, &self.config(core)).await?;
        let n = r.ended_on.len() as u64;
        match r.decision {
            TxnCmd::Commit => self.metrics.add_committed(n),
            TxnCmd::Abort => self.metrics.add_rolled_back(n),
        }
        Ok(r)
    }
}
