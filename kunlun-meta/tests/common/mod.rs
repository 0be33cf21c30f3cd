//! Test harness of the store tests: a fresh store per test on each backend.
//!
//! SQLite: a file in a temp dir. MySQL: a new database `kl_test_<random>` on the MariaDB at
//! `KUNLUN_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`), dropped when the test ends.
//! A test that cannot reach MariaDB fails with the reason; it never skips.
#![allow(dead_code)]

use std::time::Duration;

use kunlun_meta::store::{BackendConfig, Store, StoreConfig};
use rand::Rng;

pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306";

/// The MariaDB the tests use: (seed `host:port`, user, password).
pub fn mysql_server() -> (String, String, String) {
    let url =
        std::env::var("KUNLUN_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_string());
    let opts = mysql_async::Opts::from_url(&url)
        .unwrap_or_else(|e| panic!("KUNLUN_TEST_MYSQL_URL={url} is not a mysql:// URL: {e}"));
    (
        format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port()),
        opts.user().unwrap_or("root").to_string(),
        opts.pass().unwrap_or("").to_string(),
    )
}

pub fn random_db_name() -> String {
    let n: u64 = rand::rng().random();
    format!("kl_test_{n:016x}")
}

/// A store for one test, removed afterwards.
pub struct TestStore {
    pub store: Store,
    pub cfg: StoreConfig,
    dir: Option<tempfile::TempDir>,
    mysql_db: Option<String>,
}

impl TestStore {
    pub async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        // A folder that does not exist yet: the store must create it.
        let cfg = StoreConfig::sqlite(dir.path().join("meta").join("kunlun_metadata.db"));
        let store = Store::open(&cfg).await.expect("open sqlite store");
        TestStore {
            store,
            cfg,
            dir: Some(dir),
            mysql_db: None,
        }
    }

    pub async fn mysql() -> TestStore {
        let (seed, user, pass) = mysql_server();
        let db = random_db_name();
        let mut cfg = StoreConfig::mysql(vec![seed.clone()], &user, &pass, &db);
        cfg.pool_size = 8;
        cfg.connect_timeout = Duration::from_secs(10);
        let store = Store::open(&cfg).await.unwrap_or_else(|e| {
            panic!(
                "cannot open a MySQL store on MariaDB {seed} (set KUNLUN_TEST_MYSQL_URL, or run scripts/test.sh \
                 which starts one): {e}"
            )
        });
        TestStore {
            store,
            cfg,
            dir: None,
            mysql_db: Some(db),
        }
    }

    /// Opens a second store on the same file or database (a restart).
    pub async fn reopen(&self) -> Store {
        Store::open(&self.cfg).await.expect("reopen store")
    }

    /// The MySQL database name (MySQL stores only).
    pub fn mysql_database(&self) -> &str {
        self.mysql_db.as_deref().expect("not a mysql store")
    }

    /// The SQLite path (SQLite stores only).
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        match &self.cfg.backend {
            BackendConfig::Sqlite { path } => path.clone(),
            BackendConfig::Mysql { .. } => panic!("not a sqlite store"),
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(db) = self.mysql_db.take() {
            drop(DropMysqlDb(db));
        }
    }
}

/// Drops MySQL database `.0` on the test MariaDB when dropped (the end of a test that made one).
pub struct DropMysqlDb(pub String);

impl Drop for DropMysqlDb {
    fn drop(&mut self) {
        let db = self.0.clone();
        let (seed, user, pass) = mysql_server();
        // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use mysql_async::prelude::Queryable;
                if let Ok(mut c) = mysql_async::Conn::new(mysql_opts(&seed, &user, &pass)).await {
                    let _ = c
                        .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                        .await;
                    let _ = c.disconnect().await;
                }
            });
        })
        .join();
    }
}

/// Connection options for the test MariaDB (no default database).
pub fn mysql_opts(seed: &str, user: &str, pass: &str) -> mysql_async::OptsBuilder {
    let (host, port) = seed.rsplit_once(':').expect("seed host:port");
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.to_string())
        .tcp_port(port.parse().expect("port"))
        .user(Some(user.to_string()))
        .pass(if pass.is_empty() {
            None
        } else {
            Some(pass.to_string())
        })
}

/// Runs one async test body against a fresh SQLite store and a fresh MySQL database.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident => $body:ident;)+) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let t = $crate::common::TestStore::sqlite().await;
                    super::$body(&t).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mysql() {
                    let t = $crate::common::TestStore::mysql().await;
                    super::$body(&t).await;
                }
            }
        )+
    };
}
