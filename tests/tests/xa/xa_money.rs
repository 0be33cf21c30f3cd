//! Money transfers across two real MariaDB shards with the XA resolver running: concurrent
//! coordinators, each transfer "killed" at a random point of 2PC (KILL of its sessions, or its
//! connections dropped without a word). At the end no money is created or lost, no branch is
//! left prepared, and every transfer is all-or-nothing, as its commit-log row says.

use std::sync::Arc;

use kunlun_core::xa::KunlunXid;
use kunlun_meta::model::TxnCmd;
use kunlun_tests::xa::{new_xid, Txn2pc, XaEnv, ACCOUNTS, OPENING};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const COORDINATORS: u32 = 4;
const TRANSFERS_EACH: usize = 20;

/// Where a coordinator dies (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Completes,
    BeforePrepare,
    AfterOnePrepare,
    AfterPrepare,
    AfterLog,
    AfterOneCommit,
}

const FATES: [Fate; 6] = [
    Fate::Completes,
    Fate::BeforePrepare,
    Fate::AfterOnePrepare,
    Fate::AfterPrepare,
    Fate::AfterLog,
    Fate::AfterOneCommit,
];

/// Runs one transfer to its fate; any error on the way (a lock wait on a row held by a
/// prepared leftover, say) is treated as the coordinator dying there.
async fn run_one(env: &XaEnv, rng: &mut StdRng, cn: u32) -> anyhow::Result<KunlunXid> {
    let fate = FATES[rng.random_range(0..FATES.len())];
    let (from, to) = (
        rng.random_range(0..ACCOUNTS),
        ACCOUNTS + rng.random_range(0..ACCOUNTS),
    );
    let amount = rng.random_range(1..50);
    let xid = new_xid(cn);
    let kill_by_drop = rng.random_bool(0.5);
    let mut t = Txn2pc::begin(env, xid, &[0, 1]).await?;
    let r = drive(env, &mut t, fate, from, to, amount).await;
    let done = matches!(
        t.phase,
        kunlun_tests::xa::Phase::Committed | kunlun_tests::xa::Phase::RolledBack
    );
    if r.is_err() || !done {
        if kill_by_drop {
            drop(t);
        } else if let Err(e) = t.kill(env).await {
            eprintln!("kill failed ({e:#}); connections dropped instead");
        }
    }
    Ok(xid)
}

async fn drive(
    env: &XaEnv,
    t: &mut Txn2pc,
    fate: Fate,
    from: i64,
    to: i64,
    amount: i64,
) -> anyhow::Result<()> {
    t.add(0, from, -amount).await?;
    t.add(1, to, amount).await?;
    if fate == Fate::BeforePrepare {
        return Ok(());
    }
    if fate == Fate::AfterOnePrepare {
        let xid = t.xid;
        t.exec(0, &format!("XA END '{xid}'")).await?;
        t.exec(0, &format!("XA PREPARE '{xid}'")).await?;
        return Ok(());
    }
    t.prepare().await?;
    if fate == Fate::AfterPrepare {
        return Ok(());
    }
    let mut meta = env.meta_conn().await?;
    if !t.log_commit(&mut meta).await? {
        t.rollback().await?;
        return Ok(());
    }
    if fate == Fate::AfterLog {
        return Ok(());
    }
    if fate == Fate::AfterOneCommit {
        let xid = t.xid;
        t.exec(0, &format!("XA COMMIT '{xid}'")).await?;
        return Ok(());
    }
    t.commit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_with_random_coordinator_deaths_keep_the_books_balanced() {
    let env = Arc::new(XaEnv::start(2).await.expect("env"));
    let opening = env.total_balance().expect("balance");
    assert_eq!(opening, 2 * ACCOUNTS * OPENING);

    let (resolver, metrics) = env.resolver();
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    resolver.spawn(&tasks, cancel.clone());

    let mut coords = Vec::new();
    for cn in 1..=COORDINATORS {
        let env = env.clone();
        coords.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(u64::from(cn) * 7919);
            let mut xids = Vec::new();
            for _ in 0..TRANSFERS_EACH {
                match run_one(&env, &mut rng, cn).await {
                    Ok(x) => xids.push(x),
                    Err(e) => eprintln!("transfer could not start: {e:#}"),
                }
            }
            xids
        }));
    }
    let mut xids = Vec::new();
    for c in coords {
        xids.extend(c.await.expect("coordinator task"));
    }
    cancel.cancel();
    tasks.close();
    tasks.wait().await;

    // Whatever the actor did not finish, later rounds do.
    let (mut r, _) = env.resolver();
    env.settle(&mut r, 100)
        .await
        .expect("every branch resolved");

    assert!(
        env.all_prepared().unwrap().is_empty(),
        "no prepared branch left"
    );
    assert_eq!(
        env.total_balance().unwrap(),
        opening,
        "no money created or lost"
    );
    let mut committed = 0;
    for x in &xids {
        let (a, b) = (
            env.has_transfer(0, *x).unwrap(),
            env.has_transfer(1, *x).unwrap(),
        );
        let logged = env.decision(*x).await.unwrap();
        assert_eq!(
            a, b,
            "transfer {x} is all-or-nothing (shard 1: {a}, shard 2: {b}, log {logged:?})"
        );
        assert_eq!(
            a,
            logged == Some(TxnCmd::Commit),
            "transfer {x} follows its log row {logged:?}"
        );
        committed += usize::from(a);
    }
    let s = metrics.snapshot();
    eprintln!(
        "{} transfers, {committed} committed; resolver: found {}, committed {}, rolled back {}, aborts claimed {}",
        xids.len(),
        s.found,
        s.committed,
        s.rolled_back,
        s.aborts_claimed
    );
    env.rollback_leftovers().unwrap();
}
