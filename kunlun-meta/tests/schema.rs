//! Both backends' migrations produce the same tables and columns, equal to the checked-in
//! `src/store/schema.rs`.

mod common;

use std::collections::BTreeMap;

use common::TestStore;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_match_schema_rs() {
    let sqlite = TestStore::sqlite().await;
    let mysql = TestStore::mysql().await;
    let expected = schema_rs_tables();
    let got_sqlite = sqlite.store.tables().await.expect("sqlite tables");
    let got_mysql = mysql.store.tables().await.expect("mysql tables");
    assert_eq!(
        got_sqlite, expected,
        "sqlite migrations differ from schema.rs (run scripts/gen-schema.sh)"
    );
    assert_eq!(
        got_mysql, expected,
        "mysql migrations differ from schema.rs / the sqlite migrations"
    );
}
