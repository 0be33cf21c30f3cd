//! Small Kunlun tables: metadata-shard nodes (`meta_db_nodes`), who-follows-whom
//! (`node_map_master`), cluster manager processes (`cluster_mgr_nodes`) and
//! `global_configuration`.
//!
//! Invariant: the upserts here are update-then-insert inside the caller's transaction, so they
//! behave the same on both backends.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{conflict_as, last_insert_id};
use crate::error::{Error, Result};
use crate::model::{ClusterMgrNode, MemberState, MetaDbNode, NodeMapMaster};
use crate::store::conn::{with_conn, Tx};
use crate::store::rows::{ClusterMgrNodeRow, MetaDbNodeRow, NewMetaDbNodeRow, NodeMapMasterRow};
use crate::store::schema::{
    cluster_mgr_nodes, global_configuration, meta_db_nodes, node_map_master,
};

/// Registers a node of the metadata shard (`id` of the argument is ignored).
pub async fn insert_meta_node(tx: &mut Tx, n: &MetaDbNode) -> Result<MetaDbNode> {
    let row = NewMetaDbNodeRow {
        hostaddr: n.hostaddr.clone(),
        port: i64::from(n.port),
        user_name: n.user_name.clone(),
        passwd: n.passwd.clone(),
        master_priority: n.master_priority,
        member_state: n.member_state.as_str().to_string(),
        sync_state: n.sync_state.as_str().to_string(),
    };
    with_conn!(tx, c => diesel::insert_into(meta_db_nodes::table).values(&row).execute(c).await)
        .map_err(|e| {
            conflict_as(e, || {
                format!("metadata node {}:{} already exists", n.hostaddr, n.port)
            })
        })?;
    let id = last_insert_id(tx).await?;
    let rows = list_meta_nodes(tx).await?;
    rows.into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| Error::not_found("metadata node", id))
}

/// Every metadata-shard node, by id.
pub async fn list_meta_nodes(tx: &mut Tx) -> Result<Vec<MetaDbNode>> {
    let rows = with_conn!(tx, c => meta_db_nodes::table
        .select(MetaDbNodeRow::as_select())
        .order(meta_db_nodes::id.asc())
        .load::<MetaDbNodeRow>(c)
        .await)?;
    rows.into_iter().map(MetaDbNode::try_from).collect()
}

/// Records which metadata node is the primary (`source`); the others become replicas.
pub async fn set_meta_primary(tx: &mut Tx, id: i64) -> Result<()> {
    with_conn!(tx, c => diesel::update(meta_db_nodes::table)
        .set(meta_db_nodes::member_state.eq(MemberState::Replica.as_str()))
        .execute(c)
        .await)?;
    let n = with_conn!(tx, c => diesel::update(meta_db_nodes::table.filter(meta_db_nodes::id.eq(id)))
        .set(meta_db_nodes::member_state.eq(MemberState::Source.as_str()))
        .execute(c)
        .await)?;
    if n == 0 {
        return Err(Error::not_found("metadata node", id));
    }
    Ok(())
}

/// Deletes a metadata-shard node row.
pub async fn delete_meta_node(tx: &mut Tx, id: i64) -> Result<()> {
    let n = with_conn!(tx, c => diesel::delete(meta_db_nodes::table.filter(meta_db_nodes::id.eq(id))).execute(c).await)?;
    if n == 0 {
        return Err(Error::not_found("metadata node", id));
    }
    Ok(())
}

/// Records which primary a replica follows (insert or replace).
pub async fn set_node_master(tx: &mut Tx, m: &NodeMapMaster) -> Result<()> {
    let row = NodeMapMasterRow::from(m);
    let n = with_conn!(tx, c => diesel::update(
            node_map_master::table
                .filter(node_map_master::cluster_id.eq(row.cluster_id))
                .filter(node_map_master::node_host.eq(&row.node_host)),
        )
        .set((node_map_master::master_host.eq(&row.master_host), node_map_master::master_uuid.eq(&row.master_uuid)))
        .execute(c)
        .await)?;
    if n == 0 {
        with_conn!(tx, c => diesel::insert_into(node_map_master::table).values(&row).execute(c).await)?;
    }
    Ok(())
}

