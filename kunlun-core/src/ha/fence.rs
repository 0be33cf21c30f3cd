//! Fencing the old primary during a failover (it runs alongside catch-up, promotion and
//! repointing and is finished before the new primary is opened): `read_only=ON` when it
//! answers SQL, else, when its machine answers SSH, killing its server with the storage
//! recipe's kill script ([`Recipe::kill_script`](kunlun_provision::recipe::Recipe)), which
//! alone knows the server's files. The outcome is typed ([`FenceOutcome`], [`SshStop`]); its
//! text is what the failover record keeps.
//!
//! A fence is then proven ([`verify`]): the node must refuse a write from the compute nodes'
//! login (`pgx`). The proof never writes: it logs in as `pgx` and reads `@@read_only` and the
//! login's own `SHOW GRANTS`; a write is refused exactly when `read_only` is on and the grants
//! hold nothing that bypasses it (`READ_ONLY ADMIN`, `SUPER`, `ALL PRIVILEGES` on `*.*`). So the
//! check can never itself create an errant transaction. Clusters without a secret row (test
//! harness clusters) have no `pgx` password: only `read_only` is checked, and the text says so.
//!
//! Invariants: fencing is best effort and bounded (the SSH part by [`SSH_FENCE_DEADLINE`]), so
//! a dead host costs the failover at most that; the outcome's text says exactly what was done
//! and is kept in the failover record's `fence`; only the process named by that instance's
//! own pid file is signalled (the recipe's script checks it).

use std::sync::Arc;
use std::time::Duration;

use kunlun_meta::model::{Machine, MachineType, ShardNode};
use kunlun_meta::store::{repo, Store};
use kunlun_provision::placement::InstanceKind;
use kunlun_provision::recipe::{kill_instance, InstanceSpec, Killed};

use super::promote::{self, Login, SqlFence};
use crate::fleet::Provisioner;
use crate::storage::{NodeAddr, StorageConn, StorageOptions};

/// Longest time the SSH fence may take (connect included).
pub const SSH_FENCE_DEADLINE: Duration = Duration::from_secs(3);

/// Longest the SQL fence of an automatic failover waits to connect. The probes already failed
/// to reach the primary (and the replicas confirmed), so a longer wait rarely reaches it; it
/// only delays the SSH fence, which a primary that is hung (not gone) needs, and which the
/// promotion may be waiting on (its replication threads are stuck on it).
pub const SQL_FENCE_CONNECT_CAP: Duration = Duration::from_millis(500);

/// Least time the fence's `SET GLOBAL read_only = ON` may take: it waits for running commits,
/// which on a loaded but live old primary can take longer than a probe's statement deadline.
pub const SQL_FENCE_READ_FLOOR: Duration = Duration::from_secs(2);

/// The SQL deadlines of the fence after the probes declared the primary dead: the probe's,
/// with the connect deadline capped at [`SQL_FENCE_CONNECT_CAP`] and the statement deadline
/// at least [`SQL_FENCE_READ_FLOOR`].
pub fn after_failed_probes(probe: StorageOptions) -> StorageOptions {
    StorageOptions {
        connect_timeout: probe.connect_timeout.min(SQL_FENCE_CONNECT_CAP),
        read_timeout: probe.read_timeout.max(SQL_FENCE_READ_FLOOR),
    }
}

/// What stopping the old primary's server over SSH did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshStop {
    /// The recipe's kill script ran on its machine and reported this.
    Ran(Killed),
    /// The manager has no SSH access (no provisioner).
    NoAccess,
    /// No storage machine could be found for the node.
    NoMachine(String),
    /// The machine did not answer SSH.
    HostUnreachable(String),
    /// No SSH answer within [`SSH_FENCE_DEADLINE`].
    TimedOut,
    /// SSH answered but the kill could not be run.
    Failed(String),
}

impl SshStop {
    /// The server is known not to run any more.
    pub fn stopped(&self) -> bool {
        matches!(self, SshStop::Ran(k) if k.stopped())
    }
}

