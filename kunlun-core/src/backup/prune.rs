//! Pruning of a cluster's binlog archive (see [`super::archive`]): once the backup the archive
//! starts from is gone, the archive is cut to start at the oldest done backup it continues.
//!
//! Invariant: a file is dropped only when every transaction in it is in the snapshot of the
//! backup the archive then starts from; the caller writes the index before removing files.

use std::collections::BTreeMap;

use kunlun_meta::model::{Backup, BackupStatus};
use kunlun_meta::store::repo::backups;
use kunlun_meta::Store;

use super::archive::{covers_backup, Index, LOG_OVERLAP_MS};
use super::manifest::{self, Manifest};
use super::store::BackupStore;
use crate::error::Result;
use crate::storage::gtid::GtidPos;

/// When the backup the archive starts from is no longer a done backup (retention or `backup
/// rm` removed it), the archive is cut to start at the oldest done backup on the same storage
/// that it continues ([`prune_to`]). The files to remove from the storage once the index is
/// written; none when nothing changed.
pub(super) async fn prune(
    store: &Store,
    bs: &dyn BackupStore,
    latest: &Backup,
    idx: &mut Index,
) -> Result<Vec<String>> {
    let from = idx.from_backup;
    let still = match store.read(async |tx| backups::get(tx, from).await).await {
        Ok(b) => b.status == BackupStatus::Done,
        Err(kunlun_meta::Error::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    if still {
        return Ok(Vec::new());
    }
    let mut later = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .read(async |tx| backups::list_page(tx, Some(latest.cluster_id), 100, after).await)
            .await?;
        later.extend(page.items.into_iter().filter(|b| {
            b.id > from
                && b.status == BackupStatus::Done
                && b.manifest.is_some()
                && b.storage_id == latest.storage_id
        }));
        match page.next {
            Some(n) if n > from => after = Some(n),
            _ => break,
        }
    }
    later.sort_by_key(|b| b.id);
    for b in &later {
        let m = manifest::read(bs, b).await?;
        if covers_backup(idx, &m) {
            let gone = prune_to(idx, b.id, &m);
            tracing::info!(
                cluster_id = latest.cluster_id,
                from_backup = from,
                to_backup = b.id,
                files = gone.len(),
                "binlog archiving: the archive now starts at the oldest backup kept"
            );
            return Ok(gone);
        }
    }
    Ok(Vec::new())
}

/// Makes archive `idx` start at backup `id` (manifest `m`, which the archive continues): for
/// each shard, the files whose every event is in the backup's snapshot go, and the shard's
/// start is the snapshot; shards the backup does not have go; commit-log segments that end
/// before the backup's own overlap go. The removed files' paths.
pub fn prune_to(idx: &mut Index, id: i64, m: &Manifest) -> Vec<String> {
    let snaps: BTreeMap<i64, &str> = m
        .files
        .iter()
        .filter(|f| f.kind == "storage")
        .filter_map(|f| Some((f.shard_id?, f.gtid.as_deref()?)))
        .collect();
    let mut gone = Vec::new();
    idx.shards.retain(|sid, log| match snaps.get(sid) {
        None => {
            gone.extend(log.files.iter().map(|f| f.rel.clone()));
            false
        }
        Some(g) => {
            if let Ok(snap) = GtidPos::parse(g) {
                log.files.retain(|f| {
                    let held = GtidPos::parse(&f.end).is_ok_and(|end| snap.contains(&end));
                    if held {
                        gone.push(f.rel.clone());
                    }
                    !held
                });
                log.start_gtid = g.to_string();
            }
            true
        }
    });
    if let Some(cut) = m.cut_at {
        let keep_from = cut * 1000 - LOG_OVERLAP_MS;
        idx.commit_log.segments.retain(|s| {
            let old = s.until_ms <= keep_from;
            if old {
                gone.push(s.rel.clone());
            }
            !old
        });
        // A restore past the new cut uses the new backup's schema or a later dump.
        idx.compute.snapshots.retain(|s| {
            let old = s.taken_ms <= cut * 1000;
            if old {
                gone.push(s.rel.clone());
            }
            !old
        });
    }
    idx.from_backup = id;
    gone
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::archive::{ArchivedFile, LogSegment, ShardLog};
    use crate::backup::manifest::ManifestFile;

    fn file(rel: &str, start: &str, end: &str) -> ArchivedFile {
        ArchivedFile {
            rel: rel.into(),
            start: start.into(),
            end: end.into(),
            ..ArchivedFile::default()
        }
    }

    fn segment(rel: &str, from_ms: i64, until_ms: i64) -> LogSegment {
        LogSegment {
            rel: rel.into(),
            from_ms,
            until_ms,
            ..LogSegment::default()
        }
    }

    #[test]
    fn pruning_drops_what_the_kept_backup_holds_and_keeps_what_follows_it() {
        let mut idx = Index {
            from_backup: 3,
            ..Index::default()
        };
        idx.shards.insert(
            1,
            ShardLog {
                start_gtid: "0-1-10".into(),
                end_gtid: "0-2-90".into(),
                files: vec![
                    file("a", "0-1-10", "0-1-40"),
                    file("b", "0-1-40", "0-1-70"),
                    // Across the snapshot: still needed from its start position.
                    file("c", "0-1-70", "0-2-90"),
                ],
                ..ShardLog::default()
            },
        );
        idx.shards.insert(
            2,
            ShardLog {
                files: vec![file("gone-shard", "1-1-1", "1-1-5")],
                ..ShardLog::default()
            },
        );
        idx.commit_log.segments = vec![
            segment("l1", 0, 100_000),
            segment("l2", 100_000, 200_000),
            segment("l3", 200_000, 300_000),
        ];
        let m = Manifest {
            cut_at: Some(250),
            files: vec![ManifestFile {
                kind: "storage".into(),
                shard_id: Some(1),
                gtid: Some("0-1-75".into()),
                ..ManifestFile::default()
            }],
            ..Manifest::default()
        };
        let mut gone = prune_to(&mut idx, 5, &m);
        gone.sort();
        assert_eq!(gone, ["a", "b", "gone-shard", "l1"]);
        assert_eq!(idx.from_backup, 5);
        let s = &idx.shards[&1];
        assert_eq!(s.start_gtid, "0-1-75");
        assert_eq!(
            s.files.iter().map(|f| f.rel.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        assert!(!idx.shards.contains_key(&2));
        // 250 s cut, 60 s overlap: decisions from 190 s on are kept.
        assert_eq!(
            idx.commit_log
                .segments
                .iter()
                .map(|s| s.rel.as_str())
                .collect::<Vec<_>>(),
            ["l2", "l3"]
        );
        assert!(
            covers_backup(&idx, &m),
            "the archive still continues the backup"
        );
    }
}
