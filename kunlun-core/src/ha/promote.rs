//! The SQL steps of a failover or switchover on storage nodes: fence, catch up, promote,
//! repoint, open for writes, rejoin, restart a replica's threads. Each is one bounded call; the orchestration and the
//! order live in [`super::failover`].
//!
//! Invariant: a promoted node stays `read_only` until [`open_for_writes`], so the failover can
//! repoint replicas and end in-doubt XA branches before any client write lands on it. No wait
//! on a SQL thread outlives that thread: a thread that stopped with an error ends the wait at
//! once with its error ([`Applied::SqlStopped`]).

use std::time::Duration;

use super::gtid::{GtidPos, GtidState};
use super::probe::{text, Channel};
use crate::storage::{replication, NodeAddr, Result, StorageConn, StorageOptions};

/// How a wait for a SQL thread to apply a position ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Yes,
    /// The limit passed with the thread still applying.
    TimedOut,
    /// The SQL thread stopped with an error: nothing more will be applied.
    SqlStopped(String),
}

/// Longest single `MASTER_GTID_WAIT` slice between two looks at the SQL thread.
const WAIT_SLICE: Duration = Duration::from_millis(250);

/// Run before a `STOP SLAVE` that may find its source hung: a semi-sync replica's stop opens a
/// new session to its source to end the source's dump thread, and waits for it up to this
/// many seconds (MariaDB's default 5; 0 means forever). A hung source never answers, so its
/// promotion would wait that long; 1 s is the least the server takes.
const SHORT_STOP: &str = "SET GLOBAL rpl_semi_sync_slave_kill_conn_timeout = 1";

/// A system login of a cluster's storage nodes from its `kl_cluster_secret` row: `repl`
/// (what replicas use for their source, `MASTER_USER`) or `pgx` (the compute nodes' login,
/// which a fence must be proven against).
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Login {
    /// The `repl` login of a cluster's secret row.
    pub fn repl(s: &kunlun_meta::store::repo::secrets::ClusterSecret) -> Self {
        Login {
            user: crate::accounts::REPL_USER.to_string(),
            password: s.repl_pwd.clone(),
        }
    }

    /// The `pgx` login of a cluster's secret row.
    pub fn pgx(s: &kunlun_meta::store::repo::secrets::ClusterSecret) -> Self {
        Login {
            user: crate::accounts::PGX_USER.to_string(),
            password: s.pgx_pwd.clone(),
        }
    }

    /// The node's address with this login.
    pub fn at(&self, addr: &NodeAddr) -> NodeAddr {
        NodeAddr {
            user: self.user.clone(),
            password: self.password.clone(),
            ..addr.clone()
        }
    }

    /// The login a replica of `source` uses: `repl` when known, else the source's own login.
    fn for_source(login: Option<&Login>, source: &NodeAddr) -> Login {
        login.cloned().unwrap_or_else(|| Login {
            // Fallback for clusters without a secret row (harness clusters registered by hand):
            // their only known login is the node's own.
            user: source.user.clone(),
            password: source.password.clone(),
        })
    }
}

/// What `SET GLOBAL read_only = ON` on a node did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlFence {
    /// It answered and is read-only now.
    ReadOnly,
    /// It answered but the setting failed.
    Failed(String),
    /// It did not answer SQL.
    Unreachable(String),
}

impl std::fmt::Display for SqlFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlFence::ReadOnly => f.write_str("set read_only=ON"),
            SqlFence::Failed(e) => write!(f, "read_only=ON failed: {e}"),
            SqlFence::Unreachable(e) => write!(f, "unreachable, not fenced by SQL ({e})"),
        }
    }
}

/// Sets `read_only=ON` on `addr` (the SQL fence).
pub async fn fence_read_only(addr: &NodeAddr, opts: StorageOptions) -> SqlFence {
    let mut c = match StorageConn::connect(addr, opts).await {
        Ok(c) => c,
        Err(e) => return SqlFence::Unreachable(e.to_string()),
    };
    let r = c.exec("SET GLOBAL read_only = ON").await;
    c.close().await;
    match r {
        Ok(()) => SqlFence::ReadOnly,
        Err(e) => SqlFence::Failed(e.to_string()),
    }
}

