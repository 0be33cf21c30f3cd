//! Planning of `create_cluster`: from a validated request and a snapshot of the machines,
//! decide every shard, node, compute node, port, directory and server id up front.
//!
//! Pure (no IO, passwords passed in), so the plan can be unit-tested and stored in the job's
//! memo before any host is touched; a resumed job replays the stored plan instead of planning
//! again, so a restart never moves an instance that is already half installed. Also the
//! removal plan of a stored cluster ([`plan_from_rows`]) and the helpers the other planners
//! share (server ids, placement errors).

use kunlun_meta::api::{ClusterDetail, CreateCluster};
use kunlun_meta::model::{HaMode, Machine, MachineType};
use kunlun_provision::placement::{place, place_groups, InstanceKind, Slot};
use kunlun_provision::recipe::InstanceSpec;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default InnoDB buffer pool per storage node, MB.
pub const DEFAULT_INNODB_MB: u32 = 128;
/// Default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1000;
/// Shared buffers of a compute node, MB.
pub const COMPUTE_BUFFER_MB: u32 = 64;

/// The random per-cluster passwords of the system users. `Debug` hides them; they are stored
/// in the job memo and the node rows, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SystemPasswords {
    /// `clustmgr` on storage nodes: what the manager logs in as.
    pub manager: String,
    /// `repl` on storage nodes: replication.
    pub repl: String,
    /// `pgx` on storage nodes: what compute nodes log in as.
    pub pgx: String,
    /// `abc` on compute nodes: the cluster's owner role.
    pub comp: String,
}

impl std::fmt::Debug for SystemPasswords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemPasswords(<redacted>)")
    }
}

impl SystemPasswords {
    /// Placeholder for a plan read back from a memo (only good for uninstalling).
    pub fn unknown() -> SystemPasswords {
        SystemPasswords {
            manager: String::new(),
            repl: String::new(),
            pgx: String::new(),
            comp: String::new(),
        }
    }

    /// Fresh random passwords.
    pub fn generate() -> SystemPasswords {
        use kunlun_provision::recipe::random_password as r;
        SystemPasswords {
            manager: r(),
            repl: r(),
            pgx: r(),
            comp: r(),
        }
    }
}

/// One instance to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancePlan {
    pub slot: Slot,
    /// The instance directory (`<data_dir>/kunlun/<kind>_<port>`).
    pub base_dir: String,
    pub server_id: u32,
}

/// One shard: its name and nodes; `nodes[0]` is the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub name: String,
    pub nodes: Vec<InstancePlan>,
}

/// Everything `create_cluster` will install and record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPlan {
    pub name: String,
    pub ha_mode: HaMode,
    pub innodb_size_mb: u32,
    pub max_connections: u32,
    pub shards: Vec<ShardPlan>,
    pub comps: Vec<InstancePlan>,
    /// Never serialised: a plan goes into the job memo, which list endpoints show.
    #[serde(skip, default = "SystemPasswords::unknown")]
    pub passwords: SystemPasswords,
}

impl ClusterPlan {
    /// Every (machine id, base port) the plan reserves.
    pub fn ports(&self) -> Vec<(i64, u16)> {
        self.shards
            .iter()
            .flat_map(|s| s.nodes.iter())
            .chain(self.comps.iter())
            .map(|i| (i.slot.machine_id, i.slot.port))
            .collect()
    }
}

pub(crate) fn provision_error(e: kunlun_provision::Error) -> Error {
    match e {
        kunlun_provision::Error::Invalid(m) => Error::Invalid(m),
        kunlun_provision::Error::NoCapacity(m) => Error::Conflict(format!("no capacity: {m}")),
        kunlun_provision::Error::Conflict(m) => Error::Conflict(m),
        other => Error::Internal(other.to_string()),
    }
}

