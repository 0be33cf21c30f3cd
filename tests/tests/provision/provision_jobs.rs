//! The persisted `create_cluster` job end to end against a SQLite store and a real private
//! sshd on 127.0.0.55: accepted as a job row, claimed and run by the job runner, leaving the
//! right metadata (cluster, log tables, shards, nodes with roles, `node_map_master`, compute
//! nodes, ports moved to used); a duplicate name is refused at accept; and a job found
//! `ongoing` at start-up (as after a crash) is rolled back until nothing is left; then a
//! `delete_cluster` job removes a created cluster completely (a second one meanwhile is 409).
//! Each job's memo records its steps (every instance's install and start, replication, each
//! removal), all finished.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use kunlun_core::fleet::Provisioner;
use kunlun_core::jobs::kinds::{CreateMemo, CREATE_CLUSTER};
use kunlun_core::jobs::progress::StepStatus;
use kunlun_core::jobs::{accept_create_cluster, accept_delete_cluster};
use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::{HaMode, JobStatus, MemberState, NewJob};
use kunlun_meta::store::repo::meta;
use kunlun_meta::{Store, StoreConfig};
use kunlun_tests::world::ProvisionWorld;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 55);

#[tokio::test]
async fn create_cluster_job_records_topology_and_an_interrupted_job_rolls_back() {
    let w = ProvisionWorld::builder(IP).build().await;
    let (store, runner) = (&w.store, &w.runner);
    let d = w.data_dir();

    let req = CreateCluster {
        name: "jc1".into(),
        nick_name: None,
        ha_mode: HaMode::Rbr,
        shards: 1,
        nodes: 2,
        comps: 1,
        innodb_size_mb: Some(32),
        max_connections: Some(100),
        storage_hosts: vec![],
        computer_hosts: vec![],
    };
    let job = accept_create_cluster(store, &req).await.expect("accepted");
    assert_eq!(job.status, JobStatus::NotStarted);
    assert!(
        runner.run_once().await.expect("runner"),
        "the job was claimed"
    );
    let job = store.get_job(job.id).await.expect("job");
    let memo: CreateMemo =
        serde_json::from_value(job.memo.clone().expect("memo")).expect("memo shape");
    assert_eq!(job.status, JobStatus::Done, "memo: {memo:?}");
    assert_eq!(memo.stage, "done");
    let memo_text = job.memo.as_ref().map(|m| m.to_string()).unwrap_or_default();
    assert!(!memo_text.contains("password"), "no passwords in the memo");
    // Every step is recorded, finished: plan, ports, each instance's install and start,
    // replication of the shard, the topology.
    let names: Vec<&str> = memo.steps.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "plan",
        "reserve ports",
        "install storage 127.0.0.55:",
        "start storage 127.0.0.55:",
        "install compute 127.0.0.55:",
        "start compute 127.0.0.55:",
        "replication ",
        "record topology",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "step {want:?} in {names:?}"
        );
    }
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("start storage"))
            .count(),
        2
    );
    assert!(
        memo.steps
            .iter()
            .all(|s| s.status == StepStatus::Done && s.ms.is_some()),
        "{:?}",
        memo.steps
    );

    let cluster = store.get_cluster_by_name("jc1").await.expect("cluster row");
    let detail = store.cluster_detail(cluster.id).await.expect("detail");
    assert_eq!(detail.shards.len(), 1);
    let nodes = &detail.shards[0].nodes;
    assert_eq!(nodes.len(), 2);
    assert_eq!(
        nodes
            .iter()
            .filter(|n| n.member_state == MemberState::Source)
            .count(),
        1
    );
    assert_eq!(detail.comp_nodes.len(), 1);
    let masters = store
        .read(async |tx| meta::list_node_masters(tx, Some(cluster.id)).await)
        .await
        .expect("node_map_master");
    assert_eq!(masters.len(), 1);
    let tables = store.tables().await.expect("tables");
    assert!(tables.contains_key("commit_log_jc1") && tables.contains_key("ddl_ops_log_jc1"));
    let machines = store.list_machines().await.expect("machines");
    assert_eq!(
        machines.iter().map(|m| m.used_ports.len()).sum::<usize>(),
        3,
        "ports moved to used"
    );
    assert!(machines.iter().all(|m| m.installing_ports.is_empty()));

    let dup = accept_create_cluster(store, &req)
        .await
        .expect_err("duplicate");
    assert!(matches!(dup, kunlun_core::Error::Conflict(_)), "{dup}");

    // As if the manager died mid-job: an ongoing create_cluster whose memo names this plan.
    let mut interrupted = memo.clone();
    interrupted.stage = "planned".into();
    let j = store
        .create_job(&NewJob {
            job_type: CREATE_CLUSTER.into(),
            job_info: serde_json::to_value(&req).expect("json"),
            user_name: None,
        })
        .await
        .expect("job");
    store
        .update_job(
            j.id,
            JobStatus::Ongoing,
            Some(&serde_json::to_value(&interrupted).expect("json")),
        )
        .await
        .expect("ongoing");
    assert_eq!(runner.recover().await.expect("recover"), 1);
    let j = store.get_job(j.id).await.expect("job");
    assert_eq!(j.status, JobStatus::Failed);
    let rolled: CreateMemo =
        serde_json::from_value(j.memo.clone().expect("memo")).expect("memo shape");
    assert_eq!(rolled.stage, "rolled_back");
    assert_eq!(
        rolled
            .steps
            .iter()
            .filter(|s| s.name.starts_with("remove ") && s.status == StepStatus::Done)
            .count(),
        4,
        "three instances and the rows removed: {:?}",
        rolled.steps
    );
    assert!(store.list_clusters().await.expect("clusters").is_empty());
    assert!(store
        .list_shard_nodes(None)
        .await
        .expect("nodes")
        .is_empty());
    assert!(store.list_comp_nodes(None).await.expect("comps").is_empty());
    let tables = store.tables().await.expect("tables");
    assert!(!tables.contains_key("commit_log_jc1"));
    let machines = store.list_machines().await.expect("machines");
    assert!(machines
        .iter()
        .all(|m| m.used_ports.is_empty() && m.installing_ports.is_empty()));
    assert!(
        !Path::new(&d).join("kunlun").exists(),
        "instance dirs removed"
    );

    // delete_cluster: a second request while the first is pending is refused; the job
    // removes instances, rows, tables and ports.
    let req2 = CreateCluster {
        name: "jc2".into(),
        ..req.clone()
    };
    let job = accept_create_cluster(store, &req2).await.expect("accepted");
    assert!(runner.run_once().await.expect("runner"));
    let job = store.get_job(job.id).await.expect("job");
    assert_eq!(job.status, JobStatus::Done, "{:?}", job.memo);
    let c2 = store.get_cluster_by_name("jc2").await.expect("jc2");
    let del = accept_delete_cluster(store, c2.id)
        .await
        .expect("delete accepted");
    let again = accept_delete_cluster(store, c2.id).await.expect_err("busy");
    assert!(matches!(again, kunlun_core::Error::Conflict(_)), "{again}");
    assert!(matches!(
        accept_delete_cluster(store, 9999).await,
        Err(kunlun_core::Error::NotFound { .. })
    ));
    assert!(runner.run_once().await.expect("runner"));
    let del = store.get_job(del.id).await.expect("job");
    assert_eq!(del.status, JobStatus::Done, "{:?}", del.memo);
    let del_steps = del
        .memo
        .as_ref()
        .and_then(|m| m.get("steps"))
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        del_steps.len(),
        5,
        "read topology, 3 removals, rows: {del_steps:?}"
    );
    assert!(
        del_steps.iter().all(|s| s["status"] == "done"),
        "{del_steps:?}"
    );
    assert!(store.list_clusters().await.expect("clusters").is_empty());
    assert!(store
        .list_shard_nodes(None)
        .await
        .expect("nodes")
        .is_empty());
    assert!(store.list_comp_nodes(None).await.expect("comps").is_empty());
    assert!(!store
        .tables()
        .await
        .expect("tables")
        .contains_key("commit_log_jc2"));
    let machines = store.list_machines().await.expect("machines");
    assert!(machines
        .iter()
        .all(|m| m.used_ports.is_empty() && m.installing_ports.is_empty()));
    assert!(
        !Path::new(&d).join("kunlun").exists(),
        "instance dirs removed"
    );
}

