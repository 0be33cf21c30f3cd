//! Instance control end to end: the real daemon (SQLite, job runner and HA monitor on) and the
//! real `kunlunctl` over a private sshd on 127.0.0.71 install an `rbr` cluster of 1 shard x 2
//! nodes + 1 compute node; then `kunlunctl node stop` of the replica (its process gone, its
//! row `manual_stop`, and HA over several rounds neither fails over, alarms nor restarts its
//! replication), `node start` (it runs, both replication threads run, a row written on the
//! primary while it was down and one written after arrive), `node stop` of the primary without
//! `--force` (409, it still runs), and the Emit `control_instance` restart of the compute node
//! (a new postmaster that answers SQL); `node stop --force` of the primary (HA fails the shard
//! over) and `node start` of it (left `inactive` for HA, which rejoins it as a replica). Every
//! control is a `control_instance` job row.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use kunlun_core::accounts::{COMP_USER, MANAGER_USER};
use kunlun_meta::store::repo::secrets;
use kunlun_meta::{Store, StoreConfig};
use kunlun_tests::cli::{ctl, workdir};
use kunlun_tests::daemon::Daemon;
use kunlun_tests::emit::Emit;
use kunlun_tests::world::pid_in;
use kunlun_tests::{free_port_block, Sshd};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 71);

fn get(url: &str) -> Value {
    let r = reqwest::blocking::get(url).expect("request");
    assert_eq!(r.status().as_u16(), 200, "GET {url}");
    r.json().expect("JSON")
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .post(url)
        .json(body)
        .send()
        .expect("request");
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

fn alive(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(kunlun_tests::pid_running)
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::new(IpAddr::V4(IP), port),
        Duration::from_millis(300),
    )
    .is_ok()
}

async fn conn(port: u16, pw: &str) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(IP.to_string())
        .tcp_port(port)
        .user(Some(MANAGER_USER))
        .pass(Some(pw))
        .prefer_socket(false);
    tokio::time::timeout(Duration::from_secs(10), mysql_async::Conn::new(opts))
        .await
        .expect("connect within 10 s")
        .expect("connect")
}

