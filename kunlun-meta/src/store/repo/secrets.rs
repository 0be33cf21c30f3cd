//! Per-cluster system passwords (`kl_cluster_secret`): the passwords of the manager,
//! replication and compute-to-storage users on storage nodes and of the owner role on compute
//! nodes, so jobs that add instances to a cluster later create the same users.
//!
//! Invariants: one row per cluster, written in the transaction that creates the cluster and
//! deleted with it; the row type's `Debug` never shows a password, and nothing here is ever
//! serialised.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::conflict_as;
use crate::error::{Error, Result};
use crate::store::conn::{with_conn, Tx};
use crate::store::schema::kl_cluster_secret as cs;

/// The stored passwords of one cluster.
#[derive(Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = cs, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub struct ClusterSecret {
    pub cluster_id: i64,
    /// `clustmgr` on storage nodes.
    pub manager_pwd: String,
    /// `repl` on storage nodes.
    pub repl_pwd: String,
    /// `pgx` on storage nodes.
    pub pgx_pwd: String,
    /// `abc` on compute nodes.
    pub comp_pwd: String,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecret")
            .field("cluster_id", &self.cluster_id)
            .field("passwords", &"<redacted>")
            .finish()
    }
}

/// Stores the passwords of a cluster; [`Error::Conflict`] if it already has a row.
pub async fn insert(tx: &mut Tx, s: &ClusterSecret) -> Result<()> {
    if [&s.manager_pwd, &s.repl_pwd, &s.pgx_pwd, &s.comp_pwd]
        .iter()
        .any(|p| p.is_empty())
    {
        return Err(Error::Invalid(format!(
            "cluster {}: system passwords must not be empty",
            s.cluster_id
        )));
    }
    with_conn!(tx, c => diesel::insert_into(cs::table).values(s).execute(c).await).map_err(
        |e| {
            conflict_as(e, || {
                format!("cluster {} already has system passwords", s.cluster_id)
            })
        },
    )?;
    Ok(())
}

/// The passwords of a cluster; [`Error::NotFound`] if none are stored (e.g. a cluster created
/// before this table existed).
pub async fn get(tx: &mut Tx, cluster_id: i64) -> Result<ClusterSecret> {
    let row = with_conn!(tx, c => cs::table
        .filter(cs::cluster_id.eq(cluster_id))
        .select(ClusterSecret::as_select())
        .first::<ClusterSecret>(c)
        .await
        .optional())?;
    row.ok_or_else(|| Error::not_found("cluster secret", cluster_id))
}

/// Removes the passwords of a cluster (no error if there were none).
pub async fn delete(tx: &mut Tx, cluster_id: i64) -> Result<()> {
    with_conn!(tx, c => diesel::delete(cs::table.filter(cs::cluster_id.eq(cluster_id)))
        .execute(c)
        .await)?;
    Ok(())
}
