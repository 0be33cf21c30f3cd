//! The run of a `backup_cluster` job: the catalogue row first, the storage checked, the parts
//! stored in parallel (at most [`PARALLEL_PARTS`] at once), the manifest last; on any failure
//! what was stored is removed and the row is `failed` with the reason. See the module doc of
//! [`super`] for the invariants.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use kunlun_meta::model::{BackupStatus, Cluster, Job, JobStatus, NewBackup, NodeStatus, ShardNode};
use kunlun_meta::store::repo::backups;
use kunlun_meta::store::Store;
use serde_json::json;
use tokio::sync::Mutex;

use super::cut::{self, Cut, Source};
use super::parts::{self, FileEntry, SMALL_TIMEOUT};
use super::{BackupExtra, BackupMemo, BackupRequest, PartPhase, PartProgress, PARALLEL_PARTS};
use crate::backup::registry;
use crate::backup::store::BackupStore;
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::jobs::common::passwords;
use crate::jobs::driver::{JobCtx, JobInfo, Stage};
use crate::jobs::plan::SystemPasswords;

/// Deadline of the storage's reachability check and of removing a failed backup's files.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
const REMOVE_TIMEOUT: Duration = Duration::from_secs(600);
const RESTARTED: &str = "the manager restarted mid-backup";
/// Seconds a held source may take to reach the cut, besides the lag the request allows.
const REACH_MARGIN_S: u64 = 120;

/// Runs one claimed `backup_cluster` job to its end (the runner's registry calls this).
pub async fn run(store: &Store, fleet: &Provisioner, job: &Job) -> Result<()> {
    let info = JobInfo::<BackupRequest>::of(job)?;
    let memo: BackupMemo = match &job.memo {
        None | Some(serde_json::Value::Null) => BackupMemo::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            Error::Invalid(format!(
                "job {}: its stored memo is unreadable ({e})",
                job.id
            ))
        })?,
    };
    let cx = JobCtx::for_job(store, fleet, job);
    let r = go(&cx, &info, memo).await;
    cx.progress.close().await;
    r
}

/// What every part of one run shares.
pub(super) struct Run<'a> {
    pub cx: &'a JobCtx,
    pub info: &'a JobInfo<BackupRequest>,
    pub passwords: SystemPasswords,
    pub bs: Arc<dyn BackupStore>,
    pub storage_id: i64,
    pub cluster: Cluster,
    pub backup_id: i64,
    /// The backup's directory on the storage.
    pub dir: String,
    memo: Mutex<BackupMemo>,
}

impl Run<'_> {
    /// Changes part `i` of the memo with `f` and stores the memo; a failed store is logged
    /// (the progress is only a report; the catalogue rows are what counts).
    pub async fn set(&self, i: usize, f: impl FnOnce(&mut PartProgress)) {
        let mut m = self.memo.lock().await;
        if let Some(p) = m.parts.get_mut(i) {
            f(p);
        }
        let snapshot = m.clone();
        if let Err(e) = self.cx.commit(async |_| Ok(snapshot.clone())).await {
            tracing::warn!(job_id = self.cx.job_id, error = %e, "backup: progress not stored");
        }
    }
}

/// One part to store.
#[derive(Debug, Clone, Copy)]
enum Part {
    Shard(i64),
    Compute,
    Metadata,
}

impl Part {
    fn name(self) -> String {
        match self {
            Part::Shard(id) => format!("shard {id}"),
            Part::Compute => "compute".into(),
            Part::Metadata => "metadata".into(),
        }
    }
}

