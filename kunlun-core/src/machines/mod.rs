//! Machine registry operations of the facade: validate API input, probe the machine over SSH,
//! then store it with what the probe found; plus the background liveness check ([`liveness`]).
//!
//! Invariant: nothing reaches the store before its request validated and, unless the caller
//! opted out with `probe: false`, before the machine answered over SSH with the CPU, memory,
//! data dirs and server binaries its type needs. This holds for a registration and for an
//! update that changes SSH access or data dirs (probed with the new values). A refused
//! request stores nothing. The stored probe facts (`kl_machine_probe`) always describe the
//! SSH access and data dirs stored: written in the same transaction as them, dropped when
//! they change unprobed. An unprobed machine is stored `dead`, so placement ignores it until
//! the liveness check reaches it.

pub(crate) mod liveness;

use std::time::Duration;

use kunlun_meta::api::{RegisterMachine, UpdateMachine};
use kunlun_meta::model::{
    Machine, MachineInfo, MachinePatch, MachineProbe, MachineType, NewMachine, NodeStats,
    ProbedDir, SshAccess,
};
use kunlun_meta::store::repo;
use kunlun_provision::probe::{self, MachineFacts, Problem};
use kunlun_provision::SshTarget;

use crate::error::{Error, ProbeFailure, Result};
use crate::fleet::Provisioner;
use crate::ClusterManager;

