//! `kunlunctl failover list|show|switchover|no-switch` over `/v1/failovers` and the shard HA
//! controls: what the manager failed over (with the per-phase timeline), planned switchover,
//! and the per-shard no-switch hold.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::IdArg;
use crate::client::{CliError, Client};
use crate::output::{self, Table};

/// `kunlunctl failover ...`
#[derive(Debug, Subcommand)]
pub enum FailoverCmd {
    /// List failovers and switchovers, newest first.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Show one failover with its per-phase timeline.
    Show(IdArg),
    /// Planned switchover of a shard to a named or the best replica.
    Switchover(SwitchoverArgs),
    /// Hold back automatic failover of a shard for a while (0 lifts the hold).
    NoSwitch(NoSwitchArgs),
}

/// `failover list` filter.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this shard's records.
    #[arg(long, value_name = "SHARD_ID")]
    pub shard: Option<i64>,
}

/// `failover switchover`.
#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    /// Shard to switch.
    #[arg(long, value_name = "SHARD_ID")]
    pub shard: i64,
    /// Replica to promote (default: the best one).
    #[arg(long, value_name = "NODE_ID")]
    pub to: Option<i64>,
}

/// `failover no-switch`.
#[derive(Debug, Args)]
pub struct NoSwitchArgs {
    /// Shard to hold.
    #[arg(long, value_name = "SHARD_ID")]
    pub shard: i64,
    /// How long, in seconds; 0 lifts the hold.
    #[arg(long, value_name = "SECS")]
    pub seconds: u64,
}

/// Executes a `failover` command and returns what to print.
pub fn run(client: &Client, cmd: &FailoverCmd, json_out: bool) -> Result<String, CliError> {
    let v = match cmd {
        FailoverCmd::List(a) => {
            let q = [("shard_id", a.shard.map(|s| s.to_string()))];
            let v = client.get_all(client.url("/v1/failovers", &q)?)?;
            if !json_out {
                return Ok(table(&v));
            }
            v
        }
        FailoverCmd::Show(id) => {
            let v = client.get(client.url(&format!("/v1/failovers/{}", id.id), &[])?)?;
            if !json_out {
                return Ok(detail(&v));
            }
            v
        }
        FailoverCmd::Switchover(a) => {
            let url = client.url(&format!("/v1/shards/{}/switchover", a.shard), &[])?;
            let v = client.post(url, &json!({ "target_node_id": a.to }))?;
            if !json_out {
                return Ok(detail(&v));
            }
            v
        }
        FailoverCmd::NoSwitch(a) => {
            let url = client.url(&format!("/v1/shards/{}/no_switch", a.shard), &[])?;
            let v = client.post(url, &json!({ "seconds": a.seconds }))?;
            if !json_out {
                return Ok(match a.seconds {
                    0 => format!("shard {}: automatic failover allowed\n", a.shard),
                    s => format!("shard {}: no automatic failover for {s} s\n", a.shard),
                });
            }
            v
        }
    };
    Ok(output::json(&v) + "\n")
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(x)) => x.clone(),
        Some(x) => x.to_string(),
    }
}

/// One line per record.
pub fn table(v: &Value) -> String {
    let rows = v.as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.is_empty() {
        return "no failovers\n".into();
    }
    let mut t = Table::new(&[
        "ID", "SHARD", "KIND", "OUTCOME", "OLD", "NEW", "LOSSLESS", "MS", "STARTED",
    ]);
    for r in rows {
        t.row(vec![
            s(r, "id"),
            s(r, "shard_id"),
            s(r, "kind"),
            s(r, "outcome"),
            s(r, "old_primary"),
            s(r, "new_primary"),
            s(r, "proven_lossless"),
            s(r, "total_ms"),
            s(r, "started_at"),
        ]);
    }
    t.render()
}

/// A record with its timeline, one phase per line.
pub fn detail(v: &Value) -> String {
    let phases: Vec<String> = v
        .get("phases")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let note = match p.get("note") {
                Some(Value::String(n)) => format!(" ({n})"),
                _ => String::new(),
            };
            format!("{} {} ms{note}", s(p, "name"), s(p, "ms"))
        })
        .collect();
    let mut out = output::key_values(&[
        ("id", s(v, "id")),
        ("shard", s(v, "shard_id")),
        ("kind", s(v, "kind")),
        ("outcome", s(v, "outcome")),
        ("old primary", s(v, "old_primary")),
        ("new primary", s(v, "new_primary")),
        ("proven lossless", s(v, "proven_lossless")),
        ("possible loss", s(v, "possible_loss")),
        ("reason", s(v, "reason")),
        ("fence", s(v, "fence")),
        ("old primary fate", s(v, "old_primary_fate")),
        ("total ms", s(v, "total_ms")),
        ("errant followers", nodes(v, "errant_followers", "gtids")),
        ("not replicating", nodes(v, "not_replicating", "why")),
        ("fence not proven", nodes(v, "fence_unproven", "why")),
    ]);
    for p in phases {
        out.push_str(&format!("  phase {p}\n"));
    }
    out
}

/// A record's list of `{node_id, <what>}` as `node N: what; …` (`-` when there is none).
fn nodes(v: &Value, key: &str, what: &str) -> String {
    let listed = v
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| format!("node {}: {}", s(e, "node_id"), s(e, what)))
        .collect::<Vec<_>>()
        .join("; ");
    if listed.is_empty() {
        "-".into()
    } else {
        listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_records_and_timelines() {
        let r = json!({"id": 1, "shard_id": 2, "kind": "automatic", "outcome": "promoted",
            "old_primary": 3, "new_primary": 4, "proven_lossless": true, "total_ms": 420,
            "started_at": "2026-11-25T13:00:00Z",
            "phases": [{"name": "detect", "ms": 300, "note": null}, {"name": "promote", "ms": 20, "note": "x"}]});
        let t = table(&json!([r.clone()]));
        assert!(t.contains("promoted") && t.contains("420"), "{t}");
        let d = detail(&r);
        assert!(
            d.contains("phase detect 300 ms") && d.contains("phase promote 20 ms (x)"),
            "{d}"
        );
        assert_eq!(table(&json!([])), "no failovers\n");
        let e = json!({"errant_followers": [{"node_id": 5, "gtids": "0-9-..3"}],
            "not_replicating": [{"node_id": 6, "why": "IO thread Connecting"}]});
        let d = detail(&e);
        assert!(
            d.contains("node 5: 0-9-..3") && d.contains("node 6: IO thread Connecting"),
            "{d}"
        );
    }
}
