//! Shards fail over independently: two semi-sync shards of one cluster under one monitor, both
//! primaries killed (kill -9) in the same second, each under its own write load. Shard a's
//! failover is held in its metadata phase (the test seam) until shard b's is promoted: b never
//! waits on a, and a switchover of the busy shard a is refused meanwhile. Both are promoted,
//! each timeline is printed, and every acknowledged write of each shard is on its new primary,
//! the only writable node of it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kunlun_core::ha::{FailoverRecord, HaConfig, HaMonitor, Outcome, WriteHook, WriteSite};
use kunlun_meta::store::{Store, StoreConfig};
use kunlun_tests::ha::{root_query, start_set, test_ha_config, Writer, LIMIT};
use kunlun_tests::rows::insert_cluster;
use kunlun_tests::{MariaDb, ReplicaSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Registers one `rbr` cluster with one shard per set; returns each shard's id and node ids
/// (primary first).
async fn register(store: &Store, sets: &[&ReplicaSet]) -> Result<Vec<(i64, Vec<i64>)>> {
    let hosts: Vec<Vec<(String, u16)>> = sets
        .iter()
        .map(|s| s.nodes().map(|n| (n.tcp_host(), n.port())).collect())
        .collect();
    let (_, out) = store
        .tx(async |tx| {
            insert_cluster(
                tx,
                "ha_two",
                &hosts,
                |i| format!("shard{}", i + 1),
                ("root", ""),
            )
            .await
        })
        .await?;
    Ok(out)
}

/// Waits for the first promoted record of a shard.
async fn promoted(ha: &kunlun_core::ha::HaHandle, shard: i64) -> Result<FailoverRecord> {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(r) = ha
            .shared()
            .failovers(Some(shard))
            .into_iter()
            .find(|r| r.outcome == Outcome::Promoted)
        {
            return Ok(r);
        }
        if Instant::now() > deadline {
            bail!(
                "shard {shard} not failed over: {:?}",
                ha.shared().failovers(None)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The new primary is the only writable node of the shard's surviving ones and holds every
/// acknowledged write.
async fn check_shard(set: &ReplicaSet, ids: &[i64], new_primary: i64, acked: &[i64]) -> Result<()> {
    let servers: Vec<&MariaDb> = set.nodes().collect();
    let server = |id: i64| servers[ids.iter().position(|x| *x == id).unwrap_or(0)];
    let mut writable = Vec::new();
    for id in &ids[1..] {
        let ro: Vec<i64> = root_query(server(*id), "SELECT @@read_only").await?;
        if ro.first() == Some(&0) {
            writable.push(*id);
        }
    }
    if writable != vec![new_primary] {
        bail!("writable {writable:?}, new primary {new_primary}");
    }
    let have: BTreeSet<i64> = root_query(server(new_primary), "SELECT id FROM ha.w")
        .await?
        .into_iter()
        .collect();
    let missing: Vec<_> = acked
        .iter()
        .filter(|a| !have.contains(a))
        .take(10)
        .collect();
    if !missing.is_empty() {
        bail!("new primary {new_primary} lacks acknowledged writes {missing:?}");
    }
    Ok(())
}

fn print_timeline(label: &str, rec: &FailoverRecord) {
    eprintln!(
        "{label}: node {} -> {:?}, total {} ms, proven_lossless {}",
        rec.old_primary, rec.new_primary, rec.total_ms, rec.proven_lossless
    );
    for p in &rec.phases {
        eprintln!(
            "  {:>16} {:>6} ms  {}",
            p.name,
            p.ms,
            p.note.as_deref().unwrap_or("")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_killed_in_the_same_second_are_both_failed_over() {
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking(|| start_set(2)),
        tokio::task::spawn_blocking(|| start_set(2))
    );
    let (a, b) = (a.unwrap().expect("set a"), b.unwrap().expect("set b"));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig::sqlite(dir.path().join("meta.db")))
        .await
        .unwrap();
    let shards = register(&store, &[&a, &b]).await.expect("register");
    let (sa, ids_a) = shards[0].clone();
    let (sb, ids_b) = shards[1].clone();
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    // Shard a's failover waits in its metadata phase until the test opens the gate.
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let hook = WriteHook(Arc::new(move |site| {
        let g = g.clone();
        Box::pin(async move {
            if matches!(site, WriteSite::Failover { shard_id, .. } if shard_id == sa) {
                g.notified().await;
            }
        })
    }));
    let cfg = HaConfig {
        before_write: Some(hook),
        ..test_ha_config()
    };
    let ha = HaMonitor::spawn(store.clone(), cfg, &tasks, cancel.clone());

    let (wa, wb) = (
        Writer::start(store.clone(), sa),
        Writer::start(store.clone(), sb),
    );
    wa.wait_more(50).await.expect("writes on shard a");
    wb.wait_more(50).await.expect("writes on shard b");

    let t0 = Instant::now();
    a.primary().kill9().unwrap();
    b.primary().kill9().unwrap();
    eprintln!(
        "both primaries killed within {} ms",
        t0.elapsed().as_millis()
    );

    let rb = promoted(&ha, sb)
        .await
        .expect("shard b while shard a is held");
    eprintln!("kill -> shard b promoted: {} ms", t0.elapsed().as_millis());
    assert!(
        ha.shared()
            .failovers(Some(sa))
            .iter()
            .all(|r| r.outcome != Outcome::Promoted),
        "shard a is still held"
    );
    // The busy shard takes no switchover while its failover runs.
    let busy = ha.switchover(sa, None).await;
    assert!(
        matches!(&busy, Err(kunlun_core::Error::Conflict(m)) if m.contains("failover")),
        "{busy:?}"
    );
    gate.notify_one();
    let ra = promoted(&ha, sa).await.expect("shard a once released");
    print_timeline("shard a", &ra);
    print_timeline("shard b", &rb);
    eprintln!(
        "kill -> both promoted: {} ms (records: a {} ms, b {} ms)",
        t0.elapsed().as_millis(),
        ra.total_ms,
        rb.total_ms
    );
    for (r, old) in [(&ra, ids_a[0]), (&rb, ids_b[0])] {
        assert_eq!(r.outcome, Outcome::Promoted);
        assert_eq!(r.old_primary, old);
        assert!(r.proven_lossless, "{r:?}");
        assert!(
            r.errant_followers.is_empty() && r.not_replicating.is_empty(),
            "{r:?}"
        );
    }

    wa.wait_more(30).await.expect("writes resume on shard a");
    wb.wait_more(30).await.expect("writes resume on shard b");
    let (acked_a, acked_b) = (wa.finish().await, wb.finish().await);
    let pa = ra.new_primary.unwrap();
    let pb = rb.new_primary.unwrap();
    check_shard(&a, &ids_a, pa, &acked_a)
        .await
        .expect("shard a");
    check_shard(&b, &ids_b, pb, &acked_b)
        .await
        .expect("shard b");
    eprintln!(
        "acknowledged writes kept: shard a {}, shard b {}",
        acked_a.len(),
        acked_b.len()
    );
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
}