impl ClusterManager {
    /// Registers a machine. With `probe` (the default) it first connects over SSH with the
    /// given key, probes it and refuses it ([`Error::MachineRefused`], nothing stored) when it
    /// is unreachable, the key or host key is wrong, a server binary is missing or a data dir
    /// is unusable; memory and cores not given are taken from the probe, and the OS and each
    /// data dir's free space are stored with the machine. Without, the machine is stored
    /// unchecked as `dead`, with no probe facts.
    pub async fn register_machine(&self, req: &RegisterMachine) -> Result<MachineInfo> {
        let mut new = req.validate()?;
        // One spelling per host: the unique (hostaddr, machine_type) key then refuses a
        // second registration of the same address however it was written.
        new.hostaddr = canonical_host(&new.hostaddr).await?;
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
            return Ok(MachineInfo {
                machine: m,
                probe: None,
            });
        }
        let facts = self
            .probe_machine(&new, req.ssh_host_key.as_deref(), "registration")
            .await?;
        fill_from_facts(&mut new, &facts);
        let record = probe_record(&facts);
        let (new, rec) = (&new, &record);
        let info = store
            .tx(async |tx| {
                let m = repo::machines::insert(tx, new).await?;
                repo::machines::set_probe(tx, m.id, Some(rec)).await?;
                repo::machines::get_info(tx, m.id).await
            })
            .await?;
        let m = &info.machine;
        tracing::info!(
            machine_id = m.id, hostaddr = %m.hostaddr, machine_type = %m.machine_type,
            cores = facts.cpu_cores, mem_mb = facts.mem_mb, os = %facts.os,
            kernel = %facts.kernel, free = %free_summary(&record),
            "machine registered after probe"
        );
        Ok(info)
    }

    /// Probes the machine `new` describes with the provisioner's SSH settings and the
    /// binaries of its type's recipe; `Ok` only when it can host instances. `what` names the
    /// request in the log ("registration", "update").
    async fn probe_machine(
        &self,
        new: &NewMachine,
        pin: Option<&str>,
        what: &str,
    ) -> Result<MachineFacts> {
        let Some(p) = self.probe_provisioner() else {
            return Err(Error::MachineRefused {
                kind: ProbeFailure::NotConfigured,
                message: "this manager has no SSH settings to probe machines with; send \
                          probe=false to store the machine unchecked"
                    .into(),
            });
        };
        let mut target = target_of(p, new)?;
        target.host_key_pin = pin.map(str::to_string);
        check_key_file(&target)
            .await
            .map_err(|e| refusal(e, what))?;
        let recipe = match new.machine_type {
            MachineType::Storage => &p.storage,
            MachineType::Computer => &p.compute,
        };
        let binaries = recipe.required_binaries();
        let facts = probe::probe(&p.ssh, &target, &new.data_dirs, &binaries)
            .await
            .map_err(|e| refusal(e, what))?;
        let problems = probe::problems(&facts);
        if let Some((first, _)) = problems.first() {
            let kind = match first {
                Problem::MissingBinaries => ProbeFailure::MissingBinaries,
                Problem::DataDir => ProbeFailure::DataDir,
                _ => ProbeFailure::Unsuitable,
            };
            let reasons: Vec<String> = problems.into_iter().map(|(_, r)| r).collect();
            tracing::warn!(host = %target.label(), reason = %reasons.join("; "), "machine {what} refused");
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

    /// Every registered machine with its probe facts, by id.
    pub async fn list_machine_infos(&self) -> Result<Vec<MachineInfo>> {
        Ok(self
            .store()?
            .read(async |tx| repo::machines::list_info(tx).await)
            .await?)
    }

    /// One machine.
    pub async fn get_machine(&self, id: i64) -> Result<Machine> {
        Ok(self.store()?.get_machine(id).await?)
    }

    /// One machine with its probe facts.
    pub async fn machine_info(&self, id: i64) -> Result<MachineInfo> {
        Ok(self
            .store()?
            .read(async |tx| repo::machines::get_info(tx, id).await)
            .await?)
    }

    /// Changes the fields named in `req`. When the SSH port, user or key or the data dirs
    /// change, the machine is probed first with the new values (unless `req.probe` is false)
    /// and refused like a registration ([`Error::MachineRefused`], nothing stored); the probe
    /// facts are refreshed with the change. Other changes do not reach the machine and keep
    /// its facts. An unprobed change of SSH access or data dirs drops the facts.
    pub async fn update_machine(&self, id: i64, req: &UpdateMachine) -> Result<MachineInfo> {
        let patch = req.validate()?;
        let store = self.store()?;
        let current = store.get_machine(id).await?;
        check_no_orphans(&current, &patch).map_err(Error::Conflict)?;
        let before = Probed::of(&current);
        let after = before.with(&patch);
        let patch = &patch;
        if after == before {
            let before = &before;
            let info = store
                .tx(async |tx| {
                    // Unchanged as read above: a probed change committed meanwhile must not
                    // be undone by this patch's copy of the old values.
                    let now = repo::machines::get(tx, id).await?;
                    check_no_orphans(&now, patch).map_err(kunlun_meta::Error::Conflict)?;
                    if &Probed::of(&now) != before {
                        return Err(kunlun_meta::Error::Conflict(format!(
                            "machine {id}'s SSH access or data dirs changed meanwhile; retry"
                        )));
                    }
                    repo::machines::update(tx, id, patch).await?;
                    repo::machines::get_info(tx, id).await
                })
                .await?;
            tracing::info!(
                machine_id = id,
                "machine updated (SSH access and data dirs unchanged, not probed)"
            );
            return Ok(info);
        }
        let record = if req.probe {
            let target = NewMachine {
                hostaddr: current.hostaddr.clone(),
                machine_type: current.machine_type,
                rack_id: current.rack_id.clone(),
                data_dirs: after.data_dirs.clone(),
                port_range: current.port_range.clone(),
                total_mem_mb: current.total_mem_mb,
                total_cpu_cores: current.total_cpu_cores,
                ssh: after.ssh.clone(),
            };
            Some(probe_record(
                &self
                    .probe_machine(&target, req.ssh_host_key.as_deref(), "update")
                    .await?,
            ))
        } else {
            None
        };
        let (before, rec) = (&before, record.as_ref());
        let info = store
            .tx(async |tx| {
                // The probe ran outside the transaction (it may take seconds): what it checked
                // must still be what the patch starts from.
                let now = repo::machines::get(tx, id).await?;
                check_no_orphans(&now, patch).map_err(kunlun_meta::Error::Conflict)?;
                if &Probed::of(&now) != before {
                    return Err(kunlun_meta::Error::Conflict(format!(
                        "machine {id}'s SSH access or data dirs changed while it was probed; \
                         retry"
                    )));
                }
                repo::machines::update(tx, id, patch).await?;
                repo::machines::set_probe(tx, id, rec).await?;
                repo::machines::get_info(tx, id).await
            })
            .await?;
        match &record {
            Some(r) => tracing::info!(
                machine_id = id, os = %r.os, free = %free_summary(r),
                "machine updated after probe with the new SSH access / data dirs"
            ),
            None => tracing::warn!(
                machine_id = id,
                "machine SSH access / data dirs updated without a probe; probe facts dropped"
            ),
        }
        Ok(info)
    }

    /// Removes a machine (and its probe facts).
    pub async fn delete_machine(&self, id: i64) -> Result<()> {
        // A backup storage reaches its directory through the machine's SSH settings.
        let on_it: Vec<String> = self
            .list_backup_storages()
            .await?
            .into_iter()
            .filter(|s| s.machine_id == id && s.kind == kunlun_meta::api::KIND_SSH_DIR)
            .map(|s| s.name)
            .collect();
        if !on_it.is_empty() {
            return Err(Error::Conflict(format!(
                "machine {id} holds backup storage(s) {}; remove them first",
                on_it.join(", ")
            )));
        }
        self.store()?.delete_machine(id).await?;
        tracing::info!(machine_id = id, "machine deleted");
        Ok(())
    }
}

/// Refuses a patch that would orphan instances of `m` (why, for a 409): a `port_range` that
/// no longer holds every used or installing port block, or other `data_dirs` while any
/// instance lives on the machine (uninstall, fence and rejoin of instances installed before
/// base dirs were recorded compute their dir from `data_dirs`).
pub(crate) fn check_no_orphans(
    m: &Machine,
    patch: &MachinePatch,
) -> std::result::Result<(), String> {
    let mut ports: Vec<u16> = m
        .used_ports
        .iter()
        .chain(&m.installing_ports)
        .copied()
        .collect();
    ports.sort_unstable();
    ports.dedup();
    if let Some(range) = &patch.port_range {
        let (lo, hi) = kunlun_provision::placement::parse_port_range(range)
            .map_err(|e| format!("port_range {range:?}: {e}"))?;
        let step = match m.machine_type {
            MachineType::Storage => kunlun_provision::placement::InstanceKind::Storage,
            MachineType::Computer => kunlun_provision::placement::InstanceKind::Compute,
        }
        .port_step();
        let outside: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|&p| p < lo || u32::from(p) + u32::from(step) - 1 > u32::from(hi))
            .collect();
        if !outside.is_empty() {
            return Err(format!(
                "machine {} ({}): port_range {range} would leave out the instances on ports \
                 {outside:?}; remove them first",
                m.id, m.hostaddr
            ));
        }
    }
    if let Some(dirs) = &patch.data_dirs {
        if dirs != &m.data_dirs && !ports.is_empty() {
            return Err(format!(
                "machine {} ({}): data_dirs cannot change while instances live in them \
                 (ports {ports:?}); remove them first",
                m.id, m.hostaddr
            ));
        }
    }
    Ok(())
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
    t.auth.key_dir = p.keys_dir.clone();
    Ok(t)
}

