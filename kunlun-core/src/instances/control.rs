//! Stop, start and restart of one installed storage or compute instance (`control_instance`),
//! shared by the REST API, `kunlunctl node` and the Emit job type.
//!
//! Invariants: only an instance recorded in `shard_nodes`/`comp_nodes` on a registered machine
//! is touched, in its recorded instance dir, with the recipes' own `stop`/`start`/`wait_ready`
//! scripts (every SSH session bounded by the recipe's step deadline, every SQL call by the
//! storage deadlines); a shard's primary is stopped only with `force` (and then its row is left
//! `active`, so HA sees a dead primary and fails it over); any other node an operator stops is
//! `manual_stop` while down, which HA, the catalog push and the seeders treat as not a member,
//! and only a `manual_stop` node is made `active` again by a start (a node HA took out,
//! `inactive`, stays out: HA's rejoin or a rebuild decides); nothing runs while a job changes
//! the instance's cluster. The primary of a shard with no other active node is `manual_stop`
//! when stopped even with `force`: nothing could take over, and the instance keeper must not
//! start it again behind the operator's back.
//!
//! The start path ([`locate`], [`start_located`]: the recipe's `Start` + `WaitReady`, a
//! non-primary storage node set read-only at once, a replica's replication resumed) is the one
//! the instance keeper ([`crate::keeper`]) restarts dead instances with.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use kunlun_meta::model::{
    CompNode, Job, JobStatus, Machine, MachineType, MemberState, NewJob, NodeStatus, ShardNode,
};
use kunlun_meta::store::repo::{self, dirs};
use kunlun_meta::store::Store;
use kunlun_provision::placement::InstanceKind;
use kunlun_provision::recipe::{validate_base_dir, InstanceSpec, Recipe, Step};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::storage::{NodeAddr, StorageOptions};
use crate::ClusterManager;

/// The job type (`cluster_general_job_log.job_type`) of an instance control.
pub const CONTROL_INSTANCE: &str = "control_instance";

/// How long a started replica may take to run both replication threads.
const REPLICATION_WAIT: Duration = Duration::from_secs(30);

/// What to do with the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    Stop,
    Start,
    Restart,
}

impl Control {
    /// `stop`, `start` or `restart`.
    pub fn parse(s: &str) -> Result<Control> {
        match s {
            "stop" => Ok(Control::Stop),
            "start" => Ok(Control::Start),
            "restart" => Ok(Control::Restart),
            other => Err(Error::Invalid(format!(
                "action: {other:?} is not one of stop, start, restart"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Control::Stop => "stop",
            Control::Start => "start",
            Control::Restart => "restart",
        }
    }

    fn stops(self) -> bool {
        matches!(self, Control::Stop | Control::Restart)
    }

    fn starts(self) -> bool {
        matches!(self, Control::Start | Control::Restart)
    }
}

/// One control request: the instance by `host:port`, the action, and whether a shard's
/// primary may be stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlInstance {
    pub host: String,
    pub port: u16,
    pub action: Control,
    pub force: bool,
}

/// What a control did: the job memo.
#[derive(Debug, Clone, Serialize)]
pub struct ControlReport {
    /// `storage` or `compute`.
    pub kind: &'static str,
    pub node_id: i64,
    pub cluster_id: i64,
    pub shard_id: Option<i64>,
    /// The node was its shard's primary when the control began.
    pub primary: bool,
    pub base_dir: String,
    /// Each step as `name: done|failed (N ms)[: note]`.
    pub steps: Vec<String>,
    /// The row's status afterwards.
    pub status: NodeStatus,
    /// `stopped`, `started`, `restarted` or `failed`.
    pub outcome: String,
    /// A started replica: its replication threads (`running`), or why not.
    pub replication: Option<String>,
    pub error: Option<String>,
}

/// A storage or compute node as metadata records it.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Storage(ShardNode),
    Compute(CompNode),
}

impl Node {
    pub(crate) fn id(&self) -> i64 {
        match self {
            Node::Storage(n) => n.id,
            Node::Compute(c) => c.id,
        }
    }
    pub(crate) fn status(&self) -> NodeStatus {
        match self {
            Node::Storage(n) => n.status,
            Node::Compute(c) => c.status,
        }
    }
    pub(crate) fn cluster_id(&self) -> i64 {
        match self {
            Node::Storage(n) => n.db_cluster_id,
            Node::Compute(c) => c.db_cluster_id,
        }
    }
    fn kind(&self) -> InstanceKind {
        match self {
            Node::Storage(_) => InstanceKind::Storage,
            Node::Compute(_) => InstanceKind::Compute,
        }
    }
    fn dir_kind(&self) -> dirs::NodeKind {
        match self {
            Node::Storage(_) => dirs::NodeKind::Storage,
            Node::Compute(_) => dirs::NodeKind::Compute,
        }
    }
    fn is_primary(&self) -> bool {
        matches!(self, Node::Storage(n)
            if n.member_state == MemberState::Source && n.status == NodeStatus::Active)
    }
    fn host(&self) -> &str {
        match self {
            Node::Storage(n) => &n.hostaddr,
            Node::Compute(c) => &c.hostaddr,
        }
    }
    fn port(&self) -> u16 {
        match self {
            Node::Storage(n) => n.port,
            Node::Compute(c) => c.port,
        }
    }
    fn machine_type(&self) -> MachineType {
        match self {
            Node::Storage(_) => MachineType::Storage,
            Node::Compute(_) => MachineType::Computer,
        }
    }
}

/// An instance found on its machine: what the recipes' steps need.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub node: Node,
    pub machine: Machine,
    /// The instance as the recipes' start and stop steps see it (dir, address, port).
    pub spec: InstanceSpec,
}

