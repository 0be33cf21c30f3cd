//! A cluster's deleted passwords leave no copy on disk: with `secure_delete` on and a WAL
//! checkpoint (TRUNCATE) after the delete, neither the SQLite file nor its `-wal` holds the
//! password bytes any more (before this, the WAL kept many copies of a deleted cluster's
//! passwords).

mod common;

use common::TestStore;
use kunlun_meta::store::repo::secrets::{self, ClusterSecret};

fn files_contain(base: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = base.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(std::path::PathBuf::from(p).display().to_string());
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_secrets_leave_no_copy_in_the_file_or_wal() {
    let t = TestStore::sqlite().await;
    let path = t.sqlite_path();
    let pw = "Zq8-unique-password-3c1f";
    let secret = ClusterSecret {
        cluster_id: 9,
        manager_pwd: pw.into(),
        repl_pwd: pw.into(),
        pgx_pwd: pw.into(),
        comp_pwd: pw.into(),
    };
    // Several writes, as jobs do, so the WAL holds several pages with the row.
    t.store
        .tx(async |tx| secrets::insert(tx, &secret).await)
        .await
        .unwrap();
    for _ in 0..3 {
        t.store
            .tx(async |tx| {
                secrets::delete(tx, 9).await?;
                secrets::insert(tx, &secret).await
            })
            .await
            .unwrap();
    }
    assert!(
        !files_contain(&path, pw.as_bytes()).is_empty(),
        "the test sees the password on disk"
    );

    t.store
        .tx(async |tx| secrets::delete(tx, 9).await)
        .await
        .unwrap();
    t.store.checkpoint().await.unwrap();
    let hits = files_contain(&path, pw.as_bytes());
    assert!(hits.is_empty(), "password still in {hits:?}");
}