impl std::fmt::Display for SshStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SshStop::Ran(Killed::Stopped { pid }) => {
                write!(f, "process stopped over ssh (pid {pid})")
            }
            SshStop::Ran(Killed::NotRunning) => {
                f.write_str("process stopped over ssh (not running; stale pid file)")
            }
            SshStop::Ran(Killed::NoPidFile) => {
                f.write_str("no pid file of the instance found: not fenced")
            }
            SshStop::Ran(Killed::KillFailed { pid }) => {
                write!(f, "not fenced: kill of pid {pid} failed")
            }
            SshStop::NoAccess => f.write_str("no ssh access: not fenced"),
            SshStop::NoMachine(why) => write!(f, "not fenced: {why}"),
            SshStop::HostUnreachable(why) => write!(f, "host unreachable: not fenced ({why})"),
            SshStop::TimedOut => write!(
                f,
                "host unreachable: not fenced (no SSH answer within {SSH_FENCE_DEADLINE:?})"
            ),
            SshStop::Failed(why) => write!(f, "not fenced: ssh: {why}"),
        }
    }
}

/// What fencing the old primary did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceOutcome {
    /// It answered SQL and is read-only now.
    ReadOnly,
    /// It answered SQL but `read_only=ON` failed.
    SqlFailed(String),
    /// It did not answer SQL (`sql` says why); then SSH did this.
    Silent { sql: String, ssh: SshStop },
}

impl FenceOutcome {
    /// The node answered SQL (so a proof can be attempted).
    pub fn answered_sql(&self) -> bool {
        !matches!(self, FenceOutcome::Silent { .. })
    }
}

impl std::fmt::Display for FenceOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FenceOutcome::ReadOnly => f.write_str("read_only set"),
            FenceOutcome::SqlFailed(e) => write!(f, "{}", SqlFence::Failed(e.clone())),
            FenceOutcome::Silent { sql, ssh } => {
                write!(f, "{}; {ssh}", SqlFence::Unreachable(sql.clone()))
            }
        }
    }
}

/// Where the SSH fence finds the machine of a node: the store (a storage shard's node, whose
/// install dirs are recorded there too), or a list read earlier (the metadata shard's nodes:
/// while their primary is down the store cannot answer).
#[derive(Debug, Clone, Copy)]
pub enum Machines<'a> {
    Store(&'a Store),
    Known(&'a [Machine]),
}

/// Fences `old`: SQL first, then SSH when SQL cannot reach it and `ssh` is given.
pub async fn fence_old_primary(
    store: &Store,
    ssh: Option<&Arc<Provisioner>>,
    old: &ShardNode,
    sql_opts: StorageOptions,
) -> FenceOutcome {
    fence_old_primary_in(Machines::Store(store), ssh, old, sql_opts).await
}

async fn fence_old_primary_in(
    machines: Machines<'_>,
    ssh: Option<&Arc<Provisioner>>,
    old: &ShardNode,
    sql_opts: StorageOptions,
) -> FenceOutcome {
    match promote::fence_read_only(&NodeAddr::from(old), sql_opts).await {
        SqlFence::ReadOnly => FenceOutcome::ReadOnly,
        SqlFence::Failed(e) => FenceOutcome::SqlFailed(e),
        SqlFence::Unreachable(sql) => FenceOutcome::Silent {
            sql,
            ssh: stop(machines, ssh, old).await,
        },
    }
}

/// Stops `old`'s server over SSH, bounded by [`SSH_FENCE_DEADLINE`].
async fn stop(machines: Machines<'_>, ssh: Option<&Arc<Provisioner>>, old: &ShardNode) -> SshStop {
    let Some(prov) = ssh else {
        return SshStop::NoAccess;
    };
    tokio::time::timeout(SSH_FENCE_DEADLINE, stop_over_ssh(machines, prov, old))
        .await
        .unwrap_or(SshStop::TimedOut)
}

/// What fencing the old primary did, and whether the failover may go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    /// What was done and proven, kept as the record's `fence`.
    pub text: String,
    /// True when the node was shown to refuse writes (or is stopped); false when it did not
    /// answer SQL, so no proof was possible.
    pub proven: bool,
    /// Set when the old primary answers and still takes writes: the failover must not promote.
    pub refuse: Option<String>,
}

/// Fences `old` ([`fence_old_primary`]) and proves it ([`verify`]) when it answers SQL. A node
/// that answers but does not refuse writes is stopped over SSH; when that is impossible the
/// result says to refuse the failover (two writable primaries are worse than none).
pub async fn fence_and_prove(
    store: &Store,
    ssh: Option<&Arc<Provisioner>>,
    old: &ShardNode,
    sql_opts: StorageOptions,
    pgx: Option<&Login>,
) -> Fenced {
    fence_and_prove_in(Machines::Store(store), ssh, old, sql_opts, pgx).await
}

