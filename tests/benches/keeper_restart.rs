//! Instance keeper: `kill -9` of a shard replica → the keeper finds it down, starts it again
//! and it replicates again (both threads running), under a write load through the primary.
//! A cluster of 1 shard x 2 nodes (and the compute node every cluster has) made by the
//! `create_cluster` job over a private sshd on 127.0.0.82, the HA monitor and the keeper
//! running on the world's term; N trials per keeper interval (1 s, and the daemon's default
//! 5 s), printing p50/max of kill → restart begun (found down), kill → new server process and
//! kill → replicating, and the acknowledged writes lost afterwards (must be 0).
//!
//! `cargo bench -p kunlun-tests --bench keeper_restart` runs 10 trials per interval
//! (`KEEPER_TRIALS` to change). Without `--bench` (as under `cargo test --all-targets`) it does
//! nothing: the scenario test `provision_keeper` covers the behaviour.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kunlun_core::accounts::MANAGER_USER;
use kunlun_core::jobs::accept_create_cluster;
use kunlun_core::keeper::KeeperConfig;
use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::{HaMode, JobStatus, MemberState, NodeStatus, ShardNode};
use kunlun_meta::store::repo::secrets;
use kunlun_tests::ha::invariant::{self, Acked, Login};
use kunlun_tests::ha::{test_ha_config, Writer};
use kunlun_tests::world::{kill9, pid_in, ProvisionWorld};
use mysql_async::prelude::Queryable;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 82);
/// Bound of one trial's waits (not an assertion on speed).
const LIMIT: Duration = Duration::from_secs(120);

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
}

