//! The leadership lease on both backends: one holder at a time, takeover only after expiry
//! with a higher epoch, renewal only by the holder, release.

mod common;

use std::time::Duration;

use common::TestStore;
use kunlun_meta::store::repo::lease;

async fn one_holder_at_a_time(t: &TestStore) {
    let s = &t.store;
    let long = Duration::from_secs(60);
    let a = s
        .tx(async |tx| lease::acquire(tx, "leader", "mgr-a", long).await)
        .await
        .unwrap()
        .expect("a leads");
    assert_eq!(a.epoch, 1);
    let b = s
        .tx(async |tx| lease::acquire(tx, "leader", "mgr-b", long).await)
        .await
        .unwrap();
    assert!(b.is_none(), "b cannot take a live lease");
    let renewed = s
        .tx(async |tx| lease::acquire(tx, "leader", "mgr-a", long).await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.epoch, 1, "renewal keeps the epoch");
    assert!(s
        .read(async |tx| lease::holds(tx, "leader", "mgr-a", 1).await)
        .await
        .unwrap());

    assert!(s
        .tx(async |tx| lease::release(tx, "leader", "mgr-a", 1).await)
        .await
        .unwrap());
    let b = s
        .tx(async |tx| lease::acquire(tx, "leader", "mgr-b", long).await)
        .await
        .unwrap()
        .expect("b takes over");
    assert_eq!(b.epoch, 2);
    // The deposed leader's fence fails and it cannot renew.
    assert!(!s
        .read(async |tx| lease::holds(tx, "leader", "mgr-a", 1).await)
        .await
        .unwrap());
    assert!(!s
        .tx(async |tx| lease::release(tx, "leader", "mgr-a", 1).await)
        .await
        .unwrap());
    assert!(s
        .tx(async |tx| lease::acquire(tx, "leader", "mgr-a", long).await)
        .await
        .unwrap()
        .is_none());
}

async fn concurrent_candidates(t: &TestStore) {
    let s = &t.store;
    let got = futures::future::join_all((0..6).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            let me = format!("mgr-{i}");
            s.tx(async |tx| lease::acquire(tx, "race", &me, Duration::from_secs(60)).await)
                .await
        })
    }))
    .await;
    let winners: Vec<_> = got
        .into_iter()
        .map(|r| r.expect("task"))
        .filter_map(|r| r.ok().flatten())
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    let stored = s
        .read(async |tx| lease::get(tx, "race").await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.holder, winners[0].holder);
}

/// The old holder renewing an expired lease while another takes it over: never both.
async fn renew_races_takeover(t: &TestStore) {
    let s = &t.store;
    for round in 0..3 {
        let name = format!("expired-{round}");
        s.tx(async |tx| lease::acquire(tx, &name, "mgr-a", Duration::from_secs(1)).await)
            .await
            .unwrap()
            .expect("a leads");
        // Expiry is stored in whole seconds.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let got = futures::future::join_all(["mgr-a", "mgr-b", "mgr-a", "mgr-b"].map(|me| {
            let (s, name) = (s.clone(), name.clone());
            tokio::spawn(async move {
                s.tx(async |tx| lease::acquire(tx, &name, me, Duration::from_secs(60)).await)
                    .await
            })
        }))
        .await;
        let holders: std::collections::BTreeSet<String> = got
            .into_iter()
            .filter_map(|r| r.expect("task").ok().flatten())
            .map(|l| l.holder)
            .collect();
        assert_eq!(holders.len(), 1, "one holder after the race: {holders:?}");
    }
}

both_backends! {
    lease_one_holder => one_holder_at_a_time;
    lease_race => concurrent_candidates;
    lease_renew_races_takeover => renew_races_takeover;
}
