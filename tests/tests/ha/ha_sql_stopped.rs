//! A shard whose only replica's SQL thread stopped with an error (a duplicate key: the row was
//! written on the replica without binlog, then on the primary) cannot be failed over without
//! losing what that thread never applied. After kill -9 of the primary the failover is refused
//! at once with the SQL error as the reason (in the record and the alarm), one refusal is
//! recorded, no attempt waits on the stopped thread, and the primary's data is untouched.
//! With a second, healthy replica the failover promotes it instead, repoints the broken one
//! (it holds nothing errant) and, since it cannot replicate, names it with its SQL error in
//! the record's `not_replicating` and the alarm, while the outcome stays `promoted`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_core::ha::Outcome;
use kunlun_tests::ha::{root_query, EnvOptions, HaEnv, Writer, LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_replica_with_a_stopped_sql_thread_is_refused_at_once_with_its_error() {
    let env = Arc::new(
        HaEnv::start(EnvOptions {
            replicas: 1,
            ..EnvOptions::default()
        })
        .await
        .expect("env"),
    );
    let (old, replica) = (env.node_ids[0], env.node_ids[1]);
    let e2 = env.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        e2.server(replica).sql(
            "SET SESSION sql_log_bin=0; INSERT INTO ha.w VALUES (424242); \
             SET SESSION sql_log_bin=1",
        )?;
        e2.set
            .primary()
            .sql("INSERT INTO ha.w VALUES (424242), (424243)")?;
        Ok(())
    })
    .await
    .unwrap()
    .expect("conflicting writes");
    // The replica's SQL thread stops on the duplicate key; the probes see it.
    let deadline = Instant::now() + LIMIT;
    loop {
        let h = env.ha.shared().node_health(replica);
        if h.as_ref().and_then(|h| h.probe.sql_error()).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "SQL thread did not stop: {h:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before: (Vec<String>, Vec<i64>) = (
        root_query(env.server(old), "SELECT @@gtid_binlog_pos")
            .await
            .unwrap(),
        root_query(env.server(old), "SELECT COUNT(*) FROM ha.w")
            .await
            .unwrap(),
    );

    let t0 = Instant::now();
    env.set.primary().kill9().unwrap();
    let deadline = Instant::now() + LIMIT;
    let refused = loop {
        let r = env
            .ha
            .shared()
            .failovers(Some(env.shard_id))
            .into_iter()
            .find(|r| r.outcome == Outcome::Refused);
        if let Some(r) = r {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            env.ha.shared().failovers(None)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "kill -9 -> refusal recorded after {} ms: {:?}",
        t0.elapsed().as_millis(),
        refused.reason
    );
    let reason = refused.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("SQL thread stopped with error 1062"),
        "{reason}"
    );
    let alarm =
        kunlun_tests::ha::wait_alarm(env.ha.shared(), env.shard_id, |a| a.contains("1062")).await;
    assert!(
        alarm.as_deref().is_some_and(|a| a.contains("1062")),
        "{alarm:?}"
    );

    // Many rounds later: still that one refusal, no failed attempt, no retry.
    let rounds = env.ha.shared().stats().rounds;
    while env.ha.shared().stats().rounds < rounds + 10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = env.ha.shared().failovers(Some(env.shard_id));
    eprintln!("records after 10 more rounds: {}", records.len());
    assert_eq!(records.len(), 1, "{records:?}");
    let stats = env.ha.shared().stats();
    assert_eq!(stats.failovers_failed, 0);
    assert_eq!(stats.failover_retries, 0);
    assert_eq!(env.primary_id().await.unwrap(), old);
    let ro: Vec<i64> = root_query(env.server(replica), "SELECT @@read_only")
        .await
        .unwrap();
    assert_eq!(ro, vec![1], "the replica was not opened");

    // The old primary comes back with its data as it was.
    let e3 = env.clone();
    tokio::task::spawn_blocking(move || e3.set.primary().restart())
        .await
        .unwrap()
        .expect("restart");
    let after: (Vec<String>, Vec<i64>) = (
        root_query(env.server(old), "SELECT @@gtid_binlog_pos")
            .await
            .unwrap(),
        root_query(env.server(old), "SELECT COUNT(*) FROM ha.w")
            .await
            .unwrap(),
    );
    assert_eq!(before, after, "primary data untouched");
    env.stop().await;
}

