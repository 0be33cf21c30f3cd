//! The rows a compute node's catalog must hold for its cluster, computed from the metadata by
//! a pure function ([`desired_catalog`]), so what is routed where is unit-tested without IO.
//!
//! Invariant: the primary written in `pg_shard.master_node_id` is exactly metadata's
//! `member_state = source` node (or, for `no_rep`, the shard's only/first node); a shard with
//! two recorded primaries is refused rather than routed by guess. Passwords never appear in
//! `Debug` or serialised output.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use chrono::{NaiveDateTime, SubsecRound};
use kunlun_meta::model::{
    Cluster, CompNode, HaMode, MemberState, MetaDbNode, NodeStatus, Shard, ShardNode,
};
use serde::Serialize;

use crate::error::{Error, Result};

/// Kunlun's numeric `ha_mode` in `pg_cluster_meta` (0 no_rep, 1 mgr, 2 rbr).
pub fn ha_mode_code(m: HaMode) -> i16 {
    match m {
        HaMode::NoRep => 0,
        HaMode::Mgr => 1,
        HaMode::Rbr => 2,
    }
}

/// One row of `kunlun_sys.pg_cluster_meta`: who this compute node is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ClusterMetaRow {
    pub comp_node_id: i64,
    pub cluster_id: i64,
    /// Id of the metadata shard's primary (`meta_db_nodes`), 0 when not known (SQLite store).
    pub cluster_master_id: i64,
    pub ha_mode: i16,
    pub cluster_name: String,
    pub comp_node_name: String,
    pub meta_ha_mode: i16,
}

/// One row of `kunlun_sys.pg_cluster_meta_nodes`: a node of the metadata shard.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MetaNodeRow {
    pub server_id: i64,
    pub cluster_id: i64,
    pub is_master: bool,
    pub port: i32,
    pub user_name: String,
    pub hostaddr: String,
    #[serde(skip_serializing)]
    pub passwd: String,
}

/// One row of `kunlun_sys.pg_shard`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ShardRow {
    pub id: i64,
    pub name: String,
    /// Nodes listed for the shard in `pg_shard_node`.
    pub num_nodes: i32,
    /// The primary's `pg_shard_node.id`; 0 when the shard has none recorded.
    pub master_node_id: i64,
    pub space_volumn: i64,
    pub num_tablets: i32,
    pub db_cluster_id: i64,
    pub when_created: Option<NaiveDateTime>,
}

/// One row of `kunlun_sys.pg_shard_node`: a storage node and how compute nodes log in to it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ShardNodeRow {
    pub id: i64,
    pub port: i32,
    pub shard_id: i64,
    pub svr_node_id: i64,
    pub ro_weight: i16,
    pub user_name: String,
    pub hostaddr: String,
    #[serde(skip_serializing)]
    pub passwd: String,
    pub when_created: Option<NaiveDateTime>,
}

impl std::fmt::Debug for MetaNodeRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaNodeRow")
            .field("server_id", &self.server_id)
            .field("cluster_id", &self.cluster_id)
            .field("is_master", &self.is_master)
            .field("hostaddr", &self.hostaddr)
            .field("port", &self.port)
            .field("user_name", &self.user_name)
            .field("passwd", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for ShardNodeRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardNodeRow")
            .field("id", &self.id)
            .field("shard_id", &self.shard_id)
            .field("hostaddr", &self.hostaddr)
            .field("port", &self.port)
            .field("user_name", &self.user_name)
            .field("ro_weight", &self.ro_weight)
            .field("svr_node_id", &self.svr_node_id)
            .field("when_created", &self.when_created)
            .field("passwd", &"<redacted>")
            .finish()
    }
}

/// Every catalog row of one cluster, sorted by key. Computed for a whole cluster it holds one
/// `pg_cluster_meta` row per compute node; [`CatalogRows::for_comp`] is what one compute node
/// holds, and what [`super::read_catalog`] returns for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct CatalogRows {
    pub cluster_meta: Vec<ClusterMetaRow>,
    pub meta_nodes: Vec<MetaNodeRow>,
    pub shards: Vec<ShardRow>,
    pub shard_nodes: Vec<ShardNodeRow>,
}

