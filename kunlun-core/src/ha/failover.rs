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
//!
//! A follower holding transactions the new primary lacks ([`super::gtid::errant_gtids`]) is
//! never repointed: it stays fenced (read-only, replication stopped), is marked inactive for
//! rebuild and named in [`FailoverRecord::errant_followers`]. A failover is `promoted` once the
//! new primary is open and recorded, even when a repointed follower does not replicate within
//! [`REPLICATING_BOUND`]: the shard must never be left without a writable primary because a
//! follower broke. Such followers are named in [`FailoverRecord::not_replicating`] (with their
//! `Last_IO_Error`/`Last_SQL_Error`) and the monitor raises an alarm for them; a record with
//! both lists empty is a clean promotion.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kunlun_meta::model::{Cluster, NodeMapMaster, NodeStatus, ShardNode};
use kunlun_meta::store::{repo, Store};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::fence::{self, Fenced};
use super::gtid::errant_gtids;
use super::promote::{self, Applied, Login, Positions};
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

/// A follower that was not repointed because it holds transactions the new primary lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrantFollower {
    pub node_id: i64,
    /// The transactions the new primary lacks, `domain-server-from..to` ranges.
    pub gtids: String,
}

/// A follower that was repointed but does not replicate, or whose fence is not proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FollowerIssue {
    pub node_id: i64,
    pub why: String,
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
    /// Followers kept out for rebuild instead of being repointed (errant transactions).
    #[serde(default)]
    pub errant_followers: Vec<ErrantFollower>,
    /// Repointed followers that did not replicate within the bound, with why.
    #[serde(default)]
    pub not_replicating: Vec<FollowerIssue>,
    /// Nodes whose fence could not be proven (they may still take a write from `pgx`).
    #[serde(default)]
    pub fence_unproven: Vec<FollowerIssue>,
    /// The attempt failed because of the shard's facts (a SQL thread that cannot apply, an
    /// old primary that takes writes and cannot be stopped): repeating it on the same facts
    /// fails the same way (see [`super::retry`]). Not stored.
    #[serde(skip)]
    pub facts_bound: bool,
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
            errant_followers: Vec::new(),
            not_replicating: Vec::new(),
            fence_unproven: Vec::new(),
            facts_bound: false,
        }
    }

    /// What an operator must look at after a promotion (errant followers, followers not
    /// replicating, unproven fences), as one alarm text; `None` for a clean promotion.
    pub fn degraded(&self) -> Option<String> {
        let mut parts = Vec::new();
        for e in &self.errant_followers {
            parts.push(format!(
                "node {} not repointed, kept out for rebuild: errant transactions {}",
                e.node_id, e.gtids
            ));
        }
        for f in &self.not_replicating {
            parts.push(format!("node {} does not replicate: {}", f.node_id, f.why));
        }
        for f in &self.fence_unproven {
            parts.push(format!("node {} fence not proven: {}", f.node_id, f.why));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
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

/// Longest a repointed follower may take to run both replication threads before the record
/// names it as not replicating.
pub const REPLICATING_BOUND: Duration = Duration::from_secs(5);

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
    /// The cluster's `repl` login for `CHANGE MASTER`; `None` (no secret row) uses the
    /// source's own login.
    pub repl: Option<Login>,
    /// The cluster's `pgx` login to prove fences with; `None` checks `read_only` only.
    pub pgx: Option<Login>,
    /// See [`super::HaConfig::term`].
    pub term: Option<super::TermFence>,
}

impl StepContext {
    /// Loads the cluster's `repl` and `pgx` logins from `kl_cluster_secret` (none when the
    /// cluster has no row, as the harness clusters of the HA tests).
    pub async fn with_logins(mut self, cluster_id: i64) -> Self {
        (self.repl, self.pgx) = cluster_logins(&self.store, cluster_id).await;
        self
    }
}

/// The `repl` and `pgx` logins of a cluster (see [`StepContext::with_logins`]).
pub async fn cluster_logins(store: &Store, cluster_id: i64) -> (Option<Login>, Option<Login>) {
    let secret = store
        .read(async |tx| kunlun_meta::store::repo::secrets::get(tx, cluster_id).await)
        .await;
    match secret {
        Ok(s) => (Some(Login::repl(&s)), Some(Login::pgx(&s))),
        Err(kunlun_meta::Error::NotFound { .. }) => (None, None),
        Err(e) => {
            tracing::warn!(cluster = cluster_id, error = %e, "cluster secret not read; repointing with the node's own login");
            (None, None)
        }
    }
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

/// The promotion to carry out: the candidate, the position it must apply first, and the
/// other members to repoint at it.
#[derive(Debug, Clone, Copy)]
pub struct Switch<'a> {
    pub cluster: &'a Cluster,
    pub new: &'a ShardNode,
    pub catch_up_pos: &'a str,
    pub followers: &'a [Follower],
}

/// Why a step of a switch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub reason: String,
    /// The failure follows from the shard's facts (a SQL thread that cannot apply, a fence that
    /// cannot be proven): a retry on the same facts would fail the same way.
    pub facts_bound: bool,
}

