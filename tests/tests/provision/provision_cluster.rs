//! A planned cluster carried out on a real private sshd on 127.0.0.52: one `rbr` shard of 3
//! MariaDB nodes and one PostgreSQL compute node installed in parallel, replicas following
//! the primary with semi-sync on, a row written on the primary seen on every replica, then
//! everything uninstalled with nothing left behind.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use kunlun_core::accounts::{COMP_USER, MANAGER_USER, PGX_USER};
use kunlun_core::jobs::{plan_create_cluster, ClusterPlan, SystemPasswords};
use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::HaMode;
use kunlun_tests::world::ProvisionWorld;
use mysql_async::prelude::Queryable;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 52);

/// The server's error code of a refused statement.
fn mysql_code(r: Result<(), mysql_async::Error>) -> Option<u16> {
    match r {
        Err(mysql_async::Error::Server(e)) => Some(e.code),
        Err(e) => panic!("not a server error: {e}"),
        Ok(()) => None,
    }
}

/// `psql -c sql` on the compute node as `user`; (success, stdout, stderr).
fn psql(port: u16, user: &str, password: &str, sql: &str) -> (bool, String, String) {
    let out = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-X", "-At", "-h", &IP.to_string(), "-p", &port.to_string()])
        .args(["-U", user, "-d", "postgres", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// The uid a process runs as (`Uid:` of /proc/<pid>/status, the real uid).
fn process_uid(pid_file: &Path) -> u32 {
    let pid = std::fs::read_to_string(pid_file).expect("pid file");
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("Uid line")
}

/// What compute nodes and their users may do: `pgx` has DML, DDL and XA but nothing that
/// passes `read_only` or reaches files; servers do not run as root; `abc` is no superuser and
/// cannot read the catalog the manager's own login writes.
async fn least_privilege(w: &ProvisionWorld, plan: &ClusterPlan) {
    let p = &plan.passwords;
    let nodes = &plan.shards[0].nodes;
    let mut x = w.conn_as(nodes[0].slot.port, PGX_USER, &p.pgx).await;
    let grants: Vec<String> = x.query("SHOW GRANTS").await.expect("show grants");
    eprintln!("pgx: {grants:?}");
    for bad in [
        "SUPER",
        "READ_ONLY ADMIN",
        "FILE",
        "GRANT OPTION",
        "ALL PRIVILEGES",
    ] {
        assert!(!grants.iter().any(|g| g.contains(bad)), "pgx has {bad}");
    }
    let out = format!("{}/files/out.txt", nodes[0].base_dir);
    let r = x.query_drop(format!("SELECT 1 INTO OUTFILE '{out}'")).await;
    assert_eq!(mysql_code(r), Some(1227), "INTO OUTFILE refused (no FILE)");
    assert!(!Path::new(&out).exists());
    // XA as a compute node runs it: start, prepare, commit.
    x.query_drop(
        "XA START 'kt1'; INSERT INTO t.x VALUES (7); XA END 'kt1'; XA PREPARE 'kt1'; XA RECOVER",
    )
    .await
    .expect("XA prepare as pgx");
    x.query_drop("XA COMMIT 'kt1'")
        .await
        .expect("XA commit as pgx");
    let n: Option<i64> = x
        .query_first("SELECT COUNT(*) FROM t.x WHERE id = 7")
        .await
        .expect("read");
    assert_eq!(n, Some(1));
    x.disconnect().await.expect("disconnect");

    // A read-only replica refuses pgx's writes (1290), the manager's pass deliberately.
    let replica = nodes[1].slot.port;
    let mut m = w.conn(replica, &p.manager).await;
    m.query_drop("SET GLOBAL read_only = ON")
        .await
        .expect("read_only");
    let mut x = w.conn_as(replica, PGX_USER, &p.pgx).await;
    let r = x.query_drop("INSERT INTO t.x VALUES (8)").await;
    assert_eq!(mysql_code(r), Some(1290), "a read-only replica refuses pgx");
    let r = x.query_drop("CREATE DATABASE t2").await;
    assert_eq!(mysql_code(r), Some(1290));
    x.disconnect().await.expect("disconnect");
    m.query_drop("SET GLOBAL read_only = OFF")
        .await
        .expect("read_only off");
    m.disconnect().await.expect("disconnect");

    for n in nodes {
        let uid = process_uid(&Path::new(&n.base_dir).join("run/mysqld.pid"));
        assert_ne!(uid, 0, "mariadbd of {} runs as root", n.slot.port);
    }

    // The compute node: the manager's superuser owns what holds storage passwords.
    let c = &plan.comps[0];
    let (ok, _, err) = psql(
        c.slot.port,
        MANAGER_USER,
        &p.manager,
        "CREATE SCHEMA kunlun_sys; CREATE TABLE kunlun_sys.pg_shard_node (passwd text); \
         INSERT INTO kunlun_sys.pg_shard_node VALUES ('secret')",
    );
    assert!(ok, "the manager is the compute node's superuser: {err}");
    let (ok, _, err) = psql(
        c.slot.port,
        COMP_USER,
        &p.comp,
        "SELECT * FROM kunlun_sys.pg_shard_node",
    );
    assert!(
        !ok && err.contains("permission denied"),
        "abc read the catalog: {err}"
    );
    let (ok, out, err) = psql(
        c.slot.port,
        COMP_USER,
        &p.comp,
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "f", "abc is not a superuser");
    let (ok, _, err) = psql(
        c.slot.port,
        COMP_USER,
        &p.comp,
        "CREATE TABLE public.mine (id int); CREATE SCHEMA app; CREATE TABLE app.t (id int)",
    );
    assert!(ok, "abc works in database postgres: {err}");
    let (ok, _, err) = psql(c.slot.port, COMP_USER, &p.comp, "CREATE DATABASE abcdb");
    assert!(ok, "abc creates databases: {err}");
}

#[tokio::test]
async fn one_rbr_shard_of_three_and_a_compute_node_install_replicate_and_go_away() {
    let w = ProvisionWorld::builder(IP).build().await;
    let machines = w.machines.clone();
    let req = CreateCluster {
        name: "pc1".into(),
        nick_name: None,
        ha_mode: HaMode::Rbr,
        shards: 1,
        nodes: 3,
        comps: 1,
        innodb_size_mb: Some(32),
        max_connections: Some(100),
        storage_hosts: vec![],
        computer_hosts: vec![],
    };
    let plan =
        plan_create_cluster(&req, &machines, &[], SystemPasswords::generate()).expect("plan");
    let prov = w.provisioner();

    let started = Instant::now();
    let installed = prov.install_cluster(&machines, &plan).await;
    let took = started.elapsed();
    if let Err(e) = &installed {
        let _ = prov.uninstall_cluster(&machines, &plan).await;
        panic!("install failed: {e}");
    }
    eprintln!("install of 3 storage + 1 compute nodes took {took:?}");

    let pw = plan.passwords.manager.clone();
    let nodes = &plan.shards[0].nodes;
    let check = async {
        let mut p = w.conn(nodes[0].slot.port, &pw).await;
        p.query_drop(
            "CREATE DATABASE t; CREATE TABLE t.x (id INT PRIMARY KEY); INSERT INTO t.x VALUES (42)",
        )
        .await
        .expect("write on the primary");
        let semi: Option<(String, String)> = p
            .query_first("SHOW STATUS LIKE 'Rpl_semi_sync_master_status'")
            .await
            .expect("status");
        assert_eq!(semi.map(|s| s.1).as_deref(), Some("ON"), "semi-sync is on");
        for r in &nodes[1..] {
            let mut c = w.conn(r.slot.port, &pw).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let got: Option<i32> = c.query_first("SELECT id FROM t.x").await.unwrap_or(None);
                if got == Some(42) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {} never got the row",
                    r.slot.port
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let io: Option<(String,)> = c
                .query_first("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'SLAVES_RUNNING'")
                .await
                .expect("status");
            assert_eq!(io.map(|v| v.0).as_deref(), Some("1"));
            // Only the primary waits for acknowledgements: a replica with its own semi-sync
            // master side on would stall each applied transaction for the semi-sync timeout.
            let master_side: Option<i64> = c
                .query_first("SELECT @@rpl_semi_sync_master_enabled")
                .await
                .expect("variable");
            assert_eq!(
                master_side,
                Some(0),
                "replica {} semi-sync master side off",
                r.slot.port
            );
        }
    };
    check.await;
    least_privilege(&w, &plan).await;

    prov.uninstall_cluster(&machines, &plan)
        .await
        .expect("uninstall");
    for i in plan
        .shards
        .iter()
        .flat_map(|s| s.nodes.iter())
        .chain(plan.comps.iter())
    {
        assert!(!Path::new(&i.base_dir).exists(), "{} removed", i.base_dir);
    }
    assert!(!w.data.join("kunlun").exists());
}
