//! Benchmark: per-command latency and throughput of the pooled `SshExecutor` against the
//! OpenSSH client multiplexed over a ControlMaster connection, both on the same private sshd
//! in the same run. Prints figures; asserts nothing about speed.
//!
//! Run: `cargo bench -p kunlun-tests --bench ssh_exec`
//! (`SSH_BENCH_N` commands per measurement, default 500; `SSH_BENCH_CONCURRENCY`, default 8).
//!
//! The sshd sets `HOME=/nonexistent` for sessions: bash sources `~/.bashrc` for commands run
//! by sshd, and root's on the development machines runs `pyenv init` (~350 ms per session,
//! the same for both clients), which would drown the difference being measured.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kunlun_provision::{SshExecutor, SshOptions, SshTarget};
use kunlun_tests::Sshd;

const TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND: &str = "true";

struct Figures {
    p50: Duration,
    p99: Duration,
    mean: Duration,
    per_sec_serial: f64,
    per_sec_parallel: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn figures(
    mut lat: Vec<Duration>,
    serial_total: Duration,
    parallel_n: usize,
    parallel_total: Duration,
) -> Figures {
    lat.sort();
    let n = lat.len();
    Figures {
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        mean: lat.iter().sum::<Duration>() / n as u32,
        per_sec_serial: n as f64 / serial_total.as_secs_f64(),
        per_sec_parallel: parallel_n as f64 / parallel_total.as_secs_f64(),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn bench_executor(sshd: &Sshd, n: usize, conc: usize) -> Result<Figures> {
    let ex = SshExecutor::new(SshOptions {
        max_connections_per_host: conc,
        ..SshOptions::default()
    });
    let t = SshTarget::new(
        sshd.host(),
        sshd.port(),
        sshd.user(),
        &sshd.user_key().private,
        sshd.known_hosts(),
    );
    // Warm up: open the pool's connections, as ControlMaster's master is opened beforehand.
    let warm = (0..conc).map(|_| ex.exec(&t, COMMAND, TIMEOUT));
    for r in futures::future::join_all(warm).await {
        r?.checked()?;
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        ex.exec(&t, COMMAND, TIMEOUT).await?.checked()?;
        lat.push(t0.elapsed());
    }
    let serial = start.elapsed();

    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers = (0..conc).map(|_| {
        let (ex, t, next) = (ex.clone(), t.clone(), next.clone());
        async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                ex.exec(&t, COMMAND, TIMEOUT).await?.checked()?;
            }
            Ok::<(), anyhow::Error>(())
        }
    });
    for r in futures::future::join_all(workers).await {
        r?;
    }
    let parallel = start.elapsed();
    eprintln!("  executor opened {} connections", ex.connections_opened());
    Ok(figures(lat, serial, n, parallel))
}

/// The harness's OpenSSH arguments (options, `user@ip`, then `remote`); extra options go
/// in front of them.
fn ssh_args(sshd: &Sshd, remote: &str) -> Vec<OsString> {
    sshd.ssh_command(remote)
        .get_args()
        .map(|a| a.to_os_string())
        .collect()
}

fn mux_command(sshd: &Sshd, control: &str, remote: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-o", "ControlMaster=no", "-o"])
        .arg(format!("ControlPath={control}"))
        .args(ssh_args(sshd, remote));
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn run_mux(sshd: &Sshd, control: &str) -> Result<()> {
    let out = mux_command(sshd, control, COMMAND).output()?;
    ensure!(
        out.status.success(),
        "ssh via ControlMaster failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn bench_openssh(sshd: &Sshd, n: usize, conc: usize) -> Result<Figures> {
    let control = sshd.dir().join("cm.sock").display().to_string();
    // The master: authenticates once, then backgrounds (-f) and keeps the connection (-N).
    let mut args = ssh_args(sshd, "");
    args.pop(); // no remote command: -N
    let status = Command::new("ssh")
        .args(["-M", "-f", "-N", "-o", "ControlPersist=600", "-o"])
        .arg(format!("ControlPath={control}"))
        .args(&args)
        .stdin(Stdio::null())
        .status()
        .context("starting the ControlMaster")?;
    ensure!(status.success(), "ControlMaster failed: {status}");
    let result = (|| {
        run_mux(sshd, &control)?;
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for _ in 0..n {
            let t0 = Instant::now();
            run_mux(sshd, &control)?;
            lat.push(t0.elapsed());
        }
        let serial = start.elapsed();
        let next = AtomicUsize::new(0);
        let start = Instant::now();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..conc)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        while next.fetch_add(1, Ordering::Relaxed) < n {
                            run_mux(sshd, &control)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("worker panicked"))?)
        })?;
        let parallel = start.elapsed();
        Ok(figures(lat, serial, n, parallel))
    })();
    // Stop the master (it is our process, found through its control socket).
    let _ = Command::new("ssh")
        .args(["-o"])
        .arg(format!("ControlPath={control}"))
        .args(["-O", "exit"])
        .arg(format!("root@{}", sshd.host()))
        .stderr(Stdio::null())
        .status();
    result
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    // `cargo bench` passes --bench; nothing else to parse.
    let n = env_usize("SSH_BENCH_N", 500);
    let conc = env_usize("SSH_BENCH_CONCURRENCY", 8);
    let sshd = Sshd::start_with(Ipv4Addr::LOCALHOST, &["SetEnv HOME=/nonexistent"])?;
    eprintln!(
        "ssh_exec bench: `{COMMAND}` x{n} serial, then x{n} over {conc} concurrent workers, \
         sshd {}",
        sshd.addr()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ours = rt.block_on(bench_executor(&sshd, n, conc))?;
    let openssh = bench_openssh(&sshd, n, conc)?;
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>14} {:>18}",
        "",
        "p50",
        "p99",
        "mean",
        "cmds/s serial",
        format!("cmds/s x{conc}")
    );
    for (name, f) in [
        ("SshExecutor (pooled ssh2)", &ours),
        ("OpenSSH + ControlMaster", &openssh),
    ] {
        println!(
            "{:<28} {:>12} {:>12} {:>12} {:>14.0} {:>18.0}",
            name,
            ms(f.p50),
            ms(f.p99),
            ms(f.mean),
            f.per_sec_serial,
            f.per_sec_parallel
        );
    }
    println!(
        "ratio (OpenSSH / executor): p50 latency {:.2}x, p99 latency {:.2}x; \
         throughput (executor / OpenSSH): serial {:.2}x, x{conc} {:.2}x",
        openssh.p50.as_secs_f64() / ours.p50.as_secs_f64(),
        openssh.p99.as_secs_f64() / ours.p99.as_secs_f64(),
        ours.per_sec_serial / openssh.per_sec_serial,
        ours.per_sec_parallel / openssh.per_sec_parallel
    );
    drop(rt);
    sshd.stop()?;
    Ok(())
}
