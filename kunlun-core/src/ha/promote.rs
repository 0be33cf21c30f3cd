//! The SQL steps of a failover or switchover on storage nodes: fence, catch up, promote,
//! repoint, open for writes, rejoin, restart a replica's threads. Each is one bounded call; the orchestration and the
//! order live in [`super::failover`].
//!
//! Invariant: a promoted node stays `read_only` until [`open_for_writes`], so the failover can
//! repoint replicas and end in-doubt XA branches before any client write lands on it.

use std::time::Duration;

use crate::storage::{NodeAddr, Result, StorageConn, StorageOptions};

/// Best-effort fence of the old primary: `read_only=ON` when it answers. Returns what was done, as recorded in the failover's timeline.
pub async fn fence_read_only(addr: &NodeAddr, opts: StorageOptions) -> String {
    let mut c = match StorageConn::connect(addr, opts).await {
        Ok(c) => c,
        Err(e) => return format!("unreachable, not fenced by SQL ({e})"),
    };
    let r = c.exec("SET GLOBAL read_only = ON").await;
    c.close().await;
    match r {
        Ok(()) => "set read_only=ON".to_string(),
        Err(e) => format!("read_only=ON failed: {e}"),
    }
}

/// Waits (bounded) until the candidate has applied everything it received (`pos`, its
/// `Gtid_IO_Pos`). `Ok(true)` when caught up, `Ok(false)` on timeout.
pub async fn catch_up(
    addr: &NodeAddr,
    pos: &str,
    limit: Duration,
    opts: StorageOptions,
) -> Result<bool> {
    let opts = StorageOptions {
        read_timeout: limit + opts.read_timeout,
        ..opts
    };
    let mut c = StorageConn::connect(addr, opts).await?;
    let sql = format!(
        "SELECT MASTER_GTID_WAIT('{}', {:.3})",
        sanitize_pos(pos),
        limit.as_secs_f64()
    );
    let r: Vec<Option<i64>> = c.query(&sql).await?;
    c.close().await;
    Ok(r.first().copied().flatten() == Some(0))
}

/// Stops and forgets replication on the candidate and turns semi-sync master on (after-sync);
/// it stays read-only. `Ok(false)` when it did not apply what it received within
/// `apply_limit` (its IO threads are then stopped, its SQL threads still run).
///
/// The IO threads stop first and the SQL threads only once they have applied the final
/// received positions (`Gtid_IO_Pos` read after the IO stop): transactions that arrived after
/// the catch-up position was read (a primary not yet fenced) are applied, never dropped.
pub async fn promote(addr: &NodeAddr, opts: StorageOptions, apply_limit: Duration) -> Result<bool> {
    let wait_opts = StorageOptions {
        read_timeout: apply_limit + opts.read_timeout,
        ..opts
    };
    let mut c = StorageConn::connect(addr, wait_opts).await?;
    c.exec("SET GLOBAL read_only = ON").await?;
    c.exec("STOP ALL SLAVES IO_THREAD").await?;
    let received = received_positions(&mut c).await?;
    let deadline = tokio::time::Instant::now() + apply_limit;
    for pos in &received {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let sql = format!(
            "SELECT MASTER_GTID_WAIT('{}', {:.3})",
            sanitize_pos(pos),
            left.as_secs_f64()
        );
        let r: Vec<Option<i64>> = c.query(&sql).await?;
        if r.first().copied().flatten() != Some(0) {
            c.close().await;
            return Ok(false);
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
    Ok(true)
}

/// The non-empty `Gtid_IO_Pos` of every replication channel.
async fn received_positions(c: &mut StorageConn) -> Result<Vec<String>> {
    let rows: Vec<mysql_async::Row> = c.query("SHOW ALL SLAVES STATUS").await?;
    Ok(to_apply(
        rows.iter().map(|r| super::probe::text(r, "Gtid_IO_Pos")),
    ))
}

/// The received positions the SQL threads must reach: a channel that received nothing (NULL
/// or empty `Gtid_IO_Pos`) has nothing to wait for.
fn to_apply(received: impl Iterator<Item = Option<String>>) -> Vec<String> {
    received
        .flatten()
        .filter(|p| !sanitize_pos(p).is_empty())
        .collect()
}

/// First half of [`repoint`]: makes `replica` read-only and stops its replication (the part
/// that may wait seconds on a thread stuck on an unreachable primary), so it can run while the
/// candidate is promoted. A former primary takes its own binlog as its replica position.
pub async fn detach(replica: &NodeAddr, former_primary: bool, opts: StorageOptions) -> Result<()> {
    let mut c = StorageConn::connect(replica, opts).await?;
    c.exec("SET GLOBAL read_only = ON").await?;
    c.exec("STOP ALL SLAVES").await?;
    if former_primary {
        c.exec("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos")
            .await?;
    }
    c.close().await;
    Ok(())
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
pub async fn attach(replica: &NodeAddr, source: &NodeAddr, opts: StorageOptions) -> Result<()> {
    let mut c = StorageConn::connect(replica, opts).await?;
    change_master_and_start(&mut c, source).await?;
    c.close().await;
    Ok(())
}

/// Points `replica` at `source` with GTID (`slave_pos`), fast reconnects and heartbeats, and
/// starts it. `current_pos` is used for a former primary, whose own binlog is its position.
pub async fn repoint(
    replica: &NodeAddr,
    source: &NodeAddr,
    former_primary: bool,
    opts: StorageOptions,
) -> Result<()> {
    let mut c = StorageConn::connect(replica, opts).await?;
    c.exec("SET GLOBAL read_only = ON").await?;
    c.exec("STOP ALL SLAVES").await?;
    if former_primary {
        c.exec("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos")
            .await?;
    }
    change_master_and_start(&mut c, source).await?;
    c.close().await;
    Ok(())
}

/// `CHANGE MASTER` to `source` with GTID (`slave_pos`), fast reconnects and heartbeats, then
/// `START SLAVE`; the replica's threads are stopped.
async fn change_master_and_start(c: &mut StorageConn, source: &NodeAddr) -> Result<()> {
    // Heartbeats every second and a short net timeout: a hung new primary is noticed fast.
    c.exec("SET GLOBAL slave_net_timeout = 4").await?;
    c.exec(&format!(
        "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, MASTER_USER='{}', \
         MASTER_PASSWORD='{}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, \
         MASTER_HEARTBEAT_PERIOD=1",
        quote(&source.host),
        source.port,
        quote(&source.user),
        quote(&source.password)
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

/// Escapes a value for a single-quoted SQL string.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
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
    fn inlined_values_cannot_break_out() {
        assert_eq!(sanitize_pos("0-1-5,1-2-3'); DROP"), "0-1-5,1-2-3");
        assert_eq!(quote("a'b\\"), "a\\'b\\\\");
    }
}
