//! A leadership term: the background actors one instance runs while it leads (shard HA
//! monitor, XA resolver, catalog sync, machine liveness, instance keeper, job runner, backup
//! scheduler), over the always-on
//! engine ([`ClusterManager`]), with the leader's epoch and the calls that need an actor
//! (HA status, switchover, no-switch, XA in-doubt listing and manual resolution).
//!
//! The daemon builds one [`Term::leader`] each time it wins the lease and shuts it down when
//! the lease is lost; with no election (tests, embeddings) one [`Term::standalone`] lives as
//! long as the process. Holding a `Term` is what says "the actors run here".
//!
//! Invariants: every actor is spawned on the term's own tracker and stops when its token
//! fires, so [`Term::shutdown`] leaves nothing of the term running before the next term may
//! start; the token is a child of the engine's, so shutting the engine down stops the term
//! too; an actor waits for the store through the one [`Term::spawn_when_open`]; HA's metadata
//! writes carry the term's [`TermFence`] (its epoch).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kunlun_meta::api::{XaInDoubt, XaResolveRequest, XaResolveResult};
use kunlun_meta::store::{LeaseClock, Store, WriteFence};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auto_rebuild::{AutoRebuild, AutoRebuildConfig};
use crate::catalog::{CatalogSync, CatalogSyncConfig};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::ha::{FailoverRecord, HaConfig, HaHandle, HaMonitor, HaStatus, TermFence};
use crate::jobs::JobRunner;
use crate::keeper::{KeeperConfig, KeeperShared, KeeperStatus};
use crate::machines::liveness;
use crate::xa::{XaConfig, XaResolver, XaState, XaStats};
use crate::ClusterManager;

/// How often an actor waiting for the store looks again.
const STORE_POLL: Duration = Duration::from_millis(200);

/// One leadership term; see the module doc. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Term {
    inner: Arc<Inner>,
}

struct Inner {
    engine: ClusterManager,
    /// The lease, holder and epoch this term acts for; `None` when nothing is elected. An
    /// elected term works on the store's background pool ([`Term::store`]).
    fence: Option<TermFence>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// The shard HA monitor, once it runs ([`Term::start_ha`]).
    ha: OnceLock<HaHandle>,
    /// XA recovery's settings and counters ([`Term::start_xa`]).
    xa: XaState,
    /// The leadership actor's lease clock, checked before every write of an elected term.
    clock: Option<LeaseClock>,
    /// What the instance keeper publishes, once it runs ([`Term::start_keeper`]).
    keeper: OnceLock<Arc<KeeperShared>>,
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Term")
            .field("epoch", &self.epoch())
            .field("running", &!self.inner.cancel.is_cancelled())
            .finish()
    }
}

impl Term {
    fn with(engine: &ClusterManager, fence: Option<TermFence>, clock: Option<LeaseClock>) -> Self {
        Term {
            inner: Arc::new(Inner {
                engine: engine.clone(),
                fence,
                cancel: engine.cancellation_token(),
                tasks: TaskTracker::new(),
                ha: OnceLock::new(),
                xa: XaState::default(),
                clock,
                keeper: OnceLock::new(),
            }),
        }
    }

    /// The term of a leader that won `fence.lease` at `fence.epoch`. Its actors use the
    /// store's background pool through a fenced handle: every write they make first checks
    /// `clock` (the leadership actor's, when given) and the lease row, and fails with
    /// `Deposed` once the term ended; such a failure cancels the term, so its tasks stop.
    pub fn leader(engine: &ClusterManager, fence: TermFence, clock: Option<LeaseClock>) -> Self {
        Self::with(engine, Some(fence), clock)
    }

    /// The one term of an instance with no election (tests, embeddings): no fence, the
    /// engine's own pool; it lives until shut down (or until the engine is).
    pub fn standalone(engine: &ClusterManager) -> Self {
        Self::with(engine, None, None)
    }

