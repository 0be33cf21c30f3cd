//! Scheduled backups and retention as the engine offers them: a cluster's schedule (show, set,
//! remove) and the two pure decisions the leader's scheduler ([`super::scheduler`]) acts on:
//! whether a backup is [`due`] now, and which backups retention [`to_remove`]s.
//!
//! Invariants: retention never picks the cluster's newest done backup, nor a backup still
//! being taken; a schedule names a registered storage (a storage a schedule names is not
//! removed, see `registry`); setting a schedule also writes its window into the original's
//! `coldbackup_period` columns of the cluster's shards and compute nodes, so the original's
//! tools read the same window.

use chrono::{Duration, NaiveDateTime};
use kunlun_meta::api::{BackupWindow, SetBackupSchedule};
use kunlun_meta::model::{Backup, BackupSchedule, BackupStatus};
use kunlun_meta::store::repo::backup_schedule::{self as rows, NewBackupSchedule};
use kunlun_meta::store::repo::{backup_storage, backups, clusters};
use kunlun_meta::Store;

use crate::error::Result;
use crate::ClusterManager;

/// Whether a scheduled backup is due at `now` (UTC): `now` lies in the window and no backup
/// of the cluster (whatever became of it) started since the window opened. `last_start` is
/// the newest backup's start. A backup that failed in this window is not retried before the
/// next one: a storage that keeps failing is not hammered every round.
pub fn due(window: BackupWindow, now: NaiveDateTime, last_start: Option<NaiveDateTime>) -> bool {
    match window.opened_at(now) {
        Some(open) => last_start.is_none_or(|s| s < open),
        None => false,
    }
}

/// The backups retention removes at `now`, oldest first: the done ones past the newest
/// `keep_count` done ones, the done ones started more than `keep_days` days ago, and the
/// failed ones started more than `keep_days` days ago. The newest done backup always stays;
/// ongoing ones are never picked. Age and order go by `started_at` (then id).
pub fn to_remove(
    list: &[Backup],
    keep_count: Option<u32>,
    keep_days: Option<u32>,
    now: NaiveDateTime,
) -> Vec<i64> {
    let old =
        |b: &Backup| keep_days.is_some_and(|d| b.started_at < now - Duration::days(i64::from(d)));
    let mut done: Vec<&Backup> = list
        .iter()
        .filter(|b| b.status == BackupStatus::Done)
        .collect();
    done.sort_by_key(|b| std::cmp::Reverse((b.started_at, b.id)));
    let mut out: Vec<&Backup> = done
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(i, b)| keep_count.is_some_and(|k| *i >= k as usize) || old(b))
        .map(|(_, b)| *b)
        .collect();
    out.extend(
        list.iter()
            .filter(|b| b.status == BackupStatus::Failed && old(b)),
    );
    out.sort_by_key(|b| (b.started_at, b.id));
    out.into_iter().map(|b| b.id).collect()
}

/// Every backup of cluster `cluster_id` (without parts), newest first.
pub async fn cluster_backups(store: &Store, cluster_id: i64) -> Result<Vec<Backup>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .read(async |tx| backups::list_page(tx, Some(cluster_id), 1000, after).await)
            .await?;
        out.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

impl ClusterManager {
    /// The backup schedule of cluster `cluster_id`, `None` when it has none (404 unknown
    /// cluster).
    pub async fn backup_schedule(&self, cluster_id: i64) -> Result<Option<BackupSchedule>> {
        Ok(self
            .store()?
            .read(async |tx| {
                clusters::get(tx, cluster_id).await?;
                rows::get(tx, cluster_id).await
            })
            .await?)
    }

    /// Sets (or replaces) the backup schedule of cluster `cluster_id` and writes its window
    /// into the cluster's `coldbackup_period` columns (400 bad request, 404 unknown cluster or
    /// storage).
    pub async fn set_backup_schedule(
        &self,
        cluster_id: i64,
        req: &SetBackupSchedule,
    ) -> Result<BackupSchedule> {
        let window = req.validate()?.to_string();
        let s = self
            .store()?
            .tx(async |tx| {
                clusters::get(tx, cluster_id).await?;
                let st = backup_storage::get_by_name(tx, &req.storage).await?;
                let s = rows::set(
                    tx,
                    &NewBackupSchedule {
                        cluster_id,
                        storage_id: st.id,
                        window: window.clone(),
                        keep_count: req.keep_count,
                        keep_days: req.keep_days,
                        enabled: req.enabled.unwrap_or(true),
                    },
                )
                .await?;
                rows::set_coldbackup_period(tx, cluster_id, &window).await?;
                Ok(s)
            })
            .await?;
        tracing::info!(cluster_id, storage = %s.storage, window = %s.window, keep_count = ?s.keep_count, keep_days = ?s.keep_days, enabled = s.enabled, "backup schedule set");
        Ok(s)
    }

