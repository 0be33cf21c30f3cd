//! The `many` series of the `create_cluster` bench: [`CLUSTERS`] clusters of 1 shard x 3
//! MariaDB nodes + 1 PostgreSQL compute node submitted at once (`POST /v1/clusters`, all
//! concurrently), timed from the first submit until every job reads back `done`, against the
//! floor installing the same 40 instances (with the replicas' `CHANGE MASTER`) by the same plain
//! script, all in parallel, in the same run. Trials alternate which side goes first; everything
//! is torn down between trials (the daemon's `delete_cluster` jobs, the floor's servers by
//! PID); both sides are checked afterwards (untimed). Prints each trial with when the jobs
//! were accepted, claimed, planned, recorded and done (first/last over the jobs), p50 of each
//! side and the ratio (goal <= 1.5x).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::{
    call, check_cluster, daemon_topology, floor_create, floor_delete, ms, pct, Rig, Shape,
    Topology, INNODB_MB, LIMIT, MAX_CONNS, POLL,
};

/// Clusters submitted at once.
const CLUSTERS: usize = 10;
const SHAPE: Shape = Shape {
    shards: 1,
    nodes: 3,
    comps: 1,
};

/// When (after the first submit) one job was first seen in each state.
#[derive(Default, Clone)]
struct JobTimes {
    accepted: Duration,
    claimed: Option<Duration>,
    planned: Option<Duration>,
    recorded: Option<Duration>,
    done: Option<Duration>,
}

/// What one daemon trial measured.
struct ManyRun {
    total: Duration,
    jobs: Vec<JobTimes>,
    clusters: Vec<i64>,
}

/// POSTs `bodies` to `url` all at once (one thread each, released together); returns each
/// answer's `job_id` with when it came back after `t0`, the moment they were released.
fn submit_all(url: &str, bodies: Vec<Value>) -> Result<(Instant, Vec<(i64, Duration)>)> {
    let gate = Arc::new(Barrier::new(bodies.len() + 1));
    let mut threads = Vec::new();
    for body in bodies {
        let (gate, url) = (gate.clone(), url.to_string());
        threads.push(std::thread::spawn(move || -> Result<(i64, Instant)> {
            gate.wait();
            let (st, v) = call(reqwest::Method::POST, &url, Some(&body))?;
            let at = Instant::now();
            ensure!(st == 202, "POST {url}: {st} {v}");
            Ok((v["job_id"].as_i64().context("no job_id")?, at))
        }));
    }
    let t0 = Instant::now();
    gate.wait();
    let mut out = Vec::new();
    for t in threads {
        let (id, at) = t.join().map_err(|_| anyhow::anyhow!("submit thread"))??;
        out.push((id, at.saturating_duration_since(t0)));
    }
    Ok((t0, out))
}

/// Polls every job in `ids` every [`super::POLL`] until all are final; the jobs as last read.
fn follow_all(
    d: &kunlun_tests::daemon::Daemon,
    ids: &[i64],
    t0: Instant,
    times: &mut [JobTimes],
) -> Result<Vec<Value>> {
    let mut last = vec![Value::Null; ids.len()];
    loop {
        let mut open = 0;
        for (k, id) in ids.iter().enumerate() {
            if times[k].done.is_some() {
                continue;
            }
            let url = format!("{}/v1/jobs/{id}", d.url());
            let (st, job) = call(reqwest::Method::GET, &url, None)?;
            ensure!(st == 200, "GET {url}: {st} {job}");
            let now = t0.elapsed();
            let t = &mut times[k];
            let status = job["status"].as_str().unwrap_or_default();
            let stage = job["memo"]["stage"].as_str().unwrap_or_default();
            if status != "not_started" {
                t.claimed.get_or_insert(now);
            }
            if matches!(stage, "planned" | "recorded" | "done") {
                t.planned.get_or_insert(now);
            }
            if matches!(stage, "recorded" | "done") {
                t.recorded.get_or_insert(now);
            }
            if status == "done" || status == "failed" {
                t.done = Some(now);
            } else {
                open += 1;
            }
            last[k] = job;
        }
        if open == 0 {
            return Ok(last);
        }
        ensure!(
            t0.elapsed() < LIMIT,
            "jobs not final after {LIMIT:?}: {last:?}"
        );
        std::thread::sleep(POLL);
    }
}

fn daemon_many(rig: &Rig, trial: usize) -> Result<ManyRun> {
    let d = &rig.daemon;
    let bodies = (0..CLUSTERS)
        .map(|k| {
            json!({
                "name": format!("many_{trial}_{k}"), "ha_mode": "rbr",
                "shards": SHAPE.shards, "nodes": SHAPE.nodes, "comps": SHAPE.comps,
                "innodb_size_mb": INNODB_MB, "max_connections": MAX_CONNS,
            })
        })
        .collect();
    let (t0, accepted) = submit_all(&format!("{}/v1/clusters", d.url()), bodies)?;
    let ids: Vec<i64> = accepted.iter().map(|(id, _)| *id).collect();
    let mut times: Vec<JobTimes> = accepted
        .iter()
        .map(|(_, at)| JobTimes {
            accepted: *at,
            ..JobTimes::default()
        })
        .collect();
    let jobs = follow_all(d, &ids, t0, &mut times)?;
    let total = t0.elapsed();
    let mut clusters = Vec::new();
    let mut failed = Vec::new();
    for job in &jobs {
        if let Some(c) = job["memo"]["cluster_id"].as_i64() {
            clusters.push(c);
        }
        if job["status"] != "done" {
            failed.push(format!("job {}: {}", job["id"], job["memo"]));
        }
    }
    if !failed.is_empty() {
        let _ = delete_all(rig, &clusters);
        bail!(
            "create_cluster failed: {}\ndaemon log:\n{}",
            failed.join("\n"),
            d.log_tail()
        );
    }
    Ok(ManyRun {
        total,
        jobs: times,
        clusters,
    })
}

