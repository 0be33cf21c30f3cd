//! Helpers the job kinds share, below them all: port reservations, the rows of storage nodes,
//! taking nodes out of service, the instances a rollback spares, semi-sync upkeep, the
//! cluster's stored passwords and the "another job changes this cluster" check.
//!
//! Invariant: nothing here knows a job kind; kinds import from here, never from each other.

use std::collections::{BTreeMap, HashMap, HashSet};

use kunlun_meta::api::ClusterDetail;
use kunlun_meta::model::{Cluster, MachineType, NewCluster};
use kunlun_meta::model::{
    HaMode, JobStatus, MemberState, NewCompNode, NewShard, NewShardNode, NodeMapMaster, NodeStatus,
    ShardNode,
};
use kunlun_meta::store::repo::dirs::{self, NodeKind};
use kunlun_meta::store::repo::{clusters, comps, machines, meta, nodes, secrets, shards};
use kunlun_meta::store::{Store, Tx};
use kunlun_meta::{Error as MetaError, Result as MetaResult};
use kunlun_provision::placement::{InstanceKind, PortSets};
use kunlun_provision::recipe::{validate_base_dir, InstanceSpec, Step};

use super::install::NOTHING_INSTALLED;
use super::plan::{ClusterPlan, InstancePlan, SystemPasswords};
use super::plan_scale::{host_port, passwords_of, secret_of};
use super::progress::{Progress, StepRecord, StepStatus};
use crate::accounts::{COMP_USER, MANAGER_USER};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;

/// Ports of `plan` grouped per machine.
pub fn ports_by_machine(plan: &ClusterPlan) -> BTreeMap<i64, Vec<u16>> {
    let mut m: BTreeMap<i64, Vec<u16>> = BTreeMap::new();
    for (id, port) in plan.ports() {
        m.entry(id).or_default().push(port);
    }
    m
}

/// Applies `f` to the port sets of every machine `plan` uses (compare-and-swap each).
pub(crate) async fn update_ports(
    tx: &mut Tx,
    plan: &ClusterPlan,
    f: impl Fn(PortSets, &[u16]) -> std::result::Result<PortSets, kunlun_provision::Error>,
) -> MetaResult<()> {
    for (id, ports) in ports_by_machine(plan) {
        let m = machines::get(tx, id).await?;
        let sets = f(PortSets::of(&m), &ports).map_err(|e| MetaError::Conflict(e.to_string()))?;
        machines::set_ports(tx, &m, &sets.used, &sets.installing).await?;
    }
    Ok(())
}

/// Labels (`storage 127.0.0.2:57001`) of instances a job never touched: their `install` step
/// failed before writing anything (`nothing installed`), or, when `trust_pending` (the steps
/// are this run's own, not read back after a crash, where a start may not have been flushed
/// yet), it never started.
pub(crate) fn untouched(steps: &[StepRecord], trust_pending: bool) -> HashSet<String> {
    steps
        .iter()
        .filter(|r| match r.status {
            StepStatus::Pending | StepStatus::Skipped => trust_pending,
            StepStatus::Failed => r
                .note
                .as_deref()
                .is_some_and(|n| n.starts_with(NOTHING_INSTALLED)),
            _ => false,
        })
        .filter_map(|r| r.name.strip_prefix("install ").map(str::to_string))
        .collect()
}

/// `plan` without the instances labelled in `spare` (see [`untouched`]).
pub(crate) fn sparing(plan: &ClusterPlan, spare: &HashSet<String>) -> ClusterPlan {
    let mut keep = plan.clone();
    let kept = |kind: &str, i: &InstancePlan| {
        !spare.contains(&format!("{kind} {}:{}", i.slot.hostaddr, i.slot.port))
    };
    for s in &mut keep.shards {
        s.nodes.retain(|n| kept("storage", n));
    }
    keep.comps.retain(|c| kept("compute", c));
    keep
}