/// [`fence_and_prove`] finding the node's machine in `machines`.
pub async fn fence_and_prove_in(
    machines: Machines<'_>,
    ssh: Option<&Arc<Provisioner>>,
    old: &ShardNode,
    sql_opts: StorageOptions,
    pgx: Option<&Login>,
) -> Fenced {
    let outcome = fence_old_primary_in(machines, ssh, old, sql_opts).await;
    if let FenceOutcome::Silent { ssh: stopped, .. } = &outcome {
        // It did not answer SQL: a stopped process refuses everything; a silent one cannot be
        // checked (the failover goes on as before, the text says what happened).
        return Fenced {
            text: format!("{outcome}; proof: not answering SQL"),
            proven: stopped.stopped(),
            refuse: None,
        };
    }
    match verify(&NodeAddr::from(old), pgx, sql_opts).await {
        Ok(what) => Fenced {
            text: format!("{outcome}; proven: {what}"),
            proven: true,
            refuse: None,
        },
        Err(why) => {
            let killed = stop(machines, ssh, old).await;
            let stopped = killed.stopped();
            let text = format!("{outcome}; NOT proven ({why}); fenced again: {killed}");
            Fenced {
                refuse: (!stopped).then(|| {
                    format!(
                        "the old primary {} still takes writes ({why}) and could not be stopped ({killed})",
                        old.id
                    )
                }),
                proven: stopped,
                text,
            }
        }
    }
}

/// Proves that `addr` (reached with the manager's login) refuses writes from `pgx` (see the
/// module doc). `Ok` says what was checked; `Err` why the node would still take a write.
pub async fn verify(
    addr: &NodeAddr,
    pgx: Option<&Login>,
    opts: StorageOptions,
) -> Result<String, String> {
    let (who, at) = match pgx {
        Some(l) => (l.user.clone(), l.at(addr)),
        None => (addr.user.clone(), addr.clone()),
    };
    let mut c = StorageConn::connect(&at, opts)
        .await
        .map_err(|e| format!("cannot check as {who}: {e}"))?;
    let ro: std::result::Result<Vec<Option<i64>>, _> = c.query("SELECT @@read_only").await;
    let grants: std::result::Result<Vec<String>, _> = match pgx {
        Some(_) => c.query("SHOW GRANTS").await,
        None => Ok(Vec::new()),
    };
    c.close().await;
    let ro = ro.map_err(|e| format!("cannot read read_only as {who}: {e}"))?;
    if ro.first().copied().flatten() != Some(1) {
        return Err("read_only is OFF".into());
    }
    if pgx.is_none() {
        return Ok("read_only=ON (pgx check skipped: the cluster has no secret row)".into());
    }
    let grants = grants.map_err(|e| format!("cannot read the grants of {who}: {e}"))?;
    match bypasses_read_only(&grants) {
        Some(g) => Err(format!(
            "{who} may write despite read_only: {}",
            without_password(&g)
        )),
        None => Ok(format!(
            "{who} refused: read_only=ON, no privilege that bypasses it"
        )),
    }
}

/// The first grant that lets its holder write on a `read_only` server: `READ_ONLY ADMIN`,
/// `SUPER` or `ALL PRIVILEGES` on `*.*` (on MariaDB 10.11 `ALL` includes `READ_ONLY ADMIN`).
pub fn bypasses_read_only(grants: &[String]) -> Option<String> {
    grants
        .iter()
        .find(|g| {
            let u = g.to_ascii_uppercase();
            let Some(rest) = u.strip_prefix("GRANT ") else {
                return false;
            };
            let Some((privs, target)) = rest.split_once(" ON ") else {
                return false;
            };
            let global = target.trim_start().starts_with("*.*");
            global
                && privs.split(',').map(str::trim).any(|p| {
                    p == "ALL PRIVILEGES" || p == "ALL" || p == "SUPER" || p == "READ_ONLY ADMIN"
                })
        })
        .cloned()
}

/// A `SHOW GRANTS` line without its password hash (`IDENTIFIED BY PASSWORD '…'`), fit for a
/// record.
fn without_password(grant: &str) -> String {
    let upper = grant.to_ascii_uppercase();
    match upper.find(" IDENTIFIED ") {
        Some(i) => {
            let tail = if upper.ends_with(" WITH GRANT OPTION") {
                " WITH GRANT OPTION"
            } else {
                ""
            };
            format!("{}{tail}", &grant[..i])
        }
        None => grant.to_string(),
    }
}

