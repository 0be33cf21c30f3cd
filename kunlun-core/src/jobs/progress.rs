//! Step progress of a job, kept in the job's memo (`steps`) so `kunlunctl job watch` and any
//! API reader see which steps are pending, running, done, failed or skipped.
//!
//! Invariants:
//! - a step change only touches memory (a short `std` lock, never held across `.await`); a
//!   background flusher writes the memo (the job's base memo plus `steps`) at most once per
//!   [`COALESCE`], so a hundred parallel installs cost a handful of store writes;
//! - the flusher and the job's own memo writes are serialised by [`Progress::exclusive`], so
//!   an older snapshot never lands after a newer one; after [`Progress::close`] the flusher has
//!   stopped and nothing but the job writes the memo (its final status is never overwritten);
//! - a detached `Progress` (no store) records steps in memory only (tests, direct callers).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kunlun_meta::store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Shortest time between two flusher writes of the memo.
pub const COALESCE: Duration = Duration::from_millis(250);

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

impl StepStatus {
    /// Done, failed or skipped.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepStatus::Done | StepStatus::Failed | StepStatus::Skipped
        )
    }
}

/// One step as stored in the memo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub status: StepStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Wall time of a finished step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// What it is doing now (running) or why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    base: Value,
    steps: Vec<StepRecord>,
    /// Monotonic start of running steps, by index.
    clocks: Vec<Option<Instant>>,
    dirty: bool,
    closed: bool,
}

struct Inner {
    state: Mutex<State>,
    sink: Option<(Store, i64)>,
    wake: Arc<tokio::sync::Notify>,
    write: tokio::sync::Mutex<()>,
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    // The flusher holds only a weak reference: wake it so it sees the steps are gone.
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// Steps of one job; cheap to clone (all clones share the steps).
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("job_id", &self.inner.sink.as_ref().map(|s| s.1))
            .field("steps", &self.steps().len())
            .finish()
    }
}

/// A step being run; finish it with [`done`](StepHandle::done), [`fail`](StepHandle::fail) or
/// [`skip`](StepHandle::skip). Dropped unfinished, it stays `running` (a crash looks the same).
#[derive(Debug)]
pub struct StepHandle {
    progress: Progress,
    index: usize,
}

