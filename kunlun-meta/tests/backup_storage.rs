//! The backup storage registry on both backends: a unique name, our rows read back as stored
//! (stype OTHER, `sshdir://` conn_str, kind/path/machine in `extra`), update and delete, and
//! (SQLite) a part row of the original's `cluster_coldbackups` counted as a backup using it.

mod common;

use common::TestStore;
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use kunlun_meta::store::repo::backup_storage::{self as bs, NewBackupStorage};
use kunlun_meta::{Error, Store};

fn new(name: &str, path: &str) -> NewBackupStorage {
    NewBackupStorage {
        name: name.into(),
        hostaddr: "127.0.0.1".into(),
        path: path.into(),
        machine_id: 7,
    }
}

/// Everything but the usage count; returns the id of the storage left.
async fn exercise(store: &Store) -> i64 {
    let a = new("nightly", "/b/n");
    let s = store
        .tx(async |tx| bs::insert(tx, &a).await)
        .await
        .expect("insert");
    assert_eq!(
        (
            s.name.as_str(),
            s.kind.as_str(),
            s.path.as_str(),
            s.machine_id
        ),
        ("nightly", "ssh_dir", "/b/n", 7)
    );
    assert_eq!(s.conn_str, "sshdir://127.0.0.1/b/n");
    let dup = new("nightly", "/b/other");
    let e = store
        .tx(async |tx| bs::insert(tx, &dup).await)
        .await
        .expect_err("a taken name");
    assert!(
        matches!(&e, Error::Conflict(m) if m == "backup storage nightly exists"),
        "{e:?}"
    );
    let b = new("weekly", "/b/w");
    store
        .tx(async |tx| bs::insert(tx, &b).await)
        .await
        .expect("second");
    let names: Vec<String> = store
        .read(async |tx| bs::list(tx).await)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["nightly", "weekly"]);
    let moved = new("nightly", "/c/n");
    let id = s.id;
    let u = store
        .tx(async |tx| bs::update(tx, id, &moved).await)
        .await
        .expect("update");
    assert_eq!((u.id, u.path.as_str()), (s.id, "/c/n"));
    assert_eq!(
        store
            .read(async |tx| bs::backups_using(tx, id).await)
            .await
            .expect("count"),
        0
    );
    let w = store
        .read(async |tx| bs::get_by_name(tx, "weekly").await)
        .await
        .expect("by name");
    let wid = w.id;
    store
        .tx(async |tx| bs::delete(tx, wid).await)
        .await
        .expect("delete");
    let gone = store
        .read(async |tx| bs::get_by_name(tx, "weekly").await)
        .await;
    assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
    s.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_registry_and_usage() {
    let ts = TestStore::sqlite().await;
    let id = exercise(&ts.store).await;
    let mut c =
        SqliteConnection::establish(ts.sqlite_path().to_str().expect("utf-8")).expect("open");
    c.batch_execute(&format!(
        "PRAGMA busy_timeout = 10000; INSERT INTO cluster_coldbackups \
         (storage_id, cluster_id, backup_type) VALUES ({id}, 1, 'storage')"
    ))
    .expect("a part row");
    let n = ts
        .store
        .read(async |tx| bs::backups_using(tx, id).await)
        .await
        .expect("count");
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_registry() {
    let ts = TestStore::mysql().await;
    exercise(&ts.store).await;
}
