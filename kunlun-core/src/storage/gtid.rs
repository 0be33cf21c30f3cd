//! MariaDB GTID positions (`@@gtid_current_pos`, `Gtid_IO_Pos`): `domain-server-seq` per
//! replication domain, comma-separated.
//!
//! Invariant: a position holds at most one GTID per domain (the last one); comparison is per
//! domain on the sequence number, so two positions may be incomparable (divergent domains).
//! A binlog state (`@@gtid_binlog_state`) holds the last GTID per domain *and server*, which is
//! what tells a transaction written locally on a replica (its own server id) from one it
//! applied: [`errant_gtids`] uses it.

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

/// A binlog state (`@@gtid_binlog_state`): the last sequence number per (domain, server id)
/// found in a node's binary log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState {
    last: BTreeMap<(u32, u32), u64>,
}

impl GtidState {
    /// Parses `domain-server-seq[,…]`, several entries per domain allowed.
    pub fn parse(s: &str) -> Result<GtidState, ParseGtidError> {
        let mut last = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let one = GtidPos::parse(part).map_err(|_| ParseGtidError(s.to_string()))?;
            for g in one.gtids() {
                let e = last.entry((g.domain, g.server_id)).or_insert(g.seq);
                *e = (*e).max(g.seq);
            }
        }
        Ok(GtidState { last })
    }
}

impl GtidState {
    /// The position this state reaches: per domain, its highest sequence number (with the
    /// server id that wrote it).
    pub fn pos(&self) -> GtidPos {
        let mut domains: BTreeMap<u32, Gtid> = BTreeMap::new();
        for (&(domain, server_id), &seq) in &self.last {
            let g = Gtid {
                domain,
                server_id,
                seq,
            };
            match domains.get(&domain) {
                Some(had) if had.seq >= seq => {}
                _ => {
                    domains.insert(domain, g);
                }
            }
        }
        GtidPos { domains }
    }

    /// True when every GTID of `pos` is in this state: its (domain, server id) was written up
    /// to at least its sequence number. A position from another history (the same sequence
    /// number written by another server) is not.
    pub fn has(&self, pos: &GtidPos) -> bool {
        pos.gtids().all(|g| {
            self.last
                .get(&(g.domain, g.server_id))
                .is_some_and(|s| *s >= g.seq)
        })
    }
}

/// A node's GTID facts for the errant check: its binlog state, its current position and its
/// own `server_id`.
#[derive(Debug, Clone, Copy)]
pub struct GtidFacts<'a> {
    pub state: &'a GtidState,
    pub pos: &'a GtidPos,
    pub server_id: u32,
}

