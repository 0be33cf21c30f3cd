//! The `ClusterManager` handle: the always-on engine of every instance, leader or follower.
//! It owns the metadata store slot (with the loop that opens it), health, the settings, and
//! the calls that need only the store: reads (topology, machines, jobs, failover records),
//! machine registration and job acceptance (which writes a row). Cheap to clone (an `Arc`
//! inside); every clone is the same engine.
//!
//! The background actors (HA monitor, XA resolver, catalog sync, machine liveness, job
//! runner) are not here: they belong to a leadership term, [`crate::Term`], built over an
//! engine while this instance leads (or for the life of the process when nothing is elected).
//! The name stays `ClusterManager` (not `Engine`) because every embedding, handler and test
//! holds one under that name; the split is in what it can do, not in what it is called.
//!
//! Invariant: the engine's own background task (the connect loop) is spawned on `tasks` and
//! stops when `cancel` fires, so [`ClusterManager::shutdown`] leaves nothing of it running,
//! and a term's token is a child of `cancel`, so shutting the engine down stops every term's
//! actors too. Until the store is open, every call that needs it fails with
//! [`Error::Unavailable`] instead of blocking.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kunlun_meta::api::Health;
use kunlun_meta::store::{BackendKind, Store, StoreConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::CoreConfig;
use crate::error::{Error, Result};

/// The always-on engine; see the module doc.
#[derive(Clone)]
pub struct ClusterManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: CoreConfig,
    backend: BackendKind,
    store: OnceLock<Store>,
    /// Why the last attempt to open the store failed (cleared once open).
    connect_error: Mutex<Option<String>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// SSH settings for probing machines at registration ([`ClusterManager::set_provisioner`]).
    provisioner: OnceLock<crate::fleet::Provisioner>,
    /// Wakes the job runner of a term running on this engine when a job was accepted.
    job_wake: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for ClusterManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterManager")
            .field("backend", &self.inner.backend)
            .field("store_open", &self.inner.store.get().is_some())
            .finish()
    }
}

impl ClusterManager {
    fn with_parts(config: CoreConfig, backend: BackendKind) -> Self {
        ClusterManager {
            inner: Arc::new(Inner {
                config,
                backend,
                store: OnceLock::new(),
                connect_error: Mutex::new(Some("not connected yet".into())),
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
                provisioner: OnceLock::new(),
                job_wake: Arc::new(tokio::sync::Notify::new()),
            }),
        }
    }

    /// What a term's job runner waits on besides its poll interval (see
    /// [`crate::jobs::JobRunner::run_forever_woken`]).
    pub(crate) fn job_wake(&self) -> Arc<tokio::sync::Notify> {
        self.inner.job_wake.clone()
    }

    /// Tells a job runner on this instance (if a term runs here) that a job row was just
    /// written, so it claims it now rather than at its next poll. On a follower nothing
    /// listens: the leader's runner finds the row by polling.
    pub fn wake_job_runner(&self) {
        self.inner.job_wake.notify_one();
    }

    /// A manager over a store that is already open.
    pub fn new(config: CoreConfig, store: Store) -> Self {
        let m = Self::with_parts(config, store.kind());
        m.set_store(store);
        m
    }

    /// A manager that opens the store in the background, retrying with backoff (each failure
    /// logged) until it succeeds or the manager shuts down. Returns at once; meanwhile calls
    /// that need the store fail with [`Error::Unavailable`] and [`health`](Self::health)
    /// reports degraded. Must be called inside a Tokio runtime.
    pub fn connect(config: CoreConfig, store_config: StoreConfig) -> Self {
        let backend = match store_config.backend {
            kunlun_meta::store::BackendConfig::Sqlite { .. } => BackendKind::Sqlite,
            kunlun_meta::store::BackendConfig::Mysql { .. } => BackendKind::Mysql,
        };
        let m = Self::with_parts(config, backend);
        let me = m.clone();
        m.inner
            .tasks
            .spawn(async move { me.open_store_loop(store_config).await });
        m
    }

