//! The daemon's configuration: `cluster_mgr.cnf` plus command-line flags, validated in one step
//! into the plain [`Config`] struct.
//!
//! Invariant: a `Config` only exists if every value passed its key's range and the cross-key
//! rules (MySQL needs seeds and a user); any failure names `file:line` (or the flag) and why.
//! What the original `cluster_mgr` accepts in its own file (a repeated key, text after a value,
//! keys this manager does not use) is accepted too, each noted in [`Config::warnings`].
//! `Debug` never prints `meta_pwd`, and no warning quotes it.

mod cli;
mod ip_block;
mod keys;
mod raw;
mod validate;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cli::{Args, Command, TokenCommand};
pub use ip_block::{IpBlock, ParseIpBlockError};
pub use keys::{KeySpec, Kind, KEYS};
pub use raw::{Origin, Raw};

/// A configuration error: `location: reason`, where location is `file:line`, a flag or `default`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct ConfigError {
    pub location: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn at(origin: &Origin, reason: impl Into<String>) -> Self {
        ConfigError {
            location: origin.to_string(),
            reason: reason.into(),
        }
    }
}

/// Which metadata store the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaBackend {
    /// An embedded SQLite file (`sqlite_path`): zero setup.
    Sqlite,
    /// A MySQL-compatible metadata shard reached through `meta_group_seeds`.
    Mysql,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything the daemon is configured with. Field docs give the cnf key; ranges and defaults
/// are in the sample `cluster_mgr.cnf` and [`KEYS`].
#[derive(Clone, PartialEq)]
pub struct Config {
    /// The file read, if any.
    pub config_file: Option<PathBuf>,
    /// `meta_backend`.
    pub meta_backend: MetaBackend,
    /// `sqlite_path`.
    pub sqlite_path: PathBuf,
    /// `meta_group_seeds`, each `host:port`.
    pub meta_group_seeds: Vec<String>,
    /// `meta_user`.
    pub meta_user: String,
    /// `meta_pwd` (redacted in `Debug`).
    pub meta_pwd: String,
    /// `meta_database`.
    pub meta_database: String,
    /// `meta_ha_user`/`meta_ha_pwd`: the metadata shard's admin login for its failover (empty
    /// user: failover off); password redacted in `Debug`.
    pub meta_ha_user: String,
    pub meta_ha_pwd: String,
    /// `meta_repl_user`/`meta_repl_pwd`: the metadata shard's replication login; password
    /// redacted in `Debug`.
    pub meta_repl_user: String,
    pub meta_repl_pwd: String,
    /// `meta_pool_size`: connections kept to the metadata store.
    pub meta_pool_size: u32,
    /// `meta_tls`, `meta_tls_ca`: TLS to a MySQL metadata store.
    pub meta_tls: kunlun_meta::TlsSettings,
    /// `catalog_tls`, `catalog_tls_ca`: TLS of the catalog push to compute nodes.
    pub catalog_tls: kunlun_meta::TlsSettings,
    /// `http_bind_address`.
    pub http_bind_address: IpAddr,
    /// `brpc_http_port`.
    pub http_port: u16,
    /// `brpc_raft_port` (accepted; raft HA among managers is not implemented, see design §3.4).
    pub raft_port: u16,
    /// `raft_group_member_init_config`, `ip:port:idx,` entries.
    pub raft_group_member_init_config: String,
    /// `local_ip`: this manager's address as others see it.
    pub local_ip: String,
    /// `cluster_mgr_tmp_data_path`.
    pub tmp_data_path: PathBuf,
    /// `log_file`: `None` logs to stderr.
    pub log_file: Option<PathBuf>,
    /// `max_log_file_size` in MB.
    pub max_log_file_size_mb: u32,
    /// `log_format` (ours).
    pub log_format: LogFormat,
    /// `mysql_connect_timeout`.
    pub mysql_connect_timeout: Duration,
    /// `mysql_read_timeout`.
    pub mysql_read_timeout: Duration,
    /// `mysql_write_timeout`.
    pub mysql_write_timeout: Duration,
    /// `mysql_max_packet_size` in bytes.
    pub mysql_max_packet_size: u64,
    /// `num_worker_threads`.
    pub num_worker_threads: u32,
    /// `check_shard_interval` (sub-second values allowed).
    pub check_shard_interval: Duration,
    /// `thread_work_interval`.
    pub thread_work_interval: Duration,
    /// `storage_sync_interval`.
    pub storage_sync_interval: Duration,
    /// `binlog_archive_interval` (zero: off).
    pub binlog_archive_interval: Duration,
    /// `backup_schedule_interval` (zero: no scheduled backups nor retention).
    pub backup_schedule_interval: Duration,
    /// `commit_log_retention_hours`.
    pub commit_log_retention: Duration,
    /// `statement_retries`.
    pub statement_retries: u32,
    /// `statement_retry_interval_ms`.
    pub statement_retry_interval: Duration,
    /// `global_txn_commit_log_wait_max_sec`.
    pub global_txn_commit_log_wait_max: Duration,
    /// `backup_allow_replica_delay`.
    pub backup_allow_replica_delay: Duration,
    /// `prometheus_path` (accepted for compatibility; no bundled Prometheus is started).
    pub prometheus_path: PathBuf,
    /// `prometheus_port_start`.
    pub prometheus_port_start: u16,
    /// `machine_check_interval`: period of the SSH liveness check of machines; zero is off.
    pub machine_check_interval: Duration,
    /// `instance_keeper_interval_secs`: period of the instance keeper; zero is off.
    pub keeper_interval: Duration,
    /// `keeper_max_restarts`: restarts within the window before an instance is given up.
    pub keeper_max_restarts: u32,
    /// `keeper_restart_window_secs`.
    pub keeper_restart_window: Duration,
    /// `leader_lease_secs`: how long the leader's lease lasts after each renew (renewed every
    /// third of it); a standby takes over within about this plus a third after a crash.
    pub leader_lease: Duration,
    /// `auth`: how API requests are authenticated.
    pub auth: AuthMode,
    /// `http_allowed_hosts`: what the `Host` header may name; empty means the defaults of
    /// [`Config::allowed_hosts`].
    pub http_allowed_hosts: Vec<String>,
    /// `http_tls_cert`, `http_tls_key`, `http_tls_client_ca`: the API's TLS files; `None`
    /// serves plain HTTP. Read and checked by [`crate::tls::load`] before listening.
    pub http_tls: Option<TlsFiles>,
    /// `http_allow_plaintext`: a non-loopback bind may serve plain HTTP (warned at start).
    pub http_allow_plaintext: bool,
    /// `http_client_timeout_secs`: deadline for a request's head and body.
    pub http_client_timeout: Duration,
    /// `http_max_connections`: connections served at once per worker.
    pub http_max_connections: usize,
    /// `clusters_to_serve`: the clusters this manager works on (every cluster when empty).
    pub clusters_to_serve: kunlun_core::ClusterScope,
    /// `job_retention_days`: finished jobs older than this are deleted; `None` keeps them.
    pub job_retention: Option<Duration>,
    /// `ssh_keys_dir`: where machines' private keys must be (resolved: empty in the file means
    /// `<tmp_data_path>/keys`).
    pub ssh_keys_dir: PathBuf,
    /// `ssh_host_key_policy`: whether an unknown machine host key may be recorded unpinned.
    pub ssh_host_key_accept_new: bool,
    /// `emit_allowed_clients`: clients whose `POST /HttpService/Emit` requests are served
    /// without a token (XPanel sends none); empty: none.
    pub emit_allowed_clients: Vec<IpBlock>,
    /// `machine_ssh_user`: SSH user of machines registered through Emit's `create_machine`.
    pub machine_ssh_user: String,
    /// `machine_ssh_port`: their SSH port.
    pub machine_ssh_port: u16,
    /// `machine_ssh_key`: their private key (absolute path); `None` when not set.
    pub machine_ssh_key: Option<PathBuf>,
    /// What was accepted but should be logged at start, each `file:line: what` (or
    /// `--flag: what`), in file order: keys ignored, repeated keys, text after a value, the
    /// metadata backend chosen from `meta_group_seeds`. Never holds a password.
    pub warnings: Vec<String>,
}

