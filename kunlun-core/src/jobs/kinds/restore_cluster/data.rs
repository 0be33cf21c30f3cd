//! The data part of a `restore_cluster` job (see the module doc of [`super`]): the backup's
//! files checked at planning, and once the new cluster's instances are installed every shard's
//! snapshot restored on each of its new nodes, the prepared XA branches ended from the
//! backed-up commit log, replication set up at the snapshot's GTID, and the compute schema
//! loaded.
//!
//! Invariants: a file is used only when its size and SHA-256 on the storage are the
//! manifest's; every node of a shard holds the same snapshot with the same branches ended the
//! same way before any replica follows its primary; the XA decisions and the account resets
//! are not binary-logged (`sql_log_bin=0`), so every node starts at the snapshot's GTID with
//! no transaction of its own; every remote call has a deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use kunlun_meta::model::{Machine, MemberState, NodeStatus, OnOff, ShardNode, SyncState, TxnCmd};
use kunlun_provision::recipe::sh_quote;
use serde::Deserialize;

use super::{RestoreExtra, ShardRestore};
use crate::accounts::MANAGER_USER;
use crate::backup::archive::{self, ArchivedFile, Index};
use crate::backup::manifest::{self, joined, ManifestFile};
use crate::backup::store::{BackupStore, Endpoint};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::jobs::driver::JobCtx;
use crate::jobs::plan::{ClusterPlan, InstancePlan, ShardPlan};
use crate::jobs::reseed::{self, clip, Instance};
use crate::jobs::seed;
use crate::storage::gtid::GtidPos;
use crate::storage::{NodeAddr, StorageConn, StorageOptions};
use crate::xa::round::{end_branch, Ended};
use crate::xa::xid::KunlunXid;

/// Deadline of reading one small file on the storage.
const SMALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Deadline of loading a compute node's schema.
const LOAD_TIMEOUT: Duration = Duration::from_secs(1800);
/// Largest commit log read (the backup writes at most 256 MB).
const MAX_LOG: usize = 300 * 1024 * 1024;

/// The steps the data restore reports, after the install's.
pub(super) fn steps(plan: &ClusterPlan) -> Vec<String> {
    let mut s: Vec<String> = plan
        .shards
        .iter()
        .map(|sh| format!("restore {}", sh.name))
        .collect();
    s.push("restore the compute schema".into());
    s
}

/// One commit-log line as the backup wrote it (`at_ms` only in the archive's lines).
#[derive(Debug, Deserialize)]
struct LogLine {
    comp_node_id: i64,
    txn_id: i64,
    next_txn_cmd: String,
    #[serde(default)]
    at_ms: Option<i64>,
}

/// The 2PC decisions of the backed-up commit log: `(comp_node_id, txn_id)` to its command.
type Decisions = HashMap<(i64, u64), TxnCmd>;

fn decisions(jsonl: &[u8]) -> Result<Decisions> {
    let mut out = HashMap::new();
    add_decisions(&mut out, jsonl, None)?;
    Ok(out)
}

/// Adds the decisions of `jsonl` to `out`, only those logged before `before_ms` when given
/// (a line without a time is then refused: the archive writes one on every line).
fn add_decisions(out: &mut Decisions, jsonl: &[u8], before_ms: Option<i64>) -> Result<()> {
    for (i, line) in jsonl.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let l: LogLine = serde_json::from_slice(line).map_err(|e| {
            Error::Conflict(format!(
                "the backed-up commit log is unreadable at line {}: {e}",
                i + 1
            ))
        })?;
        let cmd: TxnCmd = l.next_txn_cmd.parse().map_err(|e| {
            Error::Conflict(format!("the backed-up commit log, line {}: {e}", i + 1))
        })?;
        if let Some(before) = before_ms {
            let at = l.at_ms.ok_or_else(|| {
                Error::Conflict(format!(
                    "the archived commit log, line {}: no time recorded",
                    i + 1
                ))
            })?;
            if at >= before {
                continue;
            }
        }
        out.insert((l.comp_node_id, l.txn_id as u64), cmd);
    }
    Ok(())
}

