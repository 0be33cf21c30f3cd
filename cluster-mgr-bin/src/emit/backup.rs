//! `manual_backup_cluster` of the Emit API: the original's "back this cluster up now", as this
//! manager's own `backup_cluster` job (the one `POST /v1/clusters/{id}/backups` accepts).
//! Invariant: the storage is never guessed among several: the only registered one, or the one
//! named in `storage_name`; anything else is refused and said.

use kunlun_core::ClusterManager;
use kunlun_meta::api::CreateBackup;

use super::codes;
use super::paras::{Fail, Paras};

/// The request of `manual_backup_cluster`: `storage_name` when given, else the only
/// registered backup storage.
pub async fn request(e: &ClusterManager, p: &Paras<'_>) -> Result<CreateBackup, Fail> {
    let storage = match p.text("storage_name").filter(|s| !s.is_empty()) {
        Some(s) => s,
        None => {
            let all = e
                .list_backup_storages()
                .await
                .map_err(|x| Fail::new(codes::PARAMETER_ERROR, x.to_string()))?;
            match all.as_slice() {
                [only] => only.name.clone(),
                [] => {
                    return Err(Fail::new(
                        codes::PARAMETER_ERROR,
                        "no backup storage is registered (create_backup_storage first)",
                    ))
                }
                several => {
                    return Err(Fail::new(
                        codes::PARAMETER_ERROR,
                        format!(
                            "{} backup storages are registered: name one in storage_name",
                            several.len()
                        ),
                    ))
                }
            }
        }
    };
    Ok(CreateBackup {
        storage,
        allow_primary: false,
    })
}
