//! Carrying out a [`ClusterPlan`] on the machines: install every instance in parallel through
//! the recipes, point each replica at its shard's primary, and take it all down again.
//!
//! Invariants: every step is idempotent (recipes check before acting; `CHANGE MASTER` keeps
//! the GTID position), so running an install again after a crash finishes it; uninstall is
//! best effort over every instance and reports all failures, so one dead host does not leave
//! the others installed.

use std::collections::HashMap;
use std::sync::Arc;

use kunlun_meta::model::{HaMode, Machine};
use kunlun_provision::recipe::{DbUser, InstanceSpec, OnStep, Recipe, Step, UserRole};
use kunlun_provision::{SshExecutor, SshTarget};
use tokio::task::JoinSet;

use super::plan::{ClusterPlan, InstancePlan, SystemPasswords, COMPUTE_BUFFER_MB};
use super::progress::{Progress, StepHandle};
use crate::accounts::{COMP_USER, MANAGER_USER, PGX_USER, REPL_USER};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::storage::replication::change_master_sql;
use crate::storage::{NodeAddr, StorageConn, StorageOptions};

/// One instance to act on: where, and with what spec.
#[derive(Debug, Clone)]
struct Job {
    target: SshTarget,
    spec: InstanceSpec,
    storage: bool,
}

impl Provisioner {
    /// The install spec of a storage node of `plan`.
    pub fn storage_spec(plan: &ClusterPlan, node: &InstancePlan) -> InstanceSpec {
        let p = &plan.passwords;
        InstanceSpec {
            bind_address: node.slot.hostaddr.clone(),
            port: node.slot.port,
            base_dir: node.base_dir.clone(),
            server_id: node.server_id,
            buffer_mb: plan.innodb_size_mb,
            max_connections: plan.max_connections,
            semi_sync: plan.ha_mode == HaMode::Rbr,
            users: storage_users(p),
        }
    }

    /// The install spec of a compute node of `plan`.
    pub fn compute_spec(plan: &ClusterPlan, comp: &InstancePlan) -> InstanceSpec {
        InstanceSpec {
            bind_address: comp.slot.hostaddr.clone(),
            port: comp.slot.port,
            base_dir: comp.base_dir.clone(),
            server_id: comp.server_id,
            buffer_mb: COMPUTE_BUFFER_MB,
            max_connections: plan.max_connections,
            semi_sync: false,
            // The manager's own superuser owns the catalog (it holds `pgx`'s password); the
            // login handed to users is not a superuser.
            users: vec![
                user(MANAGER_USER, &plan.passwords.manager, UserRole::Admin),
                user(COMP_USER, &plan.passwords.comp, UserRole::Application),
            ],
        }
    }

    fn jobs(&self, machines: &[Machine], plan: &ClusterPlan) -> Result<Vec<Job>> {
        let by_id: HashMap<i64, &Machine> = machines.iter().map(|m| (m.id, m)).collect();
        let target = |i: &InstancePlan| -> Result<SshTarget> {
            by_id
                .get(&i.slot.machine_id)
                .map(|m| self.target(m))
                .ok_or_else(|| Error::NotFound {
                    what: "machine",
                    id: i.slot.machine_id.to_string(),
                })
        };
        let mut jobs = Vec::new();
        for node in plan.shards.iter().flat_map(|s| s.nodes.iter()) {
            jobs.push(Job {
                target: target(node)?,
                spec: Self::storage_spec(plan, node),
                storage: true,
            });
        }
        for comp in &plan.comps {
            jobs.push(Job {
                target: target(comp)?,
                spec: Self::compute_spec(plan, comp),
                storage: false,
            });
        }
        Ok(jobs)
    }

