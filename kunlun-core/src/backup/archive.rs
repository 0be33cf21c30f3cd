//! Continuous binlog archiving: the leader keeps, next to each cluster's latest backup, every
//! shard's binary log from that backup's cut onward and the commit log's decisions, so a
//! restore can replay to any second since (a point-in-time restore, see
//! `jobs/kinds/restore_cluster`).
//!
//! Layout on the storage of the cluster's latest done backup, under `cluster_<id>/binlog/`:
//! `index.json` (this module's [`Index`], rewritten atomically after every round),
//! `shard_<id>/<node id>-<binlog file>` (closed binary log files as the primary wrote them) and
//! `commit_log/<from ms>-<until ms>.jsonl` (decisions logged in that window).
//!
//! A round, per shard: on the primary, read its clock `now` and whether it is writable; when it
//! wrote since the archive's end, `FLUSH BINARY LOGS` closes the file being written; every closed
//! file holding events after the archive's end is streamed to the storage (a file's range is the
//! GTID list it starts with up to the next file's). The shard is then archived until `now`:
//! every event written before `now` was in a file closed by the flush.
//!
//! Invariants:
//! - coverage is claimed only from a writable primary (`read_only` off): after a failover the
//!   old primary, fenced, never extends it, so no write of the new primary before `covered_until`
//!   is missing from the archive;
//! - the archive is one history: a new primary must hold the archive's last GTIDs (same domain,
//!   server and sequence number in its binlog state), and its binary logs must reach back to the
//!   archive's end; otherwise the shard records a `gap` and its coverage stops there;
//! - the commit log is archived by `prepare_ts` windows that end [`LOG_LAG`] behind the store's
//!   clock (a decision is assumed committed within that time of its statement's start);
//! - nothing here writes to a shard beyond `FLUSH BINARY LOGS`; every call has a deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kunlun_meta::api::{BackupArchive, ShardArchive};
use kunlun_meta::model::{Backup, BackupStatus, Cluster, MemberState, NodeStatus, ShardNode};
use kunlun_meta::store::repo::{backups, commit_log, nodes, shards};
use kunlun_meta::Store;
use kunlun_provision::recipe::sh_quote;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::manifest::{self, Manifest, ManifestFile};
use super::registry;
use super::store::{BackupStore, Endpoint};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::jobs::plan::SystemPasswords;
use crate::jobs::reseed;
use crate::storage::gtid::{GtidPos, GtidState};
use crate::storage::{NodeAddr, StorageConn, StorageOptions};

/// How far behind the store's clock the archived commit log ends.
pub const LOG_LAG: Duration = Duration::from_secs(10);
/// How far before a backup's cut the archived commit log starts (decisions already in the
/// backup are archived again; the restore reads both as one set).
pub(super) const LOG_OVERLAP_MS: i64 = 60_000;
/// Most decisions archived in one window; a fuller window is archived over several rounds.
const LOG_WINDOW_ROWS: u32 = 100_000;
/// Largest index read.
const MAX_INDEX: usize = 64 * 1024 * 1024;
/// Deadline of reading or writing a small file on the storage.
const SMALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of one SQL statement on a primary.
const SQL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one compute schema dump.
const DUMP_TIMEOUT: Duration = Duration::from_secs(300);

/// The archive's directory of cluster `cluster_id` on a storage.
pub fn dir_of(cluster_id: i64) -> String {
    format!("cluster_{cluster_id}/binlog")
}

fn index_rel(cluster_id: i64) -> String {
    format!("{}/index.json", dir_of(cluster_id))
}

/// The archive of one cluster (its `index.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub format: u32,
    pub cluster_id: i64,
    pub cluster_name: String,
    /// The backup whose cut the archive started from.
    pub from_backup: i64,
    /// By shard id.
    pub shards: BTreeMap<i64, ShardLog>,
    pub commit_log: LogArchive,
    /// The compute schema each time it changed (absent in an index written before).
    #[serde(default)]
    pub compute: SchemaArchive,
}