/// The API's TLS files (PEM paths as written in the cnf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `http_tls_cert`: the certificate chain, the server's own first.
    pub cert: PathBuf,
    /// `http_tls_key`: its private key; must not be readable by group or others.
    pub key: PathBuf,
    /// `http_tls_client_ca`: when set, clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

/// How API requests are authenticated (`auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Open while the bind is loopback and no token was ever created; tokens after that.
    Auto,
    /// Every request but `/healthz` needs a bearer token.
    Tokens,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("config_file", &self.config_file)
            .field("meta_backend", &self.meta_backend)
            .field("sqlite_path", &self.sqlite_path)
            .field("meta_group_seeds", &self.meta_group_seeds)
            .field("meta_user", &self.meta_user)
            .field("meta_pwd", &"<redacted>")
            .field("meta_database", &self.meta_database)
            .field("meta_ha_user", &self.meta_ha_user)
            .field("meta_ha_pwd", &"<redacted>")
            .field("meta_repl_user", &self.meta_repl_user)
            .field("meta_repl_pwd", &"<redacted>")
            .field("meta_pool_size", &self.meta_pool_size)
            .field("meta_tls", &self.meta_tls)
            .field("catalog_tls", &self.catalog_tls)
            .field("http_bind_address", &self.http_bind_address)
            .field("http_port", &self.http_port)
            .field("raft_port", &self.raft_port)
            .field(
                "raft_group_member_init_config",
                &self.raft_group_member_init_config,
            )
            .field("local_ip", &self.local_ip)
            .field("tmp_data_path", &self.tmp_data_path)
            .field("log_file", &self.log_file)
            .field("max_log_file_size_mb", &self.max_log_file_size_mb)
            .field("log_format", &self.log_format)
            .field("mysql_connect_timeout", &self.mysql_connect_timeout)
            .field("mysql_read_timeout", &self.mysql_read_timeout)
            .field("mysql_write_timeout", &self.mysql_write_timeout)
            .field("mysql_max_packet_size", &self.mysql_max_packet_size)
            .field("num_worker_threads", &self.num_worker_threads)
            .field("check_shard_interval", &self.check_shard_interval)
            .field("thread_work_interval", &self.thread_work_interval)
            .field("storage_sync_interval", &self.storage_sync_interval)
            .field("binlog_archive_interval", &self.binlog_archive_interval)
            .field("backup_schedule_interval", &self.backup_schedule_interval)
            .field("commit_log_retention", &self.commit_log_retention)
            .field("statement_retries", &self.statement_retries)
            .field("statement_retry_interval", &self.statement_retry_interval)
            .field(
                "global_txn_commit_log_wait_max",
                &self.global_txn_commit_log_wait_max,
            )
            .field(
                "backup_allow_replica_delay",
                &self.backup_allow_replica_delay,
            )
            .field("prometheus_path", &self.prometheus_path)
            .field("prometheus_port_start", &self.prometheus_port_start)
            .field("machine_check_interval", &self.machine_check_interval)
            .field("keeper_interval", &self.keeper_interval)
            .field("keeper_max_restarts", &self.keeper_max_restarts)
            .field("keeper_restart_window", &self.keeper_restart_window)
            .field("leader_lease", &self.leader_lease)
            .field("auth", &self.auth)
            .field("http_allowed_hosts", &self.http_allowed_hosts)
            .field("http_tls", &self.http_tls)
            .field("http_allow_plaintext", &self.http_allow_plaintext)
            .field("http_client_timeout", &self.http_client_timeout)
            .field("http_max_connections", &self.http_max_connections)
            .field("job_retention", &self.job_retention)
            .field("ssh_keys_dir", &self.ssh_keys_dir)
            .field("ssh_host_key_accept_new", &self.ssh_host_key_accept_new)
            .field("emit_allowed_clients", &self.emit_allowed_clients)
            .field("machine_ssh_user", &self.machine_ssh_user)
            .field("machine_ssh_port", &self.machine_ssh_port)
            .field("machine_ssh_key", &self.machine_ssh_key)
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl Default for Config {
    /// The configuration of `cluster-mgr` run with no arguments.
    fn default() -> Self {
        // The defaults are checked by the `defaults_are_valid` test, so this cannot fail.
        match Config::from_raw(&Raw::default(), None) {
            Ok(c) => c,
            Err(e) => unreachable!("built-in defaults are invalid: {e}"),
        }
    }
}

