//! Ending the in-doubt branches of a newly promoted shard primary, which the failover calls
//! after promotion and before the node takes writes.
//!
//! Invariant: the same decisions as the resolver (commit log, abort claims), applied to the
//! given node rather than to the recorded primary (metadata may not point at it yet); branches
//! too young to decide (first seen by this call less than `wait_max` ago) are waited out,
//! bounded by `wait_max` plus a margin, and whatever is still prepared at the end is reported,
//! never guessed.

use std::time::{Duration, Instant};

use kunlun_meta::model::{Cluster, ShardNode};
use kunlun_meta::store::Store;
use tokio_util::sync::CancellationToken;

use super::decide::FirstSeen;
use super::round::{resolve_targets, RoundReport, Target, XaConfig};
use crate::error::Result;
use crate::storage::NodeAddr;

/// Pause between two passes while young branches are waited out.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Ends every Kunlun branch prepared on `node`, the new primary of `shard_id` in `cluster`.
///
/// Returns the last pass's report: `remaining() == 0 && complete()` means the node holds no
/// Kunlun branch any more and may take writes; otherwise the failover must not open it (or
/// retry). Foreign branches are never touched. Errors: the metadata store failed.
pub async fn end_in_doubt_on_new_primary(
    store: &Store,
    cluster: &Cluster,
    shard_id: i64,
    node: &ShardNode,
    cfg: &XaConfig,
    cancel: &CancellationToken,
) -> Result<RoundReport> {
    let target = Target {
        shard_id,
        node_id: node.id,
        addr: NodeAddr::from(node),
    };
    let give_up = Instant::now() + cfg.wait_max + cfg.wait_max / 2 + Duration::from_secs(2);
    let mut ended = Ended::default();
    // This call's own clock: an undecided branch is waited out `wait_max` from when this call
    // first saw it (its coordinator may be about to log a commit), within `give_up`.
    let mut clock = FirstSeen::default();
    loop {
        let report = resolve_targets(
            store,
            Some(&cluster.name),
            std::slice::from_ref(&target),
            cfg,
            &mut clock,
        )
        .await?;
        let done = report.complete() && report.remaining() == 0;
        let report = ended.add(report);
        if done || Instant::now() >= give_up || cancel.is_cancelled() {
            if !done {
                tracing::warn!(cluster = %cluster.name, shard = shard_id, node = %target.addr,
                    remaining = report.remaining(), "in-doubt XA branches left on the new primary");
            }
            return Ok(report);
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
        }
    }
}

/// What earlier passes ended, so the report covers the whole call.
#[derive(Debug, Default)]
struct Ended {
    committed: usize,
    rolled_back: usize,
    aborts_claimed: usize,
}

impl Ended {
    /// The last pass's report with the counts of every pass so far: `found` becomes what was
    /// ended plus what is left, so `remaining()` is what the last pass left.
    fn add(&mut self, mut last: RoundReport) -> RoundReport {
        let left = last.remaining();
        self.committed += last.committed;
        self.rolled_back += last.rolled_back;
        self.aborts_claimed += last.aborts_claimed;
        last.committed = self.committed;
        last.rolled_back = self.rolled_back;
        last.aborts_claimed = self.aborts_claimed;
        last.found = left + self.committed + self.rolled_back;
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_covers_every_pass() {
        let mut e = Ended::default();
        let first = RoundReport {
            found: 3,
            committed: 1,
            too_young: 2,
            ..RoundReport::default()
        };
        let r = e.add(first);
        assert_eq!((r.found, r.remaining()), (3, 2));
        let second = RoundReport {
            found: 2,
            rolled_back: 2,
            aborts_claimed: 1,
            ..RoundReport::default()
        };
        let r = e.add(second);
        assert_eq!(
            (
                r.found,
                r.committed,
                r.rolled_back,
                r.aborts_claimed,
                r.remaining()
            ),
            (3, 1, 2, 1, 0)
        );
    }
}
