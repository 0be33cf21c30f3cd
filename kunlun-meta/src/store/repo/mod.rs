//! Repositories: one module per noun, each a set of async functions over a [`Tx`].
//!
//! Invariant: a repository function never begins or ends a transaction itself, so any number of
//! them compose inside one [`super::Store::tx`]; all values travel as bind parameters.

pub mod audit;
pub mod backup_schedule;
pub mod backup_storage;
pub mod backups;
pub mod clusters;
pub mod commit_log;
pub mod comps;
pub mod dirs;
pub mod failovers;
pub mod jobs;
pub mod lease;
pub mod machines;
pub mod meta;
pub mod nodes;
pub mod policy;
pub mod retention;
pub mod secrets;
pub mod shards;
pub mod tokens;

use chrono::NaiveDateTime;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;

use super::config::BackendKind;
use super::conn::{with_conn, Tx};
use crate::error::{Error, Result};

/// The id the last INSERT on this connection generated.
pub(crate) async fn last_insert_id(tx: &mut Tx) -> Result<i64> {
    let f = match tx.kind() {
        BackendKind::Sqlite => "last_insert_rowid()",
        BackendKind::Mysql => "LAST_INSERT_ID()",
    };
    with_conn!(tx, c => diesel::select(diesel::dsl::sql::<BigInt>(f)).get_result::<i64>(c).await)
}

/// Wall-clock time in UTC, second precision being enough for metadata timestamps.
pub(crate) fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// Replaces a unique-key conflict's driver text with what the caller can act on.
pub(crate) fn conflict_as(e: Error, msg: impl FnOnce() -> String) -> Error {
    match e {
        Error::Conflict(_) => Error::Conflict(msg()),
        e => e,
    }
}

/// Quotes a per-cluster table name built from a validated cluster name.
///
/// `validate::name` admits only `A-Z a-z 0-9 _ - .`, so the backtick quoting (understood by
/// MySQL and SQLite alike) cannot be broken out of.
pub(crate) fn quoted_table(prefix: &str, cluster_name: &str) -> Result<String> {
    crate::validate::name("cluster name", cluster_name)?;
    let t = format!("{prefix}{cluster_name}");
    // MySQL identifiers are at most 64 characters.
    if t.len() > 64 {
        return Err(Error::Invalid(format!(
            "cluster name: '{cluster_name}' is too long for table {prefix}<name> (at most {} characters)",
            64 - prefix.len()
        )));
    }
    Ok(format!("`{t}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cluster_table_names_are_validated_and_quoted() {
        assert_eq!(
            quoted_table("commit_log_", "c1").unwrap(),
            "`commit_log_c1`"
        );
        assert!(quoted_table("commit_log_", "c1`; DROP TABLE x; --").is_err());
        assert!(quoted_table("commit_log_", "").is_err());
        assert!(quoted_table("ddl_ops_log_", &"a".repeat(53)).is_err());
        assert!(quoted_table("ddl_ops_log_", &"a".repeat(52)).is_ok());
    }
}
