//! Failover candidate choice for an `rbr` shard (design.md §4), as a pure function over what
//! the probes saw.
//!
//! Invariant: a promotion is `proven_lossless` only when the primary's semi-sync was on with the
//! after-sync wait point (so every acknowledged write reached at least one replica), every
//! replica is reachable with a known received position, and the candidate's received position
//! contains all of theirs. Anything less is refused, or promoted with the reason recorded when
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
}

/// Facts of the shard at decision time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    pub replicas: Vec<ReplicaView>,
    /// The last probe of the old primary saw `Rpl_semi_sync_master_status=ON` with wait point
    /// `AFTER_SYNC`; without it no acknowledged-write proof is possible.
    pub semi_sync_proof_valid: bool,
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
        .filter(|r| r.reachable && r.received.is_some() && !r.no_switch)
        .max_by(|a, b| better(a, b));
    let Some(best) = best else {
        return Choice::Refuse {
            reason: "no reachable replica that may be promoted".into(),
        };
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
