//! Accepting a job: the request validated once, checked against the metadata (unknown ids
//! 404, a cluster another job is changing 409, the kind's own refusals), then written as a
//! `not_started` job row whose `job_info` names the cluster, so [`busy`] and the runner see it.
//!
//! Invariant: accepting never touches a machine and writes only the job row.

use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::{Job, NewJob};
use kunlun_meta::store::Store;

use super::common::busy;
use super::driver::{JobInfo, JobKind, NoExtra};
use super::kinds::{CreateClusterJob, DeleteClusterJob};
use crate::error::{Error, Result};

/// Accepts a job of kind `K` for `info` (its `name` is filled from the stored cluster).
pub async fn accept<K: JobKind>(store: &Store, mut info: JobInfo<K::Request>) -> Result<Job> {
    K::validate(&info.request)?;
    if let Some(id) = info.cluster_id {
        info.name = store.get_cluster(id).await?.name;
    }
    K::check(store, &info).await?;
    if let Some(id) = info.cluster_id {
        if busy(store, id, &info.name).await? {
            return Err(Error::Conflict(format!(
                "cluster {} has a job in progress",
                info.name
            )));
        }
    }
    Ok(store
        .create_job(&NewJob {
            job_type: K::TYPE.into(),
            job_info: info.to_value()?,
            user_name: None,
        })
        .await?)
}

/// The `job_info` of a job on cluster `cluster_id` (its name is filled in at accept).
pub fn on_cluster<R>(cluster_id: i64, request: R) -> JobInfo<R> {
    JobInfo {
        cluster_id: Some(cluster_id),
        name: String::new(),
        request,
    }
}

/// Accepts a `create_cluster` job (validated; 409 for a name in use).
pub async fn accept_create_cluster(store: &Store, req: &CreateCluster) -> Result<Job> {
    let info = JobInfo {
        cluster_id: None,
        name: req.name.clone(),
        request: req.clone(),
    };
    accept::<CreateClusterJob>(store, info).await
}

/// Accepts a `delete_cluster` job (404 unknown cluster, 409 while another job changes it).
pub async fn accept_delete_cluster(store: &Store, cluster_id: i64) -> Result<Job> {
    accept::<DeleteClusterJob>(store, on_cluster(cluster_id, NoExtra {})).await
}
