//! The consistent cut of a cluster backup: one point at which every shard's snapshot stands
//! and the commit log is read, so a restore can end every XA branch the same way on all of
//! its shards.
//!
//! How: the SQL thread of every source replica is stopped (so none applies past the cut); then
//! in one metadata write transaction the commit log is read with locks that keep any new
//! decision out ([`backups::log_rows`]) and every shard primary's binlog position
//! (`SHOW MASTER STATUS`) is read: the cut. Each source then applies exactly up to its
//! primary's position (`START SLAVE SQL_THREAD UNTIL MASTER_LOG_FILE, MASTER_LOG_POS`: its IO
//! thread keeps receiving, so the primary's semi-sync acknowledgements go on; MariaDB's
//! `UNTIL MASTER_GTID_POS` would need the IO thread stopped too) and its snapshot is taken
//! there; afterwards its replication is started again.
//!
//! Why it is consistent: a Kunlun coordinator logs its commit decision only after every branch
//! prepared, and commits a branch only after the decision is logged. No decision can be logged
//! while the log is locked, so at the cut a transaction either has its decision in the log
//! read (every branch is prepared or committed on its shard) or has no branch committed on any
//! shard; a restore commits the prepared branches of the first kind and rolls back the rest.
//!
//! Invariants: every source whose SQL thread was stopped is named in the memo (`frozen`) before
//! the stop, and is started again after its snapshot, on failure, and by a manager that resumes
//! the job after a restart; every SQL call has a deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use kunlun_meta::model::ShardNode;
use kunlun_meta::store::repo::backups::{self, LogTable};
use kunlun_meta::store::{Store, Tx};
use kunlun_provision::recipe::SYSTEM_SCHEMAS_SQL;

use crate::error::{Error, Result};
use crate::storage::{NodeAddr, StorageConn, StorageOptions};

/// Longest wait for every primary's binlog position while the commit log is held.
const POSITIONS_TIMEOUT: Duration = Duration::from_secs(5);
/// Log rows read per query.
const LOG_PAGE: u32 = 5000;
/// Most bytes the commit log may take in a backup (it is written in one piece).
const MAX_LOG_BYTES: usize = 256 * 1024 * 1024;

/// Where one shard's snapshot comes from.
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub shard_id: i64,
    pub node: ShardNode,
    pub primary: ShardNode,
}

impl Source {
    /// Whether the snapshot is taken from a replica (only a replica can be held at the cut).
    pub fn is_replica(&self) -> bool {
        self.node.id != self.primary.id
    }
}

/// A position in a primary's binary log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BinlogPos {
    pub file: String,
    pub pos: u64,
}

impl std::fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl BinlogPos {
    /// Whether a replica whose SQL thread stopped having executed up to `(file, pos)` of its
    /// primary's binlog stands exactly at `self` (short of it or past it is not the cut).
    fn is(&self, file: &str, pos: u64) -> bool {
        file == self.file && pos == self.pos
    }
}

/// The cut: each shard primary's binlog position and the commit log, read together.
#[derive(Debug, Clone, Default)]
pub(super) struct Cut {
    pub positions: BTreeMap<i64, BinlogPos>,
    /// Each held source's `@@gtid_binlog_pos` once it stopped at the cut (by shard id): it
    /// must be the same after the snapshot, else the source moved (a failover promoted it, or
    /// someone started its replication) and the snapshot is not at the cut.
    pub held: BTreeMap<i64, String>,
    /// The commit log as JSON lines, in id order.
    pub commit_log: Vec<u8>,
    /// The store's clock (unix seconds) once the cut was read: every decision in the log and
    /// every transaction at the positions came before it.
    pub at: i64,
}

fn sql_err(what: &str, node: &ShardNode) -> impl Fn(crate::storage::Error) -> Error {
    let what = format!(
        "{what} on {}:{} (node {})",
        node.hostaddr, node.port, node.id
    );
    move |e| Error::Unavailable(format!("{what}: {e}"))
}

async fn exec_on(node: &ShardNode, sql: &str, what: &str) -> Result<()> {
    let mut c = StorageConn::connect(&NodeAddr::from(node), StorageOptions::default())
        .await
        .map_err(sql_err(what, node))?;
    let r = c.exec(sql).await.map_err(sql_err(what, node));
    c.close().await;
    r
}