async fn go(cx: &JobCtx, info: &JobInfo<BackupRequest>, mut memo: BackupMemo) -> Result<()> {
    memo.steps.clear();
    if let Some(bid) = memo.backup_id {
        // A stream cut by a restart cannot be resumed: the backup is undone.
        return resumed(cx, info, memo, bid).await;
    }
    let cid = info.cluster()?;
    let cluster = cx.store.get_cluster(cid).await?;
    let passwords = passwords(&cx.store, cid).await?;
    let (row, bs) = registry::open(&cx.store, &cx.fleet, &info.request.storage).await?;
    let shards = cx.store.list_shards(Some(cid)).await?;
    let mut shape_shards = Vec::new();
    for s in &shards {
        let nodes = cx.store.list_shard_nodes(Some(s.id)).await?;
        shape_shards.push(json!({
            "id": s.id,
            "name": s.name,
            "nodes": nodes.iter().filter(|n| n.status != NodeStatus::Deleted).map(|n| json!({
                "id": n.id, "host": n.hostaddr, "port": n.port,
                "member_state": n.member_state, "status": n.status,
            })).collect::<Vec<_>>(),
        }));
    }
    let comps = cx.store.list_comp_nodes(Some(cid)).await?;
    let shape = json!({
        "ha_mode": cluster.ha_mode,
        "shards": shape_shards,
        "comps": comps.iter().filter(|c| c.status != NodeStatus::Deleted).map(|c| json!({
            "id": c.id, "host": c.hostaddr, "port": c.port, "status": c.status,
        })).collect::<Vec<_>>(),
    });
    let nb = NewBackup {
        cluster_id: cid,
        cluster_name: cluster.name.clone(),
        storage_id: row.id,
        job_id: Some(cx.job_id),
        shape: shape.clone(),
    };
    let bk = cx
        .store
        .tx(async |tx| backups::create(tx, &nb).await)
        .await?;
    let mut todo: Vec<Part> = shards.iter().map(|s| Part::Shard(s.id)).collect();
    todo.extend([Part::Compute, Part::Metadata]);
    memo = BackupMemo {
        cluster_id: Some(cid),
        extra: BackupExtra {
            backup_id: Some(bk.id),
            storage_id: Some(row.id),
            parts: todo
                .iter()
                .map(|p| PartProgress {
                    name: p.name(),
                    shard_id: match p {
                        Part::Shard(id) => Some(*id),
                        _ => None,
                    },
                    ..PartProgress::default()
                })
                .collect(),
            ..BackupExtra::default()
        },
        ..BackupMemo::default()
    };
    cx.progress.plan(
        ["check the storage", "consistent cut"]
            .into_iter()
            .map(str::to_string)
            .chain(todo.iter().map(|p| p.name()))
            .chain(std::iter::once("manifest".to_string())),
    );
    cx.commit(async |_| Ok(memo.clone())).await?;
    let r = Run {
        cx,
        info,
        passwords,
        bs,
        storage_id: row.id,
        cluster,
        backup_id: bk.id,
        dir: backups::dir_of(cid, bk.id),
        memo: Mutex::new(memo),
    };
    match take(&r, &todo, &shape, &bk.started_at).await {
        Ok((bytes, manifest)) => {
            let done =
                r.cx.store
                    .tx(async |tx| {
                        backups::finish(tx, bk.id, BackupStatus::Done, bytes, Some(&manifest), None)
                            .await
                    })
                    .await;
            if let Err(e) = done {
                return undo(&r, Error::from(e)).await;
            }
            let mut m = r.memo.lock().await.clone();
            m.stage = Stage::Done;
            cx.end(JobStatus::Done, &m).await
        }
        Err(e) => undo(&r, e).await,
    }
}

