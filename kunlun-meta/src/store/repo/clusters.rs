//! Clusters (`db_clusters`) and their per-cluster tables `commit_log_<name>` and
//! `ddl_ops_log_<name>`, created from the template tables.
//!
//! Invariant: a cluster row exists exactly when its two log tables exist (SQLite: same
//! transaction; MySQL, where DDL commits implicitly: created on a side connection and dropped
//! again if the transaction rolls back, dropped only after a deleting transaction commits).

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;

use super::{conflict_as, last_insert_id, now, quoted_table};
use crate::api::Page;
use crate::error::{Error, Result};
use crate::model::{Cluster, ClusterStatus, NewCluster};
use crate::store::config::BackendKind;
use crate::store::conn::{with_conn, Tx};
use crate::store::rows::{ClusterRow, NewClusterRow};
use crate::store::schema::{db_clusters, node_map_master};

/// Prefix of the per-cluster 2PC decision log.
pub const COMMIT_LOG_PREFIX: &str = "commit_log_";
/// Prefix of the per-cluster DDL log.
pub const DDL_LOG_PREFIX: &str = "ddl_ops_log_";

/// Creates the cluster row and its two log tables; [`Error::Conflict`] if the name is taken.
pub async fn insert(tx: &mut Tx, c: &NewCluster) -> Result<Cluster> {
    crate::validate::name("name", &c.name)?;
    // Checks the derived table names before anything is written.
    quoted_table(DDL_LOG_PREFIX, &c.name)?;
    let row = NewClusterRow {
        name: c.name.clone(),
        nick_name: c.nick_name.clone(),
        owner: c.owner.clone(),
        ddl_log_tblname: Some(format!("{DDL_LOG_PREFIX}{}", c.name)),
        when_created: now(),
        business: c.business.clone(),
        memo: c.memo.clone(),
        status: ClusterStatus::Inuse.as_str().to_string(),
        ha_mode: c.ha_mode.as_str().to_string(),
    };
    with_conn!(tx, conn => diesel::insert_into(db_clusters::table).values(&row).execute(conn).await)
        .map_err(|e| conflict_as(e, || format!("cluster {} already exists", c.name)))?;
    let id = last_insert_id(tx).await?;
    create_log_tables(tx, &c.name).await?;
    get(tx, id).await
}

#[derive(QueryableByName)]
struct SqlText {
    #[diesel(sql_type = Text)]
    sql: String,
}

/// `CREATE TABLE <prefix><name>` with the template's definition.
async fn create_like(tx: &mut Tx, prefix: &str, template: &str, cluster: &str) -> Result<()> {
    let table = quoted_table(prefix, cluster)?;
    let sql = match tx.kind() {
        BackendKind::Mysql => format!("CREATE TABLE {table} LIKE `{template}`"),
        BackendKind::Sqlite => {
            // SQLite has no CREATE TABLE ... LIKE: reuse the template's own definition.
            let def = with_conn!(tx, c => diesel::sql_query(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                )
                .bind::<Text, _>(template)
                .get_result::<SqlText>(c)
                .await)?;
            let body = def
                .sql
                .split_once('(')
                .map(|(_, rest)| rest)
                .ok_or_else(|| Error::Database(format!("unexpected definition of {template}")))?;
            format!("CREATE TABLE {table} ({body}")
        }
    };
    tx.ddl_create(&sql, format!("DROP TABLE IF EXISTS {table}"))
        .await
}

/// Creates `commit_log_<name>` and `ddl_ops_log_<name>` from their templates.
pub async fn create_log_tables(tx: &mut Tx, cluster: &str) -> Result<()> {
    create_like(tx, COMMIT_LOG_PREFIX, "commit_log_template_table", cluster).await?;
    create_like(tx, DDL_LOG_PREFIX, "ddl_ops_log_template_table", cluster).await
}