/// The storage machine registered under the node's address.
fn machine_of<'a>(machines: &'a [Machine], node: &ShardNode) -> Option<&'a Machine> {
    machines
        .iter()
        .find(|m| m.hostaddr == node.hostaddr && m.machine_type == MachineType::Storage)
}

/// The directories that may hold `old`'s instance: the base dir recorded at install first (it
/// stays right when the machine's `data_dirs` changed), then the conventional one under each
/// of the machine's current data dirs (nodes installed before dirs were recorded).
async fn instance_base_dirs(store: &Store, m: &Machine, old: &ShardNode) -> Vec<String> {
    use kunlun_meta::store::repo::dirs::{self, NodeKind};
    let recorded = store
        .read(async |tx| dirs::get(tx, NodeKind::Storage, old.id).await)
        .await
        .ok()
        .flatten();
    conventional_base_dirs(m, old, recorded.into_iter().collect())
}

/// `out` followed by the conventional base dir of `old` under each of the machine's data dirs.
fn conventional_base_dirs(m: &Machine, old: &ShardNode, mut out: Vec<String>) -> Vec<String> {
    for d in &m.data_dirs {
        let b = InstanceSpec::base_dir_for(d, InstanceKind::Storage, old.port);
        if !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

async fn stop_over_ssh(machines: Machines<'_>, prov: &Provisioner, old: &ShardNode) -> SshStop {
    let read;
    let list = match machines {
        Machines::Known(list) => list,
        Machines::Store(store) => {
            read = match store.read(async |tx| repo::machines::list(tx).await).await {
                Ok(m) => m,
                Err(e) => return SshStop::NoMachine(format!("cannot read machines: {e}")),
            };
            read.as_slice()
        }
    };
    let Some(m) = machine_of(list, old) else {
        return SshStop::NoMachine(format!("no storage machine registered at {}", old.hostaddr));
    };
    let dirs = match machines {
        Machines::Store(store) => instance_base_dirs(store, m, old).await,
        Machines::Known(_) => conventional_base_dirs(m, old, Vec::new()),
    };
    let target = prov.target(m);
    match kill_instance(
        prov.storage.as_ref(),
        &prov.ssh,
        &target,
        &dirs,
        old.port,
        SSH_FENCE_DEADLINE,
    )
    .await
    {
        Ok(k) => SshStop::Ran(k),
        Err(kunlun_provision::Error::Unreachable { reason, .. }) => {
            SshStop::HostUnreachable(reason)
        }
        Err(e) => SshStop::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_fence_after_failed_probes_connects_within_the_cap_only() {
        let probe = StorageOptions {
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        };
        let f = after_failed_probes(probe);
        assert_eq!(f.connect_timeout, SQL_FENCE_CONNECT_CAP);
        assert_eq!(f.read_timeout, SQL_FENCE_READ_FLOOR);
        let short = StorageOptions {
            connect_timeout: Duration::from_millis(200),
            read_timeout: Duration::from_secs(3),
        };
        assert_eq!(after_failed_probes(short), short);
    }

    #[test]
    fn grants_that_bypass_read_only_are_found() {
        let g = |s: &str| vec![s.to_string()];
        assert!(bypasses_read_only(&g(
            "GRANT ALL PRIVILEGES ON *.* TO `pgx`@`%` IDENTIFIED BY PASSWORD '*X' WITH GRANT OPTION"
        ))
        .is_some());
        assert!(
            bypasses_read_only(&g("GRANT SUPER, REPLICATION CLIENT ON *.* TO `pgx`@`%`")).is_some()
        );
        assert!(bypasses_read_only(&g("GRANT READ_ONLY ADMIN ON *.* TO `pgx`@`%`")).is_some());
        let least = vec![
            "GRANT REPLICATION CLIENT ON *.* TO `pgx`@`%` IDENTIFIED BY PASSWORD '*X'".to_string(),
            "GRANT ALL PRIVILEGES ON `db`.* TO `pgx`@`%`".to_string(),
            "GRANT SELECT, INSERT, UPDATE, DELETE ON `kunlun`.* TO `pgx`@`%`".to_string(),
        ];
        assert_eq!(bypasses_read_only(&least), None);
        assert_eq!(bypasses_read_only(&[]), None);
        assert_eq!(
            without_password(
                "GRANT ALL PRIVILEGES ON *.* TO `pgx`@`%` IDENTIFIED BY PASSWORD '*18DE' WITH GRANT OPTION"
            ),
            "GRANT ALL PRIVILEGES ON *.* TO `pgx`@`%` WITH GRANT OPTION"
        );
    }
}
