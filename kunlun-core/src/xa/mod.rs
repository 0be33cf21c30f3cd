//! XA recovery of 2PC leftovers (design.md §5): find prepared branches on every shard primary,
//! decide each global transaction from its cluster's commit log, and end them.
//!
//! Layout: [`xid`] and [`decide`] are pure (parse, decide, plan, purge cut); [`round`] is one
//! IO pass (gather, decide, apply); [`resolver`] the periodic actor; [`failover`] the call made
//! on a newly promoted primary; [`manual`] listing and resolving by hand; [`metrics`] the
//! counters. Invariant kept throughout: every
//! branch of one global transaction follows the one decision in the commit log.

pub mod decide;
mod facade;
pub mod failover;
pub mod manual;
pub mod metrics;
pub mod resolver;
pub mod round;
pub mod xid;

pub use decide::{
    decide, plan_cluster, plan_meta_shard, purge_cutoff, Action, Branch, FirstSeen, Planned,
    SkipReason,
};
pub use facade::XaState;
pub use failover::end_in_doubt_on_new_primary;
pub use manual::{list_in_doubt, resolve_by_hand, AUDIT_JOB_TYPE};
pub use metrics::{XaMetrics, XaStats};
pub use resolver::{RoundSummary, XaResolver, META_CLUSTER_ID};
pub use round::{
    cluster_targets, meta_targets, purge_commit_log, resolve_cluster, resolve_meta_shard,
    resolve_targets, RoundReport, Target, XaConfig, META_SHARD_ID,
};
pub use xid::KunlunXid;
