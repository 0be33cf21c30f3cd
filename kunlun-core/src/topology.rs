//! Read-only views of clusters, shards, nodes, jobs and stored failover records for the API:
//! the engine's reads, served by every instance.

use kunlun_meta::api::{ClusterDetail, JobQuery};
use kunlun_meta::model::{Cluster, CompNode, Job, Shard, ShardNode};

use crate::error::{Error, Result};
use crate::ha::FailoverRecord;
use crate::ClusterManager;

/// Most jobs one listing returns.
pub const MAX_JOB_LIMIT: u32 = 1000;

impl ClusterManager {
    /// Every cluster.
    pub async fn list_clusters(&self) -> Result<Vec<Cluster>> {
        Ok(self.store()?.list_clusters().await?)
    }

    /// A cluster with its shards, their nodes and its compute nodes.
    pub async fn cluster_detail(&self, id: i64) -> Result<ClusterDetail> {
        Ok(self.store()?.cluster_detail(id).await?)
    }

    /// The shards of a cluster (404 if the cluster does not exist).
    pub async fn list_shards(&self, cluster_id: i64) -> Result<Vec<Shard>> {
        let store = self.store()?;
        store.get_cluster(cluster_id).await?;
        Ok(store.list_shards(Some(cluster_id)).await?)
    }

    /// One shard.
    pub async fn get_shard(&self, id: i64) -> Result<Shard> {
        Ok(self.store()?.get_shard(id).await?)
    }

    /// The storage nodes of a shard (404 if the shard does not exist).
    pub async fn list_shard_nodes(&self, shard_id: i64) -> Result<Vec<ShardNode>> {
        let store = self.store()?;
        store.get_shard(shard_id).await?;
        Ok(store.list_shard_nodes(Some(shard_id)).await?)
    }

    /// The compute nodes of a cluster (404 if the cluster does not exist).
    pub async fn list_comp_nodes(&self, cluster_id: i64) -> Result<Vec<CompNode>> {
        let store = self.store()?;
        store.get_cluster(cluster_id).await?;
        Ok(store.list_comp_nodes(Some(cluster_id)).await?)
    }

    /// Jobs matching `q`, newest first.
    pub async fn list_jobs(&self, q: &JobQuery) -> Result<Vec<Job>> {
        if let Some(limit) = q.limit {
            if limit == 0 || limit > MAX_JOB_LIMIT {
                return Err(Error::Invalid(format!(
                    "limit: must be 1..={MAX_JOB_LIMIT}"
                )));
            }
        }
        if let Some(t) = &q.job_type {
            kunlun_meta::validate::name("job_type", t)?;
        }
        Ok(self.store()?.list_jobs(q).await?)
    }

    /// One job.
    pub async fn get_job(&self, id: i64) -> Result<Job> {
        Ok(self.store()?.get_job(id).await?)
    }

    /// One page of stored failover and switchover records, newest first, with ids below
    /// `before`. A term whose monitor runs here adds those the store could not take
    /// ([`crate::Term::failovers_page`]). At most 1,001 stored rows are read at once.
    pub async fn failovers_page(
        &self,
        shard_id: Option<i64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<FailoverRecord>> {
        crate::ha::list_failovers(self.store()?, None, shard_id, before, limit).await
    }

    /// One stored failover record (`Unavailable` for the id of one kept in a monitor's
    /// memory: ask the term, [`crate::Term::failover`]).
    pub async fn failover(&self, id: u64) -> Result<FailoverRecord> {
        crate::ha::get_failover(self.store()?, None, id).await
    }
}
