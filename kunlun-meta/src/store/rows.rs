//! Row types of the store, apart from the domain types of [`crate::model`].
//!
//! Invariant: a row is converted to a domain value only through the `TryFrom`/`From` impls
//! here; a stored value that does not parse (unknown state, port out of range) becomes
//! [`Error::Database`] naming the column, never a panic.

use std::str::FromStr;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::*;
use crate::error::{Error, ParseEnumError, Result};
use crate::model::*;

/// Parses a stored state column.
pub(crate) fn state<T: FromStr<Err = ParseEnumError>>(column: &str, v: &str) -> Result<T> {
    v.parse()
        .map_err(|e: ParseEnumError| Error::Database(format!("stored {column}: {e}")))
}

/// A stored port number (0..=65535).
pub(crate) fn port(column: &str, v: i64) -> Result<u16> {
    u16::try_from(v).map_err(|_| Error::Database(format!("stored {column} {v} is not a port")))
}

/// Kunlun keeps path lists `;`-separated.
pub(crate) fn join_paths(dirs: &[String]) -> String {
    dirs.join(";")
}

pub(crate) fn split_paths(v: Option<&str>) -> Vec<String> {
    v.unwrap_or("")
        .split(';')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Kunlun keeps port lists comma-separated.
pub(crate) fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn split_ports(column: &str, v: Option<&str>) -> Result<Vec<u16>> {
    v.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u16>()
                .map_err(|_| Error::Database(format!("stored {column} has '{s}', not a port")))
        })
        .collect()
}

/// A JSON text column; text that is not JSON is kept as a JSON string.
pub(crate) fn json(v: Option<String>) -> Option<serde_json::Value> {
    v.map(|s| serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)))
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = server_nodes, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct MachineRow {
    pub id: i64,
    pub hostaddr: String,
    pub machine_type: Option<String>,
    pub rack_id: Option<String>,
    pub comp_datadir: Option<String>,
    pub datadir: Option<String>,
    pub total_mem: Option<i64>,
    pub total_cpu_cores: Option<i64>,
    pub node_stats: String,
    pub port_range: Option<String>,
    pub used_port: Option<String>,
    pub installing_port: Option<String>,
    pub svc_since: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = kl_machine_ssh, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct SshRow {
    pub server_node_id: i64,
    pub ssh_port: i64,
    pub ssh_user: String,
    pub ssh_key_path: String,
}

impl TryFrom<(MachineRow, SshRow)> for Machine {
    type Error = Error;
    fn try_from((r, s): (MachineRow, SshRow)) -> Result<Machine> {
        let machine_type: MachineType = state(
            "server_nodes.machine_type",
            r.machine_type.as_deref().unwrap_or(""),
        )?;
        let dirs = match machine_type {
            MachineType::Storage => r.datadir.as_deref(),
            MachineType::Computer => r.comp_datadir.as_deref(),
        };
        Ok(Machine {
            id: r.id,
            hostaddr: r.hostaddr,
            machine_type,
            rack_id: r.rack_id,
            data_dirs: split_paths(dirs),
            port_range: r.port_range.unwrap_or_default(),
            total_mem_mb: r.total_mem,
            total_cpu_cores: r.total_cpu_cores,
            node_stats: state("server_nodes.node_stats", &r.node_stats)?,
            used_ports: split_ports("server_nodes.used_port", r.used_port.as_deref())?,
            installing_ports: split_ports(
                "server_nodes.installing_port",
                r.installing_port.as_deref(),
            )?,
            ssh: SshAccess {
                port: port("kl_machine_ssh.ssh_port", s.ssh_port)?,
                user: s.ssh_user,
                key_path: s.ssh_key_path,
            },
            svc_since: r.svc_since,
        })
    }
}

/// `kl_machine_probe`: the facts of a machine's last probe, data dirs as JSON text.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = kl_machine_probe, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct ProbeRow {
    pub server_node_id: i64,
    pub os: String,
    pub kernel: String,
    pub data_dirs_json: String,
    pub probed_at: NaiveDateTime,
}

