//! Carrying out a failover or a planned switchover once the decision is made: the ordered
//! steps, the metadata update, the XA hook, and the record with its per-phase timeline.
//!
//! Invariant: the new primary is opened for writes only after it is promoted, the other
//! replicas are repointed at it and the XA hook has ended its in-doubt branches; metadata
//! names it primary only after it is open, so metadata never points at a read-only primary
//! for longer than the metadata write. The old primary's fence has finished (and is recorded,
//! done or failed) before anything stops receiving from it: a write it acknowledged until then
//! reached a replica whose position the choice saw. The candidate stops its SQL threads only
//! after they applied its final received position, read once its IO threads stopped.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kunlun_meta::model::{Cluster, NodeMapMaster, NodeStatus, ShardNode};
use kunlun_meta::store::{repo, Store};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::promote;
use crate::storage::{NodeAddr, StorageOptions};
use crate::xa::{end_in_doubt_on_new_primary, XaConfig};

/// Why the primary changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverKind {
    /// The monitor found the primary dead.
    Automatic,
    /// An operator asked for a planned switch.
    Switchover,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Promoted,
    /// Nothing was changed on the nodes (no provable candidate, no-switch, anti-flapping).
    Refused,
    /// A step failed part-way; the record says which.
    Failed,
}

/// One phase of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Phase {
    pub name: String,
    pub ms: u64,
    pub note: Option<String>,
}

/// The record of one failover or switchover (also of a refused one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailoverRecord {
    pub id: u64,
    pub cluster_id: i64,
    pub shard_id: i64,
    pub kind: FailoverKind,
    pub started_at: DateTime<Utc>,
    pub old_primary: i64,
    pub new_primary: Option<i64>,
    pub outcome: Outcome,
    pub proven_lossless: bool,
    pub possible_loss: Option<String>,
    pub reason: Option<String>,
    /// What fencing did to the old primary.
    pub fence: Option<String>,
    pub phases: Vec<Phase>,
    /// Rejoined as replica, kept out for rebuild, or still down.
    pub old_primary_fate: Option<String>,
    pub total_ms: u64,
}

impl FailoverRecord {
    /// A fresh record; `id` is assigned when it is stored.
    pub fn new(kind: FailoverKind, cluster_id: i64, shard_id: i64, old_primary: i64) -> Self {
        FailoverRecord {
            id: 0,
            cluster_id,
            shard_id,
            kind,
            started_at: Utc::now(),
            old_primary,
            new_primary: None,
            outcome: Outcome::Refused,
            proven_lossless: false,
            possible_loss: None,
            reason: None,
            fence: None,
            phases: Vec::new(),
            old_primary_fate: None,
            total_ms: 0,
        }
    }

    /// Milliseconds of the named phase, if it ran.
    pub fn phase_ms(&self, name: &str) -> Option<u64> {
        self.phases.iter().find(|p| p.name == name).map(|p| p.ms)
    }
}

/// Measures consecutive phases.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    mark: Instant,
}

impl Timeline {
    /// Starts at `start` (the first failed probe for an automatic failover).
    pub fn starting_at(start: Instant) -> Self {
        Timeline { start, mark: start }
    }

    /// Closes the current phase under `name`.
    pub fn phase(&mut self, rec: &mut FailoverRecord, name: &str, note: Option<String>) {
        let now = Instant::now();
        rec.phases.push(Phase {
            name: name.to_string(),
            ms: ms(now - self.mark),
            note,
        });
        self.mark = now;
        rec.total_ms = ms(now - self.start);
    }
}

/// Longest a failover waits for the compute nodes to take the new topology.
const ROUTE_PUSH_LIMIT: Duration = Duration::from_secs(3);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the steps need besides the nodes.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub store: Store,
    pub storage: StorageOptions,
    pub catch_up_limit: Duration,
    /// XA settings for the in-doubt hook; `None` skips it (recorded).
    pub xa: Option<XaConfig>,
    pub cancel: CancellationToken,
    /// Test seam (see [`super::HaConfig::before_write`]).
    pub before_write: Option<super::WriteHook>,
}

