//! A small SQL client for storage nodes (the MySQL-compatible shard members), used by XA
//! recovery and, later, by the shard monitor and failover.
//!
//! Invariants: every connect and every statement has a deadline ([`StorageOptions`]); a
//! connection whose statement timed out or failed at the transport level is closed and never
//! reused (its session state is unknown); a server error (an SQL error with a code) is data the
//! caller branches on ([`Error::Server`]), not a broken connection.

pub mod gtid;
pub mod probe;
pub mod replication;

use std::fmt;
use std::time::Duration;

use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, OptsBuilder};

/// `ER_XAER_NOTA`: the xid is not prepared here, or it is still attached to its owner's session.
pub const ER_XAER_NOTA: u16 = 1397;
/// `ER_XA_RBROLLBACK`: the branch was rolled back (a read-only branch ends this way on commit).
pub const ER_XA_RBROLLBACK: u16 = 1402;

/// Errors talking to a storage node; variants say what the caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node refused or dropped the connection; retry later or on another node.
    /// `refused`: the connect was refused (the host answered, nothing listens on the port).
    #[error("storage node {node} unreachable: {reason}")]
    Unreachable {
        node: String,
        reason: String,
        refused: bool,
    },
    /// No answer within the deadline; the connection was closed.
    #[error("storage node {node}: no answer within {after:?} to {what}")]
    Timeout {
        node: String,
        after: Duration,
        what: String,
    },
    /// The server answered with an SQL error; the connection is still usable.
    #[error("storage node {node}: error {code}: {message}")]
    Server {
        node: String,
        code: u16,
        message: String,
    },
    /// The answer did not have the expected shape.
    #[error("storage node {node}: unexpected answer: {reason}")]
    Protocol { node: String, reason: String },
}

