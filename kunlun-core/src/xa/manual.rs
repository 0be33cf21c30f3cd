//! What operators see and do by hand: the in-doubt branches of a cluster per shard, and the
//! manual resolution of one transaction, recorded in the audit trail (an `xa_resolve` job).
//!
//! Invariant: a manual action never contradicts the commit log. With a logged decision only
//! that decision can be applied; without one only rollback can, after the coordinator's
//! deadline, by claiming the abort first exactly as the resolver does. A manual commit without
//! a logged commit is refused: a still-connected coordinator could not log it any more and
//! would roll back its own branches, splitting the transaction.

use kunlun_meta::api::{XaAction, XaBranch, XaInDoubt, XaResolveRequest, XaResolveResult, XaShard};
use kunlun_meta::model::{Cluster, JobStatus, NewJob, TxnCmd};
use kunlun_meta::store::repo::commit_log::NewCommitLogEntry;
use kunlun_meta::store::{repo, Store};

use super::decide::Branch;
use super::round::{cluster_targets, end_branch, lookup, meta_now, scan_all, Ended, XaConfig};
use super::xid::KunlunXid;
use crate::error::{Error, Result};

/// Job type of the audit records of manual resolutions.
pub const AUDIT_JOB_TYPE: &str = "xa_resolve";

/// Lists the prepared Kunlun branches on every shard primary of `cluster`, with their age and
/// the logged decision (one range query). Shards that cannot be asked carry the reason.
pub async fn list_in_doubt(store: &Store, cluster: &Cluster, cfg: &XaConfig) -> Result<XaInDoubt> {
    let (targets, missing) = cluster_targets(store, cluster.id).await?;
    let (scans, failed) = scan_all(&targets, cfg.storage).await;
    let branches: Vec<Branch> = scans
        .iter()
        .flat_map(|s| {
            s.kunlun.iter().map(|&xid| Branch {
                shard_id: s.target.shard_id,
                xid,
            })
        })
        .collect();
    let mut shards: Vec<XaShard> = scans
        .iter()
        .map(|s| XaShard {
            shard_id: s.target.shard_id,
            node: Some(s.target.addr.to_string()),
            branches: Vec::new(),
            foreign: s.foreign,
            error: None,
        })
        .collect();
    let kunlun: Vec<Vec<KunlunXid>> = scans.iter().map(|s| s.kunlun.clone()).collect();
    for s in scans {
        s.conn.close().await;
    }
    if !branches.is_empty() {
        let now = meta_now(store).await?;
        let logged = lookup(store, &cluster.name, &branches).await?;
        for (shard, xids) in shards.iter_mut().zip(kunlun) {
            shard.branches = xids
                .into_iter()
                .map(|x| XaBranch {
                    xid: x.to_string(),
                    age_sec: now.saturating_sub(u64::from(x.start_ts)),
                    decision: logged.get(&(x.comp_node_id, x.txn_id())).copied(),
                })
                .collect();
        }
    }
    for (shard_id, reason) in failed.into_iter().chain(missing) {
        let node = targets
            .iter()
            .find(|t| t.shard_id == shard_id)
            .map(|t| t.addr.to_string());
        shards.push(XaShard {
            shard_id,
            node,
            branches: Vec::new(),
            foreign: 0,
            error: Some(reason),
        });
    }
    shards.sort_by_key(|s| s.shard_id);
    Ok(XaInDoubt {
        cluster_id: cluster.id,
        cluster_name: cluster.name.clone(),
        shards,
    })
}

/// Ends one global transaction of `cluster` by hand on every shard where it is prepared, and
/// records who asked and why.
///
/// Errors: [`Error::Invalid`] for a malformed xid or reason; [`Error::NotFound`] when no shard
/// holds the xid prepared and nothing is logged; [`Error::Conflict`] when the action
/// contradicts the log, or is a commit without a logged commit, or a rollback before the
/// coordinator's deadline.
pub async fn resolve_by_hand(
    store: &Store,
    cluster: &Cluster,
    xid: &str,
    req: &XaResolveRequest,
    user: Option<&str>,
    cfg: &XaConfig,
) -> Result<XaResolveResult> {
    req.validate()?;
    let x = KunlunXid::parse(xid).ok_or_else(|| {
        Error::Invalid(format!(
            "xid: '{xid}' is not a Kunlun xid <comp_node_id>-<start_ts>-<local_xid>"
        ))
    })?;
    let (targets, missing) = cluster_targets(store, cluster.id).await?;
    let (scans, unreachable) = scan_all(&targets, cfg.storage).await;
    let decided = decide_by_hand(store, cluster, x, req.action, &scans, cfg).await;
    let decision = match decided {
        Ok(d) => d,
        Err(e) => {
            for s in scans {
                s.conn.close().await;
            }
            return Err(e);
        }
    };
    let mut result = XaResolveResult {
        xid: x.to_string(),
        decision,
        ended_on: Vec::new(),
        attached_on: Vec::new(),
        failed_on: unreachable
            .iter()
            .chain(&missing)
            .map(|(s, _)| *s)
            .collect(),
        audit_job_id: 0,
    };
    for s in scans {
        let shard = s.target.shard_id;
        let mut conn = s.conn;
        if s.kunlun.contains(&x) {
            match end_branch(&mut conn, x, decision).await {
                Ok(Ended::Done) => result.ended_on.push(shard),
                Ok(Ended::Attached) => result.attached_on.push(shard),
                Err(e) => {
                    tracing::warn!(shard, %x, error = %e, "manual XA resolution failed on a shard");
                    result.failed_on.push(shard);
                }
            }
        }
        conn.close().await;
    }
    result.audit_job_id = audit(store, cluster, req, user, &result).await?;
    tracing::info!(cluster = %cluster.name, %x, action = action_str(req.action), reason = %req.reason,
        ended_on = ?result.ended_on, "XA transaction resolved by hand");
    Ok(result)
}

