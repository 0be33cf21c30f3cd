//! `kunlunctl backup schedule CLUSTER [--storage S --window W [--keep-count N] [--keep-days D]
//! [--disabled] | --off]` over `/v1/clusters/{id}/backup_schedule`: without a flag it shows
//! the cluster's schedule; with `--storage` and `--window` it sets it (replacing any earlier
//! one) and shows it; `--off` removes it (its backups stay).

use kunlun_meta::api::SetBackupSchedule;
use kunlun_meta::model::BackupSchedule;

use crate::client::{CliError, Client};
use crate::output;

/// `backup schedule` arguments.
#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// The cluster: its id or its name.
    #[arg(value_name = "CLUSTER")]
    pub cluster: String,
    /// The backup storage's name (`backup-storage list`).
    #[arg(long, value_name = "NAME", requires = "window", conflicts_with = "off")]
    pub storage: Option<String>,
    /// The daily window in UTC, HH:MM:SS-HH:MM:SS (may cross midnight: 23:00:00-01:00:00).
    #[arg(
        long,
        value_name = "WINDOW",
        requires = "storage",
        conflicts_with = "off"
    )]
    pub window: Option<String>,
    /// Keep the newest N done backups (default: no limit).
    #[arg(long, value_name = "N", requires = "storage")]
    pub keep_count: Option<u32>,
    /// Remove backups older than D days (default: no limit).
    #[arg(long, value_name = "D", requires = "storage")]
    pub keep_days: Option<u32>,
    /// Store the schedule disabled: nothing is taken nor removed until it is set again.
    #[arg(long, requires = "storage")]
    pub disabled: bool,
    /// Remove the schedule (the backups stay).
    #[arg(long)]
    pub off: bool,
}

/// Shows, sets or removes a cluster's backup schedule.
pub fn run(client: &Client, a: &ScheduleArgs, json: bool) -> Result<String, CliError> {
    let id = super::backup::cluster_id(client, &a.cluster)?;
    let url = client.url(&format!("/v1/clusters/{id}/backup_schedule"), &[])?;
    if a.off {
        client.delete(url)?;
        return Ok(if json {
            "{}\n".into()
        } else {
            format!("backup schedule of cluster {id} removed (its backups stay)\n")
        });
    }
    let v = match (&a.storage, &a.window) {
        (Some(storage), Some(window)) => {
            let req = SetBackupSchedule {
                storage: storage.clone(),
                window: window.clone(),
                keep_count: a.keep_count,
                keep_days: a.keep_days,
                enabled: Some(!a.disabled),
            };
            client.put(url.clone(), &req)?
        }
        _ => client.get(url.clone())?,
    };
    if json {
        return Ok(output::json(&v) + "\n");
    }
    let s: BackupSchedule = crate::decode(v, url.as_str())?;
    let limit = |n: Option<u32>| n.map_or_else(|| "no limit".to_string(), |n| n.to_string());
    Ok(output::key_values(&[
        ("cluster", s.cluster_id.to_string()),
        ("storage", format!("{} ({})", s.storage, s.storage_id)),
        ("window (UTC)", s.window),
        ("keep_count", limit(s.keep_count)),
        ("keep_days", limit(s.keep_days)),
        ("enabled", if s.enabled { "yes" } else { "no" }.to_string()),
        ("updated", output::time(Some(s.updated_at))),
    ]))
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    use super::super::backup::BackupCmd;

    fn parse(args: &[&str]) -> Result<super::ScheduleArgs, clap::Error> {
        let mut all = vec!["kunlunctl", "backup", "schedule"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Command::Backup(BackupCmd::Schedule(a)) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn schedule_shows_sets_or_removes() {
        let a = parse(&["c1"]).unwrap();
        assert!(a.storage.is_none() && !a.off);
        let a = parse(&[
            "c1",
            "--storage",
            "s1",
            "--window",
            "01:00:00-02:00:00",
            "--keep-count",
            "3",
        ])
        .unwrap();
        assert_eq!(
            (
                a.storage.as_deref(),
                a.window.as_deref(),
                a.keep_count,
                a.keep_days
            ),
            (Some("s1"), Some("01:00:00-02:00:00"), Some(3), None)
        );
        assert!(parse(&["c1", "--off"]).unwrap().off);
        // A storage without a window, a retention without a storage, setting and removing.
        assert!(parse(&["c1", "--storage", "s1"]).is_err());
        assert!(parse(&["c1", "--keep-days", "3"]).is_err());
        assert!(parse(&[
            "c1",
            "--off",
            "--storage",
            "s1",
            "--window",
            "01:00:00-02:00:00"
        ])
        .is_err());
        assert!(parse(&[
            "c1",
            "--storage",
            "s1",
            "--window",
            "w",
            "--keep-count",
            "-1"
        ])
        .is_err());
    }
}
