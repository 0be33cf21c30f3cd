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
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use kunlun_core::catalog::{read_catalog, CatalogOptions};
use kunlun_core::fleet::Provisioner;
use kunlun_core::jobs::kinds::CreateMemo;
use kunlun_core::jobs::JobRunner;
use kunlun_core::jobs::{accept_create_cluster, accept_delete_cluster};
use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::{
    HaMode, Job, JobStatus, MachineType, MemberState, NewMachine, NodeStatus, SshAccess,
};
use kunlun_meta::{Store, StoreConfig};
use kunlun_provision::placement::InstanceKind;
use kunlun_provision::recipe::{MariaDbRecipe, PostgresRecipe};
use kunlun_provision::{HostKeyPolicy, SshExecutor};
use kunlun_tests::{free_port_block, Sshd};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 31);
/// Longest a pair of jobs may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(180);

fn chmod_755(p: &Path) {
    std::fs::set_permissions(
        p,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod");
}

fn new_machine(sshd: &Sshd, ty: MachineType, dir: &str, base: u16) -> NewMachine {
    NewMachine {
        hostaddr: IP.to_string(),
        machine_type: ty,
        rack_id: None,
        data_dirs: vec![dir.to_string()],
        port_range: format!("{}-{}", base, base + 40),
        total_mem_mb: None,
        total_cpu_cores: None,
        ssh: SshAccess {
            port: sshd.port(),
            user: sshd.user().to_string(),
            key_path: sshd.user_key().private.display().to_string(),
        },
    }
}

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

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::new(IpAddr::V4(IP), port),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// Kills (by the pid in their pid files) every server still running under `dir`: only used
/// when the test failed half-way, so no instance outlives it.
fn kill_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("kunlun")) else {
        return;
    };
    for e in entries.flatten() {
        for pf in [
            e.path().join("run/mysqld.pid"),
            e.path().join("data/postmaster.pid"),
        ] {
            let pid = std::fs::read_to_string(&pf)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
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

fn memo_text(j: &Job) -> String {
    j.memo.as_ref().map(|m| m.to_string()).unwrap_or_default()
}

struct World {
    sshd: Sshd,
    store: Store,
    runner: JobRunner,
    data: PathBuf,
    _dir: tempfile::TempDir,
    /// The MySQL-backend database, dropped at the end.
    mysql_db: Option<String>,
}

/// The MariaDB of `KUNLUN_TEST_MYSQL_URL`: (host, port, user, password).
fn mysql_server() -> (String, u16, String, String) {
    let url = std::env::var("KUNLUN_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_string());
    let o = mysql_async::Opts::from_url(&url).expect("KUNLUN_TEST_MYSQL_URL is a mysql:// URL");
    (
        o.ip_or_hostname().to_string(),
        o.tcp_port(),
        o.user().unwrap_or("root").to_string(),
        o.pass().unwrap_or("").to_string(),
    )
}

async fn drop_mysql_db(db: &str) {
    use mysql_async::prelude::Queryable;
    let (host, port, user, pass) = mysql_server();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(user))
        .pass((!pass.is_empty()).then_some(pass));
    let mut c = mysql_async::Conn::new(opts).await.expect("MariaDB");
    c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
        .await
        .expect("drop the test database");
    let _ = c.disconnect().await;
}

async fn world(mysql: bool) -> World {
    let sshd = Sshd::start_on(IP).expect("sshd on 127.0.0.31");
    let dir = tempfile::tempdir().expect("tempdir");
    chmod_755(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    chmod_755(&data);
    let d = data.display().to_string();
    let (cfg, mysql_db) = if mysql {
        let (host, port, user, pass) = mysql_server();
        let db = format!("kl_test_conc_{:016x}", rand::random::<u64>());
        let cfg = StoreConfig::mysql(vec![format!("{host}:{port}")], &user, &pass, &db);
        (cfg, Some(db))
    } else {
        (StoreConfig::sqlite(dir.path().join("meta.db")), None)
    };
    let store = Store::open(&cfg).await.expect(
        "store (the MySQL backend needs the MariaDB of KUNLUN_TEST_MYSQL_URL; scripts/test.sh starts one)",
    );
    // The two variants run at once on one address: their port ranges must not meet, nor hold
    // a port the harness gives a server (the other variant's sshd once sat inside a fixed range).
    let sn_base = free_port_block(IpAddr::V4(IP), 41);
    let cn_base = free_port_block(IpAddr::V4(IP), 41);
    store
        .insert_machine(&new_machine(&sshd, MachineType::Storage, &d, sn_base))
        .await
        .expect("storage machine");
    store
        .insert_machine(&new_machine(&sshd, MachineType::Computer, &d, cn_base))
        .await
        .expect("compute machine");
    let runner = JobRunner {
        store: store.clone(),
        provisioner: Provisioner {
            ssh: SshExecutor::default(),
            storage: Arc::new(MariaDbRecipe::default()),
            compute: Arc::new(PostgresRecipe::default()),
            known_hosts: sshd.known_hosts(),
            host_key_policy: HostKeyPolicy::Strict,
            keys_dir: None,
        },
        poll_interval: Duration::from_millis(200),
    };
    World {
        sshd,
        store,
        runner,
        data,
        _dir: dir,
        mysql_db,
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
    let w = world(mysql).await;
    let cancel = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let runner = tokio::spawn(
        w.runner
            .clone()
            .run_forever_woken(cancel.clone(), wake.clone()),
    );
    let r = std::panic::AssertUnwindSafe(scenario(&w, &wake))
        .catch_unwind()
        .await;
    cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), runner).await;
    if r.is_err() {
        kill_leftovers(&w.data);
    }
    drop(w.sshd);
    if let Some(db) = &w.mysql_db {
        drop_mysql_db(db).await;
    }
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
    stopped
        .expect("the runner stops on cancel")
        .expect("runner task");
}

async fn scenario(w: &World, wake: &Notify) {
    let store = &w.store;
    let (one, two) = (request("cc_one"), request("cc_two"));
    let (a, b) = tokio::join!(
        accept_create_cluster(store, &one),
        accept_create_cluster(store, &two)
    );
    let ids = [a.expect("accepted").id, b.expect("accepted").id];
    wake.notify_one();
    let seen = watch(store, ids).await;
    eprintln!(
        "create_cluster x2: {:.1} s, both ongoing in {} polls",
        seen.took.as_secs_f64(),
        seen.polls_together
    );
    for j in &seen.jobs {
        assert_eq!(j.status, JobStatus::Done, "{}", memo_text(j));
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
        assert!(listening(n.port), "{name}: storage node {} answers", n.port);
        let comps = store.list_comp_nodes(Some(cid)).await.expect("comps");
        assert_eq!(comps.len(), 1, "{name}: one compute node");
        let c = &comps[0];
        assert_eq!(c.port, plan.comps[0].slot.port, "{name}: as planned");
        assert!(listening(c.port), "{name}: compute node {} answers", c.port);
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
    wake.notify_one();
    let seen = watch(store, ids).await;
    eprintln!(
        "delete_cluster x2: {:.1} s, both ongoing in {} polls",
        seen.took.as_secs_f64(),
        seen.polls_together
    );
    for j in &seen.jobs {
        assert_eq!(j.status, JobStatus::Done, "{}", memo_text(j));
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
        assert!(!listening(*p), "nothing listens on {p}");
    }
}
