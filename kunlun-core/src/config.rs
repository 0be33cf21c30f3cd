//! What the engine is configured with: a plain struct with documented defaults, filled by the
//! daemon from `cluster_mgr.cnf` (or by an embedding application directly).

use std::time::Duration;

/// Settings of the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    /// Deadline of one metadata-store ping (health checks). Default 2 s.
    pub store_ping_timeout: Duration,
    /// First pause between two attempts to open the store at start-up. Default 500 ms.
    pub connect_retry_initial: Duration,
    /// Longest pause between two attempts (the pause doubles up to this). Default 10 s.
    pub connect_retry_max: Duration,
    /// Gap between two health checks of one shard (`check_shard_interval`). Default 3 s.
    pub check_shard_interval: Duration,
    /// Period of the main work loop (`thread_work_interval`). Default 3 s.
    pub thread_work_interval: Duration,
    /// Age after which commit-log rows are purged (`commit_log_retention_hours`). Default 24 h.
    pub commit_log_retention: Duration,
    /// Window in which a 2PC decision may still be logged (`global_txn_commit_log_wait_max_sec`).
    pub global_txn_commit_log_wait_max: Duration,
    /// The clusters this manager works on (`clusters_to_serve`). Default: every cluster.
    pub clusters_to_serve: crate::ClusterScope,
    /// Logins of the MySQL metadata shard's nodes (its observation in `GET /v1/meta` and its
    /// failover by the leader). Default: none (failover off).
    pub meta_shard: MetaShardLogins,
}

/// Logins on the metadata shard's nodes (MySQL backend). `Debug` hides the passwords.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaShardLogins {
    /// `meta_user`/`meta_pwd`: the managers' store login. It must not bypass `read_only`
    /// (no `SUPER`, no `READ_ONLY ADMIN`): a fence is proven against it, and a store that
    /// still writes to a fenced old primary must be refused.
    pub store: Option<crate::ha::promote::Login>,
    /// `meta_ha_user`/`meta_ha_pwd`: the login that probes, fences, promotes and repoints the
    /// nodes (`READ_ONLY ADMIN`, replication admin and monitor privileges). `None` turns the
    /// metadata shard's failover off.
    pub admin: Option<crate::ha::promote::Login>,
    /// `meta_repl_user`/`meta_repl_pwd`: what a replica logs in as to its source
    /// (`CHANGE MASTER`; `REPLICATION SLAVE` only).
    pub repl: Option<crate::ha::promote::Login>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            store_ping_timeout: Duration::from_secs(2),
            connect_retry_initial: Duration::from_millis(500),
            connect_retry_max: Duration::from_secs(10),
            check_shard_interval: Duration::from_secs(3),
            thread_work_interval: Duration::from_secs(3),
            commit_log_retention: Duration::from_secs(24 * 3600),
            global_txn_commit_log_wait_max: Duration::from_secs(10),
            clusters_to_serve: crate::ClusterScope::all(),
            meta_shard: MetaShardLogins::default(),
        }
    }
}
