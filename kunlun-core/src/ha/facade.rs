//! What the HA monitor's handle offers a leadership term ([`crate::Term`]) and the API: the
//! status it publishes (health, alarms, events), failover records (from the store, plus any
//! the store could not take), and the no-switch hold.
//!
//! Invariant: these are thin and see nothing above `ha`; every action on storage nodes goes
//! through the monitor actor, so an operator request never races an automatic failover.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kunlun_meta::store::Store;
use serde::Serialize;

use super::{ErrantNode, FailoverRecord, HaEvent, HaHandle, HaStats, NodeHealth};
use crate::error::{Error, Result};

/// Most events returned by [`HaHandle::status`].
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

/// The error of an HA call on an instance where the monitor does not run.
pub(crate) fn not_running() -> Error {
    Error::Unavailable("the shard HA monitor is not running".into())
}

impl HaHandle {
    /// Health of every probed storage node, open alarms, counters and recent events.
    pub fn status(&self) -> HaStatus {
        let s = self.shared();
        let events = s.events();
        let skip = events.len().saturating_sub(RECENT_EVENTS);
        HaStatus {
            nodes: s.health(),
            alarms: s.alarms(),
            stats: s.stats(),
            errant_followers: s.errant_nodes(),
            events: events.into_iter().skip(skip).collect(),
        }
    }

    /// Holds back automatic failover of a shard for `seconds` (0 lifts the hold). A hold too
    /// far ahead to represent is `Invalid`, never a panic (the API bounds it first).
    pub fn set_no_switch_for(&self, shard_id: i64, seconds: u64) -> Result<()> {
        let until = match seconds {
            0 => None,
            s => Some(
                Instant::now()
                    .checked_add(Duration::from_secs(s))
                    .ok_or_else(|| Error::Invalid(format!("no-switch of {s} s is too long")))?,
            ),
        };
        self.shared().set_no_switch(shard_id, until);
        Ok(())
    }
}

/// One page of failover and switchover records, newest first, optionally of one shard, with
/// ids below `before` (the cursor), at most `limit`: first those the monitor (when `monitor`
/// runs here) could not store (their ids are above every stored one), then those in the store
/// (so they outlive the daemon). The store is read by keyset, so every record can be reached.
pub async fn list_failovers(
    store: &Store,
    monitor: Option<&HaHandle>,
    shard_id: Option<i64>,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<FailoverRecord>> {
    let mut out: Vec<FailoverRecord> = match monitor {
        Some(h) => h
            .shared()
            .memory_only_failovers(shard_id)
            .into_iter()
            .filter(|r| before.is_none_or(|b| r.id < b))
            .take(limit)
            .collect(),
        None => Vec::new(),
    };
    if out.len() < limit {
        let mut stored = super::records::list(store, shard_id, before, limit - out.len()).await?;
        out.append(&mut stored);
    }
    Ok(out)
}

/// One failover record: from the store, or from the monitor's memory for the ids it gave
/// records the store could not take (`Unavailable` where the monitor does not run).
pub async fn get_failover(
    store: &Store,
    monitor: Option<&HaHandle>,
    id: u64,
) -> Result<FailoverRecord> {
    if id >= super::records::MEMORY_ID_BASE {
        return monitor
            .ok_or_else(not_running)?
            .shared()
            .failover(id)
            .ok_or_else(|| Error::NotFound {
                what: "failover",
                id: id.to_string(),
            });
    }
    super::records::get(store, id).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::{FailoverKind, HaConfig, HaMonitor};
    use kunlun_meta::StoreConfig;
    use tokio_util::sync::CancellationToken;

    /// Memory-only records (the store could not take them) come first, then the stored ones;
    /// one cursor pages across both, also by shard.
    #[tokio::test]
    async fn pages_go_from_memory_only_records_to_stored_ones() {
        let dir = std::env::temp_dir().join(format!("kl_facade_pages_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = Store::open(&StoreConfig::sqlite(dir.join("meta.db")))
            .await
            .expect("store");
        let mut stored = Vec::new();
        for shard in [1, 2, 1] {
            let r = FailoverRecord::new(FailoverKind::Automatic, 1, shard, 10);
            stored.push(
                super::super::records::insert(&store, &r)
                    .await
                    .expect("insert"),
            );
        }
        let (_m, h) = HaMonitor::new(store.clone(), HaConfig::default(), CancellationToken::new());
        let mem: Vec<u64> = [2, 1]
            .into_iter()
            .map(|shard| {
                h.shared()
                    .record(FailoverRecord::new(FailoverKind::Automatic, 1, shard, 10))
            })
            .collect();
        let ids = |v: Vec<FailoverRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let page = async |shard: Option<i64>, before: Option<u64>, limit: usize| {
            ids(list_failovers(&store, Some(&h), shard, before, limit)
                .await
                .expect("list"))
        };
        // All shards, pages of 2: [m2, m1], [s3, s2], [s1].
        assert_eq!(page(None, None, 2).await, vec![mem[1], mem[0]]);
        assert_eq!(
            page(None, Some(mem[0]), 2).await,
            vec![stored[2], stored[1]]
        );
        assert_eq!(page(None, Some(stored[1]), 2).await, vec![stored[0]]);
        // A page that takes the memory-only ones exactly, then one across both.
        assert_eq!(
            page(None, Some(mem[1]), 3).await,
            vec![mem[0], stored[2], stored[1]]
        );
        // Shard 1: its memory-only record, then its two stored ones.
        assert_eq!(
            page(Some(1), None, 10).await,
            vec![mem[1], stored[2], stored[0]]
        );
        assert_eq!(page(Some(2), Some(mem[0]), 10).await, vec![stored[1]]);
        // Without the monitor only the stored ones.
        let plain = list_failovers(&store, None, None, None, 10)
            .await
            .expect("list");
        assert_eq!(ids(plain), vec![stored[2], stored[1], stored[0]]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
