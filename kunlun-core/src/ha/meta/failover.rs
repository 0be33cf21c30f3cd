//! One failover of the metadata shard: choose ([`crate::ha::choose`]), fence and prove
//! ([`crate::ha::fence`], machines from the monitor's last read, since the store is down),
//! catch up, promote with the followers detached alongside and repointed
//! ([`crate::ha::failover::prepare`]), open the new primary, move this manager's store to it
//! ([`Store::follow_now`]), then record it there: `meta_db_nodes` (`member_state`) under the
//! term's fence, and the `kl_failover` record (cluster and shard [`super::META_CLUSTER_ID`]).
//!
//! Invariants: as a storage shard's failover (see [`crate::ha::failover`]); nothing here waits
//! on the store before the new primary is open, and the record is written only once the store
//! follows the new primary, so it lands on the new primary and nowhere else.

use std::time::{Duration, Instant};

use kunlun_meta::model::{Machine, MetaDbNode};
use kunlun_meta::store::{repo, Store};
use tokio_util::sync::CancellationToken;

use super::{as_shard_node, MetaHaConfig, META_CLUSTER_ID, META_SHARD_ID};
use crate::ha::choose::{choose, Choice, ShardView};
use crate::ha::failover::{
    ended, prepare, record_fence, verify_followers, FailoverKind, FailoverRecord, Follower,
    Outcome, StepContext, StepError, Timeline,
};
use crate::ha::fence::{self, Machines};
use crate::ha::probe::probe_options;
use crate::ha::{promote, records, TermFence};
use crate::storage::NodeAddr;

/// Longest the lease check before touching a node may take (the store is likely down).
const LEASE_CHECK: Duration = Duration::from_millis(500);
/// Longest the metadata write after the switch may take.
const RECORD_CALL: Duration = Duration::from_secs(2);

/// The inputs of one attempt.
pub(super) struct Attempt<'a> {
    pub store: &'a Store,
    pub cfg: &'a MetaHaConfig,
    pub nodes: &'a [MetaDbNode],
    pub machines: &'a [Machine],
    pub old: &'a MetaDbNode,
    pub view: ShardView,
    /// The first failed probe.
    pub detected: Instant,
}

/// Runs one attempt and returns its record (stored when the store could take it).
pub(super) async fn fail_over(a: Attempt<'_>) -> FailoverRecord {
    let mut rec = FailoverRecord::new(
        FailoverKind::Automatic,
        META_CLUSTER_ID,
        META_SHARD_ID,
        a.old.id,
    );
    let mut t = Timeline::starting_at(a.detected);
    t.phase(
        &mut rec,
        "detect",
        Some(format!(
            "metadata shard: {} failed probes, confirmed by replicas",
            a.cfg.failures_to_dead
        )),
    );
    match steps(&a, &mut rec, &mut t).await {
        Ok(()) => {
            tracing::warn!(old = a.old.id, new = ?rec.new_primary, total_ms = rec.total_ms, "metadata shard failed over");
        }
        Err(Stop::Refused(why)) => {
            rec.outcome = Outcome::Refused;
            rec.reason = Some(why.clone());
            tracing::error!(old = a.old.id, reason = %why, "metadata shard failover refused");
        }
        Err(Stop::Failed(e)) => {
            ended(&mut rec, &e);
            tracing::error!(old = a.old.id, reason = %e, "metadata shard failover failed");
        }
    }
    // After the switch the store follows the new primary: the record lands there. Without a
    // switch the store may be down; the record is then only logged (bounded: the monitor must
    // not wait for a store that has no primary).
    match tokio::time::timeout(RECORD_CALL, records::insert(a.store, &rec)).await {
        Ok(Ok(id)) => rec.id = id,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, record = ?rec, "metadata failover record not stored")
        }
        Err(_) => {
            tracing::warn!(record = ?rec, "metadata failover record not stored: no writable metadata primary")
        }
    }
    rec
}

/// Why an attempt ended without a promotion.
enum Stop {
    /// Nothing was changed on the nodes (the old primary was fenced all the same).
    Refused(String),
    /// A step failed; the record says which.
    Failed(StepError),
}

impl From<StepError> for Stop {
    fn from(e: StepError) -> Self {
        Stop::Failed(e)
    }
}

