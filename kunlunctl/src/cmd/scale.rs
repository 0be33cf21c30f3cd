//! `kunlunctl shard|node|comp add|rm`: the scale-out/in jobs of a cluster (`add_shards`,
//! `delete_shard`, `add_nodes`, `delete_node`, `add_comps`, `delete_comp`) over
//! `/v1/clusters/{id}/...`; each prints the accepted job id, or with `--wait` follows the job
//! (`job watch`) and fails with the recorded reason if the job fails.
//!
//! Invariant: a request is validated here exactly as the daemon validates it, so a bad count
//! or host is refused before anything is sent; a cluster named by name is resolved to its id
//! first (an unknown name is `not_found`, nothing is started).

use crate::cmd::job::Followed;
use clap::{Args, Subcommand};
use kunlun_meta::api::{AddComps, AddNodes, AddShards};
use kunlun_meta::model::Cluster;
use serde::Serialize;

use crate::client::{CliError, Client};

/// The scale nouns (flattened into the top-level commands).
#[derive(Debug, Subcommand)]
pub enum ScaleCmd {
    /// Storage shards of a cluster: add new ones, remove one.
    #[command(subcommand)]
    Shard(ShardCmd),
    /// Storage nodes (replicas) of a shard: add new ones, remove one (never the primary);
    /// stop, start or restart any installed instance (storage or compute) by HOST:PORT.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Compute nodes of a cluster: add new ones, remove one.
    #[command(subcommand)]
    Comp(CompCmd),
}

impl ScaleCmd {
    /// The noun hints refer to: shards, nodes and compute nodes are listed and shown by
    /// `kunlunctl cluster show`, so hints point there.
    pub fn noun(&self) -> &'static str {
        "cluster"
    }
}

/// `kunlunctl shard ...`
#[derive(Debug, Subcommand)]
pub enum ShardCmd {
    /// Add shards to a cluster (an `add_shards` job).
    Add(ShardAddArgs),
    /// Remove a shard and every node of it (a `delete_shard` job).
    #[command(alias = "delete", alias = "remove")]
    Rm(ShardRmArgs),
}

/// `kunlunctl node ...`
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Add replicas to a shard (an `add_nodes` job): seeded from the shard, then following
    /// its primary.
    Add(NodeAddArgs),
    /// Remove a replica (a `delete_node` job); the primary is refused.
    #[command(alias = "delete", alias = "remove")]
    Rm(NodeRmArgs),
    /// `stop`, `start`, `restart` of one instance (see `kunlunctl node stop --help`).
    #[command(flatten)]
    Control(crate::cmd::node::ControlCmd),
}

/// `kunlunctl comp ...`
#[derive(Debug, Subcommand)]
pub enum CompCmd {
    /// Add compute nodes to a cluster (an `add_comps` job).
    Add(CompAddArgs),
    /// Remove a compute node (a `delete_comp` job).
    #[command(alias = "delete", alias = "remove")]
    Rm(CompRmArgs),
}

/// `--wait` and its limit, shared by every scale command.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Follow the job until it ends, showing its steps; fail if the job fails.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (the job goes on).
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub wait_timeout: u64,
}

