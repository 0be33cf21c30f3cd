//! Command-line flags of `cluster-mgr`. Every flag overrides one key of `cluster_mgr.cnf` and is
//! validated by the same rules as the file (flags are taken as text on purpose for that).

use std::path::PathBuf;

use clap::Parser;

/// The `cluster-mgr` daemon: metadata store, HTTP API and the engine of a Kunlun cluster manager.
///
/// With no arguments it keeps its metadata in SQLite under ./data/ and serves HTTP on
/// 127.0.0.1:8010.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "cluster-mgr", version, args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Path of cluster_mgr.cnf (`name = value` lines; see the sample in the repository).
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        env = "KUNLUN_CLUSTER_MGR_CONFIG",
        global = true
    )]
    pub config: Option<PathBuf>,
    /// The same, given as the only argument like the original `cluster_mgr FILE`.
    #[arg(value_name = "CONFIG_FILE", conflicts_with = "config")]
    pub config_file: Option<PathBuf>,
    /// Address the HTTP API listens on (key http_bind_address).
    #[arg(long, value_name = "ADDR")]
    pub http_bind: Option<String>,
    /// Port of the HTTP API (key brpc_http_port).
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<String>,
    /// Metadata store: sqlite or mysql (key meta_backend).
    #[arg(long, value_name = "sqlite|mysql")]
    pub meta_backend: Option<String>,
    /// SQLite file of the metadata (key sqlite_path).
    #[arg(long, value_name = "FILE")]
    pub sqlite_path: Option<String>,
    /// Seeds of the MySQL metadata shard, `host:port,...` (key meta_group_seeds).
    #[arg(long, value_name = "HOST:PORT,...")]
    pub meta_group_seeds: Option<String>,
    /// User on the MySQL metadata shard (key meta_user).
    #[arg(long, value_name = "USER")]
    pub meta_user: Option<String>,
    /// Database of the metadata on MySQL (key meta_database).
    #[arg(long, value_name = "NAME")]
    pub meta_database: Option<String>,
    /// Log format: text or json (key log_format).
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<String>,
    /// A one-off command on the manager host instead of running the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-off commands run on the manager host, straight on the metadata store.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// API tokens (the first admin token can only be made here).
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `cluster-mgr token ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret once on stdout.
    Create {
        /// Token name (A-Z a-z 0-9 _ - .), never reused.
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long, default_value = "admin")]
        role: String,
    },
}

impl Args {
    /// The config file named by `--config` or the positional argument.
    pub fn config_path(&self) -> Option<&PathBuf> {
        self.config.as_ref().or(self.config_file.as_ref())
    }

    /// `(key, value, flag)` for every flag given.
    pub fn overrides(&self) -> Vec<(&'static str, &str, &'static str)> {
        let pairs: [(&'static str, &Option<String>, &'static str); 8] = [
            ("http_bind_address", &self.http_bind, "--http-bind"),
            ("brpc_http_port", &self.http_port, "--http-port"),
            ("meta_backend", &self.meta_backend, "--meta-backend"),
            ("sqlite_path", &self.sqlite_path, "--sqlite-path"),
            (
                "meta_group_seeds",
                &self.meta_group_seeds,
                "--meta-group-seeds",
            ),
            ("meta_user", &self.meta_user, "--meta-user"),
            ("meta_database", &self.meta_database, "--meta-database"),
            ("log_format", &self.log_format, "--log-format"),
        ];
        pairs
            .into_iter()
            .filter_map(|(k, v, f)| v.as_deref().map(|v| (k, v, f)))
            .collect()
    }
}
