//! `kunlunctl backup create|list|show|rm|restore|archive` (and `schedule`, see
//! [`super::backup_schedule`]) over `/v1/clusters/{id}/backups` and
//! `/v1/backups`: start a cluster backup (job `backup_cluster`; `--wait` follows it and shows
//! the backup), the catalogue, removal (the files on the storage, then the rows), and restore
//! into a new cluster (job `restore_cluster`, to the end of the backup or `--restore-time`;
//! `--wait` follows it), and the binlog archive window past a backup.

use kunlun_meta::api::{
    BackupArchive, CreateBackup, RestoreBackup, RestoreInto, SnapshotCompression,
};
use kunlun_meta::model::{Backup, Cluster, Job};

use super::job::{follow, Followed};
use crate::client::{CliError, Client};
use crate::output::{self, Table};

/// `kunlunctl backup ...`
#[derive(Debug, clap::Subcommand)]
pub enum BackupCmd {
    /// Back a cluster up onto a registered backup storage.
    Create(CreateArgs),
    /// Show, set (--storage, --window) or remove (--off) a cluster's daily backup schedule
    /// and retention.
    Schedule(super::backup_schedule::ScheduleArgs),
    /// List backups, newest first.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Show one backup with its parts.
    Show(IdArg),
    /// Remove a backup: its files on the storage, then its catalogue rows.
    #[command(alias = "remove", alias = "delete")]
    Rm(IdArg),
    /// Restore a backup into a new cluster created with the backed-up shape (--name), or over
    /// an existing, empty cluster with as many shards (--into).
    Restore(RestoreArgs),
    /// Show how far past a backup its cluster's binlogs are archived: the restore times taken.
    Archive(IdArg),
    /// Verify a backup: its files' checksums, and each shard's snapshot started in a scratch
    /// server with its tables' checksums compared with those recorded at the backup.
    Verify(VerifyArgs),
}

/// `backup verify` arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Backup id as shown by `backup list`.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Follow the job until it ends; fail if the backup does not verify.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 7200, value_name = "SECS")]
    pub wait_timeout: u64,
}

/// `backup restore` arguments.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Backup id as shown by `backup list`.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// The new cluster's name (must not exist).
    #[arg(long, value_name = "NAME", required_unless_present = "into")]
    pub name: Option<String>,
    /// Restore over this existing cluster (its id or name) instead: it must hold no data yet
    /// and have as many shards as the backup; its instances are kept (job
    /// `restore_into_cluster`).
    #[arg(long, value_name = "CLUSTER", conflicts_with_all = ["name", "nodes", "comps", "innodb_size_mb", "max_connections"])]
    pub into: Option<String>,
    /// Nodes per shard (default: as backed up).
    #[arg(long, value_name = "N")]
    pub nodes: Option<u32>,
    /// Compute nodes (default: as backed up).
    #[arg(long, value_name = "N")]
    pub comps: Option<u32>,
    /// InnoDB buffer pool of each storage node, MB.
    #[arg(long, value_name = "MB")]
    pub innodb_size_mb: Option<u32>,
    /// `max_connections` of every instance.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
    /// Restore a backup without a common cut across its shards (taken with --allow-primary).
    #[arg(long)]
    pub allow_inconsistent: bool,
    /// Restore to this point in time (RFC 3339 in whole seconds, e.g. 2026-12-06T10:00:03Z)
    /// instead of the end of the backup; see `backup archive ID` for the window.
    #[arg(long, value_name = "TIME")]
    pub restore_time: Option<String>,
    /// Follow the job until it ends; fail if the job fails.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 7200, value_name = "SECS")]
    pub wait_timeout: u64,
}

/// A backup id.
#[derive(Debug, clap::Args)]
pub struct IdArg {
    /// Backup id as shown by `backup list`.
    #[arg(value_name = "ID")]
    pub id: i64,
}

/// `backup create` arguments.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The cluster: its id or its name.
    #[arg(value_name = "CLUSTER")]
    pub cluster: String,
    /// The backup storage's name (`backup-storage list`).
    #[arg(long, value_name = "NAME")]
    pub storage: String,
    /// Take a shard's snapshot from its primary when it has no healthy replica.
    #[arg(long)]
    pub allow_primary: bool,
    /// How the shards' snapshots are stored: auto (compressed unless a sample of the data
    /// shrinks under 1.1x), zstd or none.
    #[arg(long, default_value = "auto", value_name = "auto|zstd|none")]
    pub compression: SnapshotCompression,
    /// Follow the job until it ends; fail if the job fails.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 7200, value_name = "SECS")]
    pub wait_timeout: u64,
}

