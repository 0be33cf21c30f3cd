//! Lightweight MySQL-protocol endpoints for benchmarks that need thousands of "storage nodes":
//! each listener on 127.0.0.1 does the handshake (any user and password, announced as
//! `mysql_native_password`) and answers what the HA probe and the driver ask a MariaDB node,
//! from a fixed, healthy picture. A bench harness only: nothing proves MariaDB behaves so.
//!
//! Invariants: the fleet is laid out as shards of [`SHARD_NODES`] in listener order (the
//! first of each the primary, see [`primary_of`]); a primary is writable, semi-sync on with
//! its replicas attached and has no replication channel; a replica is read-only with one
//! running channel from its primary's port; every node of a shard reports the same GTID
//! positions. Statements it does not know get an OK (or an empty result set) and are named
//! once on stderr; it speaks the text protocol only (prepared statements get an error).
//!
//! [`FleetProcess`] serves a fleet from a child process (the running binary started again),
//! so that the CPU of the process under test is measured without the endpoints'.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, BufStream};
use tokio::net::{TcpListener, TcpStream};

mod wire;
use wire::*;

/// Nodes per shard of the fleet's layout (the last shard may be smaller).
pub const SHARD_NODES: usize = 3;
/// Server version announced: a MariaDB one, as the driver reads it.
const VERSION: &str = "5.5.5-10.11.6-MariaDB-fake";
/// Every node of every shard reports this position (domain 0, server 1).
const GTID: &str = "0-1-1000";
/// The environment variable that makes [`serve_if_asked`] serve that many endpoints.
const SERVE_ENV: &str = "KUNLUN_FAKE_MYSQL_FLEET";

/// Index of the primary of the node at `index` in the fleet's layout.
pub fn primary_of(index: usize) -> usize {
    index - index % SHARD_NODES
}

/// One endpoint's picture of itself.
#[derive(Debug, Clone)]
pub struct Node {
    pub port: u16,
    /// `None` for a primary; a replica's primary port.
    pub primary_port: Option<u16>,
}

/// What the endpoints of one fleet share.
#[derive(Debug)]
struct Shared {
    /// Statements and expressions already reported as not understood.
    seen: Mutex<HashSet<String>>,
    /// Replicas count heartbeats from here (their receivers' progress moves with time).
    started: Instant,
    ids: AtomicU32,
}

impl Shared {
    fn once(&self, what: &str) {
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() < 1000 && g.insert(what.to_string()) {
            eprintln!("fake-mysql: not understood (answered OK / NULL / empty): {what}");
        }
    }
}

/// Binds `n` listeners on 127.0.0.1 (ports chosen by the kernel).
pub async fn bind(n: usize) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpListener::bind(("127.0.0.1", 0)).await?);
    }
    Ok(out)
}

/// The layout's node pictures for listeners on `ports`, in order.
pub fn layout(ports: &[u16]) -> Vec<Node> {
    ports
        .iter()
        .enumerate()
        .map(|(i, &port)| Node {
            port,
            primary_port: (primary_of(i) != i).then(|| ports[primary_of(i)]),
        })
        .collect()
}

/// Serves every listener as its node of the layout, on the current runtime, until it stops.
pub fn serve(listeners: Vec<TcpListener>) -> std::io::Result<Vec<u16>> {
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<u16>>>()?;
    let shared = Arc::new(Shared {
        seen: Mutex::new(HashSet::new()),
        started: Instant::now(),
        ids: AtomicU32::new(1),
    });
    for (l, node) in listeners.into_iter().zip(layout(&ports)) {
        let (node, shared) = (Arc::new(node), shared.clone());
        tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        let (node, shared) = (node.clone(), shared.clone());
                        tokio::spawn(async move {
                            let _ = session(s, &node, &shared).await;
                        });
                    }
                    // Out of descriptors: back off rather than spin.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                }
            }
        });
    }
    Ok(ports)
}

/// Called first in `main` of a binary that uses [`FleetProcess`]: in the child it serves the
/// fleet asked for, prints `PORTS p1,p2,...` and never returns (it exits when its stdin
/// closes, i.e. when the parent is gone); elsewhere it returns at once.
pub fn serve_if_asked() {
    let Ok(n) = std::env::var(SERVE_ENV) else {
        return;
    };
    let code = match serve_child(&n) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("fake-mysql fleet: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn serve_child(n: &str) -> Result<()> {
    let n: usize = n.parse().context("fleet size")?;
    // One thread: the endpoints take at most one core from the process under test.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ports = serve(bind(n).await.context("binding the listeners")?)?;
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        println!("PORTS {}", list.join(","));
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while stdin.read(&mut buf).await.unwrap_or(0) > 0 {}
        Ok(())
    })
}

