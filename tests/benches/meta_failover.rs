//! Metadata shard failover time: `kill -9` of the metadata primary under a stream of job-row
//! writes (`POST /v1/clusters`, one every 50 ms to each daemon) → the first job row written
//! again through the leader and through the follower, over N trials, each on a fresh 3-node
//! semi-sync metadata shard with two `cluster-mgr` daemons on it (`check_shard_interval` 1 s,
//! 3 failed probes, replicas must confirm, 10 s lease). Prints p50/max of both, the failover
//! record's total and per-phase times, and the job rows written before the kill that are not
//! on the new primary (must be 0).
//!
//! `cargo bench -p kunlun-tests --bench meta_failover` runs 5 trials (`META_FAILOVER_TRIALS` to
//! change). Not part of the test suite (`test = false`). The daemon is the `cluster-mgr` of
//! this bench's profile (release under `cargo bench`), or `KUNLUN_BENCH_DAEMON`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kunlun_tests::daemon::{http, write_cnf, Daemon};
use kunlun_tests::meta_shard::{wait_for, MetaShardSet};
use serde_json::{json, Value};

const DB: &str = "kl_meta_bench";
const LIMIT: Duration = Duration::from_secs(120);

/// `target/<profile>` of this bench executable.
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("bench executable has no target/<profile>/deps parent")
}

/// The `cluster-mgr` of this bench's profile, rebuilt first (a no-op when up to date).
fn daemon_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KUNLUN_BENCH_DAEMON") {
        return Ok(PathBuf::from(p));
    }
    let dir = profile_dir()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "cluster-mgr-bin",
        "--bin",
        "cluster-mgr",
    ]);
    if dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("run cargo build --bin cluster-mgr")?;
    ensure!(
        status.success(),
        "cargo build --bin cluster-mgr failed: {status}"
    );
    let bin = dir.join("cluster-mgr");
    ensure!(bin.exists(), "{} missing after the build", bin.display());
    Ok(bin)
}

/// Job-row writes through one daemon: when each `202` came back, and the job ids.
#[derive(Default)]
struct Writes {
    acked: Vec<(Instant, i64)>,
}

