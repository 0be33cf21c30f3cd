//! One XA recovery pass over a set of shard primaries: gather (`XA RECOVER`), decide (one
//! commit-log range query, abort claims) and apply (`XA COMMIT`/`XA ROLLBACK`).
//!
//! Invariants: a branch is committed only because a committed commit-log row says `commit`; it
//! is rolled back only because a row says `abort` (after this pass's own claim, when it had to
//! write one) or because it lives on the metadata shard. Every branch of one transaction thus
//! follows the same row. Anything that fails is left prepared for the next pass.

use std::collections::HashMap;
use std::time::Duration;

use kunlun_meta::model::{Cluster, ClusterStatus, MemberState, NodeStatus, TxnCmd};
use kunlun_meta::store::repo::commit_log::NewCommitLogEntry;
use kunlun_meta::store::{repo, Store};
use serde::Serialize;
use tokio::task::JoinSet;

use super::decide::{
    plan_cluster, plan_meta_shard, txn_id_range, Action, Branch, FirstSeen, Planned,
};
use super::xid::KunlunXid;
use crate::config::CoreConfig;
use crate::error::Result;
use crate::storage::{NodeAddr, StorageConn, StorageOptions, ER_XAER_NOTA, ER_XA_RBROLLBACK};

/// Shard id used for branches of the metadata shard (Kunlun's `MetadataShardVirtualCluster`).
pub const META_SHARD_ID: i64 = 0;

/// Settings of XA recovery.
#[derive(Debug, Clone, PartialEq)]
pub struct XaConfig {
    /// Period of the resolver (`thread_work_interval`).
    pub interval: Duration,
    /// Window in which a coordinator may still log its decision
    /// (`global_txn_commit_log_wait_max_sec`); a branch without a row is left alone until this
    /// long after the resolver first saw it prepared.
    pub wait_max: Duration,
    /// Commit-log rows of transactions older than this are purged (`commit_log_retention_hours`).
    pub retention: Duration,
    /// How often the purge runs.
    pub purge_every: Duration,
    /// Deadlines of storage-node calls.
    pub storage: StorageOptions,
    /// The clusters whose branches the resolver ends (`clusters_to_serve`; the metadata
    /// shard's are ended by every resolver). Default: every cluster.
    pub clusters: crate::ClusterScope,
}

impl XaConfig {
    /// The XA settings of the engine's configuration.
    pub fn from_core(c: &CoreConfig) -> Self {
        XaConfig {
            interval: c.thread_work_interval,
            wait_max: c.global_txn_commit_log_wait_max,
            retention: c.commit_log_retention,
            purge_every: Duration::from_secs(3600)
                .min(c.commit_log_retention.max(Duration::from_secs(60))),
            storage: StorageOptions::default(),
            clusters: c.clusters_to_serve.clone(),
        }
    }
}

/// A shard primary to scan.
#[derive(Debug, Clone)]
pub struct Target {
    pub shard_id: i64,
    pub node_id: i64,
    pub addr: NodeAddr,
}

/// What a pass found and did; counts are of branches (one xid on one shard).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoundReport {
    /// Kunlun branches found prepared.
    pub found: usize,
    /// Prepared branches that are not Kunlun's (left alone).
    pub foreign: usize,
    pub committed: usize,
    pub rolled_back: usize,
    /// Left: no decision logged and the coordinator's deadline has not passed.
    pub too_young: usize,
    /// Left: the owner session is still connected (`XA COMMIT` from here says "Unknown XID").
    pub left_attached: usize,
    /// Abort decisions this pass wrote into the commit log.
    pub aborts_claimed: usize,
    /// Branches whose lookup, claim or statement failed this pass (retried next pass).
    pub failed: usize,
    /// Oldest start time (unix s) among the Kunlun branches found.
    pub oldest_start_ts: Option<u32>,
    /// The metadata server's clock when deciding (unix s; 0 when nothing was found).
    pub now: u64,
    /// Shards whose primary could not be scanned, with the reason.
    pub unreachable: Vec<(i64, String)>,
    /// Every Kunlun branch found, as `(shard_id, xid)`.
    #[serde(skip)]
    pub seen: Vec<(i64, KunlunXid)>,
}