/// Waits (bounded) until the candidate has applied everything it received (`pos`, its
/// `Gtid_IO_Pos`), starting its SQL thread first when it stopped without an error; a SQL
/// thread that stopped with an error ends the wait at once.
pub async fn catch_up(
    addr: &NodeAddr,
    pos: &str,
    limit: Duration,
    opts: StorageOptions,
) -> Result<Applied> {
    let opts = StorageOptions {
        read_timeout: WAIT_SLICE + opts.read_timeout,
        ..opts
    };
    let mut c = StorageConn::connect(addr, opts).await?;
    // A SQL thread stopped without an error (a backup holding this replica at its cut, or an
    // operator's STOP SLAVE) is started: promotion needs all it received applied. A backup
    // whose source this was sees it moved and fails.
    if channels(&mut c)
        .await?
        .iter()
        .any(|ch| ch.connection_name.is_empty() && !ch.sql_running && ch.last_sql_errno == 0)
    {
        c.exec("START SLAVE SQL_THREAD").await?;
    }
    let deadline = tokio::time::Instant::now() + limit;
    let r = wait_applied(&mut c, pos, deadline).await;
    c.close().await;
    r
}

/// `MASTER_GTID_WAIT` in short slices until `deadline`, looking at the SQL threads between
/// two slices, so a thread that stopped with an error is noticed within a slice.
async fn wait_applied(
    c: &mut StorageConn,
    pos: &str,
    deadline: tokio::time::Instant,
) -> Result<Applied> {
    let pos = sanitize_pos(pos);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let slice = left.min(WAIT_SLICE);
        let sql = format!(
            "SELECT MASTER_GTID_WAIT('{pos}', {:.3})",
            slice.as_secs_f64()
        );
        let r: Vec<Option<i64>> = c.query(&sql).await?;
        if r.first().copied().flatten() == Some(0) {
            return Ok(Applied::Yes);
        }
        if let Some(e) = channels(c).await?.iter().find_map(Channel::sql_error) {
            return Ok(Applied::SqlStopped(e));
        }
        if left <= WAIT_SLICE {
            return Ok(Applied::TimedOut);
        }
    }
}

/// The node's replication channels (`SHOW ALL SLAVES STATUS`).
async fn channels(c: &mut StorageConn) -> Result<Vec<Channel>> {
    let rows: Vec<mysql_async::Row> = c.query("SHOW ALL SLAVES STATUS").await?;
    Ok(rows.iter().map(super::probe::channel).collect())
}

/// Stops and forgets replication on the candidate and turns semi-sync master on (after-sync);
/// it stays read-only. Not [`Applied::Yes`] when it did not apply what it received within
/// `apply_limit` or its SQL thread stopped with an error (its IO threads are then stopped).
///
/// The IO threads stop first and the SQL threads only once they have applied the final
/// received positions (`Gtid_IO_Pos` read after the IO stop): transactions that arrived after
/// the catch-up position was read (a primary not yet fenced) are applied, never dropped.
pub async fn promote(
    addr: &NodeAddr,
    opts: StorageOptions,
    apply_limit: Duration,
) -> Result<Applied> {
    let wait_opts = StorageOptions {
        read_timeout: WAIT_SLICE + opts.read_timeout,
        ..opts
    };
    let mut c = StorageConn::connect(addr, wait_opts).await?;
    c.exec("SET GLOBAL read_only = ON").await?;
    c.exec(SHORT_STOP).await?;
    c.exec("STOP ALL SLAVES IO_THREAD").await?;
    let received = received_positions(&mut c).await?;
    let deadline = tokio::time::Instant::now() + apply_limit;
    for pos in &received {
        let r = wait_applied(&mut c, pos, deadline).await?;
        if r != Applied::Yes {
            c.close().await;
            return Ok(r);
        }
    }
    c.exec("STOP ALL SLAVES").await?;
    c.exec("RESET SLAVE ALL").await?;
    c.exec(
        // Off then on: a node that ran as a replica may report the master side switched
        // off; re-enabling starts it afresh.
        "SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC; \
         SET GLOBAL rpl_semi_sync_master_enabled = OFF; \
         SET GLOBAL rpl_semi_sync_master_enabled = ON",
    )
    .await?;
    c.close().await;
    Ok(Applied::Yes)
}

/// The non-empty `Gtid_IO_Pos` of every replication channel.
async fn received_positions(c: &mut StorageConn) -> Result<Vec<String>> {
    let rows: Vec<mysql_async::Row> = c.query("SHOW ALL SLAVES STATUS").await?;
    Ok(to_apply(rows.iter().map(|r| text(r, "Gtid_IO_Pos"))))
}