/// The transactions `follower` holds that `primary` lacks, as `domain-server-from..to` ranges
/// (empty when it holds none). Read both after the follower's replication stopped and the
/// primary's did, so neither can still grow.
///
/// A follower is errant when, in some domain, it holds a GTID beyond the primary's position
/// that the primary's binlog never saw, or when its binlog holds a transaction under its *own*
/// server id that the primary's binlog lacks (a write made on the follower itself, even below
/// the primary's sequence number). A pair of another server the primary's binlog lacks below
/// its position is old shared history (a primary whose binlog started later, e.g. a replica
/// added by scaling, does not list it) and is not counted.
pub fn errant_gtids(follower: GtidFacts<'_>, primary: GtidFacts<'_>) -> Vec<String> {
    let known =
        |d: u32, srv: u32, seq: u64| primary.state.last.get(&(d, srv)).is_some_and(|h| *h >= seq);
    let mut out: Vec<String> = Vec::new();
    let mut push = |d: u32, srv: u32, seq: u64| {
        let from = match primary.state.last.get(&(d, srv)) {
            Some(h) => format!("{}", h + 1),
            None => String::new(),
        };
        let r = format!("{d}-{srv}-{from}..{seq}");
        if !out.iter().any(|o| o.starts_with(&format!("{d}-{srv}-"))) {
            out.push(r);
        }
    };
    for (&(d, srv), &seq) in &follower.state.last {
        let beyond = seq > primary.pos.seq(d);
        if !known(d, srv, seq) && (beyond || srv == follower.server_id) {
            push(d, srv, seq);
        }
    }
    for g in follower.pos.gtids() {
        if g.seq > primary.pos.seq(g.domain) && !known(g.domain, g.server_id, g.seq) {
            push(g.domain, g.server_id, g.seq);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(state: &'a GtidState, pos: &'a GtidPos, server_id: u32) -> GtidFacts<'a> {
        GtidFacts {
            state,
            pos,
            server_id,
        }
    }

    #[test]
    fn a_follower_behind_or_equal_is_not_errant() {
        let ps = GtidState::parse("0-1-100,0-2-40").unwrap();
        let pp = GtidPos::parse("0-1-100").unwrap();
        let fs = GtidState::parse("0-1-90,0-2-40").unwrap();
        let fp = GtidPos::parse("0-1-90").unwrap();
        let p = facts(&ps, &pp, 5);
        assert!(errant_gtids(facts(&fs, &fp, 7), p).is_empty());
        assert!(errant_gtids(facts(&ps, &pp, 7), p).is_empty());
        let (es, ep) = (GtidState::default(), GtidPos::default());
        assert!(errant_gtids(facts(&es, &ep, 7), p).is_empty());
    }

    #[test]
    fn a_local_write_on_a_follower_is_errant_even_below_the_primarys_sequence() {
        // The follower (server 7) wrote 0-7-91; the primary went on to 0-1-100.
        let ps = GtidState::parse("0-1-100").unwrap();
        let pp = GtidPos::parse("0-1-100").unwrap();
        let fs = GtidState::parse("0-1-90,0-7-91").unwrap();
        let fp = GtidPos::parse("0-7-91").unwrap();
        assert_eq!(
            errant_gtids(facts(&fs, &fp, 7), facts(&ps, &pp, 5)),
            vec!["0-7-..91".to_string()]
        );
    }

    #[test]
    fn old_history_of_another_server_missing_from_a_younger_binlog_is_not_errant() {
        // Server 3 was primary up to 0-3-50; the new primary's binlog starts later.
        let ps = GtidState::parse("0-1-100").unwrap();
        let pp = GtidPos::parse("0-1-100").unwrap();
        let fs = GtidState::parse("0-3-50,0-1-100").unwrap();
        let fp = GtidPos::parse("0-1-100").unwrap();
        assert!(errant_gtids(facts(&fs, &fp, 7), facts(&ps, &pp, 5)).is_empty());
    }

    #[test]
    fn a_follower_ahead_of_the_primary_is_errant() {
        let ps = GtidState::parse("0-1-100").unwrap();
        let pp = GtidPos::parse("0-1-100").unwrap();
        let fs = GtidState::parse("0-1-105").unwrap();
        let fp = GtidPos::parse("0-1-105").unwrap();
        let p = facts(&ps, &pp, 5);
        assert_eq!(
            errant_gtids(facts(&fs, &fp, 7), p),
            vec!["0-1-101..105".to_string()]
        );
        // Another domain the primary never saw.
        let fs = GtidState::parse("0-1-100,5-1-3").unwrap();
        let fp = GtidPos::parse("0-1-100,5-1-3").unwrap();
        assert_eq!(
            errant_gtids(facts(&fs, &fp, 7), p),
            vec!["5-1-..3".to_string()]
        );
    }

    #[test]
    fn binlog_states_keep_the_highest_per_domain_and_server() {
        let s = GtidState::parse("0-1-5,0-2-9,1-1-3").unwrap();
        assert_eq!(s.last.get(&(0, 2)), Some(&9));
        assert_eq!(s.last.len(), 3);
        assert!(GtidState::parse("0-1").is_err());
        assert_eq!(GtidState::parse("").unwrap(), GtidState::default());
    }

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
