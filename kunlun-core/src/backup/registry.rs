//! The registry of backup storages: rows of `backup_storage` (see
//! `kunlun_meta::store::repo::backup_storage`) and, for one of them, the [`BackupStore`] that
//! reaches it ([`open`]). The facade's calls (`add`, `list`, `show`, `update`, `delete`) are
//! here too.
//!
//! Invariants:
//! - a storage is stored only after it answered: its machine is registered, and over SSH its
//!   directory exists (or was created, 0700), is writable and has a free-space figure
//!   ([`BackupStore::space`]); a refused registration stores nothing;
//! - a storage that backup records name ([`backups_using`]) is not removed, nor one a backup
//!   schedule names;
//! - removing a storage removes its row only, never the files on it.

use std::sync::Arc;
use std::time::Duration;

use kunlun_meta::api::{AddBackupStorage, BackupStorageInfo, KIND_SSH_DIR};
use kunlun_meta::model::{BackupStorage, Machine};
use kunlun_meta::store::repo::{self, backup_storage::NewBackupStorage};
use kunlun_meta::Store;

use super::ssh_dir::{check_root, SshDirStorage};
use super::store::BackupStore;
use crate::error::{Error, ProbeFailure, Result};
use crate::fleet::Provisioner;
use crate::ClusterManager;

/// Deadline of the reachability check at registration and of `show`'s free-space figure.
pub const SPACE_TIMEOUT: Duration = Duration::from_secs(20);

/// The storage named `name` and the [`BackupStore`] that reaches it (through its machine's SSH
/// settings as registered now). `NotFound` for an unknown name; `Conflict` when its machine is
/// no longer registered; `Invalid` for a kind this manager cannot use (the original's HDFS).
pub async fn open(
    store: &Store,
    fleet: &Provisioner,
    name: &str,
) -> Result<(BackupStorage, Arc<dyn BackupStore>)> {
    let st = store
        .read(async |tx| repo::backup_storage::get_by_name(tx, name).await)
        .await?;
    let backend = backend(store, fleet, &st).await?;
    Ok((st, backend))
}

/// Like [`open`] for the storage with id `id` (a backup's).
pub async fn open_id(
    store: &Store,
    fleet: &Provisioner,
    id: i64,
) -> Result<(BackupStorage, Arc<dyn BackupStore>)> {
    let st = store
        .read(async |tx| repo::backup_storage::get(tx, id).await)
        .await?;
    let backend = backend(store, fleet, &st).await?;
    Ok((st, backend))
}

/// How many backup records keep files on the storage `storage_id` (the catalogue's backups,
/// their parts, the original's restore log); a storage with any is not removed.
pub async fn backups_using(store: &Store, storage_id: i64) -> Result<i64> {
    Ok(store
        .read(async |tx| repo::backup_storage::backups_using(tx, storage_id).await)
        .await?)
}

async fn backend(
    store: &Store,
    fleet: &Provisioner,
    st: &BackupStorage,
) -> Result<Arc<dyn BackupStore>> {
    if st.kind != KIND_SSH_DIR {
        return Err(Error::Invalid(format!(
            "backup storage {} is of kind {:?}, which this manager cannot use",
            st.name, st.kind
        )));
    }
    let id = st.machine_id;
    let machine = store
        .read(async |tx| repo::machines::find(tx, id).await)
        .await?
        .ok_or_else(|| {
            Error::Conflict(format!(
                "backup storage {}: its machine {} ({}) is no longer registered; register it \
                 again and update the storage",
                st.name, st.machine_id, st.hostaddr
            ))
        })?;
    Ok(Arc::new(ssh_dir(fleet, &machine, &st.path)?))
}

fn ssh_dir(fleet: &Provisioner, m: &Machine, path: &str) -> Result<SshDirStorage> {
    SshDirStorage::new(fleet.ssh.clone(), fleet.target(m), path)
}

impl ClusterManager {
    fn backup_fleet(&self) -> Result<&Provisioner> {
        self.probe_provisioner()
            .ok_or_else(|| Error::MachineRefused {
                kind: ProbeFailure::NotConfigured,
                message: "this manager has no SSH settings to reach backup storages with".into(),
            })
    }

