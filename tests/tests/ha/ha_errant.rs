//! A follower with errant transactions (a write logged under its own server id while its
//! `read_only` was off) is never repointed by a failover: after kill -9 of the primary, the
//! other replica is promoted, the errant one stays fenced (read-only, replication stopped),
//! is marked inactive for rebuild, and is named in the record, in the published HA state
//! (what `/v1/ha` serves) and in the counters; every acknowledged write is on the new primary
//! and exactly one node is writable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_core::ha::Outcome;
use kunlun_meta::model::NodeStatus;
use kunlun_tests::ha::{root_query, EnvOptions, HaEnv, Writer, LIMIT};

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
async fn an_errant_follower_is_kept_out_for_rebuild_and_the_other_replica_promoted() {
    let env = Arc::new(HaEnv::start(EnvOptions::default()).await.expect("env"));
    let (old, good, errant) = (env.node_ids[0], env.node_ids[1], env.node_ids[2]);
    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(50).await.expect("writes");

    // An errant transaction on a replica: logged (sql_log_bin=1) under its own server id.
    let e2 = env.clone();
    tokio::task::spawn_blocking(move || {
        e2.server(errant).sql(
            "SET GLOBAL read_only=OFF; SET SESSION sql_log_bin=1; \
             INSERT INTO ha.w VALUES (-1); SET GLOBAL read_only=ON",
        )
    })
    .await
    .unwrap()
    .expect("errant write");
    w.wait_more(30).await.expect("writes go on");
    // The writer stops before the kill so both replicas can receive everything it was
    // acknowledged (the errant one may not be the candidate, so only the other's position
    // counts for the proof).
    let acked = w.finish().await;
    let want: String = root_query(env.server(old), "SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap_or_default();
    let deadline = Instant::now() + LIMIT;
    while received(&env, good).await != want || received(&env, errant).await != want {
        assert!(Instant::now() < deadline, "replicas did not receive {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let t0 = Instant::now();
    env.set.primary().kill9().unwrap();
    let rec = env.wait_promoted(0).await.expect("failover");
    eprintln!(
        "kill -9 -> promoted record after {} ms; total {} ms; phases:",
        t0.elapsed().as_millis(),
        rec.total_ms
    );
    for p in &rec.phases {
        eprintln!(
            "  {:>10} {:>6} ms  {}",
            p.name,
            p.ms,
            p.note.as_deref().unwrap_or("")
        );
    }
    eprintln!("fence: {:?}", rec.fence);

    assert_eq!(rec.outcome, Outcome::Promoted);
    assert_eq!(rec.new_primary, Some(good), "{rec:?}");
    assert_eq!(rec.errant_followers.len(), 1, "{rec:?}");
    assert_eq!(rec.errant_followers[0].node_id, errant);
    assert!(
        !rec.errant_followers[0].gtids.is_empty(),
        "the errant GTIDs are named: {rec:?}"
    );
    let alarm = kunlun_tests::ha::wait_alarm(env.ha.shared(), env.shard_id, |a| {
        a.contains("kept out for rebuild")
    })
    .await;
    assert!(
        alarm
            .as_deref()
            .is_some_and(|a| a.contains("kept out for rebuild")),
        "{alarm:?}"
    );
    // The published HA state (`/v1/ha`'s errant_followers) and the counters.
    let listed = env.ha.shared().errant_nodes();
    assert!(
        listed
            .iter()
            .any(|n| n.node_id == errant && n.shard_id == env.shard_id),
        "{listed:?}"
    );
    assert!(env.ha.shared().stats().errant_followers >= 1);

    // Metadata: the errant follower is out (inactive), the good one is the primary.
    let nodes = env.nodes().await.unwrap();
    let row = |id: i64| nodes.iter().find(|n| n.id == id).unwrap().clone();
    assert_eq!(row(errant).status, NodeStatus::Inactive);
    assert_eq!(env.primary_id().await.unwrap(), good);

    // On the servers: the errant node was not repointed (it still names the old primary and
    // its threads are stopped) and it is read-only.
    let rows: Vec<mysql_async::Row> = root_query(env.server(errant), "SHOW SLAVE STATUS")
        .await
        .unwrap();
    let st = rows.first().expect("still a replica entry");
    let port: u16 = st
        .get_opt::<String, _>("Master_Port")
        .and_then(Result::ok)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let io: String = st
        .get_opt("Slave_IO_Running")
        .and_then(Result::ok)
        .unwrap_or_default();
    assert_ne!(port, env.server(good).port(), "errant follower repointed");
    assert_eq!(io, "No", "errant follower's replication is stopped");
    let ro: Vec<i64> = root_query(env.server(errant), "SELECT @@read_only")
        .await
        .unwrap();
    assert_eq!(ro, vec![1]);

    // Exactly one writable node among those that answer, with every acknowledged write.
    let primary = env
        .check_converged(&[good, errant], &acked)
        .await
        .expect("converged");
    assert_eq!(primary, good);
    // Later rounds leave the errant node out (upkeep never repoints an inactive node).
    let rounds = env.ha.shared().stats().rounds;
    while env.ha.shared().stats().rounds < rounds + 5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows: Vec<mysql_async::Row> = root_query(env.server(errant), "SHOW SLAVE STATUS")
        .await
        .unwrap();
    let io: String = rows
        .first()
        .and_then(|r| r.get_opt("Slave_IO_Running"))
        .and_then(Result::ok)
        .unwrap_or_default();
    assert_eq!(io, "No");
    assert!(env
        .ha
        .shared()
        .errant_nodes()
        .iter()
        .any(|n| n.node_id == errant));
    env.stop().await;
}
