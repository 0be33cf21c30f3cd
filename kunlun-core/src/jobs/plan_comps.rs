//! Planning of `add_comps` and `delete_comp`: which compute nodes to install (machine, port,
//! directory) or remove, as a [`ClusterPlan`] without shards, so the installer and the
//! teardown of `create_cluster` carry it out unchanged.
//!
//! Pure (no IO; the password is passed in): a plan is computed once from a snapshot of the
//! machines and stored (without the password) in the job memo before any host is touched.

use kunlun_meta::api::{AddComps, ClusterDetail};
use kunlun_meta::model::{Cluster, CompNode, Machine};
use kunlun_provision::placement::{place, InstanceKind};

use super::plan::{
    base_dir, plan_from_rows, provision_error, server_id, ClusterPlan, InstancePlan,
    SystemPasswords, DEFAULT_MAX_CONNECTIONS,
};
use crate::error::Result;

/// The password new compute nodes of a cluster get for the owner role: the cluster's stored
/// secret if there is one, else the one its existing compute nodes have (all of a cluster's
/// compute nodes share it), else `None` (no compute node left: a fresh one may be chosen).
pub fn comp_password(secret: Option<&str>, existing: &[CompNode]) -> Option<String> {
    secret
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| {
            existing
                .iter()
                .map(|c| c.passwd.as_str())
                .find(|p| !p.is_empty())
                .map(str::to_string)
        })
}