/// Deletes `clusters` through the daemon, all at once, and checks no instance dir is left.
fn delete_all(rig: &Rig, clusters: &[i64]) -> Result<()> {
    let d = &rig.daemon;
    let mut ids = Vec::new();
    for c in clusters {
        let (st, v) = call(
            reqwest::Method::DELETE,
            &format!("{}/v1/clusters/{c}", d.url()),
            None,
        )?;
        ensure!(st == 202, "DELETE cluster {c}: {st} {v}");
        ids.push(v["job_id"].as_i64().context("no job_id")?);
    }
    let mut times = vec![JobTimes::default(); ids.len()];
    let jobs = follow_all(d, &ids, Instant::now(), &mut times)?;
    for job in &jobs {
        ensure!(
            job["status"] == "done",
            "delete_cluster failed: {}",
            job["memo"]
        );
    }
    let left = rig.data.join("kunlun");
    ensure!(
        std::fs::read_dir(&left).map_or(true, |mut d| d.next().is_none()),
        "instance dirs left in {}",
        left.display()
    );
    Ok(())
}

/// `first/last` of one state's times over the jobs, in seconds.
fn span(jobs: &[JobTimes], f: fn(&JobTimes) -> Option<Duration>) -> String {
    let mut v: Vec<f64> = jobs.iter().filter_map(f).map(|d| d.as_secs_f64()).collect();
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(a), Some(b)) => format!("{a:.1}/{b:.1}"),
        _ => "-".into(),
    }
}

/// The `many` series: [`CLUSTERS`] clusters at once, `trials` times each side.
pub fn series_many(rig: &Rig, trials: usize) -> Result<()> {
    println!(
        "\ncreate_cluster x{CLUSTERS} at once, each {}x{} + {} compute, rbr, innodb {} MB; {} trial(s) each\n",
        SHAPE.shards, SHAPE.nodes, SHAPE.comps, INNODB_MB, trials
    );
    let mut d_total = Vec::new();
    let mut f_total = Vec::new();
    let mut phases = Vec::new();
    for i in 0..trials {
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let r = daemon_many(rig, i + 1)?;
                let mut topo = Topology::default();
                let mut read = Ok(());
                for c in &r.clusters {
                    match daemon_topology(&rig.daemon, *c, &rig.data, SHAPE) {
                        Ok(t) => {
                            topo.primaries.extend(t.primaries);
                            topo.replicas.extend(t.replicas);
                            topo.comps.extend(t.comps);
                        }
                        Err(e) => read = Err(e),
                    }
                }
                let checked = read.and_then(|()| check_cluster(&topo));
                delete_all(rig, &r.clusters)?;
                checked?;
                let j = &r.jobs;
                println!(
                    "trial {:>2} daemon: {:>6.0} ms  (s first/last over the {} jobs: accepted {}, claimed {}, planned {}, recorded {}, done {})",
                    i + 1,
                    ms(r.total),
                    j.len(),
                    span(j, |t| Some(t.accepted)),
                    span(j, |t| t.claimed),
                    span(j, |t| t.planned),
                    span(j, |t| t.recorded),
                    span(j, |t| t.done),
                );
                let mut runs: Vec<f64> = j
                    .iter()
                    .filter_map(|t| Some(t.done?.saturating_sub(t.claimed?).as_secs_f64()))
                    .collect();
                runs.sort_by(f64::total_cmp);
                println!(
                    "                  claimed -> done per job: p50 {:.1} s, max {:.1} s",
                    pct(&runs, 0.5),
                    runs.last().copied().unwrap_or(0.0)
                );
                d_total.push(ms(r.total));
            } else {
                let (took, topo) = floor_create(
                    &rig.sshd,
                    &rig.floor_root,
                    (CLUSTERS, SHAPE),
                    i + 1,
                    &mut phases,
                )?;
                let checked = check_cluster(&topo);
                floor_delete(&topo)?;
                checked?;
                println!("trial {:>2} floor:  {:>6.0} ms", i + 1, ms(took));
                f_total.push(ms(took));
            }
        }
    }
    d_total.sort_by(f64::total_cmp);
    f_total.sort_by(f64::total_cmp);
    let (d50, f50) = (pct(&d_total, 0.5), pct(&f_total, 0.5));
    println!(
        "\ncreate_cluster x{CLUSTERS} ({}x{} + {}): daemon p50 {:.0} ms (min {:.0}, max {:.0})",
        SHAPE.shards,
        SHAPE.nodes,
        SHAPE.comps,
        d50,
        d_total.first().copied().unwrap_or(0.0),
        d_total.last().copied().unwrap_or(0.0),
    );
    println!(
        "  floor ({} instances, plain script each over the same sshd, all in parallel): p50 {:.0} ms (min {:.0}, max {:.0})",
        CLUSTERS * (SHAPE.shards * SHAPE.nodes + SHAPE.comps),
        f50,
        f_total.first().copied().unwrap_or(0.0),
        f_total.last().copied().unwrap_or(0.0)
    );
    let ratio = if f50 > 0.0 { d50 / f50 } else { f64::NAN };
    println!("  ratio daemon / floor: {ratio:.2}x (goal <= 1.5x)");
    if std::env::var_os("CREATE_CLUSTER_PROFILE").is_some() {
        println!("\nper step: median ms (median end, ms after start)");
        super::print_steps("floor", &phases);
    }
    Ok(())
}