/// Checks the storage, stores every part (bounded parallelism), then the manifest: the total
/// bytes and the manifest's path.
async fn take(
    r: &Run<'_>,
    todo: &[Part],
    shape: &serde_json::Value,
    started: &chrono::NaiveDateTime,
) -> Result<(u64, String)> {
    let space =
        r.cx.step("check the storage", r.bs.space(CHECK_TIMEOUT))
            .await
            .map_err(|e| Error::Unavailable(format!("backup storage {}: {e}", r.bs.describe())))?;
    tracing::info!(
        job_id = r.cx.job_id,
        free_mb = space.free_bytes >> 20,
        "backup: storage ready"
    );
    let mut sources = HashMap::new();
    for p in todo {
        if let Part::Shard(id) = p {
            sources.insert(*id, parts::choose(r, *id).await?);
        }
    }
    let cut = r.cx.step("consistent cut", hold(r, &sources)).await?;
    // The futures are made first (lazy: nothing runs until the stream polls them), so the
    // stream holds no closure over borrowed data. The metadata part (the commit and DDL logs)
    // is read only after every snapshot ended: a transaction prepared inside a snapshot has
    // its commit-log row (if any) written by then, so a restore can decide every branch.
    let (last, first): (Vec<_>, Vec<_>) = todo
        .iter()
        .copied()
        .enumerate()
        .partition(|(_, p)| matches!(p, Part::Metadata));
    let (sources, cut) = (&sources, cut.as_ref());
    let futs: Vec<_> = first
        .into_iter()
        .map(|(i, p)| async move { (i, one(r, i, p, sources, cut).await) })
        .collect();
    let mut results: Vec<(usize, Result<Vec<FileEntry>>)> = stream::iter(futs)
        .buffer_unordered(PARALLEL_PARTS)
        .collect()
        .await;
    if results.iter().all(|(_, res)| res.is_ok()) {
        for (i, p) in last {
            results.push((i, one(r, i, p, sources, cut).await));
        }
    }
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut sorted = results;
    sorted.sort_by_key(|(i, _)| *i);
    for (_, res) in sorted {
        match res {
            Ok(f) => files.extend(f),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Unavailable(errors.join("; ")));
    }
    let step = r.cx.progress.step("manifest");
    let manifest = json!({
        "format": 1,
        "backup_id": r.backup_id,
        "cluster_id": r.cluster.id,
        "cluster_name": r.cluster.name,
        "storage_id": r.storage_id,
        "job_id": r.cx.job_id,
        "started_at": kunlun_meta::utc::format(started),
        "ended_at": kunlun_meta::utc::format(&chrono::Utc::now().naive_utc()),
        "shape": shape,
        "consistent": cut.is_some(),
        "cut_at": cut.map(|c| c.at),
        "cut": cut.map(|c| {
            c.positions
                .iter()
                .map(|(id, p)| (id.to_string(), p.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        }),
        "files": files,
    });
    let rel = format!("{}/manifest.json", r.dir);
    let bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::Internal(format!("manifest: {e}")))?;
    match r.bs.put_bytes(&rel, &bytes, SMALL_TIMEOUT).await {
        Ok(s) => {
            step.done_with(format!("{} bytes", s.bytes));
            Ok((files.iter().map(|f| f.bytes).sum::<u64>() + s.bytes, rel))
        }
        Err(e) => {
            step.fail(&e);
            Err(e)
        }
    }
}

/// Holds every shard at one cut when every source is a replica (`None`, and the memo says
/// `consistent: false`, otherwise): the sources named in the memo, their SQL threads stopped,
/// the cut read, each source brought exactly to its shard's position. Any failure starts the
/// stopped sources again.
async fn hold(r: &Run<'_>, sources: &HashMap<i64, Source>) -> Result<Option<Cut>> {
    let replicas = sources.values().all(Source::is_replica);
    {
        let mut m = r.memo.lock().await;
        m.consistent = Some(replicas);
        if replicas {
            m.frozen = sources.values().map(|s| s.node.id).collect();
        }
        let snapshot = m.clone();
        r.cx.commit(async |_| Ok(snapshot.clone())).await?;
    }
    if !replicas {
        return Ok(None);
    }
    let held = async {
        for s in sources.values() {
            cut::freeze(&s.node).await?;
        }
        let primaries: Vec<(i64, ShardNode)> = sources
            .values()
            .map(|s| (s.shard_id, s.primary.clone()))
            .collect();
        let mut at = cut::cut(&r.cx.store, &r.cluster.name, &primaries).await?;
        let limit =
            Duration::from_secs(u64::from(r.info.request.max_source_lag_s) + REACH_MARGIN_S);
        let waits = sources.values().map(|s| {
            let pos = at.positions.get(&s.shard_id).cloned();
            async move {
                match pos {
                    Some(p) => cut::reach(&s.node, &s.primary, &p, limit)
                        .await
                        .map(|held| (s.shard_id, held)),
                    None => Err(Error::Internal(format!("shard {}: no cut", s.shard_id))),
                }
            }
        });
        for res in futures::future::join_all(waits).await {
            let (shard_id, held) = res?;
            at.held.insert(shard_id, held);
        }
        Ok::<_, Error>(at)
    }
    .await;
    match held {
        Ok(at) => Ok(Some(at)),
        Err(e) => {
            for s in sources.values() {
                let _ = cut::thaw(&s.node).await;
            }
            Err(e)
        }
    }
}

/// The snapshot of a held source and its tables' checksums, side by side. A snapshot that fails
/// does not wait for the checksum scan (dropped: nothing to record, and the source is thawed
/// sooner); a snapshot that succeeds waits for it.
async fn snapshot_with_checksums(
    r: &Run<'_>,
    i: usize,
    src: &Source,
) -> (
    Result<FileEntry>,
    Option<Result<std::collections::BTreeMap<String, u64>>>,
) {
    let snap = parts::shard(r, i, src);
    let sums = cut::checksums(&src.node);
    tokio::pin!(snap, sums);
    let mut done_sums = None;
    let f = loop {
        tokio::select! {
            f = &mut snap => break f,
            s = &mut sums, if done_sums.is_none() => done_sums = Some(s),
        }
    };
    let s = match (done_sums, &f) {
        (Some(s), _) => Some(s),
        (None, Ok(_)) => Some(sums.await),
        (None, Err(_)) => None,
    };
    (f, s)
}

/// Stores part `i` (`p`) as a progress step, its memo entry following; a held shard source is
/// checked to be still at the cut and started again once its snapshot ended.
async fn one(
    r: &Run<'_>,
    i: usize,
    p: Part,
    sources: &HashMap<i64, Source>,
    cut: Option<&Cut>,
) -> Result<Vec<FileEntry>> {
    r.set(i, |x| x.phase = PartPhase::Checking).await;
    let step = r.cx.progress.step(p.name());
    let res = match p {
        Part::Shard(id) => match sources.get(&id) {
            Some(src) => {
                let held = cut.and_then(|c| c.held.get(&id));
                // A source held at the cut has its tables' checksums taken while its snapshot
                // streams (they read the same frozen data; in sequence they added a full scan
                // to the backup's time).
                let (mut f, sums) = match held {
                    Some(_) => {
                        let (f, s) = snapshot_with_checksums(r, i, src).await;
                        (f.map(|f| vec![f]), s)
                    }
                    None => (parts::shard(r, i, src).await.map(|f| vec![f]), None),
                };
                if let (Ok(_), Some(held)) = (&f, held) {
                    // Still at the cut after both: the snapshot and the checksums are of the
                    // cut (the position only moves forward).
                    if let Err(e) = cut::still_held(&src.node, held).await {
                        f = Err(Error::Unavailable(format!("shard {id}: {e}")));
                    } else {
                        match (sums, &mut f) {
                            (Some(Ok(s)), Ok(files)) => {
                                if let Some(file) = files.first_mut() {
                                    file.checksums = Some(s);
                                }
                            }
                            (Some(Err(e)), _) => {
                                tracing::warn!(shard_id = id, error = %e, "backup: no table checksums recorded for the shard");
                            }
                            _ => {}
                        }
                    }
                }
                if src.is_replica() {
                    if let Err(e) = cut::thaw(&src.node).await {
                        if f.is_ok() {
                            f = Err(Error::Unavailable(format!(
                                "shard {id}: its source's replication could not be started \
                                 again after the snapshot: {e}"
                            )));
                        }
                    }
                }
                f
            }
            None => Err(Error::Internal(format!("shard {id}: no source chosen"))),
        },
        Part::Compute => parts::compute(r, i).await.map(|f| vec![f]),
        Part::Metadata => parts::metadata(r, i, cut.map(|c| c.commit_log.as_slice())).await,
    };
    match &res {
        Ok(files) => {
            let bytes: u64 = files.iter().map(|f| f.bytes).sum();
            let gtid = files.iter().find_map(|f| f.gtid.clone());
            step.done_with(format!(
                "{bytes} bytes{}",
                gtid.as_deref()
                    .map(|g| format!(" at '{g}'"))
                    .unwrap_or_default()
            ));
            r.set(i, |x| {
                x.phase = PartPhase::Stored;
                x.bytes = Some(bytes);
                x.gtid = gtid;
            })
            .await;
        }
        Err(e) => {
            step.fail(e);
            let why = e.to_string();
            r.set(i, |x| {
                x.phase = PartPhase::Failed;
                x.outcome = Some(why);
            })
            .await;
        }
    }
    res
}

/// Ends a failed backup: its files removed from the storage, its part rows and its row
/// `failed` with `cause`, the job failed.
async fn undo(r: &Run<'_>, cause: Error) -> Result<()> {
    let frozen = r.memo.lock().await.frozen.clone();
    thaw_ids(r.cx, &frozen).await;
    let removed = r.bs.remove(&r.dir, REMOVE_TIMEOUT).await;
    let why = match &removed {
        Ok(()) => cause.to_string(),
        Err(e) => format!(
            "{cause}; removing what was stored ({}) failed too: {e}",
            r.dir
        ),
    };
    {
        let mut m = r.memo.lock().await;
        for p in m.parts.iter_mut() {
            p.phase = match p.phase {
                PartPhase::Stored if removed.is_ok() => PartPhase::Removed,
                PartPhase::Pending => PartPhase::Skipped,
                PartPhase::Checking | PartPhase::Storing => PartPhase::Failed,
                other => other,
            };
        }
    }
    fail_rows(r.cx, r.backup_id, &why).await;
    let m = r.memo.lock().await.clone();
    r.cx.progress.skip_pending("the backup failed");
    r.cx.fail(m, &Error::Unavailable(why)).await
}

/// Marks backup `bid` and its parts `failed` with `why` (logged when it cannot be stored).
async fn fail_rows(cx: &JobCtx, bid: i64, why: &str) {
    let why = why.to_string();
    let r = cx
        .store
        .tx(async |tx| {
            let bk = backups::get(tx, bid).await?;
            for p in backups::parts(tx, &bk).await? {
                if p.status != JobStatus::Failed {
                    let memo = json!({ "backup_id": bid, "error": format!("removed: {why}") });
                    backups::finish_part(tx, p.id, JobStatus::Failed, &memo).await?;
                }
            }
            backups::finish(tx, bid, BackupStatus::Failed, 0, None, Some(&why)).await
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(job_id = cx.job_id, backup_id = bid, error = %e, "backup: failed rows not stored");
    }
}

/// A job found `ongoing` with its backup recorded: what was stored is removed, the backup
/// and the job fail.
async fn resumed(
    cx: &JobCtx,
    info: &JobInfo<BackupRequest>,
    mut memo: BackupMemo,
    bid: i64,
) -> Result<()> {
    thaw_ids(cx, &memo.frozen).await;
    let cid = info.cluster()?;
    let dir = backups::dir_of(cid, bid);
    let why = match registry::open(&cx.store, &cx.fleet, &info.request.storage).await {
        Ok((_, bs)) => match bs.remove(&dir, REMOVE_TIMEOUT).await {
            Ok(()) => RESTARTED.to_string(),
            Err(e) => format!("{RESTARTED}; removing what was stored ({dir}) failed: {e}"),
        },
        Err(e) => format!("{RESTARTED}; the storage could not be opened to remove {dir}: {e}"),
    };
    for p in memo.parts.iter_mut() {
        if p.phase != PartPhase::Failed {
            p.phase = PartPhase::Skipped;
        }
    }
    fail_rows(cx, bid, &why).await;
    cx.fail(memo, &Error::Unavailable(why)).await
}

/// Starts replication again on the source replicas `ids` the cut stopped (idempotent: a
/// running replica stays as it is; a node gone since is skipped).
async fn thaw_ids(cx: &JobCtx, ids: &[i64]) {
    if ids.is_empty() {
        return;
    }
    match cx.store.list_shard_nodes(None).await {
        Ok(nodes) => {
            for n in nodes.iter().filter(|n| ids.contains(&n.id)) {
                let _ = cut::thaw(n).await;
            }
        }
        Err(e) => {
            tracing::warn!(job_id = cx.job_id, error = %e, "backup: the held sources could not be listed to start them again");
        }
    }
}
