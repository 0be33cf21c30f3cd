//! Leadership among real `cluster-mgr` processes sharing one MySQL metadata store (a MariaDB
//! started by the harness): exactly one leads; a follower serves the API but runs no jobs; a
//! follower takes over after the leader is killed (within the lease plus one renew interval)
//! and runs the jobs; a leader stopped by SIGTERM hands over at once (well under the lease); a
//! leader whose lease is taken stops its actors and starts them again when it leads again.
//!
//! Invariant: every process started here is owned by a value that kills it by PID on drop.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kunlun_tests::daemon::Daemon;
use kunlun_tests::MariaDb;

use nix::sys::signal::{kill, Signal};
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// The lease of the daemons under test and its renew interval (a third of it).
const LEASE_SECS: f64 = 3.0;
const RENEW_SECS: f64 = 1.0;
const META_DB: &str = "kl_leader_failover";

/// Starts a daemon in its own folder with a cnf for the shared MySQL store (no wait).
fn spawn(name: &'static str, root: &Path, db: &MariaDb) -> Daemon {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("daemon dir");
    let port = kunlun_tests::free_port([127, 0, 0, 1].into());
    let cnf = dir.join("cluster_mgr.cnf");
    let text = format!(
        "meta_backend = mysql\nmeta_group_seeds = 127.0.0.1:{}\nmeta_user = root\nmeta_pwd =\n\
         meta_database = {META_DB}\nbrpc_http_port = {port}\nmysql_connect_timeout = 2\n\
         leader_lease_secs = {LEASE_SECS}\nmachine_check_interval = 0\nlog_format = json\n",
        db.port()
    );
    std::fs::write(&cnf, text).expect("write cnf");
    Daemon::command(&dir, port)
        .name(name)
        .config(&cnf)
        .spawn()
        .expect("spawn cluster-mgr")
}

