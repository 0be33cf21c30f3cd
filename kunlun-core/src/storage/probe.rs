//! One probe of one storage node: connect, then `SELECT 1`, GTID positions, `read_only`, the
//! semi-sync state and `SHOW ALL SLAVES STATUS` in one multi-statement query, under the storage
//! client's deadlines.
//!
//! Invariant: a probe never fails as a call; whatever went wrong is in [`NodeProbe::error`]
//! (with `reachable = false`), so the detector decides from facts only.

use std::time::{Duration, Instant};

use mysql_async::Row;
use serde::Serialize;

use super::gtid::GtidPos;
use crate::storage::{NodeAddr, StorageConn, StorageOptions};

/// One replication channel as `SHOW ALL SLAVES STATUS` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Channel {
    /// `Connection_name`: empty for the default connection.
    pub connection_name: String,
    pub master_host: String,
    pub master_port: u16,
    /// `Slave_IO_Running`: `Yes`, `Connecting` or `No`.
    pub io_running: String,
    pub sql_running: bool,
    /// Received position (`Gtid_IO_Pos`).
    pub gtid_io_pos: Option<String>,
    pub seconds_behind: Option<i64>,
    pub last_io_errno: i64,
    pub last_sql_errno: i64,
    /// `Last_IO_Error` text (empty when none).
    pub last_io_error: String,
    /// `Last_SQL_Error` text (empty when none).
    pub last_sql_error: String,
    /// `Master_Log_File` and `Read_Master_Log_Pos`: how far the receiver read.
    pub master_log_file: String,
    pub read_master_log_pos: u64,
    /// `Slave_received_heartbeats`: heartbeats the source sent while it had nothing to send.
    pub received_heartbeats: u64,
    /// `Slave_heartbeat_period` in milliseconds (0 when unknown).
    pub heartbeat_period_ms: u64,
}

impl Channel {
    /// What changes whenever the receiver hears from its source (an event or a heartbeat):
    /// two probes showing the same value saw nothing arrive in between.
    pub fn progress(&self) -> (String, u64, u64, Option<String>) {
        (
            self.master_log_file.clone(),
            self.read_master_log_pos,
            self.received_heartbeats,
            self.gtid_io_pos.clone(),
        )
    }

    /// True when the IO thread holds a live connection to its source.
    pub fn io_connected(&self) -> bool {
        self.io_running == "Yes"
    }

    /// Why the SQL thread cannot apply anything more: it stopped with an error
    /// (`Last_SQL_Errno` set while `Slave_SQL_Running=No`). A thread that still runs with an old
    /// error number is applying again and counts as fine.
    pub fn sql_error(&self) -> Option<String> {
        (!self.sql_running && self.last_sql_errno != 0).then(|| {
            let name = if self.connection_name.is_empty() {
                String::new()
            } else {
                format!("channel '{}' ", self.connection_name)
            };
            format!(
                "{name}SQL thread stopped with error {}: {}",
                self.last_sql_errno,
                truncate(&self.last_sql_error, 200)
            )
        })
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// What one probe saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeProbe {
    pub reachable: bool,
    pub error: Option<String>,
    /// The connect was refused: the machine answered but nothing listened on the port (the
    /// server's process is gone), as opposed to a timeout or a cut connection.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    pub read_only: bool,
    /// `@@gtid_current_pos`.
    pub gtid_current_pos: Option<String>,
    /// `@@gtid_binlog_pos`: what this node wrote to its own binary log.
    pub gtid_binlog_pos: Option<String>,
    pub channels: Vec<Channel>,
    pub semi_sync_master_enabled: bool,
    /// `Rpl_semi_sync_master_status=ON`: commits currently wait for an acknowledgement.
    pub semi_sync_master_active: bool,
    pub semi_sync_wait_after_sync: bool,
    pub semi_sync_clients: i64,
    pub latency_ms: u64,
    /// When the probe's query (ending with `SHOW ALL SLAVES STATUS`) was sent and when its
    /// answer came: the channels' state held somewhere in between (the monitor's silence
    /// measure, `ha::detect`).
    #[serde(skip)]
    pub channels_read: Option<(Instant, Instant)>,
}

impl NodeProbe {
    fn failed(error: String, started: Instant) -> NodeProbe {
        NodeProbe {
            error: Some(error),
            latency_ms: elapsed_ms(started),
            ..NodeProbe::default()
        }
    }

