//! End-to-end tests of the real `cluster-mgr` binary: the MySQL metadata store going away and
//! coming back while the daemon runs, start-up before the store exists, bad config lines, the
//! no-argument defaults, and graceful shutdown on SIGTERM/SIGINT.
//!
//! Invariant: every process started here is owned by a value that kills it by PID on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kunlun_tests::cli::{bin, free_port};
use kunlun_tests::daemon::Daemon;
use kunlun_tests::MariaDb;
use nix::sys::signal::{kill, Signal};
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// Starts `cluster-mgr ARGS` in `dir` (serving on `port`) with its output in
/// `dir/cluster-mgr.log`, without waiting.
fn spawn(dir: &Path, args: &[&str], port: u16) -> Daemon {
    Daemon::command(dir, port)
        .args(args)
        .spawn()
        .expect("spawn cluster-mgr")
}

fn http() -> Client {
    kunlun_tests::daemon::http(Duration::from_secs(10))
}

/// A cnf for the MySQL backend on `db`, HTTP on `port`.
fn mysql_cnf(dir: &Path, db: &MariaDb, port: u16) -> PathBuf {
    let path = dir.join("cluster_mgr.cnf");
    let text = format!(
        "# e2e test\nmeta_backend = mysql\nmeta_group_seeds = 127.0.0.1:{}\nmeta_user = root\nmeta_pwd =\n\
         meta_database = kl_e2e_daemon\nbrpc_http_port = {port}\nmysql_connect_timeout = 2\nlog_format = json\n",
        db.port()
    );
    std::fs::write(&path, text).expect("write cnf");
    path
}

fn machine() -> Value {
    // No sshd there: stored unprobed (`dead`; the liveness check keeps it so).
    json!({"hostaddr": "127.0.0.9", "machine_type": "storage", "ssh_key_path": "/root/.ssh/id", "data_dirs": ["/data/kl"], "probe": false})
}

#[test]
fn mysql_store_outage_gives_503_and_the_daemon_recovers_by_itself() {
    let db = MariaDb::start().expect("start MariaDB");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let cnf = mysql_cnf(dir.path(), &db, port);
    let mut d = spawn(
        dir.path(),
        &["--config", cnf.to_str().expect("utf-8 path")],
        port,
    );
    let http = http();
    d.wait_for(&http, "/healthz", Duration::from_secs(60), |st, h| {
        st == 200 && h["store"] == "mysql"
    });

    let r = http
        .post(d.url_for("/v1/machines"))
        .json(&machine())
        .send()
        .expect("POST");
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().expect("json")["id"].as_i64().expect("id");

    db.stop().expect("stop MariaDB");
    let body = d.wait_for(&http, "/v1/machines", Duration::from_secs(30), |st, _| {
        st == 503
    });
    assert_eq!(body["code"], "store_unavailable", "{body}");
    let h = d.wait_for(&http, "/healthz", Duration::from_secs(30), |st, _| {
        st == 503
    });
    assert_eq!(h["status"], "degraded");
    assert!(h["reason"].as_str().is_some_and(|r| !r.is_empty()), "{h}");
    let r = http
        .post(d.url_for("/v1/machines"))
        .json(&machine())
        .send()
        .expect("POST");
    assert_eq!(r.status().as_u16(), 503);

    db.restart().expect("restart MariaDB");
    d.wait_for(&http, "/healthz", Duration::from_secs(60), |st, h| {
        st == 200 && h["status"] == "ok"
    });
    let list = d.wait_for(&http, "/v1/machines", Duration::from_secs(30), |st, _| {
        st == 200
    });
    assert_eq!(list[0]["id"], id, "the machine survived the outage: {list}");
    let (st, one) = d.get(&http, &format!("/v1/machines/{id}"));
    assert_eq!((st, &one["hostaddr"]), (200, &json!("127.0.0.9")));

    let status = d.stop_with(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{}", d.log_text());
    assert!(
        !d.log_text().contains("meta_pwd"),
        "no password material in the log"
    );
}

#[test]
fn daemon_started_before_its_store_serves_degraded_then_recovers() {
    let db = MariaDb::start().expect("start MariaDB");
    db.stop().expect("stop MariaDB");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let cnf = mysql_cnf(dir.path(), &db, port);
    let mut d = spawn(
        dir.path(),
        &["--config", cnf.to_str().expect("utf-8 path")],
        port,
    );
    let http = http();
    let h = d.wait_for(&http, "/healthz", Duration::from_secs(60), |st, _| {
        st == 503
    });
    assert_eq!(h["status"], "degraded", "{h}");
    let (st, body) = d.get(&http, "/v1/machines");
    assert_eq!(
        (st, &body["code"]),
        (503, &json!("store_unavailable")),
        "{body}"
    );

    db.restart().expect("start MariaDB again");
    d.wait_for(&http, "/healthz", Duration::from_secs(60), |st, _| {
        st == 200
    });
    let r = http
        .post(d.url_for("/v1/machines"))
        .json(&machine())
        .send()
        .expect("POST");
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(
        d.stop_with(Signal::SIGINT).code(),
        Some(0),
        "{}",
        d.log_text()
    );
    assert!(
        d.log_text().contains("retrying"),
        "each failed attempt is logged"
    );
}

/// Runs `cluster-mgr ARGS` expecting it to exit at once; returns (exit code, stderr).
fn run_to_exit(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin("cluster-mgr"))
        .args(args)
        .current_dir(dir)
        .env_remove("KUNLUN_CLUSTER_MGR_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run cluster-mgr");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_lines_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "# ok\nbrpc_http_port = 9000\nno_such_key = 1\n",
            3,
            "unknown key",
        ),
        ("brpc_http_port = 80\n", 1, "out of range 1000..=65535"),
        ("\n\ncheck_shard_interval = fast\n", 3, "is not a number"),
        ("meta_host = 10.0.0.1\n", 1, "meta_group_seeds = host:port"),
        ("meta_backend\n", 1, "expected `name = value`"),
        ("meta_backend = mysql\n", 1, "requires meta_group_seeds"),
    ];
    for (i, (text, line, reason)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.cnf"));
        std::fs::write(&path, text).expect("write cnf");
        let p = path.to_str().expect("utf-8 path");
        let (code, stderr) = run_to_exit(dir.path(), &["--config", p]);
        assert_eq!(code, Some(2), "case {i}: {stderr}");
        assert!(
            stderr.contains(&format!("{p}:{line}: ")),
            "case {i}: {stderr}"
        );
        assert!(stderr.contains(reason), "case {i}: {stderr}");
    }
    let (code, stderr) = run_to_exit(dir.path(), &["--http-port", "abc"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--http-port: brpc_http_port"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "a refused config starts nothing"
    );
}

