//! XA (2PC) recovery: the resolver, its HTTP API and the storage client against real MariaDB
//! shards.
//!
//! One test binary per area (they all link the whole workspace); each module is one former
//! test file, so `cargo test --test xa MODULE::` runs that file's tests.

mod xa_api;
mod xa_failover;
mod xa_long_running;
mod xa_manual;
mod xa_money;
mod xa_recovery;
mod xa_storage_client;