fn write_jobs(url: String, stop: Arc<AtomicBool>, out: Arc<Mutex<Writes>>) {
    let http = http(Duration::from_secs(30));
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let body = json!({"name": format!("b{n}"), "ha_mode": "no_rep", "shards": 1,
                          "nodes": 1, "comps": 1});
        if let Ok(r) = http.post(&url).json(&body).send() {
            if r.status().as_u16() == 202 {
                if let Some(id) = r.json::<Value>().ok().and_then(|v| v["job_id"].as_i64()) {
                    out.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .acked
                        .push((Instant::now(), id));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct TrialResult {
    leader_first: Duration,
    follower_first: Duration,
    record_total_ms: u64,
    phases: Vec<(String, u64)>,
    lost: usize,
}

fn trial(bin: &Path, n: usize) -> Result<TrialResult> {
    let m = MetaShardSet::start(DB)?;
    let wd = tempfile::tempdir()?;
    let spawn = |name: &str| -> Result<Daemon> {
        let dir = wd.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let port = kunlun_tests::free_port([127, 0, 0, 1].into());
        let mut lines = m.cnf_lines();
        lines.extend([
            format!("brpc_http_port = {port}"),
            "mysql_connect_timeout = 2".into(),
            "machine_check_interval = 0".into(),
        ]);
        let cnf = dir.join("cluster_mgr.cnf");
        write_cnf(&cnf, &lines)?;
        Daemon::command(&dir, port)
            .binary(bin)
            .name(name)
            .config(&cnf)
            .term_on_drop()
            .spawn()
    };
    let client = http(Duration::from_secs(30));
    let mut a = spawn("a")?;
    a.wait_for(&client, "/v1/leader", LIMIT, |st, v| {
        st == 200 && v["role"] == "leader"
    });
    m.register_nodes()?;
    let mut b = spawn("b")?;
    b.wait_for(&client, "/v1/leader", LIMIT, |st, v| {
        st == 200 && v["role"] == "follower"
    });
    // The leader's monitor has had a round with the primary answering (its semi-sync proof).
    a.wait_for(&client, "/v1/meta", LIMIT, |st, v| {
        st == 200 && v["nodes"].as_array().is_some_and(|n| n.len() == 3)
    });
    std::thread::sleep(Duration::from_secs(2));

    let stop = Arc::new(AtomicBool::new(false));
    let (wa, wb) = (
        Arc::new(Mutex::new(Writes::default())),
        Arc::new(Mutex::new(Writes::default())),
    );
    let ta = {
        let (u, s, o) = (a.url_for("/v1/clusters"), stop.clone(), wa.clone());
        std::thread::spawn(move || write_jobs(u, s, o))
    };
    let tb = {
        let (u, s, o) = (b.url_for("/v1/clusters"), stop.clone(), wb.clone());
        std::thread::spawn(move || write_jobs(u, s, o))
    };
    std::thread::sleep(Duration::from_secs(1));
    let old = m.set.primary();
    old.kill9()?;
    let t0 = Instant::now();
    let first_after = |w: &Arc<Mutex<Writes>>| {
        let w = w.lock().unwrap_or_else(|e| e.into_inner());
        w.acked.iter().find(|(t, _)| *t > t0).map(|(t, _)| *t - t0)
    };
    let leader_first = wait_for("a job row through the leader", LIMIT, || first_after(&wa))?;
    let follower_first = wait_for("a job row through the follower", LIMIT, || first_after(&wb))?;
    stop.store(true, Ordering::SeqCst);
    let _ = (ta.join(), tb.join());

    let recs = a.wait_for(&client, "/v1/failovers?shard_id=0", LIMIT, |st, v| {
        st == 200
            && v.as_array()
                .is_some_and(|r| r.iter().any(|r| r["outcome"] == "promoted"))
    });
    let rec = recs
        .as_array()
        .and_then(|r| r.iter().find(|r| r["outcome"] == "promoted"))
        .cloned()
        .context("promoted record")?;
    let phases_v = if rec["phases"].is_array() {
        rec["phases"].clone()
    } else {
        rec["phases"]["phases"].clone()
    };
    let phases = phases_v
        .as_array()
        .map(|p| {
            p.iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or("").to_string(),
                        p["ms"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let new_id = rec["new_primary"].as_i64().context("new primary")?;
    let seeds = m.seeds();
    let new = m
        .at(&seeds[usize::try_from(new_id - 1)?])
        .context("new primary node")?;
    let stored: std::collections::BTreeSet<i64> = new
        .rows(&format!("SELECT id FROM {DB}.cluster_general_job_log"))?
        .into_iter()
        .filter_map(|r| r[0].parse().ok())
        .collect();
    let mut lost = 0;
    for w in [&wa, &wb] {
        let w = w.lock().unwrap_or_else(|e| e.into_inner());
        lost += w
            .acked
            .iter()
            .filter(|(_, id)| !stored.contains(id))
            .count();
    }
    drop(a);
    drop(b);
    println!(
        "trial {n}: leader {} ms, follower {} ms, record {} ms, lost {lost}",
        leader_first.as_millis(),
        follower_first.as_millis(),
        rec["total_ms"]
    );
    Ok(TrialResult {
        leader_first,
        follower_first,
        record_total_ms: rec["total_ms"].as_u64().unwrap_or(0),
        phases,
        lost,
    })
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    let trials: usize = std::env::var("META_FAILOVER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let bin = daemon_binary()?;
    let mut results = Vec::new();
    for n in 1..=trials {
        results.push(trial(&bin, n)?);
    }
    let stats = |f: &dyn Fn(&TrialResult) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        (pct(&v, 0.5), v.last().copied().unwrap_or(0.0))
    };
    println!(
        "\nmetadata primary kill -9 -> first job row written ({trials} trials, {})",
        bin.display()
    );
    for (what, f) in [
        (
            "through the leader (ms)",
            &(|r: &TrialResult| r.leader_first.as_secs_f64() * 1000.0)
                as &dyn Fn(&TrialResult) -> f64,
        ),
        ("through the follower (ms)", &|r: &TrialResult| {
            r.follower_first.as_secs_f64() * 1000.0
        }),
        ("failover record total (ms)", &|r: &TrialResult| {
            r.record_total_ms as f64
        }),
    ] {
        let (p50, max) = stats(f);
        println!("  {what:<28} p50 {p50:>7.0}  max {max:>7.0}");
    }
    let mut names: Vec<String> = Vec::new();
    for r in &results {
        for (n, _) in &r.phases {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    println!("  phases (p50 ms):");
    for name in names {
        let (p50, max) = stats(&|r: &TrialResult| {
            r.phases
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |(_, ms)| *ms as f64)
        });
        println!("    {name:<18} p50 {p50:>6.0}  max {max:>6.0}");
    }
    let lost: usize = results.iter().map(|r| r.lost).sum();
    println!("  acknowledged job rows lost: {lost}");
    ensure!(lost == 0, "acknowledged job rows were lost");
    Ok(())
}