/// Inserts the storage node row of `n` (shard `shard_id` of cluster `cluster_id`), its dir
/// and, for a replica, which primary it follows.
pub(crate) async fn insert_node(
    tx: &mut Tx,
    cluster_id: i64,
    shard_id: i64,
    plan: &ClusterPlan,
    n: &InstancePlan,
    primary: Option<(&str, u16)>,
) -> MetaResult<ShardNode> {
    let row = nodes::insert(
        tx,
        &NewShardNode {
            shard_id,
            db_cluster_id: cluster_id,
            hostaddr: n.slot.hostaddr.clone(),
            port: n.slot.port,
            user_name: MANAGER_USER.into(),
            passwd: plan.passwords.manager.clone(),
            master_priority: 0,
            member_state: if primary.is_some() {
                MemberState::Replica
            } else {
                MemberState::Source
            },
            status: NodeStatus::Active,
            innodb_buffer_pool_mb: i64::from(plan.innodb_size_mb),
        },
    )
    .await?;
    dirs::set(tx, NodeKind::Storage, row.id, &n.base_dir).await?;
    if let Some((host, port)) = primary {
        meta::set_node_master(
            tx,
            &NodeMapMaster {
                cluster_id,
                node_host: host_port(&n.slot.hostaddr, n.slot.port),
                master_host: host_port(host, port),
                master_uuid: None,
            },
        )
        .await?;
    }
    Ok(row)
}

/// Inserts every shard of `plan` with its nodes (the first the primary, the others following
/// it) into cluster `cluster_id`.
pub(crate) async fn insert_shards(
    tx: &mut Tx,
    cluster_id: i64,
    plan: &ClusterPlan,
) -> MetaResult<()> {
    for sp in &plan.shards {
        let shard = shards::insert(
            tx,
            &NewShard {
                name: sp.name.clone(),
                db_cluster_id: cluster_id,
                num_nodes: sp.nodes.len() as i64,
                sync_num: i64::from(sp.nodes.len() > 1),
            },
        )
        .await?;
        let p = &sp.nodes[0].slot;
        for (i, n) in sp.nodes.iter().enumerate() {
            let primary = (i > 0).then_some((p.hostaddr.as_str(), p.port));
            insert_node(tx, cluster_id, shard.id, plan, n, primary).await?;
        }
    }
    Ok(())
}

/// Compute node rows of the plan's compute nodes, with fresh ids; returns the ids.
pub(crate) async fn insert_comps(
    tx: &mut Tx,
    cluster_id: i64,
    plan: &ClusterPlan,
) -> MetaResult<Vec<i64>> {
    let ids = comps::reserve_ids(tx, plan.comps.len() as i64).await?;
    let mut out = Vec::with_capacity(plan.comps.len());
    for (id, c) in ids.zip(plan.comps.iter()) {
        comps::insert(
            tx,
            &NewCompNode {
                id,
                db_cluster_id: cluster_id,
                name: format!("comp{id}"),
                hostaddr: c.slot.hostaddr.clone(),
                port: c.slot.port,
                user_name: COMP_USER.into(),
                passwd: plan.passwords.comp.clone(),
                status: NodeStatus::Active,
                max_conns: i64::from(plan.max_connections),
            },
        )
        .await?;
        dirs::set(tx, NodeKind::Compute, id, &c.base_dir).await?;
        out.push(id);
    }
    Ok(out)
}

/// 409 when a cluster is named `name` already (a new cluster's name must be free).
pub(crate) async fn name_free(store: &Store, name: &str) -> Result<()> {
    if store.list_clusters().await?.iter().any(|c| c.name == name) {
        return Err(Error::Conflict(format!("cluster {name} already exists")));
    }
    Ok(())
}

