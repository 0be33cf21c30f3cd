//! Failover time: `kill -9` (or SIGSTOP) of a semi-sync shard's primary under a write load →
//! first write acknowledged by the new primary, over N trials with the default HA settings
//! (1 s probe interval, k = 3, replicas must confirm); p50/p99 and the per-phase breakdown,
//! next to the floor measured in the same run: the raw promotion statements on the same
//! servers, timed as an oracle that knows the instant of the fault would run them (no
//! detection at all); also the acknowledged writes lost and the errant transactions found
//! afterwards on nodes in service (both must be 0). Five runs: the writer as an application
//! user, the writer as the compute nodes' least-privilege `pgx` login (autocommit and XA), two
//! shards under one monitor whose primaries are killed in the same instant (pgx writers on
//! both), and a hung primary (SIGSTOP, pgx writer whose statements and connects give up after
//! 0.5 s), once killed by the fence over SSH (the primary's machine registered with a private
//! sshd) and once with no SSH access (resumed after the trial).
//!
//! `cargo bench -p kunlun-tests --bench failover` runs 10 trials of each (`FAILOVER_TRIALS` to
//! change); without `--bench` (as under `cargo test --all-targets`) one smoke trial of the
//! two-shard run.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kunlun_core::fleet::Provisioner;
use kunlun_core::ha::{FailoverRecord, HaConfig, HaMonitor, Outcome};
use kunlun_meta::store::{Store, StoreConfig};
use kunlun_tests::ha::clients::{pgx_user_sql, tables_sql, PgxWriter, PGX_TABLE};
use kunlun_tests::ha::invariant::{errant_on_shard, Login};
use kunlun_tests::ha::{register_named_shard, root_query, start_set_in, Writer};
use kunlun_tests::{MariaDb, ReplicaSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Who writes during a trial.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    App,
    Pgx,
}

/// What happens to the primaries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `kill -9`: the process is gone, its sockets closed by the kernel.
    Kill,
    /// SIGSTOP: the process keeps its sockets and answers nothing. The monitor has no SSH
    /// access: nothing can stop the hung process.
    Stop,
    /// SIGSTOP, with the primary listening on its own loopback address whose machine is
    /// registered with a private sshd: the failover's fence kills the hung process over SSH
    /// (as a deployed manager, which reaches its machines over SSH, does).
    StopSsh,
}

/// The primary's address in the [`Fault::StopSsh`] series (its machine's sshd listens there).
const SSH_PRIMARY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// The SSH side of [`Fault::StopSsh`]: the sshd and the manager's access through it.
struct SshSide {
    sshd: kunlun_tests::Sshd,
    prov: Arc<Provisioner>,
}

impl SshSide {
    fn start() -> Result<SshSide> {
        let sshd = kunlun_tests::Sshd::start_on(SSH_PRIMARY_IP)?;
        let prov = Arc::new(Provisioner::with_system_servers(sshd.known_hosts()));
        Ok(SshSide { sshd, prov })
    }

    /// Registers the primary's machine and links the instance's pid file where the storage
    /// recipe's kill script looks: `<data_dir>/kunlun/storage_<port>/run/mysqld.pid`.
    async fn register(&self, store: &Store, primary: &MariaDb) -> Result<()> {
        let data_dir = self.sshd.dir().join("data");
        let run = data_dir.join(format!("kunlun/storage_{}/run", primary.port()));
        std::fs::create_dir_all(&run)?;
        let link = run.join("mysqld.pid");
        let _ = std::fs::remove_file(&link);
        let pid_file = primary
            .datadir()
            .parent()
            .context("datadir parent")?
            .join("mysqld.pid");
        std::os::unix::fs::symlink(&pid_file, &link)?;
        if store
            .list_machines()
            .await?
            .iter()
            .any(|m| m.hostaddr == SSH_PRIMARY_IP.to_string())
        {
            return Ok(());
        }
        store
            .insert_machine(&self.sshd.storage_machine(SSH_PRIMARY_IP, &data_dir))
            .await?;
        Ok(())
    }
}

enum Load {
    App(Writer),
    Pgx(PgxWriter),
}

/// The pgx writer's deadline per statement and connect in the SIGSTOP series: a compute node
/// tuned for fast failover (with the default 2 s a hung primary holds each statement, then
/// each connect, that long, and the first write waits on the client, not on the failover).
const HUNG_CLIENT_LIMIT: Duration = Duration::from_millis(500);

