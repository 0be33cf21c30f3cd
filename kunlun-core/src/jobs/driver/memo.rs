//! The stored shapes of a job: its typed [`Stage`], the memo every kind shares ([`JobMemo`],
//! with the kind's own fields flattened in), the request as stored ([`JobInfo`]), and the
//! pure [`resume`] table that alone decides what a (resumed) job does.
//!
//! Invariant: the JSON spellings are those of before the driver (tests, the CLI and the API
//! read them); a memo this build cannot read is an error, never a fresh start.

use std::ops::{Deref, DerefMut};

use kunlun_meta::model::Job;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::plan::ClusterPlan;
use super::super::progress::StepRecord;
use super::{Direction, JobKind};
use crate::error::{Error, Result};

/// Where a job is (the memo's `stage`). Ordered: a stage at or past [`Stage::Planned`] means
/// the plan and its reservation are stored.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Nothing stored yet (spelt `""`).
    #[default]
    #[serde(rename = "")]
    New,
    /// Plan stored, ports reserved; nothing recorded.
    Planned,
    /// Legacy only (never written): create/add_comps wrote it with their rows (= recorded),
    /// add_shards/add_nodes when recording failed (= not recorded). See [`JobKind::LEGACY_INSTALLED`].
    Installed,
    /// Rows written and ports committed in one transaction.
    Recorded,
    /// Removal plan stored, instances out of service.
    Removing,
    /// Rows removed and ports released in one transaction.
    Removed,
    Done,
    Failed,
    RolledBack,
    RollbackFailed,
}

impl Stage {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::New => "",
            Stage::Planned => "planned",
            Stage::Installed => "installed",
            Stage::Recorded => "recorded",
            Stage::Removing => "removing",
            Stage::Removed => "removed",
            Stage::Done => "done",
            Stage::Failed => "failed",
            Stage::RolledBack => "rolled_back",
            Stage::RollbackFailed => "rollback_failed",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Stage {
    /// The stage of a stored spelling; an unknown one is [`Stage::New`].
    fn from(s: &str) -> Stage {
        serde_json::from_value(Value::String(s.to_string())).unwrap_or_default()
    }
}

impl PartialEq<&str> for Stage {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The memo of every kind: today's field names, the kind's own fields flattened in (and
/// reachable as `memo.field` through `Deref`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMemo<E> {
    /// Absent in a memo that holds only steps (written while the plan step ran).
    #[serde(default)]
    pub stage: Stage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<i64>,
    #[serde(flatten)]
    pub extra: E,
    /// The instances added or removed, without passwords.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ClusterPlan>,
    /// What the catalog push did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Step progress (see [`Progress`]); written by the job's progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
}

impl<E> Deref for JobMemo<E> {
    type Target = E;
    fn deref(&self) -> &E {
        &self.extra
    }
}

impl<E> DerefMut for JobMemo<E> {
    fn deref_mut(&mut self) -> &mut E {
        &mut self.extra
    }
}

impl<E: Serialize> JobMemo<E> {
    pub(super) fn to_json(&self) -> kunlun_meta::Result<Value> {
        serde_json::to_value(self).map_err(|e| kunlun_meta::Error::Invalid(e.to_string()))
    }
}

/// No kind-specific memo fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoExtra {}

/// `job_info`: the request plus the cluster it targets (`cluster_id`, `name`: what the
/// runner and the accept check read to keep one job per cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo<R> {
    pub cluster_id: Option<i64>,
    pub name: String,
    pub request: R,
}

impl<R> JobInfo<R> {
    /// The target cluster's id (every kind but `create_cluster` has one).
    pub fn cluster(&self) -> Result<i64> {
        self.cluster_id
            .ok_or_else(|| Error::Invalid("job request names no cluster_id".into()))
    }

    /// [`cluster`](Self::cluster) inside a metadata transaction.
    pub fn cluster_in_tx(&self) -> kunlun_meta::Result<i64> {
        self.cluster_id
            .ok_or_else(|| kunlun_meta::Error::Invalid("job request names no cluster_id".into()))
    }
}

impl<R: Serialize> JobInfo<R> {
    /// The stored spelling: the request's fields plus `cluster_id` and `name`.
    pub fn to_value(&self) -> Result<Value> {
        let mut v =
            serde_json::to_value(&self.request).map_err(|e| Error::Internal(e.to_string()))?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| Error::Internal("job request is not an object".into()))?;
        if let Some(id) = self.cluster_id {
            obj.insert("cluster_id".into(), id.into());
        }
        obj.insert("name".into(), self.name.clone().into());
        Ok(v)
    }
}

