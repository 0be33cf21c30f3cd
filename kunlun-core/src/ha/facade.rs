//! The HA part of the [`ClusterManager`] facade: start the monitor, read what it publishes
//! (health, alarms, events, failover records), ask for a switchover, set no-switch.
//!
//! Invariant: these are thin; every action on storage nodes goes through the monitor actor,
//! so an operator request never races an automatic failover.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    ErrantNode, FailoverRecord, HaConfig, HaEvent, HaHandle, HaMonitor, HaStats, NodeHealth,
};
use crate::error::{Error, Result};
use crate::ClusterManager;

/// Most events returned by [`ClusterManager::ha_status`].
const RECENT_EVENTS: usize = 100;

/// What the monitor publishes, for the API and `kunlunctl cluster show`.
#[derive(Debug, Clone, Serialize)]
pub struct HaStatus {
    pub nodes: Vec<NodeHealth>,
    /// Open alarms by shard id (refused or failed failovers).
    pub alarms: BTreeMap<i64, String>,
    pub stats: HaStats,
    /// Nodes a failover or switchover kept out for rebuild (errant transactions), until they
    /// are active members again.
    pub errant_followers: Vec<ErrantNode>,
    /// The most recent events, oldest first.
    pub events: Vec<HaEvent>,
}

impl ClusterManager {
    /// Starts the shard HA monitor once the store is open (at most one per manager; a second
    /// call is a no-op). It stops with the manager.
    pub fn start_ha(&self, cfg: HaConfig) {
        let me = self.clone();
        let cancel = self.cancellation_token();
        let (tasks, _) = self.ha_parts();
        tasks.spawn(async move {
            let store = loop {
                if let Ok(s) = me.store() {
                    break s.clone();
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            };
            let (monitor, handle) = HaMonitor::new(store, cfg, cancel);
            if me.ha_parts().1.set(handle).is_ok() {
                monitor.run().await;
            }
        });
    }

    /// The running monitor, or `Unavailable` before it started.
    pub fn ha(&self) -> Result<&HaHandle> {
        self.ha_parts()
            .1
            .get()
            .ok_or_else(|| Error::Unavailable("the shard HA monitor is not running".into()))
    }

    /// Health of every probed storage node, open alarms, counters and recent events.
    pub fn ha_status(&self) -> Result<HaStatus> {
        let s = self.ha()?.shared();
        let events = s.events();
        let skip = events.len().saturating_sub(RECENT_EVENTS);
        Ok(HaStatus {
            nodes: s.health(),
            alarms: s.alarms(),
            stats: s.stats(),
            errant_followers: s.errant_nodes(),
            events: events.into_iter().skip(skip).collect(),
        })
    }

    /// Failover and switchover records, newest first, optionally of one shard: those in the
    /// store (so they outlive the daemon), then any the store could not take.
    pub async fn failovers(&self, shard_id: Option<i64>) -> Result<Vec<FailoverRecord>> {
        let mut out = super::records::list(self.store()?, shard_id).await?;
        if let Ok(h) = self.ha() {
            let mut mem = h.shared().memory_only_failovers(shard_id);
            mem.append(&mut out);
            out = mem;
        }
        Ok(out)
    }

    /// One failover record.
    pub async fn failover(&self, id: u64) -> Result<FailoverRecord> {
        if id >= super::records::MEMORY_ID_BASE {
            return self
                .ha()?
                .shared()
                .failover(id)
                .ok_or_else(|| Error::NotFound {
                    what: "failover",
                    id: id.to_string(),
                });
        }
        super::records::get(self.store()?, id).await
    }

    /// Planned switchover of a shard to `target` or the best replica; returns its record.
    pub async fn switchover(&self, shard_id: i64, target: Option<i64>) -> Result<FailoverRecord> {
        self.store()?.get_shard(shard_id).await?;
        self.ha()?.switchover(shard_id, target).await
    }

    /// Holds back automatic failover of a shard for `seconds` (0 lifts the hold).
    /// A hold too far ahead to represent is `Invalid`, never a panic (the API bounds it first).
    pub async fn set_no_switch(&self, shard_id: i64, seconds: u64) -> Result<()> {
        self.store()?.get_shard(shard_id).await?;
        let until = match seconds {
            0 => None,
            s => Some(
                Instant::now()
                    .checked_add(Duration::from_secs(s))
                    .ok_or_else(|| Error::Invalid(format!("no-switch of {s} s is too long")))?,
            ),
        };
        self.ha()?.shared().set_no_switch(shard_id, until);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kunlun_meta::store::StoreConfig;

    use super::*;
    use crate::CoreConfig;

    #[tokio::test]
    async fn the_monitor_waits_for_the_store_and_stops_with_the_manager() {
        let store = StoreConfig {
            connect_timeout: Duration::from_millis(100),
            ..StoreConfig::mysql(vec!["127.0.0.1:1".into()], "u", "p", "kunlun_metadata_db")
        };
        let cfg = CoreConfig {
            connect_retry_initial: Duration::from_millis(20),
            connect_retry_max: Duration::from_millis(50),
            ..CoreConfig::default()
        };
        let m = ClusterManager::connect(cfg, store);
        m.start_ha(HaConfig::default());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(matches!(m.ha(), Err(Error::Unavailable(_))));
        assert!(matches!(
            m.failovers(None).await,
            Err(Error::Unavailable(_))
        ));
        m.shutdown(Duration::from_secs(5)).await;
        assert!(m.ha_parts().0.is_empty(), "every task joined");
    }
}
