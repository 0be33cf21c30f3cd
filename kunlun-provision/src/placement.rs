//! Placement and port allocation: which machine and which base port each new instance gets.
//!
//! Pure functions over [`Machine`] snapshots, no IO, so the engine can plan a whole job up
//! front (and record the plan in the job memo) before touching any host.
//!
//! Invariants of every plan returned:
//! - only `running` machines of the instance's type are used; an explicit host list must name
//!   registered machines of that type, else the whole plan is refused;
//! - every port block (`port .. port + step`) lies inside the machine's `port_range` and
//!   overlaps neither a used nor an installing block, nor another block of the same plan;
//! - the nodes of one group (a shard, counting its existing nodes when replicas are added) go
//!   to distinct machines while any are left with room, and only then share one (the one
//!   holding the fewest of the group); within that, machines are filled least-loaded first
//!   (fewest instances, then lowest id). An explicit host list restricts the candidates; the
//!   spread is chosen among them.

use std::collections::BTreeSet;

use kunlun_meta::model::{Machine, MachineType, NodeStats};

use crate::error::{Error, Result};

/// What kind of instance is being placed; decides the machine type and the port block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceKind {
    /// A storage node: `port` (MySQL), `port+1` exporter, `port+2` group port, `port+3` X port.
    Storage,
    /// A compute node: `port` (PostgreSQL), `port+1` MySQL protocol, `port+2` exporter.
    Compute,
}

impl InstanceKind {
    /// Ports one instance occupies, starting at its base port (Kunlun: 4 for SN, 3 for CN).
    pub fn port_step(self) -> u16 {
        match self {
            InstanceKind::Storage => 4,
            InstanceKind::Compute => 3,
        }
    }

    /// The machine type that hosts this kind.
    pub fn machine_type(self) -> MachineType {
        match self {
            InstanceKind::Storage => MachineType::Storage,
            InstanceKind::Compute => MachineType::Computer,
        }
    }
}

/// Where one instance goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Slot {
    pub machine_id: i64,
    pub hostaddr: String,
    /// Base port of the instance's block.
    pub port: u16,
}

/// Parses a machine's `port_range` (`"57000-58000"`, inclusive) into `(start, end)`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let bad = || {
        Error::Invalid(format!(
            "port_range {s:?} is not START-END with START < END"
        ))
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start: u16 = a.trim().parse().map_err(|_| bad())?;
    let end: u16 = b.trim().parse().map_err(|_| bad())?;
    if start == 0 || start >= end {
        return Err(bad());
    }
    Ok((start, end))
}

/// A machine's free capacity while a plan is being built.
#[derive(Debug, Clone)]
struct Host {
    machine_id: i64,
    hostaddr: String,
    range: (u16, u16),
    /// Base ports taken: used, installing, and those handed out by this plan.
    taken: BTreeSet<u16>,
    instances: usize,
}

impl Host {
    /// The lowest free base port whose whole block fits the range and overlaps no taken block
    /// (a taken base is assumed to hold a block of the same size; same machine, same kind).
    /// Kunlun starts at `range start + 1`.
    fn next_port(&self, step: u16) -> Option<u16> {
        let (start, end) = self.range;
        let mut p = u32::from(start) + 1;
        let step32 = u32::from(step);
        while p + step32 - 1 <= u32::from(end) {
            let lo = p.saturating_sub(step32 - 1);
            let clash = self
                .taken
                .range(
                    u16::try_from(lo).unwrap_or(u16::MAX)
                        ..=u16::try_from(p + step32 - 1).unwrap_or(u16::MAX),
                )
                .next();
            match clash {
                // Jump past the clashing block.
                Some(&t) => p = u32::from(t) + step32,
                None => return u16::try_from(p).ok(),
            }
        }
        None
    }
}

/// Plans `group_sizes.len()` groups (shards; or one group per compute node) of instances of
/// `kind` over `machines`. `hosts`, when given and non-empty, restricts the candidates to
/// those host addresses, each of which must be a registered machine of the right type.
///
/// Returns one `Vec<Slot>` per group, in order; the first slot of a shard is its primary.
pub fn place_groups(
    machines: &[Machine],
    kind: InstanceKind,
    group_sizes: &[usize],
    hosts: Option<&[String]>,
) -> Result<Vec<Vec<Slot>>> {
    let held = vec![Vec::new(); group_sizes.len()];
    plan_groups(machines, kind, group_sizes, hosts, &held)
}

