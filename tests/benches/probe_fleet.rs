//! Probing at fleet scale: the HA monitor's rounds over N storage nodes (shards of 3, one
//! `rbr` cluster each, registered in a SQLite store) at a 1 s rate, with the default
//! `HaConfig`; round duration p50/p99, rounds that took longer than the interval (the next one
//! then starts late: rounds never overlap), probes that failed, and the prober process's CPU
//! (getrusage user + system over the measured rounds) as cores and per 1,000 nodes.
//!
//! The nodes are lightweight in-process MySQL-protocol endpoints ([`fake_mysql`]) served by a
//! child process (this binary started again), so the CPU measured is the prober's alone; the
//! child's is printed beside it. Floors from the same run, with the same concurrency (the
//! default's, or `PROBE_FLEET_CONCURRENCY`) and the same query per probe (`PROBE_SQL`, three
//! statements in one round trip): the manager's `probe_node` in a plain loop (no topology
//! read, no tracking), a plain mysql_async client opening a fresh connection per probe, and
//! one keeping a connection per node open (what the manager does). Baseline: that last one
//! sending the three statements one by one (three round trips, how the manager probed before).
//!
//! `cargo bench -p kunlun-tests --bench probe_fleet` runs N = 500, 2,000, 5,000 (2 warm-up
//! and 10 measured rounds per series; `PROBE_FLEET_ROUNDS`, `PROBE_FLEET_SIZES=500,2000` to
//! change); without `--bench` (as under `cargo test --all-targets`) a smoke run of 30 nodes
//! for 3 rounds per series (about 12 s), which fails if a probe fails or the monitor saw
//! anything but healthy shards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kunlun_core::ha::{HaConfig, HaMonitor, NodeState};
use kunlun_core::storage::probe::{probe_node, probe_options, PROBE_SQL};
use kunlun_core::storage::NodeAddr;
use kunlun_meta::store::{Store, StoreConfig};
use kunlun_tests::bench::env_u64;
use kunlun_tests::fake_mysql::{self, FleetProcess, SHARD_NODES};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const INTERVAL: Duration = Duration::from_secs(1);
/// Probes in flight at once, for the manager and the floors alike:
/// `HaConfig::default().probe_concurrency`, or `PROBE_FLEET_CONCURRENCY`.
fn concurrency() -> usize {
    match std::env::var("PROBE_FLEET_CONCURRENCY") {
        Err(_) => HaConfig::default().probe_concurrency,
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => panic!("PROBE_FLEET_CONCURRENCY={v:?}: want a whole number above 0"),
        },
    }
}
/// Longest one floor probe may take before it counts as failed (the manager's probe deadline
/// at a 1 s interval is 2 s too).
const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// Figures of one prober over one fleet.
struct Series {
    n: usize,
    label: &'static str,
    round_ms: Vec<f64>,
    late: usize,
    failed: Vec<u64>,
    /// Prober process CPU seconds / wall seconds over the measured rounds.
    cores: f64,
    /// Prober process CPU milliseconds per probe: what stays put when other work on the
    /// machine slows the rounds (5,000 probes a second need 5x this in cores).
    cpu_ms_per_probe: f64,
    /// The same for the endpoint process.
    endpoint_cores: f64,
    /// The whole machine's busy cores over the same window, less the two processes above:
    /// other work (builds, other benches) that competed for the 2 cores.
    other_cores: f64,
}

/// CPU seconds the whole machine spent busy so far (`/proc/stat`, all but idle and iowait).
fn machine_busy() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    // USER_HZ is 100 on every Linux this runs on.
    Ok((ticks.iter().sum::<f64>() - idle) / 100.0)
}

/// CPU seconds (user + system) this process used so far.
fn self_cpu() -> Result<f64> {
    let u = getrusage(UsageWho::RUSAGE_SELF)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(u.user_time()) + secs(u.system_time()))
}

/// The open-file limit raised to the hard limit: 5,000 listeners and their connections.
fn raise_nofile() -> Result<u64> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// Nearest-rank percentile (of 10 rounds, p99 is the slowest).
fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len().max(1));
    s.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// Runs `warm` rounds, then `rounds` measured ones, one per interval (a round longer than the
