//! Upgrade of the system users' grants on storage nodes installed before least privilege
//! (`clustmgr` and `pgx` with `ALL PRIVILEGES … WITH GRANT OPTION`): each user is brought to
//! exactly its role's global privileges (see `kunlun_provision::recipe::storage_privileges`).
//!
//! Invariants: idempotent (a node whose grants already match costs one query and changes
//! nothing); never binary-logged (`sql_log_bin = 0` in the session, so no replica gets an
//! errant GTID, and every node is fixed on its own); the manager's own user is fixed last
//! (it keeps `GRANT OPTION`, which the fix of the others needs).

use std::collections::{BTreeSet, HashSet};

use kunlun_meta::store::{repo, Store};
use kunlun_provision::recipe::{
    storage_grant_option, storage_grants_sql, storage_privileges, UserRole,
};
use tokio::task::JoinSet;

use crate::accounts::{MANAGER_USER, PGX_USER, REPL_USER};
use crate::storage::{NodeAddr, StorageConn, StorageOptions};

/// The system users of a storage node and their roles, in the order they are fixed.
const USERS: [(&str, UserRole); 3] = [
    (PGX_USER, UserRole::Application),
    (REPL_USER, UserRole::Replication),
    (MANAGER_USER, UserRole::Admin),
];

/// Whether a user holding `have` (global privileges), `grantable` or not, needs a fix.
pub fn needs_fix(role: UserRole, have: &BTreeSet<String>, grantable: bool) -> bool {
    let want: BTreeSet<String> = storage_privileges(role)
        .into_iter()
        .map(str::to_string)
        .collect();
    grantable != storage_grant_option(role) || *have != want
}

/// Brings the system users of the node at `addr` (logged in to as the manager) to their
/// roles' grants; returns the users that were changed. A user that does not exist on the
/// node is left alone (installs create it).
pub async fn fix_node_grants(addr: &NodeAddr) -> crate::storage::Result<Vec<&'static str>> {
    let mut c = StorageConn::connect(addr, StorageOptions::default()).await?;
    let r = fix_on(&mut c).await;
    c.close().await;
    r
}

/// What [`fix_cluster_grants`] did on one storage node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGrants {
    pub node_id: i64,
    /// `host:port`.
    pub node: String,
    /// The users changed, or why the node could not be checked.
    pub result: std::result::Result<Vec<&'static str>, String>,
}

/// Runs [`fix_node_grants`] on every storage node of `cluster_id` not in `skip`, in
/// parallel (each under the storage deadlines), as the node's recorded manager login.
pub async fn fix_cluster_grants(
    store: &Store,
    cluster_id: i64,
    skip: &HashSet<i64>,
) -> crate::error::Result<Vec<NodeGrants>> {
    let nodes = store
        .read(async |tx| repo::nodes::list_by_cluster(tx, cluster_id).await)
        .await?;
    let mut set = JoinSet::new();
    for n in nodes.into_iter().filter(|n| !skip.contains(&n.id)) {
        let addr = NodeAddr {
            host: n.hostaddr.clone(),
            port: n.port,
            user: n.user_name.clone(),
            password: n.passwd.clone(),
        };
        set.spawn(async move {
            let result = fix_node_grants(&addr).await.map_err(|e| e.to_string());
            NodeGrants {
                node_id: n.id,
                node: format!("{}:{}", n.hostaddr, n.port),
                result,
            }
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.map_err(|e| crate::error::Error::Internal(format!("grants task failed: {e}")))?);
    }
    out.sort_by_key(|g| g.node_id);
    for g in &out {
        match &g.result {
            Ok(users) if !users.is_empty() => tracing::info!(
                cluster_id, node = %g.node, users = ?users,
                "system users' grants brought to least privilege"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(cluster_id, node = %g.node, error = %e,
                "grants of storage node not checked; retrying next round"),
        }
    }
    Ok(out)
}

async fn fix_on(c: &mut StorageConn) -> crate::storage::Result<Vec<&'static str>> {
    let mut changed = Vec::new();
    for (user, role) in USERS {
        let who = format!("'{user}'@'%'");
        // The grantee as information_schema spells it, quoted as an SQL literal.
        let grantee = who.replace('\'', "''");
        let rows: Vec<(String, String)> = c
            .query(&format!(
                "SELECT PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.USER_PRIVILEGES \
                 WHERE GRANTEE = '{grantee}'"
            ))
            .await?;
        // Every existing account has a row (at least `USAGE`).
        if rows.is_empty() {
            continue;
        }
        let grantable = rows.iter().any(|(_, g)| g == "YES");
        let have: BTreeSet<String> = rows
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p != "USAGE")
            .collect();
        if !needs_fix(role, &have, grantable) {
            continue;
        }
        let mut sql = String::from("SET SESSION sql_log_bin = 0;\n");
        sql.push_str(&storage_grants_sql(role, &who));
        c.exec(&sql).await?;
        if role == UserRole::Application {
            end_sessions_of(c, user).await;
        }
        changed.push(user);
    }
    Ok(changed)
}

/// Ends the sessions `user` has open now: MariaDB keeps a session's global privileges from
/// its login, so a compute node's pooled `pgx` connection would keep the revoked
/// `READ_ONLY ADMIN`/`SUPER` (and pass a fence) until it reconnects. Compute nodes reconnect
/// by themselves; a session gone meanwhile is fine.
async fn end_sessions_of(c: &mut StorageConn, user: &str) {
    let ids: Vec<u64> = match c
        .query(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{}' AND ID <> CONNECTION_ID()",
            user.replace('\'', "''")
        ))
        .await
    {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(user, error = %e, "sessions of a fixed user not listed");
            return;
        }
    };
    for id in ids {
        let _ = c.exec(&format!("KILL CONNECTION {id}")).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_users_off_their_role_are_fixed() {
        let pgx: Vec<&str> = storage_privileges(UserRole::Application);
        assert!(!needs_fix(UserRole::Application, &set(&pgx), false));
        assert!(needs_fix(UserRole::Application, &set(&pgx), true));
        let mut more = pgx.clone();
        more.push("READ_ONLY ADMIN");
        assert!(needs_fix(UserRole::Application, &set(&more), false));
        let mgr = storage_privileges(UserRole::Admin);
        assert!(!needs_fix(UserRole::Admin, &set(&mgr), true));
        assert!(needs_fix(UserRole::Admin, &set(&mgr), false));
        assert!(needs_fix(UserRole::Replication, &set(&[]), false));
    }
}
