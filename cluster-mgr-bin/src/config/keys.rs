//! The table of every key `cluster_mgr.cnf` accepts: its kind, range and default.
//!
//! Invariant: this table is the only list of keys. The parser refuses any name not in it, the
//! validator reads every value through it, and a test checks each default passes its own range,
//! so a key cannot be accepted without a documented range and default.

/// What values a key takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A decimal integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A decimal number (fractions allowed) in `min..=max`.
    Float { min: f64, max: f64 },
    /// Free text; `allow_empty` says whether `key =` with no value is accepted.
    Text { allow_empty: bool },
    /// One of the listed words.
    Choice(&'static [&'static str]),
}

/// One accepted key.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub name: &'static str,
    pub kind: Kind,
    /// The value used when neither the file nor a flag sets the key.
    pub default: &'static str,
}

const fn int(name: &'static str, min: i64, max: i64, default: &'static str) -> KeySpec {
    KeySpec {
        name,
        kind: Kind::Int { min, max },
        default,
    }
}

const fn text(name: &'static str, allow_empty: bool, default: &'static str) -> KeySpec {
    KeySpec {
        name,
        kind: Kind::Text { allow_empty },
        default,
    }
}

/// Every key, the original `cluster_mgr`'s first, then ours.
pub const KEYS: &[KeySpec] = &[
    // --- keys of the original cluster_mgr (reference §6) ---
    text("meta_group_seeds", true, ""),
    text("meta_user", true, ""),
    text("meta_pwd", true, ""),
    int("brpc_http_port", 1000, 65535, "8010"),
    int("brpc_raft_port", 1000, 65535, "8110"),
    text("raft_group_member_init_config", false, "127.0.0.1:8110:0,"),
    text("local_ip", false, "127.0.0.1"),
    text("cluster_mgr_tmp_data_path", false, "./data"),
    text("log_file", true, ""),
    int("max_log_file_size", 10, 10000, "100"),
    int("mysql_connect_timeout", 1, 1_000_000, "10"),
    int("mysql_read_timeout", 1, 1_000_000, "20"),
    int("mysql_write_timeout", 1, 1_000_000, "20"),
    int("mysql_max_packet_size", 65535, 1 << 30, "1073741824"),
    int("num_worker_threads", 1, 100, "3"),
    KeySpec {
        name: "check_shard_interval",
        kind: Kind::Float {
            min: 0.1,
            max: 100.0,
        },
        default: "1",
    },
    int("thread_work_interval", 1, 100, "3"),
    int("storage_sync_interval", 1, 300, "60"),
    int("binlog_archive_interval", 0, 86400, "60"),
    int("backup_schedule_interval", 0, 86400, "60"),
    int("commit_log_retention_hours", 24, 720, "24"),
    int("statement_retries", 1, 10000, "3"),
    int("statement_retry_interval_ms", 1, 1_000_000, "100"),
    int("global_txn_commit_log_wait_max_sec", 1, 5000, "10"),
    int("backup_allow_replica_delay", 1, 65535, "7200"),
    text(
        "prometheus_path",
        false,
        "../../../program_binaries/prometheus",
    ),
    int("prometheus_port_start", 1000, 65535, "57010"),
    // --- ours ---
    KeySpec {
        name: "meta_backend",
        kind: Kind::Choice(&["sqlite", "mysql"]),
        default: "sqlite",
    },
    text("sqlite_path", false, "./data/cluster_mgr.sqlite3"),
    text("meta_database", false, "kunlun_metadata_db"),
    int("meta_pool_size", 1, 100, "8"),
    // The metadata shard's own failover (README "Metadata shard"): the login the leader
    // probes, fences, promotes and repoints its nodes with (empty: failover off), and the one
    // its replicas replicate with (`CHANGE MASTER`).
    text("meta_ha_user", true, ""),
    text("meta_ha_pwd", true, ""),
    text("meta_repl_user", true, ""),
    text("meta_repl_pwd", true, ""),
    // TLS of the MySQL metadata store and of the catalog push to compute nodes (README
    // "Security"): off | prefer | require | verify; verify needs the CA file (PEM).
    KeySpec {
        name: "meta_tls",
        kind: Kind::Choice(&["off", "prefer", "require", "verify"]),
        default: "prefer",
    },
    text("meta_tls_ca", true, ""),
    KeySpec {
        name: "catalog_tls",
        kind: Kind::Choice(&["off", "prefer", "require", "verify"]),
        default: "prefer",
    },
    text("catalog_tls_ca", true, ""),
    text("http_bind_address", false, "127.0.0.1"),
    KeySpec {
        name: "machine_check_interval",
        kind: Kind::Float {
            min: 0.0,
            max: 3600.0,
        },
        default: "10",
    },
    // The instance keeper (README "Self-healing"): seconds between two rounds, each checking
    // every instance metadata says should run (one SSH command per machine) and starting dead
    // ones again; 0 turns it off. After keeper_max_restarts restarts within
    // keeper_restart_window_secs an instance found down again is left down and alarmed.
    KeySpec {
        name: "instance_keeper_interval_secs",
        kind: Kind::Float {
            min: 0.0,
            max: 3600.0,
        },
        default: "5",
    },
    int("keeper_max_restarts", 1, 100, "3"),
    int("keeper_restart_window_secs", 10, 86_400, "600"),
    // Leadership among managers sharing one metadata store: seconds a leader's lease lasts
    // after each renew (renewed every third of it). Below 2 s a renew could not be confirmed
    // before the store's whole-second clock lets the lease go.
    KeySpec {
        name: "leader_lease_secs",
        kind: Kind::Float {
            min: 2.0,
            max: 300.0,
        },
        default: "10",
    },
    // --- security (README "Security") ---
    // `auto`: open (no token needed) only while the API listens on loopback and no token was
    // ever created; `tokens`: every request but /healthz needs a bearer token. Any other bind
    // than loopback requires `tokens`.
    KeySpec {
        name: "auth",
        kind: Kind::Choice(&["auto", "tokens"]),
        default: "auto",
    },
    // Comma-separated `host` or `host:port` the `Host` header may name (DNS-rebinding
    // guard); empty: the bind address, local_ip, localhost, 127.0.0.1 and [::1] with the port.
    text("http_allowed_hosts", true, ""),
    // TLS of the API (rustls): PEM certificate chain and private key (mode 0600 or narrower);
    // both or neither. With them the one listener speaks only https.
    text("http_tls_cert", true, ""),
    text("http_tls_key", true, ""),
    // PEM CA bundle: when set, every client must present a certificate it signed (mTLS).
    text("http_tls_client_ca", true, ""),
    // A non-loopback bind needs TLS unless this is `true` (plain HTTP, warned at start).
    KeySpec {
        name: "http_allow_plaintext",
        kind: Kind::Choice(&["false", "true"]),
        default: "false",
    },
    // Seconds a client has to send a request's head and body before it is cut off.
    int("http_client_timeout_secs", 1, 600, "10"),
    // Connections the API serves at once, per worker thread; more wait in the backlog.
    int("http_max_connections", 16, 100_000, "1024"),
    // The clusters this manager works on: comma-separated cluster ids, no spaces (at most
    // 4096); empty: every cluster. Its HA, XA recovery, catalog sync and job runner leave the
    // others alone; managers sharing a store with the same list share one leader lease.
    text("clusters_to_serve", true, ""),
    // Finished jobs older than this many days are deleted (checked hourly); 0 keeps them.
    int("job_retention_days", 0, 3650, "30"),
    // Directory every machine's `ssh_key_path` must lie in (regular file, the daemon's user's,
    // mode 0600); empty: `<cluster_mgr_tmp_data_path>/keys`. Created 0700 at start.
    text("ssh_keys_dir", true, ""),
    // `strict`: a machine's SSH host key must be in known_hosts or pinned at registration
    // (`ssh_host_key`); `accept-new`: first contact records it (trust on first use).
    KeySpec {
        name: "ssh_host_key_policy",
        kind: Kind::Choice(&["strict", "accept-new"]),
        default: "strict",
    },
    KeySpec {
        name: "log_format",
        kind: Kind::Choice(&["text", "json"]),
        default: "text",
    },
    // --- the KunlunBase-compatible `POST /HttpService/Emit` API ---
    // Comma-separated IP addresses or CIDR blocks (IPv4/IPv6) whose Emit requests are served
    // without a token: XPanel, the original's web console, sends none. Empty: none are.
    text("emit_allowed_clients", true, ""),
    // How the daemon logs in to machines registered through Emit's `create_machine`, which
    // carries no SSH fields: user, port, and private key (an absolute path, which like every
    // machine's key must lie under ssh_keys_dir; empty: not set).
    text("machine_ssh_user", false, "root"),
    int("machine_ssh_port", 1, 65535, "22"),
    text("machine_ssh_key", true, ""),
];

/// Keys whose value is a secret: never echoed in a warning or an error.
pub const SECRET_KEYS: &[&str] = &["meta_pwd", "meta_ha_pwd", "meta_repl_pwd"];

/// The spec of `name`, if it is a key.
pub fn spec(name: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.name == name)
}

/// Keys of the original (most still in its own sample `cluster_mgr.cnf`) that this manager does
/// not use: accepted and ignored with a warning, so the original's file works as it is.
/// `meta_host`/`meta_port` (the single metadata server of very old versions) are the exception:
/// without `meta_group_seeds` they are refused, since ignoring them would start on an empty
/// SQLite store instead of the user's metadata.
pub const REMOVED_KEYS: &[&str] = &[
    "log_verbosity",
    "meta_host",
    "meta_port",
    "program_binaries_path",
    "instance_binaries_path",
    "storage_prog_package_name",
    "computer_prog_package_name",
    "storage_instance_port_start",
    "computer_instance_port_start",
    "cluster_mgr_http_port",
    "node_mgr_http_port",
    "num_job_threads",
    "num_http_threads",
    "http_web_path",
    "http_upload_path",
    "http_cmd_version",
    "cluster_json_path",
    "hdfs_server_ip",
    "hdfs_server_port",
];