/// `backup list` arguments.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only the backups of this cluster id.
    #[arg(long, value_name = "ID")]
    pub cluster: Option<i64>,
}

/// Executes a `backup` command and returns what to print.
pub fn run(client: &Client, cmd: &BackupCmd, json: bool) -> Result<String, CliError> {
    match cmd {
        BackupCmd::Create(a) => create(client, a, json),
        BackupCmd::Schedule(a) => super::backup_schedule::run(client, a, json),
        BackupCmd::List(a) => {
            let url = client.url(
                "/v1/backups",
                &[("cluster_id", a.cluster.map(|c| c.to_string()))],
            )?;
            let v = client.get_all(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let list: Vec<Backup> = crate::decode(v, url.as_str())?;
            Ok(table(&list))
        }
        BackupCmd::Show(a) => {
            let url = client.url(&format!("/v1/backups/{}", a.id), &[])?;
            let v = client.get(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let b: Backup = crate::decode(v, url.as_str())?;
            Ok(show(&b))
        }
        BackupCmd::Restore(a) => restore(client, a, json),
        BackupCmd::Verify(a) => verify(client, a, json),
        BackupCmd::Archive(a) => {
            let url = client.url(&format!("/v1/backups/{}/archive", a.id), &[])?;
            let v = client.get(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let ar: BackupArchive = crate::decode(v, url.as_str())?;
            Ok(archive(&ar))
        }
        BackupCmd::Rm(a) => {
            let url = client.url(&format!("/v1/backups/{}", a.id), &[])?;
            client.delete(url)?;
            Ok(if json {
                "{}\n".into()
            } else {
                format!("backup {} removed\n", a.id)
            })
        }
    }
}

/// The cluster's id: `cluster` itself when a number, else the cluster of that name.
pub(crate) fn cluster_id(client: &Client, cluster: &str) -> Result<i64, CliError> {
    if let Ok(id) = cluster.parse::<i64>() {
        return Ok(id);
    }
    let url = client.url("/v1/clusters", &[])?;
    let all: Vec<Cluster> = crate::decode(client.get_all(url.clone())?, url.as_str())?;
    all.iter()
        .find(|c| c.name == cluster)
        .map(|c| c.id)
        .ok_or_else(|| CliError::invalid_field(format!("no cluster is named {cluster:?}")))
}

fn create(client: &Client, a: &CreateArgs, json: bool) -> Result<String, CliError> {
    let id = cluster_id(client, &a.cluster)?;
    let req = CreateBackup {
        storage: a.storage.clone(),
        allow_primary: a.allow_primary,
        compression: a.compression,
    };
    let url = client.url(&format!("/v1/clusters/{id}/backups"), &[])?;
    let v = client.post(url.clone(), &req)?;
    let job = match follow(
        client,
        v,
        url.as_str(),
        "backup_cluster",
        (a.wait, a.wait_timeout),
        json,
    )? {
        Followed::Print(text) => return Ok(text),
        Followed::Done(job) => job,
    };
    match backup_id(&job) {
        Some(b) => {
            let u = client.url(&format!("/v1/backups/{b}"), &[])?;
            let bk: Backup = crate::decode(client.get(u.clone())?, u.as_str())?;
            Ok(show(&bk))
        }
        None => Ok(format!("job {} done\n", job.id)),
    }
}

fn restore(client: &Client, a: &RestoreArgs, json: bool) -> Result<String, CliError> {
    let (url, v, job_type) = match (&a.into, &a.name) {
        (Some(into), _) => {
            let id = cluster_id(client, into)?;
            let req = RestoreInto {
                backup_id: a.id,
                allow_inconsistent: a.allow_inconsistent,
                restore_time: a.restore_time.clone(),
            };
            let url = client.url(&format!("/v1/clusters/{id}/restore"), &[])?;
            let v = client.post(url.clone(), &req)?;
            (url, v, "restore_into_cluster")
        }
        (None, name) => {
            let url = client.url(&format!("/v1/backups/{}/restore", a.id), &[])?;
            let v = client.post(
                url.clone(),
                &new_cluster(a, name.clone().unwrap_or_default()),
            )?;
            (url, v, "restore_cluster")
        }
    };
    let job = match follow(
        client,
        v,
        url.as_str(),
        job_type,
        (a.wait, a.wait_timeout),
        json,
    )? {
        Followed::Print(text) => return Ok(text),
        Followed::Done(job) => job,
    };
    let memo = job.memo.clone().unwrap_or_default();
    let mut out = format!(
        "backup {} restored into cluster {} (id {}){}\n",
        a.id,
        memo["cluster_name"].as_str().unwrap_or_default(),
        memo["cluster_id"].as_i64().unwrap_or_default(),
        memo["restore_time"]
            .as_str()
            .map(|t| format!(" as of {t}"))
            .unwrap_or_default()
    );
    restored_shards(&memo, &mut out);
    Ok(out)
}

/// The request of a restore into the new cluster `name`.
fn new_cluster(a: &RestoreArgs, name: String) -> RestoreBackup {
    RestoreBackup {
        name,
        nick_name: None,
        nodes: a.nodes,
        comps: a.comps,
        innodb_size_mb: a.innodb_size_mb,
        max_connections: a.max_connections,
        storage_hosts: Vec::new(),
        computer_hosts: Vec::new(),
        allow_inconsistent: a.allow_inconsistent,
        restore_time: a.restore_time.clone(),
    }
}

/// What a done restore did per shard, appended to `out`.
fn restored_shards(memo: &serde_json::Value, out: &mut String) {
    if memo["consistent"] == serde_json::Value::Bool(false) {
        out.push_str(
            "note: the backup had no common cut across its shards (restored with \
             --allow-inconsistent)\n",
        );
    }
    for s in memo["shards"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}: from shard {} at {} ({} archived binlog files replayed); prepared XA \
             branches committed {}, rolled back {}\n",
            s["shard"].as_str().unwrap_or_default(),
            s["source_shard_id"],
            s["gtid"].as_str().unwrap_or_default(),
            s["replayed_files"].as_u64().unwrap_or(0),
            s["xa_committed"],
            s["xa_rolled_back"],
        ));
        if s["xa_left"].as_u64().unwrap_or(0) > 0 {
            out.push_str(&format!(
                "  note: {} prepared branches of no Kunlun transaction were left for their \
                 owner (XA RECOVER on its nodes)\n",
                s["xa_left"]
            ));
        }
    }
}

