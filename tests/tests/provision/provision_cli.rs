//! `kunlunctl cluster create --wait` end to end: the real daemon (SQLite, job runner on) and
//! the real CLI install an `rbr` cluster of 1 shard x 2 nodes + 1 compute node over a private
//! sshd on 127.0.0.51 (this very host), the CLI prints how to connect, the primary answers as
//! the manager user; then `kunlunctl cluster rm ID --wait` removes it and nothing is left.
//! `--json` with `--wait` or `job watch` prints the job and exits like `job watch`: 0 done,
//! 1 failed.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use kunlun_tests::cli::{ctl, workdir};
use kunlun_tests::daemon::Daemon;
use kunlun_tests::{free_port_block, Sshd};
use serde_json::{json, Value};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 51);

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
    let sshd = Sshd::start_on(IP).expect("sshd on 127.0.0.51");
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
        ("storage", free_port_block(IpAddr::V4(IP), 41)),
        ("computer", free_port_block(IpAddr::V4(IP), 41)),
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
        out.stdout.contains("mariadb -h 127.0.0.51"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("psql -h 127.0.0.51"), "{}", out.stdout);
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

    // `--json job watch` of the finished create job: the job on stdout, exit 0.
    let jobs = ctl(
        &base,
        &["--json", "job", "list", "--type", "create_cluster"],
    )
    .ok()
    .json();
    let job_id = jobs[0]["id"].as_i64().expect("create job id").to_string();
    let watched = ctl(&base, &["--json", "job", "watch", &job_id]).ok().json();
    assert_eq!(watched["status"], "done", "{watched}");

    let out = ctl(&base, &["cluster", "rm", &id.to_string(), "--wait"]);
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    assert!(out.stdout.contains("deleted"), "{}", out.stdout);
    let list = ctl(&base, &["--json", "cluster", "list"]).ok().json();
    assert_eq!(list, json!([]));
    assert!(!data.join("kunlun").exists(), "instance dirs removed");
    daemon.stop();
}

/// A job that fails (no storage machine is registered, so create_cluster cannot place its
/// shard): `--json ... --wait` and `--json job watch` print the failed job on stdout and exit 1
/// like `job watch` does, with the reason on stderr; nothing is left behind.
#[test]
fn json_wait_of_a_failed_job_prints_the_job_and_exits_1() {
    let wd = workdir();
    let mut daemon = Daemon::start(wd.path(), &wd.path().join("meta.db")).expect("daemon");
    let base = daemon.url();

    let out = ctl(
        &base,
        &[
            "--json",
            "cluster",
            "create",
            "nowhere",
            "--shards",
            "1",
            "--nodes",
            "1",
            "--comps",
            "1",
            "--wait",
            "--wait-timeout",
            "120",
        ],
    );
    assert_eq!(out.code, 1, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    let job = out.json();
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["job_type"], "create_cluster", "{job}");
    let why = job["memo"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("no running storage machine"), "{job}");
    assert!(
        out.stderr.contains("error: job") && out.stderr.contains("(job_failed)"),
        "{out:#?}"
    );
    assert!(out.stderr.contains("kunlunctl job show"), "hint: {out:#?}");
    let id = job["id"].as_i64().expect("job id").to_string();

    // `job watch` of the same job: the same exit code with and without --json.
    let watched = ctl(&base, &["--json", "job", "watch", &id]);
    assert_eq!(watched.code, 1, "{watched:#?}");
    assert_eq!(watched.json(), job, "the same finished job");
    let plain = ctl(&base, &["job", "watch", &id]);
    assert_eq!(plain.code, 1, "{plain:#?}");
    assert!(plain.stdout.is_empty(), "{plain:#?}");
    assert!(plain.stderr.contains(&why), "{plain:#?}");

    let clusters = ctl(&base, &["--json", "cluster", "list"]).ok().json();
    assert_eq!(clusters, json!([]), "nothing was created");
    daemon.stop();
}
