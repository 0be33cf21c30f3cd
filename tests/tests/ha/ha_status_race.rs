//! The HA monitor never brings back a node that a delete job marked `deleted` while the
//! monitor was busy with it: the status it writes after a slow step (the old primary's
//! rejoin, a failover's metadata phase) is conditional on the status it decided from. The
//! deletion is made through the `before_write` seam, i.e. exactly between the monitor's
//! observation and its write; the shards are real semi-sync MariaDB sets. Through the same
//! seam, another manager takes the leadership lease over mid-failover: the deposed term's
//! metadata write is refused in its transaction and its candidate closed again; a term that
//! has lost the lease before a failure touches no node at all.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kunlun_core::ha::{HaConfig, Outcome, TermFence, WriteHook, WriteSite};
use kunlun_meta::model::{NodeStatus, ShardNode};
use kunlun_meta::store::{repo, Store, StoreConfig};
use kunlun_tests::ha::{test_ha_config, EnvOptions, HaEnv, LIMIT};

/// A `before_write` hook that marks `victims(site)` deleted, as a delete job's recording
/// transaction does, and remembers the sites it saw. The store is set once the env exists.
struct Deleter {
    store: Arc<OnceLock<Store>>,
    seen: Arc<Mutex<Vec<WriteSite>>>,
}

impl Deleter {
    fn new(victims: impl Fn(WriteSite) -> Vec<i64> + Send + Sync + 'static) -> (Deleter, HaConfig) {
        let store: Arc<OnceLock<Store>> = Arc::default();
        let seen: Arc<Mutex<Vec<WriteSite>>> = Arc::default();
        let (st, sn) = (store.clone(), seen.clone());
        let victims = Arc::new(victims);
        let hook = WriteHook(Arc::new(move |site| {
            let (st, sn, victims) = (st.clone(), sn.clone(), victims.clone());
            Box::pin(async move {
                sn.lock().unwrap().push(site);
                let ids = victims(site);
                let Some(store) = st.get() else { return };
                store
                    .tx(async |tx| {
                        for id in &ids {
                            repo::nodes::set_status(tx, *id, NodeStatus::Deleted).await?;
                        }
                        Ok(())
                    })
                    .await
                    .expect("mark deleted");
            })
        }));
        let cfg = HaConfig {
            before_write: Some(hook),
            ..test_ha_config()
        };
        (Deleter { store, seen }, cfg)
    }

    fn seen(&self) -> Vec<WriteSite> {
        self.seen.lock().unwrap().clone()
    }
}

async fn node(env: &HaEnv, id: i64) -> ShardNode {
    env.nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.id == id)
        .unwrap()
}

