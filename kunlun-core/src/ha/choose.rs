//! Failover candidate choice for an `rbr` shard (design.md §4), as a pure function over what
//! the probes saw.
//!
//! Invariant: a promotion is `proven_lossless` only when the primary's semi-sync was on with the
//! after-sync wait point (so every acknowledged write reached at least one replica), every
//! replica is reachable with a known received position, and the candidate's received position
//! contains all of theirs. A replica whose SQL thread stopped with an error can never apply
//! what it received, so it is never the candidate (its received position still counts for
//! the proof). Anything less is refused, or promoted with the reason recorded when
//! the shard's policy says so; it is never silently called safe.

use std::cmp::Ordering;

use super::gtid::GtidPos;

/// What the probes know about one replica of the failed primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub node_id: i64,
    pub reachable: bool,
    /// Received position (`Gtid_IO_Pos`), `None` when it could not be read.
    pub received: Option<GtidPos>,
    pub master_priority: i64,
    /// Marked by the operator as never to be promoted.
    pub no_switch: bool,
    /// Its SQL thread stopped with an error (the probe's description): it cannot catch up.
    pub sql_error: Option<String>,
}

/// Facts of the shard at decision time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    pub replicas: Vec<ReplicaView>,
    /// The last probe of the old primary saw `Rpl_semi_sync_master_status=ON` with wait point
    /// `AFTER_SYNC`; without it no acknowledged-write proof is possible.
    pub semi_sync_proof_valid: bool,
}

impl ShardView {
    /// The facts a failover attempt rests on, as one comparable text: each replica's
    /// reachability, received position, SQL error and no-switch flag, and the proof flag.
    /// Two equal fingerprints mean an attempt would see the same shard.
    pub fn fingerprint(&self) -> String {
        let mut rs: Vec<&ReplicaView> = self.replicas.iter().collect();
        rs.sort_by_key(|r| r.node_id);
        let mut out = format!("proof={};", self.semi_sync_proof_valid);
        for r in rs {
            out.push_str(&format!(
                "{}:{}:{}:{}:{};",
                r.node_id,
                r.reachable,
                r.received
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                r.sql_error.as_deref().unwrap_or(""),
                r.no_switch
            ));
        }
        out
    }
}

/// What to do when losslessness cannot be proven (per-shard setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossPolicy {
    /// Refuse and raise an alarm until the proof becomes possible or an operator forces it.
    #[default]
    Refuse,
    /// Promote the best replica and record the possible loss.
    PromoteBest,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Promote {
        node_id: i64,
        proven_lossless: bool,
        /// Why losslessness is not proven (when it is not).
        possible_loss: Option<String>,
    },
    Refuse {
        reason: String,
    },
}

/// Orders eligible replicas: most advanced received position, then `master_priority`, then
/// the lower node id (stable).
fn better(a: &ReplicaView, b: &ReplicaView) -> Ordering {
    let (pa, pb) = (a.received.as_ref(), b.received.as_ref());
    let by_pos = match (pa, pb) {
        (Some(x), Some(y)) => x.compare(y).unwrap_or_else(|| x.total().cmp(&y.total())),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => Ordering::Equal,
    };
    by_pos
        .then(a.master_priority.cmp(&b.master_priority))
        .then(b.node_id.cmp(&a.node_id))
}