/// A fleet served by a child process; killed by PID when dropped.
#[derive(Debug)]
pub struct FleetProcess {
    child: Child,
    /// The nodes' ports, in layout order.
    pub ports: Vec<u16>,
}

impl FleetProcess {
    /// Starts the running binary again as a fleet of `n` endpoints; the binary's `main` must
    /// call [`serve_if_asked`] first.
    pub fn start(n: usize) -> Result<FleetProcess> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .env(SERVE_ENV, n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the endpoint process")?;
        let out = child.stdout.take().context("child stdout")?;
        let mut guard = FleetProcess {
            child,
            ports: Vec::new(),
        };
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let Some(list) = line.trim().strip_prefix("PORTS ") else {
            bail!("the endpoint process did not start: {line:?}");
        };
        guard.ports = list
            .split(',')
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .context("port list")?;
        if guard.ports.len() != n {
            bail!("asked for {n} endpoints, got {}", guard.ports.len());
        }
        Ok(guard)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system) the child used so far, from `/proc`.
    pub fn cpu_secs(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let after = stat.rsplit_once(')').context("stat format")?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of stat(5) (utime, stime), counted after the command name.
        let ticks: f64 = f.get(11).context("utime")?.parse::<f64>()?
            + f.get(12).context("stime")?.parse::<f64>()?;
        // USER_HZ is 100 on every Linux this runs on.
        Ok(ticks / 100.0)
    }
}