/// Waits until the monitor probed the live primary: the lossless proof of the coming failover
/// rests on it.
async fn wait_primary_probed(env: &HaEnv) {
    let deadline = Instant::now() + LIMIT;
    while !env
        .ha
        .shared()
        .node_health(env.node_ids[0])
        .is_some_and(|h| h.probe.semi_sync_proof())
    {
        assert!(Instant::now() < deadline, "the primary was never probed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets up the world and kills the primary; the node ids are known only after the env
/// starts, so the victims are read through `ids`.
async fn env_with(
    victims: impl Fn(&[i64], WriteSite) -> Vec<i64> + Send + Sync + 'static,
) -> (Arc<HaEnv>, Deleter) {
    let ids: Arc<OnceLock<Vec<i64>>> = Arc::default();
    let i2 = ids.clone();
    let (deleter, ha) = Deleter::new(move |site| match i2.get() {
        Some(ids) => victims(ids, site),
        None => Vec::new(),
    });
    let env = HaEnv::start(EnvOptions {
        ha,
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    let _ = ids.set(env.node_ids.clone());
    let _ = deleter.store.set(env.store.clone());
    wait_primary_probed(&env).await;
    (Arc::new(env), deleter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_primary_deleted_while_it_rejoins_stays_deleted() {
    // The old primary is node_ids[0]; it is deleted right before its rejoin is recorded.
    let (env, deleter) = env_with(|ids, site| match site {
        WriteSite::Rejoin { node_id } if node_id == ids[0] => vec![node_id],
        _ => Vec::new(),
    })
    .await;
    let old = env.node_ids[0];
    env.set.primary().kill9().unwrap();
    let rec = env.wait_promoted(0).await.expect("failover");
    assert_eq!(node(&env, old).await.status, NodeStatus::Inactive);

    let e2 = env.clone();
    tokio::task::spawn_blocking(move || e2.set.primary().restart().expect("restart"))
        .await
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    let fate = loop {
        let fate = env
            .ha
            .shared()
            .failover(rec.id)
            .and_then(|r| r.old_primary_fate)
            .unwrap_or_default();
        if fate.starts_with("not rejoined") || fate.starts_with("rejoined") {
            break fate;
        }
        assert!(
            Instant::now() < deadline,
            "no fate: {:?}",
            env.ha.shared().events()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        deleter.seen().contains(&WriteSite::Rejoin { node_id: old }),
        "the hook ran between the repoint and the write: {:?}",
        deleter.seen()
    );
    assert_eq!(fate, "not rejoined: the node was deleted meanwhile");
    assert!(env
        .ha
        .shared()
        .events()
        .iter()
        .any(|e| e.node_id == Some(old) && e.what.contains("not rejoined")));
    // The fate is stored with the record, and the node stays deleted round after round.
    let stored = kunlun_core::ha::records::get(&env.store, rec.id)
        .await
        .unwrap();
    assert_eq!(stored.old_primary_fate.as_deref(), Some(fate.as_str()));
    let rounds = env.ha.shared().stats().rounds;
    while env.ha.shared().stats().rounds < rounds + 5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(node(&env, old).await.status, NodeStatus::Deleted);
    let maps = env
        .store
        .read(async |tx| repo::meta::list_node_masters(tx, Some(env.cluster.id)).await)
        .await
        .unwrap();
    let old_host = format!("127.0.0.1_{}", env.set.primary().port());
    assert!(
        maps.iter().all(|m| m.node_host != old_host),
        "no node_map_master row for the deleted node: {maps:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_primary_deleted_during_the_failover_is_not_set_inactive() {
    let (env, deleter) = env_with(|ids, site| match site {
        WriteSite::Failover { .. } => vec![ids[0]],
        _ => Vec::new(),
    })
    .await;
    let old = env.node_ids[0];
    env.set.primary().kill9().unwrap();
    let rec = env
        .wait_promoted(0)
        .await
        .expect("failover still completes");
    assert!(matches!(
        deleter.seen().first(),
        Some(WriteSite::Failover { .. })
    ));
    let new = rec.new_primary.expect("new primary");
    assert_eq!(env.primary_id().await.unwrap(), new);
    assert_eq!(
        node(&env, old).await.status,
        NodeStatus::Deleted,
        "not brought back as inactive"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_deleted_during_the_failover_is_not_made_primary() {
    // The candidate itself is deleted (a delete job of that replica) right before the
    // metadata phase: metadata must not name it, and it is closed for writes again.
    // Only the first candidate: the retry's must go through.
    let once = std::sync::atomic::AtomicBool::new(false);
    let (env, _deleter) = env_with(move |_, site| match site {
        WriteSite::Failover { new_primary, .. }
            if !once.swap(true, std::sync::atomic::Ordering::SeqCst) =>
        {
            vec![new_primary]
        }
        _ => Vec::new(),
    })
    .await;
    let old = env.node_ids[0];
    env.set.primary().kill9().unwrap();
    let deadline = Instant::now() + LIMIT;
    let failed = loop {
        let recs = env.ha.shared().failovers(Some(env.shard_id));
        if let Some(r) = recs.iter().find(|r| r.outcome == Outcome::Failed) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no failed attempt: {recs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(reason.contains("during the failover"), "{reason}");
    assert!(reason.contains("closed again"), "{reason}");
    let victim = failed
        .phases
        .iter()
        .find(|p| p.name == "choose")
        .and_then(|p| p.note.clone())
        .unwrap_or_default();
    let nodes = env.nodes().await.unwrap();
    let deleted: Vec<&ShardNode> = nodes
        .iter()
        .filter(|n| n.status == NodeStatus::Deleted)
        .collect();
    assert_eq!(deleted.len(), 1, "{nodes:?}");
    let cand = deleted[0];
    assert!(victim.contains(&format!("node {}", cand.id)), "{victim}");
    assert_eq!(
        cand.member_state,
        kunlun_meta::model::MemberState::Replica,
        "metadata never named the deleted candidate primary"
    );
    let ro: Vec<i64> = kunlun_tests::ha::root_query(env.server(cand.id), "SELECT @@read_only")
        .await
        .unwrap();
    assert_eq!(ro, vec![1], "the deleted candidate was closed again");
    // The delete job goes on to uninstall the candidate (the other replica was repointed at
    // it and keeps the primary "confirmed alive" while it answers); then the retry promotes
    // the remaining replica and the deleted node stays out of it.
    let e2 = env.clone();
    let cid = cand.id;
    tokio::task::spawn_blocking(move || e2.server(cid).kill9().expect("uninstall"))
        .await
        .unwrap();
    let rec = env.wait_promoted(0).await.expect("the retry fails over");
    let new = rec.new_primary.expect("new primary");
    assert!(new != cand.id && new != old, "{rec:?}");
    assert_eq!(env.primary_id().await.unwrap(), new);
    let c = node(&env, cand.id).await;
    assert_eq!(
        (c.status, c.member_state),
        (
            NodeStatus::Deleted,
            kunlun_meta::model::MemberState::Replica
        )
    );
    assert_eq!(node(&env, old).await.status, NodeStatus::Inactive);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_that_ends_during_the_failover_records_no_primary_and_touches_nothing_after() {
    const LEASE: &str = "cluster_mgr";
    let ttl = Duration::from_secs(600);
    // Right before the metadata write, "mgr-a" (this monitor's term, epoch 1) loses the lease
    // to "mgr-b", as when a paused leader's lease expires and another manager takes over.
    let cell: Arc<OnceLock<Store>> = Arc::default();
    let c2 = cell.clone();
    let took_over: Arc<Mutex<u32>> = Arc::default();
    let t2 = took_over.clone();
    let hook = WriteHook(Arc::new(move |site| {
        let (c2, t2) = (c2.clone(), t2.clone());
        Box::pin(async move {
            let (WriteSite::Failover { .. }, Some(store)) = (site, c2.get()) else {
                return;
            };
            let b = store
                .tx(async |tx| {
                    repo::lease::release(tx, LEASE, "mgr-a", 1).await?;
                    repo::lease::acquire(tx, LEASE, "mgr-b", ttl).await
                })
                .await
                .expect("take the lease over");
            assert_eq!(b.map(|l| l.epoch), Some(2), "mgr-b holds epoch 2");
            *t2.lock().unwrap() += 1;
        })
    }));
    let ha = HaConfig {
        before_write: Some(hook),
        term: Some(TermFence {
            lease: LEASE.into(),
            holder: "mgr-a".into(),
            epoch: 1,
        }),
        ..test_ha_config()
    };
    let env = HaEnv::start(EnvOptions {
        ha,
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    let a = env
        .store
        .tx(async |tx| repo::lease::acquire(tx, LEASE, "mgr-a", ttl).await)
        .await
        .unwrap();
    assert_eq!(a.map(|l| l.epoch), Some(1));
    let _ = cell.set(env.store.clone());
    wait_primary_probed(&env).await;
    let old = env.node_ids[0];
    env.set.primary().kill9().unwrap();

    // The attempt that reached its metadata write fails there and closes its candidate.
    let deadline = Instant::now() + LIMIT;
    let failed = loop {
        let recs = env.ha.shared().failovers(Some(env.shard_id));
        if let Some(r) = recs.iter().find(|r| r.outcome == Outcome::Failed) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no failed attempt: {recs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("leadership term 1 of mgr-a ended"),
        "{reason}"
    );
    assert!(reason.contains("closed again"), "{reason}");
    assert_eq!(*took_over.lock().unwrap(), 1);
    let rounds = env.ha.shared().stats().rounds;
    while env.ha.shared().stats().rounds < rounds + 5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing a deposed term did stays: metadata still names the old primary, every live node
    // is read-only, no attempt was promoted, and the hook ran once (one metadata write tried).
    assert_eq!(env.primary_id().await.unwrap(), old);
    for id in &env.node_ids[1..] {
        let ro: Vec<i64> = kunlun_tests::ha::root_query(env.server(*id), "SELECT @@read_only")
            .await
            .unwrap();
        assert_eq!(ro, vec![1], "node {id} is read-only");
    }
    let recs = env.ha.shared().failovers(Some(env.shard_id));
    assert!(
        recs.iter().all(|r| r.outcome != Outcome::Promoted),
        "{recs:?}"
    );
    assert_eq!(*took_over.lock().unwrap(), 1, "{recs:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_without_the_lease_refuses_a_failover_before_touching_a_node() {
    const LEASE: &str = "cluster_mgr";
    let hooked: Arc<Mutex<u32>> = Arc::default();
    let h2 = hooked.clone();
    let hook = WriteHook(Arc::new(move |_| {
        let h2 = h2.clone();
        Box::pin(async move {
            *h2.lock().unwrap() += 1;
        })
    }));
    let ha = HaConfig {
        before_write: Some(hook),
        term: Some(TermFence {
            lease: LEASE.into(),
            holder: "mgr-a".into(),
            epoch: 1,
        }),
        ..test_ha_config()
    };
    let env = HaEnv::start(EnvOptions {
        ha,
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    // Another manager leads: the monitor still runs (its term has not noticed yet).
    let b = env
        .store
        .tx(async |tx| repo::lease::acquire(tx, LEASE, "mgr-b", Duration::from_secs(600)).await)
        .await
        .unwrap();
    assert!(b.is_some());
    wait_primary_probed(&env).await;
    let old = env.node_ids[0];
    env.set.primary().kill9().unwrap();
    let deadline = Instant::now() + LIMIT;
    let refused = loop {
        let recs = env.ha.shared().failovers(Some(env.shard_id));
        if let Some(r) = recs.iter().find(|r| r.outcome == Outcome::Refused) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no refused attempt: {recs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let why = refused.reason.clone().unwrap_or_default();
    assert!(why.contains("no longer held by mgr-a"), "{why}");
    assert!(
        refused.phases.iter().all(|p| p.name != "promote"),
        "{refused:?}"
    );
    let rounds = env.ha.shared().stats().rounds;
    while env.ha.shared().stats().rounds < rounds + 5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.primary_id().await.unwrap(), old);
    assert_eq!(*hooked.lock().unwrap(), 0, "no metadata write was tried");
    for id in &env.node_ids[1..] {
        let ro: Vec<i64> = kunlun_tests::ha::root_query(env.server(*id), "SELECT @@read_only")
            .await
            .unwrap();
        assert_eq!(ro, vec![1], "node {id} stays a read-only replica");
    }
    env.stop().await;
}

#[tokio::test]
async fn set_status_if_changes_only_the_expected_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig::sqlite(dir.path().join("meta.db")))
        .await
        .unwrap();
    let (_, _, ids) = kunlun_tests::ha::register_shard(&store, &[1, 2], 1)
        .await
        .unwrap();
    let id = ids[1];
    let r = store
        .tx(async |tx| {
            repo::nodes::set_status(tx, id, NodeStatus::Inactive).await?;
            let a = repo::nodes::set_status_if(tx, id, NodeStatus::Inactive, NodeStatus::Active)
                .await?;
            repo::nodes::set_status(tx, id, NodeStatus::Deleted).await?;
            let b = repo::nodes::set_status_if(tx, id, NodeStatus::Inactive, NodeStatus::Active)
                .await?;
            let after = repo::nodes::get(tx, id).await?.status;
            let gone =
                repo::nodes::set_status_if(tx, 999_999, NodeStatus::Inactive, NodeStatus::Active)
                    .await?;
            Ok((a, b, after, gone))
        })
        .await
        .unwrap();
    assert_eq!(r, (true, false, NodeStatus::Deleted, false));
}
