//! The command line of `kunlunctl`: `kunlunctl [global flags] <noun> <verb> [args]`.
//!
//! Only clap types live here. Anything clap can check (numbers, enums, the server URL, "update
//! needs at least one field") is checked here, so that a bad command line always exits 2 before
//! any request is made.

use clap::{Args, Parser, Subcommand};
use kunlun_meta::model::{JobStatus, MachineType};

/// Environment variable naming the daemon, used when `--server` is not given.
pub const SERVER_ENV: &str = "KUNLUNCTL_SERVER";
/// Where the daemon listens when started with no arguments.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8010";
/// Environment variable holding the API token, used when `--token` is not given.
pub const TOKEN_ENV: &str = "KUNLUNCTL_TOKEN";
/// Environment variable naming the CA file, used when `--ca` is not given.
pub const CA_ENV: &str = "KUNLUNCTL_CA";
/// Environment variables naming the client certificate and key (mTLS).
pub const CLIENT_CERT_ENV: &str = "KUNLUNCTL_CLIENT_CERT";
pub const CLIENT_KEY_ENV: &str = "KUNLUNCTL_CLIENT_KEY";

const AFTER_HELP: &str = "\
Environment:
  KUNLUNCTL_SERVER  URL of the cluster-mgr daemon when --server is not given
                    (default http://127.0.0.1:8010)
  KUNLUNCTL_TOKEN   API token when --token is not given; else --token-file, else
                    ~/.config/kunlunctl/token if it exists (it must be mode 0600)
  KUNLUNCTL_CA      CA file when --ca is not given (https: trusted instead of the
                    system's roots)
  KUNLUNCTL_CLIENT_CERT, KUNLUNCTL_CLIENT_KEY
                    client certificate and key when the flags are not given (mTLS)

Exit codes:
  0  success
  1  the daemon refused the request, or a field failed validation before sending;
     printed as `error: <message> (<code>)` with what to do next; with --wait,
     `job watch` or `node stop|start|restart`: the job failed (code job_failed)
  2  usage error: unknown flag, missing or malformed argument
  3  the daemon could not be reached or did not answer in time (start it with
     `cluster-mgr`, or point --server / KUNLUNCTL_SERVER at it), or its TLS
     certificate is not trusted (--ca) or not for the name in --server; with --wait or
     `job watch`: the job did not end within the time limit (it goes on)
  With --json, --wait, `job watch` and `node stop|start|restart` print the job on
  stdout whatever its outcome.

Examples:
  kunlunctl machine add --host 10.0.0.5 --type storage --ssh-key /root/.ssh/id_ed25519 \\
      --data-dir /data1/kunlun --data-dir /data2/kunlun
  kunlunctl machine list
  kunlunctl --json job list --status ongoing
  kunlunctl --timeout 300 node restart 10.0.0.5:57003";

/// Command-line client of the Kunlun cluster manager (`cluster-mgr`) HTTP API.
#[derive(Debug, Parser)]
#[command(name = "kunlunctl", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// URL of the cluster-mgr daemon: https://HOST:PORT, or http:// (the default scheme).
    #[arg(
        long,
        global = true,
        env = SERVER_ENV,
        default_value = DEFAULT_SERVER,
        value_name = "URL",
        value_parser = parse_server
    )]
    pub server: String,

    /// Print the API's JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,

    /// Give up on a request after this many seconds.
    #[arg(
        long,
        global = true,
        default_value_t = 30,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub timeout: u64,

    /// API token (`Authorization: Bearer`); prefer $KUNLUNCTL_TOKEN or a token file, which do
    /// not show in the process list.
    #[arg(long, global = true, env = TOKEN_ENV, hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// File holding the API token (mode 0600 or narrower); default ~/.config/kunlunctl/token.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// PEM CA certificate(s) to trust for an https daemon, instead of the system's roots.
    #[arg(long, global = true, env = CA_ENV, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,

    /// PEM client certificate, for a daemon that requires one (mTLS); needs --client-key.
    #[arg(long, global = true, env = CLIENT_CERT_ENV, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<std::path::PathBuf>,

    /// Private key of --client-cert (PEM, mode 0600 or narrower).
    #[arg(long, global = true, env = CLIENT_KEY_ENV, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,

    /// Send the token over plain http to a host that is not loopback (it crosses the network in
    /// clear); without it such a request is refused before anything is sent.
    #[arg(long, global = true)]
    pub insecure_http: bool,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The TLS settings of the flags.
    pub fn tls(&self) -> crate::client::TlsOptions {
        crate::client::TlsOptions {
            ca: self.ca.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

/// The nouns.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hosts the manager installs database instances on.
    #[command(subcommand)]
    Machine(MachineCmd),
    /// Database clusters, their shards, storage nodes and compute nodes.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Backup storages: directories on registered machines where cluster backups are kept.
    #[command(subcommand)]
    BackupStorage(crate::cmd::backup_storage::BackupStorageCmd),
    /// Long-running work of the manager (installs, failovers, ...).
    #[command(subcommand)]
    Job(JobCmd),
    /// Cluster backups: take one, the catalogue, remove one.
    #[command(subcommand)]
    Backup(crate::cmd::backup::BackupCmd),
    /// Shard failovers and switchovers, and the no-switch hold.
    #[command(subcommand)]
    Failover(crate::cmd::failover::FailoverCmd),
    /// In-doubt (prepared) 2PC branches of a cluster: list them, resolve one by hand.
    #[command(subcommand)]
    Xa(crate::cmd::xa::XaCmd),
    /// `shard`, `node`, `comp`: add or remove shards, replicas and compute nodes of a cluster.
    #[command(flatten)]
    Scale(crate::cmd::scale::ScaleCmd),
    /// Which manager instance leads (runs jobs, shard HA, XA recovery) and what this one is.
    Leader,
    /// The metadata shard: its nodes, their roles, which one this instance's store uses.
    #[command(subcommand)]
    Meta(crate::cmd::meta::MetaCmd),
    /// API tokens (admin): create one (its secret is shown once), list, revoke.
    #[command(subcommand)]
    Token(crate::cmd::token::TokenCmd),
    /// The audit trail of mutating API requests (admin), newest first.
    Audit(crate::cmd::token::AuditArgs),
}

impl Command {
    /// The noun, as typed, for messages and hints.
    pub fn noun(&self) -> &'static str {
        match self {
            Command::Machine(_) => "machine",
            Command::Cluster(_) => "cluster",
            Command::BackupStorage(_) => "backup-storage",
            Command::Job(_) => "job",
            Command::Backup(_) => "backup",
            Command::Failover(_) => "failover",
            Command::Xa(_) => "xa",
            Command::Scale(c) => c.noun(),
            Command::Leader => "leader",
            Command::Meta(_) => "meta",
            Command::Token(_) => "token",
            Command::Audit(_) => "audit",
        }
    }
}

