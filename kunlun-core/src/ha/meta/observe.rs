//! What `GET /v1/meta` shows of the metadata shard: each node as `meta_db_nodes` records it
//! and as a probe sees it now (`read_only`, replication threads, GTID positions), and which
//! node this instance's store uses.
//!
//! Invariants: every probe has the storage client's deadlines and all run at once, so the
//! answer takes at most one probe's time; at most [`MAX_NODES`] nodes are probed; a probe that
//! fails is data (`unreachable` with the reason), never an error of the call.

use kunlun_meta::api::{MetaChannel, MetaNode, MetaNodeObserved, MetaShard};
use kunlun_meta::model::{MemberState, MetaDbNode};
use kunlun_meta::store::{repo, BackendKind, Store};

use crate::config::MetaShardLogins;
use crate::storage::probe::text;
use crate::storage::{NodeAddr, StorageConn, StorageOptions};

/// Most nodes one answer probes.
pub const MAX_NODES: usize = 16;

/// `host:port` as the store's seeds spell it (IPv6 in brackets).
pub fn seed_of(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The role a probe shows: see [`MetaNodeObserved::role`].
pub fn observed_role(reachable: bool, read_only: bool, replicates: bool) -> &'static str {
    match (reachable, read_only, replicates) {
        (false, _, _) => "unreachable",
        (true, false, false) => "primary",
        (true, true, true) => "replica",
        (true, false, true) => "writable_replica",
        (true, true, false) => "read_only",
    }
}

/// Probes one node: the variables (required), its channels and semi-sync state (each
/// optional: a login without the monitor privileges still sees `read_only` and GTIDs).
pub async fn observe_node(addr: &NodeAddr, opts: StorageOptions) -> MetaNodeObserved {
    let mut c = match StorageConn::connect(addr, opts).await {
        Ok(c) => c,
        Err(e) => return unreachable(e.to_string()),
    };
    let vars: Result<Vec<mysql_async::Row>, _> = c
        .query("SELECT @@read_only AS ro, @@gtid_current_pos AS cur, @@gtid_binlog_pos AS bin")
        .await;
    let row = match vars {
        Ok(rows) => match rows.into_iter().next() {
            Some(r) => r,
            None => {
                c.close().await;
                return unreachable("no answer to the variables".into());
            }
        },
        Err(e) => {
            c.close().await;
            return unreachable(e.to_string());
        }
    };
    let slaves: Option<Vec<mysql_async::Row>> = c.query("SHOW ALL SLAVES STATUS").await.ok();
    let semi: Option<Vec<(String, String)>> = c
        .query("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")
        .await
        .ok();
    c.close().await;
    let read_only = text(&row, "ro").as_deref() == Some("1");
    let replication: Vec<MetaChannel> = slaves
        .unwrap_or_default()
        .iter()
        .map(crate::storage::probe::channel)
        .map(|ch| MetaChannel {
            source: seed_of(&ch.master_host, ch.master_port),
            io_running: ch.io_running.clone(),
            sql_running: ch.sql_running,
            gtid_io_pos: ch.gtid_io_pos.clone(),
            last_error: [&ch.last_io_error, &ch.last_sql_error]
                .into_iter()
                .find(|e| !e.is_empty())
                .cloned(),
        })
        .collect();
    MetaNodeObserved {
        role: observed_role(true, read_only, !replication.is_empty()).to_string(),
        reachable: true,
        error: None,
        read_only: Some(read_only),
        gtid_current_pos: text(&row, "cur"),
        gtid_binlog_pos: text(&row, "bin"),
        replication,
        semi_sync_master_active: semi
            .and_then(|v| v.first().map(|(_, on)| on.eq_ignore_ascii_case("ON"))),
    }
}

fn unreachable(error: String) -> MetaNodeObserved {
    MetaNodeObserved {
        role: observed_role(false, false, false).to_string(),
        reachable: false,
        error: Some(error),
        ..MetaNodeObserved::default()
    }
}

/// Whether the leader fails the metadata shard over, or why not (`nodes`: `meta_db_nodes`
/// rows).
pub fn failover_state(backend: BackendKind, logins: &MetaShardLogins, nodes: usize) -> String {
    match (backend, &logins.admin, nodes) {
        (BackendKind::Sqlite, _, _) => "off: the metadata is an embedded SQLite file".into(),
        (_, None, _) => "off: meta_ha_user is not set".into(),
        (_, Some(_), 0) => "off: no meta_db_nodes rows: register the metadata nodes there \
             (hostaddr, port, member_state)"
            .into(),
        (_, Some(_), 1) => "off: meta_db_nodes has 1 node; a failover needs a replica".into(),
        _ => "on".into(),
    }
}