/// The compute nodes' schema archived past the backup: a dump each time a round found it
/// changed, so a point-in-time restore gets the schema of its time (DDL is run on the compute
/// nodes; the shards' binary logs hold only what it did to their tables).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaArchive {
    pub snapshots: Vec<SchemaSnapshot>,
    /// The last round's failure, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One archived schema dump.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaSnapshot {
    pub rel: String,
    pub bytes: u64,
    pub sha256: String,
    /// Unix milliseconds (the metadata store's clock, whole seconds): the dump began after.
    pub taken_ms: i64,
}

/// One shard's archived binary log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLog {
    /// Where the archive starts (the backup's snapshot of the shard).
    pub start_gtid: String,
    /// Where it ends: everything up to here is in `files` (or in the snapshot).
    pub end_gtid: String,
    /// Unix seconds: every event written before is archived.
    pub covered_until: Option<i64>,
    /// `host:port` of the primary archived last, and its node id.
    pub source: String,
    #[serde(default)]
    pub source_node: i64,
    pub files: Vec<ArchivedFile>,
    pub gap: Option<String>,
    pub error: Option<String>,
}

/// One archived binary log file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedFile {
    pub node_id: i64,
    pub source: String,
    pub name: String,
    pub rel: String,
    pub bytes: u64,
    pub sha256: String,
    /// The GTID list the file starts with, and the next file's (its end).
    pub start: String,
    pub end: String,
}

/// The archived commit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogArchive {
    /// Unix milliseconds: every decision logged before is archived.
    pub until_ms: Option<i64>,
    pub segments: Vec<LogSegment>,
}

/// Decisions logged in `[from_ms, until_ms)`, as JSON lines of
/// [`commit_log::TimedDecision`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSegment {
    pub rel: String,
    pub bytes: u64,
    pub sha256: String,
    pub from_ms: i64,
    pub until_ms: i64,
    pub rows: u64,
}

/// The archive index of cluster `cluster_id` on `bs`, if there is one.
pub async fn read_index(bs: &dyn BackupStore, cluster_id: i64) -> Result<Option<Index>> {
    match bs
        .get_bytes(&index_rel(cluster_id), MAX_INDEX, SMALL_TIMEOUT)
        .await
    {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Conflict(format!(
                "the binlog archive index of cluster {cluster_id} is unreadable: {e}"
            ))
        }),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Index {
    /// A new archive starting at backup `b`'s snapshots.
    fn start(c: &Cluster, b: &Backup, m: &Manifest) -> Index {
        let shards = m
            .files
            .iter()
            .filter(|f| f.kind == "storage")
            .filter_map(|f| {
                let g = f.gtid.clone().unwrap_or_default();
                f.shard_id.map(|id| {
                    (
                        id,
                        ShardLog {
                            start_gtid: g.clone(),
                            end_gtid: g,
                            ..ShardLog::default()
                        },
                    )
                })
            })
            .collect();
        Index {
            format: 1,
            cluster_id: c.id,
            cluster_name: c.name.clone(),
            from_backup: b.id,
            shards,
            commit_log: LogArchive {
                until_ms: m.cut_at.map(|s| s * 1000 - LOG_OVERLAP_MS),
                segments: Vec::new(),
            },
            compute: SchemaArchive::default(),
        }
    }

    /// Unix seconds until which every shard and the commit log are archived.
    pub fn restorable_until(&self) -> Option<i64> {
        let log = self.commit_log.until_ms?.div_euclid(1000);
        let mut until = log;
        for s in self.shards.values() {
            until = until.min(s.covered_until?);
        }
        (!self.shards.is_empty()).then_some(until)
    }
}

/// The newest done backup of cluster `cluster_id`, if any.
pub async fn latest_done(store: &Store, cluster_id: i64) -> Result<Option<Backup>> {
    let mut after = None;
    loop {
        let page = store
            .read(async |tx| backups::list_page(tx, Some(cluster_id), 100, after).await)
            .await?;
        if let Some(b) = page
            .items
            .iter()
            .find(|b| b.status == BackupStatus::Done && b.manifest.is_some())
        {
            return Ok(Some(b.clone()));
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(None),
        }
    }
}

