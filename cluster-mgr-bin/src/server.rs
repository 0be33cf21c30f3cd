//! Start-up and shutdown of the daemon: config → store config → `ClusterManager` → actix-web.
//!
//! Invariant: the HTTP server is up even while the metadata store is not (it answers 503 and
//! `/healthz` degraded until the store opens); SIGTERM/SIGINT stop accepting, let requests in
//! flight finish, shut the manager down and return `Ok`.

use std::time::Duration;

use actix_web::HttpServer;
use anyhow::Context;
use kunlun_core::{ClusterManager, CoreConfig};
use kunlun_meta::store::{BackendConfig, StoreConfig};

use crate::config::{Config, MetaBackend};
use crate::http::{self, AppState, Metrics};

/// How long requests in flight may take to finish after a stop signal.
const HTTP_SHUTDOWN_GRACE_SECS: u64 = 20;
/// How long background tasks may take to stop.
const MANAGER_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The store configuration the daemon's config describes.
pub fn store_config(config: &Config) -> StoreConfig {
    let backend = match config.meta_backend {
        MetaBackend::Sqlite => BackendConfig::Sqlite {
            path: config.sqlite_path.clone(),
        },
        MetaBackend::Mysql => BackendConfig::Mysql {
            seeds: config.meta_group_seeds.clone(),
            user: config.meta_user.clone(),
            password: config.meta_pwd.clone(),
            database: config.meta_database.clone(),
        },
    };
    StoreConfig {
        backend,
        pool_size: config.meta_pool_size as usize,
        connect_timeout: config.mysql_connect_timeout,
    }
}

/// The engine configuration the daemon's config describes.
pub fn core_config(config: &Config) -> CoreConfig {
    CoreConfig {
        check_shard_interval: config.check_shard_interval,
        thread_work_interval: config.thread_work_interval,
        commit_log_retention: config.commit_log_retention,
        global_txn_commit_log_wait_max: config.global_txn_commit_log_wait_max,
        ..CoreConfig::default()
    }
}

/// The shard HA monitor's settings: probe interval and storage-node deadlines from the file.
pub fn ha_config(config: &Config) -> kunlun_core::ha::HaConfig {
    let mut ha = kunlun_core::ha::HaConfig::from_core(&core_config(config));
    ha.storage = kunlun_core::storage::StorageOptions {
        connect_timeout: config.mysql_connect_timeout,
        read_timeout: config.mysql_read_timeout,
    };
    ha
}

/// XA recovery's settings: `thread_work_interval`, `global_txn_commit_log_wait_max_sec`,
/// `commit_log_retention_hours` and the storage-node deadlines from the file.
pub fn xa_config(config: &Config) -> kunlun_core::xa::XaConfig {
    let mut xa = kunlun_core::xa::XaConfig::from_core(&core_config(config));
    xa.storage = kunlun_core::storage::StorageOptions {
        connect_timeout: config.mysql_connect_timeout,
        read_timeout: config.mysql_read_timeout,
    };
    xa
}

/// A one-line, password-free description of where the metadata will live.
fn describe_store(config: &Config) -> String {
    match config.meta_backend {
        MetaBackend::Sqlite => format!("sqlite:{}", config.sqlite_path.display()),
        MetaBackend::Mysql => format!(
            "mysql://{}@{}/{}",
            config.meta_user,
            config.meta_group_seeds.join(","),
            config.meta_database
        ),
    }
}

/// Runs the daemon until SIGTERM or SIGINT, on its own multi-threaded Tokio runtime.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cluster-mgr")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(config));
    // Blocking tasks (SQLite connections) get a bounded time to finish; never hang at exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// The daemon's main task; see [`run`].
pub async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config_file = ?config.config_file, "cluster-mgr starting");
    if config.meta_backend == MetaBackend::Sqlite {
        if let Some(dir) = config
            .sqlite_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    tracing::info!(store = %describe_store(&config), "opening the metadata store");
    let manager = ClusterManager::connect(core_config(&config), store_config(&config));
    // Provisioning jobs; host keys of machines are recorded on first contact next to the
    // daemon's other data.
    let known_hosts = config.tmp_data_path.join("known_hosts");
    let provisioner = kunlun_core::jobs::Provisioner::with_system_servers(known_hosts.clone());
    // Fencing an unreachable primary over SSH gets its own connection pool, so a long job
    // (a replica seed) holding the job runner's sessions never delays a failover.
    let mut ha = ha_config(&config);
    ha.ssh = Some(std::sync::Arc::new(
        kunlun_core::jobs::Provisioner::with_system_servers(known_hosts),
    ));
    manager.start_ha(ha);
    manager.start_xa(xa_config(&config));
    manager.start_catalog_sync(Duration::from_secs(10));
    // Registration probes and the machine liveness check use the same SSH trust settings.
    manager.set_provisioner(provisioner.clone());
    manager.start_machine_liveness(config.machine_check_interval);
    manager.start_job_runner(provisioner, Duration::from_secs(1));
    let metrics = Metrics::new().context("cannot register metrics")?;
    let state = AppState {
        manager: manager.clone(),
        metrics,
    };

    let addr = config.http_addr();
    let server = HttpServer::new(move || http::app(state.clone()))
        .disable_signals()
        .shutdown_timeout(HTTP_SHUTDOWN_GRACE_SECS)
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?
        .run();
    tracing::info!(address = %addr, "HTTP API listening (REST /v1, /healthz, /metrics, /docs/)");

    let handle = server.handle();
    let stopper = tokio::spawn(async move {
        match wait_for_signal().await {
            Ok(sig) => tracing::info!(
                signal = sig,
                "stopping: no new connections; finishing requests in flight"
            ),
            Err(e) => tracing::error!(error = %e, "cannot wait for signals; stopping"),
        }
        handle.stop(true).await;
    });
    let served = server.await;
    stopper.abort();
    manager.shutdown(MANAGER_SHUTDOWN_GRACE).await;
    served.context("HTTP server failed")?;
    tracing::info!("cluster-mgr stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT and names the one received.
async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
