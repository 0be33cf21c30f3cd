//! `kunlunctl cluster list|show|create|rm` over `/v1/clusters`: clusters, their shards with
//! each storage node's role, status and (from the HA monitor's `/v1/ha`) health, replication
//! threads, lag and GTID position, and their compute nodes; `create` and `rm` start a job and
//! with `--wait` follow it to the end (`job watch`). Passwords are never part of the output.

use std::collections::BTreeMap;

use kunlun_meta::api::{ClusterDetail, CreateCluster};
use kunlun_meta::model::{Cluster, HaMode, Job};
use serde_json::Value;

use super::job::{follow, Followed};

use crate::cli::ClusterCmd;
use crate::client::{CliError, Client};
use crate::output::{self, Table};

/// Executes a `cluster` command and returns what to print.
pub fn run(client: &Client, cmd: &ClusterCmd, json: bool) -> Result<String, CliError> {
    match cmd {
        ClusterCmd::List => {
            let url = client.url("/v1/clusters", &[])?;
            let v = client.get_all(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let clusters: Vec<Cluster> = crate::decode(v, url.as_str())?;
            if clusters.is_empty() {
                return Ok("no clusters\n".into());
            }
            Ok(table(&clusters))
        }
        ClusterCmd::Create(args) => create(client, args, json),
        ClusterCmd::Delete(args) => delete(client, args, json),
        ClusterCmd::Policy(args) => super::policy::run(client, args, json),
        ClusterCmd::Show(id) => {
            let url = client.url(&format!("/v1/clusters/{}", id.id), &[])?;
            let v = client.get(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let d: ClusterDetail = crate::decode(v, url.as_str())?;
            let ha = ha_by_node(client);
            Ok(detail(&d, &ha))
        }
    }
}

/// What the HA monitor says about each storage node, by node id; `Err` says why there is
/// nothing (monitor not running, old daemon), shown instead of the columns.
pub type HaView = Result<BTreeMap<i64, Value>, String>;

/// `GET /v1/ha` as node id -> health; never fails the command.
fn ha_by_node(client: &Client) -> HaView {
    let url = client.url("/v1/ha", &[]).map_err(|e| e.to_string())?;
    let v = client.get(url).map_err(|e| e.to_string())?;
    let nodes = v
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or_else(|| "the daemon's /v1/ha has no node list".to_string())?;
    Ok(nodes
        .iter()
        .filter_map(|n| Some((n.get("node_id")?.as_i64()?, n.clone())))
        .collect())
}

/// HEALTH, REPLICATION, LAG and GTID cells of one node from its `/v1/ha` entry.
fn ha_cells(h: Option<&Value>) -> [String; 4] {
    let Some(h) = h else {
        return ["not probed yet".into(), "-".into(), "-".into(), "-".into()];
    };
    let probe = h.get("probe").cloned().unwrap_or(Value::Null);
    let mut health = h
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_string();
    if let Some(e) = probe.get("error").and_then(Value::as_str) {
        health.push_str(&format!(" ({e})"));
    }
    let primary = h.get("is_primary").and_then(Value::as_bool) == Some(true);
    let channel = probe
        .get("channels")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let repl = match channel {
        Some(c) => format!(
            "from {}:{} io={} sql={}",
            c.get("master_host").and_then(Value::as_str).unwrap_or("?"),
            c.get("master_port").and_then(Value::as_u64).unwrap_or(0),
            c.get("io_running").and_then(Value::as_str).unwrap_or("?"),
            if c.get("sql_running").and_then(Value::as_bool) == Some(true) {
                "Yes"
            } else {
                "No"
            }
        ),
        None if primary => {
            let active = probe
                .get("semi_sync_master_active")
                .and_then(Value::as_bool);
            let clients = probe
                .get("semi_sync_clients")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if active == Some(true) {
                format!("primary, semi-sync on ({clients} replicas)")
            } else {
                format!("primary, semi-sync off ({clients} replicas)")
            }
        }
        None => "not replicating".into(),
    };
    let lag = channel
        .and_then(|c| c.get("seconds_behind"))
        .and_then(Value::as_i64)
        .map_or_else(|| "-".to_string(), |s| format!("{s}s"));
    let gtid = probe
        .get("gtid_current_pos")
        .and_then(Value::as_str)
        .filter(|g| !g.is_empty())
        .unwrap_or("-")
        .to_string();
    [health, repl, lag, gtid]
}

/// `cluster create` arguments.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Cluster name (A-Z, a-z, 0-9, _).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// `rbr` (primary + replicas, semi-sync) or `no_rep` (one node per shard).
    #[arg(long, default_value = "rbr", value_parser = parse_ha_mode)]
    pub ha_mode: HaMode,
    /// Storage shards.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Storage nodes per shard.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Compute nodes.
    #[arg(long, default_value_t = 1)]
    pub comps: u32,
    /// InnoDB buffer pool per storage node, MB.
    #[arg(long, value_name = "MB")]
    pub innodb_size_mb: Option<u32>,
    /// `max_connections` of every instance.
    #[arg(long)]
    pub max_connections: Option<u32>,
    /// Only these storage machines (comma-separated host addresses).
    #[arg(long, value_delimiter = ',')]
    pub storage_hosts: Vec<String>,
    /// Only these compute machines (comma-separated host addresses).
    #[arg(long, value_delimiter = ',')]
    pub computer_hosts: Vec<String>,
    /// Follow the job until it ends, printing each stage; fail if the job fails.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub wait_timeout: u64,
}

/// `cluster delete` arguments.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Cluster id as shown by `cluster list`.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Follow the job until it ends; fail if the job fails.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub wait_timeout: u64,
}

