//! The SQL side of the catalog push: connect to one compute node (database `postgres`), create
//! schema `kunlun_sys` and its four tables if missing, and replace one cluster's rows.
//!
//! Invariants: every value travels as a bind parameter (passwords may hold any character);
//! the replacement runs in one transaction that first takes a transaction-level advisory lock,
//! so two pushes to the same compute node never interleave and a reader sees the old rows or
//! the new ones, never a mix; every call has a deadline.

use std::future::Future;
use std::time::Duration;

use kunlun_meta::model::CompNode;
use kunlun_meta::tls::TlsMode;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use super::rows::{CatalogRows, ClusterMetaRow, MetaNodeRow, ShardNodeRow, ShardRow};
use super::CatalogOptions;
use crate::error::{Error, Result};

/// Schema of the catalog tables on vanilla PostgreSQL (kunlun-server has them in pg_catalog).
pub const SCHEMA: &str = "kunlun_sys";

/// Key of the advisory lock serialising catalog pushes on one compute node ("KUNLUN").
const PUSH_LOCK: i64 = 0x4b55_4e4c_554e;

/// Kunlun's column names; types chosen for vanilla PostgreSQL (ids `bigint` as the metadata
/// ids are 64-bit; Kunlun uses `oid`).
const DDL: &str = "
CREATE SCHEMA IF NOT EXISTS kunlun_sys;
CREATE TABLE IF NOT EXISTS kunlun_sys.pg_cluster_meta (
    comp_node_id bigint PRIMARY KEY,
    cluster_id bigint NOT NULL,
    cluster_master_id bigint NOT NULL,
    ha_mode smallint NOT NULL,
    cluster_name text NOT NULL,
    comp_node_name text NOT NULL,
    meta_ha_mode smallint NOT NULL
);
CREATE TABLE IF NOT EXISTS kunlun_sys.pg_cluster_meta_nodes (
    server_id bigint NOT NULL,
    cluster_id bigint NOT NULL,
    is_master boolean NOT NULL,
    port integer NOT NULL,
    user_name text NOT NULL,
    hostaddr text NOT NULL,
    passwd text NOT NULL,
    PRIMARY KEY (cluster_id, server_id)
);
CREATE TABLE IF NOT EXISTS kunlun_sys.pg_shard (
    name text NOT NULL,
    id bigint PRIMARY KEY,
    num_nodes integer NOT NULL,
    master_node_id bigint NOT NULL,
    space_volumn bigint NOT NULL DEFAULT 0,
    num_tablets integer NOT NULL DEFAULT 0,
    db_cluster_id bigint NOT NULL,
    when_created timestamp
);
CREATE TABLE IF NOT EXISTS kunlun_sys.pg_shard_node (
    id bigint PRIMARY KEY,
    port integer NOT NULL,
    shard_id bigint NOT NULL,
    svr_node_id bigint NOT NULL,
    ro_weight smallint NOT NULL DEFAULT 0,
    ping real NOT NULL DEFAULT 0,
    latency integer NOT NULL DEFAULT 0,
    user_name text NOT NULL,
    hostaddr text NOT NULL,
    passwd text NOT NULL,
    when_created timestamp
);
";

/// Runs `fut` within `limit`; `what` names the call in the error.
async fn deadline<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(pg_error(what, &e)),
        Err(_) => Err(Error::Unavailable(format!(
            "{what}: no answer within {limit:?}"
        ))),
    }
}

/// A server's refusal (SQL error) is `Internal` with its message; anything else (refused
/// connection, closed socket, authentication transport) is `Unavailable`.
fn pg_error(what: &str, e: &tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => Error::Internal(format!("{what}: {} ({})", db.message(), db.code().code())),
        None => {
            // The TLS and I/O causes (e.g. "invalid peer certificate: UnknownIssuer") are in
            // the source chain, not in the top-level message.
            let mut msg = format!("{what}: {e}");
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            Error::Unavailable(msg)
        }
    }
}

/// Drives a connection until it ends (the session aborts it when dropped).
fn spawn_connection<S, T>(conn: tokio_postgres::Connection<S, T>) -> tokio::task::JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "compute node connection ended");
        }
    })
}