impl CatalogRows {
    /// The rows compute node `comp_node_id` must hold: its own `pg_cluster_meta` row and all
    /// the cluster-wide rows.
    pub fn for_comp(&self, comp_node_id: i64) -> CatalogRows {
        CatalogRows {
            cluster_meta: self
                .cluster_meta
                .iter()
                .filter(|r| r.comp_node_id == comp_node_id)
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// The shard row of `shard_id`.
    pub fn shard(&self, shard_id: i64) -> Option<&ShardRow> {
        self.shards.iter().find(|s| s.id == shard_id)
    }

    /// A stable digest of the rows (passwords included, so a changed password is pushed too);
    /// the catalog sync compares it with the last pushed one.
    pub fn digest(&self) -> u64 {
        // DefaultHasher::new() uses fixed keys: equal rows give equal digests in a process.
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }

    /// Sorts every table by its key (what [`desired_catalog`] and the reader both do).
    pub(crate) fn sort(&mut self) {
        self.cluster_meta.sort_by_key(|r| r.comp_node_id);
        self.meta_nodes.sort_by_key(|r| r.server_id);
        self.shards.sort_by_key(|r| r.id);
        self.shard_nodes.sort_by_key(|r| (r.shard_id, r.id));
    }
}

/// What the metadata says about the metadata shard itself (for `pg_cluster_meta_nodes` and
/// `meta_ha_mode`); empty with the embedded SQLite store.
#[derive(Debug, Clone, Default)]
pub struct MetaShardInfo {
    pub nodes: Vec<MetaDbNode>,
    /// `global_configuration.meta_ha_mode`; `no_rep` when unset.
    pub ha_mode: Option<HaMode>,
}

/// How compute nodes log in to storage nodes.
#[derive(Clone, Default)]
pub enum StorageLogin {
    /// The per-cluster `pgx` user and its password (Kunlun's choice).
    Pgx { user: String, password: String },
    /// Each node's own `shard_nodes.user_name/passwd` (used while no `pgx` password is
    /// stored in the metadata).
    #[default]
    NodeAccount,
}

impl std::fmt::Debug for StorageLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageLogin::Pgx { user, .. } => write!(f, "Pgx({user}, <redacted>)"),
            StorageLogin::NodeAccount => f.write_str("NodeAccount"),
        }
    }
}

/// PostgreSQL keeps microseconds; truncating here makes the pushed rows equal what is read back.
fn micros(t: Option<NaiveDateTime>) -> Option<NaiveDateTime> {
    t.map(|t| t.trunc_subsecs(6))
}

/// A storage node that compute nodes may be routed to: not taken out of service.
fn listed(n: &ShardNode) -> bool {
    n.member_state == MemberState::Source
        || !matches!(
            n.status,
            NodeStatus::Inactive | NodeStatus::Deleted | NodeStatus::ManualStop
        )
}

