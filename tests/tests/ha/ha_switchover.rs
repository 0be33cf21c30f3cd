//! Operator controls on a real semi-sync MariaDB shard: planned switchover (to a named and to
//! the best replica) under a write load, and the no-switch flags (per shard with a deadline,
//! per node) holding back an automatic failover.

use std::time::{Duration, Instant};

use kunlun_core::ha::{FailoverKind, Outcome};
use kunlun_meta::model::NodeStatus;
use kunlun_tests::ha::{EnvOptions, HaEnv, Writer, LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_to_a_named_then_the_best_replica_keeps_every_write() {
    let env = HaEnv::start(EnvOptions::default()).await.expect("env");
    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(50).await.unwrap();
    let (old, target) = (env.node_ids[0], env.node_ids[2]);

    let rec = env
        .ha
        .switchover(env.shard_id, Some(target))
        .await
        .expect("switchover");
    eprintln!(
        "switchover: write block {} ms, {:?}",
        rec.total_ms, rec.phases
    );
    assert_eq!(rec.kind, FailoverKind::Switchover);
    assert_eq!(rec.outcome, Outcome::Promoted, "{rec:?}");
    assert_eq!(rec.new_primary, Some(target));
    assert_eq!(env.primary_id().await.unwrap(), target);
    w.wait_more(30).await.expect("writes on the new primary");
    env.check_converged(&env.node_ids, &w.acked())
        .await
        .expect("converged after the named switchover");
    let nodes = env.nodes().await.unwrap();
    assert!(nodes.iter().all(|n| n.status == NodeStatus::Active));
    assert!(nodes.iter().any(|n| n.id == old));

    // Back to whichever replica is best; the former primary is a candidate like any other.
    let again = env
        .ha
        .switchover(env.shard_id, None)
        .await
        .expect("second switchover");
    assert_eq!(again.outcome, Outcome::Promoted, "{again:?}");
    assert_ne!(again.new_primary, Some(target));
    w.wait_more(30).await.expect("writes continue");
    let acked = w.finish().await;
    env.check_converged(&env.node_ids, &acked)
        .await
        .expect("converged after the second switchover");

    // A bad target is refused without touching anything.
    assert!(env.ha.switchover(env.shard_id, Some(9999)).await.is_err());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_switch_holds_back_failover_until_lifted_and_a_no_switch_node_is_never_chosen() {
    let env = HaEnv::start(EnvOptions::default()).await.expect("env");
    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(50).await.unwrap();
    let acked = w.finish().await;
    let set = &env.set;
    set.wait_replicated(LIMIT).unwrap();

    let shared = env.ha.shared();
    shared.set_no_switch(
        env.shard_id,
        Some(Instant::now() + Duration::from_secs(3600)),
    );
    shared.set_node_no_switch(env.node_ids[1], true);
    set.primary().kill9().unwrap();

    let deadline = Instant::now() + LIMIT;
    loop {
        let held = shared.failovers(None).into_iter().any(|r| {
            r.outcome == Outcome::Refused && r.reason.as_deref().unwrap_or("").contains("no-switch")
        });
        if held {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", shared.failovers(None));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shared.alarms().contains_key(&env.shard_id));
    assert_eq!(env.primary_id().await.unwrap(), env.node_ids[0]);

    shared.set_no_switch(env.shard_id, None);
    let rec = env.wait_promoted(0).await.expect("failover once lifted");
    assert_eq!(rec.new_primary, Some(env.node_ids[2]), "{rec:?}");
    assert!(rec.proven_lossless, "{rec:?}");
    let live = env.node_ids[1..].to_vec();
    env.check_converged(&live, &acked).await.expect("converged");
    env.stop().await;
}