/// The cluster row of a new cluster planned as `plan` (which creates its log tables, with the
/// creation paras in `db_clusters.memo` as the original keeps them) and its secret.
pub(crate) async fn insert_cluster(
    tx: &mut Tx,
    plan: &ClusterPlan,
    nick_name: Option<String>,
) -> MetaResult<Cluster> {
    let c = clusters::insert(
        tx,
        &NewCluster {
            name: plan.name.clone(),
            nick_name,
            owner: Some(crate::accounts::COMP_USER.into()),
            business: Some("kunlun".into()),
            ha_mode: plan.ha_mode,
            memo: Some(creation_memo(plan).to_string()),
        },
    )
    .await?;
    secrets::insert(tx, &secret_of(c.id, &plan.passwords)).await?;
    Ok(c)
}

/// `db_clusters.memo` as the original writes it: the creation paras, every value a string,
/// which the original's tools read back as a cluster's defaults. No password.
fn creation_memo(plan: &ClusterPlan) -> serde_json::Value {
    let nodes = plan.shards.first().map_or(0, |s| s.nodes.len());
    serde_json::json!({
        "ha_mode": plan.ha_mode.as_str(),
        "shards": plan.shards.len().to_string(),
        "nodes": nodes.to_string(),
        "comps": plan.comps.len().to_string(),
        "innodb_size": plan.innodb_size_mb.to_string(),
        "max_connections": plan.max_connections.to_string(),
        "computer_user": crate::accounts::COMP_USER,
        "dbcfg": "0",
    })
}

/// The shard, node, `node_map_master` and compute rows of the new cluster `cluster_id` (from
/// the memo of `kind`: `create_cluster`, `restore_cluster`) planned as `plan`.
pub(crate) async fn record_new_cluster(
    tx: &mut Tx,
    cluster_id: Option<i64>,
    plan: &ClusterPlan,
    kind: &str,
) -> MetaResult<()> {
    let id =
        cluster_id.ok_or_else(|| MetaError::Invalid(format!("{kind} memo has no cluster_id")))?;
    insert_shards(tx, id, plan).await?;
    insert_comps(tx, id, plan).await?;
    Ok(())
}

/// Every row of a new cluster rolled back, its secret, its log tables and the cluster row
/// (nothing when it was never reserved).
pub(crate) async fn unrecord_new_cluster(
    tx: &mut Tx,
    cluster_id: Option<i64>,
    plan: &ClusterPlan,
) -> MetaResult<()> {
    match cluster_id {
        Some(id) => remove_cluster_rows(tx, id, &plan.name).await,
        None => Ok(()),
    }
}

/// Removes every row of cluster `id` (shards, nodes, compute nodes, `node_map_master`), its
/// secret, its log tables (`name`) and the cluster row; idempotent.
pub(crate) async fn remove_cluster_rows(tx: &mut Tx, id: i64, name: &str) -> MetaResult<()> {
    for s in shards::list(tx, Some(id)).await? {
        for n in nodes::list(tx, Some(s.id)).await? {
            nodes::delete(tx, n.id).await?;
        }
        shards::delete(tx, s.id).await?;
    }
    for c in comps::list(tx, Some(id)).await? {
        comps::delete(tx, c.id).await?;
    }
    for m in meta::list_node_masters(tx, Some(id)).await? {
        meta::delete_node_master(tx, id, &m.node_host).await?;
    }
    secrets::delete(tx, id).await?;
    clusters::drop_log_tables(tx, name).await?;
    if clusters::get(tx, id).await.is_ok() {
        clusters::delete(tx, id).await?;
    }
    Ok(())
}

