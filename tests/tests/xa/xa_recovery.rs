//! XA recovery against real MariaDB shards and a real metadata MariaDB: coordinators killed at
//! each point of 2PC, a shard restarted with prepared branches, branches still attached to
//! their session, foreign xids, a late coordinator racing the abort claim, the metadata shard,
//! the failover hook and the commit-log purge.

use std::time::Duration;

use kunlun_core::xa::{end_in_doubt_on_new_primary, purge_commit_log, KunlunXid};
use kunlun_meta::model::TxnCmd;
use kunlun_meta::store::repo;
use kunlun_meta::store::repo::commit_log::NewCommitLogEntry;
use kunlun_tests::xa::{new_xid, prepared_on, Txn2pc, XaEnv, ACCOUNTS, OPENING};
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;

/// A prepared transfer of 100 from account 0 of shard 1 to account 0 of shard 2.
async fn prepared_transfer(env: &XaEnv, cn: u32) -> Txn2pc {
    prepared_transfer_of(env, cn, 0).await
}

/// A prepared transfer of 100 between the `k`-th accounts of the two shards (distinct `k`s
/// do not wait on each other's row locks).
async fn prepared_transfer_of(env: &XaEnv, cn: u32, k: i64) -> Txn2pc {
    let mut t = Txn2pc::begin(env, new_xid(cn), &[0, 1])
        .await
        .expect("XA START");
    t.add(0, k, -100).await.expect("debit");
    t.add(1, ACCOUNTS + k, 100).await.expect("credit");
    t.prepare().await.expect("prepare");
    t
}

