//! Fuzzing of the whole REST API with schemathesis (PyPI) against the OpenAPI document the real
//! daemon serves: every operation, every method, positive and negative data, all of
//! schemathesis' checks but `positive_data_acceptance` (see [`CHECKS`]). Expected: no 5xx and
//! every answer (status, content type, headers, body) as the document describes it.
//!
//! Two runs on one daemon: with an admin token (everything reachable) and with none (every
//! answer a documented 401, except the open `GET /healthz`).
//!
//! The daemon contacts no generated address: it starts on an empty store with machine
//! liveness off (`machine_check_interval = 0`), and `scripts/fuzz/hooks.py` rewrites every
//! machine body to `probe: false`, a 127.x.y.z address and SSH port 1 (nothing listens), so a
//! generated job that picks such a machine fails on a refused loopback connection. In fact such
//! a machine stays `dead` (unprobed, no liveness round), so placement never picks it and a
//! generated job fails at planning. At the end the test checks that every stored machine is on
//! loopback and still `dead`, and that no job got done.
//!
//! schemathesis is installed once by `scripts/fuzz/install.sh` (pinned version, venv under
//! `~/.cache`); `KUNLUN_FUZZ_SEED` and `KUNLUN_FUZZ_EXAMPLES` change the seed (default fixed)
//! and the examples per operation (default 20).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kunlun_tests::cli::{bin, free_port, workdir};
use kunlun_tests::daemon::Daemon;
use serde_json::Value;

/// schemathesis checks: all but `positive_data_acceptance`, which demands a 2xx for every
/// body the schema admits; the document states types and bounds, but not every rule the daemon
/// enforces (host address syntax, `first-last` port ranges, absolute data dirs, names that
/// must exist), and those refusals are right (400 with the rule named).
const CHECKS: &str = "all";
const EXCLUDED: &str = "positive_data_acceptance";
/// Deadline of one schemathesis run (it normally takes well under a minute).
const RUN_LIMIT: Duration = Duration::from_secs(300);
const TOKEN_NAME: &str = "fuzz_admin";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The schemathesis binary, installed on first use.
fn schemathesis() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/fuzz/install.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/fuzz/install.sh");
    assert!(
        out.status.success(),
        "scripts/fuzz/install.sh failed ({}): schemathesis is needed for this test",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(text.lines().last().expect("a path").trim());
    assert!(path.exists(), "no schemathesis at {}", path.display());
    path
}

