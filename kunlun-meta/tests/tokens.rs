//! API tokens and the audit trail on both backends: a token is found by its hash, a name is
//! never reused (even once revoked), revoking keeps the row (so "a token exists" stays true),
//! unknown names are `NotFound`, and the audit trail lists newest first within the limit.

mod common;

use common::TestStore;
use kunlun_meta::auth::{NewAuditEntry, Role};
use kunlun_meta::store::repo::{audit, tokens};
use kunlun_meta::Error;

async fn tokens_and_audit(t: &TestStore) {
    let s = &t.store;
    assert!(!s
        .read(async |tx| tokens::any_exists(tx).await)
        .await
        .unwrap());
    let h1 = "a".repeat(64);
    let created = s
        .tx(async |tx| tokens::insert(tx, "root", Role::Admin, &h1).await)
        .await
        .unwrap();
    assert_eq!(created.role, Role::Admin);
    let dup = s
        .tx(async |tx| tokens::insert(tx, "root", Role::Viewer, &"b".repeat(64)).await)
        .await;
    assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
    let bad = s
        .tx(async |tx| tokens::insert(tx, "bad name", Role::Viewer, &"c".repeat(64)).await)
        .await;
    assert!(matches!(bad, Err(Error::Invalid(_))), "{bad:?}");

    let found = s
        .read(async |tx| tokens::find_by_hash(tx, &h1).await)
        .await
        .unwrap()
        .expect("found by hash");
    assert_eq!((found.name.as_str(), found.revoked_at), ("root", None));
    s.tx(async |tx| tokens::touch(tx, "root").await)
        .await
        .unwrap();

    s.tx(async |tx| tokens::revoke(tx, "root").await)
        .await
        .unwrap();
    s.tx(async |tx| tokens::revoke(tx, "root").await)
        .await
        .unwrap();
    let gone = s.tx(async |tx| tokens::revoke(tx, "nobody").await).await;
    assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
    let again = t.reopen().await;
    let list = again.read(async |tx| tokens::list(tx).await).await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].revoked_at.is_some() && list[0].last_used_at.is_some());
    assert!(again
        .read(async |tx| tokens::any_exists(tx).await)
        .await
        .unwrap());
    let reuse = again
        .tx(async |tx| tokens::insert(tx, "root", Role::Admin, &"d".repeat(64)).await)
        .await;
    assert!(matches!(reuse, Err(Error::Conflict(_))), "{reuse:?}");

    for (i, path) in ["/v1/machines", "/v1/clusters", &"/x".repeat(2000)]
        .iter()
        .enumerate()
    {
        let e = NewAuditEntry {
            token_name: Some("root".into()),
            method: "POST".into(),
            path: path.to_string(),
            client: "127.0.0.1:5000".into(),
            status: 200 + i as i64,
        };
        again
            .tx(async |tx| audit::insert(tx, &e).await)
            .await
            .unwrap();
    }
    let got = again
        .read(async |tx| audit::list(tx, 2).await)
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].status, 202);
    assert_eq!(got[0].path.len(), audit::MAX_AUDIT_PATH);
    assert_eq!(got[1].path, "/v1/clusters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_on_sqlite() {
    tokens_and_audit(&TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_on_mysql() {
    tokens_and_audit(&TestStore::mysql().await).await;
}

async fn retention_deletes_only_old_finished_jobs(t: &TestStore) {
    use kunlun_meta::model::{JobStatus, NewJob};
    use kunlun_meta::store::repo::retention;
    let s = &t.store;
    let mut ids = Vec::new();
    for status in [
        JobStatus::Done,
        JobStatus::Failed,
        JobStatus::Ongoing,
        JobStatus::NotStarted,
    ] {
        let j = s
            .create_job(&NewJob {
                job_type: "create_cluster".into(),
                job_info: serde_json::json!({}),
                user_name: None,
            })
            .await
            .unwrap();
        if status != JobStatus::NotStarted {
            s.update_job(j.id, status, None).await.unwrap();
        }
        ids.push(j.id);
    }
    let past = chrono::Utc::now().naive_utc() - chrono::Duration::days(1);
    let n = s
        .tx(async |tx| retention::delete_finished_jobs_before(tx, past).await)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing ended a day ago");
    let future = chrono::Utc::now().naive_utc() + chrono::Duration::days(1);
    let n = s
        .tx(async |tx| retention::delete_finished_jobs_before(tx, future).await)
        .await
        .unwrap();
    assert_eq!(n, 2, "done and failed");
    assert!(s.get_job(ids[0]).await.is_err() && s.get_job(ids[1]).await.is_err());
    assert!(s.get_job(ids[2]).await.is_ok() && s.get_job(ids[3]).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_retention_on_sqlite() {
    retention_deletes_only_old_finished_jobs(&TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_retention_on_mysql() {
    retention_deletes_only_old_finished_jobs(&TestStore::mysql().await).await;
}