/// Archives every cluster every `interval` until `cancel` (the leader's actor).
pub async fn run(store: Store, fleet: Provisioner, interval: Duration, cancel: CancellationToken) {
    tracing::info!(?interval, "binlog archiving started");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let clusters = match store.list_clusters().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "binlog archiving: cannot list the clusters");
                continue;
            }
        };
        for c in clusters {
            if cancel.is_cancelled() {
                return;
            }
            if let Err(e) = archive_cluster(&store, &fleet, &c).await {
                tracing::warn!(cluster_id = c.id, error = %e, "binlog archiving: round failed");
            }
        }
    }
}

/// One round for cluster `c`: every shard, the commit log, then the index.
pub async fn archive_cluster(store: &Store, fleet: &Provisioner, c: &Cluster) -> Result<()> {
    let Some(b) = latest_done(store, c.id).await? else {
        return Ok(());
    };
    let (_, bs) = registry::open_id(store, fleet, b.storage_id).await?;
    let mut pruned = Vec::new();
    let mut idx = match read_index(&*bs, c.id).await? {
        Some(mut i) => {
            // Never at the cost of the round: `prune` changes the index only when it succeeds.
            pruned = super::prune::prune(store, &*bs, &b, &mut i).await.unwrap_or_else(|e| {
                tracing::warn!(cluster_id = c.id, error = %e, "binlog archiving: not pruned this round");
                Vec::new()
            });
            i
        }
        None => {
            let m = manifest::read(&*bs, &b).await?;
            if m.cut_at.is_none() {
                // A backup without a cut has no point to start a history from.
                return Ok(());
            }
            tracing::info!(
                cluster_id = c.id,
                backup_id = b.id,
                "binlog archiving: a new archive starts at the backup"
            );
            Index::start(c, &b, &m)
        }
    };
    let cid = c.id;
    let (shard_rows, node_rows) = store
        .read(async |tx| {
            Ok((
                shards::list(tx, Some(cid)).await?,
                nodes::list_by_cluster(tx, cid).await?,
            ))
        })
        .await?;
    for s in &shard_rows {
        let Some(log) = idx.shards.get_mut(&s.id) else {
            // A shard added after the backup has no base to replay onto.
            continue;
        };
        let primary = node_rows
            .iter()
            .find(|n| n.shard_id == s.id && n.member_state == MemberState::Source);
        let r = match primary {
            // Out of service (a restore replacing its data, a stop): not archived this round.
            Some(p) if p.status != NodeStatus::Active => Err(Error::Unavailable(format!(
                "shard {}'s primary (node {}) is {}",
                s.id, p.id, p.status
            ))),
            Some(p) => {
                tracing::debug!(
                    cluster_id = cid,
                    shard_id = s.id,
                    node_id = p.id,
                    "binlog archiving: round"
                );
                archive_shard(store, fleet, &*bs, cid, s.id, p, log).await
            }
            None => Err(Error::Unavailable(format!("shard {} has no primary", s.id))),
        };
        log.error = r.err().map(|e| e.to_string());
        if let Some(e) = &log.error {
            tracing::warn!(cluster_id = cid, shard_id = s.id, error = %e, "binlog archiving: shard not archived");
        }
    }
    if let Err(e) = archive_log(store, &*bs, c, &mut idx).await {
        tracing::warn!(cluster_id = cid, error = %e, "binlog archiving: commit log not archived");
    }
    let r = archive_schema(store, fleet, &*bs, c, &mut idx).await;
    idx.compute.error = r.err().map(|e| e.to_string());
    if let Some(e) = &idx.compute.error {
        tracing::warn!(cluster_id = cid, error = %e, "binlog archiving: compute schema not archived");
    }
    let bytes = serde_json::to_vec_pretty(&idx)
        .map_err(|e| Error::Internal(format!("archive index: {e}")))?;
    bs.put_bytes(&index_rel(cid), &bytes, SMALL_TIMEOUT).await?;
    // Only once the index no longer names them (a crash in between leaves files no index
    // names, never an index naming missing files), and never a path archived again meanwhile.
    pruned.retain(|r| {
        !idx.shards
            .values()
            .any(|s| s.files.iter().any(|f| &f.rel == r))
            && !idx.commit_log.segments.iter().any(|s| &s.rel == r)
            && !idx.compute.snapshots.iter().any(|s| &s.rel == r)
    });
    for rel in pruned {
        if let Err(e) = bs.remove(&rel, SMALL_TIMEOUT).await {
            tracing::warn!(cluster_id = cid, rel, error = %e, "binlog archiving: a pruned file not removed");
        }
    }
    Ok(())
}

