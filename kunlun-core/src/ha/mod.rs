//! Shard high availability (design.md §4): probing, failure detection confirmed by replicas,
//! lossless failover, planned switchover, anti-flapping, rejoin of a returning old primary and
//! upkeep of replicas whose replication threads stopped.
//!
//! Layout: [`gtid`], [`choose`] and [`detect`] are pure decisions; [`probe`] gathers the facts
//! of one node; [`promote`] holds the SQL steps; [`failover`] orders them and keeps the record;
//! [`switchover`] is the planned variant; `upkeep` restarts stopped replicas; [`monitor`] is
//! the actor (each shard's failover or switchover in its own bounded task) and [`state`] what
//! it publishes; [`fence`] fences and proves it against the compute nodes' login. Invariant kept throughout: a promotion never silently drops acknowledged writes
//! (see [`choose`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub mod choose;
pub mod detect;
mod facade;
pub mod failover;
pub mod fence;
pub mod gate;
pub mod meta;
pub use crate::storage::gtid;
pub mod monitor;
pub use crate::storage::probe;
pub mod promote;
pub mod records;
pub mod retry;
pub mod state;
mod switchover;
mod upkeep;
mod watch;

pub use choose::{choose, Choice, LossPolicy, ReplicaView, ShardView};
pub(crate) use facade::not_running;
pub use facade::{get_failover, list_failovers, HaStatus};
pub use failover::{ErrantFollower, FailoverKind, FailoverRecord, FollowerIssue, Outcome, Phase};
pub use gtid::{GtidPos, ParseGtidError};
pub use monitor::{HaHandle, HaMonitor};
pub use retry::RetryPolicy;
pub use state::{ErrantNode, HaEvent, HaShared, HaStance, HaStats, NodeHealth, NodeState};

use kunlun_meta::model::{Cluster, MemberState, NodeStatus, ShardNode};

use crate::config::CoreConfig;
use crate::fleet::Provisioner;
use crate::storage::StorageOptions;
use crate::xa::XaConfig;

/// Settings of the HA monitor.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// Gap between two probe rounds (`check_shard_interval`); a quarter of it while a primary
    /// is suspect. Default 1 s.
    pub interval: Duration,
    /// Consecutive failed probes before the primary counts as dead (`k`) on the probes ground
    /// alone; a crash (its watch session ended, connect refused) or a silent primary (two
    /// failed probes, replicas hearing nothing) is decided sooner (see [`detect`]). Default 3.
    pub failures_to_dead: u32,
    /// Most probes in flight at once. Default 32: at 5,000 nodes the rounds are bound by CPU,
    /// and 128 made them no shorter (`probe_fleet` bench, `PROBE_FLEET_CONCURRENCY`).
    pub probe_concurrency: usize,
    /// Deadlines of storage-node calls (`mysql_connect_timeout`, `mysql_read_timeout`); a
    /// probe's are shorter still (see [`probe::probe_options`]).
    pub storage: StorageOptions,
    /// Longest wait for the candidate to apply its relay log. Default 30 s.
    pub catch_up_limit: Duration,
    /// No second automatic failover of a shard within this window. Default 300 s.
    pub flap_window: Duration,
    /// XA settings for the in-doubt hook on a new primary; `None` skips the hook.
    pub xa: Option<XaConfig>,
    /// SSH access to the machines (the job runner's provisioner), used to stop an old primary
    /// that does not answer SQL; `None` records "no ssh access" instead.
    pub ssh: Option<Arc<Provisioner>>,
    /// Retries of a failover that failed part-way.
    pub retry: RetryPolicy,
    /// Longest one failover or switchover attempt may run in its shard's task before it is
    /// ended and recorded as failed. Default 120 s (catch-up and apply limits, fence, XA hook).
    pub attempt_deadline: Duration,
    /// Test seam, `None` in production: awaited right before a metadata write that rests on
    /// what the monitor observed earlier (see [`WriteSite`]), so a test can change metadata
    /// inside that window.
    pub before_write: Option<WriteHook>,
    /// The leadership term this monitor acts for. Every metadata write that changes who is
    /// primary or who replicates from whom checks, in its own transaction, that the term's
    /// lease is still held ([`TermFence::check`]): a manager that lost leadership mid-failover
    /// (paused, cut off from the store) cannot record a primary after its successor started.
    /// `None` (harness monitors without a lease) writes unchecked.
    pub term: Option<TermFence>,
    /// The clusters whose shards are probed and failed over (`clusters_to_serve`); a term
    /// sets it from its engine. Default: every cluster.
    pub clusters: crate::ClusterScope,
}

