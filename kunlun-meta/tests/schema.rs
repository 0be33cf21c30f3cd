//! Both backends' migrations produce the same tables and columns, equal to the checked-in
//! `src/store/schema.rs`, plus the original KunlunBase's tables that schema.rs leaves out
//! (`COMPAT_ONLY_TABLES`), with the original's column names.

mod common;

use std::collections::BTreeMap;

use common::TestStore;
use kunlun_meta::store::introspect::COMPAT_ONLY_TABLES;

/// Table → column (SQL names, declaration order) as written in schema.rs.
fn schema_rs_tables() -> BTreeMap<String, Vec<String>> {
    let src = include_str!("../src/store/schema.rs");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut lines = src.lines().map(str::trim);
    let mut current: Option<String> = None;
    let mut sql_name: Option<String> = None;
    while let Some(l) = lines.next() {
        if l == "diesel::table! {" {
            let header = lines.next().expect("table header");
            let name = header
                .split_whitespace()
                .next()
                .expect("table name")
                .to_string();
            out.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if let Some(rest) = l.strip_prefix("#[sql_name = \"") {
            sql_name = Some(rest.trim_end_matches("\"]").to_string());
        } else if l.starts_with("diesel::") {
            // joinable! and allow_tables_to_appear_in_same_query! follow the tables.
            current = None;
        } else if let (Some(t), Some((col, _))) = (&current, l.split_once(" -> ")) {
            let col = sql_name.take().unwrap_or_else(|| col.to_string());
            out.get_mut(t).expect("table").push(col);
        }
    }
    out
}

#[test]
fn schema_rs_lists_the_kunlun_tables() {
    let t = schema_rs_tables();
    for name in [
        "server_nodes",
        "db_clusters",
        "shards",
        "shard_nodes",
        "comp_nodes",
        "comp_nodes_id_seq",
        "meta_db_nodes",
        "cluster_general_job_log",
        "node_map_master",
        "cluster_mgr_nodes",
        "global_configuration",
        "commit_log_template_table",
        "ddl_ops_log_template_table",
        "kl_machine_ssh",
        "kl_leader_lease",
    ] {
        assert!(t.contains_key(name), "schema.rs lacks {name}");
    }
    assert!(t["shard_nodes"].contains(&"initial_storage_GB".to_string()));
}

/// The original's tables kept out of schema.rs, with their columns in the original's order
/// (`kl:scripts/meta_inuse.sql`, or what the original's code reads and writes).
fn compat_tables() -> BTreeMap<String, Vec<String>> {
    let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    [
        (
            "cluster_roll_back_record",
            cols(&["id", "job_id", "roll_info"]),
        ),
        (
            "cluster_shard_backup_restore_log",
            cols(&[
                "id",
                "storage_id",
                "cluster_id",
                "shard_id",
                "shard_node_id",
                "optype",
                "shard_backup_path",
                "status",
                "memo",
                "when_started",
                "when_ended",
            ]),
        ),
        (
            "cluster_shard_topology",
            cols(&[
                "id",
                "cluster_id",
                "shard_id",
                "max_commit_log_id",
                "max_ddl_log_id",
                "when_created",
            ]),
        ),
        (
            "data_centers",
            cols(&[
                "id", "name", "dc_type", "owner", "province", "city", "district", "location",
                "memo",
            ]),
        ),
        (
            "mysql_pg_install_log",
            cols(&[
                "id",
                "general_log_id",
                "install_type",
                "status",
                "when_started",
                "when_ended",
                "job_info",
                "memo",
            ]),
        ),
        (
            "rbr_consfailover",
            cols(&[
                "id",
                "host",
                "cluster_id",
                "shard_id",
                "taskid",
                "step",
                "new_master_host",
                "description",
                "consfailover_msg",
                "timestamp",
                "err_code",
                "err_msg",
            ]),
        ),
        (
            "restore_log",
            cols(&[
                "id",
                "general_log_id",
                "restore_type",
                "status",
                "when_started",
                "when_ended",
                "job_info",
                "memo",
            ]),
        ),
        (
            "server_nodes_conn_stats",
            cols(&["id1", "id2", "rtt_us", "time_diff_us"]),
        ),
        (
            "server_nodes_stats",
            cols(&[
                "id",
                "comp_datadir_used",
                "comp_datadir_avail",
                "datadir_used",
                "datadir_avail",
                "wal_log_dir_used",
                "wal_log_dir_avail",
                "log_dir_used",
                "log_dir_avail",
                "avg_network_usage_pct",
            ]),
        ),
        (
            "table_move_jobs",
            cols(&[
                "id",
                "table_list",
                "src_shard",
                "src_shard_node",
                "dest_shard",
                "dest_shard_node",
                "snapshot_binlog_file_idx",
                "snapshot_binlog_file_offset",
                "tab_file_format",
                "when_started",
                "when_ended",
                "status",
                "memo",
            ]),
        ),
    ]
    .into_iter()
    .map(|(t, c)| (t.to_string(), c))
    .collect()
}

/// Splits `tables` into (mapped in schema.rs, compat-only).
fn split_compat(
    tables: BTreeMap<String, Vec<String>>,
) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>) {
    tables
        .into_iter()
        .partition(|(t, _)| !COMPAT_ONLY_TABLES.contains(&t.as_str()))
}

#[test]
fn compat_only_tables_are_the_listed_ones() {
    let listed: Vec<String> = compat_tables().into_keys().collect();
    assert_eq!(listed, COMPAT_ONLY_TABLES.to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_match_schema_rs() {
    let sqlite = TestStore::sqlite().await;
    let mysql = TestStore::mysql().await;
    // Should scripts/gen-schema.sh ever add table! entries for the compat tables, they are
    // compared below with the other compat tables, not here.
    let (expected, _) = split_compat(schema_rs_tables());
    let (got_sqlite, compat_sqlite) =
        split_compat(sqlite.store.tables().await.expect("sqlite tables"));
    let (got_mysql, compat_mysql) = split_compat(mysql.store.tables().await.expect("mysql tables"));
    assert_eq!(
        got_sqlite, expected,
        "sqlite migrations differ from schema.rs (run scripts/gen-schema.sh)"
    );
    assert_eq!(
        got_mysql, expected,
        "mysql migrations differ from schema.rs / the sqlite migrations"
    );
    assert_eq!(
        compat_sqlite,
        compat_tables(),
        "sqlite compat tables differ from the original's"
    );
    assert_eq!(
        compat_mysql,
        compat_tables(),
        "mysql compat tables differ from the original's"
    );
}
