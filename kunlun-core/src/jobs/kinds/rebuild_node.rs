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

use std::collections::HashSet;

use kunlun_meta::api::RebuildMethod;
use kunlun_meta::model::{
    Job, JobStatus, MemberState, NewJob, NodeMapMaster, NodeStatus, ShardNode,
};
use kunlun_meta::store::repo::{meta, nodes};
use kunlun_meta::store::Store;
use kunlun_meta::Error as MetaError;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::jobs::common::{busy, passwords, shard_of};
use crate::jobs::driver::{JobCtx, JobInfo, JobMemo, Stage};
use crate::jobs::plan::SystemPasswords;
use crate::jobs::plan_scale::host_port;
use crate::jobs::progress::Progress;
use crate::jobs::reseed::{self, Instance};
use crate::jobs::seed;
use crate::storage::probe::{probe_node, NodeProbe};
use crate::storage::{NodeAddr, StorageOptions};

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

/// A replica that could be the source: its row, how far behind it is, whether it replicates
/// from the primary with both threads running.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: ShardNode,
    pub healthy: bool,
    pub lag_s: Option<i64>,
}

impl Candidate {
    fn of(node: &ShardNode, probe: &NodeProbe, primary: &ShardNode) -> Candidate {
        let ch = probe.channel_from(&primary.hostaddr, primary.port);
        let healthy = probe.reachable && ch.is_some_and(|c| c.io_connected() && c.sql_running);
        Candidate {
            node: node.clone(),
            healthy,
            lag_s: ch.and_then(|c| c.seconds_behind),
        }
    }
}

/// The source among `candidates` (pure): the healthy replica least behind within `max_lag_s`,
/// else the primary when allowed; `None` when neither.
pub fn pick_source(
    candidates: &[Candidate],
    primary: &ShardNode,
    max_lag_s: u32,
    allow_primary: bool,
) -> Option<ShardNode> {
    candidates
        .iter()
        .filter(|c| {
            c.healthy
                && c.node.id != primary.id
                && c.lag_s.is_some_and(|l| l <= i64::from(max_lag_s))
        })
        .min_by_key(|c| (c.lag_s, c.node.id))
        .map(|c| c.node.clone())
        .or_else(|| allow_primary.then(|| primary.clone()))
}

/// What the checks of one node found.
struct Checked {
    target: Instance,
    source: Instance,
    primary: ShardNode,
    method: RebuildMethod,
    data_kb: u64,
    note: String,
}

/// Runs one claimed `rebuild_node` job to its end (the runner's registry calls this).
pub async fn run(store: &Store, fleet: &Provisioner, job: &Job) -> Result<()> {
    let info = JobInfo::<RebuildRequest>::of(job)?;
    let mut memo: RebuildMemo = match &job.memo {
        None | Some(serde_json::Value::Null) => RebuildMemo::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            Error::Invalid(format!(
                "job {}: its stored memo is unreadable ({e}); nothing was done to its nodes \
                 (they are as the memo shows)",
                job.id
            ))
        })?,
    };
    memo.steps.clear();
    let passwords = passwords(store, info.cluster()?).await?;
    let cx = JobCtx {
        store: store.clone(),
        fleet: fleet.clone(),
        job_id: job.id,
        progress: Progress::for_job(store, job.id, job.memo.as_ref()),
        resumed: job.memo.is_some(),
    };
    let r = Rebuild {
        cx: &cx,
        info: &info,
        passwords,
    }
    .go(memo)
    .await;
    cx.progress.close().await;
    r
}

struct Rebuild<'a> {
    cx: &'a JobCtx,
    info: &'a JobInfo<RebuildRequest>,
    passwords: SystemPasswords,
}

