//! Planning of the scale jobs (`add_shards`, `add_nodes`, `delete_shard`, `delete_node`):
//! from the stored cluster ([`ClusterDetail`]) and a snapshot of the machines, decide every new
//! instance (machine, port, directory, server id) or every instance to remove, up front.
//!
//! Pure (no IO; passwords passed in), so it is unit-tested and the plan goes into the job memo
//! before any host is touched. Invariants: new shard names never collide with the cluster's
//! shards; a plan reuses the cluster's settings (HA mode, buffer pool, max connections) so new
//! instances look like the old ones; the passwords come from `kl_cluster_secret`, never from the
//! memo (plans serialise without them).

use kunlun_meta::api::{AddNodes, AddShards, ClusterDetail, ShardDetail};
use kunlun_meta::model::{Machine, MachineType, ShardNode};
use kunlun_meta::store::repo::secrets::ClusterSecret;
use kunlun_provision::placement::{place_groups, place_in_group, InstanceKind, Slot};

use super::plan::{
    base_dir, provision_error, server_id, ClusterPlan, InstancePlan, ShardPlan, SystemPasswords,
    DEFAULT_INNODB_MB, DEFAULT_MAX_CONNECTIONS,
};
use crate::error::{Error, Result};

/// The stored row of a cluster's system passwords.
pub fn secret_of(cluster_id: i64, p: &SystemPasswords) -> ClusterSecret {
    ClusterSecret {
        cluster_id,
        manager_pwd: p.manager.clone(),
        repl_pwd: p.repl.clone(),
        pgx_pwd: p.pgx.clone(),
        comp_pwd: p.comp.clone(),
    }
}

/// The system passwords of a stored row.
pub fn passwords_of(s: &ClusterSecret) -> SystemPasswords {
    SystemPasswords {
        manager: s.manager_pwd.clone(),
        repl: s.repl_pwd.clone(),
        pgx: s.pgx_pwd.clone(),
        comp: s.comp_pwd.clone(),
    }
}

/// An empty plan carrying the cluster's settings (taken from its existing instances).
fn base_plan(detail: &ClusterDetail, passwords: SystemPasswords) -> ClusterPlan {
    let innodb = detail
        .shards
        .iter()
        .flat_map(|s| s.nodes.iter())
        .map(|n| n.innodb_buffer_pool_mb)
        .find(|&mb| mb > 0)
        .and_then(|mb| u32::try_from(mb).ok())
        .unwrap_or(DEFAULT_INNODB_MB);
    let max_conns = detail
        .comp_nodes
        .iter()
        .map(|c| c.max_conns)
        .find(|&n| n > 0)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    ClusterPlan {
        name: detail.cluster.name.clone(),
        ha_mode: detail.cluster.ha_mode,
        innodb_size_mb: innodb,
        max_connections: max_conns,
        shards: Vec::new(),
        comps: Vec::new(),
        passwords,
    }
}

