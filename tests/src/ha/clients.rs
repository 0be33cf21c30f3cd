//! Writers that behave as a cluster's real clients during HA chaos: the compute nodes' `pgx`
//! login writing to the primary metadata names (autocommit and short XA transactions), and a
//! stale-route writer as `pgx` that keeps writing to every node that is NOT the primary (a
//! compute node with an old catalog).
//!
//! Invariants: an id is recorded as acknowledged only after the server said OK to its commit
//! (`XA COMMIT` for XA); ids are never reused; every connect and statement is bounded, and
//! after any error the writer reconnects to whatever metadata names now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kunlun_meta::model::{MemberState, NodeStatus};
use kunlun_meta::store::Store;
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;

use super::invariant::{connect, Login};
use super::LIMIT;

/// The tables the client writers use (the `app` writer uses `ha.w`).
pub const PGX_TABLE: &str = "ha.p";
pub const STALE_TABLE: &str = "ha.s";

/// The privileges a compute node's `pgx` login gets on a storage node: the MariaDB recipe's
/// own list, so the tests write with exactly what installed clusters grant (DML and DDL on
/// user data, binlog positions and replica status; none of `READ_ONLY ADMIN`, `SUPER`,
/// `FILE`, `GRANT OPTION`).
pub use kunlun_provision::recipe::PGX_PRIVILEGES;

/// SQL (run as root on the primary; it replicates) creating `user` with [`PGX_PRIVILEGES`].
pub fn pgx_user_sql(user: &str, password: &str) -> String {
    format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; GRANT {} ON *.* TO '{user}'@'%';",
        PGX_PRIVILEGES.join(", ")
    )
}

/// SQL creating the client writers' tables (run by an admin on the primary).
pub fn tables_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {PGX_TABLE} (id BIGINT PRIMARY KEY) ENGINE=InnoDB; \
         CREATE TABLE IF NOT EXISTS {STALE_TABLE} (id BIGINT PRIMARY KEY) ENGINE=InnoDB;"
    )
}

/// Metadata's nodes of a shard: `(id, host, port, is_primary)`, deleted rows left out.
async fn shard_nodes(store: &Store, shard_id: i64) -> Vec<(i64, String, u16, bool)> {
    store
        .list_shard_nodes(Some(shard_id))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.status != NodeStatus::Deleted)
        .map(|n| {
            let p = n.member_state == MemberState::Source;
            (n.id, n.hostaddr, n.port, p)
        })
        .collect()
}

/// Shared between a writer task and its handle.
#[derive(Default)]
struct Tally {
    acked: Vec<i64>,
    xa_acked: usize,
    errors: usize,
    armed: Option<(Instant, Option<Instant>)>,
}

/// The `pgx` writer: inserts into [`PGX_TABLE`] on metadata's primary, alternating an
/// autocommit insert and a short XA transaction.
pub struct PgxWriter {
    tally: Arc<Mutex<Tally>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl PgxWriter {
    pub fn start(store: Store, shard_id: i64, login: Login) -> PgxWriter {
        Self::start_within(store, shard_id, login, Duration::from_secs(2))
    }

    /// [`PgxWriter::start`] with `limit` as the deadline of each statement and connect (a
    /// client tuned for fast failover gives up on a hung server sooner than the 2 s default).
    pub fn start_within(store: Store, shard_id: i64, login: Login, limit: Duration) -> PgxWriter {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = CancellationToken::new();
        let (t, s) = (tally.clone(), stop.clone());
        let task = tokio::spawn(async move { pgx_loop(store, shard_id, login, limit, t, s).await });
        PgxWriter { tally, stop, task }
    }

    pub fn acked(&self) -> Vec<i64> {
        self.tally
            .lock()
            .map(|g| g.acked.clone())
            .unwrap_or_default()
    }

    /// `(acknowledged, of them by XA, failed attempts)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.tally
            .lock()
            .map(|g| (g.acked.len(), g.xa_acked, g.errors))
            .unwrap_or_default()
    }