    /// The channel replicating from `host:port`, if any.
    pub fn channel_from(&self, host: &str, port: u16) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.master_host == host && c.master_port == port)
    }

    /// Received position of the channel from `host:port` (`Gtid_IO_Pos`), parsed.
    pub fn received_from(&self, host: &str, port: u16) -> Option<GtidPos> {
        let c = self.channel_from(host, port)?;
        GtidPos::parse(c.gtid_io_pos.as_deref().unwrap_or("")).ok()
    }

    /// The first replication channel whose SQL thread stopped with an error, described.
    pub fn sql_error(&self) -> Option<String> {
        self.channels.iter().find_map(Channel::sql_error)
    }

    /// The semi-sync proof holds for this node as a primary: after-sync wait point and on.
    pub fn semi_sync_proof(&self) -> bool {
        self.reachable && self.semi_sync_master_active && self.semi_sync_wait_after_sync
    }
}

fn elapsed_ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Probes one node; never returns an error (see the module invariant).
pub async fn probe_node(addr: &NodeAddr, opts: StorageOptions) -> NodeProbe {
    let (p, session) = probe_kept(addr, opts, None).await;
    if let Some(c) = session {
        c.close().await;
    }
    p
}

/// Probes one node over `kept`, the session an earlier probe left open, else over a new one;
/// returns the session for the next probe (none after a failure, so the next probe connects
/// afresh). A kept session whose connection broke (the server restarted or died) is replaced
/// by a new connect at once, so a dead server still shows as refused, not as a broken
/// session; a kept session that timed out or got a server error fails this probe. Never
/// returns an error (see the module invariant).
///
/// Keeping sessions halves a probe's cost at fleet scale (the connect and its handshake are
/// most of it: `probe_fleet` bench).
pub async fn probe_kept(
    addr: &NodeAddr,
    opts: StorageOptions,
    kept: Option<StorageConn>,
) -> (NodeProbe, Option<StorageConn>) {
    let started = Instant::now();
    if let Some(mut conn) = kept {
        match gather(&mut conn).await {
            Ok(mut p) => {
                p.latency_ms = elapsed_ms(started);
                return (p, Some(conn));
            }
            Err(crate::storage::Error::Unreachable { .. }) => {}
            Err(e) => return (NodeProbe::failed(e.to_string(), started), None),
        }
    }
    let mut conn = match StorageConn::connect(addr, opts).await {
        Ok(c) => c,
        Err(e) => {
            let refused = matches!(e, crate::storage::Error::Unreachable { refused: true, .. });
            return (
                NodeProbe {
                    refused,
                    ..NodeProbe::failed(e.to_string(), started)
                },
                None,
            );
        }
    };
    match gather(&mut conn).await {
        Ok(mut p) => {
            p.latency_ms = elapsed_ms(started);
            (p, Some(conn))
        }
        Err(e) => (NodeProbe::failed(e.to_string(), started), None),
    }
}

/// The statements of one probe, sent as one multi-statement query (one round trip: at fleet
/// scale a probe's cost is mostly its round trips, `probe_fleet` bench).
pub const PROBE_SQL: &str = "SELECT 1 AS alive, @@read_only AS ro, @@gtid_current_pos AS cur, \
     @@gtid_binlog_pos AS bin, @@rpl_semi_sync_master_enabled AS ss_on, \
     @@rpl_semi_sync_master_wait_point AS ss_wp; \
     SHOW GLOBAL STATUS WHERE Variable_name IN \
     ('Rpl_semi_sync_master_status', 'Rpl_semi_sync_master_clients'); \
     SHOW ALL SLAVES STATUS";