/// Plans `count` more instances of one existing group (new replicas of a shard) whose
/// instances already run on `existing_hosts` (one entry per instance). Anti-affinity: a new
/// instance goes to a machine holding none of the group while one with room is left (among
/// `hosts` when given: an explicit list is obeyed, the spread is only chosen inside it), and
/// falls back to the machine holding the fewest of the group only when none is.
pub fn place_in_group(
    machines: &[Machine],
    kind: InstanceKind,
    count: usize,
    hosts: Option<&[String]>,
    existing_hosts: &[String],
) -> Result<Vec<Slot>> {
    if count == 0 {
        return Err(Error::Invalid("nothing to place: count is 0".into()));
    }
    let wanted_type = kind.machine_type();
    let held: Vec<i64> = existing_hosts
        .iter()
        .filter_map(|h| {
            machines
                .iter()
                .find(|m| &m.hostaddr == h && m.machine_type == wanted_type)
                .map(|m| m.id)
        })
        .collect();
    let groups = plan_groups(machines, kind, &[count], hosts, &[held])?;
    Ok(groups.into_iter().flatten().collect())
}

/// [`place_groups`] where group `i` already has instances on the machines `held[i]` (ids, one
/// per instance), which count against putting another of the group there.
fn plan_groups(
    machines: &[Machine],
    kind: InstanceKind,
    group_sizes: &[usize],
    hosts: Option<&[String]>,
    held: &[Vec<i64>],
) -> Result<Vec<Vec<Slot>>> {
    if group_sizes.is_empty() {
        return Err(Error::Invalid("nothing to place: no groups".into()));
    }
    if group_sizes.contains(&0) {
        return Err(Error::Invalid("a group needs at least one instance".into()));
    }
    let wanted_type = kind.machine_type();
    let step = kind.port_step();

    let mut candidates: Vec<&Machine> = match hosts {
        Some(list) if !list.is_empty() => {
            let mut picked = Vec::new();
            for h in list {
                let m = machines
                    .iter()
                    .find(|m| &m.hostaddr == h && m.machine_type == wanted_type)
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "host {h} is not a registered {wanted_type} machine"
                        ))
                    })?;
                if m.node_stats != NodeStats::Running {
                    return Err(Error::Invalid(format!(
                        "host {h} is {} and cannot take new instances",
                        m.node_stats
                    )));
                }
                if !picked.iter().any(|p: &&Machine| p.id == m.id) {
                    picked.push(m);
                }
            }
            picked
        }
        _ => machines
            .iter()
            .filter(|m| m.machine_type == wanted_type && m.node_stats == NodeStats::Running)
            .collect(),
    };
    candidates.sort_by_key(|m| m.id);
    if candidates.is_empty() {
        let down = machines
            .iter()
            .filter(|m| m.machine_type == wanted_type && m.node_stats != NodeStats::Running)
            .count();
        let why = if down > 0 {
            format!(
                " ({down} registered but not running: the liveness check marks a machine \
                 running once it answers over SSH)"
            )
        } else {
            String::new()
        };
        return Err(Error::NoCapacity(format!(
            "no running {wanted_type} machine is registered{why}"
        )));
    }

    let mut pool = Vec::with_capacity(candidates.len());
    for m in candidates {
        let range = parse_port_range(&m.port_range)?;
        let taken: BTreeSet<u16> = m
            .used_ports
            .iter()
            .chain(m.installing_ports.iter())
            .copied()
            .collect();
        pool.push(Host {
            machine_id: m.id,
            hostaddr: m.hostaddr.clone(),
            range,
            instances: taken.len(),
            taken,
        });
    }

    let total: usize = group_sizes.iter().sum();
    let mut out = Vec::with_capacity(group_sizes.len());
    for (g, &size) in group_sizes.iter().enumerate() {
        let before = held.get(g).map(Vec::as_slice).unwrap_or_default();
        let mut group: Vec<Slot> = Vec::with_capacity(size);
        for _ in 0..size {
            // Anti-affinity first: the machine holding the fewest of this group (none, while
            // any such machine has room), then least loaded, then lowest id.
            let pick = pool
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.next_port(step).map(|p| (i, h, p)))
                .min_by_key(|(_, h, _)| {
                    let of_group = before.iter().filter(|&&id| id == h.machine_id).count()
                        + group
                            .iter()
                            .filter(|s| s.machine_id == h.machine_id)
                            .count();
                    (of_group, h.instances, h.machine_id)
                })
                .map(|(i, _, p)| (i, p));
            let Some((i, port)) = pick else {
                let placed = out.iter().map(Vec::len).sum::<usize>() + group.len();
                return Err(Error::NoCapacity(format!(
                    "{total} {wanted_type} instances requested, the candidate machines have \
                     room for only {placed}"
                )));
            };
            let h = &mut pool[i];
            h.taken.insert(port);
            h.instances += 1;
            group.push(Slot {
                machine_id: h.machine_id,
                hostaddr: h.hostaddr.clone(),
                port,
            });
        }
        out.push(group);
    }
    Ok(out)
}

