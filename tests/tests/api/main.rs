//! The real `cluster-mgr` daemon and `kunlunctl` binaries: HTTP API, CLI, TLS, security,
//! leader failover.
//!
//! One test binary per area (they all link the whole workspace); each module is one former
//! test file, so `cargo test --test api MODULE::` runs that file's tests.

mod api_fuzz;
mod api_load;
mod api_strict;
mod cli_machines;
mod cli_security;
mod cli_tls;
mod cli_usage;
mod daemon_e2e;
mod leader_failover;