impl StepContext {
    /// Before a step that changes a node: the term this failover runs for is still in force
    /// (not cancelled, and the leader's lease clock still vouches for it).
    pub(crate) fn still_leading(&self) -> Result<(), StepError> {
        if self.cancel.is_cancelled() {
            return Err(StepError::transient(
                "the leadership term ended: this manager changes no node any more",
            ));
        }
        self.store
            .check_term()
            .map_err(|e| StepError::transient(e.to_string()))
    }
}

impl StepError {
    /// A failure that a later attempt may not meet (a timeout, a lost connection).
    pub fn transient(reason: impl Into<String>) -> Self {
        StepError {
            reason: reason.into(),
            facts_bound: false,
        }
    }

    /// A failure that follows from the shard's facts.
    pub fn on_facts(reason: impl Into<String>) -> Self {
        StepError {
            reason: reason.into(),
            facts_bound: true,
        }
    }
}

impl From<String> for StepError {
    fn from(reason: String) -> Self {
        StepError::transient(reason)
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Records the old primary's fence, which the caller ran (and timed, `took`) before anything
/// stops receiving from the old primary: whatever it acknowledged until then is on a replica
/// whose position the choice saw. A fence that says to refuse fails the switch on its facts.
pub fn record_fence(
    fenced: Fenced,
    took: Duration,
    rec: &mut FailoverRecord,
    t: &mut Timeline,
) -> Result<(), StepError> {
    rec.fence = Some(fenced.text.clone());
    t.phase(
        rec,
        "fence",
        Some(format!("{} (took {} ms)", fenced.text, ms(took))),
    );
    match fenced.refuse {
        Some(why) => {
            let e = StepError::on_facts(why);
            ended(rec, &e);
            Err(e)
        }
        None => Ok(()),
    }
}

/// Catch up, promote, repoint, XA hook, open, metadata (the old primary, if any, is fenced
/// already: [`record_fence`]). Fills the record's phases and outcome; `Err` carries the reason
/// of a failed step (also in the record).
pub async fn switch_to(
    ctx: &StepContext,
    sw: Switch<'_>,
    rec: &mut FailoverRecord,
    t: &mut Timeline,
) -> Result<(), StepError> {
    let r = match prepare(ctx, sw.new, sw.catch_up_pos, sw.followers, rec, t).await {
        Ok(checks) => finish(ctx, sw.cluster, sw.new, sw.followers, checks, rec, t).await,
        Err(e) => Err(e),
    };
    match &r {
        Ok(()) => {
            rec.outcome = Outcome::Promoted;
            rec.new_primary = Some(sw.new.id);
        }
        Err(e) => ended(rec, e),
    }
    r
}

/// Marks the record failed with `e`.
pub(crate) fn ended(rec: &mut FailoverRecord, e: &StepError) {
    rec.outcome = Outcome::Failed;
    rec.reason = Some(e.reason.clone());
    rec.facts_bound |= e.facts_bound;
}

/// Which followers to restart after a failed promotion: those that were detached (their
/// replication stopped) and still have a source to resume; a former primary has none.
/// `former_primary` holds each follower's flag, `detached` how its detach went.
fn to_resume<T>(former_primary: &[bool], detached: &[Result<T, String>]) -> Vec<usize> {
    former_primary
        .iter()
        .zip(detached)
        .enumerate()
        .filter(|(_, (former, d))| d.is_ok() && !**former)
        .map(|(i, _)| i)
        .collect()
}

/// What becomes of one detached follower once the candidate is promoted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FollowerPlan {
    /// Attach it to the new primary.
    Attach,
    /// It holds these transactions the new primary lacks: keep it fenced, out for rebuild.
    Errant(String),
    /// It could not be detached (the text says why): left as it is.
    Skip(String),
}

/// Decides each follower's plan from its detach result and the new primary's positions.
fn plan_followers(
    detached: &[Result<Positions, String>],
    new_primary: &Positions,
) -> Vec<FollowerPlan> {
    detached
        .iter()
        .map(|d| match d {
            Err(e) => FollowerPlan::Skip(e.clone()),
            Ok(p) => {
                let errant = errant_gtids(p.facts(), new_primary.facts());
                if errant.is_empty() {
                    FollowerPlan::Attach
                } else {
                    FollowerPlan::Errant(errant.join(","))
                }
            }
        })
        .collect()
}

/// Catch-up, then the candidate's promotion with the followers detached alongside, then the
/// followers attached to it unless errant, and their fences proven. Nothing here lets the new
/// primary take writes. Returns the checks of the attached followers' replication, started
/// now and awaited once the new primary is open.
pub(crate) async fn prepare(
    ctx: &StepContext,
    new: &ShardNode,
    catch_up_pos: &str,
    followers: &[Follower],
    rec: &mut FailoverRecord,
    t: &mut Timeline,
) -> Result<Vec<ReplCheck>, StepError> {
    let addr = NodeAddr::from(new);
    let caught = promote::catch_up(&addr, catch_up_pos, ctx.catch_up_limit, ctx.storage)
        .await
        .map_err(|e| format!("catch up on node {}: {e}", new.id))?;
    match caught {
        Applied::Yes => t.phase(rec, "catch_up", Some(catch_up_pos.to_string())),
        Applied::TimedOut => {
            t.phase(rec, "catch_up", Some(format!("not at {catch_up_pos}")));
            return Err(StepError::transient(format!(
                "node {} did not apply its relay log up to {catch_up_pos} within {:?}",
                new.id, ctx.catch_up_limit
            )));
        }
        Applied::SqlStopped(why) => {
            t.phase(rec, "catch_up", Some(why.clone()));
            return Err(StepError::on_facts(format!(
                "node {} cannot apply its relay log up to {catch_up_pos}: {why}",
                new.id
            )));
        }
    }

    // Stopping replication waits for IO threads stuck on a lost primary (seconds, until the
    // server's stop loop re-signals them), on the candidate and on every follower alike: those
    // waits run side by side instead of one after the other.
    // A term that ended while this failover waited (a frozen process woken past its lease)
    // detaches and promotes nothing: its successor owns the shard now.
    ctx.still_leading()?;
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
    let mut detached: Vec<Result<Positions, String>> = Vec::with_capacity(followers.len());
    for h in detaching {
        detached.push(match h.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("detach task: {e}")),
        });
    }
    let failed = match promoted {
        Ok(Applied::Yes) => None,
        Ok(Applied::TimedOut) => Some(StepError::transient(format!(
            "node {} did not apply everything it received within {:?}",
            new.id, ctx.catch_up_limit
        ))),
        Ok(Applied::SqlStopped(why)) => Some(StepError::on_facts(format!(
            "node {} cannot apply everything it received: {why}",
            new.id
        ))),
        Err(e) => Some(StepError::transient(format!(
            "promote node {}: {e}",
            new.id
        ))),
    };
    // The new primary's positions, final now (replication stopped, still read-only): the
    // followers' errant check compares against them.
    let new_pos = match failed {
        Some(e) => Err(e),
        None => promote::positions(&addr, opts).await.map_err(|e| {
            StepError::transient(format!("read the positions of node {}: {e}", new.id))
        }),
    };
    let new_pos = match new_pos {
        Ok(p) => p,
        Err(e) => {
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
            return Err(StepError {
                reason: format!("{e}; replication resumed on {ok}/{} nodes", back.len()),
                ..e
            });
        }
    };
    t.phase(
        rec,
        "promote",
        Some(format!("{} followers detached alongside", followers.len())),
    );

    let plans = plan_followers(&detached, &new_pos);
    ctx.still_leading()?;
    let attaching: Vec<_> = followers
        .iter()
        .zip(&plans)
        .map(|(f, plan)| {
            (*plan == FollowerPlan::Attach).then(|| {
                let a = NodeAddr::from(&f.node);
                let src = addr.clone();
                let login = ctx.repl.clone();
                tokio::spawn(async move { promote::attach(&a, &src, login.as_ref(), opts).await })
            })
        })
        .collect();
    // Every follower stays read-only from here on (an errant one for good): prove that the
    // compute nodes' login cannot write on it, alongside the attach.
    let proving: Vec<_> = followers
        .iter()
        .zip(&plans)
        .filter(|(_, p)| !matches!(p, FollowerPlan::Skip(_)))
        .map(|(f, _)| {
            let a = NodeAddr::from(&f.node);
            let (id, pgx) = (f.node.id, ctx.pgx.clone());
            tokio::spawn(async move { (id, fence::verify(&a, pgx.as_ref(), opts).await) })
        })
        .collect();
    let mut notes = Vec::new();
    let mut checks = Vec::new();
    for ((f, plan), h) in followers.iter().zip(plans).zip(attaching) {
        let r = match (plan, h) {
            (FollowerPlan::Skip(e), _) => Err(e),
            (FollowerPlan::Errant(gtids), _) => {
                notes.push(format!(
                    "node {} not repointed, kept out for rebuild: errant transactions {gtids}",
                    f.node.id
                ));
                rec.errant_followers.push(ErrantFollower {
                    node_id: f.node.id,
                    gtids,
                });
                continue;
            }
            (FollowerPlan::Attach, Some(h)) => match h.await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("attach task: {e}")),
            },
            (FollowerPlan::Attach, None) => Err("not attached".to_string()),
        };
        match r {
            Ok(()) => {
                notes.push(format!("node {} follows {}", f.node.id, new.id));
                let (a, id) = (NodeAddr::from(&f.node), f.node.id);
                let target = new_pos.current.clone();
                checks.push(ReplCheck {
                    node_id: id,
                    task: tokio::spawn(async move {
                        promote::replicating(&a, Some(&target), REPLICATING_BOUND, opts).await
                    }),
                });
            }
            Err(e) => {
                notes.push(format!("node {} not repointed: {e}", f.node.id));
                rec.not_replicating.push(FollowerIssue {
                    node_id: f.node.id,
                    why: format!("not repointed: {e}"),
                });
            }
        }
    }
    t.phase(rec, "repoint", Some(notes.join("; ")));
    let mut proofs = Vec::new();
    for h in proving {
        match h.await {
            Ok((id, Ok(what))) => proofs.push(format!("node {id}: {what}")),
            Ok((id, Err(why))) => {
                proofs.push(format!("node {id}: NOT proven: {why}"));
                rec.fence_unproven.push(FollowerIssue { node_id: id, why });
            }
            Err(e) => proofs.push(format!("proof task: {e}")),
        }
    }
    if !proofs.is_empty() {
        let line = format!("followers: {}", proofs.join("; "));
        rec.fence = Some(match rec.fence.take() {
            Some(f) => format!("{f}; {line}"),
            None => line.clone(),
        });
        t.phase(rec, "verify_fence", Some(line));
    }
    Ok(checks)
}