/// Drops `commit_log_<name>` and `ddl_ops_log_<name>` (if they exist).
pub async fn drop_log_tables(tx: &mut Tx, cluster: &str) -> Result<()> {
    for prefix in [COMMIT_LOG_PREFIX, DDL_LOG_PREFIX] {
        let table = quoted_table(prefix, cluster)?;
        tx.ddl_drop(format!("DROP TABLE IF EXISTS {table}")).await?;
    }
    Ok(())
}

/// One cluster by id; [`Error::NotFound`] if unknown.
pub async fn get(tx: &mut Tx, id: i64) -> Result<Cluster> {
    let row = with_conn!(tx, c => db_clusters::table
        .filter(db_clusters::id.eq(id))
        .select(ClusterRow::as_select())
        .first::<ClusterRow>(c)
        .await
        .optional())?;
    row.ok_or_else(|| Error::not_found("cluster", id))?
        .try_into()
}

/// One cluster by name; [`Error::NotFound`] if unknown.
pub async fn get_by_name(tx: &mut Tx, name: &str) -> Result<Cluster> {
    let row = with_conn!(tx, c => db_clusters::table
        .filter(db_clusters::name.eq(name))
        .select(ClusterRow::as_select())
        .first::<ClusterRow>(c)
        .await
        .optional())?;
    row.ok_or_else(|| Error::not_found("cluster", name))?
        .try_into()
}

/// Every cluster, by id.
pub async fn list(tx: &mut Tx) -> Result<Vec<Cluster>> {
    let rows = with_conn!(tx, c => db_clusters::table
        .order(db_clusters::id.asc())
        .select(ClusterRow::as_select())
        .load::<ClusterRow>(c)
        .await)?;
    rows.into_iter().map(Cluster::try_from).collect()
}

/// One page of clusters by id: those past `after`, at most `limit`.
pub async fn list_page(tx: &mut Tx, after: Option<i64>, limit: u32) -> Result<Page<Cluster>> {
    let after = after.unwrap_or(i64::MIN);
    let rows = with_conn!(tx, c => db_clusters::table
        .filter(db_clusters::id.gt(after))
        .order(db_clusters::id.asc())
        .limit(i64::from(limit) + 1)
        .select(ClusterRow::as_select())
        .load::<ClusterRow>(c)
        .await)?;
    let clusters = rows
        .into_iter()
        .map(Cluster::try_from)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_probe(clusters, limit, |c| c.id))
}

/// Marks a cluster `inuse` or `deleted` (Kunlun keeps deleted rows).
pub async fn set_status(tx: &mut Tx, id: i64, status: ClusterStatus) -> Result<()> {
    let n = with_conn!(tx, c => diesel::update(db_clusters::table.filter(db_clusters::id.eq(id)))
        .set(db_clusters::status.eq(status.as_str()))
        .execute(c)
        .await)?;
    if n == 0 {
        return Err(Error::not_found("cluster", id));
    }
    Ok(())
}

/// Replaces the creation parameters kept in `memo`.
pub async fn set_memo(tx: &mut Tx, id: i64, memo: Option<&str>) -> Result<()> {
    let n = with_conn!(tx, c => diesel::update(db_clusters::table.filter(db_clusters::id.eq(id)))
        .set(db_clusters::memo.eq(memo))
        .execute(c)
        .await)?;
    if n == 0 {
        return Err(Error::not_found("cluster", id));
    }
    Ok(())
}

/// Deletes the cluster row (its shards, nodes and compute nodes go with it) and drops its
/// log tables.
pub async fn delete(tx: &mut Tx, id: i64) -> Result<()> {
    let cluster = get(tx, id).await?;
    for comp in super::comps::list(tx, Some(id)).await? {
        super::dirs::delete(tx, super::dirs::NodeKind::Compute, comp.id).await?;
    }
    with_conn!(tx, c => diesel::delete(node_map_master::table.filter(node_map_master::cluster_id.eq(id)))
        .execute(c)
        .await)?;
    with_conn!(tx, c => diesel::delete(db_clusters::table.filter(db_clusters::id.eq(id))).execute(c).await)?;
    drop_log_tables(tx, &cluster.name).await
}