/// Chooses the replica to promote, or refuses with the reason.
pub fn choose(view: &ShardView, policy: LossPolicy) -> Choice {
    let best = view
        .replicas
        .iter()
        .filter(|r| r.reachable && r.received.is_some() && !r.no_switch && r.sql_error.is_none())
        .max_by(|a, b| better(a, b));
    let Some(best) = best else {
        let broken: Vec<String> = view
            .replicas
            .iter()
            .filter_map(|r| {
                r.sql_error
                    .as_ref()
                    .map(|e| format!("replica {}: {e}", r.node_id))
            })
            .collect();
        let mut reason = "no reachable replica that may be promoted".to_string();
        if !broken.is_empty() {
            reason.push_str(&format!(
                " (cannot apply what they received: {})",
                broken.join("; ")
            ));
        }
        return Choice::Refuse { reason };
    };
    let best_pos = best.received.clone().unwrap_or_default();

    let mut gaps = Vec::new();
    if !view.semi_sync_proof_valid {
        gaps.push(
            "the old primary was not in semi-sync (after-sync) at its last probe".to_string(),
        );
    }
    for r in &view.replicas {
        match (&r.received, r.reachable) {
            (Some(pos), true) if !best_pos.contains(pos) => gaps.push(format!(
                "replica {} received {} which candidate {} lacks ({})",
                r.node_id, pos, best.node_id, best_pos
            )),
            (Some(_), true) => {}
            _ => gaps.push(format!(
                "replica {} is unreachable or its position is unknown",
                r.node_id
            )),
        }
    }

    if gaps.is_empty() {
        Choice::Promote {
            node_id: best.node_id,
            proven_lossless: true,
            possible_loss: None,
        }
    } else {
        let reason = gaps.join("; ");
        match policy {
            LossPolicy::Refuse => Choice::Refuse {
                reason: format!("cannot prove no acknowledged write is lost: {reason}"),
            },
            LossPolicy::PromoteBest => Choice::Promote {
                node_id: best.node_id,
                proven_lossless: false,
                possible_loss: Some(reason),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: i64, pos: &str) -> ReplicaView {
        ReplicaView {
            node_id: id,
            reachable: true,
            received: Some(GtidPos::parse(pos).unwrap()),
            master_priority: 1,
            no_switch: false,
            sql_error: None,
        }
    }

    fn view(replicas: Vec<ReplicaView>) -> ShardView {
        ShardView {
            replicas,
            semi_sync_proof_valid: true,
        }
    }

    #[test]
    fn most_advanced_replica_wins_and_is_proven() {
        let c = choose(
            &view(vec![r(2, "0-1-90"), r(3, "0-1-100")]),
            LossPolicy::Refuse,
        );
        assert_eq!(
            c,
            Choice::Promote {
                node_id: 3,
                proven_lossless: true,
                possible_loss: None
            }
        );
    }

    #[test]
    fn priority_breaks_ties_then_lower_id() {
        let mut a = r(2, "0-1-100");
        let b = r(3, "0-1-100");
        assert!(matches!(
            choose(&view(vec![a.clone(), b.clone()]), LossPolicy::Refuse),
            Choice::Promote { node_id: 2, .. }
        ));
        a.master_priority = 0;
        assert!(matches!(
            choose(&view(vec![a, b]), LossPolicy::Refuse),
            Choice::Promote { node_id: 3, .. }
        ));
    }

    #[test]
    fn no_switch_node_is_never_chosen_and_its_extra_data_voids_the_proof() {
        let mut ahead = r(2, "0-1-100");
        ahead.no_switch = true;
        let v = view(vec![ahead, r(3, "0-1-90")]);
        assert!(matches!(
            choose(&v, LossPolicy::Refuse),
            Choice::Refuse { .. }
        ));
        match choose(&v, LossPolicy::PromoteBest) {
            Choice::Promote {
                node_id: 3,
                proven_lossless: false,
                possible_loss: Some(why),
            } => assert!(why.contains("replica 2")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreachable_replica_or_async_primary_voids_the_proof() {
        let mut gone = r(2, "0-1-100");
        gone.reachable = false;
        assert!(matches!(
            choose(&view(vec![gone, r(3, "0-1-90")]), LossPolicy::Refuse),
            Choice::Refuse { .. }
        ));
        let mut v = view(vec![r(2, "0-1-100"), r(3, "0-1-90")]);
        v.semi_sync_proof_valid = false;
        assert!(
            matches!(choose(&v, LossPolicy::Refuse), Choice::Refuse { reason } if reason.contains("semi-sync"))
        );
    }

    #[test]
    fn a_replica_whose_sql_thread_stopped_is_skipped_for_another_lossless_one() {
        let mut broken = r(2, "0-1-100");
        broken.sql_error = Some("SQL thread stopped with error 1062: dup".into());
        let v = view(vec![broken.clone(), r(3, "0-1-100")]);
        assert_eq!(
            choose(&v, LossPolicy::Refuse),
            Choice::Promote {
                node_id: 3,
                proven_lossless: true,
                possible_loss: None
            }
        );
        // Alone, it is refused at once with the SQL error as the reason.
        match choose(&view(vec![broken]), LossPolicy::PromoteBest) {
            Choice::Refuse { reason } => assert!(reason.contains("error 1062"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_fingerprint_changes_with_the_facts_only() {
        let a = view(vec![r(3, "0-1-5"), r(2, "0-1-5")]);
        let b = view(vec![r(2, "0-1-5"), r(3, "0-1-5")]);
        assert_eq!(a.fingerprint(), b.fingerprint(), "order does not matter");
        let mut c = b.clone();
        c.replicas[0].sql_error = Some("x".into());
        assert_ne!(b.fingerprint(), c.fingerprint());
        let d = view(vec![r(2, "0-1-6"), r(3, "0-1-5")]);
        assert_ne!(b.fingerprint(), d.fingerprint());
    }

    #[test]
    fn nothing_eligible_is_refused() {
        let mut a = r(2, "0-1-1");
        a.reachable = false;
        assert!(matches!(
            choose(&view(vec![a]), LossPolicy::PromoteBest),
            Choice::Refuse { .. }
        ));
        assert!(matches!(
            choose(&view(vec![]), LossPolicy::PromoteBest),
            Choice::Refuse { .. }
        ));
    }
}