/// `SELECT` of one row of text columns.
async fn row(c: &mut StorageConn, sql: &str) -> Result<Vec<Option<String>>> {
    let rows: Vec<mysql_async::Row> = c
        .query(sql)
        .await
        .map_err(|e| Error::Unavailable(format!("{}: {sql}: {e}", c.node())))?;
    let r = rows
        .into_iter()
        .next()
        .ok_or_else(|| Error::Unavailable(format!("{}: {sql}: no row", c.node())))?;
    Ok((0..r.len())
        .map(|i| {
            r.get_opt::<Option<String>, _>(i)
                .and_then(|v| v.ok())
                .flatten()
        })
        .collect())
}

fn gtid(s: &str, what: &str) -> Result<GtidPos> {
    GtidPos::parse(s).map_err(|e| Error::Conflict(format!("{what}: {e}")))
}

/// The GTID list binary log `file` of `c` starts with (its `Gtid_list` event), as a position.
async fn starts_at(c: &mut StorageConn, file: &str) -> Result<GtidPos> {
    kunlun_provision::recipe::reseed::check_binlog_name(file)
        .map_err(|e| Error::Conflict(e.to_string()))?;
    let sql = format!("SHOW BINLOG EVENTS IN '{file}' LIMIT 4");
    let rows: Vec<mysql_async::Row> = c
        .query(&sql)
        .await
        .map_err(|e| Error::Unavailable(format!("{}: {sql}: {e}", c.node())))?;
    for r in rows {
        let ty: Option<String> = r.get_opt(2).and_then(|v| v.ok());
        if ty.as_deref() == Some("Gtid_list") {
            let info: String = r.get_opt(5).and_then(|v| v.ok()).unwrap_or_default();
            let list = info.trim().trim_start_matches('[').trim_end_matches(']');
            let st = GtidState::parse(list)
                .map_err(|e| Error::Conflict(format!("{file}: its GTID list: {e}")))?;
            return Ok(st.pos());
        }
    }
    Err(Error::Conflict(format!(
        "{}: binary log {file} has no GTID list event",
        c.node()
    )))
}

/// One shard's round on its primary `p` (see the module doc).
async fn archive_shard(
    store: &Store,
    fleet: &Provisioner,
    bs: &dyn BackupStore,
    cluster_id: i64,
    shard_id: i64,
    p: &ShardNode,
    log: &mut ShardLog,
) -> Result<()> {
    if log.gap.is_some() {
        return Ok(());
    }
    let addr = NodeAddr::from(p);
    let opts = StorageOptions {
        read_timeout: SQL_TIMEOUT,
        ..StorageOptions::default()
    };
    let mut c = StorageConn::connect(&addr, opts)
        .await
        .map_err(|e| Error::Unavailable(format!("{addr}: {e}")))?;
    let r = archive_on(store, fleet, bs, cluster_id, shard_id, p, &mut c, log).await;
    c.close().await;
    r
}