#[tokio::test]
async fn manager_accepts_jobs_and_its_runner_finishes_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&StoreConfig::sqlite(dir.path().join("meta.db")))
        .await
        .expect("store");
    let mgr = kunlun_core::ClusterManager::new(kunlun_core::CoreConfig::default(), store.clone());
    let sshd_less = Provisioner::with_system_servers(dir.path().join("known_hosts"));
    let term = kunlun_core::Term::standalone(&mgr);
    term.start_job_runner(sshd_less, Duration::from_millis(50));
    let mut req = CreateCluster {
        name: "nomachines".into(),
        nick_name: None,
        ha_mode: HaMode::NoRep,
        shards: 0,
        nodes: 1,
        comps: 1,
        innodb_size_mb: None,
        max_connections: None,
        storage_hosts: vec![],
        computer_hosts: vec![],
    };
    let err = mgr.create_cluster(&req).await.expect_err("0 shards");
    assert!(matches!(err, kunlun_core::Error::Invalid(_)), "{err}");
    req.shards = 1;
    let accepted = mgr.create_cluster(&req).await.expect("accepted at once");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let job = loop {
        let j = store.get_job(accepted.job_id).await.expect("job");
        if j.status.is_final() {
            break j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runner never finished the job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job.status, JobStatus::Failed);
    let memo = job.memo.map(|m| m.to_string()).unwrap_or_default();
    assert!(
        memo.contains("no capacity"),
        "the reason is recorded: {memo}"
    );
    assert!(matches!(
        mgr.delete_cluster(42).await,
        Err(kunlun_core::Error::NotFound { .. })
    ));
    term.shutdown(Duration::from_secs(5)).await;
    mgr.shutdown(Duration::from_secs(5)).await;
}
