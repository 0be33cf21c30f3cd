//! Faults during `create_cluster`, over a real private sshd and real MariaDB / PostgreSQL
//! installs: an unreachable machine, a port already taken by another process, a missing
//! server program, and the daemon (`cluster-mgr`) killed with SIGKILL mid-job and restarted.
//! Each ends with the job failed and a clear reason, and nothing left behind: no metadata row
//! or log table, no port reservation, no instance directory, no server process.
//!
//! Invariant: every process a test starts (sshd, daemon, and through them the database
//! servers) is stopped by PID when the test ends, also when it fails half-way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use kunlun_core::jobs::accept_create_cluster;
use kunlun_core::jobs::kinds::CreateMemo;
use kunlun_core::jobs::progress::StepStatus;
use kunlun_core::jobs::JobRunner;
use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::{HaMode, JobStatus, MachineType};
use kunlun_meta::{Store, StoreConfig};
use kunlun_provision::recipe::MariaDbRecipe;
use kunlun_tests::daemon::Daemon;
use kunlun_tests::world::{chmod_755, ProvisionWorld};
use kunlun_tests::{free_port_block, Sshd};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

/// Kills (by PID) every process whose command line names `dir` when dropped: the servers a
/// failed test may have left running. Returns what it found so a test can assert on it.
struct Reaper(String);