#[allow(clippy::too_many_arguments)]
async fn archive_on(
    store: &Store,
    fleet: &Provisioner,
    bs: &dyn BackupStore,
    cluster_id: i64,
    shard_id: i64,
    p: &ShardNode,
    c: &mut StorageConn,
    log: &mut ShardLog,
) -> Result<()> {
    let source = format!("{}:{}", p.hostaddr, p.port);
    let facts = row(
        c,
        "SELECT CAST(UNIX_TIMESTAMP() AS CHAR), @@gtid_binlog_pos, CAST(@@read_only AS CHAR), \
         @@gtid_binlog_state",
    )
    .await?;
    let text = |i: usize| facts.get(i).cloned().flatten().unwrap_or_default();
    let now: i64 = text(0)
        .parse()
        .map_err(|_| Error::Internal(format!("{source}: odd clock '{}'", text(0))))?;
    // `@@read_only` reads as `OFF`/`ON` (as text) or 0/1.
    let writable = matches!(text(2).as_str(), "0" | "OFF");
    let pos = gtid(&text(1), &source)?;
    let end = gtid(&log.end_gtid, "the archive's end")?;
    if log.source_node != p.id {
        // A new primary (or the first round): it must hold the archive's history.
        let state = GtidState::parse(&text(3)).map_err(|e| Error::Conflict(e.to_string()))?;
        if !state.has(&end) {
            log.gap = Some(format!(
                "{source} does not hold the archive's last transactions ({end}; its binlog \
                 state is {}): no restore past {}",
                text(3),
                log.covered_until.map_or("the backup".to_string(), utc)
            ));
            return Ok(());
        }
    }
    if pos.compare(&end) != Some(std::cmp::Ordering::Equal) {
        c.exec("FLUSH BINARY LOGS")
            .await
            .map_err(|e| Error::Unavailable(format!("{source}: FLUSH BINARY LOGS: {e}")))?;
        let names: Vec<String> = {
            let rows: Vec<mysql_async::Row> = c
                .query("SHOW BINARY LOGS")
                .await
                .map_err(|e| Error::Unavailable(format!("{source}: SHOW BINARY LOGS: {e}")))?;
            rows.into_iter()
                .filter_map(|r| r.get_opt::<String, _>(0).and_then(|v| v.ok()))
                .collect()
        };
        // From the newest back to the file the archive's end falls in.
        let mut starts: Vec<GtidPos> = Vec::new();
        let mut first = None;
        for (i, name) in names.iter().enumerate().rev() {
            let st = starts_at(c, name).await?;
            let found = end.contains(&st);
            starts.insert(0, st);
            if found {
                first = Some(i);
                break;
            }
        }
        let Some(first) = first else {
            log.gap = Some(format!(
                "the binary logs of {source} start at {} but the archive ends at {end}: the \
                 transactions between are not archived",
                starts.first().map(ToString::to_string).unwrap_or_default()
            ));
            return Ok(());
        };
        let inst = reseed::locate(store, fleet, p, &SystemPasswords::generate()).await?;
        let rs = reseed::reseed(fleet)?;
        // `starts[k]` is the start of `names[first + k]`; the last name is the open file.
        for k in 0..starts.len().saturating_sub(1) {
            let name = &names[first + k];
            let file_end = &starts[k + 1];
            let log_end = gtid(&log.end_gtid, "the archive's end")?;
            if log_end.contains(file_end) {
                continue;
            }
            let script = rs
                .binlog_read_script(inst.base_dir(), name)
                .map_err(|e| Error::Conflict(e.to_string()))?;
            let rel = format!("{}/shard_{shard_id}/{}-{name}", dir_of(cluster_id), p.id);
            let src = Endpoint {
                target: inst.target.clone(),
                command: format!("sh -c {}", sh_quote(&script)),
            };
            let stored = bs
                .put(&src, &rel, None, reseed::copy_timeout(64 * 1024, None))
                .await?;
            tracing::info!(cluster_id, shard_id, node = %source, file = %name, bytes = stored.bytes, "binlog archived");
            log.files.push(ArchivedFile {
                node_id: p.id,
                source: source.clone(),
                name: name.clone(),
                rel,
                bytes: stored.bytes,
                sha256: stored.sha256,
                start: starts[k].to_string(),
                end: file_end.to_string(),
            });
            log.end_gtid = file_end.to_string();
        }
    }
    log.source = source;
    log.source_node = p.id;
    if writable {
        log.covered_until = Some(log.covered_until.map_or(now, |t| t.max(now)));
    }
    Ok(())
}