/// Finds `node`'s machine (registered at its address, of its kind) and its instance dir (as
/// recorded at install, else the conventional one under the machine's first data dir).
/// `Conflict` when there is no such machine or dir.
pub(crate) async fn locate(store: &Store, node: Node) -> Result<Located> {
    let want = node.machine_type();
    let machine = store
        .list_machines()
        .await?
        .into_iter()
        .find(|m| m.hostaddr == node.host() && m.machine_type == want)
        .ok_or_else(|| {
            Error::Conflict(format!(
                "no {want:?} machine is registered at {}",
                node.host()
            ))
        })?;
    located_on(store, node, machine).await
}

/// [`locate`] on a machine the caller already found.
pub(crate) async fn located_on(store: &Store, node: Node, machine: Machine) -> Result<Located> {
    let (id, kind) = (node.id(), node.dir_kind());
    let recorded = store.read(async |tx| dirs::get(tx, kind, id).await).await?;
    let base_dir = match recorded {
        Some(d) => d,
        None => machine
            .data_dirs
            .first()
            .map(|d| InstanceSpec::base_dir_for(d, node.kind(), node.port()))
            .ok_or_else(|| Error::Conflict(format!("machine {} has no data dir", machine.id)))?,
    };
    validate_base_dir(&base_dir).map_err(|e| Error::Conflict(e.to_string()))?;
    let spec = InstanceSpec {
        bind_address: node.host().to_string(),
        port: node.port(),
        base_dir,
        server_id: 0,
        buffer_mb: 0,
        max_connections: 0,
        semi_sync: false,
        users: Vec::new(),
    };
    Ok(Located {
        node,
        machine,
        spec,
    })
}

/// The recipe of a located instance's kind.
pub(crate) fn recipe_of(prov: &Provisioner, node: &Node) -> std::sync::Arc<dyn Recipe> {
    match node {
        Node::Storage(_) => prov.storage.clone(),
        Node::Compute(_) => prov.compute.clone(),
    }
}

