//! A backup's `manifest.json` as the readers of a backup (restore, verify, the binlog archive)
//! take it, and the check of its files on the storage.
//!
//! Invariant: a file is used only when its size and SHA-256 on the storage are the manifest's
//! ([`check_files`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use kunlun_meta::model::Backup;
use kunlun_meta::store::repo::backups;
use kunlun_meta::Store;
use kunlun_provision::recipe::reseed::Compression;
use serde::Deserialize;

use super::registry;
use super::store::BackupStore;
use crate::error::{Error, Result};
use crate::fleet::Provisioner;

/// Largest manifest read.
const MAX_MANIFEST: usize = 16 * 1024 * 1024;
/// Deadline of reading the manifest.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Deadline of checking one file's SHA-256 (a whole snapshot is read on the storage).
const CHECK_TIMEOUT: Duration = Duration::from_secs(3600);

/// The manifest.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Manifest {
    /// One cut across the shards.
    #[serde(default)]
    pub consistent: bool,
    /// Unix seconds of the store's clock at the end of the cut (consistent backups).
    #[serde(default)]
    pub cut_at: Option<i64>,
    #[serde(default)]
    pub files: Vec<ManifestFile>,
}

/// One file of the backup.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ManifestFile {
    /// `storage`, `compute`, `metadata`, `commit_log`, `ddl_ops_log`.
    pub kind: String,
    #[serde(default)]
    pub shard_id: Option<i64>,
    pub rel: String,
    pub bytes: u64,
    pub sha256: String,
    #[serde(default)]
    pub gtid: Option<String>,
    /// A shard snapshot's tables' `CHECKSUM TABLE` at the cut, by `db.table`.
    #[serde(default)]
    pub checksums: Option<BTreeMap<String, u64>>,
    /// How a shard snapshot is compressed (`zstd`); none when absent.
    #[serde(default)]
    pub compression: Option<String>,
    /// The size of a shard's data when its snapshot was taken (KB): what a restore of the
    /// (compressed) file extracts to.
    #[serde(default)]
    pub data_kb: Option<u64>,
}

impl ManifestFile {
    /// The snapshot's compression; a name this manager does not know is a conflict, never
    /// guessed at.
    pub fn compression(&self) -> Result<Compression> {
        Compression::from_name(self.compression.as_deref())
            .map_err(|e| Error::Conflict(format!("{}: {e}", self.rel)))
    }

    /// KB the file extracts to, for copy deadlines: the recorded data size, else its own.
    pub fn data_kb(&self) -> u64 {
        self.data_kb
            .unwrap_or(self.bytes / 1024)
            .max(self.bytes / 1024)
    }
}

impl Manifest {
    /// The shard snapshots, by source shard id.
    pub fn snapshots(&self) -> Vec<&ManifestFile> {
        let mut s: Vec<&ManifestFile> = self.files.iter().filter(|f| f.kind == "storage").collect();
        s.sort_by_key(|f| f.shard_id);
        s
    }
}

/// Backup `b`'s manifest on `bs`.
pub async fn read(bs: &dyn BackupStore, b: &Backup) -> Result<Manifest> {
    let rel = b
        .manifest
        .clone()
        .ok_or_else(|| Error::Conflict(format!("backup {} has no manifest", b.id)))?;
    serde_json::from_slice(&bs.get_bytes(&rel, MAX_MANIFEST, READ_TIMEOUT).await?)
        .map_err(|e| Error::Conflict(format!("backup {}: its manifest: {e}", b.id)))
}

/// Backup `backup_id`'s row, the storage holding it and its manifest.
pub async fn open(
    store: &Store,
    fleet: &Provisioner,
    backup_id: i64,
) -> Result<(Arc<dyn BackupStore>, Manifest, Backup)> {
    let b = store
        .read(async |tx| backups::get(tx, backup_id).await)
        .await?;
    let (_, bs) = registry::open_id(store, fleet, b.storage_id).await?;
    let m = read(&*bs, &b).await?;
    Ok((bs, m, b))
}

/// Every file of `files` as stored now: its size and SHA-256 as recorded (all checked, every
/// damaged one named).
pub async fn check_files(bs: &dyn BackupStore, files: &[ManifestFile]) -> Result<()> {
    let checks = files.iter().map(|f| async move {
        let now = bs.checksum(&f.rel, CHECK_TIMEOUT).await?;
        if now.bytes != f.bytes || !now.sha256.eq_ignore_ascii_case(&f.sha256) {
            return Err(Error::Conflict(format!(
                "backup file {} is damaged: {} bytes with SHA-256 {} on the storage, {} bytes \
                 with {} recorded",
                f.rel, now.bytes, now.sha256, f.bytes, f.sha256
            )));
        }
        Ok(())
    });
    joined(join_all(checks).await).map_err(Error::Conflict)
}

/// `Ok` when every one of `results` is, else their errors joined.
pub fn joined<T>(results: Vec<Result<T>>) -> std::result::Result<(), String> {
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
