//! The metadata shard's own high availability on three real MariaDB nodes (semi-sync, GTID):
//!
//! - two stores (two manager instances, in process) follow a replica an operator promoted by
//!   hand, while both write job rows: every acknowledged row is on the new primary, none
//!   failed (a statement refused as read-only runs once more on the new primary), and each
//!   store says where it moved and why;
//! - two `cluster-mgr` daemons on the shard, the leader failing it over after `kill -9` of its
//!   primary during a `create_cluster` job and while a compute node's login writes commit-log
//!   rows (see [`a_killed_metadata_primary_is_failed_over_by_the_leader_and_both_managers_follow`]).
//!
//! Invariant: every server and daemon started here is owned by a value that stops it by PID.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_meta::model::NewJob;
use kunlun_meta::store::{Store, StoreConfig};
use kunlun_tests::ha::LIMIT;
use kunlun_tests::meta_shard::{wait_for, MetaShardSet, STORE_PWD, STORE_USER};

/// What one writer saw: the ids of acknowledged rows (with when), and every failure.
#[derive(Debug, Default)]
struct Written {
    acked: Vec<(i64, Instant)>,
    failed: Vec<String>,
}

/// Creates job rows through `store` until `stop`, one at a time.
async fn write_jobs(store: Store, who: &'static str, stop: Arc<AtomicBool>) -> Written {
    let mut w = Written::default();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let job = NewJob {
            job_type: "xa_resolve".into(),
            job_info: serde_json::json!({"writer": who, "n": i}),
            user_name: Some(who.into()),
        };
        match store.create_job(&job).await {
            Ok(j) => w.acked.push((j.id, Instant::now())),
            Err(e) => w.failed.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_follow_a_replica_promoted_by_hand_and_keep_every_acknowledged_write() {
    const DB: &str = "kl_meta_follow";
    let m = tokio::task::spawn_blocking(|| MetaShardSet::start(DB))
        .await
        .expect("join")
        .expect("metadata shard");
    let cfg = StoreConfig {
        primary_check: Duration::from_millis(500),
        ..StoreConfig::mysql(m.seeds(), STORE_USER, STORE_PWD, DB)
    };
    let a = Store::open(&cfg).await.expect("store a");
    let b = Store::open(&cfg).await.expect("store b");
    let old = m.seeds()[0].clone();
    let new = m.seeds()[1].clone();
    assert_eq!(a.primary().as_deref(), Some(old.as_str()));
    assert_eq!(b.primary().as_deref(), Some(old.as_str()));

    let stop = Arc::new(AtomicBool::new(false));
    let wa = tokio::spawn(write_jobs(a.clone(), "a", stop.clone()));
    let wb = tokio::spawn(write_jobs(b.clone(), "b", stop.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;

    // An operator promotes the first replica by hand while both write.
    let m = Arc::new(m);
    let m2 = m.clone();
    tokio::task::spawn_blocking(move || {
        let nodes = m2.nodes();
        m2.promote_by_hand(nodes[0], nodes[1])
    })
    .await
    .expect("join")
    .expect("promotion by hand");
    let promoted = Instant::now();

    for (name, s) in [("a", &a), ("b", &b)] {
        let s = s.clone();
        let want = new.clone();
        tokio::task::spawn_blocking(move || {
            wait_for(&format!("store {name} on {want}"), LIMIT, || {
                (s.primary().as_deref() == Some(want.as_str())).then_some(())
            })
        })
        .await
        .expect("join")
        .expect("the store follows the new primary");
    }
    // Both go on writing on the new primary for a while.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    let (wa, wb) = (wa.await.expect("writer a"), wb.await.expect("writer b"));

    for (name, w) in [("a", &wa), ("b", &wb)] {
        println!(
            "writer {name}: {} rows acknowledged, {} after the promotion, {} failed",
            w.acked.len(),
            w.acked.iter().filter(|(_, t)| *t > promoted).count(),
            w.failed.len()
        );
        assert!(
            w.failed.is_empty(),
            "writer {name}: a write refused as read-only must run again on the new primary: {:?}",
            w.failed
        );
        assert!(
            w.acked.iter().any(|(_, t)| *t > promoted),
            "writer {name} wrote nothing on the new primary"
        );
    }
    // Every acknowledged row is on the new primary (read through it directly).
    let new_node = m.at(&new).expect("new primary");
    let ids: std::collections::BTreeSet<i64> = new_node
        .rows(&format!("SELECT id FROM {DB}.cluster_general_job_log"))
        .expect("read job rows")
        .into_iter()
        .map(|r| r[0].parse().expect("id"))
        .collect();
    for (_, w) in [("a", &wa), ("b", &wb)] {
        for (id, _) in &w.acked {
            assert!(ids.contains(id), "acknowledged job {id} is missing on the new primary");
        }
    }
    // Each store says where it moved, from where and why.
    for (name, s) in [("a", &a), ("b", &b)] {
        let st = s.follow_status().expect("mysql store");
        let last = st.moves.last().unwrap_or_else(|| panic!("store {name}: no move: {st:?}"));
        assert_eq!((last.from.as_str(), last.to.as_str()), (old.as_str(), new.as_str()));
        assert!(
            last.reason.contains(&old) && last.reason.contains("read-only"),
            "store {name}: {}",
            last.reason
        );
        assert_eq!(st.primary, new);
        assert!(st.searching.is_none(), "{st:?}");
        assert_eq!(s.describe(), format!("mysql://{STORE_USER}@{new}/{DB}"));
    }
}