impl Progress {
    fn build(sink: Option<(Store, i64)>, base: Value, steps: Vec<StepRecord>) -> Progress {
        let clocks = vec![None; steps.len()];
        Progress {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    base,
                    steps,
                    clocks,
                    ..State::default()
                }),
                sink,
                wake: Arc::new(tokio::sync::Notify::new()),
                write: tokio::sync::Mutex::new(()),
                flusher: Mutex::new(None),
            }),
        }
    }

    /// Progress kept in memory only.
    pub fn detached() -> Progress {
        Progress::build(None, Value::Object(Default::default()), Vec::new())
    }

    /// Progress of job `job_id`, persisted into its memo. `memo` is the job's current memo (its
    /// `steps`, if any, are kept: a job run again after a restart shows its earlier steps,
    /// those that were running then marked failed). Must be called inside a tokio runtime.
    pub fn for_job(store: &Store, job_id: i64, memo: Option<&Value>) -> Progress {
        let (base, steps) = split_memo(memo);
        let p = Progress::build(Some((store.clone(), job_id)), base, steps);
        let weak = Arc::downgrade(&p.inner);
        let wake = p.inner.wake.clone();
        let handle = tokio::spawn(flush_loop(weak, wake, store.clone(), job_id));
        *lock(&p.inner.flusher) = Some(handle);
        p
    }

    /// Adds `names` as pending steps (so a watcher knows the total); names already present
    /// are not added twice.
    pub fn plan<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) {
        self.change(|s| {
            for n in names {
                let n = n.as_ref();
                if !s.steps.iter().any(|r| r.name == n) {
                    s.steps.push(StepRecord {
                        name: n.to_string(),
                        status: StepStatus::Pending,
                        started_at: None,
                        ms: None,
                        note: None,
                    });
                    s.clocks.push(None);
                }
            }
        });
    }

    /// Starts step `name` (the pending step of that name, else a new one at the end).
    pub fn step(&self, name: impl Into<String>) -> StepHandle {
        let name = name.into();
        let index = self.change(|s| {
            let i = match s
                .steps
                .iter()
                .position(|r| r.name == name && r.status == StepStatus::Pending)
            {
                Some(i) => i,
                None => {
                    s.steps.push(StepRecord {
                        name: name.clone(),
                        status: StepStatus::Pending,
                        started_at: None,
                        ms: None,
                        note: None,
                    });
                    s.clocks.push(None);
                    s.steps.len() - 1
                }
            };
            let r = &mut s.steps[i];
            r.status = StepStatus::Running;
            r.started_at = Some(Utc::now());
            r.ms = None;
            r.note = None;
            s.clocks[i] = Some(Instant::now());
            i
        });
        StepHandle {
            progress: self.clone(),
            index,
        }
    }

    /// Marks every still-pending step skipped with `why` (a job that stopped early).
    pub fn skip_pending(&self, why: &str) {
        self.change(|s| {
            for r in s
                .steps
                .iter_mut()
                .filter(|r| r.status == StepStatus::Pending)
            {
                r.status = StepStatus::Skipped;
                r.note = Some(why.to_string());
            }
        });
    }

    /// A copy of the steps.
    pub fn steps(&self) -> Vec<StepRecord> {
        lock(&self.inner.state).steps.clone()
    }

    /// Replaces the job's base memo (every field but `steps`); persisted with the next flush.
    pub fn set_memo(&self, base: Value) {
        self.change(|s| s.base = base);
    }

    /// The memo to store: the base memo with `steps`.
    pub fn memo(&self) -> Value {
        compose(&lock(&self.inner.state))
    }

    /// The memo to store if `base` were the base memo, without adopting it: for a memo written
    /// inside a transaction, which becomes the progress's memo (`set_memo`) only once the
    /// transaction committed (so a rolled-back write never reaches the flusher).
    pub fn memo_with(&self, base: Value) -> Value {
        let s = lock(&self.inner.state);
        compose(&State {
            base,
            steps: s.steps.clone(),
            ..State::default()
        })
    }

    /// Serialises a memo write of the job with the flusher's writes: hold the guard across
    /// `set_memo` + the write, so no older snapshot can land after it.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.write.lock().await
    }

    /// For the job's final memo write: waits for a flusher write in flight, stops the flusher
    /// for good and returns the write guard; hold it until the final status is written.
    pub async fn seal(&self) -> tokio::sync::MutexGuard<'_, ()> {
        let guard = self.inner.write.lock().await;
        lock(&self.inner.state).closed = true;
        self.inner.wake.notify_one();
        guard
    }

    /// Stops the flusher (waiting for a write in flight). Call before the job writes its
    /// final status; steps changed afterwards are only in memory until the job writes them.
    pub async fn close(&self) {
        lock(&self.inner.state).closed = true;
        self.inner.wake.notify_one();
        let handle = lock(&self.inner.flusher).take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }

    fn change<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = {
            let mut s = lock(&self.inner.state);
            let out = f(&mut s);
            s.dirty = true;
            out
        };
        self.inner.wake.notify_one();
        out
    }
}

/// Writes the memo when steps changed, at most once per [`COALESCE`], until the progress is
/// closed or dropped.
async fn flush_loop(
    inner: std::sync::Weak<Inner>,
    wake: Arc<tokio::sync::Notify>,
    store: Store,
    job_id: i64,
) {
    loop {
        wake.notified().await;
        let Some(me) = inner.upgrade() else {
            return;
        };
        let guard = me.write.lock().await;
        let memo = {
            let mut s = lock(&me.state);
            if s.closed {
                return;
            }
            s.dirty = false;
            compose(&s)
        };
        // Only while the job is `ongoing`: a job that ended, or was rolled back by a recovery
        // while a task of an earlier run still reports, is never brought back.
        match store.update_ongoing_memo(job_id, &memo).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(job_id, "job no longer ongoing; progress flusher stops");
                return;
            }
            Err(e) => {
                tracing::warn!(job_id, error = %e, "cannot record job progress");
                lock(&me.state).dirty = true;
            }
        }
        drop(guard);
        drop(me);
        tokio::time::sleep(COALESCE).await;
        match inner.upgrade() {
            Some(me) if lock(&me.state).dirty => wake.notify_one(),
            Some(_) => {}
            None => return,
        }
    }
}

impl StepHandle {
    fn finish(self, status: StepStatus, note: Option<String>) {
        self.progress.change(|s| {
            let ms = s.clocks[self.index].map(|t| t.elapsed().as_millis() as u64);
            let r = &mut s.steps[self.index];
            r.status = status;
            r.ms = ms.or(Some(0));
            r.note = note;
        });
    }

    /// What the step is doing now (shown next to a running step).
    pub fn note(&self, note: impl Into<String>) {
        let note = note.into();
        self.progress
            .change(|s| s.steps[self.index].note = Some(note));
    }