/// The other members after a switch: nodes to repoint, the former primary flagged.
#[derive(Debug, Clone)]
pub struct Follower {
    pub node: ShardNode,
    pub former_primary: bool,
}

/// `ip_port` as `node_map_master` spells hosts.
pub fn map_host(n: &ShardNode) -> String {
    format!("{}_{}", n.hostaddr, n.port)
}

/// True while the node's row exists and is not marked `deleted`.
async fn still_member(tx: &mut kunlun_meta::store::Tx, id: i64) -> kunlun_meta::Result<bool> {
    match repo::nodes::get(tx, id).await {
        Ok(n) => Ok(n.status != NodeStatus::Deleted),
        Err(kunlun_meta::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The fence of the old primary, run by [`switch_to`] alongside the steps that do not let the
/// new primary take writes; it returns what it did (kept as the record's `fence`).
pub type FenceTask<'a> = Pin<Box<dyn Future<Output = String> + Send + 'a>>;

/// Catch up, promote, repoint, fence (when given), XA hook, open, metadata. Fills the record's
/// phases and outcome; `Err` carries the reason of a failed step (also in the record).
///
/// A given `fence` is awaited, and recorded, first: before catch-up, promotion and the
/// followers' detach (which run side by side) stop anything from receiving from the old
/// primary.
#[allow(clippy::too_many_arguments)]
pub async fn switch_to(
    ctx: &StepContext,
    cluster: &Cluster,
    new: &ShardNode,
    catch_up_pos: &str,
    followers: &[Follower],
    fence: Option<FenceTask<'_>>,
    rec: &mut FailoverRecord,
    t: &mut Timeline,
) -> Result<(), String> {
    let r = match fence {
        None => match prepare(ctx, new, catch_up_pos, followers, rec, t).await {
            Ok(()) => finish(ctx, cluster, new, followers, rec, t).await,
            Err(e) => Err(e),
        },
        Some(fence) => {
            let started = Instant::now();
            let fence = async move {
                let what = fence.await;
                (what, started.elapsed())
            };
            // The fence finishes before anything stops receiving from the old primary, so
            // whatever it acknowledged until then is on a replica the positions account for.
            let (what, took) = fence.await;
            rec.fence = Some(what.clone());
            t.phase(rec, "fence", Some(format!("{what} (took {} ms)", ms(took))));
            match prepare(ctx, new, catch_up_pos, followers, rec, t).await {
                Ok(()) => finish(ctx, cluster, new, followers, rec, t).await,
                Err(e) => Err(e),
            }
        }
    };
    match &r {
        Ok(()) => {
            rec.outcome = Outcome::Promoted;
            rec.new_primary = Some(new.id);
        }
        Err(e) => {
            rec.outcome = Outcome::Failed;
            rec.reason = Some(e.clone());
        }
    }
    r
}

/// Which followers to restart after a failed promotion: those that were detached (their
/// replication stopped) and still have a source to resume; a former primary has none.
/// `former_primary` holds each follower's flag, `detached` how its detach went.
fn to_resume(former_primary: &[bool], detached: &[Result<(), String>]) -> Vec<usize> {
    former_primary
        .iter()
        .zip(detached)
        .enumerate()
        .filter(|(_, (former, d))| d.is_ok() && !**former)
        .map(|(i, _)| i)
        .collect()
}

/// Catch-up, then the candidate's promotion with the followers detached alongside, then the
/// followers attached to it. Nothing here lets the new primary take writes.
async fn prepare(
    ctx: &StepContext,
    new: &ShardNode,
    catch_up_pos: &str,
    followers: &[Follower],
    rec: &mut FailoverRecord,
    t: &mut Timeline,
) -> Result<(), String> {
    let addr = NodeAddr::from(new);
    let caught = promote::catch_up(&addr, catch_up_pos, ctx.catch_up_limit, ctx.storage)
        .await
        .map_err(|e| format!("catch up on node {}: {e}", new.id))?;
    if !caught {
        t.phase(rec, "catch_up", Some(format!("not at {catch_up_pos}")));
        return Err(format!(
            "node {} did not apply its relay log up to {catch_up_pos} within {:?}",
            new.id, ctx.catch_up_limit
        ));
    }
    t.phase(rec, "catch_up", Some(catch_up_pos.to_string()));

    // Stopping replication waits for IO threads stuck on a lost primary (seconds, until the
    // server's stop loop re-signals them), on the candidate and on every follower alike: those
    // waits run side by side instead of one after the other.
    let opts = ctx.storage;
    let detaching: Vec<_> = followers
        .iter()
        .map(|f| {
            let a = NodeAddr::from(&f.node);
            let former = f.former_primary;
            tokio::spawn(async move { promote::detach(&a, former, opts).await })
        })
        .collect();
    let promoted = promote::promote(&addr, opts, ctx.catch_up_limit).await;
    let mut detached: Vec<Result<(), String>> = Vec::with_capacity(followers.len());
    for h in detaching {
        detached.push(match h.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("detach task: {e}")),
        });
    }
    let failed = match promoted {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "node {} did not apply everything it received within {:?}",
            new.id, ctx.catch_up_limit
        )),
        Err(e) => Some(format!("promote node {}: {e}", new.id)),
    };
    if let Some(e) = failed {
        // Nothing was promoted: replication goes back to how it was (best effort).
        let mut back = vec![promote::resume(&addr, opts).await.is_ok()];
        let former: Vec<bool> = followers.iter().map(|f| f.former_primary).collect();
        for i in to_resume(&former, &detached) {
            back.push(
                promote::resume(&NodeAddr::from(&followers[i].node), opts)
                    .await
                    .is_ok(),
            );
        }
        let ok = back.iter().filter(|b| **b).count();
        return Err(format!(
            "{e}; replication resumed on {ok}/{} nodes",
            back.len()
        ));
    }
    t.phase(
        rec,
        "promote",
        Some(format!("{} followers detached alongside", followers.len())),
    );

    let attaching: Vec<_> = followers
        .iter()
        .zip(&detached)
        .map(|(f, d)| {
            d.is_ok().then(|| {
                let a = NodeAddr::from(&f.node);
                let src = addr.clone();
                tokio::spawn(async move { promote::attach(&a, &src, opts).await })
            })
        })
        .collect();
    let mut notes = Vec::new();
    for ((f, d), h) in followers.iter().zip(detached).zip(attaching) {
        let r = match (d, h) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(h)) => match h.await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("attach task: {e}")),
            },
            (Ok(()), None) => Err("not attached".to_string()),
        };
        notes.push(match r {
            Ok(()) => format!("node {} follows {}", f.node.id, new.id),
            Err(e) => format!("node {} not repointed: {e}", f.node.id),
        });
    }
    t.phase(rec, "repoint", Some(notes.join("; ")));
    Ok(())
}