/// A running check that a repointed follower replicates ([`promote::replicating`]).
#[derive(Debug)]
pub(crate) struct ReplCheck {
    node_id: i64,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

/// XA hook, open, metadata, route: the new primary takes writes from here on.
async fn finish(
    ctx: &StepContext,
    cluster: &Cluster,
    new: &ShardNode,
    followers: &[Follower],
    checks: Vec<ReplCheck>,
    rec: &mut FailoverRecord,
    t: &mut Timeline,
) -> Result<(), StepError> {
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
                return Err(StepError::transient(format!(
                    "{} in-doubt XA branches left on node {}",
                    report.remaining(),
                    new.id
                )));
            }
            format!("{} branches ended", report.found)
        }
        None => "skipped (no XA settings)".to_string(),
    };
    t.phase(rec, "xa_hook", Some(note));

    ctx.still_leading()?;
    promote::open_for_writes(&addr, ctx.storage)
        .await
        .map_err(|e| format!("open node {} for writes: {e}", new.id))?;
    t.phase(rec, "open", None);

    let old = rec.old_primary;
    let kind = rec.kind;
    let errant: Vec<i64> = rec.errant_followers.iter().map(|e| e.node_id).collect();
    let maps: Vec<(i64, NodeMapMaster)> = followers
        .iter()
        .filter(|f| !errant.contains(&f.node.id))
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
    let term = ctx.term.clone();
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
            super::TermFence::check(term.as_ref(), tx).await?;
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
            // Errant followers stay out until rebuilt: inactive, so upkeep never repoints
            // them and no compute node is routed to them.
            for id in &errant {
                repo::nodes::set_status_if(tx, *id, NodeStatus::Active, NodeStatus::Inactive)
                    .await?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        // The new primary is open but metadata does not name it: close it again, so a retry
        // that picks another candidate never leaves two writable primaries.
        let fence = promote::fence_read_only(&addr, ctx.storage).await;
        return Err(StepError::transient(format!(
            "metadata update: {e}; node {} closed again ({fence})",
            new.id
        )));
    }
    t.phase(rec, "metadata", None);

    // Compute nodes learn the new primary; a miss is noted, the catalog sync retries it.
    let opts = crate::catalog::CatalogOptions::for_store(&ctx.store);
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

    verify_followers(checks, rec, t).await;
    Ok(())
}

