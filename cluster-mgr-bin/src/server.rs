//! Start-up and shutdown of the daemon: config → store config → `ClusterManager` → actix-web.
//!
//! Invariant: the HTTP server is up even while the metadata store is not (it answers 503 and
//! `/healthz` degraded until the store opens); the background actors run only while this
//! process holds the leader lease, on a [`Term`] shut down (cancelled and joined) when the
//! lease is lost; SIGTERM/SIGINT stop accepting, let requests in flight finish, stop the
//! actors, release the lease, shut the manager down and return `Ok`.

use std::time::Duration;

use actix_web::HttpServer;
use anyhow::Context;
use kunlun_core::{ClusterManager, CoreConfig, Term};
use kunlun_meta::store::{BackendConfig, StoreConfig};

use kunlun_core::leader::{LeaderConfig, LeaderState, Leadership};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthMode, Config, MetaBackend};
use crate::http::{self, AppState, Auth, AuthSettings, LeaderView, Metrics};
use crate::tls::ApiTls;

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
        tls: config.meta_tls.clone(),
        cluster_tls: config.catalog_tls.clone(),
        ..StoreConfig::default()
    }
}

/// The engine configuration the daemon's config describes.
pub fn core_config(config: &Config) -> CoreConfig {
    CoreConfig {
        check_shard_interval: config.check_shard_interval,
        thread_work_interval: config.thread_work_interval,
        commit_log_retention: config.commit_log_retention,
        global_txn_commit_log_wait_max: config.global_txn_commit_log_wait_max,
        clusters_to_serve: config.clusters_to_serve.clone(),
        meta_shard: meta_logins(config),
        ..CoreConfig::default()
    }
}