impl Rebuild<'_> {
    fn req(&self) -> &RebuildRequest {
        &self.info.request
    }

    fn tag(&self) -> String {
        self.cx.job_id.to_string()
    }

    /// Stores `memo` (the job still `ongoing`), with `status` of node `node_id` changed from
    /// `from` to `to` in the same transaction when given (`Conflict` if it was no longer
    /// `from`).
    async fn save(
        &self,
        memo: &RebuildMemo,
        status: Option<(i64, NodeStatus, NodeStatus)>,
    ) -> Result<()> {
        self.cx
            .commit(async |tx| {
                if let Some((id, from, to)) = status {
                    if from != to && !nodes::set_status_if(tx, id, from, to).await? {
                        let now = nodes::get(tx, id).await?.status;
                        if now != to {
                            return Err(MetaError::Conflict(format!(
                                "storage node {id} is {now}, not {from}: something else changed it"
                            )));
                        }
                    }
                }
                Ok(memo.clone())
            })
            .await?;
        Ok(())
    }

    async fn go(&self, mut memo: RebuildMemo) -> Result<()> {
        if !memo.nodes.is_empty() {
            return self.resume(memo).await;
        }
        memo = RebuildMemo {
            cluster_id: self.info.cluster_id,
            extra: RebuildExtra {
                shard_id: Some(self.req().shard_id),
                nodes: self
                    .req()
                    .node_ids
                    .iter()
                    .map(|&node_id| NodeRebuild {
                        node_id,
                        ..NodeRebuild::default()
                    })
                    .collect(),
            },
            ..RebuildMemo::default()
        };
        // Addresses first, so every step is named after its instance.
        if let Ok(all) = self
            .cx
            .store
            .list_shard_nodes(Some(self.req().shard_id))
            .await
        {
            for n in memo.nodes.iter_mut() {
                if let Some(row) = all.iter().find(|r| r.id == n.node_id) {
                    (n.host, n.port) = (row.hostaddr.clone(), row.port);
                }
            }
        }
        for n in &memo.nodes {
            let l = n.label();
            // The rest of a node's steps are known once its check chose the method.
            self.cx.progress.plan([format!("check {l}")]);
        }
        self.save(&memo, None).await?;
        for i in 0..memo.nodes.len() {
            if let Err(e) = self.one(&mut memo, i).await {
                return self.fail(memo, i, &e).await;
            }
        }
        memo.stage = Stage::Done;
        self.cx.end(JobStatus::Done, &memo).await
    }

    /// Ends the job failed at node `i` with `e`: the nodes after it are not started.
    async fn fail(&self, mut memo: RebuildMemo, i: usize, e: &Error) -> Result<()> {
        for n in memo.nodes.iter_mut().skip(i + 1) {
            if n.phase == Phase::Pending {
                n.phase = Phase::Skipped;
                n.outcome = Some("not started: an earlier node failed".into());
            }
        }
        self.cx.progress.skip_pending("an earlier step failed");
        memo.stage = match memo.nodes.get(i).map(|n| n.phase) {
            Some(Phase::PutBack) => Stage::RolledBack,
            Some(Phase::Aside) => Stage::RollbackFailed,
            _ => Stage::Failed,
        };
        let why = match memo.nodes.get(i).and_then(|n| n.outcome.clone()) {
            Some(o) => Error::Unavailable(o),
            None => Error::Unavailable(e.to_string()),
        };
        self.cx.fail(memo, &why).await
    }

    /// A job found `ongoing` at start: the node it was on is finished forward or given its
    /// old data back (see [`recovery`]); nodes not started are not started now.
    async fn resume(&self, mut memo: RebuildMemo) -> Result<()> {
        let mut failed_at = None;
        for i in 0..memo.nodes.len() {
            let phase = memo.nodes[i].phase;
            let r = match recovery(phase) {
                Recovery::Nothing => {
                    if phase == Phase::Pending {
                        memo.nodes[i].phase = Phase::Skipped;
                        memo.nodes[i].outcome = Some(format!("not started: {RESTARTED}"));
                        failed_at.get_or_insert(i);
                    }
                    continue;
                }
                Recovery::Restart | Recovery::PutBack => {
                    let cause = Error::Unavailable(RESTARTED.into());
                    self.undo(&mut memo, i, &cause).await;
                    Err(cause)
                }
                Recovery::Forward | Recovery::CleanUp => match self.instances(&memo.nodes[i]).await
                {
                    Ok((target, primary)) => self.forward(&mut memo, i, &target, &primary).await,
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = r {
                if memo.nodes[i].outcome.is_none() {
                    memo.nodes[i].outcome = Some(format!("{RESTARTED}, then: {e}"));
                }
                if !matches!(memo.nodes[i].phase, Phase::PutBack | Phase::Aside) {
                    memo.nodes[i].phase = Phase::Failed;
                }
                return self.fail(memo, i, &e).await;
            }
        }
        // Done only when every node was rebuilt (a run cut short while ending may have left
        // a failed node behind it).
        match failed_at.or_else(|| memo.nodes.iter().position(|n| n.phase != Phase::Done)) {
            Some(i) => {
                let e = Error::Unavailable(format!(
                    "{RESTARTED}: node {} and those after it were not rebuilt",
                    memo.nodes[i].node_id
                ));
                self.fail(memo, i, &e).await
            }
            None => {
                memo.stage = Stage::Done;
                self.cx.end(JobStatus::Done, &memo).await
            }
        }
    }

    /// The node's instance and the shard's current primary (for a resumed node).
    async fn instances(&self, n: &NodeRebuild) -> Result<(Instance, ShardNode)> {
        let all = self
            .cx
            .store
            .list_shard_nodes(Some(self.req().shard_id))
            .await?;
        let node = all
            .iter()
            .find(|r| r.id == n.node_id)
            .ok_or_else(|| Error::NotFound {
                what: "storage node",
                id: n.node_id.to_string(),
            })?;
        let primary = primary_of(&all)?;
        let target = reseed::locate(&self.cx.store, &self.cx.fleet, node, &self.passwords).await?;
        Ok((target, primary))
    }

    /// Rebuilds node `i` of `memo` from its checks to its end; on failure the node's phase and
    /// outcome say what was done about it.
    async fn one(&self, memo: &mut RebuildMemo, i: usize) -> Result<()> {
        let label = memo.nodes[i].label();
        let step = self.cx.progress.step(format!("check {label}"));
        let c = match self.check_node(&memo.nodes[i]).await {
            Ok(c) => {
                step.done_with(c.note.clone());
                c
            }
            Err(e) => {
                step.fail(&e);
                memo.nodes[i].phase = Phase::Failed;
                memo.nodes[i].outcome = Some(format!("not touched: {e}"));
                return Err(e);
            }
        };
        {
            let n = &mut memo.nodes[i];
            n.status_before = Some(c.target.node.status);
            n.base_dir = Some(c.target.base_dir().to_string());
            n.source = Some(format!("{}:{}", c.source.node.hostaddr, c.source.node.port));
            n.source_id = Some(c.source.node.id);
            n.method = Some(c.method);
            n.data_kb = Some(c.data_kb);
            // A physical copy stops the node and sets its data aside in the copy's own session
            // (while the source's backup starts), so the old data may be aside from then on.
            n.phase = match c.method {
                RebuildMethod::Backup => Phase::Aside,
                RebuildMethod::Dump => Phase::Stopping,
            };
        }
        self.cx.progress.plan(
            steps_after_check(c.method)
                .iter()
                .map(|s| format!("{s} {label}")),
        );
        // Out of service before it goes down, so HA, the catalog and the seeders leave it be.
        let id = c.target.node.id;
        if let Err(e) = self
            .save(memo, Some((id, c.target.node.status, NodeStatus::Inactive)))
            .await
        {
            memo.nodes[i].phase = Phase::Failed;
            memo.nodes[i].outcome = Some(format!("not touched: {e}"));
            return Err(e);
        }
        let r = self.replace_data(memo, i, &c).await;
        if let Err(e) = r {
            self.undo(memo, i, &e).await;
            return Err(e);
        }
        self.forward(memo, i, &c.target, &c.primary).await
    }

    /// Stop, set aside, copy: up to `copied`.
    async fn replace_data(&self, memo: &mut RebuildMemo, i: usize, c: &Checked) -> Result<()> {
        let label = memo.nodes[i].label();
        let fleet = &self.cx.fleet;
        if c.method == RebuildMethod::Dump {
            self.cx
                .step(&format!("stop {label}"), reseed::stop(fleet, &c.target))
                .await?;
            memo.nodes[i].phase = Phase::Aside;
            self.save(memo, None).await?;
            self.cx
                .step(
                    &format!("set aside {label}"),
                    reseed::set_aside(fleet, &c.target, &self.tag()),
                )
                .await?;
        }
        let step = self.cx.progress.step(format!("copy {label}"));
        step.note(format!(
            "{} of {} ({} MB){}",
            c.method.as_str(),
            memo.nodes[i].source.as_deref().unwrap_or(""),
            c.data_kb / 1024,
            match c.method {
                RebuildMethod::Backup => "; the node is stopped and its data set aside first",
                RebuildMethod::Dump => "",
            }
        ));
        let rate = self.req().rate_limit_mb_s;
        let timeout = reseed::copy_timeout(c.data_kb, rate);
        let tag = self.tag();
        match reseed::copy(fleet, c.method, &c.source, &c.target, &tag, rate, timeout).await {
            Ok(copied) => {
                step.done_with(format!(
                    "{} of {} at '{}'{}",
                    c.method.as_str(),
                    memo.nodes[i].source.as_deref().unwrap_or(""),
                    copied.gtid,
                    copied
                        .bytes
                        .map(|b| format!(", {} MB streamed", b / (1024 * 1024)))
                        .unwrap_or_default()
                ));
                let n = &mut memo.nodes[i];
                n.gtid = Some(copied.gtid);
                n.bytes = copied.bytes;
                n.phase = Phase::Copied;
                self.save(memo, None).await
            }
            Err(e) => {
                step.fail(&e);
                Err(e)
            }
        }
    }

    /// Undoes node `i` after `cause` per [`recovery`] of its phase (before the new data is
    /// complete); records what was done in its phase and outcome. Never fails: what could not
    /// be undone is said in the outcome.
    async fn undo(&self, memo: &mut RebuildMemo, i: usize, cause: &Error) {
        let n = memo.nodes[i].clone();
        let before = n.status_before.unwrap_or(NodeStatus::Inactive);
        let label = n.label();
        let target = match self.instances(&n).await {
            Ok((t, _)) => t,
            Err(e) => {
                memo.nodes[i].outcome = Some(format!(
                    "failed ({cause}) and could not be reached to undo it: {e}; its data is as \
                     phase {:?} says",
                    n.phase
                ));
                return;
            }
        };
        // A node the operator had stopped stays stopped.
        let start = before != NodeStatus::ManualStop;
        let undone = match recovery(n.phase) {
            Recovery::Restart => {
                let r = if start {
                    self.cx
                        .step(&format!("restart {label}"), async {
                            reseed::start(&self.cx.fleet, &target).await?;
                            reseed::read_only(&target.addr()).await
                        })
                        .await
                } else {
                    Ok(())
                };
                r.map(|()| {
                    (
                        Phase::Failed,
                        format!("failed before its data was touched ({cause}); it runs its own data again"),
                    )
                })
            }
            Recovery::PutBack => self
                .cx
                .step(&format!("put back {label}"), async {
                    reseed::put_back(&self.cx.fleet, &target, &self.tag(), start).await?;
                    // Not the primary: read-only at once (a start leaves it writable).
                    if start {
                        reseed::read_only(&target.addr()).await?;
                    }
                    Ok(())
                })
                .await
                .map(|()| {
                    (
                        Phase::PutBack,
                        format!("failed before the new data was complete ({cause}); its old data was put back"),
                    )
                }),
            _ => return,
        };
        match undone {
            Ok((phase, outcome)) => {
                memo.nodes[i].phase = phase;
                memo.nodes[i].outcome = Some(outcome);
                let status = (before != NodeStatus::Inactive).then_some((
                    n.node_id,
                    NodeStatus::Inactive,
                    before,
                ));
                if let Err(e) = self.save(memo, status).await {
                    tracing::warn!(job_id = self.cx.job_id, error = %e, "rebuild: status not put back");
                }
            }
            Err(e) => {
                memo.nodes[i].outcome = Some(format!(
                    "failed ({cause}), and undoing it failed too ({e}): the node stays out of \
                     service; its old data is in {}/data.rebuild-{}",
                    target.base_dir(),
                    self.tag()
                ));
                let _ = self.save(memo, None).await;
            }
        }
    }

    /// From `copied` on: start, follow, catch up, activate, clean up. A failure leaves the
    /// new data in place and the node out of service.
    async fn forward(
        &self,
        memo: &mut RebuildMemo,
        i: usize,
        target: &Instance,
        primary: &ShardNode,
    ) -> Result<()> {
        let label = memo.nodes[i].label();
        let fleet = &self.cx.fleet;
        let addr = target.addr();
        let paddr = NodeAddr::from(primary);
        let r = async {
            if memo.nodes[i].phase < Phase::Active {
                self.cx
                    .step(&format!("start {label}"), async {
                        reseed::start(fleet, target).await?;
                        reseed::read_only(&addr).await
                    })
                    .await?;
                let gtid = memo.nodes[i].gtid.clone().unwrap_or_default();
                let step = self.cx.progress.step(format!("replicate {label}"));
                let r = async {
                    reseed::follow(&addr, &paddr, &self.passwords.repl, &gtid).await?;
                    memo.nodes[i].phase = Phase::Following;
                    self.save(memo, None).await?;
                    seed::wait_caught_up(&addr, &paddr, seed::CATCH_UP_TIMEOUT).await
                }
                .await;
                match &r {
                    Ok(()) => step.done_with(format!(
                        "follows {}:{} (node {})",
                        primary.hostaddr, primary.port, primary.id
                    )),
                    Err(e) => step.fail(e),
                }
                r?;
                let step = self.cx.progress.step(format!("activate {label}"));
                memo.nodes[i].phase = Phase::Active;
                let r = self.activate(memo, target, primary).await;
                match &r {
                    Ok(()) => step.done(),
                    Err(e) => {
                        memo.nodes[i].phase = Phase::Following;
                        step.fail(e)
                    }
                }
                r?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = r {
            let n = &mut memo.nodes[i];
            n.phase = Phase::Failed;
            n.outcome = Some(format!(
                "failed after the new data was complete ({e}): the node keeps the new data and \
                 stays out of service; its old data stays in {}/data.rebuild-{} until a rebuild \
                 succeeds",
                target.base_dir(),
                self.tag()
            ));
            let _ = self.save(memo, None).await;
            return Err(e);
        }
        // In service again: the old data goes. A failure here is said, not undone.
        let cleaned = self
            .cx
            .step(
                &format!("clean up {label}"),
                reseed::drop_aside(fleet, target),
            )
            .await;
        let n = &mut memo.nodes[i];
        n.phase = Phase::Done;
        n.outcome = Some(match cleaned {
            Ok(()) => format!(
                "rebuilt from {} at '{}'",
                n.source.as_deref().unwrap_or("?"),
                n.gtid.as_deref().unwrap_or("")
            ),
            Err(e) => format!(
                "rebuilt from {}, but the old data could not be removed: {e}",
                n.source.as_deref().unwrap_or("?")
            ),
        });
        self.save(memo, None).await
    }

    /// In one transaction: the shard's primary is still the one followed, the node becomes
    /// `active` and is recorded following it; the memo at `active`.
    async fn activate(
        &self,
        memo: &RebuildMemo,
        target: &Instance,
        primary: &ShardNode,
    ) -> Result<()> {
        let (id, shard, pid) = (target.node.id, target.node.shard_id, primary.id);
        let m = NodeMapMaster {
            cluster_id: target.node.db_cluster_id,
            node_host: host_port(&target.node.hostaddr, target.node.port),
            master_host: host_port(&primary.hostaddr, primary.port),
            master_uuid: None,
        };
        self.cx
            .commit(async |tx| {
                let all = nodes::list(tx, Some(shard)).await?;
                let now = all.iter().find(|n| {
                    n.member_state == MemberState::Source && n.status == NodeStatus::Active
                });
                if now.map(|n| n.id) != Some(pid) {
                    return Err(MetaError::Conflict(format!(
                        "the shard's primary changed during the rebuild (it followed node {pid})"
                    )));
                }
                let row = nodes::get(tx, id).await?;
                match row.status {
                    NodeStatus::Active => {}
                    NodeStatus::Inactive => {
                        nodes::set_status_if(tx, id, NodeStatus::Inactive, NodeStatus::Active)
                            .await?;
                    }
                    other => {
                        return Err(MetaError::Conflict(format!(
                            "storage node {id} is {other}: not made active"
                        )))
                    }
                }
                meta::set_node_master(tx, &m).await?;
                Ok(memo.clone())
            })
            .await?;
        Ok(())
    }

    /// The checks of one node (nothing changed): the node, the primary, the source, both
    /// instances, the programs and the room for a copy.
    async fn check_node(&self, n: &NodeRebuild) -> Result<Checked> {
        let store = &self.cx.store;
        let all = store.list_shard_nodes(Some(self.req().shard_id)).await?;
        let node = all
            .iter()
            .find(|r| r.id == n.node_id)
            .ok_or_else(|| Error::NotFound {
                what: "storage node of this shard",
                id: n.node_id.to_string(),
            })?;
        if let Some(why) = refusal(node) {
            return Err(Error::Conflict(why));
        }
        let primary = primary_of(&all)?;
        let source = self.source(&all, node, &primary).await?;
        let fleet = &self.cx.fleet;
        let target = reseed::locate(store, fleet, node, &self.passwords).await?;
        let src = reseed::locate(store, fleet, &source, &self.passwords).await?;
        let programs = reseed::reseed(fleet)?.snapshot_programs();
        let mut method = self.req().method.unwrap_or_default();
        let mut note = String::new();
        let wanted: &[String] = match method {
            RebuildMethod::Backup => &programs,
            RebuildMethod::Dump => &[],
        };
        let looked = match tokio::join!(
            reseed::space(fleet, &src, wanted),
            reseed::space(fleet, &target, wanted)
        ) {
            (Ok((data_kb, _)), Ok((_, free_kb))) => Ok((data_kb, free_kb)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let (data_kb, free_kb) = match looked {
            Ok(x) => x,
            // The default method falls back to the dump on a machine without the backup
            // programs; a method asked for is refused.
            Err(Error::Conflict(why))
                if self.req().method.is_none() && why.contains("no such program") =>
            {
                method = RebuildMethod::Dump;
                note = format!("; dump, since {why}");
                let (data_kb, _) = reseed::space(fleet, &src, &[]).await?;
                let (_, free_kb) = reseed::space(fleet, &target, &[]).await?;
                (data_kb, free_kb)
            }
            Err(e) => return Err(e),
        };
        if !reseed::room_for(data_kb, free_kb) {
            return Err(Error::Conflict(format!(
                "{}: {} MB free where its data goes, the copy needs {} MB and a margin",
                target.addr(),
                free_kb / 1024,
                data_kb / 1024
            )));
        }
        Ok(Checked {
            note: format!(
                "source {}:{} (node {}{}), {}{note}",
                source.hostaddr,
                source.port,
                source.id,
                if source.id == primary.id {
                    ", the primary"
                } else {
                    ""
                },
                method.as_str()
            ),
            target,
            source: src,
            primary,
            method,
            data_kb,
        })
    }

    /// The node to copy from: the one asked for (a healthy replica within the lag, or the
    /// primary), else [`pick_source`] over the shard's other active replicas.
    async fn source(
        &self,
        all: &[ShardNode],
        node: &ShardNode,
        primary: &ShardNode,
    ) -> Result<ShardNode> {
        let req = self.req();
        let others: Vec<&ShardNode> = all
            .iter()
            .filter(|n| {
                n.id != node.id
                    && n.id != primary.id
                    && n.status == NodeStatus::Active
                    && n.member_state == MemberState::Replica
            })
            .collect();
        let mut candidates = Vec::new();
        for n in others
            .into_iter()
            .filter(|n| req.source_id.is_none_or(|s| s == n.id))
        {
            let p = probe_node(&NodeAddr::from(n), StorageOptions::default()).await;
            candidates.push(Candidate::of(n, &p, primary));
        }
        if let Some(s) = req.source_id {
            if s == primary.id {
                return Ok(primary.clone());
            }
            return pick_source(&candidates, primary, req.max_source_lag_s, false).ok_or_else(
                || {
                    Error::Conflict(format!(
                        "source node {s} is not an active replica replicating from the primary \
                         within {} s",
                        req.max_source_lag_s
                    ))
                },
            );
        }
        pick_source(
            &candidates,
            primary,
            req.max_source_lag_s,
            req.allow_primary,
        )
        .ok_or_else(|| {
            Error::Conflict(format!(
                "no source: no replica replicates from the primary within {} s, and the \
                 primary may not be used",
                req.max_source_lag_s
            ))
        })
    }
}

/// The steps of a node after its check, by method: a physical copy stops the node and sets
/// its data aside in the copy's own session.
fn steps_after_check(method: RebuildMethod) -> &'static [&'static str] {
    match method {
        RebuildMethod::Backup => &["copy", "start", "replicate", "activate", "clean up"],
        RebuildMethod::Dump => &[
            "stop",
            "set aside",
            "copy",
            "start",
            "replicate",
            "activate",
            "clean up",
        ],
    }
}

/// The shard's active recorded primary among `all`.
fn primary_of(all: &[ShardNode]) -> Result<ShardNode> {
    all.iter()
        .find(|n| n.member_state == MemberState::Source && n.status == NodeStatus::Active)
        .cloned()
        .ok_or_else(|| Error::Conflict("the shard has no active primary".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::common::tests::node;

    fn cand(id: i64, healthy: bool, lag: Option<i64>) -> Candidate {
        Candidate {
            node: node(id, false),
            healthy,
            lag_s: lag,
        }
    }

    #[test]
    fn the_source_is_the_healthiest_replica_else_the_primary_if_allowed() {
        let primary = node(1, true);
        let c = [
            cand(2, true, Some(5)),
            cand(3, true, Some(0)),
            cand(4, false, Some(0)),
            cand(5, true, None),
        ];
        assert_eq!(pick_source(&c, &primary, 30, true).unwrap().id, 3);
        // Too far behind: the primary, when allowed.
        let late = [cand(2, true, Some(100))];
        assert_eq!(pick_source(&late, &primary, 30, true).unwrap().id, 1);
        assert!(pick_source(&late, &primary, 30, false).is_none());
        assert_eq!(pick_source(&late, &primary, 100, false).unwrap().id, 2);
        // Broken replicas never.
        assert!(pick_source(&[cand(4, false, Some(0))], &primary, 30, false).is_none());
        assert_eq!(pick_source(&[], &primary, 30, true).unwrap().id, 1);
    }

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
