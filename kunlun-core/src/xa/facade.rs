//! The XA part of the [`ClusterManager`] facade: what the HTTP layer and embedding
//! applications call to list in-doubt branches and resolve one by hand.
//!
//! Invariant: these are thin: they look the cluster up and call [`super::manual`], which keeps
//! every manual action consistent with the commit log.

use kunlun_meta::api::{XaInDoubt, XaResolveRequest, XaResolveResult};

use super::manual::{list_in_doubt, resolve_by_hand};
use super::round::XaConfig;
use crate::error::Result;
use crate::ClusterManager;

impl ClusterManager {
    /// The prepared Kunlun branches on every shard primary of a cluster, with their age and
    /// the decision logged for them (if any).
    pub async fn xa_in_doubt(&self, cluster_id: i64) -> Result<XaInDoubt> {
        let store = self.store()?;
        let cluster = store.get_cluster(cluster_id).await?;
        list_in_doubt(store, &cluster, &XaConfig::from_core(self.config())).await
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
        resolve_by_hand(
            store,
            &cluster,
            xid,
            req,
            user,
            &XaConfig::from_core(self.config()),
        )
        .await
    }
}
