//! Connections and transactions over both backends behind one handle, [`Tx`].
//!
//! Invariants: a connection that leaves a transaction unfinished or a statement in flight (the
//! future was dropped, or COMMIT/ROLLBACK failed) is detached from its pool and closed, never
//! handed out again; dropping any store future never blocks the thread (so it is safe on a
//! current-thread runtime such as an actix worker, see [`Detached`]); every
//! wait for a pooled connection is bounded by the configured connect timeout; every diesel error
//! is mapped to one [`Error`] variant a caller can act on.

use std::future::Future;
use std::time::Duration;

use diesel::SqliteConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool, PoolError};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncMysqlConnection, SimpleAsyncConnection};

use super::config::BackendKind;
use crate::error::{Error, Result};

/// The SQLite connection type: diesel's sync connection run on `spawn_blocking`.
pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection, Detached>;

/// How SQLite statements reach the blocking pool: `spawn_blocking` on the runtime polling the
/// statement, never waiting for it on drop.
///
/// diesel-async's default (`Tokio`) makes a dropped, unfinished statement wait for its blocking
/// task with `block_in_place`, which panics on a current-thread runtime ("can call blocking
/// only when running on the multi-threaded runtime"): an actix worker dropping a handler's
/// future when its client goes away did exactly that. Here the task runs on to its end on its
/// own; the connection it still holds is never reused, because [`Tx`] detaches a connection
/// dropped with a statement in flight (diesel-async's wrapper would panic on a shared one).
pub(crate) struct Detached;

impl diesel_async::sync_connection_wrapper::SpawnBlocking for Detached {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> futures::future::BoxFuture<
        'a,
        std::result::Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>,
    >
    where
        R: Send + 'static,
    {
        use futures::FutureExt;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(task)
                .map(|r| r.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>))
                .boxed(),
            Err(e) => futures::future::ready(Err(Box::new(e) as Box<_>)).boxed(),
        }
    }

    fn get_runtime() -> Self {
        Detached
    }
}

/// A pool per backend; cloning shares the pool.
#[derive(Clone)]
pub(crate) enum Pools {
    Sqlite(Pool<SqliteConn>),
    Mysql(Pool<AsyncMysqlConnection>),
}

impl Pools {
    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            Pools::Sqlite(_) => BackendKind::Sqlite,
            Pools::Mysql(_) => BackendKind::Mysql,
        }
    }

    /// Closes the pool (the store moved to another metadata primary): idle connections are
    /// dropped, busy ones when given back, and waiting callers get an error.
    pub(crate) fn close(&self) {
        match self {
            Pools::Sqlite(p) => p.close(),
            Pools::Mysql(p) => p.close(),
        }
    }

    /// A pooled connection, or [`Error::Unavailable`] once `timeout` has passed (its message
    /// then starts with [`POOL_WAIT`]).
    pub(crate) async fn acquire(&self, timeout: Duration) -> Result<Conn> {
        async fn get<F, T>(fut: F, timeout: Duration) -> Result<T>
        where
            F: Future<Output = std::result::Result<T, PoolError>>,
        {
            match tokio::time::timeout(timeout, fut).await {
                Err(_) => Err(Error::Unavailable(format!("{POOL_WAIT} {timeout:?}"))),
                Ok(Err(e)) => Err(pool_err(e)),
                Ok(Ok(c)) => Ok(c),
            }
        }
        match self {
            Pools::Sqlite(p) => get(p.get(), timeout).await.map(Conn::Sqlite),
            Pools::Mysql(p) => get(p.get(), timeout).await.map(Conn::Mysql),
        }
    }
}

/// How the error of a pool that stayed busy for the whole wait begins: the pool was full, which
/// says nothing about the metadata primary.
pub(crate) const POOL_WAIT: &str = "no connection within";

/// What a failed statement says about the metadata primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suspect {
    /// The server refused it as read-only (`ER_OPTION_PREVENTS_STATEMENT`, 1290): it did
    /// nothing, and the server is no longer (or not yet) the primary.
    ReadOnly,
    /// The connection failed: whether the statement took effect is unknown.
    Lost,
}

