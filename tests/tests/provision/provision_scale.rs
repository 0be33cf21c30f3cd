//! Scale jobs end to end against a SQLite store and a real private sshd on 127.0.0.6, with real
//! MariaDB and PostgreSQL installs: an `rbr` cluster of 1 shard x 2 nodes + 1 compute node,
//! then `add_nodes` (the new replica holds the rows written before, from the seed, and a row
//! written after, by replication; semi-sync stays on; no GTID of its own), `delete_node` (the
//! primary is refused with 409; the new replica goes: process, dir, port and rows),
//! `add_shards` (a new shard whose replica replicates, on the compute node's catalog), one
//! `add_nodes` job adding a replica to both shards (each seeded from and following its own
//! shard's primary, on distinct ports) and `delete_shard` (nothing of it left). Bad input: 0 nodes, an unknown shard, the shard of
//! another cluster, and more nodes than the machines hold (fails, nothing reserved). Last,
//! semi-sync across restarts: the shard's last replica deleted, the primary's `my.cnf` says
//! off; a first replica added again, on; after each, a restart of the primary keeps the value.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use kunlun_core::accounts::MANAGER_USER;
use kunlun_core::catalog::{read_catalog, CatalogOptions};
use kunlun_core::jobs::kinds::ADD_NODES;
use kunlun_core::jobs::plan_scale::{install_view, passwords_of, plan_add_nodes};
use kunlun_core::jobs::{accept_create_cluster, accept_delete_cluster};
use kunlun_core::Error;
use kunlun_meta::api::{AddNodes, AddShards, CreateCluster};
use kunlun_meta::model::{
    HaMode, JobStatus, MachineType, MemberState, NewCluster, NewJob, NewShard, ShardNode,
};
use kunlun_meta::store::repo::{clusters, machines, meta, secrets, shards};
use kunlun_provision::placement::InstanceKind;
use kunlun_provision::recipe::{InstanceSpec, Step};
use kunlun_tests::world::{memo, pid_in, ProvisionWorld};
use mysql_async::prelude::Queryable;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// `(Slave_IO_Running, Slave_SQL_Running, Master_Port)` of a replica.
async fn slave_status(c: &mut mysql_async::Conn) -> (String, String, u16) {
    let r: mysql_async::Row = c
        .query_first("SHOW SLAVE STATUS")
        .await
        .expect("slave status")
        .expect("a replica");
    let get = |name: &str| -> String {
        r.get_opt::<String, _>(name)
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    (
        get("Slave_IO_Running"),
        get("Slave_SQL_Running"),
        get("Master_Port").parse().unwrap_or(0),
    )
}

async fn status(c: &mut mysql_async::Conn, name: &str) -> String {
    let r: Option<(String, String)> = c
        .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .await
        .expect("status");
    r.map(|r| r.1).unwrap_or_default()
}

#[tokio::test]
async fn add_and_delete_replicas_and_shards_of_a_live_cluster() {
    let w = ProvisionWorld::builder(IP).build().await;
    scenario(&w).await;
}

/// The shard still has its 2 nodes, ports and dirs are as before the failed add.
async fn nothing_added(w: &ProvisionWorld, shard_id: i64, used_before: &[u16]) {
    let nodes = w
        .store
        .list_shard_nodes(Some(shard_id))
        .await
        .expect("nodes");
    assert_eq!(nodes.len(), 2, "no node row added");
    let m = w.store.list_machines().await.expect("machines")[0].clone();
    assert_eq!(m.used_ports, used_before, "no port kept");
    assert!(m.installing_ports.is_empty(), "no port kept");
    let mut dirs: Vec<String> = std::fs::read_dir(w.data.join("kunlun"))
        .expect("kunlun dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("storage_"))
        .collect();
    dirs.sort();
    let mut want: Vec<String> = nodes
        .iter()
        .map(|n| format!("storage_{}", n.port))
        .collect();
    want.sort();
    assert_eq!(dirs, want, "no instance dir left");
}

/// `rpl_semi_sync_master_enabled` of the server on `port` (`ON`/`OFF`).
async fn semi_sync_enabled(w: &ProvisionWorld, port: u16, pw: &str) -> String {
    let mut c = w.conn(port, pw).await;
    let r: Option<(String, String)> = c
        .query_first("SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync_master_enabled'")
        .await
        .expect("variable");
    r.map(|r| r.1).unwrap_or_default()
}

/// The primary's `my.cnf` holds semi-sync `want` (`ON`/`OFF`) once, the server has it, and
/// after a restart (stop, start, wait: a new process) it still has it.
async fn semi_sync_persisted(w: &ProvisionWorld, primary: &ShardNode, pw: &str, want: &str) {
    let base = InstanceSpec::base_dir_for(&w.data_dir(), InstanceKind::Storage, primary.port);
    let cnf = std::fs::read_to_string(format!("{base}/my.cnf")).expect("my.cnf");
    let lines: Vec<&str> = cnf
        .lines()
        .filter(|l| l.starts_with("rpl-semi-sync-master-enabled") || l.starts_with("rpl_semi"))
        .collect();
    assert_eq!(
        lines,
        [format!("rpl-semi-sync-master-enabled = {want}")],
        "{cnf}"
    );
    assert_eq!(semi_sync_enabled(w, primary.port, pw).await, want);
    let pid_file = std::path::Path::new(&base).join("run/mysqld.pid");
    let before = pid_in(&pid_file).expect("pid");
    let prov = w.provisioner();
    let spec = InstanceSpec {
        bind_address: IP.to_string(),
        port: primary.port,
        base_dir: base.clone(),
        server_id: 0,
        buffer_mb: 0,
        max_connections: 0,
        semi_sync: false,
        users: Vec::new(),
    };
    prov.storage
        .run_steps(
            &prov.ssh,
            &prov.target(w.machine(MachineType::Storage)),
            &spec,
            &[Step::Stop, Step::Start, Step::WaitReady],
            None,
        )
        .await
        .expect("restart the primary");
    assert_ne!(pid_in(&pid_file), Some(before), "a new server process");
    assert_eq!(
        semi_sync_enabled(w, primary.port, pw).await,
        want,
        "kept across the restart"
    );
}

fn primary_of(nodes: &[ShardNode]) -> &ShardNode {
    nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source)
        .expect("a primary")
}

async fn scenario(w: &ProvisionWorld) {
    let (store, runner, mgr) = (&w.store, &w.runner, &w.mgr);
    let req = CreateCluster {
        name: "sc1".into(),
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
    let job = w.run_job(job.id).await;
    assert_eq!(job.status, JobStatus::Done, "{}", memo(&job));
    let cluster = store.get_cluster_by_name("sc1").await.expect("cluster");
    let cid = cluster.id;
    let secret = store
        .read(async |tx| secrets::get(tx, cid).await)
        .await
        .expect("create_cluster stored the system passwords");
    let pw = secret.manager_pwd.clone();
    let shard1 = store.list_shards(Some(cid)).await.expect("shards")[0].clone();
    let nodes = store
        .list_shard_nodes(Some(shard1.id))
        .await
        .expect("nodes");
    let primary = primary_of(&nodes).clone();
    let old_replica = nodes
        .iter()
        .find(|n| n.id != primary.id)
        .expect("replica")
        .clone();

    let mut p = w.conn(primary.port, &pw).await;
    p.query_drop(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO app.t VALUES (1, 'before'), (2, 'before')",
    )
    .await
    .expect("write on the primary");
    let used_before: Vec<u16> = store.list_machines().await.expect("machines")[0]
        .used_ports
        .clone();

    // Bad input: nothing accepted, or a job that fails having reserved nothing.
    let zero = mgr
        .add_nodes(
            cid,
            shard1.id,
            &AddNodes {
                nodes: 0,
                storage_hosts: vec![],
            },
        )
        .await
        .expect_err("0 nodes");
    assert!(matches!(zero, Error::Invalid(_)), "{zero}");
    let one = AddNodes {
        nodes: 1,
        storage_hosts: vec![],
    };
    let unknown = mgr.add_nodes(cid, 99_999, &one).await.expect_err("unknown");
    assert!(matches!(unknown, Error::NotFound { .. }), "{unknown}");
    let other_shard = store
        .tx(async |tx| {
            let c = clusters::insert(
                tx,
                &NewCluster {
                    name: "other".into(),
                    nick_name: None,
                    owner: None,
                    business: None,
                    ha_mode: HaMode::Rbr,
                    memo: None,
                },
            )
            .await?;
            shards::insert(
                tx,
                &NewShard {
                    name: "shard1".into(),
                    db_cluster_id: c.id,
                    num_nodes: 0,
                    sync_num: 0,
                },
            )
            .await
        })
        .await
        .expect("another cluster's shard");
    let foreign = mgr
        .add_nodes(cid, other_shard.id, &one)
        .await
        .expect_err("shard of another cluster");
    assert!(matches!(foreign, Error::NotFound { .. }), "{foreign}");
    let foreign = mgr
        .delete_shard(cid, other_shard.id)
        .await
        .expect_err("shard of another cluster");
    assert!(matches!(foreign, Error::NotFound { .. }), "{foreign}");
    let over_bound = mgr
        .add_nodes(
            cid,
            shard1.id,
            &AddNodes {
                nodes: 40,
                storage_hosts: vec![],
            },
        )
        .await
        .expect_err("more nodes than a request may ask for");
    assert!(matches!(over_bound, Error::Invalid(_)), "{over_bound}");
    // 9 more storage instances (4 ports each) never fit the 41-port range beside the
    // shard's own nodes: accepted, and the placement refuses.
    let too_many = mgr
        .add_nodes(
            cid,
            shard1.id,
            &AddNodes {
                nodes: 9,
                storage_hosts: vec![],
            },
        )
        .await
        .expect("accepted; placement decides");
    let j = w.run_job(too_many.job_id).await;
    assert_eq!(j.status, JobStatus::Failed);
    assert!(memo(&j).contains("no capacity"), "{}", memo(&j));
    let m = store.list_machines().await.expect("machines")[0].clone();
    assert_eq!(m.used_ports, used_before, "nothing reserved");
    assert!(m.installing_ports.is_empty(), "nothing reserved");
    assert_eq!(
        store
            .list_shard_nodes(Some(shard1.id))
            .await
            .expect("nodes")
            .len(),
        2
    );

    // Faults: the planned port is taken by another process (the install fails and is rolled
    // back), and an add_nodes job found ongoing at start-up whose instance was already
    // installed (as after a crash) is rolled back by the runner's recovery.
    let planned = || async {
        let detail = store.cluster_detail(cid).await.expect("detail");
        let machines = store.list_machines().await.expect("machines");
        plan_add_nodes(&one, &detail, shard1.id, &machines, passwords_of(&secret)).expect("plan")
    };
    let plan = planned().await;
    let port = plan.shards[0].nodes[0].slot.port;
    let squatter = std::net::TcpListener::bind((IP, port)).expect("take the planned port");
    let add = mgr.add_nodes(cid, shard1.id, &one).await.expect("accepted");
    let j = w.run_job(add.job_id).await;
    drop(squatter);
    assert_eq!(j.status, JobStatus::Failed);
    assert!(memo(&j).contains("rolled_back"), "{}", memo(&j));
    nothing_added(w, shard1.id, &used_before).await;

    let plan = planned().await;
    let machines = store.list_machines().await.expect("machines");
    let m = machines[0].clone();
    let installing: Vec<u16> = plan.ports().iter().map(|p| p.1).collect();
    store
        .tx(async |tx| machines::set_ports(tx, &m, &m.used_ports, &installing).await)
        .await
        .expect("reserve");
    runner
        .provisioner
        .install_cluster(&machines, &install_view(&plan))
        .await
        .expect("install as the crashed job had");
    let crashed = store
        .create_job(&NewJob {
            job_type: ADD_NODES.into(),
            job_info: serde_json::json!({
                "nodes": 1, "storage_hosts": [], "cluster_id": cid, "name": "sc1",
                "shard_id": shard1.id
            }),
            user_name: None,
        })
        .await
        .expect("job");
    let stored = serde_json::json!({
        "stage": "planned", "cluster_id": cid, "shard_id": shard1.id,
        "plan": serde_json::to_value(&plan).expect("plan json")
    });
    store
        .update_job(crashed.id, JobStatus::Ongoing, Some(&stored))
        .await
        .expect("ongoing");
    assert_eq!(runner.recover().await.expect("recover"), 1);
    let j = store.get_job(crashed.id).await.expect("job");
    assert_eq!(j.status, JobStatus::Failed);
    assert!(memo(&j).contains("rolled_back"), "{}", memo(&j));
    nothing_added(w, shard1.id, &used_before).await;

    // The primary and the replica forget their old binary logs, so a new node that merely
    // replicated from the start could not get the rows written before: only a seed can.
    for port in [primary.port, old_replica.port] {
        let mut c = w.conn(port, &pw).await;
        // A log a replica's dump thread still reads is kept: flush and purge until it moved on.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            c.query_drop("FLUSH BINARY LOGS").await.expect("flush");
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.query_drop("PURGE BINARY LOGS BEFORE NOW() + INTERVAL 1 DAY")
                .await
                .expect("purge");
            let first: Option<(String, u64)> =
                c.query_first("SHOW BINARY LOGS").await.expect("logs");
            if first.is_some_and(|(f, _)| !f.ends_with(".000001")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {port}: the first binary log is never purged"
            );
        }
    }

    // add_nodes 1: seeded with the rows written before, replicating what comes after.
    let add = mgr.add_nodes(cid, shard1.id, &one).await.expect("accepted");
    let busy = mgr.add_nodes(cid, shard1.id, &one).await.expect_err("busy");
    assert!(matches!(busy, Error::Conflict(_)), "{busy}");
    let j = w.run_job(add.job_id).await;
    assert_eq!(j.status, JobStatus::Done, "{}", memo(&j));
    assert!(!memo(&j).contains(&pw), "no password in the memo");
    let steps = j.memo.as_ref().and_then(|m| m.get("steps")).cloned();
    let seeded = steps
        .as_ref()
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
        .find(|s| s["name"].as_str().is_some_and(|n| n.starts_with("seed ")))
        .cloned()
        .expect("a seed step");
    assert_eq!(seeded["status"], "done", "{seeded}");
    let note = seeded["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(&format!(":{}", old_replica.port)) && note.contains("at '0-"),
        "seeded from the healthy replica at a GTID position: {note}"
    );
    let nodes = store
        .list_shard_nodes(Some(shard1.id))
        .await
        .expect("nodes");
    assert_eq!(nodes.len(), 3);
    let new = nodes
        .iter()
        .find(|n| n.id != primary.id && n.id != old_replica.id)
        .expect("new node")
        .clone();
    assert_eq!(new.member_state, MemberState::Replica);
    assert_eq!(
        store.get_shard(shard1.id).await.expect("shard").num_nodes,
        3
    );
    let masters = store
        .read(async |tx| meta::list_node_masters(tx, Some(cid)).await)
        .await
        .expect("node_map_master");
    assert!(masters
        .iter()
        .any(|m| m.node_host == format!("{}_{}", new.hostaddr, new.port)
            && m.master_host == format!("{}_{}", primary.hostaddr, primary.port)));
    let m = store.list_machines().await.expect("machines")[0].clone();
    assert!(m.used_ports.contains(&new.port) && m.installing_ports.is_empty());

    w.wait_for(
        new.port,
        &pw,
        "SELECT CAST(COUNT(*) AS CHAR) FROM app.t WHERE v = 'before'",
        "2",
    )
    .await;
    p.query_drop("INSERT INTO app.t VALUES (3, 'after')")
        .await
        .expect("write after");
    w.wait_for(new.port, &pw, "SELECT v FROM app.t WHERE id = 3", "after")
        .await;
    assert_eq!(status(&mut p, "Rpl_semi_sync_master_status").await, "ON");
    assert_eq!(status(&mut p, "Rpl_semi_sync_master_clients").await, "2");
    let mut n = w.conn(new.port, &pw).await;
    let (sid, binlog): (u32, String) = n
        .query_first("SELECT @@server_id, @@gtid_binlog_pos")
        .await
        .expect("query")
        .expect("row");
    for g in binlog.split(',').filter(|g| !g.is_empty()) {
        let origin: u32 = g
            .split('-')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("gtid");
        assert_ne!(origin, sid, "no errant GTID of the new node: {binlog}");
    }
    let users: Option<String> = n
        .query_first(
            "SELECT CAST(COUNT(*) AS CHAR) FROM mysql.user WHERE user IN ('clustmgr','repl','pgx')",
        )
        .await
        .expect("users");
    assert_eq!(users.as_deref(), Some("3"), "system users intact");
    drop(n);

    // delete_node: never the primary; the new replica goes completely.
    let refused = mgr
        .delete_node(cid, shard1.id, primary.id)
        .await
        .expect_err("primary");
    assert!(matches!(refused, Error::Conflict(_)), "{refused}");
    let del = mgr
        .delete_node(cid, shard1.id, new.id)
        .await
        .expect("accepted");
    let j = w.run_job(del.job_id).await;
    assert_eq!(j.status, JobStatus::Done, "{}", memo(&j));
    assert_eq!(
        store
            .list_shard_nodes(Some(shard1.id))
            .await
            .expect("nodes")
            .len(),
        2
    );
    assert_eq!(
        store.get_shard(shard1.id).await.expect("shard").num_nodes,
        2
    );
    let masters = store
        .read(async |tx| meta::list_node_masters(tx, Some(cid)).await)
        .await
        .expect("node_map_master");
    assert_eq!(masters.len(), 1);
    let m = store.list_machines().await.expect("machines")[0].clone();
    assert_eq!(m.used_ports, used_before, "its port is released");
    assert!(
        !w.data.join(format!("kunlun/storage_{}", new.port)).exists(),
        "its dir is removed"
    );
    let gone = mysql_async::Conn::new(
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(IP.to_string())
            .tcp_port(new.port)
            .user(Some(MANAGER_USER))
            .pass(Some(pw.clone())),
    )
    .await;
    assert!(gone.is_err(), "its server is stopped");
    p.query_drop("INSERT INTO app.t VALUES (4, 'still')")
        .await
        .expect("the primary still takes writes");
    w.wait_for(
        old_replica.port,
        &pw,
        "SELECT v FROM app.t WHERE id = 4",
        "still",
    )
    .await;

    // add_shards 1 x 2: a new shard, its replica replicating, on the compute node's catalog.
    let add = mgr
        .add_shards(
            cid,
            &AddShards {
                shards: 1,
                nodes: 2,
                storage_hosts: vec![],
            },
        )
        .await
        .expect("accepted");
    let j = w.run_job(add.job_id).await;
    assert_eq!(j.status, JobStatus::Done, "{}", memo(&j));
    let all = store.list_shards(Some(cid)).await.expect("shards");
    assert_eq!(all.len(), 2);
    let shard2 = all
        .iter()
        .find(|s| s.id != shard1.id)
        .expect("new shard")
        .clone();
    assert_eq!(shard2.name, "shard_2");
    assert_eq!(shard2.num_nodes, 2);
    let s2 = store
        .list_shard_nodes(Some(shard2.id))
        .await
        .expect("nodes");
    assert_eq!(s2.len(), 2);
    let p2 = primary_of(&s2).clone();
    let r2 = s2.iter().find(|n| n.id != p2.id).expect("replica").clone();
    let mut c2 = w.conn(p2.port, &pw).await;
    c2.query_drop(
        "CREATE DATABASE s2; CREATE TABLE s2.t (id INT PRIMARY KEY); INSERT INTO s2.t VALUES (7)",
    )
    .await
    .expect("write on the new primary");
    assert_eq!(status(&mut c2, "Rpl_semi_sync_master_status").await, "ON");
    drop(c2);
    w.wait_for(r2.port, &pw, "SELECT CAST(id AS CHAR) FROM s2.t", "7")
        .await;
    let comp = store.list_comp_nodes(Some(cid)).await.expect("comps")[0].clone();
    let cat = read_catalog(store, &comp, &CatalogOptions::default())
        .await
        .expect("catalog");
    assert!(
        cat.shard(shard2.id).is_some(),
        "the compute node knows shard2"
    );
    assert!(cat.shard(shard1.id).is_some());

    // add_nodes to both shards in one job: a replica more in each, seeded from and following
    // its own shard's primary (each shard's data only), no two new nodes on one port.
    for bad in [&[][..], &[shard1.id, shard2.id, shard1.id][..]] {
        let e = mgr
            .add_nodes_to_shards(cid, bad, &one)
            .await
            .expect_err("bad shard list");
        assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e}");
    }
    let foreign = mgr
        .add_nodes_to_shards(cid, &[shard1.id, other_shard.id], &one)
        .await
        .expect_err("a shard of another cluster");
    assert!(matches!(foreign, Error::NotFound { .. }), "{foreign}");
    let s1 = store
        .list_shard_nodes(Some(shard1.id))
        .await
        .expect("nodes");
    let add = mgr
        .add_nodes_to_shards(cid, &[shard1.id, shard2.id], &one)
        .await
        .expect("accepted");
    let j = w.run_job(add.job_id).await;
    assert_eq!(j.status, JobStatus::Done, "{}", memo(&j));
    let stored = j.memo.clone().unwrap_or_default();
    assert_eq!(stored["shard_id"], shard1.id, "{stored}");
    assert_eq!(
        stored["shard_ids"],
        serde_json::json!([shard1.id, shard2.id])
    );
    let mut added = Vec::new();
    for (shard, before, data) in [
        (&shard1, &s1, "SELECT CAST(COUNT(*) AS CHAR) FROM app.t"),
        (&shard2, &s2, "SELECT CAST(COUNT(*) AS CHAR) FROM s2.t"),
    ] {
        let now = store.list_shard_nodes(Some(shard.id)).await.expect("nodes");
        assert_eq!(
            now.len(),
            before.len() + 1,
            "one node more in {}",
            shard.name
        );
        assert_eq!(store.get_shard(shard.id).await.expect("shard").num_nodes, 3);
        let new: Vec<&ShardNode> = now
            .iter()
            .filter(|n| !before.iter().any(|b| b.id == n.id))
            .collect();
        let [new] = new[..] else {
            panic!("one new node in {}: {now:?}", shard.name)
        };
        assert_eq!(new.member_state, MemberState::Replica);
        let primary = primary_of(before);
        let mut c = w.conn(new.port, &pw).await;
        let (io, sql, master_port) = slave_status(&mut c).await;
        assert_eq!(
            (io.as_str(), sql.as_str(), master_port),
            ("Yes", "Yes", primary.port),
            "{}'s new node {} follows its own primary",
            shard.name,
            new.port
        );
        let other_db = if shard.id == shard1.id { "s2" } else { "app" };
        let dbs: Option<String> = c
            .query_first(format!(
                "SELECT CAST(COUNT(*) AS CHAR) FROM information_schema.schemata \
                 WHERE schema_name = '{other_db}'"
            ))
            .await
            .expect("schemata");
        assert_eq!(dbs.as_deref(), Some("0"), "seeded from its own shard only");
        drop(c);
        let rows = if shard.id == shard1.id { "4" } else { "1" };
        w.wait_for(new.port, &pw, data, rows).await;
        added.push(new.clone());
    }
    assert_ne!(
        (&added[0].hostaddr, added[0].port),
        (&added[1].hostaddr, added[1].port),
        "no two new nodes on one port"
    );
    // Shard 1 as before for what follows; shard 2's new node goes with its shard.
    let del = mgr
        .delete_node(cid, shard1.id, added[0].id)
        .await
        .expect("accepted");
    let j = w.run_job(del.job_id).await;
    assert_eq!(j.status, JobStatus::Done, "{}", memo(&j));

    // delete_shard: nothing of it is left.
    let del = mgr.delete_shard(cid, shard2.id).await.expect("accepted");
    let j = w.run_job(del.job_id).await;
    assert_eq!(j.status, JobStatus::Done, "{}", memo(&j));
    let all = store.list_shards(Some(cid)).await.expect("shards");
    assert_eq!(
        all.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![shard1.id]
    );
    assert!(store
        .list_shard_nodes(Some(shard2.id))
        .await
        .expect("nodes")
        .is_empty());
    for n in s2.iter().chain([&added[1]]) {
        assert!(!w.data.join(format!("kunlun/storage_{}", n.port)).exists());
    }
    let masters = store
        .read(async |tx| meta::list_node_masters(tx, Some(cid)).await)
        .await
        .expect("node_map_master");
    assert_eq!(masters.len(), 1);
    let m = store.list_machines().await.expect("machines")[0].clone();
    assert_eq!(m.used_ports, used_before, "its ports are released");
    let cat = read_catalog(store, &comp, &CatalogOptions::default())
        .await
        .expect("catalog");
    assert!(
        cat.shard(shard2.id).is_none(),
        "the compute node forgot shard2"
    );
    drop(p);

    // Semi-sync across restarts: the last replica gone, off in the cnf and after a restart;
    // a first replica again, on in the cnf and after a restart.
    let del = mgr
        .delete_node(cid, shard1.id, old_replica.id)
        .await
        .expect("accepted");
    let j = w.run_job(del.job_id).await;
    assert_eq!(j.status, JobStatus::Done, "{}", memo(&j));
    assert_eq!(
        store.get_shard(shard1.id).await.expect("shard").num_nodes,
        1
    );
    semi_sync_persisted(w, &primary, &pw, "OFF").await;
    let add = mgr.add_nodes(cid, shard1.id, &one).await.expect("accepted");
    let j = w.run_job(add.job_id).await;
    assert_eq!(j.status, JobStatus::Done, "{}", memo(&j));
    semi_sync_persisted(w, &primary, &pw, "ON").await;

    // The whole cluster goes, its passwords with it.
    let del = accept_delete_cluster(store, cid).await.expect("accepted");
    let j = w.run_job(del.id).await;
    assert_eq!(j.status, JobStatus::Done, "{}", memo(&j));
    let gone = store.read(async |tx| secrets::get(tx, cid).await).await;
    assert!(gone.is_err(), "kl_cluster_secret row removed");
    let machines = store.list_machines().await.expect("machines");
    assert!(machines
        .iter()
        .all(|m| m.used_ports.is_empty() && m.installing_ports.is_empty()));
    assert!(!w.data.join("kunlun").exists(), "instance dirs removed");
}
