//! Rebuild time of a replica holding ~1 GB (`rebuild_node`), against the floor measured in the
//! same run: a plain `mariadb-backup --backup --stream=xbstream | mbstream -x` copy of the same
//! primary over the same SSH relay ([`kunlun_provision::SshExecutor::pipe`]) into a scratch dir
//! on the same machine, no prepare, no restart. And the dump path (`mariadb-dump --gtid` loaded
//! into a fresh instance, what `add_nodes` does) for comparison. Prints every trial, the
//! rebuild's steps, p50 of each and the ratio rebuild / plain copy (goal <= 1.2x), so the
//! default method is the faster one by measurement.
//!
//! Set-up (untimed): a private sshd on 127.0.0.91, an `rbr` cluster of 1 shard x 2 nodes made by
//! the `create_cluster` job, `REBUILD_BENCH_MB` (default 1024) MB of rows loaded through the
//! primary and replicated. The source of every copy is the primary (the only other node).
//!
//! `cargo bench -p kunlun-tests --bench rebuild` runs `REBUILD_BENCH_TRIALS` (default 3) trials
//! of the physical rebuild and of the plain copy (alternating which goes first) and
//! `REBUILD_BENCH_DUMP_TRIALS` (default 1) of the dump path. Without `--bench` (as under
//! `cargo test --all-targets`) it only says how to run it: the test suite does not run it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use kunlun_meta::api::{RebuildMethod, RebuildNode};
use kunlun_meta::model::{JobStatus, MachineType};
use kunlun_provision::recipe::reseed::{Compression, Reseed};
use kunlun_provision::recipe::{sh_quote, MariaDbRecipe};
use kunlun_tests::bench::{du_mb, env_u64, one_shard_loaded, p50, LoadedShard};
use kunlun_tests::world::ProvisionWorld;
use mysql_async::prelude::Queryable;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 91);
/// A row's ~1 KB of text (as the rebuild measured it first: highly compressible).
const PAD: &str = "CONCAT(REPEAT(MD5(RAND()), 31), 'x')";

async fn checksum(c: &mut mysql_async::Conn) -> Result<Option<i64>> {
    let row: Option<(String, Option<i64>)> = c.query_first("CHECKSUM TABLE bench.t").await?;
    Ok(row.and_then(|(_, s)| s))
}

struct Trial {
    secs: f64,
    mb: f64,
}