    /// The registered machine at `hostaddr` (any type; the lowest id when it has two).
    async fn storage_machine(&self, hostaddr: &str) -> Result<Machine> {
        let host = crate::machines::canonical_host(hostaddr).await?;
        let machines = self.store()?.list_machines().await?;
        machines
            .into_iter()
            .filter(|m| m.hostaddr == host || m.hostaddr == hostaddr)
            .min_by_key(|m| m.id)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "hostaddr: no registered machine has the address {hostaddr:?}; register it \
                     first (POST /v1/machines); nothing was stored"
                ))
            })
    }

    /// Checks a storage on `hostaddr` at `path` answers: the machine is registered and its
    /// directory is (made) writable. Returns the normalised path, the machine and the space.
    async fn check_storage(
        &self,
        hostaddr: &str,
        path: &str,
    ) -> Result<(String, Machine, kunlun_meta::api::BackupStorageInfo)> {
        let path = check_root(path)?;
        let machine = self.storage_machine(hostaddr).await?;
        let fleet = self.backup_fleet()?;
        let storage = ssh_dir(fleet, &machine, &path)?;
        let space = storage.space(SPACE_TIMEOUT).await?;
        let info = BackupStorageInfo {
            storage: BackupStorage {
                id: 0,
                name: String::new(),
                kind: KIND_SSH_DIR.into(),
                hostaddr: machine.hostaddr.clone(),
                path: path.clone(),
                machine_id: machine.id,
                conn_str: String::new(),
            },
            free_bytes: Some(space.free_bytes),
            unreachable: None,
        };
        Ok((path, machine, info))
    }

    /// Registers a backup storage after checking it over SSH (see the module's invariants):
    /// `Invalid` for bad input or an unregistered machine, `Conflict` for a taken name,
    /// [`Error::MachineRefused`] when the machine does not answer or the directory is not
    /// usable. Nothing is stored unless it answers.
    pub async fn add_backup_storage(&self, req: &AddBackupStorage) -> Result<BackupStorageInfo> {
        req.validate()?;
        let store = self.store()?;
        let name = req.name.as_str();
        if store
            .read(async |tx| repo::backup_storage::find_by_name(tx, name).await)
            .await?
            .is_some()
        {
            return Err(Error::Conflict(format!("backup storage {name} exists")));
        }
        let (path, machine, checked) = self.check_storage(&req.hostaddr, &req.path).await?;
        let new = NewBackupStorage {
            name: req.name.clone(),
            hostaddr: machine.hostaddr.clone(),
            path,
            machine_id: machine.id,
        };
        let new = &new;
        let st = store
            .tx(async |tx| repo::backup_storage::insert(tx, new).await)
            .await?;
        tracing::info!(storage = %st.name, conn_str = %st.conn_str, free_bytes = ?checked.free_bytes, "backup storage registered");
        Ok(BackupStorageInfo {
            storage: st,
            ..checked
        })
    }

    /// Every registered backup storage, by id (no SSH call).
    pub async fn list_backup_storages(&self) -> Result<Vec<BackupStorage>> {
        Ok(self
            .store()?
            .read(async |tx| repo::backup_storage::list(tx).await)
            .await?)
    }

    /// One storage with its free space as it answers now, or why it does not
    /// (`unreachable`); `NotFound` for an unknown name.
    pub async fn backup_storage(&self, name: &str) -> Result<BackupStorageInfo> {
        let store = self.store()?;
        let st = store
            .read(async |tx| repo::backup_storage::get_by_name(tx, name).await)
            .await?;
        let space = match self.backup_fleet() {
            Ok(fleet) => match backend(store, fleet, &st).await {
                Ok(b) => b.space(SPACE_TIMEOUT).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let (free_bytes, unreachable) = match space {
            Ok(s) => (Some(s.free_bytes), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(BackupStorageInfo {
            storage: st,
            free_bytes,
            unreachable,
        })
    }

    /// Points the storage `name` at another machine or directory, checked like a
    /// registration first (nothing changes unless the new place answers). `Conflict` while
    /// backup records name it: their files are at the old place, and a repointed storage would
    /// lose them (a removal would delete the rows and leave the files unlisted).
    pub async fn update_backup_storage(
        &self,
        name: &str,
        hostaddr: &str,
        path: &str,
    ) -> Result<BackupStorageInfo> {
        let store = self.store()?;
        let old = store
            .read(async |tx| repo::backup_storage::get_by_name(tx, name).await)
            .await?;
        let (path, machine, checked) = self.check_storage(hostaddr, path).await?;
        let new = NewBackupStorage {
            name: name.to_string(),
            hostaddr: machine.hostaddr.clone(),
            path,
            machine_id: machine.id,
        };
        let (new, id) = (&new, old.id);
        let st = store
            .tx(async |tx| {
                let n = repo::backup_storage::backups_using(tx, id).await?;
                if n > 0 {
                    return Err(kunlun_meta::Error::Conflict(format!(
                        "backup storage {name} holds {n} backup record(s) at its present place; \
                         register the new place under another name"
                    )));
                }
                repo::backup_storage::update(tx, id, new).await
            })
            .await?;
        tracing::info!(storage = %st.name, conn_str = %st.conn_str, "backup storage updated");
        Ok(BackupStorageInfo {
            storage: st,
            ..checked
        })
    }

    /// Removes the storage `name` from the registry (its files stay where they are);
    /// `Conflict` while backup records name it, `NotFound` for an unknown name.
    pub async fn delete_backup_storage(&self, name: &str) -> Result<BackupStorage> {
        let store = self.store()?;
        let st = store
            .tx(async |tx| {
                let st = repo::backup_storage::get_by_name(tx, name).await?;
                let n = repo::backup_storage::backups_using(tx, st.id).await?;
                if n > 0 {
                    return Err(kunlun_meta::Error::Conflict(format!(
                        "backup storage {name} holds {n} backup record(s); remove those backups \
                         first"
                    )));
                }
                let scheduled = repo::backup_schedule::clusters_using(tx, st.id).await?;
                if !scheduled.is_empty() {
                    return Err(kunlun_meta::Error::Conflict(format!(
                        "backup storage {name} is named by the backup schedule of cluster(s) \
                         {scheduled:?}; change or remove those schedules first"
                    )));
                }
                repo::backup_storage::delete(tx, st.id).await?;
                Ok(st)
            })
            .await?;
        tracing::info!(storage = %st.name, conn_str = %st.conn_str, "backup storage removed from the registry; its files stay");
        Ok(st)
    }
}
