//! `rebuild_node`: replicas reseeded in place, one after the other. For each: check (a source:
//! the healthiest replica, else the primary when allowed; its machine and ours; room for a
//! copy; the snapshot programs), take it out of service (`inactive`), stop it, set its data
//! aside on its own machine, copy a consistent snapshot of the source into it
//! ([`RebuildMethod`]), start it read-only, follow the primary by GTID, wait until it caught up
//! (bounded), make it `active` again (so HA takes it back; HA lists errant nodes until then),
//! and remove the old data.
//!
//! It does not fit the add/remove skeleton of [`crate::jobs::driver`] (no plan, no ports, no
//! rows added or removed), so it has its own run function, but keeps the driver's memo
//! ([`JobMemo`]: stage, error, steps) with one entry per node whose `phase` is written before
//! each step that changes the node.
//!
//! Invariants:
//! - the shard's recorded primary is never rebuilt: refused at accept and checked again before
//!   the node is touched;
//! - nothing changes before every check passed (a missing program, no room, no source fail
//!   the job with the node as it was);
//! - a node is never left without data: until the new data is complete (`phase` < `copied`),
//!   any failure, and a manager restart, puts the old data back and says so (stage
//!   `rolled_back`); from `copied` on a restarted job finishes forward, and a failure leaves the
//!   new data in place with the node out of service and the old data still aside;
//! - the node is `active` only once it replicates from the shard's current primary and holds
//!   everything that primary had logged when the wait began.
//!
//! Here: the request, its checks and acceptance, the memo and the pure decisions
//! ([`recovery`], [`refusal`]; the source: [`crate::jobs::reseed::pick_source`]); the run is in `run.rs`.

use std::collections::HashSet;

use kunlun_meta::api::RebuildMethod;
use kunlun_meta::model::{Job, MemberState, NewJob, NodeStatus, ShardNode};
use kunlun_meta::store::Store;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::jobs::common::{busy, shard_of};
use crate::jobs::driver::{JobInfo, JobMemo};

pub const REBUILD_NODE: &str = "rebuild_node";
/// Most nodes one job rebuilds (one after the other).
pub const MAX_REBUILD_NODES: usize = 8;
/// A replica further behind than this is not a source unless the request allows more.
pub const DEFAULT_MAX_SOURCE_LAG_S: u32 = 30;
const MAX_SOURCE_LAG_LIMIT_S: u32 = 86_400;
const MAX_RATE_MB_S: u32 = 100_000;
const RESTARTED: &str = "the manager restarted mid-job";

fn yes() -> bool {
    true
}

fn default_lag() -> u32 {
    DEFAULT_MAX_SOURCE_LAG_S
}

/// The request of a `rebuild_node` job (its `job_info`, besides `cluster_id` and `name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildRequest {
    pub shard_id: i64,
    /// The replicas to rebuild, in order.
    pub node_ids: Vec<i64>,
    /// The node to copy from, when the caller chose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<i64>,
    /// Whether the primary may be the source when no replica is healthy enough.
    #[serde(default = "yes")]
    pub allow_primary: bool,
    /// Most seconds a replica source may lag behind the primary.
    #[serde(default = "default_lag")]
    pub max_source_lag_s: u32,
    /// How to copy; `None`: [`RebuildMethod::Backup`], or the dump when a machine lacks the
    /// backup programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<RebuildMethod>,
    /// Most MB per second the copy may move (a physical copy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_mb_s: Option<u32>,
    /// Started by the automatic rebuild, not by a request.
    #[serde(default)]
    pub auto: bool,
}

impl RebuildRequest {
    /// One node rebuilt with every default.
    pub fn node(shard_id: i64, node_id: i64) -> RebuildRequest {
        RebuildRequest {
            shard_id,
            node_ids: vec![node_id],
            source_id: None,
            allow_primary: true,
            max_source_lag_s: DEFAULT_MAX_SOURCE_LAG_S,
            method: None,
            rate_limit_mb_s: None,
            auto: false,
        }
    }