/// interval delays the next: it counts as late), timing each and taking both processes' CPU.
async fn drive(
    label: &'static str,
    fleet: &FleetProcess,
    (warm, rounds): (usize, usize),
    mut round: impl AsyncFnMut() -> Result<u64>,
) -> Result<Series> {
    let mut next = tokio::time::Instant::now();
    for _ in 0..warm {
        tokio::time::sleep_until(next).await;
        next += INTERVAL;
        round().await?;
        next = next.max(tokio::time::Instant::now());
    }
    tokio::time::sleep_until(next).await;
    let (t0, cpu0, ecpu0, all0) = (
        Instant::now(),
        self_cpu()?,
        fleet.cpu_secs()?,
        machine_busy()?,
    );
    let (mut round_ms, mut failed, mut late) = (Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        tokio::time::sleep_until(next).await;
        next += INTERVAL;
        let s = Instant::now();
        failed.push(round().await?);
        let d = s.elapsed();
        round_ms.push(d.as_secs_f64() * 1e3);
        late += usize::from(d > INTERVAL);
        next = next.max(tokio::time::Instant::now());
    }
    // The last round's slot counts too: CPU per wall second of a steady 1 s cadence.
    tokio::time::sleep_until(next).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = self_cpu()? - cpu0;
    let cores = cpu / wall;
    let endpoint_cores = (fleet.cpu_secs()? - ecpu0) / wall;
    let other_cores = ((machine_busy()? - all0) / wall - cores - endpoint_cores).max(0.0);
    Ok(Series {
        n: fleet.ports.len(),
        label,
        round_ms,
        late,
        failed,
        cores,
        cpu_ms_per_probe: cpu * 1e3 / (rounds * fleet.ports.len()).max(1) as f64,
        endpoint_cores,
        other_cores,
    })
}

/// Registers the fleet as `rbr` clusters of one shard of [`SHARD_NODES`] each (the last may be
/// smaller), the first node of each the primary, logged in as root with no password.
async fn register(store: &Store, ports: &[u16]) -> Result<()> {
    let shards: Vec<Vec<(String, u16)>> = ports
        .chunks(SHARD_NODES)
        .map(|c| c.iter().map(|&p| ("127.0.0.1".to_string(), p)).collect())
        .collect();
    let shards = &shards;
    store
        .tx(async |tx| {
            for (i, nodes) in shards.iter().enumerate() {
                kunlun_tests::rows::insert_cluster(
                    tx,
                    &format!("fleet_c{i}"),
                    std::slice::from_ref(nodes),
                    |_| "shard1".into(),
                    ("root", ""),
                )
                .await?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// The real monitor's rounds; afterwards checks it saw only healthy shards and acted on none.
async fn manager(fleet: &FleetProcess, plan: (usize, usize)) -> Result<Series> {
    let n = fleet.ports.len();
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreConfig::sqlite(dir.path().join("meta.db"))).await?;
    register(&store, &fleet.ports).await?;
    let cancel = CancellationToken::new();
    let (mut m, h) = HaMonitor::new(
        store,
        HaConfig {
            probe_concurrency: concurrency(),
            ..HaConfig::default()
        },
        cancel.clone(),
    );
    let series = drive("manager: HaMonitor::round", fleet, plan, async || {
        let before = h.shared().stats();
        m.round().await?;
        let after = h.shared().stats();
        ensure!(
            after.probes - before.probes == n as u64,
            "a round probed {} of {n} nodes",
            after.probes - before.probes
        );
        Ok(after.probe_failures - before.probe_failures)
    })
    .await;
    cancel.cancel();
    let series = series?;
    let health = h.shared().health();
    let stats = h.shared().stats();
    let acted: Vec<String> = h
        .shared()
        .events()
        .into_iter()
        .map(|e| e.what)
        .filter(|w| !w.ends_with(" is Up"))
        .take(5)
        .collect();
    ensure!(
        health.len() == n && health.iter().all(|x| x.state == NodeState::Up),
        "{} of {n} nodes published Up",
        health.iter().filter(|x| x.state == NodeState::Up).count()
    );
    ensure!(
        acted.is_empty() && stats.replication_restarts == 0 && stats.replicas_repointed == 0,
        "the monitor acted on a healthy fleet: {acted:?}"
    );
    ensure!(
        health
            .iter()
            .all(|x| x.is_primary != x.probe.read_only
                && x.is_primary == x.probe.channels.is_empty()),
        "a probe saw a primary read-only or a replica without its channel"
    );
    Ok(series)
}

fn addrs(fleet: &FleetProcess) -> Arc<Vec<NodeAddr>> {
    Arc::new(
        fleet
            .ports
            .iter()
            .map(|&port| NodeAddr {
                host: "127.0.0.1".into(),
                port,
                user: "root".into(),
                password: String::new(),
            })
            .collect(),
    )
}

/// The manager's probe function over every node, as its round calls it, and nothing else.
async fn probe_node_loop(fleet: &FleetProcess, plan: (usize, usize)) -> Result<Series> {
    let addrs = addrs(fleet);
    let opts = probe_options(INTERVAL, HaConfig::default().storage);
    drive("probe_node loop (no monitor)", fleet, plan, async || {
        let sem = Arc::new(Semaphore::new(concurrency()));
        let mut set = JoinSet::new();
        for a in addrs.iter() {
            let (sem, a) = (sem.clone(), a.clone());
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                probe_node(&a, opts).await.reachable
            });
        }
        Ok(count_failed(set).await)
    })
    .await
}

async fn count_failed(mut set: JoinSet<bool>) -> u64 {
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        failed += u64::from(!r.unwrap_or(false));
    }
    failed
}

