//! Backups of whole clusters: where they are kept ([`store`]: a registered backup storage behind
//! the [`store::BackupStore`] trait), and the job that takes them
//! (`jobs::kinds::backup_cluster`; a restore is not built yet).
//! Scheduled backups and their retention: [`schedule`] (a cluster's schedule, the pure
//! decisions) and [`scheduler`] (the leader's actor acting on them).
//!
//! Layout of one cluster backup on a storage (paths relative to the storage's root, chosen by
//! the backup job, never by a caller):
//! `cluster_<cluster_id>/backup_<backup_id>/` holding one file per part (a shard's physical
//! snapshot, a compute node's schema dump, the cluster's metadata rows and logs) and a
//! `manifest.json` written last: a backup without its manifest is incomplete.

pub mod archive;
pub mod catalogue;
pub mod manifest;
pub mod prune;
pub mod registry;
pub mod schedule;
pub mod scheduler;
pub mod schema;
pub mod ssh_dir;
pub mod store;