async fn gather(conn: &mut StorageConn) -> crate::storage::Result<NodeProbe> {
    let sent = Instant::now();
    let mut sets = conn.query_sets(PROBE_SQL).await?.into_iter();
    let channels_read = Some((sent, Instant::now()));
    let (Some(vars), Some(status), Some(slaves)) = (sets.next(), sets.next(), sets.next()) else {
        return Err(protocol(
            conn,
            "fewer than 3 results for the probe's statements",
        ));
    };
    let v = vars
        .first()
        .ok_or_else(|| protocol(conn, "no row for the variables"))?;
    let stat = |name: &str| {
        status
            .iter()
            .find(|r| text(r, "Variable_name").is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .and_then(|r| text(r, "Value"))
            .unwrap_or_default()
    };
    Ok(NodeProbe {
        reachable: true,
        error: None,
        refused: false,
        read_only: text(v, "ro").as_deref() == Some("1"),
        gtid_current_pos: text(v, "cur"),
        gtid_binlog_pos: text(v, "bin"),
        channels: slaves.iter().map(channel).collect(),
        semi_sync_master_enabled: text(v, "ss_on").as_deref() == Some("1"),
        semi_sync_master_active: stat("Rpl_semi_sync_master_status").eq_ignore_ascii_case("ON"),
        semi_sync_wait_after_sync: text(v, "ss_wp")
            .is_some_and(|s| s.eq_ignore_ascii_case("AFTER_SYNC")),
        semi_sync_clients: stat("Rpl_semi_sync_master_clients").parse().unwrap_or(0),
        latency_ms: 0,
        channels_read,
    })
}

fn protocol(conn: &StorageConn, reason: &str) -> crate::storage::Error {
    crate::storage::Error::Protocol {
        node: conn.node().to_string(),
        reason: reason.to_string(),
    }
}

/// A column as text (the text protocol sends every value as bytes); `None` for NULL/absent.
pub(crate) fn text(row: &Row, col: &str) -> Option<String> {
    let idx = row.columns_ref().iter().position(|c| c.name_str() == col)?;
    match row.as_ref(idx)? {
        mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        mysql_async::Value::NULL => None,
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

pub(crate) fn channel(row: &Row) -> Channel {
    let t = |c: &str| text(row, c).unwrap_or_default();
    Channel {
        connection_name: t("Connection_name"),
        master_host: t("Master_Host"),
        master_port: t("Master_Port").parse().unwrap_or(0),
        io_running: t("Slave_IO_Running"),
        sql_running: t("Slave_SQL_Running") == "Yes",
        gtid_io_pos: text(row, "Gtid_IO_Pos"),
        seconds_behind: text(row, "Seconds_Behind_Master").and_then(|s| s.parse().ok()),
        last_io_errno: t("Last_IO_Errno").parse().unwrap_or(0),
        last_sql_errno: t("Last_SQL_Errno").parse().unwrap_or(0),
        last_io_error: t("Last_IO_Error"),
        last_sql_error: t("Last_SQL_Error"),
        master_log_file: t("Master_Log_File"),
        read_master_log_pos: t("Read_Master_Log_Pos").parse().unwrap_or(0),
        received_heartbeats: t("Slave_received_heartbeats").parse().unwrap_or(0),
        heartbeat_period_ms: t("Slave_heartbeat_period")
            .parse::<f64>()
            .map_or(0, |s| (s * 1000.0).round().max(0.0) as u64),
    }
}

/// Default deadlines of a probe: short, so one dead node does not stall a round. A server
/// answers a connect in milliseconds; one that has not greeted within a quarter of the
/// interval (at least 250 ms), or not answered a statement within half of it (at least
/// 500 ms), counts as a failed probe (one failed probe alone changes nothing: see
/// `ha::detect`), so a hung primary is noticed within a round, and the round that probes it
/// is not held up for long.
pub fn probe_options(interval: Duration, base: StorageOptions) -> StorageOptions {
    let cap = (interval / 2).max(Duration::from_millis(500));
    let connect_cap = (interval / 4).max(Duration::from_millis(250));
    StorageOptions {
        connect_timeout: base.connect_timeout.min(connect_cap),
        read_timeout: base.read_timeout.min(cap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stopped_sql_thread_with_an_error_counts() {
        let mut c = Channel {
            sql_running: false,
            last_sql_errno: 1062,
            last_sql_error: "Duplicate entry '5' for key 'PRIMARY'".into(),
            ..Channel::default()
        };
        let why = c.sql_error().unwrap();
        assert!(
            why.contains("1062") && why.contains("Duplicate entry"),
            "{why}"
        );
        let p = NodeProbe {
            reachable: true,
            channels: vec![Channel::default(), c.clone()],
            ..NodeProbe::default()
        };
        assert_eq!(p.sql_error(), Some(why));
        c.sql_running = true;
        assert_eq!(c.sql_error(), None, "running again");
        c.sql_running = false;
        c.last_sql_errno = 0;
        assert_eq!(c.sql_error(), None, "stopped cleanly");
    }
}
