//! API types of backup storages (`/v1/backup_storages`): registration input and what a storage
//! looks like with its free space.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::BackupStorage;

/// Longest storage name.
pub const MAX_STORAGE_NAME: usize = 64;

/// The one storage kind so far: a directory on a registered machine, reached over SSH.
pub const KIND_SSH_DIR: &str = "ssh_dir";

/// Checks a storage name: 1..=64 characters of `A-Z a-z 0-9 _ -`.
pub fn check_storage_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_STORAGE_NAME {
        return Err(Error::Invalid(format!(
            "name: 1 to {MAX_STORAGE_NAME} characters, got {}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Err(Error::Invalid(format!(
            "name: character {c:?} not allowed (use A-Z, a-z, 0-9, '_', '-')"
        )));
    }
    Ok(())
}

/// Body of `POST /v1/backup_storages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(example = json!({
    "name": "nightly", "kind": "ssh_dir", "hostaddr": "10.0.0.5", "path": "/backups/kunlun"
})))]
#[serde(deny_unknown_fields)]
pub struct AddBackupStorage {
    /// 1..=64 characters of `A-Z a-z 0-9 _ -`, unique.
    pub name: String,
    /// `ssh_dir` (the only kind so far).
    pub kind: String,
    /// Address of a registered machine (any type); its SSH settings are used.
    pub hostaddr: String,
    /// Absolute directory on that machine (created 0700 when missing); segments of
    /// `A-Z a-z 0-9 . _ -`.
    pub path: String,
}

impl AddBackupStorage {
    /// Checks the fields that need no lookup (the path's full check is the storage kind's).
    pub fn validate(&self) -> Result<()> {
        check_storage_name(&self.name)?;
        if self.kind != KIND_SSH_DIR {
            return Err(Error::Invalid(format!(
                "kind: {:?} is not supported; the only kind is {KIND_SSH_DIR:?}",
                self.kind
            )));
        }
        crate::validate::hostaddr("hostaddr", &self.hostaddr)?;
        if !self.path.starts_with('/') {
            return Err(Error::Invalid("path: must be an absolute path".into()));
        }
        Ok(())
    }
}

/// A storage as `GET /v1/backup_storages[/{name}]` shows it: with its free space when it was
/// asked for and the storage answered, else why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BackupStorageInfo {
    #[serde(flatten)]
    pub storage: BackupStorage,
    /// Bytes free in the directory (only `show` asks the storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// Why the free space is unknown (the storage did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(name: &str, kind: &str, host: &str, path: &str) -> AddBackupStorage {
        AddBackupStorage {
            name: name.into(),
            kind: kind.into(),
            hostaddr: host.into(),
            path: path.into(),
        }
    }

    #[test]
    fn a_registration_is_checked_field_by_field() {
        assert!(add("nightly_1-a", "ssh_dir", "127.0.0.1", "/b")
            .validate()
            .is_ok());
        assert!(add(&"n".repeat(64), "ssh_dir", "h.example", "/b")
            .validate()
            .is_ok());
        for bad in [
            add("", "ssh_dir", "127.0.0.1", "/b"),
            add(&"n".repeat(65), "ssh_dir", "127.0.0.1", "/b"),
            add("a.b", "ssh_dir", "127.0.0.1", "/b"),
            add("a b", "ssh_dir", "127.0.0.1", "/b"),
            add("n", "hdfs", "127.0.0.1", "/b"),
            add("n", "ssh_dir", "", "/b"),
            add("n", "ssh_dir", "a;b", "/b"),
            add("n", "ssh_dir", "127.0.0.1", "b"),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let unknown = r#"{"name":"n","kind":"ssh_dir","hostaddr":"h","path":"/b","x":1}"#;
        assert!(serde_json::from_str::<AddBackupStorage>(unknown).is_err());
        let missing = r#"{"name":"n","kind":"ssh_dir","hostaddr":"h"}"#;
        assert!(serde_json::from_str::<AddBackupStorage>(missing).is_err());
    }
}