impl RoundReport {
    /// Branches still prepared after the pass, as far as this pass knows.
    pub fn remaining(&self) -> usize {
        self.found.saturating_sub(self.committed + self.rolled_back)
    }

    /// True when every shard was scanned.
    pub fn complete(&self) -> bool {
        self.unreachable.is_empty()
    }

    /// Adds another report's counts to this one.
    pub fn absorb(&mut self, o: RoundReport) {
        self.found += o.found;
        self.foreign += o.foreign;
        self.committed += o.committed;
        self.rolled_back += o.rolled_back;
        self.too_young += o.too_young;
        self.left_attached += o.left_attached;
        self.aborts_claimed += o.aborts_claimed;
        self.failed += o.failed;
        self.oldest_start_ts = match (self.oldest_start_ts, o.oldest_start_ts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.now = self.now.max(o.now);
        self.unreachable.extend(o.unreachable);
        self.seen.extend(o.seen);
    }
}

/// The recorded primary of every shard of a cluster; shards without one, or whose primary is
/// not `active`, are returned apart with the reason.
pub async fn cluster_targets(
    store: &Store,
    cluster_id: i64,
) -> Result<(Vec<Target>, Vec<(i64, String)>)> {
    let (shards, nodes) = store
        .read(async |tx| {
            let shards = repo::shards::list(tx, Some(cluster_id)).await?;
            let nodes = repo::nodes::list_by_cluster(tx, cluster_id).await?;
            Ok((shards, nodes))
        })
        .await?;
    let mut targets = Vec::new();
    let mut missing = Vec::new();
    for s in shards.iter().filter(|s| s.status == ClusterStatus::Inuse) {
        let mut primaries = nodes.iter().filter(|n| {
            n.shard_id == s.id
                && n.member_state == MemberState::Source
                && n.status != NodeStatus::Deleted
        });
        match (primaries.next(), primaries.next()) {
            // Out of service (a restore replacing its data, a stop): its branches are not
            // the resolver's to end now; the restore ends them from the backed-up log.
            (Some(n), None) if n.status != NodeStatus::Active => missing.push((
                s.id,
                format!("the primary (node {}) is {}: left alone", n.id, n.status),
            )),
            (Some(n), None) => targets.push(Target {
                shard_id: s.id,
                node_id: n.id,
                addr: NodeAddr::from(n),
            }),
            (None, _) => missing.push((s.id, "no primary recorded".to_string())),
            (Some(_), Some(_)) => {
                missing.push((s.id, "more than one primary recorded".to_string()))
            }
        }
    }
    Ok((targets, missing))
}

/// The recorded primary of the metadata shard (none on a SQLite store).
pub async fn meta_targets(store: &Store) -> Result<Vec<Target>> {
    let nodes = store
        .read(async |tx| repo::meta::list_meta_nodes(tx).await)
        .await?;
    Ok(nodes
        .iter()
        .filter(|n| n.member_state == MemberState::Source)
        .take(1)
        .map(|n| Target {
            shard_id: META_SHARD_ID,
            node_id: n.id,
            addr: NodeAddr::from(n),
        })
        .collect())
}

/// A shard primary after `XA RECOVER`, with its connection kept for the apply step.
pub(crate) struct Scan {
    pub target: Target,
    pub conn: StorageConn,
    pub kunlun: Vec<KunlunXid>,
    pub foreign: usize,
}

/// `XA RECOVER` on every target at once.
pub(crate) async fn scan_all(
    targets: &[Target],
    opts: StorageOptions,
) -> (Vec<Scan>, Vec<(i64, String)>) {
    let mut set = JoinSet::new();
    for t in targets.iter().cloned() {
        set.spawn(async move {
            let r = scan_one(&t, opts).await;
            (t, r)
        });
    }
    let mut scans = Vec::new();
    let mut failed = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((_, Ok(scan))) => scans.push(scan),
            Ok((t, Err(e))) => {
                tracing::warn!(shard = t.shard_id, node = %t.addr, error = %e, "XA RECOVER failed; retried next round");
                failed.push((t.shard_id, e.to_string()));
            }
            Err(e) => tracing::error!(error = %e, "XA scan task failed"),
        }
    }
    scans.sort_by_key(|s| s.target.shard_id);
    (scans, failed)
}

