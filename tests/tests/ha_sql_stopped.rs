//! A shard whose only replica's SQL thread stopped with an error (a duplicate key: the row was
//! written on the replica without binlog, then on the primary) cannot be failed over without
//! losing what that thread never applied. After kill -9 of the primary the failover is refused
//! at once with the SQL error as the reason (in the record and the alarm), one refusal is
//! recorded, no attempt waits on the stopped thread, and the primary's data is untouched.

mod ha_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_support::{root_query, EnvOptions, HaEnv, LIMIT};
use kunlun_core::ha::Outcome;

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
    let alarm = env.ha.shared().alarms().get(&env.shard_id).cloned();
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