    pub fn done(self) {
        self.finish(StepStatus::Done, None);
    }

    /// Done, with a remark (e.g. "already there").
    pub fn done_with(self, note: impl Into<String>) {
        self.finish(StepStatus::Done, Some(note.into()));
    }

    pub fn fail(self, e: impl std::fmt::Display) {
        self.finish(StepStatus::Failed, Some(e.to_string()));
    }

    pub fn skip(self, why: impl Into<String>) {
        self.finish(StepStatus::Skipped, Some(why.into()));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn compose(s: &State) -> Value {
    let mut base = match &s.base {
        Value::Object(m) => m.clone(),
        _ => Default::default(),
    };
    base.remove("steps");
    if !s.steps.is_empty() {
        base.insert(
            "steps".into(),
            serde_json::to_value(&s.steps).unwrap_or(Value::Null),
        );
    }
    Value::Object(base)
}

/// The base memo and its steps; steps left running (by a manager that died) become failed.
fn split_memo(memo: Option<&Value>) -> (Value, Vec<StepRecord>) {
    let mut base = match memo {
        Some(Value::Object(m)) => m.clone(),
        _ => Default::default(),
    };
    let mut steps: Vec<StepRecord> = base
        .remove("steps")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    for r in steps.iter_mut().filter(|r| r.status == StepStatus::Running) {
        r.status = StepStatus::Failed;
        r.note = Some("interrupted: the manager stopped during this step".into());
    }
    (Value::Object(base), steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn memo_with_composes_a_memo_without_adopting_it() {
        let p = Progress::detached();
        p.set_memo(json!({"stage": "planned"}));
        p.step("reserve ports").done();
        let m = p.memo_with(json!({"stage": "recorded", "steps": "ignored"}));
        assert_eq!(m["stage"], "recorded");
        assert_eq!(m["steps"][0]["name"], "reserve ports");
        assert_eq!(p.memo()["stage"], "planned");
    }

    #[test]
    fn steps_move_through_their_states_and_the_memo_keeps_its_fields() {
        let p = Progress::detached();
        p.set_memo(json!({"stage": "planned", "cluster_id": 3}));
        p.plan(["install a", "install b", "replication"]);
        p.plan(["install a"]);
        assert_eq!(p.steps().len(), 3);
        let a = p.step("install a");
        let b = p.step("install b");
        assert_eq!(p.steps()[0].status, StepStatus::Running);
        a.done();
        b.fail("port 57001 in use");
        let extra = p.step("rollback");
        extra.note("uninstalling");
        assert_eq!(p.steps()[3].note.as_deref(), Some("uninstalling"));
        extra.skip("nothing to do");
        p.skip_pending("an earlier step failed");
        let s = p.steps();
        let st: Vec<_> = s.iter().map(|r| r.status).collect();
        assert_eq!(
            st,
            vec![
                StepStatus::Done,
                StepStatus::Failed,
                StepStatus::Skipped,
                StepStatus::Skipped
            ]
        );
        assert!(s
            .iter()
            .all(|r| r.ms.is_some() || r.status == StepStatus::Skipped));
        assert_eq!(s[1].note.as_deref(), Some("port 57001 in use"));
        let memo = p.memo();
        assert_eq!(memo["stage"], "planned");
        assert_eq!(memo["cluster_id"], 3);
        assert_eq!(memo["steps"].as_array().map(Vec::len), Some(4));
        assert_eq!(memo["steps"][0]["status"], "done");
    }

    #[test]
    fn a_memo_read_back_marks_interrupted_steps_failed() {
        let memo = json!({
            "stage": "planned",
            "steps": [
                {"name": "x", "status": "done", "ms": 5},
                {"name": "y", "status": "running"},
                {"name": "z", "status": "pending"}
            ]
        });
        let (base, steps) = split_memo(Some(&memo));
        assert_eq!(base, json!({"stage": "planned"}));
        assert_eq!(steps[1].status, StepStatus::Failed);
        assert!(steps[1]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("interrupted"));
        assert_eq!(steps[2].status, StepStatus::Pending);
        // A memo without steps (older jobs) reads as none.
        assert!(split_memo(Some(&json!({"stage": "done"}))).1.is_empty());
        assert!(split_memo(None).1.is_empty());
    }

    #[test]
    fn a_step_name_runs_again_after_it_finished() {
        let p = Progress::detached();
        p.step("probe").fail("timeout");
        p.step("probe").done();
        let s = p.steps();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].status, StepStatus::Done);
    }
}