    /// The request on its own: 1 to [`MAX_REBUILD_NODES`] distinct nodes, the source not one
    /// of them, bounds on the lag and the rate.
    pub fn validate(&self) -> Result<()> {
        if self.node_ids.is_empty() || self.node_ids.len() > MAX_REBUILD_NODES {
            return Err(Error::Invalid(format!(
                "nodes: 1 to {MAX_REBUILD_NODES} nodes, not {}",
                self.node_ids.len()
            )));
        }
        let distinct: HashSet<i64> = self.node_ids.iter().copied().collect();
        if distinct.len() != self.node_ids.len() {
            return Err(Error::Invalid("nodes: a node is named twice".into()));
        }
        if self.source_id.is_some_and(|s| distinct.contains(&s)) {
            return Err(Error::Invalid(
                "source: a node cannot be rebuilt from itself".into(),
            ));
        }
        if self.max_source_lag_s > MAX_SOURCE_LAG_LIMIT_S {
            return Err(Error::Invalid(format!(
                "allowed replica delay: at most {MAX_SOURCE_LAG_LIMIT_S} s, not {}",
                self.max_source_lag_s
            )));
        }
        if self
            .rate_limit_mb_s
            .is_some_and(|r| r == 0 || r > MAX_RATE_MB_S)
        {
            return Err(Error::Invalid(format!(
                "rate limit: 1 to {MAX_RATE_MB_S} MB/s"
            )));
        }
        Ok(())
    }
}

/// Where the rebuild of one node is (memo `nodes[].phase`), in order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing done to the node.
    #[default]
    Pending,
    /// Out of service (`inactive`), being stopped; its data untouched.
    Stopping,
    /// Its data set aside (or being set aside); the copy incomplete.
    Aside,
    /// The new data is complete (`gtid` says where it is).
    Copied,
    /// It was pointed at the primary.
    Following,
    /// Active again; the old data may still be aside.
    Active,
    /// Rebuilt.
    Done,
    /// Failed before its new data was complete; the old data was put back.
    PutBack,
    /// Failed (see `outcome`).
    Failed,
    /// Not started (an earlier node failed, or the manager restarted).
    Skipped,
}

/// What a run that finds a node at `phase` does about it first (a resumed job, or a step that
/// just failed at `phase`): the one table the invariants rest on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing was changed, or the node's run ended.
    Nothing,
    /// Out of service but its data untouched: start it again and put its status back.
    Restart,
    /// Its data is aside and the copy incomplete: put the old data back.
    PutBack,
    /// The new data is complete: finish forward (start, follow, catch up, activate, clean).
    Forward,
    /// Active again: only the old data is left to remove.
    CleanUp,
}

pub fn recovery(phase: Phase) -> Recovery {
    match phase {
        Phase::Pending | Phase::Done | Phase::PutBack | Phase::Failed | Phase::Skipped => {
            Recovery::Nothing
        }
        Phase::Stopping => Recovery::Restart,
        Phase::Aside => Recovery::PutBack,
        Phase::Copied | Phase::Following => Recovery::Forward,
        Phase::Active => Recovery::CleanUp,
    }
}

/// One node of the job, as the memo keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRebuild {
    pub node_id: i64,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub phase: Phase,
    /// Its status when the job took it out of service (put back if its old data is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_before: Option<NodeStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<String>,
    /// `host:port` of the node copied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<RebuildMethod>,
    /// The source's data size, KB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_kb: Option<u64>,
    /// Where the new data is (set at `copied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// Bytes a physical copy streamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

impl NodeRebuild {
    fn label(&self) -> String {
        if self.host.is_empty() {
            format!("storage node {}", self.node_id)
        } else {
            format!("storage {}:{}", self.host, self.port)
        }
    }
}

/// The memo fields of `rebuild_node` besides the common ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeRebuild>,
}

/// The memo of a `rebuild_node` job.
pub type RebuildMemo = JobMemo<RebuildExtra>;

/// Why `n` cannot be rebuilt, if it cannot (pure).
pub fn refusal(n: &ShardNode) -> Option<String> {
    let at = format!("{}:{} (node {})", n.hostaddr, n.port, n.id);
    if n.member_state == MemberState::Source {
        return Some(format!(
            "{at} is its shard's primary: switch over first, then rebuild it as a replica"
        ));
    }
    match n.status {
        NodeStatus::Deleted => Some(format!("{at} is being deleted")),
        NodeStatus::Creating => Some(format!("{at} is still being installed")),
        _ => None,
    }
}

/// Checks `info` against the metadata (nothing written): the shard belongs to the cluster
/// (404), every node is one of its replicas (404 unknown, 409 the primary or a node being
/// installed or deleted), the source one of its live nodes (400).
async fn check(store: &Store, info: &JobInfo<RebuildRequest>) -> Result<()> {
    let req = &info.request;
    shard_of(store, info.cluster()?, req.shard_id).await?;
    let all = store.list_shard_nodes(Some(req.shard_id)).await?;
    for id in &req.node_ids {
        let n = all
            .iter()
            .find(|n| n.id == *id)
            .ok_or_else(|| Error::NotFound {
                what: "storage node of this shard",
                id: id.to_string(),
            })?;
        if let Some(why) = refusal(n) {
            return Err(Error::Conflict(why));
        }
    }
    if let Some(s) = req.source_id {
        let ok = all
            .iter()
            .any(|n| n.id == s && n.status == NodeStatus::Active);
        if !ok {
            return Err(Error::Invalid(format!(
                "source: node {s} is not an active node of shard {}",
                req.shard_id
            )));
        }
    }
    Ok(())
}