/// `kunlunctl machine ...`
#[derive(Debug, Subcommand)]
pub enum MachineCmd {
    /// Register a machine reachable over SSH.
    Add(MachineAddArgs),
    /// List the registered machines.
    #[command(alias = "ls")]
    List,
    /// Show one machine.
    Show(IdArg),
    /// Change some settings of a machine (give at least one flag).
    Update(MachineUpdateArgs),
    /// Unregister a machine.
    #[command(alias = "remove", alias = "delete")]
    Rm(IdArg),
}

/// A numeric id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// Id as shown by `list`.
    #[arg(value_name = "ID")]
    pub id: i64,
}

/// `machine add`.
#[derive(Debug, Args)]
pub struct MachineAddArgs {
    /// IP address or host name the manager reaches the machine at.
    #[arg(long, value_name = "HOST")]
    pub host: String,
    /// What the machine hosts.
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_machine_type)]
    pub machine_type: MachineType,
    /// Absolute path, on the manager's host, of the private key used to log in.
    #[arg(long, value_name = "PATH")]
    pub ssh_key: String,
    /// SSH port [default: 22].
    #[arg(long, value_name = "N")]
    pub ssh_port: Option<u16>,
    /// SSH user [default: root].
    #[arg(long, value_name = "USER")]
    pub ssh_user: Option<String>,
    /// Absolute directory instances are placed under (repeat for several).
    #[arg(long = "data-dir", value_name = "DIR", required = true)]
    pub data_dirs: Vec<String>,
    /// Ports instances may use, FIRST-LAST [default: 57000-58000 storage, 47000-48000 computer].
    #[arg(long, value_name = "A-B")]
    pub port_range: Option<String>,
    /// Rack the machine is in.
    #[arg(long, value_name = "RACK")]
    pub rack: Option<String>,
    /// Memory of the machine in MiB.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub mem_mb: Option<i64>,
    /// CPU cores of the machine.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cores: Option<i64>,
    /// Store the machine without connecting to it (it starts `dead`; the daemon's liveness
    /// check marks it `running` once it answers over SSH). By default the daemon probes it
    /// first and refuses a machine it cannot use.
    #[arg(long)]
    pub no_probe: bool,
    /// The machine's SSH host key fingerprint, SHA256:... (`ssh-keygen -lf` of its
    /// /etc/ssh/ssh_host_*_key.pub); needed when the daemon checks host keys strictly (its
    /// default) and does not know the machine yet.
    #[arg(long, value_name = "SHA256:...")]
    pub ssh_host_key: Option<String>,
}

