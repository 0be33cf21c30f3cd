//! Values shared by the unit tests of this crate.

use kunlun_meta::model::{Machine, MachineType, NodeStats, SshAccess};

/// A running machine with one data dir `/data1`, root SSH on port 22 and `used` ports taken.
pub(crate) fn machine(
    id: i64,
    host: &str,
    ty: MachineType,
    range: &str,
    used: Vec<u16>,
) -> Machine {
    Machine {
        id,
        hostaddr: host.into(),
        machine_type: ty,
        rack_id: None,
        data_dirs: vec!["/data1".into()],
        port_range: range.into(),
        total_mem_mb: None,
        total_cpu_cores: None,
        node_stats: NodeStats::Running,
        used_ports: used,
        installing_ports: vec![],
        ssh: SshAccess {
            port: 22,
            user: "root".into(),
            key_path: "/k".into(),
        },
        svc_since: None,
    }
}