/// Both replication threads of the node on `port` run.
async fn replicating(port: u16, pw: &str) -> bool {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(IP.to_string())
        .tcp_port(port)
        .user(Some(MANAGER_USER))
        .pass(Some(pw))
        .prefer_socket(false);
    let Ok(Ok(mut c)) =
        tokio::time::timeout(Duration::from_secs(2), mysql_async::Conn::new(opts)).await
    else {
        return false;
    };
    let row: Option<mysql_async::Row> = match tokio::time::timeout(
        Duration::from_secs(2),
        c.query_first("SHOW SLAVE STATUS"),
    )
    .await
    {
        Ok(Ok(r)) => r,
        _ => return false,
    };
    let _ = c.disconnect().await;
    let Some(r) = row else { return false };
    let get = |name: &str| -> String {
        r.columns_ref()
            .iter()
            .position(|x| x.name_str() == name)
            .and_then(|i| r.as_ref(i))
            .map(|v| match v {
                mysql_async::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default()
    };
    get("Slave_IO_Running") == "Yes" && get("Slave_SQL_Running") == "Yes"
}

fn replica(nodes: &[ShardNode]) -> Result<ShardNode> {
    nodes
        .iter()
        .find(|n| n.member_state == MemberState::Replica && n.status == NodeStatus::Active)
        .cloned()
        .context("an active replica")
}

/// One run of `trials` kills with the keeper every `interval`.
async fn run(interval: Duration, trials: usize) -> Result<Timings> {
    let w = ProvisionWorld::builder(IP).build().await;
    let store = w.store.clone();
    let req = CreateCluster {
        name: "keepbench".into(),
        nick_name: None,
        ha_mode: HaMode::Rbr,
        shards: 1,
        nodes: 2,
        comps: 1,
        innodb_size_mb: Some(32),
        max_connections: Some(100),
        storage_hosts: vec![],
        computer_hosts: vec![],
    };
    let job = accept_create_cluster(&store, &req).await?;
    let job = w.run_job(job.id).await;
    if job.status != JobStatus::Done {
        bail!("create_cluster: {:?}", job.memo);
    }
    let cid = store.get_cluster_by_name("keepbench").await?.id;
    let pw = store
        .read(async |tx| secrets::get(tx, cid).await)
        .await?
        .manager_pwd;
    let shard = store.list_shards(Some(cid)).await?[0].id;
    let nodes = store.list_shard_nodes(Some(shard)).await?;
    let primary = nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source)
        .context("a primary")?;
    let sock = w
        .data
        .join(format!("kunlun/storage_{}/run/mysqld.sock", primary.port));
    let out = std::process::Command::new("mariadb")
        .arg("-S")
        .arg(&sock)
        .args(["-uroot", "--connect-timeout=10", "-e"])
        .arg(
            "CREATE DATABASE ha; CREATE TABLE ha.w (id BIGINT PRIMARY KEY) ENGINE=InnoDB; \
             CREATE USER app@'%' IDENTIFIED BY 'app'; GRANT SELECT, INSERT ON ha.* TO app@'%'",
        )
        .output()?;
    if !out.status.success() {
        bail!("set-up SQL: {out:?}");
    }

    let mut ha = test_ha_config();
    ha.ssh = Some(Arc::new(w.provisioner()));
    w.term.start_ha(ha);
    // Enough restarts that the trials never look like a crash loop.
    let cfg = KeeperConfig::new(interval, trials as u32 + 5, Duration::from_secs(3600));
    w.term.start_keeper(w.provisioner(), cfg);
    let writer = Writer::start(store.clone(), shard);
    writer.wait_more(20).await?;

    let (mut to_detect, mut to_proc, mut to_repl) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..trials {
        let r = replica(&store.list_shard_nodes(Some(shard)).await?)?;
        let pf = w
            .data
            .join(format!("kunlun/storage_{}/run/mysqld.pid", r.port));
        let old = pid_in(&pf).context("the replica's pid")?;
        if !replicating(r.port, &pw).await {
            bail!("trial {i}: the replica does not replicate before the kill");
        }
        let t0 = Instant::now();
        let killed_at = chrono::Utc::now();
        if i == 0 {
            println!("    killed at {}", killed_at.format("%H:%M:%S%.3f"));
        }
        kill9(old);
        let mut proc_at = None;
        let repl_at = loop {
            if t0.elapsed() > LIMIT {
                bail!(
                    "trial {i}: not replicating again within {LIMIT:?}; keeper: {:?}",
                    w.term.keeper_status().map(|k| k.events)
                );
            }
            if proc_at.is_none() && pid_in(&pf).is_some_and(|p| p != old && alive(p)) {
                proc_at = Some(t0.elapsed());
            }
            if proc_at.is_some() && replicating(r.port, &pw).await {
                break t0.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let proc_at = proc_at.unwrap_or(repl_at);
        // The keeper has recorded the restart before the next kill.
        let deadline = Instant::now() + LIMIT;
        let began = loop {
            let entry = w
                .term
                .keeper_status()
                .and_then(|k| k.nodes.into_iter().find(|n| n.node_id == r.id));
            if let Some(e) = entry.filter(|e| e.last_outcome.as_deref() == Some("restarted")) {
                break e.last_at;
            }
            if Instant::now() > deadline {
                bail!("trial {i}: the keeper never recorded the restart");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let detect = began
            .map(|b| (b - killed_at).num_milliseconds() as f64)
            .unwrap_or(f64::NAN);
        println!(
            "  trial {i}: restart begun after {detect:.0} ms, new server process after {:.0} ms, \
             replicating after {:.0} ms",
            proc_at.as_secs_f64() * 1e3,
            repl_at.as_secs_f64() * 1e3
        );
        to_detect.push(detect);
        to_proc.push(proc_at.as_secs_f64() * 1e3);
        to_repl.push(repl_at.as_secs_f64() * 1e3);
        writer.wait_more(5).await?;
    }
    if let Some(k) = w.term.keeper_status() {
        println!("  keeper: {:?}", k.stats);
        for e in k.events.iter().rev().take(12).rev() {
            println!("    {} {}", e.at.format("%H:%M:%S%.3f"), e.what);
        }
    }
    let acked = writer.acked();
    let login = Login {
        user: MANAGER_USER.into(),
        password: pw.clone(),
    };
    let lost = match invariant::check(
        &store,
        shard,
        &login,
        &[Acked {
            writer: "app".into(),
            table: "ha.w".into(),
            ids: acked.clone(),
        }],
    )
    .await
    {
        Ok(report) => {
            println!("  {report}");
            0
        }
        Err(e) => {
            println!("  invariant broken: {e:#}");
            acked.len()
        }
    };
    writer.finish().await;
    w.term.shutdown(Duration::from_secs(10)).await;
    Ok(Timings {
        detect: to_detect,
        process: to_proc,
        replicating: to_repl,
        lost,
    })
}

/// One run's figures, in ms.
struct Timings {
    /// kill -9 -> the keeper began the restart (its check found the replica down).
    detect: Vec<f64>,
    /// kill -9 -> a new server process wrote its pid file.
    process: Vec<f64>,
    /// kill -9 -> both replication threads run again.
    replicating: Vec<f64>,
    lost: usize,
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("keeper_restart: run with `cargo bench -p kunlun-tests --bench keeper_restart`");
        return Ok(());
    }
    let trials: usize = std::env::var("KEEPER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut lost = 0;
    for secs in [1, 5] {
        let interval = Duration::from_secs(secs);
        println!("keeper interval {secs} s, {trials} trials of kill -9 of a replica:");
        let t = rt.block_on(run(interval, trials))?;
        for (what, mut v) in [
            ("restart begun (found down)", t.detect),
            ("new server process", t.process),
            ("replicating again", t.replicating),
        ] {
            v.sort_by(f64::total_cmp);
            println!(
                "  kill -9 -> {what}: p50 {:.0} ms  max {:.0} ms",
                pct(&v, 0.5),
                v.last().copied().unwrap_or(0.0)
            );
        }
        println!("  acknowledged writes lost: {}", t.lost);
        let l = t.lost;
        lost += l;
    }
    anyhow::ensure!(lost == 0, "acknowledged writes were lost");
    Ok(())
}