/// Starts a located instance the way `kunlunctl node start` does (the recipe's `Start` +
/// `WaitReady`; a storage node that is not the recorded primary set read-only at once; a
/// replica's replication resumed; `manual_stop` made `active`) and reports what was done, with
/// `error` set when a step failed. The keeper's restart: `Err(why)`, nothing done, when the
/// node's row changed status while it waited for the instance's lock (an operator's stop ran
/// first: `manual_stop` must stay).
pub(crate) async fn start_located(
    store: &Store,
    prov: &Provisioner,
    loc: &Located,
) -> std::result::Result<ControlReport, String> {
    let mut report = ControlReport::of(&loc.node, &loc.spec.base_dir);
    let recipe = recipe_of(prov, &loc.node);
    let target = prov.target(&loc.machine);
    let run = Run {
        store,
        prov,
        recipe: recipe.as_ref(),
        target: &target,
        spec: &loc.spec,
    };
    let lock = instance_lock(&loc.spec.bind_address, loc.spec.port);
    let _one_at_a_time = lock.lock().await;
    let now = node_now(store, &loc.node)
        .await
        .map_err(|e| format!("its row could not be read: {e}"))?
        .status();
    if now != loc.node.status() {
        return Err(format!("it became {now} meanwhile"));
    }
    match run.go(&loc.node, Control::Start, &mut report).await {
        Ok(()) => report.outcome = "started".into(),
        Err(e) => report.error = Some(e.to_string()),
    }
    Ok(report)
}

impl ControlReport {
    /// A report of `node` before anything was done.
    fn of(node: &Node, base_dir: &str) -> ControlReport {
        ControlReport {
            kind: match node {
                Node::Storage(_) => "storage",
                Node::Compute(_) => "compute",
            },
            node_id: node.id(),
            cluster_id: node.cluster_id(),
            shard_id: match node {
                Node::Storage(n) => Some(n.shard_id),
                Node::Compute(_) => None,
            },
            primary: node.is_primary(),
            base_dir: base_dir.to_string(),
            steps: Vec::new(),
            status: node.status(),
            outcome: "failed".into(),
            replication: None,
            error: None,
        }
    }
}

/// Whether the request may go ahead on a node of `status` (`primary`: its shard's primary).
/// Pure, so the refusals are unit-tested.
pub fn refusal(status: NodeStatus, primary: bool, req: &ControlInstance) -> Option<String> {
    let at = format!("{}:{}", req.host, req.port);
    match status {
        NodeStatus::Creating => Some(format!("{at} is still being installed")),
        NodeStatus::Deleted => Some(format!("{at} is being deleted")),
        _ if primary && req.action.stops() && !req.force => Some(format!(
            "{at} is its shard's primary: switch over first, or {} with force (HA then fails \
             the shard over as for any dead primary)",
            req.action.as_str()
        )),
        _ => None,
    }
}

/// The status a node gets when the operator stops it, from the status it had: an active
/// non-primary becomes `manual_stop`; a forced primary stays `active` (HA fails it over),
/// unless no other active node of its shard could take over (`alone`): then it is
/// `manual_stop` too, so nothing starts it again behind the operator's back; any other status
/// (HA's `inactive`, a `manual_stop`) is kept.
pub fn status_when_stopped(before: NodeStatus, primary: bool, alone: bool) -> NodeStatus {
    match before {
        NodeStatus::Active if !primary || alone => NodeStatus::ManualStop,
        other => other,
    }
}

/// The status a node gets once started: only `manual_stop` (the operator's own stop) becomes
/// `active`; HA's `inactive` stays for HA's rejoin or a rebuild to decide.
pub fn status_when_started(now: NodeStatus) -> NodeStatus {
    match now {
        NodeStatus::ManualStop => NodeStatus::Active,
        other => other,
    }
}