/// `(Slave_IO_Running, Slave_SQL_Running)`.
async fn threads(c: &mut mysql_async::Conn) -> (String, String) {
    let row: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await.expect("status");
    let Some(r) = row else {
        return (String::new(), String::new());
    };
    let get = |name: &str| -> String {
        r.columns_ref()
            .iter()
            .position(|x| x.name_str() == name)
            .and_then(|i| r.as_ref(i))
            .map(|v| match v {
                mysql_async::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default()
    };
    (get("Slave_IO_Running"), get("Slave_SQL_Running"))
}

/// Waits (60 s) until the node on `port` has row `id` in `ctl.t`.
async fn arrives(port: u16, pw: &str, id: i64) {
    let mut c = conn(port, pw).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: Option<i64> = c
            .query_first(format!("SELECT COUNT(*) FROM ctl.t WHERE id = {id}"))
            .await
            .unwrap_or(None);
        if n == Some(1) {
            return;
        }
        assert!(Instant::now() < deadline, "row {id} never reached {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status of the storage node on `port` as the API shows it.
fn node_status(base: &str, shard: i64, port: u16) -> String {
    let nodes = get(&format!("{base}/v1/shards/{shard}/nodes"));
    nodes
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["port"] == port)
        .and_then(|n| n["status"].as_str())
        .expect("the node")
        .to_string()
}

#[test]
fn stop_start_restart_of_instances_over_the_cli_and_emit() {
    let sshd = Sshd::start_on(IP).expect("sshd on 127.0.0.71");
    let wd = workdir();
    std::fs::set_permissions(
        wd.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod");
    let data = wd.path().join("instances");
    std::fs::create_dir(&data).expect("data dir");
    let sqlite = wd.path().join("meta.db");
    let mut daemon = Daemon::start(wd.path(), &sqlite).expect("daemon");
    let base = daemon.url();
    for ty in ["storage", "computer"] {
        let port = free_port_block(IpAddr::V4(IP), 41);
        let (st, v) = post(
            &format!("{base}/v1/machines"),
            &json!({
                "hostaddr": IP.to_string(), "machine_type": ty,
                "ssh_port": sshd.port(), "ssh_user": sshd.user(),
                "ssh_key_path": sshd.user_key().private.display().to_string(),
                "data_dirs": [data.display().to_string()],
                "port_range": format!("{}-{}", port, port + 40),
            }),
        );
        assert_eq!(st, 201, "{v}");
    }
    let out = ctl(
        &base,
        &[
            "cluster",
            "create",
            "ctl1",
            "--shards",
            "1",
            "--nodes",
            "2",
            "--comps",
            "1",
            "--innodb-size-mb",
            "32",
            "--max-connections",
            "100",
            "--wait",
            "--wait-timeout",
            "300",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    let cid = ctl(&base, &["--json", "cluster", "list"]).ok().json()[0]["id"]
        .as_i64()
        .expect("cluster id");
    let detail = ctl(&base, &["--json", "cluster", "show", &cid.to_string()])
        .ok()
        .json();
    let shard = detail["shards"][0]["shard"]["id"].as_i64().expect("shard");
    let nodes = detail["shards"][0]["nodes"].as_array().expect("nodes");
    let port_of = |state: &str| -> u16 {
        nodes
            .iter()
            .find(|n| n["member_state"] == state)
            .and_then(|n| n["port"].as_u64())
            .unwrap_or_else(|| panic!("a {state} in {detail}")) as u16
    };
    let (primary, replica) = (port_of("source"), port_of("replica"));
    let comp = detail["comp_nodes"][0]["port"].as_u64().expect("comp") as u16;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let secret = rt.block_on(async {
        let store = Store::open(&StoreConfig::sqlite(&sqlite))
            .await
            .expect("the daemon's store");
        store
            .read(async |tx| secrets::get(tx, cid).await)
            .await
            .expect("secrets")
    });
    let pw = secret.manager_pwd.clone();
    rt.block_on(async {
        let mut p = conn(primary, &pw).await;
        p.query_drop("CREATE DATABASE ctl; CREATE TABLE ctl.t (id BIGINT PRIMARY KEY); INSERT INTO ctl.t VALUES (1)")
            .await
            .expect("set-up on the primary");
        arrives(replica, &pw, 1).await;
    });
    let replica_pid_file = data.join(format!("kunlun/storage_{replica}/run/mysqld.pid"));
    let replica_pid = pid_in(&replica_pid_file).expect("the replica's pid");
    let addr = |port: u16| format!("{IP}:{port}");

    // Stop the replica.
    let rounds = || {
        get(&format!("{base}/v1/ha"))["stats"]["rounds"]
            .as_u64()
            .unwrap_or(0)
    };
    let out = ctl(
        &base,
        &["--json", "--timeout", "200", "node", "stop", &addr(replica)],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    let job = out.json();
    assert_eq!(job["job_type"], "control_instance", "{job}");
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(
        job["job_info"],
        json!({"host": IP.to_string(), "port": replica, "action": "stop", "force": false})
    );
    assert_eq!(job["memo"]["outcome"], "stopped", "{job}");
    assert_eq!(job["memo"]["status"], "manual_stop", "{job}");
    assert!(!alive(replica_pid), "the replica's mariadbd is gone");
    assert!(!replica_pid_file.exists(), "its pid file is removed");
    assert!(!listening(replica));
    assert_eq!(node_status(&base, shard, replica), "manual_stop");

    // A write on the primary meanwhile (semi-sync falls back to async after its timeout),
    // and several HA rounds: the stopped replica is left alone.
    rt.block_on(async {
        let mut p = conn(primary, &pw).await;
        tokio::time::timeout(
            Duration::from_secs(60),
            p.query_drop("INSERT INTO ctl.t VALUES (2)"),
        )
        .await
        .expect("the write ends")
        .expect("write while the replica is down");
    });
    let r0 = rounds();
    let deadline = Instant::now() + Duration::from_secs(90);
    while rounds() < r0 + 4 {
        assert!(Instant::now() < deadline, "HA ran no rounds");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ha = get(&format!("{base}/v1/ha"));
    assert_eq!(ha["alarms"], json!({}), "no alarm: {ha}");
    assert_eq!(ha["stats"]["failovers"], 0, "{ha}");
    assert_eq!(ha["stats"]["replication_restarts"], 0, "{ha}");
    assert_eq!(ha["stats"]["replicas_repointed"], 0, "{ha}");
    assert_eq!(get(&format!("{base}/v1/failovers")), json!([]));
    assert!(!listening(replica), "nothing started it again");
    assert_eq!(node_status(&base, shard, replica), "manual_stop");
    assert_eq!(port_of("source"), primary);

    // Start it: it runs, replicates, and catches up.
    let out = ctl(
        &base,
        &[
            "--json",
            "--timeout",
            "200",
            "node",
            "start",
            &addr(replica),
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    let job = out.json();
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["memo"]["outcome"], "started", "{job}");
    assert_eq!(job["memo"]["replication"], "running", "{job}");
    assert_eq!(job["memo"]["status"], "active", "{job}");
    let pid = pid_in(&replica_pid_file).expect("a new pid file");
    assert!(alive(pid) && pid != replica_pid);
    assert_eq!(node_status(&base, shard, replica), "active");
    rt.block_on(async {
        let mut r = conn(replica, &pw).await;
        assert_eq!(
            threads(&mut r).await,
            ("Yes".to_string(), "Yes".to_string())
        );
        arrives(replica, &pw, 2).await;
        let mut p = conn(primary, &pw).await;
        p.query_drop("INSERT INTO ctl.t VALUES (3)")
            .await
            .expect("write");
        arrives(replica, &pw, 3).await;
    });

    // The primary is refused without --force, and keeps running.
    let primary_pid =
        pid_in(&data.join(format!("kunlun/storage_{primary}/run/mysqld.pid"))).expect("pid");
    let out = ctl(&base, &["node", "stop", &addr(primary)]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("primary") && out.stderr.contains("(conflict)"),
        "{out:#?}"
    );
    assert!(alive(primary_pid) && listening(primary));
    assert_eq!(node_status(&base, shard, primary), "active");

    // Emit (as XPanel sends it): restart the compute node; a new postmaster answers SQL.
    let pg_pid_file = data.join(format!("kunlun/compute_{comp}/data/postmaster.pid"));
    let pg_pid = pid_in(&pg_pid_file).expect("the postmaster's pid");
    let done = Emit::new(&base).run_done(
        "control_instance",
        json!({"hostaddr": IP.to_string(), "port": comp.to_string(), "control": "restart",
               "machine_type": "computer", "cluster_id": cid.to_string()}),
        Duration::from_secs(60),
    );
    eprintln!("emit control_instance: {}", done.text);
    let new_pid = pid_in(&pg_pid_file).expect("a new postmaster pid");
    assert!(new_pid != pg_pid && alive(new_pid) && !alive(pg_pid));
    let sql = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-X", "-At", "-h", &IP.to_string(), "-p", &comp.to_string()])
        .args(["-U", COMP_USER, "-d", "postgres", "-c", "SELECT 41 + 1"])
        .env("PGPASSWORD", &secret.comp_pwd)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("psql");
    assert_eq!(
        String::from_utf8_lossy(&sql.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&sql.stderr)
    );

    // With --force the primary is stopped and its row left active: HA sees a dead primary and
    // fails the shard over to the replica; started again, the old primary is HA's to rejoin.
    // HA only fails over what it can prove lossless: the primary's last probe must show its
    // semi-sync acked again by the replica started above (until then HA rightly refuses).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ha = get(&format!("{base}/v1/ha"));
        let acked = ha["nodes"].as_array().is_some_and(|ns| {
            ns.iter().any(|n| {
                n["is_primary"] == true
                    && n["probe"]["semi_sync_master_active"] == true
                    && n["probe"]["semi_sync_clients"].as_i64() >= Some(1)
            })
        });
        if acked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the primary's semi-sync is not acked again: {ha}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ctl(
        &base,
        &[
            "--json",
            "--timeout",
            "200",
            "node",
            "stop",
            "--force",
            &addr(primary),
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    let job = out.json();
    assert_eq!(job["memo"]["outcome"], "stopped", "{job}");
    assert_eq!(job["memo"]["primary"], true, "{job}");
    assert_eq!(job["memo"]["status"], "active", "{job}");
    assert!(!alive(primary_pid));
    let deadline = Instant::now() + Duration::from_secs(120);
    let rec = loop {
        let recs = get(&format!("{base}/v1/failovers"));
        if let Some(r) = recs
            .as_array()
            .and_then(|a| a.iter().find(|r| r["outcome"] == "promoted"))
        {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no failover after the forced stop: {recs}\n{}",
            get(&format!("{base}/v1/ha"))
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!("failover after the forced stop: {rec}");
    let member_state = |port: u16| -> String {
        get(&format!("{base}/v1/shards/{shard}/nodes"))
            .as_array()
            .and_then(|a| a.iter().find(|n| n["port"] == port).cloned())
            .and_then(|n| n["member_state"].as_str().map(str::to_string))
            .expect("the node")
    };
    assert_eq!(member_state(replica), "source");
    // The failover took the old primary out (`inactive`). The instance keeper starts a
    // failed-over old primary HA waits for, and HA rejoins it at its next probe: on a loaded
    // machine that can all happen before this read, and then it is an `active` replica whose
    // failover record says HA rejoined it (the fate is stored right after the status).
    if node_status(&base, shard, primary) != "inactive" {
        let id = rec["id"].as_i64().expect("record id");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = get(&format!("{base}/v1/failovers/{id}"));
            let fate = r["old_primary_fate"].as_str().unwrap_or_default();
            if fate.starts_with("rejoined as replica") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the old primary is {} but HA did not rejoin it: {r}",
                node_status(&base, shard, primary)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(node_status(&base, shard, primary), "active");
        assert_eq!(member_state(primary), "replica");
    }
    // HA owns the old primary now (`inactive` once it marked it kept out). The start runs it;
    // its status is HA's to change: HA may already have rejoined it (`active`) by the time
    // the job reads the row back. That a start re-activates only `manual_stop` is the unit
    // test of `instances::control`'s status rules.
    assert_ne!(node_status(&base, shard, primary), "manual_stop");
    let out = ctl(
        &base,
        &[
            "--json",
            "--timeout",
            "200",
            "node",
            "start",
            &addr(primary),
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    let job = out.json();
    let after = job["memo"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        after == "inactive" || after == "active",
        "a started old primary is HA's, never manual_stop: {job}"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while node_status(&base, shard, primary) != "active" {
        assert!(
            Instant::now() < deadline,
            "the old primary never rejoined: {}",
            get(&format!("{base}/v1/ha"))
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(member_state(primary), "replica");
    rt.block_on(async {
        let mut p = conn(replica, &pw).await;
        p.query_drop("INSERT INTO ctl.t VALUES (4)")
            .await
            .expect("write on the new primary");
        arrives(primary, &pw, 4).await;
    });

    // Every control is an audited job row (the refusal none).
    let jobs = ctl(
        &base,
        &["--json", "job", "list", "--type", "control_instance"],
    )
    .ok()
    .json();
    assert_eq!(jobs.as_array().map(Vec::len), Some(5), "{jobs}");

    let out = ctl(&base, &["cluster", "rm", &cid.to_string(), "--wait"]);
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    daemon.stop();
}