/// The answer of `GET /v1/meta` for `store`.
pub async fn describe(store: &Store, logins: &MetaShardLogins, opts: StorageOptions) -> MetaShard {
    if store.kind() == BackendKind::Sqlite {
        return MetaShard {
            backend: "sqlite".into(),
            store: store.describe(),
            note: Some(
                "the metadata is an embedded SQLite file of this instance: there is no \
                 metadata shard (meta_backend = mysql with meta_group_seeds for one)"
                    .into(),
            ),
            follow: None,
            failover: failover_state(BackendKind::Sqlite, logins, 0),
            nodes: Vec::new(),
        };
    }
    let follow = store.follow_status();
    // Bounded by the store's own deadline, never its wait for a new primary: this answer
    // matters most while the primary is down.
    let rows: Vec<MetaDbNode> = match tokio::time::timeout(
        opts.connect_timeout + opts.read_timeout,
        store.read(async |tx| repo::meta::list_meta_nodes(tx).await),
    )
    .await
    {
        Ok(Ok(rows)) => rows,
        _ => Vec::new(),
    };
    let mut nodes: Vec<(Option<i64>, String, u16, Option<MemberState>)> = rows
        .iter()
        .map(|n| (Some(n.id), n.hostaddr.clone(), n.port, Some(n.member_state)))
        .collect();
    if nodes.is_empty() {
        for c in follow.iter().flat_map(|f| f.candidates.iter()) {
            if let Some((h, p)) = c.rsplit_once(':') {
                if let Ok(p) = p.parse() {
                    nodes.push((None, h.trim_matches(['[', ']']).to_string(), p, None));
                }
            }
        }
    }
    nodes.truncate(MAX_NODES);
    let login = logins.admin.clone().or(logins.store.clone());
    let probes = nodes.iter().map(|(_, host, port, _)| {
        let addr = NodeAddr {
            host: host.clone(),
            port: *port,
            user: login.as_ref().map(|l| l.user.clone()).unwrap_or_default(),
            password: login
                .as_ref()
                .map(|l| l.password.clone())
                .unwrap_or_default(),
        };
        async move { observe_node(&addr, opts).await }
    });
    let observed: Vec<MetaNodeObserved> = super::all_at_once(probes)
        .await
        .into_iter()
        .map(|o| o.unwrap_or_else(|| unreachable("the probe task failed".into())))
        .collect();
    let primary = store.primary().unwrap_or_default();
    let count = rows.len();
    MetaShard {
        backend: "mysql".into(),
        store: store.describe(),
        note: None,
        follow,
        failover: failover_state(BackendKind::Mysql, logins, count),
        nodes: nodes
            .into_iter()
            .zip(observed)
            .map(|((id, hostaddr, port, role), observed)| MetaNode {
                used_by_this_instance: seed_of(&hostaddr, port) == primary,
                id,
                hostaddr,
                port,
                recorded_role: role,
                observed,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::promote::Login;

    #[test]
    fn roles_follow_read_only_and_replication() {
        assert_eq!(observed_role(true, false, false), "primary");
        assert_eq!(observed_role(true, true, true), "replica");
        assert_eq!(observed_role(true, false, true), "writable_replica");
        assert_eq!(observed_role(true, true, false), "read_only");
        assert_eq!(observed_role(false, true, true), "unreachable");
        assert_eq!(seed_of("::1", 3306), "[::1]:3306");
        assert_eq!(seed_of("10.0.0.1", 3306), "10.0.0.1:3306");
    }

    #[test]
    fn failover_needs_mysql_an_admin_login_and_a_replica() {
        let mut l = MetaShardLogins::default();
        assert!(failover_state(BackendKind::Sqlite, &l, 3).contains("SQLite"));
        assert!(failover_state(BackendKind::Mysql, &l, 3).contains("meta_ha_user"));
        l.admin = Some(Login {
            user: "klha".into(),
            password: "x".into(),
        });
        assert!(failover_state(BackendKind::Mysql, &l, 1).contains("1 node"));
        assert!(failover_state(BackendKind::Mysql, &l, 0).contains("no meta_db_nodes rows"));
        assert_eq!(failover_state(BackendKind::Mysql, &l, 3), "on");
    }
}