/// Deadline of the key file check (the open never blocks; this bounds a stuck file system).
const KEY_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of resolving a host name at registration.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `target`'s key file as a connection would, before any network traffic: a refused
/// key is answered without connecting (so the answer says nothing about the host or port).
async fn check_key_file(target: &SshTarget) -> std::result::Result<(), kunlun_provision::Error> {
    let Some(path) = target.auth.private_key.clone() else {
        return Ok(());
    };
    let dir = target.auth.key_dir.clone();
    let shown = path.display().to_string();
    let check = tokio::task::spawn_blocking(move || {
        kunlun_provision::ssh::keyfile::read_private_key(&path, dir.as_deref()).map(|_| ())
    });
    match tokio::time::timeout(KEY_CHECK_TIMEOUT, check).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(kunlun_provision::Error::Local(format!(
            "checking the key file: {e}"
        ))),
        Err(_) => Err(kunlun_provision::Error::KeyFile {
            path: shown,
            reason: "reading it did not finish in time".to_string(),
        }),
    }
}

/// The one spelling of `host` that is stored: an IP literal in canonical form
/// ([`kunlun_meta::validate::canonical_ip`]), or the address a host name resolves to (IPv4
/// preferred, for a deterministic choice); a name that does not resolve is refused.
pub(crate) async fn canonical_host(host: &str) -> Result<String> {
    if let Some(ip) = kunlun_meta::validate::canonical_ip(host) {
        return Ok(ip.to_string());
    }
    let unresolved = |why: String| Error::MachineRefused {
        kind: ProbeFailure::Unresolvable,
        message: format!("hostaddr: {host:?} does not resolve ({why}); nothing was stored"),
    };
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 22))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => return Err(unresolved(e.to_string())),
            Err(_) => return Err(unresolved(format!("no answer within {RESOLVE_TIMEOUT:?}"))),
        };
    let ips: Vec<std::net::IpAddr> = addrs
        .iter()
        .map(|a| match a.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        })
        .collect();
    ips.iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| ips.first())
        .map(|ip| ip.to_string())
        .ok_or_else(|| unresolved("no address".to_string()))
}

