//! `kunlunctl cluster create --wait` end to end: the real daemon (SQLite, job runner on) and
//! the real CLI install an `rbr` cluster of 1 shard x 2 nodes + 1 compute node over a private
//! sshd on 127.0.0.2 (this very host), the CLI prints how to connect, the primary answers as
//! the manager user; then `kunlunctl cluster rm ID --wait` removes it and nothing is left.

mod cli_support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use cli_support::{ctl, workdir, Daemon};
use kunlun_tests::{free_port, Sshd};
use serde_json::{json, Value};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .post(url)
        .json(body)
        .send()
        .expect("request");
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

#[test]
fn cluster_create_wait_installs_a_cluster_and_delete_removes_it() {
    let sshd = Sshd::start_on(IP).expect("sshd on 127.0.0.2");
    let wd = workdir();
    std::fs::set_permissions(
        wd.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod");
    let data = wd.path().join("instances");
    std::fs::create_dir(&data).expect("data dir");
    let mut daemon = Daemon::start(wd.path(), &wd.path().join("meta.db")).expect("daemon");
    let base = daemon.url();
    for (ty, port) in [
        ("storage", free_port(IpAddr::V4(IP)).min(31_000)),
        ("computer", free_port(IpAddr::V4(IP)).min(31_000)),
    ] {
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

    let started = Instant::now();
    let out = ctl(
        &base,
        &[
            "cluster",
            "create",
            "e2e1",
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
    eprintln!("cluster create --wait took {:?}", started.elapsed());
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    assert!(out.stdout.contains("cluster e2e1"), "{}", out.stdout);
    assert!(
        out.stdout.contains("mariadb -h 127.0.0.2"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("psql -h 127.0.0.2"), "{}", out.stdout);
    assert!(
        out.stderr.contains("done"),
        "stages are shown: {}",
        out.stderr
    );

    let list = ctl(&base, &["--json", "cluster", "list"]).ok().json();
    let id = list[0]["id"].as_i64().expect("cluster id");
    let detail = ctl(&base, &["--json", "cluster", "show", &id.to_string()])
        .ok()
        .json();
    let nodes = detail["shards"][0]["nodes"]
        .as_array()
        .expect("nodes")
        .len();
    assert_eq!(nodes, 2);
    assert!(
        !detail.to_string().contains("passwd"),
        "no password in the API output"
    );

    let out = ctl(&base, &["cluster", "rm", &id.to_string(), "--wait"]);
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    assert!(out.stdout.contains("deleted"), "{}", out.stdout);
    let list = ctl(&base, &["--json", "cluster", "list"]).ok().json();
    assert_eq!(list, json!([]));
    assert!(!data.join("kunlun").exists(), "instance dirs removed");
    daemon.stop();
}