async fn scan_one(t: &Target, opts: StorageOptions) -> crate::storage::Result<Scan> {
    let mut conn = StorageConn::connect(&t.addr, opts).await?;
    let rows = conn.xa_recover().await?;
    let mut kunlun = Vec::new();
    let mut foreign = 0;
    for r in &rows {
        match r.plain_gtrid().and_then(KunlunXid::parse) {
            Some(x) => kunlun.push(x),
            None => foreign += 1,
        }
    }
    Ok(Scan {
        target: t.clone(),
        conn,
        kunlun,
        foreign,
    })
}

/// The metadata server's clock, unix seconds.
pub(crate) async fn meta_now(store: &Store) -> Result<u64> {
    let now = store
        .autocommit(async |tx| repo::commit_log::server_now(tx).await)
        .await?;
    Ok(u64::try_from(now).unwrap_or(0))
}

/// The logged decisions covering `branches`: one range query on `commit_log_<cluster>`.
pub(crate) async fn lookup(
    store: &Store,
    cluster: &str,
    branches: &[Branch],
) -> Result<HashMap<(u32, u64), TxnCmd>> {
    let Some((lo, hi)) = txn_id_range(branches) else {
        return Ok(HashMap::new());
    };
    let rows = store
        .read(async |tx| repo::commit_log::range(tx, cluster, lo, hi).await)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|e| {
            Some((
                (u32::try_from(e.comp_node_id).ok()?, e.txn_id),
                e.next_txn_cmd,
            ))
        })
        .collect())
}

/// Claims abort for each transaction: inserts the abort row (full `txn_id`, deadline guard
/// `now + wait_max` as the compute nodes' own), or, when a row already exists (a late
/// coordinator got there first), reads it. Returns the decision to obey per xid, or `None`
/// when neither worked this pass.
async fn claim_aborts(
    store: &Store,
    cluster: &str,
    todo: &[(KunlunXid, Vec<i64>)],
    deadline: i64,
    report: &mut RoundReport,
) -> Result<Vec<Option<TxnCmd>>> {
    let (out, claimed) = store
        .autocommit(async |tx| {
            let mut out = Vec::with_capacity(todo.len());
            let mut claimed = 0usize;
            for (xid, shards) in todo {
                let entry = NewCommitLogEntry {
                    comp_node_id: i64::from(xid.comp_node_id),
                    txn_id: xid.txn_id(),
                    next_txn_cmd: TxnCmd::Abort,
                    written_shards: Some(shards.clone()),
                };
                let decided = match repo::commit_log::insert(tx, cluster, &entry, Some(deadline)).await {
                    Ok(()) => {
                        claimed += 1;
                        Some(TxnCmd::Abort)
                    }
                    Err(kunlun_meta::Error::Conflict(_)) => {
                        let row = repo::commit_log::get(tx, cluster, entry.comp_node_id, entry.txn_id).await?;
                        tracing::info!(%xid, decision = ?row.as_ref().map(|r| r.next_txn_cmd), "a decision was logged before our abort claim; obeying it");
                        row.map(|r| r.next_txn_cmd)
                    }
                    Err(e @ kunlun_meta::Error::Unavailable(_)) => return Err(e),
                    Err(e) => {
                        tracing::warn!(%xid, error = %e, "abort claim failed; retried next round");
                        None
                    }
                };
                out.push(decided);
            }
            Ok((out, claimed))
        })
        .await?;
    report.aborts_claimed += claimed;
    Ok(out)
}

