//! `verify_backup`: proves a done backup restorable without touching any cluster. Every file's
//! size and SHA-256 on the storage are checked against the manifest; then each shard's
//! snapshot is streamed from the storage into a scratch directory on a storage machine,
//! prepared, and started as a scratch server with no network (the recipe's
//! [`Reseed::verify_script`](kunlun_provision::recipe::reseed::Reseed)); every table's
//! `CHECKSUM TABLE` must be the one recorded at the backup's cut (taken on the held source).
//! The scratch directory is removed whatever happens.
//!
//! Like `backup_cluster` it has its own run function (no plan, no cluster rows). The job fails
//! when anything does not verify; its memo says per shard whether the server started, how many
//! tables matched and which did not.
//!
//! Invariants: the backup and every cluster are only read; one scratch server at a time; a
//! shard without recorded checksums (a backup taken from a primary) is verified as far as
//! starting, and the memo says so.

use std::collections::BTreeMap;
use std::time::Duration;

use kunlun_meta::model::{BackupStatus, Job, JobStatus, MachineType, NewJob, NodeStats};
use kunlun_meta::store::repo::backups;
use kunlun_meta::store::Store;
use kunlun_provision::recipe::reseed::VERIFY_STARTED;
use kunlun_provision::recipe::sh_quote;
use serde::{Deserialize, Serialize};

use crate::backup::manifest::{self, ManifestFile};
use crate::backup::store::Endpoint;
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::jobs::driver::{JobCtx, JobInfo, JobMemo};
use crate::jobs::reseed::{self, clip};

pub const VERIFY_BACKUP: &str = "verify_backup";

/// The request of a `verify_backup` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    pub backup_id: i64,
}

/// What the verification found for one shard's snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardVerify {
    pub shard_id: i64,
    /// Where the scratch server ran (`host`).
    pub machine: String,
    /// The scratch server started on the prepared snapshot.
    pub started: bool,
    /// Tables whose checksum was recorded at the cut.
    pub recorded: usize,
    /// Tables whose checksum matched.
    pub matched: usize,
    /// `db.table: recorded X, found Y` (or missing / not recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatched: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The memo fields of `verify_backup` besides the common ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyExtra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<i64>,
    /// Every file's size and SHA-256 as recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardVerify>,
    /// Everything verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

pub type VerifyMemo = JobMemo<VerifyExtra>;

/// Accepts a `verify_backup` job for backup `backup_id`: it exists (404) and is done (409).
pub async fn accept(store: &Store, backup_id: i64) -> Result<Job> {
    let b = store
        .read(async |tx| backups::get(tx, backup_id).await)
        .await?;
    if b.status != BackupStatus::Done || b.manifest.is_none() {
        return Err(Error::Conflict(format!(
            "backup {backup_id} is {}: only a done backup can be verified",
            b.status
        )));
    }
    let info = JobInfo {
        cluster_id: None,
        // Not a cluster's name (those have no space): the job changes no cluster.
        name: format!("backup {backup_id}"),
        request: VerifyRequest { backup_id },
    };
    Ok(store
        .create_job(&NewJob {
            job_type: VERIFY_BACKUP.into(),
            job_info: info.to_value()?,
            user_name: None,
        })
        .await?)
}

/// Runs one claimed `verify_backup` job (the runner's registry calls this): it ends the job
/// `done` itself; an error is the runner's to record (`failed`, the memo as stored). A job found
/// `ongoing` at start runs again from the beginning: it changes nothing but scratch
/// directories, which are named by the job and removed by the script itself.
pub async fn run(store: &Store, fleet: &Provisioner, job: &Job) -> Result<()> {
    let info = JobInfo::<VerifyRequest>::of(job)?;
    let cx = JobCtx::for_job(store, fleet, job);
    let r = go(&cx, info.request.backup_id).await;
    cx.progress.close().await;
    r
}

async fn go(cx: &JobCtx, backup_id: i64) -> Result<()> {
    let mut memo = VerifyMemo::default();
    memo.extra.backup_id = Some(backup_id);
    let (bs, m, b) = manifest::open(&cx.store, &cx.fleet, backup_id).await?;
    let files = cx
        .step(
            "check the backup files",
            manifest::check_files(&*bs, &m.files),
        )
        .await;
    memo.extra.files_ok = Some(files.is_ok());
    cx.save(&memo).await;
    files?;
    let (host, data_dir, target) = scratch_machine(cx, &b.storage_id).await?;
    let script_for = |shard: i64, compression| {
        let scratch = format!(
            "{}/kunlun/verify-{}-{shard}",
            data_dir.trim_end_matches('/'),
            cx.job_id
        );
        reseed::reseed(&cx.fleet)?
            .verify_script(&scratch, compression)
            .map_err(|e| Error::Conflict(e.to_string()))
    };
    let mut problems = Vec::new();
    for f in m.snapshots() {
        let shard_id = f.shard_id.unwrap_or_default();
        let step = cx.progress.step(format!("verify shard {shard_id}"));
        let sink = Endpoint {
            target: target.clone(),
            command: format!(
                "sh -c {}",
                sh_quote(&script_for(shard_id, f.compression()?)?)
            ),
        };
        let got = bs
            .get(
                &f.rel,
                &sink,
                reseed::copy_timeout(f.data_kb(), None) + VERIFY_MARGIN,
            )
            .await;
        let v = match got {
            Ok(g) => compare(shard_id, &host, f, &g.stdout),
            Err(e) => ShardVerify {
                shard_id,
                machine: host.clone(),
                started: false,
                note: Some(clip(&e.to_string())),
                ..ShardVerify::default()
            },
        };
        let bad = !v.started || !v.mismatched.is_empty();
        if bad {
            let why = format!(
                "shard {shard_id}: {}",
                if v.started {
                    format!(
                        "{} tables differ: {}",
                        v.mismatched.len(),
                        v.mismatched.join("; ")
                    )
                } else {
                    format!(
                        "the snapshot did not start: {}",
                        v.note.clone().unwrap_or_default()
                    )
                }
            );
            step.fail(Error::Conflict(why.clone()));
            problems.push(why);
        } else {
            step.done_with(format!(
                "started; {} of {} recorded table checksums match{}",
                v.matched,
                v.recorded,
                v.note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ));
        }
        memo.extra.shards.push(v);
        cx.save(&memo).await;
    }
    memo.extra.verified = Some(problems.is_empty());
    cx.save(&memo).await;
    if problems.is_empty() {
        tracing::info!(backup_id, job_id = cx.job_id, "backup verified");
        cx.end(JobStatus::Done, &memo).await
    } else {
        Err(Error::Conflict(format!(
            "backup {backup_id} does not verify: {}",
            problems.join("; ")
        )))
    }
}

