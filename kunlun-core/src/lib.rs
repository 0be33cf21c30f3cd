//! The Kunlun cluster manager engine. Today it is the thin [`ClusterManager`] facade over the
//! metadata store that the daemon's HTTP layer and embedding applications call; the job runner,
//! shard monitor, failover and XA recovery join it as background actors owned by the manager.

pub mod accounts;
pub mod catalog;
pub mod config;
pub mod error;
pub mod fleet;
pub mod ha;
pub mod jobs;
pub mod leader;
mod machines;
mod manager;
pub mod storage;
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
