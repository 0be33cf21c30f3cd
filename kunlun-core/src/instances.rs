//! One storage instance, addressed by `host:port` as the KunlunBase job API addresses it: find
//! its node row, read and set its global variables (`get_variable` / `set_variable`).
//!
//! Invariants: only instances recorded in `shard_nodes` are reached, with the login recorded
//! there; a variable name is an identifier and a value an integer or a plain token, so
//! nothing a caller sends becomes SQL; every call has the storage deadlines.
//!
//! Stopping, starting and restarting an instance (`control_instance`) is in [`control`].

pub mod control;

use kunlun_meta::model::ShardNode;

use crate::error::{Error, Result};
use crate::storage::{NodeAddr, StorageConn, StorageOptions};
use crate::ClusterManager;

/// A value for `SET GLOBAL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarValue {
    Int(i64),
    /// Letters, digits and `_ . , : / -` only (quoted when set).
    Text(String),
}

impl VarValue {
    /// `kind` is the original's `type` para: `int` (or `integer`) or `string`.
    pub fn parse(kind: &str, value: &str) -> Result<VarValue> {
        match kind.to_ascii_lowercase().as_str() {
            "int" | "integer" | "number" => value
                .trim()
                .parse()
                .map(VarValue::Int)
                .map_err(|_| Error::Invalid(format!("value: {value:?} is not an integer"))),
            "string" | "str" | "" => {
                let ok = !value.is_empty()
                    && value.len() <= 256
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.,:/-".contains(c));
                if ok {
                    Ok(VarValue::Text(value.to_string()))
                } else {
                    Err(Error::Invalid(format!(
                        "value: {value:?} must be 1 to 256 letters, digits or _ . , : / -"
                    )))
                }
            }
            other => Err(Error::Invalid(format!(
                "type: {other:?} is not one of int, string"
            ))),
        }
    }

    fn sql(&self) -> String {
        match self {
            VarValue::Int(i) => i.to_string(),
            VarValue::Text(t) => format!("'{t}'"),
        }
    }
}

/// A server variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 64 characters.
pub fn check_var_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "variable: {name:?} is not a server variable name"
        )))
    }
}

/// Whether `SET GLOBAL` of `name` is allowed: not variables that point the server at files
/// or directories (a file written anywhere the server's user can), change its identity or
/// replication, its binary log, or its role (`read_only` is HA's: a writable replica is a
/// split brain). Everything else (buffer sizes, timeouts, limits) may be tuned.
pub fn check_settable(name: &str) -> Result<()> {
    check_var_name(name)?;
    let n = name.to_ascii_lowercase();
    let denied = ["_file", "_dir", "_path", "_priv", "_socket"]
        .iter()
        .any(|s| n.ends_with(s))
        || [
            "init_",
            "gtid_",
            "rpl_",
            "plugin",
            "log_",
            "binlog_",
            "slave_",
            "relay_",
            "wsrep_",
            "master_",
            "sql_log_",
            "general_log",
            "slow_query_log",
            "read_only",
            "super_read_only",
        ]
        .iter()
        .any(|p| n.starts_with(p))
        || [
            "server_id",
            "basedir",
            "datadir",
            "tmpdir",
            "local_infile",
            "event_scheduler",
        ]
        .contains(&n.as_str());
    if denied {
        return Err(Error::Invalid(format!(
            "variable: {name} is not one the manager lets callers set (files, directories, \
             replication, binary log, identity and read-only are managed)"
        )));
    }
    Ok(())
}

impl ClusterManager {
    /// The storage node recorded at `host:port` (404 when none is).
    pub async fn shard_node_at(&self, host: &str, port: u16) -> Result<ShardNode> {
        self.store()?
            .list_shard_nodes(None)
            .await?
            .into_iter()
            .find(|n| n.hostaddr == host && n.port == port)
            .ok_or_else(|| Error::NotFound {
                what: "storage node",
                id: format!("{host}:{port}"),
            })
    }

    /// The global value of `name` on the storage node at `host:port`; `None` when the server
    /// has no such variable.
    pub async fn node_variable(&self, host: &str, port: u16, name: &str) -> Result<Option<String>> {
        check_var_name(name)?;
        let mut c = self.connect_node(host, port).await?;
        let rows: std::result::Result<Vec<(String, String)>, _> = c
            .query(&format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))
            .await;
        c.close().await;
        let rows = rows.map_err(node_error)?;
        // `_` is a LIKE wildcard: keep the exact name only.
        Ok(rows
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v))
    }

    /// `SET GLOBAL name = value` on the storage node at `host:port`.
    pub async fn set_node_variable(
        &self,
        host: &str,
        port: u16,
        name: &str,
        value: &VarValue,
    ) -> Result<()> {
        check_settable(name)?;
        let mut c = self.connect_node(host, port).await?;
        let r = c
            .exec(&format!("SET GLOBAL {name} = {}", value.sql()))
            .await;
        c.close().await;
        r.map_err(node_error)
    }

    async fn connect_node(&self, host: &str, port: u16) -> Result<StorageConn> {
        let node = self.shard_node_at(host, port).await?;
        StorageConn::connect(&NodeAddr::from(&node), StorageOptions::default())
            .await
            .map_err(node_error)
    }
}

fn node_error(e: crate::storage::Error) -> Error {
    match e {
        crate::storage::Error::Server {
            node,
            code,
            message,
        } => Error::Invalid(format!("{node} refused: {code} {message}")),
        other => Error::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_cannot_carry_sql() {
        assert!(check_var_name("innodb_buffer_pool_size").is_ok());
        assert!(check_var_name("a; drop").is_err());
        assert!(check_var_name("1x").is_err());
        assert!(check_var_name("").is_err());
        assert_eq!(VarValue::parse("int", " 42").unwrap(), VarValue::Int(42));
        assert!(VarValue::parse("int", "4x").is_err());
        assert_eq!(
            VarValue::parse("string", "ON").unwrap().sql(),
            "'ON'".to_string()
        );
        assert!(VarValue::parse("string", "x' or '1").is_err());
        assert!(VarValue::parse("blob", "1").is_err());
        for ok in ["innodb_buffer_pool_size", "max_connections", "wait_timeout"] {
            assert!(check_settable(ok).is_ok(), "{ok}");
        }
        for bad in [
            "general_log_file",
            "general_log",
            "read_only",
            "super_read_only",
            "server_id",
            "gtid_slave_pos",
            "sql_log_bin",
            "init_connect",
            "plugin_dir",
            "secure_file_priv",
            "log_bin_trust_function_creators",
            "datadir",
        ] {
            assert!(check_settable(bad).is_err(), "{bad}");
        }
    }
}
