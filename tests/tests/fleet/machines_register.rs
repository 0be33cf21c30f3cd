//! Registering machines probes them over SSH, against real private sshds on loopback
//! addresses: a good machine is stored `running` with its memory and cores filled in and its
//! probe facts (OS, kernel, free MB per data dir, when) stored and shown; an
//! unreachable port, a wrong key, a changed host key, a missing server binary or an unusable
//! data dir is refused with its own code and nothing is stored; the liveness check marks a
//! stopped machine `dead` (placement then refuses it by name) and `running` again once its
//! sshd is back, and makes an unprobed machine `running` once it answers. The same refusals
//! through the real daemon and `kunlunctl machine add` print the code and a hint.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use kunlun_core::error::ProbeFailure;
use kunlun_core::fleet::Provisioner;
use kunlun_core::jobs::{plan_create_cluster, SystemPasswords};
use kunlun_core::{ClusterManager, CoreConfig, Error};
use kunlun_meta::api::{CreateCluster, RegisterMachine};
use kunlun_meta::model::{HaMode, Machine, MachineInfo, MachineType, NodeStats};
use kunlun_meta::{Store, StoreConfig};
use kunlun_tests::{free_port, generate_key_pair, Sshd};

/// A manager over a fresh SQLite store whose probes trust hosts through `dir/known_hosts`.
async fn manager(dir: &Path) -> ClusterManager {
    let store = Store::open(&StoreConfig::sqlite(dir.join("meta.db")))
        .await
        .expect("store");
    let m = ClusterManager::new(CoreConfig::default(), store);
    m.set_provisioner(Provisioner::with_system_servers(
        dir.join("ssh/known_hosts"),
    ));
    m
}

fn request(sshd: &Sshd, ty: MachineType, data_dir: &str) -> RegisterMachine {
    RegisterMachine {
        hostaddr: sshd.host(),
        machine_type: ty,
        ssh_port: Some(sshd.port()),
        ssh_user: Some(sshd.user().to_string()),
        ssh_key_path: sshd.user_key().private.display().to_string(),
        data_dirs: vec![data_dir.to_string()],
        port_range: None,
        rack_id: None,
        total_mem_mb: None,
        total_cpu_cores: None,
        probe: true,
        ssh_host_key: None,
    }
}

/// The refusal's code, asserting it is one.
fn refusal<T: std::fmt::Debug>(r: Result<T, Error>) -> (ProbeFailure, String) {
    match r {
        Err(Error::MachineRefused { kind, message }) => (kind, message),
        Err(other) => panic!("expected a probe refusal, got {other:?}"),
        Ok(m) => panic!("expected a probe refusal, got machine {m:?}"),
    }
}

