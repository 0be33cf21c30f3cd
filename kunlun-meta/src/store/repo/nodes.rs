//! Storage nodes (`shard_nodes`): the MySQL-compatible instances of each shard.
//!
//! Invariant: `member_state = source` marks the recorded primary; [`set_primary`] moves it
//! within one shard so that at most one node is `source` after it returns.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{conflict_as, last_insert_id, now};
use crate::error::{Error, Result};
use crate::model::{MemberState, NewShardNode, NodeStatus, ShardNode};
use crate::store::conn::{with_conn, Tx};
use crate::store::rows::{NewShardNodeRow, ShardNodeRow};
use crate::store::schema::shard_nodes;

/// Creates a storage node row; [`Error::Conflict`] if `hostaddr:port` is taken.
pub async fn insert(tx: &mut Tx, n: &NewShardNode) -> Result<ShardNode> {
    let row = NewShardNodeRow::new(n, now());
    with_conn!(tx, c => diesel::insert_into(shard_nodes::table).values(&row).execute(c).await)
        .map_err(|e| {
            conflict_as(e, || {
                format!("storage node {}:{} already exists", n.hostaddr, n.port)
            })
        })?;
    let id = last_insert_id(tx).await?;
    get(tx, id).await
}

/// One storage node; [`Error::NotFound`] if unknown.
pub async fn get(tx: &mut Tx, id: i64) -> Result<ShardNode> {
    let row = with_conn!(tx, c => shard_nodes::table
        .filter(shard_nodes::id.eq(id))
        .select(ShardNodeRow::as_select())
        .first::<ShardNodeRow>(c)
        .await
        .optional())?;
    row.ok_or_else(|| Error::not_found("storage node", id))?
        .try_into()
}

/// Storage nodes of one shard, or all, by id.
pub async fn list(tx: &mut Tx, shard_id: Option<i64>) -> Result<Vec<ShardNode>> {
    let rows = with_conn!(tx, c => {
        let mut q = shard_nodes::table.select(ShardNodeRow::as_select()).order(shard_nodes::id.asc()).into_boxed();
        if let Some(sid) = shard_id {
            q = q.filter(shard_nodes::shard_id.eq(sid));
        }
        q.load::<ShardNodeRow>(c).await
    })?;
    rows.into_iter().map(ShardNode::try_from).collect()
}

/// Storage nodes of every shard of a cluster, by id.
pub async fn list_by_cluster(tx: &mut Tx, cluster_id: i64) -> Result<Vec<ShardNode>> {
    let rows = with_conn!(tx, c => shard_nodes::table
        .filter(shard_nodes::db_cluster_id.eq(cluster_id))
        .select(ShardNodeRow::as_select())
        .order(shard_nodes::id.asc())
        .load::<ShardNodeRow>(c)
        .await)?;
    rows.into_iter().map(ShardNode::try_from).collect()
}

/// Sets a node's life-cycle status.
pub async fn set_status(tx: &mut Tx, id: i64, status: NodeStatus) -> Result<()> {
    let n = with_conn!(tx, c => diesel::update(shard_nodes::table.filter(shard_nodes::id.eq(id)))
        .set(shard_nodes::status.eq(status.as_str()))
        .execute(c)
        .await)?;
    if n == 0 {
        return Err(Error::not_found("storage node", id));
    }
    Ok(())
}

/// Sets a node's life-cycle status to `status` only while it is still `expected`, in one
/// conditional `UPDATE`; returns whether it changed. `false` means the node has moved on
/// (another writer, say a delete job marking it `deleted`, got there first) or is gone. For a
/// caller that acts on a status it read earlier and must not undo a later change.
pub async fn set_status_if(
    tx: &mut Tx,
    id: i64,
    expected: NodeStatus,
    status: NodeStatus,
) -> Result<bool> {
    let n = with_conn!(tx, c => diesel::update(
        shard_nodes::table
            .filter(shard_nodes::id.eq(id))
            .filter(shard_nodes::status.eq(expected.as_str())),
    )
    .set(shard_nodes::status.eq(status.as_str()))
    .execute(c)
    .await)?;
    Ok(n > 0)
}

/// Records `id` as the primary of its shard and every other node of the shard as replica.
pub async fn set_primary(tx: &mut Tx, id: i64) -> Result<()> {
    let node = get(tx, id).await?;
    with_conn!(tx, c => diesel::update(shard_nodes::table.filter(shard_nodes::shard_id.eq(node.shard_id)))
        .set(shard_nodes::member_state.eq(MemberState::Replica.as_str()))
        .execute(c)
        .await)?;
    with_conn!(tx, c => diesel::update(shard_nodes::table.filter(shard_nodes::id.eq(id)))
        .set(shard_nodes::member_state.eq(MemberState::Source.as_str()))
        .execute(c)
        .await)?;
    Ok(())
}

/// Deletes a storage node row.
pub async fn delete(tx: &mut Tx, id: i64) -> Result<()> {
    super::dirs::delete(tx, super::dirs::NodeKind::Storage, id).await?;
    let n = with_conn!(tx, c => diesel::delete(shard_nodes::table.filter(shard_nodes::id.eq(id))).execute(c).await)?;
    if n == 0 {
        return Err(Error::not_found("storage node", id));
    }
    Ok(())
}
