//! Compute nodes (`comp_nodes`) and the reservation of their global ids (`comp_nodes_id_seq`).
//!
//! Invariant: compute-node ids are never reused: [`reserve_ids`] hands out a block above the
//! highest id ever reserved, as Kunlun's cluster_mgr does, and concurrent transactions get
//! disjoint blocks.

use std::ops::RangeInclusive;

use diesel::dsl::max;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;

use super::{conflict_as, now};
use crate::error::{Error, Result};
use crate::model::{CompNode, NewCompNode, NodeStatus};
use crate::store::config::BackendKind;
use crate::store::conn::{with_conn, Tx};
use crate::store::rows::{CompNodeRow, NewCompNodeRow};
use crate::store::schema::{comp_nodes, comp_nodes_id_seq};

/// The most compute-node ids one call of [`reserve_ids`] hands out.
pub const MAX_RESERVE: i64 = 1000;

/// Reserves `n` (1..=[`MAX_RESERVE`]) new compute-node ids and returns them.
///
/// On MySQL the block comes from the sequence's AUTO_INCREMENT counter: one multi-row INSERT,
/// whose rows InnoDB numbers consecutively in every `innodb_autoinc_lock_mode`, and which waits
/// for no row lock, so transactions reserving at once get disjoint blocks without conflict (a
/// "read the highest id, insert above it" would read the REPEATABLE READ snapshot, and with
/// `FOR UPDATE` deadlock on the gap above the last row). On SQLite write transactions are
/// serial, so reading the highest id and inserting the block's last one is enough.
pub async fn reserve_ids(tx: &mut Tx, n: i64) -> Result<RangeInclusive<i64>> {
    if !(1..=MAX_RESERVE).contains(&n) {
        return Err(Error::Invalid(format!(
            "reserve between 1 and {MAX_RESERVE} compute node ids, not {n}"
        )));
    }
    if tx.kind() == BackendKind::Mysql {
        return reserve_ids_mysql(tx, n).await;
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

async fn reserve_ids_mysql(tx: &mut Tx, n: i64) -> Result<RangeInclusive<i64>> {
    // Only the row count varies; no value travels in the text.
    let sql = format!(
        "INSERT INTO comp_nodes_id_seq (id) VALUES {}",
        vec!["(NULL)"; n as usize].join(",")
    );
    with_conn!(tx, c => diesel::sql_query(&sql).execute(c).await)?;
    // LAST_INSERT_ID() is the first id of the statement; the others follow it by
    // auto_increment_increment, which must be 1 for the block to be consecutive.
    let (first, step) = with_conn!(tx, c => diesel::select(
            diesel::dsl::sql::<(BigInt, BigInt)>("LAST_INSERT_ID(), @@auto_increment_increment"),
        )
        .get_result::<(i64, i64)>(c)
        .await)?;
    if step != 1 {
        return Err(Error::Invalid(format!(
            "compute node ids need auto_increment_increment = 1 on the metadata server, not {step}"
        )));
    }
    Ok(first..=first + n - 1)
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
    super::dirs::delete(tx, super::dirs::NodeKind::Compute, id).await?;
    let n = with_conn!(tx, c => diesel::delete(comp_nodes::table.filter(comp_nodes::id.eq(id))).execute(c).await)?;
    if n == 0 {
        return Err(Error::not_found("compute node", id));
    }
    Ok(())
}
