//! Backup, restore and point-in-time replay of a shard holding ~1 GB, each against the plain
//! path measured in the same run on the same machine:
//!
//! 1. `backup_cluster` (to an `ssh_dir` storage on the same machine) against a plain
//!    `mariadb-backup --backup --stream=xbstream` of the same source replica streamed over the
//!    same SSH relay ([`kunlun_provision::SshExecutor::pipe`]) into a file in the same storage
//!    dir (goal <= 1.15x);
//! 2. `restore_cluster` of that backup into a new cluster of 1 node per shard against the plain
//!    path: the stream fetched over the same relay into `mbstream -x`, `mariadb-backup
//!    --prepare`, `--move-back` into a data dir (goal <= 1.2x);
//! 3. point-in-time replay: binlog archiving on (the leader's archive actor, every 2 s), ~256 MB
//!    of binlog written after the backup, a restore to a time after the last write; binlog MB
//!    replayed / replay time against `mariadb-binlog <the archived files> | mariadb` into a
//!    server started on the plain restore's data dir (defaults; the restored node's
//!    `sync_binlog` and `innodb_flush_log_at_trx_commit`; those and its semi-sync settings).
//!
//! Every job's own steps (its memo) are printed, and beside them what ran when: the programs
//! seen in `/proc` every 100 ms during the run (the backup tool, `sha256sum`, `sync`,
//! `mbstream`, `--prepare`, `mariadb-binlog`, ...), so the time over the plain path can be put
//! on a phase. Set-up (untimed): a private sshd on 127.0.0.93, an `rbr` cluster of 1 shard x 2
//! nodes + 1 compute node made by the `create_cluster` job, `BACKUP_BENCH_MB` (default 1024) MB
//! of rows loaded through the primary and replicated (binlogs purged as it goes). Jobs run
//! through the job driver ([`ProvisionWorld::run_job`]), as `rebuild` does.
//!
//! `cargo bench -p kunlun-tests --bench backup` runs `BACKUP_BENCH_TRIALS` (default 3) trials of
//! the backup and of the restore (alternating which path goes first), one point-in-time
//! restore (`BACKUP_BENCH_PITR_MB`, default 256, written in transactions of
//! `BACKUP_BENCH_PITR_ROWS` rows of ~1 KB, default 100). `BACKUP_BENCH_DATA=random` loads rows
//! no compressor shrinks (default `mixed`: about 3.6x). Without `--bench` (as under `cargo
//! test --all-targets`) it only says how to run it: the test suite does not run it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use kunlun_core::backup::archive;
use kunlun_meta::api::{
    AddBackupStorage, CreateBackup, RestoreBackup, SnapshotCompression, KIND_SSH_DIR,
};
use kunlun_meta::model::{JobStatus, MachineType};
use kunlun_provision::recipe::reseed::{Compression, Reseed};
use kunlun_provision::recipe::{sh_quote, MariaDbRecipe};
use kunlun_tests::bench::{
    du_mb, env_u64, manager_pwd, one_shard_loaded, p50, LoadedShard, ROW_BYTES,
};
use kunlun_tests::world::ProvisionWorld;
use mysql_async::prelude::Queryable;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 93);
/// A row's ~1 KB of text (`BACKUP_BENCH_DATA=mixed`, the default): half random hex, half
/// repeated, so a compressed snapshot is about a third of the data, not the 30x of a repeated
/// string.
const PAD_MIXED: &str = "CONCAT(HEX(RANDOM_BYTES(250)), REPEAT(MD5(seq), 15), 'x')";
/// `BACKUP_BENCH_DATA=random`: base64 of random bytes, close to what no compressor shrinks
/// (the worst case for compressed snapshots: zstd's work for little gain).
const PAD_RANDOM: &str = "REPLACE(TO_BASE64(RANDOM_BYTES(740)), '\\n', '')";

/// The row text the run uses, by `BACKUP_BENCH_DATA`.
fn pad() -> &'static str {
    match std::env::var("BACKUP_BENCH_DATA").as_deref() {
        Ok("random") => PAD_RANDOM,
        _ => PAD_MIXED,
    }
}
const STORAGE: &str = "bench";
const INNODB_MB: u32 = 256;
/// How often the archive actor runs (the daemon's `binlog_archive_interval`).
const ARCHIVE_EVERY: Duration = Duration::from_secs(2);
const LONG: Duration = Duration::from_secs(7200);
/// How often the process sampler looks at `/proc`.
const SAMPLE: Duration = Duration::from_millis(100);