/// Who follows whom in one cluster, or in all.
pub async fn list_node_masters(tx: &mut Tx, cluster_id: Option<i64>) -> Result<Vec<NodeMapMaster>> {
    let rows = with_conn!(tx, c => {
        let mut q = node_map_master::table
            .select(NodeMapMasterRow::as_select())
            .order((node_map_master::cluster_id.asc(), node_map_master::node_host.asc()))
            .into_boxed();
        if let Some(cid) = cluster_id {
            q = q.filter(node_map_master::cluster_id.eq(cid));
        }
        q.load::<NodeMapMasterRow>(c).await
    })?;
    Ok(rows.into_iter().map(NodeMapMaster::from).collect())
}

/// Forgets the row of one replica.
pub async fn delete_node_master(tx: &mut Tx, cluster_id: i64, node_host: &str) -> Result<()> {
    with_conn!(tx, c => diesel::delete(
            node_map_master::table
                .filter(node_map_master::cluster_id.eq(cluster_id))
                .filter(node_map_master::node_host.eq(node_host)),
        )
        .execute(c)
        .await)?;
    Ok(())
}

/// Records a cluster manager process (insert or replace by `hostaddr:port`).
pub async fn upsert_mgr_node(tx: &mut Tx, n: &ClusterMgrNode) -> Result<()> {
    let row = ClusterMgrNodeRow::from(n);
    let updated = with_conn!(tx, c => diesel::update(
            cluster_mgr_nodes::table
                .filter(cluster_mgr_nodes::hostaddr.eq(&row.hostaddr))
                .filter(cluster_mgr_nodes::port.eq(row.port)),
        )
        .set((
            cluster_mgr_nodes::prometheus_port.eq(row.prometheus_port),
            cluster_mgr_nodes::member_state.eq(&row.member_state),
        ))
        .execute(c)
        .await)?;
    if updated == 0 {
        with_conn!(tx, c => diesel::insert_into(cluster_mgr_nodes::table).values(&row).execute(c).await)?;
    }
    Ok(())
}

/// Records `n` as the leading cluster manager (`member_state` `source`) and every other
/// process as `replica`, so the table names one leader as Kunlun's does.
pub async fn claim_mgr_source(tx: &mut Tx, n: &ClusterMgrNode) -> Result<()> {
    let port = i64::from(n.port);
    with_conn!(tx, c => diesel::update(
            cluster_mgr_nodes::table.filter(
                cluster_mgr_nodes::hostaddr
                    .ne(&n.hostaddr)
                    .or(cluster_mgr_nodes::port.ne(port)),
            ),
        )
        .set(cluster_mgr_nodes::member_state.eq(MemberState::Replica.as_str()))
        .execute(c)
        .await)?;
    let me = ClusterMgrNode {
        member_state: MemberState::Source,
        ..n.clone()
    };
    upsert_mgr_node(tx, &me).await
}

/// Every cluster manager process, by id.
pub async fn list_mgr_nodes(tx: &mut Tx) -> Result<Vec<ClusterMgrNode>> {
    let rows = with_conn!(tx, c => cluster_mgr_nodes::table
        .select(ClusterMgrNodeRow::as_select())
        .order(cluster_mgr_nodes::id.asc())
        .load::<ClusterMgrNodeRow>(c)
        .await)?;
    rows.into_iter().map(ClusterMgrNode::try_from).collect()
}

/// Forgets a cluster manager process.
pub async fn delete_mgr_node(tx: &mut Tx, hostaddr: &str, port: u16) -> Result<()> {
    with_conn!(tx, c => diesel::delete(
            cluster_mgr_nodes::table
                .filter(cluster_mgr_nodes::hostaddr.eq(hostaddr))
                .filter(cluster_mgr_nodes::port.eq(i64::from(port))),
        )
        .execute(c)
        .await)?;
    Ok(())
}

/// A `global_configuration` value (e.g. `meta_ha_mode`).
pub async fn get_config(tx: &mut Tx, name: &str) -> Result<Option<String>> {
    with_conn!(tx, c => global_configuration::table
        .filter(global_configuration::name.eq(name))
        .select(global_configuration::value)
        .first::<String>(c)
        .await
        .optional())
}

/// Sets a `global_configuration` value.
pub async fn set_config(tx: &mut Tx, name: &str, value: &str) -> Result<()> {
    let n = with_conn!(tx, c => diesel::update(global_configuration::table.filter(global_configuration::name.eq(name)))
        .set(global_configuration::value.eq(value))
        .execute(c)
        .await)?;
    if n == 0 {
        with_conn!(tx, c => diesel::insert_into(global_configuration::table)
            .values((global_configuration::name.eq(name), global_configuration::value.eq(value)))
            .execute(c)
            .await)?;
    }
    Ok(())
}
