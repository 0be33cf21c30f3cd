//! API types of scheduled backups: the daily UTC window a backup is taken in
//! ([`BackupWindow`], the original's `coldbackup_period` text) and the request that sets a
//! cluster's schedule ([`SetBackupSchedule`]).
//!
//! Invariant: a window is stored only in its canonical text (`HH:MM:SS-HH:MM:SS`, two digits
//! each, start != end), so every reader parses what a writer validated.

use chrono::{Duration, NaiveDateTime, Timelike};
use serde::{Deserialize, Serialize};

/// Seconds in a day.
pub const SECS_PER_DAY: u32 = 86_400;
/// Largest `keep_count` taken.
pub const MAX_KEEP_COUNT: u32 = 10_000;
/// Largest `keep_days` taken (100 years).
pub const MAX_KEEP_DAYS: u32 = 36_500;

/// A daily window in UTC, in seconds of the day. Second `t` is inside when
/// `start <= t < end`; a window that ends before it starts crosses midnight and holds
/// `t >= start || t < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupWindow {
    pub start: u32,
    pub end: u32,
}

fn hms(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let two = |i: usize| -> Option<u32> {
        let (h, l) = (b[i], b[i + 1]);
        (h.is_ascii_digit() && l.is_ascii_digit())
            .then(|| u32::from(h - b'0') * 10 + u32::from(l - b'0'))
    };
    let (h, m, sec) = (two(0)?, two(3)?, two(6)?);
    (h < 24 && m < 60 && sec < 60).then_some(h * 3600 + m * 60 + sec)
}

impl BackupWindow {
    /// Parses `HH:MM:SS-HH:MM:SS` (UTC; it may cross midnight); a malformed text, a time
    /// past 23:59:59 or an empty window (start = end) is [`crate::Error::Invalid`].
    pub fn parse(text: &str) -> crate::Result<BackupWindow> {
        let bad = |why: &str| {
            crate::Error::Invalid(format!(
                "window {text:?}: {why} (HH:MM:SS-HH:MM:SS in UTC, e.g. 01:00:00-02:00:00; it may cross midnight)"
            ))
        };
        if text.len() > 64 {
            return Err(bad("too long"));
        }
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| bad("no '-' between start and end"))?;
        let start = hms(a).ok_or_else(|| bad("the start is not a time of day"))?;
        let end = hms(b).ok_or_else(|| bad("the end is not a time of day"))?;
        if start == end {
            return Err(bad("it starts when it ends"));
        }
        Ok(BackupWindow { start, end })
    }

    /// Whether the window crosses midnight (ends before it starts).
    pub fn crosses_midnight(&self) -> bool {
        self.end < self.start
    }

    /// Whether second `t` of the day (0..86400) lies in the window.
    pub fn contains(&self, t: u32) -> bool {
        if self.crosses_midnight() {
            t >= self.start || t < self.end
        } else {
            self.start <= t && t < self.end
        }
    }

    /// When the window `now` lies in opened: today at `start`, or yesterday's opening for a
    /// window crossing midnight that `now` is past midnight in. `None` when `now` is outside.
    pub fn opened_at(&self, now: NaiveDateTime) -> Option<NaiveDateTime> {
        let t = now.num_seconds_from_midnight();
        if !self.contains(t) {
            return None;
        }
        let today = now.date().and_hms_opt(0, 0, 0)?;
        let open = today + Duration::seconds(i64::from(self.start));
        Some(if t >= self.start {
            open
        } else {
            open - Duration::days(1)
        })
    }
}

impl std::fmt::Display for BackupWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = |t: u32| format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
        write!(f, "{}-{}", p(self.start), p(self.end))
    }
}

impl std::str::FromStr for BackupWindow {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        BackupWindow::parse(s)
    }
}