/// Stops the SQL thread of `node` (its IO thread keeps receiving, so semi-sync acks go on).
pub(super) async fn freeze(node: &ShardNode) -> Result<()> {
    exec_on(node, "STOP SLAVE SQL_THREAD", "stopping the SQL thread").await
}

/// Tries to start a held source's replication again.
const THAW_TRIES: u32 = 6;
const THAW_PAUSE: Duration = Duration::from_secs(5);

/// Starts `node`'s replication again, trying [`THAW_TRIES`] times [`THAW_PAUSE`] apart: HA's
/// upkeep does not start a SQL thread stopped alone without an error, so a source left held
/// would fall further behind for good. The last error when every try failed (logged too).
pub(super) async fn thaw(node: &ShardNode) -> Result<()> {
    let mut last = None;
    for i in 0..THAW_TRIES {
        if i > 0 {
            tokio::time::sleep(THAW_PAUSE).await;
        }
        match exec_on(node, "START SLAVE", "starting replication again").await {
            Ok(()) => return Ok(()),
            // ER_BAD_SLAVE: no replication configured any more. HA promoted it meanwhile
            // (a promotion resets its replication): there is nothing to start again.
            Err(e) if e.to_string().contains("error 1200") => {
                tracing::info!(node_id = node.id, "backup: a held source is no longer a replica (promoted by a failover): nothing to start again");
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| Error::Internal("no try".into()));
    tracing::error!(node_id = node.id, error = %e, "backup: replication of a held source not started again: start it by hand (START SLAVE)");
    Err(e)
}

/// Reads the commit log of `cluster` with locks and, in the same transaction, the binlog
/// position of every primary in `primaries` (shard id, node).
pub(super) async fn cut(
    store: &Store,
    cluster: &str,
    primaries: &[(i64, ShardNode)],
) -> Result<Cut> {
    let cluster = cluster.to_string();
    let primaries = primaries.to_vec();
    let (commit_log, positions, at) = store
        .tx(async |tx| {
            let out = read_log(tx, LogTable::CommitLog, &cluster).await?;
            // All primaries at once, under one deadline: decisions wait while the log is held.
            let reads = primaries.iter().map(|(shard_id, p)| async move {
                binlog_pos(p).await.map(|pos| (*shard_id, pos))
            });
            let all = tokio::time::timeout(POSITIONS_TIMEOUT, futures::future::join_all(reads))
                .await
                .map_err(|_| {
                    kunlun_meta::Error::Conflict(format!(
                        "the shard primaries' binlog positions were not all read within {} s",
                        POSITIONS_TIMEOUT.as_secs()
                    ))
                })?;
            let mut positions = BTreeMap::new();
            for r in all {
                let (shard_id, pos) = r.map_err(|e| kunlun_meta::Error::Conflict(e.to_string()))?;
                positions.insert(shard_id, pos);
            }
            let at = kunlun_meta::store::repo::commit_log::server_now(tx).await?;
            Ok((out, positions, at))
        })
        .await?;
    Ok(Cut {
        positions,
        commit_log,
        held: BTreeMap::new(),
        at,
    })
}

/// Every row of `cluster`'s log table `which` as JSON lines in id order, at most
/// [`MAX_LOG_BYTES`] (locked as it is read in a write transaction: see
/// [`backups::log_rows`]).
pub(super) async fn read_log(
    tx: &mut Tx,
    which: LogTable,
    cluster: &str,
) -> kunlun_meta::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let rows = backups::log_rows(tx, which, cluster, after, LOG_PAGE).await?;
        let Some((last, _)) = rows.last() else {
            return Ok(out);
        };
        after = *last;
        for (_, v) in &rows {
            out.extend_from_slice(v.to_string().as_bytes());
            out.push(b'\n');
        }
        if out.len() > MAX_LOG_BYTES {
            return Err(kunlun_meta::Error::Conflict(format!(
                "the cluster's {which:?} log holds more than {} MB: too large for a backup in \
                 one piece",
                MAX_LOG_BYTES / (1024 * 1024)
            )));
        }
    }
}

