//! `kunlunctl`, the command-line client of the `cluster-mgr` HTTP API.
//!
//! [`run`] executes one parsed command and returns the process exit code; every command builds
//! the whole text it prints before printing it, so a failure never leaves half a table behind.
//! Exit codes: 0 ok, 1 refused (API error or local validation) or a followed job failed, 2 usage
//! (clap), 3 unreachable or a followed job did not end in time. A failure may still print on
//! stdout first (`--json --wait` prints the job whatever its outcome).

pub mod cli;
pub mod client;
pub mod cmd;
pub mod output;

use std::io::Write;

use cli::{Cli, Command};
use client::{CliError, Client};

/// Runs one command, prints its output or its error, and returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let noun = cli.command.noun();
    let result = client::resolve_token(cli.token.as_deref(), cli.token_file.as_deref())
        .and_then(|token| {
            client::check_transport(&cli.server, token.is_some(), cli.insecure_http)?;
            Ok(Client::connect(&cli.server, cli.timeout, &cli.tls())?.with_token(token))
        })
        .and_then(|client| match &cli.command {
            Command::Machine(c) => cmd::machine::run(&client, c, cli.json),
            Command::Cluster(c) => cmd::cluster::run(&client, c, cli.json),
            Command::BackupStorage(c) => cmd::backup_storage::run(&client, c, cli.json),
            Command::Job(c) => cmd::job::run(&client, c, cli.json),
            Command::Backup(c) => cmd::backup::run(&client, c, cli.json),
            Command::Xa(c) => cmd::xa::run(&client, c, cli.json),
            Command::Failover(c) => cmd::failover::run(&client, c, cli.json),
            Command::Scale(c) => cmd::scale::run(&client, c, cli.json),
            Command::Leader => cmd::leader::run(&client, cli.json),
            Command::Meta(c) => cmd::meta::run(&client, c, cli.json),
            Command::Token(c) => cmd::token::run(&client, c, cli.json),
            Command::Audit(a) => cmd::token::audit(&client, a, cli.json),
        });
    match result {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`kunlunctl machine list | head -1`) is not an error of ours.
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            0
        }
        Err(e) => {
            let (stdout, e) = e.into_parts();
            if let Some(text) = stdout {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            }
            eprintln!("error: {e}");
            if let Some(h) = hint(&e, noun, &cli.server) {
                eprintln!("hint: {h}");
            }
            e.exit_code()
        }
    }
}

/// What the user can do about an error.
pub fn hint(e: &CliError, noun: &str, server: &str) -> Option<String> {
    let h = match e {
        CliError::Unreachable { .. } => format!(
            "is the daemon running? Start it with `cluster-mgr` (it listens on 127.0.0.1:8010 by \
             default), or point kunlunctl at it with --server URL or {}=URL{}",
            cli::SERVER_ENV,
            if server.starts_with("http://") {
                "; a daemon with http_tls_cert set answers only https:// URLs"
            } else {
                ""
            }
        ),
        CliError::Tls { .. } => format!(
            "if the daemon's certificate comes from a private CA, pass that CA with --ca FILE \
             or {}=FILE; the host in {server} must be a name or address the certificate is \
             for; a daemon with http_tls_client_ca also needs --client-cert and --client-key; \
             a daemon without TLS is reached with http://",
            cli::CA_ENV
        ),
        CliError::Timeout { .. } => format!(
            "the daemon accepted the connection but is slow or stuck: retry with a larger \
             --timeout and check its log and {server}/healthz"
        ),
        CliError::JobTimeout { job, .. } => format!(
            "follow it further with `kunlunctl job watch {id} --timeout SECS`, or see where it \
             is with `kunlunctl job show {id}`",
            id = job.id
        ),
        CliError::WithOutput { error, .. } => return hint(error, noun, server),
        CliError::BadResponse { .. } => format!(
            "kunlunctl {} and this cluster-mgr may be different versions: compare \
             `kunlunctl --version` with the version in {server}/healthz",
            env!("CARGO_PKG_VERSION")
        ),
        CliError::Api { code, .. } => match code.as_str() {
            "not_found" => format!("list the existing ones with `kunlunctl {noun} list`"),
            "conflict" => format!(
                "it clashes with what is already stored: see `kunlunctl {noun} list`{}",
                if noun == "machine" {
                    ", or change the existing one with `kunlunctl machine update`"
                } else {
                    ""
                }
            ),
            "invalid_field" | "invalid_request" | "malformed_json" => {
                format!("fix the value named above; `kunlunctl {noun} --help` lists the commands and flags")
            }
            "store_unavailable" => format!(
                "the daemon cannot reach its metadata store; nothing was changed. Retry once \
                 {server}/healthz says ok"
            ),
            "machine_unreachable" => "check the address and --ssh-port, that sshd runs there and \
                 that this daemon's host can reach it; or register it with --no-probe and let the \
                 liveness check mark it running when it answers"
                .to_string(),
            "ssh_key_rejected" => "put the private key in the daemon's ssh_keys_dir (default \
                 <cluster_mgr_tmp_data_path>/keys), owned by the daemon's user, mode 0600, and \
                 pass that path as --ssh-key"
                .to_string(),
            "host_unresolvable" => "use an IP address, or a host name the daemon's host can \
                 resolve"
                .to_string(),
            "ssh_auth_failed" => {
                "the daemon could not log in: the --ssh-key file must be readable \
                 by cluster-mgr on its host, and its public key in the --ssh-user's \
                 authorized_keys on the machine"
                    .to_string()
            }
            "host_key_unknown" => "confirm the fingerprint named above on the machine \
                 (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and pass it as --ssh-host-key"
                .to_string(),
            "host_key_mismatch" => "the machine's host key does not match the \
                 daemon's known_hosts (in its cluster_mgr_tmp_data_path): if the machine was \
                 reinstalled, remove its line there and register it again"
                .to_string(),
            "missing_binaries" => "install the server packages on the machine (storage: MariaDB \
                 server, computer: PostgreSQL) at the paths named above, then register it again"
                .to_string(),
            "data_dir_unusable" => {
                "each --data-dir must be a writable directory on the machine, or \
                 creatable under one; fix it there or pick another"
                    .to_string()
            }
            "machine_unsuitable" => {
                "the machine cannot host instances for the reason above".to_string()
            }
            "job_failed" => {
                "`kunlunctl job show ID` lists the job's steps and the one that failed".to_string()
            }
            "internal" => {
                "an unexpected failure inside cluster-mgr: its log has the details".to_string()
            }
            "unauthorized" => format!(
                "give an API token with --token, ${} or a mode-0600 file \
                 (~/.config/kunlunctl/token or --token-file); an admin creates one with \
                 `kunlunctl token create`, the first one on the manager host with \
                 `cluster-mgr token create --name root --role admin --config FILE`",
                cli::TOKEN_ENV
            ),
            "forbidden" => "this token's role is too low for the request: reads need viewer, \
                 jobs, switchover and XA resolve need operator, machines and tokens need admin"
                .to_string(),
            "host_not_allowed" => format!(
                "cluster-mgr does not answer to the host name in {server}: use one listed in \
                 its http_allowed_hosts, or add it there"
            ),
            "insecure_token_file" => "chmod 600 the token file (it must not be readable by \
                 group or others)"
                .to_string(),
            "insecure_key_file" => "chmod 600 the key file (it must not be readable by group or \
                 others)"
                .to_string(),
            "bad_tls_file" => "name a readable PEM file (a CA or client certificate, or its \
                 private key)"
                .to_string(),
            "insecure_transport" => "use https:// (the daemon needs http_tls_cert and \
                 http_tls_key), reach it over loopback (an SSH tunnel), or pass --insecure-http \
                 if this network is trusted"
                .to_string(),
            _ => return None,
        },
    };
    Some(h)
}