/// XA hook, open, metadata, route: the new primary takes writes from here on.
async fn finish(
    ctx: &StepContext,
    cluster: &Cluster,
    new: &ShardNode,
    followers: &[Follower],
    rec: &mut FailoverRecord,
    t: &mut Timeline,
) -> Result<(), String> {
    let addr = NodeAddr::from(new);
    let note = match &ctx.xa {
        Some(xa) => {
            let report = end_in_doubt_on_new_primary(
                &ctx.store,
                cluster,
                new.shard_id,
                new,
                xa,
                &ctx.cancel,
            )
            .await
            .map_err(|e| format!("XA hook: {e}"))?;
            if report.remaining() > 0 || !report.complete() {
                t.phase(rec, "xa_hook", Some(format!("{report:?}")));
                return Err(format!(
                    "{} in-doubt XA branches left on node {}",
                    report.remaining(),
                    new.id
                ));
            }
            format!("{} branches ended", report.found)
        }
        None => "skipped (no XA settings)".to_string(),
    };
    t.phase(rec, "xa_hook", Some(note));

    promote::open_for_writes(&addr, ctx.storage)
        .await
        .map_err(|e| format!("open node {} for writes: {e}", new.id))?;
    t.phase(rec, "open", None);

    let old = rec.old_primary;
    let kind = rec.kind;
    let maps: Vec<(i64, NodeMapMaster)> = followers
        .iter()
        .map(|f| {
            (
                f.node.id,
                NodeMapMaster {
                    cluster_id: cluster.id,
                    node_host: map_host(&f.node),
                    master_host: map_host(new),
                    master_uuid: None,
                },
            )
        })
        .collect();
    let new_id = new.id;
    let new_host = map_host(new);
    let cluster_id = cluster.id;
    super::WriteHook::call(
        ctx.before_write.as_ref(),
        super::WriteSite::Failover {
            shard_id: new.shard_id,
            new_primary: new_id,
        },
    )
    .await;
    // The steps above took seconds; a delete job may have marked nodes `deleted` meanwhile
    // (in the transaction that records their removal). Every write below is conditional on
    // what is stored now, in this transaction, so a deleted node is never brought back.
    let recorded = ctx
        .store
        .tx(async move |tx| {
            let status = repo::nodes::get(tx, new_id).await?.status;
            if status != NodeStatus::Active {
                return Err(kunlun_meta::Error::Conflict(format!(
                    "node {new_id} became {status:?} during the failover"
                )));
            }
            repo::nodes::set_primary(tx, new_id).await?;
            repo::meta::delete_node_master(tx, cluster_id, &new_host).await?;
            for (id, m) in &maps {
                if still_member(tx, *id).await? {
                    repo::meta::set_node_master(tx, m).await?;
                }
            }
            if kind == FailoverKind::Automatic {
                // Out until it proves it can rejoin (see the monitor); left alone when a job
                // changed it meanwhile.
                repo::nodes::set_status_if(tx, old, NodeStatus::Active, NodeStatus::Inactive)
                    .await?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        // The new primary is open but metadata does not name it: close it again, so a retry
        // that picks another candidate never leaves two writable primaries.
        let fence = promote::fence_read_only(&addr, ctx.storage).await;
        return Err(format!(
            "metadata update: {e}; node {} closed again ({fence})",
            new.id
        ));
    }
    t.phase(rec, "metadata", None);

    // Compute nodes learn the new primary; a miss is noted, the catalog sync retries it.
    let opts = crate::catalog::CatalogOptions::default();
    // Bounded: the monitor handles every shard in one task, and the new primary is already
    // open; a slow compute node must not delay the next shard's failover.
    let push = crate::catalog::push_cluster(&ctx.store, cluster.id, &opts);
    let note = match tokio::time::timeout(ROUTE_PUSH_LIMIT, push).await {
        Ok(Ok(report)) => report.to_string(),
        Ok(Err(e)) => format!("catalog push failed (the catalog sync retries): {e}"),
        Err(_) => format!(
            "catalog push not finished within {ROUTE_PUSH_LIMIT:?} (the catalog sync retries)"
        ),
    };
    t.phase(rec, "route", Some(note));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_promotion_resumes_only_detached_replicas_that_still_have_a_source() {
        let detached = vec![Ok(()), Err("unreachable".to_string()), Ok(()), Ok(())];
        // The third is the former primary of a switchover: it has no source to resume.
        assert_eq!(
            to_resume(&[false, false, true, false], &detached),
            vec![0, 3]
        );
        assert!(to_resume(&[], &[]).is_empty());
        assert!(to_resume(&[true], &[Ok(())]).is_empty());
    }

    #[test]
    fn the_timeline_closes_consecutive_phases_and_keeps_the_total() {
        let start = Instant::now() - Duration::from_millis(50);
        let mut t = Timeline::starting_at(start);
        let mut rec = FailoverRecord::new(FailoverKind::Automatic, 1, 2, 3);
        t.phase(&mut rec, "detect", None);
        t.phase(&mut rec, "fence", Some("x".into()));
        assert!(rec.phase_ms("detect").unwrap() >= 50);
        assert!(rec.phase_ms("fence").unwrap() < 50);
        assert!(rec.total_ms >= rec.phase_ms("detect").unwrap());
        assert_eq!(rec.phase_ms("promote"), None);
    }
}
