//! The parts of a cluster backup, each stored on the backup storage by one function: a shard's
//! physical snapshot ([`shard`]), a compute node's schema ([`compute`]) and the cluster's
//! metadata rows and log tables ([`metadata`]). Each records its progress in the memo through
//! [`Run::set`] and, for shards and compute, its `cluster_coldbackups` row.
//!
//! Invariant: a part's row is `done` only once its file is complete on the storage (the
//! storage's `put` is atomic), and its memo holds the file's size and SHA-256 as stored.

use std::time::Duration;

use kunlun_meta::api::SnapshotCompression;
use kunlun_meta::model::{JobStatus, MemberState, NewBackupPart, NodeStatus, PartKind};
use kunlun_meta::store::repo::backups::{self, LogTable};
use kunlun_provision::recipe::reseed::{self as scripts, Compression};
use kunlun_provision::recipe::sh_quote;
use serde::Serialize;
use serde_json::json;

use super::cut::{read_log, Source};
use super::run::Run;
use super::{pick_replica, Candidate, PartPhase};
use crate::backup::store::{Endpoint, Stored};
use crate::error::{Error, Result};
use crate::jobs::reseed::{self, clip};
use crate::storage::probe::probe_node;
use crate::storage::{NodeAddr, StorageOptions};

/// Deadline of a small remote call (reading the snapshot's log).
const LOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of a compute node's schema dump.
const DUMP_TIMEOUT: Duration = Duration::from_secs(1800);
/// Deadline of writing a small file (metadata, logs, manifest).
pub(super) const SMALL_TIMEOUT: Duration = Duration::from_secs(300);

/// A shard's snapshot is stored zstd-compressed (`.mbstream.zst`) unless a sample of its data
/// shrinks less than this (raw / compressed); then it is stored as is (`.mbstream`): already
/// compressed or encrypted tablespaces, where zstd only costs CPU on the source and on the
/// restoring machine. Anything that shrinks more is worth compressing: the backup benchmark on
/// 2 shared cores found data shrinking 1.6x backed up in 11.3 s compressed against 13.1 s
/// uncompressed (less through the relay, the storage's SHA-256 and its disk).
const MIN_RATIO: f64 = 1.1;

/// How shard `src`'s snapshot is stored, and why: compressed unless a sample of its largest
/// table files says it barely shrinks (a sample that cannot be taken counts as compressible).
async fn compression_of(
    fleet: &crate::fleet::Provisioner,
    src: &reseed::Instance,
) -> (Compression, String) {
    let sampled = reseed::compressibility(fleet, src).await;
    match sampled {
        Ok(Some(r)) if r < MIN_RATIO => (
            Compression::None,
            format!("none (a sample of its data shrinks {r:.2}x, under {MIN_RATIO}x)"),
        ),
        Ok(Some(r)) => (
            Compression::Zstd,
            format!("zstd (a sample shrinks {r:.2}x)"),
        ),
        Ok(None) => (Compression::Zstd, "zstd (no table file to sample)".into()),
        Err(e) => {
            tracing::warn!(node = %src.addr(), error = %e, "backup: compressibility sample failed");
            (Compression::Zstd, "zstd (the sample failed)".into())
        }
    }
}

/// One file of the backup, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct FileEntry {
    /// `storage`, `compute`, `metadata`, `commit_log`, `ddl_ops_log`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comp_id: Option<i64>,
    pub rel: String,
    pub bytes: u64,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// `host:port` the part was taken from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_node_id: Option<i64>,
    /// `CHECKSUM TABLE` of every table of a shard's snapshot (`db.table`), taken on its source
    /// held at the cut: what `backup verify` compares a restored copy with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksums: Option<std::collections::BTreeMap<String, u64>>,
    /// A shard snapshot's compression (`zstd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<&'static str>,
    /// A shard's data size at the snapshot (KB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_kb: Option<u64>,
}

impl FileEntry {
    fn of(kind: &'static str, s: Stored) -> FileEntry {
        FileEntry {
            kind,
            shard_id: None,
            comp_id: None,
            rel: s.rel,
            bytes: s.bytes,
            sha256: s.sha256,
            gtid: None,
            source: None,
            source_node_id: None,
            checksums: None,
            compression: None,
            data_kb: None,
        }
    }
}

/// Records the end of part row `id`: `done` with `f`, or `failed` with `why`.
async fn end_row(r: &Run<'_>, id: i64, f: std::result::Result<&FileEntry, String>) {
    let (status, memo) = match f {
        Ok(f) => (JobStatus::Done, json!(f)),
        Err(why) => (JobStatus::Failed, json!({ "error": why })),
    };
    let memo = json!({ "backup_id": r.backup_id, "part": memo });
    if let Err(e) =
        r.cx.store
            .tx(async |tx| backups::finish_part(tx, id, status, &memo).await)
            .await
    {
        tracing::warn!(job_id = r.cx.job_id, part = id, error = %e, "backup: part row not ended");
    }
}

