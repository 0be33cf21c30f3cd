//! The `kunlun_compat` migration: it applies to a fresh store and upgrades an existing one on
//! both backends (rows, job ids and the index kept; its down.sql reverts it); a job row the
//! original inserts without a `job_type` is accepted and reads back; on MySQL, the stored
//! procedure `append_ddl_log_entry` has the original's signature and appends to a cluster's
//! `ddl_ops_log_<name>` when called as a kunlun-server compute node calls it, under
//! `GET_LOCK('DDL')` and only then.

mod common;

use std::path::Path;

use common::{mysql_opts, mysql_server, random_db_name, DropMysqlDb, TestStore};
use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncMysqlConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use kunlun_meta::model::{HaMode, JobStatus, NewCluster, NewJob};
use kunlun_meta::store::repo::clusters;
use kunlun_meta::store::{Store, StoreConfig, MYSQL_MIGRATIONS, SQLITE_MIGRATIONS};
use mysql_async::prelude::Queryable;
use serde_json::json;

/// The migration under test: its directory name without the date, and its version.
const COMPAT: &str = "kunlun_compat";
const COMPAT_VERSION: &str = "20261206000100";

/// Runs every migration of `source` that sorts before the compat one.
fn migrate_to_before_compat<C>(c: &mut C, source: EmbeddedMigrations)
where
    C: diesel::Connection + MigrationHarness<<C as diesel::Connection>::Backend>,
{
    let pending = c.pending_migrations(source).expect("pending migrations");
    assert!(
        pending
            .iter()
            .any(|m| m.name().to_string().ends_with(COMPAT)),
        "the {COMPAT} migration is embedded"
    );
    for m in pending
        .iter()
        .take_while(|m| !m.name().to_string().ends_with(COMPAT))
    {
        c.run_migration(&**m).expect("earlier migration");
    }
}

/// Reverts migrations, newest first, through the compat one (runs its down.sql last).
fn revert_through_compat<C>(c: &mut C, source: impl Fn() -> EmbeddedMigrations)
where
    C: diesel::Connection + MigrationHarness<<C as diesel::Connection>::Backend>,
{
    for _ in 0..64 {
        let v = c.revert_last_migration(source()).expect("revert");
        if v.to_string() == COMPAT_VERSION {
            return;
        }
    }
    panic!("the {COMPAT} migration was never reverted");
}

