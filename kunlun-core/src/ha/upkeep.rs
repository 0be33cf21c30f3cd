//! Replica upkeep: a replica's `my.cnf` has `skip-slave-start`, so after its server restarts
//! its replication threads stay stopped. While the shard's primary is healthy, the monitor
//! starts them again when they stopped without an error and still point at the primary, and
//! repoints a replica with no or another source at the primary (GTID, `slave_pos`) when it
//! holds nothing the primary lacks.
//!
//! Invariants: a thread that stopped with an error is never touched, only reported; a replica
//! with errant transactions is never repointed (it stays as it is, like a returning old
//! primary kept out for rebuild); metadata is written only for a node still an active member.

use kunlun_meta::model::{NodeMapMaster, NodeStatus, ShardNode};
use kunlun_meta::store::repo;

use super::detect::{rejoin, replica_upkeep, Rejoin, Upkeep};
use super::failover::{map_host, StepContext};
use super::gtid::GtidPos;
use super::probe::NodeProbe;
use super::promote;
use crate::storage::NodeAddr;

/// What upkeep did or found for one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tended {
    /// Nothing to do.
    Fine,
    /// An action was taken (`repointed`: a repoint rather than a restart); `what` is the event.
    Acted { repointed: bool, what: String },
    /// A condition left for an operator (broken thread, errant transactions, failed action);
    /// reported once per distinct text.
    Report(String),
}

/// Tends one active replica `node` of a shard whose primary `primary` answers.
pub(super) async fn tend(
    ctx: &StepContext,
    primary: &ShardNode,
    node: &ShardNode,
    probe: &NodeProbe,
) -> Tended {
    match replica_upkeep(&primary.hostaddr, primary.port, probe) {
        Upkeep::Nothing => Tended::Fine,
        Upkeep::Broken { reason } => Tended::Report(format!(
            "replication stopped with an error, left for an operator: {reason}"
        )),
        Upkeep::Start => {
            match promote::restart_replication(&NodeAddr::from(node), ctx.storage).await {
                Ok(()) => Tended::Acted {
                    repointed: false,
                    what: format!(
                        "replication restarted: threads were stopped without an error \
                         (server restarted with skip-slave-start); follows node {}",
                        primary.id
                    ),
                },
                Err(e) => Tended::Report(format!("replication not restarted: {e}")),
            }
        }
        Upkeep::Repoint { from } => repoint(ctx, primary, node, from).await,
    }
}

async fn repoint(
    ctx: &StepContext,
    primary: &ShardNode,
    node: &ShardNode,
    from: Option<String>,
) -> Tended {
    let (raddr, paddr) = (NodeAddr::from(node), NodeAddr::from(primary));
    // Read-only first, so the position read afterwards is final (as for a returning old
    // primary); the primary's position read after it can only have grown.
    let own = match promote::fence_and_pos(&raddr, ctx.storage).await {
        Ok(p) => p,
        Err(e) => return Tended::Report(format!("replica not repointed: {e}")),
    };
    let at = match promote::current_pos(&paddr, ctx.storage).await {
        Ok(p) => p,
        Err(e) => return Tended::Report(format!("replica not repointed: primary: {e}")),
    };
    let (own, at) = match (GtidPos::parse(&own), GtidPos::parse(&at)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Tended::Report(format!("replica not repointed: {e}")),
    };
    if let Rejoin::Rebuild { errant } = rejoin(&own, &at) {
        return Tended::Report(format!(
            "replica not repointed, kept for rebuild: errant transactions {errant}"
        ));
    }
    let (repl, _) = super::failover::cluster_logins(&ctx.store, node.db_cluster_id).await;
    if let Err(e) = promote::repoint(&raddr, &paddr, false, repl.as_ref(), ctx.storage).await {
        return Tended::Report(format!("replica not repointed: {e}"));
    }
    let id = node.id;
    super::WriteHook::call(
        ctx.before_write.as_ref(),
        super::WriteSite::Repoint { node_id: id },
    )
    .await;
    let m = NodeMapMaster {
        cluster_id: node.db_cluster_id,
        node_host: map_host(node),
        master_host: map_host(primary),
        master_uuid: None,
    };
    let term = ctx.term.clone();
    let recorded = ctx
        .store
        .tx(async move |tx| {
            super::TermFence::check(term.as_ref(), tx).await?;
            match repo::nodes::get(tx, id).await {
                Ok(n) if n.status == NodeStatus::Active => {}
                Ok(_) | Err(kunlun_meta::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(e),
            }
            repo::meta::set_node_master(tx, &m).await?;
            Ok(true)
        })
        .await;
    let note = match recorded {
        Ok(true) => String::new(),
        Ok(false) => "; metadata not changed: the node is no longer an active member".into(),
        Err(e) => format!("; node_map_master not updated: {e}"),
    };
    Tended::Acted {
        repointed: true,
        what: format!(
            "replication restarted: repointed from {} to node {} (MASTER_USE_GTID=slave_pos){note}",
            from.as_deref().unwrap_or("no source"),
            primary.id
        ),
    }
}