/// Starts part row of `kind` for `rel`; its id.
async fn start_row(
    r: &Run<'_>,
    kind: PartKind,
    shard_id: Option<i64>,
    comp_id: Option<i64>,
    rel: &str,
) -> Result<i64> {
    let n = NewBackupPart {
        storage_id: r.storage_id,
        cluster_id: r.cluster.id,
        kind,
        shard_id,
        comp_id,
        rel: rel.to_string(),
    };
    Ok(r.cx
        .store
        .tx(async |tx| backups::add_part(tx, &n).await)
        .await?)
}

/// The source of shard `shard_id`'s snapshot: its healthiest replica (the primary only when
/// the request allows it and no replica is fit).
pub(super) async fn choose(r: &Run<'_>, shard_id: i64) -> Result<Source> {
    let all = r.cx.store.list_shard_nodes(Some(shard_id)).await?;
    let primary = all
        .iter()
        .find(|n| n.member_state == MemberState::Source && n.status == NodeStatus::Active);
    let mut candidates = Vec::new();
    for n in all
        .iter()
        .filter(|n| n.member_state == MemberState::Replica && n.status == NodeStatus::Active)
    {
        let p = probe_node(&NodeAddr::from(n), StorageOptions::default()).await;
        let ch = primary.and_then(|pr| p.channel_from(&pr.hostaddr, pr.port));
        candidates.push(Candidate {
            node: n.clone(),
            healthy: p.reachable && ch.is_some_and(|c| c.io_connected() && c.sql_running),
            lag_s: ch.and_then(|c| c.seconds_behind),
        });
    }
    let req = &r.info.request;
    let node = pick_replica(
        &candidates,
        primary,
        req.max_source_lag_s,
        req.allow_primary,
    )
    .map_err(|why| Error::Conflict(format!("shard {shard_id}: {why}")))?;
    Ok(Source {
        shard_id,
        node,
        primary: primary
            .cloned()
            .ok_or_else(|| Error::Conflict(format!("shard {shard_id} has no active primary")))?,
    })
}

/// The physical snapshot of a shard (memo part `i`) from `src` (held at the cut when it is a
/// frozen replica).
pub(super) async fn shard(r: &Run<'_>, i: usize, src_node: &Source) -> Result<FileEntry> {
    let (store, fleet) = (&r.cx.store, &r.cx.fleet);
    let (shard_id, node) = (src_node.shard_id, &src_node.node);
    let source = format!("{}:{}", node.hostaddr, node.port);
    let src = reseed::locate(store, fleet, node, &r.passwords).await?;
    let rs = reseed::reseed(fleet)?;
    // zstd too: a source machine without it is refused before anything is written (the
    // sample needs it, and most shards are stored compressed).
    let programs = rs.stored_snapshot_programs(Compression::Zstd);
    let (data_kb, _) = reseed::space(fleet, &src, &programs).await?;
    let (compression, why) = match r.info.request.compression {
        SnapshotCompression::Auto => compression_of(fleet, &src).await,
        SnapshotCompression::Zstd => (Compression::Zstd, "zstd (as asked)".into()),
        SnapshotCompression::None => (Compression::None, "none (as asked)".into()),
    };
    let script = rs
        .backup_script(src.base_dir(), compression)
        .map_err(|e| Error::Conflict(e.to_string()))?;
    let ext = match compression {
        Compression::Zstd => ".zst",
        Compression::None => "",
    };
    let rel = format!("{}/shard_{shard_id}.mbstream{ext}", r.dir);
    let row = start_row(r, PartKind::Storage, Some(shard_id), None, &rel).await?;
    r.set(i, |p| {
        p.phase = PartPhase::Storing;
        p.source = Some(format!("{source} (node {})", node.id));
        p.rels = vec![rel.clone()];
        p.compression = Some(why.clone());
    })
    .await;
    // The backup tool's position line goes to a file on the source (the storage's `put`
    // keeps only the stream), read back once the stream ended.
    let errf = format!(
        "{}/tmp/backup-{}-shard-{shard_id}.err",
        src.base_dir().trim_end_matches('/'),
        r.backup_id
    );
    let from = Endpoint {
        target: src.target.clone(),
        command: format!("sh -c {} 2>{}", sh_quote(&script), sh_quote(&errf)),
    };
    let put =
        r.bs.put(&from, &rel, None, reseed::copy_timeout(data_kb, None))
            .await;
    let log = fleet
        .ssh
        .exec(
            &src.target,
            &format!("cat {f} 2>/dev/null; rm -f {f}", f = sh_quote(&errf)),
            LOOK_TIMEOUT,
        )
        .await
        .map(|o| o.stdout_str())
        .unwrap_or_default();
    let stored = match put {
        Ok(s) => s,
        Err(e) => {
            let why = clip(&format!(
                "shard {shard_id} from {source}: {e}{}",
                if log.trim().is_empty() {
                    String::new()
                } else {
                    format!("; the source said: {}", log.trim())
                }
            ));
            end_row(r, row, Err(why.clone())).await;
            return Err(Error::Unavailable(why));
        }
    };
    let gtid = match scripts::parse_snapshot_gtid(&log) {
        Ok(g) => g,
        Err(e) => {
            let why = format!("shard {shard_id} from {source}: the snapshot's position: {e}");
            end_row(r, row, Err(why.clone())).await;
            return Err(Error::Unavailable(why));
        }
    };
    let f = FileEntry {
        shard_id: Some(shard_id),
        gtid: Some(gtid),
        source: Some(source),
        source_node_id: Some(node.id),
        compression: compression.name(),
        data_kb: Some(data_kb),
        ..FileEntry::of("storage", stored)
    };
    end_row(r, row, Ok(&f)).await;
    Ok(f)
}