impl ClusterManager {
    /// Stops, starts or restarts the instance at `req.host:req.port`. `Err` is a refusal before
    /// anything was done (unknown instance: `NotFound`; a primary without force, a node being
    /// installed or deleted, a job changing its cluster, no machine: `Conflict`; no SSH
    /// settings: `Unavailable`); `Ok` reports what was done, with `error` set when a step failed.
    pub async fn control_instance(&self, req: &ControlInstance) -> Result<ControlReport> {
        let store = self.store()?;
        let node = self.instance_at(&req.host, req.port).await?;
        let primary = node.is_primary();
        if let Some(why) = refusal(node.status(), primary, req) {
            return Err(Error::Conflict(why));
        }
        let cluster = store.get_cluster(node.cluster_id()).await?;
        if crate::jobs::common::busy(store, cluster.id, &cluster.name).await? {
            return Err(Error::Conflict(format!(
                "a job is changing cluster {}: try again when it has ended",
                cluster.id
            )));
        }
        // The machine first: an instance on no registered machine is a conflict whatever
        // SSH settings this manager has.
        let loc = locate(store, node).await?;
        let prov = self
            .probe_provisioner()
            .ok_or_else(|| Error::Unavailable("this manager has no SSH settings".into()))?
            .clone();
        let mut report = ControlReport::of(&loc.node, &loc.spec.base_dir);
        let target = prov.target(&loc.machine);
        let recipe = recipe_of(&prov, &loc.node);
        let run = Run {
            store,
            prov: &prov,
            recipe: recipe.as_ref(),
            target: &target,
            spec: &loc.spec,
        };
        let lock = instance_lock(&loc.spec.bind_address, loc.spec.port);
        let _one_at_a_time = lock.lock().await;
        if let Err(e) = run.go(&loc.node, req.action, &mut report).await {
            report.error = Some(e.to_string());
        } else {
            report.outcome = match req.action {
                Control::Stop => "stopped",
                Control::Start => "started",
                Control::Restart => "restarted",
            }
            .into();
        }
        Ok(report)
    }

    /// [`control_instance`](Self::control_instance) recorded as a finished `control_instance`
    /// job row (`done`, or `failed` when a step failed), with `job_info` {host, port, action,
    /// force} and the report as its memo. A refusal writes no row.
    pub async fn control_instance_job(&self, req: &ControlInstance) -> Result<Job> {
        let report = self.control_instance(req).await?;
        let status = if report.error.is_some() {
            JobStatus::Failed
        } else {
            JobStatus::Done
        };
        let memo = serde_json::to_value(&report).map_err(|e| Error::Internal(e.to_string()))?;
        let new = NewJob {
            job_type: CONTROL_INSTANCE.into(),
            job_info: serde_json::json!({
                "host": req.host, "port": req.port, "action": req.action, "force": req.force,
            }),
            user_name: None,
        };
        Ok(self
            .store()?
            .tx(async |tx| {
                let job = repo::jobs::create(tx, &new).await?;
                repo::jobs::update(tx, job.id, status, Some(&memo)).await
            })
            .await?)
    }

    /// The storage or compute node recorded at `host:port` and not deleted.
    async fn instance_at(&self, host: &str, port: u16) -> Result<Node> {
        let store = self.store()?;
        let live = |s: NodeStatus| s != NodeStatus::Deleted;
        if let Some(n) = store
            .list_shard_nodes(None)
            .await?
            .into_iter()
            .find(|n| n.hostaddr == host && n.port == port && live(n.status))
        {
            return Ok(Node::Storage(n));
        }
        store
            .list_comp_nodes(None)
            .await?
            .into_iter()
            .find(|c| c.hostaddr == host && c.port == port && live(c.status))
            .map(Node::Compute)
            .ok_or_else(|| Error::NotFound {
                what: "instance",
                id: format!("{host}:{port}"),
            })
    }
}