impl Load {
    fn start(kind: Kind, fault: Fault, store: &Store, shard_id: i64) -> Load {
        match (kind, fault) {
            (Kind::App, _) => Load::App(Writer::start(store.clone(), shard_id)),
            (Kind::Pgx, Fault::Kill) => {
                Load::Pgx(PgxWriter::start(store.clone(), shard_id, pgx_login()))
            }
            (Kind::Pgx, Fault::Stop | Fault::StopSsh) => Load::Pgx(PgxWriter::start_within(
                store.clone(),
                shard_id,
                pgx_login(),
                HUNG_CLIENT_LIMIT,
            )),
        }
    }
    async fn wait_more(&self, n: usize) -> Result<()> {
        match self {
            Load::App(w) => w.wait_more(n).await,
            Load::Pgx(w) => w.wait_more(n).await,
        }
    }
    fn arm(&self, t0: Instant) {
        match self {
            Load::App(w) => w.arm(t0),
            Load::Pgx(w) => w.arm(t0),
        }
    }
    fn first_ack_delay(&self) -> Option<Duration> {
        match self {
            Load::App(w) => w.first_ack_delay(),
            Load::Pgx(w) => w.first_ack_delay(),
        }
    }
    /// Stops the writer: `(table, acknowledged ids)`.
    async fn finish(self) -> (&'static str, Vec<i64>) {
        match self {
            Load::App(w) => ("ha.w", w.finish().await),
            Load::Pgx(w) => (PGX_TABLE, w.finish().await),
        }
    }
}

const PGX_PASSWORD: &str = "pgx-bench";

fn pgx_login() -> Login {
    Login {
        user: "pgx".into(),
        password: PGX_PASSWORD.into(),
    }
}

/// One shard of a trial: its servers and ids.
struct Shard {
    set: ReplicaSet,
    shard_id: i64,
    node_ids: Vec<i64>,
}

impl Shard {
    fn server(&self, id: i64) -> Option<&MariaDb> {
        let i = self.node_ids.iter().position(|n| *n == id)?;
        self.set.nodes().nth(i)
    }
}

/// What one shard of one trial measured.
struct ShardResult {
    to_first_write: Duration,
    phases: Vec<(String, u64)>,
    lost: usize,
    errant: usize,
}

