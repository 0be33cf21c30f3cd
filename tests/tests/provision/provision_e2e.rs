//! Provisioning end to end through the real daemon, its HTTP API and `kunlunctl`, over two
//! loopback "machines" (private sshds on 127.0.0.2 and 127.0.0.3, each registered as a
//! storage and a computer machine): one `rbr` cluster of 2 shards x 3 nodes + 2 compute nodes
//! is created and checked (replication, data flow, semi-sync, compute-node catalog, metadata),
//! scaled (compute node, replica and shard added and removed) and deleted, after which no
//! process, port, directory, port reservation, row or per-cluster table is left. Bad input is
//! refused with the right status and costs nothing.
//!
//! Invariant: exactly one such cluster per test run (it is heavy: up to 9 MariaDB and 3
//! PostgreSQL servers); every server is removed by the daemon's own jobs, and the test checks
//! that by the servers' PIDs and ports.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kunlun_core::catalog::{desired_for_cluster, read_catalog, CatalogOptions};
use kunlun_meta::model::{CompNode, MemberState, ShardNode};
use kunlun_meta::store::repo::meta;
use kunlun_meta::store::{Store, StoreConfig};
use kunlun_tests::cli::{ctl, workdir};
use kunlun_tests::daemon::Daemon;
use kunlun_tests::{free_port_block, Sshd};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

const IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];
const NAME: &str = "e2e";
/// How long any one job may take here (a slow shared machine); not asserted on.
const JOB_LIMIT: Duration = Duration::from_secs(900);

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

fn send(req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = req.send().expect("request");
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    send(http().post(url).json(body))
}

fn delete(url: &str) -> (u16, Value) {
    send(http().delete(url))
}

fn get(url: &str) -> Value {
    let (st, v) = send(http().get(url));
    assert_eq!(st, 200, "GET {url}: {v}");
    v
}

