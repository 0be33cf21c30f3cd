//! 2PC decisions in the per-cluster `commit_log_<cluster>` tables (reference §1.4, §5 of the
//! design).
//!
//! Invariants: `(comp_node_id, txn_id)` is unique, so whoever logs a decision first wins and a
//! second insert gets [`Error::Conflict`]; an insert with a deadline writes NULL into the NOT
//! NULL `next_txn_cmd` once the server's clock has passed the deadline, so a late decision is
//! refused by the database itself ([`Error::Expired`]), as Kunlun's compute nodes do with
//! `IF(unix_timestamp() > deadline, NULL, cmd)`.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::RunQueryDsl;

use super::quoted_table;
use crate::error::{Error, Result};
use crate::model::{CommitLogEntry, TxnCmd};
use crate::store::config::BackendKind;
use crate::store::conn::{with_conn, Tx};
use crate::store::repo::clusters::COMMIT_LOG_PREFIX;
use crate::store::rows::CommitLogRow;

/// A decision to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommitLogEntry {
    pub comp_node_id: i64,
    /// `(start_unix_ts << 32) | local_xid`.
    pub txn_id: u64,
    pub next_txn_cmd: TxnCmd,
    /// Ids of the shards the transaction wrote.
    pub written_shards: Option<Vec<i64>>,
}

/// Builds a global transaction id from its start time and the compute node's local xid.
pub fn txn_id(start_unix_ts: u32, local_xid: u32) -> u64 {
    (u64::from(start_unix_ts) << 32) | u64::from(local_xid)
}

fn txn_i64(txn_id: u64) -> Result<i64> {
    i64::try_from(txn_id).map_err(|_| Error::Invalid(format!("txn_id {txn_id} is out of range")))
}

fn unix_now_sql(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Mysql => "UNIX_TIMESTAMP()",
        BackendKind::Sqlite => "CAST(strftime('%s', 'now') AS INTEGER)",
    }
}

/// Logs a decision. With `deadline` (unix seconds, compared with the database server's clock)
/// a late insert fails with [`Error::Expired`]; a second decision for the same
/// `(comp_node_id, txn_id)` fails with [`Error::Conflict`].
pub async fn insert(
    tx: &mut Tx,
    cluster: &str,
    e: &NewCommitLogEntry,
    deadline: Option<i64>,
) -> Result<()> {
    let table = quoted_table(COMMIT_LOG_PREFIX, cluster)?;
    let shards = match &e.written_shards {
        Some(s) => Some(serde_json::to_string(s).map_err(|err| Error::Invalid(err.to_string()))?),
        None => None,
    };
    let txn = txn_i64(e.txn_id)?;
    let sql = format!(
        "INSERT INTO {table} (comp_node_id, txn_id, next_txn_cmd, written_shards) \
         VALUES (?, ?, CASE WHEN {} > ? THEN NULL ELSE ? END, ?)",
        unix_now_sql(tx.kind())
    );
    // Without a deadline the guard compares against the largest time, so it never fires.
    let deadline = deadline.unwrap_or(i64::MAX);
    let r = with_conn!(tx, c => diesel::sql_query(sql.as_str())
        .bind::<BigInt, _>(e.comp_node_id)
        .bind::<BigInt, _>(txn)
        .bind::<BigInt, _>(deadline)
        .bind::<Text, _>(e.next_txn_cmd.as_str())
        .bind::<Nullable<Text>, _>(shards.as_deref())
        .execute(c)
        .await);
    match r {
        Ok(_) => Ok(()),
        Err(Error::Conflict(_)) => Err(Error::Conflict(format!(
            "a decision for transaction {} of compute node {} is already logged",
            e.txn_id, e.comp_node_id
        ))),
        Err(Error::Database(m)) if is_not_null_violation(&m) => Err(Error::Expired(format!(
            "decision for transaction {} of compute node {} refused: deadline {deadline} passed",
            e.txn_id, e.comp_node_id
        ))),
        Err(other) => Err(other),
    }
}

fn is_not_null_violation(msg: &str) -> bool {
    msg.contains("NOT NULL") || msg.contains("cannot be null") || msg.contains("NotNullViolation")
}

/// The decision for one transaction, if logged.
pub async fn get(
    tx: &mut Tx,
    cluster: &str,
    comp_node_id: i64,
    txn_id: u64,
) -> Result<Option<CommitLogEntry>> {
    let table = quoted_table(COMMIT_LOG_PREFIX, cluster)?;
    let sql = format!(
        "SELECT comp_node_id, txn_id, next_txn_cmd, prepare_ts FROM {table} WHERE comp_node_id = ? AND txn_id = ?"
    );
    let txn = txn_i64(txn_id)?;
    let rows = with_conn!(tx, c => diesel::sql_query(sql.as_str())
        .bind::<BigInt, _>(comp_node_id)
        .bind::<BigInt, _>(txn)
        .load::<CommitLogRow>(c)
        .await)?;
    rows.into_iter()
        .next()
        .map(CommitLogEntry::try_from)
        .transpose()
}