impl Suspect {
    /// What an error returned before any statement of ours ran says (acquire, `BEGIN`): a
    /// full pool says nothing.
    pub(crate) fn of_begin(e: &Error) -> Option<Suspect> {
        match e {
            Error::Unavailable(m) if !m.starts_with(POOL_WAIT) => Some(Suspect::Lost),
            Error::Unavailable(_) => None,
            _ => None,
        }
    }
}

/// A pooled connection of either backend.
pub(crate) enum Conn {
    Sqlite(Object<SqliteConn>),
    Mysql(Object<AsyncMysqlConnection>),
}

/// A borrowed concrete connection: what [`with_conn!`] matches on.
pub(crate) enum ConnRef<'a> {
    Sqlite(&'a mut SqliteConn),
    Mysql(&'a mut AsyncMysqlConnection),
}

/// Runs one diesel expression on whichever concrete connection `tx` holds and maps its error.
///
/// The body is expanded once per backend, so it is type-checked against both.
macro_rules! with_conn {
    ($tx:expr, $c:ident => $body:expr) => {{
        let tx: &mut $crate::store::conn::Tx = $tx;
        let r = match tx.conn_ref()? {
            $crate::store::conn::ConnRef::Sqlite($c) => {
                let r: ::diesel::QueryResult<_> = $body;
                r
            }
            $crate::store::conn::ConnRef::Mysql($c) => {
                let r: ::diesel::QueryResult<_> = $body;
                r
            }
        };
        tx.check(r)
    }};
}
pub(crate) use with_conn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxState {
    /// Each statement commits on its own.
    Autocommit,
    /// BEGIN issued; COMMIT or ROLLBACK pending.
    Open,
    /// COMMIT or ROLLBACK done.
    Finished,
}

/// A connection handed to repository functions, inside a transaction ([`super::Store::tx`]) or
/// in autocommit mode.
///
/// DDL (per-cluster tables) is transactional on SQLite. MySQL commits implicitly on DDL, so
/// inside a MySQL transaction `CREATE` runs on a side connection and is undone if the
/// transaction rolls back, and `DROP` is deferred until after the commit.
pub struct Tx {
    conn: Option<Conn>,
    pools: Pools,
    timeout: Duration,
    state: TxState,
    read_only: bool,
    /// A statement was handed the connection and has not reported back: if this handle is
    /// dropped now, the statement may still be running on the connection.
    in_flight: bool,
    /// The server aborted a statement for a lock conflict (deadlock, lock wait timeout): the
    /// transaction must not commit and is worth running again from the start.
    lock_conflict: bool,
    /// A statement failed in a way that says the server may no longer be the metadata
    /// primary (see [`Suspect`]); the last such failure.
    suspect: Option<Suspect>,
    /// Statements handed the connection so far (transaction control included).
    sent: u32,
    on_rollback: Vec<String>,
    after_commit: Vec<String>,
}

impl Tx {
    pub(crate) async fn autocommit(pools: &Pools, timeout: Duration) -> Result<Tx> {
        let conn = pools.acquire(timeout).await?;
        Ok(Tx {
            conn: Some(conn),
            pools: pools.clone(),
            timeout,
            state: TxState::Autocommit,
            read_only: false,
            in_flight: false,
            lock_conflict: false,
            suspect: None,
            sent: 0,
            on_rollback: Vec::new(),
            after_commit: Vec::new(),
        })
    }

    pub(crate) async fn begin(pools: &Pools, timeout: Duration, read_only: bool) -> Result<Tx> {
        let mut tx = Tx::autocommit(pools, timeout).await?;
        // IMMEDIATE takes SQLite's write lock up front (waiting up to busy_timeout), so a
        // read-then-write transaction never fails on lock upgrade; a read-only one needs no lock.
        let sql = match (tx.kind(), read_only) {
            (BackendKind::Sqlite, false) => "BEGIN IMMEDIATE",
            (BackendKind::Sqlite, true) => "BEGIN DEFERRED",
            (BackendKind::Mysql, false) => "START TRANSACTION",
            (BackendKind::Mysql, true) => "START TRANSACTION READ ONLY",
        };
        tx.batch(sql).await?;
        tx.state = TxState::Open;
        tx.read_only = read_only;
        tx.sent = 0;
        Ok(tx)
    }

    /// The backend of this connection.
    pub fn kind(&self) -> BackendKind {
        self.pools.kind()
    }

    /// Whether this handle is inside an open transaction.
    pub fn in_transaction(&self) -> bool {
        self.state == TxState::Open
    }

    /// Whether a read that precedes a write of the same rows must lock them (`FOR UPDATE`):
    /// in a MySQL write transaction, where a plain read returns the REPEATABLE READ snapshot
    /// and a row another transaction changed since would make the write fail. SQLite write
    /// transactions are serial (`BEGIN IMMEDIATE`) and have no `FOR UPDATE`.
    pub(crate) fn locking_reads(&self) -> bool {
        self.kind() == BackendKind::Mysql && self.state == TxState::Open && !self.read_only
    }

    /// Whether the server aborted a statement of this transaction for a lock conflict.
    pub(crate) fn lock_conflict(&self) -> bool {
        self.lock_conflict
    }

    /// What the last failed statement said about the metadata primary, if anything.
    pub(crate) fn suspect(&self) -> Option<Suspect> {
        self.suspect
    }

    /// Statements of the caller sent on this handle (after `BEGIN`).
    pub(crate) fn sent(&self) -> u32 {
        self.sent
    }

    /// Maps a statement's result to the crate's error, remembering a lock conflict or a sign
    /// that the server is no longer the metadata primary.
    pub(crate) fn check<T>(&mut self, r: diesel::QueryResult<T>) -> Result<T> {
        self.in_flight = false;
        r.map_err(|e| {
            if is_lock_conflict(&e) {
                self.lock_conflict = true;
            }
            let read_only = is_read_only(&e);
            let e = db_err(e);
            if read_only {
                self.suspect = Some(Suspect::ReadOnly);
            } else if matches!(e, Error::Unavailable(_)) && self.kind() == BackendKind::Mysql {
                self.suspect = Some(Suspect::Lost);
            }
            e
        })
    }

    /// The connection for one statement; the statement's result must go through
    /// [`Tx::check`], which marks it finished.
    pub(crate) fn conn_ref(&mut self) -> Result<ConnRef<'_>> {
        self.in_flight = self.conn.is_some();
        self.sent = self.sent.saturating_add(1);
        match self.conn.as_mut() {
            Some(Conn::Sqlite(c)) => Ok(ConnRef::Sqlite(c)),
            Some(Conn::Mysql(c)) => Ok(ConnRef::Mysql(c)),
            None => Err(Error::Database("connection already released".into())),
        }
    }

    /// Runs raw SQL without parameters (transaction control, DDL built from validated names).
    pub(crate) async fn batch(&mut self, sql: &str) -> Result<()> {
        with_conn!(self, c => c.batch_execute(sql).await)
    }

    /// Runs DDL that creates something; `undo` removes it again if the transaction rolls back.
    pub(crate) async fn ddl_create(&mut self, sql: &str, undo: String) -> Result<()> {
        if self.kind() == BackendKind::Mysql && self.state == TxState::Open {
            let mut side = match Tx::autocommit(&self.pools, self.timeout).await {
                Ok(t) => t,
                Err(e) => {
                    self.suspect = self.suspect.or(Suspect::of_begin(&e));
                    return Err(e);
                }
            };
            if let Err(e) = side.batch(sql).await {
                self.suspect = self.suspect.or(side.suspect());
                return Err(e);
            }
            self.on_rollback.push(undo);
            Ok(())
        } else {
            self.batch(sql).await
        }
    }

    /// Runs DDL that drops something: at once, or on MySQL after the transaction commits.
    pub(crate) async fn ddl_drop(&mut self, sql: String) -> Result<()> {
        if self.kind() == BackendKind::Mysql && self.state == TxState::Open {
            self.after_commit.push(sql);
            Ok(())
        } else {
            self.batch(&sql).await
        }
    }

    /// Commits; a failure of `COMMIT` comes with what it says about the metadata primary.
    pub(crate) async fn commit_checked(
        mut self,
    ) -> std::result::Result<(), (Error, Option<Suspect>)> {
        if self.state != TxState::Open {
            return Ok(());
        }
        if let Err(e) = self.batch("COMMIT").await {
            return Err((e, self.suspect));
        }
        self.state = TxState::Finished;
        for sql in std::mem::take(&mut self.after_commit) {
            if let Err(e) = self.batch(&sql).await {
                tracing::warn!(error = %e, sql = %sql, "deferred DDL after commit failed");
            }
        }
        Ok(())
    }

    pub(crate) async fn rollback(mut self) -> Result<()> {
        if self.state != TxState::Open {
            return Ok(());
        }
        self.batch("ROLLBACK").await?;
        self.state = TxState::Finished;
        for sql in std::mem::take(&mut self.on_rollback) {
            if let Err(e) = self.batch(&sql).await {
                tracing::warn!(error = %e, sql = %sql, "undoing DDL after rollback failed");
            }
        }
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.state == TxState::Open || self.in_flight {
            // Unfinished transaction or statement: never return this connection to the pool.
            match self.conn.take() {
                Some(Conn::Sqlite(o)) => drop(Object::take(o)),
                Some(Conn::Mysql(o)) => drop(Object::take(o)),
                None => {}
            }
            // Closing the connection rolled the rows back; DDL already committed on a side
            // connection (MySQL) is undone in the background.
            let undo = std::mem::take(&mut self.on_rollback);
            if let (false, Ok(rt)) = (undo.is_empty(), tokio::runtime::Handle::try_current()) {
                let (pools, timeout) = (self.pools.clone(), self.timeout);
                rt.spawn(async move {
                    let mut tx = match Tx::autocommit(&pools, timeout).await {
                        Ok(tx) => tx,
                        Err(e) => return tracing::warn!(error = %e, "cannot undo DDL of an abandoned transaction"),
                    };
                    for sql in undo {
                        if let Err(e) = tx.batch(&sql).await {
                            tracing::warn!(error = %e, sql = %sql, "undoing DDL of an abandoned transaction failed");
                        }
                    }
                });
            }
        }
    }
}

