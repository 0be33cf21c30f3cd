//! MariaDB GTID positions (`@@gtid_current_pos`, `Gtid_IO_Pos`): `domain-server-seq` per
//! replication domain, comma-separated.
//!
//! Invariant: a position holds at most one GTID per domain (the last one); comparison is per
//! domain on the sequence number, so two positions may be incomparable (divergent domains).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// One GTID: `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    pub domain: u32,
    pub server_id: u32,
    pub seq: u64,
}

/// A GTID position: the last GTID of each domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPos {
    domains: BTreeMap<u32, Gtid>,
}

/// A position string that is not `domain-server-seq[,…]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid GTID position '{0}'")]
pub struct ParseGtidError(pub String);

impl GtidPos {
    /// Parses a MariaDB position; the empty string is the empty position.
    pub fn parse(s: &str) -> Result<GtidPos, ParseGtidError> {
        let mut domains = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let err = || ParseGtidError(s.to_string());
            let mut it = part.split('-');
            let (d, srv, seq) = (
                it.next().ok_or_else(err)?,
                it.next().ok_or_else(err)?,
                it.next().ok_or_else(err)?,
            );
            if it.next().is_some() {
                return Err(err());
            }
            let g = Gtid {
                domain: d.parse().map_err(|_| err())?,
                server_id: srv.parse().map_err(|_| err())?,
                seq: seq.parse().map_err(|_| err())?,
            };
            if domains.insert(g.domain, g).is_some() {
                return Err(err());
            }
        }
        Ok(GtidPos { domains })
    }

    /// Sequence number reached in `domain` (0 when the domain is absent).
    pub fn seq(&self, domain: u32) -> u64 {
        self.domains.get(&domain).map_or(0, |g| g.seq)
    }

    /// Sum of the sequence numbers over all domains: a tie-breaker, not an order.
    pub fn total(&self) -> u64 {
        self.domains.values().map(|g| g.seq).sum()
    }

    /// The GTIDs, by domain.
    pub fn gtids(&self) -> impl Iterator<Item = &Gtid> {
        self.domains.values()
    }

    /// `Some(order)` when one position contains the other in every domain, `None` when they
    /// diverge (each is ahead in some domain).
    pub fn compare(&self, other: &GtidPos) -> Option<Ordering> {
        let mut ord = Ordering::Equal;
        for d in self.domains.keys().chain(other.domains.keys()) {
            let o = self.seq(*d).cmp(&other.seq(*d));
            match (ord, o) {
                (_, Ordering::Equal) => {}
                (Ordering::Equal, o) => ord = o,
                (a, b) if a == b => {}
                _ => return None,
            }
        }
        Some(ord)
    }

    /// True when this position has everything `other` has.
    pub fn contains(&self, other: &GtidPos) -> bool {
        matches!(
            self.compare(other),
            Some(Ordering::Greater | Ordering::Equal)
        )
    }
}

impl fmt::Display for GtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for g in self.domains.values() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{}-{}-{}", g.domain, g.server_id, g.seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p = GtidPos::parse("0-1-100,1-2-5").unwrap();
        assert_eq!(p.seq(0), 100);
        assert_eq!(p.seq(1), 5);
        assert_eq!(p.seq(7), 0);
        assert_eq!(p.to_string(), "0-1-100,1-2-5");
        assert_eq!(GtidPos::parse("").unwrap(), GtidPos::default());
        assert!(GtidPos::parse("0-1").is_err());
        assert!(GtidPos::parse("0-1-2,0-1-3").is_err());
        assert!(GtidPos::parse("a-b-c").is_err());
    }

    #[test]
    fn compares_per_domain() {
        let a = GtidPos::parse("0-1-100").unwrap();
        let b = GtidPos::parse("0-1-90").unwrap();
        let c = GtidPos::parse("0-1-90,1-3-1").unwrap();
        assert_eq!(a.compare(&b), Some(Ordering::Greater));
        assert!(a.contains(&b) && !b.contains(&a));
        assert_eq!(a.compare(&c), None);
        assert!(c.contains(&b));
        assert_eq!(a.compare(&a.clone()), Some(Ordering::Equal));
        assert!(a.contains(&GtidPos::default()));
    }
}