impl<R: DeserializeOwned> JobInfo<R> {
    /// Reads a stored `job_info`. The request sees only its own fields (flattened), so a
    /// request that has a `name` (create) gets it too.
    pub fn from_value(v: Value) -> Result<JobInfo<R>> {
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            cluster_id: Option<i64>,
            #[serde(default)]
            name: Option<String>,
        }
        #[derive(Deserialize)]
        struct Body<R> {
            #[serde(flatten)]
            request: R,
        }
        if !v.is_object() {
            return Err(Error::Invalid("job request is not an object".into()));
        }
        let head: Head =
            serde_json::from_value(v.clone()).map_err(|e| Error::Invalid(e.to_string()))?;
        let body: Body<R> = serde_json::from_value(v).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(JobInfo {
            cluster_id: head.cluster_id,
            name: head.name.unwrap_or_default(),
            request: body.request,
        })
    }

    /// The `job_info` of `job`.
    pub fn of(job: &Job) -> Result<JobInfo<R>> {
        let v = job
            .job_info
            .clone()
            .ok_or_else(|| Error::Invalid(format!("job {} has no request", job.id)))?;
        Self::from_value(v).map_err(|e| Error::Invalid(format!("job {}: {e}", job.id)))
    }
}

/// The stage a failed job ends with.
pub(super) fn failed_stage(s: Stage) -> Stage {
    match s {
        Stage::RolledBack | Stage::RollbackFailed => s,
        _ => Stage::Failed,
    }
}

/// What a job run does first, from its stored memo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Nothing stored: plan.
    Fresh,
    /// Adding: roll back from the memo's plan.
    RollBack,
    /// Removing: carry on from the memo's plan.
    Continue,
    /// Rows recorded (adding) or removed (removing): push and end `done`.
    FinishForward,
    /// Adding, planned, of a kind that may finish forward from there (`create_cluster`):
    /// check every planned instance ([`after_check`] decides).
    CheckInstances,
}

/// The one place that says what a (resumed) job does. `forward_from_planned`: the kind's
/// [`super::JobKind::FORWARD_FROM_PLANNED`].
pub fn resume(dir: Direction, stage: Stage, has_plan: bool, forward_from_planned: bool) -> Resume {
    use Stage::*;
    if !has_plan {
        return Resume::Fresh;
    }
    match (dir, stage) {
        (Direction::Add, Recorded | Done) => Resume::FinishForward,
        (Direction::Add, Planned) if forward_from_planned => Resume::CheckInstances,
        (Direction::Add, _) => Resume::RollBack,
        (Direction::Remove, Removed | Done) => Resume::FinishForward,
        (Direction::Remove, _) => Resume::Continue,
    }
}

/// After [`Resume::CheckInstances`], from whether each planned instance was found installed
/// and answering: finished forward (replication, rows, push) only when there is at least one
/// and every one was; else rolled back as any interrupted add.
pub fn after_check(installed_and_answering: &[bool]) -> Resume {
    if !installed_and_answering.is_empty() && installed_and_answering.iter().all(|ok| *ok) {
        Resume::FinishForward
    } else {
        Resume::RollBack
    }
}

/// The memo of `job` for kind `K` (default when none is stored), legacy stages mapped. A
/// stored memo that does not read as `K`'s (an unknown stage, a field of the wrong type) is an
/// error: planning afresh could install a second time beside a reservation it cannot see.
pub fn memo_of<K: JobKind>(job: &Job) -> Result<JobMemo<K::Extra>> {
    let mut memo: JobMemo<K::Extra> = match &job.memo {
        None | Some(Value::Null) => JobMemo::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            Error::Invalid(format!(
                "job {}: its stored memo is unreadable ({e}); nothing was planned, undone or \
                 released: its instances and port reservations, if any, are as the memo shows",
                job.id
            ))
        })?,
    };
    if memo.stage == Stage::Installed {
        memo.stage = K::LEGACY_INSTALLED;
    }
    Ok(memo)
}