/// What a probe of a machine depends on besides its host and type (neither can change).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probed {
    ssh: SshAccess,
    data_dirs: Vec<String>,
}

impl Probed {
    fn of(m: &Machine) -> Self {
        Probed {
            ssh: m.ssh.clone(),
            data_dirs: m.data_dirs.clone(),
        }
    }

    /// These values with the patch applied.
    fn with(&self, p: &MachinePatch) -> Self {
        Probed {
            ssh: SshAccess {
                port: p.ssh_port.unwrap_or(self.ssh.port),
                user: p.ssh_user.clone().unwrap_or_else(|| self.ssh.user.clone()),
                key_path: p
                    .ssh_key_path
                    .clone()
                    .unwrap_or_else(|| self.ssh.key_path.clone()),
            },
            data_dirs: p
                .data_dirs
                .clone()
                .unwrap_or_else(|| self.data_dirs.clone()),
        }
    }
}

/// The facts of a probe as stored with the machine, stamped now.
fn probe_record(f: &MachineFacts) -> MachineProbe {
    MachineProbe {
        os: f.os.clone(),
        kernel: f.kernel.clone(),
        data_dirs: f
            .dirs
            .iter()
            .map(|d| ProbedDir {
                path: d.path.clone(),
                free_mb: d.free_mb,
                exists: d.exists,
            })
            .collect(),
        probed_at: chrono::Utc::now().naive_utc(),
    }
}