/// The commit log's next window: decisions logged from the archive's end until [`LOG_LAG`]
/// before the store's clock.
async fn archive_log(
    store: &Store,
    bs: &dyn BackupStore,
    c: &Cluster,
    idx: &mut Index,
) -> Result<()> {
    let Some(from_ms) = idx.commit_log.until_ms else {
        return Ok(());
    };
    let name = c.name.clone();
    let lag = i64::try_from(LOG_LAG.as_millis()).unwrap_or(i64::MAX);
    let (rows, until_ms) = store
        .read(async |tx| {
            let now_ms = commit_log::server_now(tx).await? * 1000;
            let until = now_ms - lag;
            if until <= from_ms {
                return Ok((Vec::new(), from_ms));
            }
            let rows =
                commit_log::logged_between(tx, &name, from_ms, until, LOG_WINDOW_ROWS).await?;
            // A full window ends at its last row's time (the rest comes next round).
            let until = if rows.len() > LOG_WINDOW_ROWS as usize {
                rows[LOG_WINDOW_ROWS as usize].at_ms
            } else {
                until
            };
            Ok((
                rows.into_iter()
                    .filter(|r| r.at_ms < until)
                    .collect::<Vec<_>>(),
                until,
            ))
        })
        .await?;
    if until_ms <= from_ms {
        return Ok(());
    }
    if !rows.is_empty() {
        let mut out = Vec::new();
        for r in &rows {
            out.extend_from_slice(
                serde_json::to_string(r)
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .as_bytes(),
            );
            out.push(b'\n');
        }
        let rel = format!("{}/commit_log/{from_ms}-{until_ms}.jsonl", dir_of(c.id));
        let s = bs.put_bytes(&rel, &out, SMALL_TIMEOUT).await?;
        idx.commit_log.segments.push(LogSegment {
            rel,
            bytes: s.bytes,
            sha256: s.sha256,
            from_ms,
            until_ms,
            rows: rows.len() as u64,
        });
    }
    idx.commit_log.until_ms = Some(until_ms);
    Ok(())
}

/// Dumps the cluster's compute schema and keeps it when it differs from the last one archived
/// (the same dump is removed again: only changes are kept).
async fn archive_schema(
    store: &Store,
    fleet: &Provisioner,
    bs: &dyn BackupStore,
    c: &Cluster,
    idx: &mut Index,
) -> Result<()> {
    let taken_ms = store
        .read(async |tx| commit_log::server_now(tx).await)
        .await?
        * 1000;
    let (_, from) = super::schema::source(store, fleet, c.id).await?;
    let rel = format!("{}/compute/{taken_ms}.sql", dir_of(c.id));
    let s = bs.put(&from, &rel, None, DUMP_TIMEOUT).await?;
    if idx
        .compute
        .snapshots
        .last()
        .is_some_and(|l| l.sha256 == s.sha256)
    {
        return bs.remove(&rel, SMALL_TIMEOUT).await;
    }
    idx.compute.snapshots.push(SchemaSnapshot {
        rel,
        bytes: s.bytes,
        sha256: s.sha256,
        taken_ms,
    });
    Ok(())
}

/// The compute schema to restore at `at` (unix seconds) after backup `m`: the newest archived
/// dump begun after the backup's cut and by `at`, else the backup's own (`None` when neither).
pub fn schema_at(i: &Index, m: &Manifest, at: i64) -> Option<ManifestFile> {
    let cut_ms = m.cut_at.unwrap_or(i64::MAX).saturating_mul(1000);
    let archived = i
        .compute
        .snapshots
        .iter()
        .filter(|s| s.taken_ms > cut_ms && s.taken_ms <= at.saturating_mul(1000))
        .max_by_key(|s| s.taken_ms)
        .map(|s| ManifestFile {
            kind: "compute".into(),
            rel: s.rel.clone(),
            bytes: s.bytes,
            sha256: s.sha256.clone(),
            ..ManifestFile::default()
        });
    archived.or_else(|| m.files.iter().find(|f| f.kind == "compute").cloned())
}

/// Unix seconds as RFC 3339 UTC in whole seconds (`2026-12-06T10:00:03Z`).
pub fn utc(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}

