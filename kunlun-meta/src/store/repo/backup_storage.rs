//! Backup storages: rows of the original's `backup_storage` table. Ours are stype `OTHER` with
//! `conn_str` `sshdir://<hostaddr><path>` and `extra` `{"kind":"ssh_dir","path":..,
//! "machine_id":..}`; rows of other kinds (the original's HDFS) are listed as they are.
//!
//! Invariant: names are unique (index `backup_storage_name`); `user_name`/`passwd` are never
//! written by us (an SSH directory needs no secret of its own: the machine's key is used).

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use super::{conflict_as, last_insert_id};
use crate::api::KIND_SSH_DIR;
use crate::error::{Error, Result};
use crate::model::BackupStorage;
use crate::store::conn::{with_conn, Tx};
use crate::store::schema::backup_storage as s;

/// The stype of our kinds (the original's enum has no value for them).
pub const STYPE_OTHER: &str = "OTHER";

/// A storage to store (validated by the caller; the machine exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackupStorage {
    pub name: String,
    pub hostaddr: String,
    pub path: String,
    pub machine_id: i64,
}

/// `extra` of our rows.
#[derive(Debug, Serialize, Deserialize)]
struct Extra {
    kind: String,
    path: String,
    machine_id: i64,
}

type Row = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn columns() -> (s::id, s::name, s::stype, s::conn_str, s::hostaddr, s::extra) {
    (s::id, s::name, s::stype, s::conn_str, s::hostaddr, s::extra)
}

/// A row as a storage: ours from `extra`; another kind's with its stype (lowercase) as kind,
/// no path and machine 0 (nothing of ours can open it).
fn from_row((id, name, stype, conn_str, hostaddr, extra): Row) -> BackupStorage {
    let ours = extra
        .as_deref()
        .and_then(|e| serde_json::from_str::<Extra>(e).ok());
    let (kind, path, machine_id) = match ours {
        Some(x) => (x.kind, x.path, x.machine_id),
        None => (
            stype.unwrap_or_default().to_ascii_lowercase(),
            String::new(),
            0,
        ),
    };
    BackupStorage {
        id,
        name: name.unwrap_or_default(),
        kind,
        hostaddr: hostaddr.unwrap_or_default(),
        path,
        machine_id,
        conn_str: conn_str.unwrap_or_default(),
    }
}

fn conn_str(hostaddr: &str, path: &str) -> String {
    format!("sshdir://{hostaddr}{path}")
}

fn extra(st: &NewBackupStorage) -> Result<String> {
    serde_json::to_string(&Extra {
        kind: KIND_SSH_DIR.to_string(),
        path: st.path.clone(),
        machine_id: st.machine_id,
    })
    .map_err(|e| Error::Database(format!("backup_storage.extra: {e}")))
}

/// Stores a storage; [`Error::Conflict`] when the name is taken.
pub async fn insert(tx: &mut Tx, st: &NewBackupStorage) -> Result<BackupStorage> {
    let extra = extra(st)?;
    with_conn!(tx, c => diesel::insert_into(s::table)
        .values((
            s::name.eq(&st.name),
            s::stype.eq(STYPE_OTHER),
            s::conn_str.eq(conn_str(&st.hostaddr, &st.path)),
            s::hostaddr.eq(&st.hostaddr),
            s::extra.eq(&extra),
        ))
        .execute(c)
        .await)
    .map_err(|e| conflict_as(e, || format!("backup storage {} exists", st.name)))?;
    let id = last_insert_id(tx).await?;
    get(tx, id).await
}

/// One storage by id; [`Error::NotFound`] if unknown.
pub async fn get(tx: &mut Tx, id: i64) -> Result<BackupStorage> {
    let row: Option<Row> = with_conn!(tx, c => s::table
        .filter(s::id.eq(id))
        .select(columns())
        .first(c)
        .await
        .optional())?;
    row.map(from_row)
        .ok_or_else(|| Error::not_found("backup storage", id))
}

/// One storage by name, if it exists.
pub async fn find_by_name(tx: &mut Tx, name: &str) -> Result<Option<BackupStorage>> {
    let row: Option<Row> = with_conn!(tx, c => s::table
        .filter(s::name.eq(name))
        .select(columns())
        .first(c)
        .await
        .optional())?;
    Ok(row.map(from_row))
}

/// One storage by name; [`Error::NotFound`] if unknown.
pub async fn get_by_name(tx: &mut Tx, name: &str) -> Result<BackupStorage> {
    find_by_name(tx, name)
        .await?
        .ok_or_else(|| Error::not_found("backup storage", name))
}

/// Every storage, by id.
pub async fn list(tx: &mut Tx) -> Result<Vec<BackupStorage>> {
    let rows: Vec<Row> = with_conn!(tx, c => s::table
        .order(s::id.asc())
        .select(columns())
        .load(c)
        .await)?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Points a storage at another machine or directory (its name stays).
pub async fn update(tx: &mut Tx, id: i64, st: &NewBackupStorage) -> Result<BackupStorage> {
    let extra = extra(st)?;
    let n = with_conn!(tx, c => diesel::update(s::table.filter(s::id.eq(id)))
        .set((
            s::stype.eq(STYPE_OTHER),
            s::conn_str.eq(conn_str(&st.hostaddr, &st.path)),
            s::hostaddr.eq(&st.hostaddr),
            s::extra.eq(&extra),
        ))
        .execute(c)
        .await)?;
    if n == 0 {
        return Err(Error::not_found("backup storage", id));
    }
    get(tx, id).await
}

/// Removes a storage's row (the caller checked no backup uses it).
pub async fn delete(tx: &mut Tx, id: i64) -> Result<()> {
    let n = with_conn!(tx, c => diesel::delete(s::table.filter(s::id.eq(id))).execute(c).await)?;
    if n == 0 {
        return Err(Error::not_found("backup storage", id));
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// How many backup records name the storage: the original's per-part rows
/// (`cluster_coldbackups`, `cluster_shard_backup_restore_log`).
///
/// How many backups and backup parts are kept on storage `storage_id` (the catalogue's
/// `kl_backup` rows, with or without parts yet, and the original's part and restore-log rows).
pub async fn backups_using(tx: &mut Tx, storage_id: i64) -> Result<i64> {
    let sql = "SELECT (SELECT COUNT(*) FROM kl_backup WHERE storage_id = ?) \
               + (SELECT COUNT(*) FROM cluster_coldbackups WHERE storage_id = ?) \
               + (SELECT COUNT(*) FROM cluster_shard_backup_restore_log WHERE storage_id = ?) AS n";
    let r = with_conn!(tx, c => diesel::sql_query(sql)
        .bind::<BigInt, _>(storage_id)
        .bind::<BigInt, _>(storage_id)
        .bind::<BigInt, _>(storage_id)
        .get_result::<Count>(c)
        .await)?;
    Ok(r.n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_ours_and_of_other_kinds_read_back() {
        let ours = from_row((
            3,
            Some("n".into()),
            Some("OTHER".into()),
            Some("sshdir://h/b".into()),
            Some("h".into()),
            Some(r#"{"kind":"ssh_dir","path":"/b","machine_id":7}"#.into()),
        ));
        assert_eq!(
            (ours.kind.as_str(), ours.path.as_str(), ours.machine_id),
            ("ssh_dir", "/b", 7)
        );
        let hdfs = from_row((4, Some("h".into()), Some("HDFS".into()), None, None, None));
        assert_eq!((hdfs.kind.as_str(), hdfs.machine_id), ("hdfs", 0));
        assert_eq!(conn_str("10.0.0.1", "/x/y"), "sshdir://10.0.0.1/x/y");
    }
}