fn job(t: &str) -> NewJob {
    NewJob {
        job_type: t.into(),
        job_info: json!({"job_type": t}),
        user_name: Some("admin".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn sqlite_conn(path: &Path) -> SqliteConnection {
    let mut c = SqliteConnection::establish(path.to_str().expect("utf-8 path")).expect("open");
    c.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
        .expect("pragmas");
    c
}

fn sqlite_count(c: &mut SqliteConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(c)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// Inserts a job row as the original cluster_mgr does: no job_type. Returns its id.
fn sqlite_insert_untyped_job(path: &Path) -> i64 {
    let mut c = sqlite_conn(path);
    c.batch_execute("INSERT INTO cluster_general_job_log (user_name) VALUES ('internal_user')")
        .expect("job row without job_type");
    sqlite_count(&mut c, "SELECT MAX(id) AS n FROM cluster_general_job_log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_keeps_jobs_ids_and_index_and_reverts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kunlun_metadata.db");
    // A store as the previous release left it: three jobs, the newest deleted.
    {
        let mut c = sqlite_conn(&path);
        migrate_to_before_compat(&mut c, SQLITE_MIGRATIONS);
        c.batch_execute(
            "INSERT INTO cluster_general_job_log (job_type, status, job_info, user_name, memo) \
             VALUES ('create_cluster', 'done', '{\"a\":1}', 'admin', '{\"m\":1}'), \
                    ('add_shards', 'ongoing', NULL, NULL, NULL), \
                    ('delete_cluster', 'failed', NULL, NULL, NULL); \
             DELETE FROM cluster_general_job_log WHERE job_type = 'delete_cluster';",
        )
        .expect("seed jobs");
        let e = c
            .batch_execute("INSERT INTO cluster_general_job_log (user_name) VALUES ('x')")
            .expect_err("before the migration job_type has no default");
        assert!(e.to_string().contains("NOT NULL"), "{e}");
    }

    let store = Store::open(&StoreConfig::sqlite(path.clone()))
        .await
        .expect("open upgrades the store");
    let jobs = store.list_jobs(&Default::default()).await.expect("jobs");
    assert_eq!(
        jobs.iter()
            .map(|j| (j.id, j.job_type.as_str(), j.status))
            .collect::<Vec<_>>(),
        vec![
            (2, "add_shards", JobStatus::Ongoing),
            (1, "create_cluster", JobStatus::Done)
        ]
    );
    assert_eq!(jobs[1].job_info, Some(json!({"a": 1})));
    assert_eq!(jobs[1].memo, Some(json!({"m": 1})));
    // AUTOINCREMENT's high-water mark survived the rebuild: job 3 is never handed out again.
    let next = store.create_job(&job("add_comps")).await.expect("new job");
    assert_eq!(next.id, 4);

    let untyped = sqlite_insert_untyped_job(&path);
    assert_eq!(untyped, 5);
    let j = store.get_job(untyped).await.expect("reads back");
    assert_eq!(
        (
            j.job_type.as_str(),
            j.status,
            j.user_name.as_deref(),
            j.related_id.as_deref()
        ),
        ("", JobStatus::NotStarted, Some("internal_user"), Some("0"))
    );
    {
        let mut c = sqlite_conn(&path);
        assert_eq!(
            sqlite_count(
                &mut c,
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'index' \
                 AND name = 'cluster_general_job_log_status_type' \
                 AND tbl_name = 'cluster_general_job_log'"
            ),
            1,
            "the status/job_type index is back"
        );
        assert_eq!(
            sqlite_count(
                &mut c,
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE name LIKE 'kl_cluster_general_job_log%'"
            ),
            0,
            "no rebuild leftovers"
        );
    }
    drop(store);

    // down.sql: the compat tables go, job_type loses its default, every row stays.
    {
        let mut c = sqlite_conn(&path);
        revert_through_compat(&mut c, || SQLITE_MIGRATIONS);
        assert_eq!(
            sqlite_count(&mut c, "SELECT COUNT(*) AS n FROM cluster_general_job_log"),
            4
        );
        assert_eq!(
            sqlite_count(
                &mut c,
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE name IN ('backup_storage', 'restore_log', 'table_move_jobs')"
            ),
            0
        );
        assert!(c
            .batch_execute("INSERT INTO cluster_general_job_log (user_name) VALUES ('x')")
            .is_err());
        c.run_pending_migrations(SQLITE_MIGRATIONS)
            .expect("up again after down");
    }
    let store = Store::open(&StoreConfig::sqlite(path.clone()))
        .await
        .expect("reopen");
    assert_eq!(
        store.create_job(&job("add_nodes")).await.expect("job").id,
        6,
        "ids still never reused after down and up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fresh_store_takes_a_job_without_type() {
    let t = TestStore::sqlite().await;
    let id = sqlite_insert_untyped_job(&t.sqlite_path());
    let j = t.store.get_job(id).await.expect("reads back");
    assert_eq!(j.job_type, "");
    assert_eq!(j.status, JobStatus::NotStarted);
    // Our own rows still carry their type.
    let mine = t.store.create_job(&job("create_cluster")).await.unwrap();
    assert_eq!(
        t.store.get_job(mine.id).await.unwrap().job_type,
        "create_cluster"
    );
}

// ---------------------------------------------------------------------------------------------
// MySQL

async fn mysql_conn(db: Option<&str>) -> mysql_async::Conn {
    let (seed, user, pass) = mysql_server();
    let opts = mysql_opts(&seed, &user, &pass).db_name(db.map(str::to_string));
    mysql_async::Conn::new(opts)
        .await
        .expect("connect to the test MariaDB")
}

fn server_state(e: &mysql_async::Error) -> (u16, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.state.clone()),
        e => panic!("not a server error: {e:?}"),
    }
}

/// Inserts a job row exactly as the original cluster_mgr does. Returns its id.
async fn mysql_insert_untyped_job(db: &str) -> i64 {
    let mut c = mysql_conn(Some(db)).await;
    c.query_drop("insert into cluster_general_job_log set user_name='internal_user'")
        .await
        .expect("job row without job_type");
    let id = c.last_insert_id().expect("an id");
    c.disconnect().await.ok();
    i64::try_from(id).expect("id fits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_upgrade_keeps_jobs_and_reverts() {
    let db = random_db_name();
    let _guard = DropMysqlDb(db.clone());
    let mut admin = mysql_conn(None).await;
    admin
        .query_drop(format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4"))
        .await
        .unwrap();
    // A store as the previous release left it.
    let raw = mysql_conn(Some(&db)).await;
    let conn = AsyncMysqlConnection::try_from(raw)
        .await
        .expect("diesel conn");
    let conn = tokio::task::spawn_blocking(move || {
        let mut w: AsyncConnectionWrapper<AsyncMysqlConnection> =
            AsyncConnectionWrapper::from(conn);
        migrate_to_before_compat(&mut w, MYSQL_MIGRATIONS);
        w.into_inner()
    })
    .await
    .unwrap();
    drop(conn);
    let mut c = mysql_conn(Some(&db)).await;
    c.query_drop(
        "INSERT INTO cluster_general_job_log (job_type, status, job_info, user_name) \
         VALUES ('create_cluster', 'done', '{\"a\":1}', 'admin'), ('add_shards', 'ongoing', NULL, NULL)",
    )
    .await
    .unwrap();
    let e = c
        .query_drop("insert into cluster_general_job_log set user_name='internal_user'")
        .await
        .expect_err("before the migration job_type has no default (strict mode)");
    assert_eq!(server_state(&e).0, 1364, "{e}");
    let routines: Option<i64> = c
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?",
            (&db,),
        )
        .await
        .unwrap();
    assert_eq!(routines, Some(0));

    let (seed, user, pass) = mysql_server();
    let store = Store::open(&StoreConfig::mysql(vec![seed], &user, &pass, &db))
        .await
        .expect("open upgrades the store");
    let jobs = store.list_jobs(&Default::default()).await.expect("jobs");
    assert_eq!(
        jobs.iter()
            .map(|j| (j.id, j.job_type.as_str(), j.status))
            .collect::<Vec<_>>(),
        vec![
            (2, "add_shards", JobStatus::Ongoing),
            (1, "create_cluster", JobStatus::Done)
        ]
    );
    let untyped = mysql_insert_untyped_job(&db).await;
    let j = store.get_job(untyped).await.expect("reads back");
    assert_eq!(
        (j.job_type.as_str(), j.user_name.as_deref()),
        ("", Some("internal_user"))
    );
    let tables = store.tables().await.unwrap();
    for t in kunlun_meta::store::introspect::COMPAT_ONLY_TABLES {
        assert!(tables.contains_key(*t), "{t} created");
    }
    let routines: Option<i64> = c
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? \
             AND ROUTINE_NAME = 'append_ddl_log_entry'",
            (&db,),
        )
        .await
        .unwrap();
    assert_eq!(routines, Some(1));
    drop(store);

    // down.sql, then up again.
    let raw = mysql_conn(Some(&db)).await;
    let conn = AsyncMysqlConnection::try_from(raw)
        .await
        .expect("diesel conn");
    let conn = tokio::task::spawn_blocking(move || {
        let mut w: AsyncConnectionWrapper<AsyncMysqlConnection> =
            AsyncConnectionWrapper::from(conn);
        revert_through_compat(&mut w, || MYSQL_MIGRATIONS);
        w.into_inner()
    })
    .await
    .unwrap();
    let routines: Option<i64> = c
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?",
            (&db,),
        )
        .await
        .unwrap();
    assert_eq!(routines, Some(0), "down drops the procedure");
    let left: Option<i64> = c
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? \
             AND TABLE_NAME IN ('backup_storage', 'restore_log', 'table_move_jobs', 'data_centers')",
            (&db,),
        )
        .await
        .unwrap();
    assert_eq!(left, Some(0), "down drops the compat tables");
    let e = c
        .query_drop("insert into cluster_general_job_log set user_name='internal_user'")
        .await
        .expect_err("down restores NOT NULL without default");
    assert_eq!(server_state(&e).0, 1364, "{e}");
    let rows: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM cluster_general_job_log")
        .await
        .unwrap();
    assert_eq!(rows, Some(3));
    tokio::task::spawn_blocking(move || {
        let mut w: AsyncConnectionWrapper<AsyncMysqlConnection> =
            AsyncConnectionWrapper::from(conn);
        w.run_pending_migrations(MYSQL_MIGRATIONS)
            .expect("up again after down");
    })
    .await
    .unwrap();
    mysql_insert_untyped_job(&db).await;
    c.disconnect().await.ok();
    admin.disconnect().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_fresh_store_takes_a_job_without_type() {
    let t = TestStore::mysql().await;
    let id = mysql_insert_untyped_job(t.mysql_database()).await;
    let j = t.store.get_job(id).await.expect("reads back");
    assert_eq!(
        (j.job_type.as_str(), j.status, j.user_name.as_deref()),
        ("", JobStatus::NotStarted, Some("internal_user"))
    );
}

/// One parameter of the procedure as information_schema describes it.
#[derive(Debug, PartialEq)]
struct Param {
    mode: String,
    name: String,
    data_type: String,
    unsigned: bool,
    max_chars: Option<u64>,
}

fn param(mode: &str, name: &str, data_type: &str, unsigned: bool, max: Option<u64>) -> Param {
    Param {
        mode: mode.into(),
        name: name.into(),
        data_type: data_type.into(),
        unsigned,
        max_chars: max,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_ddl_log_entry_has_the_original_signature() {
    let t = TestStore::mysql().await;
    let db = t.mysql_database();
    let mut c = mysql_conn(None).await;
    let rows: Vec<(String, String, String, String, Option<u64>)> = c
        .exec(
            "SELECT CAST(PARAMETER_MODE AS CHAR), CAST(PARAMETER_NAME AS CHAR), \
                    CAST(DATA_TYPE AS CHAR), CAST(DTD_IDENTIFIER AS CHAR), CHARACTER_MAXIMUM_LENGTH \
             FROM information_schema.PARAMETERS \
             WHERE SPECIFIC_SCHEMA = ? AND SPECIFIC_NAME = 'append_ddl_log_entry' \
             ORDER BY ORDINAL_POSITION",
            (db,),
        )
        .await
        .unwrap();
    let got: Vec<Param> = rows
        .into_iter()
        .map(|(mode, name, data_type, dtd, max)| Param {
            mode,
            name,
            data_type,
            unsigned: dtd.contains("unsigned"),
            max_chars: max,
        })
        .collect();
    // kl:scripts/meta_inuse.sql, as kl:src/modules/remote_rel/log_utils.c documents and calls it.
    let text = Some(65535);
    assert_eq!(
        got,
        vec![
            param("IN", "tblname", "varchar", false, Some(256)),
            param("IN", "dbname", "varchar", false, Some(64)),
            param("IN", "schema_name", "varchar", false, Some(64)),
            param("IN", "role_name", "varchar", false, Some(64)),
            param("IN", "user_name", "varchar", false, Some(64)),
            param("IN", "search_path", "text", false, text),
            param("IN", "objname", "varchar", false, Some(64)),
            param("IN", "obj_type", "varchar", false, Some(16)),
            param("IN", "op_type", "varchar", false, Some(16)),
            param("IN", "cur_opid", "bigint", true, None),
            param("IN", "sql_src", "text", false, text),
            param("IN", "sql_src_sn", "text", false, text),
            param("IN", "target_shardid", "int", true, None),
            param("IN", "initiator_id", "int", true, None),
            param("IN", "txn_id", "bigint", true, None),
            param("OUT", "my_opid", "bigint", true, None),
        ]
    );
    let (security, access, mode): (String, String, String) = c
        .exec_first(
            "SELECT CAST(SECURITY_TYPE AS CHAR), CAST(SQL_DATA_ACCESS AS CHAR), CAST(SQL_MODE AS CHAR) \
             FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA = ? AND ROUTINE_NAME = 'append_ddl_log_entry' AND ROUTINE_TYPE = 'PROCEDURE'",
            (db,),
        )
        .await
        .unwrap()
        .expect("the procedure exists");
    assert_eq!(security, "INVOKER");
    assert_eq!(access, "MODIFIES SQL DATA");
    assert!(mode.contains("STRICT_TRANS_TABLES"), "{mode}");
    c.disconnect().await.ok();
}

/// The CALL statement of `log_ddl_prepare` (kl:src/modules/remote_rel/log_utils.c), with its
/// argument order: table, database, schema, role, user, search_path, object, object type,
/// operation, the caller's applied op id, client SQL, storage-node SQL, shard, initiator (the
/// compute node id), global transaction id, OUT op id.
fn cn_call(db: &str, cluster: &str, object: &str, objtype: &str) -> String {
    format!(
        "CALL `{db}`.append_ddl_log_entry('ddl_ops_log_{cluster}', 'postgres', 'public', 'none', \
         'abc', '\"$user\", public', '{object}', '{objtype}', 'create', 7, \
         'create table {object}(a int primary key)', \
         'create table `postgres_$$_public`.`{object}`(a int primary key)', 1, 2, 4242, @my_opid)"
    )
}

/// Sends a multi-statement text query and returns the rows of its last result set.
async fn last_result_set(c: &mut mysql_async::Conn, sql: &str) -> Vec<mysql_async::Row> {
    let mut r = c
        .query_iter(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut last = Vec::new();
    while !r.is_empty() {
        let rows: Vec<mysql_async::Row> = r.collect().await.unwrap_or_else(|e| panic!("{e}"));
        if !rows.is_empty() {
            last = rows;
        }
    }
    last
}

#[derive(Debug, PartialEq)]
struct DdlRow {
    id: u64,
    objname: String,
    db_name: String,
    schema_name: String,
    user_name: String,
    role_name: String,
    search_path: String,
    optype: String,
    objtype: String,
    sql_src: String,
    sql_storage_node: String,
    target_shard_id: u32,
    initiator: u32,
    txn_id: u64,
}

async fn ddl_rows(db: &str, table: &str) -> Vec<DdlRow> {
    let mut c = mysql_conn(Some(db)).await;
    let rows: Vec<mysql_async::Row> = c
        .query(format!(
            "SELECT id, objname, db_name, schema_name, user_name, role_name, search_path, \
             CAST(optype AS CHAR), CAST(objtype AS CHAR), sql_src, sql_storage_node, \
             target_shard_id, initiator, txn_id, when_logged IS NOT NULL FROM `{table}` ORDER BY id"
        ))
        .await
        .unwrap();
    c.disconnect().await.ok();
    rows.into_iter()
        .map(|r| {
            let logged: i64 = r.get(14).unwrap();
            assert_eq!(logged, 1, "when_logged set");
            DdlRow {
                id: r.get(0).unwrap(),
                objname: r.get(1).unwrap(),
                db_name: r.get(2).unwrap(),
                schema_name: r.get(3).unwrap(),
                user_name: r.get(4).unwrap(),
                role_name: r.get(5).unwrap(),
                search_path: r.get(6).unwrap(),
                optype: r.get(7).unwrap(),
                objtype: r.get(8).unwrap(),
                sql_src: r.get(9).unwrap(),
                sql_storage_node: r.get(10).unwrap(),
                target_shard_id: r.get(11).unwrap(),
                initiator: r.get(12).unwrap(),
                txn_id: r.get(13).unwrap(),
            }
        })
        .collect()
}

fn expected_row(id: u64, object: &str) -> DdlRow {
    DdlRow {
        id,
        objname: object.into(),
        db_name: "postgres".into(),
        schema_name: "public".into(),
        user_name: "abc".into(),
        role_name: "none".into(),
        search_path: "\"$user\", public".into(),
        optype: "create".into(),
        objtype: "table".into(),
        sql_src: format!("create table {object}(a int primary key)"),
        sql_storage_node: format!(
            "create table `postgres_$$_public`.`{object}`(a int primary key)"
        ),
        target_shard_id: 1,
        initiator: 2,
        txn_id: 4242,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_ddl_log_entry_logs_a_compute_nodes_ddl_under_the_ddl_lock() {
    let t = TestStore::mysql().await;
    let db = t.mysql_database().to_string();
    // A cluster made the way our code makes it; '-' and '.' are valid in our cluster names, so
    // the procedure must quote the table name.
    let cluster = "cn-compat.1";
    let table = format!("ddl_ops_log_{cluster}");
    let c = t
        .store
        .tx(async |tx| {
            clusters::insert(
                tx,
                &NewCluster {
                    name: cluster.into(),
                    nick_name: None,
                    owner: Some("abc".into()),
                    business: None,
                    ha_mode: HaMode::Rbr,
                    memo: None,
                },
            )
            .await
        })
        .await
        .expect("cluster");
    assert_eq!(c.ddl_log_tblname.as_deref(), Some(table.as_str()));

    // The compute node's metadata connection has no default database: it names ours.
    let mut cn = mysql_conn(None).await;
    let mut other = mysql_conn(None).await;

    // Without the DDL lock: refused with SQLSTATE 45000, nothing logged.
    let e = cn
        .query_drop(format!(
            "SET @my_opid = 0; {}",
            cn_call(&db, cluster, "t0", "table")
        ))
        .await
        .expect_err("refused without the lock");
    assert_eq!(server_state(&e).1, "45000", "{e}");
    // Another session holding it does not count.
    let got: Option<i64> = other
        .query_first("SELECT GET_LOCK('DDL', 1)")
        .await
        .unwrap();
    assert_eq!(got, Some(1));
    let e = cn
        .query_drop(cn_call(&db, cluster, "t0", "table"))
        .await
        .expect_err("refused while another session holds the lock");
    assert_eq!(server_state(&e).1, "45000", "{e}");
    other
        .query_drop("SELECT RELEASE_LOCK('DDL')")
        .await
        .unwrap();
    assert!(ddl_rows(&db, &table).await.is_empty());

    // As log_ddl_prepare does it: the lock (ddl_log_get_lock), then one multi-statement that
    // logs inside an XA transaction and reads the op id, then XA COMMIT (log_ddl_commit).
    let got: Option<i64> = cn.query_first("SELECT GET_LOCK('DDL', 1)").await.unwrap();
    assert_eq!(got, Some(1));
    // kunlun-storage (MySQL 8) has transaction_isolation; MariaDB before 11.1 only tx_isolation.
    let isolation = match cn.query_drop("SELECT @@transaction_isolation").await {
        Ok(()) => "transaction_isolation",
        Err(_) => "tx_isolation",
    };
    cn.query_drop("SET @dbname = 'the caller''s own'")
        .await
        .unwrap();
    let xid = "1-1733472000-42";
    let sql = format!(
        "set {isolation}='repeatable-read'; XA START '{xid}'; set @my_opid = 0; {}; \
         XA END '{xid}'; XA PREPARE '{xid}'; select @my_opid",
        cn_call(&db, cluster, "t1", "table")
    );
    let rows = last_result_set(&mut cn, &sql).await;
    assert_eq!(rows.len(), 1);
    let opid: u64 = rows[0].get(0).expect("@my_opid");
    assert!(opid > 0);
    assert!(
        ddl_rows(&db, &table).await.is_empty(),
        "a prepared XA branch is not visible yet"
    );
    cn.query_drop(format!("XA COMMIT '{xid}'")).await.unwrap();
    assert_eq!(ddl_rows(&db, &table).await, vec![expected_row(opid, "t1")]);

    // The caller's session keeps its own variables and holds no DDL text afterwards.
    let (mine, left): (Option<String>, Option<String>) = cn
        .query_first("SELECT @dbname, @kl_ddl_log_sql")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mine.as_deref(), Some("the caller's own"));
    assert_eq!(left, None);

    // A plain transaction (cluster_mgr's WriteSqlToDdlLog) gets the next id.
    let rows = last_result_set(
        &mut cn,
        &format!(
            "begin; set @my_opid = 0; {}; commit; select @my_opid",
            cn_call(&db, cluster, "t2", "table")
        ),
    )
    .await;
    let second: u64 = rows[0].get(0).unwrap();
    assert_eq!(second, opid + 1);

    // The procedure is strict whatever the session's sql_mode: a bad enum value is an error,
    // never a silently stored ''.
    cn.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    let e = cn
        .query_drop(cn_call(&db, cluster, "t3", "no_such_type"))
        .await
        .expect_err("bad objtype");
    assert_eq!(server_state(&e).0, 1265, "{e}");
    // Unknown cluster: the table does not exist.
    let e = cn
        .query_drop(cn_call(&db, "no_such_cluster", "t4", "table"))
        .await
        .expect_err("unknown table");
    assert_eq!(server_state(&e).0, 1146, "{e}");
    // A backtick in the table name stays inside the identifier.
    let e = cn
        .query_drop(format!(
            "CALL `{db}`.append_ddl_log_entry('x` (db_name) VALUES (1); --x', 'postgres', \
             'public', 'none', 'abc', '', 'o', 'table', 'create', 0, 's', 's', 1, 2, 3, @my_opid)"
        ))
        .await
        .expect_err("no such table");
    assert_eq!(server_state(&e).0, 1146, "{e}");

    cn.query_drop("SELECT RELEASE_LOCK('DDL')").await.unwrap();
    let e = cn
        .query_drop(cn_call(&db, cluster, "t5", "table"))
        .await
        .expect_err("refused after the lock is released");
    assert_eq!(server_state(&e).1, "45000", "{e}");

    let all = ddl_rows(&db, &table).await;
    assert_eq!(
        all,
        vec![expected_row(opid, "t1"), expected_row(second, "t2")]
    );
    cn.disconnect().await.ok();
    other.disconnect().await.ok();
}
