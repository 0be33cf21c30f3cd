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

/// A fenced store handle writes only while its term holds the lease: a write after another
/// manager took the lease over, or after the leader's own clock ran out, fails with
/// `Deposed`, writes nothing and tells the term; reads and unfenced handles are unaffected.
async fn fenced_writes(t: &TestStore) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    use kunlun_meta::model::{MachineType, NewMachine, SshAccess};
    use kunlun_meta::store::{LeaseClock, WriteFence};
    use kunlun_meta::Error;

    let s = &t.store;
    let a = s
        .tx(async |tx| lease::acquire(tx, "leader", "mgr-a", Duration::from_secs(60)).await)
        .await
        .unwrap()
        .expect("a leads");
    let clock = LeaseClock::default();
    clock.set(Some((a.epoch, Instant::now() + Duration::from_secs(60))));
    let deposed = Arc::new(AtomicUsize::new(0));
    let d = deposed.clone();
    let fenced = s.fenced(WriteFence {
        lease: "leader".into(),
        holder: "mgr-a".into(),
        epoch: a.epoch,
        clock: Some(clock.clone()),
        on_deposed: Arc::new(move || {
            d.fetch_add(1, Ordering::SeqCst);
        }),
    });
    let machine = |host: &str| NewMachine {
        hostaddr: host.into(),
        machine_type: MachineType::Storage,
        rack_id: None,
        data_dirs: vec!["/data/kl".into()],
        port_range: "40000-60000".into(),
        total_mem_mb: None,
        total_cpu_cores: None,
        ssh: SshAccess {
            port: 22,
            user: "kunlun".into(),
            key_path: "/root/.ssh/id_ed25519".into(),
        },
    };
    fenced
        .insert_machine(&machine("127.0.1.1"))
        .await
        .expect("the holder writes");
    fenced.check_term().expect("the clock vouches for the term");

    // The leader's own clock ran out (a frozen process woken past its lease): refused before
    // any statement, even though the store still names it.
    clock.set(Some((a.epoch, Instant::now())));
    let e = fenced
        .insert_machine(&machine("127.0.1.2"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Deposed(_)), "{e}");
    assert!(matches!(fenced.check_term(), Err(Error::Deposed(_))));
    assert_eq!(deposed.load(Ordering::SeqCst), 2);

    // Another manager holds the lease at a higher epoch: the store refuses, nothing lands.
    clock.set(Some((a.epoch, Instant::now() + Duration::from_secs(60))));
    s.tx(async |tx| lease::release(tx, "leader", "mgr-a", a.epoch).await)
        .await
        .unwrap();
    let b = s
        .tx(async |tx| lease::acquire(tx, "leader", "mgr-b", Duration::from_secs(60)).await)
        .await
        .unwrap()
        .expect("b takes over");
    assert_eq!(b.epoch, a.epoch + 1);
    let e = fenced
        .insert_machine(&machine("127.0.1.3"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Deposed(_)), "{e}");
    let e = fenced
        .claim_next_job(&[])
        .await
        .expect_err("autocommit writes are fenced too");
    assert!(matches!(e, Error::Deposed(_)), "{e}");
    assert_eq!(deposed.load(Ordering::SeqCst), 4);
    let hosts: Vec<String> = fenced
        .list_machines()
        .await
        .expect("reads are not fenced")
        .into_iter()
        .map(|m| m.hostaddr)
        .collect();
    assert_eq!(
        hosts,
        vec!["127.0.1.1".to_string()],
        "no deposed write landed"
    );
    s.insert_machine(&machine("127.0.1.4"))
        .await
        .expect("an unfenced handle of the same store still writes");
    assert!(
        fenced.background().fence().is_some(),
        "a lane switch keeps the fence"
    );
}

both_backends! {
    lease_one_holder => one_holder_at_a_time;
    lease_race => concurrent_candidates;
    lease_renew_races_takeover => renew_races_takeover;
    lease_fenced_writes => fenced_writes;
}
