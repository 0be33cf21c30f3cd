//! `kunlunctl cluster list|show` over `/v1/clusters`: clusters, their shards with each storage
//! node's role and status, and their compute nodes. Passwords are never part of the output.

use kunlun_meta::api::ClusterDetail;
use kunlun_meta::model::Cluster;

use crate::cli::ClusterCmd;
use crate::client::{CliError, Client};
use crate::output::{self, Table};

/// Executes a `cluster` command and returns what to print.
pub fn run(client: &Client, cmd: &ClusterCmd, json: bool) -> Result<String, CliError> {
    match cmd {
        ClusterCmd::List => {
            let url = client.url("/v1/clusters", &[])?;
            let v = client.get(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let clusters: Vec<Cluster> = crate::decode(v, url.as_str())?;
            if clusters.is_empty() {
                return Ok("no clusters\n".into());
            }
            Ok(table(&clusters))
        }
        ClusterCmd::Show(id) => {
            let url = client.url(&format!("/v1/clusters/{}", id.id), &[])?;
            let v = client.get(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let d: ClusterDetail = crate::decode(v, url.as_str())?;
            Ok(detail(&d))
        }
    }
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

/// A cluster, then one node table per shard, then its compute nodes.
pub fn detail(d: &ClusterDetail) -> String {
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
            "NODE", "HOST", "PORT", "ROLE", "STATUS", "SYNC", "DELAY", "PRIORITY", "BACKUP",
        ]);
        for n in &s.nodes {
            t.row(vec![
                n.id.to_string(),
                n.hostaddr.clone(),
                n.port.to_string(),
                n.member_state.to_string(),
                n.status.to_string(),
                n.sync_state.to_string(),
                n.replica_delay.to_string(),
                n.master_priority.to_string(),
                n.backup_node.to_string(),
            ]);
        }
        out.push_str(&t.render());
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
        let out = detail(&sample());
        assert!(out.contains("shard 2 shard_1"), "{out}");
        assert!(out.contains("57001  source"), "{out}");
        assert!(out.contains("57002  replica"), "{out}");
        assert!(out.contains("comp1"), "{out}");
        assert!(!out.contains("s3cret"));
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