async fn steps(a: &Attempt<'_>, rec: &mut FailoverRecord, t: &mut Timeline) -> Result<(), Stop> {
    let cfg = a.cfg;
    let Some(admin) = cfg.logins.admin.clone() else {
        return Err(Stop::Refused("meta_ha_user is not set".into()));
    };
    // A term that already lost its lease touches no node (a read error, or a store that has
    // no primary to ask, goes on: the majority lock keeps other managers out, and the
    // metadata write checks the lease again in its own transaction).
    let store_down = a
        .store
        .follow_status()
        .is_some_and(|f| f.searching.is_some());
    if let (Some(term), false) = (cfg.term.as_ref(), store_down) {
        let held = tokio::time::timeout(
            LEASE_CHECK,
            a.store.read(async |tx| {
                kunlun_meta::store::repo::lease::holds(tx, &term.lease, &term.holder, term.epoch)
                    .await
            }),
        )
        .await;
        if matches!(held, Ok(Ok(false))) {
            return Err(Stop::Refused(format!(
                "leadership term {} ended: the new leader decides",
                term.epoch
            )));
        }
    }
    let old = as_shard_node(a.old, &admin);
    let fence_opts = fence::after_failed_probes(probe_options(cfg.interval, cfg.storage));
    let store_login = cfg.logins.store.as_ref();
    let choice = choose(&a.view, cfg.policy);
    let (new_id, proven, loss) = match choice {
        Choice::Refuse { reason } => {
            // Fenced all the same: a primary that comes back must not take writes before an
            // operator looked.
            let f = fence::fence_and_prove_in(
                Machines::Known(a.machines),
                cfg.ssh.as_ref(),
                &old,
                fence_opts,
                store_login,
            )
            .await;
            rec.fence = Some(f.text);
            return Err(Stop::Refused(reason));
        }
        Choice::Promote {
            node_id,
            proven_lossless,
            possible_loss,
        } => (node_id, proven_lossless, possible_loss),
    };
    rec.proven_lossless = proven;
    rec.possible_loss = loss;
    let pos = a
        .view
        .replicas
        .iter()
        .find(|r| r.node_id == new_id)
        .and_then(|r| r.received.clone())
        .unwrap_or_default()
        .to_string();
    t.phase(rec, "choose", Some(format!("node {new_id} at {pos}")));
    let Some(new_row) = a.nodes.iter().find(|n| n.id == new_id) else {
        return Err(Stop::Failed(StepError::transient(format!(
            "candidate {new_id} is not a meta_db_nodes row"
        ))));
    };
    let new = as_shard_node(new_row, &admin);
    let followers: Vec<Follower> = a
        .nodes
        .iter()
        .filter(|n| n.id != new_id && n.id != a.old.id)
        .map(|n| Follower {
            node: as_shard_node(n, &admin),
            former_primary: false,
        })
        .collect();

    let started = Instant::now();
    let fenced = fence::fence_and_prove_in(
        Machines::Known(a.machines),
        cfg.ssh.as_ref(),
        &old,
        fence_opts,
        store_login,
    )
    .await;
    record_fence(fenced, started.elapsed(), rec, t)?;

    let ctx = StepContext {
        store: a.store.clone(),
        storage: cfg.storage,
        catch_up_limit: cfg.catch_up_limit,
        xa: None,
        cancel: CancellationToken::new(),
        before_write: None,
        repl: cfg.logins.repl.clone(),
        pgx: cfg.logins.store.clone(),
        term: cfg.term.clone(),
    };
    let checks = prepare(&ctx, &new, &pos, &followers, rec, t).await?;

    let new_addr = NodeAddr::from(&new);
    promote::open_for_writes(&new_addr, cfg.storage)
        .await
        .map_err(|e| StepError::transient(format!("open node {new_id} for writes: {e}")))?;
    rec.outcome = Outcome::Promoted;
    rec.new_primary = Some(new_id);
    t.phase(rec, "open", None);

    // This manager's store moves now (the others' find it by themselves within seconds).
    let want = super::seed_of(&new_row.hostaddr, new_row.port);
    let moved = a
        .store
        .follow_now(&format!(
            "metadata failover: node {new_id} ({want}) promoted, node {} was dead",
            a.old.id
        ))
        .await;
    let note = match &moved {
        Ok(p) if *p == want => format!("store follows {p}"),
        Ok(p) => format!("store follows {p}, not {want}"),
        Err(e) => format!("store did not move: {e}"),
    };
    t.phase(rec, "follow", Some(note));

    let term: Option<TermFence> = cfg.term.clone();
    let write = a.store.tx(async move |tx| {
        TermFence::check(term.as_ref(), tx).await?;
        repo::meta::set_meta_primary(tx, new_id).await
    });
    let note = match tokio::time::timeout(RECORD_CALL, write).await {
        Ok(Ok(())) => "meta_db_nodes: source moved".to_string(),
        Ok(Err(e)) => format!("meta_db_nodes not updated: {e}"),
        Err(_) => format!("meta_db_nodes not updated within {RECORD_CALL:?}"),
    };
    t.phase(rec, "metadata", Some(note));
    verify_followers(checks, rec, t).await;
    rec.old_primary_fate = Some("down; fenced and rejoined as a replica when it returns".into());
    Ok(())
}
