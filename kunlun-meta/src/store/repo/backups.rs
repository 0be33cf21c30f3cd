//! The backup catalogue: cluster backups (`kl_backup`) and their parts (`cluster_coldbackups`).
//!
//! Invariants: a part belongs to the backup whose directory its `backup_addr` lies under
//! (`cluster_<cid>/backup_<bid>/`, chosen by the backup job), so a backup's parts are found and
//! removed with it; nothing ties a backup to its cluster's rows (it outlives the cluster).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};

use super::{last_insert_id, now, quoted_table};
use crate::api::Page;
use crate::error::{Error, Result};
use crate::model::{Backup, BackupPart, BackupStatus, JobStatus, NewBackup, NewBackupPart};
use crate::store::conn::{with_conn, Tx};
use crate::store::repo::clusters::{COMMIT_LOG_PREFIX, DDL_LOG_PREFIX};
use crate::store::rows::{json, state};
use crate::store::schema::{cluster_coldbackups as p, kl_backup as b};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = b, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
struct BackupRow {
    id: i64,
    cluster_id: i64,
    cluster_name: String,
    storage_id: i64,
    job_id: Option<i64>,
    status: String,
    started_at: NaiveDateTime,
    ended_at: Option<NaiveDateTime>,
    bytes: i64,
    shape: Option<String>,
    manifest: Option<String>,
    error: Option<String>,
}

