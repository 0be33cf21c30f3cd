//! The job runner: an actor that claims `not_started` jobs of the kinds registered in it
//! ([`JOB_TYPES`], each run by [`drive`]) and runs up
//! to [`DEFAULT_MAX_JOBS`] of them at once, each on its own task; at start it first deals,
//! one by one, with jobs left `ongoing` by a manager that died mid-job.
//!
//! Invariants:
//! - a job is run only after its row moved to `ongoing` by this runner's claim
//!   (compare-and-swap), so two managers never run the same job;
//! - two jobs of the same cluster (same `job_info.name`) never run at once: accepting refuses
//!   the second with 409, and the runner leaves a job `not_started` while another job of its
//!   cluster runs (two requests accepted at the same instant both pass the accept check);
//! - jobs that reserve ports ([`reserves`]: the adding kinds) plan one at a time: the next job is claimed only
//!   once the previous one's reservation committed (its memo holds its `plan`) or it ended, so
//!   two plans are never made from the same machines snapshot (the reservation's
//!   compare-and-swap would refuse the second and fail that job); installs then overlap;
//! - a job's own failure, or a panic of its task, ends the job `failed`; it never stops the
//!   runner. Shutdown aborts and joins every job task; a job left `ongoing` is recovered at the
//!   next start.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_meta::model::{Job, JobStatus};
use kunlun_meta::store::repo::jobs;
use kunlun_meta::store::Store;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::driver::{drive, stage_of, Direction, JobKind, Stage};
use super::kinds::restore_cluster::into as restore_into;
use super::kinds::verify_backup;
use super::kinds::{
    backup_cluster, rebuild_node, AddCompsJob, AddNodesJob, AddShardsJob, CreateClusterJob,
    DeleteClusterJob, DeleteCompJob, DeleteNodeJob, DeleteShardJob, RestoreClusterJob,
};
#[cfg(test)]
use super::kinds::{ADD_COMPS, CREATE_CLUSTER, DELETE_CLUSTER, DELETE_COMP, DELETE_SHARD};
use super::progress::COALESCE;
use crate::error::Result;
use crate::fleet::Provisioner;

/// One registered job kind: its `job_type`, whether it reserves ports, and how to run it.
#[derive(Clone, Copy)]
struct Registered {
    job_type: &'static str,
    reserves: bool,
    run: fn(JobRunner, Job) -> JobFuture,
}

fn run_kind<K: JobKind>(r: JobRunner, job: Job) -> JobFuture {
    Box::pin(async move { drive::<K>(&r.store, &r.provisioner, &job).await })
}

const fn register<K: JobKind>() -> Registered {
    Registered {
        job_type: K::TYPE,
        reserves: matches!(K::DIRECTION, Direction::Add),
        run: run_kind::<K>,
    }
}

fn run_rebuild(r: JobRunner, job: Job) -> JobFuture {
    Box::pin(async move { rebuild_node::run(&r.store, &r.provisioner, &job).await })
}

fn run_backup(r: JobRunner, job: Job) -> JobFuture {
    Box::pin(async move { backup_cluster::run(&r.store, &r.provisioner, &job).await })
}

fn run_restore_into(r: JobRunner, job: Job) -> JobFuture {
    Box::pin(async move { restore_into::run(&r.store, &r.provisioner, &job).await })
}

fn run_verify(r: JobRunner, job: Job) -> JobFuture {
    Box::pin(async move { verify_backup::run(&r.store, &r.provisioner, &job).await })
}

/// The job kinds this runner executes.
const REGISTRY: [Registered; 13] = [
    register::<CreateClusterJob>(),
    register::<RestoreClusterJob>(),
    register::<DeleteClusterJob>(),
    register::<AddShardsJob>(),
    register::<DeleteShardJob>(),
    register::<AddNodesJob>(),
    register::<DeleteNodeJob>(),
    register::<AddCompsJob>(),
    register::<DeleteCompJob>(),
    // Its own run function (no plan, no ports): see `kinds::rebuild_node`.
    Registered {
        job_type: rebuild_node::REBUILD_NODE,
        reserves: false,
        run: run_rebuild,
    },
    // Its own run function too (reads only): see `kinds::backup_cluster`.
    Registered {
        job_type: backup_cluster::BACKUP_CLUSTER,
        reserves: false,
        run: run_backup,
    },
    // Restores over an existing cluster's instances (no plan, no ports): see
    // `kinds::restore_cluster::into`.
    Registered {
        job_type: restore_into::RESTORE_INTO_CLUSTER,
        reserves: false,
        run: run_restore_into,
    },
    // Reads a backup and runs a scratch server: see `kinds::verify_backup`.
    Registered {
        job_type: verify_backup::VERIFY_BACKUP,
        reserves: false,
        run: run_verify,
    },
];

const fn job_types<const N: usize>(r: [Registered; N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = r[i].job_type;
        i += 1;
    }
    out
}

/// Job types this runner executes (from the registry).
pub const JOB_TYPES: &[&str] = &job_types(REGISTRY);

fn registered(job_type: &str) -> Option<&'static Registered> {
    REGISTRY.iter().find(|r| r.job_type == job_type)
}