/// Time for starting, checksumming and stopping a scratch server, on top of the copy's.
const VERIFY_MARGIN: Duration = Duration::from_secs(3600);

/// The machine to verify on: the storage's own machine when it is a running storage machine,
/// else the first running storage machine. Its `host`, first data dir and SSH target.
async fn scratch_machine(
    cx: &JobCtx,
    storage_id: &i64,
) -> Result<(String, String, kunlun_provision::SshTarget)> {
    let sid = *storage_id;
    let st = cx
        .store
        .read(async |tx| kunlun_meta::store::repo::backup_storage::get(tx, sid).await)
        .await?;
    let machines: Vec<_> = cx
        .store
        .list_machines()
        .await?
        .into_iter()
        .filter(|m| {
            m.machine_type == MachineType::Storage
                && m.node_stats == NodeStats::Running
                && !m.data_dirs.is_empty()
        })
        .collect();
    let m = machines
        .iter()
        .find(|m| m.hostaddr == st.hostaddr)
        .or_else(|| machines.first())
        .ok_or_else(|| {
            Error::Conflict("no running storage machine to verify the backup on".into())
        })?;
    Ok((
        m.hostaddr.clone(),
        m.data_dirs[0].clone(),
        cx.fleet.target(m),
    ))
}

/// The scratch server's output against the checksums recorded for snapshot `f` (pure).
fn compare(shard_id: i64, host: &str, f: &ManifestFile, stdout: &str) -> ShardVerify {
    let started = stdout.lines().any(|l| l.trim() == VERIFY_STARTED);
    let found: BTreeMap<&str, Option<u64>> = stdout
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, v)| (t.trim(), v.trim().parse::<u64>().ok()))
        .collect();
    let mut v = ShardVerify {
        shard_id,
        machine: host.to_string(),
        started,
        ..ShardVerify::default()
    };
    let Some(recorded) = &f.checksums else {
        v.note =
            Some("no table checksums were recorded (the snapshot was not held at a cut)".into());
        return v;
    };
    v.recorded = recorded.len();
    for (t, want) in recorded {
        match found.get(t.as_str()) {
            Some(Some(got)) if got == want => v.matched += 1,
            Some(Some(got)) => v
                .mismatched
                .push(format!("{t}: recorded {want}, found {got}")),
            Some(None) => v.mismatched.push(format!("{t}: no checksum")),
            None => v.mismatched.push(format!("{t}: missing")),
        }
    }
    for t in found.keys() {
        if !recorded.contains_key(*t) {
            v.mismatched
                .push(format!("{t}: not in the backup's record"));
        }
    }
    if !started && v.note.is_none() {
        v.note = Some("the scratch server never answered".into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sums: Option<&[(&str, u64)]>) -> ManifestFile {
        ManifestFile {
            kind: "storage".into(),
            shard_id: Some(3),
            checksums: sums.map(|s| s.iter().map(|(t, v)| (t.to_string(), *v)).collect()),
            ..ManifestFile::default()
        }
    }

    #[test]
    fn every_recorded_table_must_match_and_no_other_appear() {
        let f = file(Some(&[("bk.t", 10), ("bk.acct", 20)]));
        let ok = compare(3, "h", &f, "kl-verify-started\nbk.acct\t20\nbk.t\t10\n");
        assert!(ok.started);
        assert_eq!((ok.recorded, ok.matched), (2, 2));
        assert!(ok.mismatched.is_empty());

        let bad = compare(3, "h", &f, "kl-verify-started\nbk.acct\t21\nbk.x\t1\n");
        assert_eq!(bad.matched, 0);
        assert_eq!(
            bad.mismatched,
            [
                "bk.acct: recorded 20, found 21",
                "bk.t: missing",
                "bk.x: not in the backup's record"
            ]
        );
        let null = compare(3, "h", &f, "kl-verify-started\nbk.acct\tNULL\nbk.t\t10\n");
        assert_eq!(null.mismatched, ["bk.acct: no checksum"]);

        let dead = compare(3, "h", &f, "");
        assert!(!dead.started);
        assert!(dead.note.is_some());
    }

    #[test]
    fn a_snapshot_without_a_record_is_verified_as_far_as_starting() {
        let v = compare(3, "h", &file(None), "kl-verify-started\nbk.t\t1\n");
        assert!(v.started && v.mismatched.is_empty());
        assert!(v
            .note
            .as_deref()
            .is_some_and(|n| n.contains("no table checksums")));
    }
}