/// The schema of one active compute node (the lowest id): every database and the roles.
pub(super) async fn compute(r: &Run<'_>, i: usize) -> Result<FileEntry> {
    let (comp, from) =
        crate::backup::schema::source(&r.cx.store, &r.cx.fleet, r.cluster.id).await?;
    let source = format!("{}:{}", comp.hostaddr, comp.port);
    let rel = format!("{}/comp.sql", r.dir);
    let row = start_row(r, PartKind::Compute, None, Some(comp.id), &rel).await?;
    r.set(i, |p| {
        p.phase = PartPhase::Storing;
        p.source = Some(format!("{source} (comp {})", comp.id));
        p.rels = vec![rel.clone()];
    })
    .await;
    match r.bs.put(&from, &rel, None, DUMP_TIMEOUT).await {
        Ok(s) => {
            let f = FileEntry {
                comp_id: Some(comp.id),
                source: Some(source),
                ..FileEntry::of("compute", s)
            };
            end_row(r, row, Ok(&f)).await;
            Ok(f)
        }
        Err(e) => {
            let why = clip(&format!("schema of {source}: {e}"));
            end_row(r, row, Err(why.clone())).await;
            Err(Error::Unavailable(why))
        }
    }
}

/// The cluster's metadata rows (`meta.json`) and its log tables (JSON lines); the commit log
/// as read at the cut when there is one (`commit_log`), else read now.
pub(super) async fn metadata(
    r: &Run<'_>,
    i: usize,
    commit_log: Option<&[u8]>,
) -> Result<Vec<FileEntry>> {
    let store = &r.cx.store;
    let cid = r.cluster.id;
    let shards = store.list_shards(Some(cid)).await?;
    let mut nodes = Vec::new();
    for s in &shards {
        nodes.extend(store.list_shard_nodes(Some(s.id)).await?);
    }
    let meta = json!({
        "cluster": r.cluster,
        "shards": shards,
        "nodes": nodes,
        "comps": store.list_comp_nodes(Some(cid)).await?,
        "policy": store.cluster_policy(cid).await?,
    });
    let meta =
        serde_json::to_vec_pretty(&meta).map_err(|e| Error::Internal(format!("meta.json: {e}")))?;
    let mut files = Vec::new();
    let rel = format!("{}/meta.json", r.dir);
    r.set(i, |p| {
        p.phase = PartPhase::Storing;
        p.rels = vec![rel.clone()];
    })
    .await;
    files.push(FileEntry::of(
        "metadata",
        r.bs.put_bytes(&rel, &meta, SMALL_TIMEOUT).await?,
    ));
    for (which, kind, file) in [
        (LogTable::CommitLog, "commit_log", "commit_log.jsonl"),
        (LogTable::DdlOps, "ddl_ops_log", "ddl_ops_log.jsonl"),
    ] {
        let lines = match (which, commit_log) {
            (LogTable::CommitLog, Some(at_cut)) => at_cut.to_vec(),
            _ => log_lines(r, which).await?,
        };
        let rel = format!("{}/{file}", r.dir);
        r.set(i, |p| p.rels.push(rel.clone())).await;
        files.push(FileEntry::of(
            kind,
            r.bs.put_bytes(&rel, &lines, SMALL_TIMEOUT).await?,
        ));
    }
    Ok(files)
}

/// Every row of the cluster's log table `which`, one JSON object per line, in id order.
async fn log_lines(r: &Run<'_>, which: LogTable) -> Result<Vec<u8>> {
    let name = r.cluster.name.clone();
    Ok(r.cx
        .store
        .read(async |tx| read_log(tx, which, &name).await)
        .await?)
}