fn delete(client: &Client, a: &DeleteArgs, json: bool) -> Result<String, CliError> {
    let url = client.url(&format!("/v1/clusters/{}", a.id), &[])?;
    let v = client.delete_json(url.clone())?;
    match follow(
        client,
        v,
        url.as_str(),
        "delete_cluster",
        (a.wait, a.wait_timeout),
        json,
    )? {
        Followed::Print(text) => Ok(text),
        Followed::Done(_) => Ok(format!("cluster {} deleted\n", a.id)),
    }
}

fn parse_ha_mode(s: &str) -> Result<HaMode, String> {
    s.parse::<HaMode>().map_err(|e| e.to_string())
}

fn create(client: &Client, a: &CreateArgs, json: bool) -> Result<String, CliError> {
    let req = CreateCluster {
        name: a.name.clone(),
        nick_name: None,
        ha_mode: a.ha_mode,
        shards: a.shards,
        nodes: a.nodes,
        comps: a.comps,
        innodb_size_mb: a.innodb_size_mb,
        max_connections: a.max_connections,
        storage_hosts: a.storage_hosts.clone(),
        computer_hosts: a.computer_hosts.clone(),
    };
    req.validate()
        .map_err(|e| CliError::invalid_field(e.to_string()))?;
    let url = client.url("/v1/clusters", &[])?;
    let v = client.post(url.clone(), &req)?;
    let job = match follow(
        client,
        v,
        url.as_str(),
        "create_cluster",
        (a.wait, a.wait_timeout),
        json,
    )? {
        Followed::Print(text) => return Ok(text),
        Followed::Done(job) => job,
    };
    let c = client.url(&format!("/v1/clusters/{}", cluster_id(&job)?), &[])?;
    let d: ClusterDetail = crate::decode(client.get(c.clone())?, c.as_str())?;
    Ok(connect_hint(&d))
}

fn cluster_id(job: &Job) -> Result<i64, CliError> {
    job.memo
        .as_ref()
        .and_then(|m| m.get("cluster_id"))
        .and_then(|v| v.as_i64())
        .ok_or_else(|| CliError::BadResponse {
            url: format!("/v1/jobs/{}", job.id),
            detail: "finished job names no cluster_id".into(),
        })
}

