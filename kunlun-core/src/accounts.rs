//! The system accounts the manager creates on every instance (Kunlun's spellings). The
//! installer (`jobs/install.rs`), HA (`ha/promote.rs`) and the catalog push all read the
//! names here.
//!
//! Invariant: a leaf: it imports nothing of this crate.

/// The manager's own administrator on storage and compute nodes.
pub const MANAGER_USER: &str = "clustmgr";
/// The replication login of storage nodes.
pub const REPL_USER: &str = "repl";
/// The compute nodes' login on storage nodes (least privilege).
pub const PGX_USER: &str = "pgx";
/// The application login of compute nodes.
pub const COMP_USER: &str = "abc";