/// An async closure over a `&mut Tx` whose future is `Send` (mirrors diesel-async's bound).
pub trait TxFn<T, R>: AsyncFnOnce(T) -> R + FnOnce(T) -> <Self as TxFn<T, R>>::Fut {
    type Fut: Future<Output = R>;
}

impl<F, T, Fut, R> TxFn<T, R> for F
where
    F: AsyncFnOnce(T) -> R + FnOnce(T) -> Fut,
    Fut: Future<Output = R>,
{
    type Fut = Fut;
}

/// Maps a pool error: all of them mean the store cannot be reached now.
pub(crate) fn pool_err(e: PoolError) -> Error {
    Error::Unavailable(e.to_string())
}

/// Maps a diesel error to the crate's error.
pub(crate) fn db_err(e: diesel::result::Error) -> Error {
    use diesel::result::{DatabaseErrorKind as K, Error as D};
    match e {
        D::DatabaseError(K::UniqueViolation, info) => {
            Error::Conflict(format!("already exists: {}", info.message()))
        }
        D::DatabaseError(K::ForeignKeyViolation, info) => Error::Conflict(format!(
            "refers to or is referred to by another row: {}",
            info.message()
        )),
        D::DatabaseError(K::ClosedConnection, info) => {
            Error::Unavailable(info.message().to_string())
        }
        D::DatabaseError(K::Unknown, info) if looks_unavailable(info.message()) => {
            Error::Unavailable(info.message().to_string())
        }
        D::DatabaseError(_, info) if read_only_text(info.message()) => Error::Unavailable(format!(
            "the metadata server is read-only (not the primary): {}",
            info.message()
        )),
        D::NotFound => Error::NotFound {
            what: "row",
            id: String::new(),
        },
        other => Error::Database(other.to_string()),
    }
}