/// What to do with a prepared branch at the cut: commit only what the log says was committed.
fn decide(d: &Decisions, xid: KunlunXid) -> TxnCmd {
    match d.get(&(i64::from(xid.comp_node_id), xid.txn_id())) {
        Some(TxnCmd::Commit) => TxnCmd::Commit,
        _ => TxnCmd::Abort,
    }
}

/// Restores backup `backup_id` into the installed instances of `plan` (each shard's first node
/// becomes its primary); `extra` records what was done per shard. Each node's own data is set
/// aside under the job's id; with `keep_aside` it stays there (for [`put_back`] after a
/// failure, or [`drop_aside`] once the whole restore is done), else it is removed once the
/// node started on the snapshot.
pub(super) async fn restore(
    cx: &JobCtx,
    backup_id: i64,
    at: Option<i64>,
    (machines, plan): (&[Machine], &ClusterPlan),
    extra: &mut RestoreExtra,
    keep_aside: bool,
) -> Result<()> {
    let (bs, manifest, b) = manifest::open(&cx.store, &cx.fleet, backup_id).await?;
    let mut log = match manifest.files.iter().find(|f| f.kind == "commit_log") {
        Some(f) => decisions(&bs.get_bytes(&f.rel, MAX_LOG, SMALL_TIMEOUT).await?)?,
        None => HashMap::new(),
    };
    // To a point in time: the archive's decisions logged before it join the backup's, and each
    // shard gets the archived binary log files past its snapshot, replayed up to the point.
    let pitr = match at {
        Some(at) => {
            let idx = archive::window(&*bs, &b, at).await?;
            for s in idx
                .commit_log
                .segments
                .iter()
                .filter(|s| s.from_ms < at * 1000)
            {
                let bytes = bs.get_bytes(&s.rel, MAX_LOG, SMALL_TIMEOUT).await?;
                add_decisions(&mut log, &bytes, Some(at * 1000))?;
            }
            extra.restore_time = Some(archive::utc(at));
            Some((idx, stop_utc(at)?))
        }
        None => None,
    };
    let snapshots = manifest.snapshots();
    if snapshots.len() != plan.shards.len() {
        return Err(Error::Conflict(format!(
            "backup {backup_id} holds {} shard snapshots for {} new shards",
            snapshots.len(),
            plan.shards.len()
        )));
    }
    extra.consistent = Some(manifest.consistent);
    let shards = plan.shards.iter().zip(snapshots).map(|(shard, file)| {
        let (bs, log) = (bs.clone(), &log);
        let replay = pitr.as_ref().map(|(idx, stop)| Replay {
            chain: chain(idx, file),
            stop: stop.clone(),
        });
        async move {
            let step = cx.progress.step(format!("restore {}", shard.name));
            let how = How { replay, keep_aside };
            match restore_shard(cx, machines, plan, shard, file, bs, log, how).await {
                Ok(r) => {
                    step.done_with(format!(
                        "from shard {} at '{}' ({} archived binlog files replayed): {} \
                         prepared branches committed, {} rolled back",
                        r.source_shard_id,
                        r.gtid,
                        r.replayed_files,
                        r.xa_committed,
                        r.xa_rolled_back
                    ));
                    Ok(r)
                }
                Err(e) => {
                    step.fail(&e);
                    Err(e)
                }
            }
        }
    });
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for r in join_all(shards).await {
        match r {
            Ok(s) => done.push(s),
            Err(e) => failed.push(e.to_string()),
        }
    }
    extra.shards = done;
    if !failed.is_empty() {
        return Err(Error::Unavailable(failed.join("; ")));
    }
    // To a point in time: the schema archived by then (DDL after the cut), else the backup's.
    let comp = match (&pitr, at) {
        (Some((idx, _)), Some(at)) => archive::schema_at(idx, &manifest, at),
        _ => manifest.files.iter().find(|f| f.kind == "compute").cloned(),
    };
    cx.step(
        "restore the compute schema",
        load_schema(cx, machines, plan, comp.as_ref(), bs),
    )
    .await
}