/// `GET /v1/leader` of `d`.
fn leader(d: &Daemon, http: &Client) -> Value {
    d.get(http, "/v1/leader").1
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// Accepts a `create_cluster` job on `d`; with no machine registered it can only fail, and
/// only inside the job runner.
fn post_job(http: &Client, d: &Daemon, name: &str) -> i64 {
    let r = http
        .post(d.url_for("/v1/clusters"))
        .json(&json!({"name": name, "ha_mode": "no_rep", "shards": 1, "nodes": 1, "comps": 1}))
        .send()
        .expect("POST /v1/clusters");
    let st = r.status().as_u16();
    let body: Value = r.json().unwrap_or(Value::Null);
    assert_eq!(st, 202, "{}: {body}", d.name());
    body["job_id"].as_i64().expect("job_id")
}

fn job_status(http: &Client, d: &Daemon, id: i64) -> String {
    let (st, j) = d.get(http, &format!("/v1/jobs/{id}"));
    assert_eq!(st, 200, "{j}");
    j["status"].as_str().unwrap_or_default().to_string()
}

/// `cluster_mgr_nodes` as `port → member_state`.
fn mgr_rows(db: &MariaDb) -> Vec<(u16, String)> {
    db.rows(&format!(
        "SELECT port, member_state FROM {META_DB}.cluster_mgr_nodes ORDER BY port"
    ))
    .expect("read cluster_mgr_nodes")
    .into_iter()
    .map(|r| (r[0].parse().expect("port"), r[1].clone()))
    .collect()
}

fn state_of(rows: &[(u16, String)], port: u16) -> &str {
    rows.iter()
        .find(|(p, _)| *p == port)
        .map(|(_, s)| s.as_str())
        .unwrap_or("absent")
}

#[test]
fn one_leader_runs_jobs_a_follower_takes_over_after_a_kill_and_at_once_after_sigterm() {
    let _alone = super::exclusive();
    let db = MariaDb::start().expect("start MariaDB");
    let root = tempfile::tempdir().expect("temp dir");
    let http = http();
    let limit = Duration::from_secs(60);

    // A alone becomes leader as soon as its store is open.
    let mut a = spawn("a", root.path(), &db);
    let la = a.wait_for(&http, "/v1/leader", limit, |st, v| {
        st == 200 && v["role"] == "leader"
    });
    let a_id = la["this_instance"].as_str().expect("holder").to_string();
    assert!(a_id.starts_with(&format!("127.0.0.1:{}/", a.port)), "{la}");
    assert_eq!(la["leader"], json!(a_id));
    let epoch_a = la["epoch"].as_i64().expect("epoch");
    let h = a.wait_for(&http, "/healthz", limit, |st, _| st == 200);
    assert_eq!(h["role"], "leader", "{h}");

    // B joins as a follower of A; exactly one leader.
    let mut b = spawn("b", root.path(), &db);
    let lb = b.wait_for(&http, "/v1/leader", limit, |st, v| {
        st == 200 && v["role"] == "follower" && v["leader"].is_string()
    });
    assert_eq!(lb["leader"], json!(a_id), "{lb}");
    assert_eq!(lb["epoch"], json!(epoch_a), "{lb}");
    assert_ne!(lb["this_instance"], json!(a_id));
    let h = b.wait_for(&http, "/healthz", limit, |st, _| st == 200);
    assert_eq!(h["role"], "follower", "a follower is healthy: {h}");
    assert_eq!(leader(&a, &http)["role"], "leader");
    let rows = mgr_rows(&db);
    assert_eq!(
        (state_of(&rows, a.port), state_of(&rows, b.port)),
        ("source", "replica"),
        "{rows:?}"
    );
    // `kunlunctl leader` asked of the follower names the leader.
    let t = kunlun_tests::cli::ctl(&b.url(), &["leader"]).ok().stdout;
    assert!(
        t.contains("role:          follower\n") && t.contains(&format!("leader:        {a_id}\n")),
        "{t}"
    );
    let j = kunlun_tests::cli::ctl(&a.url(), &["--json", "leader"])
        .ok()
        .json();
    assert_eq!((&j["role"], &j["leader"]), (&json!("leader"), &json!(a_id)));
    // The follower serves reads; its HA monitor does not run.
    assert_eq!(b.get(&http, "/v1/jobs").0, 200);
    assert_eq!(b.get(&http, "/v1/ha").0, 503);
    a.wait_for(&http, "/v1/ha", limit, |st, _| st == 200);

    // A job accepted on the follower is run by the leader.
    let j1 = post_job(&http, &b, "lf_one");
    b.wait_for(&http, &format!("/v1/jobs/{j1}"), limit, |_, j| {
        j["status"] == "failed"
    });

    // Freeze the leader, accept a job on the follower, then kill the leader: the job waits,
    // untouched, while B follows, and B runs it once it leads.
    kill(a.pid(), Signal::SIGSTOP).expect("SIGSTOP leader");
    let frozen = Instant::now();
    let j2 = post_job(&http, &b, "lf_two");
    a.kill9();
    let takeover = loop {
        let l = leader(&b, &http);
        let st = job_status(&http, &b, j2);
        if l["role"] == "leader" {
            break frozen.elapsed();
        }
        assert_eq!(st, "not_started", "a follower never runs a job: {l}");
        assert!(
            frozen.elapsed() < Duration::from_secs(30),
            "B never took over: {l}\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "takeover after the leader was frozen and killed: {} ms (lease {LEASE_SECS} s, renew {RENEW_SECS} s)",
        takeover.as_millis()
    );
    assert!(
        takeover < Duration::from_secs_f64(LEASE_SECS + RENEW_SECS + 1.5),
        "takeover took {takeover:?}"
    );
    let lb = leader(&b, &http);
    let epoch_b = lb["epoch"].as_i64().expect("epoch");
    assert_eq!(epoch_b, epoch_a + 1, "a new holder bumps the epoch: {lb}");
    b.wait_for(&http, &format!("/v1/jobs/{j2}"), limit, |_, j| {
        j["status"] == "failed"
    });
    let j3 = post_job(&http, &b, "lf_three");
    b.wait_for(&http, &format!("/v1/jobs/{j3}"), limit, |_, j| {
        j["status"] == "failed"
    });
    let rows = mgr_rows(&db);
    assert_eq!(
        (state_of(&rows, a.port), state_of(&rows, b.port)),
        ("replica", "source"),
        "{rows:?}"
    );

    // C follows B; B stopped by SIGTERM releases the lease and C leads well within the lease.
    let mut c = spawn("c", root.path(), &db);
    let b_id = lb["this_instance"].as_str().expect("holder").to_string();
    c.wait_for(&http, "/v1/leader", limit, |st, v| {
        st == 200 && v["role"] == "follower" && v["leader"] == json!(b_id)
    });
    let stopping = Instant::now();
    let status = b.stop_with(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{}", b.log_text());
    let lc = c.wait_for(&http, "/v1/leader", limit, |st, v| {
        st == 200 && v["role"] == "leader"
    });
    let handover = stopping.elapsed();
    println!(
        "handover after SIGTERM of the leader: {} ms (lease {LEASE_SECS} s)",
        handover.as_millis()
    );
    assert!(
        handover < Duration::from_secs_f64(LEASE_SECS),
        "a graceful stop hands over before the lease would expire: {handover:?}"
    );
    assert_eq!(lc["epoch"], json!(epoch_b + 1), "{lc}");
    let j4 = post_job(&http, &c, "lf_four");
    c.wait_for(&http, &format!("/v1/jobs/{j4}"), limit, |_, j| {
        j["status"] == "failed"
    });
    let rows = mgr_rows(&db);
    assert_eq!(
        (state_of(&rows, b.port), state_of(&rows, c.port)),
        ("replica", "source"),
        "{rows:?}"
    );
    let status = c.stop_with(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{}", c.log_text());
    db.stop().expect("stop MariaDB");
}

#[test]
fn a_leader_that_loses_its_lease_stops_its_actors_and_starts_them_again_when_it_leads_again() {
    let _alone = super::exclusive();
    let db = MariaDb::start().expect("start MariaDB");
    let root = tempfile::tempdir().expect("temp dir");
    let http = http();
    let limit = Duration::from_secs(60);
    let mut a = spawn("a", root.path(), &db);
    let la = a.wait_for(&http, "/v1/leader", limit, |st, v| {
        st == 200 && v["role"] == "leader"
    });
    let epoch = la["epoch"].as_i64().expect("epoch");
    a.wait_for(&http, "/v1/ha", limit, |st, _| st == 200);

    // Another holder takes the lease behind A's back (as a manager that found it expired
    // would): A's next renew loses the compare-and-swap and A steps down.
    db.sql(&format!(
        "UPDATE {META_DB}.kl_leader_lease SET holder = 'ghost:1/x', epoch = epoch + 1, \
         expires_at = UTC_TIMESTAMP() + INTERVAL 1 HOUR"
    ))
    .expect("steal the lease");
    let l = a.wait_for(&http, "/v1/leader", limit, |_, v| v["role"] == "follower");
    assert_eq!(
        (l["leader"].as_str(), l["epoch"].as_i64()),
        (Some("ghost:1/x"), Some(epoch + 1)),
        "{l}"
    );
    a.wait_for(&http, "/v1/ha", limit, |st, _| st == 503);
    let h = a.wait_for(&http, "/healthz", limit, |st, _| st == 200);
    assert_eq!(h["role"], "follower", "{h}");
    let rows = mgr_rows(&db);
    assert_eq!(state_of(&rows, a.port), "replica", "{rows:?}");

    // Without the lease nobody runs the job A accepts; for three renew intervals it waits.
    let j = post_job(&http, &a, "lf_ghost");
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs_f64(3.0 * RENEW_SECS) {
        assert_eq!(job_status(&http, &a, j), "not_started");
        assert_eq!(leader(&a, &http)["role"], "follower");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The ghost's lease runs out: A leads again at the next epoch and runs the job.
    db.sql(&format!(
        "UPDATE {META_DB}.kl_leader_lease SET expires_at = UTC_TIMESTAMP() - INTERVAL 1 SECOND"
    ))
    .expect("expire the lease");
    let l = a.wait_for(&http, "/v1/leader", limit, |_, v| v["role"] == "leader");
    assert_eq!(l["epoch"], json!(epoch + 2), "{l}");
    a.wait_for(&http, "/v1/ha", limit, |st, _| st == 200);
    a.wait_for(&http, &format!("/v1/jobs/{j}"), limit, |_, v| {
        v["status"] == "failed"
    });
    let rows = mgr_rows(&db);
    assert_eq!(state_of(&rows, a.port), "source", "{rows:?}");
    let status = a.stop_with(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{}", a.log_text());
    // A clean stop releases the lease and leaves the row a replica.
    let holder = db
        .value(&format!(
            "SELECT holder FROM {META_DB}.kl_leader_lease WHERE expires_at <= UTC_TIMESTAMP()"
        ))
        .expect("read the lease");
    assert_eq!(holder.as_deref(), l["leader"].as_str(), "released: {l}");
    assert_eq!(state_of(&mgr_rows(&db), a.port), "replica");
    db.stop().expect("stop MariaDB");
}

#[test]
fn a_leader_whose_store_stops_answering_steps_down_before_its_lease_could_expire() {
    let _alone = super::exclusive();
    let db = MariaDb::start().expect("start MariaDB");
    let root = tempfile::tempdir().expect("temp dir");
    let http = http();
    let limit = Duration::from_secs(60);
    let mut a = spawn("a", root.path(), &db);
    let la = a.wait_for(&http, "/v1/leader", limit, |st, v| {
        st == 200 && v["role"] == "leader"
    });
    a.wait_for(&http, "/v1/ha", limit, |st, _| st == 200);

    // The store freezes: renews hang. A must stop acting before another manager could take
    // the lease: renew start + lease - 1 s (the store's whole-second clock), so within
    // 2 s of the freeze whatever renew was last confirmed.
    db.pause().expect("pause MariaDB");
    let paused = Instant::now();
    a.wait_for(&http, "/v1/leader", limit, |_, v| v["role"] == "follower");
    let stepped_down = paused.elapsed();
    println!(
        "step-down after the store froze: {} ms (lease {LEASE_SECS} s)",
        stepped_down.as_millis()
    );
    assert!(
        stepped_down < Duration::from_secs_f64(LEASE_SECS - 1.0),
        "stepped down after {stepped_down:?}"
    );
    a.wait_for(&http, "/v1/ha", limit, |st, _| st == 503);

    // The store answers again; nobody else took the lease: A leads again at the same epoch.
    db.resume().expect("resume MariaDB");
    let l = a.wait_for(&http, "/v1/leader", limit, |_, v| v["role"] == "leader");
    assert_eq!(l["epoch"], la["epoch"], "{l}");
    a.wait_for(&http, "/v1/ha", limit, |st, _| st == 200);
    let status = a.stop_with(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{}", a.log_text());
    db.stop().expect("stop MariaDB");
}

#[test]
fn a_bad_leader_lease_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (value, why) in [
        ("0", "out of range"),
        ("100000", "out of range"),
        ("soon", "is not a number"),
    ] {
        let cnf = dir.path().join("bad.cnf");
        std::fs::write(&cnf, format!("leader_lease_secs = {value}\n")).expect("write cnf");
        let out = Command::new(kunlun_tests::cli::bin("cluster-mgr"))
            .args(["--config", cnf.to_str().expect("utf-8 path")])
            .current_dir(dir.path())
            .env_remove("KUNLUN_CLUSTER_MGR_CONFIG")
            .output()
            .expect("run cluster-mgr");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert!(
            err.contains("bad.cnf:1") && err.contains("leader_lease_secs") && err.contains(why),
            "{value}: {err}"
        );
    }
}