impl Drop for FleetProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client session: handshake, then commands until `COM_QUIT` or the end of the stream.
async fn session(stream: TcpStream, node: &Node, shared: &Shared) -> std::io::Result<()> {
    let id = shared.ids.fetch_add(1, Ordering::Relaxed);
    stream.set_nodelay(true)?;
    let mut s = BufStream::new(stream);
    let mut r = Reply::new(0);
    r.packet(|p| {
        p.push(10);
        p.extend_from_slice(VERSION.as_bytes());
        p.push(0);
        p.extend_from_slice(&id.to_le_bytes());
        let scramble = b"0123456789abcdefghij";
        p.extend_from_slice(&scramble[..8]);
        p.push(0);
        p.extend_from_slice(&(CAPABILITIES as u16).to_le_bytes());
        p.push(UTF8MB4);
        p.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
        p.extend_from_slice(&((CAPABILITIES >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(&scramble[8..]);
        p.push(0);
        p.extend_from_slice(b"mysql_native_password\0");
    });
    send(&mut s, &r).await?;
    let mut buf = Vec::with_capacity(256);
    // Any credentials are accepted: the reply to the handshake response is OK.
    let Some(seq) = read_packet(&mut s, &mut buf).await? else {
        return Ok(());
    };
    r.reset(seq.wrapping_add(1));
    r.ok();
    send(&mut s, &r).await?;
    while read_packet(&mut s, &mut buf).await?.is_some() {
        r.reset(1);
        match buf.first().copied() {
            Some(COM_QUIT) => return Ok(()),
            Some(COM_QUERY) => {
                let sql = String::from_utf8_lossy(&buf[1..]);
                let mut cx = Cx {
                    id,
                    shared,
                    sleep: Duration::ZERO,
                };
                // A multi-statement query: each statement's result in turn, all but the last
                // saying that more follow (an error ends the query, as on a real server).
                let statements = split_statements(&sql);
                for (i, stmt) in statements.iter().enumerate() {
                    r.more = i + 1 < statements.len();
                    let start = r.buf.len();
                    node.answer(stmt, &mut cx, &mut r);
                    if r.buf.get(start + 4) == Some(&0xff) {
                        break;
                    }
                }
                if !cx.sleep.is_zero() {
                    // `SELECT SLEEP(n)` (the HA crash watch parks one): answered after n s.
                    tokio::time::sleep(cx.sleep).await;
                }
            }
            Some(COM_PING | COM_INIT_DB | COM_RESET_CONNECTION) => r.ok(),
            other => {
                shared.once(&format!("command {other:?}"));
                r.err(1047, "08S01", "Unknown command");
            }
        }
        send(&mut s, &r).await?;
    }
    Ok(())
}

// --- the answers --------------------------------------------------------------------------

/// `SHOW ALL SLAVES STATUS` columns of MariaDB 10.11, in order.
const SLAVE_COLUMNS: &[&str] = &[
    "Connection_name",
    "Slave_SQL_State",
    "Slave_IO_State",
    "Master_Host",
    "Master_User",
    "Master_Port",
    "Connect_Retry",
    "Master_Log_File",
    "Read_Master_Log_Pos",
    "Relay_Log_File",
    "Relay_Log_Pos",
    "Relay_Master_Log_File",
    "Slave_IO_Running",
    "Slave_SQL_Running",
    "Replicate_Rewrite_DB",
    "Replicate_Do_DB",
    "Replicate_Ignore_DB",
    "Replicate_Do_Table",
    "Replicate_Ignore_Table",
    "Replicate_Wild_Do_Table",
    "Replicate_Wild_Ignore_Table",
    "Last_Errno",
    "Last_Error",
    "Skip_Counter",
    "Exec_Master_Log_Pos",
    "Relay_Log_Space",
    "Until_Condition",
    "Until_Log_File",
    "Until_Log_Pos",
    "Master_SSL_Allowed",
    "Master_SSL_CA_File",
    "Master_SSL_CA_Path",
    "Master_SSL_Cert",
    "Master_SSL_Cipher",
    "Master_SSL_Key",
    "Seconds_Behind_Master",
    "Master_SSL_Verify_Server_Cert",
    "Last_IO_Errno",
    "Last_IO_Error",
    "Last_SQL_Errno",
    "Last_SQL_Error",
    "Replicate_Ignore_Server_Ids",
    "Master_Server_Id",
    "Master_SSL_Crl",
    "Master_SSL_Crlpath",
    "Using_Gtid",
    "Gtid_IO_Pos",
    "Replicate_Do_Domain_Ids",
    "Replicate_Ignore_Domain_Ids",
    "Parallel_Mode",
    "SQL_Delay",
    "SQL_Remaining_Delay",
    "Slave_SQL_Running_State",
    "Slave_DDL_Groups",
    "Slave_Non_Transactional_Groups",
    "Slave_Transactional_Groups",
    "Retried_transactions",
    "Max_relay_log_size",
    "Executed_log_entries",
    "Slave_received_heartbeats",
    "Slave_heartbeat_period",
    "Gtid_Slave_Pos",
];

impl Node {
    fn is_primary(&self) -> bool {
        self.primary_port.is_none()
    }

    /// A global variable by lower-case name; `None` when this fake does not know it.
    fn var(&self, name: &str) -> Option<Option<String>> {
        let on = |b: bool| Some(Some(if b { "1" } else { "0" }.to_string()));
        let s = |v: &str| Some(Some(v.to_string()));
        match name {
            "read_only" => on(!self.is_primary()),
            "gtid_current_pos" | "gtid_binlog_pos" => s(GTID),
            "gtid_slave_pos" => s(if self.is_primary() { "" } else { GTID }),
            "rpl_semi_sync_master_enabled" | "rpl_semi_sync_slave_enabled" => on(true),
            "rpl_semi_sync_master_wait_point" => s("AFTER_SYNC"),
            "rpl_semi_sync_master_timeout" => s("10000"),
            "max_allowed_packet" => s("16777216"),
            "wait_timeout" => s("28800"),
            "socket" => Some(None),
            "version" => s(VERSION.trim_start_matches("5.5.5-")),
            "server_id" => s(&self.port.to_string()),
            "port" => s(&self.port.to_string()),
            "hostname" => s("127.0.0.1"),
            "log_bin" | "log_slave_updates" | "autocommit" => on(true),
            "gtid_domain_id" => s("0"),
            "gtid_strict_mode" => on(true),
            "binlog_format" => s("ROW"),
            "innodb_buffer_pool_size" => s("67108864"),
            _ => None,
        }
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        let p = self.is_primary();
        vec![
            (
                "Rpl_semi_sync_master_clients",
                (if p { "2" } else { "0" }).into(),
            ),
            (
                "Rpl_semi_sync_master_status",
                (if p { "ON" } else { "OFF" }).into(),
            ),
            (
                "Rpl_semi_sync_slave_status",
                (if p { "OFF" } else { "ON" }).into(),
            ),
            ("Threads_connected", "3".into()),
            ("Uptime", "100000".into()),
        ]
    }

    fn slave_row(&self, shared: &Shared) -> Option<Vec<Option<String>>> {
        let from = self.primary_port?;
        // Heartbeats every 0.5 s (`MASTER_HEARTBEAT_PERIOD=0.5`) on an idle primary.
        let beats = shared.started.elapsed().as_millis() / 500;
        let row = SLAVE_COLUMNS
            .iter()
            .map(|c| {
                let v = match *c {
                    "Connection_name" | "Slave_SQL_State" | "Master_SSL_Allowed" => "",
                    "Slave_IO_State" => "Waiting for master to send event",
                    "Master_Host" => "127.0.0.1",
                    "Master_User" => "repl",
                    "Master_Port" => return Some(from.to_string()),
                    "Connect_Retry" => "60",
                    "Master_Log_File" | "Relay_Master_Log_File" => "binlog.000001",
                    "Read_Master_Log_Pos" | "Exec_Master_Log_Pos" => "4096",
                    "Relay_Log_File" => "relay.000002",
                    "Relay_Log_Pos" | "Relay_Log_Space" => "4396",
                    "Slave_IO_Running" | "Slave_SQL_Running" => "Yes",
                    "Until_Condition" => "None",
                    "Master_SSL_Verify_Server_Cert" => "No",
                    "Master_Server_Id" => return Some(from.to_string()),
                    "Using_Gtid" => "Slave_Pos",
                    "Gtid_IO_Pos" | "Gtid_Slave_Pos" => GTID,
                    "Parallel_Mode" => "optimistic",
                    "Slave_SQL_Running_State" => {
                        "Slave has read all relay log; waiting for more updates"
                    }
                    "Slave_heartbeat_period" => "0.500",
                    "Slave_received_heartbeats" => return Some(beats.to_string()),
                    "SQL_Remaining_Delay" => return None,
                    c if c.contains("Errno")
                        || c.ends_with("_Pos")
                        || c.ends_with("Groups")
                        || c.ends_with("Delay")
                        || c.ends_with("_Counter")
                        || c.ends_with("_transactions")
                        || c.ends_with("_entries")
                        || c.ends_with("heartbeats")
                        || c == "Seconds_Behind_Master"
                        || c == "Max_relay_log_size" =>
                    {
                        "0"
                    }
                    _ => "",
                };
                Some(v.to_string())
            })
            .collect();
        Some(row)
    }

    /// Writes the reply to `sql`; sets `cx.sleep` when it is to be sent only after a sleep.
    fn answer(&self, sql: &str, cx: &mut Cx<'_>, r: &mut Reply) {
        let shared = cx.shared;
        let q = sql.trim().trim_end_matches(';').trim();
        let upper = q.to_ascii_uppercase();
        let words: Vec<&str> = upper.split_whitespace().collect();
        match words.as_slice() {
            ["SELECT", ..] if !upper.contains(" FROM ") => self.select(&q[6..], cx, r),
            ["SHOW", "ALL", "SLAVES" | "REPLICAS", "STATUS"]
            | ["SHOW", "SLAVE" | "REPLICA", "STATUS"] => {
                let rows: Vec<_> = self.slave_row(shared).into_iter().collect();
                r.result_set(SLAVE_COLUMNS, &rows);
            }
            ["SHOW", "GLOBAL" | "SESSION", "STATUS", ..] | ["SHOW", "STATUS", ..] => {
                let want = filter(q);
                let rows: Vec<Vec<Option<String>>> = self
                    .status()
                    .into_iter()
                    .filter(|(n, _)| want.as_ref().is_none_or(|w| w.iter().any(|p| like(p, n))))
                    .map(|(n, v)| vec![Some(n.to_string()), Some(v)])
                    .collect();
                r.result_set(&["Variable_name", "Value"], &rows);
            }
            ["SHOW", "GLOBAL" | "SESSION", "VARIABLES", ..] | ["SHOW", "VARIABLES", ..] => {
                let rows: Vec<Vec<Option<String>>> = filter(q)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|n| {
                        let v = self.var(&n.to_ascii_lowercase())?;
                        Some(vec![Some(n.clone()), Some(v.unwrap_or_default())])
                    })
                    .collect();
                r.result_set(&["Variable_name", "Value"], &rows);
            }
            ["SET" | "USE" | "BEGIN" | "COMMIT" | "ROLLBACK", ..] => r.ok(),
            // A statement that fails, as a real server's `SIGNAL` does.
            ["SIGNAL", ..] => r.err(1644, "45000", "Unhandled user-defined exception condition"),
            ["SELECT" | "SHOW", ..] => {
                shared.once(q);
                r.result_set(&["Value"], &[]);
            }
            _ => {
                shared.once(q);
                r.ok();
            }
        }
    }

    /// `SELECT` without `FROM`: each item evaluated, named by its alias or its text.
    fn select(&self, list: &str, cx: &mut Cx<'_>, r: &mut Reply) {
        let mut names = Vec::new();
        let mut row = Vec::new();
        for item in split_top(list) {
            let (expr, name) = alias(item);
            names.push(name);
            row.push(self.eval(expr, cx));
        }
        let cols: Vec<&str> = names.iter().map(String::as_str).collect();
        r.result_set(&cols, &[row]);
    }

    fn eval(&self, expr: &str, cx: &mut Cx<'_>) -> Option<String> {
        let (id, shared) = (cx.id, cx.shared);
        let e = expr.trim();
        if let Some(v) = e.strip_prefix("@@") {
            let v = v.to_ascii_lowercase();
            let name = ["global.", "session.", "local."]
                .iter()
                .find_map(|p| v.strip_prefix(p))
                .unwrap_or(&v);
            return self.var(name).unwrap_or_else(|| {
                shared.once(&format!("variable @@{name}"));
                None
            });
        }
        if e.parse::<i64>().is_ok() {
            return Some(e.to_string());
        }
        if let Some(s) = e.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            return Some(s.to_string());
        }
        let upper = e.to_ascii_uppercase();
        if let Some(secs) = upper
            .strip_prefix("SLEEP(")
            .and_then(|s| s.strip_suffix(')'))
            .and_then(|s| s.trim().parse::<f64>().ok())
        {
            cx.sleep = cx
                .sleep
                .max(Duration::from_secs_f64(secs.clamp(0.0, 3600.0)));
            return Some("0".into());
        }
        match upper.as_str() {
            "NULL" | "DATABASE()" => None,
            "VERSION()" => Some(VERSION.trim_start_matches("5.5.5-").to_string()),
            "CONNECTION_ID()" => Some(id.to_string()),
            _ => {
                shared.once(&format!("expression {e}"));
                None
            }
        }
    }
}

/// What a statement is answered in.
struct Cx<'a> {
    /// The session's id (`CONNECTION_ID()`).
    id: u32,
    shared: &'a Shared,
    /// How long the reply waits before it is sent (`SLEEP(n)`).
    sleep: Duration,
}