/// Whether jobs of `job_type` plan from a machines snapshot and reserve ports (adding kinds);
/// they plan one at a time.
pub fn reserves(job_type: &str) -> bool {
    registered(job_type).is_some_and(|r| r.reserves)
}

/// Jobs [`JobRunner::run_forever`] runs at once. Each install holds one SSH session per
/// instance and the machines' CPUs; 4 lets a long `create_cluster` leave room for deletes and
/// small scale jobs of other clusters without flooding the machines.
pub const DEFAULT_MAX_JOBS: usize = 4;

/// How often the runner looks whether a planning job has reserved its ports.
const PLAN_POLL: Duration = Duration::from_millis(50);
/// Longest wait for a job to reserve before the next one is claimed anyway (the worst that
/// can happen then is that one of them fails its reservation with a clear conflict).
const PLAN_WAIT: Duration = Duration::from_secs(20);

/// Runs provisioning jobs.
#[derive(Clone)]
pub struct JobRunner {
    pub store: Store,
    pub provisioner: Provisioner,
    /// How often to look for new jobs when idle.
    pub poll_interval: Duration,
    /// The clusters whose jobs this runner claims and resumes (`clusters_to_serve`; see
    /// [`served`]).
    pub clusters: crate::ClusterScope,
}

/// Whether a runner limited to `scope` takes `job`: a job on a cluster (`job_info.cluster_id`)
/// when it serves that cluster; a job naming no existing cluster (`create_cluster`) only when
/// it serves every cluster, since the cluster it makes is in no list yet.
pub fn served(scope: &crate::ClusterScope, job: &Job) -> bool {
    match job
        .job_info
        .as_ref()
        .and_then(|i| i.get("cluster_id"))
        .and_then(Value::as_i64)
    {
        Some(id) => scope.serves(id),
        None => scope.serves_all(),
    }
}

type JobFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;
/// What runs one claimed job (the real dispatch, or a stand-in in unit tests).
type Exec = Arc<dyn Fn(JobRunner, Job) -> JobFuture + Send + Sync>;

/// A task of the runner's pool.
#[derive(Debug, Clone)]
struct Running {
    job_id: i64,
    job_type: String,
    /// The cluster the job changes (`job_info.name`), if it names one.
    cluster: Option<String>,
    /// This task only ends a job whose task panicked.
    cleanup: bool,
}

/// A reserving job whose reservation has not been seen yet.
struct Planning {
    job_id: i64,
    task: Id,
    since: Instant,
}

