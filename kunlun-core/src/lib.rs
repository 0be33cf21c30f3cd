//! The Kunlun cluster manager engine. [`ClusterManager`] is the always-on part every instance
//! runs (the metadata store, reads, machine registration, job acceptance); [`Term`] is a
//! leadership term over it, owning the background actors (job runner, shard monitor and
//! failover, XA recovery, catalog sync, machine liveness) and the calls that need them.

pub mod accounts;
pub mod auto_rebuild;
pub mod backup;
pub mod catalog;
pub mod config;
pub mod error;
pub mod fleet;
pub mod ha;
pub mod instances;
pub mod jobs;
pub mod keeper;
pub mod leader;
mod machines;
mod manager;
pub mod scope;
pub mod storage;
mod term;
#[cfg(test)]
mod test_fixtures;
mod tls;
mod topology;
pub mod xa;

pub use config::CoreConfig;
pub use error::{Error, Result};
/// Host key trust setting of [`fleet::Provisioner`] (re-exported for the daemon).
pub use fleet::HostKeyPolicy;
pub use manager::ClusterManager;
pub use scope::ClusterScope;
pub use term::Term;