/// Plans `count` independent instances (compute nodes), spread least-loaded first.
pub fn place(
    machines: &[Machine],
    kind: InstanceKind,
    count: usize,
    hosts: Option<&[String]>,
) -> Result<Vec<Slot>> {
    if count == 0 {
        return Err(Error::Invalid("nothing to place: count is 0".into()));
    }
    let groups = place_groups(machines, kind, &vec![1; count], hosts)?;
    Ok(groups.into_iter().flatten().collect())
}

/// Port bookkeeping of one machine: `used` and `installing` base ports after an operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSets {
    pub used: Vec<u16>,
    pub installing: Vec<u16>,
}

impl PortSets {
    /// The sets of `m` as they are now.
    pub fn of(m: &Machine) -> PortSets {
        PortSets {
            used: m.used_ports.clone(),
            installing: m.installing_ports.clone(),
        }
    }

    /// Reserves `ports` as installing; refuses a port already used or installing.
    pub fn reserve(mut self, ports: &[u16]) -> Result<PortSets> {
        for &p in ports {
            if self.used.contains(&p) || self.installing.contains(&p) {
                return Err(Error::Conflict(format!("port {p} is already taken")));
            }
            self.installing.push(p);
        }
        self.installing.sort_unstable();
        Ok(self)
    }

    /// Install finished: `ports` move from installing to used (idempotent).
    pub fn commit(mut self, ports: &[u16]) -> PortSets {
        self.installing.retain(|p| !ports.contains(p));
        for &p in ports {
            if !self.used.contains(&p) {
                self.used.push(p);
            }
        }
        self.used.sort_unstable();
        self
    }

