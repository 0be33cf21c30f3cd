//! Benchmark: `GET /v1/machines` with 1,000 registered machines against `GET /healthz` of the
//! same `cluster-mgr`, driven by the same closed-loop load generator, printing requests/s,
//! p50/p99 latency of each and their ratio.
//!
//! Run: `cargo bench -p kunlun-tests --bench api_load`. The daemon is the release binary
//! (`target/release/cluster-mgr`, built with `cargo build --release --bin cluster-mgr` when
//! missing; `KUNLUN_BENCH_DAEMON=/path/to/cluster-mgr` overrides). It runs on a free loopback
//! port with a temp SQLite store and is stopped by PID at the end, also on failure.
//! Knobs (env): `API_LOAD_CONNS` (16), `API_LOAD_WARMUP_SECS` (2), `API_LOAD_SECS` (8),
//! `API_LOAD_MACHINES` (1000). The figures are printed, never asserted: they depend on the box
//! (the generator shares the CPU with the daemon).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kunlun_meta::api::RegisterMachine;
use kunlun_meta::model::MachineType;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `target/<profile>` of this bench executable (`target/release/deps/api_load-*`).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("bench executable has no target/<profile>/deps parent")
}

/// The `cluster-mgr` of this bench's profile (release under `cargo bench`), rebuilt first so it
/// is never older than the sources (a no-op when it is up to date).
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

/// The daemon under test; killed by PID when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(bin: &Path, dir: &Path, port: u16) -> Result<Daemon> {
        let log = dir.join("cluster-mgr.log");
        let out = File::create(&log)?;
        let child = Command::new(bin)
            .args([
                "--http-bind",
                "127.0.0.1",
                "--http-port",
                &port.to_string(),
                "--sqlite-path",
            ])
            .arg(dir.join("meta.sqlite3"))
            .current_dir(dir)
            .env_remove("KUNLUN_CLUSTER_MGR_CONFIG")
            // Request logging would measure the terminal, not the API.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Daemon { child, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

async fn wait_healthy(http: &reqwest::Client, base: &str, daemon: &mut Daemon) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = daemon.child.try_wait()? {
            bail!("cluster-mgr exited with {status}:\n{}", daemon.log_tail());
        }
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "cluster-mgr did not answer /healthz in 60 s:\n{}",
                daemon.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers `n` machines with distinct addresses, 8 requests in flight.