/// `Gtid_IO_Pos` of a replica's default channel.
async fn received(env: &HaEnv, node: i64) -> String {
    let rows: Vec<mysql_async::Row> = root_query(env.server(node), "SHOW SLAVE STATUS")
        .await
        .expect("slave status");
    rows.first()
        .and_then(|r| r.get_opt::<Option<String>, _>("Gtid_IO_Pos"))
        .and_then(Result::ok)
        .flatten()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_follower_is_skipped_as_candidate_and_named_as_not_replicating() {
    let env = Arc::new(HaEnv::start(EnvOptions::default()).await.expect("env"));
    let (old, good, broken) = (env.node_ids[0], env.node_ids[1], env.node_ids[2]);
    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(30).await.expect("writes");
    let e2 = env.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        // Not logged: the broken replica holds nothing errant, only a row in the way.
        e2.server(broken).sql(
            "SET SESSION sql_log_bin=0; INSERT INTO ha.w VALUES (-7); SET SESSION sql_log_bin=1",
        )?;
        e2.set.primary().sql("INSERT INTO ha.w VALUES (-7)")?;
        Ok(())
    })
    .await
    .unwrap()
    .expect("conflicting writes");
    w.wait_more(30).await.expect("writes go on");
    let acked = w.finish().await;
    let want: String = root_query(env.server(old), "SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap_or_default();
    let deadline = Instant::now() + LIMIT;
    while received(&env, good).await != want || received(&env, broken).await != want {
        assert!(Instant::now() < deadline, "replicas did not receive {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let t0 = Instant::now();
    env.set.primary().kill9().unwrap();
    let rec = env.wait_promoted(0).await.expect("failover");
    eprintln!(
        "kill -9 -> promoted record after {} ms (total {} ms)",
        t0.elapsed().as_millis(),
        rec.total_ms
    );
    for p in &rec.phases {
        eprintln!(
            "  {:>16} {:>6} ms  {}",
            p.name,
            p.ms,
            p.note.as_deref().unwrap_or("")
        );
    }
    assert_eq!(rec.new_primary, Some(good), "{rec:?}");
    assert!(rec.errant_followers.is_empty(), "{rec:?}");
    assert_eq!(rec.not_replicating.len(), 1, "{rec:?}");
    assert_eq!(rec.not_replicating[0].node_id, broken);
    assert!(
        rec.not_replicating[0].why.contains("1062"),
        "{:?}",
        rec.not_replicating
    );
    let alarm = kunlun_tests::ha::wait_alarm(env.ha.shared(), env.shard_id, |a| {
        a.contains("does not replicate") && a.contains("1062")
    })
    .await;
    assert!(
        alarm
            .as_deref()
            .is_some_and(|a| a.contains("does not replicate") && a.contains("1062")),
        "{alarm:?}"
    );
    assert!(env.ha.shared().stats().followers_not_replicating >= 1);
    // The shard has its writable primary with every acknowledged write.
    assert_eq!(env.primary_id().await.unwrap(), good);
    let ro: Vec<i64> = root_query(env.server(good), "SELECT @@read_only")
        .await
        .unwrap();
    assert_eq!(ro, vec![0]);
    let have: std::collections::BTreeSet<i64> = root_query(env.server(good), "SELECT id FROM ha.w")
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        acked.iter().all(|a| have.contains(a)),
        "acknowledged writes kept"
    );
    let ro: Vec<i64> = root_query(env.server(broken), "SELECT @@read_only")
        .await
        .unwrap();
    assert_eq!(ro, vec![1]);
    env.stop().await;
}
