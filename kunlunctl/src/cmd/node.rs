//! `kunlunctl node stop|start|restart HOST:PORT [--force]`: control of one installed storage
//! or compute instance over `POST /v1/instances/{host}:{port}/{action}`. The daemon does it at
//! once and answers with the finished `control_instance` job; a failed one exits 1 (code
//! `job_failed`) with the recorded reason, `--json` prints the job whatever its outcome.
//! `kunlunctl node rebuild HOST:PORT [--from HOST:PORT] [--method backup|dump] [--wait]`: a
//! `rebuild_node` job for one storage replica (`POST /v1/instances/{host}:{port}/rebuild`),
//! followed like the scale jobs with `--wait`.

use crate::cmd::job::Followed;
use clap::{Args, Subcommand, ValueEnum};
use kunlun_meta::api::{RebuildMethod, RebuildNode};
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
    /// Rebuild a storage replica in place (a rebuild_node job): out of service, its data set
    /// aside, a consistent copy of a healthy replica (else the primary) put in, then it
    /// follows the primary again and is back in service; its shard's primary is refused.
    Rebuild(RebuildArgs),
}

/// How `node rebuild` copies the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Physical snapshot (mariadb-backup streamed over SSH); the default.
    Backup,
    /// Logical copy (mariadb-dump loaded into a fresh instance).
    Dump,
}

/// `node rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The storage replica as HOST:PORT.
    #[arg(value_name = "HOST:PORT", value_parser = parse_instance)]
    pub instance: String,
    /// Copy from this node of the same shard (a replica, or the primary) instead of the
    /// healthiest replica.
    #[arg(long = "from", value_name = "HOST:PORT", value_parser = parse_instance)]
    pub from: Option<String>,
    /// How to copy [default: backup, or dump on a machine without mariadb-backup].
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    #[command(flatten)]
    pub wait: crate::cmd::scale::WaitArgs,
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
    fn parts(&self) -> Option<(&'static str, &ControlArgs)> {
        match self {
            ControlCmd::Stop(a) => Some(("stop", a)),
            ControlCmd::Start(a) => Some(("start", a)),
            ControlCmd::Restart(a) => Some(("restart", a)),
            ControlCmd::Rebuild(_) => None,
        }
    }
}

/// The body of `node rebuild`.
pub fn rebuild_body(a: &RebuildArgs) -> RebuildNode {
    RebuildNode {
        source: a.from.clone(),
        method: a.method.map(|m| match m {
            MethodArg::Backup => RebuildMethod::Backup,
            MethodArg::Dump => RebuildMethod::Dump,
        }),
    }
}

/// `node rebuild`: accepts the job, then (with `--wait`) follows it to its end.
fn rebuild(client: &Client, a: &RebuildArgs, json: bool) -> Result<String, CliError> {
    let url = client.url(&format!("/v1/instances/{}/rebuild", a.instance), &[])?;
    let v = client.post(url.clone(), &rebuild_body(a))?;
    let wait = (a.wait.wait, a.wait.wait_timeout);
    match crate::cmd::job::follow(client, v, url.as_str(), "rebuild_node", wait, json)? {
        Followed::Print(text) => Ok(text),
        Followed::Done(job) => Ok(format!("{} rebuilt (job {})\n", a.instance, job.id)),
    }
}

/// Executes a control command and returns what to print.
pub fn run(client: &Client, cmd: &ControlCmd, json: bool) -> Result<String, CliError> {
    let Some((action, a)) = cmd.parts() else {
        let ControlCmd::Rebuild(r) = cmd else {
            unreachable!("parts() covers every other command")
        };
        return rebuild(client, r, json);
    };
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

    #[test]
    fn rebuild_takes_a_source_a_method_and_wait() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "kunlunctl",
            "node",
            "rebuild",
            "10.0.0.1:57003",
            "--from",
            "10.0.0.2:57003",
            "--method",
            "dump",
            "--wait",
        ])
        .unwrap();
        let Command::Scale(crate::cmd::scale::ScaleCmd::Node(crate::cmd::scale::NodeCmd::Control(
            ControlCmd::Rebuild(a),
        ))) = cli.command
        else {
            panic!("not node rebuild");
        };
        assert!(a.wait.wait);
        let body = serde_json::to_value(rebuild_body(&a)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"source": "10.0.0.2:57003", "method": "dump"})
        );
        let bare = Cli::try_parse_from(["kunlunctl", "node", "rebuild", "10.0.0.1:57003"]).unwrap();
        let Command::Scale(crate::cmd::scale::ScaleCmd::Node(crate::cmd::scale::NodeCmd::Control(
            ControlCmd::Rebuild(a),
        ))) = bare.command
        else {
            panic!("not node rebuild");
        };
        assert_eq!(
            serde_json::to_value(rebuild_body(&a)).unwrap(),
            serde_json::json!({})
        );
        assert!(Cli::try_parse_from(["kunlunctl", "node", "rebuild", "h"]).is_err());
        assert!(
            Cli::try_parse_from(["kunlunctl", "node", "rebuild", "h:1", "--method", "rsync"])
                .is_err()
        );
    }
}
