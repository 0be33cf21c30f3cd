//! Where each installed instance lives (`kl_shard_node_dir`, `kl_comp_node_dir`): its base
//! dir, recorded at install, so uninstall, the SSH fence and rejoin use it rather than a path
//! computed from the machine's current `data_dirs`.
//!
//! Invariants: at most one row per node, removed with the node; a node without a row was
//! installed before the tables existed and its dir is computed (the old rule) by the caller.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::error::Result;
use crate::store::conn::{with_conn, Tx};
use crate::store::schema::{kl_comp_node_dir as cd, kl_shard_node_dir as sd};

/// Which kind of node a dir belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Storage,
    Compute,
}

/// Records (or replaces) the base dir of a node.
pub async fn set(tx: &mut Tx, kind: NodeKind, node_id: i64, base_dir: &str) -> Result<()> {
    delete(tx, kind, node_id).await?;
    match kind {
        NodeKind::Storage => {
            with_conn!(tx, c => diesel::insert_into(sd::table)
                .values((sd::shard_node_id.eq(node_id), sd::base_dir.eq(base_dir)))
                .execute(c)
                .await)?;
        }
        NodeKind::Compute => {
            with_conn!(tx, c => diesel::insert_into(cd::table)
                .values((cd::comp_node_id.eq(node_id), cd::base_dir.eq(base_dir)))
                .execute(c)
                .await)?;
        }
    }
    Ok(())
}

/// The recorded base dirs of the nodes `ids` (nodes without one are absent).
pub async fn get_many(tx: &mut Tx, kind: NodeKind, ids: &[i64]) -> Result<HashMap<i64, String>> {
    let rows: Vec<(i64, String)> = match kind {
        NodeKind::Storage => with_conn!(tx, c => sd::table
            .filter(sd::shard_node_id.eq_any(ids))
            .select((sd::shard_node_id, sd::base_dir))
            .load(c)
            .await)?,
        NodeKind::Compute => with_conn!(tx, c => cd::table
            .filter(cd::comp_node_id.eq_any(ids))
            .select((cd::comp_node_id, cd::base_dir))
            .load(c)
            .await)?,
    };
    Ok(rows.into_iter().collect())
}

/// The recorded base dir of one node.
pub async fn get(tx: &mut Tx, kind: NodeKind, node_id: i64) -> Result<Option<String>> {
    Ok(get_many(tx, kind, &[node_id]).await?.remove(&node_id))
}

/// Forgets a node's base dir (no error if none was recorded).
pub async fn delete(tx: &mut Tx, kind: NodeKind, node_id: i64) -> Result<()> {
    match kind {
        NodeKind::Storage => {
            with_conn!(tx, c => diesel::delete(sd::table.filter(sd::shard_node_id.eq(node_id)))
                .execute(c)
                .await)?;
        }
        NodeKind::Compute => {
            with_conn!(tx, c => diesel::delete(cd::table.filter(cd::comp_node_id.eq(node_id)))
                .execute(c)
                .await)?;
        }
    }
    Ok(())
}
