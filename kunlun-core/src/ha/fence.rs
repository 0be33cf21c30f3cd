//! Fencing the old primary during a failover (it runs alongside catch-up, promotion and
//! repointing and is finished before the new primary is opened): `read_only=ON` when it
//! answers SQL, else, when its machine answers SSH, killing its `mysqld` by the pid file of
//! its instance directory (`<data_dir>/kunlun/storage_<port>/run/mysqld.pid`).
//!
//! A fence is then proven ([`verify`]): the node must refuse a write from the compute nodes'
//! login (`pgx`). The proof never writes: it logs in as `pgx` and reads `@@read_only` and the
//! login's own `SHOW GRANTS`; a write is refused exactly when `read_only` is on and the grants
//! hold nothing that bypasses it (`READ_ONLY ADMIN`, `SUPER`, `ALL PRIVILEGES` on `*.*`). So the
//! check can never itself create an errant transaction. Clusters without a secret row (test
//! harness clusters) have no `pgx` password: only `read_only` is checked, and the text says so.
//!
//! Invariants: fencing is best effort and bounded (the SSH part by [`SSH_FENCE_DEADLINE`]), so
//! a dead host costs the failover at most that; the returned text says exactly what was done
//! and is kept in the failover record's `fence`; only the process named by that instance's
//! own pid file is signalled.

use std::sync::Arc;
use std::time::Duration;

use kunlun_meta::model::{Machine, MachineType, ShardNode};
use kunlun_meta::store::{repo, Store};
use kunlun_provision::placement::InstanceKind;
use kunlun_provision::recipe::{sh_quote, InstanceSpec};

use super::promote::{self, Login};
use crate::fleet::Provisioner;
use crate::storage::{NodeAddr, StorageConn, StorageOptions};

/// Longest time the SSH fence may take (connect included).
pub const SSH_FENCE_DEADLINE: Duration = Duration::from_secs(3);

/// Longest the SQL fence of an automatic failover waits to connect. The probes already found
/// the primary silent several times in a row (and the replicas confirmed), so a longer wait
/// rarely reaches it; it only delays the SSH fence, which a primary that is hung (not gone)
/// needs, and which the promotion may be waiting on (its replication threads are stuck on it).
pub const SQL_FENCE_CONNECT_CAP: Duration = Duration::from_millis(500);

/// The SQL deadlines of the fence after the probes declared the primary dead: the probe's,
/// with the connect deadline capped at [`SQL_FENCE_CONNECT_CAP`].
pub fn after_failed_probes(probe: StorageOptions) -> StorageOptions {
    StorageOptions {
        connect_timeout: probe.connect_timeout.min(SQL_FENCE_CONNECT_CAP),
        ..probe
    }
}

