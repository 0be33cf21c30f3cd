//! `kunlunctl node stop|start|restart HOST:PORT [--force]`: control of one installed storage
//! or compute instance over `POST /v1/instances/{host}:{port}/{action}`. The daemon does it at
//! once and answers with the finished `control_instance` job; a failed one exits 1 (code
//! `job_failed`) with the recorded reason, `--json` prints the job whatever its outcome.

use clap::{Args, Subcommand};
use kunlun_meta::model::Job;

use crate::client::{CliError, Client};
use crate::output;

/// `kunlunctl node stop|start|restart`
#[derive(Debug, Subcommand)]
pub enum ControlCmd {
    /// Stop an instance (its node row becomes manual_stop, which HA leaves alone); a shard's
    /// primary only with --force, and HA then fails the shard over.
    Stop(ControlArgs),
    /// Start a stopped instance and wait until it answers (a storage replica also until it
    /// replicates again); its node row becomes active again.
    Start(ControlArgs),
    /// Stop then start an instance; a shard's primary only with --force.
    Restart(ControlArgs),
}

/// The instance of a control command.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The instance as HOST:PORT (a storage or compute node, as `cluster show` lists it).
    #[arg(value_name = "HOST:PORT", value_parser = parse_instance)]
    pub instance: String,
    /// Stop or restart even a shard's primary (HA then fails the shard over).
    #[arg(long)]
    pub force: bool,
}

fn parse_instance(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not HOST:PORT")),
    }
}

impl ControlCmd {
    fn parts(&self) -> (&'static str, &ControlArgs) {
        match self {
            ControlCmd::Stop(a) => ("stop", a),
            ControlCmd::Start(a) => ("start", a),
            ControlCmd::Restart(a) => ("restart", a),
        }
    }
}

/// Executes a control command and returns what to print.
pub fn run(client: &Client, cmd: &ControlCmd, json: bool) -> Result<String, CliError> {
    let (action, a) = cmd.parts();
    let url = client.url(&format!("/v1/instances/{}/{action}", a.instance), &[])?;
    let v = client.post(url.clone(), &serde_json::json!({ "force": a.force }))?;
    let job: Job = crate::decode(v, url.as_str())?;
    if json {
        return crate::cmd::job::json_outcome(Ok(job));
    }
    crate::cmd::job::ended_ok(&job)?;
    let memo = job.memo.clone().unwrap_or_default();
    let text = |k: &str| {
        memo.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let mut pairs = vec![
        ("instance", a.instance.clone()),
        ("outcome", text("outcome")),
        ("kind", text("kind")),
        ("status", text("status")),
        ("job", job.id.to_string()),
    ];
    if let Some(r) = memo.get("replication").and_then(|v| v.as_str()) {
        pairs.push(("replication", r.to_string()));
    }
    Ok(output::key_values(&pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_host_and_port() {
        assert!(parse_instance("10.0.0.1:57001").is_ok());
        assert!(parse_instance("db1:5432").is_ok());
        for bad in ["10.0.0.1", ":1", "h:0", "h:x", "h:70000"] {
            assert!(parse_instance(bad).is_err(), "{bad}");
        }
    }
}