/// How a shard's nodes are restored: the replay past the snapshot, if any, and whether each
/// node's own data stays set aside.
struct How {
    replay: Option<Replay>,
    keep_aside: bool,
}

/// Archived binary log files to replay on a shard, and the point to stop at.
#[derive(Debug, Clone)]
struct Replay {
    chain: Vec<ArchivedFile>,
    /// `YYYY-MM-DD HH:MM:SS`, UTC.
    stop: String,
}

/// A restore point as the replay takes it.
fn stop_utc(at: i64) -> Result<String> {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .ok_or_else(|| Error::Invalid(format!("restore time {at} is out of range")))
}

/// The archived files of `snapshot`'s shard that hold transactions past it, in order.
fn chain(idx: &Index, snapshot: &ManifestFile) -> Vec<ArchivedFile> {
    let snap = GtidPos::parse(snapshot.gtid.as_deref().unwrap_or_default()).unwrap_or_default();
    snapshot
        .shard_id
        .and_then(|id| idx.shards.get(&id))
        .map(|s| {
            s.files
                .iter()
                .filter(|f| !GtidPos::parse(&f.end).is_ok_and(|e| snap.contains(&e)))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Checks backup `backup_id` before anything is installed: its manifest readable, consistent
/// across its shards unless `allow_inconsistent`, and every file on the storage with the size
/// and SHA-256 the manifest records.
pub(super) async fn check(
    cx: &JobCtx,
    backup_id: i64,
    allow_inconsistent: bool,
    at: Option<i64>,
) -> Result<()> {
    let (bs, mut manifest, b) = manifest::open(&cx.store, &cx.fleet, backup_id).await?;
    if !manifest.consistent && !allow_inconsistent {
        return Err(Error::Conflict(format!(
            "backup {backup_id} has no common cut across its shards (a shard was read from its \
             primary): a distributed transaction may be restored on some shards and not on \
             others; restore it anyway with allow_inconsistent"
        )));
    }
    if let Some(at) = at {
        // The archived files the restore reads are checked as the backup's are.
        let idx = archive::window(&*bs, &b, at).await?;
        let snapshots: Vec<ManifestFile> = manifest
            .files
            .iter()
            .filter(|f| f.kind == "storage")
            .cloned()
            .collect();
        for s in &snapshots {
            manifest
                .files
                .extend(chain(&idx, s).into_iter().map(|f| ManifestFile {
                    kind: "binlog".into(),
                    shard_id: s.shard_id,
                    rel: f.rel,
                    bytes: f.bytes,
                    sha256: f.sha256,
                    ..ManifestFile::default()
                }));
        }
        // The compute schema of that time, when archived past the backup.
        if let Some(f) = archive::schema_at(&idx, &manifest, at) {
            if !manifest.files.iter().any(|m| m.rel == f.rel) {
                manifest.files.push(f);
            }
        }
        manifest.files.extend(
            idx.commit_log
                .segments
                .iter()
                .filter(|s| s.from_ms < at * 1000)
                .map(|s| ManifestFile {
                    kind: "commit_log_archive".into(),
                    shard_id: None,
                    rel: s.rel.clone(),
                    bytes: s.bytes,
                    sha256: s.sha256.clone(),
                    ..ManifestFile::default()
                }),
        );
    }
    manifest::check_files(&*bs, &manifest.files).await
}

/// A planned storage node as the reseed steps take it.
pub(super) fn instance(
    fleet: &Provisioner,
    machines: &[Machine],
    plan: &ClusterPlan,
    n: &InstancePlan,
) -> Result<Instance> {
    let machine = machines
        .iter()
        .find(|m| m.id == n.slot.machine_id)
        .cloned()
        .ok_or_else(|| {
            Error::Conflict(format!(
                "machine {} is no longer registered",
                n.slot.machine_id
            ))
        })?;
    Ok(Instance {
        node: ShardNode {
            id: 0,
            shard_id: 0,
            db_cluster_id: 0,
            hostaddr: n.slot.hostaddr.clone(),
            port: n.slot.port,
            user_name: MANAGER_USER.into(),
            passwd: plan.passwords.manager.clone(),
            master_priority: 0,
            ro_weight: 0,
            status: NodeStatus::Active,
            member_state: MemberState::Replica,
            sync_state: SyncState::Fsync,
            replica_delay: 0,
            backup_node: OnOff::Off,
            innodb_buffer_pool_mb: 0,
            when_created: None,
        },
        target: fleet.target(&machine),
        spec: Provisioner::storage_spec(plan, n),
        machine,
    })
}

/// One shard: the snapshot on every node, the branches ended, the nodes at its GTID, the
/// replicas following the first node.
#[allow(clippy::too_many_arguments)]
async fn restore_shard(
    cx: &JobCtx,
    machines: &[Machine],
    plan: &ClusterPlan,
    shard: &ShardPlan,
    file: &ManifestFile,
    bs: Arc<dyn BackupStore>,
    log: &Decisions,
    how: How,
) -> Result<ShardRestore> {
    let gtid = file.gtid.clone().unwrap_or_default();
    let usable = GtidPos::parse(&gtid)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            if gtid.trim().is_empty() {
                Err("empty".to_string())
            } else {
                Ok(())
            }
        });
    if let Err(e) = usable {
        return Err(Error::Conflict(format!(
            "the snapshot {} records no usable GTID ('{gtid}'): {e}",
            file.rel
        )));
    }
    let insts: Vec<Instance> = shard
        .nodes
        .iter()
        .map(|n| instance(&cx.fleet, machines, plan, n))
        .collect::<Result<_>>()?;
    let restores = insts
        .iter()
        .map(|inst| restore_node(cx, inst, &*bs, file, &gtid, log, &how));
    let mut ended = Settled::default();
    let mut errors = Vec::new();
    let mut reached: Vec<String> = Vec::new();
    for (i, r) in join_all(restores).await.into_iter().enumerate() {
        match r {
            // Every node ended the same branches; the primary's count is the shard's.
            Ok(n) => {
                if i == 0 {
                    ended = n.clone();
                }
                reached.push(n.gtid);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Unavailable(errors.join("; ")));
    }
    // Every node replayed the same files to the same point: the same position.
    if reached.iter().any(|g| *g != reached[0]) {
        return Err(Error::Conflict(format!(
            "the nodes of {} reached different positions after the replay: {}",
            shard.name,
            reached.join(" / ")
        )));
    }
    let gtid = reached.first().cloned().unwrap_or(gtid);
    let primary = &insts[0];
    // Followed from where both stand (the snapshot's GTID, set by `settle` on every node),
    // the binlog not reset: every node keeps the snapshot's GTID history, so any of them can
    // be promoted later and the others find their position in its binlog.
    let at = (primary.node.hostaddr.as_str(), primary.node.port);
    for r in &insts[1..] {
        seed::attach(&r.addr(), at, &plan.passwords.repl, None).await?;
    }
    Ok(ShardRestore {
        shard: shard.name.clone(),
        source_shard_id: file.shard_id.unwrap_or_default(),
        gtid,
        replayed_files: ended.replayed,
        xa_committed: ended.committed,
        xa_rolled_back: ended.rolled_back,
        xa_left: ended.left,
    })
}

/// What [`settle`] did with a node's prepared branches, and where the node stands.
#[derive(Debug, Clone, Default)]
struct Settled {
    committed: usize,
    rolled_back: usize,
    /// Left prepared: not a Kunlun transaction's, or held by a session.
    left: usize,
    /// Archived binary log files replayed.
    replayed: usize,
    /// The node's GTID position (the snapshot's, or where the replay reached).
    gtid: String,
}

/// One node: stopped, its fresh data set aside, the snapshot streamed in and prepared, started
/// with the new cluster's accounts, its prepared branches ended and its GTID state the
/// snapshot's.
async fn restore_node(
    cx: &JobCtx,
    inst: &Instance,
    bs: &dyn BackupStore,
    file: &ManifestFile,
    gtid: &str,
    log: &Decisions,
    how: &How,
) -> Result<Settled> {
    let fleet = &cx.fleet;
    let rs = reseed::reseed(fleet)?;
    reseed::stop(fleet, inst).await?;
    // The fresh instance's own data is set aside under the job's id (a reseed tag is digits).
    reseed::set_aside(fleet, inst, &cx.job_id.to_string()).await?;
    let receive = rs
        .restore_script(inst.base_dir(), file.compression()?)
        .map_err(|e| Error::Conflict(e.to_string()))?;
    let sink = Endpoint {
        target: inst.target.clone(),
        command: format!("sh -c {}", sh_quote(&receive)),
    };
    bs.get(&file.rel, &sink, reseed::copy_timeout(file.data_kb(), None))
        .await
        .map_err(|e| {
            Error::Unavailable(clip(&format!(
                "restoring {} into {}: {e}",
                file.rel,
                inst.addr()
            )))
        })?;
    reseed::start_with_users(fleet, inst).await?;
    if !how.keep_aside {
        reseed::drop_aside(fleet, inst).await?;
    }
    let (at, replayed) = match &how.replay {
        Some(r) if !r.chain.is_empty() => replay_node(cx, inst, bs, gtid, r).await?,
        _ => (gtid.to_string(), 0),
    };
    let mut s = settle(&inst.addr(), &at, log)
        .await
        .map_err(|e| Error::Unavailable(format!("{}: {e}", inst.addr())))?;
    s.replayed = replayed;
    s.gtid = at;
    Ok(s)
}

/// `@@gtid_binlog_pos` of `addr`.
async fn binlog_pos(c: &mut StorageConn) -> crate::storage::Result<String> {
    let rows: Vec<Option<String>> = c.query("SELECT @@gtid_binlog_pos").await?;
    Ok(rows.into_iter().next().flatten().unwrap_or_default())
}

/// Replays `r`'s archived files on the restored node `inst` (at the snapshot's `gtid`, its
/// prepared branches still prepared): the binlog starts at the snapshot's GTID, then each file
/// in order applies its events past the node's position and before the point; a file that
/// stopped before its end (an event at or after the point) ends the replay, so what is applied
/// is a prefix of the shard's history. Returns the position reached and the files replayed.
async fn replay_node(
    cx: &JobCtx,
    inst: &Instance,
    bs: &dyn BackupStore,
    gtid: &str,
    r: &Replay,
) -> Result<(String, usize)> {
    let addr = inst.addr();
    let sql = |e: crate::storage::Error| Error::Unavailable(format!("{addr}: {e}"));
    let mut c = StorageConn::connect(&addr, StorageOptions::default())
        .await
        .map_err(sql)?;
    // The node's own settings, read before anything changes them.
    let saved = match replay_settings(&mut c).await {
        Ok(s) => s,
        Err(e) => {
            c.close().await;
            return Err(sql(e));
        }
    };
    let set = async {
        c.exec(&format!(
            "RESET MASTER; SET GLOBAL gtid_binlog_state = '{gtid}'"
        ))
        .await?;
        c.exec(REPLAY_SETTINGS).await
    }
    .await;
    c.close().await;
    let replayed = match set {
        Ok(()) => replay_files(cx, inst, bs, gtid, r).await,
        Err(e) => Err(sql(e)),
    };
    // The node's own settings back, whatever happened since they were read (a failed restore
    // is rolled back, but a node must never be left running without durability).
    let back = async {
        let mut c = StorageConn::connect(&addr, StorageOptions::default()).await?;
        let r = c.exec(&saved).await;
        c.close().await;
        r
    }
    .await;
    match (replayed, back) {
        (Ok(done), Ok(())) => Ok(done),
        (Ok(_), Err(e)) => Err(sql(e)),
        (Err(e), back) => {
            if let Err(b) = back {
                tracing::warn!(node = %addr, error = %b, "restore: the replay failed and the node's settings were not put back");
            }
            Err(e)
        }
    }
}

/// While archived files are replayed into a restored node nobody else uses: no wait for
/// semi-sync acknowledgements (the node has no replica yet: each replay waited for the whole
/// semi-sync timeout once) and no sync per transaction (the bench measured the replay at a
/// third of a plain `mariadb-binlog | mariadb`). Durability comes back with the node's own
/// settings before the node is used.
const REPLAY_SETTINGS: &str = "SET GLOBAL rpl_semi_sync_master_enabled = OFF; \
                               SET GLOBAL sync_binlog = 0; \
                               SET GLOBAL innodb_flush_log_at_trx_commit = 2";

/// The statement that puts back the settings [`REPLAY_SETTINGS`] changes, as the node has them.
async fn replay_settings(c: &mut StorageConn) -> crate::storage::Result<String> {
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = c
        .query(
            "SELECT CONCAT(@@rpl_semi_sync_master_enabled), CONCAT(@@sync_binlog), \
             CONCAT(@@innodb_flush_log_at_trx_commit)",
        )
        .await?;
    let (semi, sync, flush) = rows.into_iter().next().unwrap_or_default();
    let num = |v: Option<String>, default: &str| {
        v.filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| default.to_string())
    };
    Ok(format!(
        "SET GLOBAL rpl_semi_sync_master_enabled = {}; SET GLOBAL sync_binlog = {}; \
         SET GLOBAL innodb_flush_log_at_trx_commit = {}",
        num(semi, "1"),
        num(sync, "1"),
        num(flush, "1")
    ))
}

/// The archived files of `r` replayed in order on `inst` (see [`replay_node`]).
async fn replay_files(
    cx: &JobCtx,
    inst: &Instance,
    bs: &dyn BackupStore,
    gtid: &str,
    r: &Replay,
) -> Result<(String, usize)> {
    let addr = inst.addr();
    let sql = |e: crate::storage::Error| Error::Unavailable(format!("{addr}: {e}"));
    let script = reseed::reseed(&cx.fleet)?
        .binlog_replay_script(inst.base_dir(), &r.stop)
        .map_err(|e| Error::Conflict(e.to_string()))?;
    let sink = Endpoint {
        target: inst.target.clone(),
        command: format!("sh -c {}", sh_quote(&script)),
    };
    let mut pos = gtid.to_string();
    let mut replayed = 0;
    for f in &r.chain {
        bs.get(&f.rel, &sink, reseed::copy_timeout(f.bytes / 1024, None))
            .await
            .map_err(|e| {
                Error::Unavailable(clip(&format!("replaying {} on {addr}: {e}", f.rel)))
            })?;
        replayed += 1;
        let mut c = StorageConn::connect(&addr, StorageOptions::default())
            .await
            .map_err(sql)?;
        let p = binlog_pos(&mut c).await;
        c.close().await;
        pos = p.map_err(sql)?;
        let end = GtidPos::parse(&f.end).map_err(|e| Error::Conflict(e.to_string()))?;
        let now = GtidPos::parse(&pos).map_err(|e| Error::Conflict(e.to_string()))?;
        if !now.contains(&end) {
            break;
        }
    }
    Ok((pos, replayed))
}

/// On a restored node: every prepared Kunlun branch ended as `log` says, nothing
/// binary-logged, then the binlog emptied and the GTID state set to the snapshot's.
async fn settle(addr: &NodeAddr, gtid: &str, log: &Decisions) -> crate::storage::Result<Settled> {
    let mut c = StorageConn::connect(addr, StorageOptions::default()).await?;
    let r = async {
        c.exec("SET SESSION sql_log_bin = 0").await?;
        let mut ended = Settled::default();
        for x in c.xa_recover().await? {
            let Some(xid) = x.plain_gtrid().and_then(KunlunXid::parse) else {
                tracing::warn!(node = %addr, xid = ?x, "restore: a prepared branch of no Kunlun transaction is left as it is");
                ended.left += 1;
                continue;
            };
            let cmd = decide(log, xid);
            match end_branch(&mut c, xid, cmd).await? {
                Ended::Done => match cmd {
                    TxnCmd::Commit => ended.committed += 1,
                    TxnCmd::Abort => ended.rolled_back += 1,
                },
                Ended::Attached => {
                    // Nobody else is connected to a node being restored.
                    tracing::warn!(node = %addr, %xid, "restore: a prepared branch is held by a session");
                    ended.left += 1;
                }
            }
        }
        c.exec("RESET MASTER").await?;
        c.exec(&format!(
            "SET GLOBAL gtid_binlog_state = '{gtid}'; SET GLOBAL gtid_slave_pos = '{gtid}'"
        ))
        .await?;
        Ok(ended)
    }
    .await;
    c.close().await;
    r
}

/// The backed-up schema loaded into every new compute node (nothing to do for a backup
/// without one).
async fn load_schema(
    cx: &JobCtx,
    machines: &[Machine],
    plan: &ClusterPlan,
    file: Option<&ManifestFile>,
    bs: Arc<dyn BackupStore>,
) -> Result<()> {
    let Some(file) = file else {
        return Ok(());
    };
    let loads = plan.comps.iter().map(|c| {
        let bs = bs.clone();
        async move {
            let spec = Provisioner::compute_spec(plan, c);
            let script = cx.fleet.compute.schema_load_script(&spec).ok_or_else(|| {
                Error::Conflict(format!(
                    "the {} recipe cannot load a schema",
                    cx.fleet.compute.name()
                ))
            })?;
            let machine = machines
                .iter()
                .find(|m| m.id == c.slot.machine_id)
                .ok_or_else(|| {
                    Error::Conflict(format!(
                        "machine {} is no longer registered",
                        c.slot.machine_id
                    ))
                })?;
            let sink = Endpoint {
                target: cx.fleet.target(machine),
                command: format!("sh -c {}", sh_quote(&script)),
            };
            bs.get(&file.rel, &sink, LOAD_TIMEOUT).await.map_err(|e| {
                Error::Unavailable(clip(&format!(
                    "schema into compute {}:{}: {e}",
                    c.slot.hostaddr, c.slot.port
                )))
            })
        }
    });
    joined(join_all(loads).await).map_err(Error::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_logged_commit_commits_a_prepared_branch() {
        let log = decisions(
            b"{\"id\":1,\"comp_node_id\":3,\"txn_id\":4294967297,\"next_txn_cmd\":\"commit\"}\n\
              {\"id\":2,\"comp_node_id\":3,\"txn_id\":4294967298,\"next_txn_cmd\":\"abort\"}\n\n",
        )
        .unwrap();
        let x = |local| KunlunXid {
            comp_node_id: 3,
            start_ts: 1,
            local_xid: local,
        };
        assert_eq!(decide(&log, x(1)), TxnCmd::Commit);
        assert_eq!(decide(&log, x(2)), TxnCmd::Abort);
        assert_eq!(decide(&log, x(3)), TxnCmd::Abort, "no decision by the cut");
        let other = KunlunXid {
            comp_node_id: 4,
            ..x(1)
        };
        assert_eq!(decide(&log, other), TxnCmd::Abort, "another coordinator's");
        assert!(decisions(b"{\"comp_node_id\":1}\n").is_err());
        assert!(decisions(b"not json\n").is_err());
    }
}
