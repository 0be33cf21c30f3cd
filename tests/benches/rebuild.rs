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

use anyhow::{bail, ensure, Context, Result};
use kunlun_core::jobs::accept_create_cluster;
use kunlun_meta::api::{CreateCluster, RebuildMethod, RebuildNode};
use kunlun_meta::model::{HaMode, JobStatus, MachineType, MemberState};
use kunlun_meta::store::repo::secrets;
use kunlun_provision::recipe::reseed::{Compression, Reseed};
use kunlun_provision::recipe::{sh_quote, MariaDbRecipe};
use kunlun_tests::world::ProvisionWorld;
use mysql_async::prelude::Queryable;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 91);
/// Rows of ~1 KB, loaded this many per statement.
const ROW_BYTES: u64 = 1000;
const BATCH: u64 = 10_000;
/// Every this many rows the load waits for the replica and drops both nodes' binary logs, so
/// the set-up needs little more disk than the two data sets.
const PURGE_EVERY: u64 = 200_000;

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn p50(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `du -sb` of a local path, in MB.
fn du_mb(path: &std::path::Path) -> f64 {
    let out = std::process::Command::new("du")
        .args(["-sb", &path.display().to_string()])
        .output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1e6
}

/// Waits until the replica `r` holds everything the primary `p` logged, then drops both nodes'
/// binary logs (the replica's relay logs go as it applies them).
async fn sync_and_purge(p: &mut mysql_async::Conn, r: &mut mysql_async::Conn) -> Result<()> {
    let pos: String = p
        .query_first("SELECT @@gtid_binlog_pos")
        .await?
        .unwrap_or_default();
    let waited: Option<String> = r
        .query_first(format!(
            "SELECT CAST(MASTER_GTID_WAIT('{pos}', 3600) AS CHAR)"
        ))
        .await?;
    ensure!(waited.as_deref() == Some("0"), "the replica caught up");
    for c in [p, r] {
        c.query_drop("FLUSH BINARY LOGS").await?;
        c.query_drop("PURGE BINARY LOGS BEFORE NOW() + INTERVAL 1 SECOND")
            .await?;
    }
    Ok(())
}

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
    let store = w.store.clone();
    let req = CreateCluster {
        name: "rbbench".into(),
        nick_name: None,
        ha_mode: HaMode::Rbr,
        shards: 1,
        nodes: 2,
        comps: 1,
        innodb_size_mb: Some(256),
        max_connections: Some(100),
        storage_hosts: vec![],
        computer_hosts: vec![],
    };
    let job = accept_create_cluster(&store, &req).await?;
    let job = w.run_job(job.id).await;
    ensure!(
        job.status == JobStatus::Done,
        "create_cluster: {:?}",
        job.memo
    );
    let cid = store.get_cluster_by_name("rbbench").await?.id;
    let pw = store
        .read(async |tx| secrets::get(tx, cid).await)
        .await?
        .manager_pwd;
    let shard = store.list_shards(Some(cid)).await?[0].id;
    let nodes = store.list_shard_nodes(Some(shard)).await?;
    let primary = nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source)
        .context("a primary")?
        .clone();
    let replica = nodes
        .iter()
        .find(|n| n.id != primary.id)
        .context("a replica")?
        .clone();

    // The data: ~mb MB of 1 KB rows through the primary, replicated.
    let t = Instant::now();
    let rows = mb * 1_000_000 / ROW_BYTES;
    let mut p = w.conn(primary.port, &pw).await;
    p.query_drop(
        "CREATE DATABASE bench; CREATE TABLE bench.t (id BIGINT PRIMARY KEY, \
         pad VARCHAR(1000) NOT NULL) ENGINE=InnoDB",
    )
    .await?;
    let mut r = w.conn(replica.port, &pw).await;
    let mut from = 1;
    while from <= rows {
        let to = (from + BATCH - 1).min(rows);
        p.query_drop(format!(
            "INSERT INTO bench.t SELECT seq, CONCAT(REPEAT(MD5(RAND()), 31), 'x') \
             FROM bench.seq_{from}_to_{to}"
        ))
        .await?;
        if to.is_multiple_of(PURGE_EVERY) || to == rows {
            sync_and_purge(&mut p, &mut r).await?;
        }
        from = to + 1;
    }
    let data_dir = |port: u16| w.data.join(format!("kunlun/storage_{port}/data"));
    println!(
        "set-up: {} rows loaded and replicated in {:.0} s; primary data dir {:.0} MB, \
         replica's {:.0} MB",
        rows,
        t.elapsed().as_secs_f64(),
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