/// An open session to a compute node; the connection task ends when this is dropped.
pub(crate) struct Session {
    pub client: Client,
    task: tokio::task::JoinHandle<()>,
    statement_timeout: Duration,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The manager's own superuser on a cluster's compute nodes (`clustmgr`, with the cluster's
/// manager password): the catalog holds `pgx`'s password, so only this login may read it.
/// `Debug` hides the password.
#[derive(Clone)]
pub(crate) struct ManagerLogin {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for ManagerLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerLogin")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Whether `e` is the server refusing the login (bad password, no such role, no hba entry).
fn login_refused(e: &Error) -> bool {
    matches!(e, Error::Internal(m) if m.contains("(28P01)") || m.contains("(28000)"))
}

impl Session {
    /// Connects to `comp`'s database `postgres` as the manager's superuser when given; a
    /// compute node that refuses that login (installed before the manager had its own role
    /// there) is logged in to as its `user_name` with its password.
    pub async fn connect(
        comp: &CompNode,
        manager: Option<&ManagerLogin>,
        opts: &CatalogOptions,
    ) -> Result<Session> {
        if let Some(m) = manager {
            match Self::connect_as(comp, &m.user, &m.password, opts).await {
                Err(e) if login_refused(&e) => {
                    tracing::debug!(comp_node_id = comp.id, error = %e,
                        "manager login refused; using the compute node's own login");
                }
                other => return other,
            }
        }
        Self::connect_as(comp, &comp.user_name, &comp.passwd, opts).await
    }

    async fn connect_as(
        comp: &CompNode,
        user: &str,
        password: &str,
        opts: &CatalogOptions,
    ) -> Result<Session> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&comp.hostaddr)
            .port(comp.port)
            .user(user)
            .password(password.as_bytes())
            .dbname("postgres")
            .application_name("kunlun-cluster-mgr")
            .connect_timeout(opts.connect_timeout)
            // The server gives up on a statement too, so a lost client leaves no lock held.
            .options(format!(
                "-c statement_timeout={}",
                opts.statement_timeout.as_millis().max(1)
            ));
        let what = format!(
            "connect to compute node {} ({}:{})",
            comp.id, comp.hostaddr, comp.port
        );
        let tls = crate::tls::client_config(&opts.tls, "catalog_tls_ca")?;
        cfg.ssl_mode(match opts.tls.mode() {
            TlsMode::Off => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::Verify => SslMode::Require,
        });
        let what = match opts.tls.mode() {
            TlsMode::Off => what,
            m => format!("{what} (catalog_tls = {m})"),
        };
        let (client, task) = match tls {
            None => {
                let (client, conn) =
                    deadline(opts.connect_timeout, &what, cfg.connect(NoTls)).await?;
                (client, spawn_connection(conn))
            }
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let (client, conn) =
                    deadline(opts.connect_timeout, &what, cfg.connect(tls)).await?;
                (client, spawn_connection(conn))
            }
        };
        Ok(Session {
            client,
            task,
            statement_timeout: opts.statement_timeout,
        })
    }

