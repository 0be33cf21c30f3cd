//! Planned switchover of a live shard to a named or the best replica: the old primary goes
//! read-only, the candidate applies everything up to the old primary's final position, is
//! promoted, and the old primary follows it.
//!
//! Invariant: the write block starts with `read_only=ON` on the old primary and ends when the
//! candidate opens; if the candidate cannot catch up, the old primary is reopened and nothing
//! else has changed. The block must hold for the compute nodes too: when the old primary's
//! fence is not proven against `pgx` ([`fence::verify`]), it is reopened and the switchover
//! refused, since a write `pgx` could still make there after the final position was read
//! would be lost.

use std::time::Instant;

use kunlun_meta::model::NodeStatus;

use super::choose::{choose, Choice, LossPolicy, ReplicaView, ShardView};
use super::failover::{
    switch_to, FailoverKind, FailoverRecord, Follower, StepContext, Switch, Timeline,
};
use super::probe::probe_node;
use super::state::HaShared;
use super::{fence, promote};
use super::{HaConfig, ShardTopo};
use crate::error::{Error, Result};
use crate::storage::NodeAddr;

/// Runs one switchover in its shard's task (the monitor never runs two for one shard).
pub(super) async fn run(
    cfg: &HaConfig,
    shared: &HaShared,
    step: StepContext,
    s: &ShardTopo,
    target: Option<i64>,
) -> Result<FailoverRecord> {
    let primary = s
        .primary()
        .ok_or_else(|| Error::Conflict(format!("shard {} has no recorded primary", s.shard_id)))?;
    let paddr = NodeAddr::from(primary);
    let mut replicas = Vec::new();
    for n in s
        .nodes
        .iter()
        .filter(|n| n.id != primary.id && n.status == NodeStatus::Active)
    {
        let p = probe_node(&NodeAddr::from(n), cfg.storage).await;
        let connected = p
            .channel_from(&primary.hostaddr, primary.port)
            .is_some_and(|c| c.io_connected() && c.sql_running);
        replicas.push(ReplicaView {
            node_id: n.id,
            reachable: p.reachable && connected,
            received: p.received_from(&primary.hostaddr, primary.port),
            master_priority: n.master_priority,
            no_switch: shared.node_no_switch(n.id),
            sql_error: p.sql_error(),
        });
    }
    let new_id = match target {
        Some(id) => {
            let r = replicas.iter().find(|r| r.node_id == id).ok_or_else(|| {
                Error::Invalid(format!(
                    "node {id} is not an active replica of shard {}",
                    s.shard_id
                ))
            })?;
            if !r.reachable || r.no_switch {
                return Err(Error::Conflict(format!(
                    "node {id} cannot be promoted now (unreachable, not replicating, or no-switch)"
                )));
            }
            id
        }
        None => {
            let view = ShardView {
                replicas: replicas.clone(),
                semi_sync_proof_valid: true,
            };
            match choose(&view, LossPolicy::PromoteBest) {
                Choice::Promote { node_id, .. } => node_id,
                Choice::Refuse { reason } => return Err(Error::Conflict(reason)),
            }
        }
    };
    let new = s
        .nodes
        .iter()
        .find(|n| n.id == new_id)
        .ok_or_else(|| Error::Internal("candidate vanished".into()))?;

    let mut rec = FailoverRecord::new(
        FailoverKind::Switchover,
        s.cluster.id,
        s.shard_id,
        primary.id,
    );
    let mut t = Timeline::starting_at(Instant::now());
    let ctx = step.with_logins(s.cluster.id).await;
    let fence = promote::fence_read_only(&paddr, cfg.storage).await;
    if fence != promote::SqlFence::ReadOnly {
        return Err(Error::Conflict(format!(
            "the primary could not be made read-only: {fence}"
        )));
    }
    let fence = match fence::verify(&paddr, ctx.pgx.as_ref(), cfg.storage).await {
        Ok(proof) => format!("{fence}; proven: {proof}"),
        Err(why) => {
            let reopened = promote::open_for_writes(&paddr, cfg.storage).await;
            return Err(Error::Conflict(format!(
                "switchover refused: the primary's fence is not proven ({why}); primary \
                 reopened: {}",
                reopened.is_ok()
            )));
        }
    };
    rec.fence = Some(fence.clone());
    let pos = promote::current_pos(&paddr, cfg.storage).await;
    t.phase(&mut rec, "fence", Some(fence));
    let pos = match pos {
        Ok(p) => p,
        Err(e) => {
            let _ = promote::open_for_writes(&paddr, cfg.storage).await;
            return Err(Error::Unavailable(format!(
                "reading the primary's position: {e}"
            )));
        }
    };
    rec.proven_lossless = true;
    let mut followers: Vec<Follower> = s
        .nodes
        .iter()
        .filter(|n| n.id != new_id && n.id != primary.id && n.status == NodeStatus::Active)
        .map(|n| Follower {
            node: n.clone(),
            former_primary: false,
        })
        .collect();
    followers.push(Follower {
        node: primary.clone(),
        former_primary: true,
    });
    let sw = Switch {
        cluster: &s.cluster,
        new,
        catch_up_pos: &pos,
        followers: &followers,
    };
    if let Err(e) = switch_to(&ctx, sw, &mut rec, &mut t).await {
        if rec.phase_ms("promote").is_none() {
            // Nothing changed yet: give the shard its primary back.
            let reopened = promote::open_for_writes(&paddr, cfg.storage).await;
            rec.reason = Some(format!("{e}; old primary reopened: {}", reopened.is_ok()));
        }
        rec.old_primary_fate = Some("still primary".into());
        return Ok(rec);
    }
    rec.old_primary_fate = Some(format!("replica of node {new_id}"));
    Ok(rec)
}