/// `machine update`: every flag optional, at least one required.
#[derive(Debug, Args)]
#[command(
    override_usage = "kunlunctl machine update <ID> <CHANGE>... (at least one of the flags below)"
)]
#[command(group(
    clap::ArgGroup::new("changes")
        .required(true)
        .multiple(true)
        .args(["ssh_key", "ssh_port", "ssh_user", "data_dirs", "port_range", "rack", "mem_mb", "cores"])
))]
pub struct MachineUpdateArgs {
    /// Id as shown by `machine list`.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Absolute path, on the manager's host, of the private key used to log in.
    #[arg(long, value_name = "PATH")]
    pub ssh_key: Option<String>,
    /// SSH port.
    #[arg(long, value_name = "N")]
    pub ssh_port: Option<u16>,
    /// SSH user.
    #[arg(long, value_name = "USER")]
    pub ssh_user: Option<String>,
    /// Replace the data directories (repeat for several).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dirs: Vec<String>,
    /// Ports instances may use, FIRST-LAST.
    #[arg(long, value_name = "A-B")]
    pub port_range: Option<String>,
    /// Rack the machine is in.
    #[arg(long, value_name = "RACK")]
    pub rack: Option<String>,
    /// Memory of the machine in MiB.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub mem_mb: Option<i64>,
    /// CPU cores of the machine.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cores: Option<i64>,
    /// Store a change of SSH access or data dirs without logging in to check it (the stored
    /// probe facts are dropped).
    #[arg(long)]
    pub no_probe: bool,
}

/// `kunlunctl cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// List the clusters.
    #[command(alias = "ls")]
    List,
    /// Show a cluster with its shards, storage nodes and compute nodes.
    Show(IdArg),
    /// Create a cluster (a `create_cluster` job); `--wait` follows it to the end.
    Create(crate::cmd::cluster::CreateArgs),
    /// Delete a cluster and every instance of it (a `delete_cluster` job).
    #[command(alias = "rm")]
    Delete(crate::cmd::cluster::DeleteArgs),
    /// Show a cluster's self-healing switches, or change them with the flags (auto_restart:
    /// dead instances are started again; auto_rebuild: kept-out replicas are rebuilt).
    Policy(crate::cmd::policy::PolicyArgs),
}