/// `shard add`.
#[derive(Debug, Args)]
pub struct ShardAddArgs {
    /// Cluster id or name.
    #[arg(value_name = "CLUSTER")]
    pub cluster: String,
    /// How many shards to add.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Storage nodes per new shard.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Only this storage machine (host address; repeat for several).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `shard rm`.
#[derive(Debug, Args)]
pub struct ShardRmArgs {
    /// Cluster id or name.
    #[arg(value_name = "CLUSTER")]
    pub cluster: String,
    /// Shard id as shown by `cluster show`.
    #[arg(value_name = "SHARD")]
    pub shard: i64,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `node add`.
#[derive(Debug, Args)]
pub struct NodeAddArgs {
    /// Cluster id or name.
    #[arg(value_name = "CLUSTER")]
    pub cluster: String,
    /// Shard id as shown by `cluster show`.
    #[arg(value_name = "SHARD")]
    pub shard: i64,
    /// How many replicas to add.
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Only this storage machine (host address; repeat for several).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `node rm`.
#[derive(Debug, Args)]
pub struct NodeRmArgs {
    /// Cluster id or name.
    #[arg(value_name = "CLUSTER")]
    pub cluster: String,
    /// Shard id as shown by `cluster show`.
    #[arg(value_name = "SHARD")]
    pub shard: i64,
    /// Node id as shown by `cluster show`.
    #[arg(value_name = "NODE")]
    pub node: i64,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `comp add`.
#[derive(Debug, Args)]
pub struct CompAddArgs {
    /// Cluster id or name.
    #[arg(value_name = "CLUSTER")]
    pub cluster: String,
    /// How many compute nodes to add.
    #[arg(long, default_value_t = 1)]
    pub comps: u32,
    /// Only this compute machine (host address; repeat for several).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `comp rm`.
#[derive(Debug, Args)]
pub struct CompRmArgs {
    /// Cluster id or name.
    #[arg(value_name = "CLUSTER")]
    pub cluster: String,
    /// Compute node id as shown by `cluster show`.
    #[arg(value_name = "COMP")]
    pub comp: i64,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// One request to send: method, path under the cluster, body.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub job_type: &'static str,
    /// Path after `/v1/clusters/{id}`.
    pub path: String,
    /// `None` for DELETE.
    pub body: Option<serde_json::Value>,
    /// What to say when it is done.
    pub done: String,
}

fn body(v: &impl Serialize) -> Result<Option<serde_json::Value>, CliError> {
    serde_json::to_value(v)
        .map(Some)
        .map_err(|e| CliError::invalid_field(e.to_string()))
}

fn invalid(e: kunlun_meta::Error) -> CliError {
    CliError::invalid_field(e.to_string())
}

/// The cluster argument and the request of a command, validated (pure).
pub fn request(cmd: &ScaleCmd) -> Result<(&str, &WaitArgs, Request), CliError> {
    Ok(match cmd {
        ScaleCmd::Shard(ShardCmd::Add(a)) => {
            let req = AddShards {
                shards: a.shards,
                nodes: a.nodes,
                storage_hosts: a.hosts.clone(),
            };
            req.validate().map_err(invalid)?;
            let r = Request {
                job_type: "add_shards",
                path: "/shards".into(),
                body: body(&req)?,
                done: format!("{} shards of {} nodes added", a.shards, a.nodes),
            };
            (a.cluster.as_str(), &a.wait, r)
        }
        ScaleCmd::Shard(ShardCmd::Rm(a)) => (
            a.cluster.as_str(),
            &a.wait,
            Request {
                job_type: "delete_shard",
                path: format!("/shards/{}", a.shard),
                body: None,
                done: format!("shard {} removed", a.shard),
            },
        ),
        ScaleCmd::Node(NodeCmd::Add(a)) => {
            let req = AddNodes {
                nodes: a.nodes,
                storage_hosts: a.hosts.clone(),
            };
            req.validate().map_err(invalid)?;
            let r = Request {
                job_type: "add_nodes",
                path: format!("/shards/{}/nodes", a.shard),
                body: body(&req)?,
                done: format!("{} nodes added to shard {}", a.nodes, a.shard),
            };
            (a.cluster.as_str(), &a.wait, r)
        }
        ScaleCmd::Node(NodeCmd::Control(_)) => {
            return Err(CliError::invalid_field(
                "node stop|start|restart is not a scale job",
            ))
        }
        ScaleCmd::Node(NodeCmd::Rm(a)) => (
            a.cluster.as_str(),
            &a.wait,
            Request {
                job_type: "delete_node",
                path: format!("/shards/{}/nodes/{}", a.shard, a.node),
                body: None,
                done: format!("node {} removed from shard {}", a.node, a.shard),
            },
        ),
        ScaleCmd::Comp(CompCmd::Add(a)) => {
            let req = AddComps {
                comps: a.comps,
                computer_hosts: a.hosts.clone(),
            };
            req.validate().map_err(invalid)?;
            let r = Request {
                job_type: "add_comps",
                path: "/comp_nodes".into(),
                body: body(&req)?,
                done: format!("{} compute nodes added", a.comps),
            };
            (a.cluster.as_str(), &a.wait, r)
        }
        ScaleCmd::Comp(CompCmd::Rm(a)) => (
            a.cluster.as_str(),
            &a.wait,
            Request {
                job_type: "delete_comp",
                path: format!("/comp_nodes/{}", a.comp),
                body: None,
                done: format!("compute node {} removed", a.comp),
            },
        ),
    })
}

/// The id of a cluster given by id or name.
fn cluster_id(client: &Client, cluster: &str) -> Result<i64, CliError> {
    if let Ok(id) = cluster.parse::<i64>() {
        return Ok(id);
    }
    let url = client.url("/v1/clusters", &[])?;
    let clusters: Vec<Cluster> = crate::decode(client.get_all(url.clone())?, url.as_str())?;
    clusters
        .iter()
        .find(|c| c.name == cluster)
        .map(|c| c.id)
        .ok_or_else(|| CliError::Api {
            status: Some(404),
            code: "not_found".into(),
            message: format!("cluster {cluster} not found"),
        })
}

/// Executes a scale command and returns what to print.
pub fn run(client: &Client, cmd: &ScaleCmd, json: bool) -> Result<String, CliError> {
    if let ScaleCmd::Node(NodeCmd::Control(c)) = cmd {
        return crate::cmd::node::run(client, c, json);
    }
    let (cluster, wait, req) = request(cmd)?;
    let id = cluster_id(client, cluster)?;
    let url = client.url(&format!("/v1/clusters/{id}{}", req.path), &[])?;
    let v = match &req.body {
        Some(b) => client.post(url.clone(), b)?,
        None => client.delete_json(url.clone())?,
    };
    let waiting = (wait.wait, wait.wait_timeout);
    match crate::cmd::job::follow(client, v, url.as_str(), req.job_type, waiting, json)? {
        Followed::Print(text) => Ok(text),
        Followed::Done(job) => Ok(format!("{} (cluster {id}, job {})\n", req.done, job.id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> ScaleCmd {
        let mut v = vec!["kunlunctl"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
        {
            Command::Scale(c) => c,
            other => panic!("not a scale command: {other:?}"),
        }
    }

    #[test]
    fn every_command_maps_to_its_endpoint_and_body() {
        let c = parse(&[
            "shard", "add", "c1", "--shards", "2", "--nodes", "3", "--host", "10.0.0.1", "--host",
            "10.0.0.2", "--wait",
        ]);
        assert_eq!(c.noun(), "cluster", "hints point at `cluster show`");
        let (cluster, wait, r) = request(&c).unwrap();
        assert_eq!(cluster, "c1");
        assert!(wait.wait);
        assert_eq!(r.path, "/shards");
        assert_eq!(
            r.body.unwrap(),
            serde_json::json!({"shards": 2, "nodes": 3, "storage_hosts": ["10.0.0.1", "10.0.0.2"]})
        );

        let c = parse(&["shard", "rm", "4", "12"]);
        let (_, w, r) = request(&c).unwrap();
        assert!(!w.wait);
        assert_eq!(
            (r.path.as_str(), r.body, r.job_type),
            ("/shards/12", None, "delete_shard")
        );

        let (_, _, r) = request(&parse(&["node", "add", "4", "12", "--nodes", "2"])).unwrap();
        assert_eq!(r.path, "/shards/12/nodes");
        assert_eq!(
            r.body.unwrap(),
            serde_json::json!({"nodes": 2, "storage_hosts": []})
        );
        let (_, _, r) = request(&parse(&["node", "rm", "4", "12", "30"])).unwrap();
        assert_eq!(r.path, "/shards/12/nodes/30");

        let (_, _, r) = request(&parse(&[
            "comp", "add", "4", "--comps", "1", "--host", "h1",
        ]))
        .unwrap();
        assert_eq!(r.path, "/comp_nodes");
        assert_eq!(
            r.body.unwrap(),
            serde_json::json!({"comps": 1, "computer_hosts": ["h1"]})
        );
        let (_, _, r) = request(&parse(&["comp", "rm", "4", "7", "--wait"])).unwrap();
        assert_eq!(
            (r.path.as_str(), r.job_type),
            ("/comp_nodes/7", "delete_comp")
        );
    }

    #[test]
    fn bad_counts_and_hosts_are_refused_before_sending() {
        for args in [
            &["shard", "add", "c1", "--shards", "0"][..],
            &["node", "add", "c1", "1", "--nodes", "0"],
            &["comp", "add", "c1", "--comps", "300"],
            &["comp", "add", "c1", "--host", "bad host"],
        ] {
            let e = request(&parse(args)).unwrap_err();
            assert_eq!(e.code(), Some("invalid_field"), "{args:?}: {e}");
        }
    }

    #[test]
    fn missing_or_malformed_arguments_are_usage_errors() {
        for args in [
            &["kunlunctl", "shard", "rm", "c1"][..],
            &["kunlunctl", "shard", "rm", "c1", "x"],
            &["kunlunctl", "node", "rm", "c1", "1"],
            &["kunlunctl", "comp", "add"],
            &["kunlunctl", "comp", "add", "c1", "--comps", "-1"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }
}