/// Connection options as `StorageConn::connect` sets them.
fn opts(port: u16) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .pass(Some(""))
        .prefer_socket(false)
        .stmt_cache_size(0)
}

/// One probe: `PROBE_SQL` in one round trip, or (`split`, how the manager probed before it
/// sent them as one query: the baseline) its statements one by one.
async fn plain_probe(c: &mut Conn, split: bool) -> mysql_async::Result<()> {
    if split {
        for sql in PROBE_SQL.split(';') {
            let _: Vec<Row> = c.query(sql).await?;
        }
        return Ok(());
    }
    let mut result = c.query_iter(PROBE_SQL).await?;
    while !result.is_empty() {
        let _: Vec<Row> = result.collect().await?;
    }
    Ok(())
}

/// Floor: a plain client, a fresh connection per probe (connect, the probe query, quit).
async fn plain_fresh(fleet: &FleetProcess, plan: (usize, usize)) -> Result<Series> {
    let ports = Arc::new(fleet.ports.clone());
    drive("plain mysql_async, fresh conn", fleet, plan, async || {
        let sem = Arc::new(Semaphore::new(concurrency()));
        let mut set = JoinSet::new();
        for &port in ports.iter() {
            let sem = sem.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let probe = async {
                    let mut c = Conn::new(opts(port)).await?;
                    plain_probe(&mut c, false).await?;
                    c.disconnect().await
                };
                matches!(
                    tokio::time::timeout(PROBE_DEADLINE, probe).await,
                    Ok(Ok(()))
                )
            });
        }
        Ok(count_failed(set).await)
    })
    .await
}

/// Floor: a plain client keeping one connection per node (opened before the rounds; a
/// failed one is opened again in the next round). With `split`, the baseline: the same with
/// one round trip per statement.
async fn plain_persistent(
    fleet: &FleetProcess,
    plan: (usize, usize),
    split: bool,
) -> Result<Series> {
    let ports = fleet.ports.clone();
    let mut conns: Vec<Option<Conn>> = (0..ports.len()).map(|_| None).collect();
    let label = if split {
        "plain persistent, 3 round trips"
    } else {
        "plain mysql_async, persistent"
    };
    let series = drive(label, fleet, plan, async || {
        let sem = Arc::new(Semaphore::new(concurrency()));
        let mut set = JoinSet::new();
        for (i, slot) in conns.iter_mut().enumerate() {
            let (sem, held, port) = (sem.clone(), slot.take(), ports[i]);
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let probe = async {
                    let mut c = match held {
                        Some(c) => c,
                        None => Conn::new(opts(port)).await?,
                    };
                    plain_probe(&mut c, split).await?;
                    mysql_async::Result::Ok(c)
                };
                (
                    i,
                    tokio::time::timeout(PROBE_DEADLINE, probe)
                        .await
                        .ok()
                        .and_then(Result::ok),
                )
            });
        }
        let mut failed = 0;
        while let Some(r) = set.join_next().await {
            let (i, c) = r.context("probe task")?;
            failed += u64::from(c.is_none());
            conns[i] = c;
        }
        Ok(failed)
    })
    .await;
    for c in conns.into_iter().flatten() {
        let _ = c.disconnect().await;
    }
    series
}

