//! Compute nodes (`comp_nodes`) and the reservation of their global ids (`comp_nodes_id_seq`).
//!
//! Invariant: compute-node ids are never reused: [`reserve_ids`] hands out a block above the
//! highest id ever reserved, as Kunlun's cluster_mgr does.

use std::ops::RangeInclusive;

use diesel::dsl::max;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{conflict_as, now};
use crate::error::{Error, Result};
use crate::model::{CompNode, NewCompNode, NodeStatus};
use crate::store::conn::{with_conn, Tx};
use crate::store::rows::{CompNodeRow, NewCompNodeRow};
use crate::store::schema::{comp_nodes, comp_nodes_id_seq};

/// Reserves `n` (>= 1) new compute-node ids and returns them.
///
/// Two transactions reserving at once may pick the same block; the second then fails with
/// [`Error::Conflict`] on the sequence's primary key and can retry.
pub async fn reserve_ids(tx: &mut Tx, n: i64) -> Result<RangeInclusive<i64>> {
    if n < 1 {
        return Err(Error::Invalid(format!(
            "reserve at least one compute node id, not {n}"
        )));
    }
    let top = with_conn!(tx, c => comp_nodes_id_seq::table
        .select(max(comp_nodes_id_seq::id))
        .first::<Option<i64>>(c)
        .await)?
    .unwrap_or(0);
    let last = top + n;
    with_conn!(tx, c => diesel::insert_into(comp_nodes_id_seq::table)
        .values(comp_nodes_id_seq::id.eq(last))
        .execute(c)
        .await)
    .map_err(|e| conflict_as(e, || "compute node ids reserved concurrently; retry".into()))?;
    Ok(top + 1..=last)
}

/// Creates a compute node row with an id from [`reserve_ids`].
pub async fn insert(tx: &mut Tx, n: &NewCompNode) -> Result<CompNode> {
    crate::validate::name("name", &n.name)?;
    let row = NewCompNodeRow::new(n, now());
    with_conn!(tx, c => diesel::insert_into(comp_nodes::table).values(&row).execute(c).await)
        .map_err(|e| {
            conflict_as(e, || {
                format!(
                    "compute node id {} or name {} already exists in cluster {}",
                    n.id, n.name, n.db_cluster_id
                )
            })
        })?;
    get(tx, n.id).await
}

/// One compute node; [`Error::NotFound`] if unknown.
pub async fn get(tx: &mut Tx, id: i64) -> Result<CompNode> {
    let row = with_conn!(tx, c => comp_nodes::table
        .filter(comp_nodes::id.eq(id))
        .select(CompNodeRow::as_select())
        .first::<CompNodeRow>(c)
        .await
        .optional())?;
    row.ok_or_else(|| Error::not_found("compute node", id))?
        .try_into()
}

/// Compute nodes of one cluster, or all, by id.
pub async fn list(tx: &mut Tx, cluster_id: Option<i64>) -> Result<Vec<CompNode>> {
    let rows = with_conn!(tx, c => {
        let mut q = comp_nodes::table.select(CompNodeRow::as_select()).order(comp_nodes::id.asc()).into_boxed();
        if let Some(cid) = cluster_id {
            q = q.filter(comp_nodes::db_cluster_id.eq(cid));
        }
        q.load::<CompNodeRow>(c).await
    })?;
    rows.into_iter().map(CompNode::try_from).collect()
}

/// Sets a compute node's life-cycle status.
pub async fn set_status(tx: &mut Tx, id: i64, status: NodeStatus) -> Result<()> {
    let n = with_conn!(tx, c => diesel::update(comp_nodes::table.filter(comp_nodes::id.eq(id)))
        .set(comp_nodes::status.eq(status.as_str()))
        .execute(c)
        .await)?;
    if n == 0 {
        return Err(Error::not_found("compute node", id));
    }
    Ok(())
}

/// Deletes a compute node row.
pub async fn delete(tx: &mut Tx, id: i64) -> Result<()> {
    let n = with_conn!(tx, c => diesel::delete(comp_nodes::table.filter(comp_nodes::id.eq(id))).execute(c).await)?;
    if n == 0 {
        return Err(Error::not_found("compute node", id));
    }
    Ok(())
}