/// The instance directory of `slot`: the machine's data dirs are used in turn by port.
pub(crate) fn base_dir(machines: &[Machine], kind: InstanceKind, slot: &Slot) -> Result<String> {
    let m = machines
        .iter()
        .find(|m| m.id == slot.machine_id)
        .ok_or_else(|| Error::Internal(format!("placed on unknown machine {}", slot.machine_id)))?;
    if m.data_dirs.is_empty() {
        return Err(Error::Invalid(format!(
            "machine {} has no data dir",
            m.hostaddr
        )));
    }
    let dir = &m.data_dirs[usize::from(slot.port) % m.data_dirs.len()];
    Ok(InstanceSpec::base_dir_for(dir, kind, slot.port))
}

/// A server id unique per (machine, port) for machine ids below 65536.
pub(crate) fn server_id(slot: &Slot) -> u32 {
    ((slot.machine_id as u32 & 0xffff) << 16) | u32::from(slot.port)
}

/// The instances of a stored cluster as a plan (passwords unknown: only good for removal).
pub fn plan_from_rows(detail: &ClusterDetail, machines: &[Machine]) -> Result<ClusterPlan> {
    let slot = |host: &str, port: u16, ty: MachineType| -> Result<Slot> {
        let m = machines
            .iter()
            .find(|m| m.hostaddr == host && m.machine_type == ty)
            .ok_or_else(|| Error::NotFound {
                what: "machine",
                id: format!("{host} ({ty})"),
            })?;
        Ok(Slot {
            machine_id: m.id,
            hostaddr: host.to_string(),
            port,
        })
    };
    let inst = |s: Slot, kind: InstanceKind| -> Result<InstancePlan> {
        Ok(InstancePlan {
            base_dir: base_dir(machines, kind, &s)?,
            server_id: 0,
            slot: s,
        })
    };
    let mut shards = Vec::new();
    for sd in &detail.shards {
        let mut nodes = Vec::new();
        for n in &sd.nodes {
            nodes.push(inst(
                slot(&n.hostaddr, n.port, MachineType::Storage)?,
                InstanceKind::Storage,
            )?);
        }
        shards.push(ShardPlan {
            name: sd.shard.name.clone(),
            nodes,
        });
    }
    let mut comps = Vec::new();
    for c in &detail.comp_nodes {
        comps.push(inst(
            slot(&c.hostaddr, c.port, MachineType::Computer)?,
            InstanceKind::Compute,
        )?);
    }
    Ok(ClusterPlan {
        name: detail.cluster.name.clone(),
        ha_mode: detail.cluster.ha_mode,
        innodb_size_mb: 0,
        max_connections: 0,
        shards,
        comps,
        passwords: SystemPasswords::unknown(),
    })
}

