//! Opening a store: create the SQLite file or the MySQL database, run the embedded migrations
//! and build the connection pool.
//!
//! Invariants: migrations run before a pool hands out a connection; every store has three
//! pools, the shared one, a small [`SYSTEM_POOL_SIZE`] one for the leader lease and one for the
//! leader's background actors (see [`super::Lane`]); every pooled SQLite
//! connection has `busy_timeout` and `foreign_keys` set and the file is in WAL mode; no
//! password ever appears in a description or an error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::{Connection, ConnectionError, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, SimpleAsyncConnection};

use super::follow::{Connector, Lanes};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures::FutureExt;

use super::conn::{Pools, SqliteConn};
use super::seeds::{discover, seed_opts, split_seed, MetaTls, SeedReport};
use crate::error::{Error, Result};

/// The SQLite schema, embedded at build time.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// The MySQL schema (KunlunBase's metadata tables), embedded at build time.
pub const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// Connections of the system pool: the lease renew and its row never wait behind API requests
/// (two, so a renew and a `cluster_mgr_nodes` write, or a DDL side connection, fit at once).
pub const SYSTEM_POOL_SIZE: usize = 2;

/// What `open_*` hands back to [`super::Store::open`].
pub(crate) struct Opened {
    pub lanes: Lanes,
    pub describe: String,
    /// MySQL: how to reach the nodes, and the discovery that chose the primary.
    pub mysql: Option<(Connector, SeedReport)>,
    /// The MySQL connections are TLS-encrypted.
    pub encrypted: bool,
    /// SQLite: the connection that reads the change counter.
    pub watch: Option<super::version::Watch>,
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::Database(format!("background task failed: {e}"))
}

/// Opens (creating if needed) the SQLite file at `path`.
pub(crate) async fn open_sqlite(
    path: &Path,
    pool_size: usize,
    timeout: Duration,
) -> Result<Opened> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Unavailable(format!(
                "cannot create folder {} for the metadata: {e}",
                dir.display()
            ))
        })?;
    }
    let url = path
        .to_str()
        .ok_or_else(|| Error::Invalid(format!("sqlite path {} is not UTF-8", path.display())))?
        .to_string();
    let busy_ms = timeout.as_millis();
    let setup = format!(
        // secure_delete: deleted rows (a cluster's passwords) are overwritten with zeros, not
        // left in free pages.
        "PRAGMA busy_timeout = {busy_ms}; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
         PRAGMA secure_delete = ON;"
    );

    let (u, s) = (url.clone(), setup.clone());
    let watch = tokio::task::spawn_blocking(move || -> Result<super::version::Watch> {
        let mut c = SqliteConnection::establish(&u)
            .map_err(|e| Error::Unavailable(format!("cannot open sqlite file {u}: {e}")))?;
        diesel::connection::SimpleConnection::batch_execute(
            &mut c,
            &format!("PRAGMA journal_mode = WAL; {s}"),
        )
        .map_err(|e| Error::Unavailable(format!("cannot set up sqlite file {u}: {e}")))?;
        c.run_pending_migrations(SQLITE_MIGRATIONS)
            .map_err(|e| Error::Migration(e.to_string()))?;
        super::version::Watch::open(&u)
    })
    .await
    .map_err(join_err)??;

    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(&url));
    let pool = |size: usize| {
        let mut cfg = ManagerConfig::<SqliteConn>::default();
        // A connection to a local file does not go stale: checking it with a query each time
        // it leaves the pool would only cost one more blocking hand-off per store call.
        cfg.recycling_method = RecyclingMethod::Fast;
        let setup = setup.clone();
        cfg.custom_setup = Box::new(move |url| {
            let (url, setup) = (url.to_string(), setup.clone());
            async move {
                let mut c = SqliteConn::establish(&url).await?;
                c.batch_execute(&setup)
                    .await
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(c)
            }
            .boxed()
        });
        let mgr = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(url.clone(), cfg);
        Pool::builder(mgr)
            .max_size(size.max(1))
            .build()
            .map(Pools::Sqlite)
            .map_err(|e| Error::Database(format!("cannot build the sqlite pool: {e}")))
    };
    Ok(Opened {
        lanes: Lanes {
            shared: pool(pool_size)?,
            system: pool(SYSTEM_POOL_SIZE)?,
            background: pool(pool_size)?,
        },
        describe: format!("sqlite:{}", abs.display()),
        mysql: None,
        encrypted: false,
        watch: Some(watch),
    })
}

