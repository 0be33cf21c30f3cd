//! Shard high availability (design.md §4): probing, failure detection confirmed by replicas,
//! lossless failover, planned switchover, anti-flapping and rejoin of a returning old primary.
//!
//! Layout: [`gtid`], [`choose`] and [`detect`] are pure decisions; [`probe`] gathers the facts
//! of one node; [`promote`] holds the SQL steps; [`failover`] orders them and keeps the record;
//! [`switchover`] is the planned variant; [`monitor`] is the actor and [`state`] what it
//! publishes. Invariant kept throughout: a promotion never silently drops acknowledged writes
//! (see [`choose`]).

use std::sync::Arc;
use std::time::Duration;

pub mod choose;
pub mod detect;
mod facade;
pub mod failover;
pub mod fence;
pub mod gtid;
pub mod monitor;
pub mod probe;
pub mod promote;
pub mod records;
pub mod retry;
pub mod state;
mod switchover;

pub use choose::{choose, Choice, LossPolicy, ReplicaView, ShardView};
pub use facade::HaStatus;
pub use failover::{FailoverKind, FailoverRecord, Outcome, Phase};
pub use gtid::{GtidPos, ParseGtidError};
pub use monitor::{HaHandle, HaMonitor};
pub use retry::RetryPolicy;
pub use state::{HaEvent, HaShared, HaStats, NodeHealth, NodeState};

use crate::config::CoreConfig;
use crate::jobs::Provisioner;
use crate::storage::StorageOptions;
use crate::xa::XaConfig;

/// Settings of the HA monitor.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// Gap between two probe rounds (`check_shard_interval`); a quarter of it while a primary
    /// is suspect. Default 1 s.
    pub interval: Duration,
    /// Consecutive failed probes before the primary counts as dead (`k`). Default 3.
    pub failures_to_dead: u32,
    /// Most probes in flight at once. Default 32.
    pub probe_concurrency: usize,
    /// Deadlines of storage-node calls (`mysql_connect_timeout`, `mysql_read_timeout`); a
    /// probe uses at most twice the interval.
    pub storage: StorageOptions,
    /// Longest wait for the candidate to apply its relay log. Default 30 s.
    pub catch_up_limit: Duration,
    /// No second automatic failover of a shard within this window. Default 300 s.
    pub flap_window: Duration,
    /// XA settings for the in-doubt hook on a new primary; `None` skips the hook.
    pub xa: Option<XaConfig>,
    /// SSH access to the machines (the job runner's provisioner), used to stop an old primary
    /// that does not answer SQL; `None` records "no ssh access" instead.
    pub ssh: Option<Arc<Provisioner>>,
    /// Retries of a failover that failed part-way.
    pub retry: RetryPolicy,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            interval: Duration::from_secs(1),
            failures_to_dead: 3,
            probe_concurrency: 32,
            storage: StorageOptions::default(),
            catch_up_limit: Duration::from_secs(30),
            flap_window: Duration::from_secs(300),
            xa: None,
            ssh: None,
            retry: RetryPolicy::default(),
        }
    }
}

impl HaConfig {
    /// The HA settings of the engine's configuration (XA hook on).
    pub fn from_core(c: &CoreConfig) -> Self {
        HaConfig {
            interval: c.check_shard_interval,
            xa: Some(XaConfig::from_core(c)),
            ..HaConfig::default()
        }
    }
}