/// `SHOW MASTER STATUS` of `node`: the end of its binary log.
async fn binlog_pos(node: &ShardNode) -> Result<BinlogPos> {
    let what = "reading the binlog position";
    let mut c = StorageConn::connect(&NodeAddr::from(node), StorageOptions::default())
        .await
        .map_err(sql_err(what, node))?;
    let r: Result<Vec<mysql_async::Row>> = c
        .query("SHOW MASTER STATUS")
        .await
        .map_err(sql_err(what, node));
    c.close().await;
    let row = r?.into_iter().next().ok_or_else(|| {
        Error::Unavailable(format!(
            "shard primary {}:{} has no binary log",
            node.hostaddr, node.port
        ))
    })?;
    let file = column(&row, "File");
    let pos: u64 = column(&row, "Position").parse().map_err(|_| {
        Error::Unavailable(format!(
            "shard primary {}:{} gave an odd binlog position",
            node.hostaddr, node.port
        ))
    })?;
    if file.is_empty()
        || !file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Error::Unavailable(format!(
            "shard primary {}:{} gave an odd binlog file name '{file}'",
            node.hostaddr, node.port
        )));
    }
    Ok(BinlogPos { file, pos })
}

/// Column `name` of `row` as text (empty when absent or NULL).
fn column(row: &mysql_async::Row, name: &str) -> String {
    crate::storage::probe::text(row, name).unwrap_or_default()
}

/// How often a held source is looked at while it applies up to the cut.
const REACH_POLL: Duration = Duration::from_millis(200);

/// Deadline of one `CHECKSUM TABLE` statement (up to [`CHECKSUM_BATCH`] tables).
const CHECKSUM_TIMEOUT: Duration = Duration::from_secs(3600);
const CHECKSUM_BATCH: usize = 50;
/// Most tables checksummed; a shard with more records none.
const MAX_TABLES: usize = 100_000;

/// `CHECKSUM TABLE` of every table of `node` outside the system schemas, by `db.table` (a
/// table the server gives no checksum is left out). Run on a source held at the cut, so the
/// figures are the snapshot's.
pub(super) async fn checksums(node: &ShardNode) -> Result<BTreeMap<String, u64>> {
    let what = "checksumming the tables";
    let opts = StorageOptions {
        read_timeout: CHECKSUM_TIMEOUT,
        ..StorageOptions::default()
    };
    let mut c = StorageConn::connect(&NodeAddr::from(node), opts)
        .await
        .map_err(sql_err(what, node))?;
    let r = async {
        let tables: Vec<String> = c
            .query(&format!(
                "SELECT CONCAT('`', REPLACE(table_schema, '`', '``'), '`.`', \
                 REPLACE(table_name, '`', '``'), '`') FROM information_schema.tables \
                 WHERE table_type = 'BASE TABLE' AND table_schema NOT IN {} ORDER BY 1 LIMIT {}",
                SYSTEM_SCHEMAS_SQL,
                MAX_TABLES + 1
            ))
            .await?;
        let mut out = BTreeMap::new();
        if tables.len() > MAX_TABLES {
            return Ok(None);
        }
        for chunk in tables.chunks(CHECKSUM_BATCH) {
            let rows: Vec<(String, Option<u64>)> = c
                .query(&format!("CHECKSUM TABLE {}", chunk.join(", ")))
                .await?;
            out.extend(rows.into_iter().filter_map(|(t, v)| v.map(|v| (t, v))));
        }
        Ok(Some(out))
    }
    .await;
    c.close().await;
    r.map_err(sql_err(what, node))?.ok_or_else(|| {
        Error::Conflict(format!(
            "node {} holds more than {MAX_TABLES} tables: no checksums recorded",
            node.id
        ))
    })
}

/// `@@gtid_binlog_pos` of `node`.
async fn own_pos(node: &ShardNode) -> Result<String> {
    let what = "reading its GTID position";
    let mut c = StorageConn::connect(&NodeAddr::from(node), StorageOptions::default())
        .await
        .map_err(sql_err(what, node))?;
    let r: Result<Vec<Option<String>>> = c
        .query("SELECT @@gtid_binlog_pos")
        .await
        .map_err(sql_err(what, node));
    c.close().await;
    Ok(r?.into_iter().next().flatten().unwrap_or_default())
}