impl Reaper {
    fn pids(&self) -> Vec<i32> {
        let out = std::process::Command::new("pgrep")
            .args(["-f", "--", &self.0])
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|p| *p != std::process::id() as i32)
            .collect()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn request(name: &str, nodes: u32) -> CreateCluster {
    CreateCluster {
        name: name.into(),
        nick_name: None,
        ha_mode: if nodes > 1 {
            HaMode::Rbr
        } else {
            HaMode::NoRep
        },
        shards: 1,
        nodes,
        comps: 1,
        innodb_size_mb: Some(32),
        max_connections: Some(100),
        storage_hosts: vec![],
        computer_hosts: vec![],
    }
}

fn listening(ip: Ipv4Addr, port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::new(IpAddr::V4(ip), port),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// Nothing of any cluster is left in `store` or under `data`, and no plan port answers.
async fn assert_nothing_left(store: &Store, data: &str, plan_ports: &[(String, u16)]) {
    assert!(store.list_clusters().await.expect("clusters").is_empty());
    assert!(store.list_shards(None).await.expect("shards").is_empty());
    assert!(store
        .list_shard_nodes(None)
        .await
        .expect("nodes")
        .is_empty());
    assert!(store.list_comp_nodes(None).await.expect("comps").is_empty());
    let tables = store.tables().await.expect("tables");
    assert!(
        !tables
            .keys()
            .filter(|t| !t.ends_with("_template_table"))
            .any(|t| t.starts_with("commit_log_") || t.starts_with("ddl_ops_log_")),
        "log tables dropped: {:?}",
        tables.keys().collect::<Vec<_>>()
    );
    for m in store.list_machines().await.expect("machines") {
        assert!(
            m.used_ports.is_empty() && m.installing_ports.is_empty(),
            "ports of {} released: used {:?} installing {:?}",
            m.hostaddr,
            m.used_ports,
            m.installing_ports
        );
    }
    assert!(
        !Path::new(data).join("kunlun").exists(),
        "instance dirs removed: {:?}",
        std::fs::read_dir(Path::new(data).join("kunlun"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .ok()
    );
    for (host, port) in plan_ports {
        let ip: Ipv4Addr = host.parse().expect("ip");
        assert!(!listening(ip, *port), "nothing listens on {host}:{port}");
    }
}

/// Every (host, port) of the plan in a create memo.
fn plan_ports(memo: &CreateMemo) -> Vec<(String, u16)> {
    let Some(plan) = &memo.plan else {
        return Vec::new();
    };
    plan.shards
        .iter()
        .flat_map(|s| s.nodes.iter())
        .chain(plan.comps.iter())
        .map(|i| (i.slot.hostaddr.clone(), i.slot.port))
        .collect()
}

/// Runs one job of `runner` to its end and returns it with its memo.
async fn run_one(runner: &JobRunner, req: &CreateCluster) -> (kunlun_meta::model::Job, CreateMemo) {
    let job = accept_create_cluster(&runner.store, req)
        .await
        .expect("accepted");
    assert!(runner.run_once().await.expect("runner"), "job claimed");
    let job = runner.store.get_job(job.id).await.expect("job");
    let memo: CreateMemo =
        serde_json::from_value(job.memo.clone().expect("memo")).expect("memo shape");
    (job, memo)
}

#[tokio::test]
async fn an_unreachable_machine_fails_the_job_and_leaves_nothing() {
    let w = ProvisionWorld::builder(Ipv4Addr::new(127, 0, 0, 21))
        .build()
        .await;
    w.sshd.stop().expect("stop sshd");

    let (job, memo) = run_one(&w.runner, &request("unreach", 2)).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(memo.stage, "rolled_back", "{memo:?}");
    let err = memo.error.clone().unwrap_or_default();
    eprintln!("job {} failed: {err}", job.id);
    assert!(
        err.contains("unreachable") && err.contains(&w.ip.to_string()),
        "the reason names the machine: {err}"
    );
    let failed: Vec<_> = memo
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .collect();
    assert!(
        !failed.is_empty() && failed.iter().all(|s| s.name.starts_with("install ")),
        "the install steps failed: {:?}",
        memo.steps
    );
    assert_nothing_left(&w.store, &w.data_dir(), &plan_ports(&memo)).await;
}

#[tokio::test]
async fn a_port_taken_by_another_process_fails_the_job_and_rolls_back_the_rest() {
    let w = ProvisionWorld::builder(Ipv4Addr::new(127, 0, 0, 22))
        .build()
        .await;
    let reaper = Reaper(w.data_dir());
    // The plan is deterministic: the first storage node gets the lowest free block, which
    // starts at range start + 1.
    let taken = w.port_base(MachineType::Storage) + 1;
    let squatter = TcpListener::bind((w.ip, taken)).expect("bind the port first");

    let (job, memo) = run_one(&w.runner, &request("porttaken", 2)).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(memo.stage, "rolled_back", "{memo:?}");
    let err = memo.error.clone().unwrap_or_default();
    eprintln!("job {} failed: {err}", job.id);
    let label = format!("storage {}:{taken}", w.ip);
    assert!(err.contains(&label), "the reason names the instance: {err}");
    assert!(
        memo.steps
            .iter()
            .any(|s| s.name == format!("start {label}") && s.status == StepStatus::Failed),
        "its start step failed: {:?}",
        memo.steps
    );
    assert!(
        memo.steps
            .iter()
            .any(|s| s.name.starts_with("remove ") && s.status == StepStatus::Done),
        "the other instances were removed: {:?}",
        memo.steps
    );
    // The other process is untouched: still listening, still accepting.
    squatter.set_nonblocking(false).expect("blocking");
    let client = TcpStream::connect((w.ip, taken)).expect("the squatter still listens");
    let (_conn, _) = squatter.accept().expect("and accepts");
    drop(client);
    let others: Vec<_> = plan_ports(&memo)
        .into_iter()
        .filter(|(_, p)| *p != taken)
        .collect();
    assert!(!others.is_empty());
    assert_nothing_left(&w.store, &w.data_dir(), &others).await;
    assert!(reaper.pids().is_empty(), "no server process left");
}

#[tokio::test]
async fn a_missing_server_program_fails_the_job_clearly_and_rolls_back() {
    let recipe = MariaDbRecipe {
        mariadbd: "/nonexistent/kunlun-test/mariadbd".into(),
        ..MariaDbRecipe::default()
    };
    let w = ProvisionWorld::builder(Ipv4Addr::new(127, 0, 0, 23))
        .storage_recipe(recipe)
        .build()
        .await;
    let reaper = Reaper(w.data_dir());

    let (job, memo) = run_one(&w.runner, &request("nobinary", 1)).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(memo.stage, "rolled_back", "{memo:?}");
    let err = memo.error.clone().unwrap_or_default();
    eprintln!("job {} failed: {err}", job.id);
    assert!(
        err.contains("/nonexistent/kunlun-test/mariadbd") && err.contains("no such program"),
        "the reason names the program: {err}"
    );
    // The compute node, installed in parallel, was removed again.
    assert!(
        memo.steps
            .iter()
            .any(|s| s.name.starts_with("remove compute") && s.status == StepStatus::Done),
        "{:?}",
        memo.steps
    );
    assert_nothing_left(&w.store, &w.data_dir(), &plan_ports(&memo)).await;
    assert!(reaper.pids().is_empty(), "no server process left");
}

#[test]
fn the_daemon_killed_mid_job_rolls_the_job_back_after_a_restart() {
    let ip = Ipv4Addr::new(127, 0, 0, 24);
    let sshd = Sshd::start_on(ip).expect("sshd");
    let wd = kunlun_tests::cli::workdir();
    chmod_755(wd.path());
    let data = wd.path().join("instances");
    std::fs::create_dir(&data).expect("data dir");
    let reaper = Reaper(data.display().to_string());
    let sqlite = wd.path().join("meta.db");
    let daemon = Daemon::start(wd.path(), &sqlite).expect("daemon");
    let http = kunlun_tests::daemon::http(Duration::from_secs(10));
    for (ty, port) in [
        ("storage", free_port_block(IpAddr::V4(ip), 41)),
        ("computer", free_port_block(IpAddr::V4(ip), 41)),
    ] {
        let (st, v) = daemon.post(
            &http,
            "/v1/machines",
            &json!({
                "hostaddr": ip.to_string(), "machine_type": ty,
                "ssh_port": sshd.port(), "ssh_user": sshd.user(),
                "ssh_key_path": sshd.user_key().private.display().to_string(),
                "data_dirs": [data.display().to_string()],
                "port_range": format!("{}-{}", port, port + 40),
            }),
        );
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = daemon.post(
        &http,
        "/v1/clusters",
        &json!({"name": "killed", "ha_mode": "rbr", "shards": 2, "nodes": 2, "comps": 1,
                "innodb_size_mb": 32, "max_connections": 100}),
    );
    assert_eq!(st, 202, "{v}");
    let id = v["job_id"].as_i64().expect("job id");

    // Wait until some instance is initialised (so there is something on disk, and servers
    // are about to start), then kill the daemon without warning.
    let before = daemon.wait_job(id, Duration::from_secs(300), |j| {
        j["status"] == "failed"
            || j["status"] == "done"
            || j["memo"]["steps"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["status"] == "done"
                        && s["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("install "))
                })
            })
    });
    drop(daemon); // SIGKILL
    assert_eq!(
        before["status"], "ongoing",
        "the job must still be running when the daemon is killed: {before}"
    );

    let daemon = Daemon::start(wd.path(), &sqlite).expect("restarted daemon");
    let job = daemon.wait_job(id, Duration::from_secs(300), |j| {
        j["status"] == "failed" || j["status"] == "done"
    });
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["memo"]["stage"], "rolled_back", "{job}");
    assert!(
        job["memo"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("restarted")),
        "{job}"
    );
    let steps = job["memo"]["steps"].as_array().cloned().unwrap_or_default();
    assert!(
        steps.iter().any(|s| s["status"] == "failed"
            && s["note"]
                .as_str()
                .is_some_and(|n| n.contains("interrupted"))),
        "the steps cut by the kill are marked interrupted: {steps:?}"
    );
    let memo: CreateMemo = serde_json::from_value(job["memo"].clone()).expect("memo shape");
    let mut d = daemon;
    assert!(d.stop(), "the daemon stops on SIGTERM");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Store::open(&StoreConfig::sqlite(&sqlite))
            .await
            .expect("store");
        assert_nothing_left(&store, &data.display().to_string(), &plan_ports(&memo)).await;
    });
    assert!(reaper.pids().is_empty(), "no orphaned server process");
    drop(sshd);
}