struct Trial {
    shards: Vec<ShardResult>,
    floor_raw: Duration,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn wait_promoted(m: &kunlun_core::ha::HaHandle, shard_id: i64) -> Result<FailoverRecord> {
    let deadline = Instant::now() + kunlun_tests::ha::LIMIT;
    loop {
        let r = m.shared().failovers(Some(shard_id));
        if let Some(r) = r.into_iter().find(|r| r.outcome == Outcome::Promoted) {
            return Ok(r);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "shard {shard_id}: no failover; events {:?}",
            m.shared().events()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `n` semi-sync shards in one store under one monitor; their primaries killed (or stopped)
/// together.
async fn trial(
    ha: HaConfig,
    kind: Kind,
    fault: Fault,
    n: usize,
    ssh: Option<&SshSide>,
) -> Result<Trial> {
    let mut sets = Vec::new();
    for _ in 0..n {
        let bind = ssh.map(|_| SSH_PRIMARY_IP.to_string());
        let set = tokio::task::spawn_blocking(move || -> Result<ReplicaSet> {
            let set = start_set_in(2, None, bind)?;
            set.primary().sql(&format!(
                "{}{}",
                pgx_user_sql("pgx", PGX_PASSWORD),
                tables_sql()
            ))?;
            set.wait_replicated(kunlun_tests::ha::LIMIT)?;
            Ok(set)
        })
        .await??;
        sets.push(set);
    }
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreConfig::sqlite(dir.path().join("meta.db"))).await?;
    let mut shards = Vec::new();
    for (i, set) in sets.into_iter().enumerate() {
        let hosts: Vec<(String, u16)> = set.nodes().map(|s| (s.tcp_host(), s.port())).collect();
        let (_, shard_id, node_ids) =
            register_named_shard(&store, &format!("ha_c{i}"), &hosts).await?;
        shards.push(Shard {
            set,
            shard_id,
            node_ids,
        });
    }
    let mut ha = ha;
    if let Some(side) = ssh {
        for s in &shards {
            side.register(&store, s.set.primary()).await?;
        }
        ha.ssh = Some(side.prov.clone());
    }
    let (cancel, tasks) = (CancellationToken::new(), TaskTracker::new());
    let monitor = HaMonitor::spawn(store.clone(), ha, &tasks, cancel.clone());
    let loads: Vec<Load> = shards
        .iter()
        .map(|s| Load::start(kind, fault, &store, s.shard_id))
        .collect();
    for l in &loads {
        l.wait_more(100).await?;
    }
    // Every primary gets its signal before any is reaped: the same instant.
    let pids: Vec<u32> = shards
        .iter()
        .filter_map(|s| s.set.primary().pid())
        .collect();
    let signal = match fault {
        Fault::Kill => nix::sys::signal::Signal::SIGKILL,
        Fault::Stop | Fault::StopSsh => nix::sys::signal::Signal::SIGSTOP,
    };
    for pid in &pids {
        let pid = i32::try_from(*pid)?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
    for s in &shards {
        match fault {
            Fault::Kill => s.set.primary().kill9()?,
            Fault::Stop | Fault::StopSsh => s.set.primary().pause()?,
        }
    }
    // Armed once every primary is reaped: an OK a dying primary sent before the signal, read
    // just after it, is not a write on the new primary.
    let t0 = Instant::now();
    for l in &loads {
        l.arm(t0);
    }
    let mut results = Vec::new();
    let mut news = Vec::new();
    for (s, l) in shards.iter().zip(&loads) {
        let rec = wait_promoted(&monitor, s.shard_id).await?;
        let deadline = Instant::now() + kunlun_tests::ha::LIMIT;
        let d = loop {
            if let Some(d) = l.first_ack_delay() {
                break d;
            }
            anyhow::ensure!(Instant::now() < deadline, "no write after the failover");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        news.push(rec.new_primary.context("no new primary")?);
        results.push(ShardResult {
            to_first_write: d,
            phases: rec.phases.iter().map(|p| (p.name.clone(), p.ms)).collect(),
            lost: 0,
            errant: 0,
        });
    }
    for l in &loads {
        l.wait_more(20).await?;
    }
    if fault != Fault::Kill {
        // The old primaries wake up (unless the fence killed them); the monitor fences them
        // as strays.
        for s in &shards {
            let _ = s.set.primary().resume();
        }
    }
    for (((s, l), r), new) in shards.iter().zip(loads).zip(&mut results).zip(&news) {
        let (table, acked) = l.finish().await;
        let srv = s.server(*new).context("new primary's server")?;
        let have: std::collections::HashSet<i64> =
            root_query(srv, &format!("SELECT id FROM {table}"))
                .await?
                .into_iter()
                .collect();
        r.lost = acked.iter().filter(|id| !have.contains(id)).count();
        r.errant = errant_on_shard(&store, s.shard_id, &Login::root())
            .await?
            .iter()
            .map(|(_, g)| g.len())
            .sum();
    }

    // The floor's statement part, on the first shard: promote the remaining replica by hand
    // with the same statements, repoint the new primary to it, and write once.
    let s = &shards[0];
    let new = news[0];
    let other = *s
        .node_ids
        .iter()
        .find(|id| **id != new && **id != s.node_ids[0])
        .context("no third node")?;
    let (o, n) = (
        s.server(other).context("third node")?,
        s.server(new).context("new primary")?,
    );
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    let f0 = Instant::now();
    root_query::<u8>(o, "STOP ALL SLAVES").await?;
    root_query::<u8>(o, "RESET SLAVE ALL").await?;
    root_query::<u8>(o, "SET GLOBAL read_only = OFF").await?;
    root_query::<u8>(n, "STOP ALL SLAVES").await?;
    root_query::<u8>(
        n,
        &format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
             MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            o.port()
        ),
    )
    .await?;
    root_query::<u8>(n, "START SLAVE").await?;
    root_query::<u8>(o, "INSERT INTO ha.w VALUES (-1)").await?;
    let floor_raw = f0.elapsed();
    Ok(Trial {
        shards: results,
        floor_raw,
    })
}

/// Runs `trials` trials of one kind and prints its figures; returns `(lost, errant)`.
fn run(
    rt: &tokio::runtime::Runtime,
    label: &str,
    ha: &HaConfig,
    (kind, fault): (Kind, Fault),
    shards: usize,
    trials: usize,
) -> Result<(usize, usize)> {
    println!("\n== {label} ==");
    let ssh = match fault {
        Fault::StopSsh => Some(SshSide::start()?),
        _ => None,
    };
    let mut results = Vec::new();
    for i in 0..trials {
        let t = rt.block_on(trial(ha.clone(), kind, fault, shards, ssh.as_ref()))?;
        let per: Vec<String> = t
            .shards
            .iter()
            .map(|s| {
                format!(
                    "{} ms (lost {}, errant {})",
                    s.to_first_write.as_millis(),
                    s.lost,
                    s.errant
                )
            })
            .collect();
        println!(
            "trial {:>2}: fault -> first write {}  (raw statements {} ms)",
            i + 1,
            per.join(", "),
            t.floor_raw.as_millis()
        );
        results.push(t);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut total: Vec<f64> = results
        .iter()
        .flat_map(|t| t.shards.iter().map(|s| ms(s.to_first_write)))
        .collect();
    total.sort_by(f64::total_cmp);
    let mut floor: Vec<f64> = results.iter().map(|t| ms(t.floor_raw)).collect();
    floor.sort_by(f64::total_cmp);
    let lost: usize = results.iter().flat_map(|t| &t.shards).map(|s| s.lost).sum();
    let errant: usize = results
        .iter()
        .flat_map(|t| &t.shards)
        .map(|s| s.errant)
        .sum();
    let what = match fault {
        Fault::Kill => "kill -9",
        Fault::Stop => "SIGSTOP, no SSH access",
        Fault::StopSsh => "SIGSTOP, SSH fence",
    };
    println!(
        "failover ({what} -> first acknowledged write), {} trials x {shards} shard(s), \
         probe interval {:?}, k = {}",
        results.len(),
        ha.interval,
        ha.failures_to_dead
    );
    println!(
        "  measured: p50 {:.0} ms  p99 {:.0} ms",
        pct(&total, 0.5),
        pct(&total, 0.99)
    );
    if shards > 1 {
        // Both shards writable again: the slower of the two per trial.
        let mut both: Vec<f64> = results
            .iter()
            .map(|t| {
                t.shards
                    .iter()
                    .map(|s| ms(s.to_first_write))
                    .fold(0.0, f64::max)
            })
            .collect();
        both.sort_by(f64::total_cmp);
        println!(
            "  every shard writable again: p50 {:.0} ms  p99 {:.0} ms",
            pct(&both, 0.5),
            pct(&both, 0.99)
        );
    }
    println!(
        "  floor (an oracle knowing the fault's instant runs the raw promotion statements): \
         p50 {:.0} ms  p99 {:.0} ms",
        pct(&floor, 0.5),
        pct(&floor, 0.99)
    );
    let mut by_phase: BTreeMap<usize, (String, Vec<f64>)> = BTreeMap::new();
    for s in results.iter().flat_map(|t| &t.shards) {
        for (i, (name, ms)) in s.phases.iter().enumerate() {
            by_phase
                .entry(i)
                .or_insert_with(|| (name.clone(), Vec::new()))
                .1
                .push(*ms as f64);
        }
    }
    println!("  per phase (p50 / p99 ms):");
    for (_, (name, mut v)) in by_phase {
        v.sort_by(f64::total_cmp);
        println!(
            "    {name:<9} {:>6.0} / {:>6.0}",
            pct(&v, 0.5),
            pct(&v, 0.99)
        );
    }
    println!("  acknowledged writes lost: {lost}");
    println!("  errant transactions on nodes in service afterwards: {errant}");
    Ok((lost, errant))
}

fn main() -> Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let trials: usize = std::env::var("FAILOVER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ha = HaConfig {
        xa: kunlun_tests::ha::test_ha_config().xa,
        ..HaConfig::default()
    };
    let only = std::env::var("FAILOVER_ONLY").unwrap_or_default();
    let runs: Vec<(&str, (Kind, Fault), usize, usize)> =
        if bench {
            vec![
            ("writer: application user", (Kind::App, Fault::Kill), 1, trials),
            (
                "writer: pgx (least privilege; autocommit and XA)",
                (Kind::Pgx, Fault::Kill),
                1,
                trials,
            ),
            (
                "two shards killed together, pgx writers",
                (Kind::Pgx, Fault::Kill),
                2,
                trials,
            ),
            (
                "hung primary (SIGSTOP), killed by the SSH fence, pgx writer with 0.5 s deadlines",
                (Kind::Pgx, Fault::StopSsh),
                1,
                trials,
            ),
            (
                "hung primary (SIGSTOP), no SSH access, pgx writer with 0.5 s deadlines",
                (Kind::Pgx, Fault::Stop),
                1,
                trials,
            ),
        ]
        } else {
            vec![(
                "smoke: two shards killed together, pgx writers",
                (Kind::Pgx, Fault::Kill),
                2,
                1,
            )]
        };
    let (mut lost, mut errant) = (0, 0);
    // `FAILOVER_ONLY=<text>` runs only the series whose label contains it.
    for (label, what, shards, n) in runs.into_iter().filter(|r| r.0.contains(&only)) {
        let (l, e) = run(&rt, label, &ha, what, shards, n)?;
        lost += l;
        errant += e;
    }
    anyhow::ensure!(lost == 0, "acknowledged writes were lost");
    anyhow::ensure!(errant == 0, "errant transactions on nodes in service");
    Ok(())
}