async fn run_size(fleet: &FleetProcess, plan: (usize, usize)) -> Result<Vec<Series>> {
    Ok(vec![
        manager(fleet, plan).await?,
        probe_node_loop(fleet, plan).await?,
        plain_fresh(fleet, plan).await?,
        plain_persistent(fleet, plan, false).await?,
        plain_persistent(fleet, plan, true).await?,
    ])
}

fn print_table(all: &[Series], rounds: usize) {
    println!(
        "\nprobe_fleet: rounds every {} ms, {rounds} measured per series, concurrency {}; \
         p99 is nearest-rank (of {rounds} rounds: the slowest); late = rounds longer than the \
         interval; CPU = process user+sys / wall (ms/probe: its CPU per probe); others = the rest of the machine's busy \
         cores meanwhile (builds etc.: figures taken beside much of it are slowed)",
        INTERVAL.as_millis(),
        concurrency()
    );
    println!(
        "{:>6}  {:<31} {:>9} {:>9} {:>5} {:>14} {:>9} {:>10} {:>9} {:>10} {:>7}",
        "N",
        "prober",
        "p50 ms",
        "p99 ms",
        "late",
        "failed/round",
        "CPU cores",
        "per 1k",
        "ms/probe",
        "endpoints",
        "others"
    );
    for s in all {
        let failed_max = s.failed.iter().copied().max().unwrap_or(0);
        let failed_sum: u64 = s.failed.iter().sum();
        println!(
            "{:>6}  {:<31} {:>9.1} {:>9.1} {:>5} {:>14} {:>9.3} {:>10.3} {:>9.3} {:>10.3} {:>7.2}",
            s.n,
            s.label,
            pct(&s.round_ms, 0.5),
            pct(&s.round_ms, 0.99),
            s.late,
            format!("{failed_sum} (max {failed_max})"),
            s.cores,
            s.cores / (s.n as f64 / 1000.0),
            s.cpu_ms_per_probe,
            s.endpoint_cores,
            s.other_cores
        );
    }
}

fn main() -> Result<()> {
    let nofile = raise_nofile()?;
    fake_mysql::serve_if_asked();
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = if bench {
        std::env::var("PROBE_FLEET_SIZES")
            .ok()
            .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![500, 2000, 5000])
    } else {
        vec![30]
    };
    let plan = if bench {
        (2, env_u64("PROBE_FLEET_ROUNDS", 10) as usize)
    } else {
        (0, 3)
    };
    println!(
        "probe_fleet: {} mode, N = {sizes:?}, open-file limit {nofile}",
        if bench { "bench" } else { "smoke" }
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut all = Vec::new();
    for n in sizes {
        let t = Instant::now();
        let fleet = FleetProcess::start(n)?;
        println!(
            "N = {n}: {n} endpoints up in {:.1} s (pid {})",
            t.elapsed().as_secs_f64(),
            fleet.pid()
        );
        let series = rt.block_on(run_size(&fleet, plan))?;
        for s in &series {
            println!(
                "  {:<31} rounds ms {:?} failed {:?}",
                s.label,
                s.round_ms
                    .iter()
                    .map(|v| v.round() as u64)
                    .collect::<Vec<_>>(),
                s.failed
            );
        }
        all.extend(series);
    }
    print_table(&all, plan.1);
    if !bench {
        let failed: u64 = all.iter().flat_map(|s| s.failed.iter()).sum();
        ensure!(failed == 0, "{failed} probes failed in the smoke run");
    }
    Ok(())
}