/// The `stage` of a stored memo, typed (for the runner: a job at or past `planned` holds
/// its reservation).
pub fn stage_of(memo: Option<&Value>) -> Stage {
    memo.and_then(|m| m.get("stage"))
        .and_then(Value::as_str)
        .map(Stage::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Add, Remove};
    use Stage::*;

    const ALL: [Stage; 10] = [
        New,
        Planned,
        Installed,
        Recorded,
        Removing,
        Removed,
        Done,
        Failed,
        RolledBack,
        RollbackFailed,
    ];

    #[test]
    fn a_job_without_a_stored_plan_starts_afresh_whatever_its_stage() {
        for dir in [Add, Remove] {
            for s in ALL {
                for fwd in [false, true] {
                    assert_eq!(resume(dir, s, false, fwd), Resume::Fresh, "{dir:?} {s}");
                }
            }
        }
    }

    #[test]
    fn an_add_finishes_forward_only_once_recorded_and_otherwise_rolls_back() {
        for s in ALL {
            let want = match s {
                Recorded | Done => Resume::FinishForward,
                _ => Resume::RollBack,
            };
            assert_eq!(resume(Add, s, true, false), want, "{s}");
        }
    }

    /// `create_cluster`: at `planned` its instances may all have been installed before the
    /// restart; they are checked, the rest of the table is as for any add.
    #[test]
    fn a_create_at_planned_checks_its_instances_first() {
        for s in ALL {
            let want = match s {
                Recorded | Done => Resume::FinishForward,
                Planned => Resume::CheckInstances,
                _ => Resume::RollBack,
            };
            assert_eq!(resume(Add, s, true, true), want, "{s}");
        }
        assert_eq!(after_check(&[true, true, true]), Resume::FinishForward);
        assert_eq!(after_check(&[true, false, true]), Resume::RollBack);
        assert_eq!(after_check(&[false]), Resume::RollBack);
        assert_eq!(after_check(&[]), Resume::RollBack, "nothing checked");
    }

    #[test]
    fn a_removal_finishes_once_removed_and_otherwise_carries_on() {
        for s in ALL {
            let want = match s {
                Removed | Done => Resume::FinishForward,
                _ => Resume::Continue,
            };
            for fwd in [false, true] {
                assert_eq!(resume(Remove, s, true, fwd), want, "{s}");
            }
        }
    }

    #[test]
    fn stages_keep_their_stored_spellings() {
        for s in ALL {
            let v = serde_json::to_value(s).unwrap();
            assert_eq!(v, Value::String(s.as_str().into()));
            assert_eq!(Stage::from(s.as_str()), s);
            assert_eq!(s, s.as_str());
        }
        assert_eq!(Stage::from("nonsense"), New);
        assert!(Planned < Recorded && New < Planned && Removing > Planned);
    }

    #[test]
    fn a_failed_job_says_failed_unless_it_says_how_its_rollback_went() {
        assert_eq!(failed_stage(New), Failed);
        assert_eq!(failed_stage(Planned), Failed);
        assert_eq!(failed_stage(Recorded), Failed);
        assert_eq!(failed_stage(Removing), Failed);
        assert_eq!(failed_stage(RolledBack), RolledBack);
        assert_eq!(failed_stage(RollbackFailed), RollbackFailed);
    }

    #[test]
    fn the_stage_of_a_raw_memo_is_read_typed() {
        use serde_json::json;
        assert_eq!(stage_of(None), New);
        assert_eq!(stage_of(Some(&json!({"steps": []}))), New);
        assert_eq!(stage_of(Some(&json!({"stage": "planned"}))), Planned);
        assert_eq!(stage_of(Some(&json!({"stage": 3}))), New);
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    struct X {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard_id: Option<i64>,
    }

    #[test]
    fn the_memo_keeps_its_json_field_names_with_the_kind_fields_flattened() {
        use serde_json::json;
        let m = JobMemo {
            stage: Planned,
            cluster_id: Some(3),
            extra: X { shard_id: Some(4) },
            ..JobMemo::default()
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            json!({"stage": "planned", "cluster_id": 3, "shard_id": 4})
        );
        let back: JobMemo<X> = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.shard_id, Some(4), "kind fields read through Deref");
        let info: JobInfo<X> =
            JobInfo::from_value(json!({"cluster_id": 1, "name": "c", "shard_id": 2})).unwrap();
        assert_eq!((info.cluster_id, info.request.shard_id), (Some(1), Some(2)));
        assert_eq!(info.name, "c");
        assert_eq!(
            info.to_value().unwrap(),
            json!({"cluster_id": 1, "name": "c", "shard_id": 2})
        );
        assert!(JobInfo::<X>::from_value(json!([1])).is_err());
    }
}
