//! Jobs: long-running work on machines (create and delete clusters, shards, nodes, compute
//! nodes), planned by pure functions and run by the job runner.
//!
//! Invariant: a plan is computed once, before any host is touched, from a snapshot of the
//! machines, and recorded in the job memo, so a resumed job works from the same plan.

pub mod cluster;
pub mod delete;
mod facade;
pub mod install;
pub mod plan;
pub mod runner;

pub use install::Provisioner;
pub use plan::{plan_create_cluster, ClusterPlan, SystemPasswords};
pub use runner::JobRunner;
