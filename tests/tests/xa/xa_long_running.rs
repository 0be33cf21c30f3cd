//! The abort-claim clock against real MariaDB shards with the resolver actor running every
//! second: a cross-shard transaction that ran three times `wait_max` before `XA PREPARE` (so
//! its xid's `start_ts` is long past the wait) and is seen prepared by the resolver before its
//! commit-log insert still commits, because the wait counts from the resolver's first sighting,
//! as the compute node's deadline counts from its commit; a prepared transaction whose
//! coordinator is gone is still rolled back once that wait has passed.

use std::sync::Arc;
use std::time::Duration;

use kunlun_meta::model::TxnCmd;
use kunlun_tests::xa::{new_xid, Txn2pc, XaEnv, ACCOUNTS, OPENING};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// `global_txn_commit_log_wait_max_sec` of these tests: for the resolver and the coordinator
/// alike, large enough that a round every second sees a branch well within it.
const WAIT_SEC: u64 = 4;

/// An env whose resolver runs every second with a `WAIT_SEC` wait.
async fn env() -> XaEnv {
    let mut env = XaEnv::start(2).await.expect("env");
    env.cfg.interval = Duration::from_secs(1);
    env.cfg.wait_max = Duration::from_secs(WAIT_SEC);
    env
}

/// A transfer of 100 between the `k`-th accounts of the two shards, its branches started and
/// written; it then runs until three times `WAIT_SEC` have passed since its xid's `start_ts`.
async fn long_transfer(env: &XaEnv, cn: u32, k: i64) -> Txn2pc {
    let mut t = Txn2pc::begin(env, new_xid(cn), &[0, 1])
        .await
        .expect("XA START");
    t.add(0, k, -100).await.expect("debit");
    t.add(1, ACCOUNTS + k, 100).await.expect("credit");
    env.wait_clock_past(u64::from(t.xid.start_ts) + 3 * WAIT_SEC)
        .await
        .expect("clock");
    t
}

/// Polls (every 100 ms, at most `rounds` resolver intervals) until `done` holds.
async fn wait_for(env: &XaEnv, rounds: u32, what: &str, mut done: impl FnMut() -> bool) {
    let polls = rounds * (env.cfg.interval.as_millis() as u32 / 100).max(1);
    for _ in 0..polls {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not after {rounds} resolver intervals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_running_transaction_seen_prepared_before_its_log_write_commits() {
    let env = Arc::new(env().await);
    let (resolver, metrics) = env.resolver();
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    resolver.spawn(&tasks, cancel.clone());

    let mut t = long_transfer(&env, 21, 0).await;
    t.prepare().await.expect("phase 1");
    // A round sees both branches prepared while the coordinator has not logged yet: under a
    // `start_ts` clock that round would claim the abort.
    wait_for(&env, 30, "the resolver saw the prepared branches", || {
        metrics.snapshot().found >= 2
    })
    .await;
    let mut meta = env.meta_conn().await.expect("meta");
    assert!(
        t.log_commit(&mut meta).await.expect("log"),
        "the coordinator's commit is logged: no abort was claimed under it"
    );
    t.commit().await.expect("phase 2");

    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    assert_eq!(env.decision(t.xid).await.unwrap(), Some(TxnCmd::Commit));
    assert!(env.has_transfer(0, t.xid).unwrap() && env.has_transfer(1, t.xid).unwrap());
    assert!(env.all_prepared().unwrap().is_empty());
    let s = metrics.snapshot();
    assert_eq!(
        (s.aborts_claimed, s.rolled_back),
        (0, 0),
        "nothing was claimed or ended by the resolver: {s:?}"
    );
    assert_eq!(env.total_balance().unwrap(), 2 * ACCOUNTS * OPENING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_prepared_transaction_is_still_rolled_back_after_the_wait() {
    let env = Arc::new(env().await);
    let (resolver, metrics) = env.resolver();
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    resolver.spawn(&tasks, cancel.clone());

    let mut t = long_transfer(&env, 22, 1).await;
    t.prepare().await.expect("phase 1");
    let xid = t.xid;
    t.kill(&env)
        .await
        .expect("the coordinator dies after phase 1");

    let (mut probe, _) = env.resolver();
    let mut gone = false;
    for _ in 0..(10 * WAIT_SEC) {
        if env.all_prepared().unwrap().is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(env.cfg.interval).await;
    }
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    assert!(
        gone,
        "abandoned branches still prepared: {:?}",
        env.all_prepared()
    );
    assert_eq!(env.decision(xid).await.unwrap(), Some(TxnCmd::Abort));
    assert!(!env.has_transfer(0, xid).unwrap() && !env.has_transfer(1, xid).unwrap());
    let s = metrics.snapshot();
    assert_eq!((s.aborts_claimed, s.rolled_back), (1, 2), "{s:?}");
    assert_eq!(env.total_balance().unwrap(), 2 * ACCOUNTS * OPENING);
    // Nothing is left for a later resolver either.
    let r = probe.round().await.expect("round").total();
    assert_eq!(r.found, 0);
}