/// A leader's term as a write fence: the lease, its holder and the epoch it was won at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermFence {
    pub lease: String,
    pub holder: String,
    pub epoch: i64,
}

impl TermFence {
    /// In a write transaction: fails it with a conflict unless the term still holds its
    /// lease (on MySQL the lease row stays locked until the transaction ends, so no other
    /// manager can take over between this check and the commit).
    pub(crate) async fn check(
        fence: Option<&TermFence>,
        tx: &mut kunlun_meta::store::Tx,
    ) -> Result<(), kunlun_meta::Error> {
        let Some(f) = fence else { return Ok(()) };
        if kunlun_meta::store::repo::lease::fence(tx, &f.lease, &f.holder, f.epoch).await? {
            Ok(())
        } else {
            Err(kunlun_meta::Error::Conflict(format!(
                "leadership term {} of {} ended: this manager no longer holds lease `{}`, so it \
                 writes nothing",
                f.epoch, f.holder, f.lease
            )))
        }
    }
}

/// A metadata write of the monitor that follows a slow step on the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteSite {
    /// An old primary's rejoin: status back to active, its `node_map_master` row.
    Rejoin { node_id: i64 },
    /// A failover's or switchover's `metadata` phase for the shard's new primary.
    Failover { shard_id: i64, new_primary: i64 },
    /// The `node_map_master` row of a replica that replica upkeep repointed.
    Repoint { node_id: i64 },
}

/// A future the monitor awaits at a [`WriteSite`].
pub type WriteHookFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// See [`HaConfig::before_write`].
#[derive(Clone)]
pub struct WriteHook(pub Arc<dyn Fn(WriteSite) -> WriteHookFuture + Send + Sync>);

impl WriteHook {
    pub(crate) async fn call(hook: Option<&WriteHook>, site: WriteSite) {
        if let Some(h) = hook {
            (h.0)(site).await;
        }
    }
}

impl std::fmt::Debug for WriteHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteHook")
    }
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            interval: Duration::from_secs(1),
            failures_to_dead: 3,
            probe_concurrency: 32,
            storage: StorageOptions::default(),
            catch_up_limit: Duration::from_secs(30),
            flap_window: Duration::from_secs(300),
            xa: None,
            ssh: None,
            retry: RetryPolicy::default(),
            attempt_deadline: Duration::from_secs(120),
            before_write: None,
            term: None,
            clusters: crate::ClusterScope::all(),
        }
    }
}

impl HaConfig {
    /// The HA settings of the engine's configuration (XA hook on).
    pub fn from_core(c: &CoreConfig) -> Self {
        HaConfig {
            interval: c.check_shard_interval,
            xa: Some(XaConfig::from_core(c)),
            clusters: c.clusters_to_serve.clone(),
            ..HaConfig::default()
        }
    }
}

/// One shard as metadata describes it this round.
#[derive(Debug, Clone)]
pub(crate) struct ShardTopo {
    pub cluster: Cluster,
    pub shard_id: i64,
    pub nodes: Vec<ShardNode>,
}

impl ShardTopo {
    pub(crate) fn primary(&self) -> Option<&ShardNode> {
        self.nodes
            .iter()
            .find(|n| n.member_state == MemberState::Source && n.status == NodeStatus::Active)
    }
}
