//! `kunlunctl job list|show` over `/v1/jobs`: what the manager is doing or did, newest first.

use kunlun_meta::model::Job;

use crate::cli::{JobCmd, JobListArgs};
use crate::client::{CliError, Client};
use crate::output::{self, Table};

/// Executes a `job` command and returns what to print.
pub fn run(client: &Client, cmd: &JobCmd, json: bool) -> Result<String, CliError> {
    match cmd {
        JobCmd::List(args) => {
            let url = client.url("/v1/jobs", &list_query(args))?;
            let v = client.get(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let jobs: Vec<Job> = crate::decode(v, url.as_str())?;
            if jobs.is_empty() {
                return Ok("no jobs\n".into());
            }
            Ok(table(&jobs))
        }
        JobCmd::Show(id) => {
            let url = client.url(&format!("/v1/jobs/{}", id.id), &[])?;
            let v = client.get(url.clone())?;
            if json {
                return Ok(output::json(&v) + "\n");
            }
            let job: Job = crate::decode(v, url.as_str())?;
            Ok(detail(&job))
        }
    }
}

/// The query of `GET /v1/jobs` (`kunlun_meta::api::JobQuery` field names).
pub fn list_query(a: &JobListArgs) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("status", a.status.map(|s| s.as_str().to_string())),
        ("job_type", a.job_type.clone()),
        ("limit", a.limit.map(|l| l.to_string())),
    ]
}

/// One line per job.
pub fn table(jobs: &[Job]) -> String {
    let mut t = Table::new(&[
        "ID", "TYPE", "STATUS", "USER", "RELATED", "STARTED", "ENDED",
    ]);
    for j in jobs {
        t.row(vec![
            j.id.to_string(),
            j.job_type.clone(),
            j.status.to_string(),
            output::opt(j.user_name.as_deref()),
            output::opt(j.related_id.as_deref()),
            output::time(j.when_started),
            output::time(j.when_ended),
        ]);
    }
    t.render()
}

/// A job with its request and progress memo as one-line JSON.
pub fn detail(j: &Job) -> String {
    output::key_values(&[
        ("id", j.id.to_string()),
        ("type", j.job_type.clone()),
        ("status", j.status.to_string()),
        ("user", output::opt(j.user_name.as_deref())),
        ("related", output::opt(j.related_id.as_deref())),
        ("started", output::time(j.when_started)),
        ("ended", output::time(j.when_ended)),
        ("request", output::compact_json(j.job_info.as_ref())),
        ("memo", output::compact_json(j.memo.as_ref())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use kunlun_meta::model::JobStatus;

    #[test]
    fn list_flags_map_to_the_query() {
        let cli = Cli::try_parse_from([
            "kunlunctl",
            "job",
            "list",
            "--status",
            "ongoing",
            "--type",
            "create_cluster",
            "--limit",
            "5",
        ])
        .unwrap();
        let Command::Job(JobCmd::List(a)) = cli.command else {
            panic!()
        };
        let q = list_query(&a);
        assert_eq!(
            q,
            vec![
                ("status", Some("ongoing".into())),
                ("job_type", Some("create_cluster".into())),
                ("limit", Some("5".into()))
            ]
        );
        let cli = Cli::try_parse_from(["kunlunctl", "job", "list"]).unwrap();
        let Command::Job(JobCmd::List(a)) = cli.command else {
            panic!()
        };
        assert!(list_query(&a).iter().all(|(_, v)| v.is_none()));
    }

    #[test]
    fn show_renders_the_request_without_secrets() {
        let j = Job {
            id: 4,
            job_type: "create_cluster".into(),
            status: JobStatus::Ongoing,
            job_info: Some(serde_json::json!({"name": "c1", "passwd": "s3cret"})),
            memo: None,
            user_name: Some("admin".into()),
            related_id: None,
            when_started: None,
            when_ended: None,
        };
        let d = detail(&j);
        assert!(d.contains("status:  ongoing"), "{d}");
        assert!(d.contains(r#"{"name":"c1"}"#), "{d}");
        assert!(!d.contains("s3cret"));
        assert!(table(&[j]).contains("create_cluster"));
    }
}