    async fn open_store_loop(self, store_config: StoreConfig) {
        let mut pause = self.inner.config.connect_retry_initial;
        let mut attempt = 1u32;
        loop {
            let opened = tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                r = Store::open(&store_config) => r,
            };
            match opened {
                Ok(store) => {
                    tracing::info!(attempt, "metadata store ready");
                    if let Some(report) = store.seed_report() {
                        tracing::info!(primary = %report.chosen, "metadata shard primary chosen");
                        for a in report.rejected() {
                            tracing::info!(seed = %a.seed, reason = %a.outcome, "metadata seed not chosen");
                        }
                    }
                    self.set_store(store);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, retry_in = ?pause, "cannot open the metadata store; retrying");
                    self.set_connect_error(e.to_string());
                }
            }
            tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(self.inner.config.connect_retry_max);
            attempt = attempt.saturating_add(1);
        }
    }

    fn set_store(&self, store: Store) {
        // Only the connect task or `new` sets it, once; a second value is impossible.
        let _ = self.inner.store.set(store);
        self.set_connect_error_opt(None);
    }

    fn set_connect_error(&self, e: String) {
        self.set_connect_error_opt(Some(e));
    }

    fn set_connect_error_opt(&self, e: Option<String>) {
        match self.inner.connect_error.lock() {
            Ok(mut g) => *g = e,
            Err(poisoned) => *poisoned.into_inner() = e,
        }
    }

    fn connect_error(&self) -> String {
        let g = match self.inner.connect_error.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        g.unwrap_or_else(|| "not connected yet".into())
    }

    /// The open store, or `Unavailable` while it is still being opened.
    pub fn store(&self) -> Result<&Store> {
        if self.inner.cancel.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.inner.store.get().ok_or_else(|| {
            Error::Unavailable(format!(
                "metadata store unavailable: not open yet ({})",
                self.connect_error()
            ))
        })
    }

    /// Sets the SSH settings (executor, recipes, `known_hosts`, host key policy) machine
    /// registration probes with. Once; a second call is ignored.
    pub fn set_provisioner(&self, p: crate::fleet::Provisioner) {
        if self.inner.provisioner.set(p).is_err() {
            tracing::warn!("set_provisioner called twice; the first provisioner stays");
        }
    }

    /// The provisioner set by [`set_provisioner`](Self::set_provisioner), if any.
    pub fn probe_provisioner(&self) -> Option<&crate::fleet::Provisioner> {
        self.inner.provisioner.get()
    }

    /// The engine's settings.
    pub fn config(&self) -> &CoreConfig {
        &self.inner.config
    }

    /// Whether this manager works on cluster `cluster_id` (`clusters_to_serve`: every
    /// cluster when empty). Its actors leave the other clusters alone: their shards are not
    /// probed or failed over, their XA branches not resolved, their catalogs not pushed and
    /// their jobs not claimed (a job row for one is still accepted, for a manager serving it).
    pub fn serves_cluster(&self, cluster_id: i64) -> bool {
        self.inner.config.clusters_to_serve.serves(cluster_id)
    }

    /// Which backend the metadata store runs on.
    pub fn backend(&self) -> BackendKind {
        self.inner.backend
    }

    /// A token cancelled when the engine shuts down (for terms and tasks of embedding
    /// applications).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.inner.cancel.child_token()
    }

    /// `GET /v1/meta`: the metadata store this instance uses and, on a MySQL metadata shard,
    /// its nodes as recorded and as probed now (see [`crate::ha::meta::observe`]).
    pub async fn meta_shard(&self) -> Result<kunlun_meta::api::MetaShard> {
        let store = self.store()?;
        let opts = crate::storage::StorageOptions {
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(2),
        };
        Ok(crate::ha::meta::observe::describe(store, &self.inner.config.meta_shard, opts).await)
    }

    /// Pings the store within the configured deadline; `Ok` means the store answers now.
    pub async fn ping_store(&self) -> Result<()> {
        let store = self.store()?;
        let deadline = self.inner.config.store_ping_timeout;
        match tokio::time::timeout(deadline, store.ping()).await {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(Error::Unavailable(format!(
                "metadata store unavailable: no answer to ping within {deadline:?}"
            ))),
        }
    }

    /// Health of the manager: `ok`, or `degraded` with the reason while the store is down.
    pub async fn health(&self) -> Health {
        let (status, reason) = match self.ping_store().await {
            Ok(()) => ("ok", None),
            Err(e) => ("degraded", Some(e.to_string())),
        };
        Health {
            status: status.to_string(),
            store: self.inner.backend.as_str().to_string(),
            reason,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Stops the engine's background task (and cancels every term over it: their tokens are
    /// children of the engine's) and waits for it to finish (at most `grace`; tasks still
    /// running after that are left to the runtime's shutdown). Idempotent.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(?grace, "background tasks did not stop in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable_store() -> StoreConfig {
        StoreConfig {
            connect_timeout: Duration::from_millis(200),
            ..StoreConfig::mysql(
                vec!["127.0.0.1:1".into()],
                "u",
                "secret-pw",
                "kunlun_metadata_db",
            )
        }
    }

    fn fast_retry() -> CoreConfig {
        CoreConfig {
            connect_retry_initial: Duration::from_millis(20),
            connect_retry_max: Duration::from_millis(50),
            ..CoreConfig::default()
        }
    }

    #[tokio::test]
    async fn the_engine_serves_the_clusters_of_its_config() {
        let all = ClusterManager::connect(fast_retry(), unreachable_store());
        assert!(all.serves_cluster(1) && all.serves_cluster(99));
        let cfg = CoreConfig {
            clusters_to_serve: crate::ClusterScope::only(&[7]).expect("scope"),
            ..fast_retry()
        };
        let one = ClusterManager::connect(cfg, unreachable_store());
        assert!(one.serves_cluster(7) && !one.serves_cluster(1));
        all.shutdown(Duration::from_secs(1)).await;
        one.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn unopened_store_is_unavailable_and_health_degraded() {
        let m = ClusterManager::connect(fast_retry(), unreachable_store());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(matches!(m.store(), Err(Error::Unavailable(_))));
        assert!(matches!(
            m.list_machines().await,
            Err(Error::Unavailable(_))
        ));
        let h = m.health().await;
        assert_eq!((h.status.as_str(), h.store.as_str()), ("degraded", "mysql"));
        let reason = h.reason.unwrap_or_default();
        assert!(reason.contains("not open yet"), "{reason}");
        assert!(!reason.contains("secret-pw"), "{reason}");
        m.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn shutdown_cancels_and_joins_the_connect_loop() {
        let m = ClusterManager::connect(fast_retry(), unreachable_store());
        let clone = m.clone();
        tokio::time::timeout(Duration::from_secs(2), m.shutdown(Duration::from_secs(5)))
            .await
            .expect("shutdown returns promptly");
        assert!(clone.inner.tasks.is_closed() && clone.inner.tasks.is_empty());
        assert!(matches!(clone.store(), Err(Error::ShuttingDown)));
        assert_eq!(clone.health().await.status, "degraded");
        // A second shutdown is harmless.
        clone.shutdown(Duration::from_millis(10)).await;
    }

    #[tokio::test]
    async fn invalid_input_is_refused_before_the_store_is_needed() {
        let m = ClusterManager::connect(fast_retry(), unreachable_store());
        let bad = kunlun_meta::api::UpdateMachine::default();
        assert!(matches!(
            m.update_machine(1, &bad).await,
            Err(Error::Invalid(_))
        ));
        let q = kunlun_meta::api::JobQuery {
            limit: Some(0),
            ..Default::default()
        };
        assert!(matches!(m.list_jobs(&q).await, Err(Error::Invalid(_))));
        m.shutdown(Duration::from_secs(1)).await;
    }
}
