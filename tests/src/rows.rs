//! Metadata rows a test registers by hand (servers it started itself, no job): one cluster
//! with its shards and nodes, in the caller's transaction.

use kunlun_meta::model::{
    Cluster, HaMode, MemberState, NewCluster, NewShard, NewShardNode, NodeStatus,
};
use kunlun_meta::store::{repo, Tx};
use kunlun_meta::Result as MetaResult;

/// The login the nodes' rows hold (`user`, `password`).
pub type Login<'a> = (&'a str, &'a str);

/// Inserts `rbr` cluster `name` with one shard per entry of `shards` (named `name_of(i)`),
/// each holding its `(host, port)` nodes, the first the primary, logged in as `login`.
/// Returns the cluster and, per shard, its id and its node ids in the given order.
pub async fn insert_cluster(
    tx: &mut Tx,
    name: &str,
    shards: &[Vec<(String, u16)>],
    shard_name: impl Fn(usize) -> String,
    login: Login<'_>,
) -> MetaResult<(Cluster, Vec<(i64, Vec<i64>)>)> {
    let cluster = repo::clusters::insert(
        tx,
        &NewCluster {
            name: name.into(),
            nick_name: None,
            owner: None,
            business: None,
            ha_mode: HaMode::Rbr,
            memo: None,
        },
    )
    .await?;
    let mut out = Vec::new();
    for (i, nodes) in shards.iter().enumerate() {
        let shard = repo::shards::insert(
            tx,
            &NewShard {
                name: shard_name(i),
                db_cluster_id: cluster.id,
                num_nodes: nodes.len() as i64,
                sync_num: 1,
            },
        )
        .await?;
        let mut ids = Vec::new();
        for (j, (host, port)) in nodes.iter().enumerate() {
            let n = repo::nodes::insert(
                tx,
                &NewShardNode {
                    shard_id: shard.id,
                    db_cluster_id: cluster.id,
                    hostaddr: host.clone(),
                    port: *port,
                    user_name: login.0.into(),
                    passwd: login.1.into(),
                    master_priority: 0,
                    member_state: if j == 0 {
                        MemberState::Source
                    } else {
                        MemberState::Replica
                    },
                    status: NodeStatus::Active,
                    innodb_buffer_pool_mb: 64,
                },
            )
            .await?;
            ids.push(n.id);
        }
        out.push((shard.id, ids));
    }
    Ok((cluster, out))
}
