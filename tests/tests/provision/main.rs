//! Provisioning against real sshd, MariaDB and PostgreSQL: installs, jobs, clusters, scale,
//! faults, the catalog push and grants.
//!
//! One test binary per area (they all link the whole workspace); each module is one former
//! test file, so `cargo test --test provision MODULE::` runs that file's tests.

mod backup_cluster;
mod backup_faults;
mod backup_storage;
mod catalog_push;
mod emit_replay;
mod grants_upgrade;
mod provision_cli;
mod provision_cluster;
mod provision_comps_restart;
mod provision_concurrent;
mod provision_control;
mod provision_e2e;
mod provision_faults;
mod provision_guards;
mod provision_install;
mod provision_jobs;
mod provision_keeper;
mod provision_probe;
mod provision_rebuild;
mod provision_scale;
mod restore_cluster;
