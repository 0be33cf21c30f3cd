//! SSH fencing of a hung primary: the primary (listening on 127.0.0.4) is stopped with
//! SIGSTOP under a write load, so it answers neither SQL nor probes; its machine is registered
//! with a private sshd on that address. The failover's fence step kills the process by the
//! pid file of its instance directory over SSH and records so; the shard fails over with every
//! acknowledged write, and the restarted old primary rejoins or is kept out for rebuild.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_core::fleet::Provisioner;
use kunlun_core::ha::HaConfig;
use kunlun_tests::ha::{test_ha_config, EnvOptions, HaEnv, Writer, LIMIT};
use kunlun_tests::Sshd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primary_is_stopped_over_ssh_before_the_failover() {
    let ip = Ipv4Addr::new(127, 0, 0, 4);
    let sshd = tokio::task::spawn_blocking(move || Sshd::start_on(ip))
        .await
        .unwrap()
        .expect("sshd");
    let prov = Arc::new(Provisioner::with_system_servers(sshd.known_hosts()));
    let env = HaEnv::start(EnvOptions {
        ha: HaConfig {
            ssh: Some(prov),
            ..test_ha_config()
        },
        primary_bind: Some(ip.to_string()),
        ..EnvOptions::default()
    })
    .await
    .expect("env");
    let old = env.node_ids[0];
    let srv = env.server(old);

    // The instance directory the fence looks in: <data_dir>/kunlun/storage_<port>/run/mysqld.pid.
    let data_dir = sshd.dir().join("data");
    let run = data_dir.join(format!("kunlun/storage_{}/run", srv.port()));
    std::fs::create_dir_all(&run).unwrap();
    let pid_file = srv.datadir().parent().unwrap().join("mysqld.pid");
    std::os::unix::fs::symlink(&pid_file, run.join("mysqld.pid")).unwrap();
    env.store
        .insert_machine(&sshd.storage_machine(ip, &data_dir))
        .await
        .expect("machine registered");

    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(50).await.unwrap();
    srv.pause().unwrap();
    let rec = env.wait_promoted(0).await.expect("failover");
    let fence = rec.fence.clone().unwrap_or_default();
    assert!(fence.contains("process stopped over ssh (pid"), "{rec:?}");
    let deadline = Instant::now() + LIMIT;
    while srv.is_running() {
        assert!(Instant::now() < deadline, "old primary still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.wait_more(30).await.expect("writes resume");
    let live: Vec<i64> = env.node_ids[1..].to_vec();
    let primary = env
        .check_converged(&live, &w.acked())
        .await
        .expect("converged");
    assert_eq!(Some(primary), rec.new_primary);

    let s = std::sync::Arc::new(env);
    let e2 = s.clone();
    tokio::task::spawn_blocking(move || e2.server(old).restart().expect("restart"))
        .await
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    let fate = loop {
        let fate =
            s.ha.shared()
                .failover(rec.id)
                .and_then(|r| r.old_primary_fate)
                .unwrap_or_default();
        if fate.starts_with("rejoined") || fate.starts_with("kept out") {
            break fate;
        }
        assert!(Instant::now() < deadline, "fate not decided: {fate}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("failover: {rec:?}\nold primary: {fate}");
    let acked = w.finish().await;
    s.check_converged(&s.node_ids, &acked)
        .await
        .expect("converged with the old primary back (read-only)");
    s.stop().await;
    drop(sshd);
}
