//! The backup catalogue on both backends: a backup and its parts recorded, listed by page and
//! by cluster, ended, found by its job, removed with its parts only; a backup outlives its
//! cluster; the cluster's log tables read back as rows for the backup's files.

mod common;

use common::TestStore;
use kunlun_meta::model::*;
use kunlun_meta::store::repo::backups::{self, LogTable};
use kunlun_meta::store::repo::clusters;
use kunlun_meta::store::repo::commit_log::{self, NewCommitLogEntry};
use serde_json::json;

fn part(storage_id: i64, cluster_id: i64, rel: &str, shard: i64) -> NewBackupPart {
    NewBackupPart {
        storage_id,
        cluster_id,
        kind: PartKind::Storage,
        shard_id: Some(shard),
        comp_id: None,
        rel: rel.into(),
    }
}

async fn catalogue(t: &TestStore) {
    let s = &t.store;
    let c = s
        .tx(async |tx| {
            let c = clusters::insert(
                tx,
                &NewCluster {
                    name: "bkc".into(),
                    nick_name: None,
                    owner: None,
                    business: None,
                    ha_mode: HaMode::Rbr,
                    memo: None,
                },
            )
            .await?;
            for i in 1..=3u64 {
                let e = NewCommitLogEntry {
                    comp_node_id: 1,
                    txn_id: i,
                    next_txn_cmd: TxnCmd::Commit,
                    written_shards: Some(vec![1, 2]),
                };
                commit_log::insert(tx, &c.name, &e, None).await?;
            }
            Ok(c)
        })
        .await
        .unwrap();
    let new = |job| NewBackup {
        cluster_id: c.id,
        cluster_name: c.name.clone(),
        storage_id: 5,
        job_id: Some(job),
        shape: json!({"shards": [{"id": 1}]}),
    };
    let (n1, n2) = (new(100), new(101));
    let b1 = s
        .tx(async |tx| backups::create(tx, &n1).await)
        .await
        .unwrap();
    let b2 = s
        .tx(async |tx| backups::create(tx, &n2).await)
        .await
        .unwrap();
    assert_eq!(b1.status, BackupStatus::Ongoing);
    assert_eq!(b1.shape, Some(json!({"shards": [{"id": 1}]})));
    // Parts of each backup, under its own directory (backup_1 is not a prefix of backup_1x).
    let d1 = backups::dir_of(c.id, b1.id);
    let d2 = backups::dir_of(c.id, b2.id);
    let (p1, p2) = (
        part(5, c.id, &format!("{d1}/shard_1.mbstream"), 1),
        part(5, c.id, &format!("{d2}/shard_1.mbstream"), 1),
    );
    let id1 = s
        .tx(async |tx| backups::add_part(tx, &p1).await)
        .await
        .unwrap();
    s.tx(async |tx| backups::add_part(tx, &p2).await)
        .await
        .unwrap();
    let memo = json!({"part": {"bytes": 10, "sha256": "ab"}});
    s.tx(async |tx| backups::finish_part(tx, id1, JobStatus::Done, &memo).await)
        .await
        .unwrap();
    let bid = b1.id;
    s.tx(async |tx| backups::finish(tx, bid, BackupStatus::Done, 42, Some("m.json"), None).await)
        .await
        .unwrap();
    let full = s
        .read(async |tx| backups::get_full(tx, bid).await)
        .await
        .unwrap();
    assert_eq!(full.status, BackupStatus::Done);
    assert_eq!((full.bytes, full.manifest.as_deref()), (42, Some("m.json")));
    assert!(full.ended_at.is_some());
    assert_eq!(full.parts.len(), 1, "only its own parts: {full:?}");
    assert_eq!(full.parts[0].status, JobStatus::Done);
    assert_eq!(full.parts[0].memo, Some(memo.clone()));
    let by_job = s
        .read(async |tx| backups::of_job(tx, 101).await)
        .await
        .unwrap();
    assert_eq!(by_job.map(|b| b.id), Some(b2.id));
    // Pages, newest first; by cluster.
    let cid = c.id;
    let page = s
        .read(async |tx| backups::list_page(tx, Some(cid), 1, None).await)
        .await
        .unwrap();
    assert_eq!(page.items.iter().map(|b| b.id).collect::<Vec<_>>(), [b2.id]);
    let after = page.next;
    assert_eq!(after, Some(b2.id));
    let page = s
        .read(async |tx| backups::list_page(tx, Some(cid), 1, after).await)
        .await
        .unwrap();
    assert_eq!(page.items.iter().map(|b| b.id).collect::<Vec<_>>(), [b1.id]);
    assert_eq!(page.next, None);
    let other = s
        .read(async |tx| backups::list_page(tx, Some(cid + 1000), 10, None).await)
        .await
        .unwrap();
    assert!(other.items.is_empty());
    // The log tables, paged by id.
    let name = c.name.clone();
    let rows = s
        .read(async |tx| backups::log_rows(tx, LogTable::CommitLog, &name, 0, 2).await)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].1["txn_id"], 1);
    assert_eq!(rows[0].1["next_txn_cmd"], "commit");
    let last = rows[1].0;
    let rest = s
        .read(async |tx| backups::log_rows(tx, LogTable::CommitLog, &name, last, 2).await)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    let ddl = s
        .read(async |tx| backups::log_rows(tx, LogTable::DdlOps, &name, 0, 10).await)
        .await
        .unwrap();
    assert!(ddl.is_empty());
    assert_eq!(
        s.read(async |tx| backups::count_on_storage(tx, 5).await)
            .await
            .unwrap(),
        2
    );
    // The cluster goes, its backups stay.
    s.tx(async |tx| {
        clusters::drop_log_tables(tx, &name).await?;
        clusters::delete(tx, cid).await
    })
    .await
    .unwrap();
    let kept = s
        .read(async |tx| backups::get_full(tx, bid).await)
        .await
        .unwrap();
    assert_eq!((kept.cluster_name.as_str(), kept.parts.len()), ("bkc", 1));
    // Removal takes the backup's parts and nothing else.
    s.tx(async |tx| backups::delete(tx, bid).await)
        .await
        .unwrap();
    assert!(matches!(
        s.read(async |tx| backups::get(tx, bid).await).await,
        Err(kunlun_meta::Error::NotFound { .. })
    ));
    let b2id = b2.id;
    let left = s
        .read(async |tx| backups::get_full(tx, b2id).await)
        .await
        .unwrap();
    assert_eq!(left.parts.len(), 1);
}

