//! Where a cluster's compute schema is dumped from, for a backup's `comp.sql` and for the
//! binlog archive's schema snapshots: the lowest-id active compute node, by its recipe's
//! `schema_dump_script` (the roles and every database's schema, no rows) run on its machine.

use kunlun_meta::model::{CompNode, NodeStatus};
use kunlun_meta::Store;
use kunlun_provision::recipe::sh_quote;

use super::store::Endpoint;
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::instances::control::{locate, Node};

/// The compute node of cluster `cluster_id` to dump the schema of, and the command that
/// writes the dump to stdout on its machine (409 without an active compute node).
pub async fn source(
    store: &Store,
    fleet: &Provisioner,
    cluster_id: i64,
) -> Result<(CompNode, Endpoint)> {
    let comp = store
        .list_comp_nodes(Some(cluster_id))
        .await?
        .into_iter()
        .filter(|c| c.status == NodeStatus::Active)
        .min_by_key(|c| c.id)
        .ok_or_else(|| Error::Conflict("the cluster has no active compute node".into()))?;
    let loc = locate(store, Node::Compute(comp.clone())).await?;
    let script = fleet.compute.schema_dump_script(&loc.spec).ok_or_else(|| {
        Error::Conflict(format!(
            "the {} recipe cannot dump a compute node's schema",
            fleet.compute.name()
        ))
    })?;
    Ok((
        comp,
        Endpoint {
            target: fleet.target(&loc.machine),
            command: format!("sh -c {}", sh_quote(&script)),
        },
    ))
}