/// The metadata shard's logins (`meta_user`, `meta_ha_user`, `meta_repl_user`), MySQL only.
pub fn meta_logins(config: &Config) -> kunlun_core::config::MetaShardLogins {
    use kunlun_core::ha::promote::Login;
    let login = |user: &str, password: &str| {
        (config.meta_backend == MetaBackend::Mysql && !user.is_empty()).then(|| Login {
            user: user.to_string(),
            password: password.to_string(),
        })
    };
    kunlun_core::config::MetaShardLogins {
        store: login(&config.meta_user, &config.meta_pwd),
        admin: login(&config.meta_ha_user, &config.meta_ha_pwd),
        repl: login(&config.meta_repl_user, &config.meta_repl_pwd),
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

/// Runs the daemon until SIGTERM or SIGINT, on its own multi-threaded Tokio runtime; `tls`
/// (from [`crate::tls::load_for`]) makes the one listener https.
pub fn run(config: Config, tls: Option<ApiTls>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cluster-mgr")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(config, tls));
    // Blocking tasks (SQLite connections) get a bounded time to finish; never hang at exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// The daemon's main task; see [`run`].
pub async fn serve(config: Config, tls: Option<ApiTls>) -> anyhow::Result<()> {
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
    // Under umask 077: 0700. Keys must be put here (ssh_key_path is confined to it).
    std::fs::create_dir_all(&config.ssh_keys_dir).with_context(|| {
        format!(
            "cannot create ssh_keys_dir {}",
            config.ssh_keys_dir.display()
        )
    })?;
    crate::files::secure_existing(&config).context("cannot narrow the modes of secret files")?;
    let auth = auth_of(&config, tls.as_ref());
    tracing::info!(store = %describe_store(&config), "opening the metadata store");
    let manager = ClusterManager::connect(core_config(&config), store_config(&config));
    // Registration probes use the same SSH trust settings as the actors.
    manager.set_provisioner(actor_provisioner(&config));
    let metrics = Metrics::new().context("cannot register metrics")?;
    let state = AppState {
        manager: manager.clone(),
        metrics,
        pages: Default::default(),
    };

    // Leadership: the background actors run only while this process holds the lease.
    let leader_cfg = leader_config(&config);
    leader_cfg
        .validate()
        .context("invalid leadership settings")?;
    let (leadership, leader_rx) = Leadership::new(leader_cfg.clone());
    let view = LeaderView::new(leader_rx.clone(), &leader_cfg);

    let addr = config.http_addr();
    let app_view = view.clone();
    let emit = actix_web::web::Data::new(crate::emit::EmitSettings {
        ssh_user: config.machine_ssh_user.clone(),
        ssh_port: config.machine_ssh_port,
        ssh_key: config
            .machine_ssh_key
            .as_ref()
            .map(|p| p.display().to_string()),
    });
    let server = HttpServer::new(move || {
        http::app_with_auth(state.clone(), app_view.clone(), auth.clone()).app_data(emit.clone())
    })
    .disable_signals()
    // A request's head must arrive within this; its body is held to the same deadline by
    // the auth middleware (`http::body_deadline`).
    .client_request_timeout(config.http_client_timeout)
    .max_connections(config.http_max_connections)
    .shutdown_timeout(HTTP_SHUTDOWN_GRACE_SECS)
    // A handshake is held to the same deadline as a request's head.
    .tls_handshake_timeout(config.http_client_timeout);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = match tls {
        Some(tls) => {
            tracing::info!(
                client_certificates = tls.client_auth,
                names = ?tls.dns_names,
                "TLS on: the API is served over https only"
            );
            server.bind_rustls_0_23(addr, tls.config)
        }
        None => {
            if !config.http_bind_address.is_loopback() {
                tracing::warn!(
                    "http_allow_plaintext = true on a non-loopback address: API tokens cross \
                     the network in clear; set http_tls_cert and http_tls_key"
                );
            }
            server.bind(addr)
        }
    }
    .with_context(|| format!("cannot listen on {addr}"))?
    .run();
    tracing::info!(address = %addr, scheme, "HTTP API listening (REST /v1, /healthz, /metrics, /docs/)");

    // Only once the port is ours: a process that cannot listen never takes the lease.
    let lead_cancel = CancellationToken::new();
    let terms_cancel = CancellationToken::new();
    let clock = leadership.clock();
    let lead_task = tokio::spawn(leadership.run(manager.clone(), lead_cancel.clone()));
    let terms_task = tokio::spawn(run_terms(
        manager.clone(),
        config.clone(),
        leader_cfg,
        clock,
        leader_rx,
        view,
        terms_cancel.clone(),
    ));

    // Every instance stands in for a leader that cannot fail the metadata shard over (its
    // lease ran out while the metadata primary was down).
    let standby_cancel = CancellationToken::new();
    let standby_task = tokio::spawn(meta_standby(
        manager.clone(),
        config.clone(),
        standby_cancel.clone(),
    ));

    let retention_cancel = CancellationToken::new();
    let retention_task = config.job_retention.map(|keep| {
        tokio::spawn(crate::retention::run(
            manager.clone(),
            keep,
            retention_cancel.clone(),
        ))
    });

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
    retention_cancel.cancel();
    if let Some(t) = retention_task {
        if let Err(e) = t.await {
            tracing::error!(error = %e, "the job-retention task failed");
        }
    }
    standby_cancel.cancel();
    if let Err(e) = standby_task.await {
        tracing::error!(error = %e, "the metadata standby task failed");
    }
    // The term's actors stop first, then the lease is released, so a standby never starts
    // while this process still acts.
    terms_cancel.cancel();
    if let Err(e) = terms_task.await {
        tracing::error!(error = %e, "the leadership term task failed");
    }
    lead_cancel.cancel();
    if let Err(e) = lead_task.await {
        tracing::error!(error = %e, "the leadership task failed");
    }
    manager.shutdown(MANAGER_SHUTDOWN_GRACE).await;
    served.context("HTTP server failed")?;
    tracing::info!("cluster-mgr stopped");
    Ok(())
}

/// The API's authentication settings, with a warning when it runs open. Unless
/// `http_allowed_hosts` is set, the `Host` header may also name the certificate's DNS names.
pub fn auth_of(config: &Config, tls: Option<&ApiTls>) -> Auth {
    let mut hosts = config.allowed_hosts();
    if config.http_allowed_hosts.is_empty() {
        for name in tls.map(|t| t.dns_names.as_slice()).unwrap_or_default() {
            let entry = format!("{name}:{}", config.http_port);
            if !hosts.contains(&entry) {
                hosts.push(entry);
            }
        }
    }
    let settings = AuthSettings {
        tokens_required: config.auth == AuthMode::Tokens,
        loopback: config.http_bind_address.is_loopback(),
        allowed_hosts: AuthSettings::hosts_from(&hosts),
        body_timeout: config.http_client_timeout,
        emit_clients: config.emit_allowed_clients.clone(),
    };
    if !settings.tokens_required {
        tracing::warn!(
            "auth = auto on a loopback address: until the first token is created every local \
             user can drive the API (create one: cluster-mgr token create --name root --role \
             admin --config FILE)"
        );
    }
    Auth::new(settings)
}

/// The instance keeper's settings: `instance_keeper_interval_secs` (0: off),
/// `keeper_max_restarts`, `keeper_restart_window_secs`.
pub fn keeper_config(config: &Config) -> kunlun_core::keeper::KeeperConfig {
    kunlun_core::keeper::KeeperConfig::new(
        config.keeper_interval,
        config.keeper_max_restarts,
        config.keeper_restart_window,
    )
}

/// The leadership settings: lease `cluster_mgr` (with `clusters_to_serve`, see
/// [`lease_name`]), holder `local_ip:brpc_http_port/…`, `leader_lease_secs`, renewed every
/// third of it.
pub fn leader_config(config: &Config) -> LeaderConfig {
    let mut c = LeaderConfig::new(&config.local_ip, config.http_port, config.leader_lease);
    c.lease_name = lease_name(&config.clusters_to_serve);
    c
}

/// The lease managers serving `scope` compete for: `cluster_mgr` when they serve every
/// cluster; else `cluster_mgr@` and 16 hex digits of the SHA-256 of the sorted ids, so
/// managers with the same list elect one leader among them and managers with another list
/// lead apart (fits the lease name's 64 characters whatever the list).
pub fn lease_name(scope: &kunlun_core::ClusterScope) -> String {
    use sha2::{Digest, Sha256};
    if scope.serves_all() {
        return kunlun_core::leader::DEFAULT_LEASE_NAME.to_string();
    }
    let ids: Vec<String> = scope.ids().iter().map(i64::to_string).collect();
    let digest = Sha256::digest(ids.join(",").as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}@{hex}", kunlun_core::leader::DEFAULT_LEASE_NAME)
}

/// The SSH settings of jobs, registration probes and liveness checks: host keys of machines
/// in `known_hosts` next to the daemon's other data (recorded when pinned at registration, or
/// on first contact with `ssh_host_key_policy = accept-new`), private keys confined to
/// `ssh_keys_dir`.
fn actor_provisioner(config: &Config) -> kunlun_core::fleet::Provisioner {
    let mut p = kunlun_core::fleet::Provisioner::with_system_servers(
        config.tmp_data_path.join("known_hosts"),
    );
    p.host_key_policy = if config.ssh_host_key_accept_new {
        kunlun_core::HostKeyPolicy::AcceptNew
    } else {
        kunlun_core::HostKeyPolicy::Strict
    };
    p.keys_dir = Some(config.ssh_keys_dir.clone());
    p
}

/// Runs one leadership term after another: while this process leads, a [`Term`] over the
/// engine runs the HA monitor, XA resolver, catalog sync, machine liveness check, instance
/// keeper and job runner; when leadership is lost (or at shutdown) the term is cancelled and
/// joined before the next one may start.
async fn run_terms(
    manager: ClusterManager,
    config: Config,
    leader: LeaderConfig,
    clock: kunlun_meta::store::LeaseClock,
    mut rx: watch::Receiver<LeaderState>,
    view: LeaderView,
    cancel: CancellationToken,
) {
    loop {
        // Wait to lead.
        let epoch = loop {
            if let LeaderState::Leader { epoch } = *rx.borrow_and_update() {
                break epoch;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        };
        // HA's metadata writes carry the term as a fence (see `HaConfig::term`); the actors
        // get the store's background pool, so API load on the shared pool never delays a
        // failover's metadata writes (the lease has a pool of its own too).
        let fence = kunlun_core::ha::TermFence {
            lease: leader.lease_name.clone(),
            holder: leader.holder.clone(),
            epoch,
        };
        // Every write of the term's actors is fenced by the lease (store row and the
        // leadership actor's clock); one that finds it gone ends the term at once.
        let term = Term::leader(&manager, fence, Some(clock.clone()));
        start_actors(&term, &config);
        view.set_acting(Some(term.clone()));
        tracing::info!(epoch, "leader's background actors started");
        // Lead until the state changes: the actor publishes only changes, so any wake-up means
        // this term ended (even if a new one with the same epoch began since).
        let (last, deposed) = tokio::select! {
            _ = cancel.cancelled() => (true, false),
            // The actor gone (it only ends at shutdown) ends the terms too.
            r = rx.changed() => (r.is_err(), false),
            // A write found the lease gone before the actor noticed.
            _ = term.ended() => (false, true),
        };
        view.set_acting(None);
        term.shutdown(MANAGER_SHUTDOWN_GRACE).await;
        tracing::info!(epoch, deposed, "leader's background actors stopped");
        if last {
            return;
        }
        if deposed {
            // The leadership actor publishes the step-down at its next renew; until then the
            // state may still say leader at this epoch: wait for a change (or a renew
            // interval) instead of starting a term the store would depose again at once.
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(leader.renew_interval) => {}
            }
        }
    }
}

/// The metadata shard's stand-in monitor of this instance ([`kunlun_core::ha::meta::Mode`]):
/// it acts only after its store found no writable metadata primary for a whole lease.
async fn meta_standby(manager: ClusterManager, config: Config, cancel: CancellationToken) {
    use kunlun_core::ha::meta::{MetaHaConfig, MetaMonitor, Mode};
    let store = loop {
        match manager.store() {
            Ok(s) => break s.clone(),
            Err(kunlun_core::Error::ShuttingDown) => return,
            Err(_) => tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            },
        }
    };
    if store.kind() != kunlun_meta::store::BackendKind::Mysql {
        return;
    }
    let mut ha = ha_config(&config);
    ha.ssh = Some(std::sync::Arc::new(actor_provisioner(&config)));
    let cfg = MetaHaConfig::from_ha(&ha, meta_logins(&config));
    let after = config.leader_lease + Duration::from_secs(1);
    MetaMonitor::with_mode(store, cfg, Mode::Standby { after }, cancel)
        .run()
        .await;
}

/// Starts the actors only the leader runs, on `term` (all stop with its shutdown).
fn start_actors(term: &Term, config: &Config) {
    // Fencing an unreachable primary over SSH gets its own connection pool, so a long job
    // (a replica seed) holding the job runner's sessions never delays a failover.
    let mut ha = ha_config(config);
    ha.ssh = Some(std::sync::Arc::new(actor_provisioner(config)));
    let meta = kunlun_core::ha::meta::MetaHaConfig::from_ha(&ha, meta_logins(config));
    if meta.logins.admin.is_some() && meta.logins.repl.is_none() {
        tracing::warn!("meta_repl_user is not set: a repointed metadata replica logs in to its source as meta_ha_user");
    }
    term.start_meta_ha(meta);
    term.start_ha(ha);
    term.start_xa(xa_config(config));
    term.start_catalog_sync(Duration::from_secs(10));
    let provisioner = actor_provisioner(config);
    term.start_machine_liveness(provisioner.clone(), config.machine_check_interval);
    // The keeper's restarts get their own SSH pool too, beside the job runner's.
    term.start_keeper(actor_provisioner(config), keeper_config(config));
    term.start_job_runner(provisioner, Duration::from_secs(1));
    term.start_auto_rebuild(kunlun_core::auto_rebuild::AutoRebuildConfig::default());
    term.start_binlog_archive(actor_provisioner(config), config.binlog_archive_interval);
    term.start_backup_scheduler(config.backup_schedule_interval);
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