/// `PUT /v1/clusters/{id}/backup_schedule`: back the cluster up onto the registered storage
/// `storage` once a day in the UTC window `window`, keeping the newest `keep_count` done
/// backups and none older than `keep_days` days (the newest done backup is always kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetBackupSchedule {
    /// The backup storage's name.
    pub storage: String,
    /// `HH:MM:SS-HH:MM:SS` in UTC; it may cross midnight (`23:00:00-01:00:00`).
    #[cfg_attr(
        feature = "utoipa",
        schema(pattern = "^[0-2][0-9]:[0-5][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]:[0-5][0-9]$")
    )]
    pub window: String,
    /// Keep the newest this many done backups (no limit when left out).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 10000))]
    pub keep_count: Option<u32>,
    /// Remove backups older than this many days (no limit when left out).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 36500))]
    pub keep_days: Option<u32>,
    /// Whether backups are taken (default true); a disabled schedule keeps its settings and
    /// takes nothing, nor removes anything.
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl SetBackupSchedule {
    /// The window, checked with every other field.
    pub fn validate(&self) -> crate::Result<BackupWindow> {
        if self.storage.trim().is_empty() {
            return Err(crate::Error::Invalid(
                "storage: a backup storage's name is required".into(),
            ));
        }
        let w = BackupWindow::parse(&self.window)?;
        if let Some(n) = self.keep_count {
            if !(1..=MAX_KEEP_COUNT).contains(&n) {
                return Err(crate::Error::Invalid(format!(
                    "keep_count {n}: between 1 and {MAX_KEEP_COUNT} (leave it out for no limit)"
                )));
            }
        }
        if let Some(n) = self.keep_days {
            if !(1..=MAX_KEEP_DAYS).contains(&n) {
                return Err(crate::Error::Invalid(format!(
                    "keep_days {n}: between 1 and {MAX_KEEP_DAYS} (leave it out for no limit)"
                )));
            }
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u32, m: u32, s: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 12, 9)
            .and_then(|d| d.and_hms_opt(h, m, s))
            .unwrap()
    }

    #[test]
    fn windows_parse_strictly_and_print_canonically() {
        let w = BackupWindow::parse("01:00:00-02:30:05").unwrap();
        assert_eq!((w.start, w.end), (3600, 9005));
        assert_eq!(w.to_string(), "01:00:00-02:30:05");
        assert!(!w.crosses_midnight());
        let w: BackupWindow = "23:00:00-00:30:00".parse().unwrap();
        assert!(w.crosses_midnight());
        assert_eq!(w.to_string(), "23:00:00-00:30:00");
        assert_eq!(
            BackupWindow::parse("00:00:00-23:59:59").unwrap().end,
            SECS_PER_DAY - 1
        );
        for bad in [
            "",
            "01:00:00",
            "1:00:00-02:00:00",
            "01:00-02:00",
            "24:00:00-01:00:00",
            "01:60:00-02:00:00",
            "01:00:60-02:00:00",
            "01:00:00-01:00:00",
            "01:00:00 - 02:00:00",
            "01:00:00-02:00:00-03:00:00",
            "+1:00:00-02:00:00",
            "０1:00:00-02:00:00",
        ] {
            let e = BackupWindow::parse(bad).unwrap_err();
            assert!(matches!(e, crate::Error::Invalid(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn a_window_holds_its_start_and_not_its_end() {
        let w = BackupWindow::parse("01:00:00-02:00:00").unwrap();
        assert!(!w.contains(3599));
        assert!(w.contains(3600));
        assert!(w.contains(7199));
        assert!(!w.contains(7200));
        assert_eq!(w.opened_at(at(1, 0, 0)), Some(at(1, 0, 0)));
        assert_eq!(w.opened_at(at(1, 59, 59)), Some(at(1, 0, 0)));
        assert_eq!(w.opened_at(at(2, 0, 0)), None);
        assert_eq!(w.opened_at(at(0, 59, 59)), None);
    }

    #[test]
    fn a_window_across_midnight_opened_the_day_before_after_midnight() {
        let w = BackupWindow::parse("23:30:00-00:30:00").unwrap();
        assert!(w.contains(SECS_PER_DAY - 1) && w.contains(0) && w.contains(1799));
        assert!(!w.contains(1800) && !w.contains(23 * 3600 + 1799));
        assert_eq!(w.opened_at(at(23, 30, 0)), Some(at(23, 30, 0)));
        assert_eq!(w.opened_at(at(23, 59, 59)), Some(at(23, 30, 0)));
        let yesterday = at(23, 30, 0) - Duration::days(1);
        assert_eq!(w.opened_at(at(0, 0, 0)), Some(yesterday));
        assert_eq!(w.opened_at(at(0, 29, 59)), Some(yesterday));
        assert_eq!(w.opened_at(at(0, 30, 0)), None);
        assert_eq!(w.opened_at(at(12, 0, 0)), None);
        // Ending at midnight: the last second of the day is in, midnight is not.
        let w = BackupWindow::parse("23:00:00-00:00:00").unwrap();
        assert!(w.contains(SECS_PER_DAY - 1) && !w.contains(0));
    }

    #[test]
    fn a_request_is_checked_field_by_field() {
        let ok = SetBackupSchedule {
            storage: "s1".into(),
            window: "01:00:00-02:00:00".into(),
            keep_count: Some(1),
            keep_days: Some(36500),
            enabled: None,
        };
        assert!(ok.validate().is_ok());
        for (bad, word) in [
            (
                SetBackupSchedule {
                    storage: " ".into(),
                    ..ok.clone()
                },
                "storage",
            ),
            (
                SetBackupSchedule {
                    window: "1-2".into(),
                    ..ok.clone()
                },
                "window",
            ),
            (
                SetBackupSchedule {
                    keep_count: Some(0),
                    ..ok.clone()
                },
                "keep_count",
            ),
            (
                SetBackupSchedule {
                    keep_count: Some(10_001),
                    ..ok.clone()
                },
                "keep_count",
            ),
            (
                SetBackupSchedule {
                    keep_days: Some(0),
                    ..ok.clone()
                },
                "keep_days",
            ),
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains(word), "{e}");
        }
        let unknown = serde_json::from_str::<SetBackupSchedule>(
            r#"{"storage":"s","window":"01:00:00-02:00:00","keep":1}"#,
        );
        assert!(unknown.is_err());
    }
}
