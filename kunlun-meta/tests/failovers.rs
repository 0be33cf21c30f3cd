//! Failover records (`kl_failover`) on both backends: insert returns increasing ids, list is
//! newest first with a shard filter, a limit and
//! a cursor (`before`), the fate can be set later, records survive a
//! reopen (a daemon restart), and unknown ids and empty kinds are clear errors.

mod common;

use common::TestStore;
use kunlun_meta::store::repo::failovers::{self, FailoverRow};
use kunlun_meta::Error;

fn row(shard_id: i64, outcome: &str) -> FailoverRow {
    FailoverRow {
        id: 0,
        cluster_id: 1,
        shard_id,
        kind: "automatic".into(),
        started_at: chrono::Utc::now().naive_utc(),
        old_primary: 10,
        new_primary: Some(11),
        outcome: outcome.into(),
        proven_lossless: 1,
        possible_loss: None,
        reason: Some("it's \"quoted\"; --".into()),
        fence: Some("read_only set".into()),
        phases: r#"[{"name":"detect","ms":3000,"note":null}]"#.into(),
        old_primary_fate: None,
        total_ms: 3500,
    }
}

async fn records(t: &TestStore) {
    let s = &t.store;
    let a = s
        .tx(async |tx| failovers::insert(tx, &row(1, "promoted")).await)
        .await
        .unwrap();
    let b = s
        .tx(async |tx| failovers::insert(tx, &row(2, "refused")).await)
        .await
        .unwrap();
    assert!(b > a);
    let all = s
        .read(async |tx| failovers::list(tx, None, None, 100).await)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b, a]);
    let one = s
        .read(async |tx| failovers::list(tx, Some(1), None, 100).await)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].reason.as_deref(), Some("it's \"quoted\"; --"));
    assert_eq!(one[0].phases, row(1, "x").phases);
    let lim = s
        .read(async |tx| failovers::list(tx, None, None, 1).await)
        .await
        .unwrap();
    assert_eq!(lim.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b]);
    // The next page: older than the cursor.
    let older = s
        .read(async |tx| failovers::list(tx, None, Some(b), 1).await)
        .await
        .unwrap();
    assert_eq!(older.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a]);
    let none = s
        .read(async |tx| failovers::list(tx, Some(2), Some(b), 100).await)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");

    s.tx(async |tx| failovers::set_fate(tx, a, "rejoined as replica of node 11").await)
        .await
        .unwrap();
    let again = t.reopen().await;
    let got = again
        .read(async |tx| failovers::get(tx, a).await)
        .await
        .unwrap();
    assert_eq!(
        got.old_primary_fate.as_deref(),
        Some("rejoined as replica of node 11")
    );
    assert_eq!(got.total_ms, 3500);
    assert_eq!(got.new_primary, Some(11));

    let missing = again
        .read(async |tx| failovers::get(tx, 999_999).await)
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    let missing = again
        .tx(async |tx| failovers::set_fate(tx, 999_999, "x").await)
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    let bad = again
        .tx(async |tx| failovers::insert(tx, &row(1, "")).await)
        .await;
    assert!(matches!(bad, Err(Error::Invalid(_))), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_records_on_sqlite() {
    records(&TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_records_on_mysql() {
    records(&TestStore::mysql().await).await;
}
