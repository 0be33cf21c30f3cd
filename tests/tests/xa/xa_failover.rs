//! The failover hook on a real promoted replica: prepared branches replicate to the replica as
//! prepared; after the primary dies and the replica is promoted, the hook ends them from the
//! commit log before the node takes writes, and the resolver then finishes the other shard the
//! same way.

use kunlun_core::xa::end_in_doubt_on_new_primary;
use kunlun_meta::model::{MemberState, NewShardNode, NodeStatus, TxnCmd};
use kunlun_meta::store::repo;
use kunlun_tests::xa::{new_xid, prepared_on, Txn2pc, XaEnv, ACCOUNTS};
use kunlun_tests::MariaDb;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_ends_its_replicated_branches_before_taking_writes() {
    let env = XaEnv::start(2).await.expect("env");
    let replica = tokio::task::spawn_blocking(MariaDb::start)
        .await
        .unwrap()
        .expect("replica");
    replica
        .replicate_from(&env.shards[0])
        .expect("replicate from shard 1");
    let shard1 = env.shard_ids[0];
    let port = replica.port();
    let node = env
        .store
        .tx(async |tx| {
            repo::nodes::insert(
                tx,
                &NewShardNode {
                    shard_id: shard1,
                    db_cluster_id: env.cluster.id,
                    hostaddr: "127.0.0.1".into(),
                    port,
                    user_name: "root".into(),
                    passwd: String::new(),
                    master_priority: 0,
                    member_state: MemberState::Replica,
                    status: NodeStatus::Active,
                    innodb_buffer_pool_mb: 64,
                },
            )
            .await
        })
        .await
        .expect("register replica");

    // One transfer decided commit, one undecided; both coordinators die after PREPARE.
    let mut meta = env.meta_conn().await.unwrap();
    let mut t = Txn2pc::begin(&env, new_xid(8), &[0, 1]).await.unwrap();
    t.add(0, 0, -30).await.unwrap();
    t.add(1, ACCOUNTS, 30).await.unwrap();
    t.prepare().await.unwrap();
    assert!(t.log_commit(&mut meta).await.unwrap());
    let committed = t.xid;
    t.kill(&env).await.unwrap();
    let mut u = Txn2pc::begin(&env, new_xid(8), &[0, 1]).await.unwrap();
    u.add(0, 1, -40).await.unwrap();
    u.add(1, ACCOUNTS + 1, 40).await.unwrap();
    u.prepare().await.unwrap();
    let undecided = u.xid;
    u.kill(&env).await.unwrap();

    // The replica catches up (bounded wait), then the primary dies and the replica is promoted.
    let pos = env.shards[0]
        .value("SELECT @@gtid_binlog_pos")
        .unwrap()
        .unwrap_or_default();
    assert_eq!(
        replica
            .value(&format!("SELECT MASTER_GTID_WAIT('{pos}', 60)"))
            .unwrap()
            .as_deref(),
        Some("0"),
        "replica caught up"
    );
    env.shards[0].kill9().expect("primary dies");
    replica
        .sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0")
        .expect("promote");
    let mut on_replica = prepared_on(&replica).unwrap();
    on_replica.sort();
    let mut want = vec![committed.to_string(), undecided.to_string()];
    want.sort();
    assert_eq!(
        on_replica, want,
        "prepared branches were replicated as prepared"
    );

    let report = end_in_doubt_on_new_primary(
        &env.store,
        &env.cluster,
        shard1,
        &node,
        &env.cfg,
        &CancellationToken::new(),
    )
    .await
    .expect("hook");
    assert_eq!(report.remaining(), 0, "{report:?}");
    assert!(prepared_on(&replica).unwrap().is_empty());
    let has = |x: kunlun_core::xa::KunlunXid| {
        replica
            .value(&format!(
                "SELECT COUNT(*) FROM bank.transfers WHERE xid = '{x}'"
            ))
            .unwrap()
            .as_deref()
            == Some("1")
    };
    assert!(has(committed) && !has(undecided));
    assert_eq!(env.decision(undecided).await.unwrap(), Some(TxnCmd::Abort));

    // Metadata now names the replica as primary; the resolver ends shard 2's branches alike.
    env.store
        .tx(async |tx| repo::nodes::set_primary(tx, node.id).await)
        .await
        .unwrap();
    let (mut r, _) = env.resolver();
    for _ in 0..50 {
        let t = r.round().await.unwrap().total();
        if t.found == 0 {
            break;
        }
        tokio::time::sleep(env.cfg.interval).await;
    }
    assert!(env.prepared(1).unwrap().is_empty());
    assert!(env.has_transfer(1, committed).unwrap() && !env.has_transfer(1, undecided).unwrap());
}
