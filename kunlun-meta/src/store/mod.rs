//! The metadata store: diesel + diesel-async over an embedded SQLite file or a MySQL-compatible
//! metadata shard, one API for both.
//!
//! Invariants: every query is parameterised (a per-cluster table name is built only from a name
//! that passed [`crate::validate::name`] and is quoted as an identifier); each convenience
//! method below runs in its own transaction; repositories in [`repo`] compose inside one
//! [`Store::tx`].

mod config;
pub(crate) mod conn;
mod fence;
mod follow;
pub mod introspect;
mod open;
pub mod repo;
pub(crate) mod rows;
pub mod schema;
mod seeds;
mod version;

pub use config::{BackendConfig, BackendKind, StoreConfig, DEFAULT_MYSQL_DATABASE};
pub use conn::{Tx, TxFn};
pub use fence::{LeaseClock, WriteFence};
pub use follow::{FollowStatus, PrimaryMove};
pub use open::{MYSQL_MIGRATIONS, SQLITE_MIGRATIONS, SYSTEM_POOL_SIZE};
pub use seeds::{SeedAttempt, SeedOutcome, SeedReport};

use std::sync::{Arc, RwLock};
use std::time::Duration;

use conn::{Pools, Suspect};
use follow::{Follow, Slot, Target};

use crate::api;
use crate::error::{Error, Result};
use crate::model::{
    Cluster, ClusterPolicy, CompNode, Job, JobStatus, Machine, MachinePatch, NewJob, NewMachine,
    Shard, ShardNode,
};

/// How many times in all [`Store::tx`] runs a transaction the server keeps aborting for a lock
/// conflict (deadlock, lock wait timeout) before it gives up with [`Error::Conflict`].
pub const LOCK_CONFLICT_ATTEMPTS: u32 = 5;

/// Rolls `tx` back; a failure only costs the connection, which is then discarded.
async fn rollback(tx: Tx) {
    if let Err(re) = tx.rollback().await {
        tracing::warn!(error = %re, "rollback failed; the connection is discarded");
    }
}

/// The pause before running a transaction again: growing with the attempt, with jitter so that
/// the transactions that deadlocked each other do not meet again in step.
fn conflict_backoff(attempt: u32) -> Duration {
    let base_ms = 5u64 << attempt.min(6);
    let jitter_ms = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    ) % base_ms;
    Duration::from_millis(base_ms + jitter_ms)
}

/// A handle on the metadata store; cheap to clone, shared by every task.
///
/// Its connections come from one of the store's pools, its [`Lane`]: the shared one, or for a
/// handle from [`Store::system`] or [`Store::background`], a pool of its own.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    lane: Lane,
    /// Set on a leader term's handle ([`Store::fenced`]): every write checks the lease first.
    fence: Option<Arc<WriteFence>>,
}

/// Which pool a [`Store`] handle draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// `pool_size` connections: API requests and everything else.
    Shared,
    /// [`SYSTEM_POOL_SIZE`] connections: the leader lease only.
    System,
    /// `pool_size` connections: the leader's background actors (HA, XA, jobs, catalog sync,
    /// liveness), so a burst of API requests never delays a failover's metadata writes.
    Background,
}

struct Inner {
    /// Where statements go now; the primary-follower swaps it (MySQL).
    slot: Arc<Slot>,
    /// The primary-follower (MySQL only).
    follow: Option<Arc<Follow>>,
    timeout: Duration,
    cluster_tls: crate::tls::TlsSettings,
    /// Whether the MySQL connections are encrypted (always false on SQLite).
    encrypted: bool,
    /// SQLite: the change counter ([`Store::data_version`]).
    watch: Option<version::Watch>,
}

/// Where a failed store call was when it failed (see [`follow_decision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Getting a connection or `BEGIN`: nothing of the call ran.
    Begin,
    /// A statement inside a transaction: it is rolled back.
    Statement,
    /// `COMMIT` itself.
    Commit,
    /// A statement in autocommit mode, the `sent`-th of the call.
    Autocommit { sent: u32 },
}

/// What to do about a call that failed in `phase` with `suspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FollowDecision {
    /// Nothing took effect: wait for the (new) primary and run the call once more.
    Retry,
    /// It may or may not have taken effect: report that, never run it again.
    Unknown,
    /// Report the error (after asking the follower to look, when there was a suspect).
    Fail,
}