    /// Waits until `n` more writes than now were acknowledged.
    pub async fn wait_more(&self, n: usize) -> Result<()> {
        let base = self.acked().len();
        let deadline = Instant::now() + LIMIT;
        while self.acked().len() < base + n {
            if Instant::now() > deadline {
                bail!("pgx writes stalled at {}", self.acked().len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Arms the stopwatch: the first write acknowledged after `t0` stops it.
    pub fn arm(&self, t0: Instant) {
        if let Ok(mut g) = self.tally.lock() {
            g.armed = Some((t0, None));
        }
    }

    /// Time from the armed instant to the first write acknowledged after it.
    pub fn first_ack_delay(&self) -> Option<Duration> {
        let g = self.tally.lock().ok()?;
        let (t0, t1) = g.armed?;
        t1.map(|t1| t1 - t0)
    }

    pub async fn finish(self) -> Vec<i64> {
        self.stop.cancel();
        let tally = self.tally.clone();
        let _ = self.task.await;
        tally.lock().map(|g| g.acked.clone()).unwrap_or_default()
    }
}

async fn pgx_loop(
    store: Store,
    shard_id: i64,
    login: Login,
    limit: Duration,
    tally: Arc<Mutex<Tally>>,
    stop: CancellationToken,
) {
    let mut next: i64 = 1;
    let mut conn: Option<mysql_async::Conn> = None;
    while !stop.is_cancelled() {
        if conn.is_none() {
            let nodes = shard_nodes(&store, shard_id).await;
            if let Some((_, host, port, _)) = nodes.iter().find(|n| n.3) {
                conn = tokio::time::timeout(limit, connect(host, *port, &login))
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let id = next;
        next += 1;
        let xa = id % 2 == 0;
        let sql = if xa {
            // One round trip per statement, as a compute node's two-phase commit does.
            vec![
                format!("XA START 'pgx{id}'"),
                format!("INSERT INTO {PGX_TABLE} VALUES ({id})"),
                format!("XA END 'pgx{id}'"),
                format!("XA PREPARE 'pgx{id}'"),
                format!("XA COMMIT 'pgx{id}'"),
            ]
        } else {
            vec![format!("INSERT INTO {PGX_TABLE} VALUES ({id})")]
        };
        let mut ok = true;
        for s in sql {
            let r = tokio::time::timeout(limit, c.query_drop(s)).await;
            if !matches!(r, Ok(Ok(()))) {
                ok = false;
                break;
            }
        }
        if let Ok(mut g) = tally.lock() {
            if ok {
                g.acked.push(id);
                g.xa_acked += usize::from(xa);
                if let Some((_, t1 @ None)) = g.armed.as_mut() {
                    *t1 = Some(Instant::now());
                }
            } else {
                g.errors += 1;
            }
        }
        if ok {
            // A compute node's pace, not a flood: keeps the replicas' apply lag (and so a
            // switchover's catch-up) bounded on a small shared machine.
            tokio::time::sleep(Duration::from_millis(2)).await;
        } else {
            // Unknown outcome: not acknowledged. A prepared branch left behind is the XA
            // resolver's; this session goes, and the next one asks metadata again.
            conn = None;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What the stale-route writer saw.
#[derive(Debug, Default, Clone)]
pub struct StaleTally {
    /// Refused with error 1290 (`--read-only`).
    pub refused_read_only: usize,
    /// Connection refused, timed out or cut.
    pub unreachable: usize,
    /// Any other error, with its text (first few).
    pub other_errors: Vec<String>,
    pub other_count: usize,
    /// Writes a non-primary node accepted: `(node id, row id)`.
    pub accepted: Vec<(i64, i64)>,
}

impl StaleTally {
    /// Ids accepted by some node (the invariant check demands them on the primary: one that
    /// is not there is an errant transaction).
    pub fn accepted_ids(&self) -> Vec<i64> {
        self.accepted.iter().map(|a| a.1).collect()
    }
}

/// The stale-route writer: as `pgx`, keeps inserting into [`STALE_TABLE`] on every node
/// metadata does not name primary, a connection per node, reconnecting after errors.
pub struct StaleWriter {
    tally: Arc<Mutex<StaleTally>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl StaleWriter {
    pub fn start(store: Store, shard_id: i64, login: Login) -> StaleWriter {
        let tally = Arc::new(Mutex::new(StaleTally::default()));
        let stop = CancellationToken::new();
        let (t, s) = (tally.clone(), stop.clone());
        let task = tokio::spawn(async move { stale_loop(store, shard_id, login, t, s).await });
        StaleWriter { tally, stop, task }
    }

    pub fn tally(&self) -> StaleTally {
        self.tally.lock().map(|g| g.clone()).unwrap_or_default()
    }

    pub async fn finish(self) -> StaleTally {
        self.stop.cancel();
        let tally = self.tally.clone();
        let _ = self.task.await;
        tally.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

async fn stale_loop(
    store: Store,
    shard_id: i64,
    login: Login,
    tally: Arc<Mutex<StaleTally>>,
    stop: CancellationToken,
) {
    let mut next: i64 = 1;
    let mut conns: HashMap<i64, mysql_async::Conn> = HashMap::new();
    while !stop.is_cancelled() {
        for (node, host, port, primary) in shard_nodes(&store, shard_id).await {
            if primary || stop.is_cancelled() {
                continue;
            }
            let id = next;
            next += 1;
            let c = match conns.remove(&node) {
                Some(c) => Ok(c),
                None => connect(&host, port, &login).await,
            };
            let mut c = match c {
                Ok(c) => c,
                Err(_) => {
                    if let Ok(mut g) = tally.lock() {
                        g.unreachable += 1;
                    }
                    continue;
                }
            };
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                c.query_drop(format!("INSERT INTO {STALE_TABLE} VALUES ({id})")),
            )
            .await;
            let Ok(mut g) = tally.lock() else { continue };
            match r {
                Ok(Ok(())) => {
                    g.accepted.push((node, id));
                    conns.insert(node, c);
                }
                Ok(Err(mysql_async::Error::Server(e))) if e.code == 1290 => {
                    g.refused_read_only += 1;
                    conns.insert(node, c);
                }
                Ok(Err(mysql_async::Error::Server(e))) => {
                    g.other_count += 1;
                    if g.other_errors.len() < 5 {
                        g.other_errors.push(format!("node {node}: {e}"));
                    }
                }
                Ok(Err(_)) | Err(_) => g.unreachable += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