/// How to reach a new cluster: every shard primary and compute node, with its user.
pub fn connect_hint(d: &ClusterDetail) -> String {
    let mut out = format!(
        "cluster {} (id {}) is ready\n",
        d.cluster.name, d.cluster.id
    );
    for s in &d.shards {
        for n in &s.nodes {
            if n.member_state == kunlun_meta::model::MemberState::Source {
                out.push_str(&format!(
                    "  {} primary: mariadb -h {} -P {} -u {}\n",
                    s.shard.name, n.hostaddr, n.port, n.user_name
                ));
            }
        }
    }
    for c in &d.comp_nodes {
        out.push_str(&format!(
            "  compute {}: psql -h {} -p {} -U {} postgres\n",
            c.name, c.hostaddr, c.port, c.user_name
        ));
    }
    out.push_str(
        "  passwords are random per cluster and the API never returns them: read them from the \
         metadata store (table kl_cluster_secret, or shard_nodes.passwd / comp_nodes.passwd)\n",
    );
    out
}

/// One line per cluster.
pub fn table(clusters: &[Cluster]) -> String {
    let mut t = Table::new(&[
        "ID", "NAME", "NICK", "HA MODE", "STATUS", "OWNER", "CREATED",
    ]);
    for c in clusters {
        t.row(vec![
            c.id.to_string(),
            c.name.clone(),
            output::opt(c.nick_name.as_deref()),
            c.ha_mode.to_string(),
            c.status.to_string(),
            output::opt(c.owner.as_deref()),
            output::time(c.when_created),
        ]);
    }
    t.render()
}