/// The retry rule of a call that failed on the metadata primary: a call runs at most twice,
/// and a second time only when nothing of the first can have taken effect: the failure came
/// before any statement, inside a transaction (rolled back), as a read-only refusal of
/// `COMMIT` or of the first autocommit statement. A connection lost during `COMMIT` or after an
/// autocommit statement was sent leaves the outcome unknown: reported, never repeated, so a
/// change is never applied twice.
fn follow_decision(phase: Phase, suspect: Option<Suspect>, retried: bool) -> FollowDecision {
    use FollowDecision::*;
    let Some(s) = suspect else { return Fail };
    let d = match (phase, s) {
        (Phase::Begin, _) | (Phase::Statement, _) => Retry,
        (Phase::Commit, Suspect::ReadOnly) => Retry,
        (Phase::Commit, Suspect::Lost) => Unknown,
        (Phase::Autocommit { sent: 0 }, _) => Retry,
        (Phase::Autocommit { sent: 1 }, Suspect::ReadOnly) => Retry,
        (Phase::Autocommit { .. }, Suspect::Lost) => Unknown,
        (Phase::Autocommit { .. }, Suspect::ReadOnly) => Fail,
    };
    match d {
        Retry if retried => Fail,
        d => d,
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.describe())
            .finish()
    }
}

impl Store {
    /// Opens the store: finds the primary (MySQL), creates the database or file if missing and
    /// runs the embedded migrations.
    pub async fn open(cfg: &StoreConfig) -> Result<Store> {
        if cfg.connect_timeout.is_zero() {
            return Err(Error::Invalid("connect_timeout must be positive".into()));
        }
        let opened = match &cfg.backend {
            BackendConfig::Sqlite { path } => {
                open::open_sqlite(path, cfg.pool_size, cfg.connect_timeout).await?
            }
            BackendConfig::Mysql {
                seeds,
                user,
                password,
                database,
            } => {
                open::open_mysql(
                    seeds,
                    user,
                    password,
                    database,
                    cfg.pool_size,
                    cfg.connect_timeout,
                    &cfg.tls,
                )
                .await?
            }
        };
        tracing::info!(store = %opened.describe, "metadata store open");
        let (seeds, primary) = match &cfg.backend {
            BackendConfig::Mysql { seeds, .. } => (
                seeds.clone(),
                opened.mysql.as_ref().map(|(_, r)| r.chosen.clone()),
            ),
            BackendConfig::Sqlite { .. } => (Vec::new(), None),
        };
        let slot = Arc::new(Slot {
            target: RwLock::new(Arc::new(Target {
                lanes: opened.lanes,
                primary,
                describe: opened.describe,
            })),
        });
        let follow = opened.mysql.map(|(connector, report)| {
            Arc::new(Follow::new(
                connector,
                seeds,
                report,
                cfg.primary_wait,
                cfg.primary_check,
            ))
        });
        if let Some(f) = &follow {
            tokio::spawn(follow::watch(Arc::downgrade(&slot), f.clone()));
        }
        Ok(Store {
            inner: Arc::new(Inner {
                slot,
                follow,
                timeout: cfg.connect_timeout,
                cluster_tls: cfg.cluster_tls.clone(),
                encrypted: opened.encrypted,
                watch: opened.watch,
            }),
            lane: Lane::Shared,
            fence: None,
        })
    }

    /// SQLite's change counter: equal readings mean nothing was committed in between, by any
    /// process (32 bits, wrapping). A few microseconds, callable on an async worker (see
    /// `store/version.rs`); `None` on MySQL and whenever it cannot be read at once.
    pub fn data_version(&self) -> Option<u64> {
        self.inner.watch.as_ref().and_then(version::Watch::version)
    }

    /// The same store over its system pool ([`SYSTEM_POOL_SIZE`] connections nobody else uses):
    /// for the leader lease, which must renew in time however many API requests wait for the
    /// shared pool. On SQLite a write here still queues for the file's one write lock (up to
    /// `busy_timeout`), but never behind readers, which WAL lets run alongside.
    pub fn system(&self) -> Store {
        self.on(Lane::System)
    }

    /// The same store over the background actors' pool (see [`Lane::Background`]).
    pub fn background(&self) -> Store {
        self.on(Lane::Background)
    }

    fn on(&self, lane: Lane) -> Store {
        Store {
            inner: self.inner.clone(),
            lane,
            fence: self.fence.clone(),
        }
    }

