//! Automatic failover of a real semi-sync MariaDB shard under a continuous write load: kill -9,
//! a hung primary (SIGSTOP), a clean stop, a manager-only partition (no failover), and two
//! failures in a row (anti-flapping). After each: exactly one writable primary, every
//! acknowledged write on it and on the replicas that follow it, metadata updated, the old
//! primary's fate recorded.

use std::time::{Duration, Instant};

use kunlun_core::ha::{FailoverRecord, Outcome};
use kunlun_meta::model::NodeStatus;
use kunlun_tests::ha::{test_ha_config, EnvOptions, HaEnv, Writer, LIMIT};

const PHASES: [&str; 9] = [
    "detect", "fence", "choose", "catch_up", "promote", "repoint", "xa_hook", "open", "metadata",
];

fn assert_clean_record(rec: &FailoverRecord, old: i64) {
    assert_eq!(rec.old_primary, old);
    assert!(rec.proven_lossless, "{rec:?}");
    assert!(rec.possible_loss.is_none());
    for p in PHASES {
        assert!(rec.phase_ms(p).is_some(), "phase {p} missing in {rec:?}");
    }
}

/// Waits until the failover record `id` names the old primary's fate after its return.
async fn wait_fate(env: &HaEnv, id: u64) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let fate = env
            .ha
            .shared()
            .failover(id)
            .and_then(|r| r.old_primary_fate)
            .unwrap_or_default();
        if fate.starts_with("rejoined") || fate.starts_with("kept out") {
            return fate;
        }
        assert!(
            Instant::now() < deadline,
            "old primary's fate not decided: {fate:?}; events {:?}",
            env.ha.shared().events()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The detect phase's note: on what grounds the primary was declared dead.
fn detect_note(rec: &FailoverRecord) -> String {
    rec.phases
        .iter()
        .find(|p| p.name == "detect")
        .and_then(|p| p.note.clone())
        .unwrap_or_default()
}

/// Shared tail of the crash scenarios: failover happened (on grounds whose text holds
/// `grounds`, when given), writes resume, state converges; then the old primary comes back
/// (via `revive`) and is fenced, then rejoins or is kept out.
async fn after_primary_failure(
    env: &HaEnv,
    w: Writer,
    grounds: Option<&str>,
    revive: impl FnOnce() + Send + 'static,
) {
    let old = env.node_ids[0];
    let rec = env.wait_promoted(0).await.expect("failover");
    assert_clean_record(&rec, old);
    if let Some(g) = grounds {
        assert!(detect_note(&rec).contains(g), "{rec:?}");
    }
    w.wait_more(30)
        .await
        .expect("writes resume on the new primary");

    let live: Vec<i64> = env.node_ids[1..].to_vec();
    let primary = env
        .check_converged(&live, &w.acked())
        .await
        .expect("converged");
    assert_eq!(Some(primary), rec.new_primary);
    let nodes = env.nodes().await.unwrap();
    let old_row = nodes.iter().find(|n| n.id == old).unwrap();
    assert_eq!(old_row.status, NodeStatus::Inactive, "old primary kept out");

    tokio::task::spawn_blocking(revive).await.unwrap();
    let fate = wait_fate(env, rec.id).await;
    eprintln!("failover: {rec:?}\nold primary: {fate}");
    w.wait_more(20).await.expect("writes continue");
    let acked = w.finish().await;
    // The old primary answers again: it must be read-only whatever its fate.
    let all: Vec<i64> = env.node_ids.clone();
    env.check_converged(&all, &acked)
        .await
        .expect("converged with the old primary back");
    let status = env
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.id == old)
        .unwrap()
        .status;
    if fate.starts_with("rejoined") {
        assert_eq!(status, NodeStatus::Active);
    } else {
        assert_eq!(status, NodeStatus::Inactive, "{fate}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_primary_fails_over_without_losing_acknowledged_writes() {
    let env = std::sync::Arc::new(HaEnv::start(EnvOptions::default()).await.expect("env"));
    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(50).await.unwrap();
    env.set.primary().kill9().unwrap();
    let e2 = env.clone();
    // The watch session ended with the process and the next connect was refused: decided on
    // that first probe, not after k of them.
    after_primary_failure(&env, w, Some("a connect was refused"), move || {
        e2.set.primary().restart().expect("restart")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primary_sigstop_is_failed_over_and_fenced_when_it_wakes() {
    let env = std::sync::Arc::new(HaEnv::start(EnvOptions::default()).await.expect("env"));
    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(50).await.unwrap();
    env.set.primary().pause().unwrap();
    let e2 = env.clone();
    after_primary_failure(&env, w, None, move || {
        e2.set.primary().resume().expect("resume")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_of_the_primary_fails_over() {
    let env = std::sync::Arc::new(HaEnv::start(EnvOptions::default()).await.expect("env"));
    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(50).await.unwrap();
    let e1 = env.clone();
    tokio::task::spawn_blocking(move || e1.set.primary().stop().expect("stop"))
        .await
        .unwrap();
    let e2 = env.clone();
    after_primary_failure(&env, w, None, move || {
        e2.set.primary().restart().expect("restart")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_only_partition_does_not_fail_over() {
    let env = HaEnv::start(EnvOptions {
        proxy_primary: true,
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(50).await.unwrap();
    let proxy = env.proxy.as_ref().unwrap();
    proxy.cut();
    // Wait until the monitor has seen k failures and declined, then for many more rounds.
    let deadline = Instant::now() + LIMIT;
    while !env
        .ha
        .shared()
        .events()
        .iter()
        .any(|e| e.what.contains("unreachable from the manager only"))
    {
        assert!(Instant::now() < deadline, "{:?}", env.ha.shared().events());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rounds = env.ha.shared().stats().rounds;
    while env.ha.shared().stats().rounds < rounds + 10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        env.ha
            .shared()
            .failovers(None)
            .iter()
            .all(|r| r.outcome != Outcome::Promoted),
        "{:?}",
        env.ha.shared().failovers(None)
    );
    assert_eq!(env.primary_id().await.unwrap(), env.node_ids[0]);
    proxy.restore();
    w.wait_more(30)
        .await
        .expect("writes resume through the proxy");
    let acked = w.finish().await;
    env.check_converged(&env.node_ids, &acked)
        .await
        .expect("converged");
    assert!(env.ha.shared().alarms().is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_failures_in_a_row_wait_for_the_anti_flapping_window() {
    let mut ha = test_ha_config();
    ha.flap_window = Duration::from_secs(8);
    let env = HaEnv::start(EnvOptions {
        ha,
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(50).await.unwrap();
    env.set.primary().kill9().unwrap();
    let first = env.wait_promoted(0).await.expect("first failover");
    assert_clean_record(&first, env.node_ids[0]);
    w.wait_more(30).await.unwrap();

    let second_victim = first.new_primary.unwrap();
    env.server(second_victim).kill9().unwrap();
    // Inside the window: refused with the reason recorded and an alarm raised.
    let deadline = Instant::now() + LIMIT;
    loop {
        let refused = env.ha.shared().failovers(None).into_iter().any(|r| {
            r.outcome == Outcome::Refused
                && r.reason.as_deref().unwrap_or("").contains("anti-flapping")
        });
        if refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            env.ha.shared().failovers(None)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.ha.shared().alarms().contains_key(&env.shard_id));

    // After the window: the last replica takes over, nothing acknowledged is lost.
    let second = env.wait_promoted(1).await.expect("second failover");
    assert_eq!(second.old_primary, second_victim);
    assert!(second.proven_lossless, "{second:?}");
    w.wait_more(10).await.expect("writes resume");
    let acked = w.finish().await;
    let last = second.new_primary.unwrap();
    assert_eq!(
        env.check_converged(&[last], &acked)
            .await
            .expect("converged"),
        last
    );
    assert!(env.ha.shared().alarms().is_empty());
    env.stop().await;
}
