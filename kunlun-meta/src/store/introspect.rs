//! What the connected database actually contains: its tables and their columns.
//!
//! Used by the schema test (both backends against `schema.rs`) and for diagnostics.
//! Invariant: diesel's own bookkeeping table and SQLite's internal tables are left out.

use std::collections::BTreeMap;

use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

use super::config::BackendKind;
use super::conn::{with_conn, Tx};
use crate::error::Result;

/// The original KunlunBase's tables that the `kunlun_compat` migration creates (empty) so that
/// its compute nodes and tools find them, but that no code of ours reads or writes: `schema.rs`
/// declares no `table!` for them, and the schema test checks their columns on both backends
/// instead.
pub const COMPAT_ONLY_TABLES: &[&str] = &[
    "cluster_roll_back_record",
    "cluster_shard_backup_restore_log",
    "cluster_shard_topology",
    "data_centers",
    "mysql_pg_install_log",
    "rbr_consfailover",
    "restore_log",
    "server_nodes_conn_stats",
    "server_nodes_stats",
    "table_move_jobs",
];

#[derive(QueryableByName)]
struct TableColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

/// Table name → its column names in declaration order.
pub async fn tables(tx: &mut Tx) -> Result<BTreeMap<String, Vec<String>>> {
    let sql = match tx.kind() {
        BackendKind::Sqlite => {
            "SELECT m.name AS table_name, p.name AS column_name \
             FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
             ORDER BY m.name, p.cid"
        }
        BackendKind::Mysql => {
            "SELECT CAST(table_name AS CHAR) AS table_name, CAST(column_name AS CHAR) AS column_name \
             FROM information_schema.columns WHERE table_schema = DATABASE() \
             ORDER BY table_name, ordinal_position"
        }
    };
    let rows = with_conn!(tx, c => diesel::sql_query(sql).load::<TableColumn>(c).await)?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rows
        .into_iter()
        .filter(|r| r.table_name != "__diesel_schema_migrations")
    {
        out.entry(r.table_name).or_default().push(r.column_name);
    }
    Ok(out)
}