async fn register(http: &reqwest::Client, base: &str, n: u32) -> Result<Duration> {
    let started = Instant::now();
    let url = Arc::new(format!("{base}/v1/machines"));
    let mut set = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    for _ in 0..8 {
        let (http, url, next) = (http.clone(), url.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let body = RegisterMachine {
                    // Loopback only: the daemon's liveness check connects to every machine.
                    hostaddr: format!(
                        "127.{}.{}.{}",
                        i / 65536 % 256 + 1,
                        i / 256 % 256,
                        i % 256 + 1
                    ),
                    machine_type: if i % 4 == 0 {
                        MachineType::Computer
                    } else {
                        MachineType::Storage
                    },
                    ssh_port: Some(22),
                    ssh_user: Some("kunlun".into()),
                    ssh_key_path: "/root/.ssh/id_ed25519".into(),
                    data_dirs: vec!["/data1/kunlun".into(), "/data2/kunlun".into()],
                    port_range: None,
                    rack_id: Some(format!("rack-{}", i % 20)),
                    total_mem_mb: Some(65536),
                    total_cpu_cores: Some(32),
                    // Nothing listens there: stored unprobed.
                    probe: false,
                    ssh_host_key: None,
                };
                let r = http.post(url.as_str()).json(&body).send().await?;
                let status = r.status();
                if !status.is_success() {
                    bail!(
                        "POST /v1/machines #{i}: {status} {}",
                        r.text().await.unwrap_or_default()
                    );
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(started.elapsed())
}

/// What one measured run produced.
struct Stats {
    name: &'static str,
    latencies_us: Vec<u64>,
    errors: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Closed loop: `conns` tasks each send the next request as soon as the previous answer is read
/// in full; only answers that complete after the warm-up and before the end are counted.
async fn load(
    http: &reqwest::Client,
    name: &'static str,
    url: String,
    conns: u64,
    warmup: Duration,
    measure: Duration,
) -> Result<Stats> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let url = Arc::new(url);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (http, url) = (http.clone(), url.clone());
        set.spawn(async move {
            let (mut lat, mut errors, mut bytes) = (Vec::new(), 0u64, 0u64);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let ok = match http.get(url.as_str()).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(b) => {
                            bytes += b.len() as u64;
                            true
                        }
                        Err(_) => false,
                    },
                    _ => false,
                };
                let t1 = Instant::now();
                if t0 >= measure_from && t1 <= end {
                    if ok {
                        lat.push(t1.duration_since(t0).as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors, bytes)
        });
    }
    let mut stats = Stats {
        name,
        latencies_us: Vec::new(),
        errors: 0,
        bytes: 0,
        elapsed: measure,
    };
    while let Some(r) = set.join_next().await {
        let (lat, errors, bytes) = r?;
        stats.latencies_us.extend(lat);
        stats.errors += errors;
        stats.bytes += bytes;
    }
    stats.latencies_us.sort_unstable();
    Ok(stats)
}

/// Size of a run.
struct Config {
    conns: u64,
    warmup: Duration,
    measure: Duration,
    machines: u32,
}

async fn bench(cfg: Config) -> Result<()> {
    let Config {
        conns,
        warmup,
        measure,
        machines,
    } = cfg;
    let bin = daemon_binary()?;
    let dir = tempfile::Builder::new()
        .prefix("kunlun-api-load-")
        .tempdir()?;
    let port = kunlun_tests::free_port([127, 0, 0, 1].into());
    let base = format!("http://127.0.0.1:{port}");
    let mut daemon = Daemon::start(&bin, dir.path(), port)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(conns as usize)
        .timeout(Duration::from_secs(30))
        .build()?;
    wait_healthy(&http, &base, &mut daemon).await?;

    let took = register(&http, &base, machines).await?;
    // One page of the largest size (the list is paginated, 1000 at most per page).
    let listed: serde_json::Value = http
        .get(format!("{base}/v1/machines?limit=1000"))
        .send()
        .await?
        .json()
        .await?;
    let count = listed.as_array().map_or(0, Vec::len);
    ensure!(
        count == (machines as usize).min(1000),
        "GET /v1/machines returned {count} machines, expected {machines}"
    );

    println!(
        "api_load: cluster-mgr {} on {base}, SQLite in {}",
        bin.display(),
        dir.path().display()
    );
    println!(
        "registered {machines} machines in {:.2} s ({:.0} POST/s, 8 in flight)",
        took.as_secs_f64(),
        machines as f64 / took.as_secs_f64()
    );
    println!("load: {conns} connections, closed loop, {warmup:?} warm-up + {measure:?} measured per endpoint\n");

    let health = load(
        &http,
        "GET /healthz",
        format!("{base}/healthz"),
        conns,
        warmup,
        measure,
    )
    .await?;
    let list = load(
        &http,
        "GET /v1/machines",
        format!("{base}/v1/machines?limit=1000"),
        conns,
        warmup,
        measure,
    )
    .await?;
    daemon.stop();

    println!(
        "{:<18} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7} {:>10}",
        "endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "KiB/resp"
    );
    for s in [&health, &list] {
        let per = if s.latencies_us.is_empty() {
            0.0
        } else {
            s.bytes as f64 / 1024.0 / s.latencies_us.len() as f64
        };
        println!(
            "{:<18} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>7} {:>10.1}",
            s.name,
            s.latencies_us.len(),
            s.rps(),
            s.pct(0.50),
            s.pct(0.99),
            s.pct(1.0),
            s.errors,
            per
        );
    }
    println!(
        "\nratio machines/healthz: throughput {:.3} ({:.1}x fewer req/s), p50 {:.1}x, p99 {:.1}x",
        list.rps() / health.rps(),
        health.rps() / list.rps(),
        list.pct(0.50) / health.pct(0.50),
        list.pct(0.99) / health.pct(0.99)
    );
    ensure!(
        health.errors == 0 && list.errors == 0,
        "requests failed during the run (see errors column)"
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    // `cargo bench` passes `--bench`. Under `cargo test --all-targets` (scripts/test.sh) the same
    // code runs as a smoke test: 50 machines, no warm-up, one second per endpoint.
    let smoke = !std::env::args().any(|a| a == "--bench");
    if smoke {
        println!("api_load: smoke run (cargo test); `cargo bench -p kunlun-tests --bench api_load` gives the figures");
    }
    let cfg = if smoke {
        Config {
            conns: 4,
            warmup: Duration::ZERO,
            measure: Duration::from_secs(1),
            machines: 50,
        }
    } else {
        Config {
            conns: env_num("API_LOAD_CONNS", 16).max(1),
            warmup: Duration::from_secs(env_num("API_LOAD_WARMUP_SECS", 2)),
            measure: Duration::from_secs(env_num("API_LOAD_SECS", 8).max(1)),
            machines: env_num("API_LOAD_MACHINES", 1000) as u32,
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("api_load: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench(cfg)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("api_load failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
