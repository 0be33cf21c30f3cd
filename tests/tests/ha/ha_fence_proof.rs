//! Fences are proven against the compute nodes' login, and replicas are repointed with the
//! cluster's `repl` login: a harness shard given a `kl_cluster_secret` row and the `repl` and
//! `pgx` users of a provisioned cluster is switched over. With a least-privilege `pgx`, every
//! follower (and the old primary, right after its fence) is proven to refuse its writes, and the followers' `master.info` names `repl`, not
//! the manager's login. Once `pgx` holds `ALL PRIVILEGES` (which bypasses `read_only` on
//! MariaDB 10.11), the next switchover is refused (the primary's write block would not hold
//! for the compute nodes) and the primary is reopened, unchanged.

use kunlun_core::ha::Outcome;
use kunlun_meta::store::repo::secrets::{self, ClusterSecret};
use kunlun_tests::ha::{root_query, EnvOptions, HaEnv, Writer};

/// `Master_User` of a replica.
async fn master_user(env: &HaEnv, node: i64) -> String {
    let rows: Vec<mysql_async::Row> = root_query(env.server(node), "SHOW SLAVE STATUS")
        .await
        .expect("slave status");
    rows.first()
        .and_then(|r| r.get_opt::<String, _>("Master_User"))
        .and_then(Result::ok)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchovers_prove_fences_against_pgx_and_repoint_with_repl() {
    let env = HaEnv::start(EnvOptions::default()).await.expect("env");
    {
        let sql = "CREATE USER repl@'%' IDENTIFIED BY 'repl_pw'; \
                   GRANT REPLICATION SLAVE ON *.* TO repl@'%'; \
                   CREATE USER pgx@'%' IDENTIFIED BY 'pgx_pw'; \
                   GRANT SELECT, INSERT, UPDATE, DELETE ON ha.* TO pgx@'%'; \
                   GRANT REPLICATION CLIENT ON *.* TO pgx@'%';";
        let set = &env.set;
        std::thread::scope(|s| s.spawn(|| set.primary().sql(sql)).join())
            .expect("thread")
            .expect("users");
        std::thread::scope(|s| {
            s.spawn(|| set.wait_replicated(kunlun_tests::ha::LIMIT))
                .join()
        })
        .expect("thread")
        .expect("replicated");
    }
    let cluster_id = env.cluster.id;
    env.store
        .tx(async |tx| {
            secrets::insert(
                tx,
                &ClusterSecret {
                    cluster_id,
                    manager_pwd: "unused".into(),
                    repl_pwd: "repl_pw".into(),
                    pgx_pwd: "pgx_pw".into(),
                    comp_pwd: "unused".into(),
                },
            )
            .await
        })
        .await
        .expect("secret row");

    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(30).await.unwrap();
    let (old, target) = (env.node_ids[0], env.node_ids[1]);
    let rec = env
        .ha
        .switchover(env.shard_id, Some(target))
        .await
        .expect("switchover");
    eprintln!("least-privilege pgx: fence {:?}", rec.fence);
    for ph in &rec.phases {
        eprintln!(
            "  {:>16} {:>6} ms  {}",
            ph.name,
            ph.ms,
            ph.note.as_deref().unwrap_or("")
        );
    }
    assert_eq!(rec.outcome, Outcome::Promoted, "{rec:?}");
    assert!(rec.fence_unproven.is_empty(), "{rec:?}");
    assert!(rec.not_replicating.is_empty(), "{rec:?}");
    let fence = rec.fence.clone().unwrap_or_default();
    assert_eq!(
        fence.matches("pgx refused").count(),
        3,
        "the old primary and both followers proven: {fence}"
    );
    for n in [old, env.node_ids[2]] {
        assert_eq!(master_user(&env, n).await, "repl", "node {n}'s master.info");
    }
    assert!(!env.ha.shared().alarms().contains_key(&env.shard_id));

    // A pgx that bypasses read_only: the primary's fence cannot be proven, so the switchover
    // is refused and the primary reopened.
    root_query::<String>(env.server(target), "GRANT ALL PRIVILEGES ON *.* TO pgx@'%'")
        .await
        .expect("grant");
    w.wait_more(30).await.unwrap();
    let again = env.ha.switchover(env.shard_id, Some(old)).await;
    eprintln!("pgx with ALL: {again:?}");
    match &again {
        Err(kunlun_core::Error::Conflict(m)) => {
            assert!(
                m.contains("ALL PRIVILEGES") && !m.contains("PASSWORD"),
                "{m}"
            )
        }
        other => panic!("expected a refusal: {other:?}"),
    }
    assert_eq!(env.primary_id().await.unwrap(), target);
    let ro: Vec<i64> = root_query(env.server(target), "SELECT @@read_only")
        .await
        .unwrap();
    assert_eq!(ro, vec![0], "the primary was reopened");
    w.wait_more(30)
        .await
        .expect("writes go on on the same primary");
    let acked = w.finish().await;
    env.check_converged(&env.node_ids, &acked)
        .await
        .expect("converged");
    env.stop().await;
}