impl ProbeRow {
    /// `probed_at` is cut to microseconds, what MySQL's `timestamp(6)` keeps, so a value
    /// reads back equal on both backends.
    pub(crate) fn new(machine_id: i64, p: &MachineProbe) -> Result<Self> {
        use chrono::SubsecRound;
        Ok(ProbeRow {
            server_node_id: machine_id,
            os: p.os.clone(),
            kernel: p.kernel.clone(),
            data_dirs_json: serde_json::to_string(&p.data_dirs)
                .map_err(|e| Error::Database(format!("encoding probed data dirs: {e}")))?,
            probed_at: p.probed_at.trunc_subsecs(6),
        })
    }
}

impl TryFrom<ProbeRow> for MachineProbe {
    type Error = Error;
    fn try_from(r: ProbeRow) -> Result<MachineProbe> {
        let data_dirs = serde_json::from_str(&r.data_dirs_json).map_err(|e| {
            Error::Database(format!(
                "stored kl_machine_probe.data_dirs_json of machine {} is not a dir list: {e}",
                r.server_node_id
            ))
        })?;
        Ok(MachineProbe {
            os: r.os,
            kernel: r.kernel,
            data_dirs,
            probed_at: r.probed_at,
        })
    }
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = server_nodes)]
pub(crate) struct NewMachineRow {
    pub hostaddr: String,
    pub machine_type: Option<String>,
    pub rack_id: Option<String>,
    pub comp_datadir: Option<String>,
    pub datadir: Option<String>,
    pub logdir: Option<String>,
    pub wal_log_dir: Option<String>,
    pub total_mem: Option<i64>,
    pub total_cpu_cores: Option<i64>,
    pub node_stats: String,
    pub port_range: Option<String>,
    pub used_port: Option<String>,
    pub installing_port: Option<String>,
    pub svc_since: Option<NaiveDateTime>,
}

impl NewMachineRow {
    /// Storage machines keep their dirs in `datadir` (and, as Kunlun requires, `logdir` and
    /// `wal_log_dir`); computer machines in `comp_datadir`.
    pub(crate) fn new(m: &NewMachine, now: NaiveDateTime) -> Self {
        let dirs = Some(join_paths(&m.data_dirs));
        let storage = m.machine_type == MachineType::Storage;
        NewMachineRow {
            hostaddr: m.hostaddr.clone(),
            machine_type: Some(m.machine_type.as_str().to_string()),
            rack_id: m.rack_id.clone(),
            comp_datadir: if storage { None } else { dirs.clone() },
            datadir: if storage { dirs.clone() } else { None },
            logdir: if storage { dirs.clone() } else { None },
            wal_log_dir: if storage { dirs } else { None },
            total_mem: m.total_mem_mb,
            total_cpu_cores: m.total_cpu_cores,
            node_stats: NodeStats::Running.as_str().to_string(),
            port_range: Some(m.port_range.clone()),
            used_port: Some(String::new()),
            installing_port: Some(String::new()),
            svc_since: Some(now),
        }
    }
}

/// The `server_nodes` columns a [`MachinePatch`] may change; `None` leaves a column alone.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = server_nodes)]
pub(crate) struct MachineChangeset {
    pub rack_id: Option<String>,
    pub comp_datadir: Option<String>,
    pub datadir: Option<String>,
    pub logdir: Option<String>,
    pub wal_log_dir: Option<String>,
    pub port_range: Option<String>,
    pub total_mem: Option<i64>,
    pub total_cpu_cores: Option<i64>,
    pub node_stats: Option<String>,
}

/// The `kl_machine_ssh` columns a [`MachinePatch`] may change.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = kl_machine_ssh)]
pub(crate) struct SshChangeset {
    pub ssh_port: Option<i64>,
    pub ssh_user: Option<String>,
    pub ssh_key_path: Option<String>,
}