/// Sets `node`'s status to `to` if it still is `from`.
async fn set_node_status(
    store: &Store,
    node: &Node,
    from: NodeStatus,
    to: NodeStatus,
) -> Result<()> {
    if from == to {
        return Ok(());
    }
    let id = node.id();
    let storage = matches!(node, Node::Storage(_));
    store
        .tx(async |tx| {
            if storage {
                repo::nodes::set_status_if(tx, id, from, to).await?;
            } else if repo::comps::get(tx, id).await?.status == from {
                repo::comps::set_status(tx, id, to).await?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// `node`'s row as stored now.
async fn node_now(store: &Store, node: &Node) -> Result<Node> {
    let id = node.id();
    Ok(match node {
        Node::Storage(_) => Node::Storage(
            store
                .read(async |tx| repo::nodes::get(tx, id).await)
                .await?,
        ),
        Node::Compute(_) => Node::Compute(
            store
                .read(async |tx| repo::comps::get(tx, id).await)
                .await?,
        ),
    })
}

/// Whether no other node of `node`'s shard is active (a compute node is never alone).
async fn alone_in_shard(store: &Store, node: &Node) -> Result<bool> {
    let Node::Storage(n) = node else {
        return Ok(false);
    };
    Ok(!store
        .list_shard_nodes(Some(n.shard_id))
        .await?
        .iter()
        .any(|o| o.id != n.id && o.status == NodeStatus::Active))
}

/// One control's machine side.
struct Run<'a> {
    store: &'a Store,
    prov: &'a Provisioner,
    recipe: &'a dyn Recipe,
    target: &'a kunlun_provision::SshTarget,
    spec: &'a InstanceSpec,
}

/// The lock of one instance (`host`, `port`) in this process: one start, stop or restart of it
/// at a time. The keeper's restart and an operator's start could otherwise both find it down
/// and launch two servers on one data dir (the second fails on the port, failing its job);
/// serialised, the second finds it running and its start step returns at once.
fn instance_lock(host: &str, port: u16) -> Arc<tokio::sync::Mutex<()>> {
    type Locks = HashMap<(String, u16), Weak<tokio::sync::Mutex<()>>>;
    static LOCKS: LazyLock<std::sync::Mutex<Locks>> = LazyLock::new(Default::default);
    let mut g = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    g.retain(|_, w| w.strong_count() > 0);
    let key = (host.to_string(), port);
    if let Some(l) = g.get(&key).and_then(Weak::upgrade) {
        return l;
    }
    let l = Arc::new(tokio::sync::Mutex::new(()));
    g.insert(key, Arc::downgrade(&l));
    l
}

impl Run<'_> {
    /// The caller holds [`instance_lock`] of the instance.
    async fn go(&self, node: &Node, action: Control, report: &mut ControlReport) -> Result<()> {
        if action.stops() {
            let before = node_now(self.store, node).await?.status();
            let alone = node.is_primary() && alone_in_shard(self.store, node).await?;
            let after = status_when_stopped(before, node.is_primary(), alone);
            // Out of membership before it goes down, so HA's upkeep and the catalog push
            // never treat the stop as a failure; put back if the stop fails.
            set_node_status(self.store, node, before, after).await?;
            report.status = after;
            if let Err(e) = self.steps(&[Step::Stop], report).await {
                set_node_status(self.store, node, after, before).await?;
                report.status = before;
                return Err(e);
            }
        }
        if action.starts() {
            self.steps(&[Step::Start, Step::WaitReady], report).await?;
            let row = node_now(self.store, node).await?;
            let now = row.status();
            if let Node::Storage(n) = &row {
                if !row.is_primary() {
                    // Only the recorded primary may take writes: a replica or an old primary
                    // comes up writable (read_only is not in its config), so close it at once
                    // rather than a probe round later.
                    let t = Instant::now();
                    let fence = crate::ha::promote::fence_read_only(
                        &NodeAddr::from(n),
                        StorageOptions::default(),
                    )
                    .await;
                    report.steps.push(format!(
                        "read_only: {fence} ({} ms)",
                        t.elapsed().as_millis()
                    ));
                }
            }
            let member = status_when_started(now) == NodeStatus::Active;
            if !member {
                // Taken out by HA (a failed-over primary, an errant follower): its rejoin or a
                // rebuild decides how it replicates, not a start.
                report.replication = Some(format!("left to HA: the node is {now}"));
            } else if let Node::Storage(n) = node {
                let t = Instant::now();
                let r = resume_replication(self.store, n).await;
                let (ms, ok) = (t.elapsed().as_millis(), r.is_ok());
                report.steps.push(format!(
                    "replication: {} ({ms} ms)",
                    if ok { "done" } else { "failed" }
                ));
                match r {
                    Ok(what) => report.replication = what,
                    Err(e) => {
                        report.replication = Some(e.clone());
                        let after = status_when_started(now);
                        set_node_status(self.store, node, now, after).await?;
                        report.status = after;
                        return Err(Error::Unavailable(format!(
                            "started, but replication is not running: {e}"
                        )));
                    }
                }
            }
            let after = status_when_started(now);
            set_node_status(self.store, node, now, after).await?;
            report.status = after;
        }
        Ok(())
    }

    async fn steps(&self, steps: &[Step], report: &mut ControlReport) -> Result<()> {
        let t = Instant::now();
        let r = self
            .recipe
            .run_steps(&self.prov.ssh, self.target, self.spec, steps, None)
            .await;
        let names: Vec<&str> = steps.iter().map(|s| s.as_str()).collect();
        let ms = t.elapsed().as_millis();
        match r {
            Ok(()) => {
                report
                    .steps
                    .push(format!("{}: done ({ms} ms)", names.join("+")));
                Ok(())
            }
            Err(e) => {
                report
                    .steps
                    .push(format!("{}: failed ({ms} ms): {e}", names.join("+")));
                Err(Error::Unavailable(e.to_string()))
            }
        }
    }
}

/// After a storage node started: a replica whose threads stayed stopped (`skip-slave-start`)
/// and still follows its shard's primary gets `START SLAVE`, then both threads must run
/// within [`REPLICATION_WAIT`]. `Ok(None)` for a node that is no replica of a live primary.
async fn resume_replication(
    store: &Store,
    node: &ShardNode,
) -> std::result::Result<Option<String>, String> {
    use crate::ha::detect::{replica_upkeep, Upkeep};
    let nodes = store
        .list_shard_nodes(Some(node.shard_id))
        .await
        .map_err(|e| e.to_string())?;
    let Some(me) = nodes.iter().find(|n| n.id == node.id) else {
        return Ok(None);
    };
    let primary = nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source && n.status == NodeStatus::Active);
    let Some(primary) = primary.filter(|p| p.id != me.id) else {
        return Ok(None);
    };
    let opts = StorageOptions::default();
    let addr = NodeAddr::from(me);
    let probe = crate::storage::probe::probe_node(&addr, opts).await;
    match replica_upkeep(&primary.hostaddr, primary.port, &probe) {
        Upkeep::Nothing => {}
        Upkeep::Start => crate::ha::promote::restart_replication(&addr, opts)
            .await
            .map_err(|e| e.to_string())?,
        Upkeep::Repoint { from } => {
            return Err(format!(
                "it follows {} rather than the primary node {}: HA's replica upkeep \
                     repoints it once it is active",
                from.as_deref().unwrap_or("nothing"),
                primary.id
            ));
        }
        Upkeep::Broken { reason } => return Err(reason),
    }
    crate::ha::promote::replicating(&addr, None, REPLICATION_WAIT, opts).await?;
    Ok(Some("running".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: Control, force: bool) -> ControlInstance {
        ControlInstance {
            host: "10.0.0.1".into(),
            port: 57001,
            action,
            force,
        }
    }

    #[test]
    fn a_primary_is_stopped_only_with_force() {
        let a = NodeStatus::Active;
        assert!(refusal(a, true, &req(Control::Stop, false)).is_some());
        assert!(refusal(a, true, &req(Control::Restart, false)).is_some());
        assert!(refusal(a, true, &req(Control::Start, false)).is_none());
        assert!(refusal(a, true, &req(Control::Stop, true)).is_none());
        assert!(refusal(a, false, &req(Control::Stop, false)).is_none());
        for s in [NodeStatus::Creating, NodeStatus::Deleted] {
            assert!(refusal(s, false, &req(Control::Start, true)).is_some());
        }
        assert_eq!(Control::parse("restart").unwrap(), Control::Restart);
        assert!(Control::parse("kill").is_err());
    }

    #[test]
    fn only_the_operators_own_stop_is_undone_by_a_start() {
        use NodeStatus::*;
        assert_eq!(status_when_stopped(Active, false, false), ManualStop);
        // A forced primary stays a member: HA sees it dead and fails the shard over.
        assert_eq!(status_when_stopped(Active, true, false), Active);
        // ... unless nothing could take over: then it is the operator's stop, which the
        // instance keeper leaves alone.
        assert_eq!(status_when_stopped(Active, true, true), ManualStop);
        assert_eq!(status_when_stopped(Inactive, false, false), Inactive);
        assert_eq!(status_when_started(ManualStop), Active);
        // Taken out by HA (an old primary, an errant follower): HA or a rebuild decides.
        assert_eq!(status_when_started(Inactive), Inactive);
        assert_eq!(status_when_started(Active), Active);
    }
}
