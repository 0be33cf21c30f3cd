//! Jobs: long-running work on machines (create and delete clusters, shards, nodes, compute
//! nodes), planned by pure functions and run by the job runner through one driver.
//!
//! Layout: [`driver`] is the skeleton every job runs (stages, memo, resume table); [`kinds`]
//! holds one file per job kind; [`common`] the helpers the kinds share; `plan*.rs` the pure
//! planners; [`install`] and [`seed`] the machine work; [`progress`] the step record;
//! [`runner`] the actor with the registry of kinds; `accept.rs`/`facade.rs` the acceptance.
//!
//! Invariant: a plan is computed once, before any host is touched, from a snapshot of the
//! machines, and recorded in the job memo, so a resumed job works from the same plan.

pub(crate) mod accept;
pub mod common;
pub mod driver;
mod facade;
pub mod grants;
pub mod install;
pub mod kinds;
pub mod plan;
pub mod plan_comps;
pub mod plan_scale;
pub mod progress;
pub mod reseed;
pub mod runner;
pub mod seed;

pub use accept::{accept, accept_create_cluster, accept_delete_cluster, on_cluster};
pub use driver::{JobInfo, JobKind, JobMemo, Stage};
pub use plan::{plan_create_cluster, ClusterPlan, SystemPasswords};
pub use runner::JobRunner;