    /// Install failed or instance removed: `ports` leave both sets (idempotent).
    pub fn release(mut self, ports: &[u16]) -> PortSets {
        self.installing.retain(|p| !ports.contains(p));
        self.used.retain(|p| !ports.contains(p));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::model::SshAccess;

    fn machine(id: i64, host: &str, ty: MachineType, range: &str) -> Machine {
        Machine {
            id,
            hostaddr: host.into(),
            machine_type: ty,
            rack_id: None,
            data_dirs: vec!["/data".into()],
            port_range: range.into(),
            total_mem_mb: None,
            total_cpu_cores: None,
            node_stats: NodeStats::Running,
            used_ports: vec![],
            installing_ports: vec![],
            ssh: SshAccess {
                port: 22,
                user: "root".into(),
                key_path: "/k".into(),
            },
            svc_since: None,
        }
    }

    fn sn(id: i64, host: &str) -> Machine {
        machine(id, host, MachineType::Storage, "57000-58000")
    }

    #[test]
    fn port_range_parses_and_rejects_garbage() {
        assert_eq!(parse_port_range("57000-58000").unwrap(), (57000, 58000));
        assert_eq!(parse_port_range(" 1 - 9 ").unwrap(), (1, 9));
        for bad in ["", "57000", "58000-57000", "5-5", "a-b", "0-10", "1-70000"] {
            assert!(
                matches!(parse_port_range(bad), Err(Error::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn shard_nodes_spread_over_hosts_and_first_is_on_least_loaded() {
        let mut a = sn(1, "10.0.0.1");
        a.used_ports = vec![57001];
        let b = sn(2, "10.0.0.2");
        let c = sn(3, "10.0.0.3");
        let plan = place_groups(&[a, b, c], InstanceKind::Storage, &[3, 3], None).unwrap();
        assert_eq!(plan.len(), 2);
        for g in &plan {
            let mut ids: Vec<i64> = g.iter().map(|s| s.machine_id).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(
                ids.len(),
                3,
                "a shard's nodes go to distinct machines: {g:?}"
            );
        }
        // b and c start empty, so the first primary lands on b.
        assert_eq!(plan[0][0].machine_id, 2);
        assert_eq!(plan[0][0].port, 57001);
        // a already has 57001 taken: its first new block starts after it.
        let on_a: Vec<u16> = plan
            .iter()
            .flatten()
            .filter(|s| s.machine_id == 1)
            .map(|s| s.port)
            .collect();
        assert_eq!(on_a, vec![57005, 57009]);
    }

    #[test]
    fn create_spreads_a_shard_over_machines_even_when_one_is_much_less_loaded() {
        let a = sn(1, "a");
        let mut b = sn(2, "b");
        b.used_ports = vec![57001, 57005, 57009, 57013, 57017];
        let mut c = sn(3, "c");
        c.used_ports = vec![57001, 57005, 57009];
        let plan = place_groups(&[a, b, c], InstanceKind::Storage, &[3], None).unwrap();
        let ids: Vec<i64> = plan[0].iter().map(|s| s.machine_id).collect();
        // Primary on the empty machine, then the others in order of load, never a repeat.
        assert_eq!(ids, vec![1, 3, 2]);
    }

    #[test]
    fn a_shard_larger_than_the_machines_shares_them_evenly() {
        let ms = [sn(1, "a"), sn(2, "b")];
        let plan = place_groups(&ms, InstanceKind::Storage, &[5], None).unwrap();
        let ids: Vec<i64> = plan[0].iter().map(|s| s.machine_id).collect();
        assert_eq!(ids, vec![1, 2, 1, 2, 1]);
    }

    #[test]
    fn new_replicas_avoid_machines_holding_the_shard() {
        // The shard has nodes on a and b; c is the busiest machine but holds none of it.
        let mut a = sn(1, "a");
        a.used_ports = vec![57001];
        let mut b = sn(2, "b");
        b.used_ports = vec![57001];
        let mut c = sn(3, "c");
        c.used_ports = vec![57001, 57005, 57009, 57013];
        let ms = [a, b, c];
        let existing = ["a".to_string(), "b".to_string()];
        let plan = place_in_group(&ms, InstanceKind::Storage, 1, None, &existing).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].machine_id, plan[0].port), (3, 57017));
        // Two new ones: c, then the less loaded of a and b (both hold one node of the shard).
        let plan = place_in_group(&ms, InstanceKind::Storage, 2, None, &existing).unwrap();
        let ids: Vec<i64> = plan.iter().map(|s| s.machine_id).collect();
        assert_eq!(ids, vec![3, 1]);
    }

    #[test]
    fn new_replicas_fall_back_to_a_machine_of_the_shard_only_when_no_other_has_room() {
        let mut a = sn(1, "a");
        a.used_ports = vec![57001];
        // b holds none of the shard but is full: 101..104 and 105..108 taken, 109.. past 111.
        let mut full = machine(2, "b", MachineType::Storage, "100-111");
        full.used_ports = vec![101, 105];
        let mut dead = sn(3, "c");
        dead.node_stats = NodeStats::Dead;
        let ms = [a, full, dead];
        let plan = place_in_group(&ms, InstanceKind::Storage, 1, None, &["a".into()]).unwrap();
        assert_eq!((plan[0].machine_id, plan[0].port), (1, 57005));
    }

    #[test]
    fn new_replicas_obey_an_explicit_host_list() {
        let ms = [sn(1, "a"), sn(2, "b"), sn(3, "c")];
        // The only host named already holds the shard: it is used anyway.
        let plan = place_in_group(
            &ms,
            InstanceKind::Storage,
            2,
            Some(&["a".into()]),
            &["a".into()],
        )
        .unwrap();
        assert!(plan.iter().all(|s| s.machine_id == 1), "{plan:?}");
        // Among the named hosts the one without the shard comes first; c is never used.
        let plan = place_in_group(
            &ms,
            InstanceKind::Storage,
            2,
            Some(&["a".into(), "b".into()]),
            &["a".into()],
        )
        .unwrap();
        let ids: Vec<i64> = plan.iter().map(|s| s.machine_id).collect();
        assert_eq!(ids, vec![2, 1]);
        let err =
            place_in_group(&ms, InstanceKind::Storage, 1, Some(&["z".into()]), &[]).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        let err = place_in_group(&ms, InstanceKind::Storage, 0, None, &[]).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
    }

    #[test]
    fn one_host_takes_a_whole_shard_on_distinct_port_blocks() {
        let plan =
            place_groups(&[sn(1, "127.0.0.1")], InstanceKind::Storage, &[3, 3], None).unwrap();
        let ports: Vec<u16> = plan.iter().flatten().map(|s| s.port).collect();
        assert_eq!(ports, vec![57001, 57005, 57009, 57013, 57017, 57021]);
    }

    #[test]
    fn compute_uses_step_three_and_computer_machines_only() {
        let ms = [
            sn(1, "10.0.0.1"),
            machine(2, "10.0.0.2", MachineType::Computer, "47000-48000"),
        ];
        let plan = place(&ms, InstanceKind::Compute, 2, None).unwrap();
        assert!(plan.iter().all(|s| s.machine_id == 2));
        assert_eq!(
            plan.iter().map(|s| s.port).collect::<Vec<_>>(),
            vec![47001, 47004]
        );
    }

    #[test]
    fn taken_blocks_are_skipped_including_installing_and_misaligned_ones() {
        let mut m = sn(1, "h");
        m.used_ports = vec![57001];
        // A misaligned block 57007..57010 rules out 57005 and 57009.
        m.installing_ports = vec![57007];
        let plan = place(&[m], InstanceKind::Storage, 2, None).unwrap();
        let ports: Vec<u16> = plan.iter().map(|s| s.port).collect();
        assert_eq!(ports, vec![57011, 57015]);
    }

    #[test]
    fn dead_machines_are_never_picked() {
        let mut a = sn(1, "a");
        a.node_stats = NodeStats::Dead;
        let b = sn(2, "b");
        let plan = place(&[a.clone(), b], InstanceKind::Storage, 3, None).unwrap();
        assert!(plan.iter().all(|s| s.machine_id == 2));
        let err = place(&[a.clone()], InstanceKind::Storage, 1, None).unwrap_err();
        assert!(matches!(err, Error::NoCapacity(_)), "{err}");
        assert!(
            err.to_string().contains("1 registered but not running"),
            "{err}"
        );
        let err = place(&[a], InstanceKind::Storage, 1, Some(&["a".into()])).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
    }

    #[test]
    fn host_list_restricts_and_unknown_or_wrong_type_hosts_are_refused() {
        let ms = [
            sn(1, "a"),
            sn(2, "b"),
            machine(3, "c", MachineType::Computer, "47000-48000"),
        ];
        let plan = place(&ms, InstanceKind::Storage, 3, Some(&["b".into()])).unwrap();
        assert!(plan.iter().all(|s| s.machine_id == 2));
        let err = place(&ms, InstanceKind::Storage, 1, Some(&["nope".into()])).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = place(&ms, InstanceKind::Storage, 1, Some(&["c".into()])).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
    }

    #[test]
    fn zero_instances_and_too_many_are_refused() {
        let ms = [machine(1, "a", MachineType::Storage, "100-111")];
        assert!(matches!(
            place_groups(&ms, InstanceKind::Storage, &[], None),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            place_groups(&ms, InstanceKind::Storage, &[2, 0], None),
            Err(Error::Invalid(_))
        ));
        // 101..104, 105..108 fit; 109..112 passes 111.
        assert_eq!(place(&ms, InstanceKind::Storage, 2, None).unwrap().len(), 2);
        let err = place(&ms, InstanceKind::Storage, 3, None).unwrap_err();
        assert!(matches!(err, Error::NoCapacity(_)), "{err}");
        assert!(err.to_string().contains("room for only 2"), "{err}");
        let err = place(&[], InstanceKind::Compute, 1, None).unwrap_err();
        assert!(matches!(err, Error::NoCapacity(_)), "{err}");
    }

    #[test]
    fn port_range_at_the_top_of_u16_does_not_overflow() {
        let ms = [machine(1, "a", MachineType::Storage, "65520-65535")];
        let plan = place(&ms, InstanceKind::Storage, 3, None).unwrap();
        assert_eq!(
            plan.iter().map(|s| s.port).collect::<Vec<_>>(),
            vec![65521, 65525, 65529]
        );
        assert!(place(&ms, InstanceKind::Storage, 4, None).is_err());
    }

    #[test]
    fn port_sets_reserve_commit_release() {
        let s = PortSets::default().reserve(&[57001, 57005]).unwrap();
        assert_eq!(s.installing, vec![57001, 57005]);
        assert!(matches!(
            s.clone().reserve(&[57005]),
            Err(Error::Conflict(_))
        ));
        let s = s.commit(&[57001]);
        assert_eq!(s.used, vec![57001]);
        assert_eq!(s.installing, vec![57005]);
        assert_eq!(s.clone().commit(&[57001]), s, "commit is idempotent");
        let s = s.release(&[57005, 57001]);
        assert_eq!(s, PortSets::default());
    }
}