/// The catalog rows of `cluster` from its metadata: `shards` and `nodes` of the cluster (rows
/// of other clusters are ignored), its compute nodes `comps`, and the metadata shard `meta`.
///
/// A storage node is listed unless it is inactive, deleted or manually stopped (the recorded
/// primary is always listed); `num_nodes` counts the listed nodes. `master_node_id` is the
/// `source` node; for `no_rep` a shard without one routes to its lowest-id node; 0 when none.
pub fn desired_catalog(
    cluster: &Cluster,
    shards: &[Shard],
    nodes: &[ShardNode],
    comps: &[CompNode],
    meta: &MetaShardInfo,
    login: &StorageLogin,
) -> Result<CatalogRows> {
    let meta_master = meta
        .nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source)
        .map_or(0, |n| n.id);
    let meta_ha = ha_mode_code(meta.ha_mode.unwrap_or(HaMode::NoRep));
    let mut rows = CatalogRows {
        cluster_meta: comps
            .iter()
            .filter(|c| c.db_cluster_id == cluster.id)
            .map(|c| ClusterMetaRow {
                comp_node_id: c.id,
                cluster_id: cluster.id,
                cluster_master_id: meta_master,
                ha_mode: ha_mode_code(cluster.ha_mode),
                cluster_name: cluster.name.clone(),
                comp_node_name: c.name.clone(),
                meta_ha_mode: meta_ha,
            })
            .collect(),
        meta_nodes: meta
            .nodes
            .iter()
            .map(|n| MetaNodeRow {
                server_id: n.id,
                cluster_id: cluster.id,
                is_master: n.member_state == MemberState::Source,
                port: i32::from(n.port),
                user_name: n.user_name.clone(),
                hostaddr: n.hostaddr.clone(),
                passwd: n.passwd.clone(),
            })
            .collect(),
        shards: Vec::new(),
        shard_nodes: Vec::new(),
    };
    for s in shards.iter().filter(|s| s.db_cluster_id == cluster.id) {
        let mut mine: Vec<&ShardNode> = nodes
            .iter()
            .filter(|n| n.shard_id == s.id && listed(n))
            .collect();
        mine.sort_by_key(|n| n.id);
        let sources: Vec<i64> = mine
            .iter()
            .filter(|n| n.member_state == MemberState::Source)
            .map(|n| n.id)
            .collect();
        let master = match (sources.as_slice(), cluster.ha_mode) {
            ([one], _) => *one,
            ([], HaMode::NoRep) => mine.first().map_or(0, |n| n.id),
            ([], _) => 0,
            (many, _) => {
                return Err(Error::Conflict(format!(
                    "shard {} ({}) has {} nodes recorded as primary ({:?}); not routing by guess",
                    s.id,
                    s.name,
                    many.len(),
                    many
                )))
            }
        };
        rows.shards.push(ShardRow {
            id: s.id,
            name: s.name.clone(),
            num_nodes: i32::try_from(mine.len()).unwrap_or(i32::MAX),
            master_node_id: master,
            space_volumn: s.space_volumn,
            num_tablets: i32::try_from(s.num_tablets).unwrap_or(i32::MAX),
            db_cluster_id: cluster.id,
            when_created: micros(s.when_created),
        });
        for n in mine {
            let (user, passwd) = match login {
                StorageLogin::Pgx { user, password } => (user.clone(), password.clone()),
                StorageLogin::NodeAccount => (n.user_name.clone(), n.passwd.clone()),
            };
            rows.shard_nodes.push(ShardNodeRow {
                id: n.id,
                port: i32::from(n.port),
                shard_id: s.id,
                // Kunlun points every node at its pseudo server row 1.
                svr_node_id: 1,
                ro_weight: i16::try_from(n.ro_weight).unwrap_or(i16::MAX),
                user_name: user,
                hostaddr: n.hostaddr.clone(),
                passwd,
                when_created: micros(n.when_created),
            });
        }
    }
    rows.sort();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::model::{ClusterStatus, OnOff, SyncState};

    fn cluster(ha: HaMode) -> Cluster {
        Cluster {
            id: 7,
            name: "c7".into(),
            nick_name: None,
            owner: None,
            ddl_log_tblname: None,
            business: None,
            ha_mode: ha,
            status: ClusterStatus::Inuse,
            memo: None,
            when_created: None,
        }
    }

    fn shard(id: i64, cluster: i64) -> Shard {
        Shard {
            id,
            name: format!("shard_{id}"),
            db_cluster_id: cluster,
            num_nodes: 3,
            space_volumn: 100 * id,
            num_tablets: id,
            sync_num: 1,
            degrade_conf_state: OnOff::Off,
            degrade_run_state: OnOff::Off,
            degrade_conf_time: 0,
            status: ClusterStatus::Inuse,
            coldbackup_period: None,
            when_created: None,
        }
    }

    fn node(id: i64, shard: i64, source: bool, status: NodeStatus) -> ShardNode {
        ShardNode {
            id,
            shard_id: shard,
            db_cluster_id: 7,
            hostaddr: "127.0.0.1".into(),
            port: 3000 + id as u16,
            user_name: "clustmgr".into(),
            passwd: format!("pw{id}"),
            master_priority: 0,
            ro_weight: 0,
            status,
            member_state: if source {
                MemberState::Source
            } else {
                MemberState::Replica
            },
            sync_state: SyncState::Fsync,
            replica_delay: 0,
            backup_node: OnOff::Off,
            innodb_buffer_pool_mb: 64,
            when_created: None,
        }
    }

    fn comp(id: i64, cluster: i64) -> CompNode {
        CompNode {
            id,
            db_cluster_id: cluster,
            name: format!("comp{id}"),
            hostaddr: "127.0.0.1".into(),
            port: 5400 + id as u16,
            user_name: "abc".into(),
            passwd: "comp-secret".into(),
            status: NodeStatus::Active,
            max_conns: 100,
            when_created: None,
        }
    }

    fn topology() -> (Vec<Shard>, Vec<ShardNode>, Vec<CompNode>) {
        let a = NodeStatus::Active;
        (
            vec![shard(2, 7), shard(1, 7), shard(9, 8)],
            vec![
                node(12, 2, false, a),
                node(11, 2, true, a),
                node(13, 2, false, NodeStatus::Inactive),
                node(1, 1, false, a),
                node(2, 1, true, a),
                node(3, 1, false, a),
                node(90, 9, true, a),
            ],
            vec![comp(5, 7), comp(4, 7), comp(6, 8)],
        )
    }

    #[test]
    fn primaries_come_from_member_state_and_other_clusters_are_ignored() {
        let (s, n, c) = topology();
        let rows = desired_catalog(
            &cluster(HaMode::Rbr),
            &s,
            &n,
            &c,
            &MetaShardInfo::default(),
            &StorageLogin::NodeAccount,
        )
        .unwrap();
        assert_eq!(rows.shards.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(rows.shard(1).unwrap().master_node_id, 2);
        assert_eq!(rows.shard(2).unwrap().master_node_id, 11);
        // The inactive node 13 is not routed to and not counted.
        assert_eq!(rows.shard(1).unwrap().num_nodes, 3);
        assert_eq!(rows.shard(2).unwrap().num_nodes, 2);
        let ids: Vec<i64> = rows.shard_nodes.iter().map(|n| n.id).collect();
        assert_eq!(ids, [1, 2, 3, 11, 12]);
        assert_eq!(
            rows.cluster_meta
                .iter()
                .map(|m| m.comp_node_id)
                .collect::<Vec<_>>(),
            [4, 5]
        );
        let m = &rows.cluster_meta[0];
        assert_eq!((m.ha_mode, m.meta_ha_mode, m.cluster_master_id), (2, 0, 0));
        assert_eq!(
            (m.cluster_name.as_str(), m.comp_node_name.as_str()),
            ("c7", "comp4")
        );
        assert_eq!(rows.for_comp(5).cluster_meta.len(), 1);
        assert_eq!(rows.for_comp(5).shard_nodes, rows.shard_nodes);
    }

    #[test]
    fn times_are_kept_to_the_microsecond_as_postgresql_stores_them() {
        let (mut s, n, c) = topology();
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789)
            .unwrap()
            .naive_utc();
        s[1].when_created = Some(t);
        let rows = desired_catalog(
            &cluster(HaMode::Rbr),
            &s,
            &n,
            &c,
            &MetaShardInfo::default(),
            &StorageLogin::NodeAccount,
        )
        .unwrap();
        let got = rows.shard(1).unwrap().when_created.unwrap();
        assert_eq!(got.and_utc().timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn storage_login_is_pgx_when_known_else_the_node_account() {
        let (s, n, c) = topology();
        let cl = cluster(HaMode::Rbr);
        let meta = MetaShardInfo::default();
        let own = desired_catalog(&cl, &s, &n, &c, &meta, &StorageLogin::NodeAccount).unwrap();
        assert!(own
            .shard_nodes
            .iter()
            .all(|r| r.user_name == "clustmgr" && r.passwd == format!("pw{}", r.id)));
        let pgx = StorageLogin::Pgx {
            user: "pgx".into(),
            password: "it's \"x\"".into(),
        };
        let rows = desired_catalog(&cl, &s, &n, &c, &meta, &pgx).unwrap();
        assert!(rows
            .shard_nodes
            .iter()
            .all(|r| r.user_name == "pgx" && r.passwd == "it's \"x\""));
        assert_ne!(rows.digest(), own.digest());
        let shown = format!("{rows:?} {pgx:?}");
        assert!(!shown.contains("it's") && !shown.contains("pw1"), "{shown}");
        let json = serde_json::to_string(&rows).unwrap();
        assert!(!json.contains("it's") && !json.contains("passwd"), "{json}");
    }

    #[test]
    fn a_changed_primary_changes_the_rows_and_the_digest() {
        let (s, mut n, c) = topology();
        let cl = cluster(HaMode::Rbr);
        let meta = MetaShardInfo::default();
        let login = StorageLogin::NodeAccount;
        let before = desired_catalog(&cl, &s, &n, &c, &meta, &login).unwrap();
        assert_eq!(
            before,
            desired_catalog(&cl, &s, &n, &c, &meta, &login).unwrap()
        );
        assert_eq!(
            before.digest(),
            desired_catalog(&cl, &s, &n, &c, &meta, &login)
                .unwrap()
                .digest()
        );
        for x in n.iter_mut().filter(|x| x.shard_id == 1) {
            x.member_state = if x.id == 3 {
                MemberState::Source
            } else {
                MemberState::Replica
            };
        }
        let after = desired_catalog(&cl, &s, &n, &c, &meta, &login).unwrap();
        assert_eq!(after.shard(1).unwrap().master_node_id, 3);
        assert_ne!(before.digest(), after.digest());
    }

    #[test]
    fn two_recorded_primaries_are_refused_and_no_rep_falls_back_to_the_first_node() {
        let (s, mut n, c) = topology();
        let meta = MetaShardInfo::default();
        let login = StorageLogin::NodeAccount;
        n.push(node(4, 1, true, NodeStatus::Active));
        let e = desired_catalog(&cluster(HaMode::Rbr), &s, &n, &c, &meta, &login).unwrap_err();
        assert!(e.to_string().contains("shard 1"), "{e}");

        let n = vec![node(21, 1, false, NodeStatus::Active)];
        let rows = desired_catalog(&cluster(HaMode::NoRep), &s, &n, &c, &meta, &login).unwrap();
        assert_eq!(rows.shard(1).unwrap().master_node_id, 21);
        assert_eq!(rows.shard(2).unwrap().master_node_id, 0);
        assert_eq!(rows.shard(2).unwrap().num_nodes, 0);
        let rows = desired_catalog(&cluster(HaMode::Rbr), &s, &n, &c, &meta, &login).unwrap();
        assert_eq!(rows.shard(1).unwrap().master_node_id, 0);
    }

    #[test]
    fn metadata_shard_nodes_and_its_primary_are_listed() {
        let (s, n, c) = topology();
        let meta = MetaShardInfo {
            nodes: vec![
                MetaDbNode {
                    id: 2,
                    hostaddr: "10.0.0.2".into(),
                    port: 3306,
                    user_name: "clustmgr".into(),
                    passwd: "m".into(),
                    master_priority: 1,
                    member_state: MemberState::Source,
                    sync_state: SyncState::Fsync,
                },
                MetaDbNode {
                    id: 1,
                    hostaddr: "10.0.0.1".into(),
                    port: 3306,
                    user_name: "clustmgr".into(),
                    passwd: "m".into(),
                    master_priority: 1,
                    member_state: MemberState::Replica,
                    sync_state: SyncState::Fsync,
                },
            ],
            ha_mode: Some(HaMode::Rbr),
        };
        let rows = desired_catalog(
            &cluster(HaMode::NoRep),
            &s,
            &n,
            &c,
            &meta,
            &StorageLogin::NodeAccount,
        )
        .unwrap();
        assert_eq!(
            rows.meta_nodes
                .iter()
                .map(|m| (m.server_id, m.is_master))
                .collect::<Vec<_>>(),
            [(1, false), (2, true)]
        );
        assert!(rows
            .cluster_meta
            .iter()
            .all(|m| m.cluster_master_id == 2 && m.meta_ha_mode == 2 && m.ha_mode == 0));
    }
}
