//! `kunlunctl backup-storage add|list|show|rm` over `/v1/backup_storages`: where cluster
//! backups are kept (a directory on a registered machine, reached over SSH).
//!
//! Names and fields are checked locally with the daemon's own validators, so a bad one exits 1
//! (`invalid_field`) before anything is sent. `add` has the daemon log in to the machine and
//! prove the directory writable; a refusal comes back with its code (`machine_unreachable`,
//! `data_dir_unusable`, …) and nothing is stored.

use clap::{Args, Subcommand};
use kunlun_meta::api::{check_storage_name, AddBackupStorage, BackupStorageInfo, KIND_SSH_DIR};
use kunlun_meta::model::BackupStorage;

use crate::client::{CliError, Client};
use crate::output::{self, Table};

/// `kunlunctl backup-storage ...`
#[derive(Debug, Subcommand)]
pub enum BackupStorageCmd {
    /// Register a directory on a registered machine as a backup storage (checked over SSH).
    Add(AddArgs),
    /// List the registered backup storages.
    #[command(alias = "ls")]
    List,
    /// Show one backup storage with its free space (asks the storage).
    Show(NameArg),
    /// Remove a backup storage from the registry (its files stay; refused while backups are
    /// recorded on it).
    #[command(alias = "remove", alias = "delete")]
    Rm(NameArg),
}

/// `backup-storage add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Name (1..=64 of A-Z a-z 0-9 _ -).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Address of a registered machine (any type) holding the directory.
    #[arg(long, value_name = "HOST")]
    pub host: String,
    /// Absolute directory on that machine (created with mode 0700 when missing).
    #[arg(long, value_name = "DIR")]
    pub path: String,
}

/// A storage name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Name as shown by `backup-storage list`.
    #[arg(value_name = "NAME")]
    pub name: String,
}

fn url_of(client: &Client, name: &str) -> Result<reqwest::Url, CliError> {
    check_storage_name(name).map_err(|e| CliError::invalid_field(e.to_string()))?;
    client.url(&format!("/v1/backup_storages/{name}"), &[])
}

/// Human-readable bytes (GiB/MiB).
fn size(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

fn detail(i: &BackupStorageInfo) -> String {
    let s = &i.storage;
    let mut pairs = vec![
        ("name", s.name.clone()),
        ("id", s.id.to_string()),
        ("kind", s.kind.clone()),
        ("host", s.hostaddr.clone()),
        ("path", s.path.clone()),
        ("machine", s.machine_id.to_string()),
    ];
    if let Some(b) = i.free_bytes {
        pairs.push(("free", size(b)));
    }
    if let Some(why) = &i.unreachable {
        pairs.push(("free", format!("unknown: {why}")));
    }
    output::key_values(&pairs)
}

/// Executes a `backup-storage` command and returns what to print.
pub fn run(client: &Client, cmd: &BackupStorageCmd, json: bool) -> Result<String, CliError> {
    match cmd {
        BackupStorageCmd::Add(a) => {
            let req = AddBackupStorage {
                name: a.name.clone(),
                kind: KIND_SSH_DIR.into(),
                hostaddr: a.host.clone(),
                path: a.path.clone(),
            };
            req.validate()
                .map_err(|e| CliError::invalid_field(e.to_string()))?;
            let url = client.url("/v1/backup_storages", &[])?;
            let v = client.post(url.clone(), &req)?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let i: BackupStorageInfo = crate::decode(v, url.as_str())?;
            Ok(format!(
                "registered backup storage {}\n{}",
                i.storage.name,
                detail(&i)
            ))
        }
        BackupStorageCmd::List => {
            let url = client.url("/v1/backup_storages", &[])?;
            let v = client.get(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let all: Vec<BackupStorage> = crate::decode(v, url.as_str())?;
            if all.is_empty() {
                return Ok("no backup storages registered (add one with `kunlunctl \
                           backup-storage add`)\n"
                    .into());
            }
            let mut t = Table::new(&["NAME", "KIND", "HOST", "PATH"]);
            for s in &all {
                t.row(vec![
                    s.name.clone(),
                    s.kind.clone(),
                    s.hostaddr.clone(),
                    s.path.clone(),
                ]);
            }
            Ok(t.render())
        }
        BackupStorageCmd::Show(n) => {
            let url = url_of(client, &n.name)?;
            let v = client.get(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let i: BackupStorageInfo = crate::decode(v, url.as_str())?;
            Ok(detail(&i))
        }
        BackupStorageCmd::Rm(n) => {
            client.delete(url_of(client, &n.name)?)?;
            Ok(if json {
                String::new()
            } else {
                format!("removed backup storage {} (its files stay)\n", n.name)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
    }
}
