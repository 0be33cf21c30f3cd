//! Per-cluster system passwords (`kl_cluster_secret`) on both backends: stored once per
//! cluster, read back after a reopen, a second row for the same cluster is a conflict, empty
//! passwords are refused, delete is idempotent, and `Debug` never shows a password.

mod common;

use common::TestStore;
use kunlun_meta::store::repo::secrets::{self, ClusterSecret};
use kunlun_meta::Error;

fn secret(cluster_id: i64) -> ClusterSecret {
    ClusterSecret {
        cluster_id,
        manager_pwd: "m-pw'\"; --".into(),
        repl_pwd: "r-pw".into(),
        pgx_pwd: "p-pw".into(),
        comp_pwd: "c-pw".into(),
    }
}

async fn secrets_roundtrip(t: &TestStore) {
    let s = &t.store;
    s.tx(async |tx| secrets::insert(tx, &secret(7)).await)
        .await
        .unwrap();
    let dup = s.tx(async |tx| secrets::insert(tx, &secret(7)).await).await;
    assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
    let mut empty = secret(8);
    empty.repl_pwd.clear();
    let bad = s.tx(async |tx| secrets::insert(tx, &empty).await).await;
    assert!(matches!(bad, Err(Error::Invalid(_))), "{bad:?}");

    let again = t.reopen().await;
    let got = again
        .read(async |tx| secrets::get(tx, 7).await)
        .await
        .unwrap();
    assert_eq!(got, secret(7));
    let shown = format!("{got:?}");
    assert!(!shown.contains("pw"), "Debug shows a password: {shown}");

    again
        .tx(async |tx| secrets::delete(tx, 7).await)
        .await
        .unwrap();
    again
        .tx(async |tx| secrets::delete(tx, 7).await)
        .await
        .unwrap();
    let gone = again.read(async |tx| secrets::get(tx, 7).await).await;
    assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_secrets_on_sqlite() {
    secrets_roundtrip(&TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_secrets_on_mysql() {
    secrets_roundtrip(&TestStore::mysql().await).await;
}
