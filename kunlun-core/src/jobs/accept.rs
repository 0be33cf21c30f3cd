//! Accepting a job that changes an existing cluster: the cluster must exist and no other
//! job may be changing it; the request is stored as the job's `job_info` with the cluster's
//! id and name, so [`super::delete::busy`] sees it.
//!
//! Invariant: accepting never touches a machine and writes only the job row.

use kunlun_meta::model::{Job, NewJob};
use kunlun_meta::store::Store;
use serde::Serialize;

use super::delete::busy;
use crate::error::{Error, Result};

/// Writes a `job_type` job for cluster `cluster_id` whose `job_info` is `extra` (an object)
/// plus `cluster_id` and `name`; 404 for an unknown cluster, 409 while another job changes it.
pub(crate) async fn accept_cluster_job(
    store: &Store,
    job_type: &str,
    cluster_id: i64,
    extra: &impl Serialize,
) -> Result<Job> {
    let c = store.get_cluster(cluster_id).await?;
    if busy(store, c.id, &c.name).await? {
        return Err(Error::Conflict(format!(
            "cluster {} has a job in progress",
            c.name
        )));
    }
    let mut info = serde_json::to_value(extra).map_err(|e| Error::Internal(e.to_string()))?;
    let obj = info
        .as_object_mut()
        .ok_or_else(|| Error::Internal("job request is not an object".into()))?;
    obj.insert("cluster_id".into(), c.id.into());
    obj.insert("name".into(), c.name.clone().into());
    Ok(store
        .create_job(&NewJob {
            job_type: job_type.into(),
            job_info: info,
            user_name: None,
        })
        .await?)
}
