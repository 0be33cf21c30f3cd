//! 1,000 concurrent GET loops against a real `cluster-mgr` that leads (SQLite store) for at
//! most 30 s: the leader never steps down (its epoch and role hold), `/healthz` never answers
//! 503, and the daemon logs no panic, although many requests are cut short by the client.
//! Prints p50/p99 of the GETs that finished, and how many were refused as `overloaded`.
//!
//! Issue 11 item 5: such a burst used to starve the lease renew (same 8-connection pool as the
//! API) and to panic actix workers when a dropped SQLite future blocked on drop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kunlun_tests::cli::workdir;
use kunlun_tests::daemon::Daemon;
use serde_json::{json, Value};

/// Concurrent client loops.
const CLIENTS: usize = 1_000;
/// How long the load lasts at most.
const LOAD_FOR: Duration = Duration::from_secs(30);
/// Total requests at most (the loops stop at whichever bound comes first).
const MAX_REQUESTS: u64 = 400_000;
/// Machines registered first, so the lists are not empty.
const MACHINES: usize = 150;
/// Every this-many-th request gives up after [`CUT_AFTER`]: the client goes away mid-request,
/// and actix drops the handler's future on a worker.
const CUT_EVERY: u64 = 5;
const CUT_AFTER: Duration = Duration::from_millis(3);
/// Deadline of every other request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

const PATHS: &[&str] = &["/v1/clusters", "/v1/machines", "/v1/jobs", "/healthz"];

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    overloaded: AtomicU64,
    other_status: AtomicU64,
    cut: AtomicU64,
    transport_errors: AtomicU64,
    healthz_503: AtomicU64,
    sent: AtomicU64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[test]
fn a_thousand_concurrent_gets_do_not_depose_the_leader_nor_panic_a_worker() {
    let _alone = super::exclusive();
    let dir = workdir();
    let mut daemon = Daemon::start(dir.path(), &dir.path().join("meta.sqlite3")).expect("daemon");
    let base = daemon.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = rt.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_DEADLINE)
            .pool_max_idle_per_host(CLIENTS)
            .build()
            .expect("client");
        // Loopback addresses only, never probed.
        for i in 0..MACHINES {
            let body = json!({
                "hostaddr": format!("127.0.2.{}", i + 1),
                "machine_type": "storage",
                "ssh_port": 22, "ssh_user": "kunlun", "ssh_key_path": "/nonexistent/key",
                "data_dirs": ["/data/kl"], "port_range": "40000-60000",
                "total_mem_mb": 4096, "total_cpu_cores": 2, "probe": false,
            });
            let r = http
                .post(format!("{base}/v1/machines"))
                .json(&body)
                .send()
                .await
                .expect("register");
            assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
        }

        // Leadership before the load.
        let leader: Value = http
            .get(format!("{base}/v1/leader"))
            .send()
            .await
            .expect("leader")
            .json()
            .await
            .expect("leader json");
        assert_eq!(leader["role"], "leader", "{leader}");
        let epoch = leader["epoch"].as_i64().expect("epoch");

        let tally = Arc::new(Tally::default());
        let latencies = Arc::new(Mutex::new(Vec::<f64>::with_capacity(200_000)));
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + LOAD_FOR;

        // Watches leadership all along, on its own connection.
        let watch = {
            let (base, stop) = (base.clone(), stop.clone());
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client");
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut polls = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    polls += 1;
                    match http.get(format!("{base}/v1/leader")).send().await {
                        Ok(r) => match r.json::<Value>().await {
                            Ok(v) if v["role"] == "leader" && v["epoch"] == json!(epoch) => {}
                            Ok(v) => seen.push(v.to_string()),
                            Err(e) => seen.push(format!("unreadable /v1/leader: {e}")),
                        },
                        Err(e) => seen.push(format!("GET /v1/leader failed: {e}")),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                (polls, seen)
            })
        };

        let mut loops = Vec::with_capacity(CLIENTS);
        for c in 0..CLIENTS {
            let (http, base, tally, latencies, stop) = (
                http.clone(),
                base.clone(),
                tally.clone(),
                latencies.clone(),
                stop.clone(),
            );
            loops.push(tokio::spawn(async move {
                let mut i = c as u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let n = tally.sent.fetch_add(1, Ordering::Relaxed);
                    if n >= MAX_REQUESTS {
                        break;
                    }
                    let path = PATHS[(i as usize) % PATHS.len()];
                    i += 1;
                    let started = Instant::now();
                    let req = http.get(format!("{base}{path}"));
                    if n % CUT_EVERY == 0 {
                        // The client goes away mid-request.
                        if tokio::time::timeout(CUT_AFTER, req.send()).await.is_err() {
                            tally.cut.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    match req.send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            match (status, path) {
                                (200, _) => {
                                    tally.ok.fetch_add(1, Ordering::Relaxed);
                                    if let Ok(mut l) = latencies.lock() {
                                        l.push(started.elapsed().as_secs_f64() * 1000.0);
                                    }
                                }
                                (503, "/healthz") => {
                                    tally.healthz_503.fetch_add(1, Ordering::Relaxed);
                                }
                                (503, _) => {
                                    tally.overloaded.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {
                                    tally.other_status.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(_) => {
                            tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        let started = Instant::now();
        for l in loops {
            let _ = l.await;
        }
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (polls, leader_changes) = watch.await.expect("watcher");
        let mut lat = std::mem::take(&mut *latencies.lock().expect("latencies"));
        lat.sort_by(|a, b| a.total_cmp(b));
        (tally, lat, took, polls, leader_changes, epoch)
    });
    let (tally, lat, took, polls, leader_changes, epoch) = outcome;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "{CLIENTS} loops for {took:?}: {} sent, {} ok, {} overloaded (503), {} cut short by the \
         client, {} other status, {} transport errors, {} /healthz 503; GET p50 {:.1} ms, p99 \
         {:.1} ms, max {:.1} ms; {polls} leader polls, epoch {epoch}",
        get(&tally.sent).min(MAX_REQUESTS),
        get(&tally.ok),
        get(&tally.overloaded),
        get(&tally.cut),
        get(&tally.other_status),
        get(&tally.transport_errors),
        get(&tally.healthz_503),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
    );

    let log = daemon.log_text();
    assert!(
        leader_changes.is_empty(),
        "the leader stepped down or changed under load: {leader_changes:?}\n{}",
        daemon.log_tail()
    );
    assert_eq!(
        get(&tally.healthz_503),
        0,
        "/healthz answered 503 under load"
    );
    assert_eq!(
        get(&tally.other_status),
        0,
        "unexpected statuses under load"
    );
    assert!(get(&tally.ok) > 0, "no GET succeeded");
    assert!(
        !log.contains("panicked"),
        "the daemon panicked:\n{}",
        log.lines()
            .filter(|l| l.contains("panicked"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !log.contains("stepping down"),
        "the daemon logged a step-down:\n{}",
        daemon.log_tail()
    );
    // Still serving and still the leader afterwards.
    let after: Value = reqwest::blocking::get(format!("{}/v1/leader", daemon.url()))
        .and_then(|r| r.json())
        .expect("leader after the load");
    assert_eq!(after["role"], "leader", "{after}");
    assert_eq!(after["epoch"], json!(epoch), "{after}");
    assert!(daemon.stop(), "the daemon did not stop on SIGTERM");
}