/// Promoted means replicating: each repointed follower had since its attach (and at most
/// [`REPLICATING_BOUND`]) to run both threads; those that do not are named in the record.
pub(crate) async fn verify_followers(
    checks: Vec<ReplCheck>,
    rec: &mut FailoverRecord,
    t: &mut Timeline,
) {
    let n = checks.len();
    for c in checks {
        let r = match c.task.await {
            Ok(r) => r,
            Err(e) => Err(format!("check task: {e}")),
        };
        if let Err(why) = r {
            rec.not_replicating.push(FollowerIssue {
                node_id: c.node_id,
                why,
            });
        }
    }
    let note = if rec.not_replicating.is_empty() {
        format!("{n} repointed followers replicate")
    } else {
        let bad: Vec<String> = rec
            .not_replicating
            .iter()
            .map(|f| format!("node {}: {}", f.node_id, f.why))
            .collect();
        format!("not replicating: {}", bad.join("; "))
    };
    t.phase(rec, "verify_followers", Some(note));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(state: &str, cur: &str, server_id: u32) -> Positions {
        Positions {
            binlog_state: super::super::gtid::GtidState::parse(state).unwrap(),
            current: super::super::gtid::GtidPos::parse(cur).unwrap(),
            server_id,
        }
    }

    #[test]
    fn errant_followers_are_kept_out_and_the_others_attached() {
        let new = pos("0-1-100,0-2-50", "0-1-100", 2);
        let detached = vec![
            Ok(pos("0-1-100", "0-1-100", 3)),
            Ok(pos("0-1-99,0-9-100", "0-9-100", 9)),
            Err("unreachable".to_string()),
            Ok(pos("0-1-101", "0-1-101", 4)),
        ];
        assert_eq!(
            plan_followers(&detached, &new),
            vec![
                FollowerPlan::Attach,
                FollowerPlan::Errant("0-9-..100".into()),
                FollowerPlan::Skip("unreachable".into()),
                FollowerPlan::Errant("0-1-101..101".into()),
            ]
        );
    }

    #[test]
    fn a_record_lists_what_is_degraded() {
        let mut r = FailoverRecord::new(FailoverKind::Automatic, 1, 2, 3);
        assert_eq!(r.degraded(), None);
        r.errant_followers.push(ErrantFollower {
            node_id: 4,
            gtids: "0-9-..5".into(),
        });
        r.not_replicating.push(FollowerIssue {
            node_id: 5,
            why: "SQL thread stopped with error 1950".into(),
        });
        let d = r.degraded().unwrap();
        assert!(
            d.contains("node 4 not repointed") && d.contains("0-9-..5"),
            "{d}"
        );
        assert!(
            d.contains("node 5 does not replicate") && d.contains("1950"),
            "{d}"
        );
    }

    #[test]
    fn a_failed_promotion_resumes_only_detached_replicas_that_still_have_a_source() {
        let detached: Vec<Result<(), String>> =
            vec![Ok(()), Err("unreachable".to_string()), Ok(()), Ok(())];
        // The third is the former primary of a switchover: it has no source to resume.
        assert_eq!(
            to_resume(&[false, false, true, false], &detached),
            vec![0, 3]
        );
        assert!(to_resume::<()>(&[], &[]).is_empty());
        assert!(to_resume(&[true], &[Ok::<(), String>(())]).is_empty());
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