fn verify(client: &Client, a: &VerifyArgs, json: bool) -> Result<String, CliError> {
    let url = client.url(&format!("/v1/backups/{}/verify", a.id), &[])?;
    let v = client.post(url.clone(), &serde_json::json!({}))?;
    let job = match follow(
        client,
        v,
        url.as_str(),
        "verify_backup",
        (a.wait, a.wait_timeout),
        json,
    )? {
        Followed::Print(text) => return Ok(text),
        Followed::Done(job) => job,
    };
    let memo = job.memo.clone().unwrap_or_default();
    let mut out = format!("backup {} verified\n", a.id);
    for s in memo["shards"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  shard {} on {}: started; {} of {} recorded table checksums match{}\n",
            s["shard_id"],
            s["machine"].as_str().unwrap_or_default(),
            s["matched"],
            s["recorded"],
            s["note"]
                .as_str()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ));
    }
    Ok(out)
}

fn archive(a: &BackupArchive) -> String {
    let or_none = |t: &Option<String>| t.clone().unwrap_or_else(|| "-".into());
    let mut out = format!(
        "backup {} of cluster {} on {}: restorable from {} until {} (commit log archived until {})\n",
        a.backup_id,
        a.cluster_id,
        a.storage,
        or_none(&a.restorable_from),
        or_none(&a.restorable_until),
        or_none(&a.commit_log_until),
    );
    let mut t = Table::new(&[
        "SHARD",
        "SOURCE",
        "FILES",
        "BYTES",
        "COVERED_UNTIL",
        "END_GTID",
        "PROBLEM",
    ]);
    for s in &a.shards {
        t.row(vec![
            s.shard_id.to_string(),
            s.source.clone(),
            s.files.to_string(),
            s.bytes.to_string(),
            or_none(&s.covered_until),
            s.end_gtid.clone(),
            s.gap
                .clone()
                .or_else(|| s.error.clone())
                .unwrap_or_default(),
        ]);
    }
    out.push_str(&t.render());
    out
}

