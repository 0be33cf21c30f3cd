//! `ReplicaSet`: a MariaDB primary and N GTID replicas replicating from it, optionally with
//! lossless semi-sync, ready to use when `start` returns.
//!
//! Invariant: when `start` returns, every replica's IO and SQL threads run against the primary
//! and, with semi-sync, the primary counts every replica as a semi-sync client; replicas are
//! `read_only` (a runtime setting, so a restarted replica is writable until set again).

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::mariadb::{MariaDb, MariaDbOptions};
use super::process::wait_until;

const READY_LIMIT: Duration = Duration::from_secs(60);

/// How to start a [`ReplicaSet`].
#[derive(Debug, Clone, Default)]
pub struct ReplicaSetOptions {
    /// Number of replicas.
    pub replicas: usize,
    /// Start every node with semi-sync (master and slave side, `AFTER_SYNC`).
    pub semi_sync: bool,
    /// Options for every node; `semi_sync` above overrides its field.
    pub node: MariaDbOptions,
    /// Options for the primary instead of `node` (e.g. to run it in a network namespace).
    pub primary: Option<MariaDbOptions>,
}

/// A primary and its replicas. Dropping it stops every node.
#[derive(Debug)]
pub struct ReplicaSet {
    primary: MariaDb,
    replicas: Vec<MariaDb>,
}

impl ReplicaSet {
    /// A primary and `replicas` asynchronous GTID replicas.
    pub fn start(replicas: usize) -> Result<ReplicaSet> {
        ReplicaSet::start_with(ReplicaSetOptions {
            replicas,
            ..ReplicaSetOptions::default()
        })
    }

    /// A primary and `replicas` semi-sync GTID replicas.
    pub fn start_semi_sync(replicas: usize) -> Result<ReplicaSet> {
        ReplicaSet::start_with(ReplicaSetOptions {
            replicas,
            semi_sync: true,
            ..ReplicaSetOptions::default()
        })
    }

    /// Starts all nodes in parallel, points the replicas at the primary and waits until
    /// replication (and semi-sync, if asked for) is established.
    pub fn start_with(options: ReplicaSetOptions) -> Result<ReplicaSet> {
        let mut node = options.node.clone();
        node.semi_sync = options.semi_sync;
        let mut first = options.primary.clone().unwrap_or_else(|| node.clone());
        first.semi_sync = options.semi_sync;
        let started: Vec<Result<MariaDb>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..=options.replicas)
                .map(|i| {
                    let o = if i == 0 { first.clone() } else { node.clone() };
                    s.spawn(move || MariaDb::start_with(o))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("MariaDB start panicked")))
                .collect()
        });
        let mut nodes = started.into_iter().collect::<Result<Vec<_>>>()?;
        let primary = nodes.remove(0);
        let set = ReplicaSet {
            primary,
            replicas: nodes,
        };
        for r in &set.replicas {
            r.replicate_from(&set.primary)?;
            r.sql("SET GLOBAL read_only=ON")?;
        }
        for r in &set.replicas {
            wait_until(
                &format!("replica on port {} to replicate", r.port()),
                READY_LIMIT,
                || replica_running(r),
            )?;
        }
        if options.semi_sync && options.replicas > 0 {
            let want = options.replicas.to_string();
            wait_until("semi-sync clients on the primary", READY_LIMIT, || {
                let v = set
                    .primary
                    .rows("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")?;
                Ok(v.first().and_then(|r| r.get(1)) == Some(&want))
            })?;
        }
        Ok(set)
    }

    /// The primary.
    pub fn primary(&self) -> &MariaDb {
        &self.primary
    }

    /// The replicas, in start order.
    pub fn replicas(&self) -> &[MariaDb] {
        &self.replicas
    }

    /// Primary first, then the replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &MariaDb> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }

    /// Waits until every running replica has applied the primary's current binlog position.
    pub fn wait_replicated(&self, limit: Duration) -> Result<()> {
        let pos = self
            .primary
            .value("SELECT @@gtid_binlog_pos")?
            .unwrap_or_default();
        for r in self.replicas.iter().filter(|r| r.is_running()) {
            let got = r.value(&format!(
                "SELECT MASTER_GTID_WAIT('{pos}', {})",
                limit.as_secs_f64()
            ))?;
            if got.as_deref() != Some("0") {
                bail!(
                    "replica on port {} did not reach GTID {pos} within {limit:?}",
                    r.port()
                );
            }
        }
        Ok(())
    }
}

/// True when both replication threads run, else an error describing their state.
fn replica_running(r: &MariaDb) -> Result<bool> {
    let rows = r
        .named_rows("SHOW SLAVE STATUS")
        .context("SHOW SLAVE STATUS")?;
    let row = rows.into_iter().next().unwrap_or_default();
    let field = |name: &str| row.get(name).cloned().unwrap_or_default();
    let (io, sql) = (field("Slave_IO_Running"), field("Slave_SQL_Running"));
    if io == "Yes" && sql == "Yes" {
        return Ok(true);
    }
    // An error (not `Ok(false)`) so that a timeout reports the replica's last state.
    bail!(
        "Slave_IO_Running={io:?} Slave_SQL_Running={sql:?} Last_IO_Error={:?} \
         Last_SQL_Error={:?}",
        field("Last_IO_Error"),
        field("Last_SQL_Error")
    )
}