/// Checks, after its snapshot, that the held source `node` is still where it stopped at the
/// cut (`held`, from [`reach`]).
pub(super) async fn still_held(node: &ShardNode, held: &str) -> Result<()> {
    let now = own_pos(node).await?;
    if now == held {
        return Ok(());
    }
    Err(Error::Unavailable(format!(
        "{}:{} (node {}) moved while its snapshot was taken (from '{held}' to '{now}': \
         promoted by a failover, or its replication started by someone else), so the \
         snapshot is not at the cut",
        node.hostaddr, node.port, node.id
    )))
}

/// Lets the frozen `node` apply up to `at` (a position of `primary`'s binlog) and waits (at
/// most `limit`) until its SQL thread stopped exactly there by itself; a SQL error, a source
/// other than `primary`, or a stop short of or past the cut ends the wait with an error. Its
/// `@@gtid_binlog_pos` then (for [`still_held`]).
pub(super) async fn reach(
    node: &ShardNode,
    primary: &ShardNode,
    at: &BinlogPos,
    limit: Duration,
) -> Result<String> {
    let what = "starting the SQL thread up to the cut";
    let deadline = tokio::time::Instant::now() + limit;
    // One session for the start and the whole wait, closed however it ends.
    let mut c = StorageConn::connect(&NodeAddr::from(node), StorageOptions::default())
        .await
        .map_err(sql_err(what, node))?;
    let until = format!(
        "START SLAVE SQL_THREAD UNTIL MASTER_LOG_FILE = '{}', MASTER_LOG_POS = {}",
        at.file, at.pos
    );
    let r = match c.exec(&until).await.map_err(sql_err(what, node)) {
        Ok(()) => wait_stopped(&mut c, node, primary, at, (deadline, limit)).await,
        Err(e) => Err(e),
    };
    c.close().await;
    r?;
    own_pos(node).await
}

/// Polls `c` (on `node`) until its SQL thread stopped exactly at `at` (see [`reach`]).
async fn wait_stopped(
    c: &mut StorageConn,
    node: &ShardNode,
    primary: &ShardNode,
    at: &BinlogPos,
    (deadline, limit): (tokio::time::Instant, Duration),
) -> Result<()> {
    let where_ = format!("{}:{} (node {})", node.hostaddr, node.port, node.id);
    loop {
        let rows: Vec<mysql_async::Row> = c
            .query("SHOW SLAVE STATUS")
            .await
            .map_err(sql_err("waiting for the cut", node))?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| Error::Unavailable(format!("{where_} no longer replicates")))?;
        let ch = crate::storage::probe::channel(&row);
        if ch.master_host != primary.hostaddr || ch.master_port != primary.port {
            return Err(Error::Unavailable(format!(
                "{where_} replicates from {}:{}, not from the shard's primary {}:{} whose \
                 position is the cut",
                ch.master_host, ch.master_port, primary.hostaddr, primary.port
            )));
        }
        if let Some(e) = ch.sql_error() {
            return Err(Error::Unavailable(format!(
                "{where_} stopped before the cut {at}: {e}"
            )));
        }
        let running = ch.sql_running;
        let file = column(&row, "Relay_Master_Log_File");
        let pos = column(&row, "Exec_Master_Log_Pos").parse().unwrap_or(0);
        if !running && at.is(&file, pos) {
            return Ok(());
        }
        if !running {
            return Err(Error::Unavailable(format!(
                "{where_} stopped at {file}:{pos}, not at the cut {at}"
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Unavailable(format!(
                "{where_} did not reach the cut {at} within {} s (at {file}:{pos})",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(REACH_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_position_is_the_cut() {
        let at = BinlogPos {
            file: "bin.000002".into(),
            pos: 500,
        };
        assert!(at.is("bin.000002", 500));
        assert!(!at.is("bin.000002", 900), "past the cut");
        assert!(!at.is("bin.000003", 4), "past the cut");
        assert!(!at.is("bin.000002", 499));
        assert!(!at.is("bin.000001", 9000));
        assert!(!at.is("", 0));
        assert_eq!(at.to_string(), "bin.000002:500");
    }
}