/// Accepts a `rebuild_node` job (the `jobs::accept` pattern: validated, checked, refused with
/// 409 while another job changes the cluster, then one `not_started` row).
pub async fn accept(store: &Store, mut info: JobInfo<RebuildRequest>) -> Result<Job> {
    info.request.validate()?;
    let id = info.cluster()?;
    info.name = store.get_cluster(id).await?.name;
    check(store, &info).await?;
    if busy(store, id, &info.name).await? {
        return Err(Error::Conflict(format!(
            "cluster {} has a job in progress",
            info.name
        )));
    }
    Ok(store
        .create_job(&NewJob {
            job_type: REBUILD_NODE.into(),
            job_info: info.to_value()?,
            user_name: None,
        })
        .await?)
}

mod run;

pub use run::run;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::common::tests::node;

    #[test]
    fn a_resumed_node_gets_its_old_data_back_until_the_new_data_is_complete() {
        use Phase::*;
        for (p, want) in [
            (Pending, Recovery::Nothing),
            (Stopping, Recovery::Restart),
            (Aside, Recovery::PutBack),
            (Copied, Recovery::Forward),
            (Following, Recovery::Forward),
            (Active, Recovery::CleanUp),
            (Done, Recovery::Nothing),
            (PutBack, Recovery::Nothing),
            (Failed, Recovery::Nothing),
            (Skipped, Recovery::Nothing),
        ] {
            assert_eq!(recovery(p), want, "{p:?}");
        }
        // The order the invariants rest on: everything before `copied` is undone.
        assert!(Stopping < Aside && Aside < Copied && Copied < Following && Following < Active);
    }

    #[test]
    fn the_primary_and_nodes_being_installed_or_deleted_are_refused() {
        assert!(refusal(&node(1, true))
            .unwrap()
            .contains("its shard's primary"));
        assert_eq!(refusal(&node(2, false)), None);
        let mut n = node(2, false);
        n.status = NodeStatus::Deleted;
        assert!(refusal(&n).is_some());
        n.status = NodeStatus::Inactive;
        assert_eq!(
            refusal(&n),
            None,
            "an errant node kept out is what is rebuilt"
        );
        n.status = NodeStatus::ManualStop;
        assert_eq!(refusal(&n), None);
    }

    #[test]
    fn requests_are_bounded_and_never_name_a_node_twice_or_as_its_own_source() {
        let ok = RebuildRequest::node(1, 2);
        assert!(ok.validate().is_ok());
        let mut r = ok.clone();
        r.node_ids = vec![];
        assert!(r.validate().is_err());
        r.node_ids = vec![2, 3, 2];
        assert!(r.validate().is_err());
        r.node_ids = (0..9).collect();
        assert!(r.validate().is_err());
        let mut r = ok.clone();
        r.source_id = Some(2);
        assert!(r.validate().is_err());
        let mut r = ok.clone();
        r.max_source_lag_s = MAX_SOURCE_LAG_LIMIT_S + 1;
        assert!(r.validate().is_err());
        let mut r = ok.clone();
        r.rate_limit_mb_s = Some(0);
        assert!(r.validate().is_err());
        r.rate_limit_mb_s = Some(10);
        assert!(r.validate().is_ok());
    }

    #[test]
    fn the_stored_request_keeps_its_defaults_and_spellings() {
        use serde_json::json;
        let info = JobInfo::<RebuildRequest>::from_value(json!({
            "cluster_id": 3, "name": "c1", "shard_id": 4, "node_ids": [7]
        }))
        .unwrap();
        assert_eq!(info.request, RebuildRequest::node(4, 7));
        let v = JobInfo {
            cluster_id: Some(3),
            name: "c1".into(),
            request: RebuildRequest {
                method: Some(RebuildMethod::Dump),
                ..RebuildRequest::node(4, 7)
            },
        }
        .to_value()
        .unwrap();
        assert_eq!(v["method"], "dump");
        assert_eq!(v["node_ids"], json!([7]));
        let memo: RebuildMemo = serde_json::from_value(json!({
            "stage": "", "cluster_id": 3, "shard_id": 4,
            "nodes": [{"node_id": 7, "host": "h", "port": 1, "phase": "aside",
                       "status_before": "inactive"}]
        }))
        .unwrap();
        assert_eq!(memo.nodes[0].phase, Phase::Aside);
        assert_eq!(memo.nodes[0].status_before, Some(NodeStatus::Inactive));
    }
}