/// Fences `old`: SQL first, then SSH when SQL cannot reach it and `ssh` is given.
pub async fn fence_old_primary(
    store: &Store,
    ssh: Option<&Arc<Provisioner>>,
    old: &ShardNode,
    sql_opts: StorageOptions,
) -> String {
    let sql = promote::fence_read_only(&NodeAddr::from(old), sql_opts).await;
    if !sql.starts_with("unreachable") {
        return if sql.starts_with("set read_only") {
            "read_only set".to_string()
        } else {
            sql
        };
    }
    let Some(prov) = ssh else {
        return format!("{sql}; no ssh access: not fenced");
    };
    match tokio::time::timeout(SSH_FENCE_DEADLINE, stop_over_ssh(store, prov, old)).await {
        Ok(what) => format!("{sql}; {what}"),
        Err(_) => format!(
            "{sql}; host unreachable: not fenced (no SSH answer within {SSH_FENCE_DEADLINE:?})"
        ),
    }
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
    let text = fence_old_primary(store, ssh, old, sql_opts).await;
    // Anything but "unreachable" means the node answered SQL (fenced or not): prove it.
    if text.starts_with("unreachable") {
        // It did not answer SQL: a stopped process refuses everything; a silent one cannot be
        // checked (the failover goes on as before, the text says what happened).
        let proven = text.contains("process stopped over ssh");
        return Fenced {
            text: format!("{text}; proof: not answering SQL"),
            proven,
            refuse: None,
        };
    }
    match verify(&NodeAddr::from(old), pgx, sql_opts).await {
        Ok(what) => Fenced {
            text: format!("{text}; proven: {what}"),
            proven: true,
            refuse: None,
        },
        Err(why) => {
            let killed = match ssh {
                Some(prov) => {
                    match tokio::time::timeout(SSH_FENCE_DEADLINE, stop_over_ssh(store, prov, old))
                        .await
                    {
                        Ok(w) => w,
                        Err(_) => format!("no SSH answer within {SSH_FENCE_DEADLINE:?}"),
                    }
                }
                None => "no ssh access".to_string(),
            };
            let stopped = killed.starts_with("process stopped over ssh");
            let text = format!("{text}; NOT proven ({why}); fenced again: {killed}");
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

/// The shell script that kills the instance's server by its pid file; it prints what it did.
/// A pid is killed only when that process is the instance's own server: its command line
/// names the instance's `--defaults-file`, or it is a `mariadbd`/`mysqld` started with the
/// instance's `--port=` (a server started by hand). After a crash the pid file is stale and
/// its pid may belong to anything.
pub fn kill_script(data_dirs: &[String], port: u16) -> String {
    let pairs: Vec<String> = data_dirs
        .iter()
        .map(|d| {
            let base = InstanceSpec::base_dir_for(d, InstanceKind::Storage, port);
            format!(
                "{} {}",
                sh_quote(&format!("{base}/run/mysqld.pid")),
                sh_quote(&format!("--defaults-file={base}/my.cnf"))
            )
        })
        .collect();
    format!(
        r#"set -- {pairs}
while [ $# -ge 2 ]; do
  pf=$1; mark=$2; shift 2
  [ -f "$pf" ] || continue
  pid=$(head -n1 "$pf" | tr -dc 0-9)
  own=no
  if [ -n "$pid" ] && [ -r /proc/$pid/cmdline ]; then
    args=$(tr '\0' '\n' < /proc/$pid/cmdline 2>/dev/null)
    comm=$(cat /proc/$pid/comm 2>/dev/null)
    if printf '%s\n' "$args" | grep -qxF -- "$mark"; then own=yes
    elif [ "$comm" = mariadbd ] || [ "$comm" = mysqld ]; then
      printf '%s\n' "$args" | grep -qxF -- "--port={port}" && own=yes
    fi
  fi
  if [ "$own" = yes ]; then
    kill -KILL "$pid" && echo "process stopped over ssh (pid $pid)" && exit 0
    echo "kill of pid $pid failed"; exit 1
  fi
  echo "process stopped over ssh (not running; stale pid file)"; exit 0
done
echo "no pid file of port {port} found: not fenced""#,
        pairs = pairs.join(" ")
    )
}

/// The data dirs whose `kunlun/storage_<port>` may hold `old`'s instance: the one of the base
/// dir recorded at install first (it stays right when the machine's `data_dirs` changed),
/// then the machine's current ones (nodes installed before dirs were recorded).
async fn instance_data_dirs(store: &Store, m: &Machine, old: &ShardNode) -> Vec<String> {
    use kunlun_meta::store::repo::dirs::{self, NodeKind};
    let recorded = store
        .read(async |tx| dirs::get(tx, NodeKind::Storage, old.id).await)
        .await
        .ok()
        .flatten();
    // A recorded base dir is always `<data_dir>/kunlun/storage_<port>` (checked at install).
    let from_record = recorded.as_deref().and_then(|b| {
        let parent = std::path::Path::new(b).parent()?.parent()?;
        Some(parent.to_str()?.to_string())
    });
    let mut out: Vec<String> = from_record.into_iter().collect();
    for d in &m.data_dirs {
        if !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}

async fn stop_over_ssh(store: &Store, prov: &Provisioner, old: &ShardNode) -> String {
    let machines = match store.read(async |tx| repo::machines::list(tx).await).await {
        Ok(m) => m,
        Err(e) => return format!("not fenced: cannot read machines: {e}"),
    };
    let Some(m) = machine_of(&machines, old) else {
        return format!(
            "not fenced: no storage machine registered at {}",
            old.hostaddr
        );
    };
    let script = kill_script(&instance_data_dirs(store, m, old).await, old.port);
    let cmd = format!("sh -c {}", sh_quote(&script));
    match prov
        .ssh
        .exec(&prov.target(m), &cmd, SSH_FENCE_DEADLINE)
        .await
    {
        Ok(out) => {
            let text = out.stdout_str().trim().to_string();
            if out.success() {
                text
            } else {
                format!("not fenced: {text} {}", out.stderr_str().trim())
            }
        }
        Err(kunlun_provision::Error::Unreachable { reason, .. }) => {
            format!("host unreachable: not fenced ({reason})")
        }
        Err(e) => format!("not fenced: ssh: {e}"),
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
        assert_eq!(f.read_timeout, probe.read_timeout);
        let short = StorageOptions {
            connect_timeout: Duration::from_millis(200),
            ..probe
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

    #[test]
    fn the_kill_script_names_each_data_dirs_pid_file_and_quotes_it() {
        let s = kill_script(&["/data1".into(), "/d 2/".into()], 57001);
        assert!(
            s.contains("'/data1/kunlun/storage_57001/run/mysqld.pid'"),
            "{s}"
        );
        assert!(
            s.contains("'/d 2/kunlun/storage_57001/run/mysqld.pid'"),
            "{s}"
        );
        assert!(s.contains("kill -KILL"));
        assert!(s.contains("no pid file of port 57001"));
    }

    #[test]
    fn the_kill_script_runs_and_kills_only_the_named_process() {
        let dir = std::env::temp_dir().join(format!("kl_fence_test_{}", std::process::id()));
        let d = dir.to_str().unwrap().to_string();
        let base = format!("{d}/kunlun/storage_4242");
        let run = format!("{base}/run");
        std::fs::create_dir_all(&run).unwrap();
        // A stand-in server whose command line carries the instance's --defaults-file.
        let spawn = |arg: &str| {
            std::process::Command::new("sh")
                .args(["-c", "sleep 20; :", "sh", arg])
                .spawn()
                .unwrap()
        };
        // A stale pid file naming a process of someone else: left alone.
        let mut stranger = spawn("--defaults-file=/elsewhere/my.cnf");
        std::fs::write(format!("{run}/mysqld.pid"), format!("{}\n", stranger.id())).unwrap();
        let script = kill_script(std::slice::from_ref(&d), 4242);
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains("stale pid file"), "{text}");
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "a stranger survives"
        );
        stranger.kill().unwrap();
        stranger.wait().unwrap();

        let mut child = spawn(&format!("--defaults-file={base}/my.cnf"));
        std::fs::write(format!("{run}/mysqld.pid"), format!("{}\n", child.id())).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{text}");
        assert!(text.contains("process stopped over ssh (pid"), "{text}");
        let st = child.wait().unwrap();
        assert!(!st.success(), "killed");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(kill_script(&[d], 4243))
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("no pid file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
