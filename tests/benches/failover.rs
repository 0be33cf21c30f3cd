//! Failover time: `kill -9` of a semi-sync shard's primary under a write load → first write
//! acknowledged by the new primary, over N trials with the default HA settings (1 s probe
//! interval, 3 failed probes, replicas must confirm); p50/p99 and the per-phase breakdown,
//! next to the floor measured in the same run (the probe interval plus the raw promotion
//! statements on the same servers), and the acknowledged writes lost (must be 0).
//!
//! `cargo bench -p kunlun-tests --bench failover` runs 10 trials (`FAILOVER_TRIALS` to change);
//! without `--bench` (as under `cargo test --all-targets`) one smoke trial.

#[path = "../tests/ha_support/mod.rs"]
mod ha_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ha_support::{root_query, EnvOptions, HaEnv, Writer};
use kunlun_core::ha::HaConfig;

struct Trial {
    to_first_write: Duration,
    phases: Vec<(String, u64)>,
    floor_raw: Duration,
    lost: usize,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn trial(ha: HaConfig) -> Result<Trial> {
    let env = HaEnv::start(EnvOptions {
        ha,
        ..EnvOptions::default()
    })
    .await?;
    let w = Writer::start(env.store.clone(), env.shard_id);
    w.wait_more(100).await?;
    env.set.primary().kill9()?;
    let t0 = Instant::now();
    w.arm(t0);
    let rec = env.wait_promoted(0).await?;
    let deadline = Instant::now() + ha_support::LIMIT;
    let to_first_write = loop {
        if let Some(d) = w.first_ack_delay() {
            break d;
        }
        anyhow::ensure!(Instant::now() < deadline, "no write after the failover");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    w.wait_more(20).await?;
    let acked = w.finish().await;
    let new = rec.new_primary.context("no new primary")?;
    let have: std::collections::HashSet<i64> = root_query(env.server(new), "SELECT id FROM ha.w")
        .await?
        .into_iter()
        .collect();
    let lost = acked.iter().filter(|id| !have.contains(id)).count();

    // The floor's statement part: promote the remaining replica by hand with the same
    // statements, repoint the new primary to it, and write once.
    let other = *env
        .node_ids
        .iter()
        .find(|id| **id != new && **id != env.node_ids[0])
        .context("no third node")?;
    let (o, n) = (env.server(other), env.server(new));
    env.stop().await;
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
        to_first_write,
        phases: rec.phases.iter().map(|p| (p.name.clone(), p.ms)).collect(),
        floor_raw,
        lost,
    })
}

fn main() -> Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let trials: usize = if bench {
        std::env::var("FAILOVER_TRIALS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10)
    } else {
        1
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ha = HaConfig {
        xa: ha_support::test_ha_config().xa,
        ..HaConfig::default()
    };
    let interval = ha.interval;
    let mut results = Vec::new();
    for i in 0..trials {
        let t = rt.block_on(trial(ha.clone()))?;
        println!(
            "trial {:>2}: kill -9 -> first write {:>5} ms  (raw statements {:>3} ms, lost {})",
            i + 1,
            t.to_first_write.as_millis(),
            t.floor_raw.as_millis(),
            t.lost
        );
        results.push(t);
    }
    let mut total: Vec<f64> = results
        .iter()
        .map(|t| t.to_first_write.as_secs_f64() * 1000.0)
        .collect();
    total.sort_by(f64::total_cmp);
    let mut floor: Vec<f64> = results
        .iter()
        .map(|t| (interval + t.floor_raw).as_secs_f64() * 1000.0)
        .collect();
    floor.sort_by(f64::total_cmp);
    let lost: usize = results.iter().map(|t| t.lost).sum();
    println!(
        "\nfailover (kill -9 -> first acknowledged write), {} trials, probe interval {:?}, k = {}",
        results.len(),
        interval,
        ha.failures_to_dead
    );
    println!(
        "  measured: p50 {:.0} ms  p99 {:.0} ms",
        pct(&total, 0.5),
        pct(&total, 0.99)
    );
    println!(
        "  floor (interval + raw promotion statements): p50 {:.0} ms  p99 {:.0} ms",
        pct(&floor, 0.5),
        pct(&floor, 0.99)
    );
    let mut by_phase: BTreeMap<usize, (String, Vec<f64>)> = BTreeMap::new();
    for t in &results {
        for (i, (name, ms)) in t.phases.iter().enumerate() {
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
    anyhow::ensure!(lost == 0, "acknowledged writes were lost");
    Ok(())
}
