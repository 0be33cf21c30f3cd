//! One push of a cluster's topology to all of its compute nodes, and reading a compute node's
//! catalog back.
//!
//! Invariant: pushes of the same cluster from this process are serialised and each reads the
//! metadata only once it holds the cluster's turn, so a push that started later (after a
//! failover's metadata update) is never overwritten by an older snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use kunlun_meta::model::{CompNode, HaMode, NodeStatus};
use kunlun_meta::store::{repo, Store};
use serde::Serialize;
use tokio::task::JoinSet;

use super::pg::{ManagerLogin, Session};
use super::rows::{desired_catalog, CatalogRows, MetaShardInfo, StorageLogin};
use super::CatalogOptions;
use crate::accounts::{MANAGER_USER, PGX_USER};
use crate::error::{Error, Result};

/// Outcome of pushing to one compute node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompPush {
    pub comp_node_id: i64,
    pub name: String,
    pub hostaddr: String,
    pub port: u16,
    /// Why this compute node was not written; `None` when it holds the new rows.
    pub error: Option<String>,
}

/// Outcome of [`push_cluster`]: one entry per compute node, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushReport {
    pub cluster_id: i64,
    /// [`CatalogRows::digest`] of the cluster's rows that were pushed.
    pub digest: u64,
    pub comps: Vec<CompPush>,
}

impl PushReport {
    /// Every compute node holds the new rows (also true for a cluster without any).
    pub fn all_ok(&self) -> bool {
        self.comps.iter().all(|c| c.error.is_none())
    }

    /// The compute nodes that were not written.
    pub fn failed(&self) -> impl Iterator<Item = &CompPush> {
        self.comps.iter().filter(|c| c.error.is_some())
    }
}