fn backup_id(job: &Job) -> Option<i64> {
    job.memo.as_ref()?.get("backup_id")?.as_i64()
}

fn table(list: &[Backup]) -> String {
    let mut t = Table::new(&[
        "ID", "CLUSTER", "STORAGE", "STATUS", "STARTED", "BYTES", "ERROR",
    ]);
    for b in list {
        t.row(vec![
            b.id.to_string(),
            format!("{} ({})", b.cluster_name, b.cluster_id),
            b.storage_id.to_string(),
            b.status.to_string(),
            output::time(Some(b.started_at)),
            b.bytes.to_string(),
            output::opt(b.error.as_deref()),
        ]);
    }
    t.render()
}

fn show(b: &Backup) -> String {
    let mut out = output::key_values(&[
        ("backup", b.id.to_string()),
        ("cluster", format!("{} ({})", b.cluster_name, b.cluster_id)),
        ("storage", b.storage_id.to_string()),
        ("job", output::opt(b.job_id)),
        ("status", b.status.to_string()),
        ("started", output::time(Some(b.started_at))),
        ("ended", output::time(b.ended_at)),
        ("bytes", b.bytes.to_string()),
        ("manifest", output::opt(b.manifest.as_deref())),
        ("error", output::opt(b.error.as_deref())),
    ]);
    if !b.parts.is_empty() {
        let mut t = Table::new(&[
            "PART", "TYPE", "OF", "STATUS", "FILE", "BYTES", "GTID", "SOURCE",
        ]);
        for p in &b.parts {
            let m = p.memo.as_ref();
            let get = |k: &str| {
                m.and_then(|m| m.get("part"))
                    .and_then(|x| x.get(k))
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .unwrap_or_default()
            };
            t.row(vec![
                p.id.to_string(),
                p.backup_type.to_string(),
                match (p.shard_id, p.comp_id) {
                    (Some(s), _) => format!("shard {s}"),
                    (_, Some(c)) => format!("comp {c}"),
                    _ => String::new(),
                },
                p.status.to_string(),
                output::opt(p.backup_addr.as_deref()),
                get("bytes"),
                get("gtid"),
                get("source"),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    use super::*;

    #[test]
    fn backup_commands_parse() {
        let cli = Cli::try_parse_from([
            "kunlunctl",
            "backup",
            "create",
            "c1",
            "--storage",
            "s1",
            "--wait",
        ])
        .unwrap();
        let Command::Backup(BackupCmd::Create(a)) = cli.command else {
            panic!()
        };
        assert_eq!(
            (a.cluster.as_str(), a.storage.as_str(), a.wait),
            ("c1", "s1", true)
        );
        assert!(Cli::try_parse_from(["kunlunctl", "backup", "create", "c1"]).is_err());
        let cli = Cli::try_parse_from(["kunlunctl", "backup", "list", "--cluster", "3"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Backup(BackupCmd::List(ListArgs { cluster: Some(3) }))
        ));
        assert!(Cli::try_parse_from(["kunlunctl", "backup", "rm", "x"]).is_err());
        let cli = Cli::try_parse_from([
            "kunlunctl",
            "backup",
            "restore",
            "7",
            "--name",
            "copy",
            "--nodes",
            "3",
        ])
        .unwrap();
        let Command::Backup(BackupCmd::Restore(a)) = cli.command else {
            panic!()
        };
        assert_eq!(
            (a.id, a.name.as_deref(), a.nodes, a.comps),
            (7, Some("copy"), Some(3), None)
        );
        assert!(Cli::try_parse_from(["kunlunctl", "backup", "restore", "7"]).is_err());
        let cli =
            Cli::try_parse_from(["kunlunctl", "backup", "restore", "7", "--into", "c2"]).unwrap();
        let Command::Backup(BackupCmd::Restore(a)) = cli.command else {
            panic!()
        };
        assert_eq!((a.into.as_deref(), a.name), (Some("c2"), None));
        // A restore over a cluster keeps its instances: no shape, no new name.
        for extra in [["--name", "x"], ["--nodes", "3"]] {
            let mut args = vec!["kunlunctl", "backup", "restore", "7", "--into", "c2"];
            args.extend(extra);
            assert!(Cli::try_parse_from(args).is_err(), "{extra:?}");
        }
    }
}
