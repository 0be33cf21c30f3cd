//! Configuration of the metadata store: which backend, pool size and deadlines.
//!
//! Invariant: `Debug` never prints a password.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::tls::TlsSettings;

/// Default name of the metadata database on a MySQL-compatible metadata shard.
pub const DEFAULT_MYSQL_DATABASE: &str = "kunlun_metadata_db";

/// Where the metadata lives.
#[derive(Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// An embedded SQLite file; the file and its folder are created on first start.
    Sqlite { path: PathBuf },
    /// A MySQL-compatible metadata shard reached through `meta_group_seeds`.
    Mysql {
        /// `host:port` of each metadata node, tried in order to find the writable primary.
        seeds: Vec<String>,
        user: String,
        password: String,
        /// Database name, normally [`DEFAULT_MYSQL_DATABASE`].
        database: String,
    },
}

impl fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendConfig::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            BackendConfig::Mysql {
                seeds,
                user,
                password: _,
                database,
            } => f
                .debug_struct("Mysql")
                .field("seeds", seeds)
                .field("user", user)
                .field("password", &"<redacted>")
                .field("database", database)
                .finish(),
        }
    }
}

/// The store's configuration: a backend plus pool limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub backend: BackendConfig,
    /// Most connections held at once (at least 2 are used on MySQL: DDL runs on a side connection).
    pub pool_size: usize,
    /// Deadline for connecting and for waiting on a pooled connection.
    pub connect_timeout: Duration,
    /// TLS of the connections to a MySQL metadata store (`meta_tls`, `meta_tls_ca`); unused
    /// with SQLite. Default `prefer`.
    pub tls: TlsSettings,
    /// TLS of the manager's connections to the clusters' compute nodes (`catalog_tls`,
    /// `catalog_tls_ca`). Carried by the store because every engine path that pushes a
    /// catalog (jobs, failover, the catalog sync, the API) holds the store; see
    /// [`super::Store::cluster_tls`]. Default `prefer`.
    pub cluster_tls: TlsSettings,
    /// MySQL: how often the store checks that its metadata primary is still the writable one
    /// (and looks for the new one when not). Default 1 s.
    pub primary_check: Duration,
    /// MySQL: how long a call that failed because the metadata primary failed under it waits
    /// for a new primary before its one retry (see [`super::Store::tx`]). Default 15 s, longer
    /// than a metadata failover takes.
    pub primary_wait: Duration,
}

impl StoreConfig {
    /// A SQLite store at `path` with the default pool size and timeout.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            backend: BackendConfig::Sqlite { path: path.into() },
            ..Self::default()
        }
    }

    /// A MySQL store over `seeds` with the default pool size and timeout.
    pub fn mysql(seeds: Vec<String>, user: &str, password: &str, database: &str) -> Self {
        StoreConfig {
            backend: BackendConfig::Mysql {
                seeds,
                user: user.to_string(),
                password: password.to_string(),
                database: database.to_string(),
            },
            ..Self::default()
        }
    }
}

impl Default for StoreConfig {
    /// SQLite under `./data/kunlun_metadata.db`, 8 connections, 5 s deadline, TLS `prefer`;
    /// on MySQL the primary is checked every second and a failed call waits up to 15 s for a
    /// new one.
    fn default() -> Self {
        StoreConfig {
            backend: BackendConfig::Sqlite {
                path: PathBuf::from("data/kunlun_metadata.db"),
            },
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            tls: TlsSettings::default(),
            cluster_tls: TlsSettings::default(),
            primary_check: Duration::from_secs(1),
            primary_wait: Duration::from_secs(15),
        }
    }
}

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Sqlite,
    Mysql,
}

impl BackendKind {
    /// `sqlite` or `mysql`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Mysql => "mysql",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password() {
        let c = StoreConfig::mysql(
            vec!["127.0.0.1:3306".into()],
            "root",
            "s3cr3t-pw",
            "kunlun_metadata_db",
        );
        let s = format!("{c:?}");
        assert!(!s.contains("s3cr3t-pw"), "{s}");
        assert!(
            s.contains("<redacted>") && s.contains("127.0.0.1:3306"),
            "{s}"
        );
    }
}