/// The received positions the SQL threads must reach: a channel that received nothing (NULL
/// or empty `Gtid_IO_Pos`) has nothing to wait for.
fn to_apply(received: impl Iterator<Item = Option<String>>) -> Vec<String> {
    received
        .flatten()
        .filter(|p| !sanitize_pos(p).is_empty())
        .collect()
}

/// A node's binlog state and current position, read once nothing can add to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    pub binlog_state: GtidState,
    pub current: GtidPos,
    /// The node's own `@@server_id`.
    pub server_id: u32,
}

impl Positions {
    /// The facts the errant check compares.
    pub fn facts(&self) -> super::gtid::GtidFacts<'_> {
        super::gtid::GtidFacts {
            state: &self.binlog_state,
            pos: &self.current,
            server_id: self.server_id,
        }
    }
}

async fn read_positions(c: &mut StorageConn) -> Result<Positions> {
    let rows: Vec<mysql_async::Row> = c
        .query("SELECT @@gtid_binlog_state AS st, @@gtid_current_pos AS cur, @@server_id AS sid")
        .await?;
    let row = rows.first();
    let get = |col: &str| row.and_then(|r| text(r, col)).unwrap_or_default();
    let bad = |e: super::gtid::ParseGtidError| crate::storage::Error::Protocol {
        node: c.node().to_string(),
        reason: e.to_string(),
    };
    Ok(Positions {
        binlog_state: GtidState::parse(&get("st")).map_err(bad)?,
        current: GtidPos::parse(&get("cur")).map_err(bad)?,
        server_id: get("sid").parse().unwrap_or(0),
    })
}

/// The binlog state and current position of a node (of a promoted candidate, whose
/// replication is stopped and which is still read-only, they are final).
pub async fn positions(addr: &NodeAddr, opts: StorageOptions) -> Result<Positions> {
    let mut c = StorageConn::connect(addr, opts).await?;
    let r = read_positions(&mut c).await;
    c.close().await;
    r
}

/// First half of [`repoint`]: makes `replica` read-only and stops its replication (the part
/// that may wait seconds on a thread stuck on an unreachable primary), so it can run while the
/// candidate is promoted. A former primary takes its own binlog as its replica position.
/// Returns the replica's positions read afterwards (final: it is read-only and stopped), for
/// the errant-transaction check before it is attached.
pub async fn detach(
    replica: &NodeAddr,
    former_primary: bool,
    opts: StorageOptions,
) -> Result<Positions> {
    let mut c = StorageConn::connect(replica, opts).await?;
    c.exec("SET GLOBAL read_only = ON").await?;
    c.exec(SHORT_STOP).await?;
    c.exec("STOP ALL SLAVES").await?;
    if former_primary {
        c.exec("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos")
            .await?;
    }
    let p = read_positions(&mut c).await;
    c.close().await;
    p
}

/// Undoes [`detach`] of a replica when the candidate could not be promoted: its threads start
/// again against the source it still names.
pub async fn resume(replica: &NodeAddr, opts: StorageOptions) -> Result<()> {
    let mut c = StorageConn::connect(replica, opts).await?;
    c.exec("START ALL SLAVES").await?;
    c.close().await;
    Ok(())
}

/// Second half of [`repoint`], on a [`detach`]ed replica: points it at `source` and starts it.
pub async fn attach(
    replica: &NodeAddr,
    source: &NodeAddr,
    login: Option<&Login>,
    opts: StorageOptions,
) -> Result<()> {
    let mut c = StorageConn::connect(replica, opts).await?;
    change_master_and_start(&mut c, source, login).await?;
    c.close().await;
    Ok(())
}

/// Points `replica` at `source` with GTID (`slave_pos`), fast reconnects and heartbeats, and
/// starts it. `current_pos` is used for a former primary, whose own binlog is its position.
pub async fn repoint(
    replica: &NodeAddr,
    source: &NodeAddr,
    former_primary: bool,
    login: Option<&Login>,
    opts: StorageOptions,
) -> Result<()> {
    let mut c = StorageConn::connect(replica, opts).await?;
    c.exec("SET GLOBAL read_only = ON").await?;
    c.exec(SHORT_STOP).await?;
    c.exec("STOP ALL SLAVES").await?;
    if former_primary {
        c.exec("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos")
            .await?;
    }
    change_master_and_start(&mut c, source, login).await?;
    c.close().await;
    Ok(())
}