/// A child process killed (by its PID) when dropped.
struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for `child` up to `limit`; kills it past that. Its exit code, `None` when killed.
fn wait_bounded(child: &mut Proc, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    let c = child.0.as_mut().expect("running");
    loop {
        if let Ok(Some(status)) = c.try_wait() {
            child.0 = None;
            return status.code();
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One schemathesis run against `url` with the document in `doc`; panics with its output
/// unless it exits 0.
fn fuzz(st: &Path, dir: &Path, doc: &Path, url: &str, token: Option<&str>, what: &str) {
    let seed = std::env::var("KUNLUN_FUZZ_SEED").unwrap_or_else(|_| "20261205".into());
    let examples = std::env::var("KUNLUN_FUZZ_EXAMPLES").unwrap_or_else(|_| "20".into());
    let out_path = dir.join(format!("schemathesis-{what}.txt"));
    let out = File::create(&out_path).expect("output file");
    let err = out.try_clone().expect("clone");
    let mut excluded = EXCLUDED.to_string();
    if token.is_none() {
        // Without a token every request but GET /healthz is refused (401) before routing, on
        // purpose: an anonymous client learns nothing of the route table. So an invented
        // method on /healthz is a 401 there, not a 405; the run with a token checks the 405s
        // and their `Allow`.
        excluded.push_str(",unsupported_method");
    }
    let mut cmd = Command::new(st);
    cmd.arg("run")
        .arg(doc)
        .args(["--url", url])
        .args(["--checks", CHECKS, "--exclude-checks", &excluded])
        .args(["--max-examples", &examples, "--seed", &seed])
        // One worker: 2 shared cores, and Python 3.11's ast.parse is not thread-safe.
        .args(["--workers", "1", "--request-timeout", "30"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--max-failures", "50"])
        .current_dir(dir)
        .env("PYTHONPATH", repo_root().join("scripts/fuzz"))
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("KUNLUN_FUZZ_TOKEN_NAME", TOKEN_NAME)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some(t) = token {
        cmd.args(["--header", &format!("Authorization: Bearer {t}")]);
    }
    let started = Instant::now();
    let mut child = Proc(Some(cmd.spawn().expect("spawn schemathesis")));
    let code = wait_bounded(&mut child, RUN_LIMIT);
    drop(child);
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!(
        "schemathesis ({what}) exit {code:?} after {:.1} s; summary:\n{}",
        started.elapsed().as_secs_f64(),
        output
            .lines()
            .skip_while(|l| !l.contains("SUMMARY"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        code,
        Some(0),
        "schemathesis ({what}) found failures (or ran past {RUN_LIMIT:?}):\n{output}"
    );
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let _alone = super::exclusive();
    let st = schemathesis();
    let dir = workdir();
    let dir = dir.path();
    let port = free_port();
    let cnf = dir.join("fuzz.cnf");
    std::fs::write(
        &cnf,
        format!(
            "http_bind_address = 127.0.0.1\nbrpc_http_port = {port}\nsqlite_path = {}\n\
             cluster_mgr_tmp_data_path = {}\n# no SSH liveness round over fuzzed machines\n\
             machine_check_interval = 0\n",
            dir.join("meta.db").display(),
            dir.join("data").display()
        ),
    )
    .expect("write cnf");

    // The admin token of the run, made the documented way on the manager's host.
    let made = Command::new(bin("cluster-mgr"))
        .args([
            "token", "create", "--name", TOKEN_NAME, "--role", "admin", "--config",
        ])
        .arg(&cnf)
        .current_dir(dir)
        .env_remove("KUNLUN_CLUSTER_MGR_CONFIG")
        .output()
        .expect("cluster-mgr token create");
    assert!(made.status.success(), "token create: {made:?}");
    let token = String::from_utf8_lossy(&made.stdout).trim().to_string();
    assert!(token.starts_with("kl_"), "token create printed {token:?}");

    let daemon = Daemon::command(dir, port)
        .config(&cnf)
        .start()
        .expect("cluster-mgr answers /healthz");
    let url = daemon.url();
    let http = kunlun_tests::daemon::http(Duration::from_secs(30));
    // The routes of the leader's term (`/v1/ha`, switchover, XA) answer 503 until the daemon
    // leads and its term runs; the fuzz counts any 5xx, so it starts only then.
    let leads_by = std::time::Instant::now() + Duration::from_secs(60);
    while http
        .get(format!("{url}/v1/ha"))
        .bearer_auth(&token)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(
            std::time::Instant::now() < leads_by,
            "the daemon leads within 60 s: {}",
            daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let doc_text = http
        .get(format!("{url}/v1/openapi.json"))
        .bearer_auth(&token)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .expect("GET /v1/openapi.json");
    let doc = dir.join("openapi.json");
    File::create(&doc)
        .and_then(|mut f| f.write_all(doc_text.as_bytes()))
        .expect("write the document");

    fuzz(&st, dir, &doc, &url, Some(&token), "token");
    fuzz(&st, dir, &doc, &url, None, "anonymous");

    // Whatever the fuzz registered is on loopback and still `dead` (never answered over SSH,
    // so never placed on): nothing generated was contacted. The jobs the fuzz created could
    // place nothing and failed at planning.
    let machines: Vec<Value> = http
        .get(format!("{url}/v1/machines?limit=1000"))
        .bearer_auth(&token)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("GET /v1/machines");
    for m in &machines {
        let host = m["hostaddr"].as_str().unwrap_or_default();
        assert!(
            host.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback()),
            "a fuzzed machine is not on loopback: {m}"
        );
        assert_eq!(m["node_stats"], "dead", "a fuzzed machine was reached: {m}");
    }
    let jobs: Vec<Value> = http
        .get(format!("{url}/v1/jobs?limit=1000"))
        .bearer_auth(&token)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("GET /v1/jobs");
    for j in &jobs {
        assert_ne!(j["status"], "done", "a fuzzed job did something: {j}");
    }
    let audit: Vec<Value> = http
        .get(format!("{url}/v1/audit?limit=1000"))
        .bearer_auth(&token)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("GET /v1/audit");
    let registered = audit
        .iter()
        .filter(|e| e["method"] == "POST" && e["path"] == "/v1/machines" && e["status"] == 201)
        .count();
    println!(
        "the fuzz registered {registered} machines ({} left, all loopback and dead) and created \
         {} jobs (none done)",
        machines.len(),
        jobs.len()
    );
    let log_text = daemon.log_text();
    assert!(
        !log_text.contains("panicked"),
        "the daemon panicked during the fuzz:\n{log_text}"
    );
    drop(daemon);
}