async fn run() -> Result<()> {
    let mb = env_u64("REBUILD_BENCH_MB", 1024);
    let trials = env_u64("REBUILD_BENCH_TRIALS", 3).max(1);
    let dump_trials = env_u64("REBUILD_BENCH_DUMP_TRIALS", 1);
    let w = ProvisionWorld::builder(IP).build().await;
    let LoadedShard {
        pw,
        primary,
        replica,
        rows,
        load_secs,
        ..
    } = one_shard_loaded(&w, "rbbench", 256, mb, PAD).await?;
    let data_dir = |port: u16| w.data.join(format!("kunlun/storage_{port}/data"));
    println!(
        "set-up: {} rows loaded and replicated in {:.0} s; primary data dir {:.0} MB, \
         replica's {:.0} MB",
        rows,
        load_secs,
        du_mb(&data_dir(primary.port)),
        du_mb(&data_dir(replica.port))
    );

    let prov = w.provisioner();
    let machine = w.machine(MachineType::Storage).clone();
    let target = prov.target(&machine);
    let recipe = MariaDbRecipe::default();
    let primary_base = w
        .data
        .join(format!("kunlun/storage_{}", primary.port))
        .display()
        .to_string();
    let backup = format!(
        "sh -c {}",
        sh_quote(&recipe.backup_script(&primary_base, Compression::None)?)
    );
    let scratch = w.data.join("bench-plain-copy");

    let mut plain: Vec<Trial> = Vec::new();
    let mut prepared: Vec<f64> = Vec::new();
    let mut physical: Vec<Trial> = Vec::new();
    let mut dump: Vec<Trial> = Vec::new();
    let ip = IP.to_string();
    let rebuild = |method: RebuildMethod| {
        let (w, ip, port) = (&w, ip.clone(), replica.port);
        async move {
            let body = RebuildNode {
                source: None,
                method: Some(method),
            };
            let t = Instant::now();
            let accepted = w.mgr.rebuild_instance(&ip, port, &body).await?;
            let job = w.run_job(accepted.job_id).await;
            let secs = t.elapsed().as_secs_f64();
            if job.status != JobStatus::Done {
                bail!("rebuild failed: {:?}", job.memo);
            }
            let memo = job.memo.unwrap_or_default();
            let steps: Vec<String> = memo["steps"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|s| {
                            format!(
                                "{} {:.1}s",
                                s["name"]
                                    .as_str()
                                    .unwrap_or("")
                                    .split(' ')
                                    .next()
                                    .unwrap_or(""),
                                s["ms"].as_f64().unwrap_or(0.0) / 1000.0
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let bytes = memo["nodes"][0]["bytes"].as_f64();
            Ok::<_, anyhow::Error>((secs, bytes, steps.join(", ")))
        }
    };
    let data_mb = du_mb(&data_dir(primary.port));
    for i in 0..trials {
        for first in [i % 2 == 0, i % 2 == 1] {
            if first {
                let _ = std::fs::remove_dir_all(&scratch);
                std::fs::create_dir_all(&scratch)?;
                let sink = format!(
                    "sh -c {}",
                    sh_quote(&format!(
                        "mbstream -x -C {}",
                        sh_quote(&scratch.display().to_string())
                    ))
                );
                let t = Instant::now();
                let piped = prov
                    .ssh
                    .pipe(
                        &target,
                        &backup,
                        &target,
                        &sink,
                        None,
                        Duration::from_secs(7200),
                    )
                    .await?;
                let secs = t.elapsed().as_secs_f64();
                let mb = piped.bytes as f64 / 1e6;
                // What a copy by hand needs before a server can use it (timed apart).
                let t = Instant::now();
                let prep = format!(
                    "mariadb-backup --prepare --target-dir={} >/dev/null 2>&1",
                    sh_quote(&scratch.display().to_string())
                );
                prov.ssh
                    .exec(&target, &prep, Duration::from_secs(3600))
                    .await?
                    .checked()?;
                let prep_secs = t.elapsed().as_secs_f64();
                println!(
                    "plain copy   trial {i}: {secs:7.1} s  {mb:7.0} MB  {:6.1} MB/s  \
                     (+ prepare {prep_secs:.1} s)",
                    mb / secs
                );
                plain.push(Trial { secs, mb });
                prepared.push(secs + prep_secs);
                let _ = std::fs::remove_dir_all(&scratch);
            } else {
                let (secs, bytes, steps) = rebuild(RebuildMethod::Backup).await?;
                let mb = bytes.unwrap_or(0.0) / 1e6;
                println!(
                    "rebuild      trial {i}: {secs:7.1} s  {mb:7.0} MB  {:6.1} MB/s  [{steps}]",
                    mb / secs
                );
                physical.push(Trial { secs, mb });
            }
        }
    }
    for i in 0..dump_trials {
        match rebuild(RebuildMethod::Dump).await {
            Ok((secs, _, steps)) => {
                println!(
                    "rebuild dump trial {i}: {secs:7.1} s  ({data_mb:.0} MB data dir, {:.1} MB/s)  \
                     [{steps}]",
                    data_mb / secs
                );
                dump.push(Trial { secs, mb: data_mb });
            }
            // Said, not fatal: the figures of the other methods still print.
            Err(e) => println!("rebuild dump trial {i}: failed: {e:#}"),
        }
    }
    // Untimed: the replica is whole (its checksum is the primary's) after the last rebuild.
    let mut r = w.conn(replica.port, &pw).await;
    let mut p = w.conn(primary.port, &pw).await;
    let (a, b) = (checksum(&mut p).await?, checksum(&mut r).await?);
    ensure!(
        a == b && a.is_some(),
        "checksums differ: primary {a:?}, replica {b:?}"
    );

    let secs = |v: &[Trial]| v.iter().map(|t| t.secs).collect::<Vec<_>>();
    let (pp, pr) = (p50(&secs(&plain)), p50(&secs(&physical)));
    println!("\nrebuild of a replica holding {data_mb:.0} MB (data dir), {trials} trials each:");
    println!(
        "  plain mariadb-backup stream copy  p50 {pp:7.1} s  ({:.0} MB streamed)",
        plain.first().map_or(0.0, |t| t.mb)
    );
    let pq = p50(&prepared);
    println!("  plain copy + mariadb-backup --prepare  p50 {pq:7.1} s");
    println!(
        "  rebuild_node, method backup       p50 {pr:7.1} s  ratio {:.2}x of the plain copy \
         (goal <= 1.2x), {:.2}x of copy + prepare",
        pr / pp,
        pr / pq
    );
    if !dump.is_empty() {
        let pd = p50(&secs(&dump));
        println!(
            "  rebuild_node, method dump         p50 {pd:7.1} s  ratio {:.2}x of the plain copy, {:.2}x of backup",
            pd / pp,
            pd / pr
        );
    }
    println!("  checksum of bench.t equal on the primary and the rebuilt replica: {a:?}");
    Ok(())
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "rebuild bench: run it with `cargo bench -p kunlun-tests --bench rebuild` \
             (REBUILD_BENCH_MB, REBUILD_BENCH_TRIALS, REBUILD_BENCH_DUMP_TRIALS)"
        );
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}