/// The cluster `job` changes.
fn cluster_of(job: &Job) -> Option<String> {
    job.job_info
        .as_ref()
        .and_then(|i| i.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A job's row shows it past planning: ended, or its memo's stage says the plan and its
/// reservation are stored.
fn past_planning(job: &Job) -> bool {
    job.status != JobStatus::Ongoing || stage_of(job.memo.as_ref()) >= Stage::Planned
}

fn panic_message(e: JoinError) -> String {
    let p = e.into_panic();
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The memo of a job that ended with an error its run could not record (or whose task
/// panicked): its memo so far (a plan in it names what may be left on the machines) with
/// stage `failed` and the reason.
fn failed_memo(memo: Option<Value>, why: String) -> Value {
    let mut m = match memo {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let mut why = why;
    if m.get("plan").is_some_and(|p| !p.is_null()) {
        why.push_str("; instances of its plan may remain and their ports stay reserved");
    }
    m.insert("stage".into(), "failed".into());
    m.insert("error".into(), why.into());
    Value::Object(m)
}

impl JobRunner {
    async fn run(&self, job: &Job) -> Result<()> {
        let r = match registered(&job.job_type) {
            Some(k) => (k.run)(self.clone(), job.clone()).await,
            None => Err(crate::Error::Invalid(format!(
                "unknown job type {}",
                job.job_type
            ))),
        };
        if let Err(e) = &r {
            tracing::error!(job_id = job.id, error = %e, "job failed");
            // The memo as stored now (the run may have moved it on), else as claimed.
            let stored = match self.store.get_job(job.id).await {
                Ok(j) => j.memo,
                Err(_) => job.memo.clone(),
            };
            let memo = failed_memo(stored, e.to_string());
            self.store
                .update_job(job.id, JobStatus::Failed, Some(&memo))
                .await?;
        }
        Ok(())
    }

    /// Rolls back (or finishes) every job of our types left `ongoing`, one by one; returns how
    /// many. A job that could not be dealt with (the store failed) is logged and the others
    /// are still tried; the error then names the ones left, which stay `ongoing` for the next
    /// try.
    pub async fn recover(&self) -> Result<usize> {
        let ongoing = self
            .store
            .read(async |tx| jobs::list_by_status(tx, JobStatus::Ongoing).await)
            .await?;
        let mut n = 0;
        let mut left = Vec::new();
        for job in ongoing
            .iter()
            .filter(|j| JOB_TYPES.contains(&j.job_type.as_str()) && served(&self.clusters, j))
        {
            tracing::warn!(job_id = job.id, job_type = %job.job_type, "resuming an interrupted job");
            match self.run(job).await {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::error!(job_id = job.id, error = %e, "recovering an interrupted job failed");
                    left.push(format!("job {}: {e}", job.id));
                }
            }
        }
        if left.is_empty() {
            Ok(n)
        } else {
            Err(crate::Error::Unavailable(format!(
                "interrupted jobs not recovered: {}",
                left.join("; ")
            )))
        }
    }

    /// Claims one job and runs it to its end in this task; false when there was none.
    pub async fn run_once(&self) -> Result<bool> {
        let next = if self.clusters.serves_all() {
            self.store.claim_next_job(JOB_TYPES).await?
        } else {
            self.claim_free(&HashSet::new()).await?
        };
        let Some(job) = next else {
            return Ok(false);
        };
        tracing::info!(job_id = job.id, job_type = %job.job_type, "job claimed");
        self.run(&job).await?;
        Ok(true)
    }

    /// Claims the oldest `not_started` job of our types whose cluster is not in `busy`.
    async fn claim_free(&self, busy: &HashSet<String>) -> Result<Option<Job>> {
        let waiting = self
            .store
            .read(async |tx| jobs::list_by_status(tx, JobStatus::NotStarted).await)
            .await?;
        for j in waiting
            .iter()
            .filter(|j| JOB_TYPES.contains(&j.job_type.as_str()) && served(&self.clusters, j))
        {
            if cluster_of(j).is_some_and(|c| busy.contains(&c)) {
                continue;
            }
            let id = j.id;
            let claimed = self
                .store
                .autocommit(async |tx| {
                    if jobs::claim(tx, id).await? {
                        jobs::get(tx, id).await.map(Some)
                    } else {
                        Ok(None)
                    }
                })
                .await?;
            if claimed.is_some() {
                return Ok(claimed);
            }
        }
        Ok(None)
    }

    /// Ends job `job_id`, whose task panicked, `failed`, keeping its memo. Its progress
    /// flusher may have had a write in flight when the task died, which would set the job
    /// `ongoing` again: the status is read back after two flush periods and written again if
    /// so.
    async fn end_panicked(&self, job_id: i64, msg: &str) {
        for _ in 0..5 {
            match self.store.get_job(job_id).await {
                Ok(job) if job.status != JobStatus::Ongoing => return,
                Ok(job) => {
                    let memo = failed_memo(job.memo, format!("the job's task panicked: {msg}"));
                    if let Err(e) = self
                        .store
                        .update_job(job_id, JobStatus::Failed, Some(&memo))
                        .await
                    {
                        tracing::warn!(job_id, error = %e, "cannot end a panicked job; retrying");
                    }
                }
                Err(e) => {
                    tracing::warn!(job_id, error = %e, "cannot read a panicked job; retrying")
                }
            }
            tokio::time::sleep(2 * COALESCE).await;
        }
        tracing::error!(
            job_id,
            "a panicked job could not be ended; it is recovered at the next start"
        );
    }

    /// The actor loop: recover (retried every `poll_interval` until it succeeds, so a store
    /// briefly down at start-up does not leave interrupted jobs behind), then claim and run
    /// up to [`DEFAULT_MAX_JOBS`] jobs at once until `cancel`.
    pub async fn run_forever(self, cancel: CancellationToken) {
        self.run_forever_woken(cancel, Arc::new(Notify::new()))
            .await
    }

    /// [`Self::run_forever`], also woken by `wake` (a job was just accepted), so a new job
    /// starts at once instead of at the next poll.
    pub async fn run_forever_woken(self, cancel: CancellationToken, wake: Arc<Notify>) {
        self.run_forever_with(cancel, wake, DEFAULT_MAX_JOBS).await
    }

    /// [`Self::run_forever_woken`] running up to `max_jobs` jobs at once (at least 1).
    pub async fn run_forever_with(
        self,
        cancel: CancellationToken,
        wake: Arc<Notify>,
        max_jobs: usize,
    ) {
        let exec: Exec = Arc::new(|r: JobRunner, job: Job| -> JobFuture {
            Box::pin(async move { r.run(&job).await })
        });
        self.serve(cancel, wake, max_jobs, exec).await
    }

    async fn serve(
        self,
        cancel: CancellationToken,
        wake: Arc<Notify>,
        max_jobs: usize,
        exec: Exec,
    ) {
        loop {
            let r = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.recover() => r,
            };
            match r {
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "recovering interrupted jobs failed; retrying")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        let max_jobs = max_jobs.max(1);
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut running: HashMap<Id, Running> = HashMap::new();
        let mut planning: Option<Planning> = None;
        loop {
            if let Some(p) = &planning {
                if self.planned(p, &running).await {
                    planning = None;
                }
            }
            while planning.is_none() && running.len() < max_jobs {
                let busy: HashSet<String> =
                    running.values().filter_map(|r| r.cluster.clone()).collect();
                let job = match self.claim_free(&busy).await {
                    Ok(Some(job)) => job,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "job runner: store unavailable");
                        break;
                    }
                };
                tracing::info!(job_id = job.id, job_type = %job.job_type, running = running.len(), "job claimed");
                let entry = Running {
                    job_id: job.id,
                    job_type: job.job_type.clone(),
                    cluster: cluster_of(&job),
                    cleanup: false,
                };
                let (job_id, run) = (job.id, exec(self.clone(), job));
                let task = tasks
                    .spawn(async move {
                        // `run` failed to record the job's failure: the store is down. The
                        // job stays `ongoing` and is recovered at the next start.
                        if let Err(e) = run.await {
                            tracing::error!(job_id, error = %e, "job could not be ended");
                        }
                    })
                    .id();
                if reserves(&entry.job_type) {
                    planning = Some(Planning {
                        job_id: entry.job_id,
                        task,
                        since: Instant::now(),
                    });
                }
                running.insert(task, entry);
            }
            let room = planning.is_none() && running.len() < max_jobs;
            let tick = if planning.is_some() {
                PLAN_POLL
            } else {
                self.poll_interval
            };
            tokio::select! {
                _ = cancel.cancelled() => {
                    // Aborts every job task and waits for them; their jobs stay `ongoing`.
                    tasks.shutdown().await;
                    return;
                }
                Some(r) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    self.reap(r, &mut tasks, &mut running);
                }
                _ = wake.notified(), if room => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// The planning job `p` has reserved (or ended, or took longer than [`PLAN_WAIT`]).
    async fn planned(&self, p: &Planning, running: &HashMap<Id, Running>) -> bool {
        if !running.contains_key(&p.task) {
            return true;
        }
        if p.since.elapsed() > PLAN_WAIT {
            tracing::warn!(
                job_id = p.job_id,
                "job still planning; claiming the next one"
            );
            return true;
        }
        match self.store.get_job(p.job_id).await {
            Ok(job) => past_planning(&job),
            Err(_) => false,
        }
    }

    /// Takes a finished task out of `running`; a job task that panicked gets a task that
    /// ends its job `failed` (its cluster stays busy until then).
    fn reap(
        &self,
        r: std::result::Result<(Id, ()), JoinError>,
        tasks: &mut JoinSet<()>,
        running: &mut HashMap<Id, Running>,
    ) {
        let e = match r {
            Ok((id, ())) => {
                running.remove(&id);
                return;
            }
            Err(e) => e,
        };
        let Some(entry) = running.remove(&e.id()) else {
            return;
        };
        if !e.is_panic() {
            return;
        }
        let msg = panic_message(e);
        if entry.cleanup {
            tracing::error!(job_id = entry.job_id, panic = %msg, "ending a panicked job panicked; it is recovered at the next start");
            return;
        }
        tracing::error!(job_id = entry.job_id, job_type = %entry.job_type, panic = %msg, "job task panicked");
        let me = self.clone();
        let job_id = entry.job_id;
        let task = tasks
            .spawn(async move { me.end_panicked(job_id, &msg).await })
            .id();
        running.insert(
            task,
            Running {
                cleanup: true,
                ..entry
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::model::NewJob;
    use kunlun_meta::StoreConfig;
    use kunlun_provision::recipe::{MariaDbRecipe, PostgresRecipe};
    use kunlun_provision::{HostKeyPolicy, SshExecutor};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A runner over a fresh SQLite store in its own temp dir (removed on drop).
    struct Rig {
        runner: JobRunner,
        dir: std::path::PathBuf,
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn rig(tag: &str) -> Rig {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kl_runner_{tag}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = Store::open(&StoreConfig::sqlite(dir.join("meta.db")))
            .await
            .expect("store");
        let runner = JobRunner {
            store,
            provisioner: Provisioner {
                ssh: SshExecutor::default(),
                storage: Arc::new(MariaDbRecipe::default()),
                compute: Arc::new(PostgresRecipe::default()),
                known_hosts: dir.join("known_hosts"),
                host_key_policy: HostKeyPolicy::Strict,
                keys_dir: None,
            },
            poll_interval: Duration::from_millis(50),
            clusters: crate::ClusterScope::all(),
        };
        Rig { runner, dir }
    }

    /// The runner of `rig` serving with `exec` for up to `max_jobs` at once, until cancelled.
    fn serving(
        rig: &Rig,
        max_jobs: usize,
        exec: Exec,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(rig.runner.clone().serve(
            cancel.clone(),
            Arc::new(Notify::new()),
            max_jobs,
            exec,
        ));
        (cancel, task)
    }

    async fn job(store: &Store, job_type: &str, cluster: &str) -> i64 {
        store
            .create_job(&NewJob {
                job_type: job_type.into(),
                job_info: json!({ "name": cluster }),
                user_name: None,
            })
            .await
            .expect("job")
            .id
    }

    /// When each job's stand-in ran: (job id, start, end).
    type Spans = Arc<Mutex<Vec<(i64, Instant, Instant)>>>;

    /// A stand-in that runs `hold`, ends the job `done` and records its span.
    fn timed(spans: Spans, hold: Duration) -> Exec {
        Arc::new(move |r: JobRunner, job: Job| -> JobFuture {
            let spans = spans.clone();
            Box::pin(async move {
                let start = Instant::now();
                tokio::time::sleep(hold).await;
                // Recorded before the job is marked done: a test that waits for `Done` and
                // then shuts the runner down (which aborts running jobs) finds the span.
                spans
                    .lock()
                    .expect("spans")
                    .push((job.id, start, Instant::now()));
                r.store.update_job(job.id, JobStatus::Done, None).await?;
                Ok(())
            })
        })
    }

    async fn wait_status(store: &Store, id: i64, want: JobStatus) -> Job {
        let t = Instant::now();
        loop {
            let j = store.get_job(id).await.expect("job");
            if j.status == want {
                return j;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "job {id} is {:?}, not {want:?}: {:?}",
                j.status,
                j.memo
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn span(spans: &Spans, id: i64) -> (Instant, Instant) {
        let s = spans.lock().expect("spans");
        let (_, a, b) = s.iter().find(|(j, _, _)| *j == id).expect("job ran");
        (*a, *b)
    }

    fn job_with(info: Value) -> Job {
        Job {
            id: 1,
            job_type: DELETE_CLUSTER.into(),
            job_info: Some(info),
            status: JobStatus::NotStarted,
            memo: None,
            user_name: None,
            related_id: None,
            when_started: None,
            when_ended: None,
        }
    }

    #[test]
    fn a_limited_runner_takes_only_its_clusters_jobs() {
        let one = crate::ClusterScope::only(&[1]).expect("scope");
        let all = crate::ClusterScope::all();
        let on = |id: i64| job_with(json!({"cluster_id": id, "name": "x"}));
        let create = job_with(json!({"name": "new"}));
        assert!(served(&one, &on(1)) && !served(&one, &on(2)));
        assert!(!served(&one, &create), "a new cluster is in no list yet");
        assert!(served(&all, &on(2)) && served(&all, &create));
    }

    /// A runner limited to cluster 1 claims and resumes only cluster 1's jobs: cluster 2's
    /// (older) and a create (no cluster yet) are left for a manager serving them.
    #[tokio::test]
    async fn a_runner_limited_to_one_cluster_leaves_other_clusters_jobs_alone() {
        let mut rig = rig("scope").await;
        rig.runner.clusters = crate::ClusterScope::only(&[1]).expect("scope");
        let store = rig.runner.store.clone();
        let mk = async |job_type: &str, info: Value| {
            store
                .create_job(&NewJob {
                    job_type: job_type.into(),
                    job_info: info,
                    user_name: None,
                })
                .await
                .expect("job")
                .id
        };
        let other = mk(DELETE_CLUSTER, json!({"cluster_id": 2, "name": "b"})).await;
        let create = mk(CREATE_CLUSTER, json!({"name": "c"})).await;
        let mine = mk(DELETE_CLUSTER, json!({"cluster_id": 1, "name": "a"})).await;

        assert!(rig.runner.run_once().await.expect("run"), "claimed its own");
        assert!(store.get_job(mine).await.expect("job").status.is_final());
        assert!(
            !rig.runner.run_once().await.expect("run"),
            "nothing else it may claim"
        );
        for id in [other, create] {
            assert_eq!(
                store.get_job(id).await.expect("job").status,
                JobStatus::NotStarted
            );
        }
        // Found ongoing at start-up (another manager's, interrupted): not resumed here.
        store
            .update_job(other, JobStatus::Ongoing, None)
            .await
            .expect("ongoing");
        assert_eq!(rig.runner.recover().await.expect("recover"), 0);
        assert_eq!(
            store.get_job(other).await.expect("job").status,
            JobStatus::Ongoing
        );
    }

    #[tokio::test]
    async fn jobs_of_other_clusters_overlap_and_of_one_cluster_follow_each_other() {
        let rig = rig("overlap").await;
        let store = rig.runner.store.clone();
        let a1 = job(&store, DELETE_CLUSTER, "a").await;
        let b = job(&store, DELETE_CLUSTER, "b").await;
        // Accepted at the same instant as a1 (both passed the accept check).
        let a2 = job(&store, DELETE_SHARD, "a").await;
        let c = job(&store, DELETE_COMP, "c").await;
        let spans: Spans = Default::default();
        let (cancel, runner) = serving(&rig, 2, timed(spans.clone(), Duration::from_millis(400)));
        for id in [a1, b, a2, c] {
            wait_status(&store, id, JobStatus::Done).await;
        }
        cancel.cancel();
        runner.await.expect("runner ends");

        let (a1s, a1e) = span(&spans, a1);
        let (bs, be) = span(&spans, b);
        let (a2s, _) = span(&spans, a2);
        let (cs, _) = span(&spans, c);
        assert!(bs < a1e && a1s < be, "a1 and b ran at the same time");
        assert!(a2s >= a1e, "a2 waited for a1 of the same cluster");
        assert!(cs >= a1e.min(be), "at most 2 at once: c waited for a slot");
    }

    #[tokio::test]
    async fn a_bound_of_zero_runs_one_job_at_a_time() {
        let rig = rig("zero").await;
        let store = rig.runner.store.clone();
        let a = job(&store, DELETE_CLUSTER, "a").await;
        let b = job(&store, DELETE_CLUSTER, "b").await;
        let spans: Spans = Default::default();
        let (cancel, runner) = serving(&rig, 0, timed(spans.clone(), Duration::from_millis(200)));
        wait_status(&store, a, JobStatus::Done).await;
        wait_status(&store, b, JobStatus::Done).await;
        cancel.cancel();
        runner.await.expect("runner ends");
        let (_, ae) = span(&spans, a);
        let (bs, _) = span(&spans, b);
        assert!(bs >= ae, "0 is taken as 1: b waited for a");
    }

    #[tokio::test]
    async fn a_reserving_job_is_claimed_only_after_the_previous_one_reserved() {
        let rig = rig("gate").await;
        let store = rig.runner.store.clone();
        let x = job(&store, CREATE_CLUSTER, "x").await;
        let y = job(&store, ADD_COMPS, "y").await;
        let reserved: Arc<Mutex<HashMap<i64, Instant>>> = Default::default();
        let started: Arc<Mutex<HashMap<i64, Instant>>> = Default::default();
        let (r2, s2) = (reserved.clone(), started.clone());
        let exec: Exec = Arc::new(move |r: JobRunner, job: Job| -> JobFuture {
            let (reserved, started) = (r2.clone(), s2.clone());
            Box::pin(async move {
                started.lock().expect("s").insert(job.id, Instant::now());
                tokio::time::sleep(Duration::from_millis(300)).await;
                let memo = json!({ "stage": "planned", "plan": {} });
                r.store
                    .update_job(job.id, JobStatus::Ongoing, Some(&memo))
                    .await?;
                reserved.lock().expect("r").insert(job.id, Instant::now());
                tokio::time::sleep(Duration::from_millis(500)).await;
                r.store.update_job(job.id, JobStatus::Done, None).await?;
                Ok(())
            })
        });
        let (cancel, runner) = serving(&rig, 4, exec);
        wait_status(&store, x, JobStatus::Done).await;
        wait_status(&store, y, JobStatus::Done).await;
        cancel.cancel();
        runner.await.expect("runner ends");
        let x_reserved = reserved.lock().expect("r")[&x];
        let y_started = started.lock().expect("s")[&y];
        let x_done_by = x_reserved + Duration::from_millis(500);
        assert!(y_started >= x_reserved, "y planned after x reserved");
        assert!(y_started < x_done_by, "y installed while x still ran");
    }

    #[tokio::test]
    async fn a_panicking_job_ends_failed_with_its_memo_and_the_runner_goes_on() {
        let rig = rig("panic").await;
        let store = rig.runner.store.clone();
        let bad = job(&store, CREATE_CLUSTER, "bad").await;
        let good = job(&store, DELETE_CLUSTER, "good").await;
        let exec: Exec = Arc::new(move |r: JobRunner, job: Job| -> JobFuture {
            Box::pin(async move {
                if job.id == bad {
                    let memo = json!({ "stage": "planned", "plan": { "name": "bad" } });
                    r.store
                        .update_job(job.id, JobStatus::Ongoing, Some(&memo))
                        .await?;
                    panic!("injected fault");
                }
                r.store.update_job(job.id, JobStatus::Done, None).await?;
                Ok(())
            })
        });
        let (cancel, runner) = serving(&rig, 4, exec);
        let j = wait_status(&store, bad, JobStatus::Failed).await;
        wait_status(&store, good, JobStatus::Done).await;
        // The runner still claims jobs after the panic.
        let later = job(&store, DELETE_CLUSTER, "later").await;
        wait_status(&store, later, JobStatus::Done).await;
        cancel.cancel();
        runner.await.expect("runner ends");

        let memo = j.memo.expect("memo");
        assert_eq!(memo["stage"], "failed");
        let err = memo["error"].as_str().expect("error");
        assert!(err.contains("panicked: injected fault"), "{err}");
        assert!(err.contains("ports stay reserved"), "{err}");
        assert_eq!(memo["plan"]["name"], "bad", "the plan is kept: {memo}");
    }

    #[tokio::test]
    async fn shutdown_aborts_every_running_job_and_leaves_it_ongoing() {
        let rig = rig("shutdown").await;
        let store = rig.runner.store.clone();
        let ids = [
            job(&store, DELETE_CLUSTER, "s1").await,
            job(&store, DELETE_CLUSTER, "s2").await,
        ];
        let dropped = Arc::new(AtomicUsize::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        struct OnDrop(Arc<AtomicUsize>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (d, e) = (dropped.clone(), entered.clone());
        let exec: Exec = Arc::new(move |_r: JobRunner, _job: Job| -> JobFuture {
            let (d, e) = (d.clone(), e.clone());
            Box::pin(async move {
                let _guard = OnDrop(d);
                e.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok(())
            })
        });
        let (cancel, runner) = serving(&rig, 4, exec);
        let t = Instant::now();
        while entered.load(Ordering::SeqCst) < 2 {
            assert!(t.elapsed() < Duration::from_secs(10), "both jobs started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("the runner stops at once")
            .expect("runner ends");
        assert_eq!(dropped.load(Ordering::SeqCst), 2, "both job tasks aborted");
        for id in ids {
            let j = store.get_job(id).await.expect("job");
            assert_eq!(j.status, JobStatus::Ongoing, "recovered at the next start");
        }
    }

    #[test]
    fn the_memo_shows_whether_a_job_is_past_planning() {
        let mut j = Job {
            id: 1,
            job_type: CREATE_CLUSTER.into(),
            status: JobStatus::Ongoing,
            job_info: Some(json!({ "name": "c1", "shards": 1 })),
            memo: None,
            user_name: None,
            related_id: None,
            when_started: None,
            when_ended: None,
        };
        assert_eq!(cluster_of(&j).as_deref(), Some("c1"));
        assert!(!past_planning(&j));
        j.memo = Some(json!({ "steps": [], "plan": null }));
        assert!(!past_planning(&j), "a null plan is no plan");
        j.memo = Some(json!({ "stage": "planned", "plan": {} }));
        assert!(past_planning(&j));
        j.memo = None;
        j.status = JobStatus::Failed;
        assert!(past_planning(&j), "an ended job planned nothing more");
        j.job_info = Some(json!({ "shards": 1 }));
        assert_eq!(cluster_of(&j), None);
    }

    /// A cluster row (with its log tables) named `name`.
    async fn cluster(store: &Store, name: &str) -> i64 {
        use kunlun_meta::model::{HaMode, NewCluster};
        store
            .tx(async |tx| {
                kunlun_meta::store::repo::clusters::insert(
                    tx,
                    &NewCluster {
                        name: name.into(),
                        nick_name: None,
                        owner: None,
                        business: None,
                        ha_mode: HaMode::Rbr,
                        memo: None,
                    },
                )
                .await
            })
            .await
            .expect("cluster")
            .id
    }

    /// A job of `job_type` on cluster `id` left `ongoing` with `memo` by a manager that died.
    async fn interrupted(store: &Store, job_type: &str, info: Value, memo: Value) -> i64 {
        let j = store
            .create_job(&NewJob {
                job_type: job_type.into(),
                job_info: info,
                user_name: None,
            })
            .await
            .expect("job");
        store
            .update_job(j.id, JobStatus::Ongoing, Some(&memo))
            .await
            .expect("ongoing");
        j.id
    }

    fn empty_plan(name: &str) -> Value {
        serde_json::to_value(super::super::plan::ClusterPlan {
            name: name.into(),
            ha_mode: kunlun_meta::model::HaMode::Rbr,
            innodb_size_mb: 0,
            max_connections: 0,
            shards: vec![],
            comps: vec![],
            passwords: super::super::plan::SystemPasswords::unknown(),
        })
        .expect("plan")
    }

    #[tokio::test]
    async fn a_recorded_add_is_finished_forward_after_a_restart() {
        use super::super::kinds::{ADD_NODES, ADD_SHARDS};
        let rig = rig("forward").await;
        let store = rig.runner.store.clone();
        let cid = cluster(&store, "fw").await;
        let info = json!({"shards": 1, "nodes": 1, "cluster_id": cid, "name": "fw"});
        // Rows written and ports committed with stage `recorded`: nothing is undone.
        let recorded = json!({"stage": "recorded", "cluster_id": cid, "plan": empty_plan("fw")});
        let fwd = interrupted(&store, ADD_SHARDS, info, recorded).await;
        // A scale job's legacy `installed` meant "not recorded": rolled back.
        let info = json!({"nodes": 1, "shard_id": 1, "cluster_id": cid, "name": "fw"});
        let legacy = json!({"stage": "installed", "cluster_id": cid, "shard_id": 1, "plan": empty_plan("fw")});
        let back = interrupted(&store, ADD_NODES, info, legacy).await;
        assert_eq!(rig.runner.recover().await.expect("recover"), 2);

        let j = store.get_job(fwd).await.expect("job");
        let memo = j.memo.expect("memo");
        assert_eq!(j.status, JobStatus::Done, "{memo}");
        assert_eq!(memo["stage"], "done", "{memo}");
        assert!(memo["catalog"].is_string(), "the push was noted: {memo}");
        let j = store.get_job(back).await.expect("job");
        let memo = j.memo.expect("memo");
        assert_eq!(j.status, JobStatus::Failed, "{memo}");
        assert_eq!(memo["stage"], "rolled_back", "{memo}");
        assert!(
            memo["error"].as_str().unwrap_or("").contains("restarted"),
            "{memo}"
        );
    }

    #[tokio::test]
    async fn a_memo_it_cannot_read_fails_the_job_and_keeps_the_memo() {
        use super::super::kinds::ADD_SHARDS;
        let rig = rig("unreadable").await;
        let store = rig.runner.store.clone();
        let cid = cluster(&store, "ur").await;
        let info = json!({"shards": 1, "nodes": 1, "cluster_id": cid, "name": "ur"});
        // A stage this build does not know (a newer manager's, or a damaged row).
        let odd = json!({"stage": "half_done", "cluster_id": cid, "plan": empty_plan("ur")});
        let id = interrupted(&store, ADD_SHARDS, info, odd).await;
        assert_eq!(rig.runner.recover().await.expect("recover"), 1);

        let j = store.get_job(id).await.expect("job");
        let memo = j.memo.expect("memo");
        assert_eq!(j.status, JobStatus::Failed, "{memo}");
        assert_eq!(memo["stage"], "failed", "{memo}");
        let error = memo["error"].as_str().unwrap_or("");
        assert!(error.contains("unreadable"), "{memo}");
        assert!(error.contains("ports stay reserved"), "{memo}");
        // Nothing was planned afresh: the stored plan is the one it had.
        assert_eq!(memo["plan"], empty_plan("ur"), "{memo}");
        assert!(
            memo["steps"].as_array().is_none_or(|s| s.is_empty()),
            "{memo}"
        );
    }

    #[test]
    fn legacy_installed_stages_keep_the_meaning_each_kind_gave_them() {
        use super::super::driver::{memo_of, resume, Direction, Resume};
        use super::super::kinds::{AddCompsJob, AddNodesJob, AddShardsJob, CreateClusterJob};
        let job = |t: &str| Job {
            id: 1,
            job_type: t.into(),
            status: JobStatus::Ongoing,
            job_info: None,
            memo: Some(json!({"stage": "installed", "plan": empty_plan("c")})),
            user_name: None,
            related_id: None,
            when_started: None,
            when_ended: None,
        };
        // Written with the rows: finished forward.
        for m in [
            memo_of::<CreateClusterJob>(&job(CREATE_CLUSTER))
                .unwrap()
                .stage,
            memo_of::<AddCompsJob>(&job(ADD_COMPS)).unwrap().stage,
        ] {
            assert_eq!(m, Stage::Recorded);
            assert_eq!(
                resume(Direction::Add, m, true, false),
                Resume::FinishForward
            );
        }
        // Written when recording failed: rolled back.
        for m in [
            memo_of::<AddShardsJob>(&job("add_shards")).unwrap().stage,
            memo_of::<AddNodesJob>(&job("add_nodes")).unwrap().stage,
        ] {
            assert_eq!(m, Stage::Planned);
            assert_eq!(resume(Direction::Add, m, true, false), Resume::RollBack);
        }
    }

    #[tokio::test]
    async fn an_add_on_a_machine_never_reached_rolls_back_sparing_it_and_releases_its_ports() {
        use kunlun_meta::model::{MachineType, NewMachine, SshAccess};
        let rig = rig("spare").await;
        let store = rig.runner.store.clone();
        let cid = cluster(&store, "sp").await;
        // A compute machine whose key file does not exist: nothing can be installed there,
        // and nothing can be uninstalled either.
        let m = store
            .insert_machine(&NewMachine {
                hostaddr: "127.0.0.1".into(),
                machine_type: MachineType::Computer,
                rack_id: None,
                data_dirs: vec![rig.dir.join("data").display().to_string()],
                port_range: "47000-47100".into(),
                total_mem_mb: None,
                total_cpu_cores: None,
                ssh: SshAccess {
                    port: 22,
                    user: "root".into(),
                    key_path: rig.dir.join("no_such_key").display().to_string(),
                },
            })
            .await
            .expect("machine");
        let info = json!({"comps": 1, "computer_hosts": [], "cluster_id": cid, "name": "sp"});
        let id = store
            .create_job(&NewJob {
                job_type: ADD_COMPS.into(),
                job_info: info,
                user_name: None,
            })
            .await
            .expect("job")
            .id;
        assert!(rig.runner.run_once().await.expect("run"), "claimed");
        let j = store.get_job(id).await.expect("job");
        let memo = j.memo.expect("memo");
        assert_eq!(j.status, JobStatus::Failed, "{memo}");
        assert_eq!(memo["stage"], "rolled_back", "{memo}");
        let steps = memo["steps"].as_array().expect("steps");
        let install = steps
            .iter()
            .find(|s| {
                s["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("install compute"))
            })
            .expect("install step");
        assert!(
            install["note"]
                .as_str()
                .unwrap_or("")
                .starts_with("nothing installed"),
            "{install}"
        );
        assert!(
            !steps.iter().any(|s| s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("remove compute"))
                && s["status"] == "failed"),
            "the untouched instance was not uninstalled: {memo}"
        );
        let m = store.get_machine(m.id).await.expect("machine");
        assert!(m.installing_ports.is_empty(), "ports released: {m:?}");
        assert!(m.used_ports.is_empty(), "{m:?}");
    }

    #[test]
    fn a_failed_memo_keeps_what_was_there() {
        let boom = || "the job's task panicked: boom".to_string();
        let m = failed_memo(
            Some(json!({ "stage": "installed", "cluster_id": 7 })),
            boom(),
        );
        assert_eq!(m["stage"], "failed");
        assert_eq!(m["cluster_id"], 7);
        assert_eq!(m["error"], "the job's task panicked: boom");
        let m = failed_memo(Some(json!("not an object")), boom());
        assert_eq!(m["stage"], "failed");
        let m = failed_memo(None, boom());
        assert_eq!(m["error"], "the job's task panicked: boom");
    }
}
