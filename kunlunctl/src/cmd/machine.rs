//! `kunlunctl machine add|list|show|update|rm` over `/v1/machines`.
//!
//! Requests are validated locally with the same `kunlun_meta::api` validators the daemon runs,
//! so a bad field is reported (exit 1, `invalid_field`) without a round trip and nothing is sent.
//! `machine add` lets the daemon probe the machine over SSH unless `--no-probe` is given; a
//! refusal comes back as its API code (`machine_unreachable`, `ssh_auth_failed`,
//! `host_key_mismatch`, `missing_binaries`, `data_dir_unusable`, …) with a hint. `machine
//! update` of SSH access or data dirs is probed the same way by the daemon. `show` and `list`
//! print what the last probe found (OS, free MB per data dir, when), or say it was never
//! probed.

use kunlun_meta::api::{RegisterMachine, UpdateMachine};
use kunlun_meta::model::MachineInfo;

use crate::cli::{MachineAddArgs, MachineCmd, MachineUpdateArgs};
use crate::client::{CliError, Client};
use crate::output::{self, Table};

/// Executes a `machine` command and returns what to print.
pub fn run(client: &Client, cmd: &MachineCmd, json: bool) -> Result<String, CliError> {
    match cmd {
        MachineCmd::Add(args) => {
            let req = register_request(args);
            req.validate()
                .map_err(|e| CliError::invalid_field(e.to_string()))?;
            let url = client.url("/v1/machines", &[])?;
            let v = client.post(url.clone(), &req)?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let m: MachineInfo = crate::decode(v, url.as_str())?;
            let how = if req.probe {
                "probed over SSH"
            } else {
                "not probed: dead until it answers over SSH"
            };
            Ok(format!(
                "registered machine {} ({}; {how})\n{}",
                m.machine.id,
                m.machine.hostaddr,
                detail(&m)
            ))
        }
        MachineCmd::List => {
            let url = client.url("/v1/machines", &[])?;
            let v = client.get_all(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let machines: Vec<MachineInfo> = crate::decode(v, url.as_str())?;
            if machines.is_empty() {
                return Ok(
                    "no machines registered (add one with `kunlunctl machine add`)\n".into(),
                );
            }
            Ok(table(&machines))
        }
        MachineCmd::Show(id) => {
            let url = client.url(&format!("/v1/machines/{}", id.id), &[])?;
            let v = client.get(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let m: MachineInfo = crate::decode(v, url.as_str())?;
            Ok(detail(&m))
        }
        MachineCmd::Update(args) => {
            let req = update_request(args);
            req.validate()
                .map_err(|e| CliError::invalid_field(e.to_string()))?;
            let url = client.url(&format!("/v1/machines/{}", args.id), &[])?;
            let v = client.patch(url.clone(), &req)?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let m: MachineInfo = crate::decode(v, url.as_str())?;
            Ok(format!("updated machine {}\n{}", m.machine.id, detail(&m)))
        }
        MachineCmd::Rm(id) => {
            client.delete(client.url(&format!("/v1/machines/{}", id.id), &[])?)?;
            // Scripts check the exit code; `--json` prints nothing so `| jq` sees no stray text.
            Ok(if json {
                String::new()
            } else {
                format!("removed machine {}\n", id.id)
            })
        }
    }
}

/// The `POST /v1/machines` body for `machine add`; defaults are left to the API.
pub fn register_request(a: &MachineAddArgs) -> RegisterMachine {
    RegisterMachine {
        hostaddr: a.host.clone(),
        machine_type: a.machine_type,
        ssh_port: a.ssh_port,
        ssh_user: a.ssh_user.clone(),
        ssh_key_path: a.ssh_key.clone(),
        data_dirs: a.data_dirs.clone(),
        port_range: a.port_range.clone(),
        rack_id: a.rack.clone(),
        total_mem_mb: a.mem_mb,
        total_cpu_cores: a.cores,
        probe: !a.no_probe,
        ssh_host_key: a.ssh_host_key.clone(),
    }
}

/// The `PATCH /v1/machines/{id}` body for `machine update`: only the flags given.
pub fn update_request(a: &MachineUpdateArgs) -> UpdateMachine {
    UpdateMachine {
        ssh_port: a.ssh_port,
        ssh_user: a.ssh_user.clone(),
        ssh_key_path: a.ssh_key.clone(),
        data_dirs: if a.data_dirs.is_empty() {
            None
        } else {
            Some(a.data_dirs.clone())
        },
        port_range: a.port_range.clone(),
        rack_id: a.rack.clone(),
        total_mem_mb: a.mem_mb,
        total_cpu_cores: a.cores,
        // The daemon probes a change of SSH access or data dirs unless told not to.
        probe: !a.no_probe,
        ssh_host_key: None,
    }
}

/// One line per machine; OS is what the last probe found (`not probed` if never).
pub fn table(machines: &[MachineInfo]) -> String {
    let mut t = Table::new(&[
        "ID",
        "HOST",
        "TYPE",
        "STATE",
        "SSH",
        "PORTS",
        "USED",
        "DATA DIRS",
        "RACK",
        "MEM MB",
        "CORES",
        "OS",
    ]);
    for info in machines {
        let m = &info.machine;
        t.row(vec![
            m.id.to_string(),
            m.hostaddr.clone(),
            m.machine_type.to_string(),
            m.node_stats.to_string(),
            format!("{}@:{}", m.ssh.user, m.ssh.port),
            m.port_range.clone(),
            m.used_ports.len().to_string(),
            output::list(&m.data_dirs),
            output::opt(m.rack_id.as_deref()),
            output::opt(m.total_mem_mb),
            output::opt(m.total_cpu_cores),
            info.probe
                .as_ref()
                .map_or_else(|| NOT_PROBED.to_string(), os_text),
        ]);
    }
    t.render()
}

/// Shown where probe facts would be, for a machine stored with `--no-probe` (or whose SSH
/// access or data dirs were last changed without a probe).
const NOT_PROBED: &str = "not probed";

fn os_text(p: &kunlun_meta::model::MachineProbe) -> String {
    if p.os.is_empty() {
        "unknown".to_string()
    } else {
        p.os.clone()
    }
}

/// Everything about one machine; the SSH key is a path on the manager's host, never its content.
pub fn detail(info: &MachineInfo) -> String {
    let m = &info.machine;
    let mut pairs = vec![
        ("id", m.id.to_string()),
        ("host", m.hostaddr.clone()),
        ("type", m.machine_type.to_string()),
        ("state", m.node_stats.to_string()),
        (
            "ssh",
            format!("{}@{} port {}", m.ssh.user, m.hostaddr, m.ssh.port),
        ),
        ("ssh key", m.ssh.key_path.clone()),
        ("data dirs", output::list(&m.data_dirs)),
        ("port range", m.port_range.clone()),
        ("used ports", output::list(&m.used_ports)),
        ("installing ports", output::list(&m.installing_ports)),
        ("rack", output::opt(m.rack_id.as_deref())),
        ("memory MB", output::opt(m.total_mem_mb)),
        ("cpu cores", output::opt(m.total_cpu_cores)),
        ("in service since", output::time(m.svc_since)),
    ];
    match &info.probe {
        None => pairs.push((
            "probe",
            format!("{NOT_PROBED} (no facts: stored without an SSH probe)"),
        )),
        Some(p) => {
            pairs.push(("probed at", output::time(Some(p.probed_at))));
            pairs.push(("os", os_text(p)));
            pairs.push((
                "kernel",
                output::opt(Some(&p.kernel).filter(|k| !k.is_empty())),
            ));
            for d in &p.data_dirs {
                let free = match d.free_mb {
                    Some(mb) => format!("{mb} MB free"),
                    None => "not writable".to_string(),
                };
                let created = if d.exists {
                    ""
                } else {
                    " (created on first install)"
                };
                pairs.push(("data dir", format!("{} {free}{created}", d.path)));
            }
        }
    }
    output::key_values(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use kunlun_meta::model::{Machine, MachineProbe, MachineType, NodeStats, ProbedDir, SshAccess};

    fn parse(args: &[&str]) -> MachineCmd {
        let mut full = vec!["kunlunctl", "machine"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Machine(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn add_flags_map_to_the_register_body() {
        let MachineCmd::Add(a) = parse(&[
            "add",
            "--host",
            "127.0.0.2",
            "--type",
            "computer",
            "--ssh-key",
            "/k",
            "--ssh-port",
            "2222",
            "--data-dir",
            "/d1",
            "--data-dir",
            "/d2",
            "--rack",
            "r1",
            "--mem-mb",
            "4096",
            "--cores",
            "8",
        ]) else {
            panic!()
        };
        let r = register_request(&a);
        assert_eq!(r.hostaddr, "127.0.0.2");
        assert_eq!(r.machine_type, MachineType::Computer);
        assert_eq!(r.ssh_port, Some(2222));
        assert_eq!(r.ssh_user, None);
        assert_eq!(r.data_dirs, vec!["/d1".to_string(), "/d2".to_string()]);
        assert_eq!(r.port_range, None);
        assert_eq!(
            (r.rack_id.as_deref(), r.total_mem_mb, r.total_cpu_cores),
            (Some("r1"), Some(4096), Some(8))
        );
        let body = serde_json::to_value(&r).unwrap();
        assert_eq!(body["machine_type"], "computer");
        assert_eq!(body["ssh_key_path"], "/k");
        assert_eq!(body["probe"], true, "probing is the default");

        let MachineCmd::Add(a) = parse(&[
            "add",
            "--host",
            "127.0.0.2",
            "--type",
            "storage",
            "--ssh-key",
            "/k",
            "--data-dir",
            "/d",
            "--no-probe",
        ]) else {
            panic!()
        };
        assert!(!register_request(&a).probe);
    }

    #[test]
    fn local_validation_names_the_field() {
        let MachineCmd::Add(a) = parse(&[
            "add",
            "--host",
            "10.0.0.1'; drop",
            "--type",
            "storage",
            "--ssh-key",
            "/k",
            "--data-dir",
            "/d",
        ]) else {
            panic!()
        };
        let e = register_request(&a).validate().unwrap_err();
        assert!(e.to_string().contains("hostaddr"), "{e}");
    }

    #[test]
    fn update_sends_only_the_flags_given() {
        let MachineCmd::Update(a) = parse(&["update", "7", "--rack", "r2", "--cores", "16"]) else {
            panic!()
        };
        assert_eq!(a.id, 7);
        let u = update_request(&a);
        assert_eq!(
            u,
            UpdateMachine {
                rack_id: Some("r2".into()),
                total_cpu_cores: Some(16),
                ..Default::default()
            }
        );
        assert_eq!(
            serde_json::to_value(&u).unwrap()["data_dirs"],
            serde_json::Value::Null
        );
        let MachineCmd::Update(a) = parse(&["update", "7", "--data-dir", "/x"]) else {
            panic!()
        };
        assert_eq!(update_request(&a).data_dirs, Some(vec!["/x".to_string()]));
    }

    fn machine() -> MachineInfo {
        MachineInfo {
            machine: machine_row(),
            probe: None,
        }
    }

    fn probed() -> MachineInfo {
        MachineInfo {
            machine: machine_row(),
            probe: Some(MachineProbe {
                os: "debian 12".into(),
                kernel: "Linux 6.1.0".into(),
                data_dirs: vec![
                    ProbedDir {
                        path: "/d1".into(),
                        free_mb: Some(5120),
                        exists: true,
                    },
                    ProbedDir {
                        path: "/d2".into(),
                        free_mb: Some(4000),
                        exists: false,
                    },
                ],
                probed_at: chrono::NaiveDate::from_ymd_opt(2026, 12, 4)
                    .unwrap()
                    .and_hms_opt(19, 30, 5)
                    .unwrap(),
            }),
        }
    }

    fn machine_row() -> Machine {
        Machine {
            id: 3,
            hostaddr: "127.0.0.2".into(),
            machine_type: MachineType::Storage,
            rack_id: None,
            data_dirs: vec!["/d1".into(), "/d2".into()],
            port_range: "57000-58000".into(),
            total_mem_mb: Some(2048),
            total_cpu_cores: None,
            node_stats: NodeStats::Running,
            used_ports: vec![57000],
            installing_ports: vec![],
            ssh: SshAccess {
                port: 2222,
                user: "root".into(),
                key_path: "/root/.ssh/id".into(),
            },
            svc_since: None,
        }
    }

    #[test]
    fn list_and_show_render() {
        let t = table(&[machine()]);
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID  HOST       TYPE     STATE"), "{t}");
        assert!(
            lines[1].starts_with("3   127.0.0.2  storage  running  root@:2222"),
            "{t}"
        );
        assert!(lines[1].contains("/d1,/d2"));
        assert!(lines[1].trim_end().ends_with("not probed"), "{t}");
        let d = detail(&machine());
        assert!(d.contains("ssh key:          /root/.ssh/id"), "{d}");
        assert!(d.contains("used ports:       57000"), "{d}");
        assert!(d.contains("probe:            not probed (no facts"), "{d}");
        assert!(!d.contains("os:"), "{d}");
    }

    #[test]
    fn show_and_list_print_the_probe_facts() {
        let t = table(&[probed()]);
        assert!(t.lines().nth(1).unwrap().ends_with("debian 12"), "{t}");
        let d = detail(&probed());
        assert!(d.contains("probed at:        2026-12-04 19:30:05"), "{d}");
        assert!(d.contains("os:               debian 12"), "{d}");
        assert!(d.contains("kernel:           Linux 6.1.0"), "{d}");
        assert!(d.contains("data dir:         /d1 5120 MB free\n"), "{d}");
        assert!(
            d.contains("data dir:         /d2 4000 MB free (created on first install)"),
            "{d}"
        );
        assert!(!d.contains("not probed"), "{d}");
        // The daemon's JSON (flattened machine plus `probe`) decodes into what is printed.
        let v = serde_json::to_value(probed()).unwrap();
        assert_eq!(v["hostaddr"], "127.0.0.2");
        assert_eq!(v["probe"]["data_dirs"][0]["free_mb"], 5120);
        let back: MachineInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, probed());
        let unprobed = serde_json::to_value(machine()).unwrap();
        assert!(unprobed["probe"].is_null() && unprobed.get("probe").is_some());
    }
}