fn balances(env: &XaEnv) -> (i64, i64) {
    let b = |i: usize, id: i64| -> i64 {
        env.shards[i]
            .value(&format!(
                "SELECT balance FROM bank.accounts WHERE id = {id}"
            ))
            .expect("balance")
            .expect("row")
            .parse()
            .expect("number")
    };
    (b(0, 0), b(1, ACCOUNTS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_before_the_log_write_is_rolled_back_everywhere() {
    let env = XaEnv::start(2).await.expect("env");
    let t = prepared_transfer(&env, 1).await;
    let xid = t.xid;
    t.kill(&env).await.expect("kill coordinator");
    assert_eq!(
        env.all_prepared().expect("recover").len(),
        2,
        "both branches stay prepared"
    );

    let (mut r, metrics) = env.resolver();
    env.settle(&mut r, 60).await.expect("settled");

    assert_eq!(
        env.decision(xid).await.expect("log"),
        Some(TxnCmd::Abort),
        "abort claimed with the full txn_id"
    );
    assert_eq!(balances(&env), (OPENING, OPENING));
    assert!(!env.has_transfer(0, xid).unwrap() && !env.has_transfer(1, xid).unwrap());
    let s = metrics.snapshot();
    assert_eq!(
        (s.found, s.rolled_back, s.committed, s.aborts_claimed),
        (2, 2, 0, 1)
    );
    assert_eq!(s.in_doubt, 0);
}

/// A resolver limited to another cluster (`clusters_to_serve`) leaves this cluster's branches
/// alone; one serving it ends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_serving_other_clusters_leaves_the_branches_alone() {
    let mut env = XaEnv::start(2).await.expect("env");
    let t = prepared_transfer(&env, 12).await;
    let xid = t.xid;
    t.kill(&env).await.expect("kill coordinator");
    let serving = env.cfg.clone();
    env.cfg.clusters = kunlun_core::ClusterScope::only(&[env.cluster.id + 1]).expect("scope");
    let (mut other, _) = env.resolver();
    // Longer than the wait after which a serving resolver would claim the abort.
    for _ in 0..15 {
        let s = other.round().await.expect("round");
        assert!(
            s.clusters.iter().all(|(c, _)| *c != env.cluster.id),
            "{s:?}"
        );
        tokio::time::sleep(env.cfg.interval).await;
    }
    assert_eq!(env.all_prepared().unwrap().len(), 2, "left prepared");
    assert_eq!(env.decision(xid).await.unwrap(), None, "nothing claimed");
    env.cfg = serving;
    let (mut r, _) = env.resolver();
    env.settle(&mut r, 60).await.expect("settled");
    assert_eq!(env.decision(xid).await.unwrap(), Some(TxnCmd::Abort));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_after_the_log_write_is_committed_everywhere() {
    let env = XaEnv::start(2).await.expect("env");
    let mut meta = env.meta_conn().await.expect("meta");
    let mut t = prepared_transfer(&env, 2).await;
    assert!(
        t.log_commit(&mut meta).await.expect("log"),
        "logged within the deadline"
    );
    let xid = t.xid;
    t.kill(&env).await.expect("kill coordinator");

    let (mut r, metrics) = env.resolver();
    env.settle(&mut r, 60).await.expect("settled");

    assert_eq!(env.decision(xid).await.unwrap(), Some(TxnCmd::Commit));
    assert_eq!(balances(&env), (OPENING - 100, OPENING + 100));
    assert!(env.has_transfer(0, xid).unwrap() && env.has_transfer(1, xid).unwrap());
    let s = metrics.snapshot();
    assert_eq!((s.committed, s.rolled_back, s.aborts_claimed), (2, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_shard_keeps_its_prepared_branches_and_they_are_resolved() {
    let env = XaEnv::start(2).await.expect("env");
    let mut meta = env.meta_conn().await.expect("meta");
    let committed = {
        let mut t = prepared_transfer(&env, 3).await;
        assert!(t.log_commit(&mut meta).await.unwrap());
        let x = t.xid;
        t.kill(&env).await.unwrap();
        x
    };
    let aborted = {
        let mut t = Txn2pc::begin(&env, new_xid(3), &[0, 1]).await.unwrap();
        t.add(0, 1, -7).await.unwrap();
        t.add(1, ACCOUNTS + 1, 7).await.unwrap();
        t.prepare().await.unwrap();
        let x = t.xid;
        t.kill(&env).await.unwrap();
        x
    };
    env.shards[1].kill9().expect("kill -9 shard 2");
    env.shards[1].restart().expect("restart shard 2");
    let after = env.prepared(1).expect("recover after restart");
    assert!(
        after.contains(&committed.to_string()) && after.contains(&aborted.to_string()),
        "{after:?}"
    );

    let (mut r, _) = env.resolver();
    env.settle(&mut r, 60).await.expect("settled");
    assert!(env.has_transfer(0, committed).unwrap() && env.has_transfer(1, committed).unwrap());
    assert!(!env.has_transfer(0, aborted).unwrap() && !env.has_transfer(1, aborted).unwrap());
    assert_eq!(env.total_balance().unwrap(), 2 * ACCOUNTS * OPENING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_whose_owner_is_connected_is_left_to_its_owner() {
    let env = XaEnv::start(2).await.expect("env");
    let mut meta = env.meta_conn().await.expect("meta");
    // Decided commit, owner still connected and about to send XA COMMIT itself.
    let mut logged = prepared_transfer(&env, 4).await;
    assert!(logged.log_commit(&mut meta).await.unwrap());
    // No decision, owner still connected (a slow coordinator).
    let mut undecided = Txn2pc::begin(&env, new_xid(4), &[0]).await.unwrap();
    undecided.add(0, 2, 5).await.unwrap();
    undecided.prepare().await.unwrap();

    // Rounds until the undecided one's abort is claimed (`wait_max` after the resolver first
    // saw it); all along, nothing attached to a live session is ended.
    let (mut r, _) = env.resolver();
    let mut claimed = false;
    for _ in 0..60 {
        let t = r.round().await.expect("round").total();
        assert_eq!(
            t.committed + t.rolled_back,
            0,
            "nothing attached is ended: {t:?}"
        );
        assert_eq!(t.left_attached + t.too_young, 3, "{t:?}");
        if t.aborts_claimed == 1 {
            assert_eq!(t.left_attached, 3, "{t:?}");
            claimed = true;
            break;
        }
        tokio::time::sleep(env.cfg.interval).await;
    }
    assert!(claimed, "the undecided transaction's abort was claimed");
    let t = r.round().await.expect("round").total();
    assert_eq!((t.left_attached, t.aborts_claimed), (3, 0), "{t:?}");
    assert_eq!(
        env.all_prepared().unwrap().len(),
        3,
        "all three branches still prepared"
    );
    // The owners finish as their protocol says: the logged one commits; the late one cannot
    // log any more (the abort is claimed and the deadline has passed) and rolls back.
    logged
        .commit()
        .await
        .expect("owner commits its own branches");
    assert!(
        !undecided.log_commit(&mut meta).await.unwrap(),
        "late decision refused"
    );
    assert_eq!(
        env.decision(undecided.xid).await.unwrap(),
        Some(TxnCmd::Abort)
    );
    undecided.rollback().await.expect("owner rolls back");
    assert!(env.all_prepared().unwrap().is_empty());
    assert_eq!(balances(&env), (OPENING - 100, OPENING + 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_xids_are_never_touched() {
    let env = XaEnv::start(2).await.expect("env");
    let foreign = ["app-tx-1", "1-2", "01-1600000000-5", "1-1600000000-5-9"];
    for (k, x) in foreign.iter().enumerate() {
        env.shards[0]
            .sql(&format!(
                "XA START '{x}'; UPDATE bank.accounts SET balance = balance + 1 WHERE id = {k}; XA END '{x}'; XA PREPARE '{x}'"
            ))
            .expect("foreign branch");
    }
    // A Kunlun-looking gtrid with a bqual, and one with another format id: not Kunlun's either.
    env.shards[1]
        .sql("XA START '1-1600000000-6','b'; UPDATE bank.accounts SET balance = balance + 1 WHERE id = 10; XA END '1-1600000000-6','b'; XA PREPARE '1-1600000000-6','b'")
        .unwrap();
    env.shards[1]
        .sql("XA START '1-1600000000-7','',7; UPDATE bank.accounts SET balance = balance + 1 WHERE id = 11; XA END '1-1600000000-7','',7; XA PREPARE '1-1600000000-7','',7")
        .unwrap();
    let before = env.all_prepared().unwrap();
    assert_eq!(before.len(), 6);

    let (mut r, _) = env.resolver();
    for _ in 0..2 {
        let t = r.round().await.expect("round").total();
        assert_eq!((t.found, t.foreign), (0, 6));
    }
    assert_eq!(env.all_prepared().unwrap(), before, "untouched");
    env.rollback_leftovers().expect("cleanup");
    assert!(env.all_prepared().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_coordinator_insert_racing_the_abort_claim_decides_once() {
    let env = XaEnv::start(2).await.expect("env");

    // (a) The coordinator's insert was made in time but is not committed yet when the resolver
    // looks: the resolver's claim waits on the unique key, then finds the commit and obeys it.
    let t = prepared_transfer(&env, 5).await;
    let a = t.xid;
    t.kill(&env).await.unwrap();
    // The resolver's first sighting: too young to claim anything.
    let (mut r, _) = env.resolver();
    let first = r.round().await.expect("first round").total();
    assert_eq!((first.too_young, first.aborts_claimed), (2, 0), "{first:?}");
    let mut coord = env.meta_conn().await.unwrap();
    coord.query_drop("START TRANSACTION").await.unwrap();
    coord
        .exec_drop(
            "INSERT INTO commit_log_xa_c (comp_node_id, txn_id, next_txn_cmd) VALUES (?, ?, IF(unix_timestamp() > ?, NULL, 'commit'))",
            (a.comp_node_id, a.txn_id(), first.now + 3600),
        )
        .await
        .expect("in-time insert");
    env.wait_clock_past(first.now + kunlun_tests::xa::WAIT_MAX_SEC)
        .await
        .unwrap();
    let round = tokio::spawn(async move {
        let s = r.round().await;
        (r, s)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    coord.query_drop("COMMIT").await.unwrap();
    let (mut r, s) = round.await.unwrap();
    s.expect("round");
    env.settle(&mut r, 60).await.expect("settled");
    assert_eq!(env.decision(a).await.unwrap(), Some(TxnCmd::Commit));
    assert!(env.has_transfer(0, a).unwrap() && env.has_transfer(1, a).unwrap());

    // (b) The resolver claims first: the coordinator's late insert is refused, and every
    // branch is rolled back.
    let t = prepared_transfer_of(&env, 6, 1).await;
    let b = t.xid;
    t.kill(&env).await.unwrap();
    env.settle(&mut r, 60).await.expect("settled");
    // Dated now, its deadline has not passed: only the claim can refuse it.
    let mut late = Txn2pc {
        xid: b,
        cluster: env.cluster.name.clone(),
        conns: Vec::new(),
        phase: kunlun_tests::xa::Phase::Prepared,
        wait_max_sec: kunlun_tests::xa::WAIT_MAX_SEC,
        prepared_at: Some(env.meta_clock().await.unwrap()),
    };
    assert!(
        !late
            .log_commit(&mut env.meta_conn().await.unwrap())
            .await
            .unwrap(),
        "late insert refused"
    );
    assert_eq!(env.decision(b).await.unwrap(), Some(TxnCmd::Abort));
    assert!(!env.has_transfer(0, b).unwrap() && !env.has_transfer(1, b).unwrap());
    assert_eq!(env.total_balance().unwrap(), 2 * ACCOUNTS * OPENING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_shard_branches_are_always_rolled_back() {
    let env = XaEnv::start(1).await.expect("env");
    env.register_meta_shard().await.expect("meta node");
    let x = new_xid(9);
    env.meta
        .sql(&format!(
            "CREATE DATABASE m; CREATE TABLE m.t (id INT PRIMARY KEY); \
             XA START '{x}'; INSERT INTO m.t VALUES (1); XA END '{x}'; XA PREPARE '{x}'"
        ))
        .expect("meta branch");
    // Logged "commit" would not matter: the metadata shard has no commit log of its own.
    let (mut r, m) = env.resolver();
    env.settle(&mut r, 20).await.expect("settled");
    assert!(prepared_on(&env.meta).unwrap().is_empty());
    assert_eq!(
        env.meta
            .value("SELECT COUNT(*) FROM m.t")
            .unwrap()
            .as_deref(),
        Some("0")
    );
    assert_eq!(m.snapshot().rolled_back, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_hook_ends_in_doubt_branches_on_the_new_primary() {
    let env = XaEnv::start(2).await.expect("env");
    let mut meta = env.meta_conn().await.unwrap();
    let mut t = prepared_transfer(&env, 7).await;
    assert!(t.log_commit(&mut meta).await.unwrap());
    let committed = t.xid;
    t.kill(&env).await.unwrap();
    let t = prepared_transfer_of(&env, 7, 1).await;
    let young = t.xid;
    t.kill(&env).await.unwrap();

    let node = env
        .store
        .list_shard_nodes(Some(env.shard_ids[1]))
        .await
        .unwrap()
        .remove(0);
    let report = end_in_doubt_on_new_primary(
        &env.store,
        &env.cluster,
        env.shard_ids[1],
        &node,
        &env.cfg,
        &CancellationToken::new(),
    )
    .await
    .expect("hook");
    assert_eq!(report.remaining(), 0, "{report:?}");
    assert!(
        env.prepared(1).unwrap().is_empty(),
        "the new primary holds no branch"
    );
    assert!(env.has_transfer(1, committed).unwrap());
    assert!(
        !env.has_transfer(1, young).unwrap(),
        "undecided branch waited out, then aborted"
    );
    // The other shard follows the same decisions on the resolver's next rounds.
    let (mut r, _) = env.resolver();
    env.settle(&mut r, 60).await.unwrap();
    assert!(env.has_transfer(0, committed).unwrap() && !env.has_transfer(0, young).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_keeps_rows_that_prepared_branches_refer_to() {
    let env = XaEnv::start(1).await.expect("env");
    let now = env
        .store
        .autocommit(async |tx| repo::commit_log::server_now(tx).await)
        .await
        .unwrap() as u32;
    let old = KunlunXid {
        comp_node_id: 1,
        start_ts: now - 7200,
        local_xid: 1,
    };
    let older = KunlunXid {
        comp_node_id: 1,
        start_ts: now - 9000,
        local_xid: 2,
    };
    let fresh = KunlunXid {
        comp_node_id: 1,
        start_ts: now,
        local_xid: 3,
    };
    for x in [old, older, fresh] {
        let e = NewCommitLogEntry {
            comp_node_id: 1,
            txn_id: x.txn_id(),
            next_txn_cmd: TxnCmd::Commit,
            written_shards: None,
        };
        env.store
            .tx(async |tx| repo::commit_log::insert(tx, "xa_c", &e, None).await)
            .await
            .unwrap();
    }
    let hour = Duration::from_secs(3600);
    // `old` is still prepared somewhere: it and everything younger stay.
    let n = purge_commit_log(&env.store, "xa_c", hour, &[old])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        env.decision(old).await.unwrap().is_some() && env.decision(older).await.unwrap().is_none()
    );
    let n = purge_commit_log(&env.store, "xa_c", hour, &[])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        env.decision(old).await.unwrap().is_none() && env.decision(fresh).await.unwrap().is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_shard_neither_stops_the_others_nor_lets_the_purge_run() {
    let env = XaEnv::start(2).await.expect("env");
    let mut meta = env.meta_conn().await.unwrap();
    let mut t = prepared_transfer(&env, 11).await;
    assert!(t.log_commit(&mut meta).await.unwrap());
    let x = t.xid;
    t.kill(&env).await.unwrap();
    // An old decision that retention would purge.
    let now = env
        .store
        .autocommit(async |tx| repo::commit_log::server_now(tx).await)
        .await
        .unwrap() as u32;
    let old = KunlunXid {
        comp_node_id: 11,
        start_ts: now - 100_000,
        local_xid: 1,
    };
    let e = NewCommitLogEntry {
        comp_node_id: 11,
        txn_id: old.txn_id(),
        next_txn_cmd: TxnCmd::Abort,
        written_shards: None,
    };
    env.store
        .tx(async |tx| repo::commit_log::insert(tx, "xa_c", &e, None).await)
        .await
        .unwrap();

    env.shards[1].kill9().expect("shard 2 down");
    let (mut r, _) = env.resolver();
    let mut ended_on_shard1 = false;
    for _ in 0..50 {
        let s = r.round().await.expect("round despite a dead shard");
        let total = s.total();
        assert!(!total.complete(), "the dead shard is reported");
        assert_eq!(s.purged, 0, "no purge while a shard could not be scanned");
        if env.prepared(0).unwrap().is_empty() {
            ended_on_shard1 = true;
            break;
        }
        tokio::time::sleep(env.cfg.interval).await;
    }
    assert!(
        ended_on_shard1,
        "shard 1 was resolved while shard 2 was down"
    );
    assert!(env.has_transfer(0, x).unwrap());
    assert!(env.decision(old).await.unwrap().is_some(), "old row kept");

    env.shards[1].restart().expect("shard 2 back");
    let (mut r, _) = env.resolver();
    let rounds = env.settle(&mut r, 60).await.expect("settled");
    assert!(
        env.has_transfer(1, x).unwrap(),
        "shard 2 follows the same commit"
    );
    assert_eq!(
        rounds[0].purged, 1,
        "first complete round purges the old row"
    );
    assert!(env.decision(old).await.unwrap().is_none());
    assert_eq!(
        env.decision(x).await.unwrap(),
        Some(TxnCmd::Commit),
        "recent rows stay"
    );
}