#[test]
fn sqlite_daemon_stops_cleanly_on_sigterm_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = http();
    let mut ids = Vec::new();
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let port = free_port();
        let ps = port.to_string();
        let mut d = spawn(
            dir.path(),
            &["--http-port", &ps, "--sqlite-path", "meta/cm.sqlite3"],
            port,
        );
        let h = d.wait_for(&http, "/healthz", Duration::from_secs(60), |st, _| {
            st == 200
        });
        assert_eq!(h["store"], "sqlite");
        if ids.is_empty() {
            let r = http
                .post(d.url_for("/v1/machines"))
                .json(&machine())
                .send()
                .expect("POST");
            assert_eq!(r.status().as_u16(), 201);
            ids.push(r.json::<Value>().expect("json")["id"].clone());
        } else {
            let (st, list) = d.get(&http, "/v1/machines");
            assert_eq!(
                (st, &list[0]["id"]),
                (200, &ids[0]),
                "data kept across restarts"
            );
        }
        let status = d.stop_with(sig);
        assert_eq!(status.code(), Some(0), "{sig}: {}", d.log_text());
        assert!(d.log_text().contains("cluster-mgr stopped"));
    }
    assert!(dir.path().join("meta/cm.sqlite3").exists());
}

#[test]
fn no_arguments_means_sqlite_under_data_and_port_8010() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(
        std::net::TcpListener::bind("127.0.0.1:8010").is_ok(),
        "port 8010 is in use by another process; this test needs it free"
    );
    let mut d = spawn(dir.path(), &[], 8010);
    let h = d.wait_for(&http(), "/healthz", Duration::from_secs(60), |st, _| {
        st == 200
    });
    assert_eq!(h["store"], "sqlite");
    assert!(dir.path().join("data/cluster_mgr.sqlite3").exists());
    assert_eq!(d.stop_with(Signal::SIGTERM).code(), Some(0));
    let log = d.log_text();
    assert!(
        log.contains("sqlite:./data/cluster_mgr.sqlite3") && log.contains("127.0.0.1:8010"),
        "{log}"
    );
}

/// A request held up by a frozen store (SIGSTOP) is in flight when SIGTERM arrives: the daemon
/// stops accepting connections at once, still answers that request once the store thaws, then
/// exits 0.
#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let db = MariaDb::start().expect("start MariaDB");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let cnf = mysql_cnf(dir.path(), &db, port);
    let mut d = spawn(
        dir.path(),
        &["--config", cnf.to_str().expect("utf-8 path")],
        port,
    );
    let http = http();
    d.wait_for(&http, "/healthz", Duration::from_secs(60), |st, _| {
        st == 200
    });

    db.pause().expect("SIGSTOP MariaDB");
    let url = d.url_for("/v1/machines");
    let in_flight = std::thread::spawn(move || {
        let slow = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        slow.get(url).send().map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_millis(500));
    let pid = d.pid();
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    std::thread::sleep(Duration::from_millis(500));
    let refused = Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client")
        .get(d.url_for("/healthz"))
        .send();
    assert!(
        refused.is_err(),
        "no new request is accepted after SIGTERM: {refused:?}"
    );
    db.resume().expect("SIGCONT MariaDB");

    let answered = in_flight.join().expect("request thread");
    let status = answered
        .unwrap_or_else(|e| panic!("the request in flight was cut off: {e}\n{}", d.log_text()));
    assert!(
        status == 200 || status == 503,
        "in-flight request answered {status}"
    );
    let st = d.stop_with(Signal::SIGTERM);
    assert_eq!(st.code(), Some(0), "{}", d.log_text());
}