    /// Replaces the rows of `cluster_id` with `rows` (already narrowed to this compute node by
    /// [`CatalogRows::for_comp`]) in one transaction, creating schema and tables if missing.
    pub async fn replace(&mut self, cluster_id: i64, rows: &CatalogRows) -> Result<()> {
        let limit = self.statement_timeout;
        let tx = deadline(limit, "begin", self.client.transaction()).await?;
        deadline(
            limit,
            "lock",
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PUSH_LOCK]),
        )
        .await?;
        deadline(limit, "create kunlun_sys tables", tx.batch_execute(DDL)).await?;

        let meta_ids: Vec<i64> = rows.cluster_meta.iter().map(|r| r.comp_node_id).collect();
        let shard_ids: Vec<i64> = rows.shards.iter().map(|r| r.id).collect();
        let node_ids: Vec<i64> = rows.shard_nodes.iter().map(|r| r.id).collect();
        // Old rows of this cluster, and any stale row holding a key about to be written.
        let deletes: [(&str, &str, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>); 4] = [
            (
                "clear pg_shard_node",
                "DELETE FROM kunlun_sys.pg_shard_node WHERE id = ANY($3) OR shard_id = ANY($2) \
                 OR shard_id IN (SELECT id FROM kunlun_sys.pg_shard WHERE db_cluster_id = $1)",
                vec![&cluster_id, &shard_ids, &node_ids],
            ),
            (
                "clear pg_shard",
                "DELETE FROM kunlun_sys.pg_shard WHERE db_cluster_id = $1 OR id = ANY($2)",
                vec![&cluster_id, &shard_ids],
            ),
            (
                "clear pg_cluster_meta",
                "DELETE FROM kunlun_sys.pg_cluster_meta WHERE cluster_id = $1 OR comp_node_id = ANY($2)",
                vec![&cluster_id, &meta_ids],
            ),
            (
                "clear pg_cluster_meta_nodes",
                "DELETE FROM kunlun_sys.pg_cluster_meta_nodes WHERE cluster_id = $1",
                vec![&cluster_id],
            ),
        ];
        for (what, sql, params) in &deletes {
            deadline(limit, what, tx.execute(*sql, params)).await?;
        }

        for r in &rows.cluster_meta {
            deadline(
                limit,
                "insert pg_cluster_meta",
                tx.execute(
                    "INSERT INTO kunlun_sys.pg_cluster_meta (comp_node_id, cluster_id, \
                     cluster_master_id, ha_mode, cluster_name, comp_node_name, meta_ha_mode) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &r.comp_node_id,
                        &r.cluster_id,
                        &r.cluster_master_id,
                        &r.ha_mode,
                        &r.cluster_name,
                        &r.comp_node_name,
                        &r.meta_ha_mode,
                    ],
                ),
            )
            .await?;
        }
        for r in &rows.meta_nodes {
            deadline(
                limit,
                "insert pg_cluster_meta_nodes",
                tx.execute(
                    "INSERT INTO kunlun_sys.pg_cluster_meta_nodes (server_id, cluster_id, \
                     is_master, port, user_name, hostaddr, passwd) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &r.server_id,
                        &r.cluster_id,
                        &r.is_master,
                        &r.port,
                        &r.user_name,
                        &r.hostaddr,
                        &r.passwd,
                    ],
                ),
            )
            .await?;
        }
        for r in &rows.shards {
            deadline(
                limit,
                "insert pg_shard",
                tx.execute(
                    "INSERT INTO kunlun_sys.pg_shard (name, id, num_nodes, master_node_id, \
                     space_volumn, num_tablets, db_cluster_id, when_created) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &r.name,
                        &r.id,
                        &r.num_nodes,
                        &r.master_node_id,
                        &r.space_volumn,
                        &r.num_tablets,
                        &r.db_cluster_id,
                        &r.when_created,
                    ],
                ),
            )
            .await?;
        }
        for r in &rows.shard_nodes {
            deadline(
                limit,
                "insert pg_shard_node",
                tx.execute(
                    "INSERT INTO kunlun_sys.pg_shard_node (id, port, shard_id, svr_node_id, \
                     ro_weight, user_name, hostaddr, passwd, when_created) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &r.id,
                        &r.port,
                        &r.shard_id,
                        &r.svr_node_id,
                        &r.ro_weight,
                        &r.user_name,
                        &r.hostaddr,
                        &r.passwd,
                        &r.when_created,
                    ],
                ),
            )
            .await?;
        }
        deadline(limit, "commit", tx.commit()).await
    }

    /// What users made on this compute node, at most `limit` names: databases besides
    /// `postgres` and the templates, and relations of database `postgres` outside the system
    /// schemas and the catalog's (a restore loads a schema only onto a node without one).
    pub async fn user_objects(&self, limit: i64) -> Result<Vec<String>> {
        let q = "SELECT 'database ' || datname FROM pg_database \
                 WHERE datname NOT IN ('postgres', 'template0', 'template1') \
                 UNION ALL SELECT 'relation ' || n.nspname || '.' || c.relname \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', $1) \
                 AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%' \
                 ORDER BY 1 LIMIT $2";
        let rows = deadline(
            self.statement_timeout,
            "list the user's objects",
            self.client.query(q, &[&SCHEMA, &limit]),
        )
        .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(|e| pg_error("user objects", &e)))
            .collect()
    }

    /// The rows of `cluster_id` this compute node holds (empty if the schema is missing).
    pub async fn read(&self, cluster_id: i64) -> Result<CatalogRows> {
        let limit = self.statement_timeout;
        let c = &self.client;
        let exists = deadline(
            limit,
            "look for kunlun_sys",
            c.query_opt(
                "SELECT 1 FROM pg_namespace n JOIN pg_class t ON t.relnamespace = n.oid \
                 WHERE n.nspname = $1 AND t.relname = 'pg_shard_node'",
                &[&SCHEMA],
            ),
        )
        .await?;
        if exists.is_none() {
            return Ok(CatalogRows::default());
        }
        let mut rows = CatalogRows::default();
        let q = "SELECT comp_node_id, cluster_id, cluster_master_id, ha_mode, cluster_name, \
                 comp_node_name, meta_ha_mode FROM kunlun_sys.pg_cluster_meta WHERE cluster_id = $1";
        for r in deadline(limit, "read pg_cluster_meta", c.query(q, &[&cluster_id])).await? {
            rows.cluster_meta.push(ClusterMetaRow {
                comp_node_id: r.try_get(0).map_err(|e| pg_error("pg_cluster_meta", &e))?,
                cluster_id: r.try_get(1).map_err(|e| pg_error("pg_cluster_meta", &e))?,
                cluster_master_id: r.try_get(2).map_err(|e| pg_error("pg_cluster_meta", &e))?,
                ha_mode: r.try_get(3).map_err(|e| pg_error("pg_cluster_meta", &e))?,
                cluster_name: r.try_get(4).map_err(|e| pg_error("pg_cluster_meta", &e))?,
                comp_node_name: r.try_get(5).map_err(|e| pg_error("pg_cluster_meta", &e))?,
                meta_ha_mode: r.try_get(6).map_err(|e| pg_error("pg_cluster_meta", &e))?,
            });
        }
        let q = "SELECT server_id, cluster_id, is_master, port, user_name, hostaddr, passwd \
                 FROM kunlun_sys.pg_cluster_meta_nodes WHERE cluster_id = $1";
        for r in deadline(
            limit,
            "read pg_cluster_meta_nodes",
            c.query(q, &[&cluster_id]),
        )
        .await?
        {
            let e = |e| pg_error("pg_cluster_meta_nodes", &e);
            rows.meta_nodes.push(MetaNodeRow {
                server_id: r.try_get(0).map_err(e)?,
                cluster_id: r.try_get(1).map_err(e)?,
                is_master: r.try_get(2).map_err(e)?,
                port: r.try_get(3).map_err(e)?,
                user_name: r.try_get(4).map_err(e)?,
                hostaddr: r.try_get(5).map_err(e)?,
                passwd: r.try_get(6).map_err(e)?,
            });
        }
        let q = "SELECT name, id, num_nodes, master_node_id, space_volumn, num_tablets, \
                 db_cluster_id, when_created FROM kunlun_sys.pg_shard WHERE db_cluster_id = $1";
        for r in deadline(limit, "read pg_shard", c.query(q, &[&cluster_id])).await? {
            let e = |e| pg_error("pg_shard", &e);
            rows.shards.push(ShardRow {
                name: r.try_get(0).map_err(e)?,
                id: r.try_get(1).map_err(e)?,
                num_nodes: r.try_get(2).map_err(e)?,
                master_node_id: r.try_get(3).map_err(e)?,
                space_volumn: r.try_get(4).map_err(e)?,
                num_tablets: r.try_get(5).map_err(e)?,
                db_cluster_id: r.try_get(6).map_err(e)?,
                when_created: r.try_get(7).map_err(e)?,
            });
        }
        let q = "SELECT id, port, shard_id, svr_node_id, ro_weight, user_name, hostaddr, passwd, \
                 when_created FROM kunlun_sys.pg_shard_node WHERE shard_id IN \
                 (SELECT id FROM kunlun_sys.pg_shard WHERE db_cluster_id = $1)";
        for r in deadline(limit, "read pg_shard_node", c.query(q, &[&cluster_id])).await? {
            let e = |e| pg_error("pg_shard_node", &e);
            rows.shard_nodes.push(ShardNodeRow {
                id: r.try_get(0).map_err(e)?,
                port: r.try_get(1).map_err(e)?,
                shard_id: r.try_get(2).map_err(e)?,
                svr_node_id: r.try_get(3).map_err(e)?,
                ro_weight: r.try_get(4).map_err(e)?,
                user_name: r.try_get(5).map_err(e)?,
                hostaddr: r.try_get(6).map_err(e)?,
                passwd: r.try_get(7).map_err(e)?,
                when_created: r.try_get(8).map_err(e)?,
            });
        }
        rows.sort();
        Ok(rows)
    }
}
