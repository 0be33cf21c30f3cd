//! `kunlunctl job list|show|watch` over `/v1/jobs`: what the manager is doing or did, newest
//! first, and each job's steps (the memo's `steps`); `watch` (also behind `cluster create
//! --wait` and `cluster rm --wait`) follows a job to its end with a progress bar on a terminal
//! and plain lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use kunlun_meta::model::{Job, JobStatus};
use serde::Deserialize;

use crate::cli::{JobCmd, JobListArgs};
use crate::client::{CliError, Client};
use crate::output::{self, Table};

/// Executes a `job` command and returns what to print.
pub fn run(client: &Client, cmd: &JobCmd, json: bool) -> Result<String, CliError> {
    match cmd {
        JobCmd::List(args) => {
            let url = client.url("/v1/jobs", &list_query(args))?;
            // `--limit N`: the newest N only; otherwise every page.
            let v = if args.limit.is_some() {
                client.get(url.clone())?
            } else {
                client.get_all(url.clone())?
            };
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
        JobCmd::Watch(a) => {
            let watched = watch(client, a.id, a.timeout);
            if json {
                return json_outcome(watched);
            }
            let job = watched?;
            ended_ok(&job)?;
            Ok(format!("job {} done\n", job.id))
        }
    }
}

/// `job watch` arguments.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Id as shown by `job list`.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Give up watching after this many seconds (the job goes on).
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub timeout: u64,
}

/// One step of a job as its memo records it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Step {
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub ms: Option<u64>,
    #[serde(default)]
    pub note: Option<String>,
}

impl Step {
    fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "done" | "failed" | "skipped")
    }

    /// `done install storage 127.0.0.2:57001 (1.2 s)`, `failed start ... : why`.
    fn line(&self) -> String {
        let mut l = format!("{:<7} {}", self.status, self.name);
        if let Some(ms) = self.ms.filter(|_| self.status != "skipped") {
            l.push_str(&format!(" ({:.1} s)", ms as f64 / 1000.0));
        }
        if let Some(n) = self.note.as_deref().filter(|n| !n.is_empty()) {
            l.push_str(&format!(": {n}"));
        }
        l
    }
}