/// Runs one pass over `targets`. `commit_log` names the cluster whose log decides; `None`
/// means the targets are metadata-shard nodes, whose branches are all rolled back. `clock`
/// remembers when each branch was first seen prepared across passes (an abort is claimed
/// only `wait_max` after that); the caller forgets what is gone ([`FirstSeen::round_done`]).
pub async fn resolve_targets(
    store: &Store,
    commit_log: Option<&str>,
    targets: &[Target],
    cfg: &XaConfig,
    clock: &mut FirstSeen,
) -> Result<RoundReport> {
    let (scans, unreachable) = scan_all(targets, cfg.storage).await;
    let mut report = RoundReport {
        unreachable,
        ..RoundReport::default()
    };
    let branches: Vec<Branch> = scans
        .iter()
        .flat_map(|s| {
            s.kunlun.iter().map(|&xid| Branch {
                shard_id: s.target.shard_id,
                xid,
            })
        })
        .collect();
    report.foreign = scans.iter().map(|s| s.foreign).sum();
    report.found = branches.len();
    report.oldest_start_ts = branches.iter().map(|b| b.xid.start_ts).min();
    report.seen = branches.iter().map(|b| (b.shard_id, b.xid)).collect();
    if branches.is_empty() {
        close_all(scans).await;
        return Ok(report);
    }
    let decided = match decide_all(store, commit_log, &branches, cfg, clock, &mut report).await {
        Ok(d) => d,
        Err(e) => {
            close_all(scans).await;
            return Err(e);
        }
    };
    apply(scans, &decided, &mut report).await;
    Ok(report)
}

/// Per shard, the xids to end and how, after lookups and claims.
type Decided = HashMap<i64, Vec<(KunlunXid, TxnCmd)>>;

async fn decide_all(
    store: &Store,
    commit_log: Option<&str>,
    branches: &[Branch],
    cfg: &XaConfig,
    clock: &mut FirstSeen,
    report: &mut RoundReport,
) -> Result<Decided> {
    // Read after the scan, so a first sighting is never dated before the branch was prepared.
    let now = meta_now(store).await?;
    report.now = now;
    let wait = cfg.wait_max.as_secs();
    let plan: Vec<Planned> = match commit_log {
        None => plan_meta_shard(branches),
        Some(cluster) => {
            let first_seen = clock.observe(branches, now);
            let logged = lookup(store, cluster, branches).await?;
            plan_cluster(branches, &logged, &first_seen, now, wait)
        }
    };
    let mut decided: Decided = HashMap::new();
    let mut claims = Vec::new();
    for p in plan {
        match p.action {
            Action::Commit => push(&mut decided, &p.shard_ids, p.xid, TxnCmd::Commit),
            Action::Rollback => push(&mut decided, &p.shard_ids, p.xid, TxnCmd::Abort),
            Action::Skip(_) => report.too_young += p.shard_ids.len(),
            Action::ClaimAbort => claims.push((p.xid, p.shard_ids)),
        }
    }
    if let (Some(cluster), false) = (commit_log, claims.is_empty()) {
        let deadline = i64::try_from(now.saturating_add(wait)).unwrap_or(i64::MAX);
        let outcome = claim_aborts(store, cluster, &claims, deadline, report).await?;
        for ((xid, shards), cmd) in claims.iter().zip(outcome) {
            match cmd {
                Some(cmd) => push(&mut decided, shards, *xid, cmd),
                None => report.failed += shards.len(),
            }
        }
    }
    Ok(decided)
}

fn push(decided: &mut Decided, shards: &[i64], xid: KunlunXid, cmd: TxnCmd) {
    for &s in shards {
        decided.entry(s).or_default().push((xid, cmd));
    }
}

/// What applying decisions on one shard did.
#[derive(Debug, Default)]
struct Applied {
    committed: usize,
    rolled_back: usize,
    left_attached: usize,
    failed: usize,
}

async fn apply(scans: Vec<Scan>, decided: &Decided, report: &mut RoundReport) {
    let mut set = JoinSet::new();
    for scan in scans {
        let todo = decided
            .get(&scan.target.shard_id)
            .cloned()
            .unwrap_or_default();
        set.spawn(apply_on_shard(scan, todo));
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(a) => {
                report.committed += a.committed;
                report.rolled_back += a.rolled_back;
                report.left_attached += a.left_attached;
                report.failed += a.failed;
            }
            Err(e) => tracing::error!(error = %e, "XA apply task failed"),
        }
    }
}