impl std::fmt::Display for PushReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ok = self.comps.iter().filter(|c| c.error.is_none()).count();
        write!(
            f,
            "catalog pushed to {ok}/{} compute nodes",
            self.comps.len()
        )?;
        for c in self.failed() {
            write!(
                f,
                "; {} ({}:{}) not written: {}",
                c.name,
                c.hostaddr,
                c.port,
                c.error.as_deref().unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

/// The per-cluster turn of this process (see the module invariant).
fn cluster_turn(cluster_id: i64) -> Arc<tokio::sync::Mutex<()>> {
    // A registry of locks, not configuration: pushes come from the failover, the jobs and the
    // sync actor, which share nothing else but the store.
    static TURNS: OnceLock<Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let map = TURNS.get_or_init(Default::default);
    let mut g = map.lock().unwrap_or_else(|e| e.into_inner());
    g.entry(cluster_id).or_default().clone()
}

/// Compute nodes a push goes to: those in service.
fn in_service(c: &CompNode) -> bool {
    matches!(c.status, NodeStatus::Active | NodeStatus::Creating)
}

/// The compute nodes to push to and the cluster's catalog rows, from one metadata snapshot.
pub async fn desired_for_cluster(
    store: &Store,
    cluster_id: i64,
) -> Result<(Vec<CompNode>, CatalogRows)> {
    let (cluster, shards, nodes, comps, meta, login) = store
        .read(async |tx| {
            let cluster = repo::clusters::get(tx, cluster_id).await?;
            let shards = repo::shards::list(tx, Some(cluster_id)).await?;
            let nodes = repo::nodes::list_by_cluster(tx, cluster_id).await?;
            let comps = repo::comps::list(tx, Some(cluster_id)).await?;
            let meta = MetaShardInfo {
                nodes: repo::meta::list_meta_nodes(tx).await?,
                ha_mode: repo::meta::get_config(tx, "meta_ha_mode")
                    .await?
                    .and_then(|v| v.parse::<HaMode>().ok()),
            };
            let login = storage_login(repo::secrets::get(tx, cluster_id).await)?;
            Ok((cluster, shards, nodes, comps, meta, login))
        })
        .await?;
    let comps: Vec<CompNode> = comps.into_iter().filter(in_service).collect();
    let rows = desired_catalog(&cluster, &shards, &nodes, &comps, &meta, &login)?;
    Ok((comps, rows))
}

/// How compute nodes log in to the cluster's storage nodes: Kunlun's `pgx` user with the
/// cluster's stored password; for a cluster without stored passwords (created before
/// `kl_cluster_secret` existed) each node's own account (`shard_nodes.user_name/passwd`).
fn storage_login(
    secret: kunlun_meta::Result<repo::secrets::ClusterSecret>,
) -> kunlun_meta::Result<StorageLogin> {
    match secret {
        Ok(s) => Ok(StorageLogin::Pgx {
            user: PGX_USER.to_string(),
            password: s.pgx_pwd,
        }),
        Err(kunlun_meta::Error::NotFound { .. }) => Ok(StorageLogin::NodeAccount),
        Err(e) => Err(e),
    }
}

/// Writes cluster `cluster_id`'s topology into every in-service compute node of it, in
/// parallel, each in one transaction (idempotent: pushing twice leaves the same rows).
///
/// `Err` only when the metadata cannot be read or is inconsistent (e.g. two primaries in one
/// shard); a compute node that cannot be written is reported in [`PushReport::comps`] and does
/// not hold up the others.
pub async fn push_cluster(
    store: &Store,
    cluster_id: i64,
    opts: &CatalogOptions,
) -> Result<PushReport> {
    let turn = cluster_turn(cluster_id);
    let _turn = turn.lock().await;
    let (comps, rows) = desired_for_cluster(store, cluster_id).await?;
    let manager = manager_login(store, cluster_id).await?;
    let digest = rows.digest();
    let mut set = JoinSet::new();
    for (i, comp) in comps.iter().enumerate() {
        let comp = comp.clone();
        let mine = rows.for_comp(comp.id);
        let opts = opts.clone();
        let manager = manager.clone();
        set.spawn(async move {
            let r = async {
                let mut s = Session::connect(&comp, manager.as_ref(), &opts).await?;
                s.replace(cluster_id, &mine).await
            }
            .await;
            (i, r)
        });
    }
    let mut results: Vec<Option<String>> = vec![None; comps.len()];
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, Err(e))) => results[i] = Some(e.to_string()),
            Ok((_, Ok(()))) => {}
            Err(e) => {
                return Err(Error::Internal(format!("catalog push task failed: {e}")));
            }
        }
    }
    let report = PushReport {
        cluster_id,
        digest,
        comps: comps
            .iter()
            .zip(results)
            .map(|(c, error)| CompPush {
                comp_node_id: c.id,
                name: c.name.clone(),
                hostaddr: c.hostaddr.clone(),
                port: c.port,
                error,
            })
            .collect(),
    };
    for c in report.failed() {
        tracing::warn!(
            cluster_id,
            comp_node_id = c.comp_node_id,
            error = c.error.as_deref().unwrap_or_default(),
            "catalog not written to compute node"
        );
    }
    tracing::debug!(
        cluster_id,
        comps = report.comps.len(),
        ok = report.all_ok(),
        "catalog push"
    );
    Ok(report)
}

/// The manager's login on the compute nodes of `cluster_id`: `clustmgr` with the cluster's
/// stored manager password; `None` for a cluster without stored passwords.
async fn manager_login(store: &Store, cluster_id: i64) -> Result<Option<ManagerLogin>> {
    let secret = store
        .read(async |tx| match repo::secrets::get(tx, cluster_id).await {
            Ok(s) => Ok(Some(s.manager_pwd)),
            Err(kunlun_meta::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
    Ok(secret.map(|password| ManagerLogin {
        user: MANAGER_USER.to_string(),
        password,
    }))
}

/// The catalog rows of `comp`'s cluster that `comp` holds now (sorted by key; empty when
/// nothing was pushed yet), read as the manager's login (see [`push_cluster`]). Compare with
/// `desired_for_cluster(..).1.for_comp(comp.id)`.
pub async fn read_catalog(
    store: &Store,
    comp: &CompNode,
    opts: &CatalogOptions,
) -> Result<CatalogRows> {
    let manager = manager_login(store, comp.db_cluster_id).await?;
    let s = Session::connect(comp, manager.as_ref(), opts).await?;
    s.read(comp.db_cluster_id).await
}

/// What users made on compute node `comp` (at most `limit` names; see
/// [`Session::user_objects`]), read as the manager's login.
pub async fn user_objects(
    store: &Store,
    comp: &CompNode,
    opts: &CatalogOptions,
    limit: i64,
) -> Result<Vec<String>> {
    let manager = manager_login(store, comp.db_cluster_id).await?;
    let s = Session::connect(comp, manager.as_ref(), opts).await?;
    s.user_objects(limit).await
}