/// A script for `ForceCommand` that runs each session's command in a private mount
/// namespace where `/usr/sbin` (with `mariadbd`) is an empty tmpfs: a machine without the
/// MariaDB server, everything else as on this host.
fn hide_usr_sbin_wrapper(dir: &Path) -> String {
    let path = dir.join("no-usr-sbin.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nexec unshare -m sh -c 'mount -t tmpfs none /usr/sbin && exec sh -c \"$SSH_ORIGINAL_COMMAND\"'\n",
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod");
    path.display().to_string()
}

/// Waits (bounded) until machine `id` is in `state`.
async fn wait_state(m: &ClusterManager, id: i64, state: NodeStats) -> Machine {
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        let got = m.get_machine(id).await.expect("machine");
        if got.node_stats == state {
            return got;
        }
        assert!(
            Instant::now() < limit,
            "machine {id} never became {state}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_good_machine_is_probed_and_stored_running_with_its_facts() {
    let sshd = Sshd::start_on(Ipv4Addr::new(127, 0, 0, 3)).expect("sshd");
    let dir = tempfile::tempdir().expect("tempdir");
    let m = manager(dir.path()).await;
    // Not there yet, but creatable: fine, and the probe does not create it.
    let data = dir.path().join("data/new");
    let data_s = data.display().to_string();

    let before = chrono::Utc::now().naive_utc() - chrono::Duration::seconds(1);
    let info = m
        .register_machine(&request(&sshd, MachineType::Storage, &data_s))
        .await
        .expect("a machine with MariaDB is accepted as storage");
    let sn = info.machine.clone();
    assert_eq!(sn.node_stats, NodeStats::Running);
    // The probe's facts are stored with the machine and read back as they were returned.
    let facts = info.probe.clone().expect("probe facts of a probed machine");
    let os_release = std::fs::read_to_string("/etc/os-release").expect("os-release");
    let id = os_release
        .lines()
        .find_map(|l| l.strip_prefix("ID="))
        .expect("ID=")
        .trim_matches('"');
    assert!(facts.os.starts_with(id), "{facts:?} vs ID={id}");
    assert!(facts.kernel.starts_with("Linux"), "{facts:?}");
    assert_eq!(facts.data_dirs.len(), 1, "{facts:?}");
    assert_eq!(facts.data_dirs[0].path, data_s);
    assert!(!facts.data_dirs[0].exists, "{facts:?}");
    assert!(
        facts.data_dirs[0].free_mb.is_some_and(|mb| mb > 0),
        "{facts:?}"
    );
    assert!(facts.probed_at >= before, "{facts:?}");
    assert_eq!(m.machine_info(sn.id).await.expect("info"), info);
    assert_eq!(
        m.list_machine_infos().await.expect("list"),
        vec![info.clone()]
    );
    assert!(sn.total_mem_mb.is_some_and(|mb| mb > 0), "{sn:?}");
    assert!(sn.total_cpu_cores.is_some_and(|c| c >= 1), "{sn:?}");
    assert!(!data.exists(), "probing changes nothing on the machine");
    let known = std::fs::read_to_string(dir.path().join("ssh/known_hosts")).expect("known_hosts");
    assert!(
        known.contains(&format!("[{}]:{}", sshd.host(), sshd.port())),
        "first contact records the host key: {known}"
    );

    let mut req = request(&sshd, MachineType::Computer, &data_s);
    req.total_mem_mb = Some(1234);
    let cn = m
        .register_machine(&req)
        .await
        .expect("a machine with PostgreSQL is accepted as computer")
        .machine;
    assert_eq!(
        cn.total_mem_mb,
        Some(1234),
        "given values win over the probe"
    );
    assert_eq!(m.list_machines().await.expect("list").len(), 2);
}

#[tokio::test]
async fn unreachable_bad_key_changed_host_key_and_bad_data_dir_are_refused_storing_nothing() {
    let sshd = Sshd::start_on(Ipv4Addr::new(127, 0, 0, 3)).expect("sshd");
    let dir = tempfile::tempdir().expect("tempdir");
    let m = manager(dir.path()).await;
    let data = dir.path().display().to_string();

    let mut req = request(&sshd, MachineType::Storage, &data);
    req.ssh_port = Some(free_port(IpAddr::V4(sshd.ip())));
    let (kind, msg) = refusal(m.register_machine(&req).await);
    assert_eq!(kind.code(), "machine_unreachable", "{msg}");
    assert!(msg.contains(&sshd.host()), "{msg}");

    let stranger = generate_key_pair(dir.path(), "stranger").expect("key");
    let mut req = request(&sshd, MachineType::Storage, &data);
    req.ssh_key_path = stranger.private.display().to_string();
    let (kind, msg) = refusal(m.register_machine(&req).await);
    assert_eq!(kind.code(), "ssh_auth_failed", "{msg}");

    let mut req = request(&sshd, MachineType::Storage, &data);
    req.ssh_key_path = dir.path().join("no-such-key").display().to_string();
    let (kind, msg) = refusal(m.register_machine(&req).await);
    // A key file that cannot be read is refused before connecting (machines_keys.rs has the
    // other unusable kinds).
    assert_eq!(kind.code(), "ssh_key_rejected", "{msg}");

    // A data dir under a regular file can never be created.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").expect("file");
    let bad = file.join("data").display().to_string();
    let (kind, msg) = refusal(
        m.register_machine(&request(&sshd, MachineType::Storage, &bad))
            .await,
    );
    assert_eq!(kind.code(), "data_dir_unusable", "{msg}");
    assert!(msg.contains(&bad), "{msg}");
    assert!(m.list_machines().await.expect("list").is_empty());

    // Registered once (its host key recorded), removed, then the host key changes.
    let ok = m
        .register_machine(&request(&sshd, MachineType::Storage, &data))
        .await
        .expect("registered")
        .machine;
    m.delete_machine(ok.id).await.expect("delete");
    sshd.change_host_key().expect("new host key");
    let (kind, msg) = refusal(
        m.register_machine(&request(&sshd, MachineType::Storage, &data))
            .await,
    );
    assert_eq!(kind.code(), "host_key_mismatch", "{msg}");
    assert!(m.list_machines().await.expect("list").is_empty());
}

#[tokio::test]
async fn a_missing_server_binary_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let force = format!("ForceCommand {}", hide_usr_sbin_wrapper(dir.path()));
    let sshd = Sshd::start_with(Ipv4Addr::new(127, 0, 0, 4), &[&force]).expect("sshd");
    let m = manager(dir.path()).await;
    let data = dir.path().display().to_string();

    let (kind, msg) = refusal(
        m.register_machine(&request(&sshd, MachineType::Storage, &data))
            .await,
    );
    assert_eq!(kind, ProbeFailure::MissingBinaries, "{msg}");
    assert!(msg.contains("/usr/sbin/mariadbd"), "{msg}");
    assert!(
        !msg.contains("mariadb-install-db"),
        "only what is missing is named: {msg}"
    );
    assert!(m.list_machines().await.expect("list").is_empty());
    // The same machine has everything a compute node needs.
    let cn = m
        .register_machine(&request(&sshd, MachineType::Computer, &data))
        .await
        .expect("PostgreSQL is there")
        .machine;
    assert_eq!(cn.node_stats, NodeStats::Running);
}

#[tokio::test]
async fn liveness_marks_a_stopped_machine_dead_and_back_and_placement_refuses_it() {
    let a = Sshd::start_on(Ipv4Addr::new(127, 0, 0, 5)).expect("sshd a");
    let b = Sshd::start_on(Ipv4Addr::new(127, 0, 0, 6)).expect("sshd b");
    let dir = tempfile::tempdir().expect("tempdir");
    let m = manager(dir.path()).await;
    let data = dir.path().display().to_string();

    let sn = m
        .register_machine(&request(&a, MachineType::Storage, &data))
        .await
        .expect("registered")
        .machine;
    // Unprobed: stored dead with no probe facts, running once the liveness check reaches it.
    let mut req = request(&b, MachineType::Storage, &data);
    req.probe = false;
    let MachineInfo {
        machine: unprobed,
        probe,
    } = m.register_machine(&req).await.expect("stored unprobed");
    assert_eq!(unprobed.node_stats, NodeStats::Dead);
    assert_eq!(probe, None, "nothing was checked");
    assert_eq!(m.machine_info(unprobed.id).await.expect("info").probe, None);

    let term = kunlun_core::Term::standalone(&m);
    let p = m.probe_provisioner().cloned().expect("a provisioner");
    term.start_machine_liveness(p, Duration::from_millis(300));
    wait_state(&m, unprobed.id, NodeStats::Running).await;

    a.stop().expect("stop sshd a");
    wait_state(&m, sn.id, NodeStats::Dead).await;
    let machines = m.list_machines().await.expect("list");
    let create = CreateCluster {
        name: "c1".into(),
        nick_name: None,
        ha_mode: HaMode::NoRep,
        shards: 1,
        nodes: 1,
        comps: 1,
        innodb_size_mb: None,
        max_connections: None,
        storage_hosts: vec![a.host()],
        computer_hosts: vec![],
    };
    let err = plan_create_cluster(&create, &machines, &[], SystemPasswords::generate())
        .expect_err("a dead machine named in the host list");
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains(&a.host()) && err.to_string().contains("dead"),
        "{err}"
    );

    a.restart().expect("restart sshd a");
    let back = wait_state(&m, sn.id, NodeStats::Running).await;
    assert_eq!(back.total_mem_mb, sn.total_mem_mb, "only the state changed");
    term.shutdown(Duration::from_secs(10)).await;
    m.shutdown(Duration::from_secs(10)).await;
}