/// Polls a job until it ends; returns it.
fn wait_job(base: &str, id: i64) -> Value {
    let start = Instant::now();
    loop {
        let j = get(&format!("{base}/v1/jobs/{id}"));
        if matches!(j["status"].as_str(), Some("done" | "failed")) {
            return j;
        }
        assert!(start.elapsed() < JOB_LIMIT, "job {id} did not end: {j}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// POSTs a job request that must be accepted (202) and returns the finished job.
fn run_job(base: &str, path: &str, body: &Value) -> Value {
    let (st, v) = post(&format!("{base}{path}"), body);
    assert_eq!(st, 202, "POST {path}: {v}");
    wait_job(base, v["job_id"].as_i64().expect("job_id"))
}

fn is_listening(host: &str, port: u16) -> bool {
    let addr = SocketAddr::new(host.parse().expect("ip"), port);
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The server runs (a zombie does not).
fn pid_alive(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(kunlun_tests::pid_running)
}

/// One instance as the test tracks it: where, its directory, its server's PID.
#[derive(Debug, Clone)]
struct Instance {
    host: String,
    port: u16,
    dir: PathBuf,
    pid: i32,
}

/// The test's view of the two loopback machines.
struct Machines {
    data: Vec<PathBuf>,
}

impl Machines {
    fn data_dir(&self, host: &str) -> &Path {
        let i = IPS
            .iter()
            .position(|ip| ip.to_string() == host)
            .expect("a test machine");
        &self.data[i]
    }

    /// The instance at host:port, by its directory and pid file (the recipes' layout).
    fn instance(&self, storage: bool, host: &str, port: u16) -> Instance {
        let kind = if storage { "storage" } else { "compute" };
        let dir = self
            .data_dir(host)
            .join("kunlun")
            .join(format!("{kind}_{port}"));
        let pid_file = if storage {
            dir.join("run/mysqld.pid")
        } else {
            dir.join("data/postmaster.pid")
        };
        let text = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let pid = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {}", pid_file.display()));
        assert!(pid_alive(pid), "{kind} {host}:{port} runs (pid {pid})");
        Instance {
            host: host.into(),
            port,
            dir,
            pid,
        }
    }
}

/// Asserts an instance is gone: no process, nothing listening, no directory.
fn assert_gone(i: &Instance) {
    assert!(!pid_alive(i.pid), "process {} of {i:?} is gone", i.pid);
    assert!(!is_listening(&i.host, i.port), "{i:?} no longer listens");
    assert!(!i.dir.exists(), "{} removed", i.dir.display());
}

async fn mysql(n: &ShardNode) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(n.hostaddr.clone())
        .tcp_port(n.port)
        .user(Some(n.user_name.clone()))
        .pass(Some(n.passwd.clone()))
        .wait_timeout(Some(60));
    tokio::time::timeout(Duration::from_secs(20), mysql_async::Conn::new(opts))
        .await
        .expect("connect deadline")
        .unwrap_or_else(|e| panic!("connect {}:{}: {e}", n.hostaddr, n.port))
}

async fn one_string(c: &mut mysql_async::Conn, sql: &str, col: &str) -> Option<String> {
    let rows: Vec<mysql_async::Row> = c.query(sql).await.expect(sql);
    rows.first()
        .and_then(|r| r.get_opt::<String, _>(col))
        .and_then(|v| v.ok())
}

/// Deadline of the polls below (a loaded host); not a timed assertion.
const POLL_LIMIT: Duration = Duration::from_secs(120);

/// Every replica of every shard follows its primary, the row written on the primary reaches
/// it, and semi-sync is on at the primary.
async fn check_replication(store: &Store, cluster_id: i64, marker: &str) {
    for s in store.list_shards(Some(cluster_id)).await.expect("shards") {
        let nodes = store.list_shard_nodes(Some(s.id)).await.expect("nodes");
        let primaries: Vec<_> = nodes
            .iter()
            .filter(|n| n.member_state == MemberState::Source)
            .collect();
        assert_eq!(primaries.len(), 1, "one primary in {}", s.name);
        let p = primaries[0];
        let mut pc = mysql(p).await;
        pc.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS e2e; CREATE TABLE IF NOT EXISTS e2e.t (k varchar(40) primary key); \
             INSERT IGNORE INTO e2e.t VALUES ('{marker}')"
        ))
        .await
        .expect("write on the primary");
        if nodes.len() > 1 {
            let start = Instant::now();
            loop {
                let rows: Vec<(String, String)> = pc
                    .query("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")
                    .await
                    .expect("status");
                if rows.first().is_some_and(|r| r.1 == "ON") {
                    break;
                }
                assert!(
                    start.elapsed() < POLL_LIMIT,
                    "semi-sync on at the primary of {}",
                    s.name
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        pc.disconnect().await.ok();
        for r in nodes
            .iter()
            .filter(|n| n.member_state == MemberState::Replica)
        {
            let mut rc = mysql(r).await;
            let rows: Vec<mysql_async::Row> = rc.query("SHOW SLAVE STATUS").await.expect("status");
            let row = rows.first().unwrap_or_else(|| panic!("{r:?} is a replica"));
            let host: String = row.get("Master_Host").expect("Master_Host");
            let port: u16 = row.get("Master_Port").expect("Master_Port");
            assert_eq!(
                (host.as_str(), port),
                (p.hostaddr.as_str(), p.port),
                "{r:?} follows its primary"
            );
            let using_gtid: String = row.get("Using_Gtid").expect("Using_Gtid");
            assert_eq!(using_gtid, "Slave_Pos", "GTID positioning");
            let q = format!("SELECT k FROM e2e.t WHERE k = '{marker}'");
            let start = Instant::now();
            loop {
                let st = one_string(&mut rc, "SHOW SLAVE STATUS", "Slave_SQL_Running").await;
                let got: Vec<String> = rc.query(&q).await.unwrap_or_default();
                if st.as_deref() == Some("Yes") && !got.is_empty() {
                    break;
                }
                assert!(
                    start.elapsed() < POLL_LIMIT,
                    "row {marker} reaches {}:{} (SQL thread {st:?})",
                    r.hostaddr,
                    r.port
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            rc.disconnect().await.ok();
        }
    }
}

/// Every in-service compute node of the cluster holds exactly the rows the metadata implies.
async fn check_catalog(store: &Store, cluster_id: i64, shards: usize) {
    let (comps, desired) = desired_for_cluster(store, cluster_id)
        .await
        .expect("desired");
    assert_eq!(desired.shards.len(), shards);
    for c in &comps {
        let got = read_catalog(store, c, &CatalogOptions::default())
            .await
            .unwrap_or_else(|e| panic!("read catalog of {}: {e}", c.name));
        assert_eq!(got, desired.for_comp(c.id), "catalog of {}", c.name);
        assert_eq!(got.cluster_meta.len(), 1);
        assert_eq!(got.cluster_meta[0].comp_node_id, c.id);
    }
}

#[test]
fn cluster_lifecycle_and_bad_input_over_two_machines() {
    let sshds: Vec<Sshd> = IPS
        .iter()
        .map(|ip| Sshd::start_on(*ip).unwrap_or_else(|e| panic!("sshd on {ip}: {e}")))
        .collect();
    let wd = workdir();
    let mode755 = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(wd.path(), mode755.clone()).expect("chmod");
    let machines = Machines {
        data: IPS
            .iter()
            .map(|ip| {
                let d = wd.path().join(format!("data-{ip}"));
                std::fs::create_dir(&d).expect("data dir");
                std::fs::set_permissions(&d, mode755.clone()).expect("chmod");
                d
            })
            .collect(),
    };
    let sqlite = wd.path().join("meta.db");
    let mut daemon = Daemon::start(wd.path(), &sqlite).expect("daemon");
    let base = daemon.url();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = rt
        .block_on(Store::open(&StoreConfig::sqlite(&sqlite)))
        .expect("store");

    let mut machine_ids = Vec::new();
    for (ip, sshd) in IPS.iter().zip(&sshds) {
        for ty in ["storage", "computer"] {
            let port = free_port_block(IpAddr::V4(*ip), 81);
            let (st, v) = post(
                &format!("{base}/v1/machines"),
                &json!({
                    "hostaddr": ip.to_string(), "machine_type": ty,
                    "ssh_port": sshd.port(), "ssh_user": sshd.user(),
                    "ssh_key_path": sshd.user_key().private.display().to_string(),
                    "data_dirs": [machines.data_dir(&ip.to_string()).display().to_string()],
                    "port_range": format!("{}-{}", port, port + 80),
                }),
            );
            assert_eq!(st, 201, "{v}\n{}", daemon.log_tail());
            machine_ids.push(v["id"].as_i64().expect("machine id"));
        }
    }
    let nothing_reserved = |when: &str| {
        for id in &machine_ids {
            let m = get(&format!("{base}/v1/machines/{id}"));
            for k in ["used_ports", "installing_ports"] {
                assert!(
                    m[k].as_array().is_none_or(|a| a.is_empty()),
                    "{when}: machine {id} {k}: {m}"
                );
            }
        }
    };

    // ---- Bad input before any cluster exists: refused, or a job that fails leaving nothing.
    let req = |shards: u32, nodes: u32, extra: Value| {
        let mut v = json!({"name": NAME, "ha_mode": "rbr", "shards": shards, "nodes": nodes,
                           "comps": 2, "innodb_size_mb": 32, "max_connections": 100});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    };
    let (st, v) = post(&format!("{base}/v1/clusters"), &req(0, 3, json!({})));
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("invalid_field")),
        "0 shards: {v}"
    );
    let (st, v) = send(
        http()
            .post(format!("{base}/v1/clusters"))
            .header("content-type", "application/json")
            .body("{\"name\": \"x\", \"shards\": "),
    );
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("malformed_json")),
        "{v}"
    );
    let (st, v) = post(
        &format!("{base}/v1/clusters"),
        &req(1, 1, json!({"name": "x'; DROP TABLE db_clusters; --"})),
    );
    assert_eq!(st, 400, "a name with quotes: {v}");
    for (what, body, needle) in [
        (
            "more nodes than the machines hold",
            req(1, 64, json!({})),
            "capacity",
        ),
        (
            "an unknown machine",
            req(1, 1, json!({"storage_hosts": ["127.0.0.9"]})),
            "127.0.0.9",
        ),
    ] {
        let (st, v) = post(&format!("{base}/v1/clusters"), &body);
        if st == 202 {
            let j = wait_job(&base, v["job_id"].as_i64().expect("job id"));
            assert_eq!(j["status"], "failed", "{what}: {j}");
            assert!(
                j["memo"]["error"].as_str().unwrap_or("").contains(needle),
                "{what}: {j}"
            );
        } else {
            assert!(st == 400 || st == 409, "{what}: {st} {v}");
        }
        assert_eq!(
            get(&format!("{base}/v1/clusters")),
            json!([]),
            "{what}: no cluster"
        );
        nothing_reserved(what);
    }
    for (path, what) in [
        ("/v1/clusters/999999/comp_nodes", "unknown cluster"),
        ("/v1/clusters/999999/shards", "unknown cluster"),
    ] {
        let body = if path.ends_with("comp_nodes") {
            json!({"comps": 1})
        } else {
            json!({"shards": 1, "nodes": 1})
        };
        let (st, v) = post(&format!("{base}{path}"), &body);
        assert_eq!(
            (st, v["code"].as_str()),
            (404, Some("not_found")),
            "{what}: {v}"
        );
    }

    // ---- create_cluster 2 x 3 + 2 over both machines.
    let j = run_job(&base, "/v1/clusters", &req(2, 3, json!({})));
    assert_eq!(j["status"], "done", "{j}\n{}", daemon.log_tail());
    let id = j["memo"]["cluster_id"].as_i64().expect("cluster id");
    let detail = get(&format!("{base}/v1/clusters/{id}"));
    assert!(
        !detail.to_string().contains("passwd"),
        "no password in the API"
    );
    let (st, v) = post(&format!("{base}/v1/clusters"), &req(1, 1, json!({})));
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("conflict")),
        "duplicate name: {v}"
    );

    let (shards, comps, tables, masters) = rt.block_on(async {
        let shards = store.list_shards(Some(id)).await.expect("shards");
        let comps = store.list_comp_nodes(Some(id)).await.expect("comps");
        let tables = store.tables().await.expect("tables");
        let masters = store
            .read(async |tx| meta::list_node_masters(tx, Some(id)).await)
            .await
            .expect("node_map_master");
        (shards, comps, tables, masters)
    });
    assert_eq!(shards.len(), 2);
    assert_eq!(comps.len(), 2);
    for t in [format!("commit_log_{NAME}"), format!("ddl_ops_log_{NAME}")] {
        assert!(tables.contains_key(&t), "table {t} exists");
    }
    let mut all_nodes: Vec<ShardNode> = Vec::new();
    for s in &shards {
        let nodes = rt
            .block_on(store.list_shard_nodes(Some(s.id)))
            .expect("nodes");
        assert_eq!(nodes.len(), 3, "{}", s.name);
        let p = nodes
            .iter()
            .find(|n| n.member_state == MemberState::Source)
            .expect("a primary");
        let hosts: BTreeSet<_> = nodes.iter().map(|n| n.hostaddr.as_str()).collect();
        assert_eq!(hosts.len(), 2, "{} spans both machines", s.name);
        for r in nodes.iter().filter(|n| n.id != p.id) {
            let key = format!("{}_{}", r.hostaddr, r.port);
            let m = masters
                .iter()
                .find(|m| m.node_host == key)
                .unwrap_or_else(|| panic!("node_map_master row of {key}"));
            assert_eq!(m.master_host, format!("{}_{}", p.hostaddr, p.port));
        }
        all_nodes.extend(nodes);
    }
    assert_eq!(masters.len(), 4, "one node_map_master row per replica");
    let comp_hosts: BTreeSet<_> = comps.iter().map(|c| c.hostaddr.as_str()).collect();
    assert_eq!(
        comp_hosts.len(),
        2,
        "compute nodes spread over both machines"
    );
    let mut instances: Vec<Instance> = all_nodes
        .iter()
        .map(|n| machines.instance(true, &n.hostaddr, n.port))
        .chain(
            comps
                .iter()
                .map(|c| machines.instance(false, &c.hostaddr, c.port)),
        )
        .collect();
    rt.block_on(async {
        check_replication(&store, id, "after_create").await;
        check_catalog(&store, id, 2).await;
    });

    // ---- Refusals against the live cluster.
    let primary = all_nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source)
        .expect("primary");
    let (st, v) = delete(&format!(
        "{base}/v1/clusters/{id}/shards/{}/nodes/{}",
        primary.shard_id, primary.id
    ));
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("conflict")),
        "primary: {v}"
    );
    for path in [
        format!("/v1/clusters/{id}/shards/999999"),
        format!("/v1/clusters/{id}/comp_nodes/999999"),
        format!("/v1/clusters/{id}/shards/{}/nodes/999999", primary.shard_id),
    ] {
        let (st, v) = delete(&format!("{base}{path}"));
        assert_eq!(
            (st, v["code"].as_str()),
            (404, Some("not_found")),
            "{path}: {v}"
        );
    }

    // ---- add_comps through the CLI; a second job meanwhile is 409.
    let comp_cmd = std::process::Command::new(kunlun_tests::cli::bin("kunlunctl"))
        .args([
            "--server",
            &base,
            "comp",
            "add",
            NAME,
            "--comps",
            "1",
            "--host",
            "127.0.0.3",
            "--wait",
        ])
        .env_remove("KUNLUNCTL_SERVER")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kunlunctl comp add");
    // The job row exists once the CLI got its 202; then the cluster is busy.
    let start = Instant::now();
    loop {
        let jobs = get(&format!("{base}/v1/jobs?job_type=add_comps"));
        if jobs.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "add_comps accepted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, v) = delete(&format!(
        "{base}/v1/clusters/{id}/comp_nodes/{}",
        comps[0].id
    ));
    let out = comp_cmd.wait_with_output().expect("kunlunctl");
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("conflict")),
        "a job while add_comps runs: {v}"
    );
    assert!(
        out.status.success(),
        "comp add: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log_tail()
    );
    let comps_now = rt.block_on(store.list_comp_nodes(Some(id))).expect("comps");
    assert_eq!(comps_now.len(), 3);
    let new_comp: &CompNode = comps_now
        .iter()
        .find(|c| !comps.iter().any(|o| o.id == c.id))
        .expect("the new compute node");
    assert_eq!(new_comp.hostaddr, "127.0.0.3");
    assert_eq!(
        new_comp.passwd, comps[0].passwd,
        "the cluster's owner password"
    );
    instances.push(machines.instance(false, &new_comp.hostaddr, new_comp.port));
    rt.block_on(check_catalog(&store, id, 2));

    // ---- delete_comp: the first compute node goes away completely.
    let victim = machines.instance(false, &comps[0].hostaddr, comps[0].port);
    let out = ctl(
        &base,
        &[
            "comp",
            "rm",
            &id.to_string(),
            &comps[0].id.to_string(),
            "--wait",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\n{}", daemon.log_tail());
    assert_gone(&victim);
    instances.retain(|i| i.dir != victim.dir);
    let comps_now = rt.block_on(store.list_comp_nodes(Some(id))).expect("comps");
    assert!(comps_now.iter().all(|c| c.id != comps[0].id), "row removed");
    let m = rt.block_on(store.list_machines()).expect("machines");
    let cm = m
        .iter()
        .find(|m| {
            m.hostaddr == victim.host && m.machine_type == kunlun_meta::model::MachineType::Computer
        })
        .expect("its machine");
    assert!(
        !cm.used_ports.contains(&victim.port),
        "port {} released: {cm:?}",
        victim.port
    );

    // ---- add_comps that cannot be placed fails cleanly: no row, no reservation added.
    let ports_before: Vec<(Value, Value)> = machine_ids
        .iter()
        .map(|mid| {
            let m = get(&format!("{base}/v1/machines/{mid}"));
            (m["used_ports"].clone(), m["installing_ports"].clone())
        })
        .collect();
    for (body, needle) in [
        (
            json!({"comps": 1, "computer_hosts": ["127.0.0.9"]}),
            "127.0.0.9",
        ),
        (
            json!({"comps": 32, "computer_hosts": ["127.0.0.2"]}),
            "capacity",
        ),
    ] {
        let j = run_job(&base, &format!("/v1/clusters/{id}/comp_nodes"), &body);
        assert_eq!(j["status"], "failed", "{body}: {j}");
        assert!(
            j["memo"]["error"].as_str().unwrap_or("").contains(needle),
            "{body}: {j}"
        );
        let n = rt
            .block_on(store.list_comp_nodes(Some(id)))
            .expect("comps")
            .len();
        assert_eq!(n, 2, "{body}: no compute node row added");
        let ports_after: Vec<(Value, Value)> = machine_ids
            .iter()
            .map(|mid| {
                let m = get(&format!("{base}/v1/machines/{mid}"));
                (m["used_ports"].clone(), m["installing_ports"].clone())
            })
            .collect();
        assert_eq!(ports_after, ports_before, "{body}: no port reserved");
    }

    // ---- add_nodes / delete_node: a new replica of shard 1 is seeded and follows.
    let shard1 = &shards[0];
    let out = ctl(
        &base,
        &[
            "node",
            "add",
            &id.to_string(),
            &shard1.id.to_string(),
            "--nodes",
            "1",
            "--wait",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\n{}", daemon.log_tail());
    let nodes = rt
        .block_on(store.list_shard_nodes(Some(shard1.id)))
        .expect("nodes");
    assert_eq!(nodes.len(), 4);
    let added = nodes
        .iter()
        .find(|n| !all_nodes.iter().any(|o| o.id == n.id))
        .expect("the new replica")
        .clone();
    assert_eq!(added.member_state, MemberState::Replica);
    let added_inst = machines.instance(true, &added.hostaddr, added.port);
    rt.block_on(async {
        // The row written before it existed came with the seed; a new one follows by GTID.
        let mut c = mysql(&added).await;
        let got: Vec<String> = c
            .query("SELECT k FROM e2e.t WHERE k = 'after_create'")
            .await
            .expect("seeded data");
        assert_eq!(got, vec!["after_create".to_string()], "seeded");
        c.disconnect().await.ok();
        check_replication(&store, id, "after_add_node").await;
        check_catalog(&store, id, 2).await;
    });
    let out = ctl(
        &base,
        &[
            "node",
            "rm",
            &id.to_string(),
            &shard1.id.to_string(),
            &added.id.to_string(),
            "--wait",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\n{}", daemon.log_tail());
    assert_gone(&added_inst);
    let nodes = rt
        .block_on(store.list_shard_nodes(Some(shard1.id)))
        .expect("nodes");
    assert_eq!(nodes.len(), 3);
    rt.block_on(check_catalog(&store, id, 2));

    // ---- add_shards / delete_shard.
    let out = ctl(
        &base,
        &[
            "shard", "add", NAME, "--shards", "1", "--nodes", "2", "--wait",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\n{}", daemon.log_tail());
    let shards_now = rt.block_on(store.list_shards(Some(id))).expect("shards");
    assert_eq!(shards_now.len(), 3);
    let new_shard = shards_now
        .iter()
        .find(|s| !shards.iter().any(|o| o.id == s.id))
        .expect("the new shard")
        .clone();
    let new_nodes = rt
        .block_on(store.list_shard_nodes(Some(new_shard.id)))
        .expect("nodes");
    assert_eq!(new_nodes.len(), 2);
    let new_insts: Vec<Instance> = new_nodes
        .iter()
        .map(|n| machines.instance(true, &n.hostaddr, n.port))
        .collect();
    rt.block_on(async {
        check_replication(&store, id, "after_add_shard").await;
        check_catalog(&store, id, 3).await;
    });
    let out = ctl(
        &base,
        &[
            "shard",
            "rm",
            &id.to_string(),
            &new_shard.id.to_string(),
            "--wait",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\n{}", daemon.log_tail());
    new_insts.iter().for_each(assert_gone);
    rt.block_on(check_catalog(&store, id, 2));

    // ---- delete_cluster; a job for the cluster meanwhile is 409; then nothing is left.
    let (st, v) = delete(&format!("{base}/v1/clusters/{id}"));
    assert_eq!(st, 202, "{v}");
    let del_job = v["job_id"].as_i64().expect("job id");
    let (st, v) = post(
        &format!("{base}/v1/clusters/{id}/comp_nodes"),
        &json!({"comps": 1}),
    );
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("conflict")),
        "cluster being deleted: {v}"
    );
    let j = wait_job(&base, del_job);
    assert_eq!(j["status"], "done", "{j}\n{}", daemon.log_tail());
    instances.iter().for_each(assert_gone);
    for d in &machines.data {
        let left: Vec<_> = std::fs::read_dir(d.join("kunlun"))
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "instance dirs left in {}: {left:?}",
            d.display()
        );
    }
    nothing_reserved("after delete_cluster");
    assert_eq!(get(&format!("{base}/v1/clusters")), json!([]));
    rt.block_on(async {
        assert!(store.list_shards(None).await.expect("shards").is_empty());
        assert!(store
            .list_shard_nodes(None)
            .await
            .expect("nodes")
            .is_empty());
        assert!(store.list_comp_nodes(None).await.expect("comps").is_empty());
        let masters = store
            .read(async |tx| meta::list_node_masters(tx, None).await)
            .await
            .expect("node_map_master");
        assert!(masters.is_empty(), "{masters:?}");
        let tables = store.tables().await.expect("tables");
        for t in tables.keys() {
            assert!(
                !t.ends_with(&format!("_{NAME}")),
                "per-cluster table {t} left"
            );
        }
    });
    drop(store);
    daemon.stop();
}
