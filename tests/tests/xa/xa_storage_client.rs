//! The storage-node client against a real MariaDB: SQL errors and rows of unexpected types
//! keep the connection (the latter a `Protocol` error, never a panic), a frozen
//! server (SIGSTOP) turns into `Timeout` within the configured deadlines, and a timed-out
//! connection is never used again.

use std::time::Duration;

use kunlun_core::storage::{Error, NodeAddr, StorageConn, StorageOptions};
use kunlun_tests::MariaDb;

fn addr(db: &MariaDb) -> NodeAddr {
    NodeAddr {
        host: "127.0.0.1".into(),
        port: db.port(),
        user: "root".into(),
        password: String::new(),
    }
}

const OPTS: StorageOptions = StorageOptions {
    connect_timeout: Duration::from_secs(1),
    read_timeout: Duration::from_secs(1),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_and_errors_are_told_apart() {
    let db = tokio::task::spawn_blocking(MariaDb::start)
        .await
        .unwrap()
        .expect("mariadb");
    let mut c = StorageConn::connect(&addr(&db), OPTS)
        .await
        .expect("connect");
    let e = c.exec("XA COMMIT '1-2-3'").await.expect_err("unknown xid");
    assert_eq!(e.server_code(), Some(1397), "{e}");
    assert!(!e.is_fatal());
    let rows: Vec<(i64,)> = c.query("SELECT 1").await.expect("still usable");
    assert_eq!(rows, vec![(1,)]);
    assert!(c.xa_recover().await.expect("recover").is_empty());
    // A value that does not fit the expected type is an error, not a panic, and the
    // connection stays usable.
    let e = c
        .query::<(i64,)>("SELECT 'not a number'")
        .await
        .expect_err("a string is no i64");
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
    let e = c
        .query::<(u32,)>("SELECT CAST(-1.5 AS DECIMAL(5,1))")
        .await
        .expect_err("a negative decimal is no u32");
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
    let rows: Vec<(i64,)> = c.query("SELECT 2").await.expect("still usable");
    assert_eq!(rows, vec![(2,)]);

    db.pause().expect("SIGSTOP");
    let e = c.query::<(i64,)>("SELECT 1").await.expect_err("frozen");
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    let e = c.query::<(i64,)>("SELECT 1").await.expect_err("not reused");
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    let e = StorageConn::connect(&addr(&db), OPTS)
        .await
        .expect_err("frozen server");
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    db.resume().expect("SIGCONT");

    db.kill9().expect("kill");
    let e = StorageConn::connect(&addr(&db), OPTS)
        .await
        .expect_err("dead server");
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
}
