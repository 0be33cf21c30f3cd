//! The XA recovery decision: what to do with each leftover prepared branch, as a pure function.
//!
//! Invariant: every branch of one global transaction gets the same action, and a branch is only
//! ever committed because the commit log says `commit`. Without a log row a branch is rolled
//! back, but only after its coordinator's deadline has passed and the abort has been claimed in
//! the log first (the claim is the IO side's job; this module only says it is needed).
//!
//! The deadline is counted from when the resolver first saw the branch prepared ([`FirstSeen`]),
//! never from the xid's `start_ts`: a compute node computes its own deadline at commit time
//! (after phase 1), so a transaction that ran longer than `wait_max` before `XA PREPARE` may
//! still log its commit. A new resolver (a new leader) starts every clock afresh, which only
//! waits longer.

use std::collections::{BTreeMap, HashMap, HashSet};

use kunlun_meta::model::TxnCmd;

use super::xid::KunlunXid;

/// Why a branch is left alone this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The coordinator may still log its decision: no `wait_max` has passed since the resolver
    /// first saw the transaction's most recently prepared branch.
    TooYoung,
}

/// What to do with every branch of one global transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Skip(SkipReason),
    /// The commit log says commit: `XA COMMIT` on every branch.
    Commit,
    /// The commit log says abort, or the branch is on the metadata shard: `XA ROLLBACK`.
    Rollback,
    /// No log row and the deadline has passed: insert the abort decision (full `txn_id`),
    /// then obey whatever row the log holds afterwards.
    ClaimAbort,
}

/// A prepared branch found by `XA RECOVER` on a shard's current primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Branch {
    pub shard_id: i64,
    pub xid: KunlunXid,
}

/// One global transaction of the round and the action for all its branches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub xid: KunlunXid,
    pub shard_ids: Vec<i64>,
    pub action: Action,
}

/// Decides one global transaction of a storage cluster.
///
/// `first_seen` is when the resolver first saw the transaction prepared (for several branches,
/// the latest of their first sightings: the coordinator's phase 1 ended no earlier than that).
/// `first_seen` and `now` are read from the metadata server's clock (`UNIX_TIMESTAMP()`), the
/// clock the coordinators' deadline guard runs on.
pub fn decide(first_seen: u64, now: u64, wait_max_sec: u64, logged: Option<TxnCmd>) -> Action {
    match logged {
        Some(TxnCmd::Commit) => Action::Commit,
        Some(TxnCmd::Abort) => Action::Rollback,
        None if now <= first_seen.saturating_add(wait_max_sec) => {
            Action::Skip(SkipReason::TooYoung)
        }
        None => Action::ClaimAbort,
    }
}

/// When the resolver first saw each branch prepared, keyed by `(shard id, xid)` (so a branch
/// keeps its clock across a failover of its shard), in metadata-clock seconds.
///
/// Bounded by what `XA RECOVER` lists: [`FirstSeen::round_done`] forgets every branch a round
/// did not find, except on shards that round could not scan.
#[derive(Debug, Clone, Default)]
pub struct FirstSeen {
    at: HashMap<(i64, KunlunXid), u64>,
}

impl FirstSeen {
    /// Records `now` for the branches not seen before; returns, per branch, its first sighting.
    pub fn observe(&mut self, branches: &[Branch], now: u64) -> HashMap<(i64, KunlunXid), u64> {
        branches
            .iter()
            .map(|b| {
                let key = (b.shard_id, b.xid);
                (key, *self.at.entry(key).or_insert(now))
            })
            .collect()
    }

    /// When `(shard_id, xid)` was first seen, if it is remembered.
    pub fn get(&self, shard_id: i64, xid: KunlunXid) -> Option<u64> {
        self.at.get(&(shard_id, xid)).copied()
    }

    /// After a round: forgets the branches it did not find (ended, by us or their owner),
    /// keeping those on `unscanned` shards, whose branches the round could not see.
    pub fn round_done(&mut self, found: &HashSet<(i64, KunlunXid)>, unscanned: &HashSet<i64>) {
        self.at
            .retain(|k, _| found.contains(k) || unscanned.contains(&k.0));
    }