/// Backup `b`'s archive window and its shards, as `GET /v1/backups/{id}/archive` answers.
pub async fn status(store: &Store, fleet: &Provisioner, b: &Backup) -> Result<BackupArchive> {
    let (st, bs): (_, Arc<dyn BackupStore>) = registry::open_id(store, fleet, b.storage_id).await?;
    let m = manifest::read(&*bs, b).await?;
    let idx = read_index(&*bs, b.cluster_id).await?;
    let from = m.cut_at.map(|t| t + 1);
    let usable = idx.as_ref().filter(|i| covers_backup(i, &m));
    let until = usable
        .and_then(Index::restorable_until)
        .filter(|u| from.is_some_and(|f| *u >= f));
    Ok(BackupArchive {
        backup_id: b.id,
        cluster_id: b.cluster_id,
        storage: st.name,
        restorable_from: from.map(utc),
        restorable_until: until.map(utc),
        commit_log_until: usable
            .and_then(|i| i.commit_log.until_ms)
            .map(|ms| utc(ms.div_euclid(1000))),
        shards: usable
            .map(|i| {
                i.shards
                    .iter()
                    .map(|(id, s)| ShardArchive {
                        shard_id: *id,
                        source: s.source.clone(),
                        files: s.files.len() as u64,
                        bytes: s.files.iter().map(|f| f.bytes).sum(),
                        covered_until: s.covered_until.map(utc),
                        end_gtid: s.end_gtid.clone(),
                        gap: s.gap.clone(),
                        error: s.error.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// The archive of backup `b`'s cluster on `bs`, checked to take the backup to `at` (unix
/// seconds): the request's check and the restore's.
pub async fn window(bs: &dyn BackupStore, b: &Backup, at: i64) -> Result<Index> {
    let m = manifest::read(bs, b).await?;
    let idx = read_index(bs, b.cluster_id).await?.ok_or_else(|| {
        Error::Conflict(format!(
            "no binlog archive of cluster {} on the backup's storage: backup {} can only be \
             restored to its end",
            b.cluster_id, b.id
        ))
    })?;
    check_window(&idx, &m, at)?;
    Ok(idx)
}

/// Checks that archive `i` takes backup `m` to `at` (unix seconds): after the backup's cut,
/// the archive continuing the backup, and archived (every shard and the commit log) until then.
pub fn check_window(i: &Index, m: &Manifest, at: i64) -> Result<()> {
    let cut = m.cut_at.ok_or_else(|| {
        Error::Conflict(
            "the backup records no cut time: it can only be restored to its end".to_string(),
        )
    })?;
    if at <= cut {
        return Err(Error::Conflict(format!(
            "restore_time {} is not after the backup's cut ({}): restore to the end of the \
             backup, or to {} or later",
            utc(at),
            utc(cut),
            utc(cut + 1)
        )));
    }
    if !covers_backup(i, m) {
        return Err(Error::Conflict(format!(
            "the binlog archive on the storage does not continue this backup (it starts at \
             backup {}): it can only be restored to its end",
            i.from_backup
        )));
    }
    match i.restorable_until() {
        Some(until) if until >= at => Ok(()),
        until => {
            let gaps: Vec<String> = i
                .shards
                .iter()
                .filter_map(|(id, s)| s.gap.as_ref().map(|g| format!("shard {id}: {g}")))
                .collect();
            Err(Error::Conflict(format!(
                "restore_time {} is past the archive: archived until {}{}",
                utc(at),
                until.map_or("nothing yet".to_string(), utc),
                if gaps.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", gaps.join("; "))
                }
            )))
        }
    }
}

/// True when archive `i` continues backup `m`: it holds every shard the backup has, each
/// starting at or before the shard's snapshot.
pub fn covers_backup(i: &Index, m: &Manifest) -> bool {
    m.files.iter().filter(|f| f.kind == "storage").all(|f| {
        let (Some(id), Some(g)) = (f.shard_id, f.gtid.as_deref()) else {
            return false;
        };
        match (i.shards.get(&id), GtidPos::parse(g)) {
            (Some(s), Ok(snap)) => GtidPos::parse(&s.start_gtid).is_ok_and(|st| snap.contains(&st)),
            _ => false,
        }
    })
}
