//! Shard HA: failover, switchover, fencing, errant transactions and client-visible invariants
//! on real semi-sync MariaDB sets.
//!
//! One test binary per area (they all link the whole workspace); each module is one former
//! test file, so `cargo test --test ha MODULE::` runs that file's tests.

mod ha_api;
mod ha_clients;
mod ha_errant;
mod ha_failover;
mod ha_fence_proof;
mod ha_meta;
mod ha_netns;
mod ha_provisioned;
mod ha_replica_restart;
mod ha_sql_stopped;
mod ha_ssh_fence;
mod ha_status_race;
mod ha_switchover;
mod ha_two_shards;