/// Every decision with `lo <= txn_id <= hi` (one range query per cluster, as XA recovery
/// needs), ordered by compute node and transaction.
pub async fn range(tx: &mut Tx, cluster: &str, lo: u64, hi: u64) -> Result<Vec<CommitLogEntry>> {
    let table = quoted_table(COMMIT_LOG_PREFIX, cluster)?;
    let sql = format!(
        "SELECT comp_node_id, txn_id, next_txn_cmd, prepare_ts FROM {table} \
         WHERE txn_id BETWEEN ? AND ? ORDER BY comp_node_id, txn_id"
    );
    let (lo, hi) = (txn_i64(lo)?, txn_i64(hi.min(i64::MAX as u64))?);
    let rows = with_conn!(tx, c => diesel::sql_query(sql.as_str())
        .bind::<BigInt, _>(lo)
        .bind::<BigInt, _>(hi)
        .load::<CommitLogRow>(c)
        .await)?;
    rows.into_iter().map(CommitLogEntry::try_from).collect()
}

/// Deletes decisions of transactions that started before `before_txn_id` (retention);
/// returns how many rows went.
pub async fn purge_before(tx: &mut Tx, cluster: &str, before_txn_id: u64) -> Result<usize> {
    let table = quoted_table(COMMIT_LOG_PREFIX, cluster)?;
    let sql = format!("DELETE FROM {table} WHERE txn_id < ?");
    let before = txn_i64(before_txn_id.min(i64::MAX as u64))?;
    with_conn!(tx, c => diesel::sql_query(sql.as_str()).bind::<BigInt, _>(before).execute(c).await)
}

/// One decision with the time it was logged (`prepare_ts`), in unix milliseconds of the
/// store's clock.
#[derive(
    Debug, Clone, PartialEq, Eq, diesel::QueryableByName, serde::Serialize, serde::Deserialize,
)]
pub struct TimedDecision {
    #[diesel(sql_type = BigInt)]
    pub comp_node_id: i64,
    #[diesel(sql_type = BigInt)]
    pub txn_id: i64,
    #[diesel(sql_type = Text)]
    pub next_txn_cmd: String,
    #[diesel(sql_type = BigInt)]
    pub at_ms: i64,
}

/// `prepare_ts` as unix milliseconds, per backend.
fn at_ms_sql(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Mysql => "CAST(UNIX_TIMESTAMP(prepare_ts) * 1000 AS SIGNED)",
        BackendKind::Sqlite => {
            "CAST(ROUND((julianday(prepare_ts) - 2440587.5) * 86400000.0) AS INTEGER)"
        }
    }
}

/// The decisions logged at `from_ms <= prepare_ts < until_ms` (unix milliseconds, the store's
/// clock), at most `limit + 1` of them (so a caller tells a full window), oldest first: what
/// binlog archiving keeps of the commit log for a point-in-time restore.
pub async fn logged_between(
    tx: &mut Tx,
    cluster: &str,
    from_ms: i64,
    until_ms: i64,
    limit: u32,
) -> Result<Vec<TimedDecision>> {
    let table = quoted_table(COMMIT_LOG_PREFIX, cluster)?;
    let at = at_ms_sql(tx.kind());
    let sql = format!(
        "SELECT comp_node_id, txn_id, next_txn_cmd, at_ms FROM \
         (SELECT comp_node_id, txn_id, next_txn_cmd, {at} AS at_ms FROM {table}) d \
         WHERE at_ms >= ? AND at_ms < ? ORDER BY at_ms, comp_node_id, txn_id LIMIT ?"
    );
    with_conn!(tx, c => diesel::sql_query(sql.as_str())
        .bind::<BigInt, _>(from_ms)
        .bind::<BigInt, _>(until_ms)
        .bind::<BigInt, _>(i64::from(limit) + 1)
        .load::<TimedDecision>(c)
        .await)
}

/// The database server's clock in unix seconds: the clock the deadline guard of [`insert`]
/// compares with, so XA recovery judges a transaction's age by it too.
pub async fn server_now(tx: &mut Tx) -> Result<i64> {
    let f = match tx.kind() {
        BackendKind::Mysql => "CAST(UNIX_TIMESTAMP() AS SIGNED)",
        BackendKind::Sqlite => unix_now_sql(BackendKind::Sqlite),
    };
    with_conn!(tx, c => diesel::select(diesel::dsl::sql::<BigInt>(f)).get_result::<i64>(c).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_ids_put_the_start_second_in_the_high_half() {
        let id = txn_id(1_598_596_846, 967_098);
        assert_eq!(id >> 32, 1_598_596_846);
        assert_eq!(id & 0xffff_ffff, 967_098);
        assert!(txn_i64(id).is_ok());
        assert!(txn_i64(u64::MAX).is_err());
    }
}