impl TryFrom<BackupRow> for Backup {
    type Error = Error;
    fn try_from(r: BackupRow) -> Result<Backup> {
        Ok(Backup {
            id: r.id,
            cluster_id: r.cluster_id,
            cluster_name: r.cluster_name,
            storage_id: r.storage_id,
            job_id: r.job_id,
            status: state("kl_backup.status", &r.status)?,
            started_at: r.started_at,
            ended_at: r.ended_at,
            bytes: u64::try_from(r.bytes).unwrap_or(0),
            shape: json(r.shape),
            manifest: r.manifest,
            error: r.error,
            parts: Vec::new(),
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = p, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
struct PartRow {
    id: i64,
    shard_id: Option<i64>,
    comp_id: Option<i64>,
    backup_type: String,
    status: String,
    start_ts: NaiveDateTime,
    end_ts: Option<NaiveDateTime>,
    memo: Option<String>,
    backup_addr: Option<String>,
}

impl TryFrom<PartRow> for BackupPart {
    type Error = Error;
    fn try_from(r: PartRow) -> Result<BackupPart> {
        Ok(BackupPart {
            id: r.id,
            backup_type: state("cluster_coldbackups.backup_type", &r.backup_type)?,
            shard_id: r.shard_id,
            comp_id: r.comp_id,
            status: state("cluster_coldbackups.status", &r.status)?,
            start_ts: r.start_ts,
            end_ts: r.end_ts,
            memo: json(r.memo),
            backup_addr: r.backup_addr,
        })
    }
}

/// The directory of backup `id` of cluster `cluster_id`, relative to the storage's root.
pub fn dir_of(cluster_id: i64, id: i64) -> String {
    format!("cluster_{cluster_id}/backup_{id}")
}

/// Records a backup `ongoing`.
pub async fn create(tx: &mut Tx, n: &NewBackup) -> Result<Backup> {
    let shape = n.shape.to_string();
    with_conn!(tx, c => diesel::insert_into(b::table)
        .values((
            b::cluster_id.eq(n.cluster_id),
            b::cluster_name.eq(&n.cluster_name),
            b::storage_id.eq(n.storage_id),
            b::job_id.eq(n.job_id),
            b::status.eq(BackupStatus::Ongoing.as_str()),
            b::started_at.eq(now()),
            b::bytes.eq(0i64),
            b::shape.eq(&shape),
        ))
        .execute(c)
        .await)?;
    let id = last_insert_id(tx).await?;
    get(tx, id).await
}

/// One backup without its parts; [`Error::NotFound`] if unknown.
pub async fn get(tx: &mut Tx, id: i64) -> Result<Backup> {
    let row = with_conn!(tx, c => b::table
        .filter(b::id.eq(id))
        .select(BackupRow::as_select())
        .first::<BackupRow>(c)
        .await
        .optional())?;
    row.ok_or_else(|| Error::not_found("backup", id))?
        .try_into()
}

/// One backup with its parts.
pub async fn get_full(tx: &mut Tx, id: i64) -> Result<Backup> {
    let mut bk = get(tx, id).await?;
    bk.parts = parts(tx, &bk).await?;
    Ok(bk)
}

/// The backup taken by job `job_id`, if it got that far.
pub async fn of_job(tx: &mut Tx, job_id: i64) -> Result<Option<Backup>> {
    let row = with_conn!(tx, c => b::table
        .filter(b::job_id.eq(job_id))
        .select(BackupRow::as_select())
        .first::<BackupRow>(c)
        .await
        .optional())?;
    row.map(Backup::try_from).transpose()
}

/// One page of backups (of one cluster when given), newest first; the cursor goes to older.
pub async fn list_page(
    tx: &mut Tx,
    cluster_id: Option<i64>,
    limit: u32,
    after: Option<i64>,
) -> Result<Page<Backup>> {
    let before = after.unwrap_or(i64::MAX);
    let probe = i64::from(limit) + 1;
    let rows = with_conn!(tx, c => {
        let mut q = b::table
            .select(BackupRow::as_select())
            .filter(b::id.lt(before))
            .order(b::id.desc())
            .limit(probe)
            .into_boxed();
        if let Some(cid) = cluster_id {
            q = q.filter(b::cluster_id.eq(cid));
        }
        q.load::<BackupRow>(c).await
    })?;
    let items = rows
        .into_iter()
        .map(Backup::try_from)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_probe(items, limit, |x| x.id))
}

/// Ends a backup: its status, total bytes, manifest path and error.
pub async fn finish(
    tx: &mut Tx,
    id: i64,
    status: BackupStatus,
    bytes: u64,
    manifest: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    let n = with_conn!(tx, c => diesel::update(b::table.filter(b::id.eq(id)))
        .set((
            b::status.eq(status.as_str()),
            b::ended_at.eq(Some(now())),
            b::bytes.eq(bytes),
            b::manifest.eq(manifest),
            b::error.eq(error),
        ))
        .execute(c)
        .await)?;
    if n == 0 {
        return Err(Error::not_found("backup", id));
    }
    Ok(())
}

/// Records a part `ongoing`; its id.
pub async fn add_part(tx: &mut Tx, n: &NewBackupPart) -> Result<i64> {
    with_conn!(tx, c => diesel::insert_into(p::table)
        .values((
            p::storage_id.eq(n.storage_id),
            p::cluster_id.eq(n.cluster_id),
            p::shard_id.eq(n.shard_id),
            p::comp_id.eq(n.comp_id),
            p::backup_type.eq(n.kind.as_str()),
            p::status.eq(JobStatus::Ongoing.as_str()),
            p::start_ts.eq(now()),
            p::backup_addr.eq(&n.rel),
        ))
        .execute(c)
        .await)?;
    last_insert_id(tx).await
}

/// Ends a part: `done` or `failed`, with its memo.
pub async fn finish_part(
    tx: &mut Tx,
    id: i64,
    status: JobStatus,
    memo: &serde_json::Value,
) -> Result<()> {
    let memo = memo.to_string();
    with_conn!(tx, c => diesel::update(p::table.filter(p::id.eq(id)))
        .set((
            p::status.eq(status.as_str()),
            p::end_ts.eq(Some(now())),
            p::memo.eq(Some(memo)),
        ))
        .execute(c)
        .await)?;
    Ok(())
}

/// The parts of `bk`, in the order they were recorded.
pub async fn parts(tx: &mut Tx, bk: &Backup) -> Result<Vec<BackupPart>> {
    let prefix = format!("{}/%", dir_of(bk.cluster_id, bk.id));
    let rows = with_conn!(tx, c => p::table
        .filter(p::cluster_id.eq(bk.cluster_id))
        .filter(p::backup_addr.like(&prefix))
        .select(PartRow::as_select())
        .order(p::id.asc())
        .load::<PartRow>(c)
        .await)?;
    rows.into_iter().map(BackupPart::try_from).collect()
}

/// Removes a backup's row and its parts' rows.
pub async fn delete(tx: &mut Tx, id: i64) -> Result<()> {
    let bk = get(tx, id).await?;
    let prefix = format!("{}/%", dir_of(bk.cluster_id, bk.id));
    with_conn!(tx, c => diesel::delete(
        p::table
            .filter(p::cluster_id.eq(bk.cluster_id))
            .filter(p::backup_addr.like(&prefix)),
    )
    .execute(c)
    .await)?;
    with_conn!(tx, c => diesel::delete(b::table.filter(b::id.eq(id))).execute(c).await)?;
    Ok(())
}

/// How many backups are kept on storage `storage_id` (a storage in use is not removed).
pub async fn count_on_storage(tx: &mut Tx, storage_id: i64) -> Result<i64> {
    with_conn!(tx, c => b::table
        .filter(b::storage_id.eq(storage_id))
        .count()
        .get_result::<i64>(c)
        .await)
}

#[derive(Debug, QueryableByName, serde::Serialize)]
struct CommitLogLine {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    comp_node_id: i64,
    #[diesel(sql_type = BigInt)]
    txn_id: i64,
    #[diesel(sql_type = Text)]
    next_txn_cmd: String,
    #[diesel(sql_type = Timestamp)]
    #[serde(with = "crate::utc")]
    prepare_ts: NaiveDateTime,
    #[diesel(sql_type = Nullable<Text>)]
    written_shards: Option<String>,
}

#[derive(Debug, QueryableByName, serde::Serialize)]
struct DdlOpLine {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    objname: String,
    #[diesel(sql_type = Text)]
    db_name: String,
    #[diesel(sql_type = Text)]
    schema_name: String,
    #[diesel(sql_type = Text)]
    user_name: String,
    #[diesel(sql_type = Text)]
    role_name: String,
    #[diesel(sql_type = Text)]
    search_path: String,
    #[diesel(sql_type = Text)]
    optype: String,
    #[diesel(sql_type = Text)]
    objtype: String,
    #[diesel(sql_type = Timestamp)]
    #[serde(with = "crate::utc")]
    when_logged: NaiveDateTime,
    #[diesel(sql_type = Text)]
    sql_src: String,
    #[diesel(sql_type = Text)]
    sql_storage_node: String,
    #[diesel(sql_type = BigInt)]
    target_shard_id: i64,
    #[diesel(sql_type = BigInt)]
    initiator: i64,
    #[diesel(sql_type = BigInt)]
    txn_id: i64,
}

/// The cluster's log tables a backup keeps: `commit_log_<name>` and `ddl_ops_log_<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTable {
    CommitLog,
    DdlOps,
}

/// Up to `limit` rows of `cluster`'s log table `which` with `id > after`, in id order, as
/// JSON objects (column name to value); the last row's id is the next call's `after`.
///
/// In a MySQL write transaction the read locks what it scans (`FOR UPDATE`): a page that
/// reaches the end of the table also locks the gap above the last row, so no row can be added
/// until the transaction ends, and a row inserted but not yet committed is waited for, not
/// skipped. Reading every page this way in one write transaction freezes the log (on SQLite
/// the write transaction itself is the lock): the consistent cut of a backup.
pub async fn log_rows(
    tx: &mut Tx,
    which: LogTable,
    cluster: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, serde_json::Value)>> {
    let (prefix, cols) = match which {
        LogTable::CommitLog => (
            COMMIT_LOG_PREFIX,
            "id, comp_node_id, txn_id, next_txn_cmd, prepare_ts, written_shards",
        ),
        LogTable::DdlOps => (
            DDL_LOG_PREFIX,
            "id, objname, db_name, schema_name, user_name, role_name, search_path, optype, \
             objtype, when_logged, sql_src, sql_storage_node, target_shard_id, initiator, txn_id",
        ),
    };
    let table = quoted_table(prefix, cluster)?;
    let lock = if tx.locking_reads() {
        " FOR UPDATE"
    } else {
        ""
    };
    let sql = format!("SELECT {cols} FROM {table} WHERE id > ? ORDER BY id LIMIT ?{lock}");
    let limit = i64::from(limit);
    let json = |v: serde_json::Result<serde_json::Value>| {
        v.map_err(|e| Error::Database(format!("{table}: a row as JSON: {e}")))
    };
    match which {
        LogTable::CommitLog => {
            let rows = with_conn!(tx, c => diesel::sql_query(sql.as_str())
                .bind::<BigInt, _>(after)
                .bind::<BigInt, _>(limit)
                .load::<CommitLogLine>(c)
                .await)?;
            rows.iter()
                .map(|r| Ok((r.id, json(serde_json::to_value(r))?)))
                .collect()
        }
        LogTable::DdlOps => {
            let rows = with_conn!(tx, c => diesel::sql_query(sql.as_str())
                .bind::<BigInt, _>(after)
                .bind::<BigInt, _>(limit)
                .load::<DdlOpLine>(c)
                .await)?;
            rows.iter()
                .map(|r| Ok((r.id, json(serde_json::to_value(r))?)))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backups_directory_is_named_after_its_cluster_and_id() {
        assert_eq!(dir_of(3, 17), "cluster_3/backup_17");
        // The part filter is a prefix with the separator, so backup_1 never matches backup_17.
        assert!(!format!("{}/x", dir_of(3, 17)).starts_with(&format!("{}/", dir_of(3, 1))));
    }
}