/// MySQL's deadlock (1213) and lock wait timeout (1205): the server rolled back the
/// transaction or statement, which is worth running again. diesel-async keeps only the message
/// of these errors, whose text ends the same on MySQL and MariaDB.
fn is_lock_conflict(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as K, Error as D};
    match e {
        D::DatabaseError(K::SerializationFailure, _) => true,
        D::DatabaseError(K::Unknown, info) => {
            let m = info.message();
            m.contains("try restarting transaction")
                && (m.contains("Deadlock") || m.contains("Lock wait timeout"))
        }
        _ => false,
    }
}

/// `ER_OPTION_PREVENTS_STATEMENT` (1290) for `read_only`/`super_read_only`: MySQL's and
/// MariaDB's texts both say "running with the --read-only option" (or
/// `--super-read-only`). diesel-async keeps only the message.
fn read_only_text(msg: &str) -> bool {
    msg.contains("-read-only option")
}

fn is_read_only(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(_, info) if read_only_text(info.message()))
}

/// Errors of the driver or the network, as opposed to SQL errors reported by the server.
fn looks_unavailable(msg: &str) -> bool {
    const HINTS: &[&str] = &[
        "Input/output error",
        "os error",
        "onnection",
        "roken pipe",
        "timed out",
        "closed",
        "disconnected",
        "database is locked",
        "server has gone away",
        "Lost connection",
    ];
    HINTS.iter().any(|h| msg.contains(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_are_unavailable_sql_errors_are_not() {
        assert!(looks_unavailable(
            "Input/output error: Connection refused (os error 111)"
        ));
        assert!(looks_unavailable(
            "Driver error: `Connection to the server is closed.'"
        ));
        assert!(looks_unavailable("database is locked"));
        assert!(!looks_unavailable("Table 'x.y' doesn't exist"));
        assert!(!looks_unavailable("You have an error in your SQL syntax"));
    }

    #[test]
    fn a_read_only_refusal_is_unavailable_and_marked() {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        for msg in [
            "The MariaDB server is running with the --read-only option so it cannot execute \
             this statement",
            "The MySQL server is running with the --super-read-only option so it cannot \
             execute this statement",
        ] {
            let e = D::DatabaseError(K::Unknown, Box::new(msg.to_string()));
            assert!(is_read_only(&e), "{msg}");
            assert!(
                matches!(db_err(e), Error::Unavailable(m) if m.contains("read-only (not the primary)")),
                "{msg}"
            );
        }
        let other = D::DatabaseError(
            K::Unknown,
            Box::new("Table 'x.y' doesn't exist".to_string()),
        );
        assert!(!is_read_only(&other));
        assert_eq!(
            Suspect::of_begin(&Error::Unavailable(format!("{POOL_WAIT} 5s"))),
            None,
            "a full pool says nothing about the primary"
        );
        assert_eq!(
            Suspect::of_begin(&Error::Unavailable(
                "Connection refused (os error 111)".into()
            )),
            Some(Suspect::Lost)
        );
        assert_eq!(Suspect::of_begin(&Error::Invalid("x".into())), None);
    }

    #[test]
    fn deadlock_and_lock_wait_timeout_are_lock_conflicts_nothing_else_is() {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        let server = |kind, msg: &str| D::DatabaseError(kind, Box::new(msg.to_string()));
        // The texts of MySQL/MariaDB errors 1213 and 1205.
        assert!(is_lock_conflict(&server(
            K::Unknown,
            "Deadlock found when trying to get lock; try restarting transaction"
        )));
        assert!(is_lock_conflict(&server(
            K::Unknown,
            "Lock wait timeout exceeded; try restarting transaction"
        )));
        assert!(is_lock_conflict(&server(K::SerializationFailure, "x")));
        assert!(!is_lock_conflict(&server(
            K::UniqueViolation,
            "Duplicate entry '1' for key 'PRIMARY'"
        )));
        assert!(!is_lock_conflict(&server(
            K::Unknown,
            "Table 'x.y' doesn't exist"
        )));
        assert!(!is_lock_conflict(&D::NotFound));
        // Still mapped to an error the caller sees when the retries run out.
        assert!(matches!(
            db_err(server(
                K::Unknown,
                "Lock wait timeout exceeded; try restarting transaction"
            )),
            Error::Database(_)
        ));
    }
}