    /// Runs `install` (or uninstall) of every instance at once, reporting each instance's
    /// steps to `progress`; all errors are collected.
    async fn run_all(&self, jobs: Vec<Job>, install: bool, progress: &Progress) -> Result<()> {
        let mut set = JoinSet::new();
        for job in jobs {
            let recipe = if job.storage {
                self.storage.clone()
            } else {
                self.compute.clone()
            };
            let ssh = self.ssh.clone();
            let progress = progress.clone();
            set.spawn(async move {
                let label = instance_label(job.storage, &job.spec);
                let r = if install {
                    install_tracked(&*recipe, &ssh, &job, &label, &progress).await
                } else {
                    let step = progress.step(format!("remove {label}"));
                    let r = recipe.uninstall(&ssh, &job.target, &job.spec).await;
                    match &r {
                        Ok(()) => step.done(),
                        Err(e) => step.fail(e),
                    }
                    r
                };
                r.map_err(|e| format!("{label}: {e}"))
            });
        }
        let mut failures = Vec::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(format!("install task failed: {e}")),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            failures.sort();
            Err(Error::Unavailable(failures.join("; ")))
        }
    }

    /// Installs every instance of `plan` in parallel, then sets up replication in each shard.
    pub async fn install_cluster(&self, machines: &[Machine], plan: &ClusterPlan) -> Result<()> {
        self.install_cluster_with(machines, plan, &Progress::detached())
            .await
    }

    /// [`install_cluster`](Self::install_cluster), reporting every step (see
    /// [`planned_steps`]) to `progress`.
    pub async fn install_cluster_with(
        &self,
        machines: &[Machine],
        plan: &ClusterPlan,
        progress: &Progress,
    ) -> Result<()> {
        let jobs = self.jobs(machines, plan)?;
        if let Some(dir) = self
            .known_hosts
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        self.run_all(jobs, true, progress).await?;
        self.setup_replication_with(plan, progress).await
    }

    /// Checks every instance of `plan` (with its passwords) without changing it: installed (its
    /// server runs, per its pid file, over SSH) and answering (a login as the manager with the
    /// plan's password: its system users exist). One `(label, outcome)` per instance, the
    /// reason on failure; at most one SSH session and one login per instance, in parallel.
    pub async fn check_installed(
        &self,
        machines: &[Machine],
        plan: &ClusterPlan,
        catalog: &crate::catalog::CatalogOptions,
    ) -> Result<Vec<(String, std::result::Result<(), String>)>> {
        let mut set = JoinSet::new();
        for job in self.jobs(machines, plan)? {
            let recipe = if job.storage {
                self.storage.clone()
            } else {
                self.compute.clone()
            };
            let ssh = self.ssh.clone();
            let password = plan.passwords.manager.clone();
            let catalog = catalog.clone();
            set.spawn(async move {
                let label = instance_label(job.storage, &job.spec);
                let r = async {
                    let running = recipe
                        .is_running(&ssh, &job.target, &job.spec)
                        .await
                        .map_err(|e| format!("not checked: {e}"))?;
                    if !running {
                        return Err("its server is not running".to_string());
                    }
                    let (host, port) = (job.spec.bind_address.clone(), job.spec.port);
                    if job.storage {
                        let addr = NodeAddr {
                            host,
                            port,
                            user: MANAGER_USER.into(),
                            password,
                        };
                        let c = StorageConn::connect(&addr, StorageOptions::default())
                            .await
                            .map_err(|e| format!("does not answer: {e}"))?;
                        c.close().await;
                    } else {
                        crate::catalog::answers(&host, port, MANAGER_USER, &password, &catalog)
                            .await
                            .map_err(|e| format!("does not answer: {e}"))?;
                    }
                    Ok(())
                }
                .await;
                (label, r)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(one) => out.push(one),
                Err(e) => out.push(("check task".to_string(), Err(e.to_string()))),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Stops and removes every instance of `plan` (also fine when some were never installed).
    pub async fn uninstall_cluster(&self, machines: &[Machine], plan: &ClusterPlan) -> Result<()> {
        self.uninstall_cluster_with(machines, plan, &Progress::detached())
            .await
    }

    /// [`uninstall_cluster`](Self::uninstall_cluster), one `remove <kind> <host:port>` step
    /// per instance.
    pub async fn uninstall_cluster_with(
        &self,
        machines: &[Machine],
        plan: &ClusterPlan,
        progress: &Progress,
    ) -> Result<()> {
        let jobs = self.jobs(machines, plan)?;
        self.run_all(jobs, false, progress).await
    }

    /// Points every replica at its shard's primary (GTID auto-positioning) and starts it.
    pub async fn setup_replication(&self, plan: &ClusterPlan) -> Result<()> {
        self.setup_replication_with(plan, &Progress::detached())
            .await
    }

    /// [`setup_replication`](Self::setup_replication) with one `replication <shard>` step
    /// per shard that has replicas; the replicas of a shard are set up in parallel too.
    pub async fn setup_replication_with(
        &self,
        plan: &ClusterPlan,
        progress: &Progress,
    ) -> Result<()> {
        let mut shards = JoinSet::new();
        for shard in &plan.shards {
            let Some((primary, replicas)) = shard.nodes.split_first() else {
                continue;
            };
            if replicas.is_empty() {
                continue;
            }
            let step = progress.step(format!("replication {}", shard.name));
            let mut set = JoinSet::new();
            for r in replicas {
                let addr = NodeAddr {
                    host: r.slot.hostaddr.clone(),
                    port: r.slot.port,
                    user: MANAGER_USER.into(),
                    password: plan.passwords.manager.clone(),
                };
                let sql = change_master_sql(
                    &primary.slot.hostaddr,
                    primary.slot.port,
                    REPL_USER,
                    &plan.passwords.repl,
                );
                set.spawn(async move {
                    let mut c = StorageConn::connect(&addr, StorageOptions::default()).await?;
                    // A replica's own semi-sync master side is off (promotion turns it on):
                    // with no replica of its own, every applied transaction would wait out
                    // the semi-sync timeout. It is read-only from the start: the HA monitor
                    // fences a writable non-primary, but only at its next round.
                    c.exec(
                        "STOP SLAVE; SET GLOBAL rpl_semi_sync_master_enabled = OFF; \
                         SET GLOBAL read_only = ON",
                    )
                    .await?;
                    c.exec(&sql).await?;
                    c.exec("START SLAVE").await?;
                    c.close().await;
                    Ok::<_, crate::storage::Error>(())
                });
            }
            let name = shard.name.clone();
            shards.spawn(async move {
                let mut failures = Vec::new();
                while let Some(r) = set.join_next().await {
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => failures.push(e.to_string()),
                        Err(e) => failures.push(format!("replication task failed: {e}")),
                    }
                }
                if failures.is_empty() {
                    step.done();
                    Ok(())
                } else {
                    let why = failures.join("; ");
                    step.fail(&why);
                    Err(format!("replication {name}: {why}"))
                }
            });
        }
        let mut failures = Vec::new();
        while let Some(r) = shards.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(format!("replication task failed: {e}")),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            failures.sort();
            Err(Error::Unavailable(failures.join("; ")))
        }
    }
}

/// `storage 127.0.0.2:57001` / `compute 127.0.0.2:47001`.
fn instance_label(storage: bool, spec: &InstanceSpec) -> String {
    let kind = if storage { "storage" } else { "compute" };
    format!("{kind} {}:{}", spec.bind_address, spec.port)
}

/// The steps [`Provisioner::install_cluster_with`] reports for `plan`, in order: for every
/// instance `install <kind> <host:port>` (dirs, initialise, config) and `start <kind>
/// <host:port>` (start, wait until it answers, system users), then `replication <shard>` for
/// every shard with replicas.
pub fn planned_steps(plan: &ClusterPlan) -> Vec<String> {
    let storage = plan
        .shards
        .iter()
        .flat_map(|s| s.nodes.iter())
        .map(|n| (true, n));
    let comps = plan.comps.iter().map(|c| (false, c));
    let mut out = Vec::new();
    for (is_storage, i) in storage.chain(comps) {
        let kind = if is_storage { "storage" } else { "compute" };
        let label = format!("{kind} {}:{}", i.slot.hostaddr, i.slot.port);
        out.push(format!("install {label}"));
        out.push(format!("start {label}"));
    }
    for s in plan.shards.iter().filter(|s| s.nodes.len() > 1) {
        out.push(format!("replication {}", s.name));
    }
    out
}

/// Installs one instance in one SSH session ([`Recipe::install_with`]), reported as two
/// steps: the instance's `install` step (programs check, dirs, initialise, config) until the
/// recipe's `start` step begins, then its `start` step (start, wait, system users); the running
/// recipe step is the note.
async fn install_tracked(
    recipe: &dyn Recipe,
    ssh: &SshExecutor,
    job: &Job,
    label: &str,
    progress: &Progress,
) -> kunlun_provision::Result<()> {
    let install = progress.step(format!("install {label}"));
    install.note("check programs");
    let state = Arc::new(std::sync::Mutex::new(Tracked {
        install: Some(install),
        start: None,
    }));
    let on_step: OnStep = {
        let (state, progress, label) = (state.clone(), progress.clone(), label.to_string());
        Arc::new(move |step: Step| {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            if step == Step::Start && st.start.is_none() {
                if let Some(done) = st.install.take() {
                    done.done();
                }
                st.start = Some(progress.step(format!("start {label}")));
            }
            if let Some(h) = st.start.as_ref().or(st.install.as_ref()) {
                h.note(step.as_str());
            }
        })
    };
    let r = recipe
        .install_with(ssh, &job.target, &job.spec, Some(on_step))
        .await;
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let (install, start) = (st.install.take(), st.start.take());
    match (r, install, start) {
        (Ok(()), install, start) => {
            // A session whose start event was lost still installed everything.
            let start = start.unwrap_or_else(|| {
                if let Some(h) = install {
                    h.done();
                }
                progress.step(format!("start {label}"))
            });
            start.done();
            Ok(())
        }
        (Err(e), Some(install), _) => {
            if nothing_installed(&e) {
                install.fail(format!("{NOTHING_INSTALLED}: {e}"));
            } else {
                install.fail(&e);
            }
            Err(e)
        }
        (Err(e), None, Some(start)) => {
            start.fail(&e);
            Err(e)
        }
        (Err(e), None, None) => Err(e),
    }
}

/// The step handles of one instance's install.
struct Tracked {
    install: Option<StepHandle>,
    start: Option<StepHandle>,
}

/// Whether an install error means nothing of the instance was written: the machine was not
/// reached (connection, host key, login) or lacks a program of the recipe (checked before
/// anything else in the same session).
fn nothing_installed(e: &kunlun_provision::Error) -> bool {
    use kunlun_provision::Error as E;
    matches!(
        e,
        E::Unreachable { .. }
            | E::AuthFailed { .. }
            | E::HostKeyMismatch { .. }
            | E::HostKeyUnknown { .. }
            | E::HostKeyPinMismatch { .. }
            | E::KeyFile { .. }
            | E::Refused { .. }
    )
}

/// Note prefix of an `install` step that failed before anything of its instance was
/// written: the machine was not reached (no connection, authentication or host key refused)
/// or lacks a program of the recipe. A rollback need not (and, for an unreachable machine,
/// could not) uninstall such an instance.
pub const NOTHING_INSTALLED: &str = "nothing installed";

/// The system users of a storage node and their roles.
pub(crate) fn storage_users(p: &SystemPasswords) -> Vec<DbUser> {
    vec![
        user(MANAGER_USER, &p.manager, UserRole::Admin),
        user(REPL_USER, &p.repl, UserRole::Replication),
        user(PGX_USER, &p.pgx, UserRole::Application),
    ]
}

fn user(name: &str, password: &str, role: UserRole) -> DbUser {
    DbUser {
        name: name.into(),
        password: password.into(),
        role,
    }
}