/// The decision a manual action may apply (see the module invariant).
async fn decide_by_hand(
    store: &Store,
    cluster: &Cluster,
    x: KunlunXid,
    action: XaAction,
    scans: &[super::round::Scan],
    cfg: &XaConfig,
) -> Result<TxnCmd> {
    let cn = i64::from(x.comp_node_id);
    let name = cluster.name.clone();
    let logged = store
        .read(async |tx| repo::commit_log::get(tx, &name, cn, x.txn_id()).await)
        .await?
        .map(|e| e.next_txn_cmd);
    let prepared = scans.iter().any(|s| s.kunlun.contains(&x));
    let decision = match (logged, action) {
        (None, _) if !prepared => {
            return Err(Error::NotFound { what: "in-doubt XA transaction", id: x.to_string() })
        }
        (Some(TxnCmd::Commit), XaAction::Commit) => TxnCmd::Commit,
        (Some(TxnCmd::Abort), XaAction::Rollback) => TxnCmd::Abort,
        (Some(d), a) => {
            return Err(Error::Conflict(format!(
                "the commit log of cluster {} says {d} for {x}; refusing to {}",
                cluster.name,
                action_str(a)
            )))
        }
        (None, XaAction::Commit) => {
            return Err(Error::Conflict(format!(
                "no commit decision is logged for {x}; only rollback is safe (its coordinator would roll back branches it still holds)"
            )))
        }
        (None, XaAction::Rollback) => claim_abort(store, cluster, x, cfg).await?,
    };
    if decision == TxnCmd::Commit && action == XaAction::Rollback {
        return Err(Error::Conflict(format!(
            "a commit for {x} was logged meanwhile; refusing to roll back"
        )));
    }
    Ok(decision)
}

fn action_str(a: XaAction) -> &'static str {
    match a {
        XaAction::Commit => "commit",
        XaAction::Rollback => "rollback",
    }
}

/// Logs the abort for `x` once its coordinator's deadline has passed; returns what the log
/// then says (a late commit that won the race is obeyed by the caller's check).
async fn claim_abort(
    store: &Store,
    cluster: &Cluster,
    x: KunlunXid,
    cfg: &XaConfig,
) -> Result<TxnCmd> {
    let now = meta_now(store).await?;
    let wait = cfg.wait_max.as_secs();
    if now <= u64::from(x.start_ts).saturating_add(wait) {
        return Err(Error::Conflict(format!(
            "the coordinator of {x} may still log its decision for {} s; retry later",
            u64::from(x.start_ts) + wait + 1 - now
        )));
    }
    let entry = NewCommitLogEntry {
        comp_node_id: i64::from(x.comp_node_id),
        txn_id: x.txn_id(),
        next_txn_cmd: TxnCmd::Abort,
        written_shards: None,
    };
    let deadline = i64::try_from(now.saturating_add(wait)).unwrap_or(i64::MAX);
    let name = cluster.name.clone();
    store
        .autocommit(async |tx| {
            match repo::commit_log::insert(tx, &name, &entry, Some(deadline)).await {
                Ok(()) => Ok(TxnCmd::Abort),
                Err(kunlun_meta::Error::Conflict(_)) => {
                    repo::commit_log::get(tx, &name, entry.comp_node_id, entry.txn_id)
                        .await?
                        .map(|e| e.next_txn_cmd)
                        .ok_or_else(|| {
                            kunlun_meta::Error::Conflict(format!(
                                "decision for {x} vanished; retry"
                            ))
                        })
                }
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(Error::from)
}

/// Records the manual resolution as a finished `xa_resolve` job (created and finished in one
/// transaction, so no job runner ever sees it pending).
async fn audit(
    store: &Store,
    cluster: &Cluster,
    req: &XaResolveRequest,
    user: Option<&str>,
    result: &XaResolveResult,
) -> Result<i64> {
    let job = NewJob {
        job_type: AUDIT_JOB_TYPE.to_string(),
        job_info: serde_json::json!({
            "cluster_id": cluster.id,
            "cluster_name": cluster.name,
            "xid": result.xid,
            "action": action_str(req.action),
            "reason": req.reason,
        }),
        user_name: user.map(str::to_string),
    };
    let memo = serde_json::to_value(result).map_err(|e| Error::Internal(e.to_string()))?;
    let status = if result.failed_on.is_empty() {
        JobStatus::Done
    } else {
        JobStatus::Failed
    };
    let id = store
        .tx(async |tx| {
            let j = repo::jobs::create(tx, &job).await?;
            repo::jobs::update(tx, j.id, status, Some(&memo)).await?;
            Ok(j.id)
        })
        .await?;
    Ok(id)
}