/// Plans a new cluster. `existing` are the names of the clusters already stored.
pub fn plan_create_cluster(
    req: &CreateCluster,
    machines: &[Machine],
    existing: &[String],
    passwords: SystemPasswords,
) -> Result<ClusterPlan> {
    req.validate()?;
    if existing.iter().any(|n| n == &req.name) {
        return Err(Error::Conflict(format!(
            "cluster {} already exists",
            req.name
        )));
    }
    let hosts = |h: &[String]| (!h.is_empty()).then(|| h.to_vec());
    let storage_hosts = hosts(&req.storage_hosts);
    let groups = vec![req.nodes as usize; req.shards as usize];
    let shard_slots = place_groups(
        machines,
        InstanceKind::Storage,
        &groups,
        storage_hosts.as_deref(),
    )
    .map_err(provision_error)?;
    let computer_hosts = hosts(&req.computer_hosts);
    let comp_slots = place(
        machines,
        InstanceKind::Compute,
        req.comps as usize,
        computer_hosts.as_deref(),
    )
    .map_err(provision_error)?;

    let instance = |kind, slot: Slot| -> Result<InstancePlan> {
        Ok(InstancePlan {
            base_dir: base_dir(machines, kind, &slot)?,
            server_id: server_id(&slot),
            slot,
        })
    };
    let mut shards = Vec::with_capacity(shard_slots.len());
    for (i, slots) in shard_slots.into_iter().enumerate() {
        let nodes = slots
            .into_iter()
            .map(|s| instance(InstanceKind::Storage, s))
            .collect::<Result<Vec<_>>>()?;
        shards.push(ShardPlan {
            name: format!("shard_{}", i + 1),
            nodes,
        });
    }
    let comps = comp_slots
        .into_iter()
        .map(|s| instance(InstanceKind::Compute, s))
        .collect::<Result<Vec<_>>>()?;
    Ok(ClusterPlan {
        name: req.name.clone(),
        ha_mode: req.ha_mode,
        innodb_size_mb: req.innodb_size_mb.unwrap_or(DEFAULT_INNODB_MB),
        max_connections: req.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        shards,
        comps,
        passwords,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::model::MachineType;

    fn machine(id: i64, host: &str, ty: MachineType, range: &str) -> Machine {
        Machine {
            data_dirs: vec!["/data1".into(), "/data2".into()],
            ..crate::test_fixtures::machine(id, host, ty, range, vec![])
        }
    }

    fn machines() -> Vec<Machine> {
        vec![
            machine(1, "127.0.0.1", MachineType::Storage, "57000-58000"),
            machine(2, "127.0.0.2", MachineType::Storage, "57000-58000"),
            machine(3, "127.0.0.1", MachineType::Computer, "47000-48000"),
        ]
    }

    fn req() -> CreateCluster {
        CreateCluster {
            name: "c1".into(),
            nick_name: None,
            ha_mode: HaMode::Rbr,
            shards: 2,
            nodes: 3,
            comps: 2,
            innodb_size_mb: Some(64),
            max_connections: None,
            storage_hosts: vec![],
            computer_hosts: vec![],
        }
    }

    fn pw() -> SystemPasswords {
        SystemPasswords {
            manager: "m".into(),
            repl: "r".into(),
            pgx: "p".into(),
            comp: "c".into(),
        }
    }

    #[test]
    fn plans_two_shards_of_three_and_two_compute_nodes() {
        let p = plan_create_cluster(&req(), &machines(), &[], pw()).unwrap();
        assert_eq!(p.shards.len(), 2);
        assert!(p.shards.iter().all(|s| s.nodes.len() == 3));
        assert_eq!(p.shards[0].name, "shard_1");
        assert_eq!(p.comps.len(), 2);
        assert!(p.comps.iter().all(|c| c.slot.machine_id == 3));
        assert_eq!(p.innodb_size_mb, 64);
        assert_eq!(p.max_connections, DEFAULT_MAX_CONNECTIONS);
        let mut ports = p.ports();
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), n, "no two instances share a machine and port");
        let mut ids: Vec<u32> = p
            .shards
            .iter()
            .flat_map(|s| s.nodes.iter().map(|n| n.server_id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 6, "server ids are unique");
        let first = &p.shards[0].nodes[0];
        assert!(first
            .base_dir
            .ends_with(&format!("kunlun/storage_{}", first.slot.port)));
        assert!(first.base_dir.starts_with("/data"));
        assert!(!format!("{p:?}").contains("\"m\""), "Debug hides passwords");
    }

    #[test]
    fn bad_input_is_refused() {
        let ms = machines();
        let mut r = req();
        r.shards = 0;
        assert!(matches!(
            plan_create_cluster(&r, &ms, &[], pw()),
            Err(Error::Invalid(_))
        ));

        let err = plan_create_cluster(&req(), &ms, &["c1".into()], pw()).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "duplicate name: {err}");

        let mut r = req();
        r.storage_hosts = vec!["127.0.0.9".into()];
        let err = plan_create_cluster(&r, &ms, &[], pw()).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "unknown host: {err}");
        assert!(err.to_string().contains("127.0.0.9"));

        // Room for 2 storage nodes per machine only.
        let small = vec![
            machine(1, "a", MachineType::Storage, "100-108"),
            machine(3, "c", MachineType::Computer, "47000-48000"),
        ];
        let err = plan_create_cluster(&req(), &small, &[], pw()).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "too many nodes: {err}");
        assert!(err.to_string().contains("room for only 2"), "{err}");

        let no_comp = vec![machine(1, "a", MachineType::Storage, "57000-58000")];
        assert!(plan_create_cluster(&req(), &no_comp, &[], pw()).is_err());
    }
}