/// `kunlunctl job ...`
#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// List jobs, newest first.
    #[command(alias = "ls")]
    List(JobListArgs),
    /// Show a job with its request and progress.
    Show(IdArg),
    /// Follow a job until it ends, showing its steps (exit 0 done, 1 failed).
    Watch(crate::cmd::job::WatchArgs),
}

/// `job list` filters.
#[derive(Debug, Args)]
pub struct JobListArgs {
    /// Only jobs in this status (not_started, ongoing, done, failed).
    #[arg(long, value_name = "STATUS", value_parser = parse_job_status)]
    pub status: Option<JobStatus>,
    /// Only jobs of this type (e.g. create_cluster).
    #[arg(long = "type", value_name = "TYPE")]
    pub job_type: Option<String>,
    /// Only the newest N jobs (1..=1000) [default: every job, fetched page by page].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
}

fn parse_machine_type(s: &str) -> Result<MachineType, String> {
    s.parse()
        .map_err(|e: kunlun_meta::error::ParseEnumError| e.to_string())
}

fn parse_job_status(s: &str) -> Result<JobStatus, String> {
    s.parse()
        .map_err(|e: kunlun_meta::error::ParseEnumError| e.to_string())
}

/// Accepts `http://` or `https://host[:port][/prefix]` (a missing scheme means http) and returns
/// it without a trailing slash, so paths can be appended.
pub fn parse_server(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty server URL".into());
    }
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| format!("'{s}' is not a URL: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("'{s}': only http:// and https:// are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{s}' names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{s}': a server URL takes no query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_exit_codes_and_env() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("KUNLUNCTL_SERVER"), "{help}");
        for code in [
            "0  success",
            "1  the daemon refused",
            "2  usage error",
            "3  the daemon could not be reached",
        ] {
            assert!(help.contains(code), "missing {code:?} in {help}");
        }
    }

    #[test]
    fn server_urls() {
        assert_eq!(
            parse_server("http://127.0.0.1:8010/").unwrap(),
            "http://127.0.0.1:8010"
        );
        assert_eq!(
            parse_server("127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            parse_server("http://h:1/prefix/").unwrap(),
            "http://h:1/prefix"
        );
        assert_eq!(parse_server("https://h:8443/").unwrap(), "https://h:8443");
        assert!(parse_server("ftp://h")
            .unwrap_err()
            .contains("only http:// and https://"));
        assert!(parse_server("").is_err());
        assert!(parse_server("http://h:99999").is_err());
        assert!(parse_server("http://h/?a=b").is_err());
    }

    #[test]
    fn update_needs_a_change() {
        let e = Cli::try_parse_from(["kunlunctl", "machine", "update", "3"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            Cli::try_parse_from(["kunlunctl", "machine", "update", "3", "--rack", "r1"]).is_ok()
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["kunlunctl", "machine", "show", "abc"][..],
            &[
                "kunlunctl",
                "machine",
                "add",
                "--host",
                "h",
                "--type",
                "gpu",
                "--ssh-key",
                "/k",
                "--data-dir",
                "/d",
            ],
            &[
                "kunlunctl",
                "machine",
                "add",
                "--host",
                "h",
                "--type",
                "storage",
                "--ssh-key",
                "/k",
            ],
            &["kunlunctl", "job", "list", "--status", "running"],
            &["kunlunctl", "--timeout", "0", "machine", "list"],
            &["kunlunctl", "--server", "ftp://x", "machine", "list"],
            &["kunlunctl", "--client-cert", "/c.pem", "machine", "list"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli =
            Cli::try_parse_from(["kunlunctl", "machine", "list", "--json", "--server", "h:1"])
                .unwrap();
        assert!(cli.json);
        assert_eq!(cli.server, "http://h:1");
        assert!(matches!(cli.command, Command::Machine(MachineCmd::List)));
    }
}