/// `dir=NMB ...` for the log.
fn free_summary(p: &MachineProbe) -> String {
    p.data_dirs
        .iter()
        .map(|d| format!("{}={}MB", d.path, d.free_mb.unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(" ")
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

/// A transport failure of the probe as a refusal the operator can act on; `what` names the
/// request in the log.
fn refusal(e: kunlun_provision::Error, what: &str) -> Error {
    use kunlun_provision::Error as P;
    let kind = match &e {
        P::Unreachable { .. } | P::Timeout { .. } | P::Disconnected { .. } => {
            ProbeFailure::Unreachable
        }
        P::AuthFailed { .. } => ProbeFailure::AuthFailed,
        P::HostKeyMismatch { .. } | P::HostKeyPinMismatch { .. } => ProbeFailure::HostKeyMismatch,
        P::HostKeyUnknown { offered, .. } => {
            tracing::warn!(error = %e, "machine {what} refused");
            return Error::MachineRefused {
                kind: ProbeFailure::HostKeyUnknown,
                message: format!(
                    "{e}; if {offered} is the machine's host key (ssh-keygen -lf on its \
                     /etc/ssh/ssh_host_*_key.pub), register it again with ssh_host_key = \
                     {offered} (kunlunctl machine add --ssh-host-key {offered}); nothing was \
                     stored"
                ),
            };
        }
        P::KeyFile { .. } => ProbeFailure::KeyRejected,
        P::RemoteFailed { .. } | P::Refused { .. } => ProbeFailure::Unsuitable,
        _ => return Error::Internal(format!("probing the machine: {e}")),
    };
    tracing::warn!(error = %e, "machine {what} refused");
    Error::MachineRefused {
        kind,
        message: format!("{e}; nothing was stored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn stored() -> Machine {
        Machine {
            data_dirs: vec!["/d".into()],
            ..crate::test_fixtures::machine(
                1,
                "127.0.0.2",
                MachineType::Storage,
                "57000-58000",
                vec![],
            )
        }
    }

    #[test]
    fn only_ssh_access_and_data_dirs_need_a_probe() {
        let before = Probed::of(&stored());
        let untouched = MachinePatch {
            rack_id: Some("r".into()),
            port_range: Some("1-2".into()),
            total_mem_mb: Some(1),
            total_cpu_cores: Some(1),
            node_stats: Some(NodeStats::Dead),
            // The stored values again: not a change.
            ssh_port: Some(22),
            ssh_user: Some("root".into()),
            data_dirs: Some(vec!["/d".into()]),
            ssh_key_path: Some("/k".into()),
        };
        assert_eq!(before.with(&untouched), before);
        for p in [
            MachinePatch {
                ssh_port: Some(2222),
                ..Default::default()
            },
            MachinePatch {
                ssh_user: Some("ops".into()),
                ..Default::default()
            },
            MachinePatch {
                ssh_key_path: Some("/k2".into()),
                ..Default::default()
            },
            MachinePatch {
                data_dirs: Some(vec!["/d".into(), "/e".into()]),
                ..Default::default()
            },
        ] {
            let after = before.with(&p);
            assert_ne!(after, before, "{p:?}");
        }
        let after = before.with(&MachinePatch {
            ssh_port: Some(2222),
            data_dirs: Some(vec!["/e".into()]),
            ..Default::default()
        });
        assert_eq!(
            (after.ssh.port, after.ssh.user.as_str(), after.data_dirs),
            (2222, "root", vec!["/e".to_string()])
        );
    }

    #[test]
    fn the_record_keeps_what_the_probe_saw() {
        let facts = MachineFacts {
            cpu_cores: 4,
            mem_mb: 8000,
            os: "debian 12".into(),
            kernel: "Linux 6.1.0".into(),
            dirs: vec![
                probe::DirFacts {
                    path: "/a".into(),
                    free_mb: Some(10),
                    exists: true,
                },
                probe::DirFacts {
                    path: "/b".into(),
                    free_mb: None,
                    exists: false,
                },
            ],
            ..MachineFacts::default()
        };
        let r = probe_record(&facts);
        assert_eq!(
            (r.os.as_str(), r.kernel.as_str()),
            ("debian 12", "Linux 6.1.0")
        );
        assert_eq!(
            r.data_dirs,
            vec![
                ProbedDir {
                    path: "/a".into(),
                    free_mb: Some(10),
                    exists: true
                },
                ProbedDir {
                    path: "/b".into(),
                    free_mb: None,
                    exists: false
                },
            ]
        );
        assert_eq!(free_summary(&r), "/a=10MB /b=0MB");
    }

    #[test]
    fn transport_errors_map_to_stable_codes() {
        use kunlun_provision::Error as P;
        let code = |e: P| match refusal(e, "registration") {
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
        assert_eq!(
            code(P::HostKeyPinMismatch {
                host: host(),
                key_type: "ssh-ed25519".into(),
                offered: "SHA256:x".into(),
                pinned: "SHA256:y".into()
            }),
            "host_key_mismatch"
        );
        assert_eq!(
            code(P::KeyFile {
                path: "/dev/kmsg".into(),
                reason: "regular file".into()
            }),
            "ssh_key_rejected"
        );
        match refusal(
            P::HostKeyUnknown {
                host: host(),
                key_type: "ssh-ed25519".into(),
                offered: "SHA256:abc".into(),
                known_hosts: "/kh".into(),
            },
            "registration",
        ) {
            Error::MachineRefused { kind, message } => {
                assert_eq!(kind.code(), "host_key_unknown");
                assert!(
                    message.contains("ssh_host_key = SHA256:abc")
                        && message.contains("nothing was stored"),
                    "{message}"
                );
            }
            other => panic!("not a refusal: {other}"),
        }
        assert!(matches!(
            refusal(P::Local("disk full".into()), "update"),
            Error::Internal(_)
        ));
    }

    #[test]
    fn a_patch_that_would_orphan_instances_is_refused() {
        let mut m = crate::test_fixtures::machine(
            3,
            "127.0.0.2",
            MachineType::Storage,
            "57000-57100",
            vec![57000],
        );
        m.installing_ports = vec![57096];
        let range = |r: &str| MachinePatch {
            port_range: Some(r.into()),
            ..MachinePatch::default()
        };
        check_no_orphans(&m, &range("57000-57099")).unwrap();
        let e = check_no_orphans(&m, &range("57000-57098")).unwrap_err();
        assert!(
            e.contains("57096") && e.contains("remove them first"),
            "{e}"
        );
        let e = check_no_orphans(&m, &range("57001-57100")).unwrap_err();
        assert!(e.contains("57000"), "{e}");
        let dirs = |d: &[&str]| MachinePatch {
            data_dirs: Some(d.iter().map(|s| s.to_string()).collect()),
            ..MachinePatch::default()
        };
        check_no_orphans(&m, &dirs(&["/data1"])).unwrap();
        assert!(check_no_orphans(&m, &dirs(&["/data1", "/data2"])).is_err());
        m.used_ports.clear();
        m.installing_ports.clear();
        check_no_orphans(&m, &dirs(&["/elsewhere"])).unwrap();
        check_no_orphans(&m, &range("1000-2000")).unwrap();
    }
}