/// The commit log read in a write transaction (a backup's cut) keeps a decision logged
/// meanwhile out until the transaction ends, and the read sees every row logged before.
async fn frozen_log(t: &TestStore) {
    let s = &t.store;
    let other = t.reopen().await;
    let entry = |txn_id| NewCommitLogEntry {
        comp_node_id: 1,
        txn_id,
        next_txn_cmd: TxnCmd::Commit,
        written_shards: None,
    };
    let name = s
        .tx(async |tx| {
            let c = clusters::insert(
                tx,
                &NewCluster {
                    name: "frz".into(),
                    nick_name: None,
                    owner: None,
                    business: None,
                    ha_mode: HaMode::Rbr,
                    memo: None,
                },
            )
            .await?;
            commit_log::insert(tx, &c.name, &entry(1), None).await?;
            Ok(c.name)
        })
        .await
        .unwrap();
    let logged = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    type Writer = tokio::task::JoinHandle<kunlun_meta::Result<()>>;
    let writer: std::sync::Arc<std::sync::Mutex<Option<Writer>>> = Default::default();
    let (n, seen_while_held) = s
        .tx(async |tx| {
            let mut n = 0;
            let mut after = 0;
            loop {
                let rows = backups::log_rows(tx, LogTable::CommitLog, &name, after, 1).await?;
                let Some((last, _)) = rows.last() else { break };
                after = *last;
                n += rows.len();
            }
            // The writer starts once, however often the store runs this closure again.
            {
                let mut w = writer.lock().unwrap();
                if w.is_none() {
                    let (o, l, nm, e) = (other.clone(), logged.clone(), name.clone(), entry(2));
                    *w = Some(tokio::spawn(async move {
                        let r = o
                            .tx(async |tx| commit_log::insert(tx, &nm, &e, None).await)
                            .await;
                        l.store(true, std::sync::atomic::Ordering::SeqCst);
                        r
                    }));
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            Ok((n, logged.load(std::sync::atomic::Ordering::SeqCst)))
        })
        .await
        .unwrap();
    let late = writer.lock().unwrap().take().expect("the writer started");
    assert_eq!(n, 1, "the row logged before the cut is read");
    assert!(
        !seen_while_held,
        "no decision is logged while the log is held"
    );
    late.await.unwrap().expect("logged once the cut ended");
    let rows = s
        .read(async |tx| backups::log_rows(tx, LogTable::CommitLog, &name, 0, 10).await)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
}

/// The archive's window read: decisions by the time they were logged (the store's clock, in
/// milliseconds), half-open, bounded, oldest first.
async fn timed_log(t: &TestStore) {
    let s = &t.store;
    let entry = |txn_id| NewCommitLogEntry {
        comp_node_id: 3,
        txn_id,
        next_txn_cmd: if txn_id == 2 {
            TxnCmd::Abort
        } else {
            TxnCmd::Commit
        },
        written_shards: None,
    };
    let (name, before_ms) = s
        .tx(async |tx| {
            let c = clusters::insert(
                tx,
                &NewCluster {
                    name: "tml".into(),
                    nick_name: None,
                    owner: None,
                    business: None,
                    ha_mode: HaMode::Rbr,
                    memo: None,
                },
            )
            .await?;
            Ok((c.name, commit_log::server_now(tx).await? * 1000))
        })
        .await
        .unwrap();
    for txn in 1..=3 {
        s.tx(async |tx| commit_log::insert(tx, &name, &entry(txn), None).await)
            .await
            .unwrap();
    }
    let after_ms = s
        .read(async |tx| commit_log::server_now(tx).await)
        .await
        .unwrap()
        * 1000
        + 1000;
    let all = s
        .read(async |tx| commit_log::logged_between(tx, &name, before_ms, after_ms, 10).await)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|d| d.txn_id).collect::<Vec<_>>(),
        [1, 2, 3],
        "{all:?}"
    );
    assert_eq!(all[1].next_txn_cmd, "abort");
    assert!(
        all.iter()
            .all(|d| d.at_ms >= before_ms && d.at_ms < after_ms),
        "{all:?}"
    );
    assert!(all.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    // The window is half-open at the first row's own time, and bounded (one more than asked).
    let first = all[0].at_ms;
    let none = s
        .read(async |tx| commit_log::logged_between(tx, &name, before_ms, first, 10).await)
        .await
        .unwrap();
    assert!(none.iter().all(|d| d.at_ms < first));
    let two = s
        .read(async |tx| commit_log::logged_between(tx, &name, before_ms, after_ms, 1).await)
        .await
        .unwrap();
    assert_eq!(two.len(), 2, "limit + 1 rows tell a full window");
    let later = s
        .read(async |tx| {
            commit_log::logged_between(tx, &name, after_ms, after_ms + 60_000, 10).await
        })
        .await
        .unwrap();
    assert!(later.is_empty(), "{later:?}");
}

both_backends! {
    backup_catalogue => catalogue;
    held_commit_log => frozen_log;
    commit_log_by_time => timed_log;
}
