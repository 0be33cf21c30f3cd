//! `rebuild_node` of the Emit API: its paras read as the original reads them, into the
//! request of this manager's own `rebuild_node` job (the one the REST API and `kunlunctl node
//! rebuild` accept). Invariant: a para the original refuses fails with the original's code;
//! what this manager cannot do (`need_backup=1`: no HDFS) is refused and said, never ignored.

use kunlun_core::jobs::kinds::rebuild_node::{
    RebuildRequest, DEFAULT_MAX_SOURCE_LAG_S, MAX_REBUILD_NODES,
};
use kunlun_core::ClusterManager;
use kunlun_meta::model::MemberState;

use super::codes;
use super::paras::{Fail, Paras};

/// `rebuild_node`'s paras: `shard_id`, `rb_nodes:[{hostaddr, port, need_backup, hdfs_host,
/// pv_limit}]` (replicas of the shard, rebuilt one after the other), `allow_pull_from_master`
/// ("1": the primary may be the source; default no, as the original), `allow_replica_delay`
/// (seconds a replica source may lag). `need_backup=1` (a backup of the old data to HDFS) is
/// refused: this manager has no HDFS backup storage. The lowest `pv_limit` (MB/s) bounds the
/// copy.
pub async fn request(
    e: &ClusterManager,
    cluster: i64,
    p: &Paras<'_>,
) -> Result<RebuildRequest, Fail> {
    let shard = p.id("shard_id", codes::LOST_SHARD_ID, codes::GET_SHARD_FAILED)?;
    let shards = e
        .list_shards(cluster)
        .await
        .map_err(|x| Fail::new(codes::GET_SHARD_FAILED, x.to_string()))?;
    if !shards.iter().any(|s| s.id == shard) {
        return Err(Fail::new(
            codes::GET_SHARD_FAILED,
            format!("shard {shard} is not in cluster {cluster}"),
        ));
    }
    let items = match p.0.get("rb_nodes") {
        Some(serde_json::Value::Array(a)) if !a.is_empty() => a,
        _ => return Err(Fail::new(codes::RB_NO_NODES, "rb_nodes: a non-empty list")),
    };
    if items.len() > MAX_REBUILD_NODES {
        return Err(Fail::new(
            codes::PARAMETER_ERROR,
            format!("rb_nodes: at most {} nodes per job", MAX_REBUILD_NODES),
        ));
    }
    let nodes = e
        .list_shard_nodes(shard)
        .await
        .map_err(|x| Fail::new(codes::GET_SHARD_FAILED, x.to_string()))?;
    let mut node_ids = Vec::new();
    let mut rate: Option<u32> = None;
    for item in items {
        let Some(obj) = item.as_object() else {
            return Err(Fail::new(
                codes::RB_NO_HOSTADDR,
                format!("rb_nodes: {item} is not an object"),
            ));
        };
        let rb = Paras(obj);
        let host = rb.req("hostaddr", codes::RB_NO_HOSTADDR)?;
        let port = rb.id("port", codes::RB_NO_PORT, codes::RB_NO_PORT)?;
        if rb.text("need_backup").as_deref() == Some("1") {
            rb.req("hdfs_host", codes::RB_NEED_HDFS)?;
            return Err(Fail::new(
                codes::PARAMETER_ERROR,
                "need_backup=1 (a backup of the old data to HDFS) cannot be honoured: this \
                 cluster manager has no HDFS backup storage; send need_backup=0",
            ));
        }
        if let Some(mb) = rb.opt_id("pv_limit", codes::PARAMETER_ERROR)? {
            let mb = u32::try_from(mb)
                .ok()
                .filter(|m| *m > 0)
                .ok_or_else(|| Fail::new(codes::PARAMETER_ERROR, format!("pv_limit: {mb}")))?;
            rate = Some(rate.map_or(mb, |r| r.min(mb)));
        }
        let node = nodes
            .iter()
            .find(|n| n.hostaddr == host && i64::from(n.port) == port)
            .filter(|n| n.member_state == MemberState::Replica)
            .ok_or_else(|| {
                Fail::new(
                    codes::RB_NOT_IN_SHARD,
                    format!("{host}:{port} is not a replica of shard {shard}"),
                )
            })?;
        node_ids.push(node.id);
    }
    let max_source_lag_s = match p.opt_id("allow_replica_delay", codes::PARAMETER_ERROR)? {
        Some(s) => u32::try_from(s)
            .map_err(|_| Fail::new(codes::PARAMETER_ERROR, format!("allow_replica_delay: {s}")))?,
        None => DEFAULT_MAX_SOURCE_LAG_S,
    };
    Ok(RebuildRequest {
        shard_id: shard,
        node_ids,
        allow_primary: p.text("allow_pull_from_master").as_deref() == Some("1"),
        max_source_lag_s,
        rate_limit_mb_s: rate,
        ..RebuildRequest::node(shard, 0)
    })
}
