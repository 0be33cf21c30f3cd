//! A planned cluster carried out on a real private sshd on 127.0.0.2: one `rbr` shard of 3
//! MariaDB nodes and one PostgreSQL compute node installed in parallel, replicas following
//! the primary with semi-sync on, a row written on the primary seen on every replica, then
//! everything uninstalled with nothing left behind.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_core::jobs::install::MANAGER_USER;
use kunlun_core::jobs::{plan_create_cluster, Provisioner, SystemPasswords};
use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::{HaMode, Machine, MachineType, NodeStats, SshAccess};
use kunlun_provision::recipe::{MariaDbRecipe, PostgresRecipe};
use kunlun_provision::{HostKeyPolicy, SshExecutor};
use kunlun_tests::{free_port, Sshd};
use mysql_async::prelude::Queryable;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn machine(id: i64, sshd: &Sshd, ty: MachineType, dir: &str, base: u16) -> Machine {
    Machine {
        id,
        hostaddr: IP.to_string(),
        machine_type: ty,
        rack_id: None,
        data_dirs: vec![dir.to_string()],
        port_range: format!("{}-{}", base, base + 40),
        total_mem_mb: None,
        total_cpu_cores: None,
        node_stats: NodeStats::Running,
        used_ports: vec![],
        installing_ports: vec![],
        ssh: SshAccess {
            port: sshd.port(),
            user: sshd.user().to_string(),
            key_path: sshd.user_key().private.display().to_string(),
        },
        svc_since: None,
    }
}

async fn conn(port: u16, password: &str) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(IP.to_string())
        .tcp_port(port)
        .user(Some(MANAGER_USER))
        .pass(Some(password));
    mysql_async::Conn::new(opts)
        .await
        .expect("connect as clustmgr")
}

#[tokio::test]
async fn one_rbr_shard_of_three_and_a_compute_node_install_replicate_and_go_away() {
    let sshd = Sshd::start_on(IP).expect("sshd on 127.0.0.2");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod");
    let d = dir.path().display().to_string();
    // Port ranges around ports that were free just now.
    let sn_base = free_port(IpAddr::V4(IP)).min(31_000);
    let cn_base = free_port(IpAddr::V4(IP)).min(31_000);
    let machines = vec![
        machine(1, &sshd, MachineType::Storage, &d, sn_base),
        machine(2, &sshd, MachineType::Computer, &d, cn_base),
    ];
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
    let prov = Provisioner {
        ssh: SshExecutor::default(),
        storage: Arc::new(MariaDbRecipe::default()),
        compute: Arc::new(PostgresRecipe::default()),
        known_hosts: sshd.known_hosts(),
        host_key_policy: HostKeyPolicy::Strict,
    };

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
        let mut p = conn(nodes[0].slot.port, &pw).await;
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
            let mut c = conn(r.slot.port, &pw).await;
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
    assert!(!dir.path().join("kunlun").exists());
}
