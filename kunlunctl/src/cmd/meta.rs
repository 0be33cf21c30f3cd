//! `kunlunctl meta show` over `GET /v1/meta`: the metadata store the asked instance uses and,
//! on a MySQL metadata shard, its nodes with their recorded and observed role (read_only,
//! replication, GTID) and the one that instance's store writes to.

use clap::Subcommand;
use kunlun_meta::api::MetaShard;

use crate::client::{CliError, Client};
use crate::output::{self, Table};

/// `kunlunctl meta ...`
#[derive(Debug, Subcommand)]
pub enum MetaCmd {
    /// The metadata shard's nodes, their roles, and which one this instance's store uses.
    Show,
}

/// Executes a `meta` command and returns what to print.
pub fn run(client: &Client, cmd: &MetaCmd, json_out: bool) -> Result<String, CliError> {
    match cmd {
        MetaCmd::Show => {
            let v = client.get(client.url("/v1/meta", &[])?)?;
            if json_out {
                return Ok(output::json(&v) + "\n");
            }
            let m: MetaShard = serde_json::from_value(v).map_err(|e| CliError::BadResponse {
                url: "/v1/meta".into(),
                detail: e.to_string(),
            })?;
            Ok(render(&m))
        }
    }
}

/// The text form (pure; unit-tested).
fn render(m: &MetaShard) -> String {
    let mut pairs = vec![
        ("backend", m.backend.clone()),
        ("store", m.store.clone()),
        ("failover", m.failover.clone()),
    ];
    if let Some(n) = &m.note {
        pairs.push(("note", n.clone()));
    }
    if let Some(f) = &m.follow {
        pairs.push(("primary", f.primary.clone()));
        pairs.push(("since", output::time(Some(f.since))));
        if let Some(s) = &f.searching {
            pairs.push(("searching", s.clone()));
        }
        if let Some(last) = f.moves.last() {
            pairs.push((
                "last move",
                format!(
                    "{} -> {} at {} ({})",
                    last.from,
                    last.to,
                    output::time(Some(last.at)),
                    last.reason
                ),
            ));
        }
    }
    let mut out = output::key_values(&pairs);
    if m.nodes.is_empty() {
        return out;
    }
    let mut t = Table::new(&[
        "ID",
        "NODE",
        "RECORDED",
        "OBSERVED",
        "READ_ONLY",
        "REPLICATES FROM",
        "GTID",
        "USED",
    ]);
    for n in &m.nodes {
        let o = &n.observed;
        let from: Vec<String> = o
            .replication
            .iter()
            .map(|c| {
                format!(
                    "{} (io {}, sql {})",
                    c.source,
                    c.io_running,
                    if c.sql_running { "Yes" } else { "No" }
                )
            })
            .collect();
        t.row(vec![
            output::opt(n.id),
            format!("{}:{}", n.hostaddr, n.port),
            n.recorded_role
                .map(|r| r.as_str().to_string())
                .unwrap_or_else(|| "-".into()),
            match &o.error {
                Some(e) if !o.reachable => {
                    let short: String = e.chars().take(60).collect();
                    let more = if short.len() < e.len() { "…" } else { "" };
                    format!("{} ({short}{more})", o.role)
                }
                _ => o.role.clone(),
            },
            output::opt(o.read_only),
            if from.is_empty() {
                "-".into()
            } else {
                from.join(", ")
            },
            output::opt(o.gtid_current_pos.as_deref()),
            if n.used_by_this_instance { "*" } else { "" }.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mysql_and_sqlite_views() {
        let m: MetaShard = serde_json::from_value(json!({
            "backend": "mysql", "store": "mysql://klmeta@127.0.0.1:3302/kunlun_metadata_db",
            "failover": "on",
            "follow": {"primary": "127.0.0.1:3302", "since": "2026-01-02T03:04:05.000000000Z",
                "candidates": ["127.0.0.1:3301", "127.0.0.1:3302"],
                "moves": [{"from": "127.0.0.1:3301", "to": "127.0.0.1:3302",
                    "reason": "primary 127.0.0.1:3301: refused", "at": "2026-01-02T03:04:05.000000000Z"}]},
            "nodes": [
                {"id": 1, "hostaddr": "127.0.0.1", "port": 3301, "recorded_role": "replica",
                 "used_by_this_instance": false,
                 "observed": {"role": "unreachable", "reachable": false, "error": "refused",
                    "read_only": null, "gtid_current_pos": null, "gtid_binlog_pos": null,
                    "replication": [], "semi_sync_master_active": null}},
                {"id": 2, "hostaddr": "127.0.0.1", "port": 3302, "recorded_role": "source",
                 "used_by_this_instance": true,
                 "observed": {"role": "primary", "reachable": true, "read_only": false,
                    "gtid_current_pos": "0-2-9", "gtid_binlog_pos": "0-2-9",
                    "replication": [], "semi_sync_master_active": true}},
                {"id": 3, "hostaddr": "127.0.0.1", "port": 3303, "recorded_role": "replica",
                 "used_by_this_instance": false,
                 "observed": {"role": "replica", "reachable": true, "read_only": true,
                    "gtid_current_pos": "0-2-9", "gtid_binlog_pos": "0-2-9",
                    "replication": [{"source": "127.0.0.1:3302", "io_running": "Yes",
                        "sql_running": true, "gtid_io_pos": "0-2-9"}],
                    "semi_sync_master_active": false}}
            ]
        }))
        .unwrap();
        let t = render(&m);
        assert!(t.contains("primary:   127.0.0.1:3302\n"), "{t}");
        assert!(
            t.contains("last move: 127.0.0.1:3301 -> 127.0.0.1:3302"),
            "{t}"
        );
        let used = t
            .lines()
            .find(|l| l.contains("127.0.0.1:3302  source"))
            .unwrap();
        assert!(used.ends_with('*') && used.contains("primary"), "{t}");
        assert!(t.contains("unreachable (refused)"), "{t}");
        assert!(t.contains("127.0.0.1:3302 (io Yes, sql Yes)"), "{t}");

        let s: MetaShard = serde_json::from_value(json!({
            "backend": "sqlite", "store": "sqlite:/var/lib/x.db",
            "note": "the metadata is an embedded SQLite file", "failover": "off", "nodes": []
        }))
        .unwrap();
        let t = render(&s);
        assert!(
            t.contains("note:") && t.contains("embedded SQLite file"),
            "{t}"
        );
        assert!(!t.contains("NODE"), "{t}");
    }
}