/// `n` new shard names: `shard_<k>` (the original's naming) numbered on after the highest
/// `shard_<k>` or `shard<k>` (this manager's earlier naming) in use, skipping any name taken.
pub fn next_shard_names(existing: &[String], n: usize) -> Vec<String> {
    let mut k = existing
        .iter()
        .filter_map(|s| {
            let k = s.strip_prefix("shard")?;
            k.strip_prefix('_').unwrap_or(k).parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        k += 1;
        let name = format!("shard_{k}");
        if !existing.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn instance(machines: &[Machine], slot: Slot) -> Result<InstancePlan> {
    Ok(InstancePlan {
        base_dir: base_dir(machines, InstanceKind::Storage, &slot)?,
        server_id: server_id(&slot),
        slot,
    })
}

fn hosts(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

/// Plans `req.shards` new shards of `req.nodes` nodes for the stored cluster `detail`.
pub fn plan_add_shards(
    req: &AddShards,
    detail: &ClusterDetail,
    machines: &[Machine],
    passwords: SystemPasswords,
) -> Result<ClusterPlan> {
    req.validate()?;
    let groups = vec![req.nodes as usize; req.shards as usize];
    let h = hosts(&req.storage_hosts);
    let slots = place_groups(machines, InstanceKind::Storage, &groups, h.as_deref())
        .map_err(provision_error)?;
    let existing: Vec<String> = detail.shards.iter().map(|s| s.shard.name.clone()).collect();
    let names = next_shard_names(&existing, slots.len());
    let mut plan = base_plan(detail, passwords);
    for (name, group) in names.into_iter().zip(slots) {
        let nodes = group
            .into_iter()
            .map(|s| instance(machines, s))
            .collect::<Result<Vec<_>>>()?;
        plan.shards.push(ShardPlan { name, nodes });
    }
    Ok(plan)
}

/// The shard `shard_id` of `detail`, or `NotFound`.
pub fn shard_in(detail: &ClusterDetail, shard_id: i64) -> Result<&ShardDetail> {
    detail
        .shards
        .iter()
        .find(|s| s.shard.id == shard_id)
        .ok_or_else(|| Error::NotFound {
            what: "shard of this cluster",
            id: shard_id.to_string(),
        })
}

/// Plans `req.nodes` new replicas of shard `shard_id`: one shard in the plan, named like the
/// shard, holding only the new nodes (none of them is a primary). Each goes to a machine that
/// holds no node of the shard while one with room exists (within `storage_hosts` if given).
pub fn plan_add_nodes(
    req: &AddNodes,
    detail: &ClusterDetail,
    shard_id: i64,
    machines: &[Machine],
    passwords: SystemPasswords,
) -> Result<ClusterPlan> {
    plan_add_nodes_to_shards(req, detail, &[shard_id], machines, passwords)
}

/// Plans `req.nodes` new replicas of each shard of `shard_ids` (one job adding to several
/// shards, as the original's `add_nodes` without `shard_id`): one [`ShardPlan`] per shard, in
/// the order given, named like the shard, holding only its new nodes. Each shard is placed as
/// [`plan_add_nodes`] places a single one (anti-affinity with that shard's own nodes),
/// against the machines with the ports of the shards placed before it marked taken, so no
/// two new nodes share a (machine, port) and the load spreads over the whole job.
pub fn plan_add_nodes_to_shards(
    req: &AddNodes,
    detail: &ClusterDetail,
    shard_ids: &[i64],
    machines: &[Machine],
    passwords: SystemPasswords,
) -> Result<ClusterPlan> {
    req.validate()?;
    distinct_shards(shard_ids)?;
    if detail.cluster.ha_mode == kunlun_meta::model::HaMode::NoRep {
        return Err(Error::Invalid(format!(
            "cluster {} has ha_mode no_rep: its shards have no replicas",
            detail.cluster.name
        )));
    }
    let mut snapshot = machines.to_vec();
    let mut plan = base_plan(detail, passwords);
    for &shard_id in shard_ids {
        let sp = plan_replicas(req, shard_in(detail, shard_id)?, &snapshot)?;
        for n in &sp.nodes {
            if let Some(m) = snapshot.iter_mut().find(|m| m.id == n.slot.machine_id) {
                m.installing_ports.push(n.slot.port);
            }
        }
        plan.shards.push(sp);
    }
    Ok(plan)
}

/// Refuses (`Invalid`) an empty shard list or one naming a shard twice.
pub fn distinct_shards(shard_ids: &[i64]) -> Result<()> {
    if shard_ids.is_empty() {
        return Err(Error::Invalid("add_nodes names no shard".into()));
    }
    for (i, id) in shard_ids.iter().enumerate() {
        if shard_ids[..i].contains(id) {
            return Err(Error::Invalid(format!(
                "add_nodes names shard {id} more than once"
            )));
        }
    }
    Ok(())
}

/// The new replicas of one shard over `machines`.
fn plan_replicas(req: &AddNodes, shard: &ShardDetail, machines: &[Machine]) -> Result<ShardPlan> {
    if !shard.nodes.iter().any(is_primary) {
        return Err(Error::Conflict(format!(
            "shard {} has no primary to replicate from",
            shard.shard.name
        )));
    }
    let h = hosts(&req.storage_hosts);
    // Anti-affinity with the shard's current nodes: a replica on a machine that already holds
    // one of the shard dies with it.
    let existing: Vec<String> = shard.nodes.iter().map(|n| n.hostaddr.clone()).collect();
    let slots = place_in_group(
        machines,
        InstanceKind::Storage,
        req.nodes as usize,
        h.as_deref(),
        &existing,
    )
    .map_err(provision_error)?;
    let nodes = slots
        .into_iter()
        .map(|s| instance(machines, s))
        .collect::<Result<Vec<_>>>()?;
    Ok(ShardPlan {
        name: shard.shard.name.clone(),
        nodes,
    })
}

fn is_primary(n: &ShardNode) -> bool {
    n.member_state == kunlun_meta::model::MemberState::Source
}

/// `plan` with every storage node as a shard of its own, for installing instances without
/// the primary-first replication set-up of a new shard (new replicas are seeded instead).
pub fn install_view(plan: &ClusterPlan) -> ClusterPlan {
    let shards = plan
        .shards
        .iter()
        .flat_map(|s| {
            s.nodes.iter().map(|n| ShardPlan {
                name: format!("{}:{}", n.slot.hostaddr, n.slot.port),
                nodes: vec![n.clone()],
            })
        })
        .collect();
    ClusterPlan {
        shards,
        ..plan.clone()
    }
}

/// The stored storage node `n` as an instance to remove (server id unknown, not needed).
pub fn stored_instance(n: &ShardNode, machines: &[Machine]) -> Result<InstancePlan> {
    let m = machines
        .iter()
        .find(|m| m.hostaddr == n.hostaddr && m.machine_type == MachineType::Storage)
        .ok_or_else(|| Error::NotFound {
            what: "machine",
            id: format!("{} ({})", n.hostaddr, MachineType::Storage),
        })?;
    let slot = Slot {
        machine_id: m.id,
        hostaddr: n.hostaddr.clone(),
        port: n.port,
    };
    Ok(InstancePlan {
        base_dir: base_dir(machines, InstanceKind::Storage, &slot)?,
        server_id: 0,
        slot,
    })
}

/// A removal plan (passwords unknown) of `nodes` of shard `shard_name` of `detail`'s cluster.
pub fn removal_plan<'a>(
    detail: &ClusterDetail,
    shard_name: &str,
    nodes: impl IntoIterator<Item = &'a ShardNode>,
    machines: &[Machine],
) -> Result<ClusterPlan> {
    let nodes = nodes
        .into_iter()
        .map(|n| stored_instance(n, machines))
        .collect::<Result<Vec<_>>>()?;
    let mut plan = base_plan(detail, SystemPasswords::unknown());
    plan.shards.push(ShardPlan {
        name: shard_name.to_string(),
        nodes,
    });
    Ok(plan)
}

/// Kunlun's `ip_port` spelling in `node_map_master`.
pub fn host_port(host: &str, port: u16) -> String {
    format!("{host}_{port}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::model::{
        Cluster, ClusterStatus, HaMode, MemberState, NodeStatus, OnOff, Shard, SyncState,
    };

    fn machine(id: i64, host: &str, range: &str, used: Vec<u16>) -> Machine {
        crate::test_fixtures::machine(id, host, MachineType::Storage, range, used)
    }

    fn node(id: i64, shard_id: i64, host: &str, port: u16, state: MemberState) -> ShardNode {
        ShardNode {
            id,
            shard_id,
            db_cluster_id: 1,
            hostaddr: host.into(),
            port,
            user_name: "clustmgr".into(),
            passwd: "m".into(),
            master_priority: 0,
            ro_weight: 0,
            status: NodeStatus::Active,
            member_state: state,
            sync_state: SyncState::Fsync,
            replica_delay: 0,
            backup_node: OnOff::Off,
            innodb_buffer_pool_mb: 64,
            when_created: None,
        }
    }

    fn shard(id: i64, name: &str, nodes: Vec<ShardNode>) -> ShardDetail {
        ShardDetail {
            shard: Shard {
                id,
                name: name.into(),
                db_cluster_id: 1,
                num_nodes: nodes.len() as i64,
                space_volumn: 0,
                num_tablets: 0,
                sync_num: 1,
                degrade_conf_state: OnOff::Off,
                degrade_run_state: OnOff::Off,
                degrade_conf_time: 0,
                status: ClusterStatus::Inuse,
                coldbackup_period: None,
                when_created: None,
            },
            nodes,
        }
    }

    fn detail() -> ClusterDetail {
        ClusterDetail {
            cluster: Cluster {
                id: 1,
                name: "c1".into(),
                nick_name: None,
                owner: None,
                ddl_log_tblname: None,
                business: None,
                ha_mode: HaMode::Rbr,
                status: ClusterStatus::Inuse,
                memo: None,
                when_created: None,
            },
            shards: vec![shard(
                10,
                "shard1",
                vec![
                    node(100, 10, "127.0.0.1", 57001, MemberState::Source),
                    node(101, 10, "127.0.0.2", 57001, MemberState::Replica),
                ],
            )],
            comp_nodes: vec![],
        }
    }

    fn machines() -> Vec<Machine> {
        vec![
            machine(1, "127.0.0.1", "57000-58000", vec![57001]),
            machine(2, "127.0.0.2", "57000-58000", vec![57001]),
        ]
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
    fn secrets_round_trip_and_hide_passwords() {
        let s = secret_of(7, &pw());
        assert_eq!(s.cluster_id, 7);
        assert_eq!(passwords_of(&s), pw());
        assert!(!format!("{s:?}").contains("\"r\""));
    }

    #[test]
    fn shard_names_continue_and_never_collide() {
        let ex = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(next_shard_names(&[], 2), vec!["shard_1", "shard_2"]);
        assert_eq!(
            next_shard_names(&ex(&["shard1", "shard_3", "x"]), 2),
            vec!["shard_4", "shard_5"]
        );
        assert_eq!(next_shard_names(&ex(&["shardx"]), 1), vec!["shard_1"]);
    }

    #[test]
    fn add_shards_avoids_used_ports_and_keeps_the_cluster_settings() {
        let req = AddShards {
            shards: 2,
            nodes: 2,
            storage_hosts: vec![],
        };
        let p = plan_add_shards(&req, &detail(), &machines(), pw()).unwrap();
        assert_eq!(p.name, "c1");
        assert_eq!(p.ha_mode, HaMode::Rbr);
        assert_eq!(p.innodb_size_mb, 64);
        assert_eq!(p.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert!(p.comps.is_empty());
        let names: Vec<_> = p.shards.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["shard_2", "shard_3"]);
        for s in &p.shards {
            assert_eq!(s.nodes.len(), 2);
            assert_ne!(s.nodes[0].slot.machine_id, s.nodes[1].slot.machine_id);
        }
        let mut ports = p.ports();
        assert!(ports.iter().all(|&(_, port)| port != 57001), "{ports:?}");
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), n);
        assert_eq!(p.passwords, pw());
    }

    #[test]
    fn add_nodes_plans_replicas_of_the_shard() {
        let req = AddNodes {
            nodes: 1,
            storage_hosts: vec!["127.0.0.2".into()],
        };
        let p = plan_add_nodes(&req, &detail(), 10, &machines(), pw()).unwrap();
        assert_eq!(p.shards.len(), 1);
        assert_eq!(p.shards[0].name, "shard1");
        let n = &p.shards[0].nodes[0];
        assert_eq!(n.slot.hostaddr, "127.0.0.2");
        assert_ne!(n.slot.port, 57001);
        assert_eq!(n.server_id, server_id(&n.slot));
        let v = install_view(&p);
        assert_eq!(v.shards.len(), 1);
        assert_eq!(v.shards[0].nodes.len(), 1);
    }

    #[test]
    fn add_nodes_prefers_a_machine_without_a_node_of_the_shard() {
        // The shard is on .1 and .2; .3 is busier (other clusters) but holds none of it.
        let mut ms = machines();
        ms.push(machine(
            3,
            "127.0.0.3",
            "57000-58000",
            vec![57001, 57005, 57009],
        ));
        let req = AddNodes {
            nodes: 1,
            storage_hosts: vec![],
        };
        let p = plan_add_nodes(&req, &detail(), 10, &ms, pw()).unwrap();
        let n = &p.shards[0].nodes[0];
        assert_eq!(
            (n.slot.hostaddr.as_str(), n.slot.port),
            ("127.0.0.3", 57013)
        );
        // Without such a machine the new replica shares one (the least loaded) with the shard.
        let p = plan_add_nodes(&req, &detail(), 10, &machines(), pw()).unwrap();
        assert_eq!(p.shards[0].nodes[0].slot.hostaddr, "127.0.0.1");
        // An explicit list is obeyed even when it names only machines of the shard.
        let named = AddNodes {
            nodes: 1,
            storage_hosts: vec!["127.0.0.2".into()],
        };
        let p = plan_add_nodes(&named, &detail(), 10, &ms, pw()).unwrap();
        assert_eq!(p.shards[0].nodes[0].slot.hostaddr, "127.0.0.2");
    }

    /// [`detail`] plus shard 20 (`shard2`) on .2 (primary) and .3.
    fn two_shards() -> (ClusterDetail, Vec<Machine>) {
        let mut d = detail();
        d.shards.push(shard(
            20,
            "shard2",
            vec![
                node(200, 20, "127.0.0.2", 57005, MemberState::Source),
                node(201, 20, "127.0.0.3", 57001, MemberState::Replica),
            ],
        ));
        let ms = vec![
            machine(1, "127.0.0.1", "57000-58000", vec![57001]),
            machine(2, "127.0.0.2", "57000-58000", vec![57001, 57005]),
            machine(3, "127.0.0.3", "57000-58000", vec![57001]),
        ];
        (d, ms)
    }

    #[test]
    fn add_nodes_to_several_shards_plans_one_shard_each_without_sharing_a_port() {
        let (d, ms) = two_shards();
        let req = AddNodes {
            nodes: 2,
            storage_hosts: vec![],
        };
        let p = plan_add_nodes_to_shards(&req, &d, &[20, 10], &ms, pw()).unwrap();
        let names: Vec<_> = p.shards.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["shard2", "shard1"],
            "one plan shard per target, in order"
        );
        assert!(p.shards.iter().all(|s| s.nodes.len() == 2));
        assert_eq!(p.ports().len(), 4);
        let mut ports = p.ports();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 4, "no (machine, port) twice: {:?}", p.ports());
        for (id, port) in p.ports() {
            let m = ms.iter().find(|m| m.id == id).unwrap();
            assert!(!m.used_ports.contains(&port), "{id}:{port} is in use");
        }
        // Each shard's first new node avoids that shard's own machines: shard2 is on .2/.3,
        // shard1 on .1/.2.
        assert_eq!(p.shards[0].nodes[0].slot.hostaddr, "127.0.0.1");
        assert_eq!(p.shards[1].nodes[0].slot.hostaddr, "127.0.0.3");
        let v = install_view(&p);
        assert_eq!(v.shards.len(), 4);
        assert_eq!(v.ports(), p.ports());
    }

    #[test]
    fn add_nodes_to_several_shards_on_one_machine_takes_distinct_ports() {
        // A single machine (the test sshd's case): the shards' new nodes still never collide.
        let (mut d, _) = two_shards();
        for s in &mut d.shards {
            for n in &mut s.nodes {
                n.hostaddr = "127.0.0.1".into();
            }
        }
        d.shards[1].nodes[0].port = 57005;
        d.shards[1].nodes[1].port = 57009;
        d.shards[0].nodes[1].port = 57013;
        let ms = vec![machine(
            1,
            "127.0.0.1",
            "57000-58000",
            vec![57001, 57005, 57009, 57013],
        )];
        let one = AddNodes {
            nodes: 1,
            storage_hosts: vec![],
        };
        let p = plan_add_nodes_to_shards(&one, &d, &[10, 20], &ms, pw()).unwrap();
        let got: Vec<u16> = p.ports().iter().map(|&(_, port)| port).collect();
        assert_eq!(got, [57017, 57021]);
        // A single shard plans as plan_add_nodes does.
        let single = plan_add_nodes_to_shards(&one, &d, &[20], &ms, pw()).unwrap();
        assert_eq!(single, plan_add_nodes(&one, &d, 20, &ms, pw()).unwrap());
    }

    #[test]
    fn add_nodes_to_several_shards_refuses_bad_lists() {
        let (d, ms) = two_shards();
        let one = AddNodes {
            nodes: 1,
            storage_hosts: vec![],
        };
        for bad in [&[][..], &[10, 20, 10][..]] {
            let e = plan_add_nodes_to_shards(&one, &d, bad, &ms, pw()).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e}");
        }
        let e = plan_add_nodes_to_shards(&one, &d, &[10, 99], &ms, pw()).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        // Room for one more storage node in all: the second shard finds none left.
        let small = vec![
            machine(1, "127.0.0.1", "57000-57008", vec![57001]),
            machine(2, "127.0.0.2", "57000-57008", vec![57001, 57005]),
            machine(3, "127.0.0.3", "57000-57004", vec![57001]),
        ];
        let e = plan_add_nodes_to_shards(&one, &d, &[10, 20], &small, pw()).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert!(plan_add_nodes_to_shards(&one, &d, &[10], &small, pw()).is_ok());
    }

    #[test]
    fn install_view_makes_every_node_its_own_shard() {
        let req = AddNodes {
            nodes: 3,
            storage_hosts: vec![],
        };
        let p = plan_add_nodes(&req, &detail(), 10, &machines(), pw()).unwrap();
        let v = install_view(&p);
        assert_eq!(v.shards.len(), 3);
        assert!(v.shards.iter().all(|s| s.nodes.len() == 1));
        assert_eq!(v.ports(), p.ports());
    }

    #[test]
    fn bad_scale_input_is_refused() {
        let d = detail();
        let ms = machines();
        let zero = AddNodes {
            nodes: 0,
            storage_hosts: vec![],
        };
        assert!(matches!(
            plan_add_nodes(&zero, &d, 10, &ms, pw()),
            Err(Error::Invalid(_))
        ));
        let one = AddNodes {
            nodes: 1,
            storage_hosts: vec![],
        };
        assert!(matches!(
            plan_add_nodes(&one, &d, 99, &ms, pw()),
            Err(Error::NotFound { .. })
        ));
        let unknown = AddNodes {
            nodes: 1,
            storage_hosts: vec!["127.0.0.9".into()],
        };
        let e = plan_add_nodes(&unknown, &d, 10, &ms, pw()).unwrap_err();
        assert!(e.to_string().contains("127.0.0.9"), "{e}");
        // Each machine has room for 3 more storage nodes (ports 57005.., step 4, up to 57016).
        let small = vec![
            machine(1, "127.0.0.1", "57000-57016", vec![57001]),
            machine(2, "127.0.0.2", "57000-57016", vec![57001]),
        ];
        let many = AddNodes {
            nodes: 7,
            storage_hosts: vec![],
        };
        let e = plan_add_nodes(&many, &d, 10, &small, pw()).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        assert!(e.to_string().contains("no capacity"), "{e}");
        let shards = AddShards {
            shards: 0,
            nodes: 1,
            storage_hosts: vec![],
        };
        assert!(matches!(
            plan_add_shards(&shards, &d, &ms, pw()),
            Err(Error::Invalid(_))
        ));
        let mut no_rep = d.clone();
        no_rep.cluster.ha_mode = HaMode::NoRep;
        assert!(matches!(
            plan_add_nodes(&one, &no_rep, 10, &ms, pw()),
            Err(Error::Invalid(_))
        ));
        let mut no_primary = d.clone();
        no_primary.shards[0].nodes.remove(0);
        let e = plan_add_nodes(&one, &no_primary, 10, &ms, pw()).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
    }

    #[test]
    fn removal_plans_find_the_stored_instances() {
        let d = detail();
        let p = removal_plan(&d, "shard1", d.shards[0].nodes.iter(), &machines()).unwrap();
        assert_eq!(p.shards[0].nodes.len(), 2);
        assert!(p.shards[0].nodes[1]
            .base_dir
            .ends_with("kunlun/storage_57001"));
        let mut stray = d.shards[0].nodes[0].clone();
        stray.hostaddr = "10.9.9.9".into();
        assert!(matches!(
            removal_plan(&d, "shard1", [&stray], &machines()),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(host_port("h", 1), "h_1");
    }
}
