//! `kunlunctl xa list|resolve` over `/v1/clusters/{id}/xa`: the in-doubt (prepared) 2PC
//! branches of a cluster per shard, and resolving one transaction by hand with a reason.

use clap::{Args, Subcommand};
use kunlun_meta::api::{XaAction, XaInDoubt, XaResolveRequest, XaResolveResult};

use crate::client::{CliError, Client};
use crate::output::{self, Table};

/// `kunlunctl xa ...`
#[derive(Debug, Subcommand)]
pub enum XaCmd {
    /// List the prepared XA branches on every shard primary of a cluster, with their age and
    /// the decision logged for them.
    #[command(alias = "ls")]
    List(XaListArgs),
    /// End one in-doubt transaction by hand, only as its commit log allows: a logged decision
    /// is obeyed; without one only rollback, after the coordinator's deadline.
    Resolve(XaResolveArgs),
}

/// `xa list` arguments.
#[derive(Debug, Args)]
pub struct XaListArgs {
    /// Cluster id as shown by `cluster list`.
    #[arg(value_name = "CLUSTER")]
    pub cluster: i64,
}

/// `xa resolve` arguments.
#[derive(Debug, Args)]
pub struct XaResolveArgs {
    /// Cluster id as shown by `cluster list`.
    #[arg(value_name = "CLUSTER")]
    pub cluster: i64,
    /// The xid as shown by `xa list` (`<comp_node_id>-<start_ts>-<local_xid>`).
    #[arg(value_name = "XID")]
    pub xid: String,
    /// commit or rollback.
    #[arg(long, value_name = "commit|rollback", value_parser = parse_action)]
    pub action: XaAction,
    /// Why (kept in the audit trail).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

fn parse_action(s: &str) -> Result<XaAction, String> {
    match s {
        "commit" => Ok(XaAction::Commit),
        "rollback" => Ok(XaAction::Rollback),
        _ => Err(format!("'{s}': expected commit or rollback")),
    }
}

/// Executes an `xa` command and returns what to print.
pub fn run(client: &Client, cmd: &XaCmd, json: bool) -> Result<String, CliError> {
    match cmd {
        XaCmd::List(a) => {
            let url = client.url(&format!("/v1/clusters/{}/xa", a.cluster), &[])?;
            let v = client.get(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let d: XaInDoubt = crate::decode(v, url.as_str())?;
            Ok(in_doubt(&d))
        }
        XaCmd::Resolve(a) => {
            let url = client.url(
                &format!("/v1/clusters/{}/xa/{}/resolve", a.cluster, a.xid),
                &[],
            )?;
            let body = XaResolveRequest {
                action: a.action,
                reason: a.reason.clone(),
            };
            body.validate()
                .map_err(|e| CliError::invalid_field(e.to_string()))?;
            let v = client.post(url.clone(), &body)?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let r: XaResolveResult = crate::decode(v, url.as_str())?;
            Ok(resolved(&r))
        }
    }
}

/// One line per branch, shard by shard; shards that could not be asked say why.
pub fn in_doubt(d: &XaInDoubt) -> String {
    let mut t = Table::new(&["SHARD", "NODE", "XID", "AGE", "DECISION"]);
    let mut notes = String::new();
    for s in &d.shards {
        let node = output::opt(s.node.as_deref());
        if let Some(e) = &s.error {
            notes.push_str(&format!("shard {}: not asked: {e}\n", s.shard_id));
        }
        if s.foreign > 0 {
            notes.push_str(&format!(
                "shard {}: {} foreign prepared branch(es), left alone\n",
                s.shard_id, s.foreign
            ));
        }
        for b in &s.branches {
            t.row(vec![
                s.shard_id.to_string(),
                node.clone(),
                b.xid.clone(),
                format!("{}s", b.age_sec),
                b.decision
                    .map_or_else(|| "none logged".to_string(), |c| c.to_string()),
            ]);
        }
    }
    let mut out = if t.is_empty() {
        format!(
            "no in-doubt XA branches in cluster {} ({})\n",
            d.cluster_name, d.cluster_id
        )
    } else {
        t.render()
    };
    out.push_str(&notes);
    out
}

/// What a manual resolution did.
pub fn resolved(r: &XaResolveResult) -> String {
    output::key_values(&[
        ("xid", r.xid.clone()),
        ("decision", r.decision.to_string()),
        ("ended on shards", output::list(&r.ended_on)),
        ("still attached on", output::list(&r.attached_on)),
        ("failed on", output::list(&r.failed_on)),
        ("audit job", r.audit_job_id.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::api::{XaBranch, XaShard};
    use kunlun_meta::model::TxnCmd;

    #[test]
    fn lists_branches_and_says_why_a_shard_was_not_asked() {
        let d = XaInDoubt {
            cluster_id: 1,
            cluster_name: "c".into(),
            shards: vec![
                XaShard {
                    shard_id: 1,
                    node: Some("127.0.0.1:3307".into()),
                    branches: vec![XaBranch {
                        xid: "1-100-7".into(),
                        age_sec: 42,
                        decision: Some(TxnCmd::Commit),
                    }],
                    foreign: 1,
                    error: None,
                },
                XaShard {
                    shard_id: 2,
                    node: None,
                    branches: vec![],
                    foreign: 0,
                    error: Some("no primary recorded".into()),
                },
            ],
        };
        let s = in_doubt(&d);
        assert!(
            s.contains("1-100-7") && s.contains("42s") && s.contains("commit"),
            "{s}"
        );
        assert!(s.contains("shard 2: not asked: no primary recorded"), "{s}");
        assert!(s.contains("1 foreign"), "{s}");
        let empty = XaInDoubt {
            cluster_id: 1,
            cluster_name: "c".into(),
            shards: vec![],
        };
        assert!(in_doubt(&empty).starts_with("no in-doubt"));
    }
}
