//! The job runner runs jobs of different clusters at once, against a SQLite store (and again
//! against the MySQL backend, a fresh database on the MariaDB at `KUNLUN_TEST_MYSQL_URL`,
//! where concurrent reservations take row locks) and a real private sshd on 127.0.0.31 with real MariaDB and PostgreSQL installs: two `create_cluster`
//! jobs (1 shard x 1 node `no_rep` + 1 compute node each) accepted together are both
//! `ongoing` at the same time, both end `done` on distinct, non-overlapping port blocks of the
//! same two machines, with their own rows, committed ports and a compute-node catalog naming
//! their own storage node; then two `delete_cluster` jobs leave nothing behind.
//!
//! Invariant: every process the test starts (sshd, and through the jobs the database servers)
//! is stopped when the test ends, also when it fails half-way.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use kunlun_core::catalog::{read_catalog, CatalogOptions};
use kunlun_core::jobs::accept_create_cluster;
use kunlun_core::jobs::accept_delete_cluster;
use kunlun_core::jobs::kinds::CreateMemo;
use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::{HaMode, Job, JobStatus, MemberState, NodeStatus};
use kunlun_meta::Store;
use kunlun_provision::placement::InstanceKind;
use kunlun_tests::world::{memo, ProvisionWorld, StoreKind};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 31);
/// Longest a pair of jobs may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(180);

fn request(name: &str) -> CreateCluster {
    CreateCluster {
        name: name.into(),
        nick_name: None,
        ha_mode: HaMode::NoRep,
        shards: 1,
        nodes: 1,
        comps: 1,
        innodb_size_mb: Some(32),
        max_connections: Some(100),
        storage_hosts: vec![],
        computer_hosts: vec![],
    }
}

/// What the poll of the job table saw while a pair of jobs ran.
struct Watched {
    jobs: [Job; 2],
    /// Both were `ongoing` in the same poll.
    together: bool,
    /// Polls that saw both `ongoing`.
    polls_together: usize,
    took: Duration,
}