/// `CHANGE MASTER` to `source` with GTID (`slave_pos`), fast reconnects and heartbeats, then
/// `START SLAVE`; the replica's threads are stopped. The replica logs in as `login` (the
/// cluster's `repl` user), so `master.info` never holds the manager's login.
async fn change_master_and_start(
    c: &mut StorageConn,
    source: &NodeAddr,
    login: Option<&Login>,
) -> Result<()> {
    let login = Login::for_source(login, source);
    // Heartbeats every second and a short net timeout: a hung new primary is noticed fast.
    c.exec("SET GLOBAL slave_net_timeout = 4").await?;
    c.exec(&replication::change_master_sql(
        &source.host,
        source.port,
        &login.user,
        &login.password,
    ))
    .await?;
    // A replica's own semi-sync master side stays off: with no replica of its own and
    // `wait_no_slave` on, every transaction its SQL thread applies would wait out the
    // semi-sync timeout. Promotion turns it back on.
    c.exec(
        "SET GLOBAL rpl_semi_sync_master_enabled = OFF; \
         SET GLOBAL rpl_semi_sync_slave_enabled = ON; START SLAVE",
    )
    .await
}

/// Restarts the replication threads of a replica that still points at its primary (its
/// server restarted with `skip-slave-start`), with its semi-sync master side off as
/// [`repoint`] leaves it.
pub async fn restart_replication(replica: &NodeAddr, opts: StorageOptions) -> Result<()> {
    let mut c = StorageConn::connect(replica, opts).await?;
    c.exec(
        "SET GLOBAL read_only = ON; SET GLOBAL rpl_semi_sync_master_enabled = OFF; \
         SET GLOBAL rpl_semi_sync_slave_enabled = ON; START SLAVE",
    )
    .await?;
    c.close().await;
    Ok(())
}

