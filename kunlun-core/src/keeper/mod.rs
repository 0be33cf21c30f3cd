//! The instance keeper (issue 15, self-healing): servers are installed as plain detached
//! processes, so nothing restarts one that died (an OOM kill, a crash, a machine reboot). Every
//! interval the keeper checks every storage and compute instance metadata says should run, on
//! every machine that answers SSH, with one SSH command per machine, and starts the ones it
//! finds down again through the same start path as `kunlunctl node start`
//! ([`crate::instances::control`]), with backoff; after `max_restarts` restarts within the
//! window it stops and raises an alarm holding the tail of the server's log.
//!
//! Layout: [`decide`] holds the pure decisions (which instances, restart or leave, backoff and
//! crash loop), [`state`] what is published for `/v1/ha` and `/metrics`, `actor` the loop.
//!
//! Invariants: roles are HA's (see [`decide`]: a dead primary is left to HA's failover unless
//! no failover can happen, a failed-over old primary is started only while HA waits to rejoin
//! it, no node of a shard HA is failing over is touched); a node an operator stopped
//! (`manual_stop`), one a job installs or removes, a cluster a job changes and a cluster with
//! `auto_restart` off are left alone; a dead machine (the liveness actor's verdict) is not
//! asked; "down" means no live server process behind the pid file and the port closed, both
//! seen by one bounded check; every SSH call and store read has a deadline; a restart runs in
//! its own bounded task, at most one per node at a time, and its row, its cluster's policy and
//! the unfinished jobs are read again just before the start, so a status changed, a policy
//! switched off or a job begun meanwhile wins.

mod actor;
pub mod decide;
pub mod state;

use std::time::Duration;

pub(crate) use actor::{run, HaLookup};
pub use state::{
    CrashLoop, KeeperEvent, KeeperShared, KeeperStats, KeeperStatus, NodeKind, NodeRestarts,
};

/// Default bytes of a crash-looping server's log shown with its alarm.
pub const DEFAULT_LOG_TAIL: usize = 4096;

/// Settings of the instance keeper.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// Gap between two rounds (`instance_keeper_interval_secs`); also the first backoff.
    pub interval: Duration,
    /// Restarts within `window` after which a node found down again is given up
    /// (`keeper_max_restarts`).
    pub max_restarts: u32,
    /// `keeper_restart_window_secs`.
    pub window: Duration,
    /// Deadline of one machine's check (connect included).
    pub check_timeout: Duration,
    /// Bytes of the server's log kept with a crash-loop alarm.
    pub log_tail_bytes: usize,
    /// Longest backoff between two restarts of a node.
    pub max_backoff: Duration,
    /// Restarts running at once.
    pub concurrency: usize,
}

impl Default for KeeperConfig {
    fn default() -> Self {
        KeeperConfig::new(Duration::from_secs(5), 3, Duration::from_secs(600))
    }
}

impl KeeperConfig {
    /// Rounds every `interval` (a check gets it clamped to 5..=15 s: an SSH handshake on a
    /// loaded host takes a while); the backoff starts at `interval` and doubles up to 60 s
    /// (never beyond the window).
    pub fn new(interval: Duration, max_restarts: u32, window: Duration) -> Self {
        KeeperConfig {
            interval,
            max_restarts: max_restarts.max(1),
            window,
            check_timeout: interval.clamp(Duration::from_secs(5), Duration::from_secs(15)),
            log_tail_bytes: DEFAULT_LOG_TAIL,
            max_backoff: Duration::from_secs(60).min(window).max(interval),
            concurrency: 4,
        }
    }

    /// The restart limits [`decide::Track`] applies.
    pub fn limits(&self) -> decide::Limits {
        decide::Limits {
            max_restarts: self.max_restarts,
            window: self.window,
            base_backoff: self.interval,
            max_backoff: self.max_backoff,
        }
    }
}