    /// Branches remembered.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// True when no branch is remembered.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

/// The `txn_id` range of one commit-log query covering every branch, or `None` when empty.
pub fn txn_id_range(branches: &[Branch]) -> Option<(u64, u64)> {
    let min = branches.iter().map(|b| b.xid.start_ts).min()?;
    let max = branches.iter().map(|b| b.xid.start_ts).max()?;
    Some((u64::from(min) << 32, (u64::from(max) << 32) | 0xffff_ffff))
}

/// Plans a round for one storage cluster: groups branches by global transaction (ordered by
/// start time) and decides each group once from the commit-log rows found in the range query.
/// `first_seen` holds each branch's first sighting ([`FirstSeen::observe`]); a branch missing
/// from it counts as first seen `now`.
pub fn plan_cluster(
    branches: &[Branch],
    logged: &HashMap<(u32, u64), TxnCmd>,
    first_seen: &HashMap<(i64, KunlunXid), u64>,
    now: u64,
    wait_max_sec: u64,
) -> Vec<Planned> {
    group(branches)
        .into_iter()
        .map(|(xid, shard_ids)| {
            let row = logged.get(&(xid.comp_node_id, xid.txn_id())).copied();
            let seen = shard_ids
                .iter()
                .map(|s| first_seen.get(&(*s, xid)).copied().unwrap_or(now))
                .max()
                .unwrap_or(now);
            Planned {
                xid,
                shard_ids,
                action: decide(seen, now, wait_max_sec, row),
            }
        })
        .collect()
}

/// Branches on the metadata shard have no commit log: they are always rolled back (grouped
/// by transaction like [`plan_cluster`], so each xid is ended once per shard).
pub fn plan_meta_shard(branches: &[Branch]) -> Vec<Planned> {
    group(branches)
        .into_iter()
        .map(|(xid, shard_ids)| Planned {
            xid,
            shard_ids,
            action: Action::Rollback,
        })
        .collect()
}

fn group(branches: &[Branch]) -> BTreeMap<KunlunXid, Vec<i64>> {
    let mut groups: BTreeMap<KunlunXid, Vec<i64>> = BTreeMap::new();
    for b in branches {
        let shards = groups.entry(b.xid).or_default();
        if !shards.contains(&b.shard_id) {
            shards.push(b.shard_id);
        }
    }
    groups
}

/// The `txn_id` below which commit-log rows may be purged: rows of transactions that started
/// more than `retention_sec` before `now`, except that the cut never passes the oldest branch
/// still prepared (`prepared`), so a row a leftover branch will be decided by is kept.
pub fn purge_cutoff(now: u64, retention_sec: u64, prepared: &[KunlunXid]) -> u64 {
    let by_age = now.saturating_sub(retention_sec);
    let oldest_prepared = prepared.iter().map(|x| u64::from(x.start_ts)).min();
    let start = oldest_prepared.map_or(by_age, |p| p.min(by_age));
    start.min(u64::from(u32::MAX)) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(s: &str) -> KunlunXid {
        KunlunXid::parse(s).unwrap()
    }

    #[test]
    fn log_row_is_obeyed_whatever_the_age() {
        assert_eq!(decide(105, 105, 10, Some(TxnCmd::Commit)), Action::Commit);
        assert_eq!(decide(500, 500, 10, Some(TxnCmd::Abort)), Action::Rollback);
    }

    #[test]
    fn no_row_waits_out_the_deadline_from_first_sight_then_claims_abort() {
        assert_eq!(
            decide(100, 105, 10, None),
            Action::Skip(SkipReason::TooYoung)
        );
        assert_eq!(
            decide(100, 110, 10, None),
            Action::Skip(SkipReason::TooYoung)
        );
        assert_eq!(decide(100, 111, 10, None), Action::ClaimAbort);
    }

    /// The compute node's deadline runs from its commit, after phase 1: a transaction that
    /// started long ago but was only just seen prepared is left to its coordinator.
    #[test]
    fn an_old_start_ts_alone_never_claims() {
        let long_running = x("1-100-1");
        let mut clock = FirstSeen::default();
        let b = [Branch {
            shard_id: 1,
            xid: long_running,
        }];
        let now = 100 + 3 * 10;
        let seen = clock.observe(&b, now);
        let plan = plan_cluster(&b, &HashMap::new(), &seen, now, 10);
        assert_eq!(plan[0].action, Action::Skip(SkipReason::TooYoung));
        // A later round keeps the first sighting: the clock does not restart.
        let seen = clock.observe(&b, now + 10);
        assert_eq!(seen[&(1, long_running)], now);
        let plan = plan_cluster(&b, &HashMap::new(), &seen, now + 10, 10);
        assert_eq!(plan[0].action, Action::Skip(SkipReason::TooYoung));
        let seen = clock.observe(&b, now + 11);
        let plan = plan_cluster(&b, &HashMap::new(), &seen, now + 11, 10);
        assert_eq!(plan[0].action, Action::ClaimAbort);
    }

    /// Phase 1 ended no earlier than the last branch was prepared, so a transaction's clock is
    /// its most recent branch's first sighting.
    #[test]
    fn a_transaction_counts_from_its_latest_prepared_branch() {
        let t = x("1-100-1");
        let mut clock = FirstSeen::default();
        clock.observe(
            &[Branch {
                shard_id: 1,
                xid: t,
            }],
            200,
        );
        let both = [
            Branch {
                shard_id: 1,
                xid: t,
            },
            Branch {
                shard_id: 2,
                xid: t,
            },
        ];
        let seen = clock.observe(&both, 208);
        assert_eq!(
            plan_cluster(&both, &HashMap::new(), &seen, 215, 10)[0].action,
            Action::Skip(SkipReason::TooYoung),
            "shard 1 alone would be past its wait"
        );
        assert_eq!(
            plan_cluster(&both, &HashMap::new(), &seen, 219, 10)[0].action,
            Action::ClaimAbort
        );
        // A branch nobody recorded counts as seen now.
        assert_eq!(
            plan_cluster(&both, &HashMap::new(), &HashMap::new(), 500, 10)[0].action,
            Action::Skip(SkipReason::TooYoung)
        );
    }

    #[test]
    fn first_sightings_are_forgotten_with_the_branch_but_kept_on_unscanned_shards() {
        let (a, b) = (x("1-100-1"), x("1-100-2"));
        let mut clock = FirstSeen::default();
        clock.observe(
            &[
                Branch {
                    shard_id: 1,
                    xid: a,
                },
                Branch {
                    shard_id: 2,
                    xid: b,
                },
            ],
            100,
        );
        assert_eq!(clock.len(), 2);
        // Shard 2 could not be scanned: its branch keeps its clock; shard 1's branch is gone.
        clock.round_done(&HashSet::new(), &HashSet::from([2]));
        assert_eq!((clock.get(1, a), clock.get(2, b)), (None, Some(100)));
        // Seen again after it was gone: a fresh clock.
        let seen = clock.observe(
            &[Branch {
                shard_id: 1,
                xid: a,
            }],
            150,
        );
        assert_eq!(seen[&(1, a)], 150);
        clock.round_done(&HashSet::from([(1, a)]), &HashSet::new());
        assert_eq!((clock.get(1, a), clock.get(2, b)), (Some(150), None));
        assert!(!clock.is_empty());
    }

    #[test]
    fn branches_of_one_txn_share_one_action() {
        let branches = [
            Branch {
                shard_id: 1,
                xid: x("2-100-7"),
            },
            Branch {
                shard_id: 2,
                xid: x("2-100-7"),
            },
            Branch {
                shard_id: 1,
                xid: x("3-50-1"),
            },
            Branch {
                shard_id: 2,
                xid: x("2-100-7"),
            },
        ];
        let logged = HashMap::from([((2, x("2-100-7").txn_id()), TxnCmd::Commit)]);
        let seen = FirstSeen::default().observe(&branches, 900);
        let plan = plan_cluster(&branches, &logged, &seen, 1000, 10);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].xid, x("3-50-1"));
        assert_eq!(plan[0].action, Action::ClaimAbort);
        assert_eq!(plan[1].shard_ids, vec![1, 2]);
        assert_eq!(plan[1].action, Action::Commit);
    }

    #[test]
    fn a_row_of_another_compute_node_does_not_match() {
        let branches = [Branch {
            shard_id: 1,
            xid: x("2-100-7"),
        }];
        let logged = HashMap::from([((3, x("2-100-7").txn_id()), TxnCmd::Commit)]);
        let seen = FirstSeen::default().observe(&branches, 900);
        assert_eq!(
            plan_cluster(&branches, &logged, &seen, 1000, 10)[0].action,
            Action::ClaimAbort
        );
    }

    #[test]
    fn range_covers_all_start_times() {
        let branches = [
            Branch {
                shard_id: 1,
                xid: x("1-100-7"),
            },
            Branch {
                shard_id: 1,
                xid: x("1-90-4294967295"),
            },
        ];
        let (lo, hi) = txn_id_range(&branches).unwrap();
        assert!(branches.iter().all(|b| (lo..=hi).contains(&b.xid.txn_id())));
        assert_eq!(txn_id_range(&[]), None);
    }
    #[test]
    fn meta_shard_branches_are_rolled_back_once_each() {
        let branches = [
            Branch {
                shard_id: 0,
                xid: x("1-100-1"),
            },
            Branch {
                shard_id: 0,
                xid: x("1-100-1"),
            },
            Branch {
                shard_id: 0,
                xid: x("2-99-1"),
            },
        ];
        let plan = plan_meta_shard(&branches);
        assert_eq!(plan.len(), 2);
        assert!(plan
            .iter()
            .all(|p| p.action == Action::Rollback && p.shard_ids == vec![0]));
    }

    #[test]
    fn purge_keeps_rows_of_prepared_branches() {
        // No branch left: everything older than the retention goes.
        assert_eq!(purge_cutoff(10_000, 3600, &[]), 6400u64 << 32);
        // A branch started before the cut holds it back to its own start.
        let old = x("1-5000-9");
        let cut = purge_cutoff(10_000, 3600, &[old, x("1-9000-1")]);
        assert!(cut <= old.txn_id());
        assert_eq!(cut, 5000u64 << 32);
        // A young branch does not move the cut.
        assert_eq!(purge_cutoff(10_000, 3600, &[x("1-9000-1")]), 6400u64 << 32);
        assert_eq!(purge_cutoff(100, 3600, &[]), 0);
    }
}