/// Plans `req.comps` new compute nodes of `cluster` over `machines` (least-loaded first,
/// optionally only `req.computer_hosts`), with `max_connections` of the cluster's existing
/// compute nodes. `Invalid` for bad input or an unknown host, `Conflict` when the machines
/// have no room.
pub fn plan_add_comps(
    req: &AddComps,
    cluster: &Cluster,
    existing: &[CompNode],
    machines: &[Machine],
    comp_password: String,
) -> Result<ClusterPlan> {
    req.validate()?;
    let hosts = (!req.computer_hosts.is_empty()).then_some(req.computer_hosts.as_slice());
    let slots = place(machines, InstanceKind::Compute, req.comps as usize, hosts)
        .map_err(provision_error)?;
    let comps = slots
        .into_iter()
        .map(|slot| {
            Ok(InstancePlan {
                base_dir: base_dir(machines, InstanceKind::Compute, &slot)?,
                server_id: server_id(&slot),
                slot,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let max_connections = existing
        .iter()
        .filter_map(|c| u32::try_from(c.max_conns).ok())
        .find(|&m| m > 0)
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    Ok(ClusterPlan {
        name: cluster.name.clone(),
        ha_mode: cluster.ha_mode,
        innodb_size_mb: 0,
        max_connections,
        shards: Vec::new(),
        comps,
        passwords: SystemPasswords {
            comp: comp_password,
            ..SystemPasswords::unknown()
        },
    })
}

/// The one compute node `comp` of `cluster` as a plan to remove (its machine found by host
/// address among the compute machines); `NotFound` when no such machine is registered.
pub fn plan_delete_comp(
    cluster: &Cluster,
    comp: &CompNode,
    machines: &[Machine],
) -> Result<ClusterPlan> {
    let detail = ClusterDetail {
        cluster: cluster.clone(),
        shards: Vec::new(),
        comp_nodes: vec![comp.clone()],
    };
    plan_from_rows(&detail, machines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use kunlun_meta::model::{ClusterStatus, HaMode, MachineType, NodeStatus};

    fn machine(id: i64, host: &str, ty: MachineType, range: &str, used: Vec<u16>) -> Machine {
        crate::test_fixtures::machine(id, host, ty, range, used)
    }

    fn cluster() -> Cluster {
        Cluster {
            id: 7,
            name: "c7".into(),
            nick_name: None,
            owner: None,
            ddl_log_tblname: None,
            business: None,
            ha_mode: HaMode::Rbr,
            status: ClusterStatus::Inuse,
            memo: None,
            when_created: None,
        }
    }

    fn comp(id: i64, host: &str, port: u16, passwd: &str) -> CompNode {
        CompNode {
            id,
            db_cluster_id: 7,
            name: format!("comp{id}"),
            hostaddr: host.into(),
            port,
            user_name: "abc".into(),
            passwd: passwd.into(),
            status: NodeStatus::Active,
            max_conns: 300,
            when_created: None,
        }
    }

    fn req(n: u32, hosts: &[&str]) -> AddComps {
        AddComps {
            comps: n,
            computer_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    fn machines() -> Vec<Machine> {
        vec![
            machine(1, "127.0.0.2", MachineType::Storage, "57000-58000", vec![]),
            machine(
                2,
                "127.0.0.2",
                MachineType::Computer,
                "47000-47100",
                vec![47001],
            ),
            machine(3, "127.0.0.3", MachineType::Computer, "47000-47100", vec![]),
        ]
    }

    #[test]
    fn new_compute_nodes_avoid_used_ports_and_spread_over_machines() {
        let existing = [comp(1, "127.0.0.2", 47001, "pw")];
        let p = plan_add_comps(
            &req(2, &[]),
            &cluster(),
            &existing,
            &machines(),
            "pw".into(),
        )
        .unwrap();
        assert!(p.shards.is_empty());
        assert_eq!(p.comps.len(), 2);
        let mut hosts: Vec<_> = p.comps.iter().map(|c| c.slot.machine_id).collect();
        hosts.sort_unstable();
        assert_eq!(hosts, vec![2, 3], "one per compute machine");
        for c in &p.comps {
            assert_ne!((c.slot.machine_id, c.slot.port), (2, 47001), "used port");
            assert!(c
                .base_dir
                .ends_with(&format!("kunlun/compute_{}", c.slot.port)));
        }
        assert_eq!(p.max_connections, 300, "same as the existing compute nodes");
        assert_eq!(p.passwords.comp, "pw");
        assert_eq!(p.name, "c7");
        assert!(
            !serde_json::to_string(&p).unwrap().contains("pw\""),
            "no password"
        );
    }

    #[test]
    fn host_list_restricts_and_bad_input_is_refused() {
        let ms = machines();
        let p = plan_add_comps(&req(2, &["127.0.0.3"]), &cluster(), &[], &ms, "x".into()).unwrap();
        assert!(p.comps.iter().all(|c| c.slot.machine_id == 3));
        assert_eq!(p.max_connections, DEFAULT_MAX_CONNECTIONS);

        let err = plan_add_comps(&req(0, &[]), &cluster(), &[], &ms, "x".into()).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");

        let err =
            plan_add_comps(&req(1, &["127.0.0.9"]), &cluster(), &[], &ms, "x".into()).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert!(err.to_string().contains("127.0.0.9"), "{err}");

        // A storage-only host is not a compute machine.
        let only_storage = vec![ms[0].clone()];
        assert!(plan_add_comps(&req(1, &[]), &cluster(), &[], &only_storage, "x".into()).is_err());

        // Room for 3 compute nodes (ports 47001..47009, 3 ports each) on one machine only.
        let small = vec![machine(
            2,
            "h",
            MachineType::Computer,
            "47000-47009",
            vec![],
        )];
        let err = plan_add_comps(&req(4, &[]), &cluster(), &[], &small, "x".into()).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
    }

    #[test]
    fn the_password_comes_from_the_secret_else_an_existing_compute_node() {
        let existing = [comp(1, "h", 1, ""), comp(2, "h", 2, "old")];
        assert_eq!(comp_password(Some("s"), &existing).as_deref(), Some("s"));
        assert_eq!(comp_password(Some(""), &existing).as_deref(), Some("old"));
        assert_eq!(comp_password(None, &existing).as_deref(), Some("old"));
        assert_eq!(comp_password(None, &[]), None);
    }

    #[test]
    fn a_compute_node_to_delete_maps_to_its_machine_and_dir() {
        let ms = machines();
        let p = plan_delete_comp(&cluster(), &comp(4, "127.0.0.3", 47004, "pw"), &ms).unwrap();
        assert_eq!(p.comps.len(), 1);
        assert_eq!(p.comps[0].slot.machine_id, 3);
        assert_eq!(p.comps[0].base_dir, "/data1/kunlun/compute_47004");
        assert_eq!(
            crate::jobs::common::ports_by_machine(&p).get(&3),
            Some(&vec![47004])
        );
        let err = plan_delete_comp(&cluster(), &comp(4, "10.9.9.9", 1, ""), &ms).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
    }
}
