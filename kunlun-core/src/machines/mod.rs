//! Machine registry operations of the facade: validate API input, probe the machine over SSH,
//! then store it; plus the background liveness check ([`liveness`]).
//!
//! Invariant: nothing reaches the store before its request validated and, unless the caller
//! opted out with `probe: false`, before the machine answered over SSH with the CPU, memory,
//! data dirs and server binaries its type needs. A refused registration stores nothing.
//! An unprobed machine is stored `dead`, so placement ignores it until the liveness check
//! reaches it.

pub(crate) mod liveness;

use std::time::Duration;

use kunlun_meta::api::{RegisterMachine, UpdateMachine};
use kunlun_meta::model::{Machine, MachinePatch, MachineType, NewMachine, NodeStats};
use kunlun_provision::probe::{self, MachineFacts, Problem};
use kunlun_provision::SshTarget;

use crate::error::{Error, ProbeFailure, Result};
use crate::jobs::Provisioner;
use crate::ClusterManager;

impl ClusterManager {
    /// Registers a machine. With `probe` (the default) it first connects over SSH with the
    /// given key, probes it and refuses it ([`Error::MachineRefused`], nothing stored) when it
    /// is unreachable, the key or host key is wrong, a server binary is missing or a data dir
    /// is unusable; memory and cores not given are taken from the probe. Without, the machine
    /// is stored unchecked as `dead`.
    pub async fn register_machine(&self, req: &RegisterMachine) -> Result<Machine> {
        let mut new = req.validate()?;
        let store = self.store()?;
        if !req.probe {
            let m = store.insert_machine(&new).await?;
            // Two statements: the store inserts `running`. Were the second one lost, the
            // liveness check would still mark the machine dead after its failures.
            let dead = MachinePatch {
                node_stats: Some(NodeStats::Dead),
                ..MachinePatch::default()
            };
            let m = store.update_machine(m.id, &dead).await?;
            tracing::info!(machine_id = m.id, hostaddr = %m.hostaddr, "machine registered without a probe; dead until it answers over SSH");
            return Ok(m);
        }
        let facts = self.probe_new_machine(&new).await?;
        fill_from_facts(&mut new, &facts);
        let m = store.insert_machine(&new).await?;
        let free: Vec<String> = facts
            .dirs
            .iter()
            .map(|d| format!("{}={}MB", d.path, d.free_mb.unwrap_or(0)))
            .collect();
        tracing::info!(
            machine_id = m.id, hostaddr = %m.hostaddr, machine_type = %m.machine_type,
            cores = facts.cpu_cores, mem_mb = facts.mem_mb, os = %facts.os,
            kernel = %facts.kernel, free = %free.join(" "),
            "machine registered after probe"
        );
        Ok(m)
    }

    /// Probes the machine `new` describes with the provisioner's SSH settings and the
    /// binaries of its type's recipe; `Ok` only when it can host instances.
    async fn probe_new_machine(&self, new: &NewMachine) -> Result<MachineFacts> {
        let Some(p) = self.provisioner() else {
            return Err(Error::MachineRefused {
                kind: ProbeFailure::NotConfigured,
                message: "this manager has no SSH settings to probe machines with; register \
                          with probe=false"
                    .into(),
            });
        };
        let target = target_of(p, new)?;
        let recipe = match new.machine_type {
            MachineType::Storage => &p.storage,
            MachineType::Computer => &p.compute,
        };
        let binaries = recipe.required_binaries();
        let facts = probe::probe(&p.ssh, &target, &new.data_dirs, &binaries)
            .await
            .map_err(refusal)?;
        let problems = probe::problems(&facts);
        if let Some((first, _)) = problems.first() {
            let kind = match first {
                Problem::MissingBinaries => ProbeFailure::MissingBinaries,
                Problem::DataDir => ProbeFailure::DataDir,
                _ => ProbeFailure::Unsuitable,
            };
            let reasons: Vec<String> = problems.into_iter().map(|(_, r)| r).collect();
            tracing::warn!(host = %target.label(), reason = %reasons.join("; "), "machine registration refused");
            return Err(Error::MachineRefused {
                kind,
                message: format!(
                    "{}: cannot host {} instances: {}; nothing was stored",
                    target.label(),
                    new.machine_type,
                    reasons.join("; ")
                ),
            });
        }
        Ok(facts)
    }

    /// Every registered machine, by id.
    pub async fn list_machines(&self) -> Result<Vec<Machine>> {
        Ok(self.store()?.list_machines().await?)
    }

    /// One machine.
    pub async fn get_machine(&self, id: i64) -> Result<Machine> {
        Ok(self.store()?.get_machine(id).await?)
    }

    /// Changes the fields named in `req`.
    pub async fn update_machine(&self, id: i64, req: &UpdateMachine) -> Result<Machine> {
        let patch = req.validate()?;
        let m = self.store()?.update_machine(id, &patch).await?;
        tracing::info!(machine_id = id, "machine updated");
        Ok(m)
    }

    /// Removes a machine.
    pub async fn delete_machine(&self, id: i64) -> Result<()> {
        self.store()?.delete_machine(id).await?;
        tracing::info!(machine_id = id, "machine deleted");
        Ok(())
    }

