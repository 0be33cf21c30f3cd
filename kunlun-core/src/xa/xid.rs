//! Kunlun global transaction ids as they appear in `XA RECOVER`: `'<comp_node_id>-<start_ts>-<local_xid>'`.
//!
//! Invariant: only strings of exactly three dash-separated unsigned decimal numbers that fit
//! their widths and are written canonically (no sign, no leading zero: what the compute nodes'
//! `%u-%ld-%u` prints) parse; everything else is a foreign xid the manager must never touch.
//! So `to_string()` of a parsed xid is byte for byte the string found, which is what
//! `XA COMMIT '…'` must name.

use std::fmt;

/// A parsed Kunlun XA id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KunlunXid {
    /// Unix second the global transaction started (first, so ids order by start time).
    pub start_ts: u32,
    /// The coordinator's local transaction id.
    pub local_xid: u32,
    /// Id of the compute node that coordinated the transaction.
    pub comp_node_id: u32,
}

impl KunlunXid {
    /// Parses the `data` column of `XA RECOVER` (gtrid only, bqual empty); `None` for a foreign xid.
    pub fn parse(data: &str) -> Option<KunlunXid> {
        let mut parts = data.split('-');
        let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let num = |s: &str| -> Option<u32> {
            if s.is_empty()
                || s.len() > 10
                || (s.len() > 1 && s.starts_with('0'))
                || !s.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            s.parse().ok()
        };
        Some(KunlunXid {
            comp_node_id: num(a)?,
            start_ts: num(b)?,
            local_xid: num(c)?,
        })
    }

    /// The numeric id stored in `commit_log_<cluster>.txn_id`: `(start_ts << 32) | local_xid`.
    pub fn txn_id(self) -> u64 {
        (u64::from(self.start_ts) << 32) | u64::from(self.local_xid)
    }

    /// Rebuilds the xid from a commit-log row.
    pub fn from_log(comp_node_id: u32, txn_id: u64) -> KunlunXid {
        KunlunXid {
            comp_node_id,
            start_ts: (txn_id >> 32) as u32,
            local_xid: (txn_id & 0xffff_ffff) as u32,
        }
    }
}

impl fmt::Display for KunlunXid {
    /// The xid string, as used (quoted) in `XA COMMIT '…'`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            self.comp_node_id, self.start_ts, self.local_xid
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kunlun_xids_and_round_trips() {
        let x = KunlunXid::parse("1-1598596846-967098").unwrap();
        assert_eq!(
            x,
            KunlunXid {
                comp_node_id: 1,
                start_ts: 1598596846,
                local_xid: 967098
            }
        );
        assert_eq!(x.to_string(), "1-1598596846-967098");
        assert_eq!(x.txn_id(), (1598596846u64 << 32) | 967098);
        assert_eq!(KunlunXid::from_log(1, x.txn_id()), x);
        assert_eq!(KunlunXid::parse("0-0-0").unwrap().to_string(), "0-0-0");
    }

    #[test]
    fn ignores_foreign_xids() {
        for s in [
            "",
            "abc",
            "1-2",
            "1-2-3-4",
            "1--3",
            "-1-2",
            "1-2-x",
            "1-2-99999999999",
            "1 -2-3",
            "+1-2-3",
            "01-2-3",
            "1-2-03",
        ] {
            assert_eq!(KunlunXid::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn orders_by_start_time_first() {
        let a = KunlunXid::parse("9-100-5").unwrap();
        let b = KunlunXid::parse("1-101-1").unwrap();
        assert!(a < b);
    }
}