/// Waits up to `bound` until every replication channel of `replica` runs both threads (IO
/// connected, SQL running). `Err` says why not: a thread stopped with an error ends the wait at
/// once; otherwise the last `Last_IO_Error`/`Last_SQL_Error` seen when the bound passed.
///
/// With `target` (the new primary's position when it was promoted), running threads are not
/// enough: the replica must apply up to `target`, so a follower whose SQL thread stops on the
/// first event it re-applies (a duplicate key, say) is seen broken, not running. One still
/// running but behind `target` at the bound counts as replicating (lag is not a break).
pub async fn replicating(
    replica: &NodeAddr,
    target: Option<&GtidPos>,
    bound: Duration,
    opts: StorageOptions,
) -> std::result::Result<(), String> {
    let deadline = tokio::time::Instant::now() + bound;
    let mut c = StorageConn::connect(replica, opts)
        .await
        .map_err(|e| e.to_string())?;
    let r = loop {
        let chans = match channels(&mut c).await {
            Ok(ch) => ch,
            Err(e) => break Err(e.to_string()),
        };
        match replication_state(&chans) {
            ReplState::Running => {
                let Some(target) = target else { break Ok(()) };
                let at: Vec<Option<String>> = match c.query("SELECT @@gtid_current_pos").await {
                    Ok(v) => v,
                    Err(e) => break Err(e.to_string()),
                };
                let caught = at
                    .into_iter()
                    .flatten()
                    .next()
                    .and_then(|p| GtidPos::parse(&p).ok())
                    .is_some_and(|p| p.contains(target));
                if caught || tokio::time::Instant::now() >= deadline {
                    break Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ReplState::Broken(why) => break Err(why),
            ReplState::Starting(why) if tokio::time::Instant::now() >= deadline => {
                break Err(format!("not replicating within {bound:?}: {why}"))
            }
            ReplState::Starting(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    c.close().await;
    r
}

/// Where a freshly started replica stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReplState {
    Running,
    /// Not yet running; the text says what is still missing.
    Starting(String),
    /// A thread stopped with an error, or there is no channel at all.
    Broken(String),
}

fn replication_state(chans: &[Channel]) -> ReplState {
    if chans.is_empty() {
        return ReplState::Broken("no replication channel".into());
    }
    let mut missing = Vec::new();
    for c in chans {
        if let Some(e) = c.sql_error() {
            return ReplState::Broken(e);
        }
        if c.io_running == "No" && c.last_io_errno != 0 {
            return ReplState::Broken(format!(
                "IO thread stopped with error {}: {}",
                c.last_io_errno, c.last_io_error
            ));
        }
        if !c.io_connected() {
            missing.push(if c.last_io_errno != 0 {
                format!(
                    "IO thread {} (error {}: {})",
                    c.io_running, c.last_io_errno, c.last_io_error
                )
            } else {
                format!("IO thread {}", c.io_running)
            });
        }
        if !c.sql_running {
            missing.push("SQL thread not running".to_string());
        }
    }
    if missing.is_empty() {
        ReplState::Running
    } else {
        ReplState::Starting(missing.join(", "))
    }
}

/// Lets the new primary take writes.
pub async fn open_for_writes(addr: &NodeAddr, opts: StorageOptions) -> Result<()> {
    let mut c = StorageConn::connect(addr, opts).await?;
    c.exec("SET GLOBAL read_only = OFF").await?;
    c.close().await;
    Ok(())
}

/// Fences a returning old primary (`read_only=ON`) and then reads its `@@gtid_current_pos`
/// on the same connection. Setting `read_only` waits for commits in flight (a primary woken
/// from a hang may still be finishing one), so the position read afterwards is final: no
/// local write can land after it and escape the errant-transaction check.
pub async fn fence_and_pos(addr: &NodeAddr, opts: StorageOptions) -> Result<String> {
    let mut c = StorageConn::connect(addr, opts).await?;
    c.exec("SET GLOBAL read_only = ON").await?;
    let r: Vec<Option<String>> = c.query("SELECT @@gtid_current_pos").await?;
    c.close().await;
    Ok(r.into_iter().next().flatten().unwrap_or_default())
}

/// `@@gtid_current_pos` of a node.
pub async fn current_pos(addr: &NodeAddr, opts: StorageOptions) -> Result<String> {
    let mut c = StorageConn::connect(addr, opts).await?;
    let r: Vec<Option<String>> = c.query("SELECT @@gtid_current_pos").await?;
    c.close().await;
    Ok(r.into_iter().next().flatten().unwrap_or_default())
}

/// A GTID position contains only digits, `-` and `,`; anything else is dropped so the value
/// can be inlined in SQL.
fn sanitize_pos(p: &str) -> String {
    p.chars()
        .filter(|c| c.is_ascii_digit() || *c == '-' || *c == ',')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_channels_that_received_something_are_waited_for() {
        let got = to_apply(
            [
                Some("0-1-42".to_string()),
                None,
                Some(String::new()),
                Some("1-2-7,2-3-9".to_string()),
            ]
            .into_iter(),
        );
        assert_eq!(got, vec!["0-1-42".to_string(), "1-2-7,2-3-9".to_string()]);
        assert!(to_apply(std::iter::empty()).is_empty());
    }

    #[test]
    fn a_replica_counts_as_replicating_only_with_both_threads_running() {
        let ok = Channel {
            io_running: "Yes".into(),
            sql_running: true,
            ..Channel::default()
        };
        assert_eq!(
            replication_state(std::slice::from_ref(&ok)),
            ReplState::Running
        );
        assert!(matches!(replication_state(&[]), ReplState::Broken(_)));
        let connecting = Channel {
            io_running: "Connecting".into(),
            last_io_errno: 1045,
            last_io_error: "Access denied".into(),
            ..ok.clone()
        };
        assert!(
            matches!(replication_state(&[connecting]), ReplState::Starting(w) if w.contains("Access denied"))
        );
        let sql_stopped = Channel {
            sql_running: false,
            last_sql_errno: 1950,
            last_sql_error: "out of order".into(),
            ..ok.clone()
        };
        assert!(
            matches!(replication_state(&[ok.clone(), sql_stopped]), ReplState::Broken(w) if w.contains("1950"))
        );
        let io_stopped = Channel {
            io_running: "No".into(),
            last_io_errno: 1236,
            ..ok
        };
        assert!(matches!(
            replication_state(&[io_stopped]),
            ReplState::Broken(_)
        ));
    }

    #[test]
    fn the_repl_login_is_used_when_known_else_the_sources_own() {
        let src = NodeAddr {
            host: "h".into(),
            port: 1,
            user: "clustmgr".into(),
            password: "m".into(),
        };
        let repl = Login {
            user: "repl".into(),
            password: "r".into(),
        };
        assert_eq!(Login::for_source(Some(&repl), &src), repl);
        assert_eq!(Login::for_source(None, &src).user, "clustmgr");
        assert!(format!("{repl:?}").contains("<redacted>"));
    }

    #[test]
    fn inlined_values_cannot_break_out() {
        assert_eq!(sanitize_pos("0-1-5,1-2-3'); DROP"), "0-1-5,1-2-3");
        assert_eq!(crate::storage::replication::quote("a'b\\"), "a\\'b\\\\");
    }
}