    /// Starts the machine liveness check as a background task: every `interval` each machine
    /// is asked to run `true` over SSH (a fresh connection, deadline `min(interval, 5 s)`);
    /// two failures in a row mark it `dead`, one success marks a dead machine `running`.
    /// Needs [`set_provisioner`](Self::set_provisioner) first (its `known_hosts` and host key
    /// policy are used); without it, or with a zero interval, nothing is started.
    pub fn start_machine_liveness(&self, interval: Duration) {
        if interval.is_zero() {
            tracing::info!("machine liveness check disabled (machine_check_interval = 0)");
            return;
        }
        let Some(p) = self.provisioner().cloned() else {
            tracing::warn!("machine liveness check not started: no provisioner is set");
            return;
        };
        let cfg = liveness::LivenessConfig::new(interval);
        let me = self.clone();
        let cancel = self.cancellation_token();
        self.tasks()
            .spawn(async move { liveness::run(me, p, cfg, cancel).await });
    }
}

/// The SSH target of a machine about to be registered (the provisioner's trust settings).
fn target_of(p: &Provisioner, new: &NewMachine) -> Result<SshTarget> {
    if let Some(dir) = p.known_hosts.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut t = SshTarget::new(
        new.hostaddr.clone(),
        new.ssh.port,
        new.ssh.user.clone(),
        new.ssh.key_path.clone(),
        p.known_hosts.clone(),
    );
    t.host_key_policy = p.host_key_policy;
    Ok(t)
}

/// Memory and cores the request left out come from the probe.
fn fill_from_facts(new: &mut NewMachine, facts: &MachineFacts) {
    if new.total_mem_mb.is_none() && facts.mem_mb > 0 {
        new.total_mem_mb = i64::try_from(facts.mem_mb).ok();
    }
    if new.total_cpu_cores.is_none() && facts.cpu_cores > 0 {
        new.total_cpu_cores = Some(i64::from(facts.cpu_cores));
    }
}

/// A transport failure of the probe as a refusal the operator can act on.
fn refusal(e: kunlun_provision::Error) -> Error {
    use kunlun_provision::Error as P;
    let kind = match &e {
        P::Unreachable { .. } | P::Timeout { .. } | P::Disconnected { .. } => {
            ProbeFailure::Unreachable
        }
        P::AuthFailed { .. } => ProbeFailure::AuthFailed,
        P::HostKeyMismatch { .. } => ProbeFailure::HostKeyMismatch,
        P::HostKeyUnknown { .. } => ProbeFailure::HostKeyUnknown,
        P::RemoteFailed { .. } | P::Refused { .. } => ProbeFailure::Unsuitable,
        _ => return Error::Internal(format!("probing the machine: {e}")),
    };
    tracing::warn!(error = %e, "machine registration refused");
    Error::MachineRefused {
        kind,
        message: format!("{e}; nothing was stored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::model::SshAccess;

    fn new_machine() -> NewMachine {
        NewMachine {
            hostaddr: "127.0.0.2".into(),
            machine_type: MachineType::Storage,
            rack_id: None,
            data_dirs: vec!["/d".into()],
            port_range: "57000-58000".into(),
            total_mem_mb: Some(512),
            total_cpu_cores: None,
            ssh: SshAccess {
                port: 22,
                user: "root".into(),
                key_path: "/k".into(),
            },
        }
    }

    #[test]
    fn facts_fill_only_what_the_request_left_out() {
        let mut m = new_machine();
        let facts = MachineFacts {
            cpu_cores: 8,
            mem_mb: 16000,
            ..MachineFacts::default()
        };
        fill_from_facts(&mut m, &facts);
        assert_eq!(m.total_mem_mb, Some(512), "given value kept");
        assert_eq!(m.total_cpu_cores, Some(8));
        let mut m = new_machine();
        m.total_mem_mb = None;
        fill_from_facts(&mut m, &MachineFacts::default());
        assert_eq!((m.total_mem_mb, m.total_cpu_cores), (None, None));
    }

    #[test]
    fn transport_errors_map_to_stable_codes() {
        use kunlun_provision::Error as P;
        let code = |e: P| match refusal(e) {
            Error::MachineRefused { kind, message } => {
                assert!(message.contains("nothing was stored"), "{message}");
                kind.code()
            }
            other => panic!("not a refusal: {other}"),
        };
        let host = || "h:22".to_string();
        assert_eq!(
            code(P::Unreachable {
                host: host(),
                reason: "refused".into()
            }),
            "machine_unreachable"
        );
        assert_eq!(
            code(P::Timeout {
                host: host(),
                what: "connect".into(),
                after: Duration::from_secs(1)
            }),
            "machine_unreachable"
        );
        assert_eq!(
            code(P::AuthFailed {
                host: host(),
                user: "root".into(),
                reason: "denied".into()
            }),
            "ssh_auth_failed"
        );
        assert_eq!(
            code(P::HostKeyMismatch {
                host: host(),
                key_type: "ed25519".into(),
                offered: "SHA256:x".into(),
                known_hosts: "/kh".into()
            }),
            "host_key_mismatch"
        );
        assert!(matches!(
            refusal(P::Local("disk full".into())),
            Error::Internal(_)
        ));
    }
}
