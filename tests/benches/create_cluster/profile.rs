//! The profile part of the `create_cluster` bench: the daemon's own install code (plan,
//! recipes, replication setup) run in-process with every recipe step of every instance timed
//! (from the step events of each instance's one SSH session),
//! and a per-step summary printer shared with the floor's phase timestamps.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use kunlun_core::fleet::Provisioner;
use kunlun_core::jobs::{plan_create_cluster, SystemPasswords};
use kunlun_meta::api::CreateCluster;
use kunlun_meta::model::Machine;
use kunlun_provision::recipe::{OnStep, Step};

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One install step of one instance: how long it took and when (ms after the start) it ended.
pub struct StepTime {
    pub storage: bool,
    pub step: String,
    pub ms: f64,
    pub end_ms: f64,
}

/// The daemon's own install code (plan, recipes, replication setup) run in this process with
/// every recipe step of every instance timed; the instances are then uninstalled.
pub fn library_profile(
    machines: &[Machine],
    req: &CreateCluster,
    known_hosts: PathBuf,
    steps: &mut Vec<StepTime>,
) -> Result<(f64, f64)> {
    let plan = plan_create_cluster(req, machines, &[], SystemPasswords::generate())?;
    let prov = Provisioner::with_system_servers(known_hosts);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let target = prov.target(&machines[0]);
        let mut set = tokio::task::JoinSet::new();
        let t0 = Instant::now();
        let mut jobs = Vec::new();
        for n in plan.shards.iter().flat_map(|s| s.nodes.iter()) {
            jobs.push((true, Provisioner::storage_spec(&plan, n)));
        }
        for c in &plan.comps {
            jobs.push((false, Provisioner::compute_spec(&plan, c)));
        }
        for (storage, spec) in jobs {
            let recipe = if storage {
                prov.storage.clone()
            } else {
                prov.compute.clone()
            };
            let (ssh, target) = (prov.ssh.clone(), target.clone());
            set.spawn(async move {
                // Each step's start, as the session reports it; a step ends where the next
                // begins, the last one when the session ends.
                let starts = Arc::new(Mutex::new(Vec::<(Step, Instant)>::new()));
                let on_step: OnStep = {
                    let starts = starts.clone();
                    Arc::new(move |step| starts.lock().unwrap().push((step, Instant::now())))
                };
                recipe
                    .install_with(&ssh, &target, &spec, Some(on_step))
                    .await?;
                let end = Instant::now();
                let starts = starts.lock().unwrap().clone();
                let mut out = Vec::new();
                for (i, (step, at)) in starts.iter().enumerate() {
                    let until = starts.get(i + 1).map_or(end, |(_, t)| *t);
                    out.push(StepTime {
                        storage,
                        step: step.as_str().to_string(),
                        ms: ms(until - *at),
                        end_ms: ms(until - t0),
                    });
                }
                Ok::<_, anyhow::Error>(out)
            });
        }
        let mut failed = None;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(v)) => steps.extend(v),
                Ok(Err(e)) => failed = Some(e),
                Err(e) => failed = Some(e.into()),
            }
        }
        let installed = ms(t0.elapsed());
        let repl = if failed.is_none() {
            prov.setup_replication(&plan)
                .await
                .map_err(anyhow::Error::from)
        } else {
            Ok(())
        };
        let total = ms(t0.elapsed());
        prov.uninstall_cluster(machines, &plan).await?;
        if let Some(e) = failed {
            return Err(e);
        }
        repl?;
        Ok((installed, total))
    })
}

/// Per step: median duration and median end time, storage and compute apart.
pub fn print_steps(label: &str, steps: &[StepTime]) {
    let mut names: Vec<&str> = Vec::new();
    for s in steps {
        if !names.contains(&s.step.as_str()) {
            names.push(&s.step);
        }
    }
    for storage in [true, false] {
        let kind = if storage { "storage" } else { "compute" };
        let mut line = format!("  {label:<8} {kind:<8}");
        for n in &names {
            let of = |f: fn(&StepTime) -> f64| {
                let mut v: Vec<f64> = steps
                    .iter()
                    .filter(|s| s.storage == storage && s.step == *n)
                    .map(f)
                    .collect();
                v.sort_by(f64::total_cmp);
                v
            };
            let (d, e) = (of(|s| s.ms), of(|s| s.end_ms));
            if !d.is_empty() {
                line.push_str(&format!(" {n} {:.0} (@{:.0})", pct(&d, 0.5), pct(&e, 0.5)));
            }
        }
        println!("{line}");
    }
}