/// Decodes an API answer into the type this kunlunctl expects.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T, CliError> {
    serde_json::from_value(value).map_err(|e| CliError::BadResponse {
        url: what.to_string(),
        detail: format!("cannot read the answer: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_a_hint_naming_what_to_do() {
        let server = "http://127.0.0.1:8010";
        let unreachable = CliError::Unreachable {
            url: server.into(),
            detail: "refused".into(),
        };
        let h = hint(&unreachable, "machine", server).unwrap();
        assert!(
            h.contains("cluster-mgr") && h.contains("--server") && h.contains("KUNLUNCTL_SERVER"),
            "{h}"
        );
        let nf = client::api_error(
            reqwest::StatusCode::NOT_FOUND,
            r#"{"code":"not_found","message":"m"}"#,
        );
        assert!(hint(&nf, "machine", server)
            .unwrap()
            .contains("kunlunctl machine list"));
        let c = client::api_error(
            reqwest::StatusCode::CONFLICT,
            r#"{"code":"conflict","message":"m"}"#,
        );
        assert!(hint(&c, "machine", server)
            .unwrap()
            .contains("machine update"));
        assert!(
            hint(&CliError::invalid_field("hostaddr: x"), "machine", server)
                .unwrap()
                .contains("--help")
        );
        let other = CliError::Api {
            status: Some(418),
            code: "teapot".into(),
            message: "m".into(),
        };
        assert!(hint(&other, "machine", server).is_none());

        let failed = CliError::Api {
            status: None,
            code: "job_failed".into(),
            message: "job 4 failed: x".into(),
        };
        assert!(hint(&failed, "cluster", server)
            .unwrap()
            .contains("kunlunctl job show"));
        // A failure carrying stdout gets the hint of the failure it wraps.
        let wrapped = failed.with_stdout("{}".into());
        assert!(hint(&wrapped, "cluster", server)
            .unwrap()
            .contains("kunlunctl job show"));
        let timeout = CliError::JobTimeout {
            job: Box::new(kunlun_meta::model::Job {
                id: 4,
                job_type: "add_shards".into(),
                status: kunlun_meta::model::JobStatus::Ongoing,
                job_info: None,
                memo: None,
                user_name: None,
                related_id: None,
                when_started: None,
                when_ended: None,
            }),
            secs: 1,
        };
        assert!(hint(&timeout, "cluster", server)
            .unwrap()
            .contains("kunlunctl job watch 4"));
    }
}