    /// The store as this term uses it: a leader's term works on the background pool (the
    /// API's load does not delay its failovers, switchovers and XA resolutions), a standalone
    /// term on the engine's own.
    fn store(&self) -> Result<Store> {
        let s = self.inner.engine.store()?;
        Ok(match &self.inner.fence {
            Some(f) => {
                let cancel = self.inner.cancel.clone();
                let epoch = f.epoch;
                s.background().fenced(WriteFence {
                    lease: f.lease.clone(),
                    holder: f.holder.clone(),
                    epoch,
                    clock: self.inner.clock.clone(),
                    on_deposed: Arc::new(move || {
                        if !cancel.is_cancelled() {
                            tracing::warn!(
                                epoch,
                                "a write found this leadership term ended; stopping its actors"
                            );
                            cancel.cancel();
                        }
                    }),
                })
            }
            None => s.clone(),
        })
    }

    /// The engine this term runs over.
    pub fn engine(&self) -> &ClusterManager {
        &self.inner.engine
    }

    /// The leader's epoch, `None` for a standalone term.
    pub fn epoch(&self) -> Option<i64> {
        self.inner.fence.as_ref().map(|f| f.epoch)
    }

    /// Resolves when the term ends: shut down, its engine shut down, or a write found it
    /// deposed.
    pub async fn ended(&self) {
        self.inner.cancel.cancelled().await
    }

    /// `false` once the term (or its engine) is shutting down.
    pub fn is_running(&self) -> bool {
        !self.inner.cancel.is_cancelled()
    }