/// Runs `sh -c script` locally; its stdout, or the failure with its stderr.
fn sh(script: &str) -> Result<String> {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .context("run sh")?;
    ensure!(
        out.status.success(),
        "`{script}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ------------------------------------------------------------------ what ran when (/proc)

/// The program of a process worth timing, by its argv (never the `sh -c` scripts that merely
/// name the programs): the phases the jobs and the plain paths go through.
fn phase_of(argv: &[String]) -> Option<&'static str> {
    let base = argv.first()?.rsplit('/').next()?;
    let has = |a: &str| argv.iter().any(|x| x == a);
    match base {
        "mariadb-backup" | "mariabackup" if has("--backup") => Some("backup tool"),
        "mariadb-backup" | "mariabackup" if has("--prepare") => Some("prepare"),
        "mariadb-backup" | "mariabackup" if has("--move-back") => Some("move-back"),
        "mbstream" => Some("mbstream -x"),
        "sha256sum" => Some("sha256sum"),
        "openssl" if has("dgst") => Some("sha-256 (openssl)"),
        "zstd" if has("-d") => Some("zstd -d"),
        "zstd" => Some("zstd"),
        "sync" => Some("sync (fsync)"),
        "pg_dumpall" => Some("pg_dumpall"),
        "mariadb-binlog" | "mysqlbinlog" => Some("mariadb-binlog"),
        "mariadb" | "mysql" if has("--binary-mode") => Some("client applying"),
        "mariadb-install-db" | "mysql_install_db" => Some("install-db"),
        "initdb" => Some("initdb"),
        "cat" if argv.get(1).is_some_and(|a| a == "--") => Some("cat (storage read)"),
        _ => None,
    }
}

/// First and last time (s after the start) a phase was seen, and how many samples saw it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    first: f64,
    last: f64,
    samples: u32,
}

/// A thread that reads every process's argv from `/proc` every [`SAMPLE`] until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<BTreeMap<&'static str, Seen>>,
}

