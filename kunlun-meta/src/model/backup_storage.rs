//! A registered backup storage as the rest of the manager sees it.

use serde::{Deserialize, Serialize};

/// A registered backup storage (`backup_storage`, the original's table): where backup files
/// are kept. Ours are directories on registered machines (`kind` `ssh_dir`), stored as stype
/// `OTHER` with `conn_str` `sshdir://<hostaddr><path>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BackupStorage {
    pub id: i64,
    /// 1..=64 characters of `A-Z a-z 0-9 _ -`, unique.
    pub name: String,
    /// `ssh_dir`.
    pub kind: String,
    /// The machine the directory is on (its address as registered).
    pub hostaddr: String,
    /// Absolute path of the directory on that machine.
    pub path: String,
    /// The registered machine it is reached through (its SSH settings).
    pub machine_id: i64,
    /// `sshdir://<hostaddr><path>`.
    pub conn_str: String,
}