impl MachineChangeset {
    pub(crate) fn new(p: &MachinePatch, machine_type: MachineType) -> Self {
        let dirs = p.data_dirs.as_deref().map(join_paths);
        let storage = machine_type == MachineType::Storage;
        MachineChangeset {
            rack_id: p.rack_id.clone(),
            comp_datadir: if storage { None } else { dirs.clone() },
            datadir: if storage { dirs.clone() } else { None },
            logdir: if storage { dirs.clone() } else { None },
            wal_log_dir: if storage { dirs } else { None },
            port_range: p.port_range.clone(),
            total_mem: p.total_mem_mb,
            total_cpu_cores: p.total_cpu_cores,
            node_stats: p.node_stats.map(|s| s.as_str().to_string()),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rack_id.is_none()
            && self.datadir.is_none()
            && self.comp_datadir.is_none()
            && self.port_range.is_none()
            && self.total_mem.is_none()
            && self.total_cpu_cores.is_none()
            && self.node_stats.is_none()
    }
}

impl SshChangeset {
    pub(crate) fn new(p: &MachinePatch) -> Self {
        SshChangeset {
            ssh_port: p.ssh_port.map(i64::from),
            ssh_user: p.ssh_user.clone(),
            ssh_key_path: p.ssh_key_path.clone(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ssh_port.is_none() && self.ssh_user.is_none() && self.ssh_key_path.is_none()
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = db_clusters, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct ClusterRow {
    pub id: i64,
    pub name: String,
    pub nick_name: Option<String>,
    pub owner: Option<String>,
    pub ddl_log_tblname: Option<String>,
    pub when_created: NaiveDateTime,
    pub business: Option<String>,
    pub memo: Option<String>,
    pub status: String,
    pub ha_mode: String,
}

impl TryFrom<ClusterRow> for Cluster {
    type Error = Error;
    fn try_from(r: ClusterRow) -> Result<Cluster> {
        Ok(Cluster {
            id: r.id,
            name: r.name,
            nick_name: r.nick_name,
            owner: r.owner,
            ddl_log_tblname: r.ddl_log_tblname,
            business: r.business,
            ha_mode: state("db_clusters.ha_mode", &r.ha_mode)?,
            status: state("db_clusters.status", &r.status)?,
            memo: r.memo,
            when_created: Some(r.when_created),
        })
    }
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = db_clusters)]
pub(crate) struct NewClusterRow {
    pub name: String,
    pub nick_name: Option<String>,
    pub owner: Option<String>,
    pub ddl_log_tblname: Option<String>,
    pub when_created: NaiveDateTime,
    pub business: Option<String>,
    pub memo: Option<String>,
    pub status: String,
    pub ha_mode: String,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = shards, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct ShardRow {
    pub id: i64,
    pub name: String,
    pub when_created: NaiveDateTime,
    pub num_nodes: i64,
    pub space_volumn: i64,
    pub num_tablets: i64,
    pub db_cluster_id: i64,
    pub sync_num: i64,
    pub degrade_conf_state: String,
    pub degrade_run_state: String,
    pub degrade_conf_time: i64,
    pub status: String,
    pub coldbackup_period: Option<String>,
}

impl TryFrom<ShardRow> for Shard {
    type Error = Error;
    fn try_from(r: ShardRow) -> Result<Shard> {
        Ok(Shard {
            id: r.id,
            name: r.name,
            db_cluster_id: r.db_cluster_id,
            num_nodes: r.num_nodes,
            space_volumn: r.space_volumn,
            num_tablets: r.num_tablets,
            sync_num: r.sync_num,
            degrade_conf_state: state("shards.degrade_conf_state", &r.degrade_conf_state)?,
            degrade_run_state: state("shards.degrade_run_state", &r.degrade_run_state)?,
            degrade_conf_time: r.degrade_conf_time,
            status: state("shards.status", &r.status)?,
            coldbackup_period: r.coldbackup_period,
            when_created: Some(r.when_created),
        })
    }
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = shards)]
pub(crate) struct NewShardRow {
    pub name: String,
    pub when_created: NaiveDateTime,
    pub num_nodes: i64,
    pub db_cluster_id: i64,
    pub sync_num: i64,
}

#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = shard_nodes, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct ShardNodeRow {
    pub id: i64,
    pub shard_id: i64,
    pub db_cluster_id: i64,
    pub hostaddr: String,
    pub port: i64,
    pub user_name: String,
    pub passwd: String,
    pub master_priority: i64,
    pub ro_weight: i64,
    pub status: String,
    pub member_state: String,
    pub sync_state: String,
    pub replica_delay: i64,
    pub backup_node: String,
    pub innodb_buffer_pool_mb: i64,
    pub when_created: NaiveDateTime,
}

impl TryFrom<ShardNodeRow> for ShardNode {
    type Error = Error;
    fn try_from(r: ShardNodeRow) -> Result<ShardNode> {
        Ok(ShardNode {
            id: r.id,
            shard_id: r.shard_id,
            db_cluster_id: r.db_cluster_id,
            hostaddr: r.hostaddr,
            port: port("shard_nodes.port", r.port)?,
            user_name: r.user_name,
            passwd: r.passwd,
            master_priority: r.master_priority,
            ro_weight: r.ro_weight,
            status: state("shard_nodes.status", &r.status)?,
            member_state: state("shard_nodes.member_state", &r.member_state)?,
            sync_state: state("shard_nodes.sync_state", &r.sync_state)?,
            replica_delay: r.replica_delay,
            backup_node: state("shard_nodes.backup_node", &r.backup_node)?,
            innodb_buffer_pool_mb: r.innodb_buffer_pool_mb,
            when_created: Some(r.when_created),
        })
    }
}

#[derive(Clone, Insertable)]
#[diesel(table_name = shard_nodes)]
pub(crate) struct NewShardNodeRow {
    pub shard_id: i64,
    pub db_cluster_id: i64,
    pub hostaddr: String,
    pub port: i64,
    pub user_name: String,
    pub passwd: String,
    pub master_priority: i64,
    pub member_state: String,
    pub status: String,
    pub innodb_buffer_pool_mb: i64,
    pub when_created: NaiveDateTime,
}

impl NewShardNodeRow {
    pub(crate) fn new(n: &NewShardNode, now: NaiveDateTime) -> Self {
        NewShardNodeRow {
            shard_id: n.shard_id,
            db_cluster_id: n.db_cluster_id,
            hostaddr: n.hostaddr.clone(),
            port: i64::from(n.port),
            user_name: n.user_name.clone(),
            passwd: n.passwd.clone(),
            master_priority: n.master_priority,
            member_state: n.member_state.as_str().to_string(),
            status: n.status.as_str().to_string(),
            innodb_buffer_pool_mb: n.innodb_buffer_pool_mb,
            when_created: now,
        }
    }
}

#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = comp_nodes, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct CompNodeRow {
    pub id: i64,
    pub db_cluster_id: i64,
    pub name: String,
    pub hostaddr: String,
    pub port: i64,
    pub user_name: String,
    pub passwd: String,
    pub status: String,
    pub max_conns: i64,
    pub when_created: NaiveDateTime,
}

impl TryFrom<CompNodeRow> for CompNode {
    type Error = Error;
    fn try_from(r: CompNodeRow) -> Result<CompNode> {
        Ok(CompNode {
            id: r.id,
            db_cluster_id: r.db_cluster_id,
            name: r.name,
            hostaddr: r.hostaddr,
            port: port("comp_nodes.port", r.port)?,
            user_name: r.user_name,
            passwd: r.passwd,
            status: state("comp_nodes.status", &r.status)?,
            max_conns: r.max_conns,
            when_created: Some(r.when_created),
        })
    }
}

#[derive(Clone, Insertable)]
#[diesel(table_name = comp_nodes)]
pub(crate) struct NewCompNodeRow {
    pub id: i64,
    pub db_cluster_id: i64,
    pub name: String,
    pub hostaddr: String,
    pub port: i64,
    pub user_name: String,
    pub passwd: String,
    pub status: String,
    pub max_conns: i64,
    pub when_created: NaiveDateTime,
}

impl NewCompNodeRow {
    pub(crate) fn new(n: &NewCompNode, now: NaiveDateTime) -> Self {
        NewCompNodeRow {
            id: n.id,
            db_cluster_id: n.db_cluster_id,
            name: n.name.clone(),
            hostaddr: n.hostaddr.clone(),
            port: i64::from(n.port),
            user_name: n.user_name.clone(),
            passwd: n.passwd.clone(),
            status: n.status.as_str().to_string(),
            max_conns: n.max_conns,
            when_created: now,
        }
    }
}

#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = meta_db_nodes, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct MetaDbNodeRow {
    pub id: i64,
    pub hostaddr: String,
    pub port: i64,
    pub user_name: String,
    pub passwd: String,
    pub master_priority: i64,
    pub member_state: String,
    pub sync_state: String,
}

impl TryFrom<MetaDbNodeRow> for MetaDbNode {
    type Error = Error;
    fn try_from(r: MetaDbNodeRow) -> Result<MetaDbNode> {
        Ok(MetaDbNode {
            id: r.id,
            hostaddr: r.hostaddr,
            port: port("meta_db_nodes.port", r.port)?,
            user_name: r.user_name,
            passwd: r.passwd,
            master_priority: r.master_priority,
            member_state: state("meta_db_nodes.member_state", &r.member_state)?,
            sync_state: state("meta_db_nodes.sync_state", &r.sync_state)?,
        })
    }
}

#[derive(Clone, Insertable)]
#[diesel(table_name = meta_db_nodes)]
pub(crate) struct NewMetaDbNodeRow {
    pub hostaddr: String,
    pub port: i64,
    pub user_name: String,
    pub passwd: String,
    pub master_priority: i64,
    pub member_state: String,
    pub sync_state: String,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = cluster_general_job_log, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct JobRow {
    pub id: i64,
    pub related_id: String,
    pub job_type: String,
    pub status: String,
    pub memo: Option<String>,
    pub when_started: NaiveDateTime,
    pub when_ended: Option<NaiveDateTime>,
    pub job_info: Option<String>,
    pub user_name: Option<String>,
}

impl TryFrom<JobRow> for Job {
    type Error = Error;
    fn try_from(r: JobRow) -> Result<Job> {
        Ok(Job {
            id: r.id,
            job_type: r.job_type,
            status: state("cluster_general_job_log.status", &r.status)?,
            job_info: json(r.job_info),
            memo: json(r.memo),
            user_name: r.user_name,
            related_id: Some(r.related_id),
            when_started: Some(r.when_started),
            when_ended: r.when_ended,
        })
    }
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = cluster_general_job_log)]
pub(crate) struct NewJobRow {
    pub job_type: String,
    pub status: String,
    pub job_info: Option<String>,
    pub user_name: Option<String>,
    pub when_started: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = node_map_master, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct NodeMapMasterRow {
    pub cluster_id: i64,
    pub node_host: String,
    pub master_host: String,
    pub master_uuid: Option<String>,
}

impl From<NodeMapMasterRow> for NodeMapMaster {
    fn from(r: NodeMapMasterRow) -> Self {
        NodeMapMaster {
            cluster_id: r.cluster_id,
            node_host: r.node_host,
            master_host: r.master_host,
            master_uuid: r.master_uuid,
        }
    }
}

impl From<&NodeMapMaster> for NodeMapMasterRow {
    fn from(m: &NodeMapMaster) -> Self {
        NodeMapMasterRow {
            cluster_id: m.cluster_id,
            node_host: m.node_host.clone(),
            master_host: m.master_host.clone(),
            master_uuid: m.master_uuid.clone(),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = cluster_mgr_nodes, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct ClusterMgrNodeRow {
    pub hostaddr: String,
    pub port: i64,
    pub prometheus_port: Option<i64>,
    pub member_state: String,
}

impl TryFrom<ClusterMgrNodeRow> for ClusterMgrNode {
    type Error = Error;
    fn try_from(r: ClusterMgrNodeRow) -> Result<ClusterMgrNode> {
        Ok(ClusterMgrNode {
            hostaddr: r.hostaddr,
            port: port("cluster_mgr_nodes.port", r.port)?,
            prometheus_port: r
                .prometheus_port
                .map(|p| port("cluster_mgr_nodes.prometheus_port", p))
                .transpose()?,
            member_state: state("cluster_mgr_nodes.member_state", &r.member_state)?,
        })
    }
}

impl From<&ClusterMgrNode> for ClusterMgrNodeRow {
    fn from(n: &ClusterMgrNode) -> Self {
        ClusterMgrNodeRow {
            hostaddr: n.hostaddr.clone(),
            port: i64::from(n.port),
            prometheus_port: n.prometheus_port.map(i64::from),
            member_state: n.member_state.as_str().to_string(),
        }
    }
}

/// The leadership lease row (`kl_leader_lease`).
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = kl_leader_lease, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct LeaseRow {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
    pub expires_at: NaiveDateTime,
}

/// One row of a per-cluster `commit_log_<name>` (typed by its template table).
#[derive(Debug, Clone, QueryableByName)]
#[diesel(table_name = commit_log_template_table, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub(crate) struct CommitLogRow {
    pub comp_node_id: i64,
    pub txn_id: i64,
    pub next_txn_cmd: String,
    pub prepare_ts: NaiveDateTime,
}

impl TryFrom<CommitLogRow> for CommitLogEntry {
    type Error = Error;
    fn try_from(r: CommitLogRow) -> Result<CommitLogEntry> {
        Ok(CommitLogEntry {
            comp_node_id: r.comp_node_id,
            txn_id: u64::try_from(r.txn_id)
                .map_err(|_| Error::Database(format!("stored txn_id {} is negative", r.txn_id)))?,
            next_txn_cmd: state("commit_log.next_txn_cmd", &r.next_txn_cmd)?,
            prepare_ts: Some(r.prepare_ts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine_row() -> (MachineRow, SshRow) {
        (
            MachineRow {
                id: 7,
                hostaddr: "127.0.0.2".into(),
                machine_type: Some("storage".into()),
                rack_id: Some("r'1;--".into()),
                comp_datadir: None,
                datadir: Some("/data/a;/data/b".into()),
                total_mem: Some(1024),
                total_cpu_cores: None,
                node_stats: "idle".into(),
                port_range: Some("57000-58000".into()),
                used_port: Some("57000,57010".into()),
                installing_port: Some(String::new()),
                svc_since: None,
            },
            SshRow {
                server_node_id: 7,
                ssh_port: 2222,
                ssh_user: "kl".into(),
                ssh_key_path: "/k".into(),
            },
        )
    }

    #[test]
    fn machine_row_converts_lists_and_states() {
        let m = Machine::try_from(machine_row()).unwrap();
        assert_eq!(m.data_dirs, vec!["/data/a", "/data/b"]);
        assert_eq!(m.used_ports, vec![57000, 57010]);
        assert!(m.installing_ports.is_empty());
        assert_eq!(m.node_stats, NodeStats::Idle);
        assert_eq!(m.ssh.port, 2222);
        assert_eq!(m.rack_id.as_deref(), Some("r'1;--"));
    }

    #[test]
    fn corrupt_rows_are_database_errors_naming_the_column() {
        let (mut r, s) = machine_row();
        r.node_stats = "zombie".into();
        let e = Machine::try_from((r, s.clone())).unwrap_err();
        assert!(
            matches!(&e, Error::Database(m) if m.contains("server_nodes.node_stats")),
            "{e}"
        );
        let (mut r, _) = machine_row();
        r.used_port = Some("57000,x".into());
        assert!(Machine::try_from((r, s.clone())).is_err());
        let (r, mut s) = machine_row();
        s.ssh_port = 70000;
        assert!(Machine::try_from((r, s)).is_err());
    }

    #[test]
    fn new_machine_row_places_dirs_by_type() {
        let nm = NewMachine {
            hostaddr: "h".into(),
            machine_type: MachineType::Computer,
            rack_id: None,
            data_dirs: vec!["/c1".into(), "/c2".into()],
            port_range: "47000-48000".into(),
            total_mem_mb: None,
            total_cpu_cores: None,
            ssh: SshAccess {
                port: 22,
                user: "root".into(),
                key_path: "/k".into(),
            },
        };
        let row = NewMachineRow::new(&nm, NaiveDateTime::default());
        assert_eq!(row.comp_datadir.as_deref(), Some("/c1;/c2"));
        assert!(row.datadir.is_none());
        assert_eq!(join_ports(&[1, 2]), "1,2");
    }

    #[test]
    fn job_text_that_is_not_json_is_kept() {
        assert_eq!(
            json(Some("{\"a\":1}".into())),
            Some(serde_json::json!({"a": 1}))
        );
        assert_eq!(
            json(Some("plain".into())),
            Some(serde_json::Value::String("plain".into()))
        );
        assert_eq!(json(None), None);
    }
}