/// Connects to one MySQL server with a deadline; says whether the connection is encrypted.
async fn connect(
    opts: mysql_async::OptsBuilder,
    tls: &MetaTls,
    timeout: Duration,
) -> Result<(mysql_async::Conn, bool)> {
    match tokio::time::timeout(timeout, tls.connect(opts)).await {
        Err(_) => Err(Error::Unavailable(format!(
            "no connection within {timeout:?}"
        ))),
        Ok(Err(e)) => Err(Error::Unavailable(e)),
        Ok(Ok(c)) => Ok(c),
    }
}

/// Finds the primary among `seeds`, creates `database` if missing and migrates it.
pub(crate) async fn open_mysql(
    seeds: &[String],
    user: &str,
    password: &str,
    database: &str,
    pool_size: usize,
    timeout: Duration,
    tls: &crate::tls::TlsSettings,
) -> Result<Opened> {
    crate::validate::name("database", database)?;
    let tls = MetaTls::new(tls)?;
    let report = discover(seeds, user, password, &tls, timeout).await?;
    tracing::info!(report = %report, "metadata seed discovery");
    let (host, port) = split_seed(&report.chosen)?;

    let tls_used;
    {
        use mysql_async::prelude::Queryable;
        let (mut c, encrypted) =
            connect(seed_opts(&host, port, user, password), &tls, timeout).await?;
        if !encrypted {
            tracing::warn!(
                store = %format!("{host}:{port}"),
                meta_tls = %tls.mode(),
                "metadata store connections are not encrypted"
            );
        }
        tls_used = encrypted;
        // `database` passed validate::name, so it cannot break out of the backticks.
        c.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4"
        ))
        .await
        .map_err(|e| Error::Database(format!("cannot create database {database}: {e}")))?;
        let _ = c.disconnect().await;
    }

    // `prefer` is settled now: every later connection uses what this server offered.
    let tls = tls.resolved(tls_used);
    let opts = tls.apply(seed_opts(&host, port, user, password).db_name(Some(database)));
    let (mut raw, _) = connect(opts.clone(), &tls, timeout).await?;
    {
        // Managers starting together must not run the same migration twice: serialise on a
        // named lock, released when this connection closes.
        use mysql_async::prelude::Queryable;
        let secs = timeout.as_secs().max(1) * 6;
        let got: Option<Option<i64>> = raw
            .exec_first(
                "SELECT GET_LOCK(?, ?)",
                (format!("kunlun_meta_migrate.{database}"), secs),
            )
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        if got.flatten() != Some(1) {
            return Err(Error::Migration(format!(
                "another process has been migrating {database} for {secs} s; try again"
            )));
        }
    }
    let conn = AsyncMysqlConnection::try_from(raw)
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    let conn = tokio::task::spawn_blocking(move || -> Result<AsyncMysqlConnection> {
        let mut w: AsyncConnectionWrapper<AsyncMysqlConnection> =
            AsyncConnectionWrapper::from(conn);
        w.run_pending_migrations(MYSQL_MIGRATIONS)
            .map_err(|e| Error::Migration(e.to_string()))?;
        Ok(w.into_inner())
    })
    .await
    .map_err(join_err)??;
    drop(conn);

    let connector = Connector {
        user: user.to_string(),
        password: password.to_string(),
        database: database.to_string(),
        tls,
        timeout,
        pool_size,
    };
    Ok(Opened {
        lanes: connector.lanes(&report.chosen)?,
        describe: connector.describe(&report.chosen),
        mysql: Some((connector, report)),
        encrypted: tls_used,
        watch: None,
    })
}
