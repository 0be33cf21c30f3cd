//! A backup storage: somewhere to keep backup files, reached by the manager. The first kind is
//! a directory on a registered machine reached over SSH ([`StorageKind::SshDir`]); the trait
//! keeps the jobs independent of the kind so an object store can be added.
//!
//! Contract of every kind:
//! - `rel` paths are relative, made of `[A-Za-z0-9._-]` segments joined by `/`, never `..`,
//!   never absolute ([`check_rel`]); a kind refuses anything else;
//! - [`BackupStore::put`] is atomic: the file appears under `rel` only once the whole stream
//!   arrived and was flushed to disk (written to a temporary name, then renamed); on any
//!   failure (source command failed, storage full, connection lost, deadline) nothing is left
//!   under `rel` and no temporary file stays behind;
//! - every call has a deadline and fails with the reason (unreachable, no space, no such file).

use std::time::Duration;

use async_trait::async_trait;
use kunlun_provision::ssh::SshTarget;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The kinds of backup storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// A directory on a registered machine, reached over SSH.
    SshDir,
}

/// What [`BackupStore::put`] stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub rel: String,
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the stored bytes, computed on the storage side as they arrived.
    pub sha256: String,
}

/// What [`BackupStore::get`] did: the bytes streamed and what the sink printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub bytes: u64,
    /// The sink command's stdout.
    pub stdout: String,
}

/// What [`BackupStore::space`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// Bytes free where the storage writes.
    pub free_bytes: u64,
}

/// A command run on a machine over SSH: where one end of a stream is.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub target: SshTarget,
    /// Shell command: writes the stream to stdout ([`BackupStore::put`]) or reads it from stdin
    /// ([`BackupStore::get`]).
    pub command: String,
}

/// One backup storage.
#[async_trait]
pub trait BackupStore: Send + Sync {
    /// How it is shown (`ssh_dir 127.0.0.1:/backups`), with no secret.
    fn describe(&self) -> String;

    /// Reachable and writable (creates its root when missing); the free space.
    async fn space(&self, timeout: Duration) -> Result<Space>;

    /// Streams `source.command`'s stdout into `rel` (atomic, see the module's contract), at most
    /// `rate` bytes per second when given.
    async fn put(
        &self,
        source: &Endpoint,
        rel: &str,
        rate: Option<u64>,
        timeout: Duration,
    ) -> Result<Stored>;

    /// Writes a small file (a manifest) atomically.
    async fn put_bytes(&self, rel: &str, bytes: &[u8], timeout: Duration) -> Result<Stored>;

    /// Streams `rel` into `sink.command`'s stdin.
    async fn get(&self, rel: &str, sink: &Endpoint, timeout: Duration) -> Result<Got>;

    /// Reads a small file (at most `max` bytes; more is an error).
    async fn get_bytes(&self, rel: &str, max: usize, timeout: Duration) -> Result<Vec<u8>>;

    /// The SHA-256 and size of `rel` as stored now (recomputed from the bytes).
    async fn checksum(&self, rel: &str, timeout: Duration) -> Result<Stored>;

    /// Removes `rel` and everything under it; absent is not an error.
    async fn remove(&self, rel: &str, timeout: Duration) -> Result<()>;
}

/// Checks a relative path against the contract: 1..=512 bytes, segments of `[A-Za-z0-9._-]`
/// joined by `/`, no empty, `.` or `..` segment.
pub fn check_rel(rel: &str) -> Result<()> {
    let ok = !rel.is_empty()
        && rel.len() <= 512
        && rel.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(crate::Error::Invalid(format!(
            "backup path {rel:?} is not a relative path of [A-Za-z0-9._-] segments"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths() {
        for ok in ["a", "cluster_1/backup_2/shard_3.mbs", "m.json"] {
            assert!(check_rel(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "../a",
            "a/./b",
            "a b",
            "a;b",
            "a\nb",
            &"x".repeat(513),
        ] {
            assert!(check_rel(bad).is_err(), "{bad:?}");
        }
    }
}
