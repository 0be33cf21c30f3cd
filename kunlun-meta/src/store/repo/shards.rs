//! Storage shards (`shards`): one replication group each, global ids across clusters.
//!
//! Invariant: a shard name is unique within its cluster ([`Error::Conflict`] otherwise).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{conflict_as, last_insert_id, now};
use crate::error::{Error, Result};
use crate::model::{ClusterStatus, NewShard, OnOff, Shard};
use crate::store::conn::{with_conn, Tx};
use crate::store::rows::{NewShardRow, ShardRow};
use crate::store::schema::shards;

/// Creates a shard row.
pub async fn insert(tx: &mut Tx, s: &NewShard) -> Result<Shard> {
    crate::validate::name("name", &s.name)?;
    let row = NewShardRow {
        name: s.name.clone(),
        when_created: now(),
        num_nodes: s.num_nodes,
        db_cluster_id: s.db_cluster_id,
        sync_num: s.sync_num,
    };
    with_conn!(tx, c => diesel::insert_into(shards::table).values(&row).execute(c).await).map_err(
        |e| {
            conflict_as(e, || {
                format!(
                    "shard {} exists in cluster {} or the cluster does not",
                    s.name, s.db_cluster_id
                )
            })
        },
    )?;
    let id = last_insert_id(tx).await?;
    get(tx, id).await
}

/// One shard; [`Error::NotFound`] if unknown.
pub async fn get(tx: &mut Tx, id: i64) -> Result<Shard> {
    let row = with_conn!(tx, c => shards::table
        .filter(shards::id.eq(id))
        .select(ShardRow::as_select())
        .first::<ShardRow>(c)
        .await
        .optional())?;
    row.ok_or_else(|| Error::not_found("shard", id))?.try_into()
}

/// Shards of one cluster, or all, by id.
pub async fn list(tx: &mut Tx, cluster_id: Option<i64>) -> Result<Vec<Shard>> {
    let rows = with_conn!(tx, c => {
        let mut q = shards::table.select(ShardRow::as_select()).order(shards::id.asc()).into_boxed();
        if let Some(cid) = cluster_id {
            q = q.filter(shards::db_cluster_id.eq(cid));
        }
        q.load::<ShardRow>(c).await
    })?;
    rows.into_iter().map(Shard::try_from).collect()
}

/// Sets the number of nodes and the number of replica ACKs a commit waits for.
pub async fn set_nodes(tx: &mut Tx, id: i64, num_nodes: i64, sync_num: i64) -> Result<()> {
    let n = with_conn!(tx, c => diesel::update(shards::table.filter(shards::id.eq(id)))
        .set((shards::num_nodes.eq(num_nodes), shards::sync_num.eq(sync_num)))
        .execute(c)
        .await)?;
    if n == 0 {
        return Err(Error::not_found("shard", id));
    }
    Ok(())
}

/// Records the degrade (fullsync fallback) run state.
pub async fn set_degrade_run_state(tx: &mut Tx, id: i64, state: OnOff) -> Result<()> {
    let n = with_conn!(tx, c => diesel::update(shards::table.filter(shards::id.eq(id)))
        .set(shards::degrade_run_state.eq(state.as_str()))
        .execute(c)
        .await)?;
    if n == 0 {
        return Err(Error::not_found("shard", id));
    }
    Ok(())
}

/// Marks a shard `inuse` or `deleted`.
pub async fn set_status(tx: &mut Tx, id: i64, status: ClusterStatus) -> Result<()> {
    let n = with_conn!(tx, c => diesel::update(shards::table.filter(shards::id.eq(id)))
        .set(shards::status.eq(status.as_str()))
        .execute(c)
        .await)?;
    if n == 0 {
        return Err(Error::not_found("shard", id));
    }
    Ok(())
}

/// Deletes a shard row and (by cascade) its nodes.
pub async fn delete(tx: &mut Tx, id: i64) -> Result<()> {
    let n = with_conn!(tx, c => diesel::delete(shards::table.filter(shards::id.eq(id))).execute(c).await)?;
    if n == 0 {
        return Err(Error::not_found("shard", id));
    }
    Ok(())
}