/// Items of a select list: commas outside parentheses and quotes.
fn split_top(list: &str) -> Vec<&str> {
    let (mut out, mut depth, mut quote, mut start) = (Vec::new(), 0i32, None, 0);
    for (i, c) in list.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(list[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(list[start..].trim());
    out
}

/// The statements of a query: split at `;` outside quotes, empty ones dropped (a trailing `;`).
fn split_statements(sql: &str) -> Vec<&str> {
    let (mut out, mut quote, mut start) = (Vec::new(), None, 0);
    for (i, c) in sql.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, ';') => {
                out.push(sql[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(sql[start..].trim());
    out.retain(|s| !s.is_empty());
    if out.is_empty() {
        out.push("");
    }
    out
}

/// `expr AS name` -> (expr, name); otherwise the item's text names its column.
fn alias(item: &str) -> (&str, String) {
    let upper = item.to_ascii_uppercase();
    if let Some(i) = upper.rfind(" AS ") {
        let name = item[i + 4..].trim().trim_matches(['`', '"', '\'']);
        if !name.is_empty() && !name.contains([' ', '(', ')']) {
            return (&item[..i], name.to_string());
        }
    }
    (item, item.to_string())
}

/// The quoted names after `LIKE` or `WHERE ... IN (...)`; `None` means all.
fn filter(q: &str) -> Option<Vec<String>> {
    let upper = q.to_ascii_uppercase();
    let at = upper.find(" LIKE ").or_else(|| upper.find(" WHERE "))?;
    Some(
        q[at..]
            .split('\'')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// SQL `LIKE` with `%` only, case-insensitive.
fn like(pat: &str, s: &str) -> bool {
    let (p, s) = (pat.to_ascii_lowercase(), s.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('%').collect();
    if parts.len() == 1 {
        return p == s;
    }
    let mut rest = s.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use kunlun_core::storage::probe::probe_node;
    use kunlun_core::storage::{NodeAddr, StorageOptions};

    use super::*;

    fn addr(port: u16) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port,
            user: "root".into(),
            password: "secret".into(),
        }
    }

    /// Deadlines long enough for a loaded test machine.
    fn opts() -> StorageOptions {
        StorageOptions {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn the_probe_sees_a_healthy_semi_sync_shard() {
        let ports = serve(bind(4).await.unwrap()).unwrap();
        let opts = opts();
        let p = probe_node(&addr(ports[0]), opts).await;
        assert!(p.reachable, "{:?}", p.error);
        assert!(!p.read_only && p.channels.is_empty());
        assert!(p.semi_sync_proof() && p.semi_sync_clients == 2);
        assert_eq!(p.gtid_current_pos.as_deref(), Some(GTID));
        let r = probe_node(&addr(ports[2]), opts).await;
        assert!(r.reachable && r.read_only, "{:?}", r.error);
        let c = r.channel_from("127.0.0.1", ports[0]).expect("channel");
        assert!(c.io_connected() && c.sql_running && c.sql_error().is_none());
        assert_eq!(
            r.received_from("127.0.0.1", ports[0]).unwrap().to_string(),
            GTID
        );
        // The fourth listener starts the next shard: a primary.
        let q = probe_node(&addr(ports[3]), opts).await;
        assert!(q.reachable && !q.read_only && q.channels.is_empty());
    }

    #[test]
    fn select_lists_and_filters() {
        assert_eq!(
            split_top("1 AS a, CAST(f(x, 'a,b') AS CHAR) AS b, @@x"),
            vec!["1 AS a", "CAST(f(x, 'a,b') AS CHAR) AS b", "@@x"]
        );
        assert_eq!(
            alias("@@read_only AS ro"),
            ("@@read_only", "ro".to_string())
        );
        assert_eq!(alias("@@wait_timeout").1, "@@wait_timeout");
        assert_eq!(
            filter("SHOW GLOBAL STATUS WHERE Variable_name IN ('A', 'b')"),
            Some(vec!["A".to_string(), "b".to_string()])
        );
        assert!(like("rpl_semi%", "Rpl_semi_sync_master_status"));
        assert!(!like("x%y", "xz"));
        assert_eq!(
            split_statements("SELECT 'a;b' AS x; SHOW ALL SLAVES STATUS;"),
            vec!["SELECT 'a;b' AS x", "SHOW ALL SLAVES STATUS"]
        );
        assert_eq!(split_statements(" ; "), vec![""]);
    }

    /// A multi-statement query gets one result per statement, all but the last flagged as
    /// followed by more, and leaves the session usable.
    #[tokio::test]
    async fn a_multi_statement_query_answers_each_statement() {
        let ports = serve(bind(1).await.unwrap()).unwrap();
        let url = format!("mysql://root:x@127.0.0.1:{}", ports[0]);
        let mut c = mysql_async::Conn::from_url(url).await.unwrap();
        use mysql_async::prelude::Queryable;
        let mut r = c
            .query_iter("SELECT 1 AS a; SELECT 'x;y' AS b, 2 AS c")
            .await
            .unwrap();
        let first: Vec<(i64,)> = r.collect().await.unwrap();
        let second: Vec<(String, i64)> = r.collect().await.unwrap();
        assert!(r.is_empty());
        drop(r);
        assert_eq!((first, second), (vec![(1,)], vec![("x;y".to_string(), 2)]));
        let e = c.query_drop("SELECT 1; NO SUCH THING").await;
        assert!(
            e.is_ok(),
            "an unknown statement is answered OK by the fake: {e:?}"
        );
        let one: Vec<(i64,)> = c.query("SELECT 3 AS z").await.unwrap();
        assert_eq!(
            one,
            vec![(3,)],
            "the session is usable after a multi-statement query"
        );
        c.disconnect().await.unwrap();
    }

    /// `StorageConn::query_sets` (the probe's one round trip) reports an error of a later
    /// statement as the query's error, and the session stays usable.
    #[tokio::test]
    async fn an_error_mid_query_fails_the_query_sets_call() {
        let ports = serve(bind(1).await.unwrap()).unwrap();
        let opts = opts();
        let mut c = kunlun_core::storage::StorageConn::connect(&addr(ports[0]), opts)
            .await
            .unwrap();
        let sets = c.query_sets("SELECT 1 AS a; SELECT 2 AS b").await.unwrap();
        assert_eq!(sets.len(), 2);
        let e = c
            .query_sets("SELECT 1 AS a; SIGNAL SQLSTATE '45000'; SELECT 2 AS b")
            .await
            .unwrap_err();
        assert_eq!(e.server_code(), Some(1644), "{e}");
        let sets = c.query_sets("SELECT 3 AS z").await.unwrap();
        assert_eq!(sets.len(), 1, "the session is usable after the error");
        assert_eq!(sets[0].len(), 1);
        c.close().await;
    }
}