    /// Removes the backup schedule of cluster `cluster_id` and returns it (404 unknown
    /// cluster, or none set). Its backups stay.
    pub async fn delete_backup_schedule(&self, cluster_id: i64) -> Result<BackupSchedule> {
        let s = self
            .store()?
            .tx(async |tx| {
                clusters::get(tx, cluster_id).await?;
                let s = rows::get(tx, cluster_id).await?.ok_or_else(|| {
                    kunlun_meta::Error::not_found("backup schedule of cluster", cluster_id)
                })?;
                rows::delete(tx, cluster_id).await?;
                Ok(s)
            })
            .await?;
        tracing::info!(cluster_id, "backup schedule removed");
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(day: u32, h: u32, m: u32, s: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 12, day)
            .and_then(|d| d.and_hms_opt(h, m, s))
            .unwrap()
    }

    fn w(s: &str) -> BackupWindow {
        BackupWindow::parse(s).unwrap()
    }

    fn bk(id: i64, status: BackupStatus, started_at: NaiveDateTime) -> Backup {
        Backup {
            id,
            cluster_id: 1,
            cluster_name: "c1".into(),
            storage_id: 1,
            job_id: Some(id * 10),
            status,
            started_at,
            ended_at: None,
            bytes: 0,
            shape: None,
            manifest: None,
            error: None,
            parts: Vec::new(),
        }
    }

    #[test]
    fn a_backup_is_due_once_per_window() {
        let win = w("01:00:00-02:00:00");
        // Outside, at the edges.
        assert!(!due(win, t(9, 0, 59, 59), None));
        assert!(!due(win, t(9, 2, 0, 0), None));
        // Inside, first and last second.
        assert!(due(win, t(9, 1, 0, 0), None));
        assert!(due(win, t(9, 1, 59, 59), None));
        // A backup yesterday, or a second before the opening, does not count.
        assert!(due(win, t(9, 1, 30, 0), Some(t(8, 1, 30, 0))));
        assert!(due(win, t(9, 1, 30, 0), Some(t(9, 0, 59, 59))));
        // One started at the opening or later (failed or not) does.
        assert!(!due(win, t(9, 1, 30, 0), Some(t(9, 1, 0, 0))));
        assert!(!due(win, t(9, 1, 59, 59), Some(t(9, 1, 0, 1))));
    }

    #[test]
    fn a_window_across_midnight_is_one_window() {
        let win = w("23:00:00-01:00:00");
        assert!(due(win, t(9, 23, 0, 0), Some(t(9, 22, 59, 59))));
        assert!(!due(win, t(9, 22, 59, 59), None));
        // After midnight it is still yesterday's window: a backup taken before midnight counts.
        assert!(!due(win, t(10, 0, 30, 0), Some(t(9, 23, 10, 0))));
        assert!(due(win, t(10, 0, 30, 0), Some(t(9, 22, 59, 59))));
        assert!(due(win, t(10, 0, 59, 59), None));
        assert!(!due(win, t(10, 1, 0, 0), None));
        // The next evening opens a new one.
        assert!(due(win, t(10, 23, 0, 0), Some(t(10, 0, 30, 0))));
    }

    #[test]
    fn retention_by_count_keeps_the_newest_done() {
        use BackupStatus::*;
        let now = t(20, 12, 0, 0);
        let list = vec![
            bk(5, Ongoing, t(20, 1, 0, 0)),
            bk(4, Done, t(19, 1, 0, 0)),
            bk(3, Failed, t(18, 1, 0, 0)),
            bk(2, Done, t(17, 1, 0, 0)),
            bk(1, Done, t(16, 1, 0, 0)),
        ];
        assert_eq!(to_remove(&list, Some(1), None, now), vec![1, 2]);
        assert_eq!(to_remove(&list, Some(2), None, now), vec![1]);
        assert_eq!(to_remove(&list, Some(3), None, now), Vec::<i64>::new());
        assert_eq!(to_remove(&list, None, None, now), Vec::<i64>::new());
        // Order goes by start time, not by id.
        let list = vec![bk(1, Done, t(19, 1, 0, 0)), bk(2, Done, t(18, 1, 0, 0))];
        assert_eq!(to_remove(&list, Some(1), None, now), vec![2]);
    }

    #[test]
    fn retention_by_age_spares_the_newest_done_and_takes_old_failures() {
        use BackupStatus::*;
        let now = t(20, 12, 0, 0);
        let list = vec![
            bk(4, Failed, t(20, 1, 0, 0)),
            bk(3, Done, t(13, 12, 0, 0)),
            bk(2, Failed, t(13, 11, 59, 59)),
            bk(1, Done, t(10, 1, 0, 0)),
            bk(0, Ongoing, t(1, 1, 0, 0)),
        ];
        // 7 days: the edge second itself stays; the newest done stays however old it is.
        assert_eq!(to_remove(&list, None, Some(7), now), vec![1, 2]);
        assert_eq!(to_remove(&list, None, Some(1), now), vec![1, 2]);
        assert_eq!(to_remove(&list, None, Some(30), now), Vec::<i64>::new());
        // Both limits: either one removes.
        assert_eq!(to_remove(&list, Some(1), Some(30), now), vec![1]);
        // Only failed ones and nothing done: the failed old ones go.
        let list = vec![bk(2, Failed, t(1, 0, 0, 0)), bk(1, Failed, t(19, 0, 0, 0))];
        assert_eq!(to_remove(&list, Some(1), Some(7), now), vec![2]);
    }
}