async fn apply_on_shard(scan: Scan, todo: Vec<(KunlunXid, TxnCmd)>) -> Applied {
    let Scan {
        target, mut conn, ..
    } = scan;
    let mut a = Applied::default();
    for (i, (xid, cmd)) in todo.iter().enumerate() {
        match end_branch(&mut conn, *xid, *cmd).await {
            Ok(Ended::Done) => match cmd {
                TxnCmd::Commit => a.committed += 1,
                TxnCmd::Abort => a.rolled_back += 1,
            },
            Ok(Ended::Attached) => a.left_attached += 1,
            Err(e) if e.is_fatal() => {
                tracing::warn!(shard = target.shard_id, node = %target.addr, error = %e, "lost the shard primary; its branches are retried next round");
                a.failed += todo.len() - i;
                break;
            }
            Err(e) => {
                tracing::warn!(shard = target.shard_id, %xid, error = %e, "ending XA branch failed; retried next round");
                a.failed += 1;
            }
        }
    }
    conn.close().await;
    a
}

/// How an `XA COMMIT`/`XA ROLLBACK` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The branch is gone (ended as asked, or a read-only branch that could only roll back).
    Done,
    /// "Unknown XID": the owner session is still connected, or the branch ended meanwhile.
    Attached,
}

/// Ends one branch on an open connection.
pub(crate) async fn end_branch(
    conn: &mut StorageConn,
    xid: KunlunXid,
    cmd: TxnCmd,
) -> crate::storage::Result<Ended> {
    // `xid` prints only digits and dashes, so quoting it inline is safe.
    let sql = match cmd {
        TxnCmd::Commit => format!("XA COMMIT '{xid}'"),
        TxnCmd::Abort => format!("XA ROLLBACK '{xid}'"),
    };
    match conn.exec(&sql).await {
        Ok(()) => {
            tracing::info!(node = conn.node(), %xid, action = cmd.as_str(), "XA branch ended");
            Ok(Ended::Done)
        }
        Err(e) if e.server_code() == Some(ER_XA_RBROLLBACK) => {
            tracing::info!(node = conn.node(), %xid, "read-only XA branch ended (rolled back by the server)");
            Ok(Ended::Done)
        }
        Err(e) if e.server_code() == Some(ER_XAER_NOTA) => {
            tracing::debug!(node = conn.node(), %xid, "XA branch still attached to its session; left for a later round");
            Ok(Ended::Attached)
        }
        Err(e) => Err(e),
    }
}

async fn close_all(scans: Vec<Scan>) {
    for s in scans {
        s.conn.close().await;
    }
}

/// One pass over a cluster's shard primaries (`clock`: see [`resolve_targets`]).
pub async fn resolve_cluster(
    store: &Store,
    cluster: &Cluster,
    cfg: &XaConfig,
    clock: &mut FirstSeen,
) -> Result<RoundReport> {
    let (targets, missing) = cluster_targets(store, cluster.id).await?;
    let mut report = resolve_targets(store, Some(&cluster.name), &targets, cfg, clock).await?;
    report.unreachable.extend(missing);
    Ok(report)
}

/// One pass over the metadata shard's primary: Kunlun branches there are rolled back (no
/// clock: they never wait).
pub async fn resolve_meta_shard(store: &Store, cfg: &XaConfig) -> Result<RoundReport> {
    let targets = meta_targets(store).await?;
    resolve_targets(store, None, &targets, cfg, &mut FirstSeen::default()).await
}

/// Purges a cluster's commit log of rows older than the retention, keeping any row a branch
/// in `prepared` (found still prepared on the cluster's shards) refers to. Returns the rows
/// deleted.
pub async fn purge_commit_log(
    store: &Store,
    cluster: &str,
    retention: Duration,
    prepared: &[KunlunXid],
) -> Result<usize> {
    let now = meta_now(store).await?;
    let cutoff = super::decide::purge_cutoff(now, retention.as_secs(), prepared);
    if cutoff == 0 {
        return Ok(0);
    }
    let n = store
        .autocommit(async |tx| repo::commit_log::purge_before(tx, cluster, cutoff).await)
        .await?;
    if n > 0 {
        tracing::info!(
            cluster,
            rows = n,
            before_start_ts = cutoff >> 32,
            "commit log purged"
        );
    }
    Ok(n)
}
