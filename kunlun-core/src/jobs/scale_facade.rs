//! The scale-out/in part of the [`ClusterManager`] facade: accept `add_shards`,
//! `delete_shard`, `add_nodes`, `delete_node`, `add_comps`, `delete_comp` as job rows
//! (HTTP 202 + job id); the job runner does the work.
//!
//! Invariant: a request is validated and checked against the metadata (cluster, shard, node
//! and compute node exist and belong together; the primary is never deleted, nor a cluster's
//! last shard) before the job row is written, so a bad request costs nothing.

use kunlun_meta::api::{AddComps, AddNodes, AddShards, JobAccepted};
use kunlun_meta::model::{Cluster, MemberState};
use serde_json::json;

use super::accept::accept_cluster_job;
use super::comps::{ADD_COMPS, DELETE_COMP};
use super::nodes::{ADD_NODES, DELETE_NODE};
use super::shards::{refuse_last_shard, ADD_SHARDS, DELETE_SHARD};
use crate::error::{Error, Result};
use crate::ClusterManager;

impl ClusterManager {
    /// Accepts `add_shards` for a cluster.
    pub async fn add_shards(&self, cluster_id: i64, req: &AddShards) -> Result<JobAccepted> {
        req.validate()?;
        let job = accept_cluster_job(self.store()?, ADD_SHARDS, cluster_id, req).await?;
        tracing::info!(job_id = job.id, cluster_id, "add_shards accepted");
        self.job_wake().notify_one();
        Ok(JobAccepted { job_id: job.id })
    }

    /// Accepts `delete_shard`: 404 unless the shard belongs to the cluster, 409 for the
    /// cluster's last shard (the cluster is deleted instead).
    pub async fn delete_shard(&self, cluster_id: i64, shard_id: i64) -> Result<JobAccepted> {
        let cluster = self.shard_of(cluster_id, shard_id).await?;
        let store = self.store()?;
        let shards = store.list_shards(Some(cluster_id)).await?.len();
        refuse_last_shard(&cluster.name, shard_id, shards)?;
        let info = json!({ "shard_id": shard_id });
        let job = accept_cluster_job(store, DELETE_SHARD, cluster_id, &info).await?;
        tracing::info!(
            job_id = job.id,
            cluster_id,
            shard_id,
            "delete_shard accepted"
        );
        self.job_wake().notify_one();
        Ok(JobAccepted { job_id: job.id })
    }

    /// Accepts `add_nodes` (new replicas) for a shard of the cluster.
    pub async fn add_nodes(
        &self,
        cluster_id: i64,
        shard_id: i64,
        req: &AddNodes,
    ) -> Result<JobAccepted> {
        req.validate()?;
        self.shard_of(cluster_id, shard_id).await?;
        let mut info = serde_json::to_value(req).map_err(|e| Error::Internal(e.to_string()))?;
        info["shard_id"] = shard_id.into();
        let job = accept_cluster_job(self.store()?, ADD_NODES, cluster_id, &info).await?;
        tracing::info!(job_id = job.id, cluster_id, shard_id, "add_nodes accepted");
        self.job_wake().notify_one();
        Ok(JobAccepted { job_id: job.id })
    }

    /// Accepts `delete_node`: refuses the shard's primary (409) and nodes of other shards (404).
    pub async fn delete_node(
        &self,
        cluster_id: i64,
        shard_id: i64,
        node_id: i64,
    ) -> Result<JobAccepted> {
        self.shard_of(cluster_id, shard_id).await?;
        let store = self.store()?;
        let node = store
            .list_shard_nodes(Some(shard_id))
            .await?
            .into_iter()
            .find(|n| n.id == node_id)
            .ok_or_else(|| Error::NotFound {
                what: "node of this shard",
                id: node_id.to_string(),
            })?;
        if node.member_state == MemberState::Source {
            return Err(Error::Conflict(format!(
                "node {node_id} is the primary of shard {shard_id}; switch over first"
            )));
        }
        let info = json!({ "shard_id": shard_id, "node_id": node_id });
        let job = accept_cluster_job(store, DELETE_NODE, cluster_id, &info).await?;
        tracing::info!(
            job_id = job.id,
            cluster_id,
            shard_id,
            node_id,
            "delete_node accepted"
        );
        self.job_wake().notify_one();
        Ok(JobAccepted { job_id: job.id })
    }

    /// Accepts `add_comps` for a cluster.
    pub async fn add_comps(&self, cluster_id: i64, req: &AddComps) -> Result<JobAccepted> {
        req.validate()?;
        let job = accept_cluster_job(self.store()?, ADD_COMPS, cluster_id, req).await?;
        tracing::info!(job_id = job.id, cluster_id, "add_comps accepted");
        self.job_wake().notify_one();
        Ok(JobAccepted { job_id: job.id })
    }

    /// Accepts `delete_comp` (404 unless the compute node belongs to the cluster).
    pub async fn delete_comp(&self, cluster_id: i64, comp_id: i64) -> Result<JobAccepted> {
        let store = self.store()?;
        store.get_cluster(cluster_id).await?;
        if !store
            .list_comp_nodes(Some(cluster_id))
            .await?
            .iter()
            .any(|c| c.id == comp_id)
        {
            return Err(Error::NotFound {
                what: "compute node of this cluster",
                id: comp_id.to_string(),
            });
        }
        let info = json!({ "comp_id": comp_id });
        let job = accept_cluster_job(store, DELETE_COMP, cluster_id, &info).await?;
        tracing::info!(job_id = job.id, cluster_id, comp_id, "delete_comp accepted");
        self.job_wake().notify_one();
        Ok(JobAccepted { job_id: job.id })
    }

    /// The cluster; 404 unless it exists and the shard belongs to it.
    async fn shard_of(&self, cluster_id: i64, shard_id: i64) -> Result<Cluster> {
        let store = self.store()?;
        let cluster = store.get_cluster(cluster_id).await?;
        let s = store.get_shard(shard_id).await?;
        if s.db_cluster_id != cluster_id {
            return Err(Error::NotFound {
                what: "shard of this cluster",
                id: shard_id.to_string(),
            });
        }
        Ok(cluster)
    }
}
