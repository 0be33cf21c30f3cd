//! Jobs: long-running work on machines (create and delete clusters, shards, nodes, compute
//! nodes), planned by pure functions and run by the job runner.
//!
//! Invariant: a plan is computed once, before any host is touched, from a snapshot of the
//! machines, and recorded in the job memo, so a resumed job works from the same plan.

mod accept;
pub mod cluster;
pub mod comps;
pub mod delete;
mod facade;
pub mod grants;
pub mod install;
pub mod nodes;
pub mod plan;
pub mod plan_comps;
pub mod plan_scale;
pub mod progress;
pub mod runner;
mod scale;
mod scale_facade;
pub mod seed;
pub mod shards;

pub use plan::{plan_create_cluster, ClusterPlan, SystemPasswords};
pub use runner::JobRunner;
