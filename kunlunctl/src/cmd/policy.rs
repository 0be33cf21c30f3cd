//! `kunlunctl cluster policy ID [--auto-restart on|off] [--auto-rebuild on|off]`: a cluster's
//! self-healing switches over `/v1/clusters/{id}/policy`. Without a flag it shows them; with
//! flags it changes the ones named (the others keep their value) and shows the result.

use kunlun_meta::api::UpdateClusterPolicy;
use kunlun_meta::model::ClusterPolicy;

use crate::client::{CliError, Client};
use crate::output;

/// `cluster policy` arguments.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// Cluster id as shown by `cluster list`.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Whether the instance keeper starts the cluster's dead instances again.
    #[arg(long, value_name = "on|off", value_parser = parse_switch)]
    pub auto_restart: Option<bool>,
    /// Whether a replica kept out for rebuild is rebuilt by a job on its own.
    #[arg(long, value_name = "on|off", value_parser = parse_switch)]
    pub auto_rebuild: Option<bool>,
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?} is not on or off")),
    }
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.to_string()
}

/// Shows (or changes, then shows) a cluster's policy.
pub fn run(client: &Client, a: &PolicyArgs, json: bool) -> Result<String, CliError> {
    let url = client.url(&format!("/v1/clusters/{}/policy", a.id), &[])?;
    let v = if a.auto_restart.is_none() && a.auto_rebuild.is_none() {
        client.get(url.clone())?
    } else {
        let patch = UpdateClusterPolicy {
            auto_restart: a.auto_restart,
            auto_rebuild: a.auto_rebuild,
        };
        client.patch(url.clone(), &patch)?
    };
    if json {
        return Ok(output::json(&v) + "\n");
    }
    let p: ClusterPolicy = crate::decode(v, url.as_str())?;
    Ok(output::key_values(&[
        ("cluster", p.cluster_id.to_string()),
        ("auto_restart", on_off(p.auto_restart)),
        ("auto_rebuild", on_off(p.auto_rebuild)),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_are_on_or_off() {
        assert_eq!(parse_switch("on"), Ok(true));
        assert_eq!(parse_switch("off"), Ok(false));
        for bad in ["yes", "true", "1", "ON", ""] {
            assert!(parse_switch(bad).is_err(), "{bad}");
        }
    }
}