impl Sampler {
    fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut seen: BTreeMap<&'static str, Seen> = BTreeMap::new();
            while !s.load(Ordering::Relaxed) {
                let now = t0.elapsed().as_secs_f64();
                let mut this: Vec<&'static str> = Vec::new();
                for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let name = e.file_name();
                    if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                        continue;
                    }
                    let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
                        continue;
                    };
                    let argv: Vec<String> = raw
                        .split(|b| *b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    if let Some(p) = phase_of(&argv) {
                        if !this.contains(&p) {
                            this.push(p);
                        }
                    }
                }
                for p in this {
                    let e = seen.entry(p).or_insert(Seen {
                        first: now,
                        last: now,
                        samples: 0,
                    });
                    e.last = now;
                    e.samples += 1;
                }
                std::thread::sleep(SAMPLE);
            }
            seen
        });
        Sampler { stop, handle }
    }

    /// Stops it; the phases seen, by first appearance, as one line.
    fn finish(self) -> (String, BTreeMap<&'static str, Seen>) {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.handle.join().unwrap_or_default();
        let mut v: Vec<(&&str, &Seen)> = seen.iter().collect();
        v.sort_by(|a, b| a.1.first.total_cmp(&b.1.first));
        let line = v
            .iter()
            .map(|(p, s)| {
                format!(
                    "{p} {:.1}-{:.1} s (~{:.1} s seen)",
                    s.first,
                    s.last,
                    f64::from(s.samples) * SAMPLE.as_secs_f64()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        (line, seen)
    }
}

// ----------------------------------------------------------------------------- the jobs

/// The steps of a job's memo as `(name, seconds)`.
fn steps(memo: &Value) -> Vec<(String, f64)> {
    memo["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or("").to_string(),
                        s["ms"].as_f64().unwrap_or(0.0) / 1000.0,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn show_steps(steps: &[(String, f64)]) -> String {
    steps
        .iter()
        .map(|(n, s)| format!("{n} {s:.1}s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Seconds of the first step whose name starts with `prefix` (0 when none).
fn step_secs(steps: &[(String, f64)], prefix: &str) -> f64 {
    steps
        .iter()
        .find(|(n, _)| n.starts_with(prefix))
        .map_or(0.0, |(_, s)| *s)
}

/// A finished job: wall seconds from acceptance, its memo, its steps, the programs seen.
struct JobRun {
    secs: f64,
    memo: Value,
    steps: Vec<(String, f64)>,
    phases: String,
    seen: BTreeMap<&'static str, Seen>,
}

/// Runs the job accepted as `job_id` (accepted at `t`) through the driver; fails unless done.
async fn finish_job(w: &ProvisionWorld, job_id: i64, t: Instant, s: Sampler) -> Result<JobRun> {
    let job = w.run_job(job_id).await;
    let secs = t.elapsed().as_secs_f64();
    let (phases, seen) = s.finish();
    let memo = job.memo.clone().unwrap_or_default();
    if job.status != JobStatus::Done {
        bail!("job {job_id} ({}) failed: {memo}", job.job_type);
    }
    Ok(JobRun {
        secs,
        steps: steps(&memo),
        memo,
        phases,
        seen,
    })
}

async fn backup_job(
    w: &ProvisionWorld,
    cid: i64,
    compression: SnapshotCompression,
) -> Result<JobRun> {
    let req = CreateBackup {
        storage: STORAGE.into(),
        allow_primary: false,
        compression,
    };
    let s = Sampler::start();
    let t = Instant::now();
    let acc = w.mgr.backup_cluster(cid, &req).await?;
    finish_job(w, acc.job_id, t, s).await
}

async fn restore_job(
    w: &ProvisionWorld,
    backup_id: i64,
    name: &str,
    restore_time: Option<String>,
) -> Result<JobRun> {
    let req = RestoreBackup {
        name: name.into(),
        nick_name: None,
        nodes: Some(1),
        comps: Some(1),
        innodb_size_mb: Some(INNODB_MB),
        max_connections: Some(100),
        storage_hosts: vec![],
        computer_hosts: vec![],
        allow_inconsistent: false,
        restore_time,
    };
    let s = Sampler::start();
    let t = Instant::now();
    let acc = w.mgr.restore_backup(backup_id, &req).await?;
    finish_job(w, acc.job_id, t, s).await
}

async fn delete_cluster(w: &ProvisionWorld, cid: i64) -> Result<()> {
    let acc = w.mgr.delete_cluster(cid).await?;
    let job = w.run_job(acc.job_id).await;
    ensure!(
        job.status == JobStatus::Done,
        "delete_cluster {cid}: {:?}",
        job.memo
    );
    Ok(())
}

/// The storage node port of the (1-node) shard of cluster `cid`.
async fn only_node(w: &ProvisionWorld, cid: i64) -> Result<u16> {
    let shard = w.store.list_shards(Some(cid)).await?[0].id;
    let nodes = w.store.list_shard_nodes(Some(shard)).await?;
    Ok(nodes.first().context("a node")?.port)
}

async fn one_i64(c: &mut mysql_async::Conn, sql: &str) -> Result<i64> {
    let v: Option<i64> = c.query_first(sql).await?;
    v.with_context(|| format!("{sql}: no row"))
}

// ------------------------------------------------------------ the plain point-in-time replay

/// A `mariadbd` on a restored data dir, socket only, no grant checks, binlog on: what a plain
/// `mariadb-binlog | mariadb` replay goes into. Killed by its pid when dropped.
struct Scratch {
    child: std::process::Child,
    sock: String,
    client: String,
}

impl Scratch {
    fn start(r: &MariaDbRecipe, dir: &Path, datadir: &Path, extra: &[String]) -> Result<Scratch> {
        let run = dir.join("run");
        std::fs::create_dir_all(&run)?;
        sh(&format!(
            "chown -R {u} {r} {d}",
            u = sh_quote(&r.os_user),
            r = sh_quote(&run.display().to_string()),
            d = sh_quote(&datadir.display().to_string())
        ))?;
        let sock = run.join("sock").display().to_string();
        let child = std::process::Command::new(&r.mariadbd)
            .arg("--no-defaults")
            .arg(format!("--user={}", r.os_user))
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={sock}"))
            .arg(format!("--pid-file={}", run.join("pid").display()))
            .arg(format!("--log-error={}", run.join("error.log").display()))
            .arg(format!("--log-bin={}", run.join("binlog").display()))
            .arg(format!("--tmpdir={}", run.display()))
            .args([
                "--skip-networking",
                "--skip-grant-tables",
                "--skip-slave-start",
                "--server-id=999",
            ])
            .arg(format!("--innodb-buffer-pool-size={INNODB_MB}M"))
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("start mariadbd")?;
        let s = Scratch {
            child,
            sock,
            client: r.client.clone(),
        };
        let t = Instant::now();
        while s.sql("SELECT 1").is_err() {
            ensure!(
                t.elapsed() < Duration::from_secs(120),
                "the scratch server did not start: {}",
                std::fs::read_to_string(run.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(s)
    }

    fn sql(&self, q: &str) -> Result<String> {
        sh(&format!(
            "{c} --no-defaults --socket={s} --user=root -N -B -e {q}",
            c = sh_quote(&self.client),
            s = sh_quote(&self.sock),
            q = sh_quote(q)
        ))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.sql("SHUTDOWN");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plain replay: the scratch server set to the snapshot's GTID (as the restore does), then
/// `mariadb-binlog --start-position=<gtid> FILES | mariadb --binary-mode`; seconds.
fn plain_replay(r: &MariaDbRecipe, s: &Scratch, gtid: &str, files: &[PathBuf]) -> Result<f64> {
    s.sql(&format!(
        "RESET MASTER; SET GLOBAL gtid_binlog_state = '{gtid}'"
    ))?;
    let list = files
        .iter()
        .map(|f| sh_quote(&f.display().to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let t = Instant::now();
    sh(&format!(
        "set -e; TZ=UTC {bl} --start-position={g} {list} | {c} --no-defaults --socket={s} \
         --user=root --binary-mode",
        bl = sh_quote(&r.binlog),
        g = sh_quote(gtid),
        c = sh_quote(&r.client),
        s = sh_quote(&s.sock),
    ))?;
    Ok(t.elapsed().as_secs_f64())
}

// ------------------------------------------------------------------------------- the run

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn epoch_secs(rfc: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc)
        .ok()
        .map(|t| t.timestamp())
}

async fn run() -> Result<()> {
    let mb = env_u64("BACKUP_BENCH_MB", 1024);
    let trials = env_u64("BACKUP_BENCH_TRIALS", 3).max(1);
    let pitr_mb = env_u64("BACKUP_BENCH_PITR_MB", 256);
    let pitr_rows = env_u64("BACKUP_BENCH_PITR_ROWS", 100).max(1);
    let w = ProvisionWorld::builder(IP).build().await;
    w.mgr.set_provisioner(w.provisioner());
    let store = w.store.clone();
    let LoadedShard {
        cid,
        pw,
        shard,
        primary,
        replica,
        rows,
        load_secs,
    } = one_shard_loaded(&w, "bkbench", INNODB_MB, mb, pad()).await?;
    let mut p = w.conn(primary.port, &pw).await;
    let base = |port: u16| w.data.join(format!("kunlun/storage_{port}"));
    let data_mb = du_mb(&base(replica.port).join("data"));
    println!(
        "set-up: {rows} rows of `{}` loaded and replicated in {:.0} s; primary data dir {:.0} \
         MB, replica's (the backup source) {data_mb:.0} MB",
        pad(),
        load_secs,
        du_mb(&base(primary.port).join("data")),
    );

    let root = w.root().join("backups");
    w.mgr
        .add_backup_storage(&AddBackupStorage {
            name: STORAGE.into(),
            kind: KIND_SSH_DIR.into(),
            hostaddr: IP.to_string(),
            path: root.display().to_string(),
        })
        .await?;
    let prov = w.provisioner();
    let target = prov.target(w.machine(MachineType::Storage));
    let recipe = MariaDbRecipe::default();

    // ---- 1. backup
    let backup = format!(
        "sh -c {}",
        sh_quote(
            &recipe.backup_script(&base(replica.port).display().to_string(), Compression::None)?
        )
    );
    let plain_file = root.join("plain.mbstream");
    let sink = format!(
        "sh -c {}",
        sh_quote(&format!(
            "cat > {}",
            sh_quote(&plain_file.display().to_string())
        ))
    );
    let (mut plain_b, mut plain_b_sync, mut job_b) = (Vec::new(), Vec::new(), Vec::new());
    let mut job_none = Vec::new();
    let mut shard_step = Vec::new();
    let (mut last_backup, mut last_none): (Option<i64>, Option<i64>) = (None, None);
    println!(
        "\n1. backup of the shard ({data_mb:.0} MB data dir), {trials} trials: the plain stream, \
         backup_cluster (compression auto) and backup_cluster with compression none, in turn"
    );
    for i in 0..trials {
        let mut order = [0usize, 1, 2];
        order.rotate_left((i % 3) as usize);
        for which in order {
            if which == 2 {
                let j = backup_job(&w, cid, SnapshotCompression::None).await?;
                println!(
                    "  job (compression none) trial {i}: {:7.1} s\n    steps: {}\n    seen:  {}",
                    j.secs,
                    show_steps(&j.steps),
                    j.phases
                );
                job_none.push(j.secs);
                let bid = j.memo["backup_id"].as_i64().context("backup_id")?;
                if let Some(old) = last_none.replace(bid) {
                    w.mgr.delete_backup(old).await?;
                }
            } else if which == 0 {
                let s = Sampler::start();
                let t = Instant::now();
                let piped = prov
                    .ssh
                    .pipe(&target, &backup, &target, &sink, None, LONG)
                    .await?;
                let secs = t.elapsed().as_secs_f64();
                ensure!(piped.success(), "plain backup: {:?}", piped.source);
                // What the storage does besides (timed apart): the file made durable.
                let t = Instant::now();
                sh(&format!(
                    "sync {}",
                    sh_quote(&plain_file.display().to_string())
                ))?;
                let sync_secs = t.elapsed().as_secs_f64();
                let (phases, _) = s.finish();
                let mb = piped.bytes as f64 / 1e6;
                println!(
                    "  plain  trial {i}: {secs:7.1} s  {mb:6.0} MB  {:6.1} MB/s  (+ sync {sync_secs:.1} s)  \
                     [{phases}]",
                    mb / secs
                );
                plain_b.push(secs);
                plain_b_sync.push(secs + sync_secs);
                // Kept (overwritten by the next trial): the plain restore reads it.
            } else {
                let j = backup_job(&w, cid, SnapshotCompression::Auto).await?;
                let bytes = j.memo["parts"][0]["bytes"].as_f64().unwrap_or(0.0);
                let mb = bytes / 1e6;
                println!(
                    "  job    trial {i}: {:7.1} s  {mb:6.0} MB  {:6.1} MB/s  ({})\n    steps: {}\n    seen:  {}",
                    j.secs,
                    mb / j.secs,
                    j.memo["parts"][0]["compression"].as_str().unwrap_or("?"),
                    show_steps(&j.steps),
                    j.phases
                );
                job_b.push(j.secs);
                shard_step.push(step_secs(&j.steps, "shard"));
                let bid = j.memo["backup_id"].as_i64().context("backup_id")?;
                if let Some(old) = last_backup.replace(bid) {
                    w.mgr.delete_backup(old).await?;
                }
            }
        }
    }
    let bid = last_backup.context("a backup")?;
    // The pieces of the job's shard step that the plain path has not, timed alone.
    let mut rc = w.conn(replica.port, &pw).await;
    let t = Instant::now();
    rc.query_drop("CHECKSUM TABLE bench.t").await?;
    let checksum_secs = t.elapsed().as_secs_f64();
    let bdir = root.join(format!("cluster_{cid}/backup_{bid}"));
    let manifest: Value = serde_json::from_slice(&std::fs::read(bdir.join("manifest.json"))?)?;
    let stored = manifest["files"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["kind"] == "storage"))
        .context("the snapshot in the manifest")?
        .clone();
    // Compressed unless its data barely shrinks (the job samples it first); the plain restore
    // below reads the plain backup's uncompressed stream.
    let snap = root.join(stored["rel"].as_str().context("the snapshot's path")?);
    println!(
        "  the job stored the snapshot with compression {}",
        stored["compression"].as_str().unwrap_or("none")
    );
    let t = Instant::now();
    sh(&format!(
        "openssl dgst -sha256 -r {} >/dev/null",
        sh_quote(&snap.display().to_string())
    ))?;
    let sha_secs = t.elapsed().as_secs_f64();
    let (pb, pbs, jb) = (p50(&plain_b), p50(&plain_b_sync), p50(&job_b));
    let jn = p50(&job_none);
    println!(
        "  p50: plain {pb:.1} s, plain + sync {pbs:.1} s, backup_cluster {jb:.1} s (its shard \
         step {:.1} s): ratio {:.2}x of the plain stream (goal <= 1.15x), {:.2}x of stream + \
         sync; with compression none {jn:.1} s: {:.2}x",
        p50(&shard_step),
        jb / pb,
        jb / pbs,
        jn / pb
    );
    println!(
        "  alone: CHECKSUM TABLE bench.t on the source {checksum_secs:.1} s; SHA-256 (openssl) of \
         the stored snapshot ({:.0} MB) {sha_secs:.1} s",
        std::fs::metadata(&snap).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
    );

    // ---- 2. restore
    let snap_gtid = stored["gtid"]
        .as_str()
        .context("the snapshot's gtid")?
        .to_string();
    let scratch = w.data.join("bench-plain-restore");
    let (xdir, datadir) = (scratch.join("x"), scratch.join("datadir"));
    let fetch = format!(
        "exec cat -- {}",
        sh_quote(&plain_file.display().to_string())
    );
    let extract = format!(
        "sh -c {}",
        sh_quote(&format!(
            "mkdir -p {x} && {mb} -x -C {x}",
            x = sh_quote(&xdir.display().to_string()),
            mb = sh_quote(&recipe.mbstream)
        ))
    );
    let (mut plain_r, mut job_r, mut data_part) = (Vec::new(), Vec::new(), Vec::new());
    let mut restore_shard = Vec::new();
    let none_bid = last_none.context("an uncompressed backup")?;
    let mut job_r_none = Vec::new();
    println!(
        "\n2. restore of that backup into a new cluster (1 node per shard), {trials} trials: the \
         plain path, restore_cluster, and restore_cluster of the backup taken with compression \
         none, in turn"
    );
    for i in 0..trials {
        let mut order = [0usize, 1, 2];
        order.rotate_left((i % 3) as usize);
        for which in order {
            if which == 2 {
                let j = restore_job(&w, none_bid, &format!("bkrn{i}"), None).await?;
                let new_cid = j.memo["cluster_id"].as_i64().context("cluster_id")?;
                println!(
                    "  job (uncompressed backup) trial {i}: {:7.1} s\n    steps: {}\n    seen:  {}",
                    j.secs,
                    show_steps(&j.steps),
                    j.phases
                );
                job_r_none.push(j.secs);
                delete_cluster(&w, new_cid).await?;
            } else if which == 0 {
                let _ = std::fs::remove_dir_all(&scratch);
                std::fs::create_dir_all(&scratch)?;
                let s = Sampler::start();
                let t = Instant::now();
                let piped = prov
                    .ssh
                    .pipe(&target, &fetch, &target, &extract, None, LONG)
                    .await?;
                ensure!(piped.success(), "plain fetch: {:?}", piped.sink);
                let fetch_secs = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let prep = format!(
                    "{bk} --prepare --target-dir={x} >/dev/null 2>&1",
                    bk = sh_quote(&recipe.backup),
                    x = sh_quote(&xdir.display().to_string())
                );
                prov.ssh.exec(&target, &prep, LONG).await?.checked()?;
                let prep_secs = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let mv = format!(
                    "{bk} --no-defaults --move-back --target-dir={x} --datadir={d} >/dev/null 2>&1 \
                     && chown -R {u} {d}",
                    bk = sh_quote(&recipe.backup),
                    x = sh_quote(&xdir.display().to_string()),
                    d = sh_quote(&datadir.display().to_string()),
                    u = sh_quote(&recipe.os_user),
                );
                prov.ssh.exec(&target, &mv, LONG).await?.checked()?;
                let mv_secs = t.elapsed().as_secs_f64();
                let (phases, _) = s.finish();
                let secs = fetch_secs + prep_secs + mv_secs;
                println!(
                    "  plain  trial {i}: {secs:7.1} s  (fetch + mbstream -x {fetch_secs:.1} s, \
                     prepare {prep_secs:.1} s, move-back {mv_secs:.1} s)  [{phases}]"
                );
                plain_r.push(secs);
            } else {
                let j = restore_job(&w, bid, &format!("bkrs{i}"), None).await?;
                let new_cid = j.memo["cluster_id"].as_i64().context("cluster_id")?;
                let check = step_secs(&j.steps, "check the backup files");
                let shard_secs = j
                    .steps
                    .iter()
                    .filter(|(n, _)| {
                        n.starts_with("restore ") && n.as_str() != "restore the compute schema"
                    })
                    .map(|(_, s)| *s)
                    .sum::<f64>();
                println!(
                    "  job    trial {i}: {:7.1} s  (data part: check {check:.1} s + restore shard \
                     {shard_secs:.1} s)\n    steps: {}\n    seen:  {}",
                    j.secs,
                    show_steps(&j.steps),
                    j.phases
                );
                job_r.push(j.secs);
                data_part.push(check + shard_secs);
                restore_shard.push(shard_secs);
                if i + 1 == trials {
                    let port = only_node(&w, new_cid).await?;
                    let mut c = w.conn(port, &manager_pwd(&w, new_cid).await?).await;
                    let n = one_i64(&mut c, "SELECT COUNT(*) FROM bench.t").await?;
                    ensure!(n as u64 == rows, "restored {n} rows of {rows}");
                }
                delete_cluster(&w, new_cid).await?;
            }
        }
    }
    let (pr, jr, dp) = (p50(&plain_r), p50(&job_r), p50(&data_part));
    let jrn = p50(&job_r_none);
    println!(
        "  p50: plain {pr:.1} s, restore_cluster {jr:.1} s ({:.2}x, goal <= 1.2x); its data \
         part (file check + restore shard) {dp:.1} s ({:.2}x of the plain path); of the \
         uncompressed backup {jrn:.1} s ({:.2}x)",
        jr / pr,
        dp / pr,
        jrn / pr
    );
    // The archive below continues the compressed backup only.
    w.mgr.delete_backup(none_bid).await?;

    // ---- 3. point-in-time replay
    println!("\n3. point-in-time replay (archive every {ARCHIVE_EVERY:?}):");
    let cancel = CancellationToken::new();
    let archiver = tokio::spawn(archive::run(
        store.clone(),
        w.provisioner(),
        ARCHIVE_EVERY,
        cancel.clone(),
    ));
    let t = Instant::now();
    p.query_drop(
        "CREATE TABLE bench.p (id BIGINT PRIMARY KEY, pad VARCHAR(1000) NOT NULL) ENGINE=InnoDB",
    )
    .await?;
    let prow = pitr_mb * 1_000_000 / ROW_BYTES;
    let mut from = 1;
    while from <= prow {
        let to = (from + pitr_rows - 1).min(prow);
        p.query_drop(format!(
            "INSERT INTO bench.p SELECT seq, {} FROM bench.seq_{from}_to_{to}",
            pad()
        ))
        .await?;
        from = to + 1;
    }
    let written_secs = t.elapsed().as_secs_f64();
    let at = unix_now() + 1;
    let t = Instant::now();
    let window = loop {
        let a = w.mgr.backup_archive(bid).await;
        if let Ok(a) = &a {
            if a.restorable_until
                .as_deref()
                .and_then(epoch_secs)
                .is_some_and(|u| u >= at)
            {
                break a.clone();
            }
        }
        ensure!(
            t.elapsed() < Duration::from_secs(600),
            "the archive never reached {}: {a:?}",
            rfc3339(at)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let archived_secs = t.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = archiver.await;
    let index: Value = serde_json::from_slice(&std::fs::read(
        root.join(format!("cluster_{cid}/binlog/index.json")),
    )?)?;
    let files: Vec<(PathBuf, u64)> = index["shards"][shard.to_string()]["files"]
        .as_array()
        .context("the archived files")?
        .iter()
        .map(|f| {
            (
                root.join(f["rel"].as_str().unwrap_or_default()),
                f["bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let bin_mb = files.iter().map(|f| f.1).sum::<u64>() as f64 / 1e6;
    println!(
        "  {prow} rows ({pitr_rows} per transaction) written in {written_secs:.1} s; archived \
         {} files, {bin_mb:.0} MB, {archived_secs:.1} s after the last write (window {} ..= {})",
        files.len(),
        window.restorable_from.as_deref().unwrap_or("?"),
        window.restorable_until.as_deref().unwrap_or("?"),
    );
    let j = restore_job(&w, bid, "bkpitr", Some(rfc3339(at))).await?;
    let new_cid = j.memo["cluster_id"].as_i64().context("cluster_id")?;
    let replayed = j.memo["shards"][0]["replayed_files"].as_u64().unwrap_or(0);
    let shard_secs = j
        .steps
        .iter()
        .filter(|(n, _)| n.starts_with("restore ") && n.as_str() != "restore the compute schema")
        .map(|(_, s)| *s)
        .sum::<f64>();
    let replay_seen = j
        .seen
        .get("mariadb-binlog")
        .map(|s| s.last - s.first + SAMPLE.as_secs_f64());
    let replay_delta = shard_secs - p50(&restore_shard);
    println!(
        "  job: {:.1} s, {replayed} files replayed to {}\n    steps: {}\n    seen:  {}",
        j.secs,
        rfc3339(at),
        show_steps(&j.steps),
        j.phases
    );
    let port = only_node(&w, new_cid).await?;
    let mut c = w.conn(port, &manager_pwd(&w, new_cid).await?).await;
    let n = one_i64(&mut c, "SELECT COUNT(*) FROM bench.p").await?;
    ensure!(n as u64 == prow, "replayed {n} rows of {prow}");
    let vars: Vec<(String, String)> = c
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('sync_binlog', \
             'innodb_flush_log_at_trx_commit', 'log_bin', 'innodb_doublewrite', \
             'innodb_buffer_pool_size', 'binlog_format', 'innodb_log_file_size', \
             'rpl_semi_sync_master_enabled', 'rpl_semi_sync_master_timeout', \
             'rpl_semi_sync_master_wait_no_slave', 'rpl_semi_sync_master_wait_point')",
        )
        .await?;
    // How often semi-sync gave up waiting for a replica that is not there (each time after
    // `rpl_semi_sync_master_timeout`).
    let semi: Vec<(String, String)> = c
        .query("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")
        .await?;
    drop(c);
    delete_cluster(&w, new_cid).await?;
    let var = |k: &str| {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    println!(
        "  the restored node replays with: {}",
        vars.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  its semi-sync status after the restore: {}",
        semi.iter()
            .filter(|(k, _)| k.ends_with("_status")
                || k.ends_with("_no_times")
                || k.ends_with("_no_tx")
                || k.ends_with("_yes_tx"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // The plain replays, on the last plain restore's data dir (the same snapshot).
    let paths: Vec<PathBuf> = files.iter().map(|f| f.0.clone()).collect();
    let (copy, copy2) = (scratch.join("datadir2"), scratch.join("datadir3"));
    for to in [&copy, &copy2] {
        sh(&format!(
            "cp -a {} {}",
            sh_quote(&datadir.display().to_string()),
            sh_quote(&to.display().to_string())
        ))?;
    }
    let plain_default = {
        let s = Scratch::start(&recipe, &scratch.join("s1"), &datadir, &[])?;
        let secs = plain_replay(&recipe, &s, &snap_gtid, &paths)?;
        let n = s.sql("SELECT COUNT(*) FROM bench.p")?;
        ensure!(n.trim() == prow.to_string(), "plain replay: {n} rows");
        secs
    };
    let durable = [
        format!("--sync-binlog={}", var("sync_binlog")),
        format!(
            "--innodb-flush-log-at-trx-commit={}",
            var("innodb_flush_log_at_trx_commit")
        ),
    ];
    let plain_durable = {
        let s = Scratch::start(&recipe, &scratch.join("s2"), &copy, &durable)?;
        plain_replay(&recipe, &s, &snap_gtid, &paths)?
    };
    // And with the node's semi-sync settings too (no replica connected, as during the job).
    let mut semi_opts = durable.to_vec();
    for k in [
        "rpl_semi_sync_master_enabled",
        "rpl_semi_sync_master_timeout",
        "rpl_semi_sync_master_wait_point",
    ] {
        semi_opts.push(format!("--{}={}", k.replace('_', "-"), var(k)));
    }
    let plain_semi = {
        let s = Scratch::start(&recipe, &scratch.join("s3"), &copy2, &semi_opts)?;
        plain_replay(&recipe, &s, &snap_gtid, &paths)?
    };
    let _ = std::fs::remove_dir_all(&scratch);
    let rate = |secs: f64| bin_mb / secs;
    println!(
        "  replay: job restore shard step {shard_secs:.1} s = {replay_delta:.1} s over the \
         restores without a time (p50 {:.1} s) -> {:.1} MB/s; mariadb-binlog seen for {} -> {}",
        p50(&restore_shard),
        rate(replay_delta),
        replay_seen.map_or("?".into(), |s| format!("{s:.1} s")),
        replay_seen.map_or("?".into(), |s| format!("{:.1} MB/s", rate(s)))
    );
    println!(
        "  plain mariadb-binlog | mariadb: {plain_default:.1} s ({:.1} MB/s) with the server's \
         defaults; {plain_durable:.1} s ({:.1} MB/s) with {}",
        rate(plain_default),
        rate(plain_durable),
        durable.join(" ")
    );
    println!(
        "  plain, also with {}: {plain_semi:.1} s ({:.1} MB/s)",
        semi_opts[durable.len()..].join(" "),
        rate(plain_semi)
    );

    println!("\nsummary ({data_mb:.0} MB data dir, {trials} trials, p50):");
    println!(
        "  backup:  backup_cluster {jb:.1} s vs plain stream {pb:.1} s: {:.2}x (goal <= 1.15x); \
         vs stream + sync {pbs:.1} s: {:.2}x; with compression none {jn:.1} s: {:.2}x",
        jb / pb,
        jb / pbs,
        jn / pb
    );
    println!(
        "  restore: restore_cluster {jr:.1} s vs plain {pr:.1} s: {:.2}x (goal <= 1.2x); data \
         part {dp:.1} s: {:.2}x; of the uncompressed backup {jrn:.1} s: {:.2}x",
        jr / pr,
        dp / pr,
        jrn / pr
    );
    println!(
        "  replay:  {bin_mb:.0} MB of binlog, job {:.1} MB/s (step delta) / {} (mariadb-binlog \
         seen) vs plain {:.1} MB/s (defaults) / {:.1} MB/s (node's durability) / {:.1} MB/s \
         (node's durability and semi-sync)",
        rate(replay_delta),
        replay_seen.map_or("?".into(), |s| format!("{:.1} MB/s", rate(s))),
        rate(plain_default),
        rate(plain_durable),
        rate(plain_semi)
    );
    Ok(())
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "backup bench: run it with `cargo bench -p kunlun-tests --bench backup` \
             (BACKUP_BENCH_MB, BACKUP_BENCH_TRIALS, BACKUP_BENCH_PITR_MB, BACKUP_BENCH_PITR_ROWS, \
             BACKUP_BENCH_DATA=mixed|random)"
        );
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}
