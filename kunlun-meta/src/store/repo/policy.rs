//! Per-cluster self-healing switches (`kl_cluster_policy`).
//!
//! Invariant: no row means the default (everything on); a row goes with its cluster (foreign
//! key, cascade), so a cluster id reused after a delete never inherits an old policy.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::error::Result;
use crate::model::{ClusterPolicy, OnOff};
use crate::store::conn::{with_conn, Tx};
use crate::store::schema::kl_cluster_policy as p;

fn on(s: &str) -> bool {
    // Anything but the stored `OFF` reads as on: the column's CHECK/enum allows only the two.
    s != OnOff::Off.as_str()
}

fn flag(b: bool) -> &'static str {
    if b {
        OnOff::On.as_str()
    } else {
        OnOff::Off.as_str()
    }
}

/// The policy of one cluster (the default when none was set).
pub async fn get(tx: &mut Tx, cluster_id: i64) -> Result<ClusterPolicy> {
    let row: Option<(String, String)> = with_conn!(tx, c => p::table
        .filter(p::db_cluster_id.eq(cluster_id))
        .select((p::auto_restart, p::auto_rebuild))
        .first(c)
        .await
        .optional())?;
    Ok(match row {
        Some((r, b)) => ClusterPolicy {
            cluster_id,
            auto_restart: on(&r),
            auto_rebuild: on(&b),
        },
        None => ClusterPolicy::default_for(cluster_id),
    })
}

/// The policies that differ from the default, by cluster id (a cluster absent has the default).
pub async fn list_set(tx: &mut Tx) -> Result<HashMap<i64, ClusterPolicy>> {
    let rows: Vec<(i64, String, String)> = with_conn!(tx, c => p::table
        .select((p::db_cluster_id, p::auto_restart, p::auto_rebuild))
        .load(c)
        .await)?;
    Ok(rows
        .into_iter()
        .map(|(id, r, b)| {
            (
                id,
                ClusterPolicy {
                    cluster_id: id,
                    auto_restart: on(&r),
                    auto_rebuild: on(&b),
                },
            )
        })
        .collect())
}

/// Stores a cluster's policy (replacing any earlier one). The caller checks the cluster exists.
pub async fn set(tx: &mut Tx, policy: &ClusterPolicy) -> Result<()> {
    with_conn!(tx, c => diesel::delete(p::table.filter(p::db_cluster_id.eq(policy.cluster_id)))
        .execute(c)
        .await)?;
    with_conn!(tx, c => diesel::insert_into(p::table)
        .values((
            p::db_cluster_id.eq(policy.cluster_id),
            p::auto_restart.eq(flag(policy.auto_restart)),
            p::auto_rebuild.eq(flag(policy.auto_rebuild)),
        ))
        .execute(c)
        .await)?;
    Ok(())
}