impl Config {
    /// Reads the file named by the flags (if any), applies the flags and validates everything.
    pub fn load(args: &Args) -> Result<Config, ConfigError> {
        let path = args.config_path();
        let mut raw = match path {
            Some(p) => Raw::parse_file(&read_file(p)?, &p.display().to_string())?,
            None => Raw::default(),
        };
        for (key, value, flag) in args.overrides() {
            raw.set_flag(key, value, flag)?;
        }
        Config::from_raw(&raw, path.cloned())
    }

    /// Parses and validates the text of a cnf file (no flags).
    pub fn from_cnf_text(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::from_raw(&Raw::parse_file(text, file)?, Some(PathBuf::from(file)))
    }

    /// Validates raw settings into a `Config`.
    pub fn from_raw(raw: &Raw, config_file: Option<PathBuf>) -> Result<Config, ConfigError> {
        validate::build(raw, config_file)
    }

    /// What the `Host` header of a request may name: `http_allowed_hosts`, or by default the
    /// bind address, `local_ip`, `localhost`, `127.0.0.1` and `[::1]`, each with the port.
    pub fn allowed_hosts(&self) -> Vec<String> {
        if !self.http_allowed_hosts.is_empty() {
            return self.http_allowed_hosts.clone();
        }
        let with_port = |h: &str| {
            if h.contains(':') && !h.starts_with('[') {
                format!("[{h}]:{}", self.http_port)
            } else {
                format!("{h}:{}", self.http_port)
            }
        };
        let mut out: Vec<String> = Vec::new();
        for h in [
            self.http_bind_address.to_string().as_str(),
            self.local_ip.as_str(),
            "localhost",
            "127.0.0.1",
            "[::1]",
        ] {
            let e = with_port(h);
            if !out.contains(&e) {
                out.push(e);
            }
        }
        out
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.http_bind_address, self.http_port)
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        location: path.display().to_string(),
        reason: format!("cannot read the config file: {e}"),
    })
}

#[cfg(test)]
mod tests;