    /// The same handle with every write made conditional on `fence`: a write transaction (and
    /// an autocommit run) first checks the lease clock, then reads the lease row in the same
    /// transaction (shared lock on MySQL, so no takeover can commit before this transaction
    /// ends) and fails with [`Error::Deposed`], writing nothing, when the term has ended.
    /// Reads are not checked. A leader's term hands its actors such a handle.
    pub fn fenced(&self, fence: WriteFence) -> Store {
        Store {
            inner: self.inner.clone(),
            lane: self.lane,
            fence: Some(Arc::new(fence)),
        }
    }

    /// The fence this handle's writes carry, if any.
    pub fn fence(&self) -> Option<&WriteFence> {
        self.fence.as_deref()
    }

    /// For a step that changes something outside the store (a node promoted, a server
    /// started): fails with [`Error::Deposed`] when this handle is fenced and its leader's
    /// clock no longer vouches for the lease. No statement is run; unfenced handles pass.
    pub fn check_term(&self) -> Result<()> {
        match self.fence.as_deref() {
            Some(f) => f.check_clock(),
            None => Ok(()),
        }
    }

    /// The pool this handle draws from.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    fn pools(&self) -> Pools {
        let t = self.inner.slot.current();
        match self.lane {
            Lane::Shared => t.lanes.shared.clone(),
            Lane::System => t.lanes.system.clone(),
            Lane::Background => t.lanes.background.clone(),
        }
    }

    /// The backend in use.
    pub fn kind(&self) -> BackendKind {
        self.inner.slot.current().lanes.shared.kind()
    }

    /// Where the metadata lives now, e.g. `sqlite:/abs/path` or `mysql://user@host:port/db`
    /// (never a password); on MySQL it names the primary the store follows.
    pub fn describe(&self) -> String {
        self.inner.slot.current().describe.clone()
    }

    /// `host:port` of the metadata primary the store's statements go to (MySQL), `None` on
    /// SQLite.
    pub fn primary(&self) -> Option<String> {
        self.inner.slot.current().primary.clone()
    }

    /// What the primary-follower knows: the primary, since when, where it looks, its last
    /// moves (MySQL); `None` on SQLite.
    pub fn follow_status(&self) -> Option<FollowStatus> {
        self.inner.follow.as_ref().map(|f| f.status())
    }

    /// Checks the metadata primary now (a failover just promoted a node, say) and waits until
    /// a check that started after this call found a writable one, moving the store there if it
    /// is another node; returns its `host:port`. [`Error::Unavailable`] when none is found
    /// within the store's `primary_wait`; on SQLite `Ok` with an empty string.
    pub async fn follow_now(&self, reason: &str) -> Result<String> {
        let Some(f) = &self.inner.follow else {
            return Ok(String::new());
        };
        let n = f.ask(reason);
        if f.wait_primary(n).await {
            Ok(self.primary().unwrap_or_default())
        } else {
            Err(Error::Unavailable(format!(
                "no writable metadata primary found within {:?} ({reason})",
                f.wait
            )))
        }
    }

    /// Asks the follower to look at the primary because of `e` and, for a [`Retry`]
    /// decision, waits for it: `Ok` means run the call again, `Err` is what to report.
    ///
    /// [`Retry`]: FollowDecision::Retry
    async fn after_failure(
        &self,
        phase: Phase,
        suspect: Option<Suspect>,
        e: Error,
        retried: &mut bool,
    ) -> Result<()> {
        let (Some(f), Some(s)) = (&self.inner.follow, suspect) else {
            return Err(e);
        };
        let primary = self.primary().unwrap_or_default();
        let what = match s {
            Suspect::ReadOnly => "refused as read-only",
            Suspect::Lost => "lost its connection",
        };
        let n = f.ask(&format!("a statement on {primary} {what}: {e}"));
        match follow_decision(phase, suspect, *retried) {
            FollowDecision::Retry => {
                *retried = true;
                if f.wait_primary(n).await {
                    tracing::info!(from = %primary, to = %self.primary().unwrap_or_default(), error = %e, "running a metadata call again after the primary check");
                    Ok(())
                } else {
                    Err(Error::Unavailable(format!(
                        "{e} (no writable metadata primary found within {:?})",
                        f.wait
                    )))
                }
            }
            FollowDecision::Unknown => Err(Error::Unavailable(format!(
                "the metadata primary {primary} was lost while the change was being committed: \
                 it may or may not be stored, so it is not run again (it could be applied \
                 twice); read it back before repeating it: {e}"
            ))),
            FollowDecision::Fail => Err(e),
        }
    }

    /// TLS settings for the manager's connections to the clusters' compute nodes (see
    /// [`StoreConfig::cluster_tls`]).
    pub fn cluster_tls(&self) -> &crate::tls::TlsSettings {
        &self.inner.cluster_tls
    }

    /// Whether the connections to a MySQL metadata store are TLS-encrypted (`meta_tls` gave
    /// TLS, or `prefer` found a server offering it); false on SQLite.
    pub fn encrypted(&self) -> bool {
        self.inner.encrypted
    }

    /// Which seed the last discovery chose and why the others were not (MySQL only).
    pub fn seed_report(&self) -> Option<SeedReport> {
        self.inner.follow.as_ref().map(|f| f.report())
    }

    /// Checks that the store answers; [`Error::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        self.autocommit(async |tx| tx.batch("SELECT 1").await).await
    }

    /// SQLite: moves the write-ahead log into the database file and truncates it, so rows
    /// deleted with `secure_delete` (a cluster's passwords) leave no copy in the `-wal` file.
    /// A reader holding an old snapshot can keep part of the log; that is retried by the next
    /// call. MySQL: nothing to do.
    pub async fn checkpoint(&self) -> Result<()> {
        match self.kind() {
            BackendKind::Sqlite => {
                self.autocommit(async |tx| tx.batch("PRAGMA wal_checkpoint(TRUNCATE)").await)
                    .await
            }
            BackendKind::Mysql => Ok(()),
        }
    }

    /// Tables of the connected database and their columns (see [`introspect::tables`]).
    pub async fn tables(&self) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
        self.read(async |tx| introspect::tables(tx).await).await
    }

    /// Runs `f` inside one transaction: committed when it returns `Ok`, rolled back otherwise.
    ///
    /// When the server aborts a statement for a lock conflict (MySQL deadlock or lock wait
    /// timeout) the transaction is rolled back and `f` runs again on a fresh one, at most
    /// [`LOCK_CONFLICT_ATTEMPTS`] times in all; hence `F: Clone`, and whatever `f` does besides
    /// the store must bear being repeated. A transaction whose statement was aborted never
    /// commits, even if `f` ignored the error.
    ///
    /// ```ignore
    /// store.tx(async |tx| {
    ///     let m = repo::machines::insert(tx, &new_machine).await?;
    ///     repo::jobs::create(tx, &new_job).await?;
    ///     Ok(m)
    /// }).await?;
    /// ```
    pub async fn tx<R, F>(&self, f: F) -> Result<R>
    where
        for<'r> F: AsyncFnOnce(&'r mut Tx) -> Result<R>
            + TxFn<&'r mut Tx, Result<R>, Fut: Send>
            + Clone
            + Send,
        R: Send,
    {
        self.run_tx(false, f).await
    }

    /// Like [`Store::tx`] for reads only: a consistent snapshot without taking write locks.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        for<'r> F: AsyncFnOnce(&'r mut Tx) -> Result<R>
            + TxFn<&'r mut Tx, Result<R>, Fut: Send>
            + Clone
            + Send,
        R: Send,
    {
        self.run_tx(true, f).await
    }

    /// Runs `f` in one transaction, again after a lock conflict (at most
    /// [`LOCK_CONFLICT_ATTEMPTS`] times) and once more after the metadata primary failed
    /// under it when nothing can have been stored ([`follow_decision`]).
    async fn run_tx<R, F>(&self, read_only: bool, f: F) -> Result<R>
    where
        for<'r> F: AsyncFnOnce(&'r mut Tx) -> Result<R>
            + TxFn<&'r mut Tx, Result<R>, Fut: Send>
            + Clone
            + Send,
        R: Send,
    {
        let fence = self.fence.as_deref().filter(|_| !read_only);
        if let Some(fence) = fence {
            fence.check_clock()?;
        }
        let mut attempt = 1;
        let mut retried = false;
        loop {
            let mut tx = match Tx::begin(&self.pools(), self.inner.timeout, read_only).await {
                Ok(tx) => tx,
                Err(e) => {
                    let s = Suspect::of_begin(&e);
                    self.after_failure(Phase::Begin, s, e, &mut retried).await?;
                    continue;
                }
            };
            let fenced = match fence {
                Some(fence) => fence.check_in(&mut tx).await,
                None => Ok(()),
            };
            let r = match fenced {
                Ok(()) => f.clone()(&mut tx).await,
                Err(e) => Err(e),
            };
            if !tx.lock_conflict() {
                // A statement that failed because the server is not the primary any more:
                // nothing of this transaction is kept, even if `f` ignored the error.
                if let Some(s) = tx.suspect() {
                    rollback(tx).await;
                    let e = match r {
                        Err(e) => e,
                        Ok(_) => {
                            Error::Unavailable("a statement failed on the metadata primary".into())
                        }
                    };
                    self.after_failure(Phase::Statement, Some(s), e, &mut retried)
                        .await?;
                    continue;
                }
                return match r {
                    Ok(r) => match tx.commit_checked().await {
                        Ok(()) => Ok(r),
                        Err((e, s)) => {
                            self.after_failure(Phase::Commit, s, e, &mut retried)
                                .await?;
                            continue;
                        }
                    },
                    Err(e) => {
                        rollback(tx).await;
                        Err(e)
                    }
                };
            }
            rollback(tx).await;
            if attempt >= LOCK_CONFLICT_ATTEMPTS {
                let why = match r {
                    Err(e) => e.to_string(),
                    Ok(_) => "a statement was aborted".into(),
                };
                return Err(Error::Conflict(format!(
                    "the metadata store aborted the transaction for a lock conflict {attempt} \
                     times; retry: {why}"
                )));
            }
            tracing::debug!(
                attempt,
                "transaction aborted for a lock conflict; running it again"
            );
            tokio::time::sleep(conflict_backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Runs `f` on one connection in autocommit mode (each statement commits on its own).
    ///
    /// When the metadata primary fails under it, `f` runs once more on the new primary only if
    /// nothing of the first run can have taken effect (no statement sent, or the first one
    /// refused as read-only); hence `F: Clone`.
    pub async fn autocommit<R, F>(&self, f: F) -> Result<R>
    where
        for<'r> F: AsyncFnOnce(&'r mut Tx) -> Result<R>
            + TxFn<&'r mut Tx, Result<R>, Fut: Send>
            + Clone
            + Send,
        R: Send,
    {
        if let Some(fence) = self.fence.as_deref() {
            fence.check_clock()?;
        }
        let mut retried = false;
        loop {
            let mut tx = match Tx::autocommit(&self.pools(), self.inner.timeout).await {
                Ok(tx) => tx,
                Err(e) => {
                    let s = Suspect::of_begin(&e);
                    self.after_failure(Phase::Begin, s, e, &mut retried).await?;
                    continue;
                }
            };
            // Autocommit: the lease is checked just before (not atomically with) `f`'s
            // statements; the clock check above bounds what a late statement can be.
            let fenced = match self.fence.as_deref() {
                Some(fence) => fence.check_in(&mut tx).await,
                None => Ok(()),
            };
            let r = match fenced {
                Ok(()) => f.clone()(&mut tx).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let (s, sent) = (tx.suspect(), tx.sent());
                    drop(tx);
                    self.after_failure(Phase::Autocommit { sent }, s, e, &mut retried)
                        .await?;
                }
            }
        }
    }

    /// Registers a machine; [`Error::Conflict`] if `(hostaddr, machine_type)` exists.
    pub async fn insert_machine(&self, m: &NewMachine) -> Result<Machine> {
        self.tx(async |tx| repo::machines::insert(tx, m).await)
            .await
    }

    /// Every machine, by id.
    pub async fn list_machines(&self) -> Result<Vec<Machine>> {
        self.read(async |tx| repo::machines::list(tx).await).await
    }

    /// One machine; [`Error::NotFound`] if unknown.
    pub async fn get_machine(&self, id: i64) -> Result<Machine> {
        self.read(async |tx| repo::machines::get(tx, id).await)
            .await
    }

    /// Changes the fields the patch names.
    pub async fn update_machine(&self, id: i64, p: &MachinePatch) -> Result<Machine> {
        self.tx(async |tx| repo::machines::update(tx, id, p).await)
            .await
    }

    /// Removes a machine; [`Error::Conflict`] while it has used or installing ports.
    pub async fn delete_machine(&self, id: i64) -> Result<()> {
        self.tx(async |tx| repo::machines::delete(tx, id).await)
            .await
    }

    /// One page of machines with their probe facts, by id (see [`api::PageQuery`]);
    /// [`Error::Invalid`] for a `limit` out of range.
    pub async fn machine_infos_page(
        &self,
        q: &api::PageQuery,
    ) -> Result<api::Page<crate::model::MachineInfo>> {
        let limit = q.validate()?;
        self.read(async |tx| repo::machines::list_info_page(tx, q.after, limit).await)
            .await
    }

    /// One page of clusters, by id (see [`api::PageQuery`]).
    pub async fn clusters_page(&self, q: &api::PageQuery) -> Result<api::Page<Cluster>> {
        let limit = q.validate()?;
        self.read(async |tx| repo::clusters::list_page(tx, q.after, limit).await)
            .await
    }

    /// Every cluster, by id.
    pub async fn list_clusters(&self) -> Result<Vec<Cluster>> {
        self.read(async |tx| repo::clusters::list(tx).await).await
    }

    /// One cluster by id.
    pub async fn get_cluster(&self, id: i64) -> Result<Cluster> {
        self.read(async |tx| repo::clusters::get(tx, id).await)
            .await
    }

    /// One cluster by name.
    pub async fn get_cluster_by_name(&self, name: &str) -> Result<Cluster> {
        self.read(async |tx| repo::clusters::get_by_name(tx, name).await)
            .await
    }

    /// A cluster's self-healing switches (the default, all on, when none was set). The
    /// cluster must exist (`NotFound` otherwise).
    pub async fn cluster_policy(&self, cluster_id: i64) -> Result<ClusterPolicy> {
        self.read(async |tx| {
            repo::clusters::get(tx, cluster_id).await?;
            repo::policy::get(tx, cluster_id).await
        })
        .await
    }

    /// Every cluster's switches that differ from the default, by cluster id.
    pub async fn cluster_policies(&self) -> Result<std::collections::HashMap<i64, ClusterPolicy>> {
        self.read(async |tx| repo::policy::list_set(tx).await).await
    }

    /// Stores a cluster's switches; `NotFound` when the cluster does not exist.
    pub async fn set_cluster_policy(&self, policy: ClusterPolicy) -> Result<ClusterPolicy> {
        self.tx(async move |tx| {
            repo::clusters::get(tx, policy.cluster_id).await?;
            repo::policy::set(tx, &policy).await?;
            Ok(policy)
        })
        .await
    }

    /// Changes the switches `patch` names of a cluster's policy in one transaction (a
    /// concurrent change of the other switch is kept) and returns the policy now stored;
    /// `NotFound` when the cluster does not exist.
    pub async fn update_cluster_policy(
        &self,
        cluster_id: i64,
        patch: api::UpdateClusterPolicy,
    ) -> Result<ClusterPolicy> {
        self.tx(async move |tx| {
            repo::clusters::get(tx, cluster_id).await?;
            let p = patch.apply(repo::policy::get(tx, cluster_id).await?);
            repo::policy::set(tx, &p).await?;
            Ok(p)
        })
        .await
    }

    /// A cluster with its shards, their nodes and its compute nodes, read in one transaction.
    pub async fn cluster_detail(&self, id: i64) -> Result<api::ClusterDetail> {
        self.read(async |tx| {
            let cluster = repo::clusters::get(tx, id).await?;
            let shards = repo::shards::list(tx, Some(id)).await?;
            let mut nodes = repo::nodes::list_by_cluster(tx, id).await?;
            let comp_nodes = repo::comps::list(tx, Some(id)).await?;
            let shards = shards
                .into_iter()
                .map(|shard| {
                    let (mine, rest): (Vec<_>, Vec<_>) =
                        nodes.drain(..).partition(|n| n.shard_id == shard.id);
                    nodes = rest;
                    api::ShardDetail { shard, nodes: mine }
                })
                .collect();
            Ok(api::ClusterDetail {
                cluster,
                shards,
                comp_nodes,
            })
        })
        .await
    }

    /// Shards, of one cluster or all.
    pub async fn list_shards(&self, cluster_id: Option<i64>) -> Result<Vec<Shard>> {
        self.read(async |tx| repo::shards::list(tx, cluster_id).await)
            .await
    }

    /// One shard.
    pub async fn get_shard(&self, id: i64) -> Result<Shard> {
        self.read(async |tx| repo::shards::get(tx, id).await).await
    }

    /// Storage nodes, of one shard or all.
    pub async fn list_shard_nodes(&self, shard_id: Option<i64>) -> Result<Vec<ShardNode>> {
        self.read(async |tx| repo::nodes::list(tx, shard_id).await)
            .await
    }

    /// Compute nodes, of one cluster or all.
    pub async fn list_comp_nodes(&self, cluster_id: Option<i64>) -> Result<Vec<CompNode>> {
        self.read(async |tx| repo::comps::list(tx, cluster_id).await)
            .await
    }

    /// Records a new job in state `not_started`.
    pub async fn create_job(&self, j: &NewJob) -> Result<Job> {
        self.tx(async |tx| repo::jobs::create(tx, j).await).await
    }

    /// One job.
    pub async fn get_job(&self, id: i64) -> Result<Job> {
        self.read(async |tx| repo::jobs::get(tx, id).await).await
    }

    /// Jobs, newest first; limit 100 by default, at most 1000.
    pub async fn list_jobs(&self, q: &api::JobQuery) -> Result<Vec<Job>> {
        self.read(async |tx| repo::jobs::list(tx, q).await).await
    }

    /// One page of jobs, newest first (see [`api::JobQuery`]); [`Error::Invalid`] for a
    /// `limit` out of range or a bad `job_type`.
    pub async fn jobs_page(&self, q: &api::JobQuery) -> Result<api::Page<Job>> {
        q.validate()?;
        self.read(async |tx| repo::jobs::list_page(tx, q).await)
            .await
    }

    /// Claims the oldest `not_started` job of one of `types` (all types when empty) by moving
    /// it to `ongoing` with a compare-and-swap: of concurrent claimers exactly one gets it.
    pub async fn claim_next_job(&self, types: &[&str]) -> Result<Option<Job>> {
        // Autocommit: each compare-and-swap sees the latest committed state.
        self.autocommit(async |tx| repo::jobs::claim_next(tx, types).await)
            .await
    }

    /// Replaces the memo of a job still `ongoing`; false when it is not (see
    /// [`repo::jobs::update_memo_if_ongoing`]).
    pub async fn update_ongoing_memo(&self, id: i64, memo: &serde_json::Value) -> Result<bool> {
        self.tx(async |tx| repo::jobs::update_memo_if_ongoing(tx, id, memo).await)
            .await
    }

    /// Sets a job's status and (when given) memo; a final status also sets `when_ended`.
    pub async fn update_job(
        &self,
        id: i64,
        status: JobStatus,
        memo: Option<&serde_json::Value>,
    ) -> Result<Job> {
        self.tx(async |tx| repo::jobs::update(tx, id, status, memo).await)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_runs_again_only_when_nothing_of_it_can_have_taken_effect() {
        use FollowDecision::*;
        let (ro, lost) = (Some(Suspect::ReadOnly), Some(Suspect::Lost));
        // Before any statement, or inside a transaction (rolled back): once more.
        assert_eq!(follow_decision(Phase::Begin, lost, false), Retry);
        assert_eq!(follow_decision(Phase::Statement, lost, false), Retry);
        assert_eq!(follow_decision(Phase::Statement, ro, false), Retry);
        // COMMIT refused as read-only did nothing; COMMIT lost may have committed.
        assert_eq!(follow_decision(Phase::Commit, ro, false), Retry);
        assert_eq!(follow_decision(Phase::Commit, lost, false), Unknown);
        // Autocommit: only before the first statement took effect.
        assert_eq!(
            follow_decision(Phase::Autocommit { sent: 0 }, lost, false),
            Retry
        );
        assert_eq!(
            follow_decision(Phase::Autocommit { sent: 1 }, ro, false),
            Retry
        );
        assert_eq!(
            follow_decision(Phase::Autocommit { sent: 1 }, lost, false),
            Unknown
        );
        assert_eq!(
            follow_decision(Phase::Autocommit { sent: 2 }, ro, false),
            Fail
        );
        assert_eq!(
            follow_decision(Phase::Autocommit { sent: 3 }, lost, false),
            Unknown
        );
        // At most once, and never without a sign of a primary change.
        assert_eq!(follow_decision(Phase::Statement, lost, true), Fail);
        assert_eq!(follow_decision(Phase::Commit, lost, true), Unknown);
        assert_eq!(follow_decision(Phase::Statement, None, false), Fail);
        assert_eq!(follow_decision(Phase::Commit, None, false), Fail);
    }
}