/// Polls jobs `ids` every 20 ms until both are final.
async fn watch(store: &Store, ids: [i64; 2]) -> Watched {
    let t = Instant::now();
    let mut polls_together = 0;
    loop {
        let a = store.get_job(ids[0]).await.expect("job");
        let b = store.get_job(ids[1]).await.expect("job");
        if a.status == JobStatus::Ongoing && b.status == JobStatus::Ongoing {
            polls_together += 1;
        }
        if a.status.is_final() && b.status.is_final() {
            return Watched {
                jobs: [a, b],
                together: polls_together > 0,
                polls_together,
                took: t.elapsed(),
            };
        }
        assert!(
            t.elapsed() < DEADLINE,
            "jobs {ids:?} still {:?} / {:?} after {DEADLINE:?}",
            a.status,
            b.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_clusters_are_created_and_deleted_at_the_same_time() {
    two_clusters_at_once(false).await
}

#[tokio::test]
async fn two_clusters_at_once_on_the_mysql_store() {
    two_clusters_at_once(true).await
}

async fn two_clusters_at_once(mysql: bool) {
    let store = if mysql {
        StoreKind::Mysql
    } else {
        StoreKind::Sqlite
    };
    // The two variants run at once on one address: the world gives each its own port ranges.
    let mut w = ProvisionWorld::builder(IP)
        .store(store)
        .poll_interval(Duration::from_millis(200))
        .build()
        .await;
    w.start_runner();
    scenario(&w).await;
    assert!(
        w.stop_runner(Duration::from_secs(10)).await,
        "the runner stops on cancel"
    );
}

async fn scenario(w: &ProvisionWorld) {
    let store = &w.store;
    let (one, two) = (request("cc_one"), request("cc_two"));
    let (a, b) = tokio::join!(
        accept_create_cluster(store, &one),
        accept_create_cluster(store, &two)
    );
    let ids = [a.expect("accepted").id, b.expect("accepted").id];
    w.wake();
    let seen = watch(store, ids).await;
    eprintln!(
        "create_cluster x2: {:.1} s, both ongoing in {} polls",
        seen.took.as_secs_f64(),
        seen.polls_together
    );
    for j in &seen.jobs {
        assert_eq!(j.status, JobStatus::Done, "{}", memo(j));
    }
    assert!(
        seen.together,
        "both create_cluster jobs were ongoing at the same time"
    );

    // Each cluster: its own rows, a live storage node and compute node, on ports no other
    // instance's block overlaps.
    let mut storage_ports = Vec::new();
    let mut comp_ports = Vec::new();
    for (j, name) in seen.jobs.iter().zip(["cc_one", "cc_two"]) {
        let memo: CreateMemo =
            serde_json::from_value(j.memo.clone().expect("memo")).expect("memo shape");
        assert_eq!(memo.stage, "done", "{memo:?}");
        assert_eq!(memo.cluster_name.as_deref(), Some(name));
        let cid = memo.cluster_id.expect("cluster id");
        let plan = memo.plan.expect("plan");
        let shards = store.list_shards(Some(cid)).await.expect("shards");
        assert_eq!(shards.len(), 1, "{name}: one shard");
        let nodes = store
            .list_shard_nodes(Some(shards[0].id))
            .await
            .expect("nodes");
        assert_eq!(nodes.len(), 1, "{name}: one storage node");
        let n = &nodes[0];
        assert_eq!(n.db_cluster_id, cid);
        assert_eq!(n.member_state, MemberState::Source);
        assert_eq!(n.status, NodeStatus::Active);
        assert_eq!(
            n.port, plan.shards[0].nodes[0].slot.port,
            "{name}: as planned"
        );
        assert!(
            w.listening(n.port),
            "{name}: storage node {} answers",
            n.port
        );
        let comps = store.list_comp_nodes(Some(cid)).await.expect("comps");
        assert_eq!(comps.len(), 1, "{name}: one compute node");
        let c = &comps[0];
        assert_eq!(c.port, plan.comps[0].slot.port, "{name}: as planned");
        assert!(
            w.listening(c.port),
            "{name}: compute node {} answers",
            c.port
        );
        let cat = read_catalog(store, c, &CatalogOptions::default())
            .await
            .expect("catalog");
        assert!(cat.shard(shards[0].id).is_some(), "{name}: catalog shard");
        let cat_ports: Vec<i32> = cat.shard_nodes.iter().map(|r| r.port).collect();
        assert_eq!(
            cat_ports,
            vec![i32::from(n.port)],
            "{name}: its compute node names its own storage node only"
        );
        storage_ports.push(n.port);
        comp_ports.push(c.port);
    }
    let apart = |ports: &[u16], step: u16| ports[0].abs_diff(ports[1]) >= step;
    assert!(
        apart(&storage_ports, InstanceKind::Storage.port_step()),
        "storage port blocks do not overlap: {storage_ports:?}"
    );
    assert!(
        apart(&comp_ports, InstanceKind::Compute.port_step()),
        "compute port blocks do not overlap: {comp_ports:?}"
    );
    let machines = store.list_machines().await.expect("machines");
    let used: BTreeSet<u16> = machines
        .iter()
        .flat_map(|m| m.used_ports.iter().copied())
        .collect();
    let want: BTreeSet<u16> = storage_ports.iter().chain(&comp_ports).copied().collect();
    assert_eq!(used, want, "exactly the four ports are committed");
    assert!(
        machines.iter().all(|m| m.installing_ports.is_empty()),
        "no port left installing: {machines:?}"
    );

    // Delete both at once: nothing of either is left.
    let clusters = store.list_clusters().await.expect("clusters");
    assert_eq!(clusters.len(), 2);
    let (a, b) = tokio::join!(
        accept_delete_cluster(store, clusters[0].id),
        accept_delete_cluster(store, clusters[1].id)
    );
    let ids = [a.expect("accepted").id, b.expect("accepted").id];
    w.wake();
    let seen = watch(store, ids).await;
    eprintln!(
        "delete_cluster x2: {:.1} s, both ongoing in {} polls",
        seen.took.as_secs_f64(),
        seen.polls_together
    );
    for j in &seen.jobs {
        assert_eq!(j.status, JobStatus::Done, "{}", memo(j));
    }
    assert!(store.list_clusters().await.expect("clusters").is_empty());
    assert!(store.list_shards(None).await.expect("shards").is_empty());
    assert!(store
        .list_shard_nodes(None)
        .await
        .expect("nodes")
        .is_empty());
    assert!(store.list_comp_nodes(None).await.expect("comps").is_empty());
    for m in store.list_machines().await.expect("machines") {
        assert!(
            m.used_ports.is_empty() && m.installing_ports.is_empty(),
            "ports of machine {} released: {m:?}",
            m.id
        );
    }
    let left: Vec<_> = std::fs::read_dir(w.data.join("kunlun"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "instance dirs removed: {left:?}");
    for p in storage_ports.iter().chain(&comp_ports) {
        assert!(!w.listening(*p), "nothing listens on {p}");
    }
}