impl Error {
    /// The server's error code when the server answered with an SQL error.
    pub fn server_code(&self) -> Option<u16> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the connection can no longer be used.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Error::Server { .. })
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Deadlines of storage-node calls (`mysql_connect_timeout`, `mysql_read_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageOptions {
    /// Deadline for establishing a connection (TCP and handshake). Default 3 s.
    pub connect_timeout: Duration,
    /// Deadline for one statement (or one multi-statement query) and its results. Default
    /// 10 s.
    pub read_timeout: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// Where a storage node listens and how to log in. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl fmt::Debug for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeAddr")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl From<&kunlun_meta::model::ShardNode> for NodeAddr {
    fn from(n: &kunlun_meta::model::ShardNode) -> Self {
        NodeAddr {
            host: n.hostaddr.clone(),
            port: n.port,
            user: n.user_name.clone(),
            password: n.passwd.clone(),
        }
    }
}

impl From<&kunlun_meta::model::MetaDbNode> for NodeAddr {
    fn from(n: &kunlun_meta::model::MetaDbNode) -> Self {
        NodeAddr {
            host: n.hostaddr.clone(),
            port: n.port,
            user: n.user_name.clone(),
            password: n.passwd.clone(),
        }
    }
}

/// One row of `XA RECOVER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredXid {
    pub format_id: i64,
    pub gtrid_length: usize,
    pub bqual_length: usize,
    /// gtrid followed by bqual, raw bytes.
    pub data: Vec<u8>,
}

impl RecoveredXid {
    /// The gtrid as text when the xid has format 1 (what `XA START '…'` gives), no bqual,
    /// and valid UTF-8; `None` otherwise.
    pub fn plain_gtrid(&self) -> Option<&str> {
        if self.format_id != 1 || self.bqual_length != 0 || self.gtrid_length != self.data.len() {
            return None;
        }
        std::str::from_utf8(&self.data).ok()
    }
}

/// An open connection to one storage node.
pub struct StorageConn {
    conn: Option<Conn>,
    node: String,
    opts: StorageOptions,
}

impl fmt::Debug for StorageConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConn")
            .field("node", &self.node)
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl StorageConn {
    /// Connects within `opts.connect_timeout`.
    pub async fn connect(addr: &NodeAddr, opts: StorageOptions) -> Result<StorageConn> {
        let node = addr.to_string();
        let builder = OptsBuilder::default()
            .ip_or_hostname(addr.host.clone())
            .tcp_port(addr.port)
            .user(Some(addr.user.clone()))
            .pass(Some(addr.password.clone()))
            .prefer_socket(false)
            .stmt_cache_size(0);
        match tokio::time::timeout(opts.connect_timeout, Conn::new(builder)).await {
            Err(_) => Err(Error::Timeout {
                node,
                after: opts.connect_timeout,
                what: "connect".into(),
            }),
            Ok(Err(e)) => Err(match e {
                mysql_async::Error::Server(s) => Error::Server {
                    node,
                    code: s.code,
                    message: s.message,
                },
                other => Error::Unreachable {
                    node,
                    refused: is_refused(&other),
                    reason: other.to_string(),
                },
            }),
            Ok(Ok(conn)) => Ok(StorageConn {
                conn: Some(conn),
                node,
                opts,
            }),
        }
    }

    /// `host:port` of the node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The server's id of this session (for `KILL`).
    pub fn connection_id(&self) -> Option<u32> {
        self.conn.as_ref().map(Conn::id)
    }

    /// The open session, or `Unreachable` after an earlier failure closed it.
    fn open(&mut self) -> Result<&mut Conn> {
        self.conn.as_mut().ok_or_else(|| Error::Unreachable {
            node: self.node.clone(),
            reason: "connection closed after an earlier failure".into(),
            refused: false,
        })
    }

    /// Runs a query and collects its rows within the read deadline.
    pub async fn query<T: FromRow + Send + 'static>(&mut self, sql: &str) -> Result<Vec<T>> {
        let node = self.node.clone();
        let after = self.opts.read_timeout;
        let conn = self.open()?;
        // Rows are converted here, not by the driver: its conversion panics on a value that
        // does not fit `T`, and a probe must never bring the monitor down.
        let r = tokio::time::timeout(after, conn.query::<mysql_async::Row, _>(sql)).await;
        let rows = self.finish(r, sql)?;
        rows.into_iter()
            .map(|row| {
                T::from_row_opt(row).map_err(|e| Error::Protocol {
                    node: node.clone(),
                    reason: format!("`{}`: unexpected row: {e}", truncate(sql, 80)),
                })
            })
            .collect()
    }

    /// Runs several statements (`;`-separated, each one returning a result set: a statement
    /// answered with OK only would shift the count) in one round trip and collects each one's
    /// rows, in order, within one read deadline. A server error in any of them fails the whole
    /// with that error (the server runs none after it).
    pub async fn query_sets(&mut self, sql: &str) -> Result<Vec<Vec<mysql_async::Row>>> {
        let after = self.opts.read_timeout;
        let conn = self.open()?;
        let r = tokio::time::timeout(after, async {
            let mut result = conn.query_iter(sql).await?;
            let mut sets = Vec::new();
            while !result.is_empty() {
                sets.push(result.collect::<mysql_async::Row>().await?);
            }
            // The driver keeps an error of a later statement pending (`is_empty` is then
            // true): raised here, it is this query's error, not the next one's.
            result.drop_result().await?;
            Ok(sets)
        })
        .await;
        self.finish(r, sql)
    }

    /// Runs a statement that returns no rows, within the read deadline.
    pub async fn exec(&mut self, sql: &str) -> Result<()> {
        let after = self.opts.read_timeout;
        let conn = self.open()?;
        let r = tokio::time::timeout(after, conn.query_drop(sql)).await;
        self.finish(r, sql)
    }

    fn finish<T>(
        &mut self,
        r: std::result::Result<mysql_async::Result<T>, tokio::time::error::Elapsed>,
        sql: &str,
    ) -> Result<T> {
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(mysql_async::Error::Server(s))) => Err(Error::Server {
                node: self.node.clone(),
                code: s.code,
                message: s.message,
            }),
            Ok(Err(e)) => {
                self.conn = None;
                Err(Error::Unreachable {
                    node: self.node.clone(),
                    reason: e.to_string(),
                    refused: false,
                })
            }
            Err(_) => {
                // The session may still be running the statement: never reuse it.
                self.conn = None;
                Err(Error::Timeout {
                    node: self.node.clone(),
                    after: self.opts.read_timeout,
                    what: truncate(sql, 80),
                })
            }
        }
    }

    /// `XA RECOVER`: every prepared branch on the node.
    pub async fn xa_recover(&mut self) -> Result<Vec<RecoveredXid>> {
        let rows: Vec<(i64, i64, i64, Vec<u8>)> = self.query("XA RECOVER").await?;
        rows.into_iter()
            .map(|(format_id, g, b, data)| {
                let (Ok(gtrid_length), Ok(bqual_length)) = (usize::try_from(g), usize::try_from(b))
                else {
                    return Err(Error::Protocol {
                        node: self.node.clone(),
                        reason: format!("XA RECOVER lengths {g}/{b}"),
                    });
                };
                Ok(RecoveredXid {
                    format_id,
                    gtrid_length,
                    bqual_length,
                    data,
                })
            })
            .collect()
    }

    /// Closes the connection politely (best effort).
    pub async fn close(mut self) {
        if let Some(c) = self.conn.take() {
            let _ = tokio::time::timeout(self.opts.read_timeout, c.disconnect()).await;
        }
    }
}

/// True when a connect failed because the host refused it (`ECONNREFUSED`): the machine
/// answers but no server listens on the port, as after the server's process died.
fn is_refused(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Io(mysql_async::IoError::Io(io))
        if io.kind() == std::io::ErrorKind::ConnectionRefused)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_gtrid_only_for_format_1_without_bqual() {
        let x = |f, g, b, d: &str| RecoveredXid {
            format_id: f,
            gtrid_length: g,
            bqual_length: b,
            data: d.as_bytes().to_vec(),
        };
        assert_eq!(x(1, 5, 0, "1-2-3").plain_gtrid(), Some("1-2-3"));
        assert_eq!(x(2, 5, 0, "1-2-3").plain_gtrid(), None);
        assert_eq!(x(1, 3, 2, "1-2-3").plain_gtrid(), None);
    }

    #[test]
    fn debug_hides_the_password() {
        let a = NodeAddr {
            host: "h".into(),
            port: 1,
            user: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{a:?}").contains("secret"));
        assert_eq!(a.to_string(), "h:1");
    }

    #[test]
    fn only_server_errors_keep_the_connection() {
        let s = Error::Server {
            node: "n".into(),
            code: ER_XAER_NOTA,
            message: "x".into(),
        };
        assert!(!s.is_fatal());
        assert_eq!(s.server_code(), Some(ER_XAER_NOTA));
        let u = Error::Unreachable {
            node: "n".into(),
            reason: "r".into(),
            refused: false,
        };
        assert!(u.is_fatal());
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