/// The steps in a job's memo (none for jobs that record no steps).
pub fn steps(job: &Job) -> Vec<Step> {
    job.memo
        .as_ref()
        .and_then(|m| m.get("steps"))
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

fn stage(job: &Job) -> String {
    job.memo
        .as_ref()
        .and_then(|m| m.get("stage"))
        .and_then(|s| s.as_str())
        .unwrap_or(job.status.as_str())
        .to_string()
}

/// `Ok` for a job that ended `done`; otherwise `job_failed` (exit 1) with the recorded reason.
pub fn ended_ok(job: &Job) -> Result<(), CliError> {
    if job.status == JobStatus::Done {
        return Ok(());
    }
    let why = job
        .memo
        .as_ref()
        .and_then(|m| m.get("error"))
        .and_then(|e| e.as_str())
        .unwrap_or("no reason recorded")
        .to_string();
    Err(CliError::Api {
        status: None,
        code: "job_failed".into(),
        message: format!("job {} {}: {why}", job.id, job.status),
    })
}

/// The outcome of a followed job for `--json`: the job (as it ended, or as last seen when the
/// wait timed out) is printed whatever happened, and the exit code is that of the same command
/// without `--json`: 0 done, 1 failed, 3 timeout.
pub fn json_outcome(watched: Result<Job, CliError>) -> Result<String, CliError> {
    let text = |job: &Job| output::json(&serde_json::to_value(job).unwrap_or_default()) + "\n";
    match watched {
        Ok(job) => {
            let out = text(&job);
            match ended_ok(&job) {
                Ok(()) => Ok(out),
                Err(e) => Err(e.with_stdout(out)),
            }
        }
        Err(CliError::JobTimeout { job, secs }) => {
            let out = text(&job);
            Err(CliError::JobTimeout { job, secs }.with_stdout(out))
        }
        Err(e) => Err(e),
    }
}

/// What [`follow`] made of a request that accepted a job.
pub enum Followed {
    /// What to print as it is: the acceptance (no `--wait`), or the ended job as JSON.
    Print(String),
    /// The job, followed to its end and `done`: the caller prints its own summary.
    Done(Job),
}

/// After a request whose answer `v` (from `url`) accepted a `job_type` job: without `wait`,
/// the acceptance (its JSON, or how to follow the job); with `wait`, the job followed to its
/// end within `timeout_secs` ([`watch`]; with `json` printed by [`json_outcome`]; otherwise a
/// job that did not end `done` is an error, [`ended_ok`]). One place for every job command.
pub fn follow(
    client: &Client,
    v: serde_json::Value,
    url: &str,
    job_type: &str,
    (wait, timeout_secs): (bool, u64),
    json: bool,
) -> Result<Followed, CliError> {
    let accepted: kunlun_meta::api::JobAccepted = crate::decode(v.clone(), url)?;
    if !wait {
        return Ok(Followed::Print(if json {
            output::json(&v) + "\n"
        } else {
            format!(
                "{job_type} accepted as job {id}; follow it with `kunlunctl job watch {id}`\n",
                id = accepted.job_id
            )
        }));
    }
    let watched = watch(client, accepted.job_id, timeout_secs);
    if json {
        return json_outcome(watched).map(Followed::Print);
    }
    let job = watched?;
    ended_ok(&job)?;
    Ok(Followed::Done(job))
}

/// Follows job `id` until it ends (polling twice a second) and returns it. On a terminal a
/// progress bar counts finished steps and names the running ones, with a line per finished
/// step above it; otherwise every stage and step change is a plain line on stderr.
pub fn watch(client: &Client, id: i64, timeout_secs: u64) -> Result<Job, CliError> {
    let url = client.url(&format!("/v1/jobs/{id}"), &[])?;
    let start = Instant::now();
    let view = if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
        View::bar()
    } else {
        View::Plain
    };
    let mut seen: Vec<Step> = Vec::new();
    let mut last_stage = String::new();
    loop {
        let job: Job = crate::decode(client.get(url.clone())?, url.as_str())?;
        let now = steps(&job);
        let stage = stage(&job);
        for line in changes(&seen, &now) {
            view.line(&format!("[{:>4}s] {line}", start.elapsed().as_secs()));
        }
        if stage != last_stage {
            view.line(&format!(
                "[{:>4}s] job {id}: {stage}",
                start.elapsed().as_secs()
            ));
            last_stage = stage;
        }
        view.update(&now);
        seen = now;
        if job.status.is_final() {
            view.finish();
            return Ok(job);
        }
        if start.elapsed().as_secs() >= timeout_secs {
            view.finish();
            return Err(CliError::JobTimeout {
                job: Box::new(job),
                secs: timeout_secs,
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Lines for steps that started or finished between two polls.
pub fn changes(before: &[Step], now: &[Step]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, s) in now.iter().enumerate() {
        let old = before.get(i).filter(|b| b.name == s.name);
        let was = old.map(|b| b.status.as_str()).unwrap_or("pending");
        if was == s.status || s.status == "pending" {
            continue;
        }
        if s.status == "running" {
            out.push(format!("running {}", s.name));
        } else if s.is_final() {
            out.push(s.line());
        }
    }
    out
}

enum View {
    Plain,
    Bar(indicatif::ProgressBar),
}

impl View {
    fn bar() -> View {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        View::Bar(bar)
    }

    fn line(&self, l: &str) {
        match self {
            View::Plain => eprintln!("{l}"),
            View::Bar(b) => b.println(l),
        }
    }

    fn update(&self, steps: &[Step]) {
        if let View::Bar(b) = self {
            b.set_length(steps.len() as u64);
            b.set_position(steps.iter().filter(|s| s.is_final()).count() as u64);
            let running: Vec<&str> = steps
                .iter()
                .filter(|s| s.status == "running")
                .map(|s| s.name.as_str())
                .collect();
            b.set_message(match running.as_slice() {
                [] => String::new(),
                [one] => one.to_string(),
                [first, rest @ ..] => format!("{first} (+{} more)", rest.len()),
            });
        }
    }

    fn finish(&self) {
        if let View::Bar(b) = self {
            b.finish_and_clear();
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

/// A job with its request and memo as one-line JSON, then its steps as a table.
pub fn detail(j: &Job) -> String {
    let memo = j.memo.as_ref().map(|m| {
        let mut m = m.clone();
        if let Some(o) = m.as_object_mut() {
            o.remove("steps");
        }
        m
    });
    let mut out = output::key_values(&[
        ("id", j.id.to_string()),
        ("type", j.job_type.clone()),
        ("status", j.status.to_string()),
        ("user", output::opt(j.user_name.as_deref())),
        ("related", output::opt(j.related_id.as_deref())),
        ("started", output::time(j.when_started)),
        ("ended", output::time(j.when_ended)),
        ("request", output::compact_json(j.job_info.as_ref())),
        ("memo", output::compact_json(memo.as_ref())),
    ]);
    let steps = steps(j);
    if !steps.is_empty() {
        let finished = steps.iter().filter(|s| s.is_final()).count();
        out.push_str(&format!("\nsteps ({finished}/{} finished)\n", steps.len()));
        out.push_str(&output::steps_table(steps.iter().map(|s| {
            (s.name.as_str(), s.status.as_str(), s.ms, s.note.as_deref())
        })));
    }
    out
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

    fn step(name: &str, status: &str, ms: Option<u64>, note: Option<&str>) -> Step {
        Step {
            name: name.into(),
            status: status.into(),
            ms,
            note: note.map(Into::into),
        }
    }

    #[test]
    fn show_lists_the_steps_and_keeps_them_out_of_the_memo_line() {
        let j = Job {
            id: 7,
            job_type: "create_cluster".into(),
            status: JobStatus::Failed,
            job_info: None,
            memo: Some(serde_json::json!({
                "stage": "rolled_back",
                "error": "port 57001 in use",
                "steps": [
                    {"name": "plan", "status": "done", "ms": 3},
                    {"name": "install storage 127.0.0.2:57001", "status": "failed", "ms": 1500,
                     "note": "start: port in use"},
                    {"name": "replication shard_1", "status": "skipped", "note": "an earlier step failed"}
                ]
            })),
            user_name: None,
            related_id: None,
            when_started: None,
            when_ended: None,
        };
        let d = detail(&j);
        assert!(d.contains("steps (3/3 finished)"), "{d}");
        assert!(d.contains("install storage 127.0.0.2:57001  failed"), "{d}");
        assert!(d.contains("start: port in use"), "{d}");
        let memo_line = d.lines().find(|l| l.starts_with("memo:")).unwrap();
        assert!(!memo_line.contains("steps"), "{memo_line}");
        assert!(ended_ok(&j)
            .unwrap_err()
            .to_string()
            .contains("port 57001 in use"));
    }

    #[test]
    fn changes_report_started_and_finished_steps_once() {
        let before = vec![
            step("plan", "done", Some(2), None),
            step("a", "pending", None, None),
        ];
        let now = vec![
            step("plan", "done", Some(2), None),
            step("a", "running", None, Some("initialise")),
            step("b", "failed", Some(1200), Some("exit 1")),
        ];
        assert_eq!(
            changes(&before, &now),
            vec![
                "running a".to_string(),
                "failed  b (1.2 s): exit 1".to_string()
            ]
        );
        assert!(changes(&now, &now).is_empty());
    }

    fn job(status: JobStatus, memo: Option<serde_json::Value>) -> Job {
        Job {
            id: 9,
            job_type: "add_nodes".into(),
            status,
            job_info: None,
            memo,
            user_name: None,
            related_id: None,
            when_started: None,
            when_ended: None,
        }
    }

    #[test]
    fn json_outcome_prints_the_job_and_exits_like_watch() {
        let out = json_outcome(Ok(job(JobStatus::Done, None))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["status"], "done");

        let failed = job(
            JobStatus::Failed,
            Some(serde_json::json!({"error": "no capacity"})),
        );
        let e = json_outcome(Ok(failed)).unwrap_err();
        assert_eq!(e.exit_code(), crate::client::EXIT_API);
        assert_eq!(e.code(), Some("job_failed"));
        assert!(e.to_string().contains("no capacity"), "{e}");
        let (stdout, e) = e.into_parts();
        let v: serde_json::Value = serde_json::from_str(&stdout.unwrap()).unwrap();
        assert_eq!(
            (v["id"].as_i64(), v["status"].as_str()),
            (Some(9), Some("failed"))
        );
        assert!(matches!(e, CliError::Api { .. }), "{e:?}");

        let timeout = CliError::JobTimeout {
            job: Box::new(job(JobStatus::Ongoing, None)),
            secs: 5,
        };
        let e = json_outcome(Err(timeout)).unwrap_err();
        assert_eq!(e.exit_code(), crate::client::EXIT_UNREACHABLE);
        assert!(
            e.to_string().contains("job 9 is still ongoing after 5 s"),
            "{e}"
        );
        let (stdout, _) = e.into_parts();
        assert!(stdout.unwrap().contains("\"ongoing\""));

        // Failures before the job could be followed print nothing on stdout.
        let unreachable = CliError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            detail: "refused".into(),
        };
        let (stdout, e) = json_outcome(Err(unreachable)).unwrap_err().into_parts();
        assert!(stdout.is_none());
        assert_eq!(e.exit_code(), crate::client::EXIT_UNREACHABLE);
    }

    #[test]
    fn watch_parses_its_flags() {
        let cli =
            Cli::try_parse_from(["kunlunctl", "job", "watch", "5", "--timeout", "9"]).unwrap();
        let Command::Job(JobCmd::Watch(a)) = cli.command else {
            panic!()
        };
        assert_eq!((a.id, a.timeout), (5, 9));
        assert!(Cli::try_parse_from(["kunlunctl", "job", "watch"]).is_err());
    }
}