/// `create_cluster` interrupted once every instance is installed and answers, but before its
/// rows are recorded (the runner is stopped as a crash would stop it): on restart the job
/// checks the instances and finishes forward, `done`, the cluster replicating and known to
/// its compute node, no instance reinstalled (same server processes, data kept).
///
/// The hold: the storage recipe's client is a wrapper that creates the system users and then
/// waits (bounded, until the test releases it), so the install steps of the storage nodes
/// never report done while their users already exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cut_after_every_instance_is_installed_finishes_forward_after_a_restart() {
    use kunlun_core::accounts::MANAGER_USER;
    use kunlun_core::catalog::{read_catalog, CatalogOptions};
    use kunlun_meta::model::MemberState;
    use kunlun_meta::store::repo::secrets;
    use mysql_async::prelude::Queryable;

    let root = tempfile::tempdir().expect("tempdir");
    chmod_755(root.path());
    let release = root.path().join("release");
    let wrapper = root.path().join("holding-mariadb");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n/usr/bin/mariadb \"$@\" || exit $?\ni=0\n\
             while [ ! -e '{}' ] && [ $i -lt 900 ]; do sleep 0.2; i=$((i+1)); done\n",
            release.display()
        ),
    )
    .expect("wrapper");
    chmod_755(&wrapper);
    let recipe = MariaDbRecipe {
        client: wrapper.display().to_string(),
        ..MariaDbRecipe::default()
    };
    let ip = Ipv4Addr::new(127, 0, 0, 111);
    let mut w = ProvisionWorld::builder(ip)
        .storage_recipe(recipe)
        .build()
        .await;
    let reaper = Reaper(w.data_dir());
    // Whatever happens, the held sessions end.
    struct Release(std::path::PathBuf);
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.0, b"");
        }
    }
    let _release = Release(release.clone());

    w.start_runner();
    let job = accept_create_cluster(&w.store, &request("forward", 2))
        .await
        .expect("accepted");
    w.wake();

    // Every instance installed and answering its manager login, the job still `planned`.
    let mut ready = None;
    for _ in 0..1500 {
        let j = w.store.get_job(job.id).await.expect("job");
        assert!(!j.status.is_final(), "held at planned: {:?}", j.memo);
        let memo: CreateMemo =
            serde_json::from_value(j.memo.clone().unwrap_or_default()).unwrap_or_default();
        if let (Some(plan), Some(cid)) = (memo.plan.clone(), memo.cluster_id) {
            assert_eq!(memo.stage, "planned", "{memo:?}");
            let pw = w
                .store
                .read(async |tx| secrets::get(tx, cid).await)
                .await
                .expect("secret")
                .manager_pwd;
            let comp_done = memo
                .steps
                .iter()
                .any(|s| s.name.starts_with("install compute") && s.status == StepStatus::Done);
            let mut all = comp_done;
            for n in plan.shards.iter().flat_map(|s| s.nodes.iter()) {
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname(ip.to_string())
                    .tcp_port(n.slot.port)
                    .user(Some(MANAGER_USER))
                    .pass(Some(pw.clone()));
                match mysql_async::Conn::new(opts).await {
                    Ok(c) => drop(c.disconnect().await),
                    Err(_) => all = false,
                }
            }
            if all {
                ready = Some((memo, pw));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (memo, pw) = ready.expect("every instance installed and answering");
    assert!(
        memo.steps
            .iter()
            .any(|s| s.name.starts_with("start storage") && s.status != StepStatus::Done),
        "the storage installs are held (their last step, create_users): {:?}",
        memo.steps
    );
    assert!(
        w.stop_runner(Duration::from_secs(10)).await,
        "runner stopped"
    );
    assert_eq!(
        w.store.get_job(job.id).await.expect("job").status,
        JobStatus::Ongoing,
        "cut mid-job"
    );

    // What must survive: each server process, and data written before the restart.
    let plan = memo.plan.clone().expect("plan");
    let pid_files: Vec<std::path::PathBuf> = plan
        .shards
        .iter()
        .flat_map(|s| s.nodes.iter())
        .map(|n| Path::new(&n.base_dir).join("run/mysqld.pid"))
        .chain(
            plan.comps
                .iter()
                .map(|c| Path::new(&c.base_dir).join("data/postmaster.pid")),
        )
        .collect();
    let pids_before: Vec<Option<i32>> = pid_files
        .iter()
        .map(|p| kunlun_tests::world::pid_in(p))
        .collect();
    assert!(pids_before.iter().all(Option::is_some), "{pids_before:?}");
    let first = &plan.shards[0].nodes[0];
    let mut c = w.conn(first.slot.port, &pw).await;
    c.query_drop("CREATE DATABASE kept_across; CREATE TABLE kept_across.t (id INT PRIMARY KEY); INSERT INTO kept_across.t VALUES (1)")
        .await
        .expect("write before the restart");
    drop(c);

    // The restart: a new runner (normal recipe) resumes the interrupted job.
    let runner =
        kunlun_tests::world::job_runner(&w.store, w.provisioner(), Duration::from_millis(100));
    assert_eq!(runner.recover().await.expect("recover"), 1);
    let j = w.store.get_job(job.id).await.expect("job");
    let done: CreateMemo = serde_json::from_value(j.memo.clone().expect("memo")).expect("memo");
    assert_eq!(j.status, JobStatus::Done, "{done:?}");
    assert_eq!(done.stage, "done");
    assert!(
        done.steps
            .iter()
            .any(|s| s.name == "check installed instances" && s.status == StepStatus::Done),
        "{:?}",
        done.steps
    );
    let after: Vec<Option<i32>> = pid_files
        .iter()
        .map(|p| kunlun_tests::world::pid_in(p))
        .collect();
    assert_eq!(
        after, pids_before,
        "no instance was reinstalled or restarted"
    );

    // The cluster is usable: its rows, its replica replicating, its compute node's catalog.
    let cluster = w
        .store
        .get_cluster_by_name("forward")
        .await
        .expect("cluster");
    let shards = w.store.list_shards(Some(cluster.id)).await.expect("shards");
    assert_eq!(shards.len(), 1);
    let nodes = w
        .store
        .list_shard_nodes(Some(shards[0].id))
        .await
        .expect("nodes");
    assert_eq!(nodes.len(), 2);
    let primary = nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source)
        .expect("primary");
    let replica = nodes.iter().find(|n| n.id != primary.id).expect("replica");
    assert_eq!(primary.port, first.slot.port);
    let mut p = w.conn(primary.port, &pw).await;
    p.query_drop("INSERT INTO kept_across.t VALUES (2)")
        .await
        .expect("the primary takes writes");
    drop(p);
    w.wait_for(
        replica.port,
        &pw,
        "SELECT CAST(COUNT(*) AS CHAR) FROM kept_across.t",
        "2",
    )
    .await;
    let comps = w
        .store
        .list_comp_nodes(Some(cluster.id))
        .await
        .expect("comps");
    assert_eq!(comps.len(), 1);
    let cat = read_catalog(&w.store, &comps[0], &CatalogOptions::default())
        .await
        .expect("catalog");
    assert!(
        cat.shard(shards[0].id).is_some(),
        "the compute node knows the shard"
    );
    drop(reaper);
}
