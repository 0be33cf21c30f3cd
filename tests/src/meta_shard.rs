//! A MySQL metadata shard for the tests of its failover and of the stores that follow its
//! primary: three MariaDB nodes (a primary and two semi-sync GTID replicas, `AFTER_SYNC`) with
//! the logins a real deployment has, each with the least privilege it needs:
//!
//! - [`STORE_USER`]: the managers' store login (`meta_user`): everything on the metadata
//!   database, nothing global, so a read-only node refuses its writes;
//! - [`HA_USER`]: the leader's admin login for the shard (`meta_ha_user`): `read_only`,
//!   replication and monitoring, no data privilege ([`HA_PRIVILEGES`]);
//! - [`REPL_USER`]: what replicas log in to their source with (`meta_repl_user`);
//! - [`CN_USER`]: a compute node's commit-log writer: `SELECT, INSERT` on the metadata
//!   database only.
//!
//! Invariant: every node is owned by the set and stopped by PID when it is dropped; the logins
//! are created on the primary before anything else writes, so they reach every replica.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{MariaDb, ReplicaSet};

pub const STORE_USER: &str = "klmeta";
pub const STORE_PWD: &str = "klmeta-pw";
pub const HA_USER: &str = "klmeta_ha";
pub const HA_PWD: &str = "klmeta-ha-pw";
pub const REPL_USER: &str = "klmeta_repl";
pub const REPL_PWD: &str = "klmeta-repl-pw";
pub const CN_USER: &str = "klcn";
pub const CN_PWD: &str = "klcn-pw";

/// The global privileges of [`HA_USER`] on MariaDB 10.11: set `read_only`, run and repoint
/// replication (semi-sync master and slave settings included; `RESET SLAVE ALL` needs
/// `RELOAD`), read replication and binlog state. No data privilege, no `SUPER`.
pub const HA_PRIVILEGES: &str = "READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, \
     REPLICATION MASTER ADMIN, SLAVE MONITOR, BINLOG MONITOR, RELOAD";

/// Three metadata nodes; see the module doc.
pub struct MetaShardSet {
    pub set: ReplicaSet,
    pub database: String,
}

impl MetaShardSet {
    /// Starts the nodes and creates the logins for `database`.
    pub fn start(database: &str) -> Result<MetaShardSet> {
        let set = ReplicaSet::start_semi_sync(2)?;
        let db = database;
        set.primary().sql(&format!(
            "CREATE USER '{STORE_USER}'@'%' IDENTIFIED BY '{STORE_PWD}'; \
             GRANT ALL PRIVILEGES ON `{db}`.* TO '{STORE_USER}'@'%'; \
             CREATE USER '{HA_USER}'@'%' IDENTIFIED BY '{HA_PWD}'; \
             GRANT {HA_PRIVILEGES} ON *.* TO '{HA_USER}'@'%'; \
             CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PWD}'; \
             GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%'; \
             CREATE USER '{CN_USER}'@'%' IDENTIFIED BY '{CN_PWD}'; \
             GRANT SELECT, INSERT ON `{db}`.* TO '{CN_USER}'@'%';"
        ))?;
        set.wait_replicated(Duration::from_secs(60))?;
        Ok(MetaShardSet {
            set,
            database: database.to_string(),
        })
    }

    /// Every node, the first primary first.
    pub fn nodes(&self) -> Vec<&MariaDb> {
        self.set.nodes().collect()
    }

    /// `host:port` of every node, in [`MetaShardSet::nodes`] order.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes()
            .iter()
            .map(|n| format!("{}:{}", n.host(), n.port()))
            .collect()
    }

    /// The node at `host:port`.
    pub fn at(&self, seed: &str) -> Option<&MariaDb> {
        self.nodes()
            .into_iter()
            .find(|n| format!("{}:{}", n.host(), n.port()) == seed)
    }

    /// The running nodes that answer `read_only = 0`.
    pub fn writable(&self) -> Vec<&MariaDb> {
        self.nodes()
            .into_iter()
            .filter(|n| n.is_running())
            .filter(|n| n.value("SELECT @@read_only").ok().flatten().as_deref() == Some("0"))
            .collect()
    }

    /// The `cluster_mgr.cnf` lines of a manager on this shard (store, failover and
    /// replication logins).
    pub fn cnf_lines(&self) -> Vec<String> {
        vec![
            "meta_backend = mysql".into(),
            format!("meta_group_seeds = {}", self.seeds().join(",")),
            format!("meta_user = {STORE_USER}"),
            format!("meta_pwd = {STORE_PWD}"),
            format!("meta_database = {}", self.database),
            format!("meta_ha_user = {HA_USER}"),
            format!("meta_ha_pwd = {HA_PWD}"),
            format!("meta_repl_user = {REPL_USER}"),
            format!("meta_repl_pwd = {REPL_PWD}"),
        ]
    }

    /// Registers the nodes in `meta_db_nodes` (the first as `source`) through the primary,
    /// once the store migrated the database.
    pub fn register_nodes(&self) -> Result<()> {
        let primary = self.set.primary();
        let mut sql = String::new();
        for (i, n) in self.nodes().iter().enumerate() {
            sql.push_str(&format!(
                "INSERT INTO `{}`.meta_db_nodes (hostaddr, port, user_name, passwd, \
                 member_state) VALUES ('{}', {}, '{STORE_USER}', '', '{}');",
                self.database,
                n.host(),
                n.port(),
                if i == 0 { "source" } else { "replica" }
            ));
        }
        primary.sql(&sql)?;
        Ok(())
    }

    /// Promotes `new` by hand as an operator would: fences the old primary (read-only), waits
    /// until `new` applied everything, stops its replication, opens it for writes and points
    /// every other running node at it.
    pub fn promote_by_hand(&self, old: &MariaDb, new: &MariaDb) -> Result<()> {
        old.sql("SET GLOBAL read_only = ON")?;
        let pos = old
            .value("SELECT @@gtid_binlog_pos")?
            .context("old primary position")?;
        let got = new.value(&format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))?;
        if got.as_deref() != Some("0") {
            bail!("node {} did not reach {pos}", new.port());
        }
        new.sql(
            "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL rpl_semi_sync_master_enabled = ON; \
             SET GLOBAL read_only = OFF",
        )?;
        for n in self.nodes() {
            if n.port() == new.port() || !n.is_running() {
                continue;
            }
            if n.port() == old.port() {
                n.sql("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos")?;
            }
            n.replicate_from(new)?;
        }
        Ok(())
    }
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit` (a bound on a wait, not
/// a timing assertion); the error names `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