    /// Spawns `actor(store, token)` on the term's tracker once the engine's store is open
    /// (at once if it is); gives up quietly if the term ends first. The one place that waits
    /// for the store on behalf of an actor.
    pub fn spawn_when_open<F, Fut>(&self, actor: F)
    where
        F: FnOnce(Store, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let term = self.clone();
        let cancel = self.inner.cancel.clone();
        self.inner.tasks.spawn(async move {
            let store = loop {
                match term.store() {
                    Ok(s) => break s,
                    Err(Error::ShuttingDown) => return,
                    Err(_) => tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(STORE_POLL) => {}
                    },
                }
            };
            if cancel.is_cancelled() {
                return;
            }
            actor(store, cancel).await;
        });
    }

    /// Starts the shard HA monitor (at most one per term; a second call is a no-op). A
    /// leader's term sets `cfg.term` to its fence unless the caller gave one.
    pub fn start_ha(&self, mut cfg: HaConfig) {
        if cfg.term.is_none() {
            cfg.term = self.inner.fence.clone();
        }
        cfg.clusters = self.inner.engine.config().clusters_to_serve.clone();
        let me = self.clone();
        self.spawn_when_open(move |store, cancel| async move {
            let (monitor, handle) = HaMonitor::new(store, cfg, cancel);
            if me.inner.ha.set(handle).is_ok() {
                monitor.run().await;
            }
        });
    }

    /// Starts the metadata shard's monitor (MySQL backend; see [`crate::ha::meta`]). A
    /// leader's term sets `cfg.term` to its fence unless the caller gave one. On SQLite, or
    /// without `meta_ha_user`, it starts nothing.
    pub fn start_meta_ha(&self, mut cfg: crate::ha::meta::MetaHaConfig) {
        if cfg.term.is_none() {
            cfg.term = self.inner.fence.clone();
        }
        self.spawn_when_open(move |store, cancel| async move {
            if store.kind() == kunlun_meta::store::BackendKind::Mysql {
                crate::ha::meta::MetaMonitor::new(store, cfg, cancel)
                    .run()
                    .await;
            }
        });
    }

    /// Starts the XA resolver (a second call is a no-op); manual resolutions use the same
    /// settings and counters.
    pub fn start_xa(&self, mut cfg: XaConfig) {
        cfg.clusters = self.inner.engine.config().clusters_to_serve.clone();
        if !self.inner.xa.configure(cfg.clone()) {
            return;
        }
        let metrics = self.inner.xa.metrics();
        self.spawn_when_open(move |store, cancel| async move {
            tracing::info!(interval = ?cfg.interval, wait_max = ?cfg.wait_max, "XA recovery started");
            XaResolver::new(store, cfg, metrics).run(cancel).await;
        });
    }

    /// Starts the catalog sync: every `interval` it re-pushes clusters whose topology
    /// changed or whose last push missed a compute node.
    pub fn start_catalog_sync(&self, interval: Duration) {
        let cfg = CatalogSyncConfig {
            interval,
            clusters: self.inner.engine.config().clusters_to_serve.clone(),
            ..CatalogSyncConfig::default()
        };
        self.spawn_when_open(move |store, cancel| async move {
            CatalogSync::new(store, cfg).run_forever(cancel).await;
        });
    }

    /// Starts the machine liveness check: every `interval` each machine is asked to run
    /// `true` over SSH (a fresh connection, deadline `min(interval, 5 s)`) with `p`'s
    /// `known_hosts` and host key policy; two failures in a row mark it `dead`, one success
    /// marks a dead machine `running`. A zero interval starts nothing.
    pub fn start_machine_liveness(&self, p: Provisioner, interval: Duration) {
        if interval.is_zero() {
            tracing::info!("machine liveness check disabled (machine_check_interval = 0)");
            return;
        }
        let cfg = liveness::LivenessConfig::new(interval);
        self.spawn_when_open(move |store, cancel| liveness::run(store, p, cfg, cancel));
    }

    /// Starts the job runner: it rolls back jobs a previous run left `ongoing`, then claims
    /// jobs until the term ends, polling every `poll_interval` and at once when the engine
    /// accepts one ([`ClusterManager::wake_job_runner`]). Call once.
    pub fn start_job_runner(&self, provisioner: Provisioner, poll_interval: Duration) {
        let wake = self.inner.engine.job_wake();
        let clusters = self.inner.engine.config().clusters_to_serve.clone();
        self.spawn_when_open(move |store, cancel| async move {
            let runner = JobRunner {
                store,
                provisioner,
                poll_interval,
                clusters,
            };
            runner.run_forever_woken(cancel, wake).await;
        });
    }

    /// Starts the instance keeper (a second call is a no-op): every `cfg.interval` it checks
    /// the instances metadata says should run and starts dead ones again through `p` (see
    /// [`crate::keeper`]); it reads HA's monitor of this term to leave roles to it. A zero
    /// interval starts nothing.
    pub fn start_keeper(&self, p: Provisioner, cfg: KeeperConfig) {
        if cfg.interval.is_zero() {
            tracing::info!("instance keeper disabled (instance_keeper_interval_secs = 0)");
            return;
        }
        let shared = Arc::new(KeeperShared::default());
        if self.inner.keeper.set(shared.clone()).is_err() {
            return;
        }
        // A weak reference: the actor must not keep the term alive.
        let me = Arc::downgrade(&self.inner);
        let ha: crate::keeper::HaLookup =
            Arc::new(move || me.upgrade().and_then(|i| i.ha.get().cloned()));
        self.spawn_when_open(move |store, cancel| {
            crate::keeper::run(store, p, cfg, ha, shared, cancel)
        });
    }

    /// What the instance keeper publishes (restarts, crash loops, events, counters); `None`
    /// when it does not run in this term.
    pub fn keeper_status(&self) -> Option<KeeperStatus> {
        self.inner.keeper.get().map(|k| k.status())
    }

    /// Starts the automatic rebuild ([`crate::auto_rebuild`]): every `cfg.interval` a
    /// replica HA keeps out for rebuild gets a `rebuild_node` job when its cluster's policy
    /// allows. It reads HA's list of this term, so it sees nothing until [`Term::start_ha`].
    pub fn start_auto_rebuild(&self, cfg: AutoRebuildConfig) {
        let me = self.clone();
        let engine = self.inner.engine.clone();
        self.spawn_when_open(move |store, cancel| async move {
            let errant = move || {
                me.ha()
                    .map(|h| h.shared().errant_nodes())
                    .unwrap_or_default()
            };
            AutoRebuild::new(store, engine, cfg)
                .run(errant, cancel)
                .await;
        });
    }

    /// Starts binlog archiving ([`crate::backup::archive`]): every `interval` each cluster's
    /// shard binary logs and commit log are copied next to its latest backup. A zero interval
    /// starts nothing.
    pub fn start_binlog_archive(&self, p: Provisioner, interval: Duration) {
        if interval.is_zero() {
            tracing::info!("binlog archiving disabled (binlog_archive_interval = 0)");
            return;
        }
        self.spawn_when_open(move |store, cancel| {
            crate::backup::archive::run(store, p, interval, cancel)
        });
    }

    /// Starts the backup scheduler ([`crate::backup::scheduler`]): every `interval` each
    /// enabled backup schedule gets its daily backup when its window is open, then its
    /// retention. A zero interval starts nothing.
    pub fn start_backup_scheduler(&self, interval: Duration) {
        if interval.is_zero() {
            tracing::info!("backup scheduler disabled (backup_schedule_interval = 0)");
            return;
        }
        let engine = self.inner.engine.clone();
        self.spawn_when_open(move |store, cancel| {
            crate::backup::scheduler::run(store, engine, interval, cancel)
        });
    }

    /// The running HA monitor, or `Unavailable` before it started (or when it was not).
    pub fn ha(&self) -> Result<&HaHandle> {
        self.inner.ha.get().ok_or_else(crate::ha::not_running)
    }

    /// Health of every probed storage node, open alarms, counters and recent events.
    pub fn ha_status(&self) -> Result<HaStatus> {
        Ok(self.ha()?.status())
    }

    /// One page of failover and switchover records, newest first, with ids below `before`:
    /// those the store could not take, then those in the store ([`crate::ha::list_failovers`]).
    /// At most 1,001 stored rows are read at once (the API's largest page and one more).
    pub async fn failovers_page(
        &self,
        shard_id: Option<i64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<FailoverRecord>> {
        let store = self.store()?;
        crate::ha::list_failovers(&store, self.ha().ok(), shard_id, before, limit).await
    }

    /// Whether the monitor keeps failover records (of `shard_id`, or of any shard) the store
    /// could not take: while it keeps none, [`Term::failovers_page`] gives what the store holds.
    pub fn failovers_in_memory(&self, shard_id: Option<i64>) -> bool {
        self.ha()
            .is_ok_and(|h| h.shared().any_memory_only_failover(shard_id))
    }

    /// One failover record, from the store or the monitor's memory.
    pub async fn failover(&self, id: u64) -> Result<FailoverRecord> {
        let store = self.store()?;
        crate::ha::get_failover(&store, self.ha().ok(), id).await
    }

    /// Planned switchover of a shard to `target` or the best replica; returns its record.
    pub async fn switchover(&self, shard_id: i64, target: Option<i64>) -> Result<FailoverRecord> {
        self.store()?.get_shard(shard_id).await?;
        self.ha()?.switchover(shard_id, target).await
    }

    /// Holds back automatic failover of a shard for `seconds` (0 lifts the hold).
    pub async fn set_no_switch(&self, shard_id: i64, seconds: u64) -> Result<()> {
        self.store()?.get_shard(shard_id).await?;
        self.ha()?.set_no_switch_for(shard_id, seconds)
    }

    /// Counters of XA recovery (resolver and manual resolutions), for `/metrics`.
    pub fn xa_stats(&self) -> XaStats {
        self.inner.xa.stats()
    }

    /// The prepared Kunlun branches on every shard primary of a cluster, with their age and
    /// the decision logged for them (if any).
    pub async fn xa_in_doubt(&self, cluster_id: i64) -> Result<XaInDoubt> {
        let store = self.store()?;
        self.inner
            .xa
            .in_doubt(&store, self.inner.engine.config(), cluster_id)
            .await
    }

    /// Ends one in-doubt transaction of a cluster by hand, as far as the commit log allows,
    /// and records it in the audit trail under `user`.
    pub async fn xa_resolve(
        &self,
        cluster_id: i64,
        xid: &str,
        req: &XaResolveRequest,
        user: Option<&str>,
    ) -> Result<XaResolveResult> {
        let store = self.store()?;
        let config = self.inner.engine.config();
        self.inner
            .xa
            .resolve(&store, config, cluster_id, xid, req, user)
            .await
    }

    /// Stops every actor of the term and waits for them (at most `grace`; tasks still
    /// running after that are left to the runtime's shutdown). Idempotent.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(?grace, "the term's actors did not stop in time");
        }
    }

    /// `true` once every actor of the term has ended.
    pub fn actors_done(&self) -> bool {
        self.inner.tasks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use kunlun_meta::store::StoreConfig;

    use super::*;
    use crate::CoreConfig;

    fn unopened_engine() -> ClusterManager {
        let store = StoreConfig {
            connect_timeout: Duration::from_millis(100),
            ..StoreConfig::mysql(vec!["127.0.0.1:1".into()], "u", "p", "kunlun_metadata_db")
        };
        let cfg = CoreConfig {
            connect_retry_initial: Duration::from_millis(20),
            connect_retry_max: Duration::from_millis(50),
            ..CoreConfig::default()
        };
        ClusterManager::connect(cfg, store)
    }

    #[tokio::test]
    async fn the_monitor_waits_for_the_store_and_stops_with_the_manager() {
        let m = unopened_engine();
        let term = Term::standalone(&m);
        term.start_ha(HaConfig::default());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(matches!(term.ha(), Err(Error::Unavailable(_))));
        assert!(matches!(
            term.failovers_page(None, None, 10).await,
            Err(Error::Unavailable(_))
        ));
        assert!(matches!(
            m.failovers_page(None, None, 10).await,
            Err(Error::Unavailable(_))
        ));
        m.shutdown(Duration::from_secs(5)).await;
        assert!(!term.is_running(), "the engine's shutdown ends the term");
        term.shutdown(Duration::from_secs(5)).await;
        assert!(term.actors_done(), "every task joined");
    }

    #[tokio::test]
    async fn the_sync_waits_for_the_store_and_stops_with_the_manager() {
        let m = unopened_engine();
        let term = Term::standalone(&m);
        term.start_catalog_sync(Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(matches!(
            m.push_catalog(1).await,
            Err(Error::Unavailable(_))
        ));
        m.shutdown(Duration::from_secs(5)).await;
        term.shutdown(Duration::from_secs(5)).await;
        assert!(term.actors_done(), "every task joined");
    }

    #[tokio::test]
    async fn the_keeper_runs_only_with_an_interval_and_stops_with_the_term() {
        let m = unopened_engine();
        let term = Term::standalone(&m);
        let p = Provisioner::with_system_servers("/nonexistent/known_hosts".into());
        term.start_keeper(
            p.clone(),
            KeeperConfig::new(Duration::ZERO, 3, Duration::from_secs(60)),
        );
        assert!(
            term.keeper_status().is_none(),
            "a zero interval starts nothing"
        );
        term.start_keeper(
            p,
            KeeperConfig::new(Duration::from_millis(50), 3, Duration::from_secs(60)),
        );
        let st = term.keeper_status().expect("started");
        assert_eq!(st.stats.rounds, 0, "it waits for the store");
        term.shutdown(Duration::from_secs(5)).await;
        assert!(term.actors_done(), "every task joined");
        m.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn a_term_ends_alone_and_keeps_the_epoch_it_was_won_at() {
        let m = unopened_engine();
        let fence = TermFence {
            lease: "cluster_mgr".into(),
            holder: "127.0.0.1:1/t".into(),
            epoch: 7,
        };
        let term = Term::leader(&m, fence, None);
        assert_eq!(term.epoch(), Some(7));
        assert_eq!(Term::standalone(&m).epoch(), None);
        term.start_xa(XaConfig::from_core(m.config()));
        term.start_job_runner(
            Provisioner::with_system_servers("/nonexistent/known_hosts".into()),
            Duration::from_millis(50),
        );
        tokio::time::timeout(
            Duration::from_secs(2),
            term.shutdown(Duration::from_secs(5)),
        )
        .await
        .expect("the term's shutdown returns promptly");
        assert!(term.actors_done() && !term.is_running());
        assert!(matches!(term.ha_status(), Err(Error::Unavailable(_))));
        // The engine outlives its term.
        assert!(matches!(m.store(), Err(Error::Unavailable(_))));
        m.shutdown(Duration::from_secs(1)).await;
    }
}
