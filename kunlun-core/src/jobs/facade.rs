//! The jobs part of the always-on engine ([`ClusterManager`]): accept each job kind (a job row,
//! answered at once with its id: HTTP 202). The job runner is an actor of the leadership term
//! ([`crate::Term::start_job_runner`]).
//!
//! Invariant: accepting never touches a machine and works on every instance; only the
//! leader's runner does, claiming the row by polling (at once when it runs here: accepting
//! wakes it).

use kunlun_meta::api::{AddComps, AddNodes, AddShards, CreateCluster, JobAccepted, RebuildNode};
use kunlun_meta::model::NodeStatus;

use super::accept::{accept, on_cluster};
use super::driver::{JobInfo, JobKind, NoExtra};
use super::kinds::add_nodes::AddNodesRequest;
use super::kinds::delete_comp::CompRef;
use super::kinds::delete_node::NodeRef;
use super::kinds::delete_shard::ShardRef;
use super::kinds::rebuild_node::{self, RebuildRequest};
use super::kinds::{
    AddCompsJob, AddNodesJob, AddShardsJob, CreateClusterJob, DeleteClusterJob, DeleteCompJob,
    DeleteNodeJob, DeleteShardJob,
};
use crate::error::{Error, Result};
use crate::ClusterManager;

impl ClusterManager {
    /// Accepts a job of kind `K`, wakes the runner and logs it.
    async fn accept_job<K: JobKind>(&self, info: JobInfo<K::Request>) -> Result<JobAccepted> {
        let job = accept::<K>(self.store()?, info).await?;
        self.wake_job_runner();
        tracing::info!(job_id = job.id, job_type = K::TYPE, cluster = %job.job_info.as_ref().and_then(|i| i.get("name")).and_then(|n| n.as_str()).unwrap_or_default(), "job accepted");
        Ok(JobAccepted { job_id: job.id })
    }

    /// Accepts a `create_cluster` job (validated; 409 for a name in use).
    pub async fn create_cluster(&self, req: &CreateCluster) -> Result<JobAccepted> {
        let info = JobInfo {
            cluster_id: None,
            name: req.name.clone(),
            request: req.clone(),
        };
        self.accept_job::<CreateClusterJob>(info).await
    }

    /// Accepts a `delete_cluster` job (404 unknown cluster, 409 while another job changes it).
    pub async fn delete_cluster(&self, cluster_id: i64) -> Result<JobAccepted> {
        self.accept_job::<DeleteClusterJob>(on_cluster(cluster_id, NoExtra {}))
            .await
    }

    /// Accepts `add_shards` for a cluster.
    pub async fn add_shards(&self, cluster_id: i64, req: &AddShards) -> Result<JobAccepted> {
        self.accept_job::<AddShardsJob>(on_cluster(cluster_id, req.clone()))
            .await
    }

    /// Accepts `delete_shard`: 404 unless the shard belongs to the cluster, 409 for the
    /// cluster's last shard (the cluster is deleted instead).
    pub async fn delete_shard(&self, cluster_id: i64, shard_id: i64) -> Result<JobAccepted> {
        self.accept_job::<DeleteShardJob>(on_cluster(cluster_id, ShardRef { shard_id }))
            .await
    }

    /// Accepts `add_nodes` (new replicas) for a shard of the cluster.
    pub async fn add_nodes(
        &self,
        cluster_id: i64,
        shard_id: i64,
        req: &AddNodes,
    ) -> Result<JobAccepted> {
        self.add_nodes_to_shards(cluster_id, &[shard_id], req).await
    }

    /// Accepts one `add_nodes` job adding `req.nodes` new replicas to each of `shard_ids`
    /// (the original's `add_nodes` without `shard_id` does this for every shard): 400 for an
    /// empty list or a shard named twice, 404 unless every shard belongs to the cluster.
    pub async fn add_nodes_to_shards(
        &self,
        cluster_id: i64,
        shard_ids: &[i64],
        req: &AddNodes,
    ) -> Result<JobAccepted> {
        let request = AddNodesRequest::new(shard_ids, req.clone())?;
        self.accept_job::<AddNodesJob>(on_cluster(cluster_id, request))
            .await
    }

    /// Accepts `delete_node`: refuses the shard's primary (409) and nodes of other shards (404).
    pub async fn delete_node(
        &self,
        cluster_id: i64,
        shard_id: i64,
        node_id: i64,
    ) -> Result<JobAccepted> {
        let request = NodeRef { shard_id, node_id };
        self.accept_job::<DeleteNodeJob>(on_cluster(cluster_id, request))
            .await
    }

    /// Accepts `add_comps` for a cluster.
    pub async fn add_comps(&self, cluster_id: i64, req: &AddComps) -> Result<JobAccepted> {
        self.accept_job::<AddCompsJob>(on_cluster(cluster_id, req.clone()))
            .await
    }

    /// Accepts `delete_comp` (404 unless the compute node belongs to the cluster).
    pub async fn delete_comp(&self, cluster_id: i64, comp_id: i64) -> Result<JobAccepted> {
        self.accept_job::<DeleteCompJob>(on_cluster(cluster_id, CompRef { comp_id }))
            .await
    }

    /// Accepts `rebuild_node` for the storage node at `host:port` (404 when there is none;
    /// 409 for its shard's primary, a node being installed or deleted, or a cluster another
    /// job is changing), copied from `req.source` when given (400 unless it is an active node
    /// of the same shard).
    pub async fn rebuild_instance(
        &self,
        host: &str,
        port: u16,
        req: &RebuildNode,
    ) -> Result<JobAccepted> {
        let source = req.validate()?;
        let store = self.store()?;
        let all = store.list_shard_nodes(None).await?;
        let live = |h: &str, p: u16| {
            all.iter()
                .find(|n| n.hostaddr == h && n.port == p && n.status != NodeStatus::Deleted)
        };
        let Some(node) = live(host, port) else {
            return Err(Error::NotFound {
                what: "storage node",
                id: format!("{host}:{port}"),
            });
        };
        let source_id = match source {
            None => None,
            Some((h, p)) => match live(&h, p).filter(|s| s.shard_id == node.shard_id) {
                Some(s) => Some(s.id),
                None => {
                    return Err(Error::Invalid(format!(
                        "source: {h}:{p} is not a node of shard {}",
                        node.shard_id
                    )))
                }
            },
        };
        let request = RebuildRequest {
            source_id,
            method: req.method,
            ..RebuildRequest::node(node.shard_id, node.id)
        };
        self.rebuild_nodes(node.db_cluster_id, request).await
    }

    /// Accepts a `rebuild_node` job as given (the Emit API's, the automatic rebuild's).
    pub async fn rebuild_nodes(
        &self,
        cluster_id: i64,
        request: RebuildRequest,
    ) -> Result<JobAccepted> {
        let job = rebuild_node::accept(self.store()?, on_cluster(cluster_id, request)).await?;
        self.wake_job_runner();
        tracing::info!(
            job_id = job.id,
            job_type = rebuild_node::REBUILD_NODE,
            cluster_id,
            "job accepted"
        );
        Ok(JobAccepted { job_id: job.id })
    }
}