/// `kunlunctl machine add` through the real daemon: each refusal exits 1 with its code, the
/// reason and a hint, and stores nothing; a good machine is registered `running`.
#[test]
fn cli_machine_add_explains_each_refusal() {
    let ip = Ipv4Addr::new(127, 0, 0, 7);
    let sshd = Sshd::start_on(ip).expect("sshd");
    let wd = kunlun_tests::cli::workdir();
    let force = format!("ForceCommand {}", hide_usr_sbin_wrapper(wd.path()));
    let no_sbin = Sshd::start_with(ip, &[&force]).expect("sshd without /usr/sbin");
    let daemon =
        kunlun_tests::daemon::Daemon::start(wd.path(), &wd.path().join("meta.db")).expect("daemon");
    let url = daemon.url();
    // Under the harness root, which the harness daemon's ssh_keys_dir is.
    let stranger = generate_key_pair(sshd.dir(), "stranger").expect("key");
    let file = wd.path().join("plain-file");
    std::fs::write(&file, "x").expect("file");
    let data = wd.path().display().to_string();
    let bad_dir = file.join("d").display().to_string();
    let port = sshd.port().to_string();
    let closed = free_port(IpAddr::V4(ip)).to_string();
    let key = sshd.user_key().private.display().to_string();
    let stranger_key = stranger.private.display().to_string();
    let no_sbin_port = no_sbin.port().to_string();
    let no_sbin_key = no_sbin.user_key().private.display().to_string();
    let host = ip.to_string();
    let add = |port: &str, key: &str, dir: &str| -> Vec<String> {
        [
            "machine",
            "add",
            "--host",
            &host,
            "--type",
            "storage",
            "--ssh-port",
            port,
            "--ssh-key",
            key,
            "--data-dir",
            dir,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    for (args, code, says) in [
        (
            add(&closed, &key, &data),
            "machine_unreachable",
            "unreachable",
        ),
        (
            add(&port, &stranger_key, &data),
            "ssh_auth_failed",
            "authentication",
        ),
        (
            add(&port, "/dev/kmsg", &data),
            "ssh_key_rejected",
            "ssh_keys_dir",
        ),
        (
            add(&port, &key, &bad_dir),
            "data_dir_unusable",
            bad_dir.as_str(),
        ),
        (
            add(&no_sbin_port, &no_sbin_key, &data),
            "missing_binaries",
            "/usr/sbin/mariadbd",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = kunlun_tests::cli::ctl(&url, &args);
        assert_eq!(r.code, 1, "{code}: {r:?}");
        assert!(
            r.stderr.contains(&format!("({code})")) && r.stderr.contains(says),
            "{code}: {r:?}"
        );
        assert!(r.stderr.contains("hint: "), "{code}: {r:?}");
    }
    let none = kunlun_tests::cli::ctl(&url, &["--json", "machine", "list"])
        .ok()
        .json();
    assert_eq!(none, serde_json::json!([]), "a refusal stored something");

    let args = add(&port, &key, &data);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ok = kunlun_tests::cli::ctl(&url, &args).ok();
    assert!(
        ok.stdout.starts_with("registered machine ") && ok.stdout.contains("probed over SSH"),
        "{ok:?}"
    );
    assert!(ok.stdout.contains("running"), "{ok:?}");
    // `machine show` prints what the probe found.
    let id = ok
        .stdout
        .split_whitespace()
        .nth(2)
        .expect("registered machine ID")
        .to_string();
    let show = kunlun_tests::cli::ctl(&url, &["machine", "show", &id]).ok();
    assert!(show.stdout.contains("probed at:"), "{show:?}");
    assert!(
        show.stdout.contains("kernel:") && show.stdout.contains("Linux"),
        "{show:?}"
    );
    assert!(
        show.stdout.contains(&format!("data dir:         {data} "))
            && show.stdout.contains("MB free"),
        "{show:?}"
    );
    let json = kunlun_tests::cli::ctl(&url, &["--json", "machine", "show", &id])
        .ok()
        .json();
    assert!(
        json["probe"]["data_dirs"][0]["free_mb"]
            .as_u64()
            .is_some_and(|mb| mb > 0),
        "{json}"
    );
    assert!(json["probe"]["probed_at"].is_string(), "{json}");

    // Same host, new host key: the daemon's known_hosts no longer matches.
    let list = kunlun_tests::cli::ctl(&url, &["--json", "machine", "list"])
        .ok()
        .json();
    let id = list[0]["id"].as_i64().expect("id").to_string();
    kunlun_tests::cli::ctl(&url, &["machine", "rm", &id]).ok();
    sshd.change_host_key().expect("new host key");
    let r = kunlun_tests::cli::ctl(&url, &args);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("(host_key_mismatch)") && r.stderr.contains("known_hosts"),
        "{r:?}"
    );
    drop(daemon);
}