/// Deletes the rows of stored node `n` (its `node_map_master` row too), if still there.
pub(crate) async fn delete_node_rows(tx: &mut Tx, n: &ShardNode) -> MetaResult<()> {
    match nodes::delete(tx, n.id).await {
        Ok(()) | Err(MetaError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    meta::delete_node_master(tx, n.db_cluster_id, &host_port(&n.hostaddr, n.port)).await
}

/// Marks every node of `all` `Deleted` before its instance is uninstalled, so the HA monitor
/// drops it and failover/switchover never pick it (idempotent).
pub(crate) async fn retire_nodes(tx: &mut Tx, all: &[ShardNode]) -> MetaResult<()> {
    for n in all.iter().filter(|n| n.status != NodeStatus::Deleted) {
        match nodes::set_status(tx, n.id, NodeStatus::Deleted).await {
            Ok(()) | Err(MetaError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// 404 unless shard `shard_id` belongs to cluster `cluster_id`.
pub(crate) async fn shard_of(store: &Store, cluster_id: i64, shard_id: i64) -> Result<()> {
    let s = store.get_shard(shard_id).await?;
    if s.db_cluster_id != cluster_id {
        return Err(Error::NotFound {
            what: "shard of this cluster",
            id: shard_id.to_string(),
        });
    }
    Ok(())
}

/// The row of node `node_id` among `all` (none when already removed: a resumed job), refused
/// when it became the primary since the job was planned (a failover promoted it).
fn still_removable(all: &[ShardNode], node_id: i64) -> MetaResult<Option<ShardNode>> {
    match all.iter().find(|n| n.id == node_id) {
        Some(n) if n.member_state == MemberState::Source => Err(MetaError::Conflict(format!(
            "node {node_id} became primary; switch over first"
        ))),
        n => Ok(n.cloned()),
    }
}

/// Takes the nodes of shard `shard_id` out of service ([`retire_nodes`]) in `tx`: all of
/// them (`delete_shard`), or only node `only` (`delete_node`; refused by
/// [`still_removable`], nothing when it is gone already).
pub(crate) async fn retire_in_shard(
    tx: &mut Tx,
    shard_id: i64,
    only: Option<i64>,
) -> MetaResult<()> {
    let all = nodes::list(tx, Some(shard_id)).await?;
    match only {
        None => retire_nodes(tx, &all).await,
        Some(node_id) => retire_nodes(tx, still_removable(&all, node_id)?.as_slice()).await,
    }
}

/// Removes the rows of the nodes of shard `shard_id` in `tx`: all of them, or only node
/// `only` (nothing when it is gone already: a resumed job). Returns the shard's nodes as they
/// were, so the caller can size what is left.
pub(crate) async fn remove_rows_in_shard(
    tx: &mut Tx,
    shard_id: i64,
    only: Option<i64>,
) -> MetaResult<Vec<ShardNode>> {
    let all = nodes::list(tx, Some(shard_id)).await?;
    for n in all.iter().filter(|n| only.is_none_or(|id| n.id == id)) {
        delete_node_rows(tx, n).await?;
    }
    Ok(all)
}

/// The stored node `node_id` among `all` (a shard's nodes), refused (409) when it is the
/// primary: checked when `delete_node` is accepted and again when it plans.
pub(crate) fn removable(all: &[ShardNode], shard_id: i64, node_id: i64) -> Result<&ShardNode> {
    let n = all
        .iter()
        .find(|n| n.id == node_id)
        .ok_or_else(|| Error::NotFound {
            what: "node of this shard",
            id: node_id.to_string(),
        })?;
    if n.member_state == MemberState::Source {
        return Err(Error::Conflict(format!(
            "node {node_id} is the primary of shard {shard_id}; switch over first"
        )));
    }
    Ok(n)
}

/// Whether semi-sync on a shard's primary must change when its node count goes from `before`
/// to `after`: on (`Some(true)`) for its first replica, off for its last one gone (else every
/// commit would wait `rpl_semi_sync_master_timeout` for an acknowledgement nobody sends). Only
/// `rbr` shards use semi-sync.
pub(crate) fn semi_sync_change(ha_mode: HaMode, before: usize, after: usize) -> Option<bool> {
    if ha_mode != HaMode::Rbr {
        return None;
    }
    match (before > 1, after > 1) {
        (false, true) => Some(true),
        (true, false) => Some(false),
        _ => None,
    }
}

/// Applies [`semi_sync_change`] to the shard's stored primary, now holding its current nodes
/// (`before` earlier): at run time over SQL, and in the instance's `my.cnf` over SSH (the
/// recipe's [`Step::SemiSyncOn`]/[`Step::SemiSyncOff`], in the dir recorded at install), so a
/// restart keeps it. Best effort, each reported as a step: the topology change is already
/// recorded, so a failure here does not fail the job.
pub(crate) async fn match_semi_sync(
    store: &Store,
    fleet: &Provisioner,
    shard_id: i64,
    ha_mode: HaMode,
    before: usize,
    progress: &Progress,
) {
    let current = match store.list_shard_nodes(Some(shard_id)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(shard_id, error = %e, "cannot read the shard to adjust semi-sync");
            return;
        }
    };
    let Some(on) = semi_sync_change(ha_mode, before, current.len()) else {
        return;
    };
    let word = if on { "on" } else { "off" };
    let step = progress.step(format!("semi-sync {word} on primary"));
    let Some(primary) = current
        .iter()
        .find(|n| n.member_state == MemberState::Source)
    else {
        step.fail(format!("shard {shard_id} has no primary"));
        return;
    };
    match super::seed::set_semi_sync(&crate::storage::NodeAddr::from(primary), on).await {
        Ok(()) => step.done_with(format!("{}:{}", primary.hostaddr, primary.port)),
        Err(e) => step.fail(e),
    }
    let step = progress.step(format!("semi-sync {word} in the primary's my.cnf"));
    match persist_semi_sync(store, fleet, primary, on).await {
        Ok(dir) => step.done_with(dir),
        Err(e) => step.fail(e),
    }
}

/// Writes semi-sync `on`/off into `primary`'s configuration file over SSH; returns the
/// instance dir. Its dir is the one recorded at install, else (installed before dirs were
/// recorded) the conventional one under the machine's first data dir.
async fn persist_semi_sync(
    store: &Store,
    fleet: &Provisioner,
    primary: &ShardNode,
    on: bool,
) -> Result<String> {
    let id = primary.id;
    let (machines, recorded) = store
        .read(async |tx| {
            Ok((
                machines::list(tx).await?,
                dirs::get(tx, NodeKind::Storage, id).await?,
            ))
        })
        .await?;
    let machine = machines
        .iter()
        .find(|m| m.hostaddr == primary.hostaddr && m.machine_type == MachineType::Storage)
        .ok_or_else(|| {
            Error::Conflict(format!(
                "no storage machine is registered at {}",
                primary.hostaddr
            ))
        })?;
    let base_dir = match recorded {
        Some(d) => d,
        None => machine
            .data_dirs
            .first()
            .map(|d| InstanceSpec::base_dir_for(d, InstanceKind::Storage, primary.port))
            .ok_or_else(|| Error::Conflict(format!("machine {} has no data dir", machine.id)))?,
    };
    validate_base_dir(&base_dir).map_err(|e| Error::Conflict(e.to_string()))?;
    let spec = InstanceSpec {
        bind_address: primary.hostaddr.clone(),
        port: primary.port,
        base_dir: base_dir.clone(),
        server_id: 0,
        buffer_mb: 0,
        max_connections: 0,
        semi_sync: on,
        users: Vec::new(),
    };
    let step = if on {
        Step::SemiSyncOn
    } else {
        Step::SemiSyncOff
    };
    fleet
        .storage
        .run_steps(&fleet.ssh, &fleet.target(machine), &spec, &[step], None)
        .await
        .map_err(|e| Error::Unavailable(format!("{}: {e}", step.as_str())))?;
    Ok(base_dir)
}

/// The cluster's stored system passwords (409 for a cluster created before they were kept).
pub(crate) async fn passwords(store: &Store, cluster_id: i64) -> Result<SystemPasswords> {
    let s = store
        .read(async |tx| secrets::get(tx, cluster_id).await)
        .await
        .map_err(|e| match e {
            MetaError::NotFound { .. } => Error::Conflict(format!(
                "cluster {cluster_id} has no stored system passwords (created before they were \
                 kept); instances cannot be added to it"
            )),
            other => other.into(),
        })?;
    Ok(passwords_of(&s))
}

/// True if a job that is not finished names the cluster (by id or name).
pub(crate) async fn busy(store: &Store, id: i64, name: &str) -> Result<bool> {
    for status in [JobStatus::NotStarted, JobStatus::Ongoing] {
        let q = kunlun_meta::api::JobQuery {
            status: Some(status),
            job_type: None,
            limit: Some(1000),
            after: None,
        };
        if store
            .list_jobs(&q)
            .await?
            .iter()
            .any(|j| job_changes(j, id, name))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether job `j`'s request names cluster `id` (or, a creation, its `name`): while `j` is
/// unfinished it changes that cluster (the instance keeper leaves such clusters alone too).
pub(crate) fn job_changes(j: &kunlun_meta::model::Job, id: i64, name: &str) -> bool {
    let Some(info) = j.job_info.as_ref() else {
        return false;
    };
    info.get("cluster_id").and_then(|v| v.as_i64()) == Some(id)
        || info.get("name").and_then(|v| v.as_str()) == Some(name)
}

/// Replaces the computed base dirs in `plan` (of instances of `detail`'s cluster) by those
/// recorded at install, matched by host and port; instances without a record (installed
/// before dirs were recorded) keep the computed dir.
pub async fn apply_recorded_dirs(
    store: &Store,
    plan: &mut ClusterPlan,
    detail: &ClusterDetail,
) -> Result<()> {
    let node_ids: Vec<i64> = detail
        .shards
        .iter()
        .flat_map(|s| s.nodes.iter().map(|n| n.id))
        .collect();
    let comp_ids: Vec<i64> = detail.comp_nodes.iter().map(|c| c.id).collect();
    let (node_dirs, comp_dirs) = store
        .read(async |tx| {
            Ok((
                dirs::get_many(tx, NodeKind::Storage, &node_ids).await?,
                dirs::get_many(tx, NodeKind::Compute, &comp_ids).await?,
            ))
        })
        .await?;
    let mut storage: HashMap<(&str, u16), &String> = HashMap::new();
    for n in detail.shards.iter().flat_map(|s| s.nodes.iter()) {
        if let Some(d) = node_dirs.get(&n.id) {
            storage.insert((n.hostaddr.as_str(), n.port), d);
        }
    }
    let mut compute: HashMap<(&str, u16), &String> = HashMap::new();
    for c in &detail.comp_nodes {
        if let Some(d) = comp_dirs.get(&c.id) {
            compute.insert((c.hostaddr.as_str(), c.port), d);
        }
    }
    for n in plan.shards.iter_mut().flat_map(|s| s.nodes.iter_mut()) {
        if let Some(d) = storage.get(&(n.slot.hostaddr.as_str(), n.slot.port)) {
            n.base_dir = d.to_string();
        }
    }
    for c in plan.comps.iter_mut() {
        if let Some(d) = compute.get(&(c.slot.hostaddr.as_str(), c.slot.port)) {
            c.base_dir = d.to_string();
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::jobs::progress::StepStatus as S;

    fn rec(name: &str, status: S, note: Option<&str>) -> StepRecord {
        StepRecord {
            name: name.into(),
            status,
            started_at: None,
            ms: None,
            note: note.map(Into::into),
        }
    }

    #[test]
    fn only_instances_never_touched_are_spared() {
        let steps = vec![
            rec("plan", S::Done, None),
            rec(
                "install storage h:1",
                S::Failed,
                Some("nothing installed: h: unreachable: refused"),
            ),
            rec("install storage h:5", S::Failed, Some("initialise: exit 1")),
            rec("install compute h:9", S::Pending, None),
            rec(
                "install compute h:12",
                S::Skipped,
                Some("an earlier step failed"),
            ),
            rec("start storage h:13", S::Pending, None),
        ];
        let live = untouched(&steps, true);
        assert_eq!(
            live,
            ["storage h:1", "compute h:9", "compute h:12"]
                .into_iter()
                .map(String::from)
                .collect()
        );
        let after_crash = untouched(&steps, false);
        assert_eq!(
            after_crash,
            ["storage h:1".to_string()].into_iter().collect()
        );
    }

    #[test]
    fn a_plan_spared_of_untouched_instances_keeps_the_others() {
        use super::super::plan::ShardPlan;
        use kunlun_provision::placement::Slot;
        let inst = |port| InstancePlan {
            slot: Slot {
                machine_id: 1,
                hostaddr: "h".into(),
                port,
            },
            base_dir: format!("/d/{port}"),
            server_id: 0,
        };
        let plan = ClusterPlan {
            name: "c".into(),
            ha_mode: HaMode::Rbr,
            innodb_size_mb: 0,
            max_connections: 0,
            shards: vec![ShardPlan {
                name: "s".into(),
                nodes: vec![inst(1), inst(5)],
            }],
            comps: vec![inst(9)],
            passwords: SystemPasswords::unknown(),
        };
        let spare: HashSet<String> = ["storage h:1", "compute h:9"]
            .into_iter()
            .map(String::from)
            .collect();
        let kept = sparing(&plan, &spare);
        assert_eq!(kept.shards[0].nodes.len(), 1);
        assert_eq!(kept.shards[0].nodes[0].slot.port, 5);
        assert!(kept.comps.is_empty());
        // The ports to release stay those of the whole plan (the caller releases `plan`'s).
        assert_eq!(plan.ports().len(), 3);
    }

    use kunlun_meta::model::{OnOff, SyncState};

    /// A stored node row of shard 1 of cluster 7: the primary when `source`.
    pub(crate) fn node(id: i64, source: bool) -> ShardNode {
        ShardNode {
            id,
            shard_id: 1,
            db_cluster_id: 7,
            hostaddr: "127.0.0.1".into(),
            port: 3000 + id as u16,
            user_name: MANAGER_USER.into(),
            passwd: String::new(),
            master_priority: 0,
            ro_weight: 0,
            status: NodeStatus::Active,
            member_state: if source {
                MemberState::Source
            } else {
                MemberState::Replica
            },
            sync_state: SyncState::Fsync,
            replica_delay: 0,
            backup_node: OnOff::Off,
            innodb_buffer_pool_mb: 64,
            when_created: None,
        }
    }

    #[test]
    fn the_primary_is_never_removable() {
        let all = vec![node(1, false), node(2, true)];
        let e = removable(&all, 1, 2).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "node 2 is the primary of shard 1; switch over first"
        );
        assert_eq!(removable(&all, 1, 1).unwrap().id, 1);
        assert!(matches!(removable(&all, 1, 9), Err(Error::NotFound { .. })));
    }

    #[test]
    fn semi_sync_follows_whether_an_rbr_shard_has_replicas() {
        // First replica added to a single-node shard: on.
        assert_eq!(semi_sync_change(HaMode::Rbr, 1, 2), Some(true));
        // Last replica removed: off.
        assert_eq!(semi_sync_change(HaMode::Rbr, 2, 1), Some(false));
        // Replicas before and after: unchanged.
        assert_eq!(semi_sync_change(HaMode::Rbr, 2, 3), None);
        assert_eq!(semi_sync_change(HaMode::Rbr, 3, 2), None);
        // Other modes never use semi-sync.
        assert_eq!(semi_sync_change(HaMode::NoRep, 2, 1), None);
    }

    #[test]
    fn a_replica_that_became_primary_is_no_longer_removable() {
        // Planned as a replica; a failover since promoted it.
        let all = vec![node(1, false), node(2, true)];
        let e = still_removable(&all, 2).unwrap_err();
        assert!(matches!(e, MetaError::Conflict(_)), "{e}");
        assert_eq!(e.to_string(), "node 2 became primary; switch over first");
        assert_eq!(still_removable(&all, 1).unwrap().map(|n| n.id), Some(1));
        // Already removed (a resumed job): nothing to retire, not an error.
        assert!(still_removable(&all, 9).unwrap().is_none());
    }
}
