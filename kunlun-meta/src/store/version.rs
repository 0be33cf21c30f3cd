//! The embedded store's change counter: SQLite's `PRAGMA data_version`, read on a connection of
//! its own that never writes, so that it changes whenever any other connection (the pools of
//! this process, another daemon or the CLI on the same file) has committed since the last read.
//!
//! Invariant: a version is only ever compared for equality with one read earlier on the same
//! [`Watch`]; equal versions mean no commit in between, so anything read from the store after
//! the first reading is still what the store holds. When the counter cannot be read at once
//! (a lock held by a checkpoint, an I/O error), there is no version: callers then read the
//! store itself. A reading takes the mutex and starts and ends one WAL read transaction (a few
//! microseconds); SQLite's own short retries while another connection rewrites the WAL index,
//! or its recovery of the index after a crash, are the only waits it may add.

use std::sync::Mutex;

use diesel::connection::SimpleConnection;
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};

use crate::error::{Error, Result};

/// The connection that reads `PRAGMA data_version`.
pub(crate) struct Watch {
    conn: Mutex<SqliteConnection>,
}

#[derive(QueryableByName)]
struct DataVersion {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    data_version: i64,
}

impl Watch {
    /// Opens the watching connection on the file at `url` (which exists, in WAL mode).
    ///
    /// `busy_timeout = 0`: a reading never waits for a lock, so it may run on an async
    /// worker; `query_only`: it cannot write, so its own counter never hides a change.
    pub(crate) fn open(url: &str) -> Result<Watch> {
        let mut c = SqliteConnection::establish(url)
            .map_err(|e| Error::Unavailable(format!("cannot open sqlite file {url}: {e}")))?;
        c.batch_execute("PRAGMA busy_timeout = 0; PRAGMA query_only = ON;")
            .map_err(|e| Error::Unavailable(format!("cannot set up sqlite file {url}: {e}")))?;
        Ok(Watch {
            conn: Mutex::new(c),
        })
    }

    /// The counter now, or `None` when it cannot be read without waiting. SQLite keeps it in
    /// 32 bits (a C `int`, so it reads negative past 2^31): the low 32 bits, which wrap.
    pub(crate) fn version(&self) -> Option<u64> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        diesel::sql_query("PRAGMA data_version")
            .get_result::<DataVersion>(&mut *c)
            .ok()
            .map(|v| (v.data_version as u64) & 0xffff_ffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(c: &mut SqliteConnection, sql: &str) {
        c.batch_execute(sql).unwrap();
    }

    #[test]
    fn the_version_changes_with_each_commit_of_another_connection_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sqlite");
        let url = path.to_str().unwrap();
        let mut writer = SqliteConnection::establish(url).unwrap();
        exec(
            &mut writer,
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER);",
        );
        let watch = Watch::open(url).unwrap();
        let v0 = watch.version().expect("a version");
        assert_eq!(watch.version(), Some(v0), "nothing committed");
        exec(&mut writer, "INSERT INTO t VALUES (1)");
        let v1 = watch.version().expect("a version");
        assert_ne!(v1, v0, "a commit of another connection");
        // An open, uncommitted transaction changes nothing yet.
        exec(&mut writer, "BEGIN; INSERT INTO t VALUES (2);");
        assert_eq!(watch.version(), Some(v1));
        exec(&mut writer, "COMMIT");
        assert_ne!(watch.version(), Some(v1));
        // The watching connection itself cannot write.
        assert!(watch
            .conn
            .lock()
            .unwrap()
            .batch_execute("INSERT INTO t VALUES (3)")
            .is_err());
    }
}
