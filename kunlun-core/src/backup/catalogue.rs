//! The backup catalogue as the engine offers it: start a cluster backup (a `backup_cluster`
//! job), list and show backups, remove one (its files from the storage, then its rows).
//!
//! Invariant: a backup's rows go only after its files are gone from the storage (a failed
//! removal keeps the rows, so nothing on a storage is ever left unlisted), and never while
//! the job taking it or a job restoring it runs.

use kunlun_meta::api::{BackupQuery, CreateBackup, JobAccepted, Page, RestoreBackup, RestoreInto};
use kunlun_meta::model::{Backup, BackupStatus};
use kunlun_meta::store::repo::{backup_storage, backups, jobs};

use super::registry;
use crate::error::{Error, Result};
use crate::jobs::accept::on_cluster;
use crate::jobs::kinds::backup_cluster::{self, BackupRequest, BACKUP_CLUSTER};
use crate::jobs::kinds::restore_cluster::into::{self as restore_into, RESTORE_INTO_CLUSTER};
use crate::jobs::kinds::restore_cluster::{self, RESTORE_CLUSTER};
use crate::jobs::kinds::verify_backup;
use crate::ClusterManager;

/// Deadline of removing a backup's files.
const REMOVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl ClusterManager {
    /// Accepts a `backup_cluster` job for cluster `cluster_id` (400 bad body, 404 unknown
    /// cluster or storage, 409 while another job changes the cluster).
    pub async fn backup_cluster(&self, cluster_id: i64, req: &CreateBackup) -> Result<JobAccepted> {
        let request = BackupRequest {
            allow_primary: req.allow_primary,
            compression: req.compression,
            ..BackupRequest::to(&req.storage)
        };
        let job = backup_cluster::accept(self.store()?, on_cluster(cluster_id, request)).await?;
        self.wake_job_runner();
        tracing::info!(job_id = job.id, job_type = BACKUP_CLUSTER, cluster_id, storage = %req.storage, "job accepted");
        Ok(JobAccepted { job_id: job.id })
    }

    /// Accepts a `restore_cluster` job: backup `id` into the new cluster `req.name` (400 bad
    /// body, 404 unknown backup, 409 a backup not done or a name in use).
    pub async fn restore_backup(&self, id: i64, req: &RestoreBackup) -> Result<JobAccepted> {
        self.check_window(id, req.restore_at()?).await?;
        let job = restore_cluster::accept(self.store()?, id, req).await?;
        self.wake_job_runner();
        tracing::info!(job_id = job.id, job_type = RESTORE_CLUSTER, backup_id = id, cluster = %req.name, "job accepted");
        Ok(JobAccepted { job_id: job.id })
    }

    /// Accepts a `restore_into_cluster` job: backup `req.backup_id` over the instances of
    /// cluster `cluster_id`, which must be empty (400 bad body, 404 unknown backup or cluster,
    /// 409 a backup not done, the backup's own cluster, another number of shards, a restore
    /// time outside the archive, or a job in progress on the cluster; whether the cluster is
    /// empty is the job's first check).
    pub async fn restore_into(&self, cluster_id: i64, req: &RestoreInto) -> Result<JobAccepted> {
        self.check_window(req.backup_id, req.restore_at()?).await?;
        let job = restore_into::accept(self.store()?, cluster_id, req).await?;
        self.wake_job_runner();
        tracing::info!(
            job_id = job.id,
            job_type = RESTORE_INTO_CLUSTER,
            backup_id = req.backup_id,
            cluster_id,
            "job accepted"
        );
        Ok(JobAccepted { job_id: job.id })
    }

    /// A point in time outside backup `id`'s archive window is refused at once (409), not by
    /// the job.
    async fn check_window(&self, id: i64, at: Option<i64>) -> Result<()> {
        let Some(at) = at else {
            return Ok(());
        };
        let fleet = self.probe_provisioner().ok_or_else(|| {
            Error::Unavailable(
                "this manager has no SSH settings to reach backup storages with".into(),
            )
        })?;
        let (bs, _, b) = super::manifest::open(self.store()?, fleet, id).await?;
        super::archive::window(&*bs, &b, at).await?;
        Ok(())
    }

    /// One page of the catalogue, newest first (parts not included).
    pub async fn list_backups(&self, q: &BackupQuery) -> Result<Page<Backup>> {
        let limit = q.validate()?;
        let (cid, after) = (q.cluster_id, q.after);
        Ok(self
            .store()?
            .read(async |tx| backups::list_page(tx, cid, limit, after).await)
            .await?)
    }

    /// One backup with its parts.
    pub async fn backup(&self, id: i64) -> Result<Backup> {
        Ok(self
            .store()?
            .read(async |tx| backups::get_full(tx, id).await)
            .await?)
    }

    /// Accepts a `verify_backup` job: backup `id`'s files checked and each shard's snapshot
    /// started in a scratch server with its tables' checksums compared (404 unknown backup,
    /// 409 a backup not done).
    pub async fn verify_backup(&self, id: i64) -> Result<JobAccepted> {
        let job = verify_backup::accept(self.store()?, id).await?;
        self.wake_job_runner();
        tracing::info!(
            job_id = job.id,
            job_type = verify_backup::VERIFY_BACKUP,
            backup_id = id,
            "job accepted"
        );
        Ok(JobAccepted { job_id: job.id })
    }

    /// The binlog archive past backup `id`: the restore times it takes.
    pub async fn backup_archive(&self, id: i64) -> Result<kunlun_meta::api::BackupArchive> {
        let bk = self.backup(id).await?;
        if bk.status != BackupStatus::Done {
            return Err(Error::Conflict(format!(
                "backup {id} is {}: only a done backup has an archive window",
                bk.status
            )));
        }
        let fleet = self.probe_provisioner().ok_or_else(|| {
            Error::Unavailable(
                "this manager has no SSH settings to reach backup storages with".into(),
            )
        })?;
        super::archive::status(self.store()?, fleet, &bk).await
    }

    /// The backup taken by job `job_id`, if it was recorded.
    pub async fn backup_of_job(&self, job_id: i64) -> Result<Option<Backup>> {
        Ok(self
            .store()?
            .read(async |tx| backups::of_job(tx, job_id).await)
            .await?)
    }

    /// Removes backup `id`: its files from the storage, then its rows. 409 while its job
    /// runs; a storage that cannot be reached keeps the rows (503).
    pub async fn delete_backup(&self, id: i64) -> Result<Backup> {
        let store = self.store()?;
        let bk = self.backup(id).await?;
        if bk.status == BackupStatus::Ongoing {
            let running = match bk.job_id {
                Some(j) => !store.get_job(j).await?.status.is_final(),
                None => false,
            };
            if running {
                return Err(Error::Conflict(format!(
                    "backup {id} is being taken by job {}: wait for it to end",
                    bk.job_id.unwrap_or_default()
                )));
            }
        }
        if let Some(j) = restoring(store, id).await? {
            return Err(Error::Conflict(format!(
                "backup {id} is being restored by job {j}: wait for it to end"
            )));
        }
        let sid = bk.storage_id;
        let st = store
            .read(async |tx| backup_storage::get(tx, sid).await)
            .await?;
        let fleet = self.probe_provisioner().ok_or_else(|| {
            Error::Unavailable(
                "this manager has no SSH settings to reach backup storages with".into(),
            )
        })?;
        let (_, bs) = registry::open(store, fleet, &st.name).await?;
        let dir = backups::dir_of(bk.cluster_id, bk.id);
        bs.remove(&dir, REMOVE_TIMEOUT).await.map_err(|e| {
            Error::Unavailable(format!(
                "backup {id}: its files on {} could not be removed ({e}); it stays listed",
                bs.describe()
            ))
        })?;
        store.tx(async |tx| backups::delete(tx, id).await).await?;
        tracing::info!(backup_id = id, cluster_id = bk.cluster_id, storage = %st.name, "backup removed");
        Ok(bk)
    }
}

/// An unfinished `restore_cluster` job reading backup `id`, if any.
async fn restoring(store: &kunlun_meta::Store, id: i64) -> Result<Option<i64>> {
    let jobs = store
        .read(async |tx| jobs::list_unfinished(tx).await)
        .await?;
    Ok(jobs
        .iter()
        .find(|j| {
            (j.job_type == RESTORE_CLUSTER || j.job_type == RESTORE_INTO_CLUSTER)
                && j.job_info
                    .as_ref()
                    .and_then(|i| i.get("backup_id"))
                    .and_then(serde_json::Value::as_i64)
                    == Some(id)
        })
        .map(|j| j.id))
}