/// A cluster, then one node table per shard (role and status from the metadata; health,
/// replication, lag and GTID from the HA monitor), then its compute nodes.
pub fn detail(d: &ClusterDetail, ha: &HaView) -> String {
    let c = &d.cluster;
    let mut out = output::key_values(&[
        ("id", c.id.to_string()),
        ("name", c.name.clone()),
        ("nick name", output::opt(c.nick_name.as_deref())),
        ("ha mode", c.ha_mode.to_string()),
        ("status", c.status.to_string()),
        ("owner", output::opt(c.owner.as_deref())),
        ("business", output::opt(c.business.as_deref())),
        ("created", output::time(c.when_created)),
        ("shards", d.shards.len().to_string()),
        ("compute nodes", d.comp_nodes.len().to_string()),
    ]);
    for s in &d.shards {
        let sh = &s.shard;
        out.push_str(&format!(
            "\nshard {} {} ({}, {} nodes, sync_num {}, degrade {})\n",
            sh.id, sh.name, sh.status, sh.num_nodes, sh.sync_num, sh.degrade_run_state
        ));
        if s.nodes.is_empty() {
            out.push_str("  no storage nodes\n");
            continue;
        }
        let mut t = Table::new(&[
            "NODE",
            "HOST",
            "PORT",
            "ROLE",
            "STATUS",
            "HEALTH",
            "REPLICATION",
            "LAG",
            "GTID",
        ]);
        for n in &s.nodes {
            let mut row = vec![
                n.id.to_string(),
                n.hostaddr.clone(),
                n.port.to_string(),
                n.member_state.to_string(),
                n.status.to_string(),
            ];
            if let Ok(h) = ha {
                row.extend(ha_cells(h.get(&n.id)));
            }
            t.row(row);
        }
        out.push_str(&t.render());
        if let Err(why) = ha {
            out.push_str(&format!("  (health and replication unknown: {why})\n"));
        }
    }
    out.push_str("\ncompute nodes\n");
    if d.comp_nodes.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut t = Table::new(&["ID", "NAME", "HOST", "PORT", "STATUS", "MAX CONNS"]);
        for n in &d.comp_nodes {
            t.row(vec![
                n.id.to_string(),
                n.name.clone(),
                n.hostaddr.clone(),
                n.port.to_string(),
                n.status.to_string(),
                n.max_conns.to_string(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::api::ShardDetail;
    use kunlun_meta::model::*;

    fn sample() -> ClusterDetail {
        let cluster = Cluster {
            id: 1,
            name: "cluster_1".into(),
            nick_name: Some("orders".into()),
            owner: None,
            ddl_log_tblname: None,
            business: None,
            ha_mode: HaMode::Rbr,
            status: ClusterStatus::Inuse,
            memo: None,
            when_created: None,
        };
        let shard = Shard {
            id: 2,
            name: "shard_1".into(),
            db_cluster_id: 1,
            num_nodes: 2,
            space_volumn: 0,
            num_tablets: 0,
            sync_num: 1,
            degrade_conf_state: OnOff::Off,
            degrade_run_state: OnOff::Off,
            degrade_conf_time: 0,
            status: ClusterStatus::Inuse,
            coldbackup_period: None,
            when_created: None,
        };
        let node = |id, port, role| ShardNode {
            id,
            shard_id: 2,
            db_cluster_id: 1,
            hostaddr: "127.0.0.1".into(),
            port,
            user_name: "pgx".into(),
            passwd: "s3cret".into(),
            master_priority: 0,
            ro_weight: 0,
            status: NodeStatus::Active,
            member_state: role,
            sync_state: SyncState::Fsync,
            replica_delay: 0,
            backup_node: OnOff::Off,
            innodb_buffer_pool_mb: 128,
            when_created: None,
        };
        let comp = CompNode {
            id: 1,
            db_cluster_id: 1,
            name: "comp1".into(),
            hostaddr: "127.0.0.1".into(),
            port: 5432,
            user_name: "abc".into(),
            passwd: "s3cret".into(),
            status: NodeStatus::Active,
            max_conns: 100,
            when_created: None,
        };
        ClusterDetail {
            cluster,
            shards: vec![ShardDetail {
                shard,
                nodes: vec![
                    node(5, 57001, MemberState::Source),
                    node(6, 57002, MemberState::Replica),
                ],
            }],
            comp_nodes: vec![comp],
        }
    }

    #[test]
    fn detail_shows_roles_and_no_secret() {
        let out = detail(
            &sample(),
            &Err("the shard HA monitor is not running".into()),
        );
        assert!(out.contains("shard 2 shard_1"), "{out}");
        assert!(out.contains("57001  source"), "{out}");
        assert!(out.contains("57002  replica"), "{out}");
        assert!(out.contains("comp1"), "{out}");
        assert!(!out.contains("s3cret"));
        assert!(out.contains("health and replication unknown"), "{out}");
    }

    #[test]
    fn detail_merges_the_ha_monitor_view() {
        let ha: HaView = Ok([
            (
                5,
                serde_json::json!({"node_id": 5, "is_primary": true, "state": "up",
                    "probe": {"reachable": true, "gtid_current_pos": "0-1-42", "channels": [],
                              "semi_sync_master_active": true, "semi_sync_clients": 1}}),
            ),
            (
                6,
                serde_json::json!({"node_id": 6, "is_primary": false, "state": "up",
                    "probe": {"reachable": true, "gtid_current_pos": "0-1-41",
                              "channels": [{"master_host": "127.0.0.1", "master_port": 57001,
                                            "io_running": "Yes", "sql_running": true,
                                            "seconds_behind": 0}]}}),
            ),
        ]
        .into_iter()
        .collect());
        let out = detail(&sample(), &ha);
        assert!(out.contains("primary, semi-sync on (1 replicas)"), "{out}");
        assert!(
            out.contains("from 127.0.0.1:57001 io=Yes sql=Yes  0s   0-1-41"),
            "{out}"
        );
        assert!(out.contains("0-1-42"), "{out}");
        let none: HaView = Ok(BTreeMap::new());
        assert!(detail(&sample(), &none).contains("not probed yet"));
    }

    #[test]
    fn connect_hint_names_every_entry_point_and_no_password() {
        let h = connect_hint(&sample());
        assert!(h.contains("mariadb -h 127.0.0.1 -P 57001 -u pgx"), "{h}");
        assert!(!h.contains("57002"), "replicas are not entry points: {h}");
        assert!(
            h.contains("psql -h 127.0.0.1 -p 5432 -U abc postgres"),
            "{h}"
        );
        assert!(
            h.contains("never returns them") && !h.contains("s3cret"),
            "{h}"
        );
    }

    #[test]
    fn list_renders_a_row_per_cluster() {
        let t = table(&[sample().cluster]);
        assert_eq!(t.lines().count(), 2);
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .starts_with("1   cluster_1  orders  rbr"),
            "{t}"
        );
    }
}
